"""Rich tables. Rendering knows nothing of torch: it takes a Report (or plain rows)."""

from __future__ import annotations

import io

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from archprof.report import Report, shapes_text
from archprof.units import human_bytes, human_count

# Per-layer columns of the summary, most important first: on a narrow terminal the last
# ones are left out (their figures stay in the totals and in every file format) rather
# than cutting numbers short.
_SUMMARY_COLUMNS = ("Layer", "Output shape", "Params", "MACs", "Activations", "FLOPs", "Type")


def summary_table(report: Report, width: int = 160) -> Group:
    """Per-layer rows grouped by top-level module, then the totals and what was not counted."""
    cells = {name: [] for name in _SUMMARY_COLUMNS}
    rules = []
    previous_group, previous_depth = None, 0
    for row in report.rows():
        # A rule between top-level modules, where one of them has sub-modules.
        group = row["layer"].split(".")[0]
        rules.append(previous_group is not None and group != previous_group and max(row["depth"], previous_depth) > 1)
        previous_group, previous_depth = group, row["depth"]
        cells["Layer"].append("  " * max(row["depth"] - 1, 0) + _layer_name(row))
        cells["Type"].append(row["module_type"])
        cells["Output shape"].append(row["output_shape"])
        cells["Params"].append(_count(row["param_count"]))
        cells["MACs"].append(_count(row["macs"]))
        cells["FLOPs"].append(_count(row["flops"]))
        cells["Activations"].append(human_bytes(row["activation_bytes"]) if row["activation_bytes"] else "-")

    widths = {name: max(len(name), *(len(str(c)) for c in column)) for name, column in cells.items()}
    shown = list(_SUMMARY_COLUMNS)
    while len(shown) > 4 and sum(widths[n] + 2 for n in shown) > width:
        shown.pop()
    table = Table(
        title=f"{report.model}  ·  input {shapes_text(report.input_shapes)}  ·  {report.dtype}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    order = [n for n in ("Layer", "Type", "Output shape", "Params", "MACs", "FLOPs", "Activations") if n in shown]
    for name in order:
        justify = "left" if name in ("Layer", "Type", "Output shape") else "right"
        table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis")
    for index, rule in enumerate(rules):
        if rule:
            table.add_section()
        table.add_row(*(cells[name][index] for name in order))
    parts = [table, totals_table(report)]
    if report.totals.not_counted:
        parts.append(not_counted_table(report.totals.not_counted))
    return Group(*parts)


def _layer_name(row: dict) -> str:
    name = row["layer"] or "(model)"
    if row["call"] > 0:
        return f"{name} (call {row['call'] + 1})"
    if row["call"] < 0:
        return f"{name} (not called)"
    return name


def totals_table(report: Report) -> Table:
    totals = report.totals
    table = Table(title="Totals", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_column("exact", justify="right", style="dim")
    counts = (
        ("Total parameters", totals.param_count),
        ("Trainable parameters", totals.trainable_param_count),
        ("Non-trainable parameters", totals.non_trainable_param_count),
        ("MACs (multiply-accumulates)", totals.macs),
        ("FLOPs (2 x MACs)", totals.flops),
        ("Elementwise FLOPs", totals.elementwise_flops),
    )
    for label, value in counts:
        table.add_row(label, human_count(value), f"{value:,}")
    sizes = (
        ("Parameter memory", totals.param_bytes),
        ("Buffer memory", totals.buffer_bytes),
        ("Activation memory (sum of layer outputs)", totals.activation_bytes),
    )
    for label, value in sizes:
        table.add_row(label, human_bytes(value), f"{value:,} B")
    table.add_row("Input", shapes_text(totals.input_shapes), totals.dtype)
    return table


def not_counted_table(not_counted: dict[str, int]) -> Table:
    table = Table(title="Operators without a formula (not counted in MACs or FLOPs)", title_justify="left")
    table.add_column("Operator")
    table.add_column("Calls", justify="right")
    for op, count in sorted(not_counted.items(), key=lambda item: -item[1]):
        table.add_row(op, str(count))
    return table


# Columns of the receptive-field table, most important first (the last go on a narrow terminal).
_RF_COLUMNS = ("Layer", "Field", "Stride", "Coverage", "Centred", "Output shape", "Type")


def receptive_field_table(report: Report, width: int = 160) -> Group:
    """Per layer: output shape, receptive field, effective stride, centred, coverage; then the
    first layer whose field covers the whole input, and why any field is undefined.

    Fields are those of output unit 0 (see `archprof.passes.receptive_field`). Unit o of a
    layer with effective stride J stands for input pixels [o J, o J + J - 1], so unit 0's
    centre is (J - 1) / 2: the field [start, end] is *centred* when (start + end) / 2 equals
    it in every dimension (a kernel padded symmetrically, "same"-style, keeps it so; an
    unpadded or asymmetric one shifts it). *Coverage* is the share of the input's pixels the
    field reaches: per dimension the part of [start, end] inside the input (padding excluded)
    over the input's size, multiplied over the dimensions."""
    spatial = report.input_shapes[0][2:] if report.input_shapes else ()
    size_text = "x".join(map(str, spatial))
    cells: dict[str, list] = {name: [] for name in _RF_COLUMNS}
    covered_from = None
    notes: dict[str, str] = {}
    for row in report.rows():
        name = _layer_name(row)
        field, stride, start = row["receptive_field"], row["effective_stride"], row["receptive_field_start"]
        centred, coverage = _centred_and_coverage(field, stride, start, spatial)
        cells["Layer"].append("  " * max(row["depth"] - 1, 0) + name)
        cells["Type"].append(row["module_type"])
        cells["Output shape"].append(row["output_shape"])
        cells["Field"].append(Text(field, style="red") if field == "undefined" else field or Text("-", style="dim"))
        cells["Stride"].append(stride or Text("-", style="dim"))
        cells["Centred"].append(centred)
        cells["Coverage"].append(coverage)
        if covered_from is None and row["covers_input"] is True:
            covered_from = name
        if row["receptive_field_note"]:
            notes.setdefault(row["receptive_field_note"], name)

    widths = {name: max(len(name), *(len(str(c)) for c in column)) for name, column in cells.items()}
    shown = list(_RF_COLUMNS)
    while len(shown) > 3 and sum(widths[n] + 3 for n in shown) > width:  # padding and divider
        shown.pop()
    table = Table(
        title=f"{report.model}  ·  receptive fields on a {size_text or '?'} input",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    order = [n for n in ("Layer", "Type", "Output shape", "Field", "Stride", "Centred", "Coverage") if n in shown]
    for name in order:
        justify = "left" if name in ("Layer", "Type", "Output shape") else "right"
        table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis")
    for index in range(len(cells["Layer"])):
        table.add_row(*(cells[name][index] for name in order))

    if not spatial:
        verdict = "the input has no spatial dimensions: no receptive field"
    elif covered_from is not None:
        verdict = f"the field covers the whole {size_text} input from layer {covered_from} on"
    else:
        verdict = f"the field never covers the whole {size_text} input"
    parts: list = [table, Text(verdict)]
    for note, layer in notes.items():
        parts.append(Text(f"{layer}: {note}", style="yellow"))
    return Group(*parts)


def _centred_and_coverage(field: str, stride: str, start: str, spatial) -> tuple[Text | str, Text | str]:
    dash = Text("-", style="dim")
    if field == "input":
        return dash, "100%"
    try:
        sizes, starts = [int(v) for v in field.split("x")], [int(v) for v in start.split("x")]
    except ValueError:  # "", "undefined"
        return dash, dash
    share = 1.0
    for size, first, extent in zip(sizes, starts, spatial, strict=True):
        inside = min(first + size - 1, extent - 1) - max(first, 0) + 1
        share *= max(inside, 0) / extent
    percent = 100 * share
    coverage = f"{percent:.1f}%".replace(".0%", "%") if percent >= 1 or percent == 0 else f"{percent:.2g}%"
    try:
        jumps = [int(v) for v in stride.split("x")]
    except ValueError:  # the stride is undefined: so is the unit's centre
        return dash, coverage
    # centre of [first, first + size - 1] == (jump - 1) / 2, doubled to stay in integers
    centred = all(2 * first + size - 1 == jump - 1 for first, size, jump in zip(starts, sizes, jumps, strict=True))
    return ("yes" if centred else "no"), coverage


# Columns of the memory table, most important first (the last go on a narrow terminal).
_MEMORY_COLUMNS = ("Layer", "Live after", "Activations", "Saved for backward", "Peak in layer", "Output shape", "Type")


def memory_table(report: Report, width: int = 160, fit=None, measured=None) -> Group:
    """Per layer: output bytes, activation bytes live right after it and at its peak (and,
    training, what autograd saves from it), then the memory breakdown. `fit` (an
    archprof.memory.Fit) adds the budget's lines; `measured`, `(device, rows)` with rows of
    `(label, predicted_bytes, measured_bytes)`, a table of measured against predicted."""
    totals = report.totals
    peak_row = next(
        (i for i, v in enumerate(report.columns["peak_live_bytes"]) if v == totals.peak_activation_bytes), None
    )
    names = [n for n in _MEMORY_COLUMNS if report.training or n != "Saved for backward"]
    cells: dict[str, list] = {name: [] for name in names}
    for index, row in enumerate(report.rows()):
        name = "  " * max(row["depth"] - 1, 0) + _layer_name(row)
        cells["Layer"].append(Text(name + "  ◀ peak", style="bold") if index == peak_row else name)
        cells["Type"].append(row["module_type"])
        cells["Output shape"].append(row["output_shape"])
        cells["Activations"].append(_bytes(row["activation_bytes"]))
        cells["Live after"].append(_bytes(row["live_bytes"]))
        cells["Peak in layer"].append(_bytes(row["peak_live_bytes"]))
        if report.training:
            cells["Saved for backward"].append(_bytes(row["saved_activation_bytes"]))
    widths = {name: max(len(name), *(len(str(c)) for c in column)) for name, column in cells.items()}
    shown = list(names)
    while len(shown) > 3 and sum(widths[n] + 3 for n in shown) > width:
        shown.pop()
    mode = "training forward" if report.training else "inference"
    table = Table(
        title=f"{report.model}  ·  input {shapes_text(report.input_shapes)}  ·  {report.dtype}  ·  {mode}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    order = [n for n in ("Layer", "Type", "Output shape", *_MEMORY_COLUMNS[1:5]) if n in shown]
    for name in order:
        justify = "left" if name in ("Layer", "Type", "Output shape") else "right"
        table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis")
    for index in range(len(cells["Layer"])):
        table.add_row(*(cells[name][index] for name in order))
    parts: list = [table, memory_totals_table(report, fit)]
    if measured is not None:
        parts.append(measured_table(*measured))
    return Group(*parts)


def memory_totals_table(report: Report, fit=None) -> Table:
    """The breakdown: parameters, buffers, peak; training adds gradients, optimizer state,
    saved activations and their sum."""
    totals = report.totals
    table = Table(title="Memory", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_column("exact", justify="right", style="dim")

    def add(label: str, value: int, style: str | None = None) -> None:
        table.add_row(Text(label, style=style or ""), human_bytes(value), f"{value:,} B")

    peak_at = totals.peak_layer or "(model)"
    add("Parameters", totals.param_bytes)
    add("Buffers", totals.buffer_bytes)
    if report.training:
        copies = totals.optimizer_state_bytes // totals.gradient_bytes if totals.gradient_bytes else 0
        plural = "copy" if copies == 1 else "copies"
        add("Gradients", totals.gradient_bytes)
        add(f"Optimizer state ({totals.optimizer}: {copies} {plural})", totals.optimizer_state_bytes)
        add("Saved activations (for backward)", totals.saved_activation_bytes)
        add("Training total", totals.training_memory_bytes, "bold")
        add(f"Forward peak (at {peak_at})", totals.peak_memory_bytes)
    else:
        add(f"Peak live activations (at {peak_at})", totals.peak_activation_bytes)
        add("Peak memory (inference)", totals.peak_memory_bytes, "bold")
    table.add_row("Input", shapes_text(totals.input_shapes), totals.dtype)
    if fit is not None:
        add("Budget", fit.budget_bytes)
        table.add_row(
            Text("Largest batch that fits", style="bold"),
            str(fit.batch),
            f"{fit.batch + 1} needs {human_bytes(fit.bytes_at_next)}",
        )
    return table


def measured_table(device: str, rows: list[tuple[str, int, int]]) -> Table:
    """Predicted memory beside what was measured (torch.cuda.max_memory_allocated)."""
    table = Table(title=f"Measured on {device}", title_justify="left")
    table.add_column("")
    for heading in ("Predicted", "Measured", "Measured / predicted"):
        table.add_column(heading, justify="right")
    for label, predicted, value in rows:
        ratio = f"{value / predicted:.3f}" if predicted else "-"
        table.add_row(label, human_bytes(predicted), human_bytes(value), ratio)
    table.caption = "max_memory_allocated counts the kernels' workspace (cuDNN) and allocator rounding too"
    return table


def _bytes(value: int) -> Text | str:
    return human_bytes(value) if value else Text("-", style="dim")


def zoo_table(rows: list[tuple[str, int, str, str]]) -> Table:
    table = Table(title="Built-in models", title_justify="left")
    table.add_column("Name", no_wrap=True)
    table.add_column("Params", justify="right")
    table.add_column("Default input")
    table.add_column("Description")
    for name, params, size, description in rows:
        table.add_row(name, human_count(params), size, description)
    return table


# Columns of a comparison kept on a narrow terminal, most important first (the rest are
# left out rather than cutting numbers short; every file format keeps them all).
_COMPARISON_PRIORITY = (
    "Model",
    "Params",
    "MACs",
    "Latency (CPU)",
    "x Params",
    "x MACs",
    "Peak memory",
    "Activations",
    "Receptive field",
    "FLOPs",
    "Input",
)


def comparison_table(headers: list[str], rows: list[list[str]], baseline: str | None = None, width: int = 160) -> Table:
    """Models side by side (cells from `archprof.compare.comparison_cells`)."""
    columns = {header: [row[i] for row in rows] for i, header in enumerate(headers)}
    title = "Comparison"
    inputs = set(columns.get("Input", []))
    if len(inputs) == 1:  # the same input for every model: say it once
        title += f"  ·  input {inputs.pop()}"
        del columns["Input"]
    if baseline:
        title += f"  ·  ratios against {baseline}"
    widths = {header: max(len(header), *(len(cell) for cell in cells)) for header, cells in columns.items()}
    shown = [header for header in _COMPARISON_PRIORITY if header in columns]
    shown += [header for header in columns if header not in shown]
    while len(shown) > 3 and sum(widths[h] + 3 for h in shown) > width:
        shown.pop()
    order = [header for header in columns if header in shown]
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for header in order:
        table.add_column(header, justify="left" if header in ("Model", "Input") else "right", no_wrap=True)
    for index in range(len(rows)):
        table.add_row(*(columns[header][index] for header in order))
    return table


def budget_table(rows: list[dict[str, str]]) -> Group:
    """One table per model and input, one row per limit (cells from `archprof.budget.verdict_rows`),
    then the overall verdict."""
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["input"]), []).append(row)
    parts: list = []
    for (model, shape), group in groups.items():
        failed = sum(row["verdict"] != "pass" for row in group)
        verdict = Text(f"{failed} exceeded", style="bold red") if failed else Text("within budget", style="green")
        title = Text.assemble(f"{model}  ·  input {shape}  ·  ", verdict)
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        table.add_column("Limit", no_wrap=True)
        table.add_column("Value", justify="right", no_wrap=True)
        table.add_column("Margin", justify="right", no_wrap=True)
        table.add_column("Verdict", no_wrap=True)
        for row in group:
            passed = row["verdict"] == "pass"
            table.add_row(
                row["limit"],
                row["value"],
                Text(row["margin"], style="" if passed else "red"),
                Text("pass", style="green") if passed else Text("FAIL", style="bold red"),
            )
        parts.append(table)
    failed = sum(row["verdict"] != "pass" for row in rows)
    if failed:
        parts.append(Text(f"FAIL: {failed} of {len(rows)} limits exceeded", style="bold red"))
    else:
        parts.append(Text(f"pass: all {len(rows)} limits hold", style="bold green"))
    return Group(*parts)


def diff_tables(diff, width: int = 160) -> Group:
    """Totals (old, new, change, %) and the layers added, removed or changed (an `archprof.diff.ReportDiff`)."""
    from archprof.diff import format_change, format_percent, format_value, layer_label, shape_change

    totals = Table(title=f"{diff.old} → {diff.new}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for header in ("Total", "Old", "New", "Change", "%"):
        totals.add_column(header, justify="left" if header == "Total" else "right", no_wrap=True)
    for total in diff.totals:
        totals.add_row(
            total.label,
            format_value(total.unit, total.old),
            format_value(total.unit, total.new),
            format_change(total.unit, total.change),
            format_percent(total.percent),
        )
    parts: list = [totals]
    summary = f"{len(diff.layers)} layers changed, {diff.unchanged} unchanged"
    if not diff.layers:
        parts.append(Text(summary))
        return Group(*parts)
    styles = {"added": "green", "removed": "red", "changed": "yellow"}
    columns: dict[str, list] = {"": [], "Layer": [], "Type": [], "Output shape": [], "Params": [], "MACs": []}
    columns["Activations"] = []
    for change in diff.layers:
        columns[""].append(Text(change.status, style=styles[change.status]))
        columns["Layer"].append(layer_label(change))
        columns["Type"].append(change.value("module_type"))
        columns["Output shape"].append(shape_change(change))
        columns["Params"].append(format_change("count", change.delta("param_count")))
        columns["MACs"].append(format_change("count", change.delta("macs")))
        columns["Activations"].append(format_change("bytes", change.delta("activation_bytes")))
    # On a narrow terminal leave columns out (least important last) rather than cut cells.
    widths = {header: max(len(header), *(len(str(cell)) for cell in cells)) for header, cells in columns.items()}
    shown = ["", "Layer", "Params", "MACs", "Output shape", "Activations", "Type"]
    while len(shown) > 3 and sum(widths[h] + 3 for h in shown) > width:
        shown.pop()
    layers = Table(title=summary, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    order = [header for header in columns if header in shown]
    for header in order:
        justify = "right" if header in ("Params", "MACs", "Activations") else "left"
        layers.add_column(header, justify=justify, no_wrap=True)
    for index in range(len(diff.layers)):
        layers.add_row(*(columns[header][index] for header in order))
    parts.append(layers)
    return Group(*parts)


# Columns of the profile table, most important first (the last go on a narrow terminal).
_PROFILE_COLUMNS = ("Layer", "Time", "Share", "Roofline", "Achieved", "Bound", "Intensity", "Bytes moved", "Type")


def profile_table(report: Report, width: int = 160) -> Group:
    """A profiled report (`archprof.profile`): per layer the measured time beside the
    roofline's, share, achieved FLOP/s, intensity and bound; the unattributed remainder;
    the whole model; the device's ceilings; the cross-check, every mismatch in red."""
    measured = report.measured
    cells: dict[str, list] = {name: [] for name in _PROFILE_COLUMNS}
    for row in report.rows():
        cells["Layer"].append("  " * max(row["depth"] - 1, 0) + _layer_name(row))
        cells["Type"].append(row["module_type"])
        cells["Time"].append(_ms(row["time_ms"]))
        cells["Share"].append(_share(row["time_share"]))
        cells["Roofline"].append(_ms(row["roofline_time_ms"]) if row["bytes_moved"] else _dash())
        cells["Achieved"].append(_rate(row["achieved_flops_per_s"]) if row["achieved_flops_per_s"] else _dash())
        intensity = row["arithmetic_intensity"]
        cells["Intensity"].append(f"{intensity:.2f}" if intensity is not None else _dash())
        cells["Bound"].append(row["bound"] or _dash())
        cells["Bytes moved"].append(_bytes(row["bytes_moved"]))
    widths = {name: max(len(name), *(len(str(c)) for c in column)) for name, column in cells.items()}
    shown = list(_PROFILE_COLUMNS)
    while len(shown) > 3 and sum(widths[n] + 3 for n in shown) > width:
        shown.pop()
    passes = f"median of {measured.repeat} passes after {measured.warmup} warm-up"
    table = Table(
        title=f"{report.model}  ·  input {shapes_text(report.input_shapes)}  ·  {report.dtype}  ·  "
        f"{measured.device} ({measured.device_name})  ·  {passes}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        caption="Time: each leaf-module call between forward hooks; (between hooks): container ops such as a "
        "residual add, and the hooks' own cost. Roofline: max(FLOPs / peak, bytes moved / bandwidth). Achieved "
        "and Intensity count flops + elementwise_flops.",
        caption_justify="left",
    )
    order = [n for n in ("Layer", "Type", *_PROFILE_COLUMNS[1:8]) if n in shown]
    for name in order:
        table.add_column(name, justify="left" if name in ("Layer", "Type", "Bound") else "right", no_wrap=True)
    for index in range(len(cells["Layer"])):
        table.add_row(*(cells[name][index] for name in order))
    table.add_section()
    remainder = {
        "Layer": Text("(between hooks)", style="italic"),
        "Time": _ms(measured.unattributed_ms),
        "Share": _share(measured.unattributed_share),
    }
    table.add_row(*(remainder.get(name, "") for name in order))
    notes = [Text(note, style="yellow") for note in measured.notes]
    return Group(
        table, whole_model_table(measured), ceilings_text(measured.ceilings), *notes, cross_check_table(measured)
    )


def whole_model_table(measured) -> Table:
    """Latency, throughput, achieved FLOP/s, the hooks' cost, the roofline floor, memory."""
    table = Table(title="Whole model", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_column("detail", style="dim")
    peak = measured.ceilings.peak_flops_per_s
    hooked_extra = measured.hooked_median_ms / measured.median_ms - 1 if measured.median_ms else 0.0
    rows = (
        ("Latency, median (no hooks)", _ms(measured.median_ms), f"p90 {_ms(measured.p90_ms)}"),
        ("Throughput", f"{measured.throughput_per_s:,.1f} samples/s", f"batch {measured.batch}"),
        (
            "Achieved FLOP/s",
            _rate(measured.achieved_flops_per_s),
            f"(flops + elementwise_flops) / median: {human_count(measured.work_flops)} FLOPs, "
            f"{100 * measured.achieved_flops_per_s / peak:.1f}% of peak",
        ),
        ("Forward with per-layer hooks, median", _ms(measured.hooked_median_ms), f"{100 * hooked_extra:+.1f}% (hooks)"),
        ("Sum of per-layer medians", _ms(measured.layer_sum_ms), "leaf-module calls"),
        (
            "Unattributed (between hooks)",
            _ms(measured.unattributed_ms),
            f"{_share(measured.unattributed_share)} of the hooked forward",
        ),
        ("Roofline floor (sum over rows)", _ms(measured.roofline_ms), f"{human_bytes(measured.bytes_moved)} moved"),
        ("Peak memory, predicted", human_bytes(measured.predicted_peak_memory_bytes), ""),
    )
    for row in rows:
        table.add_row(*row)
    if measured.measured_peak_memory_bytes is None:
        table.add_row("Peak memory, measured", Text("unavailable", style="yellow"), measured.memory_note)
    else:
        table.add_row("Peak memory, measured", human_bytes(measured.measured_peak_memory_bytes), measured.memory_note)
    return table


def ceilings_text(ceilings) -> Text:
    return Text(
        f"Ceilings of {ceilings.device} ({ceilings.dtype}): peak {_rate(ceilings.peak_flops_per_s)} "
        f"({ceilings.flops_source}), bandwidth {human_bytes(int(ceilings.bandwidth_bytes_per_s))}/s "
        f"({ceilings.bandwidth_source}); ridge {ceilings.ridge:.1f} FLOPs/byte"
    )


def cross_check_table(measured) -> Group:
    """Each check's verdict, then every mismatch on its own red line."""
    failed = [check for check in measured.checks if not check.ok]
    if failed:
        title = Text(f"Cross-check: {len(failed)} MISMATCH{'ES' if len(failed) > 1 else ''}", style="bold red")
    else:
        title = Text("Cross-check: the real run agrees with the analysis", style="green")
    table = Table(title=title, title_justify="left", show_header=False, box=box.SIMPLE, pad_edge=False)
    table.add_column("status", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("summary")
    styles = {"ok": ("ok", "green"), "mismatch": ("MISMATCH", "bold red"), "skipped": ("skipped", "yellow")}
    for check in measured.checks:
        label, style = styles.get(check.status, (check.status, ""))
        table.add_row(Text(label, style=style), check.name, check.summary)
    parts: list = [table]
    for line in measured.mismatches:
        parts.append(Text(f"  MISMATCH {line}", style="bold red"))
    return Group(*parts)


def _ms(value) -> Text | str:
    if value is None or value != value:  # None or NaN
        return _dash()
    if value < 0.01:
        return f"{value * 1000:.2f} µs"
    return f"{value:.3f} ms" if value < 100 else f"{value:,.1f} ms"


def _share(value) -> Text | str:
    return _dash() if value is None or value != value else f"{100 * value:.1f}%"


def _rate(value) -> str:
    text = human_count(round(value))
    return f"{text}FLOP/s" if text[-1].isalpha() else f"{text} FLOP/s"


def _dash() -> Text:
    return Text("-", style="dim")


def to_text(renderable, width: int = 160) -> str:
    """Render to plain text (for --output with the table format)."""
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def _count(value: int) -> Text | str:
    return human_count(value) if value else Text("-", style="dim")
