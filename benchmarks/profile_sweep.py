"""`archprof profile`'s cross-check of the analysis against a real, timed run, on the built-in
models and torchvision's and timm's.

    python benchmarks/profile_sweep.py [--sample N] [--seed S] [--models SPEC ...] [--device D] [--dtype D]
                                       [--input CxHxW] [--batch N] [--max-macs N] [--max-bytes N] [--warmup N]
                                       [--repeat N] [--families F,...] [--jobs N] [--report PATH]

Per model, at its default input and batch 1 (`--input`, `--batch`: every model at that sample
shape and batch; a model whose own forward raises there is "refused by the model"): the
analysis, then `archprof.profile`'s real run of it on `--device` (default cpu; `cuda` on a
machine with a GPU, with `--jobs 1`), random weights, `--warmup` untimed passes (default 1: a
first pass pays for what a CPU or GPU sets up once) and `--repeat` timed passes (default 1).
Its three checks, each "ok", "mismatch" or "skipped", as `profile` prints them:

- output shapes: every leaf module call's output, and the model's, against the analysis;
- FLOPs: the total and each leaf's, against FlopCounterMode on the real run;
- peak memory: the first forward's, read from the allocator (the CPU's events under
  torch.profiler, or `torch.cuda.max_memory_allocated`), within `profile`'s bounds.

Beside them, what the run measured: the measured peak over the predicted one (1.0000: to
the byte), the forward with every leaf timed over the plain one (how much the per-layer
hooks perturb the run), and the rank correlation of the rows' roofline times with their
measured times. Models the analysis predicts over `--max-macs` (default 1e10) or `--max-bytes`
(default 2 GB) are analysed but not run. Every torchvision classifier and timm model, with
the built-ins first, or `--sample N` of the hub drawn with `--seed`; `--families` takes
torchvision's other families instead, as `hub_sweep.py` does (a detector at one 3x320x320
image). Writes reports/profile_sweep[_families][_device][_dtype][_CxHxW][_batchN].md and a
CSV of its rows beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import random
import statistics
import sys
import time
from pathlib import Path

from arguments import batch_size, input_size, sample_options, sample_suffix, whole_number
from hub_sweep import (
    REFUSED,
    _families,
    _hubs,
    analysed_or_refused,
    failed_and_refused,
    hub_models,
    sweep_inputs,
    write_reports,
)
from report_writing import markdown_table, ready_to_write
from worktree import machine_text

ROOT = Path(__file__).resolve().parent.parent
CHECKS = ("output shapes", "FLOPs", "peak memory")  # `archprof.measure.crosscheck`'s, in its order
FIELDS = (
    "model",
    "status",
    "why",
    "params",
    "macs",
    "shapes",
    "flops",
    "memory",
    "mismatches",
    "predicted_peak",
    "measured_peak",
    "median_ms",
    "hooked_ms",
    "rows_timed",
    "rank_correlation",
)
# The timing figures are side ones here: a model's few passes, beside other workers.
TIMES_NOTE = (
    "The times are of the few passes each model ran, {jobs} worker(s) sharing the machine: a model's"
    " ratio can be far off its own (`archprof profile MODEL --warmup 2 --repeat 5` on a quiet"
    " machine says it); the medians hold."
)
CHECKED = "checked"
NOT_RUN = "not run"
FAILED = "failed"  # as `hub_sweep.failed_and_refused` lists them


def profile_one(
    spec: str,
    device: str,
    max_macs: int,
    max_bytes: int,
    warmup: int,
    repeat: int,
    dtype: str | None = None,
    inputs: dict[str, list] | None = None,
    batch: int | None = None,
) -> dict:
    """One model's row (FIELDS), at the sample shapes `inputs[spec]` where given (its default
    input otherwise): analysed, then profiled on `device` unless over the limits; every
    exception ends up in `why`, on one line."""
    import torch

    from archprof.measure.profile import profile_analysis

    _hubs()  # torchvision importable here too (a worker process)
    torch.set_num_threads(1)  # the workers share the machine's cores
    row = dict.fromkeys(FIELDS, "")
    row["model"] = spec
    try:
        analysed, dtype = analysed_or_refused(row, dtype, (inputs or {}).get(spec), batch or 1, training=False)
        if analysed is None:
            return row
        totals = analysed.report.totals
        row.update(params=totals.param_count, macs=totals.macs, predicted_peak=totals.peak_memory_bytes)
        if totals.macs > max_macs or totals.peak_memory_bytes > max_bytes:
            row.update(status=NOT_RUN, why=f"over {max_macs:,} MACs or {max_bytes:,} B predicted")
            return row
        report = profile_analysis(analysed, dtype=dtype, device=device, warmup=warmup, repeat=repeat)
    except Exception as exc:  # a model that fails is a row, not the end of the sweep
        row.update(status=FAILED, why=" ".join(str(exc).split())[:300])
        return row
    measured = report.measured
    by_name = {check.name: check.status for check in measured.checks}
    times = report.layers[["roofline_time_ms", "time_ms"]].dropna()
    row.update(
        status=CHECKED,
        shapes=by_name["output shapes"],
        flops=by_name["FLOPs"],
        memory=by_name["peak memory"],
        mismatches=" | ".join(measured.mismatches)[:1000],
        measured_peak=measured.measured_peak_memory_bytes or "",
        median_ms=round(measured.median_ms, 3),
        hooked_ms=round(measured.hooked_median_ms, 3),
        rows_timed=len(times),
        rank_correlation=_rank_correlation(times) if len(times) > 2 else "",
    )
    return row


def _rank_correlation(times) -> float | str:
    """Spearman's correlation of the rows' roofline times with their measured times (the
    Pearson correlation of their ranks, ties sharing the mean rank); "" where either is
    constant."""
    ranks = times.rank()
    correlation = ranks["roofline_time_ms"].corr(ranks["time_ms"])
    return "" if correlation != correlation else round(float(correlation), 3)  # NaN: a constant column


def markdown(rows: list[dict], command: str, jobs: int, wall_s: float, device: str, at: str) -> str:
    """The report: `at` says the input, batch, dtype and passes the models ran at."""
    checked = [row for row in rows if row["status"] == CHECKED]
    counts = {status: sum(row["status"] == status for row in rows) for status in (CHECKED, NOT_RUN, FAILED, REFUSED)}
    lines = [
        "# archprof benchmark: `profile`'s cross-check against a real run",
        "",
        f"- Date: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
        f"- Command: `python benchmarks/profile_sweep.py {command}` ({jobs} worker(s), {wall_s:.0f} s)",
        f"- Device: {device}; {at}; random weights.",
        f"- {machine_text()}",
        "",
        f"Checked: {counts[CHECKED]} of {len(rows)} models ({counts[NOT_RUN]} over the limits and not run, "
        f"{counts[FAILED]} failed, {counts[REFUSED]} refused by the model: its own forward raises at that input).",
        "",
    ]
    lines += markdown_table(
        ["check", "ok", "mismatch", "skipped"],
        [
            [name, *(str(sum(row[field] == s for row in checked)) for s in ("ok", "mismatch", "skipped"))]
            for name, field in zip(CHECKS, ("shapes", "flops", "memory"), strict=True)
        ],
        "lrrr",
    )
    lines += ["", *_figures(checked), "", TIMES_NOTE.format(jobs=jobs)]
    mismatched = [row for row in checked if row["mismatches"]]
    if mismatched:
        lines += ["", "## Mismatches", "", *(f"- `{row['model']}`: {row['mismatches']}" for row in mismatched)]
    return "\n".join(lines + failed_and_refused(rows)) + "\n"


def _figures(checked: list[dict]) -> list[str]:
    """What the runs measured, beside the predictions: the peak, the hooks' cost, the roofline's order."""
    peaks = [row for row in checked if row["measured_peak"] != ""]
    ratios = [row["measured_peak"] / row["predicted_peak"] for row in peaks if row["predicted_peak"]]
    hooks = [row["hooked_ms"] / row["median_ms"] for row in checked if row["median_ms"]]
    correlations = [row["rank_correlation"] for row in checked if row["rank_correlation"] != ""]
    rows = [
        [
            "peak memory measured to the byte",
            f"{sum(r['measured_peak'] == r['predicted_peak'] for r in peaks)} of {len(peaks)}",
        ],
    ]
    if ratios:
        rows.append(["measured / predicted peak: median (lowest, highest)", _spread(ratios, "{:.4f}")])
    if hooks:
        rows.append(
            ["forward with every leaf timed / plain forward: median (lowest, highest)", _spread(hooks, "{:.2f}")]
        )
    if correlations:
        rows.append(
            [
                "rank correlation, roofline time against measured time per row: median (lowest, highest)",
                _spread(correlations, "{:.2f}"),
            ]
        )
    return markdown_table(["figure", "value"], rows, "lr")


def _spread(values: list[float], form: str) -> str:
    return f"{form.format(statistics.median(values))} ({form.format(min(values))}, {form.format(max(values))})"


def main() -> None:
    from archprof.errors import ArchprofError
    from archprof.load.common import DTYPES
    from archprof.measure.device import resolve_device
    from archprof.parallel import ordered_map
    from archprof.units import shape_text
    from archprof.zoo import MODELS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=None, help="hub models drawn at random (default: every one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", default=None, help="these model specs instead")
    parser.add_argument(
        "--families", type=_families, default=("classification",), help="torchvision's, as hub_sweep.py takes them"
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--dtype", default=None, choices=list(DTYPES), help="the models and inputs cast to it")
    parser.add_argument(
        "--input", type=input_size, default=None, help="one sample's shape, 3x199x167 (default: each model's own)"
    )
    parser.add_argument("--batch", type=batch_size, default=None, help="default 1")
    parser.add_argument("--max-macs", type=int, default=10_000_000_000, help="do not run models predicted to need more")
    parser.add_argument("--max-bytes", type=int, default=2_000_000_000, help="do not run models predicted to need more")
    parser.add_argument(
        "--warmup", type=whole_number(0, "pass count"), default=1, help="untimed passes of each model first"
    )
    parser.add_argument("--repeat", type=whole_number(1, "pass count"), default=1, help="timed passes of each model")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (each runs its forwards on one thread)")
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        help="default: reports/profile_sweep[_families][_device][_dtype][_CxHxW][_batchN].md",
    )
    options = parser.parse_args()
    other_families = options.families != ("classification",)
    name = "profile_sweep" + ("_families" if other_families else "")
    if options.device != "cpu":
        name += "_" + options.device.replace(":", "")
    if options.dtype is not None:
        name += f"_{options.dtype}"
    report = options.report or ROOT / "reports" / f"{name}{sample_suffix(options.input, options.batch)}.md"
    try:  # before a run of minutes finds out at its end: one line, exit 2
        resolve_device(options.device)
        ready_to_write(report)
    except ArchprofError as exc:
        parser.error(str(exc))
    if options.models:
        chosen, drawn = options.models, f"--models {' '.join(options.models)}"
    else:
        hub = hub_models(options.families)
        if options.sample is not None:
            if not 0 <= options.sample <= len(hub):
                parser.error(f"--sample {options.sample}: give 0 to {len(hub)}, the hub models there are")
            hub = sorted(random.Random(options.seed).sample(hub, options.sample))
        chosen = [*MODELS, *hub] if "classification" in options.families else hub
        drawn = f"--sample {options.sample} --seed {options.seed}" if options.sample is not None else ""
        drawn += f" --families {','.join(options.families)}" if other_families else ""
    start = time.perf_counter()

    def progress(phase: str, done: int, total: int) -> None:
        print(f"\r{done}/{total}", end="", file=sys.stderr, flush=True)

    rows = ordered_map(
        functools.partial(
            profile_one,
            device=options.device,
            max_macs=options.max_macs,
            max_bytes=options.max_bytes,
            warmup=options.warmup,
            repeat=options.repeat,
            dtype=options.dtype,
            inputs=sweep_inputs(options.families, chosen, options.input),
            batch=options.batch,
        ),
        chosen,
        jobs=options.jobs,
        progress=progress,
    )
    print(file=sys.stderr)
    # What runs the same models as this run did (--jobs and --report aside).
    command = (
        drawn
        + (f" --device {options.device}" if options.device != "cpu" else "")
        + (f" --dtype {options.dtype}" if options.dtype else "")
        + sample_options(options.input, options.batch)
        + f" --max-macs {options.max_macs} --max-bytes {options.max_bytes}"
        + f" --warmup {options.warmup} --repeat {options.repeat}"
    ).strip()
    sample = f"input {shape_text(options.input)}" if options.input else "default input"
    dtype = options.dtype or "the model's own dtype"
    at = f"{sample}, batch {options.batch or 1}, {dtype}, {options.warmup} untimed and {options.repeat} timed pass(es)"
    text = markdown(rows, command, options.jobs, time.perf_counter() - start, options.device, at)
    write_reports(report, text, FIELDS, rows)
    print(text)


if __name__ == "__main__":
    main()
