"""Paths side by side along a spatial dimension (`dims.Parts` along a dimension no input
axis runs along: a dimension pooled to one unit, then padded with a constant or joined to
others), which `Walk` keeps apart unit by unit: where a field has them, whether some of its
units read nothing, which of them each unit reads through a change of that dimension (a
window, a resampling), and `PathsSideBySide`, the walk's moves, merges and reductions of
such fields, each path alone."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import accumulate, pairwise

from archprof.graph import OpNode
from archprof.passes.receptive_field.dims import (
    UNEVEN,
    WHOLE,
    Dim,
    Field,
    Parts,
    State,
    Undefined,
    Uneven,
    along_no_axis,
    plain,
    reads_all_input,
)
from archprof.passes.receptive_field.links import Interval
from archprof.passes.receptive_field.maps import AxisMap

# Why a field is an upper bound where its units along a spatial dimension read paths it does not follow.
PATHS_UNFOLLOWED = (
    "leaves units of a dimension pooled to one unit, then padded or joined to others, reading different paths,"
    " which archprof does not follow there"
)


def spatial_parts(field: Field, count: int) -> Sequence[tuple[int, Parts]]:
    """The paths side by side along the field's spatial dimensions (its last `count`, in the
    input's order, as `rf --unit` names a unit) that run along no input axis, each with the
    input axis whose units index it; none where the field has no batch and channels before
    them (a flattened map's features: its last dimensions are no map's)."""
    dims = field.dims
    first = len(dims) - count
    if first < 2 or not _uneven_among(dims, first):  # (nearly always: asked of most fields)
        return ()
    found = []
    for axis in range(count):
        entry = dims[first + axis]
        if isinstance(entry, Parts) and entry.holds(field, first + axis) and not field.places(axis):
            found.append((axis, entry))
    return found


def _uneven_among(dims: tuple, first: int) -> bool:
    """Whether an entry of `dims` from `first` on reads differently along it (`Uneven`)."""
    for entry in dims[first:]:  # noqa: SIM110 (a loop: any() of a generator costs more, asked of most fields)
        if isinstance(entry, Uneven):
            return True
    return False


def unfollowed_paths(field: Field, count: int) -> bool:
    """Whether some units along the field's spatial dimensions (its last `count`) read, by the
    field, the union of paths not all of which they read: where no paths side by side there
    are followed (`spatial_parts`, of which `rf --unit` reads a unit's own, however deep), a
    spatial dimension whose indices read differently (`Uneven`: paths an op moved or mixed
    without following them), where some input axis runs along none of them (pooled: else
    those indices are a channels-last map's channels)."""
    dims = field.dims
    if len(dims) < count + 2 or not _uneven_among(dims, len(dims) - count):  # (nearly always)
        return False
    parted = spatial_parts(field, count)
    if parted:
        return any(isinstance(path, Field) and unfollowed_paths(path, count) for path in parted[0][1].states)
    return any(not field.places(axis) for axis in range(count))


def some_read_less(field: Field, extents: Sequence[int]) -> bool:
    """Whether, of a field that reads every pixel of an input of `extents`, some units along
    its spatial dimensions may read less: its paths there, one of which reads no pixel or not
    every one, however deep (a constant padding of a map pooled to one unit), or paths it no
    longer follows (`unfollowed_paths`: each unit reads their union, an upper bound)."""
    for _, parts in spatial_parts(field, len(extents)):
        for path in parts.states:
            if path is None or (
                isinstance(path, Field) and (not reads_all_input(path, extents) or some_read_less(path, extents))
            ):
                return True
    return unfollowed_paths(field, len(extents))


def at_spatial_position(axis: int, ndim: int, count: int) -> bool:
    """Whether tensor dimension `axis` of `ndim` is among the last `count`, a unit's spatial
    coordinates (`spatial_parts`), after a batch and channels."""
    return ndim >= count + 2 and axis >= ndim - count


def reads_nothing_somewhere(field: Field, count: int) -> bool:
    """Whether some units along the field's spatial dimensions (its last `count`) read no
    pixel: paths side by side there of which one reads nothing, however deep (a constant
    padding of a map pooled to one unit: `--unit` of those says so)."""
    for _, parts in spatial_parts(field, count):
        for state in parts.states:
            if state is None or (isinstance(state, Field) and reads_nothing_somewhere(state, count)):
                return True
    return False


def beside_nothing(kept: Field, sizes: list[int], states: list[State], axis: int) -> Field:
    """`kept`'s indices along `axis` (along no input axis) side by side with indices that read
    nothing (the None of `states`: a constant padding's): `kept` is what they read together,
    read alike along `axis`, with paths side by side elsewhere read as the union of theirs, as
    a merge reads them. Not WHOLE where `kept` reads every pixel: the padding's units read none."""
    merged = kept.with_dims(
        [None if d == axis else UNEVEN if isinstance(e, Parts) else e for d, e in enumerate(kept.dims)]
    )
    parts = Parts(tuple(sizes), tuple(states), axis, merged)
    return merged.with_dims((*merged.dims[:axis], parts, *merged.dims[axis + 1 :]))


def units_read(change: Callable[[AxisMap], Dim], size: int) -> list[Sequence[Interval]] | None:
    """Per unit of the map `change` makes of a dimension of `size` units, the ranges of those
    units it reads; None where that map is not one link of reads from them."""
    units = AxisMap(0, size)
    made = change(units)
    if made is units:  # nothing moved
        return [((u, u),) for u in range(size)]
    if not isinstance(made, AxisMap) or len(made.links) != 1 or made.links[0].parent is not units:
        return None
    reads = made.links[0].reads
    return [reads(u) for u in range(made.size)]


def runs_of_paths(reads: list[Sequence[Interval]], sizes: list[int]) -> list[tuple[int, tuple[int, ...]]]:
    """Runs of consecutive units that read the same paths (`sizes` units each, side by side),
    from the ranges of units each unit reads: (units in the run, the indices of its paths).
    Units past either end are padding, which reads no path."""
    begins = list(accumulate(sizes, initial=0))  # path k's first unit; the last: past every path
    runs: list[tuple[int, tuple[int, ...]]] = []
    for ranges in reads:
        paths: set[int] = set()
        for first, last in ranges:
            first, last = max(first, 0), min(last, begins[-1] - 1)
            if first <= last:
                paths.update(range(bisect_right(begins, first) - 1, bisect_right(begins, last)))
        read = tuple(sorted(paths))
        if runs and runs[-1][1] == read:
            runs[-1] = (runs[-1][0] + 1, read)
        else:
            runs.append((1, read))
    return runs


def pieces_at(inputs: list[list[tuple[int, State]]], size: int) -> list[tuple[int, list[State]]]:
    """Inputs of `size` units along one dimension, each its paths side by side there (sizes
    and states; an input read alike is one path), cut where any input's path ends: each run
    of units, with the path of every input there."""
    begins = [list(accumulate((n for n, _ in paths), initial=0)) for paths in inputs]
    cuts = sorted({0, size}.union(*begins))
    return [
        (end - start, [paths[bisect_right(first, start) - 1][1] for paths, first in zip(inputs, begins, strict=True)])
        for start, end in pairwise(cuts)
        if start < size
    ]


def merging_shape(states: list[State]) -> tuple[int, ...]:
    """A shape for `Walk.merge` of the fields of paths of one tensor, read alike along the
    dimension they lie side by side in: along each dimension, the size of a map there or of
    paths side by side there (the same in every path), else 1 (the entries there, read alike
    or flattened, merge whatever their size)."""
    ndim = max(len(s.dims) for s in states if isinstance(s, Field))
    shape = [1] * ndim
    for state in states:
        for d, entry in enumerate(state.dims if isinstance(state, Field) else ()):
            if isinstance(entry, AxisMap):
                shape[d] = entry.size
            elif isinstance(entry, Parts):
                shape[d] = sum(entry.sizes)
    return tuple(shape)


NOT_PARTED = object()  # `PathsSideBySide`'s answer where a field holds no paths side by side


class PathsSideBySide:
    """What `Walk` does to fields with paths side by side along a spatial dimension, each path
    alone (its `merge`, `along`, `reduce`, `settled`, `bounded`, `extents` and `input_maps`
    are the walk's)."""

    def as_field(self, state: State, ndim: int) -> State:
        """`state`, WHOLE as a field of `ndim` dimensions: units that read nothing can be placed
        beside its units (a constant padding's), and a window can leave them reading nothing."""
        return Field((None,) * ndim, self.input_maps) if state is WHOLE else state

    def merged_paths(self, op: OpNode, fields: list[tuple[Field, tuple[int, ...]]], out: tuple[int, ...]) -> State:
        """`Walk.merge` of inputs some of which hold paths side by side along a spatial dimension
        (`spatial_parts`): each run of units between their paths' ends reads the union of every
        input's path there. `NOT_PARTED` where none does, or one runs along an input axis there."""
        count = len(self.extents)
        axis = next((a for field, _ in fields for a, _ in spatial_parts(field, count)), None)
        if axis is None:
            return NOT_PARTED
        at = len(out) - count + axis
        inputs, items = [], []
        for field, shape in fields:
            d = len(shape) - count + axis
            if d >= 0 and not along_no_axis(field.dims[d]):
                return NOT_PARTED
            paths = self._paths_along(op, field, d, shape[d]) if d >= 0 else [(out[at], field)]
            if d >= 0 and shape[d] != out[at]:  # broadcast along it: its one unit read by every unit
                paths = [(out[at], paths[0][1])]
            inputs.append(paths)
            items.append((*shape[:d], 1, *shape[d + 1 :]) if d >= 0 else shape)
        one = (*out[:at], 1, *out[at + 1 :])
        pieces = pieces_at(inputs, out[at])
        states = [self.merge(op, list(zip(paths, items, strict=True)), one) for _, paths in pieces]
        merged = self._side_by_side(op, [n for n, _ in pieces], states, at, len(out))
        return self._bounded_as(merged, [field for field, _ in fields], len(out))

    def moved_paths(
        self,
        op: OpNode,
        state: Field,
        parts: Parts,
        axes: Sequence[int],
        change: Callable[[int, AxisMap], Dim],
        what: str,
        idle_bound: bool,
    ) -> State:
        """`Walk.along` of a field with paths side by side along a spatial dimension (`parts`: a
        dimension pooled to one unit, then padded with a constant or joined to others), each
        path moved alone along the other `axes`: where `change` moves that dimension too (a
        window, a resampling), each output unit there reads the union of the paths its units
        read. Where that change is more than one link of reads, archprof cannot say which
        unit reads which path: each reads the union of all, an upper bound."""
        axis = parts.axis
        leaves = self._paths_along(op, state, axis, sum(parts.sizes))
        here = axes.index(axis) if axis in axes else None
        reads = units_read(lambda m: m if here is None else change(here, m), sum(size for size, _ in leaves))
        if reads is None:
            return self.bounded(op, plain(state), f"moves paths side by side along one dimension ({what})", False)
        others = [(i, a) for i, a in enumerate(axes) if a != axis]
        moved: dict[int, State] = {}  # id of a path -> the path moved along the others (a path repeated, once)

        def moved_path(path: State) -> State:
            if id(path) not in moved:
                rest = [a for _, a in others]
                field = self.as_field(path, len(state.dims))
                moved[id(path)] = self.along(op, field, rest, lambda k, m: change(others[k][0], m), what, idle_bound)
            return moved[id(path)]

        runs = runs_of_paths(reads, [size for size, _ in leaves])
        states = [self._union(op, [moved_path(leaves[k][1]) for k in paths]) for _, paths in runs]
        moved_all = self._side_by_side(op, [count for count, _ in runs], states, axis, len(state.dims))
        return self._bounded_as(moved_all, [state], len(state.dims))

    def outermost(self, op: OpNode, state: State, axis: int, size: int) -> State:
        """`state`, of `size` units along tensor dimension `axis`, with its paths along it side by
        side outermost (`_paths_along`), where a cut along it picks them."""
        paths = self._paths_along(op, state, axis, size)
        if len(paths) == 1 or not isinstance(state, Field):
            return state
        return self._side_by_side(op, [n for n, _ in paths], [path for _, path in paths], axis, len(state.dims))

    def _paths_along(self, op: OpNode, state: State, axis: int, size: int) -> list[tuple[int, State]]:
        """The `size` units of `state` along tensor dimension `axis`, as paths side by side,
        each read alike along it (with its size): the state's own paths there (a padding's),
        each opened in turn; where its paths lie along another dimension (that dimension padded
        after this one), those cut where any of theirs ends along `axis`, each piece their
        paths beside one another again; else the state itself."""
        found = spatial_parts(state, len(self.extents)) if isinstance(state, Field) else None
        if not found:
            return [(size, state)]
        parts = found[0][1]
        if parts.axis == axis:
            pairs = zip(parts.sizes, parts.states, strict=True)
            return [path for n, part in pairs for path in self._paths_along(op, part, axis, n)]
        inside = [self._paths_along(op, part, axis, size) for part in parts.states]
        if all(len(paths) == 1 for paths in inside):
            return [(size, state)]
        ndim = len(state.dims)  # type: ignore[union-attr]
        sizes = list(parts.sizes)
        return [(n, self._side_by_side(op, sizes, states, parts.axis, ndim)) for n, states in pieces_at(inside, size)]

    def _union(self, op: OpNode, states: list[State]) -> State:
        """The union of paths' fields (read alike along their dimension): None where none reads."""
        distinct = [s for s in {id(s): s for s in states}.values() if s is not None]
        if len(distinct) <= 1:
            return distinct[0] if distinct else None
        shape = merging_shape(distinct)
        merged = self.merge(op, [(s, shape) for s in distinct], shape)
        return self._bounded_as(merged, distinct, len(shape))  # a union of bounds is one

    def _bounded_as(self, state: State, sources: Sequence[State], ndim: int) -> State:
        """`state`, made from `sources` through their paths, an upper bound where one of them
        is (which the paths, or WHOLE, may not say: then as a field that says it)."""
        bound = next((s.bound for s in sources if isinstance(s, Field) and s.bound), "")
        if not bound or not (isinstance(state, Field) or state is WHOLE) or getattr(state, "bound", ""):
            return state
        field = self.as_field(state, ndim)
        return Field(field.dims, field.whole, field.loose, bound)  # type: ignore[union-attr]

    def _side_by_side(self, op: OpNode, sizes: list[int], states: list[State], axis: int, ndim: int) -> State:
        """Runs of `sizes` units along dimension `axis` reading `states` (each read alike along
        it), as paths side by side (`Parts`) where they differ; an upper bound where any of
        them is one."""
        undefined = [s for s in states if isinstance(s, Undefined)]
        if undefined:
            return undefined[0]
        union = self._union(op, states)
        if len(states) == 1 or not (isinstance(union, Field) or union is WHOLE):
            return self.settled(union) if isinstance(union, Field) and not union.bound else union
        union = self.as_field(union, ndim)  # (WHOLE: each unit that reads a pixel reads every one)
        dims = list(union.dims)  # type: ignore[union-attr]
        dims[axis] = None
        base = union.with_dims(dims)  # type: ignore[union-attr]
        dims[axis] = Parts(tuple(sizes), tuple(states), axis, base)
        field = Field(tuple(dims), base.whole, base.loose, base.bound)
        return field if field.bound else self.settled(field)  # (a bound's units may read less: not WHOLE)

    def reduced_paths(self, op: OpNode, state: Field, out_ndim: int, axes: set[int]) -> State:
        """`Walk.reduce` of a field with paths side by side along a spatial dimension it keeps:
        each path reduced alone, a unit there still reading its own. `NOT_PARTED` where there
        are none."""
        keep = out_ndim == len(state.dims)
        for _, parts in spatial_parts(state, len(self.extents)):
            if parts.axis not in axes:
                at = parts.axis if keep else parts.axis - sum(1 for a in axes if a < parts.axis)
                paths = [self.reduce(op, path, out_ndim, axes) for path in parts.states]
                reduced = self._side_by_side(op, list(parts.sizes), paths, at, out_ndim)
                return self._bounded_as(reduced, [state], out_ndim)
        return NOT_PARTED
