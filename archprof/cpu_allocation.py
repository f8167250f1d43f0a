"""What an operator allocates on the CPU, sized on the meta device before it runs
(`cpu_bytes`), or from its inputs' values where those decide it (`nonzero`'s count), with
what its kernel makes inside besides (`_WORKSPACE`); the elements it reads of CPU tensors
(`cpu_elements`); and a dispatch mode that bounds both over a stretch of code
(`CpuBytesBounded`): a model file's code (its forward traced on meta, its `__setstate__` run
as it loads) may make CPU tensors of any size, or reduce a broadcast one of trillions of
elements, which no meta trace stands in for.
"""

from __future__ import annotations

import functools
import math

import torch

from archprof.dispatch_mode import DispatchMode
from archprof.repeated_reads import repeated_reads
from archprof.structure import map_op_args, tensors_in
from archprof.units import human_bytes

# The most bytes of tensors a model file's code may make on the CPU in all, while it loads
# and again while its forward is traced: a 5 KB file's forward made `torch.ones([40000,
# 40000])`, 6.4 GB, and its `__setstate__` `torch.ones(699000000)`, 2.8 GB, as it loaded.
MOST_FILE_CPU_BYTES = 2**30
# The most elements of CPU tensors the operators of a model file's code may read in all (as
# broadcast: `numel`), under the same terms: a small file's forward summed
# `torch.ones([1]).expand([2**42])`, nearly an hour of CPU. About ten seconds at the slowest
# rate of any CPU operator whose outputs the bytes bound leaves unbounded (a row-wise `mode`
# of a broadcast row: 76 ns an element on one thread), 0.03 s of a sum. The test suites' model
# files read at most 16 elements in a forward, and, as they load, at most as many as their
# weights (16.8 million, within the file's size, which a load may read besides).
MOST_FILE_CPU_ELEMENTS = 2**27

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
    grows its input by (`resize_`; any other leaves the size as it was). Besides its outputs,
    what its CPU kernel makes inside, where that is more (`_WORKSPACE`)."""
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
        made = _sized_by(_SIZED_BY_VALUES, func, args, kwargs)
    else:
        made = sum(tensor.numel() * tensor.element_size() for tensor in tensors_in(probe))
        if writes_input:
            made = max(made - tensors[0].untyped_storage().nbytes(), 0)
    return made + _sized_by(_WORKSPACE, func, args, kwargs)


# Operators that read a tensor's metadata or one element, not its elements: `set_`, a
# quantized tensor's scales (a quantized ResNet's TorchScript read a 512,000-element weight's
# a thousand times as it loaded), `item`'s.
_READING_NO_ELEMENTS = frozenset(
    {
        _SET,
        *(_ATEN.q_scale, _ATEN.q_zero_point, _ATEN.qscheme, _ATEN.q_per_channel_axis),
        *(_ATEN.q_per_channel_scales, _ATEN.q_per_channel_zero_points, _ATEN._local_scalar_dense),
    }
)


def cpu_elements(func, is_view: bool, tensors: list[torch.Tensor], args: tuple) -> int:
    """The elements an operator (called with positional `args`) reads of CPU tensors: each CPU
    input's as broadcast (`numel`), as a reduction of an expanded tensor visits each repeat,
    and a product's, a pooling's or a decomposition's each time its kernel reads them
    (`repeated_reads`); none for a view, nor for an operator reading only metadata
    (`_READING_NO_ELEMENTS`)."""
    if is_view or func.overloadpacket in _READING_NO_ELEMENTS:
        return 0
    on_the_cpu = [tensor for tensor in tensors if tensor.device.type == "cpu"]
    if not on_the_cpu:
        return 0
    read = sum(tensor.numel() for tensor in on_the_cpu)
    repeated = repeated_reads(func, tensors, args)
    return max(read, repeated) if repeated is not None else read


def _on_meta(tensor: torch.Tensor) -> torch.Tensor:
    return torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, device=_META)


def _sized_by(sizings: dict, func, args: tuple, kwargs: dict) -> int:
    """The bytes `sizings` says of a call of `func` (`_SIZED_BY_VALUES`, `_WORKSPACE`), given
    its arguments by their schema's names; 0 for an operator not in it, and for arguments the
    real call refuses too (a meta mask)."""
    sizing = sizings.get(func)
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


def _distinct(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """`tensor` read once per value it holds: its dimensions of stride 0 (broadcast, each
    repeating the rest) taken at their first index, and how many times the rest repeats (the
    product of their sizes, 0 where one is empty), for a reading to cost what its storage
    holds, not what it is broadcast to (`expand([2**42])` of one element)."""
    kept = [(size, stride) for size, stride in zip(tensor.shape, tensor.stride(), strict=True) if stride]
    repeats = math.prod(size for size, stride in zip(tensor.shape, tensor.stride(), strict=True) if not stride)
    return tensor.as_strided([size for size, _ in kept], [stride for _, stride in kept]), repeats


def _count_nonzero(tensor: torch.Tensor) -> int:
    distinct, repeats = _distinct(tensor)
    return int(_ATEN.count_nonzero.default(distinct)) * repeats


def _largest(tensor: torch.Tensor) -> int:
    return int(_ATEN.amax.default(_distinct(tensor)[0]))


def _sum_of_counts(counts: torch.Tensor) -> int:
    """The sum of an integer tensor's values, unwrapped: where int64 could wrap it, its largest
    value times its count instead, as large at least. (`amax`, unlike `max`, copies no strided
    tensor.)"""
    if counts.numel() == 0:
        return 0
    distinct, repeats = _distinct(counts)
    largest = int(_ATEN.amax.default(distinct))
    widest = max(largest, -int(_ATEN.amin.default(distinct)))
    if widest * counts.numel() >= 2**63:
        return largest * counts.numel()
    return int(_ATEN.sum.default(distinct)) * repeats


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
    bins = max(minlength, _largest(self) + 1 if self.numel() else 0)
    width = 4 if weights is not None and weights.dtype == torch.float32 else _LONG_BYTES
    return bins * width + _strided_copies(self, weights)


def _strided_copies(*tensors: torch.Tensor | None) -> int:
    """The bytes of a contiguous copy of each of `tensors` that is strided (a kernel that reads
    its inputs densely makes one)."""
    return sum(t.numel() * t.element_size() for t in tensors if t is not None and not t.is_contiguous())


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


def _bins_per_dimension(bins) -> list[int]:
    """A histogram's bins along each of its dimensions, given as a count, a count a dimension
    (histogramdd), or as edges (a tensor a dimension, a bin fewer than its elements)."""
    if isinstance(bins, torch.Tensor):
        return [max(bins.numel() - 1, 0)]
    if isinstance(bins, (list, tuple)):
        return [count for each in bins for count in _bins_per_dimension(each)]
    return [max(int(bins), 0)]


def _histogram_bytes(self: torch.Tensor, bins, **_) -> int:
    # No meta kernel sizes histogram's, nor histogramdd's parts: a histogram of `bins`, and
    # their edges (a bin's more a dimension), whichever of the two the overload returns.
    counts = _bins_per_dimension(bins)
    return (math.prod(counts) + sum(counts) + len(counts)) * self.element_size()


# The overloads of histogram and histogramdd's counting, which make a histogram a thread.
_HISTOGRAMS = [
    *(getattr(_ATEN.histogram, name) for name in ("bin_ct", "bin_ct_out", "bins_tensor", "bins_tensor_out")),
    *(
        getattr(packet, name)
        for packet in (_ATEN._histogramdd_from_bin_cts, _ATEN._histogramdd_from_bin_tensors)
        for name in ("default", "out")
    ),
]

# Operators whose outputs' sizes their inputs' values decide (or whose meta kernel is missing:
# histogram's), each with what sizes it from them (given its arguments by their schema's
# names); an out= overload resizes `out` as much.
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
        (_histogram_bytes, [*_HISTOGRAMS, _ATEN._histogramdd_bin_edges.default, _ATEN._histogramdd_bin_edges.out]),
    )
    for overload in overloads
}

# torch's CPU kernels of median and nanmedian along a dim read past the memory of a broadcast
# input (a stride of 0): they answer nan or garbage, and crashed the process (SIGSEGV) on
# `torch.ones([1]).expand([20000000])`, two lines of a model file. Run on a copy of it.
_MEDIANS_ALONG = frozenset({_ATEN.median.dim, _ATEN.median.dim_values, _ATEN.nanmedian.dim, _ATEN.nanmedian.dim_values})


def _broadcast_on_the_cpu(tensor: torch.Tensor) -> bool:
    return tensor.device.type == "cpu" and 0 in tensor.stride()


def called_safely(func, args: tuple, kwargs: dict):
    """`func(*args, **kwargs)`, but median or nanmedian along a dim on a broadcast CPU input
    runs on a contiguous copy of it, which its kernel reads within (`_MEDIANS_ALONG`)."""
    if func in _MEDIANS_ALONG and _broadcast_on_the_cpu(args[0]):
        args = (args[0].contiguous(), *args[1:])
    return func(*args, **kwargs)


# Measured against torch 2.13's CPU kernels by peak RSS, 20 million elements (bins), 1 to 8
# threads: what each makes inside besides its outputs, an upper bound.
_PAIR_BYTES = 16  # a (value, long index) pair, padded to 16 bytes whatever the value's dtype


def _held_at_once(self: torch.Tensor, dim: int) -> int:
    """The elements of the rows along `dim` that a kernel's threads hold at once, a row each."""
    length = self.shape[dim]
    rows = self.numel() // length if length else 0
    return min(rows, torch.get_num_threads()) * length


