"""The receptive-field rules of the layout operators that move units without mixing them:
slices, splits and picked positions; concatenation and stacking (paths side by side);
padding, rolling, flipping, a pixel shuffle and complex numbers seen as real pairs (the
permutes and reshapes are reshape.py's). Registered in rules.py's tables
(`rules.operator_rule`) when the package imports this module."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

from archprof.graph import OpNode, TensorMeta
from archprof.operators.costs import expand
from archprof.passes.receptive_field.dims import (
    FLAT,
    SPLIT,
    UNEVEN,
    WHOLE,
    Field,
    Merged,
    Parts,
    State,
    Tokens,
    Uneven,
    Within,
    along_no_axis,
    entry_maps,
    plain,
    read_alike_along,
)
from archprof.passes.receptive_field.links import Interval, Link
from archprof.passes.receptive_field.maps import AxisMap
from archprof.passes.receptive_field.rules import dims_of, last_dims, operator_rule
from archprof.passes.receptive_field.side_by_side import at_spatial_position, beside_nothing
from archprof.passes.receptive_field.walk import JOINS_NOTHING_TO_WHOLE, KNOW_PARTS, Rule, Walk

# -- slices, splits, picked positions; concatenation and stacking --------------------------


def _shifted(parent: AxisMap, size: int, offset: int, step: int = 1) -> AxisMap:
    """Unit u reads unit offset + u * step (a slice, a zero padding with offset -left)."""
    if offset == 0 and step == 1 and size == parent.size:
        return parent
    return parent.derive(size, lambda u: ((offset + u * step,) * 2,), step, period=1)


def _offsets(walk: Walk, op: OpNode, x: TensorMeta, axis: int, offsets: list[int], step: int) -> list[State]:
    """Outputs that start `offsets[i]` units along `axis` into x (slice, split)."""
    state = walk.state(x)
    sizes = [out.shape[axis] for out in op.outputs]
    results: list[State] = []
    for offset, size, output in zip(offsets, sizes, op.outputs, strict=True):
        entry = state.dims[axis] if isinstance(state, Field) else None
        if isinstance(entry, Uneven):  # channels of concatenated paths: the paths they are in (else a bound)
            results.append(_cut(walk, op, state, axis, output.shape, offset, step, x.shape[axis]))
            continue
        placed, kept = entry.cut(offset, size, step) if isinstance(entry, Tokens) else (False, None)
        if placed:  # the patch tokens, or the class token, set aside (it reads nothing)
            dims = (*state.dims[:axis], kept, *state.dims[axis + 1 :])
            results.append(None if kept is None else state.with_dims(dims))
            continue
        if isinstance(entry, SPLIT) and size != x.shape[axis]:
            results.append(walk.undefined(op, "it cuts a flattened or split dimension"))
            continue
        results.append(
            walk.along(op, state, [axis], lambda i, parent, o=offset, n=size: _shifted(parent, n, o, step), "a slice")
        )
    return results


@operator_rule("slice")
def _slice(walk: Walk, op: OpNode) -> list[State]:
    x = op.args[0]
    ndim = len(x.shape)
    axis = op.argument(1, "dim", 0) % ndim
    size = x.shape[axis]
    start = op.argument(2, "start", None)
    start = 0 if start is None else start
    start = min(max(start + size if start < 0 else start, 0), size)
    return _offsets(walk, op, x, axis, [start], op.argument(4, "step", 1))


@operator_rule("split", "split_with_sizes", "unsafe_split", "unsafe_split_with_sizes")
def _split(walk: Walk, op: OpNode) -> list[State]:
    x = op.args[0]
    axis = op.argument(2, "dim", 0) % len(x.shape)
    offsets, position = [], 0
    for out in op.outputs:
        offsets.append(position)
        position += out.shape[axis]
    return _offsets(walk, op, x, axis, offsets, 1)


def _picked(walk: Walk, op: OpNode, state: State, axis: int, index: int) -> State:
    """One position along `axis`: a spatial dimension keeps that unit's field, loose."""
    if not isinstance(state, Field):
        return state
    entry = state.dims[axis]
    if isinstance(entry, Tokens) and entry.cut(index, 1, 1) == (True, None):
        return None  # the class token: it reads nothing
    if isinstance(entry, SPLIT):
        return walk.undefined(op, "it picks positions of a flattened or split dimension")
    if isinstance(entry, Parts) and entry.holds(state, axis):  # the path the index is in
        for size, part in zip(entry.sizes, entry.states, strict=True):
            if index < size:
                return _picked(walk, op, part, axis, index)
            index -= size
    dims = state.dims[:axis] + state.dims[axis + 1 :]
    if isinstance(entry, Uneven):
        return walk.bounded(op, state.with_dims(dims))
    if along_no_axis(entry):
        return state.with_dims(dims)
    return Field(dims, state.whole, (*state.loose, _shifted(entry, 1, index)))


