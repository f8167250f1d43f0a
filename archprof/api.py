"""The library's public entry points for one model: model in, Report out.

`analyze` traces a model without running it (defined in `archprof.analysis`, named here);
`profile` adds a real, timed run (`archprof.measure`). `archprof.compare`, which sets several
analyses side by side, is `archprof.comparison.compare`. Only the package's lazy names and
the CLI's `profile` command import this module."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from archprof.analysis import ModelSpec, analysis, analyze, checked_batch_and_dtype, load
from archprof.errors import ArchprofError, check_flag
from archprof.load import InputsLike
from archprof.measure import DEFAULT_REPEAT, DEFAULT_WARMUP
from archprof.measure.clock import no_progress
from archprof.measure.profile import profile_analysis
from archprof.parallel import checked_progress
from archprof.report import Report

__all__ = ["analyze", "profile"]


def profile(
    model: ModelSpec,
    input_size: Sequence[int] | str | None = None,
    batch: int | None = None,
    dtype: torch.dtype | str | None = None,
    device: str | None = None,
    warmup: int = DEFAULT_WARMUP,
    repeat: int = DEFAULT_REPEAT,
    peak_flops: float | str | None = None,
    bandwidth: float | str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    *,
    inputs: InputsLike | None = None,
    args: Mapping[str, Any] | None = None,
    weights: str | Path | None = None,
    trust_pickle: bool = False,
    fold_bn: bool = False,
) -> Report:
    """Analyse a model, then run it for real, timed, and join what was measured to the rows.

    `model`, `input_size`, `batch`, `dtype`, `inputs`, `args`, `weights` and `trust_pickle`
    are as for `analyze`. The model is built on `device` ('cpu', 'cuda', 'cuda:N'; None:
    cuda when available) with random weights (`weights` when given; a module you pass is
    copied with its own) and fed random inputs:
    `warmup` untimed passes, `repeat` timed passes of the whole model, `repeat` more with
    every leaf module timed (`archprof.measure` says how). `peak_flops` ("989T") and
    `bandwidth` ("3.35TB/s") replace the device's measured (and cached) ceilings.

    Returns the Report of `analyze` whose `layers` add the columns of
    `archprof.report.columns.MEASURED_COLUMNS` (time_ms, time_share, achieved_flops_per_s,
    bytes_moved, arithmetic_intensity, bound, roofline_time_ms) and whose `measured` is an
    `archprof.measure.Measurement`: latency median and p90, throughput, achieved FLOP/s,
    measured peak memory, the ceilings and the cross-check (`measured.passed`).

    `fold_bn=True` is refused: the run times the model as it is, BatchNorms unfolded, and
    the cross-check would set it against a folded analysis.

    Example (LeNet-5 timed on the CPU: three timed passes, each row its own time):

        >>> report = archprof.profile("lenet5", device="cpu", warmup=1, repeat=3)
        >>> len(report.measured.latencies_ms), "time_ms" in report.layers.columns
        (3, True)
    """
    check_flag("fold_bn", fold_bn)  # before its truth is read: a tensor has none, "false" is true
    if fold_bn:
        raise ArchprofError("profile times the model as it is: drop --fold-bn (fold_bn=True), or use summary")
    checked_progress(progress)
    batch, dtype = checked_batch_and_dtype(batch, dtype)
    loaded = load(model, args=args, weights=weights, trust_pickle=trust_pickle)
    analysed = analysis(loaded, input_size, batch, dtype, inputs=inputs)
    return profile_analysis(
        analysed,
        dtype=dtype,
        device=device,
        warmup=warmup,
        repeat=repeat,
        peak_flops=peak_flops,
        bandwidth=bandwidth,
        progress=progress or no_progress,
    )
