"""Run the model for real, timed, and set what was measured beside what was predicted.

`profile_analysis` takes an analysis (`archprof.analysis.analysis`), builds the model for
real on a device with random weights, feeds it random inputs and times it
(`archprof.measure.clock`). What it adds to the analytic Report:

- the measured columns of `archprof.report.columns.MEASURED_COLUMNS`, one value per analytic row
  (joined by `layer` and `call`): time, share of the forward, achieved FLOP/s, bytes moved,
  arithmetic intensity, roofline bound and roofline time;
- `Report.measured`, a `Measurement`: whole-model latency (median, p90), throughput,
  achieved FLOP/s, measured peak memory, the device's ceilings and the cross-check.

Every module call that has a row is timed, less the timed calls inside it
(`archprof.measure.clock`). The model's own functional ops (a `flatten` in its `forward`)
and the hooks' own cost fall between hooks: reported as the unattributed remainder (hooked
forward minus the sum of its row times), never spread over the layers. Everything here is
inference: eval mode, `torch.no_grad()`.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from archprof.analysis import Analysis
from archprof.measure import DEFAULT_REPEAT, DEFAULT_WARMUP, MAX_PASSES
from archprof.measure.ceilings import Ceilings, device_ceilings
from archprof.measure.clock import (
    ProgressFn,
    Timing,
    busy_machine_note,
    no_progress,
    percentile,
    spread_note,
    time_model,
)
from archprof.measure.crosscheck import (
    Check,
    check_flops,
    check_memory,
    check_run,
    check_shapes,
    compared_modules,
    memory_note,
)
from archprof.measure.device import (
    device_name,
    drawn_as_traced,
    leaf_paths,
    materialise,
    random_inputs,
    real_run_errors,
    refuse_a_run_that_cannot_fit,
    resolve_device,
    timed_paths,
)
from archprof.measure.peak_memory import allocated_before_a_run, held_bytes, measured_peak
from archprof.meta import has_uninitialised
from archprof.passes.layers import group_layers
from archprof.passes.traffic import bytes_moved
from archprof.random_state import random_state_kept
from archprof.report import Report
from archprof.report.columns import MEASURED_COLUMNS, measured_rates
from archprof.text import counted
from archprof.units import (
    bandwidth_text,
    checked_count,
    flops_rate_text,
    parse_bandwidth,
    parse_flops_rate,
)


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
    # unattributed_ms / (layer_sum_ms + unattributed_ms), the total every row's time_share is of
    unattributed_share: float
    bytes_moved: int  # sum of the rows' bytes_moved
    roofline_ms: float  # sum of the rows' roofline_time_ms: the floor the ceilings allow
    predicted_peak_memory_bytes: int
    measured_peak_memory_bytes: int | None  # CUDA: max_memory_allocated; CPU: the allocator's events; else None
    measured_peak_memory_with_workspace_bytes: int | None  # CPU: operators' workspace counted too; else None
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

    def share(self, ms: float | None) -> float | None:
        """`ms` as a share of the rows' times and the unattributed time summed (a row's time_share)."""
        return shares_of([ms], self.layer_sum_ms + self.unattributed_ms)[0]

    def for_rows(self, columns: dict[str, list], earlier: dict[str, list]) -> Measurement:
        """This measurement beside the rows `columns` made from the rows `earlier` (`Report.rollup`):
        the notes that count rows (above the roof, `roofline_notes`) count those of `columns`."""
        counted = roofline_notes(earlier, self.ceilings)
        notes = tuple(note for note in self.notes if note not in counted) + roofline_notes(columns, self.ceilings)
        return self if notes == self.notes else replace(self, notes=notes)

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
            "measured_peak_memory_with_workspace_bytes": self.measured_peak_memory_with_workspace_bytes,
            "peak_flops_per_s": f"{self.ceilings.peak_flops_per_s} ({self.ceilings.origin('peak_flops')})",
            "bandwidth_bytes_per_s": f"{self.ceilings.bandwidth_bytes_per_s} ({self.ceilings.origin('bandwidth')})",
        }
        for check in self.checks:
            items[f"check: {check.name}"] = f"{check.status}: {check.summary}"
        return items


def profile_analysis(
    analysed: Analysis,
    dtype: torch.dtype | None = None,
    device: str | None = None,
    warmup: int = DEFAULT_WARMUP,
    repeat: int = DEFAULT_REPEAT,
    peak_flops: float | str | None = None,
    bandwidth: float | str | None = None,
    progress: ProgressFn = no_progress,
) -> Report:
    """Run the analysed model for real on `device` and join the measurements to the rows.

    See `archprof.profile` for the arguments; returns the analytic Report with the measured
    columns and `measured` filled in. The caller's random generators are left as they were."""
    warmup, repeat = _pass_count("warmup", warmup, 0), _pass_count("repeat", repeat, 1)
    target = resolve_device(device)
    refuse_a_run_that_cannot_fit(analysed, target)
    with random_state_kept(target):  # random weights and inputs, the ceilings' random matrices
        return _profiled(analysed, dtype, target, warmup, repeat, peak_flops, bandwidth, progress)


