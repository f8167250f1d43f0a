"""The roofline's names of the slowest layers stay readable where those layers sit close
together (several convolutions of one arithmetic intensity, as in ResNet's last stage):
no two labels overlap, each lies inside the axes, and every one of the slowest is named.

The reports are profiled for real on the CPU (LeNet's, a stack of long-named layers), with
the measured columns of their slowest rows planted in one cluster: where the points land
does not hang on the timings."""

import pytest
import torch
from torch import nn

import archprof
from archprof.report import layer_label

pytest.importorskip("matplotlib")

CEILINGS = {"peak_flops": "100G", "bandwidth": "10GB/s"}  # given: no micro-benchmark


@pytest.fixture(scope="module")
def lenet():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return archprof.profile("lenet5", device="cpu", warmup=0, repeat=1, **CEILINGS)
    finally:
        torch.set_num_threads(threads)


def _clustered(report, intensity: float, rate: float, spread: float):
    """`report` with its eight first timed rows the slowest, at (`intensity`, `rate`), each
    `spread` (a factor) up and right of the one before; ridge 100G / 10GB/s = 10 FLOPs/byte."""
    columns = report.columns
    timed = [
        i for i, value in enumerate(columns["achieved_flops_per_s"]) if value and columns["arithmetic_intensity"][i]
    ]
    for rank, index in enumerate(timed[:8]):
        columns["arithmetic_intensity"][index] = intensity * spread**rank
        columns["achieved_flops_per_s"][index] = rate * spread**rank
        columns["time_ms"][index] = 100.0 - rank  # far slower than the rest (their times are under 100 ms)
    return report


@pytest.mark.parametrize(
    ("intensity", "rate", "spread"),
    [
        (2.0, 1.2e10, 1.01),  # mid-plot, a hair apart: ResNet's last stage's convolutions
        (2.0, 1.2e10, 1.0),  # on one spot
        (400.0, 9.9e10, 1.0),  # on one spot in the top right corner, under the peak and its label
        (0.01, 1e5, 1.0),  # on one spot in the bottom left corner
    ],
)
@pytest.mark.parametrize("label_top", [6, 8])
@pytest.mark.parametrize("dpi", [100, 150])  # the figure's own, and the one a --plot PNG is saved at
def test_the_slowest_layers_names_never_overlap_and_stay_inside_the_axes(
    lenet, intensity, rate, spread, label_top, dpi
):
    from copy import deepcopy

    report = _clustered(deepcopy(lenet), intensity, rate, spread)
    _, names, unnamed = _drawn_names(report, label_top, dpi)
    assert not unnamed and sorted(names) == sorted(_slowest(report)[:label_top])


def test_names_with_no_room_left_are_left_out_and_said_so_under_the_plot():
    """90 long names on one spot: no column of them fits in the axes. Those that fit are drawn
    as ever; the rest are left out, never drawn over another, and the note under the plot
    counts them."""

    class Long(nn.Module):
        def __init__(self):
            super().__init__()
            for index in range(90):
                self.add_module(f"a_rather_long_name_for_a_layer_{index:02d}", nn.Linear(4, 4))

        def forward(self, x):
            for layer in self.children():
                x = layer(x)
            return x

    report = archprof.profile(Long(), input_size=(4,), device="cpu", warmup=0, repeat=1, **CEILINGS)
    columns = report.columns
    for index, rate in enumerate(columns["achieved_flops_per_s"]):
        if rate:
            columns["arithmetic_intensity"][index], columns["achieved_flops_per_s"][index] = 2.0, 1.2e10
    figure, names, unnamed = _drawn_names(report, 90, 100)
    assert names and unnamed and sorted(names + unnamed) == sorted(_slowest(report))
    note = " ".join(text.get_text() for text in figure.axes[1].texts)
    assert f"{len(unnamed)} of the 90 slowest layers are not named on the plot, for want of room: " in note


def _slowest(report) -> list[str]:
    """The timed rows' names, slowest first."""
    rows = [row for row in report.rows() if row["arithmetic_intensity"] and row["achieved_flops_per_s"]]
    return [layer_label(row["layer"], row["call"]) for row in sorted(rows, key=lambda r: -r["time_ms"])]


