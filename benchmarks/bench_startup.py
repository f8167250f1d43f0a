"""Start-up time and peak memory of the CLI, this checkout against an earlier commit.

    python benchmarks/bench_startup.py [--base REV] [--runs N] [--report PATH]

Runs `archprof summary vgg16 -f csv` (and `archprof --help`) from this working tree and
from REV (a temporary `git worktree`, default: the commit before issue 13's restructuring),
alternating the two so that load on the machine falls on both alike, with one untimed run
each first. Reports the median wall time and the largest max-RSS of each, and the ratio.
Both use this checkout's virtual environment (the same torch). Writes the Markdown table
to reports/benchmark_startup.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from worktree import ROOT, machine_text, worktree

DEFAULT_BASE = "82d527d"  # main before issue 13 (one way through the house)
COMMANDS = {
    "summary vgg16 -f csv": ["summary", "vgg16", "-f", "csv"],
    "--help": ["--help"],
}
# Runs the CLI of the tree on PYTHONPATH, then prints its own peak RSS (KiB) on stderr.
_CHILD = (
    "import resource, sys\n"
    "from archprof.cli import main\n"
    "try:\n    main()\n"
    "except SystemExit:\n    pass\n"
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
)


def run_once(tree: Path, argv: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one CLI process importing archprof from `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    # The .pyc files an installed package has: written on the warm-up run even where the
    # environment says not to, rather than every run compiling archprof from source.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    seconds = time.perf_counter() - start
    return seconds, int(done.stderr.strip().splitlines()[-1]) / 1024


def measure(trees: dict[str, Path], runs: int) -> dict[tuple[str, str], list[tuple[float, float]]]:
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for label, argv in COMMANDS.items():
        for tree in trees.values():
            run_once(tree, argv)  # warm the file cache
        for _ in range(runs):
            for name, tree in trees.items():
                results.setdefault((label, name), []).append(run_once(tree, argv))
    return results


def report(results, trees: dict[str, Path], base: str, runs: int) -> str:
    names = list(trees)
    lines = [
        "# archprof CLI start-up: this checkout against an earlier commit",
        "",
        f"`python benchmarks/bench_startup.py --base {base} --runs {runs}`; {runs} alternating runs each after one"
        f" warm-up; median wall time, largest peak RSS. {machine_text()}",
        "",
        f"| command | {names[0]} ms | {names[1]} ms | ratio | {names[0]} MB | {names[1]} MB |",
        "|:--|--:|--:|--:|--:|--:|",
    ]
    for label in COMMANDS:
        now, before = (results[(label, name)] for name in names)
        now_ms, before_ms = (statistics.median(s for s, _ in r) * 1e3 for r in (now, before))
        now_mb, before_mb = (max(m for _, m in r) for r in (now, before))
        lines.append(
            f"| `archprof {label}` | {now_ms:,.0f} | {before_ms:,.0f} | {now_ms / before_ms:.2f} |"
            f" {now_mb:,.1f} | {before_mb:,.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=DEFAULT_BASE, help="the commit to compare with")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--report", type=Path, default=ROOT / "reports" / "benchmark_startup.md")
    options = parser.parse_args()
    with worktree(options.base) as base_tree:
        trees = {"this checkout": ROOT, options.base: base_tree}
        text = report(measure(trees, options.runs), trees, options.base, options.runs)
    print(text)
    options.report.write_text(text, encoding="utf-8")
    print(f"[bench] wrote {options.report}", file=sys.stderr)


if __name__ == "__main__":
    main()