def _pass_count(name: str, passes: Any, least: int) -> int:
    """`passes` checked, as a Python int: a NumPy integer would reach the JSON, which has none."""
    return checked_count(name, passes, least, MAX_PASSES)


def _profiled(
    analysed: Analysis,
    dtype: torch.dtype | None,
    target: torch.device,
    warmup: int,
    repeat: int,
    peak_flops: float | str | None,
    bandwidth: float | str | None,
    progress: ProgressFn,
) -> Report:
    given_flops = parse_flops_rate(peak_flops) if peak_flops is not None else None
    given_bandwidth = parse_bandwidth(bandwidth) if bandwidth is not None else None
    loaded, graph, report, batch = analysed.loaded, analysed.graph, analysed.report, analysed.batch
    # Bytes moved need what reaches each row from outside it: the graph, grouped as the rows.
    groups = group_layers(graph)
    if len(groups) != len(report):
        raise AssertionError("the trace's layer groups do not line up with the report's rows")
    moved = bytes_moved(graph, groups)

    ceilings = device_ceilings(target, report.dtype, given_flops, given_bandwidth, progress=progress)
    state_bytes = allocated_before_a_run(target)
    with random_state_kept(target, seed=drawn_as_traced(analysed)):
        module = materialise(loaded, target, dtype)
        real_inputs = random_inputs(analysed, target)
    leaves = compared_modules(report, leaf_paths(module), module, graph.aliases)  # what the cross-check compares
    timed = timed_paths(module, report, graph.aliases)
    timed_layers = {*timed, *(alias for alias, first in graph.aliases.items() if first in timed)}  # under any name
    with real_run_errors(loaded.name, target, batch), torch.no_grad():
        # The peak of the first forward, as the analysis traces it: a module that keeps what
        # it makes between calls (LeViT's attention biases) holds it, uncounted, after it. A
        # lazy layer's weights are made by a first call: then the call after.
        if has_uninitialised(module):
            real_inputs(module)
        held = held_bytes(module, graph, (real_inputs.args, real_inputs.kwargs))
        peak = measured_peak(lambda: real_inputs(module), target, state_bytes, held)
        names = graph.calls_as_named()  # the hooks' calls, by first paths, as the rows name them
        timing = time_model(module, real_inputs, target, timed, warmup, repeat, progress).renamed(names)
        real = check_run(module, real_inputs, leaves, names)

    columns, figures = measured_columns(report, moved, timing, ceilings, timed_layers)
    # A ceiling that a layer beats is not a ceiling: a cached one is measured again.
    stale = {figure for figure in beaten_ceilings(columns, ceilings) if ceilings.source(figure) == "cached"}
    remeasured = ()
    if stale:
        cached = ceilings
        ceilings = device_ceilings(target, report.dtype, given_flops, given_bandwidth, progress=progress, beaten=stale)
        columns, figures = measured_columns(report, moved, timing, ceilings, timed_layers)
        remeasured = remeasured_notes(cached, ceilings, stale)
    checks = (
        check_shapes(report, real, leaves, graph),
        check_flops(report, real, leaves, graph),
        check_memory(report.totals.peak_memory_bytes, peak, target),
    )
    median = statistics.median(timing.whole_ms)
    work = report.totals.flops + report.totals.elementwise_flops
    busy = busy_machine_note(target)
    notes = remeasured + timing_notes(timing) + sum_note(figures) + ((busy,) if busy else ())
    if not leaves:
        notes += (f"no per-layer times: {type(module).__name__} runs no Python hooks (TorchScript)",)
    notes += traced_elsewhere_notes(report.traced_on, target)
    notes += roofline_notes(columns, ceilings)  # last: `Measurement.for_rows` counts them again
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
        measured_peak_memory_bytes=peak.bytes if peak is not None else None,
        measured_peak_memory_with_workspace_bytes=peak.with_workspace if peak is not None else None,
        memory_note=memory_note(target),
        notes=notes,
        **figures,
    )
    return replace(report, columns={**report.columns, **columns}, measured=measurement)


