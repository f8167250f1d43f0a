"""The names of a roofline's slowest layers, placed beside their markers: slow layers sit
together (convolutions of one intensity), so the labels of points that close are stacked in a
column beside them, each tied to its point by a thin leader line where it had to move, none
over another label, a marker where it can help it, or the plot's other texts (matplotlib,
loaded by the caller)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from archprof.render.figures import figure_text
from archprof.report import layer_label

# Marker area (points²) of a row that takes the whole forward; a row's area is its share of it.
FULL_AREA = 600
MIN_AREA = 12
# Under a layer's name: the roof or a grid line may run behind it; its pad (in font sizes) is under the
# room left between two labels.
PLATE = {"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8}


def label_slowest(figure, axes, rows: list, count: int, total_ms: float) -> tuple[list, list[str]]:
    """Name the `count` slowest rows. Slow layers often sit together (convolutions of one
    intensity), where labels beside their own points covered each other and the points: the
    labels of points that close form a group, stacked in a column beside it in the order of
    their points' heights, each tied to its point by a thin leader line where it had to move
    away from it (`_place_column`). Returns the artists drawn and the names left out for want
    of room (a group with no room for its column is placed one label at a time)."""
    renderer = figure.canvas.get_renderer()
    pixels = renderer.points_to_pixels(1)  # offsets are in points: they scale with the dpi a file is saved at
    pad = 2 * pixels
    room = tuple(axes.get_window_extent(renderer).padded(-pad).extents)
    texts = [axes.get_legend(), *axes.texts]  # the legend, the roofs' labels, the ridge's
    taken = [tuple(text.get_window_extent(renderer).padded(pad).extents) for text in texts]
    markers = [_marker_extents(axes, row, total_ms, pixels) for row in rows]
    labels = []
    for row in sorted(rows, key=lambda r: -r["time_ms"])[:count]:
        point = (row["arithmetic_intensity"], row["achieved_flops_per_s"])
        name = figure_text(layer_label(row["layer"], row["call"]))
        text = axes.annotate(
            name, point, xytext=(0, 0), textcoords="offset points", fontsize=7, va="center", bbox=PLATE
        )
        text.set_in_layout(False)  # placed inside the axes once they are laid out
        size = text.get_window_extent(renderer)
        x0, _, x1, _ = _marker_extents(axes, row, total_ms, pixels)
        x, y = axes.transData.transform(point)
        labels.append(_Label(text, x, y, (x1 - x0) / 2 + pad, size.width, size.height))
    groups = []
    for label in labels:  # slowest first: a group is placed where its slowest label would be
        group = [label]
        for other in [other for other in groups if any(_near(label, member) for member in other)]:
            groups.remove(other)
            group += other
        groups.append(group)
    groups.sort(key=lambda group: min(map(labels.index, group)))
    drawn, unnamed = [], []
    for group in groups:
        spots = _place_column(group, room, taken, markers, pad)
        if spots is None:  # no room for the whole column: one label at a time
            spots = [
                spot for label in group for spot in _place_column([label], room, taken, markers, pad) or [(label, None)]
            ]
        for label, anchor in spots:
            if anchor is None:
                label.text.remove()
                unnamed.append(label.text.get_text())
                continue
            offset = ((anchor[0] - label.x) / pixels, (anchor[1] - label.y) / pixels)  # in points
            label.text.set(x=offset[0], y=offset[1], ha="left" if anchor[0] > label.x else "right")
            drawn.append(label.text)
            moved = abs(anchor[1] - label.y) > label.height / 2 or abs(abs(anchor[0] - label.x) - label.beside) > pad
            if moved:  # up or down from its point, or further out than beside its marker
                leader = axes.annotate(
                    "",
                    label.text.xy,
                    xytext=offset,
                    textcoords="offset points",
                    arrowprops={
                        "arrowstyle": "-",
                        "color": "dimgrey",
                        "lw": 0.5,
                        "shrinkA": 0,
                        "shrinkB": (label.beside - pad) / pixels,
                    },
                )
                leader.set_in_layout(False)
                drawn.append(leader)
    return drawn, unnamed


@dataclass(eq=False)
class _Label:
    """A label being placed; sizes in pixels."""

    text: Any  # the Annotation, at its point
    x: float  # the point, on the page
    y: float
    beside: float  # from the point to a label beside its marker
    width: float
    height: float

    def box(self, edge: float, middle: float) -> tuple:
        """The label's extents with its near edge at `edge` (right of the point where that is right of it)."""
        left = edge if edge > self.x else edge - self.width
        return (left, middle - self.height / 2, left + self.width, middle + self.height / 2)


