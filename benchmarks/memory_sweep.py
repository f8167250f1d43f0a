"""The inference peak archprof predicts against the one a real CPU forward reaches, on the
built-in models and a sample of torchvision and timm.

    python benchmarks/memory_sweep.py [--sample N] [--seed S] [--max-bytes N] [--jobs N] [--train [--optimizer O]]
                                      [--dtype D] [--report PATH] [--models SPEC ...] [--input CxHxW] [--batch N]

Per model, at its default input and batch 1 (`--input`, `--batch`: every model at that sample
shape and batch; a model whose own forward raises there is "refused by the model"):
archprof's predicted inference peak
(`totals.peak_memory_bytes`: each activation held until the forward lets go of it); the
same graph's peak with every activation freed at its last reader instead (the rule before
the trace watched tensors die), for contrast; and the peak of the model's first real CPU
forward (the one that fills a model's caches), from the CPU allocator's events under
torch.profiler, twice over: parameters, buffers and inputs plus the most the forward
allocated beyond them that outlived the operator that made it (`memory --measure`'s
figure: operators' workspace left out), and the same with workspace. The two bracket
the truth for the analysis: a cdist that runs as copies of its operands and their distances
inside one call is that call's workspace to the profiler, and operators of their own to the
analysis (matmul's, einsum's and tensordot's copies, noted as one CPU operator's, are
workspace to both). Models whose predicted peak is above `--max-bytes` (default 2 GB) are
analysed but not run: this machine's memory is shared. Writes reports/memory_sweep.md and .csv.

`--train` sets one SGD training step's predicted peak (`totals.training_peak_bytes`, batch 2)
beside the measured one (`measure_memory`, as `memory --measure` runs it: the second step
of the real model, from the allocator's events, workspace left out), into
reports/memory_sweep_training.md and .csv; `--optimizer adam` (or any name of archprof.optimizers) steps with
that optimizer instead, its state and update in both figures, into
reports/memory_sweep_training_adam.md and .csv. `--dtype bfloat16` (float16, float64) casts the
models and inputs, in both figures, and adds `_bfloat16` to the reports' names.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import os
import random
import statistics
import sys
import time
from pathlib import Path

from arguments import batch_size, input_size, sample_options, sample_suffix
from hub_sweep import REFUSED, _hubs, analysed_or_refused, failed_and_refused, hub_models, write_reports

ROOT = Path(__file__).resolve().parent.parent
FIELDS = ("model", "status", "why", "params", "predicted", "last_reader", "measured", "measured_with_workspace")
TRAINING_FIELDS = ("model", "status", "why", "params", "predicted", "measured")
TRAINING_BATCH = 2  # a BatchNorm in training refuses one value per channel
WITHIN = 0.01  # a prediction within 1% of the measurement counts as agreeing


def measure_one(
    spec: str, max_bytes: int, dtype: str | None = None, size: tuple[int, ...] | None = None, batch: int | None = None
) -> dict:
    """One model's row (FIELDS), in `dtype` (a name of archprof's DTYPES; None: the model's own),
    at one sample of `size` (None: its default input) and `batch` (None: 1); every exception
    ends up in `why`, on one line."""
    import torch

    from archprof.analysis import build_report
    from archprof.measure.device import random_inputs
    from archprof.measure.peak_memory import cpu_allocation_peaks, held_bytes
    from archprof.random_state import random_state_kept

    _hubs()  # torchvision importable here too (a worker process)
    torch.set_num_threads(1)  # the workers share the machine's cores
    row = dict.fromkeys(FIELDS, "")
    row["model"] = spec
    try:
        analysed, dtype = analysed_or_refused(row, dtype, [size] if size else None, batch or 1, training=False)
        if analysed is None:
            return row
        totals = analysed.report.totals
        last_reader = build_report(dataclasses.replace(analysed.graph, released={}), spec).totals
        row.update(params=totals.param_count, predicted=totals.peak_memory_bytes)
        row["last_reader"] = last_reader.peak_memory_bytes
        if totals.peak_memory_bytes > max_bytes:
            row.update(status="not run", why=f"a predicted peak over {max_bytes:,} B")
            return row
        with random_state_kept(torch.device("cpu")):
            module = analysed.loaded.materialize("cpu", dtype, copy_module=True).eval()
            inputs = random_inputs(analysed, torch.device("cpu"))
        held = held_bytes(module, analysed.graph, (inputs.args, inputs.kwargs))
        with torch.no_grad():
            everything, lasting = cpu_allocation_peaks(lambda: inputs(module))
        row.update(status="measured", measured=held + lasting, measured_with_workspace=held + everything)
    except Exception as exc:  # a model that fails is a row, not the end of the sweep
        row.update(status="failed", why=" ".join(str(exc).split())[:200])
    return row


def measure_step_one(
    spec: str,
    max_bytes: int,
    optimizer: str = "sgd",
    dtype: str | None = None,
    size: tuple[int, ...] | None = None,
    batch: int | None = None,
) -> dict:
    """One model's row (TRAINING_FIELDS) for one training step at `batch` (None: 2), in `dtype`,
    at one sample of `size` (None: its default input)."""
    import torch

    from archprof.measure.peak_memory import measure_memory

    _hubs()
    torch.set_num_threads(1)
    row = dict.fromkeys(TRAINING_FIELDS, "")
    row["model"] = spec
    try:
        analysed, dtype = analysed_or_refused(
            row, dtype, size, batch or TRAINING_BATCH, training=True, optimizer=optimizer
        )
        if analysed is None:
            return row
        totals = analysed.report.totals
        row.update(params=totals.param_count, predicted=totals.training_peak_bytes)
        if totals.training_peak_bytes > max_bytes:
            row.update(status="not run", why=f"a predicted peak over {max_bytes:,} B")
            return row
        measured = measure_memory(analysed, dtype, training=True, optimizer=optimizer)
        row.update(status="measured", measured=measured.training.bytes)
    except Exception as exc:  # a model that fails is a row, not the end of the sweep
        row.update(status="failed", why=" ".join(str(exc).split())[:200])
    return row


def _ratio(row: dict, column: str) -> float:
    return row["measured"] / row[column]


def _bracketed(row: dict, column: str = "predicted") -> bool:
    """The row's `column` between the measurement without workspace and the one with it (1% either side)."""
    return row["measured"] * (1 - WITHIN) <= row[column] <= row["measured_with_workspace"] * (1 + WITHIN)


