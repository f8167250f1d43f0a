"""A bound on the loop iterations of a TorchScript file's forward (`counted_loop_steps`).

The bound on a model file's operators (`Recorder`'s `most_ops`) stops a loop that runs tensor
operators, but a loop of plain numbers (`while i < 10**10: i += 1`) runs in TorchScript's
interpreter without a single operator reaching the dispatcher: it ran for hours, and nothing
in Python can stop the interpreter from outside (it holds the GIL). So the trace's copy of
the module counts its own iterations: `counted_loop_steps` puts a call of `archprof::loop_step`
at the start of every loop body of every method of every module (of a method that calls a
free function, once that function is inlined into it; a method another calls brings its
steps along where the interpreter inlines it, at the first call), and the op's kernel
counts the steps and refuses the one past the bound, or one taken once the forward has run
for `MOST_LOOP_SECONDS` (a loop of few iterations, each long: what each iteration's lists
and strings may take is bounded by `archprof.native_memory`, not the time it takes).

The kernel is registered for the `PythonTLSSnapshot` key, the highest of a dispatch mode's, so
that the trace's recorder never sees the op as one of the model's; and for
`CompositeExplicitAutograd` where no mode runs. Its schema's alias analysis is conservative:
an op without outputs is otherwise taken for one without effects and removed by the
interpreter's dead-code pass.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from archprof.tracing.recorder import BeyondBounds, Recorder
from archprof.tracing.script_stacks import LOOP_STEP

# The longest a file's forward may go on running its loops, from the trace's start: a loop of
# 300,000 iterations, within the bound on them, each `str()` of a list of ten million numbers
# (0.65 s, within the bound on memory) would run for two days. A network's forward on meta
# takes well under a second; one traced for real, its tensors bounded (`cpu_allocation`), seconds.
MOST_LOOP_SECONDS = 300


class _Steps:
    """The steps counted for one trace's recorder, which holds the refusal as the reason its
    forward failed (TorchScript's interpreter hands on a bare RuntimeError)."""

    def __init__(self, recorder: Recorder, most: int) -> None:
        self.recorder, self.most, self.taken = recorder, most, 0
        self.deadline = time.monotonic() + MOST_LOOP_SECONDS

    def step(self) -> None:
        self.taken += 1
        if self.taken > self.most:
            self._refuse(f"runs more than {self.most:,} loop iterations, more than any network's")
        if time.monotonic() > self.deadline:
            self._refuse(f"has run its loops for more than {MOST_LOOP_SECONDS:,} s, longer than any network's")

    def _refuse(self, done: str) -> None:
        refusal = BeyondBounds(f"the forward {done}: a loop that does not end?")
        self.recorder.failure = refusal
        raise refusal


_counting: _Steps | None = None  # the trace counting now, if any


def _loop_step() -> None:
    if _counting is not None:  # a copy's forward run outside its trace counts nothing
        _counting.step()


@functools.cache
def _step_library() -> torch.library.Library:
    """`archprof::loop_step`, defined once per process (the library object keeps it)."""
    library = torch.library.Library("archprof", "DEF")
    library.define("loop_step() -> ()", alias_analysis="CONSERVATIVE")
    for key in ("PythonTLSSnapshot", "CompositeExplicitAutograd"):
        library.impl("loop_step", _loop_step, key)
    return library


@contextmanager
def counted_loop_steps(model: torch.jit.ScriptModule, recorder: Recorder, most_ops: int) -> Iterator[None]:
    """While active, the loop iterations of `model`'s forward count, over all its loops, the one
    past twice `most_ops` (the recorder's bound on operators) refused (BeyondBounds), and any
    once `MOST_LOOP_SECONDS` have passed: a loop that runs an operator each time round meets
    the bound on operators first, whose error says more. A network's loops (over its layers,
    the steps of a sequence) run thousands.
    `model` must be a copy not yet run (`trace._script_copy`'s): its methods' graphs are
    changed, and the interpreter reads a graph at its first call."""
    global _counting
    _step_library()
    for graph in _graphs_run(model):
        _count_steps_in(graph)
    _counting = _Steps(recorder, 2 * most_ops)
    try:
        yield
    finally:
        _counting = None


def _graphs_run(model: torch.jit.ScriptModule) -> Iterator[torch._C.Graph]:
    """The graphs `model`'s forward may run: every method's of every module (the interpreter
    inlines a method's graph into its caller's at the first call, where its loops come with
    it), each that calls a free function with that function inlined, as a free function's
    graph is not reached from Python; the others left as they are (the interpreter inlines
    them at the first call). Each graph's loops are found by torch (`findAllNodes`): a walk
    over every node in Python took 130 ms of a scripted ResNet-50's analysis of 920."""
    for module in model.modules():
        for name in module._c._method_names():
            graph = module._c._get_method(name).graph
            if graph.findAllNodes("prim::CallFunction"):
                torch._C._jit_pass_inline(graph)
            yield graph


def _count_steps_in(graph: torch._C.Graph) -> None:
    """A step at the start of every loop body of `graph`, nested ones and those of its forked
    subgraphs too; none added where one is already (a method inlined into another)."""
    for loop in graph.findAllNodes("prim::Loop"):  # in every block, however deep
        body = next(loop.blocks())
        first = next(iter(body.nodes()), body.returnNode())
        if first.kind() != LOOP_STEP:
            graph.create(LOOP_STEP, [], 0).insertBefore(first)
    for fork in graph.findAllNodes("prim::fork"):  # a forked call: a subgraph that calls its function
        subgraph = fork.g("Subgraph")
        torch._C._jit_pass_inline(subgraph)
        _count_steps_in(subgraph)
