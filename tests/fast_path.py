"""The oracles for the trace's fast path: its answers against the meta kernels', and, where a
CPU lays an output out otherwise, against the CPU kernels'."""

import torch
from torch._prims_common import check_significant_strides
from torch.utils._pytree import tree_map_only

from archprof.tracing.recorder import Recorder


class _Outputs(torch.utils._python_dispatch.TorchDispatchMode):
    """Every aten op's outputs under this mode (under the recorder: the recorder's answers)."""

    def __init__(self):
        super().__init__()
        self.seen = []
        self.layouts = []  # per op: its tensor arguments' shapes, strides and dtypes
        self.calls = []  # per op: its arguments and keyword arguments

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.seen.append((func, out))
        self.layouts.append([(tuple(a.shape), a.stride(), a.dtype) for a in args if isinstance(a, torch.Tensor)])
        self.calls.append((args, kwargs or {}))
        return out


def _tensors_of(value) -> list[torch.Tensor]:
    return [value] if isinstance(value, torch.Tensor) else [t for t in value if isinstance(t, torch.Tensor)]


def check_answers_match_the_meta_kernel(call) -> None:
    """`call()` under the recorder runs the same ops as on meta alone, each output with the
    meta kernel's shape, dtype and significant strides (of dimensions longer than 1): the
    layout decides whether later views succeed and later ops take the fast path. Where the
    meta kernel lays an output out otherwise than the CPU's kernel (PyTorch 2.14.1's group
    norm of a channels-last map, contiguous on meta), the CPU's layout is the one to carry."""
    expected = _Outputs()
    with expected:
        call()
    answered = _Outputs()
    with Recorder(), answered:
        call()
    assert [func for func, _ in answered.seen] == [func for func, _ in expected.seen]
    ops = zip(expected.seen, answered.seen, expected.layouts, expected.calls, strict=True)
    for (func, want), (_, got), inputs, (args, kwargs) in ops:
        for index, (w, g) in enumerate(zip(_tensors_of(want), _tensors_of(got), strict=True)):
            assert (g.shape, g.dtype) == (w.shape, w.dtype), (func, inputs)
            if not check_significant_strides(g, w, only_cuda=False)[0]:
                cpus = _tensors_of(_on_cpu_stand_ins(func, args, kwargs))[index]
                assert check_significant_strides(g, cpus, only_cuda=False)[0], (func, inputs, g.stride(), w.stride())


def _on_cpu_stand_ins(func, args, kwargs):
    """`func`'s output on CPU tensors of the arguments' shapes, strides and dtypes (zeros)."""

    def stand_in(tensor):
        return torch.zeros_like(tensor, device="cpu") if tensor.device.type == "meta" else tensor

    return func(*tree_map_only(torch.Tensor, stand_in, args), **tree_map_only(torch.Tensor, stand_in, kwargs))


def check_laid_out_as_the_cpu(call) -> None:
    """`call(device)` on meta under the recorder makes outputs of the shapes and significant
    strides of its outputs on the CPU (None where the CPU's is None)."""
    cpu = call("cpu")
    with Recorder():
        answered = call("meta")
    for got, want in zip(_tensors_or_none(answered), _tensors_or_none(cpu), strict=True):
        assert (got is None) == (want is None)
        if want is not None:
            assert got.shape == want.shape
            assert check_significant_strides(got, want, only_cuda=False)[0], (got.stride(), want.stride())


def _tensors_or_none(value) -> list:
    return [value] if isinstance(value, torch.Tensor) else list(value)
