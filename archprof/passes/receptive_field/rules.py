"""The receptive-field rule of every operator of the catalogue: by family (pointwise,
normalisation, reduction, creation) and by operator (layout, convolution and pooling,
resampling, mixing along whole axes)."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache

import torch

from archprof.graph import OpNode, TensorMeta
from archprof.operators import OPERATORS, Family, operator_named
from archprof.passes.receptive_field.walk import FLAT, WHOLE, Field, Rule, Span, State, Undefined, Walk


@cache
def rule_for(name: str) -> Rule | None:
    """The rule of an operator of the catalogue: its own, else its family's (in-place forms
    share their operator's); None for an operator the catalogue does not know."""
    operator = operator_named(name)
    if operator is None:
        return None
    return _OPERATOR_RULES.get(operator.name) or _FAMILY_RULES.get(operator.family)


# -- rules, by family and by operator of the catalogue -------------------------------------

_FAMILY_RULES: dict[Family, Rule] = {}
_OPERATOR_RULES: dict[str, Rule] = {}  # "aten.cat" -> its rule, over its family's


def _rule(*names: str):
    """The rule of the catalogue's aten operators `names` (refused if it does not know one)."""

    def register(fn: Rule) -> Rule:
        for name in names:
            packet = getattr(torch.ops.aten, name)
            if packet not in OPERATORS or str(packet) in _OPERATOR_RULES:
                raise ValueError(f"{packet}: not in the operator catalogue, or given two rules")
            _OPERATOR_RULES[str(packet)] = fn
        return fn

    return register


def _arg(op: OpNode, index: int, name: str, default=None):
    if len(op.args) > index:
        return op.args[index]
    return op.kwargs.get(name, default)


