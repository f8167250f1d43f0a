"""Receptive fields of every tensor and every row, in one walk over the graph's ops.

For each tensor archprof tracks which of its dimensions runs along which spatial dimension
of the network input (N, C, *spatial): channels-last permutes and the (N H W, C) views of a
linear layer move dimensions without losing them. Along each such dimension an `AxisMap`
(maps.py) gives the input interval of any unit u, composed operator by operator: a
convolution or pooling reads units u S - P + t D; a transposed convolution the units
(u + P - t D) / S that are whole; nearest, linear and cubic resampling the source pixels
PyTorch's kernels compute; pixel shuffle u // r; Tensor.unfold's window u the units u S ..
u S + K - 1; a running sum or an LSTM layer units 0 .. u (u .. the last, reversed); padding,
slicing, rolling, flipping (rot90: a flip and a transpose) their index maps; a concatenation
along a dimension the input u came from; a sum of paths the union.
A dimension split into windows (Swin's partition) becomes blocks and positions in them: once
attention mixes a window's positions, each unit reads its whole window.

The columns hold output unit 0's field along each dimension [docs/formulas.md, "Receptive field"],
padding positions included (positions past a border continue the operator's formula: VGG-16's
pool5 sees 212 pixels from -90), and the effective stride: input pixels between neighbouring
units on average, a fraction after upsampling (1/2). `spreads` gives the centre unit's
field and the range over units (a transposed convolution's units read different numbers of
inputs); `unit_box` the exact input box of any unit (real pixels only).

A tensor's state is one of:

- no field (None): parameters, buffers, constants and whatever is computed from them only;
- `Field`: the maps of its dimensions (flattened: `dims.Merged`; with a class token beside
  them: `dims.Tokens`), the input dimensions read whole (`whole`: pooled or attended over)
  and those kept at one unit (`loose`: a select); where some channels of a dimension whose
  channels read different fields were picked (sliced after a pixel unshuffle), their field
  is the union of all, an upper bound, which the field says (`bound`), and the note too;
- `WHOLE`: every unit sees the whole input ("global": global pooling, attention over all
  positions, a linear layer over a flattened map). A tensor whose spatial dimensions are
  flattened into one is reported as the whole input too (docs/formulas.md's convention), but
  archprof keeps following it: reshaped back into a map, it has its field again;
- `Undefined(reason)`: an operator archprof has no rule for consumed a tensor with a field, or
  its rule cannot follow it (a flattened map cut and read back as an image, an in-place
  write through a view: circular padding, channels that read different fields folded into
  a spatial dimension: `dims.Uneven`, attention over scores a mask may set to -inf:
  `Walk.masked`); the reason says which and where.

Conventions: normalisation layers count as pointwise (their statistics are not part of the
field, as in Araujo et al., "Computing Receptive Fields of CNNs", Distill 2019); a dilated
kernel spans D (K - 1) + 1 pixels; max pooling counts its whole window (which pixel wins
depends on the values).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

from archprof.errors import ArchprofError
from archprof.graph import Graph
from archprof.passes.layers import LayerGroup
from archprof.passes.receptive_field import layout, reshape, sequences, windows  # noqa: F401 (their rules register on import)
from archprof.passes.receptive_field.dims import (
    FLAT,
    SPLIT,
    WHOLE,
    Extent,
    Field,
    Parts,
    State,
    Undefined,
    mixed_span,
    reads_all_input,
)
from archprof.passes.receptive_field.field_budget import TOO_IRREGULAR, FieldsTooIrregular, deep_maps
from archprof.passes.receptive_field.links import Interval, hull
from archprof.passes.receptive_field.maps import AxisMap
from archprof.passes.receptive_field.rules import rule_for
from archprof.passes.receptive_field.side_by_side import reads_nothing_somewhere, some_read_less, spatial_parts
from archprof.passes.receptive_field.walk import Walk
from archprof.text import spatial_names
from archprof.units import shape_text

# -- columns -------------------------------------------------------------------------------


class FieldMark(StrEnum):
    """A receptive-field cell that is not a tuple of numbers: a str equal to its CSV text."""

    INPUT = "input"  # every output unit sees the whole input: "global" (global pooling, attention)
    UNDEFINED = "undefined"  # not computable exactly: `receptive_field_note` says why


Stride = int | Fraction  # a whole number of input pixels between units, or a fraction after upsampling
Dims = tuple[int, ...] | tuple[Stride, ...] | FieldMark | None  # a receptive_field, effective_stride or start cell


def receptive_field_columns(graph: Graph, groups: list[LayerGroup]) -> dict[str, list]:
    """Per row, the field of the row's output tensor (its unit 0), as typed values.

    `receptive_field` is the size per spatial dimension, a tuple of ints ((212, 212));
    FieldMark.INPUT for the whole input; FieldMark.UNDEFINED where it cannot be computed;
    None where the row's output has no spatial field (a row of parameters only, a network
    without spatial input dimensions). `effective_stride` is a tuple of ints, or of Fractions
    after upsampling (Fraction(1, 2)); UNDEFINED where neighbouring units are not evenly
    spaced (paths of different strides merged, a dimension kept at one unit);
    `receptive_field_start` a tuple of ints. `covers_input` says whether unit 0's field spans the whole input in every
    dimension: None where undefined, and where the row reads no input pixel at all (made from
    parameters and constants only: RAFT's initial flow grid, a zero hidden state), which is
    neither, and where a field that is only an upper bound covers it; `receptive_field_note`
    says why a cell is undefined, or that the field is an upper bound ("an upper bound: ...").
    """
    fields, spatial = tensor_fields(graph)
    # Rows often share one state object (an activation after a conv): keyed by identity, as
    # hashing a Field walks its maps every time. Every state is held by `fields` meanwhile.
    # States that differ only in where their maps lie (a channels-last permute, a linear
    # layer's view, NASNet's concatenated paths) share their maps' cells (`_own_maps`).
    written: dict[int, tuple] = {}
    by_maps: dict[tuple[str | AxisMap, ...], tuple] = {}
    rows = []
    with deep_maps():
        for group in groups:
            state = fields.get(group.outputs[0].id) if group.outputs else None
            cells = written.get(id(state))
            if cells is None:
                maps = _own_maps(state)
                cells = by_maps.get(maps) if maps is not None else None
                if cells is None:
                    cells = _cells(state, spatial, maps)
                    if maps is not None:
                        by_maps[maps] = cells
                written[id(state)] = cells
            rows.append(cells)
    columns = zip(*rows, strict=True) if rows else [()] * len(_COLUMNS)  # each row's cells: a 5-tuple
    return {name: list(values) for name, values in zip(_COLUMNS, columns, strict=True)}


_COLUMNS = ("receptive_field", "effective_stride", "receptive_field_start", "covers_input", "receptive_field_note")


def _own_maps(state: State) -> tuple[str | AxisMap, ...] | None:
    """What alone gives a field's cells, where its maps and its bound (its note) do: the
    bound, then the maps in order, of one with none read whole or kept at one unit (whose
    fields are `mixed_span`'s, and say which units read the whole input) and no flattened
    or split dimension (which `Field.places` also reads); None for any other state."""
    if type(state) is not Field or state.whole or state.loose:
        return None
    key: list[str | AxisMap] = [state.bound]
    for entry in state.dims:
        if type(entry) is AxisMap:
            key.append(entry)
        elif isinstance(entry, SPLIT):
            return None
    return tuple(key)


def _cells(
    state: State, spatial: tuple[int, ...], maps: tuple[str | AxisMap, ...] | None = None
) -> tuple[Dims, Dims, Dims, bool | None, str]:
    """A row's cells. `maps`: the state's `_own_maps`, where it has them (most fields of a CNN):
    such a field reads no map whole (so not every pixel at every unit, and `every` is never
    asked) and flattens, splits and keeps at one unit nothing, so that each axis's places
    are its maps along that axis (`_places_among`), and nothing else below needs asking."""
    if maps is not None:
        return _axes_cells(state, spatial, maps, "")
    if state is None:
        return None, None, None, None, ""
    if isinstance(state, Extent):
        return FieldMark.INPUT, None, None, True, ""
    if isinstance(state, Undefined):
        return FieldMark.UNDEFINED, FieldMark.UNDEFINED, FieldMark.UNDEFINED, None, state.reason
    if _every_unit_reads_all(state, spatial):
        return FieldMark.INPUT, None, None, True, ""
    if _flattened(state):
        return _flattened_cells(state, spatial)
    # Beside a constant padding of a map pooled to one unit, some units read nothing at all.
    every = "every unit that reads a pixel" if reads_nothing_somewhere(state, len(spatial)) else "every unit"
    return _axes_cells(state, spatial, None, every)


def _axes_cells(
    state: Field, spatial: tuple[int, ...], maps: tuple[str | AxisMap, ...] | None, every: str
) -> tuple[Dims, Dims, Dims, bool | None, str]:
    """The cells of a field's unit 0 along each input dimension (`_first_unit`)."""
    # Plain loops below, not generators: this runs for every distinct state of a row.
    sizes, starts, strides = [], [], []
    covers, first_note = True, ""
    for axis, extent in enumerate(spatial):
        first, stride, note = _first_unit(state, axis, extent, every, maps)
        if first is None:
            return FieldMark.UNDEFINED, FieldMark.UNDEFINED, FieldMark.UNDEFINED, None, note
        start, end = first
        sizes.append(end - start + 1)
        starts.append(start)
        strides.append(_number(stride) if type(stride) is Fraction else stride)  # (an int, nearly always)
        covers = covers and start <= 0 and end >= extent - 1
        first_note = first_note or note
    stride_cell = FieldMark.UNDEFINED if None in strides else tuple(strides)
    if state.bound:  # the field itself a bound: whether the true one covers is not known where this one does
        return tuple(sizes), stride_cell, tuple(starts), None if covers else False, state.bound
    return tuple(sizes), stride_cell, tuple(starts), covers, first_note


def _flattened_reach(field: Field, spatial: tuple[int, ...]) -> list[Interval | None]:
    """Of a flattened field, per input dimension, the hull of what its units read together,
    padding included (what it mixed too)."""
    flat = [m for entry in field.dims if isinstance(entry, FLAT) for m in entry.maps()]
    reach = []
    for axis in range(len(spatial)):
        box = mixed_span(field, axis, exact=False)
        for axis_map in flat:
            if axis_map.axis == axis:
                box = hull(box, axis_map.span(0, axis_map.size - 1, exact=False))
        for axis_map, _ in field.places(axis):
            box = hull(box, axis_map.field(0))
        reach.append(box)
    return reach


def _flattened_cells(field: Field, spatial: tuple[int, ...]) -> tuple[Dims, Dims, Dims, bool | None, str]:
    """A flattened row's cells: the whole input by the convention (docs/formulas.md) where its
    units together reach both ends of every input dimension, as a pooling's do; else their
    hull, with no stride (a flattened row has no units along the input's dimensions). A
    stride-2 1x1 convolution's units on 4 pixels never read pixel 3, and the linear layer
    after the flatten said so, the flatten itself not."""
    try:
        reach = _flattened_reach(field, spatial)
    except FieldsTooIrregular:
        return FieldMark.UNDEFINED, FieldMark.UNDEFINED, FieldMark.UNDEFINED, None, TOO_IRREGULAR
    if any(box is None for box in reach):
        axis = reach.index(None)
        note = f"the units it flattened read no pixel along input dimension {axis + 1}"
        return FieldMark.UNDEFINED, FieldMark.UNDEFINED, FieldMark.UNDEFINED, None, note
    if all(_spans(box, extent) for box, extent in zip(reach, spatial, strict=True)):
        return FieldMark.INPUT, None, None, True, ""
    short = next(axis for axis, box in enumerate(reach) if not _spans(box, spatial[axis]))
    note = field.bound or f"the units it flattened do not reach all of input dimension {short + 1}"
    sizes = tuple(end - start + 1 for start, end in reach)
    return sizes, FieldMark.UNDEFINED, tuple(start for start, _ in reach), None if field.bound else False, note


def _every_unit_reads_all(state: State, spatial: tuple[int, ...]) -> bool:
    """Whether every unit reads every input pixel (or nothing: a class token beside tokens),
    unless a constant padding of a map pooled to one unit placed units that read nothing
    beside them along a spatial dimension (`--unit` of those says so), or may have (as an
    upper bound says: each unit reads the whole input at most)."""
    if not isinstance(state, Field):
        return state is WHOLE
    return reads_all_input(state, spatial) and not state.bound and not some_read_less(state, spatial)


def _flattened(field: Field) -> bool:
    """Whether spatial dimensions were flattened into one (a flatten, tokens)."""
    for entry in field.dims:  # noqa: SIM110 (a loop: any() of a generator costs more, asked of every row's field)
        if isinstance(entry, FLAT) and entry.maps():
            return True
    return False


def _spans(mixed: Interval | None, extent: int) -> bool:
    """Whether the padded hull `mixed` reaches both ends of an input dimension of `extent`."""
    return mixed is not None and mixed[0] <= 0 and mixed[1] >= extent - 1


def _places_among(maps: tuple[str | AxisMap, ...], axis: int) -> list[tuple[AxisMap, bool]]:
    """`Field.places` of a field keyed by `_own_maps`: its maps along `axis`, in order, each a
    tensor dimension of its own (its key's first item is its bound)."""
    places = []
    for axis_map in maps[1:]:
        if axis_map.axis == axis:
            places.append((axis_map, True))
    return places


def _number(value: Fraction) -> Stride:
    return value.numerator if value.denominator == 1 else value


def _first_unit(
    field: Field, axis: int, extent: int, every: str, maps: tuple[str | AxisMap, ...] | None
) -> tuple[Interval | None, Fraction | int | None, str]:
    """Unit 0's padded interval along input dimension `axis`, the stride, and a note (on the
    units that read what was mixed: `every`). `maps`: the field's `_own_maps`, where it has
    them, whose maps along `axis` are then its places there."""
    mixed = None  # where no map along the axis was mixed (nothing is, in most fields: not even asked)
    if field.whole:
        mixed = mixed_span(field, axis, exact=False)
        if _spans(mixed, extent):
            return (0, extent - 1), None, f"{every} reads the whole of input dimension {axis + 1}"
    places = field.places(axis) if maps is None else _places_among(maps, axis)
    box = mixed
    try:
        for axis_map, _ in places:
            box = hull(box, axis_map.field(0))
    except FieldsTooIrregular:
        return None, None, TOO_IRREGULAR
    if box is None:
        return None, None, f"output unit 0 reads no pixel along input dimension {axis + 1}"
    if mixed is not None:
        return (
            box,
            None,
            f"{every} reads the units it mixed along input dimension {axis + 1}, which do not reach all of it",
        )
    if len(places) == 1 and places[0][1]:
        jump = places[0][0].jump  # signed: negative along a flipped dimension, whose units run backwards
        return box, None if jump is None else abs(jump), places[0][0].note
    return box, None, f"input dimension {axis + 1} is kept at one position or read twice"


# -- per unit: the centre, the range over units, one unit's exact box ---------------------

MAX_UNITS = 4096  # units per dimension measured for the range over units (more: the first and last halves)


@dataclass(frozen=True, slots=True)
class Spread:
    """Field sizes along one spatial dimension of a row's output, padding included: unit 0's,
    the centre unit's ((n - 1) // 2), and the smallest and largest over `measured` of its
    `units` units (all of them, found from one period where the sizes repeat; else up to
    MAX_UNITS, past it the first and the last MAX_UNITS / 2 and those that break the map's
    order). None in `spreads` where the row reads the whole input dimension ("global")."""

    first: int
    centre: int
    smallest: int
    largest: int
    measured: int
    units: int


def row_states(graph: Graph, groups: list[LayerGroup]) -> tuple[list[State], tuple[int, ...]]:
    """The state of each row's output, and the input's spatial size."""
    fields, spatial = tensor_fields(graph)
    return [fields.get(g.outputs[0].id) if g.outputs else None for g in groups], spatial


def spreads(states: list[State], spatial: tuple[int, ...]) -> list[tuple[Spread | None, ...] | None]:
    """For each row's state, per spatial dimension of the input (of sizes `spatial`), the
    field sizes over the units of its output (None: the row has no numeric field, or one too
    irregular to follow: all rows share one budget of fields, `field_budget.FIELD_BUDGET`)."""
    with deep_maps():
        return [_spreads(state, spatial) for state in states]


def _spreads(state: State, spatial: tuple[int, ...]) -> tuple[Spread | None, ...] | None:
    if isinstance(state, Extent) or (isinstance(state, Field) and _every_unit_reads_all(state, spatial)):
        return (None,) * len(spatial)
    if not isinstance(state, Field):
        return None
    try:
        if _flattened(state):  # one field for all its units: what they read together
            reach = _flattened_reach(state, spatial)
            if all(_spans(box, extent) for box, extent in zip(reach, spatial, strict=True)):
                return (None,) * len(spatial)
            return tuple(None if box is None else Spread(*[_size(box)] * 4, 1, 1) for box in reach)
        return tuple(_spread(state, axis, extent) for axis, extent in enumerate(spatial))
    except FieldsTooIrregular:
        return None


def _spread(field: Field, axis: int, extent: int) -> Spread | None:
    mixed = mixed_span(field, axis, exact=False)  # None where no map along the axis was mixed
    if _spans(mixed, extent):
        return None
    places = field.places(axis)
    maps = {id(axis_map) for axis_map, _ in places}
    if mixed is None and len(places) > 1 and len(maps) == 1 and all(own for _, own in places):
        # One map along several dimensions (a Gram matrix of its units: unit (v, w) reads what
        # units v and w read): the smallest field is a unit's own (v = w), the largest the
        # hull of the map's first and last units' (v, w at its ends).
        axis_map = places[0][0]
        spread = _map_spread(axis_map)
        largest = _size(axis_map.span(0, axis_map.size - 1, exact=False))
        units = axis_map.size ** len(places)
        measured = units if spread.measured == spread.units else spread.measured
        return Spread(spread.first, spread.centre, spread.smallest, largest, measured, units)
    if mixed is not None or len(places) != 1 or not places[0][1]:  # mixed, or kept at one position: unit 0 only
        box = mixed
        for axis_map, _ in places:
            box = hull(box, axis_map.field(0))
        size = box[1] - box[0] + 1 if box else 0
        return Spread(size, size, size, size, 1, 1)
    return _map_spread(places[0][0])


def _map_spread(axis_map: AxisMap) -> Spread:
    """The field sizes of the units of one map: the first's, the centre's, the smallest and
    largest (`_units_to_measure`)."""
    units, every = _units_to_measure(axis_map)
    sizes = [_size(axis_map.field(u)) for u in units]
    measured = axis_map.size if every else len(sizes)
    first, centre = (_size(axis_map.field(u)) for u in (0, (axis_map.size - 1) // 2))
    return Spread(first, centre, min(sizes), max(sizes), measured, axis_map.size)


def _units_to_measure(axis_map: AxisMap) -> tuple[Sequence[int], bool]:
    """The units whose padded field sizes are measured, and whether they hold every unit's.
    Padded sizes repeat with the map's period: one period holds them all; where a few units
    break it (`AxisMap.irregular`: near a reflection's borders), one period of the others and
    those. Else every unit up to MAX_UNITS; past it, the first and the last MAX_UNITS / 2 and
    the irregular ones: a border's units, which differ, lie at both ends (a replication's
    last units read fewer pixels than the first 4,096)."""
    size, period = axis_map.size, axis_map.period
    if axis_map.periodic:
        return range(min(size, period)), True  # type: ignore[type-var]
    irregular = sorted(u for u in axis_map.irregular or () if 0 <= u < size)
    run = _regular_run(irregular, period, size) if period is not None and irregular else None
    if run is not None:
        return [*run, *irregular], True
    if size <= MAX_UNITS:
        return range(size), True
    half = MAX_UNITS // 2
    return sorted({*range(half), *range(size - half, size), *irregular}), False


def _regular_run(irregular: list[int], period: int, size: int) -> range | None:
    """The first `period` consecutive units of a map of `size` units none of which is among
    `irregular` (in order): every other unit's field is one of theirs, shifted."""
    start = 0
    for unit in irregular:
        if unit - start >= period:
            break
        start = max(start, unit + 1)
    return range(start, start + period) if start + period <= size else None


def _size(interval: Interval | None) -> int:
    return 0 if interval is None else interval[1] - interval[0] + 1


def unit_box(
    state: State, spatial: tuple[int, ...], unit: tuple[int, ...], sizes: tuple[int, ...] = ()
) -> list[Interval | None]:
    """The exact input box of one output unit, per spatial dimension: the first and last real
    input pixel that can reach it (None in every dimension where none can: a unit of zero
    padding, also one that continues a cropped map). `unit` gives the unit's index along each
    of the row's spatial dimensions, in the input's order. A layer every unit of which reads
    the whole input gives it all, where it is a map of `sizes` units along those dimensions
    (a map after a squeeze-excitation gate); without them (pooled, flattened) it has no unit
    to give. Raises ArchprofError when the row has no such unit."""
    if len(unit) != len(spatial):
        raise ArchprofError(f"--unit needs {len(spatial)} coordinates (one per spatial dimension), got {len(unit)}")
    if _every_unit_reads_all(state, spatial):
        if len(sizes) != len(spatial) or math.prod(sizes) <= 1:
            raise ArchprofError("this layer reads the whole input (global): no unit box to give")
        for axis, (index, size) in enumerate(zip(unit, sizes, strict=True)):
            if not 0 <= index < size:
                raise _outside(index, size, axis, len(unit))
        return [(0, extent - 1) for extent in spatial]
    state, padding = _part_of_unit(state, unit)
    if padding:
        return [None] * len(spatial)
    if state is None:
        raise ArchprofError("this layer has no spatial field: no unit box to give")
    if state is WHOLE or (isinstance(state, Field) and reads_all_input(state, spatial)):
        return [(0, extent - 1) for extent in spatial]  # the unit's part reads it all, beside parts that read none
    if isinstance(state, Undefined):
        raise ArchprofError(f"this layer's field is undefined: {state.reason}")
    with deep_maps():
        try:
            boxes = _unit_boxes(state, unit)
        except FieldsTooIrregular:
            raise ArchprofError(f"this layer's field is undefined: {TOO_IRREGULAR}") from None
    # A unit no pixel reaches along one dimension (a padding unit) is reached by none at all,
    # whatever its box along the others.
    return [None] * len(boxes) if None in boxes else boxes


def _part_of_unit(state: State, unit: tuple[int, ...]) -> tuple[State, bool]:
    """The field of the part the unit is in, where a spatial dimension the input's runs along
    no input axis but holds paths side by side (`Parts`: a pooled-away dimension padded with
    a constant, `layout._padded_channels`; the tensor's last dimensions taken as the spatial
    ones, in order), the unit's index there taken within its part's, which may hold parts
    again; and whether that part reads nothing (the padding's units: no pixel)."""
    index = list(unit)
    while isinstance(state, Field):
        found = spatial_parts(state, len(unit))
        if not found:
            return state, False
        axis, parts = found[0]
        state, begin = _picked(parts, index[axis], axis, len(unit))
        index[axis] -= begin
        if state is None:
            return None, True
    return state, False


def _picked(parts: Parts, index: int, axis: int, count: int) -> tuple[State, int]:
    """The state of the part that holds index `index` of `parts` (None for a padding's), and
    the index its first unit has there; `axis` is one of `count` spatial dimensions."""
    begin = 0
    for size, part in zip(parts.sizes, parts.states, strict=True):
        if index < begin + size:
            return part, begin
        begin += size
    raise _outside(index, begin, axis, count)


def _unit_boxes(state: Field, unit: tuple[int, ...]) -> list[Interval | None]:
    """Per dimension, the unit's own box and what every unit reads of the maps mixed before
    (`mixed_span`); but a unit that reads no real unit of its own map along a dimension (a
    padding unit) reads nothing at all: no pixel, mixed or not, reaches its value."""
    boxes = []
    for axis, index in enumerate(unit):
        box, own = _own_box(state, axis, index, len(unit))
        if own and box is None:
            return [None] * len(unit)
        boxes.append(hull(mixed_span(state, axis, exact=True), box))
    return boxes


def _own_box(field: Field, axis: int, index: int, count: int) -> tuple[Interval | None, bool]:
    """The pixels along `axis` (one of `count` spatial dimensions) that unit `index` of the
    output dimension running along it reads (the kept positions where none does), and
    whether a dimension runs along it. Positions kept along the same axis (`Field.loose`:
    a 1x1 map's one unit through a permute, added back to the map it came from) are read by
    every unit besides its own, whatever its index."""
    places = field.places(axis)
    if not any(own for _, own in places):  # kept at one position: unit 0
        return _kept_box(field, axis), False
    kept = [axis_map for axis_map, own in places if not own and axis_map in field.loose]
    if len(places) - len(kept) != 1:
        raise ArchprofError(f"this layer's output runs along input dimension {axis + 1} twice: no unit box")
    axis_map: AxisMap = next(axis_map for axis_map, own in places if own)
    if not 0 <= index < axis_map.size:
        raise _outside(index, axis_map.size, axis, count)
    box = axis_map.field(index, exact=True)
    for kept_map in kept:
        box = hull(box, kept_map.field(0, exact=True))
    return box, True


def _outside(index: int, size: int, axis: int, count: int) -> ArchprofError:
    """That --unit's coordinate `index` lies past the `size` units along spatial dimension
    `axis` of `count`, named as the rf help names them ("3 along H")."""
    along = f"{spatial_names(count)[axis]} (input dimension {axis + 1})"
    return ArchprofError(f"--unit {index} is outside the layer's {size} units along {along}")


def _kept_box(field: Field, axis: int) -> Interval | None:
    """The box along an input dimension no output dimension runs along: the positions the
    field kept of it (a row picked by index; a 1x1 map through a reshape), which every unit
    reads, whatever its index (a 1x1 map upsampled to 2x2 has two units along it)."""
    if any(axis in (m.axis for m in entry.maps()) for entry in field.dims if isinstance(entry, FLAT)):
        raise ArchprofError(f"this layer's output is flattened along input dimension {axis + 1}: no unit box")
    box = None
    for axis_map in field.loose:
        if axis_map.axis == axis:
            box = hull(box, axis_map.field(0, exact=True))
    return box


# -- the walk ------------------------------------------------------------------------------


def tensor_fields(graph: Graph) -> tuple[dict[int, State], tuple[int, ...]]:
    """The state of every tensor (TensorMeta.id -> State; absent = no field), and the
    spatial size of the network input the fields refer to."""
    first = graph.inputs[0].shape if graph.inputs else ()
    spatial = tuple(first[2:]) if len(first) >= 3 else ()
    if not spatial:
        return {}, ()
    maps = tuple(AxisMap(axis, size) for axis, size in enumerate(spatial))
    walk = Walk(maps, graph)
    identity = Field((None, None, *maps))
    for index, tensor in enumerate(graph.inputs):
        if tensor.shape[2:] == spatial and len(tensor.shape) == len(first):
            walk.fields[tensor.id] = identity
        elif len(tensor.shape) >= 3:
            walk.fields[tensor.id] = Undefined(f"input {index + 1} is not the size of input 1 ({shape_text(spatial)})")
    with deep_maps():
        for op in graph.ops:
            walk.step(op, rule_for(op.op))
    return walk.fields, spatial
