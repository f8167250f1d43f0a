"""The receptive-field plot: field size and effective stride against depth (matplotlib,
loaded only here)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from archprof.output import open_output
from archprof.render.roofline import check_plot_target
from archprof.report import Report


def plot_fields(report: Report, spreads: Sequence, path: str | os.PathLike) -> None:
    """Per row, in execution order: the centre unit's field size and the effective stride,
    one line per spatial dimension, the input's size marked; rows that read the whole input
    ("global") are drawn at the input's size. Saved to `path` (format from its suffix),
    atomically, without touching pyplot's global state."""
    target = check_plot_target(path)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    spatial = report.input_shapes[0][2:] if report.input_shapes else ()
    figure = Figure(figsize=(9, 6), layout="constrained")
    FigureCanvasAgg(figure)
    sizes_axes, strides_axes = figure.subplots(2, 1, sharex=True)
    rows = report.rows()
    for axis, extent in enumerate(spatial):
        depth, sizes, stride_depth, strides = [], [], [], []
        for index, (row, spread) in enumerate(zip(rows, spreads, strict=True)):
            if row["receptive_field"] == "input":
                depth.append(index)
                sizes.append(extent)
            elif spread is not None and spread[axis] is not None:
                depth.append(index)
                sizes.append(spread[axis].centre)
            if isinstance(row["effective_stride"], tuple):
                stride_depth.append(index)
                strides.append(float(row["effective_stride"][axis]))
        style = ("-", "--", ":")[axis % 3]  # equal dimensions draw one line over the other
        line = sizes_axes.plot(depth, sizes, ls=style, drawstyle="steps-post", label=f"dimension {axis + 1}")[0]
        sizes_axes.axhline(extent, color=line.get_color(), ls="-.", lw=1, label=f"input size {extent}")
        strides_axes.plot(stride_depth, strides, ls=style, drawstyle="steps-post", color=line.get_color())
    sizes_axes.set_yscale("log")
    sizes_axes.set_ylabel("field size (centre unit, pixels)")
    sizes_axes.legend(fontsize=8)
    sizes_axes.set_title(f"{report.model}: receptive field against depth", fontsize=10)
    strides_axes.set_yscale("log")
    strides_axes.set_ylabel("effective stride (pixels)")
    strides_axes.set_xlabel("layer (in execution order)")
    for axes in (sizes_axes, strides_axes):
        axes.grid(True, which="both", alpha=0.3)
    with open_output(target, binary=True) as handle:
        figure.savefig(handle, format=target.suffix.lower().lstrip("."), dpi=150)
