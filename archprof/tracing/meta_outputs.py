"""What an operator returns in a trace on meta, made without its slow meta kernel or
corrected after it: empty meta tensors of the shapes its catalogue formula gives (the
recorder's fast path, `answer_from_formula`), the meta kernel's answers kept for a block's
repeats (`MetaAnswers`), and a meta kernel's results laid out or split as a CPU's kernel
returns them (`each_its_own`, `column_major`).
"""

from __future__ import annotations

import functools
from typing import Any

import torch

# Names read once, as `from` imports: see archprof.structure's (each `torch.<name>` read costs ~300 instructions).
from torch import empty_strided
from torch._prims_common import make_contiguous_strides_for

from archprof.operators import Layout
from archprof.operators.cpu_convolution import cpu_convolution_format
from archprof.operators.shapes import Refused
from archprof.operators.strides import elementwise_strides, is_dense, rolled_channels_last, suggests_channels_last
from archprof.tracing.op_info import OpInfo


def answer_from_formula(func, info: OpInfo, args, kwargs, tensors: list[torch.Tensor], first_only: bool = False) -> Any:
    """Answer an op with empty meta tensors of the shapes its formula gives; with `first_only`
    (its caller keeps the first output and lets go of the others at once), the others `Unmade`.

    PyTorch's meta kernels for batch norm, ReLU, add and others are Python decompositions
    costing 0.4-5 ms a call; this answers them in microseconds, with what the kernel's
    output carries: a new contiguous tensor, or the input itself for an in-place op.
    Returns None (use the real kernel) whenever the answer could differ from it: an input
    off the meta device, mixed dtypes, non-float input, an input that is not contiguous where
    the kernel's output follows its layout (channels last, a transposed or expanded view, or
    a contiguous tensor whose strides say channels last too, as (N, 1, H, W) made channels
    last does; a matrix product's output is contiguous whatever its inputs, an elementwise
    op's laid out by TensorIterator's rule: contiguous for contiguous operands of the output's
    shape, else, where an operand is broadcast or a Python number it wraps into one, ordered
    by the operands' strides), or an in-place op whose result would not fit its destination.
    Where a CPU's kernel lays its output out otherwise than the meta kernel, the answer is
    the CPU's (`Layout`): a convolution (`cpu_convolution`), a batch norm, the norms'
    gradients, the activations' gradients (TensorIterator's rule over the operands in the CPU
    kernel's order), padding, rolls and shuffles of a channels-last map, and an elementwise
    op in half precision on operands not contiguous (whose meta kernels follow a rule of
    their own; the CPU and CUDA follow TensorIterator's, as in float32). A formula's Refused
    is final: the real kernel refuses the call even where the meta kernel would answer it."""
    # Plain loops below, not any() and all() over generators: this runs for every operator.
    if not tensors:
        return None
    first = tensors[0]
    dtype = first.dtype
    if not dtype.is_floating_point:
        return None
    # A complex number (`x * 1j`, `alpha=1j`) makes the result complex: the formulas keep the input's dtype.
    if info.elementwise and (_any_complex(args) or (kwargs and _any_complex(kwargs.values()))):
        return None
    as_input = info.laid_out_as_inputs
    contiguous = True  # asked of an operator laid out as its inputs only: no other follows their layout
    sizes = []  # the formula's arguments, read in the same pass (and the layout checks' below)
    for tensor in tensors:
        if tensor.dtype != dtype or not tensor.is_meta:
            return None  # a CPU tensor the forward made itself (a position table) is computed for real
        if as_input and contiguous:
            contiguous = tensor.is_contiguous()
        sizes.append(tuple(tensor.shape))
    follows_layout = as_input and not contiguous
    if as_input and not info.elementwise:
        if follows_layout:
            return None
        for tensor, size in zip(tensors, sizes, strict=True):
            if _taken_for_channels_last(tensor, size):
                return None
    shape_args, shape_kwargs = info.slots.substituted(args, kwargs, sizes)
    if info.shape_by_dtype:
        shape_kwargs["dtype"] = dtype
    try:
        shapes = info.shape(*shape_args, **shape_kwargs)
    except Refused:
        raise
    except RuntimeError as refused:
        refusal = refused
    else:
        refusal = None
    if refusal is not None:
        # The meta kernel decides (the formula may be stricter than it); if it refuses too,
        # the formula's message says why in the user's terms (raised outside the handler,
        # so that the meta kernel's error is not taken for a limitation of the meta device).
        try:
            return func(*args, **kwargs)
        except RuntimeError:
            pass
        raise refusal
    if info.writes_input:
        return args[0] if shapes[0] == sizes[0] else None  # args[0] is tensors[0]
    if as_input and info.elementwise:  # laid out as its operands are, by TensorIterator's rule
        # Contiguous for contiguous operands only in TensorIterator's fast setup: every operand
        # of the output's shape, none a Python number it wraps into a 0-d one. Else (a bias
        # broadcast, `x * 2.0`) its dimensions are ordered by the operands' strides, which
        # lay an (N, 1, H, W) map made channels last, contiguous too, out channels last.
        number = _number_operand(info, args, kwargs, len(tensors))
        if follows_layout or number or _broadcast(sizes, shapes[0]):
            operands = tensors if info.layout is Layout.AS_INPUT else tensors[::-1]  # INPUT_FIRST: (x, grad)
            described = [(tuple(t.shape), t.stride()) for t in operands]
            if number:
                described.append(((), ()))
            strides = elementwise_strides(shapes[0], described)
            return empty_strided(shapes[0], strides, dtype=dtype, device=_META)
    unmade = first_only and len(shapes) > 1 and None not in shapes  # every output asked for
    outputs = []
    for shape in shapes:  # a loop, not a comprehension: its function and frame made for every operator
        if unmade and outputs:
            outputs.append(Unmade(shape, dtype))
        else:
            outputs.append(None if shape is None else _empty(shape, dtype))  # None: not asked for
    deciding = info.deciding_operand
    if (
        deciding is not None
        and outputs[0] is not None
        and _taken_for_channels_last(tensors[deciding], sizes[deciding])
        and not (info.contiguous_decides and tensors[deciding].is_contiguous())
    ):
        outputs[0] = _allocated_in(outputs[0], _CHANNELS_LAST[first.dim()])
    elif info.layout is Layout.CPU_CONVOLUTION and (
        _taken_for_channels_last(first, sizes[0]) or _taken_for_channels_last(tensors[1], sizes[1])
    ):
        outputs[0] = _allocated_in(outputs[0], cpu_convolution_format(*args))
    elif info.layout is Layout.SUGGESTED_BY_ALL and _all_taken_for_channels_last(tensors, sizes):
        outputs[0] = _allocated_in(outputs[0], _CHANNELS_LAST[first.dim()])
    elif info.layout is Layout.LIKE_INPUT:
        outputs[0] = _like(first)
    elif info.layout is Layout.ROLLED and _taken_for_channels_last(first, sizes[0]):
        shifts, dims = _roll_arguments(args, kwargs, first.dim())
        if rolled_channels_last(sizes[0], first.stride(), shifts, dims):
            outputs[0] = _allocated_in(outputs[0], _CHANNELS_LAST[first.dim()])
    return outputs[0] if info.returns == 1 else tuple(outputs)