@operator_rule("select")
def _select(walk: Walk, op: OpNode) -> State:
    x = op.args[0]
    axis = op.argument(1, "dim", 0) % len(x.shape)
    index = op.argument(2, "index", 0)
    return _picked(walk, op, walk.state(x), axis, index % x.shape[axis])


@operator_rule("unbind")
def _unbind(walk: Walk, op: OpNode) -> list[State]:
    x = op.args[0]
    axis = op.argument(1, "dim", 0) % len(x.shape)
    return [_picked(walk, op, walk.state(x), axis, i) for i in range(len(op.outputs))]


@operator_rule("diag_embed")
def _diag_embed(walk: Walk, op: OpNode) -> State:
    """The last axis laid along a diagonal of two new trailing axes: defined where that axis
    runs along no input axis (the others keep their units)."""
    x, out = op.args[0], op.outputs[0].shape
    state = walk.state(x)
    if not isinstance(state, Field):
        return state
    ndim = len(out)
    if {op.argument(2, "dim1", -2) % ndim, op.argument(3, "dim2", -1) % ndim} != {ndim - 2, ndim - 1}:
        return walk.undefined(op, "it places its diagonal on other dimensions than the last two")
    if state.dims and not along_no_axis(state.dims[-1]):
        return walk.undefined(op, "it spreads a spatial dimension over a diagonal")
    return state.with_dims([*state.dims[:-1], None, None])


def paths_side_by_side(
    walk: Walk, op: OpNode, states: list[State], sizes: list[int], axis: int, out: tuple[int, ...]
) -> State:
    """Paths placed side by side, `sizes` indices each, along dimension `axis` of an output
    of shape `out`, which runs along no input axis (channels): each unit reads the union of
    the paths; the indices along `axis` read alike only where the paths do, else each its
    own path's (`Parts`)."""
    # Each path once (a channel shuffle's runs of one channel repeat a few paths hundreds of
    # times); along `axis` no input axis runs, so its size there does not matter.
    distinct = list({id(s): s for s in states}.values())
    one = (*out[:axis], 1, *out[axis + 1 :])
    items = [(s, one) for s in read_alike_along(distinct, axis)]
    merged = walk.merge(op, items, out)
    if merged is WHOLE and at_spatial_position(axis, len(out), len(walk.extents)):  # beside units that read less
        merged = walk.as_field(merged, len(out)) if any(s is not WHOLE for s in distinct) else merged
    # A loop, not all() of generators: a DenseNet block's paths differ from the second on.
    for state in distinct if isinstance(merged, Field) else ():
        if state != distinct[0] or (isinstance(state, Field) and state.dims[axis] is not None):
            parts = Parts(tuple(sizes), tuple(states), axis, merged)
            return merged.with_dims((*merged.dims[:axis], parts, *merged.dims[axis + 1 :]))
    return merged  # no field, or one path read alike along `axis`


