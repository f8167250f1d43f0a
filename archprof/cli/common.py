"""What every command shares: the option types, one set of model options, one-line errors,
standard output that fails cleanly, the output format and file checks, and one emitter."""

from __future__ import annotations

import copy
import errno
import inspect
import os
import sys
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from enum import Enum
from functools import partial, wraps
from pathlib import Path
from typing import Annotated, NoReturn, Optional, get_args

import typer


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    markdown = "markdown"
    html = "html"  # a self-contained page


class DType(str, Enum):
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"
    float64 = "float64"


_SUFFIX_FORMATS = {
    ".csv": Format.csv,
    ".json": Format.json,
    ".md": Format.markdown,
    ".txt": Format.table,
    ".html": Format.html,
}


ModelArg = Annotated[
    str,
    typer.Argument(
        help="A built-in name (see `archprof zoo`), torchvision:NAME, timm:NAME, package.module:factory,"
        " path/to/file.py:factory, a TorchScript file (.pt) or an exported program (.pt2).",
        show_default=False,
    ),
]


MAX_BATCH = 2**62  # beyond it no tensor's element count fits in int64


InputsOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--input",
        "-i",
        metavar="SHAPE",
        help="One input's per-sample shape: 3x224x224, 77:int64 (a dtype after the colon), mask=77:bool (passed by"
        " keyword); repeat it for each input of forward, in order",
        show_default="the model's usual input",
    ),
]


ArgsOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--arg",
        "-a",
        metavar="KEY=VALUE",
        help="key=value passed to the factory (10, 0.5, true, none and text are read as such); repeatable",
        show_default=False,
    ),
]


WeightsOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--weights",
        "-w",
        metavar="FILE",
        help="A checkpoint (state dict) for a built-in or a factory, loaded with weights_only=True and checked"
        " against the model (the figures do not depend on it)",
        show_default=False,
    ),
]


TrustPickleOpt = Annotated[
    bool,
    typer.Option(
        "--trust-pickle",
        help="Let a file that needs code to unpickle load (a pickled module): only for files you trust.",
    ),
]


def _format(text: str | Format) -> Format:
    """A format by its name, or `md` for markdown: the suffix `--output` reads as Markdown."""
    if isinstance(text, Format):
        return text
    try:
        return Format("markdown" if text == "md" else text)
    except ValueError:
        names = ", ".join(f"'{format.value}'" for format in Format)
        raise typer.BadParameter(f"'{text}' is not one of {names} (or 'md')") from None


def format_option(*formats: Format):
    """--format, its help naming the formats given (default: every one). Any format still parses,
    so that a command that takes some refuses the others in its own words. Its metavar is FORMAT:
    the choices as one (table|csv|json|markdown|html) took 30 of a help page's 80 columns from every
    option's help, which 80 columns wrapped to 26 (four words a line)."""
    names = [format.value for format in formats or Format]
    return Annotated[
        Optional[Format],
        typer.Option(
            "--format",
            "-f",
            metavar="FORMAT",
            parser=_format,
            help=f"Output format: {', '.join(names[:-1])} or {names[-1]}",
            show_default="from --output's suffix, else table",
        ),
    ]


FormatOpt = format_option()


def file_name(text: str) -> Path:
    """An option's file to write, as typed: refused when empty or when it ends as a folder's
    name does (`x.csv/`, `out/.`). Path() would read '' as '.' and drop the slash of `x.csv/`,
    so that a report meant for a folder went to a file of that name."""
    if not text:
        raise typer.BadParameter("it is empty: give a file name")
    last = text.replace(os.altsep or os.sep, os.sep).rsplit(os.sep, 1)[-1]
    if last in ("", ".", ".."):
        raise typer.BadParameter(f"'{text}' ends as a folder's name does: give a file name")
    return Path(text)


OutputOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--output",
        "-o",
        metavar="FILE",
        help="Write the report to this file ('-': standard output).",
        show_default="standard output",
        parser=lambda text: None if text == "-" else file_name(text),
    ),
]


def plot_option(drawing: str):
    return Annotated[
        Optional[Path],
        typer.Option(
            "--plot",
            metavar="FILE",
            help=f"Draw {drawing} into this PNG/SVG/PDF (needs matplotlib).",
            show_default=False,
            parser=file_name,
        ),
    ]


QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress display (there is none where stderr is not a terminal).")
]


JobsOpt = Annotated[
    Optional[int],
    typer.Option(
        "--jobs",
        "-j",
        min=1,
        metavar="N",
        help="Analyse the models in this many processes (1: in this one)",
        show_default="one per core",
    ),
]


