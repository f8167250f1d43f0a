"""The largest batch whose predicted memory fits a budget (`archprof memory --fit`), found
from a few whole analyses. The figures (the inference peak, the training step's peak) come
from `archprof.passes.memory` and `archprof.passes.training_memory`."""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from archprof.analysis import analysis, check_optimizer, checked_batch_and_dtype, load
from archprof.errors import ArchprofError, check_flag, exception_chain, shown
from archprof.measure.device import beyond_free_memory, cpu_available_memory
from archprof.report import Report
from archprof.tracing.trace import NeedsTwoSamples
from archprof.units import human_bytes, in_binary_units, parse_size

# --fit: traces allowed before giving up on a model whose memory is not affine in the batch.
MAX_FIT_TRACES = 40
# --fit: lines through a pair of batches followed before the search bisects.
_NEW_LINES = 4
# No tensor's bytes can pass int64 (torch counts sizes in it): nor can a batch --fit analyses.
INT64_MAX = 2**63 - 1


def predicted_bytes(report: Report) -> int:
    """What a batch needs: the training step's peak (backward included) for a training
    report, else the inference peak."""
    totals = report.totals
    return totals.training_peak_bytes if report.training else totals.peak_memory_bytes


@dataclass(frozen=True)
class Fit:
    """The largest batch whose predicted memory fits a budget."""

    batch: int
    budget_bytes: int
    report: Report  # the analysis at `batch`
    bytes_at_batch: int  # predicted at `batch` (<= budget)
    bytes_at_next: int | None  # predicted at `batch + 1` (> budget); None: the model takes no larger batch
    traces: int  # analyses run to find it
    binary: bool = False  # the budget was given in powers of 1024 (512MiB): shown back in them

    @property
    def budget_text(self) -> str:
        return human_bytes(self.budget_bytes, self.binary)

    @property
    def beyond_text(self) -> str:
        """Why no larger batch: "batch 8 needs 1.20 GB" (in bytes where that reads as the
        budget itself: "17.18 GB" of a 17,179,869,184 B budget and of 17,179,893,568 B); or
        that the model takes none (an exported program's largest batch)."""
        if self.bytes_at_next is None:
            return f"the model takes no batch above {self.batch}"
        shown = human_bytes(self.bytes_at_next, self.binary)
        needs = f"{self.bytes_at_next:,} B" if shown == self.budget_text else shown
        return f"batch {self.batch + 1} needs {needs}"

    def as_dict(self) -> dict[str, int]:
        """The answer, as `memory --fit`'s JSON holds it."""
        return {
            "budget_bytes": self.budget_bytes,
            "batch": self.batch,
            "bytes_at_batch": self.bytes_at_batch,
            "bytes_at_next_batch": self.bytes_at_next,
            "budget_in_binary_units": self.binary,  # as the HTML page shows the sizes
        }


def _check_batch_can_change(loaded) -> None:
    """An exported program specialised to its example's batch has no other batch to try."""
    fixed = [shape[0] for shape in loaded.static_shapes or () if shape and shape[0] is not None]
    if fixed:
        raise ArchprofError(
            f"{loaded.name} was exported with a fixed batch of {fixed[0]}: a batch to fit needs one that can"
            " change (export with a torch.export.Dim on the batch dimension)"
        )


