"""Run the model for real, timed, and set what was measured beside what was predicted.

`profile_model` (`archprof.profile`) analyses the model on meta tensors as `analyze` does,
then builds it for real on a device with random weights, feeds it random inputs and times
it. What it adds to the analytic Report:

- the measured columns of `archprof.report.MEASURED_COLUMNS`, one value per analytic row
  (joined by `layer` and `call`): time, share of the forward, achieved FLOP/s, bytes moved,
  arithmetic intensity, roofline bound and roofline time;
- `Report.measured`, a `Measurement`: whole-model latency (median, p90), throughput,
  achieved FLOP/s, measured peak memory, the device's ceilings and the cross-check.

How the time is taken (see `_time_model`):

- warm-up passes first (one-time allocations, kernel selection, cuDNN/oneDNN set-up), then
  `repeat` passes of the whole model *without any hook*: the latency figures;
- then `repeat` passes with a pre- and a post-hook on every leaf module, each taking a
  timestamp: `time.perf_counter_ns` on the CPU (CPU kernels return when done), CUDA events
  on a GPU (recorded on the stream; the host synchronises once, when all repeats are
  queued, and only then reads them). A row's `time_ms` is the median over the repeats.
- The hooks perturb the run (Python work per call; on a GPU, when the host is the
  bottleneck, idle gaps between kernels land inside the events): the whole-model median
  with hooks is reported beside the one without.
- Work outside leaf modules (a container's own functional ops: ResNet's residual `+`,
  DenseNet's `cat`, a `flatten` in `forward`) and the hooks' own cost fall between hooks:
  reported as the unattributed remainder (hooked forward minus the sum of its layer times),
  never spread over the layers.

Everything here is inference: eval mode, `torch.no_grad()`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archprof.errors import ArchprofError
from archprof.units import parse_bandwidth, parse_flops_rate

if TYPE_CHECKING:
    import torch

    from archprof.graph import Graph
    from archprof.passes.layers import LayerGroup
    from archprof.report import Report

DEFAULT_WARMUP = 5
DEFAULT_REPEAT = 20
# The cross-check accepts measured / predicted peak memory within these bounds. A CUDA
# measurement also holds what the analysis does not count: kernel workspace (cuDNN),
# the allocator's rounding to 512-byte blocks, a local kept alive by eager Python.
MEMORY_RATIO_BOUNDS = (0.8, 1.25)
CACHE_VERSION = 1

# progress(phase, done, total): called as work advances (the CLI draws it with rich).
ProgressFn = Callable[[str, int, int], None]


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ceilings:
    """What the device can do at most: the two slopes of the roofline."""

    device: str  # the cache key: "cuda: NVIDIA H200", "cpu: AMD EPYC, 16 threads"
    dtype: str  # of the matrix product behind peak_flops_per_s ("float32+tf32": TF32 on a GPU)
    peak_flops_per_s: float  # a large matrix product (the best of a few runs)
    bandwidth_bytes_per_s: float  # a large device-to-device copy: bytes read + bytes written
    flops_source: str  # "measured", "cached" or "given"
    bandwidth_source: str

    @property
    def ridge(self) -> float:
        """FLOPs per byte where the roofline bends: above it a row is compute-bound."""
        return self.peak_flops_per_s / self.bandwidth_bytes_per_s


@dataclass(frozen=True)
class Check:
    """One comparison of the analysis with the real run."""

    name: str  # "output shapes", "FLOPs", "peak memory"
    status: str  # "ok", "mismatch" or "skipped"
    summary: str  # one line
    mismatches: tuple[str, ...] = ()  # one line per disagreement

    @property
    def ok(self) -> bool:
        return self.status != "mismatch"


@dataclass(frozen=True)
class Measurement:
    """Whole-model figures of one profile (`Report.measured`). Times in milliseconds."""

    device: str  # "cpu", "cuda", "cuda:1"
    device_name: str
    dtype: str
    batch: int
    warmup: int
    repeat: int
    latencies_ms: tuple[float, ...]  # each timed pass of the whole model, no hooks
    median_ms: float
    p90_ms: float  # nearest rank: the ceil(0.9 n)-th smallest
    throughput_per_s: float  # samples per second: batch / median
    work_flops: int  # analytic flops + elementwise_flops: the FLOPs of every achieved rate
    achieved_flops_per_s: float  # work_flops / median
    hooked_median_ms: float  # median whole forward with the per-layer hooks on
    layer_sum_ms: float  # sum of the rows' time_ms
    unattributed_ms: float  # median over passes of (hooked forward - its timed rows)
    unattributed_share: float  # median over passes of that remainder's share of the pass
    bytes_moved: int  # sum of the rows' bytes_moved
    roofline_ms: float  # sum of the rows' roofline_time_ms: the floor the ceilings allow
    predicted_peak_memory_bytes: int
    measured_peak_memory_bytes: int | None  # CUDA: max_memory_allocated; None on the CPU
    memory_note: str
    ceilings: Ceilings
    checks: tuple[Check, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        """The cross-check found no mismatch."""
        return all(check.ok for check in self.checks)

    @property
    def mismatches(self) -> list[str]:
        return [f"{check.name}: {line}" for check in self.checks for line in check.mismatches]

    def as_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["ceilings"]["ridge_flops_per_byte"] = self.ceilings.ridge
        document["latencies_ms"] = list(self.latencies_ms)
        document["checks"] = [{**asdict(c), "mismatches": list(c.mismatches)} for c in self.checks]
        document["notes"] = list(self.notes)
        document["passed"] = self.passed
        return document

    def summary(self) -> dict[str, Any]:
        """Flat name -> value pairs (Markdown)."""
        items = {
            "device": f"{self.device} ({self.device_name})",
            "median_ms": self.median_ms,
            "p90_ms": self.p90_ms,
            "throughput_per_s": self.throughput_per_s,
            "achieved_flops_per_s (flops + elementwise_flops)": self.achieved_flops_per_s,
            "hooked_median_ms": self.hooked_median_ms,
            "layer_sum_ms": self.layer_sum_ms,
            "unattributed_ms": self.unattributed_ms,
            "unattributed_share": self.unattributed_share,
            "roofline_ms": self.roofline_ms,
            "predicted_peak_memory_bytes": self.predicted_peak_memory_bytes,
            "measured_peak_memory_bytes": self.measured_peak_memory_bytes,
            "peak_flops_per_s": f"{self.ceilings.peak_flops_per_s} ({self.ceilings.flops_source})",
            "bandwidth_bytes_per_s": f"{self.ceilings.bandwidth_bytes_per_s} ({self.ceilings.bandwidth_source})",
        }
        for check in self.checks:
            items[f"check: {check.name}"] = f"{check.status}: {check.summary}"
        return items


# -- profiling -------------------------------------------------------------------------------


def profile_model(
    model: Any,
    input_size: Sequence[int] | None = None,
    batch: int | None = None,
    dtype: torch.dtype | str | None = None,
    device: str | None = None,
    warmup: int = DEFAULT_WARMUP,
    repeat: int = DEFAULT_REPEAT,
    peak_flops: float | str | None = None,
    bandwidth: float | str | None = None,
    progress: ProgressFn | None = None,
    *,
    inputs: Any = None,
    args: Any = None,
    weights: Any = None,
    trust_pickle: bool = False,
) -> Report:
    """Analyse `model`, run it for real on `device` and join the measurements to the rows.

    See `archprof.profile` for the arguments; returns the analytic Report with the measured
    columns and `measured` filled in."""
    import torch

    from archprof.api import analysis, checked_batch_and_dtype
    from archprof.load import LoadedModel, load_model
    from archprof.passes.layers import group_layers
    from archprof.trace import forward_exits_as_errors

    batch, dtype = checked_batch_and_dtype(batch, dtype)
    if warmup < 0:
        raise ArchprofError(f"warmup must be 0 or more, got {warmup}")
    if repeat < 1:
        raise ArchprofError(f"repeat must be at least 1, got {repeat}")
    target = resolve_device(device)
    given_flops = parse_flops_rate(peak_flops) if peak_flops is not None else None
    given_bandwidth = parse_bandwidth(bandwidth) if bandwidth is not None else None
    tell = progress or (lambda phase, done, total: None)

    # The analysis with its graph: bytes moved need what reaches each row from outside it,
    # and the real inputs the trace's dtypes and keywords.
    if isinstance(model, LoadedModel):
        loaded = model
    else:
        loaded = load_model(model, args=args, weights=weights, trust_pickle=trust_pickle)
    analysed = analysis(loaded, input_size, batch, dtype, inputs=inputs)
    graph, traced, report, batch = analysed.graph, analysed.inputs, analysed.report, analysed.batch
    groups = group_layers(graph)
    if len(groups) != len(report):
        raise AssertionError("the trace's layer groups do not line up with the report's rows")
    moved = bytes_moved(graph, groups)

    ceilings = device_ceilings(target, report.dtype, given_flops, given_bandwidth, progress=tell)
    state_bytes = 0
    if target.type == "cuda":
        torch.cuda.synchronize(target)
        state_bytes = torch.cuda.memory_allocated(target)
    module = materialise(loaded, target, dtype)
    real_inputs = _Inputs(
        tuple(_random_input(m.shape, m.dtype, target) for t, m in zip(traced, graph.inputs, strict=True) if not t.name),
        {t.name: _random_input(m.shape, m.dtype, target) for t, m in zip(traced, graph.inputs, strict=True) if t.name},
    )
    leaves = _leaf_paths(module)
    try:
        with forward_exits_as_errors(loaded.name), torch.no_grad():
            timing = _time_model(module, real_inputs, target, leaves, warmup, repeat, tell)
            real = _check_run(module, real_inputs, leaves)
            peak = _measured_peak(module, real_inputs, target, state_bytes)
    except torch.cuda.OutOfMemoryError as exc:
        first_line = (str(exc).strip().splitlines() or ["out of memory"])[0]
        raise ArchprofError(f"the GPU ran out of memory running {loaded.name} at batch {batch}: {first_line}") from None
    except RuntimeError as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ArchprofError(f"the real forward of {loaded.name} failed on {target}: {reason}") from None

    columns, figures = measured_columns(report, moved, timing, ceilings, leaves)
    checks = (
        check_shapes(report, real, leaves, graph),
        check_flops(report, real, leaves),
        check_memory(report.totals.peak_memory_bytes, peak, target),
    )
    median = statistics.median(timing.whole_ms)
    work = report.totals.flops + report.totals.elementwise_flops
    notes = roofline_notes(columns, ceilings) + timing_notes(timing) + _load_note(target)
    if not leaves:
        notes += (f"no per-layer times: {type(module).__name__} runs no Python hooks (TorchScript)",)
    measurement = Measurement(
        device=str(target),
        device_name=device_name(target),
        dtype=report.dtype,
        batch=batch,
        warmup=warmup,
        repeat=repeat,
        latencies_ms=tuple(timing.whole_ms),
        median_ms=median,
        p90_ms=percentile(timing.whole_ms, 0.9),
        throughput_per_s=batch / (median / 1e3),
        work_flops=work,
        achieved_flops_per_s=work / (median / 1e3),
        ceilings=ceilings,
        checks=checks,
        predicted_peak_memory_bytes=report.totals.peak_memory_bytes,
        measured_peak_memory_bytes=peak,
        memory_note=_memory_note(target),
        notes=notes,
        **figures,
    )
    return replace(report, columns={**report.columns, **columns}, measured=measurement)


@dataclass(frozen=True)
class _Inputs:
    """The real inputs: positional, then by keyword, as the trace passed them."""

    args: tuple
    kwargs: dict

    def __call__(self, module):
        return module(*self.args, **self.kwargs)


def resolve_device(device: str | None) -> torch.device:
    """'cpu', 'cuda' or 'cuda:N' (None: cuda when torch sees a GPU, else cpu)."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    text = str(device).strip().lower()
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise ArchprofError(f"unknown device '{device}': choose cpu or cuda (cuda:N for another GPU)")
    target = torch.device(text)
    if target.type == "cuda":
        if not torch.cuda.is_available():
            raise ArchprofError(
                f"device '{text}' needs a CUDA GPU, and torch sees none (torch.cuda.is_available() is False)"
            )
        if target.index is not None and target.index >= torch.cuda.device_count():
            raise ArchprofError(f"device '{text}': torch sees {torch.cuda.device_count()} GPU(s)")
        if target.index is None:
            target = torch.device("cuda", torch.cuda.current_device())
    return target


