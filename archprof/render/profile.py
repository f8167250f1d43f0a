"""The profile: measured time per layer beside the roofline, the whole model, the
device's ceilings and the cross-check."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from archprof.render.base import (
    Layout,
    Prose,
    columns_of,
    dash,
    fits,
    fitted_table,
    label_value_table,
    stacked_rows,
    subtotal_cell,
    tree_label,
)
from archprof.render.summary import summary_table
from archprof.render.tree import TreeRow, top_level_rules, tree_rows
from archprof.text import visible_text
from archprof.units import bandwidth_text, flops_rate_text, human_bytes, human_count, ridge_text, share_text


def report_table(report, layout: Layout = Layout()) -> Group:
    """The table a Report is drawn as, wherever it is drawn (`Report.table()`, its Markdown
    and notebook HTML, `archprof profile`'s table and Markdown): a profiled report's measured
    tables (`profile_table`), else the summary (`summary_table`)."""
    if report.measured is None:
        return summary_table(report, layout)
    return profile_table(report, layout)


# Columns of the profile table, most important first (the last go on a narrow terminal).
_PROFILE_COLUMNS = ("Layer", "Time", "Share", "Roofline", "Achieved", "Bound", "Intensity", "Bytes moved", "Type")


def profile_table(report, layout: Layout = Layout()) -> Group:
    """A profiled report (`archprof.profile`): per layer the measured time beside the
    roofline's, share, achieved FLOP/s, intensity and bound, as the summary's tree
    (`render.tree`: each module first, its subtotals in dim parentheses); the unattributed
    remainder; the whole model; the device's ceilings; the cross-check, every mismatch in red."""
    measured = report.measured
    ceilings = measured.ceilings
    nodes = tree_rows(report)
    # The measured and the roofline times in one unit, which the headings name: a layer's
    # two figures, and the rows, compare at a glance ('0.404' above '0.008', both ms).
    times = [*_figures(nodes, "time_ms"), *_figures(nodes, "roofline_time_ms"), measured.unattributed_ms]
    unit, time = _one_unit(times, _TIME, named=False)
    headings = {"Time": f"Time ({unit})", "Roofline": f"Roofline ({unit})"}
    columns = tuple(headings.get(heading, heading) for heading in _PROFILE_COLUMNS)
    cells: dict[str, list] = {heading: [] for heading in ("Layer", "Type", *columns[1:8])}
    _, moved = _one_unit(_figures(nodes, "bytes_moved"), _BYTES)
    _, rate = _one_unit([_timed(node).get("achieved_flops_per_s") or None for node in nodes], _RATE)
    for node in nodes:
        timed = _timed(node)  # the rates are of the rows this line times, a container's own
        cells["Layer"].append(tree_label(node))
        cells["Type"].append(visible_text(node.row["module_type"]))
        cells[headings["Time"]].append(subtotal_cell(node, "time_ms", time))
        cells["Share"].append(subtotal_cell(node, "time_share", _share))
        cells[headings["Roofline"]].append(subtotal_cell(node, "roofline_time_ms", _unless_zero(time)))
        cells["Bytes moved"].append(subtotal_cell(node, "bytes_moved", _unless_zero(moved)))
        achieved, intensity = timed.get("achieved_flops_per_s"), timed.get("arithmetic_intensity")
        shown = rate(achieved or None)
        cells["Achieved"].append(
            Text(f"{shown} ▲", style="yellow") if ceilings.above_roof(achieved, intensity) else shown
        )
        cells["Intensity"].append(f"{intensity:.2f}" if intensity is not None else dash())
        cells["Bound"].append(timed.get("bound") or dash())
    passes = f"median of {measured.repeat} passes after {measured.warmup} warm-up"
    remainder = {"Layer": Text("(between hooks)", style="italic"), "Share": _share(measured.unattributed_share)}
    remainder[headings["Time"]] = time(measured.unattributed_ms)
    for heading, column in cells.items():  # the unattributed remainder, under a rule
        column.append(remainder.get(heading, ""))
    table = fitted_table(
        f"{visible_text(report.model)}  ·  input {report.input_text}  ·  {report.dtype}  ·  "
        f"{measured.device} ({measured.device_name})  ·  {passes}",
        cells,
        columns,
        layout,
        keep=2,  # on a narrow terminal the share goes before a name is cut: a module's is "(99.0%)"
        caption="Time: each module call between forward hooks, less the timed calls inside it; (between hooks): "
        "the model's own ops (its (model) rows, untimed alone), such as a flatten in its forward, and the hooks' "
        "own cost. "
        "Roofline: max(FLOPs / peak, bytes moved / bandwidth). Achieved and Intensity count flops + "
        "elementwise_flops; ▲: above the roofline (see the notes).",
        caption_justify="left",
        rules=[*top_level_rules(nodes), True],
    )
    return Group(table, measured_summary(measured, layout.width))


def _timed(node: TreeRow) -> dict:
    """The row whose rates a line shows: a layer's; a container's own rows merged ({}: none)."""
    return node.own if node.is_container else node.row


def _figures(nodes: list[TreeRow], name: str) -> list:
    """Every value of column `name` the tree's lines show: each line's, and a container's own."""
    return [*(node.row[name] for node in nodes), *(node.own.get(name) for node in nodes if node.is_container)]


def _unless_zero(cell: Callable[[Any], Text | str]) -> Callable[[Any], Text | str]:
    """`cell`, with a dash for 0: a row that moves no bytes (a view) has no roofline time."""
    return lambda value: cell(value) if value else dash()


def measured_summary(measured, width: int | None = None) -> Group:
    """What a profile measured of the whole model: latency, throughput, memory, the
    ceilings, the notes and the cross-check (under the profile table; on the HTML page),
    fitted to `width` characters (None: any)."""
    notes = [Prose(note, style="yellow") for note in measured.notes]
    checks = cross_check_table(measured, width)
    parts = (whole_model_table(measured, width), ceilings_text(measured.ceilings), *notes, checks)
    return Group(*parts)


def whole_model_table(measured, width: int | None = None) -> Table | Group:
    """Latency, throughput, achieved FLOP/s, the hooks' cost, the roofline floor, memory;
    where the table does not fit `width`, each figure under its label."""
    return label_value_table("Whole model", _whole_model_rows(measured), width)


def _whole_model_rows(measured) -> list[tuple[str, Text | str, Prose]]:
    peak = measured.ceilings.peak_flops_per_s
    hooked_extra = measured.hooked_median_ms / measured.median_ms - 1 if measured.median_ms else 0.0
    rows = [
        ("Latency, median (no hooks)", _ms(measured.median_ms), f"p90 {_ms(measured.p90_ms)}"),
        ("Throughput", f"{measured.throughput_per_s:,.1f} samples/s", f"batch {measured.batch}"),
        (
            "Achieved FLOP/s",
            flops_rate_text(measured.achieved_flops_per_s),
            f"(flops + elementwise_flops) / median: {human_count(measured.work_flops)} FLOPs, "
            f"{share_text(measured.achieved_flops_per_s / peak)} of peak",
        ),
        ("Forward with per-layer hooks, median", _ms(measured.hooked_median_ms), f"{100 * hooked_extra:+.1f}% (hooks)"),
        ("Sum of per-layer medians", _ms(measured.layer_sum_ms), "module calls, less the calls inside them"),
        (
            "Unattributed (between hooks)",
            _ms(measured.unattributed_ms),
            f"{_share(measured.unattributed_share)} of the per-layer sum + it",
        ),
        ("Roofline floor (sum over rows)", _ms(measured.roofline_ms), f"{human_bytes(measured.bytes_moved)} moved"),
        ("Peak memory, predicted", human_bytes(measured.predicted_peak_memory_bytes), ""),
    ]
    if measured.measured_peak_memory_bytes is None:
        rows.append(("Peak memory, measured", Text("unavailable", style="yellow"), measured.memory_note))
    else:
        rows.append(("Peak memory, measured", human_bytes(measured.measured_peak_memory_bytes), measured.memory_note))
    if measured.measured_peak_memory_with_workspace_bytes is not None:
        rows.append(
            (
                "Peak memory, with workspace",
                human_bytes(measured.measured_peak_memory_with_workspace_bytes),
                "every allocation: an operator PyTorch runs as several is several to the analysis",
            )
        )
    return [(what, value, Prose(detail, style="dim")) for what, value, detail in rows]


def ceilings_text(ceilings) -> Text:
    return Prose(
        f"Ceilings of {ceilings.device} ({ceilings.dtype}): peak {flops_rate_text(ceilings.peak_flops_per_s)} "
        f"({ceilings.origin('peak_flops')}), bandwidth {bandwidth_text(ceilings.bandwidth_bytes_per_s)} "
        f"({ceilings.origin('bandwidth')}); ridge {ridge_text(ceilings.ridge)} FLOPs/byte. {ceilings.remeasure_hint}"
    )


def cross_check_table(measured, width: int | None = None) -> Group:
    """Each check's verdict, then every mismatch on its own red line; where the verdicts
    do not fit `width` (None: any) beside their summaries, each summary under its verdict."""
    failed = [check for check in measured.checks if not check.ok]
    if failed:
        title = Text(f"Cross-check: {len(failed)} MISMATCH{'ES' if len(failed) > 1 else ''}", style="bold red")
    else:
        title = Prose("Cross-check: the real run agrees with the analysis", style="green")
    table = Table(title=title, title_justify="left", show_header=False, box=box.SIMPLE, pad_edge=False)
    table.add_column("status", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("summary")
    styles = {"ok": ("ok", "green"), "mismatch": ("MISMATCH", "bold red"), "skipped": ("skipped", "yellow")}
    rows = []
    for check in measured.checks:
        label, style = styles.get(check.status, (check.status, ""))
        rows.append((Text(label, style=style), check.name, Prose(check.summary)))
        table.add_row(*rows[-1])
    if fits(table, width):
        parts: list = [table]
    else:  # Rich cut the summaries' figures ("833,04…") and wrapped them a word a line
        parts = [stacked_rows(title, columns_of(("status", "check", "summary"), rows), headed=False, labels=2)]
    for line in measured.mismatches:
        parts.append(Prose(f"  MISMATCH {line}", style="bold red"))
    return Group(*parts)


# (size, unit, decimals), largest first: a column takes the first its largest value reaches.
_TIME = ((1.0, "ms", 3), (1e-3, "µs", 2))  # of values in milliseconds
_RATE = (
    (1e15, "PFLOP/s", 2),
    (1e12, "TFLOP/s", 2),
    (1e9, "GFLOP/s", 2),
    (1e6, "MFLOP/s", 2),
    (1e3, "KFLOP/s", 2),
    (1, "FLOP/s", 0),
)
_BYTES = ((1e12, "TB", 2), (1e9, "GB", 2), (1e6, "MB", 2), (1e3, "kB", 2), (1, "B", 0))


def _one_unit(values: list, steps, named: bool = True) -> tuple[str, Callable[[Any], Text | str]]:
    """The one unit that the largest of `values` takes, and a cell writer for a column in it
    (a dash where there is no value; `named`: the unit after each figure, else the heading
    says it), so that the cells compare at a glance: '0.404 ms' above '0.008 ms', never above
    '8.14 µs'."""
    largest = max((abs(v) for v in values if v is not None and v == v), default=0)
    size, unit, decimals = next((step for step in steps if largest >= step[0]), steps[-1])
    least = 10**-decimals
    suffix = f" {unit}" if named else ""

    def cell(value) -> Text | str:
        if value is None or value != value:
            return dash()
        if 0 < value < least * size / 2:  # above zero, yet it would read "0.00 GFLOP/s"
            return f"<{least:.{decimals}f}{suffix}"
        return f"{value / size:,.{decimals}f}{suffix}"

    return unit, cell


def _ms(value) -> Text | str:
    return dash() if value is None or value != value else f"{value:,.3f} ms"


def _share(value) -> Text | str:
    return dash() if value is None or value != value else share_text(value)
