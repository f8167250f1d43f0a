"""The Typer application, its global options, its help conventions and the entry point."""

from __future__ import annotations

import difflib
import errno
import inspect
import io
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import rich.console
import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from archprof import __version__
from archprof.cli.streams import discard_written_to, interrupted, say, standard_output, terminated_as_interrupted
from archprof.cli.unanswered_signals import ended_if_unanswered


class _PlainArgument(TyperArgument):
    """An argument shown as a Unix tool shows it: MODEL, MODELS..., [NEW]; no Python type."""

    def display_type_rich(self, ctx):
        return None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw + ("..." if self.nargs != 1 else "")
        return name if self.required else f"[{name}]"

    @property
    def display_name_raw(self) -> str:
        return self.metavar or self.name.upper()


class _PlainOption(TyperOption):
    """An option's value shown as its metavar (--input SHAPE), its choices (table|csv) or its
    name (--device DEVICE); a flag shows none (never '<bool>', '<list[str]>')."""

    def display_type_rich(self, ctx):
        if self.is_flag:
            return None
        if self.metavar is not None:
            return self.metavar
        shown = super().display_type_rich(ctx) or ""
        if "|" in shown:
            return shown.strip("<>")
        return self.name.upper().replace("_", "-")


def _plain(parameter):
    kinds = {TyperArgument: _PlainArgument, TyperOption: _PlainOption}
    if type(parameter) in kinds:
        parameter.__class__ = kinds[type(parameter)]
    return parameter


def _flowing(text: str) -> str:
    """A docstring's paragraphs each on one line, for Rich to wrap to the terminal: Typer
    keeps the line breaks made for 88 columns, which on 80 broke every line twice, one
    word on the second. An example (a line `archprof ...`) stays on its own line."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(
        paragraph if paragraph.startswith("archprof ") else " ".join(paragraph.split("\n")) for paragraph in paragraphs
    )


class _PlainHelp:
    """Help with plain metavars (`_PlainArgument`, `_PlainOption`), for a command or the group,
    whose option names and metavars a narrow terminal does not cut (`help_panels`)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for parameter in self.params:
            _plain(parameter)
        if self.help:
            self.help = _flowing(self.help)

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        return _plain(option) if option is not None else None

    def format_help(self, ctx, formatter) -> None:
        # Imported here: it needs Typer's Rich help module, whose Markdown parser is a fifth of
        # the CLI's own start-up, which a command that prints no help pays for nothing.
        from archprof.cli.help_panels import names_kept_whole

        with names_kept_whole():
            super().format_help(ctx, formatter)


# The Click that parses the command line: Typer's own copy from Typer 0.2x, else click.
_CLICK_ERRORS = sys.modules[typer.BadParameter.__module__]
# `archprof` alone prints the help (Click 8.2 on raises this UsageError for it).
_HELP_FOR_NO_ARGUMENTS = getattr(_CLICK_ERRORS, "NoArgsIsHelpError", ())


def _bad_number(exc) -> str | None:
    """A whole-number option's bad value, as archprof's own errors put it ("must be at least 1,
    got 0"; "must be a whole number, got '1.5'"), from the pydantic error Typer 0.29 raises it
    from; None for any other. A value that is not UTF-8 (`--batch $'\\xff'`) was "the value
    should be a valid string, unable to parse raw data as a unicode string": not what to type."""
    cause = exc.__cause__
    if getattr(cause, "title", None) not in ("int", "constrained-int"):
        return None
    error = cause.errors()[0]
    bounds = {"greater_than_equal": ("at least", "ge"), "less_than_equal": ("at most", "le")}
    if error["type"] in bounds:  # a number, out of range
        words, key = bounds[error["type"]]
        return f"must be {words} {error['ctx'][key]}, got {error['input']}"
    return f"must be a whole number, got '{error['input']}'"


