"""The walk's state and toolbox: a field per tensor (`Field`, `Merged`, `Uneven`, `WHOLE`, `Undefined`),
and `Walk`, which steps through the graph's ops applying each op's rule and offers the rules
what they share (merging paths, windows along dimensions, reductions)."""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache

import torch

from archprof.graph import Graph, OpNode, TensorMeta, WrappedFloat, WrappedInt, value_record
from archprof.operators import Family, operator_named
from archprof.passes.receptive_field.maps import TOO_IRREGULAR, AxisMap, FieldsTooIrregular, Interval, Link, hull


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


def _makes_idle_units(op: OpNode, ndim: int, axis: int, change: Callable[[AxisMap], AxisMap | None]) -> bool:
    """Whether `change` (a map of the op's input along tensor dimension `axis` -> the
    output's) makes output units that read no input unit: tried on a map of the input's
    size there (of its first argument, where that has `ndim` dimensions)."""
    x = op.args[0] if op.args else None
    if not isinstance(x, TensorMeta) or len(x.shape) != ndim:
        return False
    made = change(AxisMap(0, x.shape[axis]))
    if made is None:
        return True
    runs = made.exact_runs
    if runs is not None:
        return sum(last - first + 1 for first, last in runs) != made.size
    return any(made.field(unit, exact=True) is None for unit in range(made.size))


def along_no_axis(entry: Dim) -> bool:
    return entry is None or isinstance(entry, Uneven)


def plain(state: State) -> State:
    """`state` with its parts (`Parts`, `Block`, `Inner`) read as the union of all, as any uneven dimension."""
    if not isinstance(state, Field) or not any(isinstance(e, (Parts, Block, Inner)) for e in state.dims):
        return state
    return state.with_dims([UNEVEN if isinstance(e, (Parts, Block, Inner)) else e for e in state.dims])


def entry_maps(entry: Dim) -> list[AxisMap]:
    if along_no_axis(entry) or isinstance(entry, Within):
        return []
    return entry.maps() if isinstance(entry, FLAT) else [entry]


