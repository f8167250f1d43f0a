"""The Typer application, its global options and the entry point."""

from __future__ import annotations

from typing import Annotated

import typer

from archprof import __version__
from archprof.cli.common import standard_output

app = typer.Typer(
    name="archprof",
    help="Static analysis and cost profiling of CNN architectures: shapes, parameters, MACs/FLOPs, memory.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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
    """archprof: know what a CNN costs before you run it."""


def main() -> None:
    app()
