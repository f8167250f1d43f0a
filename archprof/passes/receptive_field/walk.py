"""`Walk`, which steps through the graph's ops applying each op's rule (a tensor's state
per TensorMeta id) and offers the rules what they share (merging paths, windows along
dimensions, reductions, upper bounds and undefined fields with their reasons); the rules'
tables of kinds (`KNOW_PARTS`, `JOINS_NOTHING_TO_WHOLE`). The states it keeps are dims.py's."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import cache

import torch

from archprof.graph import Graph, OpNode, TensorMeta, WrappedFloat, WrappedInt
from archprof.operators import Family, operator_named
from archprof.passes.receptive_field.dims import (
    SPLIT,
    UNEVEN,
    WHOLE,
    Dim,
    Field,
    Merged,
    Parts,
    State,
    Tokens,
    Undefined,
    Uneven,
    drop_withins,
    entry_maps,
    merge_entries,
    plain,
    read_whole,
    reads_all_input,
    withins_among,
)
from archprof.passes.receptive_field.field_budget import TOO_IRREGULAR, FieldsTooIrregular
from archprof.passes.receptive_field.gathered import Gathered, gathered
from archprof.passes.receptive_field.links import UNORDERED, Interval, Link, joined, units_reading
from archprof.passes.receptive_field.maps import AxisMap
from archprof.passes.receptive_field.side_by_side import (
    NOT_PARTED,
    PATHS_UNFOLLOWED,
    PathsSideBySide,
    some_read_less,
    spatial_parts,
    unfollowed_paths,
)


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


class Walk(PathsSideBySide):
    def __init__(self, maps: tuple[AxisMap, ...], graph: Graph) -> None:
        """`maps`: the network input's own map along each spatial dimension."""
        self.extents = tuple(m.size for m in maps)
        self.input_maps = frozenset(maps)
        self.graph = graph
        self.fields: dict[int, State] = {}
        # storage -> tensors seen in it, built only when an in-place write needs it
        self._members: defaultdict[int, list[TensorMeta]] = defaultdict(list)
        self._indexed = -1  # ops indexed so far (-1: not even the inputs)
        self._written_storages: set[int] = set()  # the storages some op writes in place: the ones indexed
        # an in-place result's id -> the id of the version it replaced (same tensor object)
        self._replaced: dict[int, int] = {}
        # (size, parents) -> the map reading each parent unit for unit: see `merge_entries`
        self._unions: dict[tuple, AxisMap] = {}
        # what the last merge gathered of its fields: the next may begin with them (`gathered`)
        self._gathered: Gathered | None = None
        # map -> whether each of its units reads a real pixel (`every_unit_reads`)
        self._reading: dict[AxisMap, bool] = {}
        # map -> the units of it that read a real pixel (`_reading_units`)
        self._units: dict[AxisMap, Interval | object | None] = {}
        # The tensors a mask may have reached: an attention mask (-inf where a causal or
        # banded mask drops a key), the scores it was added or filled into, and the softmax's
        # weights, exactly 0 there: a softmax or a product over them reads fewer units than
        # its axis (`_reads_mask`). A buffer that holds such a value is one from the start.
        self.masked: set[int] = {tensor for tensor, low in graph.buffer_minima.items() if low < _NO_WEIGHT}

    def state(self, value) -> State:
        return self.fields.get(value.id) if isinstance(value, TensorMeta) else None

    def made_by_a_view(self, tensor: TensorMeta, before: int) -> bool:
        """Whether the last of the graph's ops before index `before` that gave `tensor` is a
        view (its strides may skip units of its base); False for one no op gave (an input, a
        parameter), dense. A scan back: asked of rare operators only (`as_strided`)."""
        for op in reversed(self.graph.ops[:before]):
            if any(output.id == tensor.id for output in op.outputs):
                return op.is_view
        return False

    def step(self, op: OpNode, rule: Rule | None) -> None:
        # Whether `op` reads a mask is asked only where the answer marks its outputs: no rule
        # changes `masked`, and most ops (a convolution, a pooling) do not carry a mask on.
        fields = self.fields
        read_any, read_whole_only = False, True  # a loop, not all() twice: every op comes here
        bound = ""  # the first input's that is an upper bound only
        read = None  # the last input's state: an output that is it (a pointwise op's) was checked
        for tensor in op.inputs:
            state = fields.get(tensor.id)
            if state is not None:
                read_any, read = True, state
                read_whole_only = read_whole_only and state is WHOLE
                if type(state) is Field and state.bound and not bound:
                    bound = state.bound
        if not read_any or not op.outputs:
            if op.outputs and self._reads_mask(op):  # a mask in the making, whatever the op
                self.masked.update(t.id for t in op.outputs)
            return  # computed from parameters and constants only (or nothing): no field
        if read_whole_only and rule not in JOINS_NOTHING_TO_WHOLE:
            # Whatever it does, it reads units that each read the whole input: its outputs are
            # WHOLE, without its rule or a field's checks (most ops past a squeeze-excitation gate).
            for tensor in op.outputs:
                fields[tensor.id] = WHOLE
        else:
            try:
                if rule is None:
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
                elif type(state) is Field and state is not read and not state.bound and self._unfollowed(state):
                    state = self.bounded(op, state, PATHS_UNFOLLOWED, kinds=False)
                if state is not None:
                    fields[tensor.id] = state
        if _carries_mask(op.op) and self._reads_mask(op):
            self.masked.update(t.id for t in op.outputs)
        if op.writes_input and op.inputs:
            self._written(op, op.inputs[0], op.outputs[0])

    def _unfollowed(self, field: Field) -> bool:
        """Whether the field's units along a spatial dimension read paths it does not follow
        (`unfollowed_paths`: an upper bound), asked of every op's new fields."""
        dims, count = field.dims, len(self.extents)
        for entry in dims[len(dims) - count :] if len(dims) >= count + 2 else ():  # (nearly always maps)
            if isinstance(entry, Uneven):
                return unfollowed_paths(field, count)
        return False

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
        # Numbers' types looked up, not isinstance, in one loop here: every op that carries a
        # mask comes here. A bool is no number here; one the argument parser wrapped
        # (`graph.WrappedFloat`) is one.
        for value in (*op.args, *op.kwargs.values()) if op.kwargs else op.args:
            if type(value) in _NUMBERS and value < _NO_WEIGHT:
                return True
        return False

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
        `upto`, indexed as far as asked, once. Only the storages some op writes in place are
        indexed (`_written` asks of no other): most tensors are in none of them, and a test
        costs less than an entry (a ResNet's residual adds index nearly the whole graph)."""
        members, ops = self._members, self.graph.ops
        if self._indexed < 0:
            self._written_storages = {op.inputs[0].storage for op in ops if op.writes_input and op.inputs}
            for tensor in self.graph.inputs:
                if tensor.storage in self._written_storages:
                    members[tensor.storage].append(tensor)
            self._indexed = 0
        written = self._written_storages
        for earlier in ops[self._indexed : upto]:
            for tensor in earlier.inputs:
                if tensor.storage in written:
                    members[tensor.storage].append(tensor)
            for tensor in earlier.outputs:
                if tensor.storage in written:
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
        class token beside tokens: `whole_tokens`; a constant padding of a map pooled to one
        unit: `some_read_less`)."""
        if len(field.whole) < len(self.extents):  # nearly always (nothing pooled yet): not every axis read whole
            return field
        if not self.reads_everything(field) or any(type(entry) is Tokens for entry in field.dims):
            return field
        return field if some_read_less(field, self.extents) else WHOLE

    def whole_tokens(self, count: int, first: int, axis: int, ndim: int) -> Field:
        """A dimension of units `first` to `first + count - 1` that each read the whole input,
        beside units that read nothing (a class token joined to tokens after attention:
        CaiT's class-attention blocks, CoaT's serial blocks after the first)."""
        dims: list[Dim] = [None] * ndim
        dims[axis] = Tokens(Merged(((None, count),)), first)
        return Field(tuple(dims), self.input_maps)

    def merge_inputs(self, op: OpNode, out: tuple[int, ...]) -> State:
        """`merge` of every input of `op` (a pointwise op's, a normalisation's)."""
        fields, inputs = self.fields, op.inputs  # each input's state read here, not through `state`
        if inputs and inputs[0].shape == out:
            for tensor in inputs[1:]:
                if fields.get(tensor.id) is not None:
                    break
            else:  # (a ReLU's, a normalisation's: its weights have none) the first's state, as `merge` gives it
                state = fields.get(inputs[0].id)
                return state if state is WHOLE or isinstance(state, (Field, Undefined)) else None
        return self.merge(op, [(fields.get(t.id), t.shape) for t in inputs], out)

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
        # the fields, resumed from the merge before where it merged the first of them. That
        # merge's is taken out of the walk while this one adds to it: the merges it makes of
        # paths side by side (`merged_paths`), each path's alone, gather their own.
        last, self._gathered = self._gathered, None
        paths = gathered(last, fields, len(out))
        merged = self.merged_paths(op, fields, out) if paths.parted else NOT_PARTED
        if merged is not NOT_PARTED:
            return merged
        self._gathered = paths
        dims: list[Dim] = []
        for entries, size in zip(paths.along, out, strict=True):
            entry = merge_entries(entries, size, self._unions)
            if isinstance(entry, str):
                return self.undefined(op, entry)
            # Parts no longer: another input (a mean over the channels) may read every path.
            dims.append(UNEVEN if isinstance(entry, Parts) else entry)
        for entry in dims if len(fields) > 1 else ():  # a loop, not any() of a generator: every merge comes here
            if isinstance(entry, Uneven):
                dims = _read_alike(fields, dims, paths.whole, paths.loose)
                break
        # An input that reads an outer map without its block position reads the whole block.
        gone = set()
        withins = withins_among(dims)
        if withins:  # (no block positions, not windows: none gone)
            outers = {w.outer for w in withins}
            for field, _ in fields:
                kept = {w.outer for w in withins_among(field.dims)}
                gone |= {m for e in field.dims for m in entry_maps(e) if m in outers and m not in kept}
        bound = ""
        if len(fields) > 1 and paths.idle_along_one_axis(self.every_unit_reads):
            bound = (
                f"{UPPER_BOUND}: {op.op} in {_where(op)} merges paths one of which reads no pixel at some units"
                " along one dimension, and archprof gives those units what that path reads along the others"
            )
        return self.settled(drop_withins(Field(tuple(dims), frozenset(paths.whole), tuple(paths.loose), bound), gone))

    def every_unit_reads(self, axis_map: AxisMap) -> bool:
        """Whether every unit of the map reads a real pixel (found once per map): where the
        units that do are known from its links (`_reading_units`), without its runs; else
        where its runs (`AxisMap.exact_runs`, in order, apart) hold every unit, however many
        (a dilated convolution's map is a few runs, broken where its order is near the
        borders); a map without runs (after a window attention, a roll) where
        `AxisMap.reads_everywhere` cannot tell, unit by unit."""
        known = self._reading.get(axis_map)
        if known is None:
            units = self._reading_units(axis_map)
            if units is not UNORDERED:
                known = units == (0, axis_map.size - 1)
            elif (runs := axis_map.exact_runs) is not None:
                known = sum(last - first + 1 for first, last in runs) == axis_map.size
            else:
                known = axis_map.reads_everywhere or all(
                    axis_map.field(u, exact=True) is not None for u in range(axis_map.size)
                )
            self._reading[axis_map] = known
        return known

    def _reading_units(self, axis_map: AxisMap) -> Interval | object | None:
        """The units of the map that read a real pixel, consecutive (None: none does), found
        once per map from its links: through each, those that read a unit of its parent that
        does (`links.units_reading`), all the links' together where they leave no gap;
        `UNORDERED` where a link or a parent cannot say, or they leave one. Most maps are
        known so down to the input (a constant padding's: all but its padding's units), and
        their exact runs (`AxisMap.exact_runs`), which every map before them needs, are
        never found."""
        known = self._units.get(axis_map, _NOT_ASKED)
        if known is _NOT_ASKED:
            if axis_map.affine is not None and self._windows_read_all(axis_map):  # (most maps of a CNN)
                return self._units[axis_map]
            known = self._units[axis_map] = self._units_through_links(axis_map)
        return known

    def _windows_read_all(self, axis_map: AxisMap) -> bool:
        """Whether every unit of a map with a formula (`AxisMap.affine`: its links windows of
        maps with one, down to the input) reads a real pixel as `_units_through_links` finds
        it where each link takes `units_reading`'s first road: the link's parent's every unit
        reads one (so found, down to the input), the first window ends past its padding and
        the last begins inside the parent; then that is stored as found (the units
        `(0, size - 1)`, the links' hull), in a frame a map, not five. False where a link
        does not say so: the general road then tells."""
        size, found = axis_map.size, self._units
        if not size:
            return False
        for link in axis_map.links:
            parent = link.parent
            units = found.get(parent, _NOT_ASKED)
            if units is _NOT_ASKED:
                if not self._windows_read_all(parent):
                    return False
                units = found[parent]
            k, s, p = link.window
            if units != (0, parent.size - 1) or p >= k or (size - 1) * s - p > units[1]:
                return False
        found[axis_map] = (0, size - 1)
        return True

    def _units_through_links(self, axis_map: AxisMap) -> Interval | object | None:
        size = axis_map.size
        if not axis_map.links or not size:  # the input's (an empty map: its runs say)
            return (0, size - 1) if size else UNORDERED
        if len(axis_map.links) == 1:  # (most maps: a window's) nothing to join
            return self._units_through(axis_map.links[0], size)
        found: list[Interval] = []
        for link in axis_map.links:
            units = self._units_through(link, size)
            if units is UNORDERED:
                return UNORDERED
            if units is not None:
                found.append(units)
        return joined(found)

    def _units_through(self, link: Link, size: int) -> Interval | object | None:
        """The units of a map of `size` units that read, through `link`, a unit of its
        parent that reads a real pixel (`_reading_units`)."""
        parent = self._reading_units(link.parent)
        return parent if parent is UNORDERED or parent is None else units_reading(link, size, parent)

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
        parted = spatial_parts(state, len(self.extents))
        if parted:  # (one at most holds at once)
            return self.moved_paths(op, state, parted[0][1], axes, change, what, idle_bound)
        dims = list(state.dims)
        moved, idle = False, False
        for i, axis in enumerate(axes):
            entry = dims[axis]
            if isinstance(entry, SPLIT):
                return self.undefined(op, f"{what} along a flattened or split dimension")
            if isinstance(entry, AxisMap):
                changed = change(i, entry)
                if changed is None:
                    return self.undefined(op, f"{what}: no output unit reads an input unit")
                moved = moved or changed is not entry
                dims[axis] = changed
            elif isinstance(entry, Parts):  # paths no longer of this field: their sizes no longer its
                moved, dims[axis] = True, UNEVEN
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
        reduced = self.reduced_paths(op, state, out_ndim, axes)
        return self.settled(read_whole(state, axes, tuple(dims))) if reduced is NOT_PARTED else reduced


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


_NOT_ASKED = object()  # `Walk._reading_units` not yet asked of a map

_CARRYING = (Family.POINTWISE, Family.DATA_MOVEMENT, Family.CREATION, Family.NORMALISATION)


# A rule: an op's output state(s) from its inputs' (rules.py, reshape.py, layout.py and windows.py).
Rule = Callable[[Walk, OpNode], State | list[State]]
# The rules `Walk.step` asks even where every input with a field reads the whole input: they
# place units that read nothing beside those (a class token joined to tokens after attention).
JOINS_NOTHING_TO_WHOLE: set[Rule] = set()
# The rules whose outputs keep the `Parts` of their inputs (rules.py, reshape.py, layout.py and
# windows.py add them): every other rule's are read as the union of their paths.
KNOW_PARTS: set[Rule] = set()
