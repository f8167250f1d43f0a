"""Where a command's words go: the report on the standard output the command found, and
nothing else there (what the model prints, and file descriptor 1, go to standard error),
failing cleanly; errors and warnings as one line on standard error; a progress display; and
a Rich console on standard output fitted to its width."""

from __future__ import annotations

import codecs
import errno
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from functools import wraps
from typing import NoReturn

import typer

from archprof.cli.unanswered_signals import answered
from archprof.text import NARROWEST_WIDTH


def user_errors(command):
    """Print an ArchprofError on one line (`say`) and exit 2, without a traceback; Ctrl-C
    says so on one line and exits 130, as a shell reports a process SIGINT ended: also a
    Ctrl-C whose KeyboardInterrupt the command's code swallowed or handed on as another
    exception (`_signals_noted`), whatever the command did after it (finished, or failed on
    what the interrupt left half done); and so for SIGTERM (`interrupted`)."""

    @wraps(command)
    def run(*args, **kwargs):
        import warnings

        from archprof.errors import ArchprofError, ArchprofWarning

        def show(message, category, filename, lineno, file=None, line=None):
            # archprof's own warnings (the CPU fallback) as one line, each once; a model's on
            # one line too, its control characters escaped: a TorchScript file may warn, and
            # its text could set the terminal's title or clear it, or write a line that reads
            # as archprof's own.
            if issubclass(category, ArchprofWarning):
                say(f"warning: {message}")
            else:
                say(f"{filename}:{lineno}: {category.__name__}: {message}")

        with _signals_noted() as signalled:
            try:
                with warnings.catch_warnings(), _model_prints_to_stderr():
                    warnings.simplefilter("once", ArchprofWarning)
                    warnings.showwarning = show
                    result = command(*args, **kwargs)
            except KeyboardInterrupt:  # Typer would exit 130 without a word
                interrupted()
            except BaseException as exc:
                signalled.end_if_any()
                if not isinstance(exc, ArchprofError):
                    raise
                say(f"error: {exc}")
                raise typer.Exit(2) from None
            signalled.end_if_any()
            return result

    return run


class _Signalled:
    """Whether Ctrl-C was pressed, or SIGTERM sent, while a command ran."""

    ctrl_c = False
    terminated = False

    def end_if_any(self) -> None:
        """Exit as `interrupted` does where either came, whatever the command did after it."""
        if self.ctrl_c or self.terminated:
            interrupted(self.terminated)


@contextmanager
def _signals_noted() -> Iterator[_Signalled]:
    """While a command runs, SIGINT raises KeyboardInterrupt, as Python's own handler does,
    and notes that it came (where Python's handler is the caller's; it is put back after);
    SIGTERM is noted too, where `terminated_as_interrupted` raises it. Code may swallow the
    KeyboardInterrupt: torch's C init clears one raised inside its own import of numpy,
    which goes on half imported, and the command finished with exit 0 or failed later with a
    traceback. Or hand it on as another exception: TorchScript's interpreter, whose loops
    call archprof's Python at each iteration (`archprof.tracing.script_loops`), where a
    handler runs, passes on a RuntimeError, which the trace takes for the model's failure."""
    signalled = _Signalled()

    def note_ctrl_c(signum, frame) -> NoReturn:
        signalled.ctrl_c = True
        answered()
        raise KeyboardInterrupt

    def note_termination(signum, frame) -> NoReturn:
        signalled.terminated = True
        _raise_terminated(signum, frame)

    with (
        _handled(signal.SIGINT, note_ctrl_c, signal.default_int_handler),
        _handled(signal.SIGTERM, note_termination, _raise_terminated),
    ):
        yield signalled


