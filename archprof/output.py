"""The user's files: reports written atomically (a failed run never leaves half a file),
and text files read with one clear error."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from archprof.errors import ArchprofError


def read_text(path: str | os.PathLike, what: str) -> str:
    """The text of a file the user named (`what` says which kind, for the error)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArchprofError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ArchprofError(f"cannot read {what} {path}: {exc}") from None


def write_atomically(path: str | os.PathLike, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it into place."""
    target = Path(path)
    if not target.parent.is_dir():
        raise ArchprofError(f"cannot write {target}: directory {target.parent} does not exist")
    try:
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise ArchprofError(f"cannot write {target}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(temporary, target)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise ArchprofError(f"cannot write {target}: {exc.strerror}") from None
