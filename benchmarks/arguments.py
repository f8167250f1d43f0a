"""Command-line argument types the benchmarks share. archprof is imported where a type is
first used, not here: a script that imports an earlier commit's archprof in a worker
(`worktree.import_archprof_from`) imports its siblings before it."""

from __future__ import annotations

import argparse


def input_size(text: str) -> tuple[int, ...]:
    """argparse's type for one sample's shape without the batch, '3x224x224' -> (3, 224, 224),
    read as the CLI's `--input` reads it: a malformed one is argparse's one-line error, exit 2."""
    from archprof.errors import ArchprofError
    from archprof.load.inputs import parse_input_size

    try:
        return parse_input_size(text)
    except ArchprofError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def batch_size(text: str) -> int:
    """argparse's type for a batch: a whole number of at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is no batch: give a whole number of at least 1")
    return int(text)
