"""Memory measured on a real run, beside the analysis's prediction: the peak of one
inference forward (`archprof profile`'s cross-check) and of one training step
(`archprof memory --measure`).

On CUDA, the allocator's own counter (`torch.cuda.max_memory_allocated`), kernel workspace
included. The CPU keeps no such counter; its allocator's events do, as torch.profiler
records them (`profile_memory=True`): every allocation and free, in order, whose running
sum at its highest is the most a call held beyond what was held before it (the model's
parameters and buffers, the inputs, an optimizer's state, a plain tensor attribute the
forward reads). There an allocation can be told apart from an operator's workspace, which
the analysis has none of: one freed before the outermost aten operator that made it returns
(oneDNN convolutions compute into an output-sized buffer in a blocked layout and reorder
their weights on every call; BatchNorm frees the statistics it computes). Both peaks are
compared without workspace.
A block allocated before the recording started is freed unseen: a training step's old
gradients, dropped by `zero_grad` as it begins, are therefore not counted as held. (The
profiler does report such a free where an earlier recording in the process saw a block at
that address; `cpu_allocation_peaks` leaves those out.)
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from archprof.analysis import Analysis, analysis
from archprof.graph import Graph
from archprof.load import InputsLike, LoadedModel
from archprof.measure.device import ForwardInputs, device_name, drawn_as_traced, random_inputs, real_run_errors
from archprof.meta import has_uninitialised, is_uninitialised
from archprof.optimizers import optimizer_model
from archprof.passes.liveness import held_from_before
from archprof.random_state import random_state_kept
from archprof.structure import tensors_in
from archprof.tracing.model_state import in_traced_mode


@dataclass(frozen=True)
class Peak:
    """The most one call held, in bytes. `bytes`: on the CPU, operators' workspace left out
    (the figure the analysis is compared with); on CUDA, the allocator's counter, workspace
    included. `with_workspace`: on the CPU, every allocation counted; None on CUDA, whose
    counter cannot tell workspace apart. Where PyTorch runs one operator as several that the
    analysis records apart (cdist's copies of its operands and their distances; not the
    composites it notes as one CPU operator, `kernels.one_cpu_operator.ONE_CPU_OPERATOR`: matmul's, einsum's
    and tensordot's copies, attention's math), the allocator's events count their buffers as
    the outer operator's workspace: the prediction then lies between the two figures."""

    bytes: int
    with_workspace: int | None = None


def measured_text(peak: Peak) -> str:
    """The peak in a line of text: "measured 61,712,168 B (65,881,896 B with workspace)"."""
    extra = f" ({peak.with_workspace:,} B with workspace)" if peak.with_workspace is not None else ""
    return f"measured {peak.bytes:,} B{extra}"


@dataclass(frozen=True)
class Measured:
    """The peaks of one inference forward and one training step (its second: the
    optimizer's state already exists, as it does from then on), the model's own tensors and
    the inputs included."""

    device: str
    inference: Peak
    training: Peak | None


def measured_peak(run: Callable[[], Any], device: torch.device, before: int, held: int) -> Peak | None:
    """The peak of one call of `run`. CUDA: max_memory_allocated, less `before` (what was
    allocated before the model was built). CPU: `held` (what is held before the call) plus
    the most the call allocated beyond it, with and without operators' workspace. Another
    device: None."""
    if device.type == "cuda":
        return Peak(peak_bytes(device, before, run))
    if device.type == "cpu":
        with_workspace, without = cpu_allocation_peaks(run)
        return Peak(held + without, held + with_workspace)
    return None


def allocated_before_a_run(device: torch.device, training: bool = False) -> int:
    """What the caching allocator holds on `device` before a measured run (0 off CUDA), once
    cuBLAS has its workspace there: PyTorch allocates one per handle and stream at the first
    matrix product (32 MiB on an H100 or H200), from the caching allocator, and never frees
    it, so a run whose model is the first to multiply (its first Linear) would count it in its
    peak, and one after another product (the device's ceilings measured) would not. A
    training run's backward runs on autograd's own device thread, whose handle is its own:
    a product's backward too."""
    if device.type != "cuda":
        return 0
    with torch.enable_grad():
        matrix = torch.ones(8, 8, device=device, requires_grad=training)
        product = matrix @ matrix
        if training:
            product.sum().backward()
    del matrix, product
    torch.cuda.synchronize(device)
    return torch.cuda.memory_allocated(device)


