"""How a benchmark writes its Markdown report: its tables, and the file put in place whole."""

from __future__ import annotations

from pathlib import Path

from archprof.output import check_output_target, write_atomically


def markdown_table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    """A Markdown table's lines; `align` a letter a column, "l" left, any other right."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(":--" if a == "l" else "--:" for a in align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def write_report(path: Path, text: str) -> None:
    """`text` at `path` (`ready_to_write`), written whole or not at all: a stop part way leaves
    the file as it was, as the CLI writes its own outputs."""
    ready_to_write(path)
    write_atomically(path, text)


def ready_to_write(path: Path) -> None:
    """Its folder made if missing, and `path` checked as a file the report can be written to
    (ArchprofError, one line, where not: a directory, a read-only file), before a run that
    takes minutes finds out at its end."""
    path.parent.mkdir(parents=True, exist_ok=True)
    check_output_target(path)
