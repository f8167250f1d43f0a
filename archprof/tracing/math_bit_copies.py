"""The copies of conjugate (or negative) views that PyTorch's math-bit fallback makes inside
an operator's call, told from the user's own copies, for the recorder to note as that
operator's workspace (`MathBitCopies`)."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from archprof.graph import OpNode


class MathBitCopies:
    """The copy of a conjugate (or negative) view that PyTorch's math-bit fallback makes for
    an operator that reads it (`grad.conj() * result.sgn()`, polar's gradient) is that
    operator's workspace (`OpNode.workspace`): the fallback resolves the view inside the
    operator's call and frees the copy as it returns, where the trace sees a `clone` of its
    own. Known as a clone that drops the view's bit, read by the op recorded next, and not
    the user's own copy (`x.conj().resolve_conj()`, read at once and maybe kept): one a call
    of the user's made (`users_copy`), or, made under another name (`torch.ops.aten.clone`),
    one with an autograd node, which the fallback's never has (it runs below autograd). A
    user's copy that needs no grad, made under another name, is taken for the fallback's."""

    def __init__(self) -> None:
        # A conjugate view's copy, for the next op: its storage and a weak reference to it.
        self.waiting: tuple[int, weakref.ref] | None = None
        self._users_copies = 0  # the user's copies running (`users_copy`)

    def workspace_after(self, op: OpNode, tensors: list[torch.Tensor], out) -> int | None:
        """The storage of the fallback's copy `op` (the op recorded last, reading `tensors`
        and returning `out`) read, to note as its workspace; None where it read none. Asked
        where a copy is `waiting` or `op` is a clone (which may be the next one's copy)."""
        resolved, self.waiting = self.waiting, None
        workspace = None
        if resolved is not None and any(t.storage == resolved[0] for t in op.inputs):
            copy = resolved[1]()
            if copy is None or copy.grad_fn is None:
                workspace = resolved[0]
        if op.op == "aten.clone" and not self._users_copies and _drops_a_math_bit(tensors[0], out):
            self.waiting = (op.outputs[0].storage, weakref.ref(out))
        return workspace

    @contextmanager
    def users_copy(self) -> Iterator[None]:
        """Around a call of the user's that copies a tensor (`kernels._USERS_COPIES`: `resolve_conj`,
        `clone`): its copy of a conjugate or negative view is the user's, however it is read, not
        the math-bit fallback's."""
        self._users_copies += 1
        try:
            yield
        finally:
            self._users_copies -= 1


def _drops_a_math_bit(source: torch.Tensor, copy: torch.Tensor) -> bool:
    return (source.is_conj() and not copy.is_conj()) or (source.is_neg() and not copy.is_neg())
