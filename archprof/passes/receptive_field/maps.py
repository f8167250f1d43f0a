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

import math
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
    unit advances on average (None: not evenly spaced); `period` P: reads(u + P) is reads(u)
    shifted by P * ratio (a whole number) for every u, beyond the map's ends too (1 for a
    convolution or a zero padding, 2 for a nearest upsampling by 2; None: not known to be);
    `monotone`: later units never read earlier parent units."""

    parent: AxisMap
    reads: Reads
    ratio: Fraction | int | None  # an int where whole: Fraction arithmetic is slow (DenseNet's merges)
    period: int | None = None
    monotone: bool = True
    why: str = ""  # why the ratio is None


class AxisMap:
    """Unit u of a tensor dimension of `size` units along input axis `axis`."""

    __slots__ = ("_exact", "_padded", "_step", "axis", "jump", "links", "monotone", "note", "period", "size")

    def __init__(self, axis: int, size: int, links: tuple[Link, ...] = ()) -> None:
        self.axis, self.size, self.links = axis, size, links
        self._padded: dict[int, Interval] = {}
        self._exact: dict[int, Interval | None] = {}
        self.note = next((link.why for link in links if link.ratio is None), "")
        jumps = {
            None if link.ratio is None or link.parent.jump is None else link.parent.jump * link.ratio for link in links
        }
        if not links:
            self.jump: Fraction | int | None = 1
        elif len(jumps) == 1:
            self.jump = jumps.pop()
            self.note = self.note or next((link.parent.note for link in links if link.parent.note), "")
        else:
            self.jump = None
            self.note = self.note or "paths with different strides merged"
        self.monotone = all(link.monotone and link.parent.monotone for link in links)
        # Padded fields repeat every `period` units, shifted by `_step` input pixels: only
        # the first period is evaluated (all of HRNet's maps after its first upsampling).
        self.period = self._period()
        self._step = int(self.period * self.jump) if self.period is not None else 0

    def _period(self) -> int | None:
        """P with field(u + P) = field(u) + P * jump (padded) for every u, or None: the
        smallest that each link's period, carried through its parent's, gives."""
        if not self.links:
            return 1
        if self.jump is None:
            return None
        period = 1
        for link in self.links:
            parent_period = link.parent.period
            if link.period is None or parent_period is None:
                return None
            advance = link.period * link.ratio  # parent units per period of the link
            if advance.denominator != 1 or advance <= 0:
                return None
            repeats = parent_period // math.gcd(int(advance), parent_period)  # to a whole parent period
            period = math.lcm(period, link.period * repeats)
        return period

    def derive(self, size: int, reads: Reads, ratio: Fraction | int | None, **flags) -> AxisMap:
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
        elif self.period is not None and not exact and not 0 <= unit < self.period:  # one in the first period, shifted
            turns, base = divmod(unit, self.period)
            first, shift = self.field(base), turns * self._step
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
