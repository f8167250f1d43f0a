"""Where a traced forward's raise left its module calls: the part of the recorder that
closes a call a raise ended, and finds the call an error was raised in (`CallsRaisedIn`)."""

from __future__ import annotations

import contextlib
from typing import Any

from archprof.graph import ModuleCall, TensorMeta
from archprof.structure import tensors_in
from archprof.tracing.call_words import shapes_of

# The attribute an exception a module call raised is given: that call and its input shapes (`left_by_a_raise`).
_RAISED_IN = "_archprof_raised_in"


class CallsRaisedIn:
    """A base of `archprof.tracing.recorder.Recorder`, over its module calls running (`_stack`,
    each with its arguments), the outputs of those closed (`call_outputs`) and its `lookup`."""

    _stack: list[tuple[ModuleCall, Any]]
    call_outputs: dict[int, tuple[TensorMeta, ...]]

    def left_by_a_raise(self, exc: BaseException | None, output=None) -> None:
        """The module call running now ended by raising `exc`: closed, having returned nothing
        (or `output`, what its forward returned before a hook of its own raised), and noted on
        `exc` as where it was raised (its innermost call, the first to see it), for the error,
        should `exc` end the trace; a model that catches it goes on in its own call (and a
        recomputation that stops early, non-reentrant checkpointing's, in the backward pass).
        Noted on the exception, not kept here: its traceback holds the forward's frames and their
        tensors, which Python frees once the model has caught it."""
        call, args = self._stack.pop()
        if call.index >= 0:  # not a call a training step's recomputation ran again (`TrainingRecorder.enter`)
            self.call_outputs[call.index] = tuple(map(self.lookup, tensors_in(output)))
        if exc is not None and not hasattr(exc, _RAISED_IN):
            with contextlib.suppress(AttributeError, TypeError):  # an exception type that takes no attribute
                setattr(exc, _RAISED_IN, (call, shapes_of(args)))

    def _failed_in(self, exc: BaseException) -> tuple[ModuleCall, tuple] | None:
        """The innermost module call `exc` was raised in, with its input shapes; else the call
        running now (an exception the model's own code raised); None outside any."""
        raised_in = getattr(exc, _RAISED_IN, None)
        if raised_in is not None:
            return raised_in
        if not self._stack:
            return None
        call, args = self._stack[-1]
        return call, shapes_of(args)