def _row_pairs_bytes(self: torch.Tensor, dim: int, **_) -> int:
    # topk, mode: each thread copies the row it reduces into a vector of (value, index) pairs
    # (16 bytes an element of a row of 300 million: 4.8 GB for a 4-byte result).
    return _held_at_once(self, dim) * _PAIR_BYTES


def _sort_buffer_bytes(self: torch.Tensor, dim: int, **_) -> int:
    # sort (argsort and msort call it): std::stable_sort's buffer, half a pair an element of
    # the rows it sorts at once (8 bytes an element, whatever the dtype).
    return _held_at_once(self, dim) * _PAIR_BYTES // 2


def _partition_bytes(self: torch.Tensor, **_) -> int:
    # kthvalue, median and nanmedian along a dim: a contiguous copy of the input and a long
    # index an element, partitioned in place (4 + 8 bytes an element of float32).
    return self.numel() * (self.element_size() + _LONG_BYTES)


def _median_along_bytes(self: torch.Tensor, **_) -> int:
    # median and nanmedian along a dim: kthvalue's, and a copy of a broadcast input first
    # (`called_safely`).
    return _partition_bytes(self) + (_copy_bytes(self) if _broadcast_on_the_cpu(self) else 0)


def _copy_bytes(self: torch.Tensor, **_) -> int:
    # median and nanmedian of all elements: a contiguous copy, partitioned in place.
    return self.numel() * self.element_size()