def device_name(device: torch.device) -> str:
    """What the device is: the GPU's name, or the CPU's model and the threads torch uses."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        pass
    if not model:
        import platform

        model = platform.processor() or platform.machine() or "unknown CPU"
    return f"{model}, {torch.get_num_threads()} threads"


def materialise(loaded, device: torch.device, dtype: torch.dtype | None) -> torch.nn.Module:
    """The model with real storage on `device`, in eval mode (`LoadedModel.materialize`).

    A built-in or a factory is built again there with random weights (its own
    initialisation; BatchNorm running statistics mean 0, variance 1), `--weights` loaded
    into it; a module the caller gave is copied there with its own weights (the caller's
    is untouched), with random ones if they were on the meta device. Random, never
    uninitialised: garbage memory can hold NaNs and denormals, which run at other speeds."""
    return loaded.materialize(device, dtype, copy_module=True).eval()


def _random_input(shape, dtype, device) -> torch.Tensor:
    import torch

    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(shape, dtype=dtype, device=device)
    return torch.randint(0, 2, shape, device=device).to(dtype)  # token ids, masks: small, valid


def _leaf_paths(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Leaf modules by path, as the analysis names them (a shared module under its first name);
    none for a TorchScript module, which runs no Python hooks."""
    import torch

    if isinstance(module, torch.jit.ScriptModule) or getattr(module, "_archprof_attribution", "") == "parameters":
        return {}
    named = dict(module.named_modules())
    parents = {path.rpartition(".")[0] for path in named if path}
    return {path: m for path, m in named.items() if path not in parents}


