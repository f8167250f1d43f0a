"""The receptive-field view: field, stride, centring and coverage per layer."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text

from archprof.render.base import dash, fitted_table, indented_layer_name, layer_name
from archprof.report import Report, dims_text, visible_text
from archprof.units import shape_text

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
    size_text = shape_text(spatial)
    headings = ("Layer", "Type", "Output shape", "Field", "Stride", "Centred", "Coverage")
    cells: dict[str, list] = {heading: [] for heading in headings}
    covered_from = None
    notes: dict[str, str] = {}
    for row in report.rows():
        name = layer_name(row)
        field, stride, start = row["receptive_field"], row["effective_stride"], row["receptive_field_start"]
        centred, coverage = _centred_and_coverage(field, stride, start, spatial)
        cells["Layer"].append(indented_layer_name(row))
        cells["Type"].append(visible_text(row["module_type"]))
        cells["Output shape"].append(row["output_shape"])
        cells["Field"].append(Text(field, style="red") if field == "undefined" else dims_text(field) or dash())
        cells["Stride"].append(dims_text(stride) or dash())
        cells["Centred"].append(centred)
        cells["Coverage"].append(coverage)
        if covered_from is None and row["covers_input"] is True:
            covered_from = name
        if row["receptive_field_note"]:
            notes.setdefault(row["receptive_field_note"], name)

    title = f"{visible_text(report.model)}  ·  receptive fields on a {size_text or '?'} input"
    table = fitted_table(title, cells, _RF_COLUMNS, width)

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
    coverage = f"{percent:.1f}%".replace(".0%", "%") if percent >= 1 or percent == 0 else f"{percent:.2g}%"
    if not isinstance(stride, tuple):  # the stride is undefined: so is the unit's centre
        return dash(), coverage
    # centre of [first, first + size - 1] == (jump - 1) / 2, doubled to stay in integers
    centred = all(2 * first + size - 1 == jump - 1 for first, size, jump in zip(start, field, stride, strict=True))
    return ("yes" if centred else "no"), coverage