def _expand(value, m: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * m
    value = tuple(value)
    return value * m if len(value) == 1 else value


def _dims_of(name: str) -> int:
    """1, 2 or 3: how many trailing dimensions a pooling / resampling op works on."""
    for m in (1, 2, 3):
        if f"{m}d" in name:
            return m
    raise ValueError(name)


def _pointwise(walk: Walk, op: OpNode) -> State:
    """Elementwise: output unit 0 reads unit 0 of every input (after broadcasting)."""
    return walk.merge(op, [(walk.state(t), t.shape) for t in op.inputs], op.outputs[0].shape)


_FAMILY_RULES[Family.POINTWISE] = _pointwise
# Copies keep every unit where it was.
_rule("alias", "detach", "clone", "_to_copy", "lift_fresh", "lift_fresh_copy")(_pointwise)


@_rule("native_dropout")
def _native_dropout(walk: Walk, op: OpNode) -> list[State]:
    return [walk.state(op.args[0]), None]  # (output, random mask)


@_rule("copy")
def _copy(walk: Walk, op: OpNode) -> State:
    """copy_(dst, src): dst's old contents are overwritten by src, broadcast."""
    src = op.args[1]
    return walk.merge(op, [(walk.state(src), src.shape)], op.outputs[0].shape)


def _no_data(walk: Walk, op: OpNode) -> State:
    """Reads its input's shape only (or overwrites it with constants or noise)."""
    return None


_FAMILY_RULES[Family.CREATION] = _no_data


def _normalisation(walk: Walk, op: OpNode) -> list[State]:
    """Pointwise by convention: the statistics are not part of the field."""
    out = walk.merge(op, [(walk.state(t), t.shape) for t in op.inputs], op.outputs[0].shape)
    stats = walk.undefined(op, "normalisation statistics") if out is not None else None
    return [out] + [stats] * (len(op.outputs) - 1)


_FAMILY_RULES[Family.NORMALISATION] = _normalisation


# -- layout --------------------------------------------------------------------------------


def _merged_tail(shape_in: tuple[int, ...], shape_out: tuple[int, ...]) -> int | None:
    """k such that the output's last axis is the input's axes k.. merged (row-major), if any."""
    if not shape_out:
        return None
    size = 1
    for k in range(len(shape_in) - 1, -1, -1):
        size *= shape_in[k]
        if size == shape_out[-1] and math.prod(shape_out[:-1]) == math.prod(shape_in[:k]):
            return k
        if size > shape_out[-1] > 0:
            return None
    return None


@_rule("view", "_unsafe_view", "_reshape_alias", "squeeze", "unsqueeze", "expand", "repeat")
def _reshape(walk: Walk, op: OpNode) -> State:
    """Row-major reshapes: a field survives where the trailing spatial sizes are unchanged."""
    x, out = op.args[0], op.outputs[0].shape
    state = walk.state(x)
    if state is None or state is WHOLE or isinstance(state, Undefined):
        return state
    k = _merged_tail(x.shape, out)
    if state is FLAT:
        return FLAT if k is not None and k <= len(x.shape) - 1 else walk.undefined(op, "reshapes a flattened tensor")
    nd = walk.nd
    if len(out) >= nd and out[len(out) - nd :] == x.shape[len(x.shape) - nd :]:
        return state
    if k is not None and k <= len(x.shape) - nd:
        return FLAT  # the spatial dimensions merged into one axis: a flatten
    return walk.undefined(op, "reshapes the spatial dimensions")


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


@_rule("permute", "transpose", "t")
def _permute(walk: Walk, op: OpNode) -> State:
    x = op.args[0]
    state = walk.state(x)
    ndim = len(x.shape)
    perm = _permutation(op, ndim)
    if state is FLAT:
        return FLAT if perm[-1] == ndim - 1 else walk.undefined(op, "moves the flattened axis")
    if not isinstance(state, Field):
        return state
    if perm[ndim - walk.nd :] == list(walk.spatial_axes(ndim)):
        return state
    return walk.undefined(op, "moves the spatial dimensions")


def _offset_rule(walk: Walk, op: OpNode, x: TensorMeta, axis: int, offsets: list[int], step: int) -> list[State]:
    """Outputs that start `offsets[i]` units along `axis` into x (slice, split)."""
    state = walk.state(x)
    ndim = len(x.shape)
    if state is FLAT:
        return [walk.undefined(op, "cuts the flattened axis") if axis == ndim - 1 else FLAT] * len(offsets)
    if not isinstance(state, Field) or axis not in walk.spatial_axes(ndim):
        return [state] * len(offsets)
    d = axis - (ndim - walk.nd)
    results: list[State] = []
    for offset in offsets:
        span = state.spans[d].shift(offset)
        if span is None:
            results.append(walk.undefined(op, f"cuts a dimension whose effective stride is undefined ({state.note})"))
            continue
        if step != 1:
            span = Span(span.start, span.end, None if span.jump is None else span.jump * step)
        results.append(Field((*state.spans[:d], span, *state.spans[d + 1 :]), state.note))
    return results


@_rule("slice")
def _slice(walk: Walk, op: OpNode) -> list[State]:
    x = op.args[0]
    ndim = len(x.shape)
    axis = _arg(op, 1, "dim", 0) % ndim
    size = x.shape[axis]
    start = _arg(op, 2, "start", None)
    start = 0 if start is None else start
    start = min(max(start + size if start < 0 else start, 0), size)
    return _offset_rule(walk, op, x, axis, [start], _arg(op, 4, "step", 1))


@_rule("split", "split_with_sizes", "unsafe_split", "unsafe_split_with_sizes")
def _split(walk: Walk, op: OpNode) -> list[State]:
    x = op.args[0]
    ndim = len(x.shape)
    axis = _arg(op, 2, "dim", 0) % ndim
    offsets, position = [], 0
    for out in op.outputs:
        offsets.append(position)
        position += out.shape[axis]
    return _offset_rule(walk, op, x, axis, offsets, 1)


@_rule("select", "unbind", "index_select")
def _select(walk: Walk, op: OpNode) -> State:
    """Picks positions along one axis: fine along any axis but a spatial one."""
    x = op.args[0]
    ndim = len(x.shape)
    axis = _arg(op, 1, "dim", 0) % ndim
    state = walk.state(x)
    if state is FLAT:
        return walk.undefined(op, "picks positions of the flattened axis") if axis == ndim - 1 else FLAT
    if isinstance(state, Field) and axis in walk.spatial_axes(ndim):
        return walk.undefined(op, "picks positions along a spatial dimension")
    return state


@_rule("cat")
def _cat(walk: Walk, op: OpNode) -> State:
    tensors = [t for t in op.args[0] if isinstance(t, TensorMeta) and t.shape != (0,)]
    out = op.outputs[0].shape
    axis = _arg(op, 1, "dim", 0) % len(out)
    items = [(walk.state(t), t.shape) for t in tensors]
    if axis in walk.spatial_axes(len(out)) and any(isinstance(s, Field) for s, _ in items):
        return walk.undefined(op, "concatenates along a spatial dimension")
    if axis == len(out) - 1 and any(s is FLAT for s, _ in items):
        return walk.undefined(op, "concatenates along the flattened axis")
    return walk.merge(op, items, out)


@_rule("stack")
def _stack(walk: Walk, op: OpNode) -> State:
    tensors = [t for t in op.args[0] if isinstance(t, TensorMeta)]
    out = op.outputs[0].shape
    axis = _arg(op, 1, "dim", 0) % len(out)
    items = [(walk.state(t), t.shape) for t in tensors]
    if axis >= len(out) - walk.nd and any(isinstance(s, Field) for s, _ in items):
        return walk.undefined(op, "stacks inside the spatial dimensions")
    if axis == len(out) - 1 and any(s is FLAT for s, _ in items):
        return walk.undefined(op, "stacks after the flattened axis")
    return walk.merge(op, items, out)


@_rule("constant_pad_nd")
def _constant_pad(walk: Walk, op: OpNode) -> State:
    """Zero (constant) padding: output unit 0 is input position -left, as in a conv's padding."""
    x, pad = op.args[0], list(op.args[1])
    ndim = len(x.shape)

    def left(axis: int) -> int:
        pair = ndim - 1 - axis  # pad lists (left, right) pairs from the last axis backwards
        return pad[2 * pair] if 2 * pair < len(pad) else 0

    state = walk.state(x)
    if state is FLAT:
        last_padded = left(ndim - 1) != 0 or (len(pad) > 1 and pad[1] != 0)
        return walk.undefined(op, "pads the flattened axis") if last_padded else FLAT
    return walk.windowed(op, state, ndim, walk.nd, lambda span, j: span.shift(-left(ndim - walk.nd + j)), "padding")


# -- convolution and pooling ---------------------------------------------------------------


def _conv_window(k: int, s: int, p: int, d: int) -> Callable[[Span], Span | None]:
    def window(span: Span) -> Span | None:
        reach = d * (k - 1)
        if span.jump is None:  # only unit 0 of the input is known
            return span if p == 0 and reach == 0 else None
        return Span(span.start - p * span.jump, span.end + (reach - p) * span.jump, span.jump * s)

    return window


def _transposed_window(k: int, s: int, p: int, d: int) -> Callable[[Span], Span | None]:
    """Output o receives input i through tap t when o = i S - P + t D: unit 0 reads the inputs
    i = (P - t D) / S that are whole numbers (positions outside the input count as padding,
    as for a convolution: the same as a stride-1 convolution with padding D (K - 1) - P)."""
    reads = [(p - t * d) // s for t in range(k) if (p - t * d) % s == 0]

    def window(span: Span) -> Span | None:
        if not reads:
            return None
        first, last = min(reads), max(reads)
        if span.jump is None:
            return span if first == last == 0 else None
        # With stride > 1, neighbouring outputs read different numbers of inputs: no jump.
        return Span(span.start + first * span.jump, span.end + last * span.jump, span.jump if s == 1 else None)

    return window


@_rule("convolution", "_convolution", "convolution_overrideable")
def _convolution(walk: Walk, op: OpNode) -> State:
    x, weight = op.args[0], op.args[1]
    bias = _arg(op, 2, "bias")
    stride, padding, dilation, transposed = op.args[3:7]
    for extra in (weight, bias):
        state = walk.state(extra)
        if state is WHOLE:
            return WHOLE
        if state is not None:
            return walk.undefined(op, "its weights are computed from the input")
    m = len(weight.shape) - 2
    if walk.nd > m:
        return walk.undefined(op, "it convolves across a spatial dimension (channels)")
    kernel = weight.shape[2:]
    stride, padding, dilation = (_expand(v, m) for v in (stride, padding, dilation))
    make = _transposed_window if transposed else _conv_window
    windows = [make(kernel[j], stride[j], padding[j], dilation[j]) for j in range(m)]
    what = "transposed convolution" if transposed else "convolution"
    if transposed and any(w(Span(0, 0, 1)) is None for w in windows):
        return walk.undefined(op, "output unit 0 of the transposed convolution reads no input")
    result = walk.windowed(op, walk.state(x), len(x.shape), m, lambda span, j: windows[j](span), what)
    if transposed and isinstance(result, Field) and any(stride[j] != 1 for j in range(m)) and not result.note:
        result = Field(result.spans, "transposed convolution with stride")
    return result


@_rule("max_pool2d_with_indices", "max_pool3d_with_indices", "avg_pool2d", "avg_pool3d")
def _pool(walk: Walk, op: OpNode) -> State:
    x = op.args[0]
    name = op.op.removeprefix("aten.")
    m = _dims_of(name)
    kernel = _expand(_arg(op, 1, "kernel_size"), m)
    stride = _arg(op, 2, "stride", ())
    stride = _expand(stride, m) if stride else kernel
    padding = _expand(_arg(op, 3, "padding", 0), m)
    dilation = _expand(_arg(op, 4, "dilation", 1), m) if name.startswith("max") else (1,) * m
    # ceil_mode only adds units at the far end: unit 0's window is the same.
    windows = [_conv_window(kernel[j], stride[j], padding[j], dilation[j]) for j in range(m)]
    return walk.windowed(op, walk.state(x), len(x.shape), m, lambda span, j: windows[j](span), "pooling")


@_rule(
    "_adaptive_avg_pool2d",
    "_adaptive_avg_pool3d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
)
def _adaptive_pool(walk: Walk, op: OpNode) -> State:
    """Output i of a dimension pools inputs [floor(i n / o), ceil((i + 1) n / o)): unit 0 pools
    the first ceil(n / o); the windows are evenly spaced (a jump) only when o divides n."""
    x, out = op.args[0], op.outputs[0].shape
    m = _dims_of(op.op)
    sizes_in, sizes_out = x.shape[len(x.shape) - m :], out[len(out) - m :]
    state = walk.state(x)
    if isinstance(state, Field) and walk.nd <= m and all(o == 1 for o in sizes_out[m - walk.nd :]):
        return WHOLE  # global pooling

    def window(span: Span, j: int) -> Span | None:
        n, o = sizes_in[j], sizes_out[j]
        first = -(-n // o)  # inputs pooled by unit 0
        if span.jump is None:
            return span if first == 1 and n == o else None
        jump = span.jump * (n // o) if n % o == 0 else None
        return Span(span.start, span.end + (first - 1) * span.jump, jump)

    result = walk.windowed(op, state, len(x.shape), m, window, "adaptive pooling")
    if isinstance(result, Field) and not result.note and None in (s.jump for s in result.spans):
        result = Field(result.spans, "adaptive pooling with uneven windows")
    return result


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


def _source_scale(n: int, o: int, factor: float | None) -> float:
    """Input pixels per output pixel, as PyTorch computes it (the user's factor wins)."""
    return 1.0 / factor if factor is not None and factor > 0 else n / o


def _integer(value: float) -> int | None:
    nearest = round(value)
    return nearest if nearest >= 1 and abs(value - nearest) < 1e-9 else None


@_rule(
    "upsample_nearest1d",
    "upsample_nearest2d",
    "upsample_nearest3d",
    "_upsample_nearest_exact1d",
    "_upsample_nearest_exact2d",
    "_upsample_nearest_exact3d",
)
def _nearest(walk: Walk, op: OpNode) -> State:
    """Output o copies input floor(o s) ('nearest') or floor((o + 0.5) s) ('nearest-exact'),
    s = input / output size: unit 0 copies input 0 (resp. floor(s / 2)); the copies are evenly
    spaced only when s is a whole number."""
    x, out = op.args[0], op.outputs[0].shape
    m = _dims_of(op.op)
    exact = "exact" in op.op
    sizes_in, sizes_out = x.shape[len(x.shape) - m :], out[len(out) - m :]
    scales = _scales(op, m, 2)

    def window(span: Span, j: int) -> Span | None:
        n, o = sizes_in[j], sizes_out[j]
        scale = _source_scale(n, o, scales[j] if j < len(scales) else None)
        source = min(math.floor(0.5 * scale), n - 1) if exact else 0
        moved = span.shift(source)
        if moved is None:
            return None
        # PyTorch's nearest copies o -> o when the sizes match and o -> o // 2 when doubling.
        plain = 1 if n == o else None if o == 2 * n else _integer(scale)
        step = _integer(scale) if exact else plain
        return Span(moved.start, moved.end, None if step is None or moved.jump is None else moved.jump * step)

    return _resampled(walk, op, window, m, "nearest upsampling")


@_rule("upsample_linear1d", "upsample_bilinear2d", "upsample_trilinear3d")
def _linear_resample(walk: Walk, op: OpNode) -> State:
    """Output o interpolates inputs floor(x) and floor(x) + 1 (when its weight is not 0) at
    x = o s (align_corners) or x = max((o + 0.5) s - 0.5, 0), s = input pixels per output."""
    x, out = op.args[0], op.outputs[0].shape
    m = _dims_of(op.op)
    align_corners = bool(_arg(op, 2, "align_corners", False))
    sizes_in, sizes_out = x.shape[len(x.shape) - m :], out[len(out) - m :]
    scales = _scales(op, m, 3)

    def window(span: Span, j: int) -> Span | None:
        n, o = sizes_in[j], sizes_out[j]
        if align_corners:
            scale = (n - 1) / (o - 1) if o > 1 else 0.0
            source = 0.0
        else:
            scale = _source_scale(n, o, scales[j] if j < len(scales) else None)
            source = max(0.5 * scale - 0.5, 0.0)
        low = min(math.floor(source), n - 1)
        high = low + 1 if source > low and low < n - 1 else low
        first, last = span.shift(low), span.shift(high)
        if first is None or last is None:
            return None
        # A whole-number scale k puts every unit's inputs k apart: unit o reads o k + c.
        step = _integer(scale)
        return Span(first.start, last.end, None if step is None or span.jump is None else span.jump * step)

    return _resampled(walk, op, window, m, "linear upsampling")


def _resampled(walk: Walk, op: OpNode, window, m: int, what: str) -> State:
    x = op.args[0]
    result = walk.windowed(op, walk.state(x), len(x.shape), m, window, what)
    if isinstance(result, Field) and not result.note and None in (s.jump for s in result.spans):
        result = Field(result.spans, f"{what} by a factor that is not a whole number")
    return result


# -- mixing along whole axes ---------------------------------------------------------------


def _reduction(walk: Walk, op: OpNode) -> State:
    x = op.args[0]
    ndim = len(x.shape)
    dims = _arg(op, 2 if op.op == "aten.linalg_vector_norm" else 1, "dim", None)
    if isinstance(dims, TensorMeta):  # max(a, b), min(a, b): elementwise
        return _pointwise(walk, op)
    if isinstance(dims, int) and not isinstance(dims, bool):
        axes: set[int] | None = {dims % ndim} if ndim else None
    elif isinstance(dims, (list, tuple)) and dims:
        axes = {d % ndim for d in dims}
    else:  # no dims, [] or a dtype / flag in that position: everything is reduced
        axes = None
    return walk.reduce(op, walk.state(x), ndim, axes, "a reduction")


_FAMILY_RULES[Family.REDUCTION] = _reduction


@_rule("_softmax", "_log_softmax", "_safe_softmax")
def _softmax(walk: Walk, op: OpNode) -> State:
    """Each output reads every unit along one axis (the normaliser)."""
    x = op.args[0]
    ndim = len(x.shape)
    axis = _arg(op, 1, "dim", -1) % ndim
    return walk.reduce(op, walk.state(x), ndim, {axis}, "softmax")


@_rule("glu")
def _glu(walk: Walk, op: OpNode) -> State:
    """a * sigmoid(b) for the two halves along one axis: pointwise unless that axis is spatial."""
    x = op.args[0]
    ndim = len(x.shape)
    axis = _arg(op, 1, "dim", -1) % ndim
    state = walk.state(x)
    if (state is FLAT and axis == ndim - 1) or (isinstance(state, Field) and axis in walk.spatial_axes(ndim)):
        return walk.undefined(op, "it pairs units half a dimension apart")
    return state


@_rule("mm", "addmm", "bmm", "baddbmm", "_addmm_activation", "mv", "addmv", "dot")
def _matmul(walk: Walk, op: OpNode) -> State:
    """a @ b contracts a's last axis with b's second-to-last one: a field on a contracted
    axis becomes the whole input (a linear layer); b's last axis carries through."""
    name = op.op.removeprefix("aten.")
    has_bias = name in ("addmm", "baddbmm", "_addmm_activation", "addmv")
    bias = op.args[0] if has_bias else None
    a, b = op.args[1:3] if has_bias else op.args[0:2]
    out = op.outputs[0].shape
    items: list[tuple[State, tuple[int, ...]]] = []
    for operand, kept_last in ((a, False), (b, True)):
        state = walk.state(operand)
        if state is None or isinstance(state, Undefined) or state is WHOLE:
            items.append((state, out))
        elif kept_last and len(operand.shape) >= 2 and (state is FLAT or walk.nd == 1):
            items.append((state, operand.shape))  # only its last axis is spatial: it carries through
        else:
            items.append((WHOLE, out))
    if isinstance(bias, TensorMeta):
        items.append((walk.state(bias), bias.shape))
    return walk.merge(op, items, out)