def _thread_histograms_bytes(self: torch.Tensor, bins, **_) -> int:
    # histogram, histogramdd: a histogram a thread, summed at the end (2 threads: 2 x 4 bytes
    # a float32 bin), after a contiguous copy of a strided input.
    histogram = math.prod(_bins_per_dimension(bins)) * self.element_size()
    return torch.get_num_threads() * histogram + _strided_copies(self)


def _histc_bytes(self: torch.Tensor, bins: int, **_) -> int:
    # histc: histogram's, and one histogram more (its result, made apart and copied out).
    return _thread_histograms_bytes(self, bins) + max(bins, 0) * self.element_size()


def _searched_copies_bytes(self, sorted_sequence=None, boundaries=None, sorter=None, **_) -> int:
    # searchsorted, bucketize: the kernel searches contiguous inputs of one dtype, so copies
    # each searched input that is strided or of another dtype than their promoted one (a
    # float32 row against float64 edges: 8 bytes an element), and a strided sorter.
    sequence = boundaries if sorted_sequence is None else sorted_sequence
    searched = [sequence, self] if isinstance(self, torch.Tensor) else [sequence]
    dtype = functools.reduce(torch.promote_types, (tensor.dtype for tensor in searched))
    copied = [tensor for tensor in searched if tensor.dtype != dtype or not tensor.is_contiguous()]
    return sum(tensor.numel() * dtype.itemsize for tensor in copied) + _strided_copies(sorter)


