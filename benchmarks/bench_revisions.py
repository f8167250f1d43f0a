"""archprof's analysis time, this checkout against an earlier commit, run in lockstep.

    python benchmarks/bench_revisions.py [--base REV] [--rounds N] [--models SPEC ...]
                                         [--build | --passes | --train] [--held] [--report PATH]

A machine shared with others changes speed from one second to the next (on the 2-core
machines here, a plain Python loop by up to 70%), so two timings taken a minute apart say
little about a 10% change. This starts one worker process per tree (this checkout, and REV
as a temporary `git worktree`), each with every model loaded and analysed twice (warm);
then, round after round, asks them in turn to analyse the same model once, the order
swapped every round. Each pair of runs is a few milliseconds apart: a slow spell falls on
both. Reported per model: the median time of each, the median of the paired ratios
(REV's time over this checkout's: above 1, this checkout is faster) and the ratio of
each tree's fastest run. Both use this
checkout's virtual environment (the same torch). Writes reports/benchmark_revisions.md.
With --build, the step timed is building the model from its spec on meta instead
(reports/benchmark_revisions_build.md); with --passes, the passes alone: the report built
from a graph traced once beforehand, the cyclic collector paused as an analysis pauses it
(reports/benchmark_revisions_passes.md); with --train, the analysis of a training step at
batch 2, its backward pass traced too (reports/benchmark_revisions_training.md). With
--held, each model is handed over as the caller's own module, as the issue's table times it
(archprof then puts back what a forward may change of it), not as archprof's own build
(reports/benchmark_revisions[_training]_held.md).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import time
from pathlib import Path

from picked_models import HUB_MODELS
from worktree import ROOT, import_archprof_from, machine_text, worktree

DEFAULT_BASE = "b69421d"  # main before this last round of value records and caches
DEFAULT_MODELS = (
    *HUB_MODELS,
    "resnet18",
    "googlenet",
    "densenet121",
    "mobilenet_v2",
    "lenet5",
)


def worker(tree: Path, specs: list[str], step: str, held: bool) -> None:
    """Load the models with archprof from `tree`, then analyse (or, with `step` "build",
    build; with "passes", build the report of a graph traced beforehand) model i for each
    line "i" on stdin, printing the seconds it took. `held`: each analysed as a module of
    the caller's (not archprof's own build)."""
    archprof = import_archprof_from(tree)
    from archprof.load import load_model

    loaded = [load_model(spec) for spec in specs]
    if step == "build":
        runs = [lambda spec=spec: load_model(spec) for spec in specs]
    elif step == "passes":
        from archprof.analysis import analysis, build_report

        graphs = [analysis(model, model.default_inputs[0].shape, None, None).graph for model in loaded]
        runs = [
            lambda graph=graph, spec=spec: with_collector_paused(build_report, graph, spec)
            for graph, spec in zip(graphs, specs, strict=True)
        ]
    elif step == "training":
        runs = [
            lambda model=model: archprof.analyze(
                model.module if held else model, input_size=model.default_inputs[0].shape, batch=2, training=True
            )
            for model in loaded
        ]
    else:
        runs = [
            lambda model=model: archprof.analyze(
                model.module if held else model, input_size=model.default_inputs[0].shape
            )
            for model in loaded
        ]
    for run in runs:
        run()
        run()
    print("ready", flush=True)
    for line in sys.stdin:
        run = runs[int(line)]
        start = time.perf_counter()
        run()
        print(time.perf_counter() - start, flush=True)


def with_collector_paused(function, *args):
    """`function(*args)` with the cyclic collector off, as `archprof.analyze` runs its passes
    (here by hand: an earlier commit may have no `archprof.collector`)."""
    gc.disable()
    try:
        return function(*args)
    finally:
        gc.enable()


class _Worker:
    def __init__(self, tree: Path, specs: list[str], step: str, held: bool) -> None:
        command = [sys.executable, __file__, "--worker", str(tree), "--step", step, "--models", *specs]
        if held:
            command.append("--held")
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        if self._process.stdout.readline().strip() != "ready":
            raise SystemExit(f"the worker for {tree} did not start")

    def analyse(self, index: int) -> float:
        self._process.stdin.write(f"{index}\n")
        self._process.stdin.flush()
        return float(self._process.stdout.readline())

    def close(self) -> None:
        self._process.stdin.close()
        self._process.wait()


def measure(
    trees: dict[str, Path], specs: list[str], rounds: int, step: str, held: bool
) -> dict[str, dict[str, list[float]]]:
    """Per model, each tree's times of `step`, run in pairs (the order swapped every round)."""
    workers = {name: _Worker(tree, specs, step, held) for name, tree in trees.items()}
    times: dict[str, dict[str, list[float]]] = {spec: {name: [] for name in trees} for spec in specs}
    try:
        for turn in range(rounds):
            order = list(workers.items()) if turn % 2 == 0 else list(workers.items())[::-1]
            for index, spec in enumerate(specs):
                for name, work in order:
                    times[spec][name].append(work.analyse(index))
            print(f"[bench] round {turn + 1}/{rounds}", file=sys.stderr, flush=True)
    finally:
        for work in workers.values():
            work.close()
    return times