# -- timing ----------------------------------------------------------------------------------


class _Clock:
    """Timestamps: perf_counter_ns on the CPU, CUDA events on a GPU (read after one sync)."""

    def __init__(self, device: torch.device) -> None:
        import torch

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


def _time_model(module, inputs: _Inputs, device, leaves, warmup: int, repeat: int, tell: ProgressFn) -> Timing:
    clock = _Clock(device)
    for i in range(warmup):
        inputs(module)
        clock.sync()
        tell("warm-up", i + 1, warmup)

    # The whole model, no hook anywhere: the latency figures.
    marks = []
    for i in range(repeat):
        start = clock.mark()
        inputs(module)
        end = clock.mark()
        marks.append((start, end))  # read after the last pass: no sync in between
        tell("timing the whole model", i + 1, repeat)
    clock.sync()
    whole = [clock.ms(s, e) for s, e in marks]

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


@dataclass
class RealRun:
    """What one real forward showed: leaf output shapes, model outputs, counted FLOPs."""

    leaf_shapes: dict[tuple[str, int], str]
    output_shapes: list[str]
    counted_total: int
    counted_by_module: dict[str, int]  # FlopCounterMode's module names ("ResNet.layer1.0.conv1")
    root_name: str


def _check_run(module, inputs, leaves) -> RealRun:
    """One more forward, untimed: leaf output shapes (hooks) and FLOPs (FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    from archprof.structure import tensors_in

    shapes: dict[tuple[str, int], str] = {}
    counts: dict[str, int] = {}

    def post_hook(path):
        def hook(_module, _args, output):
            call = counts.get(path, 0)
            counts[path] = call + 1
            shapes[(path, call)] = _shape_text(tensors_in(output))

        return hook

    handles = [leaf.register_forward_hook(post_hook(path)) for path, leaf in leaves.items()]
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            output = inputs(module)
    finally:
        for handle in handles:
            handle.remove()
    by_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    return RealRun(
        shapes,
        ["x".join(map(str, t.shape)) for t in tensors_in(output)],
        counter.get_total_flops(),
        by_module,
        type(module).__name__,
    )


def _shape_text(tensors) -> str:
    return ", ".join("x".join(map(str, t.shape)) for t in tensors)


def _measured_peak(module, inputs, device, state_bytes: int) -> int | None:
    """CUDA: max_memory_allocated over one forward, counted from before the model was built
    (parameters, buffers, inputs and activations, as the prediction). CPU: None."""
    if device.type != "cuda":
        return None
    from archprof.memory import _peak

    return _peak(device, state_bytes, lambda: inputs(module))


def _memory_note(device) -> str:
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated over one forward (kernel workspace and allocator rounding included)"
    return "not measured on the CPU: torch keeps no peak-allocation counter there (use --device cuda)"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank: the ceil(q n)-th smallest value."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


# -- derived columns -------------------------------------------------------------------------


def bytes_moved(graph: Graph, groups: Sequence[LayerGroup]) -> list[int]:
    """Per row, the fewest bytes its work must move through memory: each tensor it reads
    from outside the row (inputs, weights, buffers, earlier rows' outputs) read once, and
    each tensor it leaves behind (its outputs, and tensors from outside it overwrites in
    place) written once.

    Approximations: tensors made and used inside one row (the intermediates of a multi-op
    row, which eager PyTorch does write and re-read) are not counted; a view read from
    outside counts the smaller of the view and its base; views and op-less rows (Identity,
    Dropout in eval, flatten) move nothing; a weight is counted in every call that reads it.
    """
    base: dict[int, int] = {}  # storage -> bytes of the tensor that made it
    for meta in graph.inputs:
        base.setdefault(meta.storage, meta.nbytes)
    for op in graph.ops:
        for meta in op.inputs:
            if meta.kind != "activation":  # parameters, buffers, inputs, constants own theirs
                base.setdefault(meta.storage, meta.nbytes)
        if not op.is_view and not op.writes_input:
            for meta in op.outputs:
                base.setdefault(meta.storage, meta.nbytes)

    moved = []
    for group in groups:
        made: set[int] = set()
        written: set[int] = set()
        read: dict[int, int] = {}
        for op in group.ops:
            if op.is_view:
                continue
            for meta in op.inputs:
                if meta.storage not in made:
                    size = min(meta.nbytes, base.get(meta.storage, meta.nbytes))
                    read[meta.storage] = max(read.get(meta.storage, 0), size)
            if op.writes_input:
                written.update(meta.storage for meta in op.outputs)
            else:
                made.update(meta.storage for meta in op.outputs)
        outputs = {meta.storage for meta in group.outputs}
        left = (outputs & (made | written)) | (written - made)
        moved.append(sum(read.values()) + sum(base.get(s, 0) for s in left))
    return moved


def measured_columns(report: Report, moved, timing: Timing, ceilings: Ceilings, leaves) -> tuple[dict, dict]:
    """The measured columns (lists, None where a row has no value) and the whole-model sums."""
    hooked_median = statistics.median(timing.hooked_ms)
    rows = list(
        zip(
            report.columns["layer"],
            report.columns["call"],
            report.columns["flops"],
            report.columns["elementwise_flops"],
            moved,
            strict=True,
        )
    )
    timed_keys = {(layer, call) for layer, call, *_ in rows if layer in leaves and call >= 0}
    # Shares are taken within each pass, then the median: a pass slowed down as a whole
    # (another process on the machine) moves every time, not the shares.
    shares: dict[tuple[str, int], list[float]] = {}
    unattributed, unattributed_shares = [], []
    for total, per_layer in timing.passes:
        attributed = 0.0
        for key, ms in per_layer.items():
            if key in timed_keys:
                attributed += ms
                shares.setdefault(key, []).append(ms / total if total > 0 else 0.0)
        unattributed.append(total - attributed)
        unattributed_shares.append((total - attributed) / total if total > 0 else 0.0)
    from archprof.report import MEASURED_COLUMNS

    columns: dict[str, list] = {c.name: [] for c in MEASURED_COLUMNS}
    for layer, call, flops, elementwise, nbytes in rows:
        work = flops + elementwise
        key = (layer, call)
        times = timing.layer_ms.get(key) if key in timed_keys else None
        ms = statistics.median(times) if times else None
        columns["time_ms"].append(ms)
        columns["time_share"].append(statistics.median(shares[key]) if ms is not None and shares.get(key) else None)
        columns["achieved_flops_per_s"].append(work / (ms / 1e3) if ms else None)
        columns["bytes_moved"].append(nbytes)
        intensity = work / nbytes if nbytes else None
        columns["arithmetic_intensity"].append(intensity)
        columns["bound"].append("" if intensity is None else ("compute" if intensity >= ceilings.ridge else "memory"))
        columns["roofline_time_ms"].append(roofline_ms(work, nbytes, ceilings))
    figures = {
        "hooked_median_ms": hooked_median,
        "layer_sum_ms": sum(ms for ms in columns["time_ms"] if ms is not None),
        "unattributed_ms": statistics.median(unattributed),
        "unattributed_share": statistics.median(unattributed_shares),
        "bytes_moved": sum(moved),
        "roofline_ms": sum(columns["roofline_time_ms"]),
    }
    return columns, figures


def roofline_notes(columns: dict[str, list], ceilings: Ceilings) -> tuple[str, ...]:
    """What the measured rows say about the roofline itself: rows above the peak FLOP/s
    mean the peak was measured low; rows faster than their memory floor read from caches."""
    notes = []
    above = [rate for rate in columns["achieved_flops_per_s"] if rate is not None and rate > ceilings.peak_flops_per_s]
    if above:
        notes.append(
            f"{len(above)} rows ran above the peak FLOP/s (up to x{max(above) / ceilings.peak_flops_per_s:.2f}): "
            f"the peak ({ceilings.flops_source}) is too low, e.g. measured on a busy machine; measure it again by "
            f"deleting {cache_path()} or give it by hand (--peak-flops)"
        )
    under = sum(
        1
        for ms, floor, bound in zip(columns["time_ms"], columns["roofline_time_ms"], columns["bound"], strict=True)
        if ms is not None and bound == "memory" and ms < floor
    )
    if under:
        notes.append(
            f"{under} memory-bound rows ran faster than bytes / bandwidth allows: their data came from caches, "
            "faster than the device memory the bandwidth measures"
        )
    return tuple(notes)


def timing_notes(timing: Timing) -> tuple[str, ...]:
    """Signs that the times are unreliable: hooks only add work, so a forward without them
    that is slower than one with them means the machine changed under the run; a wide
    spread means noise."""
    notes = []
    median, hooked = statistics.median(timing.whole_ms), statistics.median(timing.hooked_ms)
    if median > 1.1 * hooked:
        notes.append(
            f"the forward without hooks ({median:.3f} ms) was slower than with them ({hooked:.3f} ms): something "
            "else slowed the machine during the run; profile again"
        )
    p90 = percentile(timing.whole_ms, 0.9)
    if p90 > 1.5 * median:
        notes.append(
            f"the passes vary widely (p90 is {p90 / median:.1f}x the median): a noisy machine; more --repeat, "
            "or a quieter machine"
        )
    return tuple(notes)


def _load_note(device) -> tuple[str, ...]:
    """On the CPU, other processes' work inflates every time: say so when there was some."""
    if device.type != "cpu" or not hasattr(os, "getloadavg"):
        return ()
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    if load <= cpus:
        return ()
    return (
        f"the machine was busy (load average {load:.1f} on {cpus} CPUs): other processes competed for the CPU, "
        "so these times are inflated and noisy",
    )


def roofline_ms(flops: int, nbytes: int, ceilings: Ceilings) -> float:
    """The roofline's floor: max(FLOPs / peak FLOP/s, bytes / bandwidth), in ms."""
    return max(flops / ceilings.peak_flops_per_s, nbytes / ceilings.bandwidth_bytes_per_s) * 1e3


# -- cross-check -----------------------------------------------------------------------------


def check_shapes(report: Report, real: RealRun, leaves, graph: Graph) -> Check:
    """Every leaf call's output shape from the real run equals the predicted one; the same
    leaf calls ran; the model's outputs have the predicted shapes."""
    predicted = {
        (layer, call): shape
        for layer, call, shape in zip(
            report.columns["layer"], report.columns["call"], report.columns["output_shape"], strict=True
        )
        if layer in leaves and call >= 0
    }
    lines = []
    for key in sorted(predicted.keys() | real.leaf_shapes.keys(), key=_call_order(predicted, real.leaf_shapes)):
        name = _call_name(*key)
        if key not in real.leaf_shapes:
            lines.append(f"{name}: predicted ({predicted[key]}) but did not run")
        elif key not in predicted:
            lines.append(f"{name}: ran ({real.leaf_shapes[key]}) but the analysis did not see it")
        elif predicted[key] != real.leaf_shapes[key]:
            lines.append(f"{name}: predicted {predicted[key]}, measured {real.leaf_shapes[key]}")
    predicted_outputs = ["x".join(map(str, t.shape)) for t in graph.outputs]
    if predicted_outputs != real.output_shapes:
        lines.append(
            f"model output: predicted {', '.join(predicted_outputs)}, measured {', '.join(real.output_shapes)}"
        )
    if lines:
        return Check("output shapes", "mismatch", f"{len(lines)} of {len(predicted)} leaf calls differ", tuple(lines))
    return Check("output shapes", "ok", f"{len(predicted)} leaf calls and the model's output match the analysis")


def _call_order(*maps):
    order = {key: i for mapping in maps for i, key in enumerate(mapping)}
    return lambda key: order.get(key, 0)


def _call_name(layer: str, call: int) -> str:
    name = layer or "(model)"
    return f"{name} (call {call + 1})" if call > 0 else name


def check_flops(report: Report, real: RealRun, leaves) -> Check:
    """FLOPs that torch's FlopCounterMode counts on the real run (matrix products and
    convolutions, 2 per MAC) equal the analytic `flops`, in total and per leaf module."""
    predicted: dict[str, int] = {}
    for layer, flops in zip(report.columns["layer"], report.columns["flops"], strict=True):
        if layer in leaves:
            predicted[layer] = predicted.get(layer, 0) + flops
    lines = []
    attributed = 0
    for layer, flops in predicted.items():
        name = real.root_name if not layer else f"{real.root_name}.{layer}"
        counted = real.counted_by_module.get(name, 0)
        attributed += counted
        if counted != flops:
            lines.append(f"{layer or '(model)'}: analytic {flops:,}, FlopCounterMode {counted:,}")
    total = report.totals.flops
    if real.counted_total != total:
        analytic_rest = total - sum(predicted.values())
        counted_rest = real.counted_total - attributed
        if analytic_rest != counted_rest:
            lines.append(
                f"outside leaf modules (functional ops): analytic {analytic_rest:,}, FlopCounterMode {counted_rest:,}"
            )
        lines.append(f"total: analytic {total:,}, FlopCounterMode {real.counted_total:,}")
        summary = f"analytic {total:,} FLOPs, FlopCounterMode counted {real.counted_total:,}"
        return Check("FLOPs", "mismatch", summary, tuple(lines))
    if lines:
        return Check("FLOPs", "mismatch", "totals agree, but not per layer", tuple(lines))
    return Check("FLOPs", "ok", f"{total:,} FLOPs, as FlopCounterMode counts on the real run")


def check_memory(predicted: int, measured: int | None, device) -> Check:
    if measured is None:
        return Check("peak memory", "skipped", f"predicted {predicted:,} B; {_memory_note(device)}")
    low, high = MEMORY_RATIO_BOUNDS
    ratio = measured / predicted if predicted else math.inf
    summary = f"predicted {predicted:,} B, measured {measured:,} B (x{ratio:.3f})"
    if low <= ratio <= high:
        return Check("peak memory", "ok", summary)
    return Check(
        "peak memory",
        "mismatch",
        summary,
        (f"measured / predicted = {ratio:.3f}, outside [{low}, {high}]",),
    )


# -- device ceilings -------------------------------------------------------------------------


def cache_path() -> Path:
    """ceilings.json in $ARCHPROF_CACHE_DIR, else $XDG_CACHE_HOME/archprof, else ~/.cache/archprof."""
    directory = os.environ.get("ARCHPROF_CACHE_DIR")
    if directory:
        return Path(directory) / "ceilings.json"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "archprof" / "ceilings.json"


def read_cache(path: Path | None = None) -> dict[str, Any]:
    """The cache's devices ({} when missing or unreadable: it is measured again)."""
    path = path or cache_path()
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(document, dict) or document.get("version") != CACHE_VERSION:
        return {}
    devices = document.get("devices")
    return devices if isinstance(devices, dict) else {}


def write_cache(devices: dict[str, Any], path: Path | None = None) -> None:
    from archprof.output import write_atomically

    path = path or cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps({"version": CACHE_VERSION, "devices": devices}, indent=2) + "\n")