def entry_withins(entry: Dim) -> list[Within]:
    if isinstance(entry, Within):
        return [entry]
    return [w for part, _ in entry.parts for w in entry_withins(part)] if isinstance(entry, Merged) else []


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
    withins = [w for entry in field.dims for w in entry_withins(entry)]
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
    if len({m.axis for m in field.whole}) < len(extents):
        return False
    return all(mixed_span(field, axis, exact=True) == (0, n - 1) for axis, n in enumerate(extents))


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
        whole.update(entry_maps(field.dims[axis]))
        mixed.update(w.outer for w in entry_withins(field.dims[axis]))
    newly = whole - field.whole
    strided: dict[AxisMap, AxisMap | Within] = {}
    for kept in (w for entry in dims for w in entry_withins(entry) if w.outer in newly and w.outer not in mixed):
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
    fields = [s for s in states if isinstance(s, Field)]
    withins = [w for s in fields for entry in s.dims for w in entry_withins(entry)]
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
        as the units at position 0 of each block (`_first_of_blocks`), which its unit 0 is."""
        own: list[tuple[AxisMap, bool]] = []
        others: list[tuple[AxisMap, bool]] = []
        withins: list[Within] = []
        for entry in self.dims:  # one loop, not three: a row's cells ask this per axis
            if isinstance(entry, AxisMap):
                if entry.axis == axis:
                    own.append((entry, True))
            elif isinstance(entry, FLAT):
                others += [(m, False) for m in entry.maps() if m.axis == axis]
            if isinstance(entry, (Within, Merged)):
                withins += entry_withins(entry)
        others += [(m, False) for m in self.loose if m.axis == axis]
        places = own + others if others else own
        if withins:
            places = _first_of_blocks(places, withins)
        return places


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


class Walk:
    def __init__(self, maps: tuple[AxisMap, ...], graph: Graph) -> None:
        """`maps`: the network input's own map along each spatial dimension."""
        self.extents = tuple(m.size for m in maps)
        self.input_maps = frozenset(maps)
        self.graph = graph
        self.fields: dict[int, State] = {}
        # storage -> tensors seen in it, built only when an in-place write needs it
        self._members: defaultdict[int, list[TensorMeta]] = defaultdict(list)
        self._indexed = -1  # ops indexed so far (-1: not even the inputs)
        # an in-place result's id -> the id of the version it replaced (same tensor object)
        self._replaced: dict[int, int] = {}
        # (size, parents) -> the map reading each parent unit for unit: see `merge_entries`
        self._unions: dict[tuple, AxisMap] = {}
        # The tensors a mask may have reached: an attention mask (-inf where a causal or
        # banded mask drops a key), the scores it was added or filled into, and the softmax's
        # weights, exactly 0 there: a softmax or a product over them reads fewer units than
        # its axis (`_reads_mask`). A buffer that holds such a value is one from the start.
        self.masked: set[int] = {tensor for tensor, low in graph.buffer_minima.items() if low < _NO_WEIGHT}

    def state(self, value) -> State:
        return self.fields.get(value.id) if isinstance(value, TensorMeta) else None

    def step(self, op: OpNode, rule: Rule | None) -> None:
        # Whether `op` reads a mask is asked only where the answer marks its outputs: no rule
        # changes `masked`, and most ops (a convolution, a pooling) do not carry a mask on.
        fields = self.fields
        read_any, read_whole_only = False, True  # a loop, not all() twice: every op comes here
        bound = ""  # the first input's that is an upper bound only
        for tensor in op.inputs:
            state = fields.get(tensor.id)
            if state is not None:
                read_any = True
                read_whole_only = read_whole_only and state is WHOLE
                if type(state) is Field and state.bound and not bound:
                    bound = state.bound
        if not read_any or not op.outputs:
            if op.outputs and self._reads_mask(op):  # a mask in the making, whatever the op
                self.masked.update(t.id for t in op.outputs)
            return  # computed from parameters and constants only (or nothing): no field
        try:
            if read_whole_only and rule not in JOINS_NOTHING_TO_WHOLE:
                result = WHOLE  # whatever it does, it reads units that each read the whole input
            elif rule is None:
                result = self.undefined(op, "archprof has no rule for it")
            else:
                result = rule(self, op)
                if rule not in KNOW_PARTS:  # it may move or mix the indices parts stand for
                    result = [plain(s) for s in result] if isinstance(result, list) else plain(result)
            if isinstance(result, Undefined) and self._reads_only_global(op):
                result = WHOLE  # tokens that each read the whole input, beside a class token: `Tokens`
        except (IndexError, TypeError, ValueError, ZeroDivisionError, KeyError):  # arguments not foreseen
            result = self.undefined(op, "its arguments were not understood")
        except FieldsTooIrregular:
            result = self.undefined(op, TOO_IRREGULAR)
        results = result if isinstance(result, list) else [result] * len(op.outputs)
        if len(results) != len(op.outputs):  # an overload with other outputs than foreseen
            results = [self.undefined(op, "its outputs were not understood")] * len(op.outputs)
        for tensor, state in zip(op.outputs, results, strict=True):
            if isinstance(state, Field) and len(state.dims) != len(tensor.shape):
                state = self.undefined(op, "its output's dimensions were not understood")
            elif bound and isinstance(state, Field) and not state.bound:  # read from a bound: a bound
                state = Field(state.dims, state.whole, state.loose, bound)
            if state is not None:
                self.fields[tensor.id] = state
        if _carries_mask(op.op) and self._reads_mask(op):
            self.masked.update(t.id for t in op.outputs)
        if op.writes_input and op.inputs:
            self._written(op, op.inputs[0], op.outputs[0])

    def _reads_only_global(self, op: OpNode) -> bool:
        """Whether every input of `op` with a field reads the whole input at every unit that
        reads anything (a class token joined to such tokens reads nothing): then so does
        every output unit, whatever a rule can follow of the op."""
        states = [self.fields.get(tensor.id) for tensor in op.inputs]
        return all(s is None or s is WHOLE or (type(s) is Field and self.reads_everything(s)) for s in states)

    def _reads_mask(self, op: OpNode) -> bool:
        """Whether `op` reads a value a softmax weighs exactly 0: a scalar argument below
        `_NO_WEIGHT` (-inf, finfo.min, -1e9: the causal mask SDPA builds, masked_fill's), a
        tensor that may hold one, or a tensor literal of the forward, whose values the trace
        does not keep (`m[band] = -inf`). A buffer does where its smallest value, which the
        trace notes (`Graph.buffer_minima`), is one; Swin's -100 mask is finite. The buffers of
        a model on meta hold no values: they are taken as finite."""
        masked = self.masked
        for tensor in op.inputs:
            if tensor.id in masked or (tensor.kind == "constant" and tensor.dtype is not torch.bool):
                return True
        return _a_masking_number(op.args) or (bool(op.kwargs) and _a_masking_number(op.kwargs.values()))

    def _written(self, op: OpNode, before: TensorMeta, after: TensorMeta) -> None:
        """An in-place write changed what a storage holds: any other view of it now holds
        data archprof cannot place (it knows shapes, not offsets). The tensor's own earlier
        versions are no views: what they held when their rows made them stays their field
        (a block's normalised map, added to in place by its residual: `result += input`)."""
        self._replaced[after.id] = before.id
        earlier, now = self.fields.get(before.id), self.fields.get(after.id)
        if earlier is now or earlier == now:  # most often one object: a ReLU in place keeps its input's
            return
        versions = {after.id}
        version: int | None = before.id
        while version is not None:
            versions.add(version)
            version = self._replaced.get(version)
        undefined = None  # made for the first other view found: most storages have none
        for tensor in self._storage_members(op.index).get(before.storage, ()):
            if tensor.id not in versions:
                if undefined is None:
                    undefined = self.undefined(op, "it writes in place through another view of this tensor's storage")
                self.fields[tensor.id] = undefined

    def _storage_members(self, upto: int) -> dict[int, list[TensorMeta]]:
        """Storage -> the tensors seen in it among the graph's inputs and the ops before op
        `upto`, indexed as far as asked, once."""
        members = self._members
        if self._indexed < 0:
            for tensor in self.graph.inputs:
                members[tensor.storage].append(tensor)
            self._indexed = 0
        for earlier in self.graph.ops[self._indexed : upto]:
            for tensor in earlier.inputs:
                members[tensor.storage].append(tensor)
            for tensor in earlier.outputs:
                members[tensor.storage].append(tensor)
        self._indexed = max(self._indexed, upto)
        return members

    def undefined(self, op: OpNode, why: str) -> Undefined:
        return Undefined(f"{op.op} in {_where(op)}: {why}")

    def bounded(
        self, op: OpNode, state: State, what: str = "picks indices that read different fields", kinds: bool = True
    ) -> State:
        """`state`, the union over every index of a dimension whose indices read different
        fields, given to the few of them `op` picks (or to each position it makes of them):
        an upper bound of their field. `kinds`: `what` is followed by the kinds of such indices."""
        if not isinstance(state, Field) or state.bound:
            return state
        which = f" ({_UNEVEN_KINDS})" if kinds else ""
        why = f"{UPPER_BOUND}: {op.op} in {_where(op)} {what}{which}, and archprof gives them the union of all"
        return Field(state.dims, state.whole, state.loose, why)

    # -- shared pieces -------------------------------------------------------------------

    def reads_everything(self, field: Field) -> bool:
        """Whether every unit that reads anything reads every input pixel (`reads_all_input`)."""
        return reads_all_input(field, self.extents)

    def settled(self, field: Field) -> State:
        """WHOLE once every input axis is read whole, unless some units read nothing (a
        class token beside tokens: `whole_tokens`)."""
        if not self.reads_everything(field) or any(type(entry) is Tokens for entry in field.dims):
            return field
        return WHOLE

    def whole_tokens(self, count: int, first: int, axis: int, ndim: int) -> Field:
        """A dimension of units `first` to `first + count - 1` that each read the whole input,
        beside units that read nothing (a class token joined to tokens after attention:
        CaiT's class-attention blocks, CoaT's serial blocks after the first)."""
        dims: list[Dim] = [None] * ndim
        dims[axis] = Tokens(Merged(((None, count),)), first)
        return Field(tuple(dims), self.input_maps)

    def merge(self, op: OpNode, items: Sequence[tuple[State, tuple[int, ...]]], out: tuple[int, ...]) -> State:
        """Union of the fields of several inputs of an op whose output has shape `out`
        (broadcasting as NumPy does): output unit u reads unit u of every input (unit 0 along
        a dimension of size 1)."""
        undefined: Undefined | None = None
        fields: list[tuple[Field, tuple[int, ...]]] = []
        for state, shape in items:
            if state is WHOLE:  # every output unit depends on the whole input, whatever else it reads
                return WHOLE
            if isinstance(state, Undefined):
                undefined = undefined or state
            elif isinstance(state, Field):
                fields.append((state, shape))
        if undefined is not None:
            return undefined
        if not fields:
            return None
        if len(fields) == 1 and fields[0][1] == out:
            return fields[0][0]
        # Each output dimension's entries, with the size of the input there; one walk over
        # the fields (a DenseNet block's concatenation has one per layer so far).
        along: list[list[tuple[Dim, int]]] = [[] for _ in out]
        whole: set[AxisMap] = set()
        loose: dict[AxisMap, None] = {}
        for field, shape in fields:
            offset = len(out) - len(shape)  # broadcast: aligned on the last dimensions
            for k, entry in enumerate(field.dims):
                if entry is not None and k + offset >= 0:
                    along[k + offset].append((entry, shape[k]))
            if field.whole:
                whole |= field.whole
            if field.loose:
                loose.update(dict.fromkeys(field.loose))
        dims: list[Dim] = []
        for entries, size in zip(along, out, strict=True):
            entry = merge_entries(entries, size, self._unions)
            if isinstance(entry, str):
                return self.undefined(op, entry)
            # Parts no longer: another input (a mean over the channels) may read every path.
            dims.append(UNEVEN if isinstance(entry, Parts) else entry)
        if len(fields) > 1 and any(isinstance(entry, Uneven) for entry in dims):
            dims = _read_alike(fields, dims, whole, loose)
        # An input that reads an outer map without its block position reads the whole block.
        outers = {w.outer for e in dims for w in entry_withins(e)}
        gone = set()
        for field, _ in fields if outers else ():  # no block positions (not windows): none gone
            kept = {w.outer for e in field.dims for w in entry_withins(e)}
            gone |= {m for e in field.dims for m in entry_maps(e) if m in outers and m not in kept}
        return self.settled(drop_withins(Field(tuple(dims), frozenset(whole), tuple(loose)), gone))

    def along(
        self,
        op: OpNode,
        state: State,
        axes: Sequence[int],
        change: Callable[[int, AxisMap], Dim],
        what: str,
        idle_bound: bool = False,
    ):
        """Replace the map of each tensor dimension `axes[i]` by change(i, map); a flattened
        dimension there is not understood. `idle_bound`: where such a dimension runs along no
        input axis (a 1x1 map kept at one position) and `change` makes units there that read
        nothing (a window's padding), the field is an upper bound, as those units cannot be
        told from the others (a constant padding's are placed beside them instead,
        `layout._padded_channels`)."""
        if not isinstance(state, Field):
            return state
        dims = list(state.dims)
        moved, idle = False, False
        for i, axis in enumerate(axes):
            entry = dims[axis]
            if isinstance(entry, (*FLAT, Within)):
                return self.undefined(op, f"{what} along a flattened or split dimension")
            if isinstance(entry, AxisMap):
                changed = change(i, entry)
                if changed is None:
                    return self.undefined(op, f"{what}: no output unit reads an input unit")
                moved = moved or changed is not entry
                dims[axis] = changed
            elif entry is None and idle_bound:
                idle = idle or _makes_idle_units(op, len(dims), axis, lambda m, i=i: change(i, m))
        # Every map kept (a 1x1 convolution): the state itself, which the rows then share
        # (`receptive_field_columns` writes a state's cells once), not an equal copy.
        state = state.with_dims(dims) if moved else state
        if idle:
            return self.bounded(
                op, state, f"makes units that read nothing ({what}) along a dimension no input axis runs along", False
            )
        return state

    def reduce(self, op: OpNode, state: State, out_ndim: int, axes: set[int] | None) -> State:
        """An op that mixes every unit along the tensor dimensions `axes` (None: all), keeping
        them as size 1 or dropping them (as `out_ndim` says)."""
        if not isinstance(state, Field):
            return state
        ndim = len(state.dims)
        axes = set(range(ndim)) if axes is None else axes
        keep = out_ndim == ndim
        dims = [None if d in axes else e for d, e in enumerate(state.dims) if keep or d not in axes]
        if len(dims) != out_ndim:
            return self.undefined(op, "its output's dimensions were not understood")
        return self.settled(read_whole(state, axes, tuple(dims)))


