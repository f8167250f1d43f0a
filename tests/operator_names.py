"""An oracle of which aten operators run: a dispatch mode that notes each one's name and the
shapes of its outputs."""

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class OperatorNames(TorchDispatchMode):
    """The aten operators called while active, in order, by the trace's names ("aten.clone"),
    and with the shapes of their tensor outputs (`ops`: ("aten.clone", ((2, 3),)))."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.ops: list[tuple[str, tuple[tuple[int, ...], ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        self.names.append(name)
        output = func(*args, **(kwargs or {}))
        self.ops.append((name, tuple(tuple(t.shape) for t in tree_leaves(output) if isinstance(t, torch.Tensor))))
        return output
