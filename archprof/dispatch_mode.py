"""The base of archprof's dispatch modes: PyTorch's TorchDispatchMode without dynamo's wrapper."""

from __future__ import annotations

from torch.utils._python_dispatch import TorchDispatchMode


class DispatchMode(TorchDispatchMode):
    """A TorchDispatchMode whose `__torch_dispatch__` torch leaves as it is. By default torch
    wraps a subclass's in `dynamo.disable`, whose first call imports torch._dynamo: 1.1 to 1.8 s
    of the CLI's start-up for nothing, as no compilation ever happens inside archprof's modes."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False