def _read_alike(
    fields: list[tuple[Field, tuple[int, ...]]], dims: list[Dim], whole: set[AxisMap], loose: dict[AxisMap, None]
) -> list[Dim]:
    """The merged `dims`, with the uneven dimensions whose every index reads all the merge
    reads alike again: where one input, the same along them all, reads all of it (the same
    maps elsewhere: a mean over the channels added back)."""
    for field, _ in fields:
        if len(field.dims) != len(dims) or field.whole != whole or set(field.loose) != set(loose):
            continue
        pairs = list(zip(field.dims, dims, strict=True))
        alike = [e is None and isinstance(d, Uneven) for e, d in pairs]
        if any(alike) and all(e is d or a for (e, d), a in zip(pairs, alike, strict=True)):
            return [None if a else d for (_, d), a in zip(pairs, alike, strict=True)]
    return dims


def _where(op: OpNode) -> str:
    return op.module.path if op.module is not None and op.module.path else "(model)"


UPPER_BOUND = "an upper bound"  # how a bound field's note begins (`Walk.bounded`)
# What makes a dimension's indices read different fields that archprof does not follow
# apart (concatenated paths it follows while only pointwise ops come between: `Parts`).
_UNEVEN_KINDS = "a pixel unshuffle's channels, a grouped convolution's after one, paths another op mixed"


