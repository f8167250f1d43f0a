"""The receptive-field view: field, stride, centring and coverage per layer."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Group
from rich.text import Text

from archprof.errors import ArchprofError
from archprof.metrics import first_output_shape
from archprof.render.base import Layout, dash, fitted_table, layer_name, tree_label
from archprof.render.tree import top_level_rules, tree_rows, without_idle
from archprof.report import Report
from archprof.text import dims_text, field_text, layer_label, visible_text
from archprof.units import shape_text

if TYPE_CHECKING:
    from archprof.passes.receptive_field.dims import State

# Columns of the receptive-field table, most important first (the last go on a narrow terminal).
_RF_COLUMNS = ("Layer", "Field", "Stride", "Coverage", "Centred", "Output shape", "Type")


def receptive_field_table(
    report: Report, layout: Layout = Layout(), spreads: Sequence | None = None, hide_idle: bool | None = None
) -> Group:
    """Per layer: output shape, receptive field, effective stride, centred, coverage; then the
    first layer whose field covers the whole input, and why any field is undefined.

    Centred and Coverage look at output unit 0's field (the report's columns). Unit o of a
    layer with effective stride J stands for input pixels [o J, o J + J - 1], so unit 0's
    centre is (J - 1) / 2: the field [start, end] is *centred* when (start + end) / 2 equals
    it in every dimension (a kernel padded symmetrically, "same"-style, keeps it so; an
    unpadded or asymmetric one shifts it). *Coverage* is the share of the input's pixels the
    field reaches: per dimension the part of [start, end] inside the input (padding excluded)
    over the input's size, multiplied over the dimensions.

    With `spreads` (per row, `archprof.passes.receptive_field.spreads`), the Field column
    shows the centre unit's field, and its range over units where units differ: '451x451
    (443..451x443..451)'. A field that reads the whole input shows as 'global'.

    The rows are the module tree's, as the summary's (`render.tree`): a module's row, before
    its children's, holds the field of its output. The verdict and the notes follow the
    rows in the order they ran. `hide_idle`: as the summary's (`render.tree.without_idle`)."""
    spatial = report.input_shapes[0][2:] if report.input_shapes else ()
    headings = ("Layer", "Type", "Output shape", "Field", "Stride", "Centred", "Coverage")
    cells: dict[str, list] = {heading: [] for heading in headings}
    nodes, idle_line = without_idle(tree_rows(report), hide_idle)
    for node in nodes:
        row = node.row
        field, stride, start = row["receptive_field"], row["effective_stride"], row["receptive_field_start"]
        centred, coverage = _centred_and_coverage(field, stride, start, spatial)
        cells["Layer"].append(tree_label(node))
        cells["Type"].append(visible_text(row["module_type"]))
        cells["Output shape"].append(row["output_shape"])
        cells["Field"].append(_field_text(field, spreads[node.output] if spreads else None))
        cells["Stride"].append(dims_text(stride) or dash())
        cells["Centred"].append(centred)
        cells["Coverage"].append(coverage)

    title = f"{visible_text(report.model)}  ·  receptive fields on a {shape_text(spatial) or '?'} input"
    parts: list = [fitted_table(title, cells, _RF_COLUMNS, layout, rules=top_level_rules(nodes))]
    if idle_line is not None:
        parts.append(Text(idle_line))
    parts.append(Text(_coverage_verdict(report, spatial)))
    if spreads and any(_varies(s) for s in spreads):
        parts.append(Text("Field: the centre unit's; (a..b): the range over the layer's units"))
    notes: dict[str, str] = {}
    for row in report.rows():
        if row["receptive_field_note"]:
            notes.setdefault(row["receptive_field_note"], layer_name(row))
    for note, layer in notes.items():
        parts.append(Text(f"{layer}: {visible_text(note)}", style="yellow"))  # a note names its layer
    return Group(*parts)


def _coverage_verdict(report: Report, spatial: tuple[int, ...]) -> str:
    """From which layer on, in the order the rows ran, the field covers the whole input."""
    size_text = shape_text(spatial)
    covered_from = first_covering = last_short = None  # every later row covers from the first
    for row in report.rows():
        name = layer_name(row)
        if row["covers_input"] is True:
            covered_from = covered_from or name
            first_covering = first_covering or name
        elif row["covers_input"] is False:  # a branch beside a covering one (ShuffleNet's halves)
            covered_from, last_short = None, name if first_covering else last_short
    if not spatial:
        return "the input has no spatial dimensions: no receptive field"
    if covered_from is not None and covered_from == first_covering:
        return f"the field covers the whole {size_text} input from layer {covered_from} on"
    if first_covering is not None:
        return (
            f"the field first covers the whole {size_text} input at layer {first_covering}, but not at every layer"
            f" after it (not at {last_short})" + (f"; from layer {covered_from} on it does" if covered_from else "")
        )
    return f"the field never covers the whole {size_text} input"


def _field_text(field, spread) -> Text | str:
    if field == "undefined":
        return Text(field, style="red")
    if field == "input":
        return field_text(field)
    if not isinstance(field, tuple) or not spread or all(s is None for s in spread):
        return dims_text(field) or dash()
    # A dimension read whole (None: its size the field's) beside others whose units differ.
    pairs = list(zip(spread, field, strict=True))
    text = "x".join(str(s.centre if s is not None else size) for s, size in pairs)
    if _varies(spread):
        text += " (" + "x".join(f"{s.smallest}..{s.largest}" if s is not None else str(size) for s, size in pairs) + ")"
    return text


