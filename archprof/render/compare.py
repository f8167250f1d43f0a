"""Models side by side, budget verdicts, and what changed between two reports."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from rich.console import Group
from rich.table import Table
from rich.text import Text

from archprof.diff.change_text import (
    FIELD_FIGURES,
    final_field_notes,
    format_change,
    format_percent,
    kernel_text,
    module_type_text,
    value_change,
)
from archprof.diff.changes import METRICS, kernel_changed
from archprof.render.base import (
    Layout,
    chosen_columns,
    fits,
    fitted_table,
    stacked_rows,
    subtotal_cell,
    titled_table,
    tree_label,
    with_heading_renamed,
)
from archprof.render.tree import TreeRow, top_level_rules, tree_nodes
from archprof.text import layer_label, limits_verdict, visible_text
from archprof.units import human_value

# Columns of a comparison kept on a narrow terminal, most important first (the rest are
# left out rather than cutting numbers short; every file format keeps them all).
_COMPARISON_PRIORITY = (
    "Model",
    "Params",
    "MACs",
    "Latency (CPU)",
    "Training FLOPs",  # asked for (--train, --profile): after parameters and MACs, before the others
    "Training step peak",
    "x Params",
    "x MACs",
    "Peak memory",
    "Forward peak",  # a training step's comparison's "Peak memory"
    "Activations",
    "Receptive field",
    "FLOPs",
    "Input",
)


def comparison_table(
    headers: list[str],
    rows: list[list[str]],
    baseline: str | None = None,
    layout: Layout = Layout(),
    sorted_by: str | None = None,
    notes: Sequence[tuple[str, str]] = (),
    ratio_notes: Sequence[str] = (),
    optimizer: str | None = None,
) -> Table | Group:
    """Models side by side (cells from `archprof.comparison.comparison_cells`); a model's name
    shown on one line, its control characters as escapes (`visible_text`). The title names a
    training comparison's `optimizer` (`archprof.comparison.training_optimizer`), whose state
    its step peaks hold. The column the rows are `sorted_by` (a heading) is kept on a narrow
    terminal, after the model's name. Under it, `ratio_notes`
    (`archprof.comparison.ratio_notes`): why a ratio column is empty; and `notes`
    (`archprof.comparison.bound_notes`): why a model's field is an upper bound."""
    columns = {header: [row[i] for row in rows] for i, header in enumerate(headers)}
    columns["Model"] = [visible_text(model) for model in columns["Model"]]
    title = "Comparison"
    if optimizer:
        title += f"  ·  training step, {visible_text(optimizer)}"
    inputs = set(columns.get("Input", []))
    if len(inputs) == 1:  # the same input for every model: say it once
        title += f"  ·  input {inputs.pop()}"
        del columns["Input"]
    if baseline:
        title += f"  ·  ratios against {visible_text(baseline)}"
    if "Forward peak" in columns:  # a training comparison's "Peak memory" (`archprof.comparison`), by either name
        layout = with_heading_renamed(layout, "Peak memory", "Forward peak")
    priority = list(_COMPARISON_PRIORITY)
    if sorted_by in columns and sorted_by != "Model":  # the model's name stays first: the label column
        priority.remove(sorted_by)
        priority.insert(1, sorted_by)
    if "Input" in columns:  # inputs that differ: every figure depends on them, kept before the ratios
        priority.remove("Input")
        priority.insert(priority.index("x Params"), "Input")
    table = fitted_table(title, columns, priority, layout)
    if not notes and not ratio_notes:
        return table
    lines = [
        *ratio_notes,
        *(f"{visible_text(model)}: receptive field is {visible_text(note)}" for model, note in notes),
    ]
    return Group(table, *(Text(line, style="yellow") for line in lines))