def markdown(
    rows: list[dict], command: str, jobs: int, wall_s: float, max_bytes: int, dtype: str = "float32", at: str = ""
) -> str:
    measured = [row for row in rows if row["status"] == "measured"]
    agree = [row for row in measured if abs(_ratio(row, "predicted") - 1) <= WITHIN]
    agree_before = [row for row in measured if abs(_ratio(row, "last_reader") - 1) <= WITHIN]
    bracketed = [row for row in measured if _bracketed(row)]
    ratios = [_ratio(row, "predicted") for row in measured]
    before = [_ratio(row, "last_reader") for row in measured]
    lines = [
        *_header("inference peak against a real CPU forward", command, jobs, wall_s),
        f"  {at or 'default input, batch 1'}, {dtype}. Measured: the CPU allocator's events under torch.profiler",
        "  (what `archprof memory --measure` reads), workspace left out. Predicted: the report's",
        "  inference peak; last reader: the same graph with every activation freed at its last reader.",
        "",
        _measured_line(rows, max_bytes),
        "",
        "| | predicted | last reader alone |",
        "|:--|--:|--:|",
        f"| equal to the byte | **{sum(row['measured'] == row['predicted'] for row in measured)} of {len(measured)}** "
        f"| {sum(row['measured'] == row['last_reader'] for row in measured)} of {len(measured)} |",
        f"| within 1% of the measurement | **{len(agree)} of {len(measured)}** "
        f"| {len(agree_before)} of {len(measured)} |",
        f"| between the measurements without and with workspace (1% either side) | **{len(bracketed)}"
        f" of {len(measured)}** | {sum(_bracketed(row, 'last_reader') for row in measured)}"
        f" of {len(measured)} |",
    ]
    if measured:
        lines += [
            f"| measured / predicted, median | {statistics.median(ratios):.4f} | {statistics.median(before):.4f} |",
            f"| lowest | {min(ratios):.4f} | {min(before):.4f} |",
            f"| highest | {max(ratios):.4f} | {max(before):.4f} |",
        ]
    lines += _furthest_and_failed(rows)
    return "\n".join(lines) + "\n"