FoldBnOpt = Annotated[
    bool,
    typer.Option(
        "--fold-bn",
        help="The inference view: every BatchNorm right after a convolution or linear layer folded into it (its"
        " parameters, buffers and FLOPs gone, a bias gained); those that cannot fold are named on stderr.",
    ),
]


def columns_option(example: str, always: str = "the layer's name always shows"):
    """--columns, its example headings of the command's own table (the tables differ, and
    importing them from `archprof.render` would load torch before the help shows)."""
    return Annotated[
        Optional[str],
        typer.Option(
            "--columns",
            metavar="HEADINGS",
            help=f"The table's columns, by heading, comma-separated, e.g. '{example}' ({always})",
            show_default="every column that fits the terminal",
        ),
    ]


WideOpt = Annotated[
    bool,
    typer.Option(
        "--wide",
        help="Every column of the table, however wide the terminal (or COLUMNS). Piped without COLUMNS set, and"
        " with --output: always.",
    ),
]


@dataclass(frozen=True)
class ColumnChoice:
    """--columns and --wide, read: the columns named (none: as many as fit), or every one."""

    columns: tuple[str, ...] = ()
    wide: bool = False


def column_choice(columns: str | None, wide: bool, format: Format) -> ColumnChoice:
    """--columns and --wide read, and refused where they mean nothing, before any work."""
    from archprof.errors import ArchprofError

    names = tuple(name.strip() for name in columns.split(",") if name.strip()) if columns is not None else ()
    if columns is not None and not names:
        raise ArchprofError("--columns needs column headings, comma-separated (-h shows an example)")
    if names and wide:
        raise ArchprofError("--wide shows every column and --columns chooses some: give one of them")
    if (names or wide) and format not in (Format.table, Format.markdown):
        raise ArchprofError(f"--columns and --wide lay out the table and Markdown: {format.value} has every column")
    return ColumnChoice(names, wide)


# Batch and dtype where they default to the model's own (an exported program fixes both).


ModelBatchOpt = Annotated[
    Optional[int],
    typer.Option(
        "--batch", "-b", metavar="N", help="Batch size, 1 to 2^62", show_default="1, or an exported program's"
    ),
]


ModelDTypeOpt = Annotated[
    Optional[DType],
    typer.Option(
        "--dtype",
        metavar="DTYPE",  # the choices in the help: a metavar of all four was cut mid-word ("bfloa", "t16")
        help="Data type of parameters and activations: float32, float16, bfloat16 or float64",
        show_default="the model's own",
    ),
]


# The options of every model command, as `with_model_options` adds them.
MODEL_OPTIONS = tuple(
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
    for name, annotation, default in (
        ("input", InputsOpt, None),
        ("batch", ModelBatchOpt, None),
        ("dtype", ModelDTypeOpt, None),
        ("arg", ArgsOpt, None),
        ("weights", WeightsOpt, None),
        ("trust_pickle", TrustPickleOpt, False),
        ("fold_bn", FoldBnOpt, False),
    )
)


def with_model_options(command=None, *, hidden: tuple[str, ...] = ()):
    """Give a command the options every model command takes (--input, --batch, --dtype,
    --arg, --weights, --trust-pickle, --fold-bn), after its arguments; it receives them read once, as
    `options` (an `archprof.load.ModelOptions`). Those named in `hidden` ("fold_bn") are left out
    of its help but still parsed, for a command that refuses them in its own words."""
    if command is None:  # @with_model_options(hidden=...)
        return partial(with_model_options, hidden=hidden)
    shared = [_hidden(parameter) if parameter.name in hidden else parameter for parameter in MODEL_OPTIONS]
    own = inspect.signature(command, eval_str=True).parameters.values()
    own = [parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY) for parameter in own if parameter.name != "options"]
    arguments = [p for p in own if any(isinstance(m, typer.models.ArgumentInfo) for m in _metadata(p))]
    rest = [p for p in own if p not in arguments]

    @wraps(command)
    def run(**values):
        shared = {parameter.name: values.pop(parameter.name) for parameter in MODEL_OPTIONS}
        return command(**values, options=model_options(**shared))

    run.__signature__ = inspect.Signature([*arguments, *shared, *rest])
    return run


def _hidden(parameter: inspect.Parameter) -> inspect.Parameter:
    """A shared option (Annotated[type, typer.Option(...)]) parsed as it is, left out of the help."""
    base, option = get_args(parameter.annotation)
    option = copy.copy(option)
    option.hidden = True
    return parameter.replace(annotation=Annotated[base, option])


def _metadata(parameter: inspect.Parameter) -> tuple:
    return getattr(parameter.annotation, "__metadata__", ())


