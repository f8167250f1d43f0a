"""What an operator allocates on the CPU, sized on the meta device before it runs
(`cpu_bytes`), or from its inputs' values where those decide it (`nonzero`'s count), and a
dispatch mode that bounds it over a stretch of code (`CpuBytesBounded`): a model file's code
(its forward traced on meta, its `__setstate__` run as it loads) may make CPU tensors of any
size, which no meta trace stands in for.
"""

from __future__ import annotations

import functools
import math

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from archprof.structure import map_op_args, tensors_in

# The most bytes of tensors a model file's code may make on the CPU in all, while it loads
# and again while its forward is traced: a 5 KB file's forward made `torch.ones([40000,
# 40000])`, 6.4 GB, and its `__setstate__` `torch.ones(699000000)`, 2.8 GB, as it loaded.
MOST_FILE_CPU_BYTES = 2**30

# Operators returning views of their input whose schemas carry no alias annotation
# (`_unsafe_view`: what `reshape` returns after its copy, and matmul's batch folds).
_UNANNOTATED_VIEWS = frozenset(
    {"aten.unsafe_split", "aten.unsafe_split_with_sizes", "aten.unsafe_chunk", "aten._unsafe_view"}
)


def schema_aliasing(func) -> tuple[bool, tuple[str, ...], bool]:
    """Of an operator overload, from its schema: whether it writes its first input in place and
    returns it, the keyword arguments of an out= overload it writes its results into (their
    order its results'), and whether it returns a view of an input without writing it."""
    returns = func._schema.returns
    alias = returns[0].alias_info if len(returns) == 1 else None
    out_names = tuple(
        argument.name
        for argument in func._schema.arguments
        if argument.kwarg_only and argument.alias_info is not None and argument.alias_info.is_write
    )
    writes_input = alias is not None and alias.is_write and not out_names
    is_view = (alias is not None and not alias.is_write) or str(func.overloadpacket) in _UNANNOTATED_VIEWS
    return writes_input, out_names, is_view


_META = torch.device("meta")
_CPU = torch.device("cpu")
_ATEN = torch.ops.aten
_SET = _ATEN.set_


def cpu_bytes(func, is_view: bool, writes_input: bool, args: tuple, kwargs: dict, tensors: list[torch.Tensor]) -> int:
    """The bytes an operator would allocate on the CPU (0 for one on meta): where it reads a CPU
    tensor, or makes one (a factory of no tensor whose device is the CPU, given or the
    default), its outputs' sizes as the same call on meta gives them, nothing allocated, or,
    where its inputs' values decide them (which meta does not hold), as those values say
    (`_SIZED_BY_VALUES`). A view allocates nothing, nor does `set_` (a tensor pointed at a
    storage there already: a file's, as torch.jit.load reads its tensors) or a call making
    its result on another device (`_to_copy` to meta); an in-place operator only what it
    grows its input by (`resize_`; any other leaves the size as it was)."""
    device = kwargs.get("device")
    if is_view or func.overloadpacket is _SET or device not in (None, _CPU, "cpu"):
        return 0
    if tensors:
        if not any(tensor.device.type == "cpu" for tensor in tensors):
            return 0
    elif device is None and torch.get_default_device().type != "cpu":
        return 0
    try:  # a quantized tensor has no meta stand-in, and some operators no meta kernel
        meta_args, meta_kwargs = map_op_args(_on_meta, torch.Tensor, args, kwargs)
        if not tensors:
            meta_kwargs["device"] = _META
        probe = func(*meta_args, **meta_kwargs)
    except Exception:  # not answered on meta: its values may say, else the real call says what it says
        return _sized_by_values(func, args, kwargs)
    made = sum(tensor.numel() * tensor.element_size() for tensor in tensors_in(probe))
    if writes_input:
        return max(made - tensors[0].untyped_storage().nbytes(), 0)
    return made


def _on_meta(tensor: torch.Tensor) -> torch.Tensor:
    return torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, device=_META)


def _sized_by_values(func, args: tuple, kwargs: dict) -> int:
    """The bytes an operator whose outputs' sizes its inputs' values decide makes, read from
    those values (a count, a sum, a largest value: a scalar each, the tensors left as they are);
    0 for any other operator, and for arguments the real call refuses too (a meta mask)."""
    sizing = _SIZED_BY_VALUES.get(func)
    if sizing is None:
        return 0
    schema = func._schema.arguments
    named = {argument.name: argument.default_value for argument in schema}
    named.update(zip((argument.name for argument in schema), args, strict=False))  # args may stop short
    named.update(kwargs)
    try:
        return sizing(**named)
    except Exception:  # arguments the real call refuses too
        return 0


_LONG_BYTES = 8


def _count_nonzero(tensor: torch.Tensor) -> int:
    return int(_ATEN.count_nonzero.default(tensor))


def _sum_of_counts(counts: torch.Tensor) -> int:
    """The sum of an integer tensor's values, unwrapped: where int64 could wrap it, its largest
    value times its count instead, as large at least. (`amax`, unlike `max`, copies no strided
    tensor: a value broadcast to a long row.)"""
    if counts.numel() == 0:
        return 0
    largest = int(_ATEN.amax.default(counts))
    widest = max(largest, -int(_ATEN.amin.default(counts)))
    if widest * counts.numel() >= 2**63:
        return largest * counts.numel()
    return int(_ATEN.sum.default(counts))


