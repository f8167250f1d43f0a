"""The receptive-field rules of the operators that move, merge and split tensor dimensions
without moving units along them: permutes and reshapes (dimensions merged into one, split
back, split into windows, a channel shuffle's blocks rejoined), squeezes, expansions and
tiling. Registered in rules.py's tables (`rules.operator_rule`) when the package imports
this module."""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from itertools import pairwise

from archprof.graph import OpNode
from archprof.passes.receptive_field.dims import (
    UNEVEN,
    Block,
    Dim,
    Field,
    Inner,
    Merged,
    Parts,
    State,
    Uneven,
    Within,
    along_no_axis,
    entry_maps,
    split_in_blocks,
)
from archprof.passes.receptive_field.layout import paths_side_by_side
from archprof.passes.receptive_field.maps import AxisMap
from archprof.passes.receptive_field.rules import operator_rule
from archprof.passes.receptive_field.walk import KNOW_PARTS, Walk


def _permutation(op: OpNode, ndim: int) -> list[int]:
    """Output axis i takes input axis perm[i]."""
    name = op.op.removeprefix("aten.").rstrip("_")
    perm = list(range(ndim))
    if name == "permute":
        perm = [d % ndim for d in op.args[1]]
    elif name == "transpose":
        a, b = op.args[1] % ndim, op.args[2] % ndim
        perm[a], perm[b] = perm[b], perm[a]
    elif name == "t":
        perm.reverse()
    return perm


@operator_rule("permute", "transpose", "t")
def _permute(walk: Walk, op: OpNode) -> State:
    """Channels-last and back: each dimension keeps its map, in its new place."""
    x = op.args[0]
    state = walk.state(x)
    if not isinstance(state, Field):
        return state
    return state.with_dims([state.dims[axis] for axis in _permutation(op, len(x.shape))])


@functools.lru_cache(maxsize=1024)
def _groups(shape_in: tuple[int, ...], shape_out: tuple[int, ...]) -> tuple[tuple[list[int], list[int]], ...] | None:
    """A row-major reshape as groups (input dims, output dims) of equal products; each size-1
    dimension joins the group of the next larger one (or the last group). None if the sizes
    do not line up. Kept per pair of shapes: a network's blocks reshape alike (a ConvNeXt
    block's linear layers, a Swin block's windows), and a walk meets each pair many times;
    the groups are only read."""
    ins = [i for i, n in enumerate(shape_in) if n != 1]
    outs = [j for j, n in enumerate(shape_out) if n != 1]
    groups: list[tuple[list[int], list[int]]] = []
    a = b = 0
    while a < len(ins) or b < len(outs):
        if a >= len(ins) or b >= len(outs):
            return None
        group = ([ins[a]], [outs[b]])
        size_in, size_out = shape_in[ins[a]], shape_out[outs[b]]
        a, b = a + 1, b + 1
        while size_in != size_out:
            if size_in < size_out and a < len(ins):
                size_in *= shape_in[ins[a]]
                group[0].append(ins[a])
                a += 1
            elif size_out < size_in and b < len(outs):
                size_out *= shape_out[outs[b]]
                group[1].append(outs[b])
                b += 1
            else:
                return None
        groups.append(group)
    if not groups:
        return ((list(range(len(shape_in))), list(range(len(shape_out)))),)
    for side, shape in ((0, shape_in), (1, shape_out)):
        for d in (d for d, n in enumerate(shape) if n == 1):
            target = next((g for g in groups if g[side][0] > d), groups[-1])
            target[side].append(d)
            target[side].sort()
    return tuple(groups)


def _row_major_parts(
    held: list[Dim], shape: tuple[int, ...], ins: list[int]
) -> tuple[list[tuple[Dim, int]], list[AxisMap]]:
    """The row-major parts of the input dimensions `ins` (a flattened one's own parts in its
    place), each with its size, but those of size 1; and the maps among those, which the
    reshape keeps at their unit 0. Plain loops: every view of a map comes here, per group."""
    parts: list[tuple[Dim, int]] = []
    unit_zero: list[AxisMap] = []
    for i in ins:
        entry = held[i]
        for part, n in entry.parts if isinstance(entry, Merged) else ((entry, shape[i]),):
            if n != 1:
                parts.append((part, n))
            elif part is not None:
                unit_zero += entry_maps(part)
    return parts, unit_zero


