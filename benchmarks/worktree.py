"""An earlier commit of this repository checked out beside it, archprof imported from
either tree, and the machine line of the report, for the benchmarks that set this
checkout's numbers beside an earlier one's (`bench_startup.py`, `bench_revisions.py`,
`same_reports.py`)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def worktree(revision: str) -> Iterator[Path]:
    """A temporary `git worktree` of `revision`, removed afterwards."""
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "base"
        git = ["git", "-C", str(ROOT), "worktree"]
        subprocess.run([*git, "add", "-q", "--detach", str(tree), revision], check=True)
        try:
            yield tree
        finally:
            subprocess.run([*git, "remove", "--force", str(tree)], check=True)


def import_archprof_from(tree: Path):
    """archprof, imported from `tree` (a worker process's first import of it): exits where
    another copy came first."""
    sys.path.insert(0, str(tree))
    # torchvision's meta registrations clash with a CPU build of torch: archprof does without them.
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import archprof

    if not Path(archprof.__file__).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"archprof was imported from {archprof.__file__}, not from {tree}")
    return archprof


def machine_text() -> str:
    """What the comparison ran on, for its report: the load at the end, the CPUs, Python."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"Load average at the end: {load:.2f} on {os.cpu_count()} CPUs; Python {sys.version.split()[0]}."