def measure_memory(
    analysed: Analysis, dtype: torch.dtype | None = None, training: bool = True, optimizer: str = "sgd"
) -> Measured:
    """Build the analysed model for real, on the GPU where there is one and else on the CPU
    (a module the caller gave is copied, never changed), run it on random inputs of the
    analysed shapes, dtypes and keywords, and read its peak: of a training step, the first
    whose update is the one modelled (`OptimizerModel.steady_from`: the second, RAdam's
    sixth). The caller's random generators are left as they were."""
    steps_before = optimizer_model(optimizer).steady_from - 1
    name = analysed.loaded.name
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    before = allocated_before_a_run(device, training)
    # Random weights and inputs (drawn as the trace drew them where it ran the forward), dropout in the step.
    with random_state_kept(device, seed=drawn_as_traced(analysed)):
        module = analysed.loaded.materialize(device, dtype, copy_module=True)
        inputs = random_inputs(analysed, device)
        arguments = (inputs.args, inputs.kwargs)
        with real_run_errors(name, device, analysed.batch):
            if has_uninitialised(module):
                _inference_step(module, inputs)  # lazy layers make their tensors: measure the calls after
            inference = measured_peak(
                lambda: _inference_step(module, inputs), device, before, held_bytes(module, analysed.graph, arguments)
            )
        trained = None
        if training:
            with real_run_errors(name, device, analysed.batch, run="training step"):
                step, state = _training_step(module, inputs, optimizer)
                for _ in range(steps_before):
                    step()  # the first creates the optimizer's state; RAdam's 6th on rectifies its variance
                held = held_bytes(module, analysed.graph, arguments, state())
                trained = measured_peak(step, device, before, held)
    return Measured(device_name(device), inference, trained)


def held_bytes(module: torch.nn.Module, graph: Graph, *held: Any) -> int:
    """The bytes of the module's parameters and buffers and of the tensors in `held` (inputs,
    an optimizer's state), each tensor once; a lazy layer's, not made yet, hold none. And of
    the tensors the trace (`graph`) saw the forward read that the model made before it
    (`liveness.held_from_before`: a plain tensor attribute), as the prediction holds them."""
    tensors = {id(t): t for t in (*module.parameters(), *module.buffers(), *tensors_in(list(held)))}
    own = sum(t.numel() * t.element_size() for t in tensors.values() if not is_uninitialised(t))
    return own + sum(t.nbytes for t in held_from_before(graph))


def peak_bytes(device: torch.device, before: int, run: Callable[[], Any]) -> int:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def cpu_allocation_peaks(run: Callable[[], Any]) -> tuple[int, int]:
    """(the highest running sum of the CPU allocator's allocations and frees during `run`,
    the same of those that outlive the outermost aten operator that made them: without
    workspace), from the profiler's event tree (`cpu_allocations`)."""
    allocations = cpu_allocations(run)
    lasting = (allocation.size for allocation in allocations if not allocation.workspace)
    return _highest_running_sum(allocation.size for allocation in allocations), _highest_running_sum(lasting)


@dataclass(frozen=True, slots=True)
class Allocation:
    """One of the CPU allocator's events: an allocation (`size` > 0) or a free (< 0)."""

    size: int
    operator: Any  # the outermost aten operator it happened in (a profiler event node), or None
    workspace: bool  # allocated and freed inside that one operator


def cpu_allocations(run: Callable[[], Any]) -> list[Allocation]:
    """The CPU allocator's allocations and frees during `run`, in time order, from the
    profiler's event tree. In a backward pass the operators run inside the autograd engine's
    calls, which free the gradients they pass on: those are no operator's workspace.

    A free counts only where the recording saw its block allocated. The profiler reports
    the free of an older block too where an earlier recording in the process saw an
    allocation at its address (malloc reuses addresses), with that allocation's size: a
    training step's old gradients, freed by `zero_grad` as it begins, read so from 0 to
    their whole size below the step's true peak, by the process's history."""
    from torch._C._profiler import _EventType

    recorded = _recorded(run)
    events = []  # (time, bytes, address, the outermost aten operator it ran in)

    def walk(nodes, top):
        for node in nodes:
            if node.tag == _EventType.Allocation:
                fields = node.extra_fields
                if fields.device.type == "cpu":
                    events.append((node.start_time_ns, fields.alloc_size, fields.ptr, top))
            walk(node.children, top if top is not None or not node.name.startswith("aten::") else node)

    walk(recorded.profiler.kineto_results.experimental_event_tree(), None)
    events.sort(key=lambda event: event[0])
    made_in: dict[int, tuple[Any, int]] = {}
    workspace: set[int] = set()
    counted = []  # (bytes, operator)
    for _, size, address, top in events:
        if size > 0:
            made_in[address] = (top, len(counted))
        elif address in made_in:
            made_top, made = made_in.pop(address)
            if top is not None and made_top is top:
                workspace.update((made, len(counted)))
        else:
            continue  # a block allocated before the recording
        counted.append((size, top))
    return [Allocation(size, top, index in workspace) for index, (size, top) in enumerate(counted)]


def _highest_running_sum(sizes: Iterable[int]) -> int:
    """The most held at once: the highest running sum of allocations (positive sizes) and
    frees (negative), from nothing."""
    live = peak = 0
    for size in sizes:
        live += size
        peak = max(peak, live)
    return peak