@operator_rule("view", "_unsafe_view", "_reshape_alias")
def _reshape(walk: Walk, op: OpNode) -> State:
    """Row-major reshapes: dimensions kept keep their maps; dimensions merged into one become
    a flattened dimension (`Merged`), which a later reshape may split back exactly; a spatial
    dimension split in two (into windows) becomes blocks and positions in them (`Within`),
    which merge back into it."""
    x, out = op.args[0], op.outputs[0].shape
    state = walk.state(x)
    if not isinstance(state, Field) or tuple(x.shape) == tuple(out):
        return state
    groups = _groups(tuple(x.shape), tuple(out))
    if groups is None:
        return walk.undefined(op, "its sizes were not understood")
    dims: list[Dim] = [None] * len(out)
    loose = list(state.loose)
    # Parts that no longer stand for their indices are the union of their paths.
    held = [UNEVEN if isinstance(e, Parts) and not e.holds(state, d) else e for d, e in enumerate(state.dims)]
    for ins, outs in groups:
        parts, unit_zero = _row_major_parts(held, x.shape, ins)
        loose += unit_zero
        entries = _regrouped(parts, [out[j] for j in outs])
        if isinstance(entries, str):
            return walk.undefined(op, entries)
        for j, entry in zip(outs, entries, strict=True):
            dims[j] = entry
    field = Field(tuple(dims), state.whole, tuple(loose))
    for j, entry in enumerate(dims):
        if isinstance(entry, _Rejoined):
            field = _shuffled(walk, op, field, j, entry, out)
    return field


class _Rejoined(Uneven):
    """The blocks of a `Block` merged back into one dimension, the index inside a block
    first: index k count + i reads index i size + k of the paths (`_shuffled` places it)."""

    __slots__ = ("block",)

    def __init__(self, block: Block) -> None:
        self.block = block


