"""Charts of one Report as matplotlib figures, and a figure as inline SVG (for the HTML
report). matplotlib is loaded only here, through its object API: pyplot's global state is
never touched, and no figure outlives its caller."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from archprof.errors import ArchprofError
from archprof.report import Report, layer_label
from archprof.units import human_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def require_matplotlib(what: str) -> None:
    """Fail with one line, before any work, where matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ArchprofError(
            f"{what} needs matplotlib, which is not installed: pip install 'archprof[plot]' (or matplotlib)"
        ) from None


def new_figure(width: float = 8, height: float = 4) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def memory_timeline_figure(report: Report) -> Figure:
    """Activation bytes live after each row, in execution order, and the most live while a
    row ran; the peak marked and named."""
    from matplotlib.ticker import FuncFormatter

    live = report.columns["live_bytes"]
    peaks = report.columns["peak_live_bytes"]
    steps = range(len(live))
    figure = new_figure()
    axes = figure.add_subplot()
    axes.fill_between(steps, live, step="mid", alpha=0.25, color="tab:blue", label="live after the row")
    axes.plot(steps, peaks, drawstyle="steps-mid", color="tab:blue", linewidth=1, label="most live while it ran")
    if peaks:
        top = max(steps, key=peaks.__getitem__)
        name = layer_label(report.columns["layer"][top], report.columns["call"][top]) or "(model)"
        axes.plot([top], [peaks[top]], "v", color="tab:red", markersize=8)
        axes.annotate(
            f"peak {human_bytes(peaks[top])} at {name}",
            (top, peaks[top]),
            textcoords="offset points",
            xytext=(6, 6),
            color="tab:red",
        )
        axes.set_ylim(0, peaks[top] * 1.15 or 1)
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: human_bytes(int(value))))
    axes.set_xlabel("layer, in execution order")
    axes.set_ylabel("activation memory")
    axes.set_title("Activation memory over the forward pass (parameters and buffers apart)", loc="left")
    axes.legend(loc="upper right", frameon=False)
    axes.grid(alpha=0.3)
    return figure


def receptive_field_figure(report: Report) -> Figure | None:
    """The receptive field of each row's output unit 0 along each spatial dimension, in
    execution order (rows without a numeric field left out); None when no row has one."""
    series: dict[int, tuple[list[int], list[int]]] = {}
    for step, field in enumerate(report.columns["receptive_field"]):
        if isinstance(field, tuple):
            for dim, size in enumerate(field):
                xs, ys = series.setdefault(dim, ([], []))
                xs.append(step)
                ys.append(size)
    if not series:
        return None
    figure = new_figure()
    axes = figure.add_subplot()
    names = _dimension_names(len(series))
    if all(series[dim] == series[0] for dim in series):  # a square field: one line says it
        series, names = {0: series[0]}, [" = ".join(names)]
    for dim, (xs, ys) in sorted(series.items()):
        axes.plot(xs, ys, marker=".", linewidth=1, label=names[dim])
    for size in sorted(set(report.input_shapes[0][2:] if report.input_shapes else ())):
        axes.axhline(size, linestyle="--", linewidth=0.8, color="grey")
        axes.annotate(f"input size {size}", (0, size), textcoords="offset points", xytext=(2, 3), color="grey")
    axes.set_xlabel("layer, in execution order")
    axes.set_ylabel("receptive field (input units)")
    axes.set_title("Receptive field of output unit 0", loc="left")
    axes.legend(loc="upper left", frameon=False)
    axes.grid(alpha=0.3)
    return figure


def _dimension_names(count: int) -> list[str]:
    return {1: ["length"], 2: ["height", "width"], 3: ["depth", "height", "width"]}.get(
        count, [f"dim {i}" for i in range(count)]
    )


def svg_text(figure: Figure, name: str) -> str:
    """The figure as an inline <svg> element; `name` salts its element ids, so that several
    charts on one page never share one."""
    from matplotlib import rc_context

    buffer = io.StringIO()
    with rc_context({"svg.hashsalt": name, "svg.fonttype": "path"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]
