"""Where a warm analysis spends its time, phase by phase.

    python benchmarks/bench_phases.py [--models SPEC ...] [--rounds N] [--input CxHxW] [--report PATH]

Per model, built once from its spec on meta, `archprof.analyze` of it (batch 1; a hub model
at 3x224x224, any other at its usual input, or every one at --input) is timed --rounds times
(default 15), the models taking turns round by round, each timed run right after an untimed
one of the same model. Within each run, its phases:

- set-up and tear-down: all the trace does but the forward (the module walk, the model's
  tensors registered, the forward wrappers and dispatcher kernels put in place and taken
  back, the modes set and put back, the graph made);
- the forward under the recorder (`model_called`): the model's own Python and torch's module
  calls, each module call and operator recorded, the shortcuts' answers, the copied blocks;
- the passes (`build_report`): rows, costs, memory, receptive fields;
- the collector: the young-generation collection that runs once the trace's pause of it ends;
- the rest: checking the arguments, loading, the report's object.

The three functions are wrapped for the run, each reading the clock as it is entered and
left (once per analysis: nothing per operator). Each phase's figure is the median of its
rounds, the rest's too (its runs' total less their phases), so that the phases of a row need
not add up to its total exactly. A phase's share is of the median total. Writes
reports/benchmark_phases.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from arguments import input_size
from picked_models import HUB_MODELS
from report_writing import markdown_table, ready_to_write, write_report
from torchvision_ops import import_torchvision
from worktree import machine_text

import archprof
import archprof.analysis
import archprof.tracing.trace
from archprof.errors import ArchprofError
from archprof.load import load_model

DEFAULT_REPORT = Path(__file__).resolve().parent.parent / "reports" / "benchmark_phases.md"
# The six models, then the built-ins whose speed-up over the fastest peer is lowest.
DEFAULT_MODELS = (*HUB_MODELS, "lenet5", "mobilenet_v2", "densenet121", "resnet50")
HUB_INPUT = (3, 224, 224)  # as `bench_analysis.py` analyses the hub models
PHASES = ("set-up and tear-down", "forward under the recorder", "passes", "collector", "rest")

# What each wrapped function's time is entered under: the trace (whose forward is taken out
# of it to give its set-up and tear-down), the forward, the passes.
_WRAPPED = (
    (archprof.analysis, "trace_loaded", "trace"),
    (archprof.tracing.trace, "model_called", "forward"),
    (archprof.analysis, "build_report", "passes"),
)


@dataclass
class Model:
    """One model's runs: per run, its total and each phase, in seconds."""

    spec: str
    operators: int
    module_calls: int
    runs: list[dict[str, float]] = field(default_factory=list)

    def median(self, name: str) -> float:
        return statistics.median(run[name] for run in self.runs)


@contextlib.contextmanager
def clocked(spent: dict[str, float]) -> Iterator[None]:
    """While active, the time spent in each of `_WRAPPED`, and in the collector's collections,
    added up in `spent` under its name."""

    def timed(function: Callable, name: str) -> Callable:
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - start

        return call

    collection_start = 0.0

    def collecting(phase: str, info: dict) -> None:
        nonlocal collection_start
        if phase == "start":
            collection_start = time.perf_counter()
        else:
            spent["collector"] = spent.get("collector", 0.0) + time.perf_counter() - collection_start

    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in _WRAPPED]
    for (owner, name, key), (_, _, function) in zip(_WRAPPED, originals, strict=True):
        setattr(owner, name, timed(function, key))
    gc.callbacks.append(collecting)
    try:
        yield
    finally:
        gc.callbacks.remove(collecting)
        for owner, name, function in originals:
            setattr(owner, name, function)