def measured_columns(
    report: Report, moved, timing: Timing, ceilings: Ceilings, timed_layers: set[str]
) -> tuple[dict, dict]:
    """The measured columns (lists, None where a row has no value) and the whole-model sums,
    of the rows of `timed_layers` (the paths of the modules timed, under any of their names).

    A call's time goes on its first row: a container whose own operations fall between two
    child calls has a row for each run of them, and one time for all of them. Its rates go
    there too, of all those rows' work and bytes moved, as the table merges them (one rate
    per call: the notes, a beaten ceiling and the plot see the table's); its other rows have
    none. A row's share is of its time and every other's, plus the unattributed time: the
    shares and the unattributed share add up to 1, and a longer time has a larger share."""
    keys = list(zip(report.columns["layer"], report.columns["call"], strict=True))
    works = [f + e for f, e in zip(report.columns["flops"], report.columns["elementwise_flops"], strict=True)]
    call_rows = _timed_call_rows(keys, timed_layers)
    unattributed = statistics.median(
        total - sum(ms for key, ms in per_layer.items() if key in call_rows) for total, per_layer in timing.passes
    )
    columns: dict[str, list] = {c.name: [] for c in MEASURED_COLUMNS}
    for i, (key, work, nbytes) in enumerate(zip(keys, works, moved, strict=True)):
        indices = call_rows.get(key, [i])  # the rows whose work and bytes its rates are of
        times = timing.layer_ms.get(key) if key in call_rows and indices[0] == i else None
        # To 0.1 ns, the clock's resolution and the half a median of two adds: the digits past it
        # are binary noise (0.17520550000000001 in a CSV).
        ms = round(statistics.median(times), 7) if times else None
        columns["time_ms"].append(ms)
        columns["bytes_moved"].append(nbytes)
        if indices[0] == i:
            rates = measured_rates(sum(works[j] for j in indices), ms, sum(moved[j] for j in indices), ceilings.ridge)
        else:  # a later row of a timed call: its rates are the call's, on its first row
            rates = measured_rates(0, None, 0, ceilings.ridge)  # no rate, no intensity, no bound
        for name, value in rates.items():
            columns[name].append(value)
        columns["roofline_time_ms"].append(roofline_ms(work, nbytes, ceilings))
    layer_sum = round(sum(ms for ms in columns["time_ms"] if ms is not None), 7)
    shares = shares_of([*columns["time_ms"], unattributed], layer_sum + unattributed)
    columns["time_share"], unattributed_share = shares[:-1], shares[-1]
    figures = {
        "hooked_median_ms": statistics.median(timing.hooked_ms),
        "layer_sum_ms": layer_sum,
        "unattributed_ms": unattributed,
        "unattributed_share": unattributed_share,
        "bytes_moved": sum(moved),
        "roofline_ms": sum(columns["roofline_time_ms"]),
    }
    return columns, figures


def _timed_call_rows(keys: list[tuple[str, int]], timed_layers: set[str]) -> dict[tuple[str, int], list[int]]:
    """(layer, call) of each timed call -> its rows, in the order they ran (its time goes on the first)."""
    call_rows: dict[tuple[str, int], list[int]] = {}
    for i, (layer, call) in enumerate(keys):
        if layer in timed_layers and call >= 0:
            call_rows.setdefault((layer, call), []).append(i)
    return call_rows


def shares_of(times: list[float | None], total: float) -> list[float | None]:
    """Each of `times` (None: no time) as a share of `total` (0 where `total` is not positive)."""
    return [None if ms is None else ms / total if total > 0 else 0.0 for ms in times]


def sum_note(figures: dict[str, float]) -> tuple[str, ...]:
    """The shares are of the rows' median times and the median unattributed time summed: say
    when that sum is more than 10% off the median hooked forward (the passes varied)."""
    total, hooked = figures["layer_sum_ms"] + figures["unattributed_ms"], figures["hooked_median_ms"]
    if abs(total - hooked) <= 0.1 * hooked:
        return ()
    return (
        f"the rows' median times and the median time between hooks add up to {total:.3f} ms, "
        f"{abs(100 * (total / hooked - 1)):.0f}% {'more' if total > hooked else 'less'} than the median forward "
        f"with hooks ({hooked:.3f} ms): the passes "
        "varied; each share is of that sum",
    )