def _a_masking_number(values) -> bool:
    """Whether a number among `values` is below `_NO_WEIGHT` (types looked up, not isinstance:
    every op of a walk comes here; a bool is no number here, and a number the argument
    parser wrapped, `graph.WrappedFloat`, is one)."""
    for value in values:  # noqa: SIM110 (a loop: any() of a generator costs more, on every op)
        if type(value) in _NUMBERS and value < _NO_WEIGHT:
            return True
    return False


_NUMBERS = frozenset({int, float, WrappedFloat, WrappedInt})


# Below this, a score's weight exp(score) is exactly 0 in float64: a masking value (-inf, -1e4,
# finfo.min), where Swin's -100 leaves the masked keys a weight, and so a field.
_NO_WEIGHT = -746.0


@cache
def _carries_mask(name: str) -> bool:
    """Whether an operator's outputs keep a mask's mark: its values moved or combined
    elementwise (scores a mask was added or filled into), or normalised (a softmax's weights,
    0 where the mask was -inf); a product or a reduction's are sums that no longer hold it."""
    operator = operator_named(name)
    return operator is not None and operator.family in _CARRYING


_CARRYING = (Family.POINTWISE, Family.DATA_MOVEMENT, Family.CREATION, Family.NORMALISATION)


def merge_entries(entries: list[tuple[Dim, int]], size: int, unions: dict[tuple, AxisMap]) -> Dim | str:
    """One output dimension of `size` units from the inputs' entries along it (each with the
    input's size there: 1 means broadcast); a str says why it cannot be placed.

    Where every input is read unit for unit, the union of the same maps is made once
    (`unions`, per walk), and a union of maps whose first ones were united before reads that
    union and the last: a DenseNet block's concatenations, each of all the block's maps so
    far, then cost a link each rather than one per map (densenet121's fields: a quarter of
    its analysis before). The fields are the same, a union's hull being the hull of its parts."""
    if not entries:
        return None
    # One loop for every question asked of the entries: a DenseNet block's concatenation
    # has one per layer so far.
    first = entries[0][0]
    same = full = True
    split = uneven = False
    axes = set()
    for entry, n in entries:
        same = same and entry == first and n == size
        full = full and n == size
        if isinstance(entry, (*FLAT, Within)):
            split = True
        elif isinstance(entry, Uneven):
            uneven = True
        else:
            axes.add(entry.axis)
    if same:
        return first
    if uneven:
        if not split and not axes:
            return UNEVEN  # different concatenations of paths: the union of all
        return "it mixes a dimension whose indices read different fields with a spatial one"
    if split:
        return _merged_parts(entries, unions) if full else _MIXES_SPLIT
    if len(axes) > 1:
        return "it mixes two spatial dimensions in one"
    if full:
        key = (size, *dict.fromkeys(e for e, _ in entries))
        union = unions.get(key)
        if union is None:
            earlier = unions.get(key[:-1]) if len(key) > 3 else None
            parents = (earlier, key[-1]) if earlier is not None else key[1:]
            union = unions[key] = AxisMap(axes.pop(), size, tuple(Link(m, _same, 1, period=1) for m in parents))
        return union
    links = [
        Link(e, _same, 1, period=1)
        if n == size
        else Link(e, _first, None, why="broadcast along a spatial dimension")  # every unit reads unit 0
        for e, n in dict.fromkeys(entries)
    ]
    return AxisMap(axes.pop(), size, tuple(links))


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
        here: list[tuple[Dim, int]] = []
        for queue in queues:
            entry, n = queue.pop(0)
            if n != size:
                if entry is not None or n % size:
                    return _SPLIT_DIFFERENTLY
                queue.insert(0, (None, n // size))  # positions that read alike: split as the others are
            if entry is not None:
                here.append((entry, size))
        part = merge_entries(here, size, unions)
        if isinstance(part, str):
            return part
        parts.append((part, size))
    return Merged(tuple(parts))


def _same(unit: int) -> tuple[tuple[int, int]]:
    return ((unit, unit),)


def _first(unit: int) -> tuple[tuple[int, int]]:
    return ((0, 0),)


# A rule: an op's output state(s) from its inputs' (rules.py, layout.py and windows.py).
Rule = Callable[[Walk, OpNode], State | list[State]]
# The rules `Walk.step` asks even where every input with a field reads the whole input: they
# place units that read nothing beside those (a class token joined to tokens after attention).
JOINS_NOTHING_TO_WHOLE: set[Rule] = set()
# The rules whose outputs keep the `Parts` of their inputs (rules.py, layout.py and windows.py add
# them): every other rule's are read as the union of their paths.
KNOW_PARTS: set[Rule] = set()