def training_markdown(
    rows: list[dict],
    command: str,
    jobs: int,
    wall_s: float,
    max_bytes: int,
    optimizer: str = "sgd",
    dtype: str = "float32",
    at: str = "",
) -> str:
    measured = [row for row in rows if row["status"] == "measured"]
    ratios = [_ratio(row, "predicted") for row in measured]
    lines = [
        *_header("training step's peak against a real CPU step", command, jobs, wall_s),
        f"  {at or f'default input, batch {TRAINING_BATCH}'}, {dtype}, {optimizer}. Measured: `archprof memory"
        " --measure`'s",
        "  figure, the second real step's peak from the CPU allocator's events, workspace left out.",
        "",
        _measured_line(rows, max_bytes),
        "",
        "| | predicted |",
        "|:--|--:|",
        f"| equal to the byte | **{sum(row['measured'] == row['predicted'] for row in measured)}"
        f" of {len(measured)}** |",
        f"| within 1% of the measurement | **{sum(abs(r - 1) <= WITHIN for r in ratios)} of {len(measured)}** |",
    ]
    if measured:
        lines += [
            f"| measured / predicted, median | {statistics.median(ratios):.4f} |",
            f"| lowest | {min(ratios):.4f} |",
            f"| highest | {max(ratios):.4f} |",
        ]
    lines += ["", "## The models furthest from their measurement", ""]
    lines += ["| model | parameters | predicted B | measured B | measured / predicted |", "|:--|--:|--:|--:|--:|"]
    for row in sorted(measured, key=lambda row: -abs(_ratio(row, "predicted") - 1))[:15]:
        lines.append(
            f"| `{row['model']}` | {row['params']:,} | {row['predicted']:,} | {row['measured']:,} "
            f"| {_ratio(row, 'predicted'):.4f} |"
        )
    lines += failed_and_refused(rows)
    return "\n".join(lines) + "\n"


def _header(what: str, command: str, jobs: int, wall_s: float) -> list[str]:
    chosen = (
        "the models named"
        if "--models" in command
        else "the built-in models and a seeded sample of torchvision and timm"
    )
    return [
        f"# archprof benchmark: the predicted {what}",
        "",
        f"- Date: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
        f"- Command: `python benchmarks/memory_sweep.py {command}` ({jobs} worker(s), {wall_s:.0f} s)",
        f"- Models: {chosen}, each at its",
    ]


def _measured_line(rows: list[dict], max_bytes: int) -> str:
    return (
        f"Measured: {sum(row['status'] == 'measured' for row in rows)} of {len(rows)} models "
        f"({sum(row['status'] == 'not run' for row in rows)} with a predicted peak over {max_bytes:,} B not run, "
        f"{sum(row['status'] == 'failed' for row in rows)} failed, "
        f"{sum(row['status'] == REFUSED for row in rows)} refused by the model: its own forward raises at that input)."
    )