def model_options(input, batch, dtype, arg, weights, trust_pickle, fold_bn):
    """The options every model command takes, read once (`archprof.load.ModelOptions`)."""
    from archprof.load import ModelOptions, parse_args, parse_dtype, parse_input_spec

    return ModelOptions(
        inputs=tuple(parse_input_spec(text) for text in input) if input else None,
        batch=checked_batch(batch) if batch is not None else None,
        dtype=parse_dtype(dtype.value) if dtype is not None else None,
        args=parse_args(arg),
        weights=weights,
        trust_pickle=trust_pickle,
        fold_bn=fold_bn,
    )


def user_errors(command):
    """Print an ArchprofError on one line (`say`) and exit 2, without a traceback; Ctrl-C
    says so on one line and exits 130, as a shell reports a process SIGINT ended."""

    @wraps(command)
    def run(*args, **kwargs):
        import warnings

        from archprof.errors import ArchprofError, ArchprofWarning

        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            # archprof's own warnings (the CPU fallback) as one line, each once.
            if issubclass(category, ArchprofWarning):
                say(f"warning: {message}")
            else:
                shown(message, category, filename, lineno, file, line)

        try:
            with warnings.catch_warnings(), _model_prints_to_stderr():
                warnings.simplefilter("once", ArchprofWarning)
                warnings.showwarning = show
                return command(*args, **kwargs)
        except ArchprofError as exc:
            say(f"error: {exc}")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:  # Typer would exit 130 without a word
            interrupted()

    return run


def interrupted() -> NoReturn:
    """Ctrl-C, said on one line; exit 130, as a shell reports a process SIGINT ended."""
    say("interrupted (Ctrl-C)")
    raise typer.Exit(130) from None


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
    stream.flush()
    report = open(os.dup(1), "w", encoding=stream.encoding, errors=stream.errors)  # noqa: SIM115 (closed below)
    os.dup2(sys.stderr.fileno(), 1)
    try:
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
    typer.secho(printable.encode(encoding, "backslashreplace").decode(encoding), err=True, **style)


_LONGEST_LINE = 1000


@contextmanager
def standard_output():
    """Around every print to standard output, flushed here: a full disk ends the command
    with one line and exit 2, a reader that has gone (`| head -1`) quietly with 141 (as
    a process killed by SIGPIPE), never a traceback. Standard output then points at
    os.devnull, so that the interpreter's own flush at exit has nothing left to fail on."""
    stream = _report_stream()
    try:
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


def limit_option(name: str, example: str):
    return Annotated[Optional[str], typer.Option(name, metavar="LIMIT", help=f"e.g. {example}", show_default=False)]


def emit(format: Format, output: Path | None, table, writers, choice: ColumnChoice = ColumnChoice()) -> None:
    """Print the table format (`table(layout)`, an `archprof.render.Layout`) or the text of
    `writers[format]()`, or write it (atomically) to `output`. On a terminal (or with COLUMNS
    set) the table fits its width, unless --wide; elsewhere, and in a file, it has every column.
    Markdown is the table's, where `writers` has none or --columns chooses the columns."""
    if format is Format.markdown and (choice.columns or format not in writers):
        writers = {**writers, format: lambda: _table_markdown(table, choice)}
    if format is Format.table:
        from archprof.render.base import UNLIMITED_WIDTH, Layout, to_text

        if output is None:
            console = stdout_console()
            width = None if choice.wide else fitted_width(console)
            renderable = table(Layout(width, choice.columns))
            if width is None:
                console = stdout_console(UNLIMITED_WIDTH)
            with standard_output():
                console.print(renderable)
            return
        text = to_text(table(Layout(columns=choice.columns)))
    else:
        text = writers[format]()
    write_text(text, output)


def write_text(text: str, output: Path | None) -> None:
    """`text` on standard output, or written (atomically) to `output`."""
    if output is None:
        with standard_output():
            sys.stdout.write(text)
        return
    from archprof.output import write_atomically

    write_atomically(output, text)
    say(f"wrote {output}")


def _table_markdown(table, choice: ColumnChoice) -> str:
    from archprof.render.base import Layout
    from archprof.render.export import markdown_text

    return markdown_text(table(Layout(columns=choice.columns)))


def choose_format(format: Format | None, output: Path | None) -> Format:
    """The format asked for, else the one `output`'s suffix names, else the table."""
    from archprof.errors import ArchprofError

    chosen = format
    if chosen is None and output is None:
        chosen = Format.table
    if chosen is None:
        try:
            chosen = _SUFFIX_FORMATS[output.suffix.lower()]
        except KeyError:
            known = ", ".join(_SUFFIX_FORMATS)
            raise ArchprofError(
                f"cannot tell the format of '{output}' from its suffix ({known}): give --format"
            ) from None
    return chosen


