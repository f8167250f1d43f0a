"""Command-line argument types the benchmarks share, and those arguments written back: on a
report's command line and in its file name. archprof is imported where it is first used,
not here: a script that imports an earlier commit's archprof in a worker
(`worktree.import_archprof_from`) imports its siblings before it."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def input_size(text: str) -> tuple[int, ...]:
    """argparse's type for one sample's shape without the batch, '3x224x224' -> (3, 224, 224),
    read as the CLI's `--input` reads it: a malformed one is argparse's one-line error, exit 2."""
    from archprof.errors import ArchprofError
    from archprof.load.inputs import parse_input_size

    try:
        return parse_input_size(text)
    except ArchprofError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def whole_number(least: int, what: str) -> Callable[[str], int]:
    """argparse's type for a whole number of at least `least` (`what` it counts, for the error)."""

    def checked(text: str) -> int:
        if not text.isdigit() or int(text) < least:
            raise argparse.ArgumentTypeError(f"{text!r} is no {what}: give a whole number of at least {least}")
        return int(text)

    return checked


batch_size = whole_number(1, "batch")


def sample_options(size: tuple[int, ...] | None, batch: int | None = None) -> str:
    """`--input` and `--batch` as a command line gives them (' --input 3x199x167 --batch 3'), each
    only where given."""
    from archprof.units import shape_text

    return (f" --input {shape_text(size)}" if size else "") + (f" --batch {batch}" if batch else "")


def sample_suffix(size: tuple[int, ...] | None, batch: int | None = None) -> str:
    """The same in a report's name ('_3x199x167_batch3'), each only where given."""
    from archprof.units import shape_text

    return (f"_{shape_text(size)}" if size else "") + (f"_batch{batch}" if batch else "")