def fit_batch(
    model: Any,
    budget_bytes: int | str,
    input_size: Sequence[int] | str | None = None,
    dtype: torch.dtype | str | None = None,
    training: bool = False,
    optimizer: str = "sgd",
    *,
    inputs: Any = None,
    fold_bn: bool = False,
    args: Mapping[str, Any] | None = None,
    weights: str | Path | None = None,
    trust_pickle: bool = False,
    batch: None = None,
    binary: bool = False,
) -> Fit:
    """The largest batch whose predicted memory (inference peak, or the training step's
    peak with `training`) is at most `budget_bytes`: a number of bytes, or a size as --fit
    reads it ("16GiB", "512MB", 1e9; one in binary units is shown back in them). An exported
    program whose batch is a torch.export.Dim with a min or max is searched within them:
    where its largest batch fits, that is the answer (`Fit.bytes_at_next` None).

    Memory is affine in the batch for these models (parameters fixed, activations
    proportional), so two analyses (batch 1 and 2; 2 and 3 where a training step refuses
    batch 1, a BatchNorm seeing one value per channel) give the line and a third and fourth
    check the answer N (fits) and N + 1 (does not). Where the answer is not there (a
    training step's peak is the largest of several lines, which part of the step peaks
    changing with the batch), the line through that pair of batches gives the next pair
    (a few times); then a bisection between the fitting and failing batches seen so far
    finishes the search, in at most MAX_FIT_TRACES analyses (where batch 2 needs no more than batch 1, a batch-1 path
    of the model's own, doubling from batch 2 finds a failing batch first). N and N + 1 are
    always analysed; batches past N + 1 are not all: a model whose memory falls at a larger
    batch (a branch on the batch size) may fit one of those too. `inputs`, `fold_bn`, `args`, `weights` and
    `trust_pickle` as for `archprof.analyze`; `batch` only None (the search finds it), so
    that `ModelOptions(...).keywords()` may be passed. `binary`: sizes in errors and in the
    Fit in powers of 1024 (a budget the user gave in MiB, GiB), else decimal.

    The search stops where the input's bytes or the predicted memory would pass int64
    (2**63 - 1 bytes): a budget beyond that raises ArchprofError. A batch tried whose
    tensors torch cannot size (a batch x batch product past int64) fits no budget: the
    search bisects below it.

    Example (its answer fits, the next batch does not):

        >>> fit = archprof.fit.fit_batch("resnet50", "2GiB")
        >>> fit.bytes_at_batch <= fit.budget_bytes == 2 * 1024**3 < fit.bytes_at_next
        True
    """
    _, dtype = checked_batch_and_dtype(None, dtype)
    check_flag("binary", binary)
    if isinstance(budget_bytes, str):  # as --fit reads it: "16GiB" (shown back in binary units), "1e9"
        binary = binary or in_binary_units(budget_bytes)
    if isinstance(budget_bytes, (str, float)):
        budget_bytes = parse_size(budget_bytes)
    elif isinstance(budget_bytes, numbers.Integral) and not isinstance(budget_bytes, bool):
        budget_bytes = int(budget_bytes)  # numpy.int64(10**9), as batch= and a row number take one
    if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, int) or budget_bytes <= 0:
        raise ArchprofError(
            f"the memory budget must be a whole number of bytes more than 0, or a size such as '16GiB',"
            f" got {shown(budget_bytes)}"
        )
    if batch is not None:
        raise ArchprofError(f"fit_batch finds the batch itself: drop batch={shown(batch)}")
    check_optimizer(optimizer, training)
    loaded = load(model, args=args, weights=weights, trust_pickle=trust_pickle)  # once: built a single time
    _check_batch_can_change(loaded)
    smallest, limit = loaded.batch_range or (1, None)
    reports: dict[int, Report] = {}
    needs: dict[int, int | float] = {}  # each batch analysed: its bytes; infinite where torch cannot size its tensors
    input_bytes: dict[int, int] = {}

    def need(batch: int) -> int | float:
        if batch not in needs:
            if len(needs) >= MAX_FIT_TRACES:
                raise ArchprofError(f"no answer after {MAX_FIT_TRACES} analyses: memory is not affine in the batch")
            try:
                analysed = analysis(
                    loaded, input_size, batch, dtype, training, inputs=inputs, optimizer=optimizer, fold_bn=fold_bn
                )
            except ArchprofError as exc:
                if batch <= first + 1 or not _sized_past_int64(exc):
                    raise
                needs[batch] = math.inf  # a tensor of more than 2**63 - 1 bytes: more than any budget
                return needs[batch]
            reports[batch] = analysed.report
            needs[batch] = predicted_bytes(analysed.report)
            input_bytes[batch] = sum(t.nbytes for t in analysed.graph.inputs)
        return needs[batch]

    what = "training" if training else "inference"
    sized = functools.partial(human_bytes, binary=binary)  # in the budget's units
    first, why = smallest, "" if smallest == 1 else " (the smallest batch the exported program takes)"
    try:
        one = need(first)
    except NeedsTwoSamples:  # a BatchNorm sees one value per channel: a training step needs batch 2
        first, why = 2, " (a training step needs a batch of at least 2 here)"
        one = need(first)
    if reports[first].traced_on == "cpu":  # each batch tried is a real forward: refused before it runs out of memory
        free = cpu_available_memory()  # the budget, with room for workspace, as for `memory --measure`
        if beyond_free_memory(budget_bytes, free):
            raise ArchprofError(
                f"cannot fit a batch to {sized(budget_bytes)} here: the forward of {loaded.name} cannot run on"
                " the meta device, so each batch tried runs on the CPU for real, and those near the budget would"
                f" need more than the {sized(free)} of memory available"
            )
    if one > budget_bytes:
        raise ArchprofError(
            f"not even batch {first} fits in {sized(budget_bytes)}: {loaded.name} needs {sized(one)} "
            f"({one:,} B) for {what} at batch {first}{why}"
        )
    if limit is not None and need(limit) <= budget_bytes:
        return Fit(limit, budget_bytes, reports[limit], needs[limit], None, len(needs), binary)
    slope = need(first + 1) - one
    largest = min(
        _last_batch_within_int64(first, one, slope),
        _last_batch_within_int64(first, input_bytes[first], input_bytes[first + 1] - input_bytes[first]),
    )
    if largest == math.inf:
        raise ArchprofError(f"the predicted {what} memory of {loaded.name} does not grow with the batch")

    def beyond_int64() -> ArchprofError:
        return ArchprofError(
            f"cannot fit a batch to {sized(budget_bytes)}: the budget is larger than any batch that can be"
            f" analysed needs (past batch {largest:,}, the input or the predicted {what} memory of {loaded.name}"
            " would pass 2**63 - 1 bytes)"
        )

    pair = first  # the last two batches in a row analysed begin here: a line through them
    if slope > 0:  # else (a batch-1 path of its own needing more than batch 2): no line, search from batch 2
        guess = first + (budget_bytes - one) // slope  # the affine answer, checked below
        if limit is not None:  # which does not fit (above): the line is off
            guess = min(guess, limit - 1)
        if guess >= largest:
            raise beyond_int64()
        need(guess)
        need(guess + 1)
        pair = guess
    steps = 0
    while True:  # bracket [fits, fails) from every batch analysed; if the line was off, a new line, or bisect
        fails = min((b for b in needs if needs[b] > budget_bytes), default=None)
        fits = max(b for b in needs if needs[b] <= budget_bytes and (fails is None or b < fails))
        if fails == fits + 1:
            if needs[fails] == math.inf:  # the budget lies past what torch can size
                raise beyond_int64()
            break
        if fails is None and fits >= largest:
            raise beyond_int64()
        # The line through the last pair of batches analysed, where it rises: a training step's
        # peak is the largest of several lines in the batch (which part of the step peaks
        # changes with it), so the line from batches 1 and 2 may miss the answer by millions
        # of batches, where the line through the pair it gave lands on it.
        ahead = _on_the_line(needs, pair, budget_bytes) if steps < _NEW_LINES else None
        # Strictly inside the bracket: none analysed yet (every batch analysed fits up to `fits`, fails from `fails`).
        above = fails if fails is not None else largest + 1
        tries = [] if ahead is None else [b for b in (ahead, ahead + 1) if fits < b < above]
        if tries:
            steps += 1
            for batch in tries:
                need(batch)
            pair = ahead if ahead in needs and ahead + 1 in needs else pair
            continue
        if fails is None:
            need(min(2 * fits, largest))
        else:  # halving the ratio while it is large (a line's guess orders of magnitude off), then the gap
            middle = math.isqrt(fits * fails) if fails > 2 * fits else (fits + fails) // 2
            need(min(max(middle, fits + 1), fails - 1))
    return Fit(fits, budget_bytes, reports[fits], needs[fits], needs[fits + 1], len(needs), binary)


def _on_the_line(needs: dict[int, int | float], batch: int, budget_bytes: int) -> int | None:
    """The largest batch within the budget on the line through batches `batch` and
    `batch + 1`; None where that line does not rise (or one of them is past int64)."""
    rise = needs[batch + 1] - needs[batch]
    if not 0 < rise < math.inf:
        return None
    return batch + int((budget_bytes - needs[batch]) // rise)


def _sized_past_int64(exc: BaseException) -> bool:
    """Whether an analysis failed because torch cannot size a tensor of the batch (its bytes
    past int64: "Storage size calculation overflowed"), itself or what raised before it."""
    return any("overflow" in str(raised).lower() for raised in exception_chain(exc))


def _last_batch_within_int64(first: int, bytes_at_first: int, bytes_per_sample: int) -> int | float:
    """The largest batch at which bytes_at_first + (batch - first) * bytes_per_sample stays
    within int64 (at least `first`; infinite for bytes that do not grow with the batch)."""
    if bytes_per_sample <= 0:
        return math.inf
    return max(first, first + (INT64_MAX - bytes_at_first) // bytes_per_sample)