def _roll_arguments(args, kwargs, ndim: int) -> tuple[list[int], list[int]]:
    """aten.roll's shifts and (wrapped) dims, as lists (the formula checked them)."""
    shifts = args[1] if len(args) > 1 else kwargs["shifts"]
    dims = args[2] if len(args) > 2 else kwargs.get("dims", ())
    shifts, dims = ([value] if isinstance(value, int) else list(value) for value in (shifts, dims))
    return shifts, [dim % ndim for dim in dims]


# The one-tensor Scalar overloads whose CPU kernels wrap their number into a tensor operand
# (add.Scalar, div.Scalar_mode...).
_WRAPPING_THEIR_NUMBER = frozenset({"aten.add", "aten.sub", "aten.mul", "aten.div"})


def _number_operand(info: OpInfo, args, kwargs, tensors: int) -> bool:
    """Whether a Python number is one of TensorIterator's operands of the call (of `tensors`
    tensors): one in a Tensor slot of the schema (`x * 2.0`: aten.mul.Tensor(x, 2.0)), or the
    number of a Scalar overload that wraps it; not a kernel's setting (clamp's bounds, add's alpha)."""
    slots = info.slots.positions
    if tensors == len(slots):
        return tensors == 1 and info.name in _WRAPPING_THEIR_NUMBER
    count = len(args)
    for i, _ in slots:
        if i < count and type(args[i]) in (float, int, bool):
            return True
    if kwargs:
        for name, argument in kwargs.items():
            if name in info.slots.names and type(argument) in (float, int, bool):
                return True
    return False


def _any_complex(values) -> bool:
    for value in values:  # noqa: SIM110 (`is`, not `complex in map(type, ...)`: == on torch's classes runs Python)
        if type(value) is complex:
            return True
    return False


