"""The `archprof` command: parse, call the library, render, map errors to exit codes.

Exit codes: 0 success, 1 a budget was exceeded, 2 bad input (one line on stderr)."""

from __future__ import annotations

import sys
from enum import Enum
from functools import wraps
from pathlib import Path
from typing import Annotated, Optional

import typer

from archprof import __version__

app = typer.Typer(
    name="archprof",
    help="Static analysis and cost profiling of CNN architectures: shapes, parameters, MACs/FLOPs, memory.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    markdown = "markdown"


class DType(str, Enum):
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


_SUFFIX_FORMATS = {".csv": Format.csv, ".json": Format.json, ".md": Format.markdown, ".txt": Format.table}

ModelArg = Annotated[str, typer.Argument(help="A built-in model name (see `archprof zoo`).", show_default=False)]
InputOpt = Annotated[
    Optional[str],
    typer.Option(
        "--input",
        "-i",
        help="One sample's shape, e.g. 3x224x224 [default: the model's usual input]",
        show_default=False,
    ),
]
BatchOpt = Annotated[int, typer.Option("--batch", "-b", help="Batch size.")]
DTypeOpt = Annotated[DType, typer.Option("--dtype", help="Data type of parameters and activations.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"archprof {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """archprof: know what a CNN costs before you run it."""


def _user_errors(command):
    """Print an ArchprofError on one line and exit 2, without a traceback."""

    @wraps(command)
    def run(*args, **kwargs):
        from archprof.errors import ArchprofError

        try:
            return command(*args, **kwargs)
        except ArchprofError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return run


@app.command()
@_user_errors
def summary(
    model: ModelArg,
    input: InputOpt = None,
    batch: BatchOpt = 1,
    dtype: DTypeOpt = DType.float32,
    depth: Annotated[
        Optional[int],
        typer.Option("--depth", "-d", min=0, help="Roll rows up below this module depth.", show_default=False),
    ] = None,
    format: Annotated[
        Optional[Format],
        typer.Option(
            "--format", "-f", help="Output format [default: from --output's suffix, else table]", show_default=False
        ),
    ] = None,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Write the report to this file.", show_default=False)
    ] = None,
) -> None:
    """Per-layer output shapes, parameters, MACs, FLOPs and activation memory, with totals."""
    from archprof.api import analyze
    from archprof.load import parse_dtype, parse_input_size

    chosen = _choose_format(format, output)
    size = parse_input_size(input) if input is not None else None
    report = analyze(model, input_size=size, batch=_positive_batch(batch), dtype=parse_dtype(dtype.value))
    if depth is not None:
        report = report.rollup(depth)
    _emit(report, chosen, output)


@app.command()
@_user_errors
def zoo() -> None:
    """List the built-in models with their parameter count and default input."""
    import torch

    from archprof.render import zoo_table
    from archprof.zoo import MODELS

    rows = []
    for name, entry in MODELS.items():
        with torch.device("meta"):
            module = entry.build()
        params = sum(p.numel() for p in module.parameters())
        rows.append((name, params, "x".join(map(str, entry.input_size)), entry.description))
    _console().print(zoo_table(rows))


def _choose_format(format: Format | None, output: Path | None) -> Format:
    from archprof.errors import ArchprofError

    if format is not None:
        return format
    if output is None:
        return Format.table
    try:
        return _SUFFIX_FORMATS[output.suffix.lower()]
    except KeyError:
        known = ", ".join(_SUFFIX_FORMATS)
        raise ArchprofError(f"cannot tell the format of '{output}' from its suffix ({known}): give --format") from None


def _positive_batch(batch: int) -> int:
    from archprof.errors import ArchprofError

    if batch < 1:
        raise ArchprofError(f"--batch must be at least 1, got {batch}")
    return batch


def _emit(report, format: Format, output: Path | None) -> None:
    """Print the report, or write it (atomically) to `output`."""
    if format is Format.table:
        from archprof.render import summary_table, to_text

        if output is None:
            console = _console()
            console.print(summary_table(report, width=console.width))
            return
        from archprof.output import write_atomically

        write_atomically(output, to_text(summary_table(report)))
    else:
        writer = {Format.csv: report.to_csv, Format.json: report.to_json, Format.markdown: report.to_markdown}[format]
        text = writer(output)
        if output is None:
            sys.stdout.write(text)
    if output is not None:
        typer.echo(f"wrote {output}", err=True)


def _console():
    from rich.console import Console

    return Console()


def main() -> None:
    app()
