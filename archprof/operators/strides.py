"""How an operator's output lies in memory, as PyTorch's CPU kernels lay it out: the
memory format a tensor's strides suggest (c10's rule), and the strides TensorIterator gives
an elementwise op's output. The trace's fast path (`archprof.tracing.meta_outputs`) lays
out what it answers from a shape formula by these.
"""

from __future__ import annotations

from archprof.operators.costs import Shape

# A channels-last tensor's dimensions, from the one its strides step through fastest to the slowest.
_CHANNELS_LAST_ORDER = {4: (1, 3, 2, 0), 5: (1, 4, 3, 2, 0)}


def suggests_channels_last(shape: Shape, strides: tuple[int, ...]) -> bool:
    """Whether the kernels that follow their input's layout take a 4-d or 5-d tensor for
    channels last (c10's is_channels_last_strides_2d / 3d, which `suggest_memory_format`
    asks). A contiguous tensor may be, where a dimension of size 1 makes its strides
    ambiguous: (N, 1, H, W) created channels last."""
    if len(shape) not in (4, 5) or strides[1] == 0:
        return False
    minimum = 0
    for d in _CHANNELS_LAST_ORDER[len(shape)]:
        if shape[d] == 0 or strides[d] < minimum or (d == 0 and minimum == strides[1]):
            return False
        minimum = strides[d] * (shape[d] if shape[d] > 1 else 1)
    return True


def rolled_channels_last(shape: Shape, strides: tuple[int, ...], shifts, dims) -> bool:
    """Whether a CPU's roll of a tensor of (shape, strides) along `dims` comes out channels
    last. It rolls one dimension at a time, each a concatenation of the tensor's two parts
    along it (TensorTransformations.cpp: `cat({narrow(dim, start, size - start), narrow(dim,
    0, start)})`), laid out as a concatenation is: channels last where both parts suggest it.
    A shift that is a multiple of the size leaves the second part empty, which suggests
    neither: the result is contiguous (always so along a dimension of size 1)."""
    channels_last = suggests_channels_last(shape, strides)
    for shift, dim in zip(shifts, dims, strict=True):
        size = shape[dim]
        start = (size - shift) % size
        for length in (size - start, start):
            part = (*shape[:dim], length, *shape[dim + 1 :])
            channels_last = channels_last and suggests_channels_last(part, strides)
        if not channels_last:
            return False
        strides = channels_last_strides(shape)  # the concatenation's own, for the next dimension
    return channels_last


def channels_last_strides(shape: Shape) -> tuple[int, ...]:
    """The strides of a dense 4-d or 5-d tensor of `shape` laid out channels last."""
    strides = [0] * len(shape)
    stride = 1
    for d in _CHANNELS_LAST_ORDER[len(shape)]:
        strides[d] = stride
        stride *= max(shape[d], 1)
    return tuple(strides)


def elementwise_strides(shape: Shape, operands: list[tuple[Shape, tuple[int, ...]]]) -> tuple[int, ...]:
    """The strides of an elementwise op's output of `shape`, its operands of these (shape,
    strides), as PyTorch's TensorIterator lays it out (a Python number it wraps into a 0-d
    operand, `x * 2.0`'s, given as ((), ())). Where every operand has the output's shape
    (its fast setup): contiguous when every operand is, channels last when every (4-d)
    operand is, the operands' strides when all have the same, dense ones; else, and always
    where an operand is broadcast or a number, dense with its dimensions ordered as the
    operands' strides order them (the first operand with an order decides; a broadcast
    dimension, an operand's missing leading ones included, abstains). An ambiguous layout,
    (N, 1, H, W) made channels last, comes out contiguous in the first case and channels
    last in the second (`x * 2.0`)."""
    ndim = len(shape)
    if ndim <= 1:
        return (1,) * ndim
    shape = tuple(shape)
    if all(tuple(operand_shape) == shape for operand_shape, _ in operands):
        if _numel(shape) == 0 or all(_dense_in_order(shape, s, range(ndim)) for _, s in operands):
            return _dense_strides(shape, range(ndim))
        if ndim == 4 and all(_dense_in_order(shape, s, _CHANNELS_LAST) for _, s in operands):
            return _dense_strides(shape, _CHANNELS_LAST)
        first = tuple(operands[0][1])
        if all(tuple(s) == first for _, s in operands) and is_dense(shape, first):
            return first
    strides = []
    in_order = True  # most calls: a bias or a number with contiguous maps
    for operand_shape, operand_strides in operands:
        if operand_shape:  # a 0-d operand abstains throughout
            strides.append(_broadcast_strides(shape, operand_shape, operand_strides))
            in_order = in_order and _in_order(shape, strides[-1])
    if in_order:
        return _dense_strides(shape, range(ndim))
    perm = list(reversed(range(ndim)))  # innermost first; an insertion sort that keeps ties in place
    for i in range(1, ndim):
        moving = i
        for j in reversed(range(i)):
            order = _stride_order(shape, strides, perm[j], perm[moving])
            if order > 0:
                perm[j], perm[moving] = perm[moving], perm[j]
                moving = j
            elif order < 0:
                break
    if perm == list(reversed(range(ndim))):
        return _dense_strides(shape, range(ndim))  # allocated contiguous
    strides = [0] * ndim  # else stride by stride, as TensorIterator does: a dimension of size 0 zeroes those outside it
    step = 1
    for dim in perm:
        strides[dim] = step
        step *= shape[dim]
    return tuple(strides)