def report(times: dict[str, dict[str, list[float]]], base: str, rounds: int, step: str, held: bool) -> str:
    this, earlier = "this checkout", base
    flag, done = {
        "build": (" --build", "built from its spec on meta"),
        "passes": (" --passes", "reported from a graph traced once (its passes alone)"),
        "training": (" --train", "analysed as a training step at batch 2"),
    }.get(step, ("", "analysed"))
    if held:
        flag, done = f"{flag} --held", f"{done} as a module of the caller's"
    lines = [
        f"# archprof {step} time: this checkout against an earlier commit, in lockstep",
        "",
        f"`python benchmarks/bench_revisions.py --base {base} --rounds {rounds}{flag}`: each model {done} {rounds}"
        f" times by each tree, the two runs of a pair back to back (the order swapped every round), after two"
        f" warm-up runs each. {machine_text()}",
        "",
        f"| model | {earlier} ms | {this} ms | {earlier} / {this}, median of pairs | middle half of the pairs"
        " | fastest runs' ratio |",
        "|:--|--:|--:|--:|:--|--:|",
    ]
    ratios_all = []
    for spec, by_tree in times.items():
        ratios = sorted(b / a for a, b in zip(by_tree[this], by_tree[earlier], strict=True))
        ratios_all.append(statistics.median(ratios))
        quarter = len(ratios) // 4
        before_ms, now_ms = (statistics.median(by_tree[name]) * 1e3 for name in (earlier, this))
        fastest = min(by_tree[earlier]) / min(by_tree[this])
        lines.append(
            f"| `{spec}` | {before_ms:.2f} | {now_ms:.2f} | {statistics.median(ratios):.2f}x"
            f" | {ratios[quarter]:.2f} to {ratios[-1 - quarter]:.2f} | {fastest:.2f}x |"
        )
    lines += [
        "",
        f"Median over the models: {statistics.median(ratios_all):.2f}x. The times are medians; a slow spell only adds"
        " time, so the fastest runs' ratio is the other estimate of the change, and where the two disagree the"
        " machine was too busy to tell.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=DEFAULT_BASE, help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=61)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="specs or built-in names")
    parser.add_argument("--build", action="store_true", help="time building each model, not its analysis")
    parser.add_argument("--passes", action="store_true", help="time the passes alone, on a graph traced once")
    parser.add_argument("--train", action="store_true", help="time the analysis of a training step (batch 2)")
    parser.add_argument("--held", action="store_true", help="analyse each model as the caller's module, not archprof's")
    parser.add_argument(
        "--report", type=Path, help="default: reports/benchmark_revisions[_build|_passes|_training][_held].md"
    )
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--step", choices=("analysis", "build", "passes", "training"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker is not None:
        worker(options.worker, options.models, options.step, options.held)
        return
    if options.build + options.passes + options.train > 1:
        parser.error("--build, --passes and --train time different steps: give one")
    if options.held and (options.build or options.passes):
        parser.error("--held times an analysis: not with --build or --passes")
    step = "build" if options.build else "passes" if options.passes else "training" if options.train else "analysis"
    if options.report is None:
        suffix = ("" if step == "analysis" else f"_{step}") + ("_held" if options.held else "")
        options.report = ROOT / "reports" / f"benchmark_revisions{suffix}.md"
    with worktree(options.base) as base_tree:
        text = report(
            measure(
                {"this checkout": ROOT, options.base: base_tree}, options.models, options.rounds, step, options.held
            ),
            options.base,
            options.rounds,
            step,
            options.held,
        )
    print(text)
    options.report.write_text(text, encoding="utf-8")
    print(f"[bench] wrote {options.report}", file=sys.stderr)


if __name__ == "__main__":
    main()
