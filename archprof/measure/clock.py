"""The one timing harness: timestamps on the CPU or a GPU, warm-up, timed passes of the
whole model, and passes with a pre- and a post-hook on every timed module.

How the time is taken (see `time_model`):

- warm-up passes first (one-time allocations, kernel selection, cuDNN/oneDNN set-up), then
  `repeat` passes of the whole model *without any hook*: the latency figures;
- then `repeat` passes with a pre- and a post-hook on every timed module, each taking a
  timestamp: `time.perf_counter_ns` on the CPU (CPU kernels return when done), CUDA events
  on a GPU (recorded on the stream; the host synchronises once, when all repeats are
  queued, and only then reads them). A call's time is its own: from the end of its pre-hook
  to the start of its post-hook, less the timed calls made inside it (a BatchNorm's
  activation child, a module a leaf calls) from the start of their pre-hook to the end of
  their post-hook, so that nested calls are counted once and the hooks' own work is no
  call's time. The pre-hook runs before the model's own pre-hooks and the post-hook after
  its forward hooks, always (a call that raises, the model catching it, is timed up to its
  raise): what the model's hooks run is the call's, as the trace counts it in the row. A
  row's `time_ms` is the median over the repeats.
- The hooks perturb the run (Python work per call; on a GPU, when the host is the
  bottleneck, idle gaps between kernels land inside the events): the whole-model median
  with hooks is reported beside the one without.
"""

from __future__ import annotations

import math
import os
import statistics
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
    layer_ms: dict[tuple[str, int], list[float]]  # (module path, call) -> each pass's own time
    # per pass: (hooked total, {(path, call): ms}) to split attributed from unattributed time
    passes: list[tuple[float, dict[tuple[str, int], float]]]

    def renamed(self, names: dict[tuple[str, int], tuple[str, int]]) -> Timing:
        """The calls keyed as the trace names them (`Graph.calls_as_named`: a module held
        under two names, hooked under its first)."""
        if not names:
            return self
        layer_ms = {names.get(key, key): times for key, times in self.layer_ms.items()}
        passes = [(total, {names.get(key, key): ms for key, ms in calls.items()}) for total, calls in self.passes]
        return Timing(self.whole_ms, self.hooked_ms, layer_ms, passes)


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
    timed: dict[str, torch.nn.Module],
    warmup: int,
    repeat: int,
    tell: ProgressFn = no_progress,
) -> Timing:
    """Warm-up, `repeat` whole passes without hooks, `repeat` passes with every module of
    `timed` (by path) between a pre- and a post-hook."""
    clock = Clock(device)
    warm_up(lambda: inputs(module), clock, warmup, tell)
    whole = whole_passes_ms(lambda: inputs(module), clock, repeat, tell)  # the latency figures

    calls: list[_Call] = []
    under_way: list[_Call] = []  # the timed calls entered and not yet left, innermost last
    counts: dict[str, int] = {}

    def pre_hook(path):
        def hook(_module, _args):
            outer_start = clock.mark()  # first: the hook's own work stays outside its caller's time too
            call = counts.get(path, 0)
            counts[path] = call + 1
            entered = _Call(path, call, under_way[-1] if under_way else None, outer_start)
            calls.append(entered)
            under_way.append(entered)
            entered.start = clock.mark()  # last: the hook's own work stays outside the call

        return hook

    def post_hook(_module, _args, _output):
        end = clock.mark()
        left = under_way.pop()
        left.end = end
        left.outer_end = clock.mark()

    handles = []
    for path, timed_module in timed.items():
        # Outside the model's own hooks (see the module). Always called: otherwise a call that
        # raised would stay under way, and the next post-hook would close it instead of its own.
        handles.append(timed_module.register_forward_pre_hook(pre_hook(path), prepend=True))
        handles.append(timed_module.register_forward_hook(post_hook, always_call=True))
    runs = []
    try:
        for i in range(repeat):
            counts.clear()
            calls = []
            start = clock.mark()
            inputs(module)
            end = clock.mark()
            runs.append((start, end, calls))
            tell("timing each layer", i + 1, repeat)
        clock.sync()
    finally:
        for handle in handles:
            handle.remove()
    hooked, passes = [], []
    layer_ms: dict[tuple[str, int], list[float]] = {}
    for start, end, run_calls in runs:
        per_layer = own_ms(clock, run_calls)
        for key, ms in per_layer.items():
            layer_ms.setdefault(key, []).append(ms)
        hooked.append(clock.ms(start, end))
        passes.append((hooked[-1], per_layer))
    return Timing(whole, hooked, layer_ms, passes)


@dataclass(eq=False)
class _Call:
    """One timed module call of a pass; its timestamps are read after the pass (CUDA events)."""

    path: str
    call: int
    caller: _Call | None  # the timed call it ran inside
    outer_start: Any = None  # its pre-hook entered
    start: Any = None  # its pre-hook done
    end: Any = None  # its post-hook entered
    outer_end: Any = None  # its post-hook done


def own_ms(clock: Clock, calls: list[_Call]) -> dict[tuple[str, int], float]:
    """Each call's own time: its span, between its hooks, less the outer spans of the timed
    calls directly inside it, their hooks included (their own time already excludes what ran
    inside them), so the times of one pass add up and no hook's work is any call's time: it
    falls between hooks, with the pass's unattributed remainder."""
    own = {id(call): clock.ms(call.start, call.end) for call in calls}
    for call in calls:
        if call.caller is not None:
            own[id(call.caller)] -= clock.ms(call.outer_start, call.outer_end)
    return {(call.path, call.call): own[id(call)] for call in calls}


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


def spread_note(times: Sequence[float]) -> str | None:
    """That timed passes vary widely (their p90 past 1.5 times their median): a noisy machine."""
    median, p90 = statistics.median(times), percentile(times, 0.9)
    if p90 <= 1.5 * median:
        return None
    return f"the passes vary widely (p90 is {p90 / median:.1f}x the median): a noisy machine"


def busy_machine_note(device: torch.device) -> str | None:
    """On the CPU, that other processes' work inflated every time, where there was some (a
    load average past the CPUs' count)."""
    if device.type != "cpu" or not hasattr(os, "getloadavg"):
        return None
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    if load <= cpus:
        return None
    return (
        f"the machine was busy (load average {load:.1f} on {cpus} CPUs): other processes competed for the CPU, "
        "so these times are inflated and noisy"
    )
