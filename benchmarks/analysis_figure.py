"""The picture of bench_analysis.py's sections 4 and 5: per model, archprof's speed-up over
the fastest peer against the 10x goal, and its time per traced operator against what 10x
leaves for everything and against the dispatch-mode floor.

Drawn with matplotlib's object API (no pyplot state) and written as SVG with its text kept
as text and no date, so that a rerun changes only what was measured."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

GOAL = 10.0  # the target: at least 10x the fastest peer
MET, NOT_MET = "tab:green", "tab:orange"
PASSES, TRACE = "tab:blue", "tab:gray"
TIME_LIMIT = 160  # microseconds per operator shown


@dataclass(frozen=True)
class ModelSpeed:
    """One model's bars: its speed-up (the median of paired ratios) with the middle half of
    those ratios, and its microseconds per traced operator."""

    name: str
    group: str  # "torchvision and timm", "built-in"
    speedup: float
    middle: tuple[float, float]
    peer: str  # the fastest peer
    archprof_us: float
    passes_us: float
    floor_us: float
    tenfold_us: float  # the fastest peer's time over ten, per operator


def speed_figure(models: Sequence[ModelSpeed]):
    """Two panels sharing the models as rows, groups apart: the speed-up (log scale, the
    middle half as a whisker, the goal as a dashed line) and the time per operator (the
    passes, then the trace and the rest, with the floor and what 10x leaves marked)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    rows, labels, previous = [], [], None
    for model in models:
        position = (rows[-1] + 1 if rows else 0) + (0.8 if previous not in (None, model.group) else 0)
        rows.append(position)
        labels.append(model.name)
        previous = model.group

    figure = Figure(figsize=(12, 0.32 * rows[-1] + 2.2), layout="constrained")
    FigureCanvasAgg(figure)
    speed, time = figure.subplots(1, 2, sharey=True, width_ratios=(1, 1.1))
    times = FuncFormatter(lambda value, _: f"{value:g}x")

    colours = [MET if m.speedup >= GOAL else NOT_MET for m in models]
    low = [m.speedup - m.middle[0] for m in models]
    high = [m.middle[1] - m.speedup for m in models]
    speed.barh(rows, [m.speedup for m in models], color=colours, xerr=[low, high], capsize=2, error_kw={"lw": 0.8})
    speed.axvline(GOAL, color="black", linestyle="--", linewidth=1)
    speed.text(GOAL, -1.1, " goal: 10x", fontsize=8, va="center")
    for y, model in zip(rows, models, strict=True):
        shown = math.floor(model.speedup * 10) / 10  # rounded down: 9.96x is not the goal's 10.0x
        speed.text(model.middle[1] * 1.08, y, f"{shown:.1f}x ({model.peer})", fontsize=7, va="center")
    speed.set_xscale("log")
    speed.xaxis.set_major_formatter(times)
    speed.set_xlim(0.5, max(m.middle[1] for m in models) * 12)
    speed.set_xlabel("archprof's speed-up over the fastest peer (median of paired runs; whisker: middle half)")

    # A linear axis (stacked bars on a log one would hide the trace's share), cut at
    # TIME_LIMIT: a model of one or two operators costs far more per operator; what lies
    # beyond is drawn at the edge, its bar's figure written out.
    passes = [min(m.passes_us, TIME_LIMIT) for m in models]
    rest = [min(m.archprof_us, TIME_LIMIT) - p for m, p in zip(models, passes, strict=True)]
    time.barh(rows, passes, color=PASSES)
    time.barh(rows, rest, left=passes, color=TRACE)
    for y, model in zip(rows, models, strict=True):
        figure_text = f"{model.archprof_us:,.0f}"
        if model.archprof_us > TIME_LIMIT:  # inside the cut bar's end
            time.text(TIME_LIMIT - 2, y, f"{figure_text} ›", fontsize=7, va="center", ha="right", color="white")
        else:
            time.text(model.archprof_us + 2, y, figure_text, fontsize=7, va="center")
    time.scatter([min(m.floor_us, TIME_LIMIT) for m in models], rows, marker="|", s=120, color="black", zorder=3)
    tenfold = [(m.tenfold_us, y) for m, y in zip(models, rows, strict=True)]
    inside = [(x, y) for x, y in tenfold if x <= TIME_LIMIT]
    beyond = [y for x, y in tenfold if x > TIME_LIMIT]
    time.scatter([x for x, _ in inside], [y for _, y in inside], marker="D", s=18, color="tab:red", zorder=3)
    time.scatter([TIME_LIMIT] * len(beyond), beyond, marker=">", s=24, color="tab:red", zorder=3, clip_on=False)
    time.set_xlim(0, TIME_LIMIT)
    time.set_xlabel("microseconds per traced operator (analysis only)")
    time.legend(
        handles=[
            Patch(color=PASSES, label="archprof's passes"),
            Patch(color=TRACE, label="archprof's trace and the rest"),
            Line2D([], [], marker="|", markersize=10, color="black", linestyle="", label="dispatch-mode floor"),
            Line2D([], [], marker="D", markersize=5, color="tab:red", linestyle="", label="what 10x leaves (>: more)"),
        ],
        fontsize=7,
        loc="lower right",
    )

    speed.set_yticks(rows, labels, fontsize=8)
    speed.invert_yaxis()
    for axes in (speed, time):
        axes.grid(axis="x", which="major", linewidth=0.4, alpha=0.5)
    figure.suptitle("archprof.analyze against torchinfo, fvcore and FlopCounterMode", fontsize=11)
    return figure


def svg(figure) -> str:
    """The figure as SVG text: its text kept as text, no date, fixed element ids."""
    from matplotlib import rc_context

    buffer = io.StringIO()
    with rc_context({"svg.hashsalt": "benchmark_analysis", "svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()