def check_output(output: Path | None, option: str, *inputs: tuple[str, str | Path | None]) -> None:
    """Fail before any work when `output` cannot be written (a directory, no such folder) or
    is one of the files the command reads, given as (what, path): the report would destroy it."""
    if output is None:
        return
    from archprof.errors import ArchprofError
    from archprof.output import check_output_target

    check_output_target(output)
    for what, path in inputs:
        if path is not None and same_file(output, path):
            raise ArchprofError(f"{option} {output} would overwrite {what} '{path}': give another file name")


def check_appended(
    target: str, variable: str, reads: list[tuple[str, str | Path | None]], writes: list[tuple[str, Path | None]]
) -> None:
    """Fail before any work when `target`, a file the command appends to as the environment
    `variable` names it, is one of the files the command reads or writes, given as (what,
    path): what it appends would corrupt it (a budget file that no longer parses)."""
    from archprof.errors import ArchprofError

    clashes = [(what, path) for what, path in reads if path is not None and same_file(Path(target), path)]
    clashes += [(what, path) for what, path in writes if path is not None and one_file(Path(target), path)]
    if clashes:
        what, path = clashes[0]
        raise ArchprofError(f"{variable} {target} would append to {what} '{path}': point it at another file")


def one_model_targets(
    model: str, options, format: Format | None, output: Path | None, columns: str | None, wide: bool, plot=None
) -> tuple[Format, ColumnChoice]:
    """A command on one model: its format and columns, and every file it will write checked
    before any work (none may be a file it reads; a plot needs matplotlib and an image suffix)."""
    chosen = choose_format(format, output)
    choice = column_choice(columns, wide, chosen)
    read = (*input_files(model), ("the --weights file", options.weights))
    check_output(output, "--output", *read)
    if plot is not None:
        from archprof.render.figures import check_plot_target

        check_output(plot, "--plot", *read)
        check_plot_target(plot)
        if output is not None and one_file(plot, output):
            from archprof.errors import ArchprofError

            raise ArchprofError(f"--plot {plot} and --output {output} are one file: give each its own name")
    return chosen, choice


def input_files(spec: str, what: str = "the model file", base: Path | None = None) -> list[tuple[str, Path]]:
    """The files a model spec may read, as `check_output` takes them: the spec itself (a .pt,
    .pt2 or CSV file), the Python file of path/to/file.py:factory; also in `base`, where
    a budget file's specs are looked up first; and the source of package.module:factory."""
    from archprof.load import module_source

    location = spec.rpartition(":")[0]
    paths = [Path(spec)] + ([Path(location)] if location.lower().endswith(".py") else [])
    if base is not None:
        paths += [base / path for path in paths]
    source = module_source(location, base) if location and not location.lower().endswith(".py") else None
    return [(what, path) for path in paths + ([source] if source else [])]


def one_file(a: Path, b: str | Path) -> bool:
    """Whether `a` and `b` name one file, either existing or not (not yet written)."""
    return same_file(a, b) or a.resolve() == Path(b).resolve()


def same_file(a: Path, b: str | Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # either is missing (nothing to destroy), or not a valid name
        return False


def checked_batch(batch: int) -> int:
    return count_option("--batch", batch, 1, MAX_BATCH)


def count_option(option: str, value: int, low: int, high: int) -> int:
    """`value`, refused on one line outside [low, high] (typer takes any integer, 10**20 too)."""
    from archprof.units import checked_count

    return checked_count(option, value, low, high)


def emit_report(report, format: Format, output: Path | None, table=None, choice: ColumnChoice = ColumnChoice()) -> None:
    """`emit` for a Report: `table(report, layout)` draws the table format and the Markdown
    (default: the summary table; rich loads only for them)."""

    def draw(layout):
        from archprof.render import summary_table

        return (table or summary_table)(report, layout)

    writers = {Format.csv: report.to_csv, Format.json: report.to_json, Format.html: lambda: _html(report)}
    emit(format, output, draw, writers, choice)


def _html(report) -> str:
    from archprof.render.html import report_html

    return report_html(report)


# The narrowest width a table is laid out for. Under it (COLUMNS=1 to 29), every name and figure
# was cut to a character or two and an ellipsis ('con…  1x…'): laid out for 30, each stays whole,
# its lines longer than the terminal's, which wraps them.
NARROWEST_WIDTH = 30


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
    console.width = max(console.width, NARROWEST_WIDTH)
    return console


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
