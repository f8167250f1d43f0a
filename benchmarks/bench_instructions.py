"""archprof's analysis in machine instructions, this checkout against an earlier commit.

    python benchmarks/bench_instructions.py [--base REV] [--runs N] [--models SPEC ...]
                                            [--build | --passes] [--report PATH]

A change of a few percent is below what wall-clock timings on a shared machine can tell
apart (`bench_revisions.py` pairs its runs and still sees their middle half spread over
0.85 to 1.25). The number of instructions the CPU executes for an analysis does not depend
on the machine's load: run under valgrind's callgrind, counted only between two client
requests around the analyses (a three-line helper, compiled with gcc against valgrind's
headers), it comes out the same from run to run to within a few tenths of a percent (the
collector's timing, the addresses that Python's hashes of ids see). Instructions are not
time: a cache miss or an allocation costs more than its count says. They measure Python's
own work, which is where an analysis spends its time (`docs/architecture.md`, "Where an
analysis spends its time").

One worker process per tree (this checkout, and REV as a temporary `git worktree`), run
under callgrind side by side, each with every model loaded and analysed twice before
counting starts; then, per model, the instructions of `--runs` analyses (default 3), with
`--build` of building it from its spec on meta, or with `--passes` of the report built from
a graph traced beforehand. Both use this checkout's virtual environment (the same torch).
Needs valgrind and gcc (`apt-get install valgrind gcc`). Writes
reports/benchmark_instructions[_build|_passes].md.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_revisions import DEFAULT_BASE, DEFAULT_MODELS, with_collector_paused
from worktree import ROOT, import_archprof_from, machine_text, worktree

# Counting starts and stops on these requests only: the import, the builds and the warm-up
# runs are not instrumented at all (valgrind runs them at about a fifth of native speed).
_HELPER = """
#include <valgrind/callgrind.h>
void counting_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; CALLGRIND_TOGGLE_COLLECT; }
void counting_stop(void) { CALLGRIND_TOGGLE_COLLECT; CALLGRIND_DUMP_STATS; CALLGRIND_STOP_INSTRUMENTATION; }
"""


def worker(tree: Path, helper: Path, specs: list[str], runs: int, step: str) -> None:
    """Under callgrind: archprof from `tree`, each model counted over `runs` analyses (or,
    with `step` "build", builds; with "passes", reports), one dump each, in the order of
    `specs`; prints each model's number of traced operators."""
    import ctypes

    counting = ctypes.CDLL(str(helper))
    archprof = import_archprof_from(tree)
    from archprof.analysis import analysis, build_report
    from archprof.load import load_model

    for spec in specs:
        model = load_model(spec)
        shape = model.default_inputs[0].shape
        graph = analysis(model, shape, None, None).graph
        if step == "build":
            run = lambda spec=spec: load_model(spec)  # noqa: E731
        elif step == "passes":
            # The collector paused as an analysis pauses it: a collection falling into one tree's
            # counted runs and not the other's would count for the code (a fifth of a pass, or more).
            run = lambda graph=graph, spec=spec: with_collector_paused(build_report, graph, spec)  # noqa: E731
        else:
            run = lambda model=model, shape=shape: archprof.analyze(model, input_size=shape)  # noqa: E731
        run()
        run()
        counting.counting_start()
        for _ in range(runs):
            run()
        counting.counting_stop()
        print(len(graph.ops), flush=True)


def counted(tree: Path, helper: Path, out: Path, specs: list[str], runs: int, step: str) -> subprocess.Popen:
    """A worker for `tree`, started under callgrind, its dumps `out.<pid>.<n>`."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        "--collect-atstart=no",
        f"--callgrind-out-file={out}.%p",
        sys.executable,
        __file__,
        "--worker",
        str(tree),
        "--helper",
        str(helper),
        "--runs",
        str(runs),
        "--step",
        step,
        "--models",
        *specs,
    ]
    environment = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict and set orders in both runs
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    return subprocess.Popen(command, text=True, cwd=ROOT, env=environment, **pipes)


def dumped_totals(out: Path, pid: int, count: int) -> list[int]:
    """The instructions of each of a worker's `count` dumps, in order."""
    totals = []
    for number in range(1, count + 1):
        text = Path(f"{out}.{pid}.{number}").read_text()
        totals.append(int(re.search(r"^summary: (\d+)$", text, re.MULTILINE).group(1)))
    return totals


def report(counts: dict[str, list[int]], ops: list[int], specs: list[str], base: str, runs: int, step: str) -> str:
    this = "this checkout"
    flag, what = {
        "build": (" --build", "building the model from its spec on meta"),
        "passes": (" --passes", "the passes alone (the report built from a graph traced once)"),
    }.get(step, ("", "the analysis"))
    lines = [
        f"# archprof {step} in instructions: this checkout against {base}",
        "",
        f"`python benchmarks/bench_instructions.py --base {base} --runs {runs}{flag}`: the instructions of {what},"
        f" per run, the mean of {runs} runs counted by valgrind's callgrind after two warm-up runs. {machine_text()}",
        "",
        f"| model | operators | {base} M instructions | {this} M instructions | {base} / {this}"
        f" | {this} instructions per operator |",
        "|:--|--:|--:|--:|--:|--:|",
    ]
    for index, spec in enumerate(specs):
        before, now = (counts[name][index] / runs for name in (base, this))
        lines.append(
            f"| `{spec}` | {ops[index]} | {before / 1e6:.2f} | {now / 1e6:.2f} | {before / now:.3f}x"
            f" | {now / ops[index]:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=DEFAULT_BASE, help="the commit to compare with")
    parser.add_argument("--runs", type=int, default=3, help="analyses counted per model")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="specs or built-in names")
    parser.add_argument("--build", action="store_true", help="count building each model from its spec on meta")
    parser.add_argument("--passes", action="store_true", help="count the passes alone, on a graph traced once")
    parser.add_argument("--report", type=Path, help="default: reports/benchmark_instructions[_build|_passes].md")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--helper", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--step", choices=("analysis", "build", "passes"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker is not None:
        worker(options.worker, options.helper, options.models, options.runs, options.step)
        return
    if options.build and options.passes:
        parser.error("--build and --passes count different steps: give one")
    step = "build" if options.build else "passes" if options.passes else "analysis"
    with tempfile.TemporaryDirectory() as scratch, worktree(options.base) as base_tree:
        source, helper = Path(scratch) / "counting.c", Path(scratch) / "counting.so"
        source.write_text(_HELPER)
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(helper), str(source)], check=True)
        trees = {"this checkout": ROOT, options.base: base_tree}
        workers = {
            name: counted(tree, helper, Path(scratch) / f"out{index}", options.models, options.runs, step)
            for index, (name, tree) in enumerate(trees.items())
        }
        counts, ops = {}, []
        for index, (name, process) in enumerate(workers.items()):
            stdout, stderr = process.communicate()
            if process.returncode != 0:
                raise SystemExit(f"the worker for {name} failed:\n{stderr[-3000:]}")
            if name == "this checkout":
                ops = [int(line) for line in stdout.split()]
            counts[name] = dumped_totals(Path(scratch) / f"out{index}", process.pid, len(options.models))
    text = report(counts, ops, options.models, options.base, options.runs, step)
    print(text)
    path = options.report or ROOT / "reports" / f"benchmark_instructions{'' if step == 'analysis' else f'_{step}'}.md"
    path.write_text(text)
    print(f"[bench] wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