def device_ceilings(
    device: torch.device,
    dtype: str,
    peak_flops: float | None = None,
    bandwidth: float | None = None,
    progress: ProgressFn | None = None,
) -> Ceilings:
    """Peak FLOP/s (for `dtype`) and bandwidth of `device`: given by hand, else from the
    cache, else measured now (and cached). A figure given by hand is never cached."""
    import torch

    key = f"{device.type}: {device_name(device)}"
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype) or not torch_dtype.is_floating_point:
        dtype, torch_dtype = "float32", torch.float32  # a model without floating inputs or weights
    precision = precision_label(device, dtype)
    devices = read_cache()
    entry = devices.get(key) if isinstance(devices.get(key), dict) else {}
    flops_by_dtype = entry.get("peak_flops_per_s") if isinstance(entry.get("peak_flops_per_s"), dict) else {}
    tell = progress or (lambda phase, done, total: None)

    flops_source = bandwidth_source = "given"
    changed = False
    if peak_flops is None:
        cached = flops_by_dtype.get(precision)
        if _positive(cached):
            peak_flops, flops_source = float(cached), "cached"
        else:
            tell("measuring the device's peak FLOP/s", 0, 1)
            peak_flops, flops_source = measure_peak_flops(device, torch_dtype), "measured"
            tell("measuring the device's peak FLOP/s", 1, 1)
            flops_by_dtype = {**flops_by_dtype, precision: peak_flops}
            changed = True
    if bandwidth is None:
        cached = entry.get("bandwidth_bytes_per_s")
        if _positive(cached):
            bandwidth, bandwidth_source = float(cached), "cached"
        else:
            tell("measuring the device's memory bandwidth", 0, 1)
            bandwidth, bandwidth_source = measure_bandwidth(device), "measured"
            tell("measuring the device's memory bandwidth", 1, 1)
            entry = {**entry, "bandwidth_bytes_per_s": bandwidth}
            changed = True
    if changed:
        devices[key] = {**entry, "peak_flops_per_s": flops_by_dtype, "torch": torch.__version__}
        with contextlib.suppress(OSError, ArchprofError):  # unwritable: measured again next time
            write_cache(devices)
    return Ceilings(key, precision, float(peak_flops), float(bandwidth), flops_source, bandwidth_source)


