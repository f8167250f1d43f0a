"""The memory timeline of an analysed report (`archprof memory --plot`; matplotlib, loaded
only here): what the device holds while the forward runs, layer by layer."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from archprof.render.figures import check_plot_target, figure_text, image_bytes, named_layer_ticks
from archprof.report import Report, layer_label
from archprof.text import training_peak_place
from archprof.units import byte_unit, human_bytes

if TYPE_CHECKING:
    from archprof.fit import Fit


def memory_image(report: Report, path: str | os.PathLike, fit: Fit | None = None) -> bytes:
    """`memory_figure`, drawn in the format of `path`'s suffix."""
    return image_bytes(memory_figure(report, fit), check_plot_target(path))


def memory_figure(report: Report, fit: Fit | None = None):
    """Bytes held over the forward, one step per row in execution order: the parameters and
    buffers (always live), plus the activations live after the row and, above them, the most
    live while it ran. The peak is marked and named (a training report's: the forward's); a
    training report adds the sum of the parts, as if all were held at once (the memory
    table's row of that name), and the training step's peak, backward included;
    `fit` (--fit) draws its budget, and every size is then in the budget's units (binary
    where it was given in MiB). The axis starts at 0, so that heights compare as the sizes do
    (one from under the parameters' top drew ResNet-50's 11 MB of activations taller than its
    102 MB of parameters), and is in one unit, the largest the top reaches, so that its ticks
    are round numbers of it. A matplotlib Figure, made with the object API."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    budget = fit.budget_bytes if fit is not None else None
    binary = fit is not None and fit.binary

    def sized(value: int) -> str:
        return human_bytes(value, binary)

    totals = report.totals
    state = totals.param_bytes + totals.buffer_bytes
    called = [index for index, call in enumerate(report.columns["call"]) if call >= 0]
    steps = list(range(len(called)))
    after = [state + report.columns["live_bytes"][index] for index in called]
    during = [state + report.columns["peak_live_bytes"][index] for index in called]
    highest = max(*during, state, budget or 0, totals.training_memory_bytes or 0, totals.training_peak_bytes or 0, 1)
    scale, unit = byte_unit(highest, binary)

    def y(value: int) -> float:
        """A size at the axis's scale."""
        return value / scale

    figure = Figure(figsize=(9, 5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.fill_between(
        steps, 0, [y(state)] * len(steps), step="mid", color="tab:grey", alpha=0.35, label="parameters and buffers"
    )
    axes.fill_between(
        steps,
        y(state),
        [y(v) for v in after],
        step="mid",
        color="tab:blue",
        alpha=0.35,
        label="activations live after it",
    )
    axes.step(steps, [y(v) for v in during], where="mid", color="tab:blue", lw=1, label="most held while the layer ran")
    peak_label = peak_marker = None
    if during:
        top = max(steps, key=during.__getitem__)
        index = called[top]
        name = figure_text(layer_label(report.columns["layer"][index], report.columns["call"][index]))
        (peak_marker,) = axes.plot([top], [y(during[top])], "v", color="tab:red", markersize=8)
        # A training step's forward peak holds what autograd saved: not the step's (its own line).
        which = "forward peak" if report.training else "peak"
        peak_label = axes.annotate(
            f"{which} {sized(during[top])} at {name}",
            (top, y(during[top])),
            xytext=(-6, 6) if top > len(steps) / 2 else (6, 6),  # inside the axes
            textcoords="offset points",
            ha="right" if top > len(steps) / 2 else "left",
            color="tab:red",
            fontsize=8,
        )
    # The two training lines can lie a few pixels apart: the higher one's label goes above it, the
    # lower one's below it, so that neither label is struck through by the other line.
    estimate_lower = (
        report.training
        and totals.training_memory_bytes is not None
        and totals.training_peak_bytes is not None
        and totals.training_memory_bytes < totals.training_peak_bytes
    )
    if report.training and totals.training_memory_bytes is not None:
        axes.axhline(y(totals.training_memory_bytes), color="tab:purple", ls="--", lw=1)
        axes.annotate(
            f"sum of the parts {sized(totals.training_memory_bytes)} ({report.optimizer}), not the step's peak",
            (0, y(totals.training_memory_bytes)),
            xytext=(2, -3) if estimate_lower else (2, 3),
            textcoords="offset points",
            va="top" if estimate_lower else "bottom",
            color="tab:purple",
            fontsize=8,
        )
    if totals.training_peak_bytes is not None:
        place = figure_text(training_peak_place(totals.training_peak_layer, totals.training_peak_phase))
        peak_lower = report.training and totals.training_memory_bytes is not None and not estimate_lower
        axes.axhline(y(totals.training_peak_bytes), color="tab:purple", lw=1)
        axes.annotate(
            f"training step peak {sized(totals.training_peak_bytes)} {place}",
            (len(steps) - 1 if steps else 0, y(totals.training_peak_bytes)),
            xytext=(-2, -3) if peak_lower else (-2, 3),
            textcoords="offset points",
            ha="right",
            va="top" if peak_lower else "bottom",
            color="tab:purple",
            fontsize=8,
        )
    if budget is not None:
        # In black, its label at the right end: in the peak's red, at the left, it lay where an
        # early peak's spike struck it through (a CNN's peak is in its first layers).
        axes.axhline(y(budget), color="black", ls=":", lw=1, label="--fit budget")
        axes.annotate(
            f"--fit {sized(budget)}",
            (len(steps) - 1 if steps else 0, y(budget)),
            xytext=(-2, -10),
            textcoords="offset points",
            ha="right",
            color="black",
            fontsize=8,
        )
    axes.set_ylim(0, y(highest) * 1.15)
    axes.set_xlabel(f"layer, in execution order ({len(steps)} calls)")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole: no tick at layer 0.5
    columns = report.columns
    named_layer_ticks(axes, [layer_label(columns["layer"][index], columns["call"][index]) for index in called])
    axes.set_ylabel(f"memory held ({unit})")
    axes.set_title(
        f"Memory over the forward of {figure_text(report.model)}, input {report.input_text}, {report.dtype}"
        + (", training" if report.training else ""),
        fontsize=10,
    )
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    # The lines' labels first, each beside its line; the forward peak's, tied to a marker, last.
    _kept_apart(figure, axes, [label for label in axes.texts if label is not peak_label] + [peak_label], [peak_marker])
    return figure


# The most lines of text a label moves up or down from where it was drawn.
_MOST_MOVES = 8
# The room in pixels a label keeps from a line (which is drawn 1 point wide, and the figure
# saved at another resolution than laid out).
_ROOM = 2


def _kept_apart(figure, axes, labels, obstacles) -> None:
    """Place each label (an annotation; None: none) where no line drawn crosses it (the memory
    held, the budget's and the training lines) and it overlaps no obstacle (an artist that
    stays: a marker; None: none) nor a label placed before it: where it was drawn, else the
    nearest place a line of text up from there, else down (the memory drawn lies below the
    lines labelled and the peak's marker), inside the axes; where no such place is free, the
    nearest one down clear of the obstacles and labels alone. With --fit the budget, the sum
    of the parts and the step's peak lie close together by design, a peak near the top of the
    axes lies under them (resnet50 trained with adamw to 16 GB: its label was struck through
    by the memory held, and the curve ran through the budget's), and a spike can rise through
    a label."""
    labels = [label for label in labels if label is not None]
    figure.canvas.draw()  # the layout first: where each label lies depends on it
    renderer = figure.canvas.get_renderer()
    placed = [obstacle.get_window_extent(renderer) for obstacle in obstacles if obstacle is not None]
    lines = [line.get_transform().transform_path(line.get_path()) for line in axes.get_lines() if line not in obstacles]
    inside = axes.get_window_extent(renderer)
    moves = [*range(_MOST_MOVES + 1), *range(-1, -_MOST_MOVES - 1, -1)]  # where drawn, up, then down
    for label in labels:
        x, y = label.xyann
        step = label.get_window_extent(renderer).height * 72 / figure.dpi + 2  # its height in points, and a gap
        boxes = {}  # move -> the label's box there
        for move in moves:
            label.xyann = (x, y + move * step)
            box = label.get_window_extent(renderer)
            if inside.y0 <= box.y0 and box.y1 <= inside.y1 and not any(box.overlaps(other) for other in placed):
                boxes[move] = box
        clear = [
            move
            for move, box in boxes.items()
            if not any(line.intersects_bbox(box.padded(_ROOM), filled=False) for line in lines)
        ]
        down = [move for move in boxes if move <= 0]
        chosen = clear[0] if clear else down[0] if down else 0
        label.xyann = (x, y + chosen * step)
        placed.append(label.get_window_extent(renderer))
