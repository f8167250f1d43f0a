"""The one timing harness: timestamps on the CPU or a GPU, warm-up, timed passes of the
whole model, and passes with a pre- and a post-hook on every leaf module.

How the time is taken (see `time_model`):

- warm-up passes first (one-time allocations, kernel selection, cuDNN/oneDNN set-up), then
  `repeat` passes of the whole model *without any hook*: the latency figures;
- then `repeat` passes with a pre- and a post-hook on every leaf module, each taking a
  timestamp: `time.perf_counter_ns` on the CPU (CPU kernels return when done), CUDA events
  on a GPU (recorded on the stream; the host synchronises once, when all repeats are
  queued, and only then reads them). A row's `time_ms` is the median over the repeats.
- The hooks perturb the run (Python work per call; on a GPU, when the host is the
  bottleneck, idle gaps between kernels land inside the events): the whole-model median
  with hooks is reported beside the one without.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

# progress(phase, done, total): called as work advances (the CLI draws it with rich).
ProgressFn = Callable[[str, int, int], None]


def no_progress(phase: str, done: int, total: int) -> None:
    """The progress callback when nobody watches."""


class Clock:
    """Timestamps: perf_counter_ns on the CPU, CUDA events on a GPU (read after one sync)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self._torch = torch

    def mark(self):
        if self.cuda:
            event = self._torch.cuda.Event(enable_timing=True)
            event.record(self._torch.cuda.current_stream(self.device))  # where the model's kernels go
            return event
        return time.perf_counter_ns()

    def sync(self) -> None:
        if self.cuda:
            self._torch.cuda.synchronize(self.device)

    def ms(self, start, end) -> float:
        if self.cuda:
            return start.elapsed_time(end)
        return (end - start) / 1e6


@dataclass
class Timing:
    whole_ms: list[float]  # each timed pass without hooks
    hooked_ms: list[float]  # each timed pass with the per-layer hooks
    layer_ms: dict[tuple[str, int], list[float]]  # (leaf path, call) -> each pass's time
    # per pass: (hooked total, {(path, call): ms}) to split attributed from unattributed time
    passes: list[tuple[float, dict[tuple[str, int], float]]]


def warm_up(run: Callable[[], Any], clock: Clock, passes: int, tell: ProgressFn = no_progress) -> None:
    for i in range(passes):
        run()
        clock.sync()
        tell("warm-up", i + 1, passes)


def whole_passes_ms(run: Callable[[], Any], clock: Clock, repeat: int, tell: ProgressFn = no_progress) -> list[float]:
    """`repeat` timed passes of `run`, no hook anywhere; read after the last (no sync between)."""
    marks = []
    for i in range(repeat):
        start = clock.mark()
        run()
        end = clock.mark()
        marks.append((start, end))
        tell("timing the whole model", i + 1, repeat)
    clock.sync()
    return [clock.ms(s, e) for s, e in marks]


def latency_ms(run: Callable[[], Any], device: torch.device, runs: int, warmup: int = 3) -> list[float]:
    """Whole passes of `run` after `warmup`: at least `runs`, more (up to 100) for a fast
    model, until they add up to 200 ms, so that a median is not one scheduler hiccup."""
    clock = Clock(device)
    warm_up(run, clock, warmup)
    times = whole_passes_ms(run, clock, runs)
    while sum(times) < 200 and len(times) < 100:
        times += whole_passes_ms(run, clock, min(runs, 100 - len(times)))
    return times


def time_model(
    module: torch.nn.Module,
    inputs: Callable[[torch.nn.Module], Any],
    device: torch.device,
    leaves: dict[str, torch.nn.Module],
    warmup: int,
    repeat: int,
    tell: ProgressFn = no_progress,
) -> Timing:
    """Warm-up, `repeat` whole passes without hooks, `repeat` passes with every leaf timed."""
    clock = Clock(device)
    warm_up(lambda: inputs(module), clock, warmup, tell)
    whole = whole_passes_ms(lambda: inputs(module), clock, repeat, tell)  # the latency figures

    # Every leaf module between a pre- and a post-hook.
    records: list[tuple[str, int, Any, Any]] = []
    stack: list[tuple[str, int, Any]] = []
    counts: dict[str, int] = {}

    def pre_hook(path):
        def hook(_module, _args):
            call = counts.get(path, 0)
            counts[path] = call + 1
            stack.append((path, call, clock.mark()))

        return hook

    def post_hook(_module, _args, _output):
        end = clock.mark()
        path, call, start = stack.pop()
        records.append((path, call, start, end))

    handles = []
    for path, leaf in leaves.items():
        handles.append(leaf.register_forward_pre_hook(pre_hook(path)))
        handles.append(leaf.register_forward_hook(post_hook))
    runs = []
    try:
        for i in range(repeat):
            counts.clear()
            records = []
            start = clock.mark()
            inputs(module)
            end = clock.mark()
            runs.append((start, end, records))
            tell("timing each layer", i + 1, repeat)
        clock.sync()
    finally:
        for handle in handles:
            handle.remove()
    hooked, passes = [], []
    layer_ms: dict[tuple[str, int], list[float]] = {}
    for start, end, run_records in runs:
        per_layer = {}
        for path, call, s, e in run_records:
            per_layer[(path, call)] = clock.ms(s, e)
            layer_ms.setdefault((path, call), []).append(per_layer[(path, call)])
        hooked.append(clock.ms(start, end))
        passes.append((hooked[-1], per_layer))
    return Timing(whole, hooked, layer_ms, passes)


def best_seconds(clock: Clock, work, runs: int) -> float:
    work()  # warm-up: library handles, first-touch of pages
    clock.sync()
    best = math.inf
    for _ in range(runs):
        start = clock.mark()
        work()
        end = clock.mark()
        clock.sync()
        best = min(best, clock.ms(start, end) / 1e3)
    return max(best, 1e-9)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank: the ceil(q n)-th smallest value."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]