def precision_label(device: torch.device, dtype: str) -> str:
    """The arithmetic a model in `dtype` runs its convolutions in: on a GPU, float32
    convolutions use TF32 tensor cores when torch.backends.cudnn.allow_tf32 (PyTorch's
    default), "float32+tf32", many times float32's peak."""
    import torch

    if device.type == "cuda" and dtype == "float32" and torch.backends.cudnn.allow_tf32:
        return "float32+tf32"
    return dtype


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def measure_peak_flops(device: torch.device, dtype: torch.dtype, max_size: int | None = None) -> float:
    """FLOP/s of a large square matrix product (2 n^3 FLOPs) in `dtype`, the best of a few
    runs after warm-up, on random data (never zeros: they can run faster). n doubles from
    256 until one product takes 20 ms or n reaches `max_size` (8192 on a GPU, 2048 on a CPU).
    On a GPU, a float32 product runs in TF32 exactly when convolutions do
    (torch.backends.cudnn.allow_tf32), the precision a CNN's FLOPs run in: see `precision_label`."""
    import torch

    if device.type == "cuda":
        matmul = torch.backends.cuda.matmul
        saved = matmul.allow_tf32
        matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
        try:
            return _matmul_rate(device, dtype, max_size or 8192)
        finally:
            matmul.allow_tf32 = saved
    return _matmul_rate(device, dtype, max_size or 2048)


