"""The call stacks of a TorchScript forward's operators, as torch's profiler records them: an
empty profiler range for each op the recorder records (`mark`), and the stacks of those ranges
and of the operators, in the order they ran (`stacks_of_marks`).

The legacy profiler is used, not `torch.profiler.profile`: with stacks, the latter also
traces every Python call (twenty thousand events for a ResNet-18 forward, ten times the
trace's time); the legacy one records the interpreter's stack alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

try:  # torch's private profiler API, as of torch 2.13
    from torch._C._profiler import ProfilerConfig, ProfilerState, _ExperimentalConfig, _RecordFunctionFast
except ImportError:  # a torch without it: no op has a stack (`stacks_of_marks`), no mark is made
    _RecordFunctionFast = None

_MARK = "archprof.op."
# The op that counts a loop's iterations (`archprof.tracing.script_loops`), archprof's, not the model's.
LOOP_STEP = "archprof::loop_step"


def mark(index: int) -> None:
    """An empty profiler range for the op recorded as `index`, which holds its call stack."""
    if _RecordFunctionFast is not None:
        with _RecordFunctionFast(_MARK + str(index)):
            pass


@contextmanager
def stacks_of_marks() -> Iterator[list[tuple[int | None, list[str]]]]:
    """While active, the profiler records the interpreter's call stack of each operator and
    each `mark`; on exit the list yielded holds them in the order they ran: (the op's index
    for a mark, else None; its frames, innermost first). Operators that never reach the
    recorder are there too: a Dropout's in eval (`aten::dropout`, which hands back its input),
    which says that the module was called. Only marks where they ran on several threads
    (`torch.jit.fork`), whose events have no order between them. Empty where a profiler was
    running already (the caller's own: it is left alone) or will not start: no op has a stack."""
    events: list[tuple[int | None, list[str]]] = []
    try:
        if _RecordFunctionFast is None:
            raise RuntimeError("this torch has no profiler API archprof reads stacks with")
        if torch._C._autograd._profiler_enabled():
            raise RuntimeError("a profiler is running already")
        # state, input shapes, memory, with stacks, FLOPs, modules, experimental options
        config = ProfilerConfig(ProfilerState.CPU, False, False, True, False, False, _ExperimentalConfig())
        torch._C._autograd._enable_profiler_legacy(config)
    except RuntimeError:  # that, or a torch whose private profiler API differs: no stacks
        yield events
        return
    try:
        yield events
    finally:
        threads = [
            [e for e in thread if e.kind() == "push"] for thread in torch._C._autograd._disable_profiler_legacy()
        ]
        marked = [thread for thread in threads if any(e.name().startswith(_MARK) for e in thread)]
        for thread in marked:
            for event in thread:
                name = event.name()
                if name.startswith(_MARK):
                    events.append((int(name[len(_MARK) :]), event.stack()))
                elif len(marked) == 1 and name != LOOP_STEP:
                    events.append((None, event.stack()))
        if len(marked) > 1:
            events.sort(key=lambda event: event[0])
