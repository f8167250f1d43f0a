"""Memory questions over whole analyses: optimizer state, the largest batch that fits a
budget, and measured CUDA memory beside the prediction.

The per-row figures (live bytes, peak, saved activations) come from
`archprof.passes.memory`; this module only combines analyses. torch loads lazily, so the
Report can ask `optimizer_state_copies` without importing it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from archprof.errors import ArchprofError

if TYPE_CHECKING:
    import torch

    from archprof.report import Report

# Copies of the trainable parameters an optimizer keeps as state [FORMULAS.md, Memory]:
# plain SGD none, SGD with momentum its momentum buffer, Adam(W) two moment estimates.
# (Adam's per-parameter `step` counter, a scalar on the CPU by default, is left out.)
OPTIMIZER_STATE_COPIES = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}

# --fit: traces allowed before giving up on a model whose memory is not affine in the batch.
MAX_FIT_TRACES = 40
# No tensor's bytes can pass int64 (torch counts sizes in it): nor can a batch --fit analyses.
INT64_MAX = 2**63 - 1


def optimizer_state_copies(optimizer: str) -> int:
    try:
        return OPTIMIZER_STATE_COPIES[optimizer.lower()]
    except (KeyError, AttributeError):
        choices = ", ".join(OPTIMIZER_STATE_COPIES)
        raise ArchprofError(f"unknown optimizer '{optimizer}'; choose one of {choices}") from None


def predicted_bytes(report: Report) -> int:
    """What a batch needs: the training estimate for a training report, else the inference peak."""
    totals = report.totals
    return totals.training_memory_bytes if report.training else totals.peak_memory_bytes


@dataclass(frozen=True)
class Fit:
    """The largest batch whose predicted memory fits a budget."""

    batch: int
    budget_bytes: int
    report: Report  # the analysis at `batch`
    bytes_at_batch: int  # predicted at `batch` (<= budget)
    bytes_at_next: int  # predicted at `batch + 1` (> budget)
    traces: int  # analyses run to find it


def fit_batch(
    model: Any,
    budget_bytes: int,
    input_size: Sequence[int] | None = None,
    dtype: torch.dtype | str | None = None,
    training: bool = False,
    optimizer: str = "sgd",
    *,
    inputs: Any = None,
) -> Fit:
    """The largest batch whose predicted memory (inference peak, or the training estimate
    with `training`) is at most `budget_bytes`.

    Memory is affine in the batch for these models (parameters fixed, activations
    proportional), so two analyses (batch 1 and 2) give the line and a third and fourth
    check the answer N (fits) and N + 1 (does not). Should a model not be affine, a
    bisection between the fitting and failing batches seen so far finishes the search, in
    at most MAX_FIT_TRACES analyses. `inputs` as for `archprof.analyze`.

    The search stops where the input's bytes or the predicted memory would pass int64
    (2**63 - 1 bytes): a budget beyond that raises ArchprofError."""
    from archprof.api import analysis, checked_batch_and_dtype
    from archprof.load import load_model
    from archprof.units import human_bytes

    _, dtype = checked_batch_and_dtype(None, dtype)
    if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, int) or budget_bytes <= 0:
        raise ArchprofError(f"the memory budget must be a whole number of bytes more than 0, got {budget_bytes!r}")
    optimizer_state_copies(optimizer)
    loaded = load_model(model)  # once: a factory or a built-in is built a single time
    reports: dict[int, Report] = {}
    input_bytes: dict[int, int] = {}

    def need(batch: int) -> int:
        if batch not in reports:
            if len(reports) >= MAX_FIT_TRACES:
                raise ArchprofError(f"no answer after {MAX_FIT_TRACES} analyses: memory is not affine in the batch")
            analysed = analysis(loaded, input_size, batch, dtype, training, inputs=inputs, optimizer=optimizer)
            reports[batch] = analysed.report
            input_bytes[batch] = sum(t.nbytes for t in analysed.graph.inputs)
        return predicted_bytes(reports[batch])

    what = "training" if training else "inference"
    one = need(1)
    if one > budget_bytes:
        raise ArchprofError(
            f"not even batch 1 fits in {human_bytes(budget_bytes)}: {loaded.name} needs {human_bytes(one)} "
            f"({one:,} B) for {what} at batch 1"
        )
    slope = need(2) - one
    if slope <= 0:
        raise ArchprofError(f"the predicted {what} memory of {loaded.name} does not grow with the batch")
    largest = min(
        _last_batch_within_int64(one, slope),
        _last_batch_within_int64(input_bytes[1], input_bytes[2] - input_bytes[1]),
    )

    def beyond_int64() -> ArchprofError:
        return ArchprofError(
            f"cannot fit a batch to {human_bytes(budget_bytes)}: the budget is larger than any batch that can be"
            f" analysed needs (past batch {largest:,}, the input or the predicted {what} memory of {loaded.name}"
            " would pass 2**63 - 1 bytes)"
        )

    guess = 1 + (budget_bytes - one) // slope  # the affine answer, checked below
    if guess >= largest:
        raise beyond_int64()
    need(guess)
    need(guess + 1)
    while True:  # bracket [fits, fails) from every batch analysed; bisect if the line was off
        fails = min((b for b in reports if predicted_bytes(reports[b]) > budget_bytes), default=None)
        fits = max(b for b in reports if predicted_bytes(reports[b]) <= budget_bytes and (fails is None or b < fails))
        if fails == fits + 1:
            break
        if fails is None and fits >= largest:
            raise beyond_int64()
        need(min(2 * fits, largest) if fails is None else (fits + fails) // 2)
    return Fit(fits, budget_bytes, reports[fits], need(fits), need(fits + 1), len(reports))


def _last_batch_within_int64(bytes_at_one: int, bytes_per_sample: int) -> int | float:
    """The largest batch at which bytes_at_one + (batch - 1) * bytes_per_sample stays within
    int64 (at least 1; infinite for bytes that do not grow with the batch)."""
    if bytes_per_sample <= 0:
        return math.inf
    return max(1, 1 + (INT64_MAX - bytes_at_one) // bytes_per_sample)


# -- measurement on CUDA -------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """`torch.cuda.max_memory_allocated` during one inference forward and one training step
    (its second: the optimizer's state already exists, as it does from then on), counted
    from what was allocated before the model was built."""

    device: str
    inference_peak_bytes: int
    training_peak_bytes: int | None


def require_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        raise ArchprofError("--measure needs a CUDA GPU, and torch sees none (torch.cuda.is_available() is False)")


def measure_cuda(
    model: Any,
    input_size: Sequence[int] | None = None,
    batch: int = 1,
    dtype: torch.dtype | None = None,
    training: bool = True,
    optimizer: str = "sgd",
) -> Measured:
    """Build the model for real on the GPU, run it, and read the allocator's peak.

    A module given by the caller is copied to the GPU (the original is not touched)."""
    import torch

    from archprof.api import checked_batch_and_dtype
    from archprof.trace import forward_exits_as_errors

    batch, dtype = checked_batch_and_dtype(batch, dtype)
    require_cuda()
    optimizer_state_copies(optimizer)
    device = torch.device("cuda")
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    module, default_size, name = _real_model(model, device, dtype)
    size = tuple(input_size) if input_size is not None else default_size
    if size is None:
        raise ArchprofError(f"model '{name}' has no default input size: give one")
    input_dtype = dtype or next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
    shape = (batch, *size)
    try:
        with forward_exits_as_errors(name):
            inference = _peak(device, before, lambda: _inference_step(module, shape, input_dtype, device))
            trained = None
            if training:
                step = _training_step(module, shape, input_dtype, device, optimizer)
                step()  # the first step creates the optimizer's state
                trained = _peak(device, before, step)
    except torch.cuda.OutOfMemoryError as exc:
        first_line = (str(exc).strip().splitlines() or ["out of memory"])[0]
        raise ArchprofError(f"the GPU ran out of memory measuring {name} at batch {batch}: {first_line}") from None
    return Measured(torch.cuda.get_device_name(device), inference, trained)


def _real_model(model: Any, device, dtype):
    """The model with real weights on `device` (`LoadedModel.materialize`: a module the
    caller gave is copied, never changed)."""
    from archprof.load import load_model

    loaded = load_model(model)
    module = loaded.materialize(device, dtype, copy_module=True)
    return module, loaded.input_size, loaded.name


def _peak(device, before: int, run) -> int:
    import torch

    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def _inference_step(module, shape, dtype, device) -> None:
    import torch

    module.eval()
    x = torch.randn(shape, dtype=dtype, device=device)
    with torch.no_grad():
        module(x)


def _training_step(module, shape, dtype, device, optimizer: str):
    import torch

    from archprof.structure import tensors_in

    module.train()
    params = [p for p in module.parameters() if p.requires_grad]
    name = optimizer.lower()
    if name == "sgd":
        opt = torch.optim.SGD(params, lr=1e-3)
    elif name == "momentum":
        opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    elif name == "adamw":
        opt = torch.optim.AdamW(params, lr=1e-3)
    else:
        opt = torch.optim.Adam(params, lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        x = torch.randn(shape, dtype=dtype, device=device)
        loss = sum(t.float().sum() for t in tensors_in(module(x)) if t.is_floating_point())
        loss.backward()
        opt.step()

    return step