@contextmanager
def _usage_error_on_one_line(command: str) -> Iterator[None]:
    """A command line Click cannot parse (an unknown option, a bad value, a missing
    argument) as one line on stderr and exit 2, as archprof's own errors are: not Click's
    usage, hint and boxed message over five lines. `command`: "archprof summary", for the hint.
    Ctrl-C while parsing says so as in a command (Typer would exit 130 without a word)."""
    try:
        yield
    except KeyboardInterrupt:
        interrupted()
    except _CLICK_ERRORS.UsageError as exc:
        if isinstance(exc, _HELP_FOR_NO_ARGUMENTS):
            raise
        # Typer 0.29 words a bad value through pydantic ("Value error, 'xml' is not one of ...",
        # "Input should be greater than or equal to 1": not --input, the value).
        message = " ".join(exc.format_message().replace("Value error, ", "").split()).removesuffix(".")
        number = _bad_number(exc)
        if number is not None:
            message = f"{message.partition(': ')[0]}: {number}"
        # An unknown option or command: the closest known one (Click listed up to three, alphabetically:
        # "--dept (Possible options: --depth, --help, --wide)"), asked alike for both.
        if getattr(exc, "possibilities", None):
            message = f"no such option: {exc.option_name}; did you mean {exc.possibilities[0]}?"
        message = re.sub(r"\. Did you mean ('[^']*')(, '[^']*')*\?$", r"; did you mean \1?", message)
        message = message.replace("Input should be", "the value should be")  # any other value pydantic refused
        message = message[:1].lower() + message[1:] + _closest_choice(message) + _size_split_hint(message)
        say(f"error: {message} ({command} -h for help)")
        raise typer.Exit(2) from None


_NOT_ONE_OF = re.compile(r"'([^']*)' is not one of ((?:'[^']*'(?:, )?)+)")


