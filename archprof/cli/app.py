"""The Typer application, its global options, its help conventions and the entry point."""

from __future__ import annotations

from typing import Annotated

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from archprof import __version__
from archprof.cli.common import standard_output


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


class _PlainHelp:
    """Help with plain metavars (`_PlainArgument`, `_PlainOption`), for a command or the group."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for parameter in self.params:
            _plain(parameter)

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        return _plain(option) if option is not None else None


class PlainHelpCommand(_PlainHelp, TyperCommand):
    pass


class PlainHelpGroup(_PlainHelp, TyperGroup):
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


def main() -> None:
    app()