def _near(a: _Label, b: _Label) -> bool:
    """Whether the labels of `a` and `b`, each beside its point, would overlap each other or the other's marker."""
    boxes = [a.box(a.x + a.beside, a.y), b.box(b.x + b.beside, b.y)]
    markers = [(p.x - p.beside, p.y - p.beside, p.x + p.beside, p.y + p.beside) for p in (a, b)]
    return _overlap(boxes[0], boxes[1]) or _overlap(boxes[0], markers[1]) or _overlap(boxes[1], markers[0])


def _place_column(group: list, room: tuple, taken: list, markers: list, pad: float):
    """The labels of `group` stacked in a column, top to bottom in the order of their points
    (so that their leader lines do not cross), beside the group's markers, right or left: the
    first place, nearest first, that lies inside `room` and overlaps nothing `taken`, and,
    where one can, no marker (else the first that covers some). Takes its boxes (adds them to
    `taken`); returns (label, the anchor of its near edge) for each, or None where none fits."""
    group = sorted(group, key=lambda label: -label.y)
    step = max(label.height for label in group) + pad
    middle = sum(label.y for label in group) / len(group)
    fan = 4 * pad if len(group) > 1 else 0  # room for the leader lines to fan out, to tell them apart
    edges = (max(label.x + label.beside for label in group) + fan, min(label.x - label.beside for label in group) - fan)
    reach = int((room[3] - room[1]) // step)
    places = [
        (out, shift, side, edge)
        for out in (0, 3, 8, 16, 32)  # in pads, further from the markers
        for shift in range(-reach, reach + 1)  # in labels' heights, up or down
        for side, edge in zip((1, -1), edges, strict=True)
    ]
    best = None
    for out, shift, side, edge in sorted(places, key=lambda place: place[0] * pad + abs(place[1]) * step):
        top = middle + (len(group) / 2 + shift) * step
        anchors = [(edge + side * out * pad, top - (index + 0.5) * step) for index in range(len(group))]
        boxes = [label.box(*anchor) for label, anchor in zip(group, anchors, strict=True)]
        if not all(_inside(box, room) and not any(_overlap(box, other) for other in taken) for box in boxes):
            continue
        best = best or (boxes, anchors)
        if not any(_overlap(box, marker) for box in boxes for marker in markers):
            best = (boxes, anchors)
            break
    if best is None:
        return None
    taken += [(x0 - pad, y0 - pad, x1 + pad, y1 + pad) for x0, y0, x1, y1 in best[0]]
    return list(zip(group, best[1], strict=True))


def _marker_extents(axes, row: dict, total_ms: float, pixels: float) -> tuple:
    """The box around a row's marker on the page, (x0, y0, x1, y1) in pixels (`pixels` to a point)."""
    x, y = axes.transData.transform((row["arithmetic_intensity"], row["achieved_flops_per_s"]))
    radius = marker_area(row, total_ms) ** 0.5 / 2 * pixels
    return (x - radius, y - radius, x + radius, y + radius)


def marker_area(row: dict, total_ms: float) -> float:
    """A row's marker's area in points²: its share of the forward's time."""
    return max(MIN_AREA, FULL_AREA * row["time_ms"] / total_ms)


def _overlap(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _inside(box: tuple, room: tuple) -> bool:
    return room[0] <= box[0] and box[2] <= room[2] and room[1] <= box[1] and box[3] <= room[3]