def _cut_parts(walk: Walk, op: OpNode, parts: Parts, out: tuple[int, ...], offset: int, step: int) -> State:
    """Indices offset, offset + step, ... (`out[parts.axis]` of them) of concatenated parts:
    what the parts they are in read, side by side."""
    axis, count = parts.axis, out[parts.axis]
    end = offset + (count - 1) * step  # the last index taken
    pieces, sizes, begin = [], [], 0
    for size, state in zip(parts.sizes, parts.states, strict=True):
        if begin > end:
            break
        if step == 1 and offset <= begin and begin + size - 1 <= end:  # all of it: a shuffle's parts, a channel each
            pieces.append(state)
            sizes.append(size)
        else:
            first = max(0, -(-(begin - offset) // step))  # the first index taken at or past `begin`
            last = min(count - 1, (begin + size - 1 - offset) // step)
            if first <= last:
                shape = (*out[:axis], last - first + 1, *out[axis + 1 :])
                pieces.append(_cut(walk, op, state, axis, shape, offset + first * step - begin, step, size))
                sizes.append(last - first + 1)
        begin += size
    if len(pieces) == 1:
        return pieces[0]
    return paths_side_by_side(walk, op, pieces, sizes, axis, out)


def _cut(
    walk: Walk, op: OpNode, state: State, axis: int, out: tuple[int, ...], offset: int, step: int, size: int
) -> State:
    """Indices offset, offset + step, ... (`out[axis]` of them) of a dimension of `size`
    along `axis`, which runs along no input axis: the parts within it where it has them;
    else what it reads, an upper bound where its indices read different fields."""
    if offset == 0 and step == 1 and out[axis] == size:
        return state  # all of it
    entry = state.dims[axis] if isinstance(state, Field) else None
    if isinstance(entry, Uneven) and not (isinstance(entry, Parts) and entry.holds(state, axis)):
        state = walk.outermost(op, state, axis, size)  # paths along it inside paths along another dimension
        entry = state.dims[axis] if isinstance(state, Field) else None
    if isinstance(entry, Parts) and entry.holds(state, axis):
        return _cut_parts(walk, op, entry, out, offset, step)
    if not isinstance(entry, Uneven):
        return state
    return walk.bounded(op, state.with_dims((*state.dims[:axis], UNEVEN, *state.dims[axis + 1 :])))


@operator_rule("cat")
def _cat(walk: Walk, op: OpNode) -> State:
    """Along channels: the union of the paths. Along a spatial dimension: unit u reads the
    input it was copied from."""
    tensors = [t for t in op.args[0] if isinstance(t, TensorMeta) and t.shape != (0,)]
    out = op.outputs[0].shape
    axis = op.argument(1, "dim", 0) % len(out)
    # No call per path that a plain test answers (a field settles only where it reads a map whole): DenseNet's.
    states = [walk.fields.get(t.id) for t in tensors]
    entries = [s.dims[axis] if isinstance(s, Field) else None for s in states]
    whole = [walk.settled(s) is WHOLE if isinstance(s, Field) and s.whole else s is WHOLE for s in states]
    if any(whole) and all(w or s is None for w, s in zip(whole, states, strict=True)):
        return _beside_whole(walk, whole, [t.shape[axis] for t in tensors], axis, out)
    if entries.count(None) == len(entries) or all(along_no_axis(e) for e in entries):  # plain channels: the first
        return paths_side_by_side(walk, op, states, [t.shape[axis] for t in tensors], axis, out)
    flat = [e for e in entries if isinstance(e, FLAT)]
    tokens = len(flat) == 1 and all(e is None or e is flat[0] for e in entries)  # a class token and patches
    if not tokens and (
        flat
        or any(isinstance(e, (Within, Uneven)) for e in entries)
        or len({e.axis for e in entries if e is not None}) > 1
    ):
        return walk.undefined(op, "it concatenates flattened or different spatial dimensions")
    items = [(s.with_dims((*s.dims[:axis], None, *s.dims[axis + 1 :])) if isinstance(s, Field) else s) for s in states]
    merged = walk.merge(
        op, [(s, (*t.shape[:axis], 1, *t.shape[axis + 1 :])) for s, t in zip(items, tensors, strict=False)], out
    )
    if not isinstance(merged, Field):
        return merged
    if tokens:
        at = entries.index(flat[0])
        first = sum(t.shape[axis] for t in tensors[:at])
        if isinstance(flat[0], Tokens):  # more tokens before a class token and patches
            first, flat[0] = first + flat[0].first, flat[0].positions
        return merged.with_dims((*merged.dims[:axis], Tokens(flat[0], first), *merged.dims[axis + 1 :]))
    pieces, start = [], 0
    for entry, tensor in zip(entries, tensors, strict=True):
        pieces.append((entry, start, tensor.shape[axis]))
        start += tensor.shape[axis]
    links = []
    for entry, begin, size in pieces:
        if entry is None:
            continue

        def reads(u: int, begin=begin, size=size, first=begin == 0, last=begin + size == out[axis]) -> list[Interval]:
            inside = begin <= u < begin + size or (first and u < begin) or (last and u >= begin + size)
            return [(u - begin, u - begin)] if inside else []

        links.append(Link(entry, reads, None, monotone=False, why="concatenated along a spatial dimension"))
    dims = list(merged.dims)
    dims[axis] = AxisMap(next(e.axis for e in entries if e is not None), out[axis], tuple(links))
    joined = merged.with_dims(dims)
    if not _alike_beside([s for s in items if isinstance(s, Field)]):
        # A unit lies in one piece, whose field along the other dimensions is its own; a field
        # per dimension can say no such thing: each is given the union of the pieces'.
        what = "joins along one spatial dimension paths whose fields differ along another"
        return walk.bounded(op, joined, what, kinds=False)
    return joined


_MOST_UNITS_COMPARED = 4096  # a map longer is taken to differ (a bound, never a wrong field)


def _alike_beside(pieces: list[Field]) -> bool:
    """Whether the pieces (their joined dimension left out) read alike along every other
    dimension: the same entry, or maps of one axis and size that give each unit the same
    field (two 3x3 convolutions of one map build two such maps)."""
    first, *others = pieces
    for other in others:
        for mine, theirs in zip(first.dims, other.dims, strict=True):
            if mine is theirs:
                continue
            if not (isinstance(mine, AxisMap) and isinstance(theirs, AxisMap)):
                return False
            if mine.axis != theirs.axis or mine.size != theirs.size or mine.size > _MOST_UNITS_COMPARED:
                return False
            if any(mine.field(unit) != theirs.field(unit) for unit in range(mine.size)):
                return False
    return True


def _beside_whole(walk: Walk, whole: list[bool], sizes: list[int], axis: int, out: tuple[int, ...]) -> State:
    """Pieces that each read the whole input (`whole`) or nothing, joined along `axis`: where
    those that read it lie side by side with some that read nothing (CaiT's class token joined
    to its patch tokens after attention), tokens beside them (`Walk.whole_tokens`); else the
    whole input."""
    reading = [i for i, w in enumerate(whole) if w]
    if len(reading) == len(whole) or reading != list(range(reading[0], reading[-1] + 1)):
        return WHOLE  # nothing beside them, or apart: no one run of tokens
    first = sum(sizes[: reading[0]])
    return walk.whole_tokens(sum(sizes[i] for i in reading), first, axis, len(out))


JOINS_NOTHING_TO_WHOLE.add(_cat)


@operator_rule("stack")
def _stack(walk: Walk, op: OpNode) -> State:
    """Along the new dimension, the union of the paths; where they hold different positions
    of a spatial dimension (rows picked by `unbind`, stacked back), unit i reads its own
    path's, which archprof does not place."""
    tensors = [t for t in op.args[0] if isinstance(t, TensorMeta)]
    axis = op.argument(1, "dim", 0) % len(op.outputs[0].shape)
    states = [walk.state(t) for t in tensors]
    if len({s.loose for s in states if isinstance(s, Field)}) > 1:
        return walk.undefined(op, "it stacks positions picked along a spatial dimension")
    placed = [s.with_dims((*s.dims[:axis], None, *s.dims[axis:])) if isinstance(s, Field) else s for s in states]
    return paths_side_by_side(walk, op, placed, [1] * len(tensors), axis, op.outputs[0].shape)


# -- padding, rolling, flipping ------------------------------------------------------------


def _pads(pad: Sequence[int], ndim: int) -> dict[int, tuple[int, int]]:
    """axis -> (before, after): pad lists (before, after) pairs from the last axis backwards."""
    return {ndim - 1 - k: (pad[2 * k], pad[2 * k + 1]) for k in range(len(pad) // 2)}


@operator_rule("constant_pad_nd")
def _constant_pad(walk: Walk, op: OpNode) -> State:
    """Unit u reads unit u - before (units in the padding read nothing real; negative
    padding crops); flattened positions padded are tokens beside units that read nothing; a
    map that reads the whole input (pooled to one unit) padded, its units beside such units."""
    x, out = op.args[0], op.outputs[0].shape
    pads = _pads(op.args[1], len(x.shape))
    axes = [a for a in pads if pads[a] != (0, 0)]
    state = walk.as_field(walk.state(x), len(x.shape))
    flat = [a for a in axes if isinstance(state, Field) and isinstance(state.dims[a], FLAT) and min(pads[a]) >= 0]
    if flat:
        state = state.with_dims([_beside_padding(e, pads[a][0]) if a in flat else e for a, e in enumerate(state.dims)])
        axes = [a for a in axes if a not in flat]
    # Along no input axis (channels, a pooled dimension), the padding's units are a path beside.
    beside = [a for a in axes if isinstance(state, Field) and along_no_axis(state.dims[a])]
    moved = [a for a in axes if a not in beside]
    state = walk.along(op, state, moved, lambda i, m: _shifted(m, out[moved[i]], -pads[moved[i]][0]), "padding")
    shape = list(x.shape)
    for axis in beside:
        if isinstance(state, Field):
            state = _padded_channels(walk, op, state, axis, shape, pads[axis])
    return walk.settled(state) if isinstance(state, Field) else state


def _beside_padding(entry: Merged | Tokens, before: int) -> Tokens:
    """Flattened positions with `before` units that read nothing padded in front of them (and
    any number after): CoaT's convolutional position encoding, padded by one unit where its
    class token sits, as a class token concatenated in front of them (`_cat`) would be."""
    if isinstance(entry, Tokens):
        return Tokens(entry.positions, entry.first + before)
    return Tokens(entry, before)


def _padded_channels(walk: Walk, op: OpNode, state: Field, axis: int, shape: list[int], pad: tuple[int, int]) -> State:
    """Indices along `axis`, along no input axis (channels, a pooled dimension), cropped by a
    negative padding, then beside indices that read nothing (`shape`, the shape so far,
    updated): concatenated paths, one of which reads nothing, which a slice picks apart."""
    (before, after), size = pad, shape[axis]
    shape[axis] = size + min(before, 0) + min(after, 0)
    kept = _cut(walk, op, state, axis, tuple(shape), max(-before, 0), 1, size) if shape[axis] > 0 else None
    kept = walk.as_field(kept, len(shape))  # (a cut of a padded map that reads the whole input)
    parts = [(n, part) for n, part in ((before, None), (shape[axis], kept), (after, None)) if n > 0]
    shape[axis] = sum(n for n, _ in parts)
    if kept is None or len(parts) == 1:  # only the padding (the real units cropped away), or no padding
        return kept
    return beside_nothing(kept, [n for n, _ in parts], [part for _, part in parts], axis)


def _border_pad(kind: str) -> Rule:
    """Reflection (mirror without repeating the edge) or replication (repeat the edge)."""

    def rule(walk: Walk, op: OpNode) -> State:
        x, out = op.args[0], op.outputs[0].shape
        m = dims_of(op.op)
        pads = _pads(op.args[1], len(x.shape))
        axes = list(last_dims(x, m))

        def padded(i: int, parent: AxisMap) -> AxisMap:
            before, n = pads[axes[i]][0], parent.size

            def reads(u: int) -> tuple[Interval]:
                j = u - before
                if 0 <= u < out[axes[i]]:
                    if kind == "reflection":
                        j = -j if j < 0 else 2 * (n - 1) - j if j >= n else j
                    else:
                        j = min(max(j, 0), n - 1)
                return ((j, j),)

            # Exactly, shifts: every unit of the map's own reads it (a shift by the padding),
            # each border unit reads one unit of its own.
            size = out[axes[i]]
            borders = (*range(min(before, size)), *range(max(before + n, 0), size))
            shifts = ((before, before + n - 1, -before), *((u, u, reads(u)[0][0] - u) for u in borders))
            if kind == "replication":
                return parent.derive(size, reads, 1, shifts=shifts)
            # Mirrored units (the first `before`, the last `after`) read back into the map;
            # every other unit reads its own, in order.
            mirrored = ((0, before - 1), (before + n, size - 1))
            return parent.derive(size, reads, 1, period=1, breaks=mirrored, shifts=shifts)

        return walk.along(op, walk.state(x), axes, padded, f"{kind} padding")

    return rule


operator_rule("reflection_pad1d", "reflection_pad2d", "reflection_pad3d")(_border_pad("reflection"))
operator_rule("replication_pad1d", "replication_pad2d", "replication_pad3d")(_border_pad("replication"))


@operator_rule("roll")
def _roll(walk: Walk, op: OpNode) -> State:
    """Unit u reads unit (u - shift) mod n, unless that unit reads no real pixel (the
    padding Swin adds before rolling its shifted windows): a roll wraps such units round,
    away from the border whose positions they continued (`maps`, padded reading), so that a
    window holding them and the map's first units would otherwise span every pixel between,
    none of which it reads."""
    x = op.args[0]
    shifts, dims = expand(op.args[1], 1), expand(op.argument(2, "dims", ()), 1)
    state = walk.state(x)
    if not dims:
        flat = isinstance(state, Field) and not all(along_no_axis(e) for e in state.dims)
        return walk.undefined(op, "it rolls the flattened tensor") if flat else state
    axes = [d % len(x.shape) for d in dims]

    def rolled(i: int, parent: AxisMap) -> AxisMap:
        n, shift = parent.size, shifts[i] % parent.size

        def reads(u: int) -> tuple[Interval, ...]:
            unit = (u - shift) % n
            return ((unit, unit),) if parent.reads_a_pixel(unit) else ()

        # On either side of the wrap, unit u reads u - shift (from unit shift on) or u - shift
        # + n: the parent's period holds over the longer of the two.
        straight = (shift, n - 1, -shift) if 2 * shift <= n else (0, shift - 1, n - shift)
        return parent.derive(n, reads, 1, monotone=False, permutes=True, straight=straight)

    return walk.along(op, state, axes, rolled, "roll")


@operator_rule("flip")
def _flip(walk: Walk, op: OpNode) -> State:
    x = op.args[0]
    return _flipped(walk, op, walk.state(x), [d % len(x.shape) for d in op.args[1]])


def _flipped(walk: Walk, op: OpNode, state: State, axes: Sequence[int]) -> State:
    """`state` with the units along each of `axes` in reverse order."""

    def flipped(i: int, parent: AxisMap) -> AxisMap:
        n = parent.size
        return parent.derive(n, lambda u: ((n - 1 - u,) * 2,), -1, monotone=False)

    return walk.along(op, state, axes, flipped, "flip")


@operator_rule("rot90")
def _rot90(walk: Walk, op: OpNode) -> State:
    """torch.rot90(x, k, dims) as PyTorch computes it: k = 1 flips dims[1] then swaps the two,
    k = 3 flips dims[0] then swaps them, k = 2 flips both."""
    x = op.args[0]
    ndim = len(x.shape)
    turns = op.argument(1, "k", 1) % 4
    first, second = (d % ndim for d in op.argument(2, "dims", (0, 1)))
    state = walk.state(x)
    if turns == 0 or not isinstance(state, Field):
        return state
    state = _flipped(walk, op, state, {1: [second], 2: [first, second], 3: [first]}[turns])
    if turns == 2 or not isinstance(state, Field):
        return state
    dims = list(state.dims)
    dims[first], dims[second] = dims[second], dims[first]
    return state.with_dims(dims)


@operator_rule("pixel_shuffle", "pixel_unshuffle")
def _pixel_shuffle(walk: Walk, op: OpNode) -> State:
    """pixel_shuffle(r): unit h reads unit h // r (channels become positions, `_pixel_shuffled`);
    unshuffle: unit h reads units h r .. h r + r - 1, each channel one of them (its channels
    read unevenly)."""
    x, out = op.args[0], op.outputs[0].shape
    r = op.args[1]
    state = walk.state(x)
    channels = state.dims[-3] if isinstance(state, Field) else None
    if not along_no_axis(channels):
        return walk.undefined(op, "it moves a spatial dimension into positions")
    if "unshuffle" not in op.op:
        return _pixel_shuffled(walk, op, state, r, out)
    change = lambda i, m: m.derive(out[-2 + i], lambda u: ((u * r, u * r + r - 1),), r, period=1)  # noqa: E731
    state = walk.along(op, plain(state), (len(out) - 2, len(out) - 1), change, "pixel shuffle")
    if r > 1 and isinstance(state, Field):
        return state.with_dims((*state.dims[:-3], UNEVEN, *state.dims[-2:]))
    return state


@operator_rule("unfold")
def _sliding_windows(walk: Walk, op: OpNode) -> State:
    """Tensor.unfold(dim, size, step), a view of the windows along `dim` (HaloNet's halos):
    window u reads units u step .. u step + size - 1, each index of the new last dimension
    one of them (it reads unevenly, as a pixel unshuffle's channels; reduced over, or attended
    over, the window's union is exact). Along a dimension no input axis runs along, the new
    dimension reads as that one does."""
    x, out = op.args[0], op.outputs[0].shape
    state = walk.state(x)
    if not isinstance(state, Field):
        return state
    axis = op.args[1] % max(len(x.shape), 1)
    size, step = op.args[2], op.args[3]
    if along_no_axis(state.dims[axis]):
        return state.with_dims((*state.dims, UNEVEN if isinstance(state.dims[axis], Uneven) else None))
    change = lambda i, m: m.derive(out[axis], lambda u: ((u * step, u * step + size - 1),), step, period=1)  # noqa: E731
    state = walk.along(op, plain(state), (axis,), change, "sliding windows")
    if not isinstance(state, Field):
        return state
    return state.with_dims((*state.dims, UNEVEN if size > 1 else None))


def _pixel_shuffled(walk: Walk, op: OpNode, state: State, r: int, out: tuple[int, ...]) -> State:
    """A pixel shuffle's output (shape `out`) of `state`: exact where every channel reads
    alike, or where the channels are paths side by side (`Parts`) each of whose fields every
    position reads (`_shuffled_parts`); else an upper bound (each position gets the union of
    its r x r channels', as of all)."""
    if not isinstance(state, Field):
        return state
    change = lambda i, m: m.derive(out[-2 + i], lambda u: ((u // r,) * 2,), Fraction(1, r), period=r)  # noqa: E731
    union = walk.along(op, plain(state), (len(out) - 2, len(out) - 1), change, "pixel shuffle")
    channels = state.dims[-3]
    if isinstance(channels, Parts) and channels.holds(state, len(out) - 3):
        return _shuffled_parts(walk, op, channels, union, r, out)
    if isinstance(channels, Uneven):
        return walk.bounded(op, union, "makes positions of channels that read different fields")
    return union


def _shuffled_parts(walk: Walk, op: OpNode, parts: Parts, union: State, r: int, out: tuple[int, ...]) -> State:
    """Paths side by side shuffled into positions: position (i, j) of a block reads channels
    i r + j, i r + j + r², ... The union of all is exact where each position reads every
    path with a field whose channels read alike; then paths of whole groups of r² channels
    stay apart (each output channel reads one path: sliced out, its own field). Where a
    position misses some path (2 + 6 channels by 2: positions (1, 0) and (1, 1) read channels
    2, 3, 6, 7, the second path's alone), a box per axis cannot hold what each position reads
    (it depends on both): the union, marked."""
    fielded = {i for i, s in enumerate(parts.states) if isinstance(s, Field)}
    if any(parts.states[i].dims[-3] is not None for i in fielded):  # a path's own channels read unevenly
        return walk.bounded(op, union, "makes positions of channels that read different fields")
    group = r * r
    owners = [index for index, size in enumerate(parts.sizes) for _ in range(size)]  # each channel's path
    read = [{owners[k] for k in range(position, len(owners), group)} & fielded for position in range(group)]
    if any(paths != fielded for paths in read):
        what = (
            f"makes positions of paths of {'+'.join(map(str, parts.sizes))} channels side by side, not every path"
            f" at every position of its {r}x{r} blocks, which a box per spatial dimension cannot tell apart"
        )
        return walk.bounded(op, union, what, kinds=False)
    if any(size % group for size in parts.sizes) or not isinstance(union, Field):
        return union  # the union, exact; an output channel reads several paths
    sizes = tuple(size // group for size in parts.sizes)
    states = tuple(
        _pixel_shuffled(walk, op, s, r, (*out[:-3], n, *out[-2:])) for s, n in zip(parts.states, sizes, strict=True)
    )
    shuffled = Parts(sizes, states, len(out) - 3, union)
    return union.with_dims((*union.dims[:-3], shuffled, *union.dims[-2:]))


@operator_rule("view_as_real")
def _as_real(walk: Walk, op: OpNode) -> State:
    """A complex tensor seen as real pairs: a trailing axis of size 2 (real, imaginary), each
    unit where it was."""
    state = walk.state(op.args[0])
    return state.with_dims([*state.dims, None]) if isinstance(state, Field) else state


@operator_rule("view_as_complex")
def _as_complex(walk: Walk, op: OpNode) -> State:
    """Real pairs seen as complex numbers: the trailing axis of size 2 gone, each unit where
    it was."""
    state = walk.state(op.args[0])
    if not isinstance(state, Field):
        return state
    loose = tuple(entry_maps(state.dims[-1]))
    return Field(state.dims[:-1], state.whole, state.loose + loose)


# The layout rules that move no index of a dimension of concatenated paths without saying
# so: their outputs keep its `Parts`.
KNOW_PARTS.update({_slice, _split, _select, _unbind, _cat, _stack, _constant_pad})
JOINS_NOTHING_TO_WHOLE.add(_constant_pad)  # units that read nothing beside a map that reads the whole input
# A pixel shuffle keeps paths of whole groups of r x r channels apart (`_shuffled_parts`).
KNOW_PARTS.add(_pixel_shuffle)
