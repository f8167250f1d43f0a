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
  docs/formulas.md (VGG-16's pool5 field is 212 pixels from -90), the same for every unit
  (but where a roll wraps such positions round, away from their border: they read nothing);
- exact: only real units are read, down to real pixels: the bounding box of the input
  pixels that can reach the unit (its input-gradient footprint when nothing cancels).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from fractions import Fraction

from archprof.passes.layers import consecutive_runs
from archprof.passes.receptive_field.field_budget import (
    FieldsTooIrregular,
    fields_left,
)
from archprof.passes.receptive_field.links import (
    FAR,
    NO_REACH,
    SKIPPING,
    Affine,
    Interval,
    Link,
    Reads,
    affine_through,
    covers_parent,
    grid_of,
    hull,
    irregular_candidates,
    limited_period,
    ordered,
    period_through,
    reach_of,
    reading_within,
    reads_everywhere_through,
    undominated,
)
from archprof.passes.receptive_field.runs import (
    Through,
    first_of,
    pieces_of,
    throughs_of,
)


class AxisMap:
    """Unit u of a tensor dimension of `size` units along input axis `axis`."""

    __slots__ = (
        "_covering",
        "_everywhere",
        "_exact",
        "_exact_bounds",
        "_exact_runs",
        "_exact_spans",
        "_exact_zone",
        "_origin",
        "_padded",
        "_pieces",
        "_reaching",
        "_regular",
        "_step",
        "_unordered",
        "affine",
        "axis",
        "everything",
        "irregular",
        "jump",
        "links",
        "note",
        "period",
        "size",
    )

    def __init__(self, axis: int, size: int, links: tuple[Link, ...] = ()) -> None:
        self.axis, self.size, self.links = axis, size, links
        # Every real pixel along the axis: no exact field reaches past it, so a hull that
        # holds it is taken no further (the maps after a grid attention, whose units each
        # read nearly the whole map).
        self.everything: Interval = links[0].parent.everything if links else (0, size - 1)
        self._padded: dict[int, Interval] = {}
        self.affine: Affine | None = affine_through(links)  # padded fields by formula, where they follow one
        # What exact reads find: kept in containers made at the first read, as most maps are
        # asked padded fields only, and each container made brings the next garbage collection nearer.
        self._exact: dict[int, Interval | None] | None = None
        self._exact_runs: tuple[Interval, ...] | object | None = _NOT_FOUND  # `exact_runs`, found at its first read
        # Of a map with runs: unit -> where its exact field begins, and where it ends.
        self._exact_bounds: tuple[dict[int, int], dict[int, int]] | None = None
        # Of a map with runs: the stretches of units read through the same parent runs, each
        # (first, last, what reads them: `Through`s), in order (`_runs_of_links`).
        self._pieces: list[tuple[int, int, tuple[Through, ...]]] | tuple = ()
        # Of a map out of order: (first, last) -> the exact span its links' reaches give, and
        # how each link's units read together (`reaching`, found at the first such span).
        self._exact_spans: dict[Interval, Interval | object | None] | None = None
        self._reaching: tuple[object, ...] | None = None
        self._exact_zone: Interval | object | None = _NOT_FOUND  # `exact_zone`, found at its first read
        self._everywhere: bool | None = None  # `reads_everywhere`, found at its first read
        self._covering: bool | None = None  # `spans_everything`, found at its first read
        if self.affine is not None:  # (most maps of a CNN) fields in order, J pixels on per unit, at every unit
            # Its links' ratios are their windows' strides, of parents with a formula, so its
            # jump is J, and no link or parent gives it a note (the input's map has none).
            self.jump, self.note = self.affine[0], ""
            self.irregular, self._unordered, self._regular = (), _NONE_UNORDERED, None
            self.period, self._step, self._origin = 1, self.affine[0], 0
        else:
            self._stride_of(links)
            self._order_of(links)

    def _stride_of(self, links: tuple[Link, ...]) -> None:
        """The map's jump, where its links agree on one, and its note, from its links."""
        # Plain loops, not generators nor a set of the links' jumps: a map is made per operator and axis.
        why, jump, alike = None, 1, True  # why: the first link's without a ratio; jump: the input's
        for index, link in enumerate(links):
            if link.ratio is None:
                why = link.why if why is None else why
            own = link.parent.jump
            own = None if own is None or link.ratio is None else own * link.ratio
            if index == 0:
                jump = own
            elif own != jump:
                alike = False
        note = why or ""
        if alike:
            self.jump = jump
            for link in links:
                note = note or link.parent.note
        else:
            self.jump = None
            note = note or "paths with different strides merged"
        self.note = note

    def _order_of(self, links: tuple[Link, ...]) -> None:
        """The map's irregular units, its period and where it holds, from its links."""
        # The units whose padded fields may break the order or the period of the others:
        # () for most maps, a few near a reflection's borders; None where no order is known
        # (a flatten, a roll). Every other unit's field ends never decrease from unit to
        # unit, and repeat every `period` units shifted by `_step` input pixels, from the
        # period that starts at `_origin`: a span needs the fields of its end units and of
        # its irregular ones only, and a unit's field is its twin's in that period, shifted
        # (all of HRNet's maps after its first upsampling; DenseNet's after a BlurPool).
        candidates = irregular_candidates(links)
        self.irregular = None if candidates is None else tuple(candidates)
        self._unordered = frozenset(candidates) if candidates else _NONE_UNORDERED
        kept = undominated(links)
        self.period, self._step = period_through(kept, self.irregular, self.jump)
        # The units whose padded fields keep the period (None: every unit): a map after a
        # grid attention or a roll keeps it within the units whose reads stay in their
        # parents' own (`_zone`), a residual sum of a grid attention within the map's real
        # units, a roll on one side of its wrap.
        self._regular: Interval | None = None
        if self.period is not None and limited_period(links, kept):
            self._regular = self._zone(kept, exact=False)
            if self._regular is None or candidates:
                self.period, self._step, self._regular = None, 0, None
        if self._regular is not None:
            self._origin = self._regular[0]
        else:
            self._origin = candidates[0] - self.period if candidates and self.period is not None else 0
        if candidates:
            self.irregular = self._still_irregular(candidates)
            self._unordered = frozenset(self.irregular)

    @property
    def periodic(self) -> bool:
        """Whether every real unit's padded field is that of its twin in any one period of
        units, shifted: the map has a period, no irregular units, and keeps it at every
        real unit."""
        zone = self._repeating(exact=False)
        return zone is not None and zone[0] <= 0 and zone[1] >= self.size - 1

    def _zone(self, links: tuple[Link, ...], exact: bool) -> Interval | None:
        """The units (real units only, `exact`) whose fields keep the period: those whose reads
        through each of `links` (the map's, `undominated`) stay within the parent's such
        units (a link whose reads repeat reads the same units again: no bound), and only real
        units where a link was left out; None where no unit does, or where a link's reads are
        not one range in order."""
        zone = (0, self.size - 1) if exact or len(links) < len(self.links) else (-FAR, FAR)
        for link in links:
            if link.repeats:
                continue
            parent_zone = link.parent.exact_zone if exact else link.parent._regular
            if parent_zone is None:
                if exact:
                    return None
                if not link.straight:
                    continue  # padded: the parent's period holds at every unit
                parent_zone = (-FAR, FAR)
            inside = reading_within(link, parent_zone)
            if inside is None:
                return None
            zone = max(zone[0], inside[0]), min(zone[1], inside[1])
        return zone if zone[0] <= zone[1] else None

    @property
    def exact_zone(self) -> Interval | None:
        """The real units whose exact fields keep the map's period (`_zone`), found at the
        first read: a map with a period but without runs (`exact_runs`: after a grid
        attention or a roll) takes a unit's exact field from its twin's there."""
        if self._exact_zone is _NOT_FOUND:
            self._exact_zone = None if self.period is None else self._zone(undominated(self.links), exact=True)
        return self._exact_zone  # type: ignore[return-value]

    def _still_irregular(self, candidates: list[int]) -> tuple[int, ...]:
        """The candidates that do break the order or the period, taken left to right in
        runs of consecutive units: a unit whose field is its twin's in the period at
        `_origin`, shifted, and lies between the last regular unit before it and the first
        one after its run (componentwise) is in order with every regular unit and becomes
        the last regular unit; the others stay irregular."""
        kept: list[int] = []
        for run in consecutive_runs(candidates):
            before, after = self.field(run[0] - 1), self.field(run[-1] + 1)
            for unit in run:
                field = self.field(unit)
                regular = None not in (before, field, after) and ordered(before, field) and ordered(field, after)
                if regular and field == self._periodic(unit):
                    before = field
                else:
                    kept.append(unit)
        return tuple(kept)

    def _periodic(self, unit: int, exact: bool = False) -> Interval | None:
        """The field of `unit`'s twin in the period at `_origin` (exact: at the start of the
        exact zone, `exact_zone`), shifted to `unit` (the field itself where the map has no
        period)."""
        if self.period is None:
            return self.field(unit, exact)
        origin = self._exact_zone[0] if exact else self._origin  # type: ignore[index]
        turns, offset = divmod(unit - origin, self.period)
        twin = self.field(origin + offset, exact)
        shift = turns * self._step
        return None if twin is None else (twin[0] + shift, twin[1] + shift)

    def derive(self, size: int, reads: Reads, ratio: Fraction | int | None, **flags) -> AxisMap:
        return AxisMap(self.axis, size, (Link(self, reads, ratio, **flags),))

    def field(self, unit: int, exact: bool = False) -> Interval | None:
        """The input coordinates unit `unit` can read: padded (any unit; None only for padding
        a roll wrapped round, `layout._roll`) or
        exact (real units and pixels only; None when the unit reads no pixel)."""
        if not exact and self.affine is not None:
            jump, first, last = self.affine
            return unit * jump + first, unit * jump + last
        if exact and self._exact is None:
            self._exact = {}
        cache = self._exact if exact else self._padded
        if unit in cache:
            return cache[unit]
        left = fields_left[0]
        if left is not None:
            if left <= 0:
                raise FieldsTooIrregular
            fields_left[0] = left - 1
        if not self.links:
            value = (unit, unit) if not exact or 0 <= unit < self.size else None
        elif exact and not 0 <= unit < self.size:
            value = None
        elif (
            self.period is not None
            and not exact
            and not self._origin <= unit < self._origin + self.period
            and unit not in self._unordered
            and (self._regular is None or self._regular[0] <= unit <= self._regular[1])
        ):
            value = self._periodic(unit)
        elif exact and self.period is not None and self.exact_runs is None and self._in_exact_zone(unit):
            value = self._periodic(unit, exact=True)
        elif grid_of(self):  # the hull over one position of every block
            parent, place = self.links[0].parent, unit % self.period  # type: ignore[operator]
            if exact:
                value = parent.exact_strided_span(place, self.period)  # type: ignore[arg-type]
            else:
                value = parent._hull(range(place, parent.size, self.period), exact=False)  # type: ignore[arg-type]
        else:
            value = None
            for link in self.links:
                for first, last in link.reads(unit):
                    value = hull(value, link.parent.span(first, last, exact))
                    if exact and value == self.everything:  # (a grid attention reads a unit of every block)
                        break
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
        if exact:
            runs = self.exact_runs
            if runs is not None:
                value = None
                for start, end in runs:
                    low, high = max(first, start), min(last, end)
                    if low <= high:
                        value = hull(value, (self.exact_bound(low, 0), self.exact_bound(high, 1)))
                return value
            if first <= _NEAR_THE_ENDS and last >= self.size - 1 - _NEAR_THE_ENDS:
                value = self._reached(first, last)
                if value is not _UNREACHED:
                    return value
        if self.irregular is not None and not exact:  # exact ends have no order: a dilated tap can skip the border
            value = self._ordered_span(first, last)
            if value is not None:
                return value
        return self._hull(range(first, last + 1), exact)

    def _in_exact_zone(self, unit: int) -> bool:
        """Whether `unit` lies in the exact zone (`exact_zone`) past its first period."""
        zone = self.exact_zone
        return zone is not None and zone[0] + self.period <= unit <= zone[1]  # type: ignore[operator]

    def _hull(self, units: range, exact: bool) -> Interval | None:
        """The hull of the fields of `units` (a range, or the units at one position in every
        block), taken one by one; but where the map repeats (a period, no irregular unit),
        the units at one place in the period within its zone (`_regular`, `exact_zone`)
        differ by a shift only: the first and the last of them hold their hull. An exact
        hull is done once it holds every pixel (`everything`): after a grid attention most
        units read nearly all of them."""
        zone = self._repeating(exact)
        if zone is not None and units:
            # The units inside the zone, and a step of indices over which they return to the
            # same place in the period.
            low = max(0, -(-(zone[0] - units.start) // units.step))
            high = min(len(units) - 1, (zone[1] - units.start) // units.step)
            if low <= high:
                inside = units[low : high + 1]
                places = self.period // math.gcd(self.period, units.step)  # type: ignore[operator]
                ends = [
                    unit
                    for place in range(min(places, len(inside)))
                    for unit in (inside[place], inside[place + (len(inside) - 1 - place) // places * places])
                ]
                units = [*units[:low], *ends, *units[high + 1 :]]  # type: ignore[assignment]
        box = None
        for unit in units:
            box = hull(box, self.field(unit, exact))
            if exact and box == self.everything:
                break
        return box

    def _repeating(self, exact: bool) -> Interval | None:
        """The units over which `_hull` takes the fields of one period only: padded, the
        zone where the period holds (every unit but where a grid attention or a roll left it
        one) of a map without irregular units; exact, the exact zone of a map without runs
        (`exact_runs`). None: none."""
        if self.period is None:
            return None
        if exact:
            return self.exact_zone if self.exact_runs is None else None
        if self.irregular:
            return None
        return self._regular or (-FAR, FAR)

    def _reached(self, first: int, last: int) -> Interval | object | None:
        """The exact span of real units first..last of a map without runs, from the parent
        units each link's units read together where those are one range (first's start to
        last's end where the link's windows touch, `reach_of`): the hull of their fields is
        then the parent's span of that range, followed down without taking the units one by
        one (the maps after Swin's rolls). Units that skip parent units: the same span where
        the first and last units' own reads already reach its ends. Else `_UNREACHED`, the
        units to be taken one by one."""
        key = (first, last)
        if self._reaching is None:
            self._reaching, self._exact_spans = tuple(reach_of(link) for link in self.links), {}
        if key in self._exact_spans:  # merges lead back to the same maps along several paths
            return self._exact_spans[key]
        if NO_REACH in self._reaching:
            return _UNREACHED
        value = None
        for link, reaching in zip(self.links, self._reaching, strict=True):
            parent = link.parent
            (start, first_end), (last_start, end) = link.reads(first)[0], link.reads(last)[0]
            spanned = parent.span(start, end, exact=True)
            if reaching is SKIPPING:
                # Units that skip parent units read no range together; what they read lies
                # between what the first and last read and the span over all: where those two
                # agree, it is both (nearly always: the extremes are at the ends).
                ends = hull(parent.span(start, first_end, exact=True), parent.span(last_start, end, exact=True))
                if ends != spanned:
                    self._exact_spans[key] = _UNREACHED
                    return _UNREACHED
            value = hull(value, spanned)
        self._exact_spans[key] = value
        return value

    def exact_strided_span(self, first: int, step: int) -> Interval | None:
        """The hull of the exact fields of units first, first + step, first + 2 step, ... (the
        units at one position in every block of `step` units, `dims._grid_spans_map`): in a
        map with runs in order, from the first and last of them in each run."""
        runs = self.exact_runs
        box = None
        if runs is None:
            return self._hull(range(first, self.size, step), exact=True)
        for start, end in runs:
            low = first + max(0, -(-(start - first) // step)) * step
            high = end - (end - first) % step
            if low <= high:
                box = hull(box, (self.exact_bound(low, 0), self.exact_bound(high, 1)))
        return box

    @property
    def exact_runs(self) -> tuple[Interval, ...] | None:
        """The map's units that read a pixel as runs of consecutive units, in order, within
        each of which the ends of their exact fields never decrease from unit to unit; None
        where no such runs are known. Within a run, the exact span of units first..last
        runs from the start of the first unit's field to the end of the last's, where it is
        taken unit by unit otherwise (the whole map's, asked by `dims.reads_all_input` at
        every global pooling, would cost time that grows with the resolution). Runs are
        known where each link, of a parent with runs, reads one range of parent units per
        unit in order (a convolution without dilation, a pooling, a constant padding, a
        nearest upsampling: most maps are one run), or one parent unit per unit in shifted
        pieces (`Link.shifts`: a union's, each parent's runs as they are; a reflection's or
        a replication's border units, a dilated convolution's taps at stride 1, whose order
        breaks near the borders only: their maps and those after them are a few runs,
        whatever the resolution; timm's BlurPool networks, DeepLab's dilated convolutions).
        A roll, a flip, a grid attention, a strided dilated convolution leave their maps
        without runs: spans then go by `_reached`, or unit by unit (within a zone where the
        map keeps its period, one period's units: `_hull`)."""
        if self._exact_runs is _NOT_FOUND:
            self._exact_bounds = ({}, {})  # asked of maps with runs only, once these are found
            if not self.links:
                self._exact_runs = ((0, self.size - 1),) if self.size else ()
            else:
                self._exact_runs = self._runs_of_links()
        return self._exact_runs  # type: ignore[return-value]

    def reads_a_pixel(self, unit: int) -> bool:
        """Whether `unit` reads a real pixel: lies in a run (`exact_runs`), or, where no
        runs are known, is a real unit of a map whose every unit does (`reads_everywhere`)
        or has an exact field."""
        runs = self.exact_runs
        if runs is None:
            if self.reads_everywhere:
                return 0 <= unit < self.size
            return self.field(unit, exact=True) is not None
        index = bisect_right(runs, unit, key=first_of) - 1
        return index >= 0 and unit <= runs[index][1]

    @property
    def reads_everywhere(self) -> bool:
        """Whether every real unit reads a real pixel, found at the first read: the map's
        runs are one, over all of it; or, without runs, a link's every unit reads a real unit
        of a parent that reads everywhere: a range in order that every unit's reaches into
        the parent (a convolution, a window, a sum), a position of every block (a grid
        attention's), or one parent unit each (`Link.permutes`: a roll's). Swin's rolls ask
        it of maps without runs, whose exact fields would be taken unit by unit for it."""
        if self._everywhere is None:
            runs = self.exact_runs
            if runs is not None:
                self._everywhere = runs == ((0, self.size - 1),)
            else:
                self._everywhere = any(reads_everywhere_through(link, self.size) for link in self.links)
        return self._everywhere

    @property
    def spans_everything(self) -> bool:
        """Whether the exact fields of the map's units together span every real pixel
        (`everything`), found at the first read from a link whose units read every unit of a
        parent that does (`links.covers_parent`), down to the input: no exact field is then
        needed to say so (`dims.reads_all_input`). False: not known so."""
        if self._covering is None:
            self._covering = not self.links
            for link in self.links:  # a loop, not any() of a generator: asked of every map down to the input
                if covers_parent(link, self.size) and link.parent.spans_everything:
                    self._covering = True
                    break
        return self._covering

    def _runs_of_links(self) -> tuple[Interval, ...] | None:
        """`exact_runs` of a map with links, noting its pieces (`_pieces`): the stretches of
        units read through the same runs of the same links' parents."""
        throughs = throughs_of(self.links, self.size)
        if throughs is None:
            return None
        if not throughs:
            return ()
        first, last = throughs[0][0], throughs[0][1]
        if all(a == first and b == last for a, b, _ in throughs):  # most maps: one piece
            self._pieces = [(first, last, tuple([through for _, _, through in throughs]))]
            return ((first, last),)
        pieces = self._pieces = pieces_of(throughs)
        # Within a piece, each parent run's fields are read in order, and so is their hull.
        # Where a parent run begins to be read, the hull takes a field more: its end cannot
        # fall there, its start can; where one stops, the reverse. So the starts of the two
        # units beside a beginning are compared, and the ends beside a stop (a start near
        # the end of PNASNet's sums would be asked for this alone); a unit read through none
        # (padding) ends a run. Pieces follow each other without a gap: one after a piece
        # read through some run continues the last run.
        runs: list[list[int]] = []
        before: tuple[Through, ...] = ()
        for first, last, through in pieces:
            if not through:
                before = through
                continue
            joined = bool(before)
            if joined:
                sides = (0,) * any(t not in before for t in through) + (1,) * any(t not in through for t in before)
                joined = all(self.exact_bound(first - 1, side) <= self.exact_bound(first, side) for side in sides)
            if joined:
                runs[-1][1] = last
            else:
                runs.append([first, last])
            before = through
        return tuple((first, last) for first, last in runs)

    def exact_bound(self, unit: int, end: int) -> int:
        """Where the exact field of unit `unit` of a run (`exact_runs`) begins (`end` 0: at
        the start of the first parent unit of a parent run it reads, the earliest over the
        runs it reads) or ends (1: the end of the last, the latest). Each followed apart, so
        that a span of many units asks each map for one unit's start and one unit's end, not
        for the fields of every unit between them."""
        known = self._exact_bounds[end]
        bound = known.get(unit)
        if bound is None:
            if not self.links:
                bound = unit
            else:
                pieces = self._pieces  # most maps: one
                throughs = pieces[0][2] if len(pieces) == 1 else pieces[bisect_right(pieces, unit, key=first_of) - 1][2]
                if len(throughs) == 1:
                    bound = throughs[0].bound(unit, end)
                else:
                    bound = (max if end else min)(through.bound(unit, end) for through in throughs)
            known[unit] = bound
        return bound

    def _ordered_span(self, first: int, last: int) -> Interval | None:
        """The padded span from the fields of its ordered end units and of its irregular
        units; None where an end unit reads nothing (a transposed convolution's may) or
        where the ends' fields are out of order (a pixel unshuffle after a stride-3
        transposed convolution, whose units between its taps read nothing), which leaves
        the span to be taken unit by unit."""
        low, high = first, last
        while low <= last and low in self._unordered:
            low += 1
        while high >= first and high in self._unordered:
            high -= 1
        value = None
        if low <= high:
            ends = self.field(low), self.field(high)
            if ends[0] is None or ends[1] is None or not ordered(*ends):
                return None
            value = ends[0][0], ends[1][1]
        for unit in self.irregular:
            if first <= unit <= last:
                value = hull(value, self.field(unit))
        return value


_NOT_FOUND = object()  # `AxisMap.exact_runs` not yet found
_NONE_UNORDERED: frozenset[int] = frozenset()  # `AxisMap._unordered` of most maps, shared


# Only spans within this many units of each end of a map are taken from the reaches: the
# whole map's (`dims.reads_all_input`), and those its reaches ask below, which stay near the
# ends. Spans elsewhere go unit by unit, their fields kept: each range a reach asks is kept
# apart, and a network of many branches of different windows (timm's pnasnet5large and
# nasnetalarge) asks too many of them (pnasnet5large: 0.2 s with units alone, 0.7 s when
# every span of more than four units went by reach, before its maps had runs).
_NEAR_THE_ENDS = 8


_UNREACHED = object()  # `AxisMap._reached` of a map with a link whose units' reads are not one range