def measure(specs: tuple[str, ...], rounds: int, size: tuple[int, ...] | None = None) -> list[Model]:
    """Each model's timed runs, the models taking turns round by round: at `size` (one
    sample's shape), else the hub models at 3x224x224 and the others at their usual input."""
    analyses: dict[str, Callable[[], archprof.Report]] = {}
    models = []
    for spec in specs:
        loaded = load_model(spec)
        usual = HUB_INPUT if _from_the_hub(spec) else loaded.input_size
        if size is None and usual is None:
            raise ArchprofError(f"{spec} has no usual input: give one with --input (3x224x224)")
        analyses[spec] = lambda loaded=loaded, shape=size or usual: archprof.analyze(loaded, input_size=shape, batch=1)
        graph = analyses[spec]().graph  # also the warm-up
        models.append(Model(spec, len(graph.ops), len(graph.module_calls)))
    gc.collect()
    for _ in range(rounds):
        for model in models:
            analyse = analyses[model.spec]
            analyse()  # untimed: the state it leaves is this model's own
            spent: dict[str, float] = {}
            with clocked(spent):
                start = time.perf_counter()
                analyse()
                total = time.perf_counter() - start
            model.runs.append(_phases(total, spent))
    return models


def _inputs_text(size: tuple[int, ...] | None) -> str:
    if size is not None:
        return f"every model at {'x'.join(map(str, size))}"
    return "the hub models at 3x224x224, the others at their usual input"


def _from_the_hub(spec: str) -> bool:
    """Whether `spec` names a torchvision or timm model (`torchvision:resnet50`)."""
    return spec.partition(":")[0] in ("torchvision", "timm")


def _phases(total: float, spent: dict[str, float]) -> dict[str, float]:
    trace, forward, passes = spent["trace"], spent["forward"], spent["passes"]
    collector = spent.get("collector", 0.0)
    return {
        "total": total,
        "set-up and tear-down": trace - forward,
        "forward under the recorder": forward,
        "passes": passes,
        "collector": collector,
        "rest": total - trace - passes - collector,
    }


def report(models: list[Model], rounds: int, command: str, size: tuple[int, ...] | None = None) -> str:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    lines = [
        "# archprof benchmark: where a warm analysis spends its time",
        "",
        f"- Date: {now}",
        f"- Command: `{command}`",
        f"- {machine_text()}",
        f"- Median of {rounds} timed runs per model (each right after an untimed one), the models taking turns"
        f" round by round; batch 1, {_inputs_text(size)}.",
        "",
        "Milliseconds per analysis, and each phase's share of the median total:",
        "",
    ]
    shares = []
    for model in models:
        total = model.median("total")
        cells = [f"`{model.spec}`", str(model.operators), str(model.module_calls), f"{total * 1e3:.2f}"]
        shares.append(cells + [f"{model.median(p) * 1e3:.2f} ({model.median(p) / total:.0%})" for p in PHASES])
    lines += _numbers_table(["model", "operators", "module calls", "total ms", *PHASES], shares)
    lines += ["", "The same per traced operator (µs):", ""]
    per_operator = [
        [f"`{model.spec}`", *(f"{model.median(p) / model.operators * 1e6:.1f}" for p in ("total", *PHASES))]
        for model in models
    ]
    lines += _numbers_table(["model", "total", *PHASES], per_operator)
    return "\n".join(lines) + "\n"


def _numbers_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A table of a model a row: its name left-aligned, its numbers right."""
    return markdown_table(header, rows, "l" + "r" * (len(header) - 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, metavar="SPEC", help="models to time")
    parser.add_argument("--rounds", type=int, default=15, help="timed runs per model (default 15)")
    parser.add_argument(
        "--input", type=input_size, help="one sample's shape for every model, 3x224x224 (default: each model's usual)"
    )
    parser.add_argument("--report", type=Path, default=DEFAULT_REPORT, help="where to write the Markdown report")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if any(_from_the_hub(spec) for spec in args.models):
        import_torchvision()
    command = " ".join(["python", "benchmarks/bench_phases.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        ready_to_write(args.report)
        models = measure(tuple(args.models), args.rounds, args.input)
    except ArchprofError as exc:  # a report it cannot write, a model that does not load: one line, exit 2
        parser.error(str(exc))
    text = report(models, args.rounds, command, args.input)
    print(text)
    write_report(args.report, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
