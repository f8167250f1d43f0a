"""Benchmark archprof's static analysis against torchinfo, fvcore and a plain forward pass.

    python benchmarks/bench_analysis.py [--repeat N] [--quick] [--report PATH]

In one run it measures, side by side:

1. time to analyse vgg16 and resnet50 at 224x224 and 1024x1024 (batch 1, float32):
   `archprof.analyze` (meta-device build included), `torchinfo.summary`, fvcore's
   `FlopCountAnalysis(...).total()` and a plain CPU forward under `torch.no_grad()`
   (the peers get a CPU model built once beforehand; that build is timed separately);
   and whether archprof's MACs equal fvcore's total;
2. wall time of the CLI, `archprof summary vgg16 -f csv`, beside `python -c "import torch"`;
3. peak RSS of that CLI process beside a process that only imports torch;
4. the issue's models from torchvision and timm at 224x224 (--quick: the first two):
   archprof's meta build from the spec and its analysis of that model, beside torchinfo,
   fvcore and FlopCounterMode (a real CPU forward) on the model built on the CPU; the
   speed-up over the fastest peer; archprof's time per traced operator beside the
   dispatch-mode floor (a meta forward under a TorchDispatchMode that answers every
   operator from a cache, computing nothing), beside the Python floor (the same under a
   TorchFunctionMode answering every torch call: the model's own Python) and beside its
   passes' time alone; and the speed-up within reach of any trace that runs the model's
   Python followed by archprof's passes;
5. the same for every built-in model, each at its usual input (--quick: three of them), and
   archprof's own floor per analysis (an nn.Identity of one element: no operator traced) with
   the models on which 10x the fastest peer leaves less time than that;
6. archprof's analysis of the models of 4 at batch 1 and 64, and at 896x896 (flat in batch and
   resolution).

It prints a Markdown report and writes the same text to reports/benchmark_analysis.md.
Each measurement is the median of --repeat timed runs after one warm-up call, each run right
after an untimed one of the same tool, except the slow peers (torchinfo, fvcore, forward) at
1024x1024, which get one timed run.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import gc
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchinfo
from analysis_figure import ModelSpeed, speed_figure, svg
from fvcore.nn import FlopCountAnalysis
from picked_models import HUB_MODELS
from report_writing import markdown_table, write_report
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import archprof
from archprof.analysis import analysis as traced_analysis
from archprof.analysis import build_report
from archprof.collector import collector_paused
from archprof.kernels import DeviceKernels
from archprof.load import load_model
from archprof.zoo import MODELS

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REPORT = ROOT / "reports" / "benchmark_analysis.md"

MODEL_NAMES = ("vgg16", "resnet50")
FULL_SIZES = (224, 1024)
QUICK_SIZES = (224,)
SLOW_SIZE = 1024  # at and above this size the slow peers get a single timed run

# The models (picked_models.py), analysed from their specs at 224x224 (--quick: the first two).
QUICK_HUB_MODELS = HUB_MODELS[:2]
HUB_INPUT = (3, 224, 224)
# Every built-in model, each at its usual input (--quick: three).
QUICK_BUILT_INS = ("lenet5", "resnet18", "mobilenet_v2")

# Targets from the issue.
SPEEDUP_TARGETS = {224: 10.0, 1024: 100.0}
RSS_TARGET_MB = 100.0
BUSY_WARNING = 0.10  # warn when other processes used more than this share of the machine's CPU
FLAT_TOLERANCE = 1.5  # archprof at 1024 may take at most this times its 224 time ("does not grow")

# fvcore operator handles whose count is a multiply-accumulate count, comparable to archprof's `macs`.
FVCORE_MAC_OPS = frozenset({"conv", "linear", "addmm", "matmul", "mm", "bmm", "einsum", "baddbmm"})


# -- timing helpers ------------------------------------------------------------------------


@dataclass
class Timing:
    median_s: float
    runs: int
    series: tuple[float, ...] = field(repr=False, default=())  # each run's seconds, side by side: round by round

    @property
    def ms(self) -> float:
        return self.median_s * 1e3


def measure(fn: Callable[[], Any], repeat: int) -> Timing:
    """Median wall time of `repeat` calls of `fn` after one untimed warm-up call, back to back."""
    return measure_side_by_side({"": fn}, repeat)[""]


def measure_side_by_side(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, Timing]:
    """Median wall time of `repeat` calls of each of `fns` after one untimed warm-up call
    each, the tools in turn, round by round: run r of each tool lies within moments of run
    r of the others, so that a slow spell of a shared machine (whole seconds at half speed,
    seen here) slows every tool in it alike instead of one tool's series.

    Each timed call comes right after an untimed call of the same tool, so that no tool's
    time holds what the tool before it left behind: a CPU forward's OpenMP worker woken on
    the other core, the caches it filled. An analysis of edge_conv (0.4 ms) timed right after
    a peer's forward took 1.4 ms, 0.6 after a call of its own (load 3 on 2 CPUs, 2026-12-07);
    with OMP_WAIT_POLICY=PASSIVE most of that difference was gone.

    Every tool's warm-up call comes before the rounds, and the collector runs once after them:
    a first call may import modules and fill caches, whose garbage would otherwise be
    collected inside some timed run of round one. Not before each call: a full collection
    leaves the processor's caches cold, which adds about 0.6 ms to whatever runs next (the
    whole of a small model's analysis) and says nothing of the tool measured. A call's
    result is freed after its clock stops, before the next one starts."""
    for fn in fns.values():
        fn()
    gc.collect()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            fn()  # untimed: the state it leaves is this tool's own
            start = time.perf_counter()
            result = fn()
            times[name].append(time.perf_counter() - start)
            del result
    return {name: Timing(statistics.median(series), repeat, series=tuple(series)) for name, series in times.items()}


def paired_ratios(numerators: list[Timing], denominator: Timing) -> list[float]:
    """Round by round, the quickest of `numerators` over `denominator` (timings taken side by
    side): each ratio compares runs made within moments of each other, so a slow spell of the
    machine, which lengthens both, cancels out of it."""
    rounds = zip(*(t.series for t in numerators), strict=True)
    return [min(times) / own for times, own in zip(rounds, denominator.series, strict=True)]


def middle_half(values: list[float]) -> tuple[float, float]:
    """The 25th and 75th percentiles."""
    if len(values) < 2:
        return values[0], values[0]
    quartiles = statistics.quantiles(values, n=4, method="inclusive")
    return quartiles[0], quartiles[2]


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -- 1. analysis time ----------------------------------------------------------------------


@dataclass
class Row:
    model: str
    size: int
    archprof: Timing  # its runs at every size, in turn with the peers' at the fast sizes
    archprof_beside: Timing  # its runs in the peers' rounds (at SLOW_SIZE, its one run beside theirs)
    torchinfo: Timing
    fvcore: Timing
    forward: Timing
    archprof_macs: int
    fvcore_total: int
    fvcore_by_op: dict[str, int]

    @property
    def fvcore_mac_ops(self) -> int:
        return sum(v for k, v in self.fvcore_by_op.items() if k in FVCORE_MAC_OPS)

    @property
    def fvcore_extra_ops(self) -> dict[str, int]:
        return {k: v for k, v in self.fvcore_by_op.items() if k not in FVCORE_MAC_OPS and v}

    @property
    def macs_agree(self) -> bool:
        return self.archprof_macs == self.fvcore_total

    @property
    def speedup_torchinfo(self) -> float:
        """The median over the rounds of torchinfo's run over archprof's beside it."""
        return statistics.median(paired_ratios([self.torchinfo], self.archprof_beside))

    @property
    def speedup_fvcore(self) -> float:
        return statistics.median(paired_ratios([self.fvcore], self.archprof_beside))


def fvcore_count(model: torch.nn.Module, x: torch.Tensor) -> FlopCountAnalysis:
    analysis = FlopCountAnalysis(model, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    analysis.total()  # runs the trace; results are cached on the object
    return analysis


def forward(model: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        model(x)


def bench_models(sizes: tuple[int, ...], repeat: int) -> tuple[list[Row], dict[str, float]]:
    """Section 1: archprof from the model's name at every size, and the peers on the CPU model,
    all taking turns run by run (`measure_side_by_side`), so that each speed-up is read from
    runs made moments apart. Where the peers take seconds (SLOW_SIZE and up) they get one
    round of their own, with an archprof run of that size beside them."""
    rows: list[Row] = []
    build_ms: dict[str, float] = {}
    for name in MODEL_NAMES:
        progress(f"{name}: building the CPU model for the peers")
        start = time.perf_counter()
        model = MODELS[name].build().eval()
        build_ms[name] = (time.perf_counter() - start) * 1e3
        inputs = {size: torch.randn(1, 3, size, size) for size in sizes}  # real-valued (no denormals), made here
        archprof_runs = {_key("archprof", size): _archprof_run(name, size) for size in sizes}
        fast = [size for size in sizes if size < SLOW_SIZE]
        progress(f"{name}: archprof at {', '.join(map(str, sizes))}, the peers at {', '.join(map(str, fast))}")
        runs = dict(archprof_runs)
        for size in fast:
            runs.update(_peer_runs(model, size, inputs[size]))
        timings = measure_side_by_side(runs, repeat)
        for size in sizes:
            beside = timings
            if size >= SLOW_SIZE:
                progress(f"{name} @ {size}: the peers, one run each, and archprof beside them")
                key, run = _key("archprof", size), archprof_runs[_key("archprof", size)]
                beside = measure_side_by_side({key: run, **_peer_runs(model, size, inputs[size])}, 1)
                # archprof's run in their round, and more made right after it: their median is set
                # beside each peer's one run (one run of milliseconds against seconds is noise).
                around = [*beside[key].series, *measure(run, repeat).series]
                median = statistics.median(around)
                beside[key] = Timing(median, len(around), series=(median,))
            analysis = fvcore_count(model, inputs[size])  # untimed: for the MAC check
            report = archprof_runs[_key("archprof", size)]()
            rows.append(
                Row(
                    model=name,
                    size=size,
                    archprof=timings[_key("archprof", size)],
                    archprof_beside=beside[_key("archprof", size)],
                    torchinfo=beside[_key("torchinfo", size)],
                    fvcore=beside[_key("fvcore", size)],
                    forward=beside[_key("forward", size)],
                    archprof_macs=report.totals.macs,
                    fvcore_total=int(analysis.total()),
                    fvcore_by_op={k: int(v) for k, v in analysis.by_operator().items()},
                )
            )
            del analysis, report
        del model, inputs
        gc.collect()
    return rows, build_ms


def _key(tool: str, size: int) -> str:
    return f"{tool} @ {size}"


def _archprof_run(name: str, size: int) -> Callable[[], Any]:
    return lambda: archprof.analyze(name, input_size=(3, size, size), batch=1)


def _peer_runs(model: torch.nn.Module, size: int, x: torch.Tensor) -> dict[str, Callable[[], Any]]:
    return {
        _key("torchinfo", size): lambda: torchinfo.summary(model, input_size=(1, 3, size, size), verbose=0),
        _key("fvcore", size): lambda: fvcore_count(model, x),
        _key("forward", size): lambda: forward(model, x),
    }


# -- 4. models from torchvision and timm --------------------------------------------------


@dataclass
class HubRow:
    spec: str
    size: tuple[int, ...]  # one sample's input shape
    operators: int
    build: Timing  # archprof's meta-device build from the spec
    archprof: Timing  # analysis only, of the model built on meta
    archprof_cpu_model: Timing  # analysis only, of the peers' own model, built on the CPU (stand-ins made on meta)
    peers: dict[str, Timing]  # each peer on the model built on the CPU
    floor_s: float  # a meta forward under a dispatch mode answering each op from a cache
    python_floor_s: float  # a meta forward under a torch-function mode answering each torch call from a cache
    passes_s: float  # archprof's passes alone, on the graph of one trace

    @property
    def fastest_peer(self) -> tuple[str, Timing]:
        return min(self.peers.items(), key=lambda item: item[1].median_s)

    @property
    def speedup(self) -> float:
        """The median over the rounds of the quickest peer's time over archprof's."""
        return statistics.median(self.speedups)

    @property
    def speedups(self) -> list[float]:
        return paired_ratios(list(self.peers.values()), self.archprof)

    @property
    def speedup_cpu_model(self) -> float:
        """As `speedup`, archprof handed the peers' own CPU model instead of its meta one."""
        return statistics.median(paired_ratios(list(self.peers.values()), self.archprof_cpu_model))

    @property
    def build_over_analysis(self) -> float:
        """The median over the rounds of the build's time over the analysis's."""
        return statistics.median(paired_ratios([self.build], self.archprof))

    @property
    def archprof_us_per_op(self) -> float:
        return self.archprof.median_s / self.operators * 1e6

    @property
    def tenfold_us_per_op(self) -> float:
        """What 10x the fastest peer leaves per operator, for everything: at or under the
        passes' own time, archprof's engine cannot get there however fast its trace."""
        return self.fastest_peer[1].median_s / 10 / self.operators * 1e6

    @property
    def floor_us_per_op(self) -> float:
        """The model's own Python and the dispatch into a Python mode, per operator."""
        return self.floor_s / self.operators * 1e6

    @property
    def python_floor_us_per_op(self) -> float:
        """The model's own Python alone (every torch call answered at once), per operator."""
        return self.python_floor_s / self.operators * 1e6

    @property
    def reachable_speedup(self) -> float:
        """The fastest peer's median over the least any tool that runs the forward and then
        archprof's passes can take: the model's own Python plus the passes."""
        return self.fastest_peer[1].median_s / (self.python_floor_s + self.passes_s)

    @property
    def passes_us_per_op(self) -> float:
        """archprof's passes (rows, costs, memory, receptive fields) per operator: the part
        of its time that does not run the model at all."""
        return self.passes_s / self.operators * 1e6