def _drawn_names(report, label_top: int, dpi: int):
    """The roofline of `report`, its `label_top` slowest rows named, drawn at `dpi`; checked: no
    name overlaps another, another text or the legend, each lies inside the axes and is tied to
    its point (beside it, or a leader line runs to it). The figure, the names drawn, those not."""
    from archprof.render.roofline import roofline_figure

    figure = roofline_figure(report, label_top=label_top)
    figure.set_dpi(dpi)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    axes = figure.axes[0]
    points = {
        layer_label(row["layer"], row["call"]): (row["arithmetic_intensity"], row["achieved_flops_per_s"])
        for row in report.rows()
    }
    slowest = _slowest(report)[:label_top]
    labels = [text for text in axes.texts if text.get_text() in slowest]
    boxes = [text.get_window_extent(renderer) for text in labels]
    frame = axes.get_window_extent(renderer)
    for text, box in zip(labels, boxes, strict=True):
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, text
    overlapping = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :] if a.overlaps(b)]
    assert not overlapping
    others = [axes.get_legend(), *(text for text in axes.texts if text.get_text() and text not in labels)]
    assert not any(box.overlaps(other.get_window_extent(renderer)) for box in boxes for other in others)
    leaders = {tuple(text.xy) for text in axes.texts if not text.get_text() and hasattr(text, "xy")}
    for text, box in zip(labels, boxes, strict=True):
        point = points[text.get_text()]
        assert tuple(text.xy) == point
        x, y = axes.transData.transform(point)
        gap = max(box.x0 - x, x - box.x1, box.y0 - y, y - box.y1, 0)  # from the point to the label
        assert gap < 20 * dpi / 72 or point in leaders, (text.get_text(), gap)
    names = [text.get_text() for text in labels]
    return figure, names, [name for name in slowest if name not in names]


def _every_text_inside_and_axes_wide(figure) -> None:
    """Each text of the figure lies inside it, and its plot keeps most of its width."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    frame = figure.get_window_extent(renderer)
    texts = [text for axes in figure.axes for text in axes.texts if text.get_text()]
    texts += [axes.title for axes in figure.axes if axes.get_title()]
    for text in texts:
        box = text.get_window_extent(renderer)
        assert frame.x0 - 1 <= box.x0 and box.x1 <= frame.x1 + 1, text.get_text()
    assert figure.axes[0].get_window_extent(renderer).width > frame.width / 2


class _LongNames(nn.Module):
    """Convolutions named 300, 100 and 40 characters long, the 100's the peak of memory."""

    def __init__(self):
        super().__init__()
        self.add_module("a" * 300, nn.Conv2d(3, 64, 3, padding=1))
        self.add_module("b" * 100, nn.Conv2d(64, 8, 3, padding=1))
        self.add_module("c" * 40, nn.Conv2d(8, 8, 3, padding=1))

    def forward(self, x):
        for layer in self.children():
            x = layer(x)
        return x


def test_long_layer_names_are_cut_in_their_middle_on_the_memory_plot():
    """A 100-character peak layer ran off the image and squeezed the axes to a third."""
    from archprof.render.memory_plot import memory_figure

    report = archprof.analyze(_LongNames(), input_size=(3, 16, 16))
    figure = memory_figure(report)
    (peak,) = [text.get_text() for text in figure.axes[0].texts if text.get_text().startswith("peak ")]
    assert peak.endswith(" at " + "b" * 23 + "…" + "b" * 24)
    _every_text_inside_and_axes_wide(figure)


def test_long_layer_names_are_cut_in_their_middle_on_the_roofline_and_in_its_note():
    """The note under the plot named a 300-character layer, which ran off the image, and
    never reached the two after it."""
    from archprof.render.roofline import roofline_figure

    report = archprof.profile(_LongNames(), input_size=(3, 16, 16), device="cpu", warmup=0, repeat=1, **CEILINGS)
    columns = report.columns
    for index, rate in enumerate(columns["achieved_flops_per_s"]):
        if rate:  # all on one spot: not every name finds room, and the note names those left out
            columns["arithmetic_intensity"][index], columns["achieved_flops_per_s"][index] = 2.0, 1.2e10
    figure = roofline_figure(report)
    texts = [text.get_text() for axes in figure.axes for text in axes.texts]
    assert not any("a" * 49 in text or "b" * 49 in text for text in texts)
    assert any("c" * 40 in text for text in texts)  # 40 characters: whole
    _every_text_inside_and_axes_wide(figure)