def _shuffled(walk: Walk, op: OpNode, field: Field, axis: int, rejoined: _Rejoined, out: tuple[int, ...]) -> State:
    """A channel shuffle's output: each index reads what its index in the paths read (runs
    of indices of one path side by side), where the rest of the field is still the one the
    paths made; else the union of the paths."""
    parts, count, size = rejoined.block.parts, rejoined.block.count, rejoined.block.size
    rest = field.dims[:axis] + field.dims[axis + 1 :]
    intact = (
        axis == parts.axis
        and (field.whole, field.loose) == (parts.whole, parts.loose)
        and len(rest) == len(parts.others)
        and all(a is b for a, b in zip(rest, parts.others, strict=True))
    )
    if not intact:
        return field.with_dims((*field.dims[:axis], UNEVEN, *field.dims[axis + 1 :]))
    read = _index_states(walk, op, parts)
    states: list[State] = []
    counts: list[int] = []
    for index in range(count * size):
        piece = read[(index % count) * size + index // count]
        if states and piece is states[-1]:  # the same path's as the index before: one run
            counts[-1] += 1
        else:
            states.append(piece)
            counts.append(1)
    return paths_side_by_side(walk, op, states, counts, axis, out)


def _index_states(walk: Walk, op: OpNode, parts: Parts) -> list[State]:
    """What each index of concatenated paths reads: its path's state, or, where that path is
    made of paths itself, theirs (one list, not a cut per index: a shuffle of n channels
    would cost n times n)."""
    read: list[State] = []
    for size, state in zip(parts.sizes, parts.states, strict=True):
        entry = state.dims[parts.axis] if isinstance(state, Field) else None
        if isinstance(entry, Parts) and entry.holds(state, parts.axis):
            read += _index_states(walk, op, entry)
        else:
            read += [walk.bounded(op, state) if isinstance(entry, Uneven) and size > 1 else state] * size
    return read


def _regrouped(parts: list[tuple[Dim, int]], sizes: list[int]) -> list[Dim] | str:
    """The entries of output dimensions of `sizes` from the row-major `parts` (no size 1
    among them), as `_plan` places them; a str says why they cannot be placed."""
    part_sizes = []
    for _, n in parts:  # plain loops here: every view of a map comes here, per group
        part_sizes.append(n)
    cuts, steps, kept = _plan(tuple(part_sizes), tuple(sizes))
    if kept:
        # Each part an output dimension of its own (the channels beside a flatten, a flattened
        # map split back: a ConvNeXt block's linear layers, twice each): each step would join
        # one part alone (`joined_dims`), which is that part's entry as it is.
        placed: list[Dim] = []
        taken = 0
        for n in sizes:
            if n == 1:
                placed.append(None)
            else:
                placed.append(parts[taken][0])
                taken += 1
        return placed
    refined: list[tuple[Dim, int]] = []
    for (entry, n), cut in zip(parts, cuts, strict=False):  # (the cuts end at one that fails)
        if isinstance(cut, str):
            return cut
        if not cut:
            refined.append((entry, n))
            continue
        split = _blocks(entry, list(cut))
        if isinstance(split, str):
            return split
        refined += zip(split, cut, strict=True)
    entries: list[Dim] = [None] * len(sizes)
    for step in steps:
        if isinstance(step, str):
            return step
        first, last, targets = step
        if len(targets) == 1:  # parts first..last merged into one output dimension
            entry = joined_dims(refined[first : last + 1])
            if isinstance(entry, str):
                return entry
            entries[targets[0]] = entry
            continue
        pieces = _blocks(refined[first][0], [sizes[k] for k in targets])  # one part split over several
        if isinstance(pieces, str):
            return pieces
        for k, piece in zip(targets, pieces, strict=True):
            entries[k] = piece
    return entries


Step = tuple[int, int, tuple[int, ...]] | str  # parts first..last -> output dimensions, or why not


@functools.lru_cache(maxsize=1024)
def _plan(
    parts: tuple[int, ...], sizes: tuple[int, ...]
) -> tuple[tuple[tuple[int, ...] | str, ...], tuple[Step, ...], bool]:
    """How row-major parts of sizes `parts` (no size 1 among them) make output dimensions of
    `sizes`: per part, the pieces an output dimension that begins inside it splits it into
    (`_refined`: () where none does), and then, over the pieces, each run of them merged into
    one output dimension or each one split over several, in order; a str where the sizes do
    not line up, after which nothing is planned; and whether each part is an output
    dimension of its own, in order, the others of size 1. Kept per pair of sizes, as
    `_groups` is: the sizes alone decide it, and a network's blocks reshape alike."""
    kept = parts == tuple(n for n in sizes if n != 1)
    cuts = _refined(parts, sizes)
    if cuts and isinstance(cuts[-1], str):
        return cuts, (), kept
    pieces = [n for part, cut in zip(parts, cuts, strict=True) for n in (cut or (part,))]
    steps: list[Step] = []
    targets = [k for k, n in enumerate(sizes) if n != 1]
    p = t = 0
    while t < len(targets):
        if p >= len(pieces):
            steps.append("its sizes were not understood")
            break
        size = sizes[targets[t]]
        if pieces[p] <= size:  # pieces merged into one output dimension
            first, product = p, 1
            while product < size and p < len(pieces):
                product *= pieces[p]
                p += 1
            if product != size:
                steps.append("it regroups dimensions across their borders")
                break
            steps.append((first, p - 1, (targets[t],)))
            t += 1
            continue
        split, product = [], 1  # one piece split over several output dimensions
        while product < pieces[p] and t < len(targets):
            split.append(targets[t])
            product *= sizes[targets[t]]
            t += 1
        if product != pieces[p]:
            steps.append("it regroups dimensions across their borders")
            break
        steps.append((p, p, tuple(split)))
        p += 1
    return cuts, tuple(steps), kept


def _refined(parts: tuple[int, ...], sizes: tuple[int, ...]) -> tuple[tuple[int, ...] | str, ...]:
    """Per part of sizes `parts`, the pieces (the outermost first) that the output dimensions
    of `sizes` that begin inside it split it into, so that every output dimension is a run of
    whole pieces (() where none begins inside it): MobileViT's unfolding views (C, H) as
    (C nh, ph), H's blocks joining the channels and the positions in them a dimension of
    their own (`_blocks`). Up to a str, where the sizes do not line up."""
    starts, stride = set(), 1
    for n in reversed(sizes):
        stride *= n
        starts.add(stride)
    cuts: list[tuple[int, ...] | str] = []
    stride = math.prod(parts)
    for n in parts:
        inner = stride // n  # the stride of the part's units
        edges = [inner, *sorted(b for b in starts if inner < b < stride), stride]
        stride = inner
        if len(edges) == 2:
            cuts.append(())
            continue
        if any(outer % inside for inside, outer in pairwise(edges)):
            cuts.append("it regroups dimensions across their borders")
            break
        cuts.append(tuple(outer // inside for inside, outer in pairwise(edges))[::-1])
    return tuple(cuts)


def joined_dims(run: list[tuple[Dim, int]]) -> Dim | str:
    """One output dimension made of the row-major dimensions `run` (a str: why it cannot be
    followed)."""
    if len(run) == 1:
        return run[0][0]
    blocks = [entry for entry, _ in run if isinstance(entry, Block)]
    if len(blocks) == 2 and len(run) == 2 and blocks[0].parts is blocks[1].parts:
        outer, inner = blocks if blocks[0].outer else blocks[::-1]
        in_order = blocks[0] is outer
        expected = (outer.count, outer.size) if in_order else (outer.size, outer.count)
        if outer.outer and not inner.outer and (run[0][1], run[1][1]) == expected:
            # merged back in their order: the paths as they were; the other way round: shuffled
            return outer.parts if in_order else _Rejoined(outer)
    spatial = [(k, entry) for k, (entry, _) in enumerate(run) if not along_no_axis(entry)]
    if not spatial:
        return _uneven_inside(run)
    if len(run) == 2 and isinstance(run[1][0], Within) and run[1][0].outer is run[0][0]:
        return run[1][0].whole  # blocks and positions in them: the dimension they were split from
    if len(spatial) == 1 and spatial[0][0] == 0 and isinstance(spatial[0][1], AxisMap):
        # A spatial dimension first, the others inside it: unit u reads unit u // inner, as
        # long as every index inside reads alike. Spatial later (channels, then rows) stays
        # flattened, which a reshape splits back.
        if any(isinstance(entry, Uneven) for entry, _ in run):
            return (
                "it folds indices that read different fields (paths stacked or concatenated, a pixel unshuffle's "
                "positions) into a spatial dimension"
            )
        parent = spatial[0][1]
        inner, size = math.prod(n for _, n in run[1:]), math.prod(n for _, n in run)
        return parent.derive(size, lambda u: ((u // inner,) * 2,), Fraction(1, inner), period=inner)
    return Merged(tuple(run))


def _uneven_inside(run: list[tuple[Dim, int]]) -> Dim:
    """Dimensions along no input axis joined: None where every one reads alike; `Inner` where
    those that read alike come first (F.unfold's channels, then the offsets); else uneven."""
    first = next((k for k, (entry, _) in enumerate(run) if entry is not None), None)
    if first is None:
        return None
    if first > 0 and all(entry is not None for entry, _ in run[first:]):
        return Inner(math.prod(n for _, n in run[first:]))
    return UNEVEN


def _blocks(entry: Dim, sizes: list[int]) -> list[Dim] | str:
    if isinstance(entry, Parts) and len(sizes) == 2:  # concatenated paths in blocks (a channel shuffle's first view)
        return [Block(entry, True, *sizes), Block(entry, False, *sizes)]
    if isinstance(entry, Inner):  # alike where the dimensions inside make whole runs
        return [None if math.prod(sizes[k + 1 :]) % entry.size == 0 else UNEVEN for k in range(len(sizes))]
    if along_no_axis(entry):
        return [None if entry is None else UNEVEN] * len(sizes)  # each part of an uneven dimension may be uneven
    if not isinstance(entry, AxisMap) or len(sizes) != 2:
        return "it splits a spatial dimension into more than blocks and positions"
    return list(split_in_blocks(entry, *sizes))


@operator_rule("squeeze", "unsqueeze")
def _squeeze(walk: Walk, op: OpNode) -> State:
    x, out = op.args[0], op.outputs[0].shape
    state = walk.state(x)
    if not isinstance(state, Field):
        return state
    ndim = len(x.shape)
    if op.op.removeprefix("aten.").startswith("unsqueeze"):
        at = op.args[1] % (ndim + 1)
        return state.with_dims([*state.dims[:at], None, *state.dims[at:]])
    dims = op.argument(1, "dim", None)
    chosen = range(ndim) if dims is None else [dims] if isinstance(dims, int) else dims
    gone = {d % ndim for d in chosen if x.shape[d % ndim] == 1}
    if len(out) != ndim - len(gone):
        return walk.undefined(op, "its output's dimensions were not understood")
    loose = tuple(m for d in sorted(gone) for m in entry_maps(state.dims[d]))
    return Field(tuple(e for d, e in enumerate(state.dims) if d not in gone), state.whole, state.loose + loose)


@operator_rule("expand")
def _expand_rule(walk: Walk, op: OpNode) -> State:
    x = op.args[0]
    return walk.merge(op, [(walk.state(x), x.shape)], op.outputs[0].shape)


@operator_rule("repeat")
def _repeat(walk: Walk, op: OpNode) -> State:
    """Tiles: unit u of a repeated spatial dimension reads unit u mod n."""
    x, out = op.args[0], op.outputs[0].shape
    state = walk.state(x)
    if not isinstance(state, Field):
        return state
    lead = len(out) - len(x.shape)
    placed = Field((None,) * lead + state.dims, state.whole, state.loose)

    def tiled(i: int, parent: AxisMap) -> AxisMap:
        n = parent.size
        return parent.derive(out[i], lambda u: ((u % n, u % n),), None, monotone=False, why="tiled by repeat")

    axes = [lead + d for d in range(len(x.shape)) if out[lead + d] != x.shape[d]]
    return walk.along(op, placed, axes, lambda i, parent: tiled(axes[i], parent), "repeat")


@operator_rule("as_strided")
def _as_strided(walk: Walk, op: OpNode) -> State:
    """New strides over a tensor's storage. They leave each unit where it was, as its own
    state says, where the sizes stay the input's and at most one dimension holds more than
    one unit, at stride 1 from the storage's start, over a tensor an operator made (dense,
    where that dimension's stride is 1 whatever its layout; not a view, whose strides may skip):
    ATen's adaptive average pooling to 1x1 restrides its channels-last output so (ConvNeXt's
    head after a last map of 1x1). Else which units it reads depends on strides the graph does
    not keep: undefined."""
    x, sizes, strides = op.args[0], tuple(op.args[1]), tuple(op.args[2])
    longer = [k for k, n in enumerate(sizes) if n > 1]
    if (
        sizes == x.shape
        and len(longer) <= 1
        and all(strides[k] == 1 for k in longer)
        and op.argument(3, "storage_offset") in (None, 0)
        and not walk.made_by_a_view(x, op.index)
    ):
        return walk.state(x)
    return walk.undefined(op, "the units it reads depend on strides the graph does not keep")


# A reshape and a permute keep the parts they do not move (`Parts.holds` checks the place) and
# the blocks a reshape split them into (`Block`), which only a reshape reads.
KNOW_PARTS.update({_reshape, _permute})