def interrupted(terminated: bool = False) -> NoReturn:
    """Ctrl-C, said on one line; exit 130, as a shell reports a process SIGINT ended. Called
    while a KeyboardInterrupt is handled, or where a signal was noted (`terminated`: SIGTERM):
    SIGTERM's (`Terminated`) ends the process by that signal instead, as it would have ended
    without the handler."""
    if terminated or isinstance(sys.exc_info()[1], Terminated):
        say("terminated")
        sys.stdout.flush()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    say("interrupted (Ctrl-C)")
    raise typer.Exit(130) from None


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, as Ctrl-C is: the guards around a model's code
    pass it through as they pass Ctrl-C, and every `finally` runs on the way out (a pool's
    workers ended, which the signal alone left running; no file half-written); then
    `interrupted` ends the process by the signal."""


@contextmanager
def terminated_as_interrupted() -> Iterator[None]:
    """While a command runs, SIGTERM raises `Terminated` (where no handler of the caller's is set)."""
    with _handled(signal.SIGTERM, _raise_terminated, signal.SIG_DFL):
        yield


@contextmanager
def _handled(signum: int, handler, python_s) -> Iterator[None]:
    """While active, `handler` takes signal `signum` where its handler is Python's own
    (`python_s`), and Python's is put back after; a caller's own handler is left as it is,
    as is every handler outside the main thread (signals are the main thread's)."""
    try:
        previous = signal.getsignal(signum)
        if previous is python_s:
            signal.signal(signum, handler)
    except ValueError:  # not the main thread
        previous = None
    try:
        yield
    finally:
        if previous is python_s:
            signal.signal(signum, previous)


def _raise_terminated(signum, frame) -> NoReturn:
    answered()
    raise Terminated


# The standard output each running command found: its report goes there, and nothing else.
_report_streams: list = []


@contextmanager
def _model_prints_to_stderr():
    """While a command runs, what the model's own code prints (a line in its constructor or
    forward) goes to standard error: standard output carries the report alone, so that
    `archprof summary MODEL -f json | jq` reads JSON. `standard_output` writes the report."""
    found = sys.stdout
    with _descriptor_1_to_stderr(found) as report:
        _report_streams.append(report)
        try:
            with redirect_stdout(sys.stderr):
                yield
        finally:
            kept = _report_streams.pop()  # os.devnull where `standard_output` found it gone
            sys.stdout = found if kept is report else kept


@contextmanager
def _descriptor_1_to_stderr(stream):
    """Where `stream`, standard output, writes to file descriptor 1: that descriptor pointed
    at standard error's meanwhile, and a stream on a copy of it yielded for the report.
    Code that writes to the descriptor itself (`os.write(1, ...)`, `sys.__stdout__`, a
    subprocess, a C extension's printf) would otherwise put its text inside the report.
    Any other stream (a test's, a closed standard output) is yielded as it is."""
    try:
        apart = stream.fileno() == 1 and sys.stderr.fileno() != 1
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        apart = False
    if not apart:
        yield stream
        return
    from archprof.output import standard_output_moved

    stream.flush()
    report = open(os.dup(1), "w", encoding=stream.encoding, errors=stream.errors)  # noqa: SIM115 (closed below)
    os.dup2(sys.stderr.fileno(), 1)
    try:
        with standard_output_moved(report.fileno()):  # `-o /dev/stdout`: the report's descriptor
            yield report
    finally:
        os.dup2(report.fileno(), 1)  # os.devnull there if a write failed (`discard_written_to`)
        report.close()


def _report_stream():
    """Where the report goes: the standard output the running command found."""
    return _report_streams[-1] if _report_streams else sys.stdout


def say(text: str, **style) -> None:
    """`text` as one line on stderr, whatever it holds: a newline, a carriage return, a
    line separator (U+2028), any other unprintable character or a lone surrogate (a
    file name that is not UTF-8) is written as its escape (\\n, \\u2028, \\udcff); what
    stderr's encoding lacks, as a backslash escape. A line past `_LONGEST_LINE` characters
    (an error quoting a value of a megabyte from a hostile file) keeps its start, which
    says where, and its end, which says what to do."""
    printable = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
    if len(printable) > _LONGEST_LINE:
        half = _LONGEST_LINE // 2
        cut = len(printable) - 2 * half
        printable = f"{printable[:half]}... ({cut:,} characters left out) ...{printable[-half:]}"
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    line = printable.encode(encoding, "backslashreplace").decode(encoding)
    try:
        if style and _colours_wanted():
            typer.secho(line, err=True, **style)
        else:  # secho ends even an unstyled line with a reset code, on a terminal
            typer.echo(line, err=True)
    except OSError:  # stderr on a full disk, or gone: no one to tell, and the exit status still says it
        discard_written_to(sys.stderr)


_LONGEST_LINE = 1000


def _colours_wanted() -> bool:
    """Whether a styled line may carry colour codes: not under NO_COLOR (https://no-color.org:
    set to anything but empty) or TERM=dumb, which Rich's tables heed too."""
    return not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


@contextmanager
def standard_output(glyphs: bool = True):
    """Around every print to standard output, flushed here: a full disk ends the command
    with one line and exit 2, a reader that has gone (`| head -1`) quietly with 141 (as
    a process killed by SIGPIPE), never a traceback. Standard output then points at
    os.devnull, so that the interpreter's own flush at exit has nothing left to fail on.
    What its encoding lacks is written as `_ascii_or_escape` writes it, not a traceback;
    without `glyphs` (CSV, Markdown, JSON: data, where a layer named `a·b` must not read
    as `a-b`), every such character as its escape."""
    stream = _report_stream()
    try:
        # Python's own choice of error handler (strict, or surrogateescape under the C locale),
        # or the one an earlier report of the command set.
        ours = ("strict", "surrogateescape", _ASCII_OR_ESCAPE, "backslashreplace")
        if getattr(stream, "errors", None) in ours and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors=_ASCII_OR_ESCAPE if glyphs else "backslashreplace")
        with redirect_stdout(stream):
            yield
            stream.flush()
    except OSError as exc:
        discard_written_to(stream)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (open until exit)
        if _report_streams:
            _report_streams[-1] = sys.stdout
        if exc.errno == errno.EPIPE:
            raise typer.Exit(141) from None
        say(f"error: cannot write to standard output: {exc.strerror or exc}")
        raise typer.Exit(2) from None