def _broadcast(sizes: list[tuple[int, ...]], shape: tuple[int, ...]) -> bool:
    """Whether an operand of these sizes is broadcast to the output's `shape`."""
    for size in sizes:  # noqa: SIM110 (a loop: any() of a generator costs more, on every elementwise op)
        if size != shape:
            return True
    return False


def check_one_dtype(info: OpInfo, tensors: list[torch.Tensor]) -> None:
    """Refuse mixed dtypes where the operator's real kernels do (the meta kernels of some let them pass)."""
    if not tensors:
        return
    dtype = tensors[0].dtype
    for tensor in tensors:  # a loop, not a set: most operators of a trace come here
        if tensor.dtype != dtype:
            dtypes = ", ".join(sorted({str(t.dtype).removeprefix("torch.") for t in tensors}))
            raise RuntimeError(f"{info.name} expects its tensors in one dtype, got {dtypes}")


_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


class MetaAnswers:
    """The meta kernel's answers to the calls the fast path declined, kept per trace by what
    they depend on: the operator, its arguments, and its tensors' shapes, strides and
    dtypes. Only for operators with a shape formula, whose meta kernels are the slow Python
    decompositions (and those of `op_info._META_ANSWERS_KEPT`): where their output's layout follows
    a rule the fast path does not model (a layer norm's gradient on ConvNeXt's
    channels-last view, 3 ms a call), each repeat of
    a block's call is answered from the first. An answer is fresh tensors laid out as the
    kernel's were; a call whose kernel raised, or answered off the meta device, is not kept."""

    def __init__(self) -> None:
        self._answers: dict[tuple, tuple] = {}

    def answer(self, func, info: OpInfo, args, kwargs, tensors: list[torch.Tensor]) -> Any:
        for tensor in tensors:
            if not tensor.is_meta:
                return None
        mapped_args, mapped_kwargs = info.slots.substituted(args, kwargs, [_layout_of(tensor) for tensor in tensors])
        key = (func, _frozen(mapped_args), _frozen(tuple(sorted(mapped_kwargs.items()))))
        try:
            layouts = self._answers.get(key)
        except TypeError:  # an argument that cannot be a key: the kernel answers every time
            return None
        if layouts is None:
            out = func(*args, **kwargs)
            made = out if isinstance(out, tuple) else (out,)
            layouts = tuple(
                None if t is None else (tuple(t.shape), t.stride(), t.dtype)
                for t in made
                if t is None or (isinstance(t, torch.Tensor) and t.is_meta)
            )
            if len(layouts) == len(made):  # every output a meta tensor (or None)
                self._answers[key] = (isinstance(out, tuple), layouts)
            return out
        is_tuple, layouts = layouts
        made = tuple(
            None if layout is None else torch.empty_strided(layout[0], layout[1], dtype=layout[2], device=_META)
            for layout in layouts
        )
        return made if is_tuple else made[0]


def _layout_of(tensor: torch.Tensor) -> tuple:
    return tuple(tensor.shape), tensor.stride(), tensor.dtype


