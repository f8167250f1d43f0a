"""The receptive-field plot: field size and effective stride against depth (matplotlib,
loaded only here)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from archprof.errors import ArchprofError
from archprof.passes.layers import consecutive_runs
from archprof.render.figures import check_plot_target, figure_text, image_bytes, named_layer_ticks
from archprof.report import Report, layer_label
from archprof.text import spatial_names, visible_text


def fields_image(report: Report, spreads: Sequence, path: str | os.PathLike) -> bytes:
    """`fields_figure`, drawn in the format of `path`'s suffix; refused where it would be empty."""
    if not has_fields(report):
        raise ArchprofError(
            f"nothing to plot in {visible_text(str(path))}: no layer has a field of pixels of its own"
            " (each reads the whole input, or the input has no spatial dimension)"
        )
    return image_bytes(fields_figure(report, spreads), check_plot_target(path))


def has_fields(report: Report) -> bool:
    """Whether a row has a field of pixels, for the field's chart to draw."""
    return any(isinstance(field, tuple) for field in report.columns["receptive_field"])


def fields_figure(report: Report, spreads: Sequence | None = None):
    """Per row, in execution order: the field size and the effective stride, one line per
    spatial dimension (one for dimensions whose lines are the same: "dimensions 1 and 2"),
    the input's size marked, and the row from which every field covers the whole input (a
    field of the input's size may not: unit 0's reads padding). Rows that read the whole
    input ("global": the field has no size of its own) are a shaded band, not a point on the
    line: drawn at the input's size, a field of 435 px falling to 224 read as a field that
    shrank. The field is the centre
    unit's where `spreads` (per row, `archprof.passes.receptive_field.spreads`) are given,
    else unit 0's (the report's column). A matplotlib Figure, made with the object API."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

    spatial = report.input_shapes[0][2:] if report.input_shapes else ()
    figure = Figure(figsize=(9, 6), layout="constrained")
    FigureCanvasAgg(figure)
    sizes_axes, strides_axes = figure.subplots(2, 1, sharex=True)
    rows = report.rows()
    lines: dict[tuple, list[int]] = {}  # (sizes, strides) -> the dimensions drawing them
    for axis in range(len(spatial)):
        lines.setdefault(_lines_of(rows, spreads, axis), []).append(axis)
    drawn_extents = set()  # a square input's size is one line and one legend entry, not one a dimension
    drawn: dict = {sizes_axes: list(spatial), strides_axes: []}  # each panel's values, for its ends
    for number, ((sizes, strides), axes_drawn) in enumerate(lines.items()):
        drawn[sizes_axes] += sizes[1]
        drawn[strides_axes] += strides[1]
        style = ("-", "--", ":")[number % 3]
        label = _dimensions_label(axes_drawn)
        line = sizes_axes.plot(*sizes, ls=style, drawstyle="steps-mid", label=label)[0]
        for extent in dict.fromkeys(spatial[axis] for axis in axes_drawn):
            if extent not in drawn_extents:
                # Each input size its own dashes: one line drawing two dimensions of a
                # non-square input (3x64x200) marks both sizes in its colour.
                dashes = ("-.", (0, (1, 2)), (0, (5, 2)))[len(drawn_extents) % 3]
                drawn_extents.add(extent)
                label = f"input {_extent_name(spatial, extent)} {extent}"
                sizes_axes.axhline(extent, color=line.get_color(), ls=dashes, lw=1, label=label)
        strides_axes.plot(*strides, ls=style, drawstyle="steps-mid", color=line.get_color())
    global_rows = consecutive_runs([index for index, row in enumerate(rows) if row["receptive_field"] == "input"])
    for number, run in enumerate(global_rows):
        label = "global: reads the whole input" if number == 0 else None
        sizes_axes.axvspan(run[0] - 0.5, run[-1] + 0.5, color="tab:grey", alpha=0.15, lw=0, label=label)
        strides_axes.axvspan(run[0] - 0.5, run[-1] + 0.5, color="tab:grey", alpha=0.15, lw=0)
    covered_from = _covered_from(rows)
    # A field as large as the input may not cover it: where it does, said (but at a global row,
    # which its band says).
    if covered_from is not None and rows[covered_from]["receptive_field"] != "input":
        for axes in (sizes_axes, strides_axes):
            label = "covers the whole input from here on" if axes is sizes_axes else None
            axes.axvline(covered_from - 0.5, color="tab:green", ls="--", lw=1, label=label)
    # Short, as the panel may be (long layer names below take its height): which unit's field, in the title.
    unit = "the centre unit" if spreads is not None else "unit 0, the corner"
    sizes_axes.set_ylabel("field (px, log scale)")
    # Bottom right, below the fields there: a network's last, largest fields and the input's
    # size run along the top (the best place, left to matplotlib, was over the input's line).
    sizes_axes.legend(fontsize=8, loc="lower right")
    sizes_axes.set_title(f"{figure_text(report.model)}: receptive field of {unit}, against depth", fontsize=10)
    strides_axes.set_ylabel("effective stride (px, log scale)")
    strides_axes.set_xlabel("layer (in execution order)")
    strides_axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # rows are whole: no tick at layer 0.5
    named_layer_ticks(strides_axes, [layer_label(row["layer"], row["call"]) for row in rows])
    for axes in (sizes_axes, strides_axes):
        # Base 2 (strides are powers of two; fields grow by them), ticked as plain numbers: 2, 4, 8, not 2 x 10^0.
        axes.set_yscale("log", base=2)
        values = [value for value in drawn[axes] if value > 0]
        if values:  # between the powers of two around them: a tick past each end (lenet5's 5 px fell below 8's)
            axes.set_ylim(2 ** (math.ceil(math.log2(min(values))) - 1), 2 ** (math.floor(math.log2(max(values))) + 1))
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.yaxis.set_minor_formatter(NullFormatter())
        axes.grid(True, which="both", alpha=0.3)
    return figure


def _covered_from(rows: list[dict]) -> int | None:
    """The row from which every row's field covers the whole input (`covers_input`), in the
    order they ran, as rf's last line says; None where the last does not."""
    start = None
    for index, row in enumerate(rows):
        if row["covers_input"] is True:
            start = index if start is None else start
        elif row["covers_input"] is False:  # a branch beside a covering one (ShuffleNet's halves)
            start = None
    return start