def _closest_choice(message: str) -> str:
    """Of a value refused as none of an option's choices ("'jsn' is not one of 'table',
    'csv', 'json', ..."; `--dtype fp16`), the closest choice, as a hint; '' where none is close."""
    found = _NOT_ONE_OF.search(message)
    if found is None:
        return ""
    choices = re.findall(r"'([^']*)'", found.group(2))
    close = difflib.get_close_matches(found.group(1).lower(), choices, n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


_UNIT = re.compile(r"unexpected extra argument(?:\(s\)|s)? \(([kmgtp]?i?b)\)", re.IGNORECASE)


def _size_split_hint(message: str) -> str:
    """Of a unit left over as an argument (`--fit 16 GB`), that a size is one word."""
    found = _UNIT.search(message)
    return f": a size is one word (16{found.group(1)}, not 16 {found.group(1)})" if found else ""


@contextmanager
def _help_reader_gone() -> Iterator[None]:
    """A reader gone while Click writes a help page (`archprof -h | head -30`: Rich's part
    written, Click's last write and flush failing) as a report's ends: quietly, exit 141.
    Click takes it for its own error, exit 1, and leaves the rest in the buffer to fail
    again at the interpreter's exit: a two-line warning on stderr and exit 120."""
    try:
        yield
    except BrokenPipeError:
        discard_written_to(sys.stdout)
        raise typer.Exit(141) from None


class _OneLineUsageErrors:
    """Parsing a command line (the app's, then a command's) under `_usage_error_on_one_line`,
    and its help (written while parsing) under `_help_reader_gone`."""

    def make_context(self, info_name, args, parent=None, **extra):
        command = f"{parent.command_path} {info_name}" if parent is not None else info_name
        with _usage_error_on_one_line(command), _help_reader_gone():
            return super().make_context(info_name, args, parent=parent, **extra)

    def resolve_command(self, ctx, args):  # a group's: "No such command"
        with _usage_error_on_one_line(ctx.command_path):
            return super().resolve_command(ctx, args)


class _RepeatsRefused:
    """An option of one value given twice is refused: Click keeps the last one silently, and
    `check --max-params 10K --max-params 100M` judged the model against 100M. A flag given
    twice says the same thing twice; an option that collects (`multiple`) is left alone."""

    def parse_args(self, ctx, args):
        _, _, order = self.make_parser(ctx).parse_args(args=list(args))
        seen = set()
        for parameter in order:
            if parameter.param_type_name != "option" or parameter.multiple or parameter.count or parameter.is_flag:
                continue
            if parameter in seen:
                name = max(parameter.opts, key=len)
                raise _CLICK_ERRORS.UsageError(f"{name} is given twice: give it once", ctx)
            seen.add(parameter)
        return super().parse_args(ctx, args)


class PlainHelpCommand(_OneLineUsageErrors, _RepeatsRefused, _PlainHelp, TyperCommand):
    pass


class PlainHelpGroup(_OneLineUsageErrors, _RepeatsRefused, _PlainHelp, TyperGroup):
    pass


class ArchprofTyper(typer.Typer):
    """Every command of the app gets `PlainHelpCommand`."""

    def command(self, *args, cls=None, **kwargs):
        return super().command(*args, cls=cls or PlainHelpCommand, **kwargs)


app = ArchprofTyper(
    name="archprof",
    help="Static analysis and cost profiling of CNN architectures: shapes, parameters, MACs/FLOPs, memory.\n\n"
    "Example: archprof summary resnet50; archprof COMMAND -h for a command's options and an example.",
    cls=PlainHelpGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        with standard_output():
            typer.echo(f"archprof {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """archprof: know what a CNN costs before you run it.

    Example: archprof summary resnet50; archprof COMMAND -h for a command's options and an example."""


class _ClosedOutput(io.TextIOBase):
    """Standard output when the process started without one (`archprof zoo >&-`): writing
    to it fails as writing to a closed descriptor does, which `standard_output` reports."""

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, "it is closed")


def _broken_pipe(console) -> None:
    """As Rich's own, which exits 1 (as a failed budget check does), but with 141, as a
    process killed by SIGPIPE: what is left to write goes nowhere."""
    discard_written_to(console.file)
    raise SystemExit(141)


def _writing_every_byte(stream):
    """`stream`, standard output, given a buffer where it has none (PYTHONUNBUFFERED, python -u).
    Without one, its text layer writes to the file descriptor once and ignores how much went:
    a reader that leaves mid-report (`| head -1`) cuts it short with no error, and exit 0. A
    BufferedWriter writes on until every byte has gone or the write fails (EPIPE: exit 141)."""
    if not isinstance(getattr(stream, "buffer", None), io.RawIOBase):
        return stream
    return io.TextIOWrapper(
        io.BufferedWriter(stream.buffer),
        encoding=stream.encoding,
        errors=stream.errors,
        line_buffering=stream.line_buffering,
        write_through=True,  # unbuffered as asked, but for the BufferedWriter, flushed after each report
    )


def _no_zero_width() -> None:
    """COLUMNS=0 read as COLUMNS unset. Rich takes it for a width of 0 columns: `zoo`,
    `check` and `diff` printed nothing and exited 0 (a budget check with no verdict), the
    other tables failed with a traceback. So is a COLUMNS that is not a width (empty, "abc",
    "-5", "80.5"): Rich ignores it and lays a piped table out for 80 columns, where unset it
    has every column. Digits 0-9 only, four at most: `isdigit` passes "²", which int() refuses
    (a traceback before any command, `-h` too), and Rich pads every help line to the width
    (COLUMNS=999999: 42 MB of help; 10000000: 300 MB)."""
    if "COLUMNS" in os.environ and not (_WIDTH.fullmatch(os.environ["COLUMNS"]) and int(os.environ["COLUMNS"]) > 0):
        del os.environ["COLUMNS"]


_WIDTH = re.compile("[0-9]{1,4}")


def main() -> None:
    _no_zero_width()
    sys.stdout = _ClosedOutput() if sys.stdout is None else _writing_every_byte(sys.stdout)
    rich.console.Console.on_broken_pipe = _broken_pipe  # the tables', and Typer's help
    try:
        # The help too: `archprof -h > /dev/full`.
        with standard_output(), terminated_as_interrupted(), ended_if_unanswered():
            try:
                app()
            except KeyboardInterrupt:  # while Typer builds the commands, before any parsing
                interrupted()
            finally:  # what is left in the buffer fails here, not in the interpreter's exit
                sys.stdout.flush()
    except typer.Exit as exc:  # standard_output's verdict, outside the app that would take it
        sys.exit(exc.exit_code)
