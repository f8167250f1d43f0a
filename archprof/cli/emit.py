"""A command's result written: its format chosen (asked for, or read from the output's
suffix), every file it will write checked before any work (none may be a file it reads), and
one emitter for a table or a writer's text, to standard output or a file."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from archprof.cli.options import ColumnChoice, Format, column_choice
from archprof.cli.streams import fitted_width, say, standard_output, stdout_console

_SUFFIX_FORMATS = {
    ".csv": Format.csv,
    ".json": Format.json,
    ".md": Format.markdown,
    ".txt": Format.table,
    ".html": Format.html,
}


def emit(format: Format, output: Path | None, table, writers, choice: ColumnChoice = ColumnChoice()) -> None:
    """Print the table format (`table(layout)`, an `archprof.render.Layout`) or the text of
    `writers[format]()`, or write it (atomically) to `output`. On a terminal (or with COLUMNS
    set) the table fits its width, unless --wide; elsewhere, and in a file, it has every column.
    Markdown is the table's, where `writers` has none or --columns chooses the columns."""
    if format is Format.markdown and (choice.columns or format not in writers):
        writers = {**writers, format: lambda: _table_markdown(table, choice)}
    if format is Format.table:
        from archprof.render.base import Layout, to_text

        if output is None:
            print_table(table, choice)
            return
        text = to_text(table(Layout(columns=choice.columns)))
    else:
        text = writers[format]()
    write_text(text, output)


def print_table(table, choice: ColumnChoice = ColumnChoice()) -> None:
    """`table(layout)` on standard output: fitted to a terminal's width (or COLUMNS's), unless
    --wide; elsewhere every column, and no line, a title's either, broken at a width of 80."""
    from archprof.render.base import UNLIMITED_WIDTH, Layout

    console = stdout_console()
    width = None if choice.wide else fitted_width(console)
    renderable = table(Layout(width, choice.columns))
    if width is None:
        console = stdout_console(UNLIMITED_WIDTH)
    with standard_output():
        console.print(renderable)


def write_text(text: str, output: Path | None) -> None:
    """`text` on standard output, or written (atomically) to `output`."""
    if output is None:
        with standard_output(glyphs=False):
            sys.stdout.write(text)
        return
    from archprof.output import write_atomically

    write_atomically(output, text)
    say(f"wrote {output}")


def write_plot(image: bytes, plot: Path) -> None:
    """A plot drawn before the command wrote anything (`render.figures.image_bytes`), written."""
    from archprof.render.figures import write_image

    write_image(image, plot)
    say(f"wrote {plot}")


def _table_markdown(table, choice: ColumnChoice) -> str:
    from archprof.render.base import Layout
    from archprof.render.export import markdown_text

    return markdown_text(table(Layout(columns=choice.columns)))


def choose_format(format: Format | None, output: Path | None) -> Format:
    """The format asked for, else the one `output`'s suffix names, else the table: on standard
    output, and in a stream without a known suffix (`-o /dev/stdout`, a FIFO, `/dev/null`), as
    the shell's `>` would have it. A file's unknown suffix is refused: `-o report` would
    otherwise be a table where CSV was likely meant."""
    from archprof.errors import ArchprofError
    from archprof.output import check_output_target, is_stream

    if format is not None:
        _check_suffix_agrees(format, output)
        return format
    if output is None:
        return Format.table
    check_output_target(output)  # a directory is said to be one, not a suffix that names no format
    suffix_format = _SUFFIX_FORMATS.get(output.suffix.lower())
    if suffix_format is not None:
        return suffix_format
    if is_stream(output):
        return Format.table
    known = ", ".join(_SUFFIX_FORMATS)
    raise ArchprofError(f"cannot tell the format of '{output}' from its suffix ({known}): give --format")


def _check_suffix_agrees(format: Format, output: Path | None) -> None:
    """Refuse --format where the output's suffix names another format: JSON in `report.csv` is
    a file that every reader of CSV (and `archprof diff`) refuses later. A `.txt` file takes
    any of them, as does a name without a known suffix."""
    from archprof.errors import ArchprofError

    suffix = output.suffix.lower() if output is not None else ""
    named = _SUFFIX_FORMATS.get(suffix)
    if named is not None and named is not format and suffix != ".txt":
        raise ArchprofError(
            f"--format {format.value} does not fit '{output}', a {suffix} name ({named.value}): drop --format, or"
            f" name the file for {format.value}"
        )


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