_CHANNELS_LAST = (0, 2, 3, 1)


def _broadcast_strides(shape: Shape, operand_shape: Shape, operand_strides: tuple[int, ...]) -> tuple[int, ...]:
    """An operand's strides once expanded to `shape`, as TensorIterator expands it: 0 along the
    dimensions it is broadcast over and along those it lacks (its missing leading ones, even
    of size 1), its own stride along the others (a dimension of size 1 in both included)."""
    strides = [0] * len(shape)
    lead = len(shape) - len(operand_shape)
    for i in range(lead, len(shape)):
        if operand_shape[i - lead] == shape[i]:
            strides[i] = operand_strides[i - lead]
    return tuple(strides)


def _in_order(shape: Shape, strides: tuple[int, ...]) -> bool:
    """Whether an operand's (broadcast) strides order no dimension outside one before it
    (`_stride_order` never 1 for it, its broadcast dimensions abstaining): its (stride, size)
    grow, or stay, from the innermost dimension out."""
    stride, size = 0, 0
    for dim in reversed(range(len(shape))):
        if strides[dim]:
            if strides[dim] < stride or (strides[dim] == stride and shape[dim] < size):
                return False
            stride, size = strides[dim], shape[dim]
    return True


def _numel(shape: Shape) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def is_dense(shape: Shape, strides: tuple[int, ...]) -> bool:
    """Whether a tensor of `shape` laid out with `strides` fills one block of memory, each
    element once, in some order of its dimensions (c10's is_non_overlapping_and_dense): a
    channel slice of a batch of maps does not, a batch slice or a permuted tensor does.
    Dimensions of fewer than two units take no part, as in c10."""
    order = sorted((d for d in range(len(shape)) if shape[d] > 1), key=strides.__getitem__, reverse=True)
    return _dense_in_order(shape, strides, order)


def _dense_in_order(shape: Shape, strides: tuple[int, ...], order) -> bool:
    """Whether `strides` are those of a dense tensor with dimensions `order` outermost first
    (dimensions of size 1 may have any stride)."""
    expected = 1
    for dim in reversed(tuple(order)):
        if shape[dim] != 1:
            if strides[dim] != expected:
                return False
            expected *= shape[dim]
    return True


def _dense_strides(shape: Shape, order) -> tuple[int, ...]:
    """The strides of a dense tensor of `shape` whose dimensions `order` run outermost first."""
    strides = [0] * len(shape)
    step = 1
    for dim in reversed(tuple(order)):
        strides[dim] = step
        step *= max(shape[dim], 1)
    return tuple(strides)


def _stride_order(shape: Shape, strides: list[tuple[int, ...]], a: int, b: int) -> int:
    """1 when dimension `a` must go outside `b`, -1 inside, 0 when no operand says."""
    for operand in strides:
        if operand[a] == 0 or operand[b] == 0:
            continue
        if operand[a] != operand[b]:
            return -1 if operand[a] < operand[b] else 1
        if shape[a] > shape[b]:
            return 1
    return 0