class _Capture(TorchDispatchMode):
    """Runs every operator and keeps what it returned, in order, for `_Replay`."""

    def __init__(self) -> None:
        super().__init__()
        self.outputs: list = []

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # as archprof's recorder: no torch._dynamo wrapper around each call

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.outputs.append(out)
        return out


class _Replay(_Capture):
    """PyTorch's dispatch-mode floor: a mode that answers every operator with what the same
    operator returned in an earlier forward, computing nothing. Its forward costs the model's
    own Python and the dispatch of each operator into a Python mode: what any tracer that
    sees every operator pays. A view is made afresh (autograd refuses a view handed back
    twice); an in-place operator hands back its input, as the kernel would."""

    def __init__(self, outputs: list) -> None:
        super().__init__()
        self._answers = iter(outputs)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        answer = next(self._answers)
        alias = func._schema.returns[0].alias_info if len(func._schema.returns) == 1 else None
        if alias is None:
            return answer
        return args[0] if alias.is_write else func(*args, **(kwargs or {}))


class _FunctionCapture(TorchFunctionMode):
    """Runs every torch call (function, method, property) and keeps what it returned, in order,
    for `_FunctionReplay`."""

    def __init__(self) -> None:
        super().__init__()
        self.outputs: list = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.outputs.append(out)
        return out