def beaten_ceilings(columns: dict[str, list], ceilings: Ceilings) -> set[str]:
    """The ceilings some timed row ran above: "peak_flops" (achieved FLOP/s above the peak),
    "bandwidth" (achieved FLOP/s above intensity x bandwidth: its bytes moved faster)."""
    beaten = set()
    for rate, intensity in zip(columns["achieved_flops_per_s"], columns["arithmetic_intensity"], strict=True):
        if rate is None or intensity is None:
            continue
        if rate > ceilings.peak_flops_per_s:
            beaten.add("peak_flops")
        if rate > intensity * ceilings.bandwidth_bytes_per_s:
            beaten.add("bandwidth")
    return beaten


def remeasured_notes(cached: Ceilings, fresh: Ceilings, figures: set[str]) -> tuple[str, ...]:
    """What measuring the beaten cached ceilings again changed (a new figure no higher is
    not taken: `device_ceilings`' `beaten`)."""
    notes = []
    if "peak_flops" in figures:
        notes.append(
            f"rows ran above the cached peak {flops_rate_text(cached.peak_flops_per_s)} "
            f"({cached.origin('peak_flops')}): measured again, "
            + _outcome(cached.peak_flops_per_s, fresh.peak_flops_per_s, flops_rate_text)
        )
    if "bandwidth" in figures:
        notes.append(
            f"rows moved their bytes faster than the cached bandwidth {bandwidth_text(cached.bandwidth_bytes_per_s)} "
            f"({cached.origin('bandwidth')}): measured again, "
            + _outcome(cached.bandwidth_bytes_per_s, fresh.bandwidth_bytes_per_s, bandwidth_text)
        )
    return tuple(notes)


def _outcome(before: float, after: float, text) -> str:
    if after > before:
        return f"now {text(after)}"
    return "no higher: kept (the rows above it read from caches, or the machine is busy now)"


def roofline_notes(columns: dict[str, list], ceilings: Ceilings) -> tuple[str, ...]:
    """Rows still above the roofline once a beaten cached ceiling was measured again: above
    the peak FLOP/s, the peak was measured low (a busy machine) or given low; faster than
    their memory floor, they read from caches."""
    notes = []
    rates = zip(columns["achieved_flops_per_s"], columns["arithmetic_intensity"], strict=True)
    above = [rate for rate, intensity in rates if ceilings.above_roof(rate, intensity)]
    over_peak = [rate for rate in above if rate > ceilings.peak_flops_per_s]
    if over_peak:
        why = (
            "the peak given by hand is too low"
            if ceilings.flops_source == "given"
            else "the peak was measured low, e.g. on a busy machine: profile again on a quiet one"
        )
        notes.append(
            f"{counted(len(over_peak), 'row')} ran above the peak FLOP/s (up to "
            f"x{max(over_peak) / ceilings.peak_flops_per_s:.2f}, marked ▲): {why}"
        )
    if len(above) > len(over_peak):
        notes.append(
            f"{counted(len(above) - len(over_peak), 'memory-bound row')} ran faster than bytes / bandwidth allows "
            "(marked ▲): their data came from caches, faster than the device memory the bandwidth measures"
        )
    return tuple(notes)


def traced_elsewhere_notes(traced_on: str, target: torch.device) -> tuple[str, ...]:
    """Where the analysis traced a real forward on another device than the run's: the run
    draws from the trace's seed (`drawn_as_traced`), but that device's generator gives other
    numbers, so the values, and any shape that follows them, may differ from the analysed."""
    if traced_on in ("meta", str(target)):
        return ()
    return (
        f"analysed from a real forward on {traced_on}, run on {target}, whose random numbers differ from the same"
        " seed: where the model's shapes follow its values (a detector's kept boxes), the cross-check sets"
        " another forward's against the analysis's; profile on the device it was traced on to compare the same",
    )


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
    spread = spread_note(timing.whole_ms)
    if spread is not None:
        notes.append(f"{spread}; more --repeat, or a quieter machine")
    return tuple(notes)


def roofline_ms(flops: int, nbytes: int, ceilings: Ceilings) -> float:
    """The roofline's floor: max(FLOPs / peak FLOP/s, bytes / bandwidth), in ms."""
    return max(flops / ceilings.peak_flops_per_s, nbytes / ceilings.bandwidth_bytes_per_s) * 1e3