# Operators whose CPU kernels make more inside than their outputs, each with what they make
# besides (given its arguments by their schema's names): a 4-byte `topk` of a row of 300
# million broadcast elements made 4.8 GB.
_WORKSPACE = {
    overload: sizing
    for sizing, overloads in (
        (_row_pairs_bytes, [_ATEN.topk.default, _ATEN.topk.values, _ATEN.mode.default, _ATEN.mode.values]),
        (_sort_buffer_bytes, [_ATEN.sort.default, _ATEN.sort.stable, _ATEN.sort.values, _ATEN.sort.values_stable]),
        (_partition_bytes, [_ATEN.kthvalue.default, _ATEN.kthvalue.values]),
        (_median_along_bytes, list(_MEDIANS_ALONG)),
        (_copy_bytes, [_ATEN.median.default, _ATEN.median.out, _ATEN.nanmedian.default, _ATEN.nanmedian.out]),
        (_histc_bytes, [_ATEN.histc.default, _ATEN.histc.out]),
        (_thread_histograms_bytes, _HISTOGRAMS),
        (
            _searched_copies_bytes,
            [getattr(packet, name) for packet in (_ATEN.searchsorted, _ATEN.bucketize) for name in packet.overloads()],
        ),
    )
    for overload in overloads
}


@functools.cache
def _aliasing(func) -> tuple[bool, bool]:
    writes_input, _, is_view = schema_aliasing(func)
    return writes_input, is_view


class CpuBytesTally:
    """What a stretch of code did on the CPU, added operator by operator: the elements of CPU
    tensors its operators read (`read`, against `most_read`: `cpu_elements`), then, while
    within, the bytes they made (`made`, against `most`: `cpu_bytes`, which may read values:
    after the reads bound, so that reading costs no more than the operator itself); `past`,
    the operator that took either past its bound (None while within), and `reading`, whether
    that was the elements bound."""

    def __init__(self, most: int, most_read: int) -> None:
        self.most = most
        self.most_read = most_read
        self.made = 0
        self.read = 0
        self.past: str | None = None
        self.reading = False

    def add(self, operator: str, func, is_view: bool, writes_input: bool, args, kwargs, tensors) -> bool:
        """Add what `operator`, `func` called on `args` and `kwargs` (whose tensors `tensors`
        are), reads and makes on the CPU: whether both totals are still within their bounds.
        Once past one, nothing more is added: code that catches the refusal and calls again
        (TorchScript's `matmul` tries its `mm` twice) leaves the figures of the first."""
        if self.past is not None:
            return False
        self.read += cpu_elements(func, is_view, tensors, args)
        if self.read > self.most_read:
            self.past, self.reading = operator, True
            return False
        self.made += cpu_bytes(func, is_view, writes_input, args, kwargs, tensors)
        if self.made > self.most:
            self.past = operator
        return self.past is None

    def done(self) -> str:
        """What took the tally past its bound, in words: "makes 6.40 GB of tensors on the
        CPU", "reads 4,398,046,511,104 elements of CPU tensors"."""
        if self.reading:
            return f"reads {self.read:,} elements of CPU tensors"
        return f"makes {human_bytes(self.made)} of tensors on the CPU"

    def bound(self, besides: int = 0) -> str:
        """The bound passed, in words, less what a stretch may do `besides` (a load, the file's
        size): "1.07 GB", "134,217,728 elements"."""
        return f"{self.most_read - besides:,} elements" if self.reading else human_bytes(self.most - besides)


class CpuBytesBounded(DispatchMode):
    """While active, what the operators dispatched read and make on the CPU is added up (into
    `tally`: `cpu_elements` and `cpu_bytes`, each before it runs) and the operator that would
    take either past its bound (`most` bytes, `most_read` elements) raises instead of running.
    Code that catches the error (TorchScript's interpreter hands it on as a RuntimeError) is
    told by `tally.past`."""

    def __init__(self, most: int, most_read: int) -> None:
        super().__init__()
        self.tally = CpuBytesTally(most, most_read)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        writes_input, is_view = _aliasing(func)
        tally, tensors = self.tally, tensors_in([args, kwargs])
        if not tally.add(str(func.overloadpacket), func, is_view, writes_input, args, kwargs, tensors):
            raise RuntimeError(f"archprof: {tally.past} {tally.done()}, past a model file's bound")
        return called_safely(func, args, kwargs)