class _FunctionReplay(_FunctionCapture):
    """The floor of any tool that runs the model's Python: every torch call answered with what
    it returned in an earlier forward, above the dispatcher, computing nothing. What is left is
    the model's own Python (its module calls, its forward's code) and one Python round trip per
    torch call."""

    def __init__(self, outputs: list) -> None:
        super().__init__()
        self._answers = iter(outputs)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return next(self._answers)


def python_forward(model: torch.nn.Module, x: torch.Tensor, mode: TorchFunctionMode) -> None:
    with torch.no_grad(), mode:
        model(x)


def hub_packages() -> None:
    """Import torchvision and timm (the test extra). torchvision's wheel here is a CUDA build
    whose C operators do not load beside the CPU torch: its meta registrations are skipped."""
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import timm  # noqa: F401
    import torchvision  # noqa: F401


def flop_counter(model: torch.nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def meta_forward(model: torch.nn.Module, x: torch.Tensor, mode: TorchDispatchMode) -> None:
    # Batch norm and attention reach the same operators as in archprof's trace; with the kernels
    # an inference trace registers (below_autograd), not the autograd ones a floor has no use for.
    with torch.no_grad(), mode, DeviceKernels(below_autograd=True):
        model(x)


def captured_answers(model: torch.nn.Module, x: torch.Tensor) -> list:
    """What every operator of a meta forward returned, in order, for `_Replay`."""
    capture = _Capture()
    meta_forward(model, x, capture)
    return capture.outputs


def bench_specs(specs: tuple[str, ...], repeat: int, size: tuple[int, ...] | None = None) -> list[HubRow]:
    """Each model at `size` (one sample's shape), or at its usual input where None."""
    rows = []
    for spec in specs:
        rows.append(bench_spec(spec, repeat, size))
        gc.collect()
    return rows


def bench_spec(spec: str, repeat: int, size: tuple[int, ...] | None) -> HubRow:
    progress(f"{spec}: the dispatch-mode and Python floors and archprof's passes alone")
    loaded = load_model(spec)
    size = size or loaded.default_inputs[0].shape
    graph = traced_analysis(loaded, size, 1, None).graph
    operators = len(graph.ops)
    # A copy in eval mode: archprof is handed the model as built (in train mode, as factories make it).
    meta_model, meta_x = copy.deepcopy(loaded.module).eval(), torch.empty(1, *size, device="meta")
    answers = captured_answers(meta_model, meta_x)
    floor = measure(lambda: meta_forward(meta_model, meta_x, _Replay(answers)), repeat)  # back to back: its least
    capture = _FunctionCapture()
    python_forward(meta_model, meta_x, capture)
    python_floor = measure(lambda: python_forward(meta_model, meta_x, _FunctionReplay(capture.outputs)), repeat)
    passes = measure(lambda: passes_only(graph, loaded.name), repeat)
    progress(f"{spec}: archprof's build and analysis and the peers, side by side")
    model = loaded.build(torch.device("cpu")).eval()
    x = torch.randn(1, *size)
    timings = measure_side_by_side(
        {
            "build": lambda: load_model(spec),
            "archprof": lambda: archprof.analyze(loaded, input_size=size, batch=1),
            "archprof (CPU model)": lambda: archprof.analyze(model, input_size=size, batch=1),
            "torchinfo": lambda: torchinfo.summary(model, input_size=(1, *size), verbose=0),
            "fvcore": lambda: fvcore_count(model, x),
            "FlopCounterMode": lambda: flop_counter(model, x),
        },
        repeat,
    )
    build, ap, on_cpu = timings.pop("build"), timings.pop("archprof"), timings.pop("archprof (CPU model)")
    return HubRow(
        spec, size, operators, build, ap, on_cpu, timings, floor.median_s, python_floor.median_s, passes.median_s
    )


# Runs of the floor's two measurements: each takes well under a millisecond.
FLOOR_RUNS = 201


@dataclass(frozen=True)
class AnalysisFloor:
    """What every analysis pays before its first operator."""

    analysis_s: float  # `archprof.analyze` of an nn.Identity of one element: no operator traced
    kernels_s: float  # of which the dispatcher kernels put in place and taken back (`DeviceKernels`)


def bench_analysis_floor() -> AnalysisFloor:
    progress("archprof's floor: an analysis that traces no operator")
    empty = torch.nn.Identity()
    analysis = measure(lambda: archprof.analyze(empty, input_size=(1,)), FLOOR_RUNS)
    kernels = measure(_kernels_in_and_out, FLOOR_RUNS)
    return AnalysisFloor(analysis.median_s, kernels.median_s)


def _kernels_in_and_out() -> None:
    with DeviceKernels(below_autograd=True):  # what an inference trace on meta registers
        pass


def passes_only(graph, name: str) -> None:
    """The report from a traced graph, the collector paused as `archprof.analyze` pauses it."""
    with collector_paused():
        build_report(graph, name)


def render_specs(
    rows: list[HubRow], repeat: int, title: str, figure: str = "", floor: AnalysisFloor | None = None
) -> str:
    """A section of models analysed beside the peers; `figure`, Markdown shown under its title."""
    out = [
        "",
        f"## {title}",
        *([figure] if figure else []),
        "",
        "archprof: analysis only, of the model it built on meta (the build from the spec or name is its own"
        " column); each peer on the model built on the CPU (build not counted); FlopCounterMode runs a real CPU"
        f" forward. Median of {repeat} timed runs after one warm-up call each, archprof's build, its analysis and"
        " the peers taking turns run by run (so that a slow spell of the machine slows them alike), each timed run"
        " right after an untimed one of the same tool (so that none holds what the tool before it left running"
        " or cached: a CPU forward's OpenMP worker, more than a small model's whole analysis), all in this"
        ' one process. "vs fastest peer" is the median over the rounds of each round\'s ratio (the quickest'
        " peer's run over archprof's run in that round, named after the peer quickest by median), and"
        ' "middle half" the 25th to 75th percentile of those ratios: each compares runs made moments apart,'
        " where a ratio of two medians would set runs of different moments against each other. The build"
        ' verdict compares the build and the analysis round by round too. "archprof, CPU model" is archprof'
        " handed the peers' own model, built on the CPU, in the same rounds: it then makes a meta stand-in for"
        " each parameter and buffer, which a model it built on meta needs none of; the speed-up beside it is"
        " against that run.",
        "Per operator: archprof's analysis time over the operators it traced; the floor is a meta forward of the"
        " same model under a TorchDispatchMode that answers every operator with what it returned in an earlier"
        " forward, computing nothing (its runs back to back, warm): the model's own Python and PyTorch's"
        " dispatch into a Python mode, which any tool that runs the forward under such a mode pays (archprof"
        " only for the modules it has no shortcut for: a torch.nn convolution, evaluation batch norm, layer"
        " norm or activation is recorded without its forward running). The passes are archprof's passes"
        " alone (rows, costs, memory, receptive fields) on the graph of one trace, back to back, warm: the"
        " part of its time that runs no model code. The Python floor is a meta forward under a TorchFunctionMode"
        " that answers every torch call (function, method, property) with what it returned in an earlier"
        " forward, above the dispatcher: the model's own Python and one Python round trip per torch call, the"
        ' least any tool that runs the forward pays. "Within reach" is the fastest peer\'s time over that floor'
        " plus the passes: the most any tracer that runs the model's forward and then archprof's passes could"
        " reach. The last column is the fastest peer's time over ten, per operator: what 10x leaves for"
        " everything.",
        "",
    ]
    peers = list(rows[0].peers) if rows else []
    out += markdown_table(
        [
            "model",
            "input",
            "build (meta) ms",
            "archprof ms",
            "archprof, CPU model ms",
            *(f"{p} ms" for p in peers),
            "vs fastest peer",
            "middle half",
            "vs fastest peer, CPU model",
            "operators",
            "archprof µs/op",
            "floor µs/op",
            "Python floor µs/op",
            "passes µs/op",
            "within reach",
            "10x leaves µs/op",
        ],
        [
            [
                f"`{r.spec}`",
                "x".join(map(str, r.size)),
                f"{r.build.ms:,.1f}",
                f"{r.archprof.ms:,.1f}",
                f"{r.archprof_cpu_model.ms:,.1f}",
                *(f"{r.peers[p].ms:,.1f}" for p in peers),
                f"{fmt_x(r.speedup)} ({r.fastest_peer[0]})",
                "{} to {}".format(*map(fmt_x, middle_half(r.speedups))),
                fmt_x(r.speedup_cpu_model),
                f"{r.operators}",
                f"{r.archprof_us_per_op:,.0f}",
                f"{r.floor_us_per_op:,.0f}",
                f"{r.python_floor_us_per_op:,.0f}",
                f"{r.passes_us_per_op:,.0f}",
                fmt_x(r.reachable_speedup),
                f"{r.tenfold_us_per_op:,.0f}",
            ]
            for r in rows
        ],
        "llrrrrrrllrrrrrrrr",
    )
    met = all(r.speedup >= SPEEDUP_TARGETS[224] for r in rows)
    met_on_cpu = all(r.speedup_cpu_model >= SPEEDUP_TARGETS[224] for r in rows)
    cheap_build = all(r.build_over_analysis <= 1 for r in rows)
    out += ["", f"- ≥ 10x faster than the fastest peer on every model: {verdict(met)}"]
    out += [f"- the same, archprof handed the peers' CPU model: {verdict(met_on_cpu)}"]
    out += [f"- building from the spec costs at most the analysis: {verdict(cheap_build)}"]
    out += [f"- {_floor_distance(rows)}", f"- {_within_reach(rows)}"]
    if floor is not None:
        out += [f"- {_under_the_floor(rows, floor)}"]
    out += [""]
    return "\n".join(out)


def _under_the_floor(rows: list[HubRow], floor: AnalysisFloor) -> str:
    """archprof's own floor per analysis, and the models on which 10x leaves less than it."""
    said = (
        f"archprof's own floor, an analysis that traces no operator (an `nn.Identity` of one element, median of"
        f" {FLOOR_RUNS}): {floor.analysis_s * 1e3:.2f} ms, of which {floor.kernels_s * 1e3:.2f} ms put the"
        " dispatcher kernels in place and take them back"
    )
    under = [
        f"`{r.spec}` ({r.fastest_peer[1].median_s / 10 * 1e3:.3f} ms)"
        for r in rows
        if r.fastest_peer[1].median_s / 10 < floor.analysis_s
    ]
    if not under:
        return said
    return (
        f"{said}; 10x the fastest peer leaves less than that on {len(under)} of {len(rows)} models: {', '.join(under)}"
    )


def _floor_distance(rows: list[HubRow]) -> str:
    """How close archprof's time per operator comes to the dispatch-mode floor's."""
    over = sorted((r.archprof_us_per_op / r.floor_us_per_op, r.spec) for r in rows)
    median = statistics.median(ratio for ratio, _ in over)
    return (
        f"archprof's time per operator over the floor's: median {median:.1f}x, from {over[0][0]:.1f}x"
        f" (`{over[0][1]}`) to {over[-1][0]:.1f}x (`{over[-1][1]}`)"
    )


def _within_reach(rows: list[HubRow]) -> str:
    """On which models 10x is within reach of a trace that runs the model's Python."""
    short = [f"`{r.spec}` {fmt_x(r.reachable_speedup)}" for r in rows if r.reachable_speedup < SPEEDUP_TARGETS[224]]
    if not short:
        return "10x is within reach of the model's Python plus archprof's passes on every model"
    return (
        f"10x is out of reach of any trace that runs the model's Python, with archprof's passes as they are, on"
        f" {len(short)} of {len(rows)} models: {', '.join(short)}"
    )


# Batch and side of the square input: the first is the usual one, each other is set beside it.
SIZES = ((1, 224), (64, 224), (1, 896))


def size_label(batch: int, side: int) -> str:
    return f"batch {batch}, {side}x{side}"


def bench_sizes(specs: tuple[str, ...], repeat: int) -> dict[str, dict[str, Timing | None]]:
    """archprof's analysis of each model at each of SIZES, taking turns; None at a size the
    model's forward refuses (a vision transformer's position table fixes its input)."""
    timings: dict[str, dict[str, Timing | None]] = {}
    for spec in specs:
        progress(f"{spec}: archprof at {'; '.join(size_label(*size) for size in SIZES)}")
        loaded = load_model(spec)
        runs = {
            size_label(b, side): lambda m=loaded, b=b, s=side: archprof.analyze(m, input_size=(3, s, s), batch=b)
            for b, side in SIZES
        }
        refused = set()
        for label, run in runs.items():
            try:
                run()
            except archprof.ArchprofError:
                refused.add(label)
        measured = measure_side_by_side({k: v for k, v in runs.items() if k not in refused}, repeat)
        timings[spec] = {label: measured.get(label) for label in runs}
    return timings


def render_sizes(timings: dict[str, dict[str, Timing | None]]) -> str:
    labels = [size_label(*size) for size in SIZES]
    usual = labels[0]
    out = ["", f"## 6. Analysis time against batch and resolution ({'; '.join(labels)})", ""]
    out += markdown_table(
        ["model", *(f"{label} ms" for label in labels), *(f"ratio, {label}" for label in labels[1:])],
        [
            [
                f"`{spec}`",
                *(f"{t.ms:,.1f}" if t else "refused" for t in times.values()),
                *(fmt_x(times[label].median_s / times[usual].median_s) if times[label] else "" for label in labels[1:]),
            ]
            for spec, times in timings.items()
        ],
        "l" + "r" * (2 * len(SIZES) - 1),
    )
    flat = all(
        t.median_s <= FLAT_TOLERANCE * times[usual].median_s for times in timings.values() for t in times.values() if t
    )
    out += [
        "",
        "A size the model's forward refuses (a vision transformer's position table is made for one input size) is"
        " left out.",
        "",
        f"- archprof time does not grow with the batch or the resolution (at most {FLAT_TOLERANCE:g}x {usual}'s):"
        f" {verdict(flat)}",
        "",
    ]
    return "\n".join(out)


# -- 2. CLI wall time and 3. peak memory ---------------------------------------------------


CLI_ARGS = ("summary", "vgg16", "-f", "csv")


def archprof_command() -> list[str]:
    script = Path(sys.executable).with_name("archprof")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "archprof"]
    return [*base, *CLI_ARGS]


