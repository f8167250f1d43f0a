"""torch.profiler as the oracle of memory peaks: every CPU allocation and free during a real
run, in time order, and the peak of the bytes held (shared by the memory tests)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils._pytree import tree_leaves


def allocation_peaks(run: Callable[[], None]) -> tuple[int, int]:
    """(peak of all CPU allocations, peak of those that outlive the outermost aten op that
    made them) while `run()` runs under torch.profiler(profile_memory=True), counted from
    what was held when it started: `archprof.measure.peak_memory.cpu_allocation_peaks`, the
    measurement `archprof profile` and `memory --measure` make on the CPU. It reads the CPU
    allocator's events, nothing of the analysis: an oracle for the predictions.

    An allocation freed before the outermost aten op that made it returns is that op's
    workspace: oneDNN convolutions compute into an output-sized buffer in a blocked layout
    and reorder their weights on every call (a weight-sized buffer), BatchNorm frees the
    per-channel statistics it computes. The graph has no workspace, so the second figure is
    the one to compare; the first is bounded by it plus the largest workspace."""
    from archprof.measure.peak_memory import cpu_allocation_peaks

    return cpu_allocation_peaks(run)


def profiled_peaks(model: nn.Module, x: torch.Tensor, training: bool = False) -> tuple[int, int]:
    """`allocation_peaks` of one forward (after a warm-up one: one-time allocations): in
    inference, or, with `training`, as a training step's forward runs, in train mode with
    autograd saving what its backward pass would read."""
    model.train(training)

    def forward():
        output = model(x)
        del output

    with torch.set_grad_enabled(training):
        forward()
        return allocation_peaks(forward)


def profiled_training_peak_operator(model: nn.Module, x: torch.Tensor) -> tuple[str, int]:
    """The operator of a real CPU training step (as `profiled_training_peaks` runs it) at which
    the allocations that outlive the operator that made them peak, as (its name without the
    namespace, its count among the step's outermost operators of that name: 1 for the first),
    from the allocator's events in torch.profiler's event tree."""
    from archprof.measure.peak_memory import cpu_allocations

    step = _training_step(model, x)
    step()
    model.zero_grad(set_to_none=True)
    allocations = [a for a in cpu_allocations(step) if not a.workspace]
    model.zero_grad(set_to_none=True)
    live, peak, at = 0, 0, None
    for allocation in allocations:
        live += allocation.size
        if live > peak:
            peak, at = live, allocation.operator
    operators = {}  # the outermost operators, in the order they started
    for allocation in allocations:
        if allocation.operator is not None:
            operators.setdefault(id(allocation.operator), allocation.operator)
    named_alike = [op for op in sorted(operators.values(), key=lambda op: op.start_time_ns) if op.name == at.name]
    return at.name.removeprefix("aten::"), 1 + [id(op) for op in named_alike].index(id(at))


def _training_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """One training step's forward and backward, the backward from gradients of ones on the
    floating outputs, in train mode; the caller holds `x` throughout and the outputs until the
    backward has run."""
    model.train()

    def step():
        output = model(x)
        roots = [t for t in tree_leaves(output) if isinstance(t, torch.Tensor) and t.requires_grad]
        torch.autograd.backward(roots, [torch.ones_like(t) for t in roots])
        del output, roots

    return step


def profiled_training_peaks(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """`allocation_peaks` of one training step's forward and backward, the backward from
    gradients of ones on the floating outputs (as archprof traces it), with every `.grad`
    None before it (zero_grad's default) and counted among the allocations; after a warm-up
    step. The caller holds `x` throughout and the outputs until the backward has run."""
    step = _training_step(model, x)
    step()
    model.zero_grad(set_to_none=True)
    peaks = allocation_peaks(step)
    model.zero_grad(set_to_none=True)
    return peaks