def _furthest_and_failed(rows: list[dict]) -> list[str]:
    measured = [row for row in rows if row["status"] == "measured"]
    lines = ["", "## The models furthest from their measurement", ""]
    lines += [
        "| model | parameters | predicted B | measured B | with workspace B | measured / predicted "
        "| last reader alone | between the two |",
        "|:--|--:|--:|--:|--:|--:|--:|:--|",
    ]
    for row in sorted(measured, key=lambda row: -abs(_ratio(row, "predicted") - 1))[:15]:
        lines.append(
            f"| `{row['model']}` | {row['params']:,} | {row['predicted']:,} | {row['measured']:,} "
            f"| {row['measured_with_workspace']:,} | {_ratio(row, 'predicted'):.4f} "
            f"| {_ratio(row, 'last_reader'):.4f} | {'yes' if _bracketed(row) else 'no'} |"
        )
    return lines + failed_and_refused(rows)


def main() -> None:
    from archprof.load.common import DTYPES
    from archprof.optimizers import OPTIMIZERS
    from archprof.parallel import ordered_map
    from archprof.units import shape_text
    from archprof.zoo import MODELS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=60, help="torchvision and timm models drawn at random")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--models", nargs="+", default=None, help="these model specs instead (report: memory_sweep_models)"
    )
    parser.add_argument("--max-bytes", type=int, default=2_000_000_000, help="do not run models predicted to need more")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (each runs its forwards on one thread)")
    parser.add_argument("--train", action="store_true", help="one training step (batch 2) instead")
    parser.add_argument("--optimizer", default="sgd", choices=list(OPTIMIZERS), help="with --train")
    parser.add_argument("--dtype", default=None, choices=list(DTYPES), help="the models and inputs cast to it")
    parser.add_argument(
        "--input", type=input_size, default=None, help="one sample's shape, 3x199x167 (default: each model's own)"
    )
    parser.add_argument("--batch", type=batch_size, default=None, help=f"default 1; {TRAINING_BATCH} with --train")
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        help="default: reports/memory_sweep[_training][_optimizer][_dtype][_CxHxW][_batchN].md",
    )
    options = parser.parse_args()
    name = "memory_sweep_training" if options.train else "memory_sweep"
    if options.models:
        name += "_models"
    if options.train and options.optimizer != "sgd":
        name += f"_{options.optimizer}"
    if options.dtype is not None:
        name += f"_{options.dtype}"
    name += sample_suffix(options.input, options.batch)
    report = options.report or ROOT / "reports" / f"{name}.md"
    chosen = options.models or [*MODELS, *sorted(random.Random(options.seed).sample(hub_models(), options.sample))]
    start = time.perf_counter()

    def progress(phase: str, done: int, total: int) -> None:
        print(f"\r{done}/{total}", end="", file=sys.stderr, flush=True)

    if options.train:
        one = functools.partial(measure_step_one, optimizer=options.optimizer)
        write = functools.partial(training_markdown, optimizer=options.optimizer)
        fields = TRAINING_FIELDS
    else:
        one, write, fields = measure_one, markdown, FIELDS
    if options.dtype is not None:
        write = functools.partial(write, dtype=options.dtype)
    if options.input or options.batch:
        sample = f"input {shape_text(options.input)}" if options.input else "default input"
        batch = options.batch or (TRAINING_BATCH if options.train else 1)
        write = functools.partial(write, at=f"{sample}, batch {batch}")
    rows = ordered_map(
        functools.partial(
            one, max_bytes=options.max_bytes, dtype=options.dtype, size=options.input, batch=options.batch
        ),
        chosen,
        jobs=options.jobs,
        progress=progress,
    )
    print(file=sys.stderr)
    # What draws the same models and runs them as this run did (--jobs and --report aside).
    drawn = (
        f"--models {' '.join(options.models)}" if options.models else f"--sample {options.sample} --seed {options.seed}"
    )
    command = f"{'--train ' if options.train else ''}{drawn}"
    if options.train and options.optimizer != "sgd":
        command += f" --optimizer {options.optimizer}"
    command += f" --max-bytes {options.max_bytes}"
    if options.dtype is not None:
        command += f" --dtype {options.dtype}"
    command += sample_options(options.input, options.batch)
    text = write(rows, command, options.jobs, time.perf_counter() - start, options.max_bytes)
    write_reports(report, text, fields, rows)
    print(text)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