def _frozen(value: Any) -> Any:
    """`value` with its lists made tuples, to be part of a key."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(item) for item in value)
    return value


def _taken_for_channels_last(tensor: torch.Tensor, shape: tuple[int, ...]) -> bool:
    """`suggests_channels_last` of a tensor of `shape` (its sizes, read already), at once False
    for a contiguous one without a dimension of one."""
    if len(shape) not in (4, 5) or (1 not in shape[1:] and tensor.is_contiguous()):
        return False
    return suggests_channels_last(shape, tensor.stride())


def _all_taken_for_channels_last(tensors: list[torch.Tensor], sizes: list[tuple[int, ...]]) -> bool:
    """Whether every tensor (of `sizes`) is taken for channels last, all of one dimensionality
    (one format): a 1-d empty operand of a concatenation, which it skips, still makes it contiguous."""
    ndim = len(sizes[0])
    return all(len(size) == ndim and _taken_for_channels_last(t, size) for t, size in zip(tensors, sizes, strict=True))


# Operators whose meta kernel returns one tensor object as two of its results where a CPU's
# kernel makes one tensor each: oneDNN LSTM's gradient gives both biases the same `diff_b`
# (torch/_meta_registrations.py); the CPU allocates two, each cast and freed on its own.
ONE_TENSOR_TWICE_ON_META = frozenset({"aten.mkldnn_rnn_layer_backward"})


def each_its_own(out: tuple) -> tuple:
    """`out`, each tensor object returned again after its first place replaced by a new
    tensor like it."""
    seen: set[int] = set()
    results = []
    for result in out:
        if isinstance(result, torch.Tensor) and result.is_meta and id(result) in seen:
            result = torch.empty_like(result)
        seen.add(id(result))
        results.append(result)
    return tuple(results)


# Results LAPACK writes column by column, which a CPU returns so and the meta kernel row by
# row (as cuSOLVER's, on CUDA): the SVD's V^H and the eigenvectors of a general matrix, by
# their place among the results. Their layout decides what follows: a reshape copies them on
# a CPU, a contiguous() too, and an elementwise op writes its output column by column.
COLUMN_MAJOR_ON_A_CPU = {"aten._linalg_svd": (2,), "aten.linalg_eig": (1,)}


def column_major(out: tuple, places: tuple[int, ...]) -> tuple:
    """`out`, each meta matrix (or batch of them) at `places` made anew laid out column by
    column, as LAPACK writes it (an empty one, where the vectors were not asked for, kept)."""
    results = list(out)
    for place in places:
        result = results[place]
        if result.is_meta and result.dim() >= 2:
            shape = tuple(result.shape)
            strides = make_contiguous_strides_for(shape, row_major=False)
            results[place] = torch.empty_strided(shape, strides, dtype=result.dtype, device=_META)
    return tuple(results)


def _like(tensor: torch.Tensor) -> torch.Tensor:
    """A new empty meta tensor as a CPU's `torch.empty_like` makes one (torch.preserve_format):
    the input's strides where it is dense (a dimension of size 1 keeping its own), else dense
    strides in the order of the input's (c10's infer_dense_strides, TensorIterator's order of
    one operand). Not meta's empty_like, which makes the first dense ones anew."""
    shape, strides = tuple(tensor.shape), tensor.stride()
    if not is_dense(shape, strides):
        strides = elementwise_strides(shape, [(shape, strides)])
    return torch.empty_strided(shape, strides, dtype=tensor.dtype, device=_META)


def _allocated_in(tensor: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """A new empty meta tensor like `tensor`, in `memory_format`, as a kernel allocates its
    output (`empty(..., memory_format=)`): `tensor.contiguous(memory_format=)` would keep one
    whose dimension of size 1 already makes it count as in that format, with other strides
    ((N, 1, H, W) contiguous, where the kernel's channels-last output steps its channel by 1),
    which decide the layout of what follows (a convolution's, and whether a flatten copies)."""
    return torch.empty(tensor.shape, dtype=tensor.dtype, device=_META, memory_format=memory_format)


class Unmade:
    """An output `answer_from_formula` did not make (`first_only`): the shape and dtype of the
    tensor its caller would let go of at once, which the recorder notes as made and let go of.
    A tensor made costs more than the rest of its recording: an eval batch norm's two
    statistics, empty on a CPU, were a third of the call."""

    __slots__ = ("dtype", "shape")

    def __init__(self, shape, dtype: torch.dtype) -> None:
        if len(shape) == 2 and not isinstance(shape[1], int):  # `(shape, dtype)`, as `_empty` reads it
            shape, dtype = shape
        self.shape = tuple(shape)
        self.dtype = dtype


def _empty(shape, dtype: torch.dtype) -> torch.Tensor:
    """An empty contiguous meta tensor of `shape` (or `(shape, dtype)`: an output of a dtype of its own)."""
    if len(shape) == 2 and not isinstance(shape[1], int):
        shape, dtype = shape
    return empty_meta(shape, dtype)


def empty_meta(shape, dtype: torch.dtype) -> torch.Tensor:
    """An empty contiguous meta tensor of `shape`, made by empty_strided with the contiguous
    strides: the same tensor as torch.empty makes (sizes, strides, storage size, contiguity
    flags), in two thirds of its time (1.5 against 2.8 us: one made per output of nearly every
    operator, and per parameter and buffer a stand-in is made for)."""
    shape = tuple(shape)
    return empty_strided(shape, _contiguous_strides(shape), dtype=dtype, device=_META)


@functools.lru_cache(maxsize=4096)  # a trace's shapes repeat block after block
def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """c10's contiguous strides (a dimension of size 0 or 1 steps as one of size 1); not
    torch's make_contiguous_strides_for, whose first call imports sympy (0.5 s of a CLI call)."""
    strides = []
    stride = 1
    for size in reversed(shape):
        strides.append(stride)
        stride *= max(size, 1)
    return tuple(reversed(strides))


_META = torch.device("meta")