def budget_table(rows: list[dict[str, str]], unchecked: int = 0, layout: Layout = Layout()) -> Group:
    """One table per model, input and dtype, one row per limit (cells from `archprof.budget.verdicts.verdict_rows`),
    each table followed by its rows' notes, then the overall verdict: first, how many models could not be
    checked (`unchecked`), if any.
    Where a table's figures and verdicts side by side do not fit `layout.width`, one block per limit."""
    groups: dict[tuple[str, str, str], list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["input"], row["dtype"]), []).append(row)
    parts: list = []
    for (model, shape, dtype), group in groups.items():
        failed = sum(row["verdict"] != "pass" for row in group)
        verdict = Text(f"{failed} exceeded", style="bold red") if failed else Text("within budget", style="green")
        title = Text.assemble(f"{visible_text(model)}  ·  input {shape}  ·  {dtype}  ·  ", verdict)
        cells = _limit_columns(group)
        table = titled_table(title, layout.width)
        table.add_column("Limit", overflow="fold")  # on a narrow terminal the limit wraps, not the figures
        table.add_column("Value", justify="right", no_wrap=True)
        table.add_column("Margin", justify="right", no_wrap=True)
        table.add_column("Verdict", no_wrap=True)
        for row in zip(*cells.values(), strict=True):
            table.add_row(*row)
        parts.append(table if fits(table, layout.width) else stacked_rows(title, cells, width=layout.width))
        # Why a limit the value is within fails (a minimum against an upper bound): under its table.
        parts += [Text(row["note"], style="yellow") for row in group if row.get("note")]
    failed = sum(row["verdict"] != "pass" for row in rows)
    verdict = limits_verdict(failed, len(rows))
    if unchecked:  # the run's verdict, whatever the limits checked say: never a last line that reads "pass"
        from archprof.budget.verdicts import unchecked_text

        checked = f"; of the models checked, {verdict}" if rows else ""
        parts.append(Text(f"ERROR: {unchecked_text(unchecked)} (on standard error){checked}", style="bold red"))
    elif failed:
        parts.append(Text(f"FAIL: {verdict}", style="bold red"))
    else:
        parts.append(Text(f"pass: {verdict}", style="bold green"))
    return Group(*parts)


def _limit_columns(rows: list[dict[str, str]]) -> dict[str, list]:
    """A budget table's cells, by heading: each limit, the model's value, its margin, its verdict."""
    passed = [row["verdict"] == "pass" for row in rows]
    return {
        # A limit's text may hold a file's name (--baseline): shown as it is, never read as markup.
        "Limit": [Text(visible_text(row["limit"])) for row in rows],
        "Value": [row["value"] for row in rows],
        "Margin": [Text(row["margin"], style="" if ok else "red") for row, ok in zip(rows, passed, strict=True)],
        "Verdict": [Text("pass", style="green") if ok else Text("FAIL", style="bold red") for ok in passed],
    }


_LAYER_HEADINGS = ("", "Layer", "Type", "Kernel", "Output shape", "Params", "MACs", "Activations")  # diff's layers
# The changes its layers' table shows: (heading, column, unit).
_LAYER_CHANGES = (
    ("Params", "param_count", "count"),
    ("MACs", "macs", "count"),
    ("Activations", "activation_bytes", "bytes"),
)


def diff_tables(diff, layout: Layout = Layout()) -> Group:
    """Totals and the final receptive field and stride (old, new, change, %), why a final
    field is a bound, undefined or not recorded, and the layers added, removed or changed
    (an `archprof.diff.changes.ReportDiff`)."""

    title = Text(f"{visible_text(diff.old)} → {visible_text(diff.new)}")
    cells = _totals_columns(diff)
    totals = _totals_table(title, cells, layout.width)
    # Where even the figures side by side do not fit, one block per total (never a cut figure).
    parts: list = [totals if fits(totals, layout.width) else stacked_rows(title, cells, width=layout.width)]
    notes = final_field_notes(diff)
    parts += [Text(f"{visible_text(name)}: {visible_text(note)}", style="yellow") for name, note in notes]
    summary = diff.layers_text()
    if not diff.layers:
        chosen_columns(_LAYER_HEADINGS, layout.columns, labels=2)  # --columns still checked: a typo said so
        parts.append(Text(summary))
        return Group(*parts)
    styles = {"added": "green", "removed": "red", "changed": "yellow"}
    columns: dict[str, list] = {heading: [] for heading in _LAYER_HEADINGS}
    nodes = diff_tree(diff)
    for node in nodes:
        change = line_change(diff, node)
        status = line_status(diff, node)
        columns[""].append(Text(status, style=styles.get(status, "")))
        columns["Layer"].append(tree_label(node))
        columns["Type"].append(visible_text(line_type(diff, node)))
        columns["Kernel"].append(visible_text(kernel_text(change)) if change else "")
        # a CSV's cell: any text
        columns["Output shape"].append(visible_text(value_change(change, "output_shape")) if change else "")
        for heading, name, unit in _LAYER_CHANGES:
            columns[heading].append(subtotal_cell(node, name, partial(format_change, unit)))
    # The columns where some row changed come first: a narrow table keeps what changed.
    columns_changed = {heading: any(_changed(change, name) for change in diff.layers) for heading, name in _DIFFED}
    if "Kernel" not in layout.columns and not any(kernel_changed(c.old, c.new) for c in diff.layers):
        del columns["Kernel"]  # no window changed (nor asked for): the column would only repeat the type's context
    priority = ("", "Layer", *sorted(columns_changed, key=lambda heading: not columns_changed[heading]))
    layers = fitted_table(summary, columns, priority, layout, labels=2, rules=top_level_rules(nodes))
    parts.append(layers)
    return Group(*parts)


