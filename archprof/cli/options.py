"""The options every command shares: the option types (a model, its inputs, a format, an
output file, --columns and --wide, counts), each read and refused on one line, and the model
options every model command takes, read once into one `ModelOptions`."""

from __future__ import annotations

import copy
import inspect
import os
from dataclasses import dataclass
from enum import Enum
from functools import partial, wraps
from pathlib import Path
from typing import Annotated, Optional, get_args

import typer

from archprof.optimizers import optimizer_names


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


def file_name(text: str) -> Path:
    """An option's file, to write (--output, --plot, --junit) or to read (--weights,
    --config), as typed: refused when empty or when it ends as a folder's name does
    (`x.csv/`, `out/.`). Path() would read '' as '.' and drop the slash of `x.csv/`, so that
    a report meant for a folder went to a file of that name."""
    if not text:
        raise typer.BadParameter("it is empty: give a file name")
    last = text.replace(os.altsep or os.sep, os.sep).rsplit(os.sep, 1)[-1]
    if last in ("", ".", ".."):
        raise typer.BadParameter(f"'{text}' ends as a folder's name does: give a file name")
    return Path(text)


WeightsOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--weights",
        "-w",
        metavar="FILE",
        help="A checkpoint (state dict) for a built-in or a factory, loaded with weights_only=True and checked"
        " against the model (the figures do not depend on it)",
        show_default=False,
        parser=file_name,  # '' refused as empty, not read as '.'
    ),
]


TrustPickleOpt = Annotated[
    bool,
    typer.Option(
        "--trust-pickle",
        help="Let a file that needs code to unpickle load (a pickled module): only for files you trust.",
    ),
]


def _format(text: str | Format, taken: tuple[Format, ...] = tuple(Format)) -> Format:
    """A format by its name, or `md` for markdown: the suffix `--output` reads as Markdown; in
    any case, as `--output`'s suffix is read. A name that is no format is refused naming the
    formats the command takes (`taken`)."""
    if isinstance(text, Format):
        return text
    name = text.lower()
    try:
        return Format("markdown" if name == "md" else name)
    except ValueError:
        names = ", ".join(f"'{format.value}'" for format in taken)
        markdown = " (or 'md')" if Format.markdown in taken else ""
        raise typer.BadParameter(f"'{text}' is not one of {names}{markdown}") from None


def format_option(*formats: Format):
    """--format, its help naming the formats given (default: every one). Any format still parses,
    so that a command that takes some refuses the others in its own words. Its metavar is FORMAT:
    the choices as one (table|csv|json|markdown|html) took 30 of a help page's 80 columns from every
    option's help, which 80 columns wrapped to 26 (four words a line)."""
    taken = formats or tuple(Format)
    names = [format.value for format in taken]
    return Annotated[
        Optional[Format],
        typer.Option(
            "--format",
            "-f",
            metavar="FORMAT",
            parser=partial(_format, taken=taken),
            help=f"Output format: {', '.join(names[:-1])} or {names[-1]}",
            show_default="from --output's suffix; table on standard output",
        ),
    ]


FormatOpt = format_option()


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


HideIdleOpt = Annotated[
    bool,
    typer.Option(
        "--hide-idle",
        help="Leave out of the table the rows that ran no operation and hold no parameters (nn.Identity, Dropout"
        " in evaluation: their output is their input); the totals stay the model's. Table and Markdown only.",
    ),
]


def checked_hide_idle(hide_idle: bool, chosen: Format) -> None:
    """--hide-idle, refused before any work for a format that holds every row."""
    from archprof.errors import ArchprofError

    if hide_idle and chosen not in (Format.table, Format.markdown):
        raise ArchprofError(
            f"--hide-idle leaves rows out of the table and Markdown: {chosen.value} holds every row, the idle ones"
            " with no operators and no parameters"
        )


@dataclass(frozen=True)
class ColumnChoice:
    """--columns and --wide, read: the columns named (none: as many as fit), or every one."""

    columns: tuple[str, ...] = ()
    wide: bool = False


def optimizer_option(purpose: str, after: str = ""):
    """--optimizer, `purpose` saying what it applies to in the command, then the names
    (`archprof.optimizers`), then `after`; sgd by default."""
    return Annotated[
        Optional[str],
        typer.Option(
            "--optimizer",
            metavar="NAME",
            help=f"{purpose}: {optimizer_names()}{after}.",
            show_default="sgd",
        ),
    ]


def column_choice(columns: str | None, wide: bool, format: Format) -> ColumnChoice:
    """--columns and --wide read, and refused where they mean nothing, before any work."""
    from archprof.errors import ArchprofError

    names = tuple(name.strip() for name in columns.split(",") if name.strip()) if columns is not None else ()
    if columns is not None and not names:
        raise ArchprofError("--columns needs column headings, comma-separated (-h shows an example)")
    if names and wide:
        raise ArchprofError("--wide shows every column and --columns chooses some: give one of them")
    if (names or wide) and format not in (Format.table, Format.markdown):
        # CSV and JSON write every column; the HTML page lays its sortable table out itself.
        holds = "lays out its sortable table itself" if format is Format.html else "has every column"
        raise ArchprofError(f"--columns and --wide lay out the table and Markdown: {format.value} {holds}")
    return ColumnChoice(names, wide)


# Batch and dtype where they default to the model's own (an exported program fixes both).


ModelBatchOpt = Annotated[
    Optional[int],
    typer.Option(
        "--batch",
        "-b",
        min=1,  # as --jobs: a batch under 1 refused as the parser words it
        metavar="N",
        help="Batch size, 1 to 2^62",
        show_default="1, or an exported program's",
    ),
]


ModelDTypeOpt = Annotated[
    Optional[DType],
    typer.Option(
        "--dtype",
        case_sensitive=False,  # as --input's 3x32x32:FLOAT16 and --optimizer Adam
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


def limit_option(name: str, example: str):
    return Annotated[Optional[str], typer.Option(name, metavar="LIMIT", help=f"e.g. {example}", show_default=False)]


def checked_batch(batch: int) -> int:
    return count_option("--batch", batch, 1, MAX_BATCH)


def count_option(option: str, value: int, low: int, high: int) -> int:
    """`value`, refused on one line outside [low, high] (typer takes any integer, 10**20 too)."""
    from archprof.units import checked_count

    return checked_count(option, value, low, high)
