"""The state of a tensor in the receptive-field walk: what each of its dimensions holds
(an `AxisMap`; `Merged` dimensions flattened into one; `Tokens` beside units that read
nothing; `Within` a block; `Uneven` indices that read differently, and their `Parts`,
`Block` and `Inner` kinds), the `Field` of a tensor, `WHOLE` and `Undefined`; and what is
done to them alike by every rule: reading dimensions whole (`read_whole`), splitting a map
into blocks, and merging the entries of several inputs along one dimension
(`merge_entries`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from archprof.graph import value_record
from archprof.passes.receptive_field.links import Interval, Link, hull, same_unit
from archprof.passes.receptive_field.maps import AxisMap


@value_record
class Merged:
    """Several dimensions flattened into one, row-major: each one's entry and size (a flatten,
    the (N H W, C) view in front of a linear layer on a channels-last map)."""

    parts: tuple[tuple[Dim, int], ...]

    def maps(self) -> list[AxisMap]:
        return [m for part, _ in self.parts for m in entry_maps(part)]


@value_record
class Tokens:
    """Flattened positions (`positions`, from unit `first` on) beside units that read none:
    ViT's class token concatenated to its patch tokens. Each unit reads one position or
    nothing; a product or a reduction over the dimension (attention, pooling) reads every
    position, and cutting the positions out gives them back (CoaT's class token set aside);
    nothing else follows them (a window, a reshape back into a map is undefined). Positions
    of one part along no axis (`Walk.whole_tokens`) are tokens that each read what the
    field's `whole` says, every input axis: tokens after attention, a class token joined."""

    positions: Merged
    first: int

    def cut(self, offset: int, size: int, step: int) -> tuple[bool, Merged | None]:
        """Whether a slice's units are placed, and their entry: the positions where it takes
        exactly them, None where it takes none of them (the class token)."""
        count = math.prod(n for _, n in self.positions.parts)
        if offset == self.first and step == 1 and size == count:
            return True, self.positions
        last = offset + (size - 1) * step
        return last < self.first or offset >= self.first + count, None

    def maps(self) -> list[AxisMap]:
        return self.positions.maps()


# Dimensions that hold spatial positions flattened: units read them only whole.
FLAT = (Merged, Tokens)


@dataclass(slots=True, eq=False)
class Within:
    """The position inside a block of a spatial dimension split in two (windows): the map
    `whole` of `outer.size` blocks of `size` units became `outer` (block q reads units
    q size .. q size + size - 1 of `whole`) and this dimension; together they are unit
    q size + r of `whole`. Without it, `outer` stands for its whole block: what attention
    within windows reads once it mixes the positions of a window."""

    whole: AxisMap
    outer: AxisMap
    size: int
    # The blocks and positions once the blocks are mixed at each position (`_strided`), made
    # once: each operand of a grid attention reaches them, and they must be the same maps.
    strided: tuple[AxisMap, Within] | None = dataclasses.field(default=None, repr=False)


SPLIT = (*FLAT, Within)  # the entries of a flattened or split dimension


class Uneven:
    """A dimension along no input axis whose indices read different fields: channels
    concatenated from paths of different fields, a stack of such paths, the positions a
    pixel unshuffle moved into channels. Units read the union over its indices, as over
    any channels; mixing its indices (a convolution over them, a reduction) makes them
    alike again, and folding them into a spatial dimension, which would need each index's
    own field, is undefined."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNEVEN"


UNEVEN = Uneven()


class Parts(Uneven):
    """Uneven indices that are paths concatenated (or stacked) side by side: each part's
    `sizes` along the dimension and `states` as the concatenation took them. They stand for
    the indices of a tensor only while its field is the one they made together (`holds`):
    kept by pointwise ops and normalisations, which move no index, and only the rules that
    know them keep them (`Walk.step`); picking indices then reads the parts they are in alone
    (channels sliced back out of a concatenation), where any other uneven dimension reads
    the union of all."""

    __slots__ = ("axis", "loose", "others", "sizes", "states", "whole")

    def __init__(self, sizes: tuple[int, ...], states: tuple[State, ...], axis: int, merged: Field) -> None:
        self.sizes, self.states, self.axis = sizes, states, axis
        self.others = merged.dims[:axis] + merged.dims[axis + 1 :]
        self.whole, self.loose = merged.whole, merged.loose

    def __repr__(self) -> str:
        return f"Parts{self.sizes}"

    def holds(self, field: Field, axis: int) -> bool:
        """Whether `field`, with this entry at `axis`, is still the field the parts made."""
        dims = field.dims
        if axis != self.axis or len(dims) != len(self.others) + 1:
            return False
        if field.whole != self.whole or field.loose != self.loose:
            return False
        return all(a is b for a, b in zip(dims[:axis] + dims[axis + 1 :], self.others, strict=True))


class Block(Uneven):
    """One of the two dimensions a reshape split concatenated paths (`Parts`) into: the
    blocks (`outer`: `count` of them, each `size` indices) or the index inside a block. A
    reshape that merges the two back, the inner one first (a channel shuffle: a view, a
    transpose, a view), finds the path each index reads (`layout._shuffled`); any other op
    reads them as the union of the paths."""

    __slots__ = ("count", "outer", "parts", "size")

    def __init__(self, parts: Parts, outer: bool, count: int, size: int) -> None:
        self.parts, self.outer, self.count, self.size = parts, outer, count, size

    def __repr__(self) -> str:
        return f"Block({'outer' if self.outer else 'inner'} of {self.parts!r})"


class Inner(Uneven):
    """Indices that read differently only by their place in each run of `size`: dimensions
    that read alike joined, row-major, before uneven ones (F.unfold's channels before each
    window's offsets). Split again, a dimension whose inner dimensions make a multiple of
    `size` reads alike (VOLO's heads and channels, split back from the offsets)."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def __repr__(self) -> str:
        return f"Inner({self.size})"


# A tensor dimension: along an input axis, flattened axes, none (each index reads alike) or
# none with indices that read differently.
Dim = AxisMap | Merged | Tokens | Within | Uneven | None


def along_no_axis(entry: Dim) -> bool:
    return entry is None or isinstance(entry, Uneven)


def plain(state: State) -> State:
    """`state` with its parts (`Parts`, `Block`, `Inner`) read as the union of all, as any uneven dimension."""
    if not isinstance(state, Field):
        return state
    for entry in state.dims:  # a loop, not any() of a generator: asked of most ops' results
        if isinstance(entry, (Parts, Block, Inner)):
            return state.with_dims([UNEVEN if isinstance(e, (Parts, Block, Inner)) else e for e in state.dims])
    return state


def read_alike_along(states: list[State], axis: int) -> list[State]:
    """`states` with their indices along dimension `axis` read alike (None there): where one's
    already are (channels, nearly always), the state itself, not an equal copy. A loop, not
    a call per state: `layout.paths_side_by_side` asks it of every path it places side by
    side (a DenseNet block's concatenations, of every layer's so far)."""
    alike = []
    for state in states:
        if isinstance(state, Field) and state.dims[axis] is not None:
            state = state.with_dims((*state.dims[:axis], None, *state.dims[axis + 1 :]))
        alike.append(state)
    return alike


def entry_maps(entry: Dim) -> list[AxisMap]:
    if along_no_axis(entry) or isinstance(entry, Within):
        return []
    return entry.maps() if isinstance(entry, FLAT) else [entry]


def entry_withins(entry: Dim) -> list[Within]:
    if isinstance(entry, Within):
        return [entry]
    return [w for part, _ in entry.parts for w in entry_withins(part)] if isinstance(entry, Merged) else []


def withins_among(entries: Iterable[Dim]) -> list[Within]:
    """`entry_withins` of each of `entries`, in order: one loop, which asks only the entries
    that may hold one (a merge's and a product's dimensions nearly never do)."""
    found: list[Within] = []
    for entry in entries:
        if isinstance(entry, (Within, Merged)):
            found += entry_withins(entry)
    return found


def without(entry: Dim, gone: set[AxisMap]) -> Dim:
    """`entry` with the block positions (`Within`) of the outer maps `gone` dropped."""
    if isinstance(entry, Within):
        return None if entry.outer in gone else entry
    if isinstance(entry, Merged):
        return Merged(tuple((without(part, gone), n) for part, n in entry.parts))
    return entry


def drop_withins(field: Field, outers: set[AxisMap]) -> Field:
    """Every unit now reads the whole blocks of `outers` (their positions were mixed)."""
    if not outers:
        return field
    return field.with_dims([without(e, _nested(field, outers)) for e in field.dims])


def _nested(field: Field, outers: set[AxisMap]) -> set[AxisMap]:
    """`outers` and the blocks split again inside their blocks: a map split into blocks twice
    (Hiera's unrolled tokens: 16 rows as 2 x 2 x 2 x 2) whose outermost blocks are read whole
    reads every block inside them whole too, the positions that picked one of those blocks
    being gone."""
    withins = withins_among(field.dims)
    gone, grown = set(outers), True
    while grown:
        inner = {w.whole for w in withins if w.outer in gone} - gone
        gone |= inner
        grown = bool(inner)
    return gone


def reads_all_input(field: Field, extents: Sequence[int]) -> bool:
    """Whether every unit that reads anything reads every input pixel: the maps it reads
    whole (`Field.whole`) reach every pixel of every axis of `extents` (the keys of MViTv2's
    pooling attention, 3 x 3 windows 4 tokens apart, leave the last tokens unread)."""
    if len(field.whole) < len(extents) or len({m.axis for m in field.whole}) < len(extents):
        return False  # (the first: most fields read no map whole)
    for axis, n in enumerate(extents):
        spanned = any(m.axis == axis and m.spans_everything for m in field.whole)
        if not spanned and mixed_span(field, axis, exact=True) != (0, n - 1):
            return False
    return True


def mixed_span(field: Field, axis: int, exact: bool) -> Interval | None:
    """The hull of what the units of the maps along input axis `axis` that `field` reads
    whole read: real pixels only (`exact`) or padding positions too."""
    box = None
    for axis_map in field.whole:
        if axis_map.axis == axis:
            box = hull(box, axis_map.span(0, axis_map.size - 1, exact=exact))
    return box


def read_whole(field: Field, axes: Iterable[int], dims: tuple[Dim, ...]) -> Field:
    """`field` laid out as `dims`, every unit now reading all units along its dimensions
    `axes` (a reduction over them, a matrix product's contracted dimension): their maps
    join `whole`, and the block positions (`Within`) along them are mixed away. Blocks mixed
    while `dims` keep the positions inside them apart (a grid attention) read, at each
    position, that position in every block (`_strided`)."""
    whole = set(field.whole)
    mixed: set[AxisMap] = set()
    for axis in axes:
        entry = field.dims[axis]
        whole.update(entry_maps(entry))
        if isinstance(entry, (Within, Merged)):  # (block positions: nearly never)
            mixed.update(w.outer for w in entry_withins(entry))
    newly = whole - field.whole
    strided: dict[AxisMap, AxisMap | Within] = {}
    for kept in withins_among(dims):
        if kept.outer not in newly or kept.outer in mixed:
            continue
        if _grid_spans_map(kept):
            mixed.add(kept.outer)  # every position's units span the whole map: as if its positions were mixed too
        elif kept.outer not in strided:
            whole.discard(kept.outer)
            strided[kept.outer], strided[kept] = _strided(kept)
    if strided:
        dims = tuple(_substituted(entry, strided) for entry in dims)
    return drop_withins(Field(dims, frozenset(whole), field.loose), mixed)


def split_in_blocks(entry: AxisMap, blocks: int, size: int) -> tuple[AxisMap, Within]:
    """`entry` split into `blocks` blocks of `size` units: the blocks (block q reads units
    q size .. q size + size - 1) and the position inside a block."""
    outer = entry.derive(blocks, lambda q: ((q * size, q * size + size - 1),), size, period=1)
    return outer, Within(entry, outer, size)


def _strided(within: Within) -> tuple[AxisMap, Within]:
    """The blocks and the positions of `within`'s map once its blocks are mixed at each
    position r inside them (MaxViT's grid attention over the tokens at position r of every
    block): unit q n + r reads units r, n + r, 2 n + r, ... of the map, a strided set."""
    if within.strided is None:
        n, blocks = within.size, within.outer.size

        def reads(unit: int) -> list[Interval]:
            return [(q * n + unit % n,) * 2 for q in range(blocks)]

        grid = within.whole.derive(blocks * n, reads, None, period=n, monotone=False, why=GRID_MIXED, repeats=True)
        within.strided = split_in_blocks(grid, blocks, n)
    return within.strided


# Why the effective stride after a grid attention is undefined (the row's note).
GRID_MIXED = "each unit reads its position in every block of a grid (a grid attention): not evenly spaced"


def grids_mixed_alike(states: list[State]) -> list[State]:
    """The operands of one product, where some mixed a grid's blocks (`_strided`: the keys of
    a grid attention) and others kept that grid's blocks and positions apart (its queries):
    those replaced by the mixed ones, which hold each unit's own too (query r reads key r)."""
    withins: list[Within] = []
    for state in states:
        if isinstance(state, Field):
            withins += withins_among(state.dims)
    if not withins:  # (nearly always: no grid)
        return states
    present = {id(w) for w in withins}
    maps: dict = {}
    for w in withins:
        if w.strided is not None and id(w.strided[1]) in present:
            maps[w.outer], maps[w] = w.strided
    if not maps:
        return states
    return [s.with_dims([_substituted(e, maps) for e in s.dims]) if isinstance(s, Field) else s for s in states]


def _substituted(entry: Dim, maps: dict) -> Dim:
    """`entry` with each map and block position in `maps` replaced by its value there."""
    if isinstance(entry, (AxisMap, Within)):
        return maps.get(entry, entry)
    if isinstance(entry, Merged):
        return Merged(tuple((_substituted(part, maps), n) for part, n in entry.parts))
    return entry


def _grid_spans_map(within: Within) -> bool:
    """Whether, at every position r inside the blocks, the real pixels of units r, r + n,
    r + 2 n, ... (the position in every block of n units: what mixing the blocks reads there)
    span those of the whole map, as mixing the blocks whole says (a map read whole reads its
    real pixels, `Field.whole`): MobileViT's attention over its patches, after a 3x3
    convolution whose fields reach the neighbouring pixels."""
    whole, n = within.whole, within.size
    span = whole.span(0, whole.size - 1, exact=True)
    return all(whole.exact_strided_span(r, n) == span for r in range(n))


@value_record
class Field:
    """Per tensor dimension, the input axis it runs along (an AxisMap) or none; `whole`: the
    maps every unit reads all units of (pooled over, attended over: their input axes are read
    as far as those units reach, `mixed_span`); `loose`: maps the tensor
    keeps only one unit of (a select, a squeeze), read at unit 0; `bound`: where not empty,
    why the field is an upper bound only (some indices of a dimension whose indices read
    different fields were picked, and archprof gave them the union of all: `Walk.bounded`),
    which every field computed from it is too (`Walk.step`)."""

    dims: tuple[Dim, ...]
    whole: frozenset[AxisMap] = frozenset()
    loose: tuple[AxisMap, ...] = ()
    bound: str = ""

    def with_dims(self, dims: Sequence[Dim]) -> Field:
        return Field(tuple(dims), self.whole, self.loose, self.bound)  # not dataclasses.replace: a few times slower

    def places(self, axis: int) -> list[tuple[AxisMap, bool]]:
        """Every map along `axis`, with whether it is a tensor dimension of its own; the blocks
        of a split dimension whose positions inside them another dimension holds (`Within`)
        as the units at position 0 of each block (`_first_of_blocks`), which its unit 0 is,
        unless the positions are among the unit's features (its channels): then its whole block."""
        own: list[tuple[AxisMap, bool]] = []
        others: list[tuple[AxisMap, bool]] = []
        held: list[tuple[int, Within]] = []  # each block position, with the dimension holding it
        for index, entry in enumerate(self.dims):  # one loop, not three: a row's cells ask this per axis
            if entry is None:  # (the batch, plain channels)
                continue
            if type(entry) is AxisMap:  # (nearly every other entry)
                if entry.axis == axis:
                    own.append((entry, True))
                continue
            if isinstance(entry, FLAT):
                others += [(m, False) for m in entry.maps() if m.axis == axis]
            if isinstance(entry, (Within, Merged)):
                held += [(index, w) for w in entry_withins(entry)]
        if self.loose:
            # A kept map that is also a dimension of its own is that dimension: its one unit,
            # kept through a permute and added back to the map it came from (a 1x1 map's).
            others += [(m, False) for m in self.loose if m.axis == axis and not (m.size == 1 and (m, True) in own)]
        places = own + others if others else own
        if held:
            withins = [w for index, w in held if not among_features(self.dims, index, w)]
            if withins:
                places = _first_of_blocks(places, withins)
        return places


def among_features(dims: Sequence[Dim], index: int, within: Within) -> bool:
    """Whether a block position that dimension `index` of `dims` holds is a feature of the
    unit, which reads its whole block: past the first dimension, where its blocks' map is a
    dimension of its own (a space-to-depth's, among the channels; a tiling unfold's viewed back
    as a map). Where the first dimension (the batch, a grid's windows merged into it) or one
    beside the blocks' holds it, the position indexes the unit: unit 0 reads position 0 of
    each block (`_first_of_blocks`)."""
    return index > 0 and any(entry is within.outer for entry in dims)


def _first_of_blocks(places: list[tuple[AxisMap, bool]], withins: list[Within]) -> list[tuple[AxisMap, bool]]:
    """`places` with each map of blocks whose positions are held apart (`withins`) replaced
    by the map of the first unit of each of its blocks: MaxViT's grid windows, (windows,
    grid rows, grid columns), hold the blocks along their own dimensions and the position
    in a block along the windows', and unit 0 reads the map's unit 0, not its block 0."""
    inside = {id(w.outer): w for w in withins}
    pinned = []
    for axis_map, own in places:
        w = inside.get(id(axis_map))
        if w is not None:
            axis_map = w.whole.derive(w.outer.size, lambda q, n=w.size: ((q * n, q * n),), w.size, period=1)
        pinned.append((axis_map, own))
    return pinned


@value_record
class Extent:
    """Every unit sees the whole input (global pooling, attention over all positions)."""

    name: str


@value_record
class Undefined:
    reason: str


WHOLE = Extent("whole input")
State = Field | Extent | Undefined | None


_ALONG_NO_ONE_AXIS = (*SPLIT, Uneven)  # the entries that `Entries` does not ask for their axis


class Entries:
    """One output dimension's entries for `merge_entries`, each with its input's size there
    (`items`), and what it asks of them, found as each is added: the distinct entries in
    order; whether every size is the first's; the input axis of the first map and whether
    every map's is it; whether an entry is flattened or split, or reads unevenly. A merge
    that resumes the last one's (`gathered.Gathered`: a DenseNet block's concatenations,
    each of every layer's output so far) asks only of the entries it adds. Flags, not sets:
    a sum of two paths makes one per dimension."""

    __slots__ = ("axis", "distinct", "items", "one_axis", "one_size", "split", "uneven")

    def __init__(self) -> None:
        self.items: list[tuple[Dim, int]] = []
        self.distinct: dict[Dim, None] = {}
        self.axis: int | None = None  # the first map's (None: no entry is a map)
        self.one_axis = self.one_size = True
        self.split = self.uneven = False

    def add(self, entry: Dim, n: int) -> None:
        items = self.items
        if items and n != items[0][1]:
            self.one_size = False
        items.append((entry, n))
        self.distinct[entry] = None
        if type(entry) is AxisMap or not isinstance(entry, _ALONG_NO_ONE_AXIS):  # (nearly always a map: first)
            if self.axis is None:
                self.axis = entry.axis
            elif entry.axis != self.axis:
                self.one_axis = False
        elif isinstance(entry, SPLIT):
            self.split = True
        else:
            self.uneven = True


def merge_entries(entries: Entries | None, size: int, unions: dict[tuple, AxisMap]) -> Dim | str:
    """One output dimension of `size` units from the inputs' entries along it (each with the
    input's size there: 1 means broadcast; None: none); a str says why it cannot be placed.

    Where every input is read unit for unit, the union of the same maps is made once
    (`unions`, per walk), and a union of maps whose first ones were united before reads that
    union and the last: a DenseNet block's concatenations, each of all the block's maps so
    far, then cost a link each rather than one per map (densenet121's fields: a quarter of
    its analysis before). The fields are the same, a union's hull being the hull of its parts."""
    if entries is None:
        return None
    distinct, axis = entries.distinct, entries.axis
    full = entries.one_size and entries.items[0][1] == size  # every input read unit for unit
    if full and len(distinct) == 1:
        return entries.items[0][0]
    if entries.uneven:
        if not entries.split and axis is None:
            return UNEVEN  # different concatenations of paths: the union of all
        return "it mixes a dimension whose indices read different fields with a spatial one"
    if entries.split:
        return _merged_parts(entries.items, unions) if full else _MIXES_SPLIT
    if not entries.one_axis:
        return "it mixes two spatial dimensions in one"
    if full:
        key = (size, *distinct)
        union = unions.get(key)
        if union is None:
            earlier = unions.get(key[:-1]) if len(key) > 3 else None
            links = []
            for parent in (earlier, key[-1]) if earlier is not None else key[1:]:
                links.append(_own_units(parent, size))
            union = unions[key] = AxisMap(axis, size, tuple(links))
        return union
    links = [
        _own_units(e, size)
        if n == size
        else Link(e, _first, None, why="broadcast along a spatial dimension")  # every unit reads unit 0
        for e, n in dict.fromkeys(entries.items)
    ]
    return AxisMap(axis, size, tuple(links))


# Why `merge_entries` leaves a merge of flattened or split dimensions undefined (the row's note).
_MIXES_SPLIT = "it mixes a flattened or split dimension with another"
_SPLIT_DIFFERENTLY = "it mixes flattened dimensions split differently"


def _merged_parts(entries: list[tuple[Dim, int]], unions: dict[tuple, AxisMap]) -> Dim | str:
    """Flattened dimensions of the same size merged part by part (a residual sum of Hiera's
    unrolled tokens and of its attention's, whose positions in a window are one part read
    whole): where each input's parts split into the same row-major sizes, a part that reads
    alike along it (None) split as the others' are, the union of each part; a str where they
    do not."""
    queues = [list(entry.parts) if isinstance(entry, Merged) else None for entry, _ in entries]
    if None in queues:
        return _MIXES_SPLIT
    parts: list[tuple[Dim, int]] = []
    while any(queues):
        if not all(queues):
            return _SPLIT_DIFFERENTLY
        size = min(queue[0][1] for queue in queues)
        here: Entries | None = None
        for queue in queues:
            entry, n = queue.pop(0)
            if n != size:
                if entry is not None or n % size:
                    return _SPLIT_DIFFERENTLY
                queue.insert(0, (None, n // size))  # positions that read alike: split as the others are
            if entry is not None:
                if here is None:
                    here = Entries()
                here.add(entry, size)
        part = merge_entries(here, size, unions)
        if isinstance(part, str):
            return part
        parts.append((part, size))
    return Merged(tuple(parts))


def _own_units(parent: AxisMap, size: int) -> Link:
    """A union's link to one of the maps it unites, of `size` units: unit u reads the
    parent's unit u (`same_unit`), written as a shift by 0 of all its units too
    (`Link.shifts`). The union's exact runs are then its parents' runs as they are, and a
    unit's exact bound its parent unit's (`runs.Shifted`): what the link's reads give as
    ranges in order, without asking them for their order (`links.ranges_in_order`,
    `links.reading_units`) or clamping each bound to its run, for nearly half of the maps
    of a ResNet (its sums) or a DenseNet (its concatenations); a window of one unit
    (`Link.window`) too, which says which of its units read a pixel and whether they read
    all of the parent's."""
    return Link(parent, same_unit, 1, period=1, shifts=((0, size - 1, 0),), window=(1, 1, 0))


def _first(unit: int) -> tuple[tuple[int, int]]:
    return ((0, 0),)
