"""Memory measured on CUDA: `torch.cuda.max_memory_allocated` over one inference forward and
one training step, beside the analysis's prediction (`archprof memory --measure`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from archprof.analysis import Analysis, analysis
from archprof.errors import ArchprofError, first_line
from archprof.load import InputsLike, LoadedModel
from archprof.measure.device import ForwardInputs, random_inputs
from archprof.passes.memory import optimizer_state_copies
from archprof.structure import tensors_in
from archprof.trace import forward_exits_as_errors


@dataclass(frozen=True)
class Measured:
    """`torch.cuda.max_memory_allocated` during one inference forward and one training step
    (its second: the optimizer's state already exists, as it does from then on), counted
    from what was allocated before the model was built."""

    device: str
    inference_peak_bytes: int
    training_peak_bytes: int | None


def require_cuda() -> None:
    if not torch.cuda.is_available():
        raise ArchprofError("--measure needs a CUDA GPU, and torch sees none (torch.cuda.is_available() is False)")


def measure_cuda(
    analysed: Analysis, dtype: torch.dtype | None = None, training: bool = True, optimizer: str = "sgd"
) -> Measured:
    """Build the analysed model for real on the GPU (a module the caller gave is copied,
    never changed), run it on random inputs of the analysed shapes, dtypes and keywords,
    and read the allocator's peak."""
    require_cuda()
    optimizer_state_copies(optimizer)
    name = analysed.loaded.name
    device = torch.device("cuda")
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    module = analysed.loaded.materialize(device, dtype, copy_module=True)
    inputs = random_inputs(analysed, device)
    try:
        with forward_exits_as_errors(name):
            inference = peak_bytes(device, before, lambda: _inference_step(module, inputs))
            trained = None
            if training:
                step = _training_step(module, inputs, optimizer)
                step()  # the first step creates the optimizer's state
                trained = peak_bytes(device, before, step)
    except torch.cuda.OutOfMemoryError as exc:
        raise ArchprofError(
            f"the GPU ran out of memory measuring {name} at batch {analysed.batch}: {first_line(exc, bare=True)}"
        ) from None
    return Measured(torch.cuda.get_device_name(device), inference, trained)


def peak_bytes(device: torch.device, before: int, run: Callable[[], Any]) -> int:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def _inference_step(module: torch.nn.Module, inputs: ForwardInputs) -> None:
    module.eval()
    with torch.no_grad():
        inputs(module)


_OPTIMIZERS = {
    "sgd": lambda params: torch.optim.SGD(params, lr=1e-3),
    "momentum": lambda params: torch.optim.SGD(params, lr=1e-3, momentum=0.9),
    "adam": lambda params: torch.optim.Adam(params, lr=1e-3),
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-3),
}


def _training_step(module: torch.nn.Module, inputs: ForwardInputs, optimizer: str) -> Callable[[], None]:
    module.train()
    opt = _OPTIMIZERS[optimizer.lower()]([p for p in module.parameters() if p.requires_grad])

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = sum(t.float().sum() for t in tensors_in(inputs(module)) if t.is_floating_point())
        loss.backward()
        opt.step()

    return step


def predicted_and_measured(
    loaded: LoadedModel, inputs: InputsLike | None, batch: int, dtype: torch.dtype | None, optimizer: str
) -> tuple[str, list[tuple[str, int, int | None]]]:
    """(GPU name, rows of (what, predicted bytes, measured bytes)) for the inference peak and
    one training step with `optimizer`: both analyses and both measurements."""
    inference = analysis(loaded, None, batch, dtype, inputs=inputs, optimizer=optimizer)
    training = analysis(loaded, None, batch, dtype, training=True, inputs=inputs, optimizer=optimizer)
    measured = measure_cuda(training, dtype, training=True, optimizer=optimizer)
    rows = [
        ("Inference peak", inference.report.totals.peak_memory_bytes, measured.inference_peak_bytes),
        (f"Training step ({optimizer})", training.report.totals.training_peak_bytes, measured.training_peak_bytes),
    ]
    return measured.device, rows
