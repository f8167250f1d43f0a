"""A checkpointed region's recomputation in the backward pass, as the training recorder
records it (`Replay`), and which forward op a recomputed op may run again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from archprof.graph import OpNode


class Recomputations:
    """The checkpointed blocks being run again now: their ops are recomputed ones even where
    grad is off, inside an autograd.Function's forward (a custom operator's with an autograd
    formula)."""

    def __init__(self) -> None:
        self._running = 0

    @property
    def running(self) -> bool:
        return self._running > 0

    def noted(self, recompute: Callable) -> Callable:
        """`recompute` (a non-reentrant block's frame's `recompute_fn`, a reentrant block's
        function), noted while it runs. A reentrant block's first run, in the forward, is
        noted too, where nothing asks."""

        def recomputing(*args):
            self._running += 1
            try:
                return recompute(*args)
            finally:
                self._running -= 1

        return recomputing


@dataclass
class Replay:
    """One recomputation of a checkpointed region, as recorded so far."""

    node: object  # the autograd node that asked for it
    starts: list[int]  # the forward ops its ops may run again from, each fitting them all
    start: int  # the one they are attributed by: the latest
    ops: list[int]  # its ops (indices in `TrainingRecorder.backward_ops`)
    # (its op, the metadata of an autograd node that op made, tagged by it): not the node,
    # which would keep what it saved, and a nested block's frame with its random-number
    # state, alive past the recomputation, as a real step does not
    tags: list[tuple[int, dict]]


def replay_key(op: OpNode) -> tuple:
    """What a recomputed op shares with the forward op it runs again: the operator and the
    shapes it makes."""
    return op.op, tuple(t.shape for t in op.outputs)


def may_run_again(forward: OpNode, key: tuple, path: str | None) -> bool:
    """Whether a recomputed op (its `replay_key`; `path`: the module call running it, None
    outside any) may run `forward` again."""
    if replay_key(forward) != key:
        return False
    return path is None or (forward.module is not None and forward.module.path == path)
