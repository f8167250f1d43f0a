"""The receptive-field rules of the operators whose output unit u reads a window of input
units along each spatial dimension: convolution (transposed too) and pooling, then
resampling (nearest, linear and cubic, in the arithmetic of PyTorch's kernels). Registered
in rules.py's tables (`rules.operator_rule`) when the package imports this module."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction
from functools import cache

import torch

from archprof.graph import OpNode
from archprof.operators.costs import expand, float32_rounded
from archprof.operators.shapes import conv_output_size, pool_window
from archprof.passes.receptive_field.dims import (
    UNEVEN,
    WHOLE,
    Dim,
    Field,
    Merged,
    Parts,
    State,
    Uneven,
    Within,
    along_no_axis,
    entry_maps,
    plain,
)
from archprof.passes.receptive_field.layout import paths_side_by_side
from archprof.passes.receptive_field.links import Interval
from archprof.passes.receptive_field.maps import AxisMap
from archprof.passes.receptive_field.reshape import joined_dims
from archprof.passes.receptive_field.rules import (
    contracted_operand,
    dims_of,
    last_dims,
    operator_rule,
)
from archprof.passes.receptive_field.walk import KNOW_PARTS, Walk

# -- convolution and pooling ---------------------------------------------------------------


def _moves(k: int, s: int, p: int, n: int, o: int) -> bool:
    """Whether a window of `k` units, stride `s` and padding `p`, from `n` units to `o`, moves
    any unit: one of a single unit, stride 1, no padding, as many units out as in, is the
    identity along its dimension, whatever the dimension holds (flattened or split positions:
    MobileViTv2's 1x1 convolutions over its patches, EfficientFormerV2's over attention
    scores), transposed too."""
    return not (k == 1 and s == 1 and p == 0 and n == o)


def _window(parent: AxisMap, size: int, k: int, s: int, p: int, d: int) -> AxisMap:
    """Unit u reads units u S - P + t D, t = 0 .. K - 1."""
    if not _moves(k, s, p, parent.size, size):
        return parent
    reads = _window_reads(k, s, p, d)
    if d > 1 and s == 1:  # exactly, each tap a shift (DeepLab's dilated convolutions): runs in order
        return parent.derive(size, reads, s, period=1, shifts=tuple((0, size - 1, t * d - p) for t in range(k)))
    return parent.derive(size, reads, s, period=1, window=(k, s, p) if d == 1 else None)


@cache
def _window_reads(k: int, s: int, p: int, d: int) -> Callable[[int], Sequence[Interval]]:
    """What unit u of a window (K, S, P, D) reads, made once per window: a network's
    convolutions and poolings share a few, and a closure made per map and axis (its cells,
    its function) would bring the next garbage collection nearer."""

    def reads(u: int) -> Sequence[Interval]:
        base = u * s - p
        if d == 1:
            return ((base, base + k - 1),)
        return [(base + t * d,) * 2 for t in range(k)]

    return reads


def _transposed(parent: AxisMap, size: int, k: int, s: int, p: int, d: int) -> AxisMap:
    """Output o receives input i through tap t when o = i S - P + t D: o reads the inputs
    (o + P - t D) / S that are whole numbers."""
    if s == 1:
        return _window(parent, size, k, 1, d * (k - 1) - p, d)  # a convolution with the kernel flipped
    if d == 1 and k >= s:
        # The inputs o reads are consecutive, at least one: a range, which repeats every S
        # outputs one input on (the order and the period a decoder's maps need).
        def consecutive(u: int) -> tuple[Interval]:
            return ((-((k - 1 - u - p) // s), (u + p) // s),)

        return parent.derive(size, consecutive, Fraction(1, s), period=s)

    def reads(u: int) -> list[Interval]:
        return [((u + p - t * d) // s,) * 2 for t in range(k) if (u + p - t * d) % s == 0]

    # Undilated, the taps of o read inputs ending at (o + P) // S: never earlier for a later o.
    # Dilated, they interleave (S 3, D 2: outputs 0, 1, 2 read inputs 0, -1, 0).
    return parent.derive(size, reads, Fraction(1, s), monotone=d == 1)


@operator_rule("convolution", "_convolution", "convolution_overrideable")
def _convolution(walk: Walk, op: OpNode) -> State:
    x, fields = op.args[0], walk.fields  # states read here, not through `walk.state`: every convolution comes here
    for extra in op.inputs[1:]:  # the weight and the bias (the tensors after the input, in order)
        state = fields.get(extra.id)
        if state is WHOLE:
            return WHOLE
        if state is not None:
            return walk.undefined(op, "its weights are computed from the input")
    state = fields.get(x.id)
    groups = op.argument(8, "groups", 1)
    channels = state.dims[1] if isinstance(state, Field) else None  # None: plain channels, nearly always
    if groups > 1 and isinstance(channels, Parts) and channels.holds(state, 1):
        per_group = x.shape[1] // groups
        if all(size % per_group == 0 for size in channels.sizes):
            return _convolved_parts(walk, op, channels, per_group)
    return _convolved(walk, op, state)


def _convolved(walk: Walk, op: OpNode, state: State) -> State:
    """The convolution `op` of a tensor of field `state`."""
    weight, (stride, padding, dilation, transposed) = op.args[1], op.args[3:7]
    channels = state.dims[1] if isinstance(state, Field) else None
    if channels is not None:
        # Every output channel reads every input channel, whatever each reads (channels of
        # different fields, positions folded into them: a space-to-depth by view and permute,
        # as a pixel unshuffle's), read whole, like a matrix product's. In groups, each reads
        # its group's only, but every input channel is some group's: a unit's field, the union
        # over its channels, is the same, and its channels now read differently.
        state = walk.settled(contracted_operand(state, [0, None, *range(2, len(state.dims))], [1]))
        if op.argument(8, "groups", 1) > 1 and isinstance(state, Field):
            state = state.with_dims((state.dims[0], UNEVEN, *state.dims[2:]))
    m = len(weight.shape) - 2
    kernel = weight.shape[2:]
    stride, padding, dilation = expand(stride, m), expand(padding, m), expand(dilation, m)
    x, out = op.args[0].shape, op.outputs[0].shape
    axes, windows = [], []  # the dimensions where units move (none for a 1x1 convolution at stride 1), and how
    for j, axis in enumerate(range(len(out) - m, len(out))):
        if _moves(kernel[j], stride[j], padding[j], x[axis], out[axis]):
            axes.append(axis)
            windows.append((kernel[j], stride[j], padding[j], dilation[j]))
    if not transposed:
        return _windowed(walk, op, state, axes, windows, "convolution")

    def change(i: int, parent: AxisMap) -> AxisMap:
        return _transposed(parent, out[axes[i]], *windows[i])

    return walk.along(op, state, axes, change, "transposed convolution", idle_bound=True)


def _convolved_parts(walk: Walk, op: OpNode, parts: Parts, per_group: int) -> State:
    """A convolution in groups of `per_group` input channels over concatenated paths, each
    group within one path: each path convolved alone, its output channels side by side."""
    out = op.outputs[0].shape
    out_per_group = out[1] // (sum(parts.sizes) // per_group)
    sizes = [size // per_group * out_per_group for size in parts.sizes]
    distinct = {id(state): state for state in parts.states}  # each path once (a shuffle's repeat)
    convolved = {key: _convolved(walk, op, state) for key, state in distinct.items()}
    return paths_side_by_side(walk, op, [convolved[id(state)] for state in parts.states], sizes, 1, out)


@operator_rule("max_pool2d_with_indices", "max_pool3d_with_indices", "avg_pool2d", "avg_pool3d")
def _pool(walk: Walk, op: OpNode) -> State:
    x = op.args[0]
    kernel, stride, padding, dilation, _ = pool_window(op)
    m = len(kernel)
    windows = list(zip(kernel, stride, padding, dilation, strict=True))
    # ceil_mode only adds units at the far end, whose windows the exact reading clips.
    return _windowed(walk, op, walk.state(x), list(last_dims(x, m)), windows, "pooling")


def _windowed(walk: Walk, op: OpNode, state: State, axes: list[int], windows: list, what: str) -> State:
    """Tensor dimension axes[j] read through windows[j] (K, S, P, D) into the output's units
    there; along positions inside blocks (`Within`), block by block (`_windowed_blocks`)."""
    out = op.outputs[0].shape
    in_blocks = []
    for j, a in enumerate(axes) if isinstance(state, Field) else ():  # a loop, not a comprehension's call
        if isinstance(state.dims[a], Within):
            in_blocks.append(j)
    if in_blocks:
        state = _windowed_blocks(walk, op, state, [axes[j] for j in in_blocks], [windows[j] for j in in_blocks])
        rest = [j for j in range(len(axes)) if j not in in_blocks]
        axes, windows = [axes[j] for j in rest], [windows[j] for j in rest]

    def change(i: int, parent: AxisMap) -> AxisMap:
        return _window(parent, out[axes[i]], *windows[i])

    return walk.along(op, state, axes, change, what, idle_bound=True)


def _windowed_blocks(
    walk: Walk, op: OpNode, state: Field, axes: list[int], windows: list[tuple[int, int, int, int]]
) -> State:
    """A window along positions inside blocks (`Within`: each block of a map pooled or
    convolved alone, SAM2 Hiera's q_pool, TNT's patches): each block's output units are a map
    of the map the blocks were split from (`_in_blocks`), where the windows read every unit
    of the block; else undefined, as a block read whole later (its outer map's units) would
    claim units none reads."""
    out = op.outputs[0].shape
    dims = list(state.dims)
    for axis, (k, s, p, d) in zip(axes, windows, strict=True):
        entry = dims[axis]
        if not _reads_every_unit(entry.size, out[axis], k, s, p, d):
            return walk.undefined(op, "its windows leave units of the blocks of the split dimension it reads unread")
        dims[axis] = Within(_in_blocks(entry, out[axis], k, s, p, d), entry.outer, out[axis])
    return state.with_dims(dims)


def _in_blocks(entry: Within, count: int, k: int, s: int, p: int, d: int) -> AxisMap:
    """Unit r of block q (`count` units a block) reads units q n + r S - P + t D (t < K) of
    the map the blocks of n units were split from, those of them inside block q: the padding
    at a block's border reads nothing, not the next block's units."""
    n = entry.size

    def reads(u: int) -> Sequence[Interval]:
        q, r = divmod(u, count)
        first, last = q * n, q * n + n - 1
        base = first + r * s - p
        if d == 1:
            low, high = max(base, first), min(base + k - 1, last)
            return ((low, high),) if low <= high else ()
        return [(i, i) for i in range(base, base + k * d, d) if first <= i <= last]

    return entry.whole.derive(entry.outer.size * count, reads, Fraction(n, count), period=count)


def _reads_every_unit(n: int, count: int, k: int, s: int, p: int, d: int) -> bool:
    """Whether `count` windows (K, S, P, D) over a block of `n` units read every unit of it (8
    units pooled by 3 into 2 leave 2 unread)."""
    read = {r * s - p + t * d for r in range(count) for t in range(k)}
    return read.issuperset(range(n))


# -- columns of windows (F.unfold) ---------------------------------------------------------


@operator_rule("im2col")
def _im2col(walk: Walk, op: OpNode) -> State:
    """F.unfold: every window of a map (kernel K, dilation D, padding P, stride S) as a
    column, (N, C K_h K_w, L): index (c, i, j) of column l holds offset (i, j) of channel c
    in window l. Along each of the two dimensions, the offsets and the windows (`_columns`);
    the channel and the offsets joined into one dimension, the windows into another, as a
    reshape joins dimensions (one of a single unit kept at unit 0)."""
    x = op.args[0]
    kernel, dilation, padding, stride = (expand(v, 2) for v in op.args[1:5])
    state = plain(walk.state(x))
    if not isinstance(state, Field):
        return state
    lead = len(x.shape) - 3  # a batch dimension, or none
    offsets, columns = [], []
    for j, axis in enumerate((lead + 1, lead + 2)):
        entry = state.dims[axis]
        if entry is not None and not isinstance(entry, AxisMap):
            return walk.undefined(op, "it takes windows along a flattened, split or uneven dimension")
        offset, column = _columns(entry, x.shape[axis], kernel[j], stride[j], padding[j], dilation[j])
        offsets.append(offset)
        columns.append(column)
    runs = [[(state.dims[lead], x.shape[lead]), *offsets], columns]
    dims = [joined_dims([(e, n) for e, n in run if n != 1]) for run in runs]
    if any(isinstance(entry, str) for entry in dims):
        return walk.undefined(op, next(entry for entry in dims if isinstance(entry, str)))
    kept = [m for run in runs for entry, n in run if n == 1 for m in entry_maps(entry)]  # at unit 0
    return Field((*state.dims[:lead], *dims), state.whole, state.loose + tuple(kept))


def _columns(entry: AxisMap | None, n: int, k: int, s: int, p: int, d: int) -> tuple[tuple[Dim, int], ...]:
    """Along one dimension of `n` units, (entry, size) of the offsets in a window and of the
    windows. Windows that tile the map (K = S, no padding: TNT's pixel embedding) are its
    blocks and the offsets the positions in them (`Within`), as a view and a permute would
    split it: the columns viewed back into blocks keep every unit where it was. Any other
    window reads its units (a convolution's), and its offsets read different fields (a unit
    reads their union)."""
    count = conv_output_size(n, k, s, p, d)
    if entry is None:
        return (None, k), (None, count)
    if k == s and p == 0 and (d == 1 or k == 1):
        tiled = _window(entry, count * k, 1, 1, 0, 1)  # the map cut to whole windows
        outer = _window(tiled, count, k, k, 0, 1)
        return (Within(tiled, outer, k), k), (outer, count)
    return (UNEVEN if k > 1 else None, k), (_window(entry, count, k, s, p, d), count)


@operator_rule("col2im")
def _col2im(walk: Walk, op: OpNode) -> State:
    """F.fold, (N, C K_h K_w, L) to (N, C, H, W): output pixel o sums offset (o + P - l S) / D
    of every window l that covers it, a transposed convolution of the windows (`_transposed`).
    Followed where L holds the windows row by row (an unfold's, mixed within each window)
    and the offsets read alike (None) or differently (UNEVEN: each pixel then gets the union
    over its windows, an upper bound); anything else is undefined."""
    cols, size = op.args[0], expand(op.args[1], 2)
    kernel, dilation, padding, stride = (expand(v, 2) for v in op.args[2:6])
    state = plain(walk.state(cols))
    if not isinstance(state, Field):
        return state
    lead = len(cols.shape) - 2  # a batch dimension, or none
    offsets, windows = state.dims[lead], state.dims[lead + 1]
    if not along_no_axis(offsets):
        return walk.undefined(op, "it folds offsets that lie along a spatial dimension")
    geometry = list(zip(size, kernel, stride, padding, dilation, strict=True))
    maps = _window_maps(windows, [conv_output_size(*window) for window in geometry])
    if maps is None:
        return walk.undefined(op, "its windows are not the rows and columns of a map of windows")
    spatial = [None if m is None else _transposed(m, *window) for m, window in zip(maps, geometry, strict=True)]
    field = Field((*state.dims[:lead], offsets, *spatial), state.whole, state.loose, state.bound)
    uneven = isinstance(offsets, Uneven)
    return walk.bounded(op, field, "sums offsets of windows that read different fields") if uneven else field


def _window_maps(entry: Dim, counts: list[int]) -> list[AxisMap | None] | None:
    """The map of windows along each of the two dimensions of a dimension that holds `counts`
    windows row by row (None for a dimension that reads none); None if it does not."""
    if entry is None:
        return [None, None]
    if not isinstance(entry, Merged) or len(entry.parts) != 2:
        return None
    if any(not isinstance(part, AxisMap) or n != count for (part, n), count in zip(entry.parts, counts, strict=True)):
        return None
    return [part for part, _ in entry.parts]


@operator_rule("_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "adaptive_max_pool2d", "adaptive_max_pool3d")
def _adaptive_pool(walk: Walk, op: OpNode) -> State:
    """Output i pools inputs floor(i n / o) .. ceil((i + 1) n / o) - 1; pooling a dimension
    of several units down to one is global along it."""
    x, out = op.args[0], op.outputs[0].shape
    m = dims_of(op.op)
    axes = list(last_dims(x, m))
    state = walk.state(x)
    if not isinstance(state, Field):
        return state
    pooled = [a for a in axes if out[a] == 1 and x.shape[a] > 1]
    state = walk.reduce(op, state, len(out), set(pooled)) if pooled else state
    rest = [a for a in axes if a not in pooled]

    def change(j: int, parent: AxisMap) -> AxisMap:
        n, o = x.shape[rest[j]], out[rest[j]]
        if n == o:
            return parent
        # Unit i + o/g reads n/g units further (g = gcd(n, o)): the period.
        reads = lambda i: ((i * n // o, -(-(i + 1) * n // o) - 1),)  # noqa: E731
        return parent.derive(o, reads, Fraction(n, o), period=o // math.gcd(n, o))

    return walk.along(op, state, rest, change, "adaptive pooling")


# -- resampling ----------------------------------------------------------------------------


def _scales(op: OpNode, m: int, first: int) -> list[float | None]:
    """The user's scale factors (None: from the sizes), from either overload."""
    rest = op.args[first:]
    if rest and isinstance(rest[0], (list, tuple)):  # the .vec overload: scale_factors
        return [float(s) for s in rest[0]]
    if rest and rest[0] is None and len(rest) == 1:
        return [None] * m
    values = list(rest[:m]) + [None] * (m - len(rest[:m]))
    for key, index in (("scales", 0), ("scales_d", 0), ("scales_h", m - 2), ("scales_w", m - 1)):
        if key in op.kwargs and 0 <= index < m:
            values[index] = op.kwargs[key]
    if "scale_factors" in op.kwargs and op.kwargs["scale_factors"] is not None:
        values = list(op.kwargs["scale_factors"])
    return [None if v is None else float(v) for v in values]


def _ratio(n: int, o: int, factor: float | None) -> Fraction:
    """Input units per output unit: 1 / the user's factor, else n / o."""
    if factor is not None and factor > 0:
        return 1 / Fraction(factor).limit_denominator(10_000)
    return Fraction(n, o)


def _resampled(walk: Walk, op: OpNode, m: int, scales_at: int, make: Callable) -> State:
    """Apply make(parent, n, o, factor) along the op's m trailing dimensions."""
    x, out = op.args[0], op.outputs[0].shape
    axes = list(last_dims(x, m))
    scales = _scales(op, m, scales_at)

    def change(j: int, parent: AxisMap) -> AxisMap:
        factor = scales[j] if j < len(scales) else None
        return make(parent, x.shape[axes[j]], out[axes[j]], factor)

    return walk.along(op, walk.state(x), axes, change, "resampling")


@operator_rule(
    "upsample_nearest1d",
    "upsample_nearest2d",
    "upsample_nearest3d",
    "_upsample_nearest_exact1d",
    "_upsample_nearest_exact2d",
    "_upsample_nearest_exact3d",
)
def _nearest(walk: Walk, op: OpNode) -> State:
    """Output o copies input floor(o s) ('nearest') or floor((o + 0.5) s) ('nearest-exact'),
    s = 1 / factor or n / o, in float32 arithmetic as PyTorch's kernels compute it."""
    exact = "exact" in op.op

    def make(parent: AxisMap, n: int, o: int, factor: float | None) -> AxisMap:
        if n == o and not exact:
            return parent
        ratio = _ratio(n, o, factor)
        scale = float32_rounded(1.0 / factor) if factor is not None and factor > 0 else float32_rounded(n / o)

        def reads(u: int) -> tuple[Interval]:
            if not 0 <= u < o:  # past the border: the formula, continued
                i = math.floor((u + Fraction(1, 2) if exact else u) * ratio)
            elif exact:
                i = min(math.floor(float32_rounded((u + 0.5) * scale)), n - 1)
            elif o == 2 * n:
                i = u >> 1
            else:
                i = min(math.floor(float32_rounded(u * scale)), n - 1)
            return ((i, i),)

        return parent.derive(o, reads, ratio, period=_nearest_period(ratio, scale))

    return _resampled(walk, op, dims_of(op.op), 2, make)


def _nearest_period(ratio: Fraction, scale: float) -> int | None:
    """1 when each unit advances a whole number of input units; k for an upsampling by a
    power of two k, whose float32 arithmetic is exact (unit u copies u // k in both modes);
    None otherwise (float32 rounding may break the pattern)."""
    if ratio.denominator == 1:
        return 1
    k = ratio.denominator
    exact = ratio.numerator == 1 and k & (k - 1) == 0 and scale * k == 1.0
    return k if exact else None


def _source(u: int, n: int, o: int, factor: float | None, align_corners: bool, dtype: torch.dtype, cubic: bool):
    """PyTorch's source coordinate of output u (area_pixel_compute_source_index), in the
    arithmetic of the op's dtype (double for float64, float otherwise)."""
    real = float if dtype == torch.float64 else float32_rounded
    if align_corners:
        scale = real((n - 1) / (o - 1)) if o > 1 else 0.0
        return real(scale * u)
    scale = real(1.0 / factor) if factor is not None and factor > 0 else real(n / o)
    source = real(real(scale * (u + 0.5)) - 0.5)
    return source if cubic or source >= 0 else 0.0


def _source_index(x: float, n: int) -> int:
    """The input index below source coordinate x, as guard_index_and_lambda takes it: floorf,
    so in float32 even for a double x (15.999999999999998 is 16: 49 * 32/98, align_corners
    from 33 to 99), clamped to the map; the weight x - i of the next input is clamped at 0."""
    return min(math.floor(float32_rounded(x)), n - 1)


@operator_rule("upsample_linear1d", "upsample_bilinear2d", "upsample_trilinear3d")
def _linear(walk: Walk, op: OpNode) -> State:
    """Output o reads inputs i and i + 1 around its source coordinate x (i = floor(x)), the
    second only when its weight x - i is not zero."""
    align_corners = bool(op.argument(2, "align_corners", False))
    dtype = op.outputs[0].dtype

    def make(parent: AxisMap, n: int, o: int, factor: float | None) -> AxisMap:
        if n == o:
            return parent
        ratio = Fraction(n - 1, o - 1) if align_corners and o > 1 else _ratio(n, o, factor)

        def reads(u: int) -> tuple[Interval]:
            if not 0 <= u < o:
                x = (u * ratio) if align_corners else (u + Fraction(1, 2)) * ratio - Fraction(1, 2)
                return ((math.floor(x), math.ceil(x)),)
            x = _source(u, n, o, factor, align_corners, dtype, cubic=False)
            i = _source_index(x, n)
            return ((i, i + 1),) if x - i > 0 and i < n - 1 else ((i, i),)

        return parent.derive(o, reads, ratio, period=1 if ratio.denominator == 1 else None)

    return _resampled(walk, op, dims_of(op.op), 3, make)


@operator_rule("upsample_bicubic2d")
def _cubic(walk: Walk, op: OpNode) -> State:
    """Output o reads inputs i - 1 .. i + 2 (clamped to the map) around its source coordinate
    x (i = floor(x)); input i alone when x is a whole number (the other weights are 0), so
    that its neighbours read past it on both sides: the reads are not in order."""
    align_corners = bool(op.argument(2, "align_corners", False))
    dtype = op.outputs[0].dtype

    def make(parent: AxisMap, n: int, o: int, factor: float | None) -> AxisMap:
        ratio = Fraction(n - 1, o - 1) if align_corners and o > 1 else _ratio(n, o, factor)

        def reads(u: int) -> tuple[Interval]:
            if not 0 <= u < o:
                x = (u * ratio) if align_corners else (u + Fraction(1, 2)) * ratio - Fraction(1, 2)
                return ((math.floor(x) - 1, math.floor(x) + 2),)
            x = _source(u, n, o, factor, align_corners, dtype, cubic=True)
            i = _source_index(x, n)
            if x - i <= 0:
                return ((i, i),)
            return ((min(max(i - 1, 0), n - 1), min(i + 2, n - 1)),)

        return parent.derive(o, reads, ratio, monotone=False)

    return _resampled(walk, op, 2, 3, make)


KNOW_PARTS.add(_convolution)  # it keeps the parts of paths its groups each lie within
KNOW_PARTS.add(_im2col)  # its channels before their offsets: `Inner`
# Paths side by side along a dimension they move (a pooled dimension padded): `Walk.along`.
KNOW_PARTS.update({_pool, _adaptive_pool, _nearest, _linear, _cubic})
