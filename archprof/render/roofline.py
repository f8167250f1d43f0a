"""The roofline plot of a profiled report (matplotlib, loaded only here)."""

from __future__ import annotations

import os

from archprof.errors import ArchprofError
from archprof.render.figures import check_plot_target, figure_text, image_bytes
from archprof.render.roofline_labels import FULL_AREA, label_slowest, marker_area
from archprof.report import Report
from archprof.text import counted
from archprof.units import bandwidth_text, flops_rate_text, ridge_text

BOUND_COLOURS = {"compute": "tab:orange", "memory": "tab:blue"}
ABOVE_COLOUR = "tab:red"
KEY_MARKER_SIZE = 5  # points: the colour key's markers, under the size key's 5% (sqrt(600 x 0.05) = 5.5)


def roofline_image(report: Report, path: str | os.PathLike, label_top: int = 6) -> bytes:
    """The timed rows on the roofline (`roofline_figure`), drawn in the format of `path`'s suffix."""
    return image_bytes(roofline_figure(report, label_top), check_plot_target(path))


def roofline_figure(report: Report, label_top: int = 6):
    """The timed rows on the device's roofline, log-log: arithmetic intensity (FLOPs per
    byte moved) against achieved FLOP/s. The roofs and the ridge are labelled with their
    figures and where they came from; compute- and memory-bound rows have their own
    colours; a marker's area is the row's share of the forward; the `label_top` slowest
    rows are named (where a label fits without overlapping another); a row above the roof
    is drawn in red and a note under the plot says why that happens. A matplotlib Figure,
    made with the object API (pyplot's global state is never touched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import EngFormatter, FuncFormatter

    measured = report.measured
    if measured is None:
        raise ArchprofError("the roofline needs a profiled report (archprof.profile)")
    ceilings = measured.ceilings
    rows = [row for row in report.rows() if row["arithmetic_intensity"] and row["achieved_flops_per_s"]]
    above = [row for row in rows if ceilings.above_roof(row["achieved_flops_per_s"], row["arithmetic_intensity"])]

    figure = Figure(figsize=(9, 6.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes, notes = figure.subplots(2, 1, height_ratios=(12, 1))
    intensities = [row["arithmetic_intensity"] for row in rows]
    low = min([*intensities, ceilings.ridge]) / 4
    high = max([*intensities, ceilings.ridge]) * 4
    xs = [low * (high / low) ** (i / 200) for i in range(201)]
    axes.plot(xs, [ceilings.roof(x) for x in xs], color="black", lw=1.5, label="roofline")
    axes.axvline(ceilings.ridge, color="grey", ls=":", lw=1)

    axes.text(
        high / 1.3,
        ceilings.peak_flops_per_s * 1.08,
        f"peak {flops_rate_text(ceilings.peak_flops_per_s)} ({ceilings.origin('peak_flops')})",
        ha="right",
        va="bottom",
        fontsize=8,
    )
    bandwidth_label = axes.text(
        ceilings.ridge,
        ceilings.peak_flops_per_s,
        f"bandwidth {bandwidth_text(ceilings.bandwidth_bytes_per_s)} ({ceilings.origin('bandwidth')})",
        fontsize=8,
        rotation_mode="anchor",
    )
    bandwidth_label.set_in_layout(False)  # placed inside the axes once they are laid out
    ridge_label = axes.text(
        ceilings.ridge,
        0.01,
        "",
        transform=axes.get_xaxis_transform(),  # x in data, y in axes units: at the bottom, under the points
        va="bottom",
        fontsize=7,
        color="dimgrey",
        backgroundcolor="white",
    )
    ridge_label.set_in_layout(False)  # placed inside the axes once they are laid out

    total_ms = sum(row["time_ms"] for row in rows) or 1.0
    for bound, colour in BOUND_COLOURS.items():
        chosen = [row for row in rows if row["bound"] == bound]
        if chosen:
            axes.scatter(
                [row["arithmetic_intensity"] for row in chosen],
                [row["achieved_flops_per_s"] for row in chosen],
                s=[marker_area(row, total_ms) for row in chosen],
                c=colour,
                alpha=0.6,
                edgecolors="black",
                linewidths=0.5,
                label=f"{bound}-bound layers",
            )
    if above:
        axes.scatter(
            [row["arithmetic_intensity"] for row in above],
            [row["achieved_flops_per_s"] for row in above],
            s=[marker_area(row, total_ms) * 1.8 for row in above],
            facecolors="none",
            edgecolors=ABOVE_COLOUR,
            linewidths=1.5,
            label="above the roof",
        )

    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.margins(x=0.05, y=0.2)
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.yaxis.set_major_formatter(EngFormatter(unit="FLOP/s", places=0))
    axes.set_xlabel("arithmetic intensity (FLOPs per byte moved; FLOPs = flops + elementwise_flops; log scale)")
    axes.set_ylabel("achieved FLOP/s (log scale)")
    axes.set_title(
        f"Roofline of {figure_text(report.model)} on {measured.device_name} ({report.dtype}), batch {measured.batch}",
        fontsize=10,
    )
    axes.grid(True, which="both", alpha=0.3)
    sizes = [
        Line2D([], [], ls="", marker="o", markersize=(FULL_AREA * share) ** 0.5, color="grey", alpha=0.6, label=text)
        for share, text in ((0.25, "25% of the time"), (0.05, "5% of the time"))
    ]
    handles, _ = axes.get_legend_handles_labels()
    handles = [_key_marker(handle) for handle in handles]
    axes.legend(handles=[*handles, *sizes], loc="lower right", fontsize=7, labelspacing=1.2, borderpad=1)
    if above:
        axes.text(
            0.01,
            0.99,
            f"{counted(len(above), 'layer')} above the roof (red rings): see the note below",
            transform=axes.transAxes,
            ha="left",
            va="top",
            fontsize=9,
            color=ABOVE_COLOUR,
            fontweight="bold",
        )
    notes.axis("off")
    caption = roofline_caption(len(rows), above, ceilings)
    note = notes.text(0, 1, caption, fontsize=7, ha="left", va="top", wrap=True)
    figure.draw_without_rendering()  # lays the figure out: where the labels land is known
    _place_ridge_label(figure, axes, ridge_label, ceilings.ridge)
    _place_bandwidth_label(figure, axes, bandwidth_label, ceilings, low)
    drawn, unnamed = label_slowest(figure, axes, rows, label_top, total_ms)
    if unnamed:  # said under the plot, in a line that takes room from the axes: the names are placed again
        note.set_text(f"{caption}\n{_unnamed_note(unnamed, label_top)}")
        figure.draw_without_rendering()
        for artist in drawn:
            artist.remove()
        _, unnamed = label_slowest(figure, axes, rows, label_top, total_ms)
        note.set_text(f"{caption}\n{_unnamed_note(unnamed, label_top)}" if unnamed else caption)
    return figure


def _unnamed_note(names: list[str], count: int) -> str:
    """The line under the plot that says which of the slowest layers are not named on it: the
    first few, so that it stays one line (the names on the plot are placed for the room it leaves)."""
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"{len(names)} of the {count} slowest layers are not named on the plot, for want of room: {shown}."


def _key_marker(handle):
    """A scatter's legend entry as a marker of one fixed size: in the legend a colour says the bound
    (or a red ring, above the roof) and only the size key says a share of the time; left to itself,
    the legend would draw each colour at the size of one of its layers."""
    from matplotlib.collections import PathCollection
    from matplotlib.lines import Line2D

    if not isinstance(handle, PathCollection):
        return handle
    rings = handle.get_label() == "above the roof"
    return Line2D(
        [],
        [],
        ls="",
        marker="o",
        markersize=KEY_MARKER_SIZE * (1.4 if rings else 1),
        markerfacecolor="none" if rings else handle.get_facecolor()[0],
        markeredgecolor=handle.get_edgecolor()[0],
        markeredgewidth=handle.get_linewidths()[0],
        label=handle.get_label(),
    )


def roofline_caption(count: int, above: list, ceilings) -> str:
    """What the plot shows, and why a row can sit above the roof."""
    lines = [
        f"{counted(count, 'timed layer')}; a marker's area is the layer's share of the forward. Roof: "
        "min(peak, intensity x bandwidth), the device's ceilings"
        + (f" ({ceilings.remeasure_hint.removesuffix('.')})." if ceilings.remeasure_hint else ".")
    ]
    over_peak = sum(1 for row in above if row["achieved_flops_per_s"] > ceilings.peak_flops_per_s)
    if over_peak:
        lines.append(
            f"WARNING: {counted(over_peak, 'layer')} ran above the peak FLOP/s, red rings: the peak was measured low "
            "(a busy machine) or given low; their place on the plot is right, the roof is not."
        )
    if len(above) > over_peak:
        lines.append(
            f"{counted(len(above) - over_peak, 'memory-bound layer')} ran faster than their bytes / bandwidth "
            "allows, red rings: their data came from caches, faster than the device memory the bandwidth measures."
        )
    return "\n".join(lines)


def _place_ridge_label(figure, axes, label, ridge: float) -> None:
    """The ridge's label at the first of `_ridge_label_places` that lies inside the axes and
    overlaps neither the legend nor another text: centred on a ridge near an edge it went out
    of the axes, and on a ridge right of the middle it lay under the legend (lower right)."""
    renderer = figure.canvas.get_renderer()
    frame = axes.get_window_extent(renderer)
    legend = axes.get_legend().get_window_extent(renderer)
    others = [legend, *(text.get_window_extent(renderer) for text in axes.texts if text is not label)]
    above_legend = axes.transAxes.inverted().transform((0, legend.y1))[1] + 0.01
    for transform, x, y, ha, text in _ridge_label_places(axes, ridge, above_legend):
        label.set(transform=transform, x=x, y=y, ha=ha, text=text)
        box = label.get_window_extent(renderer)
        if frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1) and not any(map(box.overlaps, others)):
            return


def _ridge_label_places(axes, ridge: float, above_legend: float):
    """Where the ridge's label may go, best first, as (transform, x, y, ha, text), y in axes
    units: on the ridge, its "|" on the dotted line, memory-bound left of it and compute-bound
    right, centred or, near an edge, one side said in words; else at the left edge, all said in
    words. Each at the bottom, under the points, then over the legend."""
    heading = f"ridge {ridge_text(ridge)} FLOPs/byte"
    beside = (
        ("center", f"{heading}\n← memory-bound | compute-bound →"),
        ("right", f"{heading}, compute-bound right of it\n← memory-bound |"),
        ("left", f"{heading}, memory-bound left of it\n| compute-bound →"),
    )
    on_ridge = axes.get_xaxis_transform()  # x in data: the ridge's
    for y in (0.01, above_legend):
        for ha, text in beside:
            yield on_ridge, ridge, y, ha, text
    words = f"{heading} (the dotted line):\nmemory-bound left of it, compute-bound right of it"
    for y in (0.01, above_legend):
        yield axes.transAxes, 0.01, y, "left", words


def _slope_degrees(axes, ceilings, x: float) -> float:
    """The angle on the page of the memory roof at `x` (it depends on the axes' limits and shape)."""
    import math

    (x0, y0), (x1, y1) = axes.transData.transform([(x, ceilings.roof(x)), (x * 1.5, ceilings.roof(x * 1.5))])
    return math.degrees(math.atan2(y1 - y0, x1 - x0))


def _place_bandwidth_label(figure, axes, label, ceilings, low: float) -> None:
    """The memory roof's label at the first of `_bandwidth_label_places` that lies inside the
    axes and overlaps no other text (the peak's, the ridge's): on a roof short and steep on
    the page, one rotated along it went out through the top, and past a ridge at the right
    edge, out through the side."""
    renderer = figure.canvas.get_renderer()
    frame = axes.get_window_extent(renderer)
    others = [text.get_window_extent(renderer) for text in axes.texts if text is not label]
    label.set_rotation(0)
    width = label.get_window_extent(renderer).width
    for x, y, rotation, ha, va in _bandwidth_label_places(axes, ceilings, low, width):
        label.set(x=x, y=y, rotation=rotation, ha=ha, va=va)
        box = label.get_window_extent(renderer)
        if frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1) and not any(map(box.overlaps, others)):
            return


def _bandwidth_label_places(axes, ceilings, low: float, width: float):
    """Where the memory roof's label may go, best first, as (x, y, rotation, ha, va): along
    the roof, rotated to its slope and ending before the ridge, then half a label further
    down the roof each time, while the roof is drawn there; else level, left of the ridge
    over the roof's top, then right of it, over the compute roof and under it."""
    import math

    ridge, peak = ceilings.ridge, ceilings.peak_flops_per_s
    angle = _slope_degrees(axes, ceilings, ridge / 1.5)
    decade_on_page = axes.transData.transform((ridge, peak))[0] - axes.transData.transform((ridge / 10, peak))[0]
    decades = width * math.cos(math.radians(angle)) / decade_on_page  # what the rotated label spans along x
    start = min(max(ridge / 30, low * 1.2), ridge / 10**decades)
    while start >= low * 1.2:
        yield start, ceilings.roof(start) * 1.2, angle, "left", "bottom"
        start /= 10 ** (decades / 2)
    yield ridge, peak * 1.08, 0, "right", "bottom"
    yield ridge * 1.1, peak * 1.08, 0, "left", "bottom"
    yield ridge * 1.1, peak / 1.08, 0, "left", "top"