def _matmul_rate(device: torch.device, dtype: torch.dtype, max_size: int) -> float:
    import torch

    clock = _Clock(device)
    size = min(256, max_size)
    while True:
        a = torch.randn(size, size, device=device).to(dtype)
        b = torch.randn(size, size, device=device).to(dtype)
        seconds = _best_seconds(clock, lambda a=a, b=b: torch.mm(a, b), runs=3)
        if seconds >= 0.02 or size * 2 > max_size:
            break
        size *= 2
    seconds = _best_seconds(clock, lambda: torch.mm(a, b), runs=5)
    return 2 * size**3 / seconds


def measure_bandwidth(device: torch.device, nbytes: int | None = None) -> float:
    """Bytes per second of a large device-to-device copy, counting bytes read plus bytes
    written, the best of a few runs after warm-up. 1 GiB on a GPU (less if it has less
    free), 128 MiB on a CPU: larger than its caches."""
    import torch

    if nbytes is None:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            nbytes = min(2**30, free // 4)
        else:
            nbytes = 2**27
    numel = max(nbytes // 4, 1)
    # Filled (never zeros, and every page touched before timing); a copy's speed does not
    # depend on the values.
    source = torch.empty(numel, dtype=torch.float32, device=device).fill_(1.5)
    target = torch.empty_like(source)
    clock = _Clock(device)
    seconds = _best_seconds(clock, lambda: target.copy_(source), runs=5)
    return 2 * numel * 4 / seconds


def _best_seconds(clock: _Clock, work, runs: int) -> float:
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


# -- roofline plot ---------------------------------------------------------------------------


def check_plot_target(path: str | os.PathLike) -> Path:
    """Fail early, before any profiling: matplotlib missing, an unknown image suffix, no such folder."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError:
        raise ArchprofError(
            "--plot needs matplotlib, which is not installed: pip install 'archprof[plot]' (or matplotlib)"
        ) from None
    target = Path(path)
    formats = FigureCanvasAgg.get_supported_filetypes()
    if target.suffix.lower().lstrip(".") not in formats:
        known = ", ".join(f".{name}" for name in sorted(formats))
        raise ArchprofError(f"cannot tell the image format of '{target}' from its suffix ({known})")
    if not target.parent.is_dir():
        raise ArchprofError(f"cannot write {target}: directory {target.parent} does not exist")
    return target


def plot_roofline(report: Report, path: str | os.PathLike, label_top: int = 6) -> None:
    """Draw the timed rows on the roofline (log-log: FLOPs per byte against achieved
    FLOP/s) and save the figure to `path` (format from its suffix), atomically. Uses
    matplotlib's object API, so pyplot's global state is never touched."""
    import tempfile

    target = check_plot_target(path)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    measured: Measurement | None = report.measured
    if measured is None:
        raise ArchprofError("plot_roofline needs a profiled report (archprof.profile)")
    suffix = target.suffix.lower().lstrip(".")

    ceilings = measured.ceilings
    points = [
        (
            row["arithmetic_intensity"],
            row["achieved_flops_per_s"],
            row["time_ms"],
            _call_name(row["layer"], row["call"]),
        )
        for row in report.rows()
        if row["arithmetic_intensity"] and row["achieved_flops_per_s"]
    ]
    figure = Figure(figsize=(8, 5.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    intensities = [p[0] for p in points] or [ceilings.ridge]
    low = min(min(intensities), ceilings.ridge) / 4
    high = max(max(intensities), ceilings.ridge) * 4
    xs = [low * (high / low) ** (i / 200) for i in range(201)]
    axes.plot(
        xs, [min(ceilings.peak_flops_per_s, x * ceilings.bandwidth_bytes_per_s) for x in xs], color="black", lw=1.5
    )
    axes.axvline(ceilings.ridge, color="grey", ls=":", lw=1)
    if points:
        total = sum(p[2] for p in points)
        sizes = [20 + 400 * p[2] / total for p in points]
        axes.scatter([p[0] for p in points], [p[1] for p in points], s=sizes, alpha=0.6, edgecolors="black")
        for x, y, _, name in sorted(points, key=lambda p: -p[2])[:label_top]:
            axes.annotate(name, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("arithmetic intensity (FLOPs per byte moved)")
    axes.set_ylabel("achieved FLOP/s (flops + elementwise_flops)")
    axes.set_title(
        f"{report.model} on {measured.device_name} ({report.dtype}): peak {ceilings.peak_flops_per_s:.3g} FLOP/s, "
        f"{ceilings.bandwidth_bytes_per_s:.3g} B/s",
        fontsize=9,
    )
    axes.grid(True, which="both", alpha=0.3)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        figure.savefig(temporary, format=suffix, dpi=150)
        os.replace(temporary, target)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise ArchprofError(f"cannot write {target}: {exc.strerror}") from None
