"""Index maps along one spatial axis of the network input: which input coordinates unit u of
a tensor dimension can read, composed operator by operator.

An `AxisMap` is a node of a graph of maps: the network input's axis is a leaf, and every
operator that moves units along the axis (a convolution, an upsampling, a padding, a merge
of paths) adds a node whose `Link`s say which units of the parent maps unit u reads. A
field is then evaluated for the units asked for only (memoised per node), never for every
unit of every tensor.

Two readings of the same map:

- padded: positions past a map's border (a convolution's padding) are extended with the
  operator's own formula, down to input coordinates outside the image: the convention of
  docs/formulas.md (VGG-16's pool5 field is 212 pixels from -90), the same for every unit;
- exact: only real units are read, down to real pixels: the bounding box of the input
  pixels that can reach the unit (its input-gradient footprint when nothing cancels).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction

Interval = tuple[int, int]  # both ends included
Reads = Callable[[int], Sequence[Interval]]  # unit -> the ranges of parent units it reads


@dataclass(frozen=True, slots=True)
class Link:
    """Unit u reads the units `reads(u)` of `parent`; `ratio` is how many parent units one
    unit advances on average (None: not evenly spaced); `uniform`: reads(u) is reads(0)
    shifted by u * ratio for every u (a convolution, a padding), so every unit's field has
    the same size; `monotone`: later units never read earlier parent units."""

    parent: AxisMap
    reads: Reads
    ratio: Fraction | None
    uniform: bool = False
    monotone: bool = True
    why: str = ""  # why the ratio is None


class AxisMap:
    """Unit u of a tensor dimension of `size` units along input axis `axis`."""

    __slots__ = ("_exact", "_padded", "axis", "jump", "links", "monotone", "note", "size", "uniform")

    def __init__(self, axis: int, size: int, links: tuple[Link, ...] = ()) -> None:
        self.axis, self.size, self.links = axis, size, links
        self._padded: dict[int, Interval] = {}
        self._exact: dict[int, Interval | None] = {}
        self.note = next((link.why for link in links if link.ratio is None), "")
        jumps = {
            None if link.ratio is None or link.parent.jump is None else link.parent.jump * link.ratio for link in links
        }
        if not links:
            self.jump: Fraction | None = Fraction(1)
        elif len(jumps) == 1:
            self.jump = jumps.pop()
            self.note = self.note or next((link.parent.note for link in links if link.parent.note), "")
        else:
            self.jump = None
            self.note = self.note or "paths with different strides merged"
        self.monotone = all(link.monotone and link.parent.monotone for link in links)
        self.uniform = (
            self.jump is not None
            and self.jump.denominator == 1
            and all(link.uniform and link.parent.uniform for link in links)
        )

    def derive(self, size: int, reads: Reads, ratio: Fraction | None, **flags) -> AxisMap:
        return AxisMap(self.axis, size, (Link(self, reads, ratio, **flags),))

    def field(self, unit: int, exact: bool = False) -> Interval | None:
        """The input coordinates unit `unit` can read: padded (any unit, never None) or
        exact (real units and pixels only; None when the unit reads no pixel)."""
        cache = self._exact if exact else self._padded
        if unit in cache:
            return cache[unit]
        if not self.links:
            value = (unit, unit) if not exact or 0 <= unit < self.size else None
        elif exact and not 0 <= unit < self.size:
            value = None
        elif self.uniform and not exact and unit != 0:  # unit 0's field, shifted
            first, shift = self.field(0), unit * self.jump.numerator
            value = None if first is None else (first[0] + shift, first[1] + shift)
        else:
            value = None
            for link in self.links:
                for first, last in link.reads(unit):
                    value = hull(value, link.parent.span(first, last, exact))
        cache[unit] = value
        return value

    def span(self, first: int, last: int, exact: bool) -> Interval | None:
        """The hull of the fields of units first..last."""
        if exact:
            first, last = max(first, 0), min(last, self.size - 1)
        if first > last:
            return None
        if first == last:
            return self.field(first, exact)
        if self.monotone and not exact:  # exact ends are not monotone: a dilated tap can skip the border
            low, high = self.field(first), self.field(last)
            if low is not None and high is not None:  # (a transposed convolution's unit may read nothing)
                return low[0], high[1]
        value = None
        for unit in range(first, last + 1):
            value = hull(value, self.field(unit, exact))
        return value


def _times(jump: Fraction | None, ratio: Fraction | None) -> Fraction | None:
    return None if jump is None or ratio is None else jump * ratio


def hull(a: Interval | None, b: Interval | None) -> Interval | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a[0], b[0]), max(a[1], b[1])


@contextmanager
def deep_maps() -> Iterator[None]:
    """Room for evaluating a map as deep as the network (one Python frame per layer and two
    per link; Python-to-Python calls use no C stack)."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(max(before, 100_000))
    try:
        yield
    finally:
        sys.setrecursionlimit(before)
