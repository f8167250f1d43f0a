"""The receptive-field plot: field size and effective stride against depth (matplotlib,
loaded only here)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from archprof.render.figures import check_plot_target, figure_text, save_figure
from archprof.report import Report


def plot_fields(report: Report, spreads: Sequence, path: str | os.PathLike) -> None:
    """Draw `fields_figure` and save it to `path` (format from its suffix), atomically."""
    target = check_plot_target(path)
    save_figure(fields_figure(report, spreads), target)


def fields_figure(report: Report, spreads: Sequence | None = None):
    """Per row, in execution order: the field size and the effective stride, one line per
    spatial dimension, the input's size marked; rows that read the whole input ("global")
    are drawn at the input's size. The field is the centre unit's where `spreads` (per row,
    `archprof.passes.receptive_field.spreads`) are given, else unit 0's (the report's
    column). A matplotlib Figure, made with the object API."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

    spatial = report.input_shapes[0][2:] if report.input_shapes else ()
    figure = Figure(figsize=(9, 6), layout="constrained")
    FigureCanvasAgg(figure)
    sizes_axes, strides_axes = figure.subplots(2, 1, sharex=True)
    rows = report.rows()
    drawn_extents = set()  # a square input's size is one line and one legend entry, not one a dimension
    for axis, extent in enumerate(spatial):
        depth, sizes, stride_depth, strides = [], [], [], []
        for index, row in enumerate(rows):
            size = _field_size(row, spreads[index] if spreads is not None else None, axis, extent)
            if size is not None:
                depth.append(index)
                sizes.append(size)
            if isinstance(row["effective_stride"], tuple):
                stride_depth.append(index)
                strides.append(float(row["effective_stride"][axis]))
        style = ("-", "--", ":")[axis % 3]  # equal dimensions draw one line over the other
        line = sizes_axes.plot(depth, sizes, ls=style, drawstyle="steps-post", label=f"dimension {axis + 1}")[0]
        if extent not in drawn_extents:
            drawn_extents.add(extent)
            sizes_axes.axhline(extent, color=line.get_color(), ls="-.", lw=1, label=f"input size {extent}")
        strides_axes.plot(stride_depth, strides, ls=style, drawstyle="steps-post", color=line.get_color())
    unit = "centre unit" if spreads is not None else "unit 0"
    sizes_axes.set_ylabel(f"field size ({unit}, pixels, log scale)")
    sizes_axes.legend(fontsize=8)
    sizes_axes.set_title(f"{figure_text(report.model)}: receptive field against depth", fontsize=10)
    strides_axes.set_ylabel("effective stride (pixels, log scale)")
    strides_axes.set_xlabel("layer (in execution order)")
    strides_axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # rows are whole: no tick at layer 0.5
    for axes in (sizes_axes, strides_axes):
        # Base 2 (strides are powers of two; fields grow by them), ticked as plain numbers: 2, 4, 8, not 2 x 10^0.
        axes.set_yscale("log", base=2)
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.yaxis.set_minor_formatter(NullFormatter())
        axes.grid(True, which="both", alpha=0.3)
    return figure


def _field_size(row: dict, spread, axis: int, extent: int) -> int | None:
    if row["receptive_field"] == "input":
        return extent
    if spread is not None:
        return spread[axis].centre if spread[axis] is not None else None
    field = row["receptive_field"]
    return field[axis] if isinstance(field, tuple) else None
