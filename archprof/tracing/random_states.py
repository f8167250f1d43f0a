"""The CPU random-number states a trace's forward and backward take (`torch.get_rng_state`:
checkpointing keeps one per block, in inference too, to replay the block with the forward's
draws), each noted with when it was taken, when it died and its bytes
(`EngineNotes.random_states`, which the memory passes hold between those steps)."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch


class RandomStates:
    """`noted`: (steps run when taken, steps run when it died or None, its bytes), in the
    order taken."""

    def __init__(self) -> None:
        self.noted: list[tuple[int, int | None, int]] = []
        self._steps_run: Callable[[], int] | None = None  # while noting: the recorder's count
        self._watching: list[weakref.finalize] = []
        # Per non-reentrant block's recomputation running now, the watches of the states taken in it.
        self._replays: list[list[weakref.finalize]] = []

    @contextmanager
    def noting(self, steps_run: Callable[[], int]) -> Iterator[None]:
        """While active, each state the tracing thread takes is noted (another thread's call
        is not the trace's: the name is the process's), `steps_run` counting the recorded
        ops, the forward's and the backward's. At the end, a state still alive is held to
        the end (its death, after the trace, is not noted)."""
        self._steps_run = steps_run  # only while active: the recorder holds this object
        take_state = torch.get_rng_state
        tracing_thread = threading.get_ident()

        def noted_state() -> torch.Tensor:
            state = take_state()
            if threading.get_ident() == tracing_thread:
                self.noted.append((self._steps_run(), None, state.nbytes))
                watch = weakref.finalize(state, self._died, len(self.noted) - 1)
                self._watching.append(watch)
                if self._replays:
                    self._replays[-1].append(watch)
            return state

        torch.get_rng_state = noted_state
        try:
            yield
        finally:
            torch.get_rng_state = take_state
            self.held_to_the_end()
            self._steps_run = None

    def held_to_the_end(self) -> None:
        """The states alive now outlive the trace: their deaths are not noted."""
        for watch in self._watching:
            watch.detach()

    def let_go_after(self, recompute: Callable) -> Callable:
        """`recompute`, a non-reentrant block's replay, after which the states taken in it are
        let go of at the latest. A real step lets go of what the replay made when it ends
        (the block's frame keeps the tensors it recomputed detached), and with it a nested
        block's frame and its state; the trace keeps every tensor the backward pass makes
        (`TrainingRecorder.run_backward`), whose autograd nodes would keep them."""

        def replayed(*args):
            self._replays.append([])
            try:
                return recompute(*args)
            finally:
                for watch in self._replays.pop():
                    watch()  # its death now, where it is still alive

        return replayed

    def _died(self, index: int) -> None:
        taken, _, nbytes = self.noted[index]
        self.noted[index] = (taken, self._steps_run(), nbytes)
