"""What the units of a `Link` read of its parent map, along one axis of the network input:
the link itself (which parent units unit u reads, and what is known of their order and
period), and the questions asked of links alone: whether their reads are ranges in order
(`ranges_in_order`) that touch (`reach_of`), which of a link's units read a run of parent
units (`reading_units`), lie within some (`reading_within`) or read a parent unit
(`readers_of`), which units of a map its links may leave irregular
(`irregular_candidates`), which units read a parent's (`units_reading`) and whether they
read it all (`covers_parent`), and which links another's hold (`undominated`); and `hull`,
of two intervals. The maps themselves, which links join into a graph, are maps.py's."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from itertools import pairwise
from typing import Any

from archprof.graph import value_record

Interval = tuple[int, int]  # both ends included
Reads = Callable[[int], Sequence[Interval]]  # unit -> the ranges of parent units it reads


@value_record
class Link:
    """Unit u reads the units `reads(u)` of `parent`; `ratio` is how many parent units one
    unit advances on average (None: not evenly spaced); `period` P: reads(u + P) is reads(u)
    shifted by P * ratio (a whole number) for every u, beyond the map's ends too (1 for a
    convolution or a zero padding, 2 for a nearest upsampling by 2; None: not known to be);
    `monotone`: later units never read earlier parent units, leaving out the units of
    `breaks` (a reflection's mirrored borders), which may read anywhere; `shifts`, where
    given, its reads as pieces (first, last, offset), which an exact field needs alone:
    units first..last read parent unit u + offset (a reflection's or a replication's: its
    own units one shift, each border unit its own; a dilated convolution's: a shift per
    tap; a union's: one shift by 0, `dims.merge_entries`), from which its map's runs in
    order are found (`AxisMap.exact_runs`); `repeats`:
    unit q P + r reads position r of every block of P parent units (a grid attention's):
    reads(u + P) is reads(u) itself, unit u among them, though not evenly spaced;
    `permutes`: each unit reads one parent unit, a different one each, where that unit
    reads a pixel (a roll's); `straight`, where given, (first, last, offset): units
    first..last read parent unit u + offset there (a roll's short of its wrap), the period
    of 1 holding over them alone (`AxisMap._zone`); `window`, where given, (K, S, P):
    unit u reads parent units u S - P .. u S - P + K - 1 (an undilated window's; a
    union's, (1, 1, 0)), which says what its units read of the parent's own units without
    asking its reads (`units_reading`, asked of nearly every map of a merge;
    `covers_parent`, of every map down to the input at a global pooling)."""

    parent: Any  # an AxisMap: maps.py's, which builds on this module
    reads: Reads
    ratio: Fraction | int | None  # an int where whole: Fraction arithmetic is slow (DenseNet's merges)
    period: int | None = None
    monotone: bool = True
    why: str = ""  # why the ratio is None
    breaks: tuple[Interval, ...] = ()
    shifts: tuple[tuple[int, int, int], ...] = ()
    repeats: bool = False
    permutes: bool = False
    straight: tuple[int, int, int] | None = None
    window: tuple[int, int, int] | None = None


Affine = tuple[int, int, int]  # (J, a, b): unit u's padded field is (u J + a, u J + b), at every u


def affine_through(links: tuple[Link, ...]) -> Affine | None:
    """`Affine` of a map with `links`, where its padded fields are one: the input's (no links:
    unit u reads pixel u), and a map whose every link is a window (`Link.window`: an
    undilated convolution's or pooling's, a union's) of a parent with one, the links
    agreeing on J (a sum of paths of one stride); None for any other. A unit's field is then
    a product and a sum (`AxisMap.field`), not its links' spans asked down to the input: a
    row's cells ask unit 0's of nearly every map of a CNN."""
    if not links:
        return 1, 0, 0
    found = None
    for link in links:  # (one, or a union's two)
        parent = link.parent.affine
        if link.window is None or parent is None:
            return None
        (k, s, p), (jump, first, last) = link.window, parent
        # The hull of parent units u S - P .. u S - P + K - 1, whose fields move on by J > 0 a unit.
        own = jump * s, first - p * jump, last + (k - 1 - p) * jump
        if found is None:
            found = own
        elif own[0] != found[0]:
            return None
        else:
            found = own[0], min(found[1], own[1]), max(found[2], own[2])
    return found


def reads_everywhere_through(link: Link, size: int) -> bool:
    """Whether every real unit of a map of `size` units reads a real unit of `link`'s
    parent that reads a pixel (`AxisMap.reads_everywhere`)."""
    parent = link.parent
    if not parent.reads_everywhere:
        return False
    if link.permutes or link.repeats:
        return True
    ranges = ranges_in_order(link)
    return ranges is not None and reading_units(link, size, ranges, (0, parent.size - 1)) == (0, size - 1)


def units_reading(link: Link, size: int, units: Interval) -> Interval | object | None:
    """The units of a map of `size` units that read, through `link`, one of its parent's
    `units`, consecutive (None: none does), where each unit reads a range in order
    (`reading_units`), or by shifted pieces (`Link.shifts`: a union's, a dilated
    convolution's taps), which leave no gap between them; every unit where `units` are all
    the parent's and each unit reads a position of every block (a grid attention's) or one
    parent unit (`Link.permutes`: a roll's); else `UNORDERED`."""
    if link.window and units == (0, link.parent.size - 1):  # (nearly always) every parent unit reads a pixel
        k, s, p = link.window
        if size > 0 and p < k and (size - 1) * s - p <= units[1]:
            return (0, size - 1)  # the first window ends past the padding, the last begins inside the parent
    if len(link.shifts) == 1:  # (a union's link) one piece: nothing to join
        return _piece_reading(link.shifts[0], size, units)
    if link.shifts:
        pieces = [_piece_reading(shift, size, units) for shift in link.shifts]
        return joined([piece for piece in pieces if piece is not None])
    if link.permutes or link.repeats:
        return (0, size - 1) if units == (0, link.parent.size - 1) and size else UNORDERED
    ranges = ranges_in_order(link)
    return UNORDERED if ranges is None else reading_units(link, size, ranges, units)


def _piece_reading(shift: tuple[int, int, int], size: int, units: Interval) -> Interval | None:
    """The units of a piece (first, last, offset) of a map of `size` units that read one of
    its parent's `units` (None: none does)."""
    first, last, offset = shift
    low, high = max(first, units[0] - offset, 0), min(last, units[1] - offset, size - 1)
    return (low, high) if low <= high else None


def same_unit(unit: int) -> tuple[tuple[int, int]]:
    """A union's link to each of the maps it unites (`dims._own_units`): unit u reads the
    parent's unit u."""
    return ((unit, unit),)


def joined(ranges: list[Interval]) -> Interval | object | None:
    """The hull of `ranges` where they leave no gap between them (None: there are none);
    else `UNORDERED`."""
    ranges.sort()
    hull_of = ranges[0] if ranges else None
    for first, last in ranges[1:]:
        if first > hull_of[1] + 1:  # type: ignore[index]
            return UNORDERED
        hull_of = hull_of[0], max(hull_of[1], last)  # type: ignore[index]
    return hull_of


def covers_parent(link: Link, size: int) -> bool:
    """Whether the real units of a map of `size` units read, through `link`, every real unit
    of its parent: ranges in order each touching the next (`reach_of`), the first beginning
    at or before the parent's first unit, the last ending at or past its last. The hull of
    their exact fields is then the parent's whole exact span."""
    if size == 0:
        return False
    if link.window:  # a window's, a union's (DenseNet's chains of them): no reads to ask for
        k, s, p = link.window
        # Each window touches the next; the first begins at unit 0 or before, the last ends at the last or past.
        return s <= k and p >= 0 and (size - 1) * s - p + k >= link.parent.size
    if reach_of(link) is not TOUCHING:
        return False
    return link.reads(0)[0][0] <= 0 and link.reads(size - 1)[0][1] >= link.parent.size - 1


def undominated(links: tuple[Link, ...]) -> tuple[Link, ...]:
    """`links` less those whose fields another's hold at every real unit: a residual sum of a
    grid attention reads unit u of a map and, through the attention, position u of every
    block of it, u among them; the fields of the first are then inside the second's, and
    the sum keeps the second's period over its real units (past them, unit u - 1 reads
    what lies beyond the border, which the attention's do not)."""
    if len(links) < 2:
        return links
    gridded = {id(link.parent.links[0].parent) for link in links if grid_of(link.parent) and reads_own(link)}
    if not gridded:
        return links
    return tuple(link for link in links if not (reads_own(link) and id(link.parent) in gridded))


def limited_period(links: tuple[Link, ...], kept: tuple[Link, ...]) -> bool:
    """Whether a map's period holds only within a zone of units (`AxisMap._regular`): a link
    was left out of it as another's holds it (`kept`, `undominated`), a kept link's parent
    keeps it within one (but a grid attention's, which reads the same units again), or a
    kept link holds the period over some units only (`Link.straight`: a roll's)."""
    if len(kept) < len(links):
        return True
    for link in kept:  # noqa: SIM110 (a loop: any() of a generator costs more, for every map made)
        if link.straight or (link.parent._regular is not None and not link.repeats):
            return True
    return False


def period_through(
    links: tuple[Link, ...], irregular: tuple[int, ...] | None, jump: Fraction | int | None
) -> tuple[int | None, int]:
    """(P, step) with field(u + P) = field(u) + step (padded) for every u of a map with
    `links` (those its period follows: `undominated`) but its `irregular` units and those
    past the zone where the links keep it (`AxisMap._regular`), or (None, 0): the smallest P
    that each link's period, carried through its parent's, gives, where every link shifts
    its reads by the same step (P * `jump` where the map has one; 0 after a grid attention,
    whose reads repeat)."""
    period = 1
    for link in links:
        if link.repeats:  # the same parent units again: whatever the parent's period
            period = math.lcm(period, link.period)
            continue
        if irregular is None and (link.breaks or link.parent.irregular):
            return None, 0  # a link's or a parent's period holds off their irregular units only
        parent_period = link.parent.period
        link_period = 1 if link.straight else link.period  # a roll's: its straight units only
        if link_period is None or parent_period is None or link.ratio is None:
            return None, 0
        advance = link_period * link.ratio  # parent units per period of the link
        if advance.denominator != 1 or advance <= 0:
            return None, 0
        repeats = parent_period // math.gcd(int(advance), parent_period)  # to a whole parent period
        period = math.lcm(period, link_period * repeats)
    if jump is not None:
        return period, int(period * jump)
    # Whole parent periods each link advances over one period of this map, times the
    # parent's step: the links must agree.
    steps = {
        0 if link.repeats else int(period * link.ratio) // link.parent.period * link.parent._step for link in links
    }
    return (period, steps.pop()) if len(steps) == 1 else (None, 0)


def grid_of(axis_map: Any) -> bool:
    """Whether `axis_map` is a grid attention's: one link whose reads repeat, unit u's
    holding parent unit u (`Link.repeats`)."""
    return len(axis_map.links) == 1 and axis_map.links[0].repeats


def reads_own(link: Link) -> bool:
    """Whether each unit reads its own parent unit alone (a sum's link): by the period and
    ratio of 1, unit 0's reads give every unit's."""
    return link.period == 1 and link.ratio == 1 and not link.breaks and link.reads(0) == ((0, 0),)


def reading_within(link: Link, units: Interval) -> Interval | None:
    """The units whose reads through `link` lie within parent units `units`, consecutive;
    None unless each unit reads one range of parent units, in order (`ranges_in_order`),
    or reads one straight on over some units (`Link.straight`, a roll's, of a parent every
    unit of which reads a pixel: else some read nothing)."""
    if link.straight:
        if not link.parent.reads_everywhere:
            return None
        first, last, offset = link.straight
        return max(first, units[0] - offset), min(last, units[1] - offset)
    if ranges_in_order(link) is None:
        return None
    low, high = units
    start = first_where(lambda u: link.reads(u)[0][0] >= low, int(low / link.ratio))  # type: ignore[operator]
    past = first_where(lambda u: link.reads(u)[0][1] > high, int(high / link.ratio))  # type: ignore[operator]
    return start, past - 1  # type: ignore[operator]


def first_where(holds: Callable[[int], bool | None], guess: int) -> int | None:
    """The first unit from which `holds` holds (it holds from some unit on): searched
    outwards from `guess`, then by bisection; None where `holds` answers None (a unit that
    reads nothing: no order known)."""
    # Bracket: holds(low) false, holds(high) true.
    low, high, step = guess - 1, guess, 1
    while True:
        held = holds(low)
        if held is None:
            return None
        if not held or low < -FAR:
            break
        low, step = low - step, step * 2
    step = 1
    while True:
        held = holds(high)
        if held is None:
            return None
        if held or high > FAR:
            break
        high, step = high + step, step * 2
    while high - low > 1:
        middle = (low + high) // 2
        held = holds(middle)
        if held is None:
            return None
        if held:
            high = middle
        else:
            low = middle
    return high


def ordered(a: Interval, b: Interval) -> bool:
    return a[0] <= b[0] and a[1] <= b[1]


def reading_units(link: Link, size: int, ranges: list[Interval], run: Interval) -> Interval | object | None:
    """The units of a link's map (of `size` units) that read a unit of `run`, a run of its
    parent's, consecutive (None: none does), from what one period of its units read
    (`ranges`, in order), past which the reads repeat shifted by a period's advance;
    `UNORDERED` where that advance is not whole."""
    if size == 0:
        return None
    # Ends in order: the units whose range ends at or past the run's first unit come after
    # those that do not, and those whose range begins at or before its last unit before
    # those that do not; a unit of both reads one of them. Unit q period + r reads what
    # unit r does, q advances on: the first of each, per r.
    period = link.period
    advance = period * link.ratio  # type: ignore[operator]
    if advance != int(advance):  # not whole, as `Link` says a period's advance is: no order known
        return UNORDERED
    advance, first, past = int(advance), size, size
    for r in range(period):
        (start, end) = ranges[r]
        first = min(first, r + period * max(0, -(-(run[0] - end) // advance)))
        past = min(past, r + period * max(0, (run[1] - start) // advance + 1))
    return (first, past - 1) if first < past else None


def ranges_in_order(link: Link) -> list[Interval] | None:
    """What the units of one period of a link read (and the next unit), where each reads one
    range of parent units, their ends never decreasing from unit to unit: past the period
    the reads repeat shifted by a period's advance (not backwards). None otherwise."""
    if not (link.monotone and not link.breaks and link.period and link.ratio and link.ratio > 0):
        return None
    ranges: list[Interval] = []
    for u in range(link.period + 1):  # a loop, not generators: asked of nearly every link
        taps = link.reads(u)
        if len(taps) != 1:
            return None
        first, last = taps[0]
        if first > last or (ranges and (first < ranges[-1][0] or last < ranges[-1][1])):
            return None
        ranges.append(taps[0])
    return ranges


def reach_of(link: Link) -> object:
    """How a link's units first..last read together (`AxisMap._reached`): as first's start
    to last's end, where its units read ranges in order of which each touches the next (a
    convolution whose stride is at most its kernel), or skip parent units between them (a
    1x1 convolution of stride 2); or not known."""
    ranges = ranges_in_order(link)
    if ranges is None:
        return NO_REACH
    return TOUCHING if all(b[0] <= a[1] + 1 for a, b in pairwise(ranges)) else SKIPPING


TOUCHING, SKIPPING, NO_REACH = object(), object(), object()


UNORDERED = object()  # `reading_units` of a link whose exact fields may be out of order


def readers_of(link: Link, unit: int) -> Interval | None:
    """The units whose reads through an ordered link span parent unit `unit` (each unit
    read as the hull of its taps, whose ends never decrease from unit to unit): searched
    outwards from where the link's ratio puts them, then by bisection; None where a unit
    reads nothing, which leaves the order unknown."""

    def ends(u: int) -> Interval | None:
        taps = link.reads(u)
        return (min(t[0] for t in taps), max(t[1] for t in taps)) if taps else None

    def reaches(u: int) -> bool | None:
        span = ends(u)
        return None if span is None else span[1] >= unit

    def passes(u: int) -> bool | None:
        span = ends(u)
        return None if span is None else span[0] > unit

    guess = int(unit / link.ratio) if link.ratio else 0
    first, past = first_where(reaches, guess), first_where(passes, guess)
    if first is None or past is None:
        return None
    return first, past - 1


FAR = 1 << 40  # beyond any unit a tensor has: where the search gives up


def hull(a: Interval | None, b: Interval | None) -> Interval | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a[0], b[0]), max(a[1], b[1])


# Irregular candidates beyond this many: the map is taken as having no order at all.
_MOST_IRREGULAR = 256


def irregular_candidates(links: tuple[Link, ...]) -> Sequence[int] | None:
    """The units of a map with `links` that may be irregular (`AxisMap.irregular`): those of
    each link's breaks and those that read a parent's irregular unit, in order; none, (), for
    most maps (a tuple, not a new list each). The map then keeps the ones that are
    (`AxisMap._still_irregular`), so that one reflection padding does not leave every map
    after it irregular."""
    if not links:
        return ()
    zones: list[Interval] = []
    for link in links:
        if link.monotone and not link.breaks and link.parent.irregular == ():
            continue  # every unit in order: no candidate (most maps)
        parent = link.parent.irregular
        if not link.monotone or parent is None or (link.breaks and parent):
            return None
        zones += [zone for zone in link.breaks if zone[0] <= zone[1]]
        for unit in parent:
            readers = readers_of(link, unit)
            if readers is None:
                return None
            zones.append(readers)
    if not zones:
        return ()
    if sum(last - first + 1 for first, last in zones) > _MOST_IRREGULAR:
        return None
    return sorted({unit for first, last in zones for unit in range(first, last + 1)})
