"""What an operator allocates on the CPU, sized on the meta device before it runs
(`cpu_bytes`), and a dispatch mode that bounds it over a stretch of code (`CpuBytesBounded`):
a model file's code (its forward traced on meta, its `__setstate__` run as it loads) may
make CPU tensors of any size, which no meta trace stands in for.
"""

from __future__ import annotations

import functools

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
_SET = torch.ops.aten.set_


def cpu_bytes(func, is_view: bool, writes_input: bool, args: tuple, kwargs: dict, tensors: list[torch.Tensor]) -> int:
    """The bytes an operator would allocate on the CPU (0 for one on meta): where it reads a CPU
    tensor, or makes one (a factory of no tensor whose device is the CPU, given or the
    default), its outputs' sizes as the same call on meta gives them, nothing allocated. A
    view allocates nothing, nor does `set_` (a tensor pointed at a storage there already: a
    file's, as torch.jit.load reads its tensors) or a call making its result on another device
    (`_to_copy` to meta); an in-place operator only what it grows its input by (`resize_`;
    any other leaves the size as it was)."""
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
    except Exception:  # not answered on meta: the real call says what it says
        return 0
    made = sum(tensor.numel() * tensor.element_size() for tensor in tensors_in(probe))
    if writes_input:
        return max(made - tensors[0].untyped_storage().nbytes(), 0)
    return made


def _on_meta(tensor: torch.Tensor) -> torch.Tensor:
    return torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, device=_META)


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