def _recorded(run: Callable[[], Any]):
    """`run` under torch.profiler, recording the CPU allocator's events."""
    from torch.profiler import ProfilerActivity, profile

    with _native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as recorded:
        run()
    return recorded


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """The profiler's native code writes to the process's stderr (file descriptor 2): its
    start and stop ("USDT: ... profiler_start"), and a warning for each block freed that was
    allocated before it started. Not lines for the user."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _inference_step(module: torch.nn.Module, inputs: ForwardInputs) -> None:
    """A forward in the mode the analysis traced, each module's mode as it was after it (the
    training step that follows starts from the modes the model came with)."""
    modes = [(m, m.training) for m in module.modules()]
    in_traced_mode(module, training=False)
    try:
        with torch.no_grad():
            inputs(module)
    finally:
        for m, training in modes:
            m.training = training


def _training_step(
    module: torch.nn.Module, inputs: ForwardInputs, optimizer: str
) -> tuple[Callable[[], None], Callable[[], list]]:
    """One training step, as archprof traces it: the forward, the backward pass from
    gradients of ones on the outputs that need one (floating or complex) (none: no backward pass), the
    optimizer's update of the trainable parameters (none: no update); and what the
    optimizer's state holds (its tensors) when asked."""
    in_traced_mode(module, training=True)
    trainable = [p for p in module.parameters() if p.requires_grad]
    opt = optimizer_model(optimizer).build(trainable) if trainable else None

    def step() -> None:
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        outputs = tensors_in(inputs(module))  # all held through the step, as the caller of a forward holds them
        roots = [t for t in outputs if t.requires_grad]  # floating or complex: no other dtype can require grad
        if roots:
            torch.autograd.backward(roots, [torch.ones_like(t) for t in roots])
        if opt is not None:
            opt.step()

    def state() -> list:
        return [value for values in opt.state.values() for value in values.values()] if opt is not None else []

    return step, state


@dataclass(frozen=True)
class MeasuredStep:
    """One step's predicted peak beside its measured one."""

    what: str  # "Inference peak", "Training step (sgd)"
    predicted_bytes: int
    measured: Peak

    @property
    def ratio_text(self) -> str:
        """Measured over predicted, "0.937" ("-" where nothing was predicted)."""
        return f"{self.measured.bytes / self.predicted_bytes:.3f}" if self.predicted_bytes else "-"

    def text(self, device: str) -> str:
        """The line of text: "Inference peak: predicted 288,552 B, measured 288,552 B (...) on <device>"."""
        return f"{self.what}: predicted {self.predicted_bytes:,} B, {measured_text(self.measured)} on {device}"


@dataclass(frozen=True)
class MeasuredMemory:
    """`memory --measure`'s figures: the device, and each step's peak predicted and measured."""

    device: str
    steps: tuple[MeasuredStep, ...]

    @property
    def with_workspace(self) -> bool:
        """Whether each step's peak was read with operators' workspace too (the CPU's)."""
        return all(step.measured.with_workspace is not None for step in self.steps)

    @property
    def headings(self) -> tuple[str, ...]:
        """The columns of a table of the steps, after the step's name: its `figures`, then the ratio."""
        return ("Predicted", "Measured", *(("With workspace",) if self.with_workspace else ()), "Measured / predicted")

    def figures(self, step: MeasuredStep) -> tuple[int, ...]:
        """A step's bytes in the table's columns: predicted, measured, and with workspace where read."""
        peak = step.measured
        return (step.predicted_bytes, peak.bytes, *((peak.with_workspace,) if self.with_workspace else ()))

    @property
    def note(self) -> str:
        """What the figures are, for a table's caption."""
        if not self.with_workspace:
            return "Measured: the allocator's most held, kernel workspace included."
        return (
            "Measured: the allocator's most held, operators' workspace left out. An operator PyTorch runs as"
            " several (cdist's copies and distances) may be several to the analysis: there the prediction lies"
            " between the two."
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "steps": [
                {
                    "what": step.what,
                    "predicted_bytes": step.predicted_bytes,
                    "measured_bytes": step.measured.bytes,
                    "measured_with_workspace_bytes": step.measured.with_workspace,
                }
                for step in self.steps
            ],
        }


def predicted_and_measured(
    loaded: LoadedModel, inputs: InputsLike | None, batch: int, dtype: torch.dtype | None, optimizer: str
) -> MeasuredMemory:
    """The inference peak and one training step with `optimizer`, each predicted beside
    measured: both analyses and both measurements."""
    inference = analysis(loaded, None, batch, dtype, inputs=inputs, optimizer=optimizer)
    training = analysis(loaded, None, batch, dtype, training=True, inputs=inputs, optimizer=optimizer)
    measured = measure_memory(training, dtype, training=True, optimizer=optimizer)
    steps = (
        MeasuredStep("Inference peak", inference.report.totals.peak_memory_bytes, measured.inference),
        MeasuredStep(f"Training step ({optimizer})", training.report.totals.training_peak_bytes, measured.training),
    )
    return MeasuredMemory(measured.device, steps)