def _lines_of(rows: list[dict], spreads: Sequence | None, axis: int) -> tuple[tuple, tuple]:
    """Along dimension `axis`: the field sizes, (rows, sizes), of the rows whose field has a
    size there, and the strides, (rows, strides), of those that have one."""
    sizes = [
        (index, _field_size(row, spreads[index] if spreads is not None else None, axis))
        for index, row in enumerate(rows)
    ]
    sizes = [(index, size) for index, size in sizes if size is not None]
    strides = [
        (index, float(row["effective_stride"][axis]))
        for index, row in enumerate(rows)
        if isinstance(row["effective_stride"], tuple)
    ]
    return _columns(sizes), _columns(strides)


def _columns(points: list[tuple[int, float]]) -> tuple[tuple, tuple]:
    """(x, y) points as the x values and the y values."""
    return tuple(x for x, _ in points), tuple(y for _, y in points)


def _dimensions_label(axes: list[int]) -> str:
    """ "dimension 1", "dimensions 1 and 2", "dimensions 1, 2 and 3"."""
    numbers = [str(axis + 1) for axis in axes]
    if len(numbers) == 1:
        return f"dimension {numbers[0]}"
    return f"dimensions {', '.join(numbers[:-1])} and {numbers[-1]}"


def _field_size(row: dict, spread, axis: int) -> int | None:
    if row["receptive_field"] == "input":
        return None  # no size of its own: the band
    if spread is not None:
        return spread[axis].centre if spread[axis] is not None else None
    field = row["receptive_field"]
    return field[axis] if isinstance(field, tuple) else None


_EXTENT_NAMES = {"L": "length", "H": "height", "W": "width", "D": "depth"}


def _extent_name(spatial: Sequence[int], extent: int) -> str:
    """What an input size of `extent` is: "size" where every spatial dimension has it, else
    the dimensions that do, "height" of a 320x96 input's 320 ("height and width" of 8x64x64's 64)."""
    if all(size == extent for size in spatial):
        return "size"
    names = [_EXTENT_NAMES.get(name, name) for name in spatial_names(len(spatial))]
    return " and ".join(name for name, size in zip(names, spatial, strict=True) if size == extent)