def _ascii_or_escape(error: UnicodeEncodeError) -> tuple[str, int]:
    """An encoding error handler for standard output whose encoding lacks a character
    (PYTHONIOENCODING=ascii, LC_ALL=C without UTF-8 mode; Latin-1): archprof's own glyphs
    (the · of a title, diff's →, memory's ◀, Rich's … in a cut cell) as one ASCII character
    each, so that a table laid out for the glyph keeps its columns; any other character (a
    layer's name in Cyrillic) as its backslash escape, as `say` writes it."""
    unencodable = error.object[error.start : error.end]
    return "".join(_ASCII_GLYPHS.get(char) or ascii(char)[1:-1] for char in unencodable), error.end


_ASCII_GLYPHS = {"·": "-", "→": ">", "←": "<", "◀": "<", "▲": "^", "▼": "v", "…": "~", "≤": "<", "×": "x", "µ": "u"}
_ASCII_OR_ESCAPE = "archprof.ascii_or_escape"
codecs.register_error(_ASCII_OR_ESCAPE, _ascii_or_escape)


def discard_written_to(stream) -> None:
    """After a failed write (a broken pipe, a full disk), as Python's documentation advises:
    os.devnull on `stream`'s file descriptor, so that what is left in its buffer (flushed
    again at exit) goes nowhere instead of failing a second time. A stream with no
    descriptor (a test's, a closed standard output) is left as it is."""
    try:
        descriptor = stream.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return
    os.dup2(os.open(os.devnull, os.O_WRONLY), descriptor)


def _progress_console(quiet: bool):
    """A Rich console on stderr for a progress display, or None: with --quiet, or where
    stderr is not a terminal (a log, a pipe: nothing there but the messages)."""
    from rich.console import Console

    console = Console(stderr=True)
    return None if quiet or not console.is_terminal else console


@contextmanager
def status_display(quiet: bool, doing: str):
    """A spinner on stderr saying what a long step without stages to count is `doing`
    ("measuring ..."), gone when it ends; none where `_progress_console` gives none."""
    console = _progress_console(quiet)
    if console is None:
        yield
        return
    with console.status(doing):
        yield


class progress_display:
    """A rich progress display on stderr while profiling (none where `_progress_console`
    gives none); yields the callback `archprof.profile` takes, or None."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None

    def __enter__(self):
        console = _progress_console(self.quiet)
        if console is None:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.bar.__enter__()
        tasks: dict[str, int] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = self.bar.add_task(phase, total=total)
            self.bar.update(tasks[phase], completed=done, total=total)

        return update

    def __exit__(self, *exc) -> bool:
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False


def stdout_console(width: int | None = None):
    """A Rich console on the report's standard output (its terminal, its width, never under
    `NARROWEST_WIDTH`), for use inside `standard_output`. Off a terminal (a pipe, a file) its
    lines end without the spaces Rich pads them with, as `to_text` writes them."""
    from rich.console import Console

    stream = _report_stream()
    try:
        terminal = stream.isatty()
    except (AttributeError, OSError, ValueError):
        terminal = False
    console = Console(file=stream if terminal else _TrimmedLines(stream), width=width)
    if console.is_dumb_terminal:  # TERM=dumb: Rich takes any such terminal for 80x25, whatever it is
        console.size = (width or _terminal_width(stream), console.height)
    console.width = max(console.width, NARROWEST_WIDTH)
    return console


def _terminal_width(stream) -> int:
    """The width of the terminal `stream` writes to, or COLUMNS's, as Rich reads it for any
    other terminal; 80 where the terminal says 0 (a pseudo-terminal no one sized)."""
    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, OSError, ValueError):  # a terminal by FORCE_COLOR's say-so, not a real one
        return 80


def fitted_width(console=None) -> int | None:
    """The width output on standard output fits (`console`, or `stdout_console()`): its
    terminal's, or COLUMNS's off a terminal too (Rich reads it as the console's width: how a
    script, or a test through CliRunner, asks for narrow output); None for a pipe or a file."""
    console = console or stdout_console()
    return console.width if console.is_terminal or "COLUMNS" in os.environ else None


class _TrimmedLines:
    """A stream whose lines lose their trailing spaces (a table's padding, every line of it
    and the blank ones: noise in a file, a diff or a pull request); all else is the stream's."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        # Line by line: a regular expression for "spaces before a newline" backtracks over
        # every run of spaces that ends otherwise, which takes quadratic time in a row padded
        # to a name of 100,000 characters.
        *lines, last = text.split("\n")
        self._stream.write("".join(line.rstrip(" ") + "\n" for line in lines) + last)
        return len(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)