def floor_command() -> list[str]:
    return [sys.executable, "-c", "import torch"]


def _writing_bytecode() -> dict[str, str]:
    """This process's environment, but writing .pyc files."""
    return {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def run_checked(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc


def bench_cli(repeat: int) -> tuple[Timing, Timing]:
    """Median wall times of the CLI and of the `import torch` floor, runs interleaved."""
    cli, floor = archprof_command(), floor_command()
    # Warm-up: the page cache, and the .pyc files an installed package has (written even
    # where the environment says not to: PYTHONDONTWRITEBYTECODE would leave every run
    # compiling archprof's modules from source, which no user's install does).
    run_checked(cli, env=_writing_bytecode())
    run_checked(floor, env=_writing_bytecode())
    cli_times, floor_times = [], []
    for _ in range(repeat):
        for cmd, times in ((cli, cli_times), (floor, floor_times)):
            start = time.perf_counter()
            run_checked(cmd)
            times.append(time.perf_counter() - start)
    return Timing(statistics.median(cli_times), repeat), Timing(statistics.median(floor_times), repeat)


_TIME = "/usr/bin/time"
_RUSAGE_WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(code)\n"
)


def max_rss_mb(cmd: list[str]) -> float:
    """Peak resident set size of one fresh run of `cmd`, in MB (10^6 bytes)."""
    if os.path.exists(_TIME):
        proc = run_checked([_TIME, "-v", *cmd])
        match = re.search(r"Maximum resident set size \(kbytes\):\s*(\d+)", proc.stderr)
        if not match:
            raise RuntimeError(f"no 'Maximum resident set size' in /usr/bin/time output: {proc.stderr[-500:]}")
        return int(match.group(1)) * 1024 / 1e6
    # A fresh wrapper process per measurement, so RUSAGE_CHILDREN sees only this one child.
    proc = subprocess.run([sys.executable, "-c", _RUSAGE_WRAPPER, *cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    value = int(proc.stdout.split()[-1])
    return value / 1e6 if sys.platform == "darwin" else value * 1024 / 1e6  # bytes on macOS, KiB on Linux


def bench_memory(repeat: int) -> tuple[float, float, str]:
    cli, floor = archprof_command(), floor_command()
    cli_mb, floor_mb = [], []
    for _ in range(repeat):
        cli_mb.append(max_rss_mb(cli))
        floor_mb.append(max_rss_mb(floor))
    method = (
        "`/usr/bin/time -v`" if os.path.exists(_TIME) else "`getrusage(RUSAGE_CHILDREN).ru_maxrss` of a fresh wrapper"
    )
    return statistics.median(cli_mb), statistics.median(floor_mb), method


# -- report --------------------------------------------------------------------------------


def fmt_ms(t: Timing) -> str:
    text = f"{t.ms:,.1f}" if t.ms < 100 else f"{t.ms:,.0f}"
    return text if t.runs > 1 else f"{text} ¹"


def fmt_x(value: float) -> str:
    """A ratio, rounded down: one just short of a target (9.96x, 99.96x) never reads as
    meeting it (10.0x, 100x)."""
    if value < 100:
        return f"{math.floor(value * 10) / 10:,.1f}x"
    return f"{math.floor(value):,.0f}x"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**NOT MET**"


def render(
    rows: list[Row],
    build_ms: dict[str, float],
    cli: tuple[Timing, Timing],
    memory: tuple[float, float, str],
    args: argparse.Namespace,
    command: str,
    elapsed_s: float,
    others_share: float | None,
) -> str:
    out: list[str] = []
    sizes = sorted({r.size for r in rows})
    out += [
        "# archprof benchmark: analysis time, CLI start-up, peak memory",
        "",
        f"- Date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- Command: `{command}`",
        f"- Machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs "
        f"(torch uses {torch.get_num_threads()} threads)",
        f"- Versions: Python {platform.python_version()}, torch {torch.__version__}, archprof {archprof.__version__}, "
        f"torchinfo {torchinfo.__version__}, fvcore {_fvcore_version()}",
        f"- Timing: median of {args.repeat} timed runs after one warm-up call, each right after an untimed run of"
        " the same tool"
        + (
            f"; torchinfo, fvcore and forward at {SLOW_SIZE}x{SLOW_SIZE} get one timed run (marked ¹), "
            "each still after a warm-up call"
            if any(r.size >= SLOW_SIZE for r in rows)
            else ""
        )
        + ". Batch 1, float32, CPU. The garbage collector runs once before each series of timed runs (not"
        " before each run, which would leave the caches cold for the next), and a run's result is let go of"
        " before the next run's clock starts; what reference cycles keep (FlopCounterMode's, thousands of"
        " objects a run, 2,947 of resnet50's; archprof's, none) waits for the collector's next pass, inside"
        " some later run.",
        f"- Benchmark wall time: {elapsed_s:.0f} s; "
        + (
            "CPU used by other processes during the run: not measured (no /proc/stat)"
            if others_share is None
            else f"CPU used by other processes during the run: {others_share:.0%} of the machine"
            + (
                " — **the machine was busy: timings are inflated and noisy; rerun on an idle machine**"
                if others_share > BUSY_WARNING
                else ""
            )
        ),
        "",
        "## 1. Analysis time per model and input",
        "",
        "archprof time includes building the model on the meta device (the product's real cost). The peers use a"
        " CPU model built once beforehand; that build is not in their times. archprof at both sizes and the peers"
        f" at the sizes below {SLOW_SIZE} take turns, run by run; at {SLOW_SIZE} each peer's one run is set beside"
        f" the median of archprof's runs of that size made around it (one in the same round, {args.repeat} right"
        " after; the table's archprof figure there), and the resolution verdict uses archprof's runs made in turn"
        " at both sizes. A speed-up is the median over the rounds of the peer's run over archprof's beside it, so"
        " that a slow spell of the machine, which lengthens both, does not count:",
        "",
    ]
    out += [", ".join(f"build (CPU) {name}: {ms:,.0f} ms" for name, ms in build_ms.items()), ""]
    header = [
        "model",
        "input",
        "archprof ms",
        "torchinfo ms",
        "fvcore ms",
        "forward ms",
        "speed-up vs torchinfo",
        "speed-up vs fvcore",
        "MACs agree",
    ]
    body = []
    for r in rows:
        agree = "yes" if r.macs_agree else ("no; conv+linear: yes" if r.archprof_macs == r.fvcore_mac_ops else "no")
        body.append(
            [
                r.model,
                f"{r.size}x{r.size}",
                fmt_ms(r.archprof if r.size < SLOW_SIZE else r.archprof_beside),
                fmt_ms(r.torchinfo),
                fmt_ms(r.fvcore),
                fmt_ms(r.forward),
                fmt_x(r.speedup_torchinfo),
                fmt_x(r.speedup_fvcore),
                agree,
            ]
        )
    out += markdown_table(header, body, "llrrrrrrl")
    out += ["", "MAC check (fvcore counts one MAC as one “flop”):", ""]
    body = []
    for r in rows:
        extra = ", ".join(f"{k} {v:,}" for k, v in sorted(r.fvcore_extra_ops.items())) or "-"
        body.append(
            [
                r.model,
                f"{r.size}x{r.size}",
                f"{r.archprof_macs:,}",
                f"{r.fvcore_total:,}",
                f"{r.fvcore_total - r.archprof_macs:+,}",
                f"{r.fvcore_mac_ops:,}",
                extra,
            ]
        )
    out += markdown_table(
        [
            "model",
            "input",
            "archprof MACs",
            "fvcore total",
            "fvcore − archprof",
            "fvcore conv+linear",
            "fvcore's other counted ops",
        ],
        body,
        "llrrrrl",
    )
    out += [
        "",
        "fvcore's total also counts BatchNorm (two “flops” per element, one without an affine transform) and"
        " adaptive average pooling (one per input element); "
        "archprof counts those as `elementwise_flops`, not MACs. The MAC operators "
        f"({', '.join(sorted(FVCORE_MAC_OPS))}) are compared in the column “fvcore conv+linear”.",
        "",
    ]

    # verdicts
    out += ["## Verdicts", ""]
    if others_share is not None and others_share > BUSY_WARNING:
        out += [
            f"Caveat: other processes used {others_share:.0%} of the machine's CPU during this run, "
            "so the timing verdicts below are unreliable.",
            "",
        ]
    for size in sizes:
        target = SPEEDUP_TARGETS.get(size)
        if target is None:
            continue
        at = [r for r in rows if r.size == size]
        worst = min(min(r.speedup_torchinfo, r.speedup_fvcore) for r in at)
        detail = "; ".join(
            f"{r.model}: {fmt_x(r.speedup_torchinfo)} vs torchinfo, {fmt_x(r.speedup_fvcore)} vs fvcore" for r in at
        )
        out.append(
            f"- ≥ {target:g}x faster than torchinfo and fvcore at {size}x{size}: {verdict(worst >= target)} ({detail})"
        )
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        ratios = {}
        for name in MODEL_NAMES:
            a = next(r for r in rows if r.model == name and r.size == lo)
            b = next(r for r in rows if r.model == name and r.size == hi)
            ratios[name] = (a, b, statistics.median(paired_ratios([b.archprof], a.archprof)))
        ok = all(ratio <= FLAT_TOLERANCE for _, _, ratio in ratios.values())
        detail = "; ".join(
            f"{name}: {fmt_ms(a.archprof)} → {fmt_ms(b.archprof)} ms ({ratio:.2f}x)"
            for name, (a, b, ratio) in ratios.items()
        )
        out.append(
            f"- archprof time does not grow with the resolution ({lo} → {hi}, at most {FLAT_TOLERANCE:g}x "
            f"allowed for noise; the median of the ratios of runs made in turn): {verdict(ok)} ({detail})"
        )
    else:
        out.append("- archprof time does not grow with the resolution: not measured (--quick runs 224x224 only)")
    all_agree = all(r.macs_agree for r in rows)
    mac_ops_agree = all(r.archprof_macs == r.fvcore_mac_ops for r in rows)
    out.append(
        f"- archprof MACs equal fvcore's total: {'**yes**' if all_agree else '**no**'}"
        + ("" if all_agree else f" (equal to fvcore's conv+linear count: {'yes' if mac_ops_agree else 'NO'})")
    )
    cli_mb, floor_mb, _ = memory
    out.append(
        f"- peak RSS of `archprof summary vgg16 -f csv` within {RSS_TARGET_MB:g} MB of `import torch`: "
        f"{verdict(cli_mb - floor_mb <= RSS_TARGET_MB)} ({cli_mb - floor_mb:+,.1f} MB)"
    )
    out.append("")

    # CLI
    cli_t, floor_t = cli
    out += [
        "## 2. End-to-end CLI wall time",
        "",
        f"Subprocess wall time, median of {args.repeat} runs after one warm-up run each, interleaved.",
        "",
    ]
    out += markdown_table(
        ["command", "wall ms"],
        [
            [f"`{shlex.join(['archprof', *CLI_ARGS])} > /dev/null`", f"{cli_t.ms:,.0f}"],  # no machine path
            [f'`{Path(sys.executable).name} -c "import torch"` (floor)', f"{floor_t.ms:,.0f}"],
            ["archprof overhead above the floor", f"{cli_t.ms - floor_t.ms:+,.0f}"],
        ],
        "lr",
    )
    out += [
        "",
        "## 3. Peak memory (max RSS)",
        "",
        f"Measured with {memory[2]}, one fresh process per run, median of {args.repeat}.",
        "",
    ]
    out += markdown_table(
        ["process", "max RSS MB"],
        [
            ["`archprof summary vgg16 -f csv`", f"{cli_mb:,.1f}"],
            ["`import torch` only", f"{floor_mb:,.1f}"],
            ["difference", f"{cli_mb - floor_mb:+,.1f}"],
        ],
        "lr",
    )
    out += ["", f"Target: difference ≤ {RSS_TARGET_MB:g} MB: {verdict(cli_mb - floor_mb <= RSS_TARGET_MB)}", ""]
    return "\n".join(out)


def _fvcore_version() -> str:
    try:
        from importlib.metadata import version

        return version("fvcore")
    except Exception:
        return "?"


def _cpu_seconds() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine from /proc/stat, CPU seconds of this process and its children)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    machine = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    t = os.times()
    return machine, t.user + t.system + t.children_user + t.children_system


def others_cpu_share(start: tuple[float, float] | None, end: tuple[float, float] | None, elapsed_s: float):
    """Share of the machine's CPU capacity that other processes used between `start` and `end`."""
    if start is None or end is None or elapsed_s <= 0:
        return None
    others = (end[0] - start[0]) - (end[1] - start[1])
    return max(others, 0.0) / (elapsed_s * (os.cpu_count() or 1))


def model_speeds(rows: list[HubRow], group: str) -> list[ModelSpeed]:
    return [
        ModelSpeed(
            name=row.spec,
            group=group,
            speedup=row.speedup,
            middle=middle_half(row.speedups),
            peer=row.fastest_peer[0],
            archprof_us=row.archprof_us_per_op,
            passes_us=row.passes_us_per_op,
            floor_us=row.floor_us_per_op,
            tenfold_us=row.tenfold_us_per_op,
        )
        for row in rows
    ]


def render_figure(models: list[ModelSpeed], path: Path) -> str:
    """Write sections 4 and 5 as a picture (`analysis_figure`) beside the report, and the
    Markdown that shows it; without matplotlib, a line saying how to get it."""
    try:
        figure = speed_figure(models)
    except ImportError:
        return "\n(The picture of sections 4 and 5 needs matplotlib: pip install -e '.[bench]'.)\n"
    write_report(path, svg(figure))
    return (
        f"\n![archprof's speed-up over the fastest peer, and its time per operator, per model]({path.name})\n\n"
        "Sections 4 and 5 at a glance. Left: the speed-up over the fastest peer, green where it reaches the"
        " 10x goal. Right: archprof's microseconds per traced operator, its passes and the rest; the black"
        " tick is the dispatch-mode floor, the red diamond what 10x the fastest peer leaves for everything.\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per measurement (median is reported)")
    parser.add_argument("--quick", action="store_true", help="only 224x224, and two of the hub models")
    parser.add_argument("--report", type=Path, default=DEFAULT_REPORT, help="where to write the Markdown report")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    script = os.path.relpath(Path(sys.argv[0]).resolve(), ROOT)
    command = shlex.join(["python", script, *(sys.argv[1:] if argv is None else argv)])

    cpu_start = _cpu_seconds()
    started = time.perf_counter()
    rows, build_ms = bench_models(QUICK_SIZES if args.quick else FULL_SIZES, args.repeat)
    hub_packages()
    hub_rows = bench_specs(QUICK_HUB_MODELS if args.quick else HUB_MODELS, args.repeat, HUB_INPUT)
    built_in_rows = bench_specs(QUICK_BUILT_INS if args.quick else tuple(MODELS), args.repeat)
    floor = bench_analysis_floor()
    size_timings = bench_sizes(QUICK_HUB_MODELS if args.quick else HUB_MODELS, args.repeat)
    progress("CLI wall time")
    cli = bench_cli(args.repeat)
    progress("peak memory")
    memory = bench_memory(args.repeat)
    elapsed_s = time.perf_counter() - started
    share = others_cpu_share(cpu_start, _cpu_seconds(), elapsed_s)
    models = model_speeds(hub_rows, "torchvision and timm") + model_speeds(built_in_rows, "built-in")
    text = (
        render(rows, build_ms, cli, memory, args, command, elapsed_s, share)
        + render_specs(
            hub_rows,
            args.repeat,
            "4. Models from torchvision and timm (224x224, batch 1)",
            render_figure(models, args.report.with_suffix(".svg")),
        )
        + render_specs(built_in_rows, args.repeat, "5. Every built-in model (its usual input, batch 1)", floor=floor)
        + render_sizes(size_timings)
    )
    print(text)
    write_report(args.report, text)
    progress(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