def _repeated_bytes(repeats: torch.Tensor, output_size: int | None, **_) -> int:
    # `repeat_interleave(x, repeats)` decomposes to this (its indices) and an index_select
    # meta sizes: sum(repeats) indices of repeats' dtype, after a copy and a cumulative sum of
    # repeats (the CPU kernel's, each as large: a repeat broadcast to a long row).
    total = output_size if output_size is not None else _sum_of_counts(repeats)
    return (max(total, 0) + 2 * repeats.numel()) * repeats.element_size()


def _nonzero_bytes(self: torch.Tensor, **_) -> int:
    # A long index per dimension of each nonzero element (`argwhere` and `where(mask)` too).
    return _count_nonzero(self) * self.dim() * _LONG_BYTES


def _bincount_bytes(self: torch.Tensor, weights: torch.Tensor | None, minlength: int, **_) -> int:
    # A bin per value up to the largest (minlength at least), long counts or sums of the
    # weights (float32 ones kept, any other float64, as torch's CPU kernel makes them), after
    # a contiguous copy of a strided input or weights (the kernel's).
    bins = max(minlength, int(_ATEN.amax.default(self)) + 1 if self.numel() else 0)
    width = 4 if weights is not None and weights.dtype == torch.float32 else _LONG_BYTES
    copied = [t for t in (self, weights) if t is not None and not t.is_contiguous()]
    return bins * width + sum(t.numel() * t.element_size() for t in copied)


def _masked_select_bytes(self: torch.Tensor, mask: torch.Tensor, **_) -> int:
    # The elements where the mask, broadcast against them, is true (each true element of the
    # mask repeated as often as broadcasting repeats it), after the long prefix sum over the
    # broadcast mask that the CPU kernel makes of a large or broadcast one.
    elements = math.prod(torch.broadcast_shapes(self.shape, mask.shape))
    selected = _count_nonzero(mask) * elements // mask.numel() if mask.numel() else 0
    return selected * self.element_size() + elements * _LONG_BYTES


def _masked_index_bytes(self: torch.Tensor, indices: list, **_) -> int:
    # `x[mask]`: each boolean mask stands for nonzero's long indices of its true elements,
    # made first; with those, meta sizes the result.
    made, on_meta = 0, []
    for index in indices:
        if index is not None and index.dtype in (torch.bool, torch.uint8):
            count = _count_nonzero(index)
            made += count * index.dim() * _LONG_BYTES
            on_meta += [torch.empty(count, dtype=torch.long, device=_META)] * index.dim()
        else:
            on_meta.append(None if index is None else _on_meta(index))
    result = _ATEN.index.Tensor(_on_meta(self), on_meta)
    return made + result.numel() * result.element_size()


def _unique_bytes(self: torch.Tensor, dim: int | None = None, **_) -> int:
    # At most every element (slice along `dim`) once, with a long inverse index and count for
    # each, whichever of them were asked for (the sort it runs first makes as much).
    slices = self.numel() if dim is None else self.shape[dim]
    return self.numel() * self.element_size() + 2 * slices * _LONG_BYTES


# Operators whose outputs' sizes their inputs' values decide, each with what sizes it from
# them (given its arguments by their schema's names); an out= overload resizes `out` as much.
_SIZED_BY_VALUES = {
    overload: sizing
    for sizing, overloads in (
        (_repeated_bytes, [_ATEN.repeat_interleave.Tensor, _ATEN.repeat_interleave.Tensor_out]),
        (_nonzero_bytes, [_ATEN.nonzero.default, _ATEN.nonzero.out]),
        (_bincount_bytes, [_ATEN.bincount.default, _ATEN.bincount.out]),
        (_masked_select_bytes, [_ATEN.masked_select.default, _ATEN.masked_select.out]),
        (_masked_index_bytes, [_ATEN.index.Tensor, _ATEN.index.Tensor_out, _ATEN.index.Tensor_hacked_twin]),
        (
            _unique_bytes,
            [
                getattr(packet, name)
                for packet in (
                    _ATEN._unique,
                    _ATEN._unique2,
                    _ATEN.unique_dim,
                    _ATEN.unique_consecutive,
                    _ATEN.unique_dim_consecutive,
                )
                for name in ("default", "out")
            ],
        ),
    )
    for overload in overloads
}


@functools.cache
def _aliasing(func) -> tuple[bool, bool]:
    writes_input, _, is_view = schema_aliasing(func)
    return writes_input, is_view


class CpuBytesTally:
    """What a stretch of code made on the CPU, added operator by operator against `most`:
    `made` so far, and `past`, the operator that took it past `most` (None while within)."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.made = 0
        self.past: str | None = None

    def add(self, operator: str, size: int) -> bool:
        """Add `operator`'s `size` bytes: whether the total is still within `most`."""
        self.made += size
        if self.made > self.most:
            self.past = operator
        return self.past is None


class CpuBytesBounded(TorchDispatchMode):
    """While active, what the operators dispatched make on the CPU is added up (`cpu_bytes`,
    each sized on meta before it runs, into `tally`) and the operator that would take it past
    `most` raises instead of running. Code that catches the error (TorchScript's interpreter
    hands it on as a RuntimeError) is told by `tally.past`."""

    def __init__(self, most: int) -> None:
        super().__init__()
        self.tally = CpuBytesTally(most)

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # as the recorder's: no compilation happens here, and dynamo's import is slow

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        writes_input, is_view = _aliasing(func)
        size = cpu_bytes(func, is_view, writes_input, args, kwargs, tensors_in([args, kwargs]))
        if not self.tally.add(str(func.overloadpacket), size):
            raise RuntimeError(f"archprof: {self.tally.past} would make more than {self.tally.most:,} bytes on the CPU")
        return func(*args, **kwargs)