def _varies(spread) -> bool:
    return bool(spread) and any(s is not None and s.smallest != s.largest for s in spread)


def _centred_and_coverage(field, stride, start, spatial) -> tuple[Text | str, Text | str]:
    if field == "input":
        return dash(), "100%"
    if not isinstance(field, tuple):  # None, "undefined"
        return dash(), dash()
    share = 1.0
    for size, first, extent in zip(field, start, spatial, strict=True):
        inside = min(first + size - 1, extent - 1) - max(first, 0) + 1
        share *= max(inside, 0) / extent
    percent = 100 * share
    if 99.95 <= percent < 100:  # not all of it: never "100%"
        coverage = ">99.9%"
    elif percent in (0, 100):
        coverage = f"{percent:.0f}%"
    elif percent >= 1:  # one decimal, as every share archprof shows: 5.0% above 2.3%, not 5%
        coverage = f"{percent:.1f}%"
    else:
        coverage = f"{percent:#.2g}%"  # two figures: 0.20%, not 0.2% above 0.39%
    if not isinstance(stride, tuple):  # the stride is undefined: so is the unit's centre
        return dash(), coverage
    # centre of [first, first + size - 1] == (jump - 1) / 2, doubled to stay in integers
    centred = all(2 * first + size - 1 == jump - 1 for first, size, jump in zip(start, field, stride, strict=True))
    return ("yes" if centred else "no"), coverage


_COORDINATE = re.compile("[+-]?[0-9]+")  # digits 0-9 only: int() reads "３" as 3


def unit_box_text(report: Report, states: Sequence, spatial: tuple[int, ...], layer: str, unit: str) -> str:
    """`archprof rf --unit 3,4 --layer L`: 'layer L, unit 3,4 reads input pixels 24..75 x
    40..91 (of 224x224)': per spatial dimension the first and last input pixel that can
    reach the unit (`states`: each row's field state, `receptive_field.row_states`), and,
    where the layer's field is an upper bound, the note that says so."""
    from archprof.passes.receptive_field import unit_box

    parts = [part.strip() for part in unit.split(",")]
    if not all(_COORDINATE.fullmatch(part) for part in parts):
        raise ArchprofError(f"--unit takes whole numbers separated by commas (3,4), got '{visible_text(unit)}'")
    coordinates = tuple(int(part) for part in parts)
    calls = list(zip(report.columns["layer"], report.columns["call"], strict=True))
    rows = [index for index, (name, call) in enumerate(calls) if _names(layer, name, call)]
    if rows:
        name, call = calls[rows[-1]]
        state, shape = _returned(report, name, call, rows[-1], states[rows[-1]])
    else:  # a module whose operations are all its children's (a Sequential): the table's row of its output
        name, call, state, shape = _container_output(report, layer)
    # The units of a map along the spatial dimensions, batch and channels first; else none (pooled, flattened).
    sizes = shape[2:] if len(shape) == len(spatial) + 2 else ()
    boxes = unit_box(state, spatial, coordinates, sizes)
    where = "no input pixel" if None in boxes else "input pixels " + " x ".join(f"{a}..{b}" for a, b in boxes)
    text = f"layer {visible_text(layer_label(name, call))}, unit {unit} reads {where} (of {shape_text(spatial)})"
    bound = getattr(state, "bound", "")  # a Field's note that its box holds the unit's, which may be smaller
    return f"{text}; {visible_text(bound)}" if bound else text


def _names(layer: str, name: str, call: int) -> bool:
    """Whether `layer` names a module's call as the table does: "(model)" for the model's own
    operations, "relu (call 2)" for a module's second call; a plain name its first call."""
    return layer == layer_label(name, call) or (call == 0 and layer == name)


def _container_output(report: Report, layer: str) -> tuple[str, int, State, tuple[int, ...]]:
    """The path, call, output field and output shape of the module call `layer` names that has
    no row of its own, only its children's (the rf table shows it, its field its output's)."""
    from archprof.passes.receptive_field import tensor_fields

    graph = report.graph
    for call in graph.module_calls if graph is not None else ():
        returned = graph.call_outputs.get(call.index)
        if returned and _names(layer, call.path, call.call):
            fields, _ = tensor_fields(graph)
            return call.path, call.call, fields.get(returned[0].id), returned[0].shape
    raise ArchprofError(f"no layer '{visible_text(layer)}' in the model: `archprof rf MODEL` lists them")


def _returned(
    report: Report, layer: str, call_number: int, last_row: int, last_row_state: State
) -> tuple[State, tuple[int, ...]]:
    """The field and shape of the first tensor the layer's call returns: its last row may be
    one of its own operations before a child's (timm NesT's ConvPool: a convolution, its own
    permutes, then a pooling child, whose output the module returns). A trace that records
    no call's output (a TorchScript model's, by parameters) has the layer's last row of that
    call, `last_row` (its state `last_row_state`), instead."""
    from archprof.passes.receptive_field import tensor_fields

    graph = report.graph
    call = next((c for c in graph.module_calls if c.path == layer and c.call == call_number), None) if graph else None
    returned = graph.call_outputs.get(call.index) if call is not None else None
    if not returned:
        return last_row_state, first_output_shape(report.columns["output_shape"][last_row])
    fields, _ = tensor_fields(graph)
    return fields.get(returned[0].id), returned[0].shape
