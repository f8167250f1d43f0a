"""The user's files: reports written atomically (a failed run never leaves half a file),
strict JSON, and text files read with one clear error."""

from __future__ import annotations

import json
import math
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from archprof.errors import ArchprofError

_NO_WAIT = getattr(os, "O_NONBLOCK", 0)  # POSIX's; Windows has no FIFOs


def read_text(path: str | os.PathLike, what: str, limit: int) -> str:
    """The text of a file the user named (`what` says which kind, for the error), as
    written: no newline translation (a quoted CSV cell may hold a carriage return), a UTF-8
    byte-order mark (Excel's "CSV UTF-8") skipped. At most `limit` bytes are read: a larger
    file, or one that never ends (/dev/zero), is refused rather than read into memory. A
    FIFO that no one writes to reads as empty rather than waiting for a writer forever."""
    try:
        descriptor = os.open(path, os.O_RDONLY | _NO_WAIT)  # a FIFO's open waits for a writer
    except FileNotFoundError:
        raise ArchprofError(f"{what} {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ArchprofError(f"cannot read {what} {path}: {_reason(exc)}") from None
    try:
        with open(descriptor, "rb") as handle:
            if _NO_WAIT:
                os.set_blocking(descriptor, True)  # a pipe's writer (`<(command)`) is waited for
            data = handle.read(limit + 1)
    except OSError as exc:
        raise ArchprofError(f"cannot read {what} {path}: {_reason(exc)}") from None
    if len(data) > limit:
        raise ArchprofError(f"{what} {path} is over {limit // 2**20} MiB, too large for a {what}: the right file?")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ArchprofError(f"cannot read {what} {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def json_text(document: Any, default: Callable[[Any], Any] | None = None) -> str:
    """`document` as indented JSON, every float that is not finite written null: json.dumps
    would write NaN and Infinity, which JSON has not (jq and JSON.parse refuse the file)."""
    return json.dumps(_finite(document), indent=2, default=default, allow_nan=False) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def write_atomically(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` as `open_output` does."""
    with open_output(path) as handle:
        handle.write(text)


def check_output_target(path: str | os.PathLike) -> None:
    """Fail before any work when `path` cannot be written as `open_output` would: a
    directory, something other than a file, FIFO or character device, a missing folder, a
    folder the user may not write in, a read-only file."""
    _destination(Path(path))


@contextmanager
def open_output(path: str | os.PathLike, binary: bool = False) -> Iterator[IO]:
    """A handle whose contents end up at `path` only if the `with` block completes.

    - No such file, or a regular file: the text goes to a temporary file beside it, renamed
      over it at the end, so that a failure or Ctrl-C leaves the old file as it was (and
      no temporary file). A new file gets mode 0666 less the umask, as the shell's `>`
      would give it; a replaced file keeps its mode.
    - A symbolic link: the same, at the file it points to; the link stays a link.
    - Standard output by name (`/dev/stdout`, `/dev/fd/1`, `/proc/self/fd/1`): written
      straight to it, wherever it goes (a pipe, a terminal, a file opened for appending),
      also while the CLI points descriptor 1 at standard error (`standard_output_moved`).
    - A FIFO or a character device (`/dev/null`, a named pipe): written straight, as the
      shell's `>` would; nothing there can be replaced.
    - A directory, a socket or a block device: refused; so is a read-only file (the shell's
      `>` would be refused too), and a file in a folder the user may not write in.
    A write that fails (no space left, a closed pipe) raises ArchprofError, one line."""
    target = Path(path)
    named_standard_output = _names_standard_output(target)
    destination, replace = (target, False) if named_standard_output else _destination(target)
    if not replace:
        try:
            opened = os.dup(_standard_output[-1]) if named_standard_output else destination
            with open(opened, "wb" if binary else "w", **_text_options(binary)) as handle:
                yield handle
        except OSError as exc:
            raise ArchprofError(f"cannot write {target}: {exc.strerror or exc}") from None
        return
    # The name chosen before the file is made: a Ctrl-C raised as mkstemp returned, its name
    # not yet known here, left the file behind.
    temporary = destination.parent / f".{destination.name}.{secrets.token_hex(6)}.tmp"
    try:  # made new, readable by the user alone until its mode is set, as mkstemp's
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:  # none made (a file of that name is not this one's to remove)
        raise ArchprofError(f"cannot write {target}: {exc.strerror}") from None
    except BaseException:  # Ctrl-C as it returned: made, its descriptor not kept
        temporary.unlink(missing_ok=True)
        raise
    try:
        with os.fdopen(fd, "wb" if binary else "w", **_text_options(binary)) as handle:
            os.fchmod(handle.fileno(), _mode_for(destination))
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, destination)
    except BaseException as exc:  # Ctrl-C too: never leave the temporary file behind
        Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ArchprofError(f"cannot write {target}: {exc.strerror or exc}") from None
        raise


# The descriptor standard output's report goes to: 1, or its copy while the CLI points
# descriptor 1 at standard error (`standard_output_moved`).
_standard_output = [1]


@contextmanager
def standard_output_moved(descriptor: int) -> Iterator[None]:
    """While active, a path that names standard output (`-o /dev/stdout`) is written to
    `descriptor`: the CLI points descriptor 1 at standard error while a command runs, the
    report going to a copy of it (`cli.streams`); /dev/stdout would then be standard error."""
    _standard_output.append(descriptor)
    try:
        yield
    finally:
        _standard_output.pop()


def is_stream(path: str | os.PathLike) -> bool:
    """Whether `path` is written straight, as a stream: standard output by name, a FIFO or a
    character device (`open_output`)."""
    target = Path(path)
    if _names_standard_output(target):
        return True
    try:
        mode = os.stat(target).st_mode
    except OSError:
        return False
    return _written_straight(mode)


def _written_straight(mode: int) -> bool:
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)


def _names_standard_output(target: Path) -> bool:
    name = os.path.abspath(target)
    return name in ("/dev/stdout", "/dev/fd/1", "/proc/self/fd/1", f"/proc/{os.getpid()}/fd/1")


def _destination(target: Path) -> tuple[Path, bool]:
    """Where to write for `target`, and whether atomically (by rename) or straight."""
    try:
        status = os.stat(target)  # follows links: /dev/stdout is whatever standard output is
    except FileNotFoundError:
        status = None
    except OSError as exc:
        raise ArchprofError(f"cannot write {target}: {exc.strerror}") from None
    if status is not None and _written_straight(status.st_mode):
        return target, False
    if status is not None and stat.S_ISDIR(status.st_mode):
        raise ArchprofError(f"cannot write {target}: it is a directory; give a file name")
    if status is not None and not stat.S_ISREG(status.st_mode):
        raise ArchprofError(f"cannot write {target}: not a regular file, a FIFO or a character device")
    destination = Path(os.path.realpath(target))
    if not destination.parent.is_dir():
        raise ArchprofError(f"cannot write {target}: directory {destination.parent} does not exist")
    # Asked here, before any work, not found out at the rename after it: a run of minutes lost.
    if not os.access(destination.parent, os.W_OK | os.X_OK):
        raise ArchprofError(f"cannot write {target}: no permission to write in {destination.parent}")
    if status is not None and not os.access(destination, os.W_OK):  # the rename would replace it regardless
        raise ArchprofError(f"cannot write {target}: the file is read-only (make it writable, or give another name)")
    return destination, True


def _mode_for(destination: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(destination).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)  # the only portable way to read it
        os.umask(umask)
        return 0o666 & ~umask


def _text_options(binary: bool) -> dict:
    return {} if binary else {"encoding": "utf-8", "newline": ""}
