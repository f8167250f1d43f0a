"""The memory of the model's parameters and buffers, as a trace registered them: which storage
a tensor made before the forward shares with one of them (a plain attribute that views a
parameter, `self.scale = self.table.detach()`), so that its bytes are the parameter's, not a
tensor of its own that the model holds beside it."""

from __future__ import annotations

import torch


class StateMemory:
    """The parameters and buffers registered so far, each with its storage id in the trace,
    indexed by the memory they hold at the first question (most traces ask none: a model
    without plain tensor attributes)."""

    def __init__(self) -> None:
        self._registered: list[tuple[torch.Tensor, int]] = []
        self._by_memory: dict[int, int] = {}  # `_memory_of` -> storage id
        self._indexed = 0  # how many of `_registered` are in `_by_memory`

    def add(self, tensor: torch.Tensor, storage: int) -> None:
        self._registered.append((tensor, storage))

    @property
    def storages(self) -> frozenset[int]:
        return frozenset(storage for _, storage in self._registered)

    def storage_viewed_by(self, tensor: torch.Tensor) -> int | None:
        """The storage id of the parameter or buffer whose memory `tensor` views, or None."""
        for held, storage in self._registered[self._indexed :]:
            memory = _memory_of(held)
            if memory is not None:
                self._by_memory.setdefault(memory, storage)
        self._indexed = len(self._registered)
        memory = _memory_of(tensor)
        return None if memory is None else self._by_memory.get(memory)


def _memory_of(tensor: torch.Tensor) -> int | None:
    """What tells the memory a tensor views from any other's, on meta too, where every data
    pointer is 0: its storage's own address (torch's `StorageWeakRef` keys on it); None for a
    tensor without one (a sparse or wrapper tensor)."""
    try:
        return tensor.untyped_storage()._cdata
    except (RuntimeError, NotImplementedError, TypeError):
        return None