def diff_tree(diff) -> list[TreeRow]:
    """The layers a diff lists (an `archprof.diff.changes.ReportDiff`) as the module tree, the
    summary's (`render.tree`) over both sides' rows merged (`ReportDiff.every_layer`), so
    that a layer on one side only has its place among those both have: each module holding
    a listed layer before its layers, its `row` the change of its subtree per metric, its
    `own` that of its own rows ({}: none listed). `indices`: the listed layers (indices in
    `diff.layers`) a line shows, a layer's, a module's own; `output`: the one whose status,
    type and shape it shows, a layer's, a module's last own, -1 where none is listed."""
    listed = {change.position: index for index, change in enumerate(diff.layers)}
    shown: list[TreeRow] = []
    for node in tree_nodes(diff.every_layer):
        under = [listed[p] for p in (node.rows if node.subtree is None else node.subtree) if p in listed]
        if not under:
            continue  # nothing below it changed
        own = tuple(listed[p] for p in node.rows if p in listed)
        output = own[-1] if own else -1
        subtree = _deltas([diff.layers[index] for index in under])
        if node.subtree is None:
            label = layer_label(visible_text(node.path), diff.layers[output].call)
            shown.append(TreeRow(label, node.level, subtree, own, output))
        else:
            own_deltas = _deltas([diff.layers[index] for index in own]) if own else {}
            status = _subtree_status({diff.layers[index].status for index in under}, len(under) < len(node.subtree))
            label = visible_text(node.path)
            shown.append(TreeRow(label, node.level, subtree, own, output, own_deltas, node.path, status))
    return shown


def _subtree_status(statuses: set[str], holds_unchanged: bool) -> str:
    """A module's status from its subtree's layers: 'added' or 'removed' where all of them
    were, else 'changed' (a block that gained a layer, or holds one unchanged: on both sides)."""
    return statuses.pop() if len(statuses) == 1 and not holds_unchanged and "changed" not in statuses else "changed"


def _deltas(changes: Sequence) -> dict[str, int]:
    """The change of each metric over `changes` (`archprof.diff.changes.LayerChange`s), summed."""
    return {name: sum(change.delta(name) for change in changes) for name, _, _ in METRICS}


def line_change(diff, node: TreeRow):
    """The listed layer whose type and shape a `diff_tree` line shows (None: a module with none of its own)."""
    return diff.layers[node.output] if node.output >= 0 else None


def line_type(diff, node: TreeRow) -> str:
    """The type a `diff_tree` line shows: its listed layer's ('Conv2d', 'Conv2d → Linear'), or
    a module's with none of its own listed, as the sides know it (`module_type_text`)."""
    change = line_change(diff, node)
    return value_change(change, "module_type") if change else module_type_text(diff, node.module)


def line_status(diff, node: TreeRow) -> str:
    """'added', 'removed' or 'changed': a layer's; a module's own rows' ('changed' where they
    differ); else its subtree's (`_subtree_status`)."""
    statuses = {diff.layers[index].status for index in node.indices}
    return statuses.pop() if len(statuses) == 1 else "changed" if statuses else node.status


def _totals_columns(diff) -> dict[str, list[str]]:
    """The totals' cells, by heading: each total's name, its old and new values, the change;
    then the final receptive field's and stride's."""
    rows = [
        (t.label, human_value(t.unit, t.old), human_value(t.unit, t.new), format_change(t.unit, t.change), t.percent)
        for t in diff.totals
    ]
    fields = diff.fields
    for label, figure in FIELD_FIGURES:
        old, new = fields.texts(figure)
        rows.append((label, old, new, format_change("pixels", fields.change(figure)), fields.percent(figure)))
    headings = ("Total", "Old", "New", "Change")
    columns = {heading: [row[index] for row in rows] for index, heading in enumerate(headings)}
    columns["%"] = [format_percent(row[-1]) for row in rows]
    return columns


def _totals_table(title: Text, columns: dict[str, list[str]], width: int | None) -> Table:
    table = titled_table(title, width)
    for heading in columns:
        # Where it does not fit, the name wraps, never the figures (Rich cut them: "+101.9…").
        label = heading == "Total"
        table.add_column(heading, justify="left" if label else "right", no_wrap=not label, overflow="fold")
    for row in zip(*columns.values(), strict=True):
        table.add_row(*row)
    return table


# The diff's columns, most important first, and the report column each shows.
_DIFFED = (
    ("Params", "param_count"),
    ("MACs", "macs"),
    ("Output shape", "output_shape"),
    ("Activations", "activation_bytes"),
    ("Type", "module_type"),
    ("Kernel", "kernel"),
)


def _changed(change, name: str) -> bool:
    return change.old is None or change.new is None or change.old.get(name) != change.new.get(name)
