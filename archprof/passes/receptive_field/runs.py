"""How the units of a map read the runs of its links' parents (`AxisMap.exact_runs`): the
stretches of units read through the same runs (`pieces_of`), each run followed through its
link (`Through`; `Shifted` for a link read in shifted pieces) down to where the exact field
of a unit begins or ends (`AxisMap.exact_bound`)."""

from __future__ import annotations

from itertools import pairwise

from archprof.passes.receptive_field.links import UNORDERED, Interval, Link, ranges_in_order, reading_units


class Through:
    """How a piece of a map's units reads one run (`run`) of a link's parent
    (`AxisMap.exact_runs`): by the link's reads, one range of parent units per unit, in
    order."""

    __slots__ = ("link", "parent", "run")

    def __init__(self, link: Link, run: Interval) -> None:
        self.link, self.parent, self.run = link, link.parent, run

    def bound(self, unit: int, end: int) -> int:
        """`AxisMap.exact_bound` of `unit` through this run: the parent's, at the first
        (`end` 0) or last (1) unit of the run the unit reads."""
        start, last = self.run
        return self.parent.exact_bound(min(max(self.link.reads(unit)[0][end], start), last), end)


class Shifted(Through):
    """A piece read at `offset` from each unit (`Link.shifts`)."""

    __slots__ = ("offset",)

    def __init__(self, link: Link, run: Interval, offset: int) -> None:
        super().__init__(link, run)
        self.offset = offset

    def bound(self, unit: int, end: int) -> int:
        return self.parent.exact_bound(unit + self.offset, end)


def throughs_of(links: tuple[Link, ...], size: int) -> list[tuple[int, int, Through]] | None:
    """For each link and each run of its parent (`AxisMap.exact_runs`), the units of a map of
    `size` units that read that run, consecutive, and how (`Through`); None unless each link
    reads in order: one range of parent units per unit, their ends never decreasing from
    unit to unit, or shifted in pieces (`Link.shifts`), of a parent with runs."""
    found: list[tuple[int, int, Through]] = []
    for link in links:
        runs = link.parent.exact_runs
        if runs is None:
            return None
        if link.shifts:
            for first, last, offset in link.shifts:
                for start, end in runs:
                    low, high = max(first, start - offset, 0), min(last, end - offset, size - 1)
                    if low <= high:
                        found.append((low, high, Shifted(link, (start, end), offset)))
            continue
        ranges = ranges_in_order(link)
        if ranges is None:
            return None
        for run in runs:
            reading = reading_units(link, size, ranges, run)
            if reading is UNORDERED:
                return None
            if reading is not None:
                found.append((*reading, Through(link, run)))  # type: ignore[arg-type]
    return found


def pieces_of(throughs: list[tuple[int, int, Through]]) -> list[tuple[int, int, tuple[Through, ...]]]:
    """The stretches of units between every first and past-the-last unit of `throughs`, in
    order, each with the runs it reads through (none: a stretch of units that read no pixel)."""
    beginning: dict[int, list[Through]] = {}
    stopping: dict[int, list[Through]] = {}
    for first, last, through in throughs:
        beginning.setdefault(first, []).append(through)
        stopping.setdefault(last + 1, []).append(through)
    pieces: list[tuple[int, int, tuple[Through, ...]]] = []
    reading: dict[Through, None] = {}  # in the order they began
    for cut, next_cut in pairwise(sorted(beginning.keys() | stopping.keys())):
        for through in stopping.get(cut, ()):
            del reading[through]
        for through in beginning.get(cut, ()):
            reading[through] = None
        pieces.append((cut, next_cut - 1, tuple(reading)))
    return pieces


def first_of(piece: tuple) -> int:
    return piece[0]
