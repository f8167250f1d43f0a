"""Architectures side by side: one row per model, the metrics a budget can limit
(`archprof.metrics`), and ratios against the first model (the baseline); the frame as CSV,
JSON and Markdown cells."""

from __future__ import annotations

import functools
import os
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from archprof.analysis import Analysis, analysis, check_optimizer, checked_batch_and_dtype, load, model_label
from archprof.errors import ArchprofError, check_flag, errors_named, shown, warn
from archprof.lazy_modules import LazyModule
from archprof.load import InputsLike
from archprof.measure.clock import busy_machine_note, latency_ms, spread_note
from archprof.measure.device import (
    drawn_as_traced,
    materialise,
    random_inputs,
    real_run_errors,
    refuse_a_run_that_cannot_fit,
)
from archprof.metrics import (
    METRICS,
    MetricUnavailable,
    final_field_note,
    final_receptive_field,
    final_receptive_field_dims,
    has_metric,
)
from archprof.output import json_text
from archprof.parallel import Progress, checked_jobs, checked_progress, ordered_map
from archprof.random_state import random_state_kept
from archprof.report import Report, fits_int64
from archprof.report.formats import csv_text
from archprof.text import dims_text, field_text, markdown_code, markdown_literal
from archprof.units import checked_count, human_bytes, human_count, ratio_text, shapes_text

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = LazyModule("pandas")  # for typing.get_type_hints: pandas imported only when an annotation is read


def compare(
    models: Iterable[Any],
    input_size: Sequence[int] | str | None = None,
    batch: int | None = None,
    dtype: torch.dtype | str | None = None,
    profile: bool = False,
    runs: int = 5,
    *,
    training: bool = False,
    optimizer: str = "sgd",
    fold_bn: bool = False,
    inputs: InputsLike | None = None,
    args: Mapping[str, Any] | None = None,
    weights: str | Path | None = None,
    trust_pickle: bool = False,
    jobs: int | None = 1,
    progress: Progress | None = None,
    sort: str | None = None,
) -> pd.DataFrame:
    """One row per model: counts and bytes (int64; exact Python ints, dtype object, in a
    column where a value passes int64), ratios against the first model (float64; NaN in
    every row where the first model's figure is 0, as `archprof.comparison.ratio_notes(frame)` says).

    `models` is a list (or any iterable, not one model alone) of what `analyze()` takes, or
    a dict of them, each row then named by its key ({"mine": model, "resnet50": "resnet50"});
    `batch`, `dtype`, `inputs`, `args`, `weights` and `trust_pickle` as for `analyze()`,
    applied to every model. `input_size` (one sample,
    e.g. (3, 224, 224)) or `inputs` apply to every model; None takes each model's usual
    input. `profile=True` adds `latency_ms`: the median of at least `runs` CPU forward passes
    of the real model with random weights, under `torch.no_grad()`; a model whose predicted
    peak passes the memory free is refused before any model is timed. `training=True`
    analyses one training step of each model and adds `training_flops` (forward and
    backward, `Report.totals.training_flops`), `training_peak_bytes` (the step's peak,
    with `optimizer`'s state: plain SGD, the default, keeps none; any other is refused
    without `training`) and `optimizer` (its name, lower case, as `Report.totals.optimizer`
    and every rendering of the comparison say it); `peak_memory_bytes` is then the forward's
    peak, what autograd saved held. `fold_bn=True` compares the inference views,
    BatchNorms folded (as `analyze`); `profile=True` refuses it, as it times the models as
    they are.

    Columns: model, input_shape, dtype, param_count, param_bytes, macs, flops,
    elementwise_flops, activation_bytes, [peak_memory_bytes], [receptive_field (Int64,
    <NA> without a spatial layer: the field's smallest side, the input's where every unit of
    the last map sees the whole input), receptive_field_dims (the field per spatial
    dimension, (212, 212); "input" for such a global field; None without one),
    receptive_field_note],
    [training_flops, training_peak_bytes, optimizer (string)], param_ratio, macs_ratio, [latency_ms].

    `jobs` (default 1: everything in this process, as a notebook or a script fed on stdin
    needs) analyses models given as specs (strings, paths) in up to that many worker
    processes (None: one per core), with exactly the results of one process; a model given
    as a module or a callable is analysed here. With jobs above 1, call it under
    `if __name__ == "__main__":`, as every process pool needs (`archprof compare` uses one
    per core). `profile=True` works in this
    process alone: timings taken side by side on shared cores would be skewed. `progress`
    is called as `progress("analysing", done, total)`. `sort` orders the rows ascending by a
    metric ("params", "macs", "flops", "activation", "peak-memory", "receptive-field",
    "training-memory", "training-flops", "latency") or by "model", the ratios still against
    the first model given (`frame.attrs["baseline"]`); a key the comparison cannot have is
    refused before any model is analysed.

    Example (torchvision's ResNet-18 and ResNet-50: 11,689,512 and 25,557,032 parameters):

        >>> frame = archprof.compare(["resnet18", "resnet50"])
        >>> frame["param_count"].tolist(), frame["param_ratio"].round(2).tolist()
        ([11689512, 25557032], [1.0, 2.19])
    """
    batch, dtype = checked_batch_and_dtype(batch, dtype)
    names = None
    if isinstance(models, Mapping):  # {name: model}: each row called by its key
        names, models = [str(name) for name in models], list(models.values())
    if isinstance(models, (str, Path, torch.nn.Module)) or not isinstance(models, Iterable):
        # A string or a Sequential would be iterated: one model per character or layer.
        raise ArchprofError(
            f"compare takes a list of models, got one {type(models).__name__}: e.g. compare(['resnet18', 'resnet50'])"
        )
    models = list(models)
    if not models:
        raise ArchprofError("compare needs at least one model")
    # Each model with its label (its name, else `model_label`), which leads its errors.
    items = list(zip(names or [model_label(model) for model in models], models, strict=True))
    _warn_of_repeats(items)
    # Here, not per model: errors of the call, not of the first model's analysis ("lenet5: training must be ...").
    flags = {"profile": profile, "trust_pickle": trust_pickle, "training": training, "fold_bn": fold_bn}
    for flag, value in flags.items():
        check_flag(flag, value)
    check_optimizer(optimizer, training)
    if sort is not None:
        sort_column(sort, training=training, profile=profile)
    if profile and fold_bn:
        raise ArchprofError("--profile times the models as they are: drop --fold-bn (fold_bn=True)")
    runs = checked_runs(runs)
    checked_progress(progress)
    checked_jobs(jobs)  # here, not in ordered_map alone: profile=True never reaches it
    options = {
        "input_size": input_size,
        "batch": batch,
        "dtype": dtype,
        "inputs": inputs,
        "args": args,
        "weights": weights,
        "trust_pickle": trust_pickle,
        "training": training,
        "optimizer": optimizer,
        "fold_bn": fold_bn,
    }
    latencies = None
    if profile:
        analyses = ordered_map(functools.partial(_analysis, **options), items, jobs=1, progress=progress)
        for analysed in analyses:  # every model's fit first: a refusal after others were timed wastes their time
            refuse_a_run_that_cannot_fit(analysed, torch.device("cpu"))
        latencies = [measure_latency(analysed, dtype=dtype, runs=runs) for analysed in analyses]
        busy = busy_machine_note(torch.device("cpu"))
        if busy is not None:
            warn(f"latency_ms: {busy}")
        reports = [analysed.report for analysed in analyses]
    else:
        report = functools.partial(_report, **options)
        reports = ordered_map(report, items, jobs=jobs, local=_not_a_spec, progress=progress, crashed=_crashed)
    if names is not None:
        reports = [replace(made, model=name) for made, name in zip(reports, names, strict=True)]
    frame = comparison_frame(reports, latencies)
    return sort_comparison(frame, sort) if sort is not None else frame


def _warn_of_repeats(items: list[tuple[str, Any]]) -> None:
    """Say which models are named more than once (the same spec, or the same module object):
    each is analysed again, its rows alike (`compare resnet18 resnet18`, a slip maybe)."""
    keys = [str(model) if isinstance(model, (str, Path)) else id(model) for _, model in items]
    seen = Counter(keys)
    repeated = dict.fromkeys(label for (label, _), key in zip(items, keys, strict=True) if seen[key] > 1)
    if repeated:
        warn(f"{', '.join(repeated)}: named more than once, each time analysed alike (one row each)")


def _analysis(
    item: tuple[str, Any], input_size, batch, dtype, inputs, args, weights, trust_pickle, training, optimizer, fold_bn
) -> Analysis:
    """The analysis of a model, given with its label (`model_label`, or its name), which leads its errors."""
    label, model = item
    with errors_named(label):
        loaded = load(model, args, weights, trust_pickle)
        return analysis(loaded, input_size, batch, dtype, training, inputs=inputs, optimizer=optimizer, fold_bn=fold_bn)


def _report(item: tuple[str, Any], **options: Any) -> Report:
    return _analysis(item, **options).report


def _crashed(item: tuple[str, Any], reason: str) -> Report:
    """A model whose worker process died analysing it (`ordered_map`): its error, named."""
    with errors_named(item[0]):
        raise ArchprofError(reason)


def _not_a_spec(item: tuple[str, Any]) -> bool:
    """A module or a callable, analysed in this process; a spec (a string, a path) can be sent."""
    return not isinstance(item[1], str | os.PathLike)


def comparison_frame(reports: Sequence[Report], latencies: Sequence[float] | None = None) -> pd.DataFrame:
    import pandas as pd

    data: dict[str, pd.Series] = {
        "model": pd.Series([r.model for r in reports], dtype="string"),
        "input_shape": pd.Series([shapes_text(r.input_shapes) for r in reports], dtype="string"),
        "dtype": pd.Series([r.dtype for r in reports], dtype="string"),
    }
    for name in ("param_count", "param_bytes", "macs", "flops", "elementwise_flops", "activation_bytes"):
        data[name] = _exact_integers([int(getattr(r.totals, name)) for r in reports])
    if all(has_metric(r, "peak-memory") for r in reports):
        data["peak_memory_bytes"] = _exact_integers([METRICS["peak-memory"].read(r) for r in reports])
    if all(has_metric(r, "receptive-field") for r in reports):
        data["receptive_field"] = pd.Series([_optional(final_receptive_field, r) for r in reports], dtype="Int64")
        data["receptive_field_dims"] = pd.Series([_optional(final_receptive_field_dims, r) for r in reports])
        data["receptive_field_note"] = pd.Series([final_field_note(r) for r in reports], dtype="string")
    if all(r.training for r in reports):
        data["training_flops"] = _exact_integers([METRICS["training-flops"].read(r) for r in reports])
        data["training_peak_bytes"] = _exact_integers([METRICS["training-memory"].read(r) for r in reports])
        data["optimizer"] = pd.Series([r.totals.optimizer for r in reports], dtype="string")
    for name, column in (("param_ratio", "param_count"), ("macs_ratio", "macs")):
        baseline = int(data[column].iloc[0])
        data[name] = data[column].astype("float64") / baseline if baseline else float("nan")
    if latencies is not None:
        data["latency_ms"] = pd.Series(latencies, dtype="float64")
    frame = pd.DataFrame(data)
    frame.attrs["baseline"] = reports[0].model  # the ratios' denominator, kept through sorting
    return frame


def _exact_integers(values: list[int]) -> pd.Series:
    """int64 when every value and their sum fit (`fits_int64`), else the Python ints themselves
    (dtype object): never wrapped, summed either."""
    import pandas as pd

    return pd.Series(values, dtype="int64" if fits_int64(values) else "object")


def _optional(read: Callable[[Report], Any], report: Report) -> Any:
    try:
        return read(report)
    except MetricUnavailable:
        return None


def checked_runs(runs: Any) -> int:
    """`runs` as a Python int of at least 1 (a NumPy integer too)."""
    return checked_count("runs", runs, 1)


def measure_latency(analysed: Analysis, dtype: torch.dtype | None = None, runs: int = 5) -> float:
    """Median milliseconds of CPU forward passes of the analysed model at its analysed inputs
    (`archprof.measure.clock.latency_ms`: after warm-up, at least `runs`, more for a fast
    model). Built for real with random weights, as `archprof profile` builds it: a module
    you pass is copied, so that neither its weights nor its mode change."""
    runs = checked_runs(runs)
    cpu = torch.device("cpu")
    refuse_a_run_that_cannot_fit(analysed, cpu)
    with random_state_kept(cpu, seed=drawn_as_traced(analysed)):  # the caller's generator as it was
        module = materialise(analysed.loaded, cpu, dtype)
        inputs = random_inputs(analysed, cpu)
        with real_run_errors(analysed.loaded.name, cpu, analysed.batch), torch.no_grad():
            times = latency_ms(lambda: inputs(module), cpu, runs)
    spread = spread_note(times)
    if spread is not None:
        name = analysed.loaded.name
        warn(f"{name}'s latency_ms: {spread} over its {len(times)} passes; more runs, or a quieter machine")
    return statistics.median(times)


# -- plain-data forms of a comparison (CSV, JSON, Markdown) ---------------------------------


def comparison_csv(frame: pd.DataFrame) -> str:
    """CSV written as `Report.to_csv` writes it (`csv_text`): model names neutralised against
    formula injection, a row holding a carriage return quoted."""
    header = list(frame.columns)
    rows = ([_csv_value(name, record[name]) for name in header] for record in comparison_records(frame))
    return csv_text(header, rows, [name in _USER_TEXT for name in header])


_USER_TEXT = ("model", "receptive_field_note")  # a note names the model's modules


def _csv_value(name: str, value: Any) -> Any:
    """A field per dimension as a report's CSV writes one, '212x212'; any other value as it is."""
    return dims_text(value) if name == "receptive_field_dims" else value


def comparison_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain Python values (int, float, str; None for missing)."""
    import pandas as pd

    records = []
    for row in frame.to_dict("records"):
        plain = {}
        for key, value in row.items():
            if value is pd.NA or (isinstance(value, float) and value != value):
                plain[key] = None
            elif hasattr(value, "item"):
                plain[key] = value.item()
            else:
                plain[key] = value
        records.append(plain)
    return records


def comparison_json(frame: pd.DataFrame) -> str:
    records = comparison_records(frame)
    baseline = frame.attrs.get("baseline", records[0]["model"] if records else None)
    return json_text({"baseline": baseline, "models": records})


# What a comparison sorts by: each key -> its column.
_SORT_COLUMNS = {"model": "model", "latency": "latency_ms", **{k: m.column for k, m in METRICS.items()}}


def sort_column(key: Any, *, training: bool, profile: bool) -> str:
    """The column sort key `key` names (`sort_comparison`): a metric (`params`, `macs`, ...),
    `latency` or `model`. Refused: any other, a training step's figure in a comparison
    made without `training`, the latency in one made without `profile`."""
    if not isinstance(key, str):
        raise ArchprofError(f"sort must be a name such as 'macs', got {shown(key)}")
    named = key.strip().lower().replace("_", "-")
    column = _SORT_COLUMNS.get(named)
    if column is None:
        raise ArchprofError(f"cannot sort by '{key}': choose one of {', '.join(_SORT_COLUMNS)}")
    metric = METRICS.get(named)
    if metric is not None and metric.training and not training:
        raise ArchprofError(
            f"cannot sort by '{key}': it is a training step's figure: add --train (Python: training=True)"
        )
    if named == "latency" and not profile:
        raise ArchprofError(f"cannot sort by '{key}': nothing was timed: add --profile (Python: profile=True)")
    return column


def sort_comparison(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    """Rows in ascending order of a metric (`params`, `macs`, ..., `latency`) or of `model`
    (`sort_column`).

    Ratios keep the first model given as their baseline."""
    columns = frame.columns
    column = sort_column(key, training="training_flops" in columns, profile="latency_ms" in columns)
    if column not in columns:
        raise ArchprofError(f"cannot sort by '{key}': {column} is not in this comparison (not every model has one)")
    frame = frame.sort_values(column, kind="stable", na_position="last").reset_index(drop=True)
    frame.attrs["sorted_by"] = column  # a narrow table keeps it (`sorted_heading`)
    return frame


def _ratio(value: float) -> str:
    return "-" if value != value else ratio_text(value)


# A comparison's columns as tables and Markdown show them: heading, frame column, cell.
_CELLS = (
    ("Model", "model", str),
    ("Input", "input_shape", str),
    ("Params", "param_count", human_count),
    ("x Params", "param_ratio", _ratio),
    ("MACs", "macs", human_count),
    ("x MACs", "macs_ratio", _ratio),
    ("FLOPs", "flops", human_count),
    ("Training FLOPs", "training_flops", human_count),
    ("Activations", "activation_bytes", human_bytes),
    ("Peak memory", "peak_memory_bytes", human_bytes),
    ("Training step peak", "training_peak_bytes", human_bytes),
    ("Receptive field", "receptive_field", field_text),  # of receptive_field_dims: see `_cell`
    ("Latency (CPU)", "latency_ms", lambda v: f"{v:.1f} ms"),
)


# In a comparison of training steps, `peak_memory_bytes` is the forward's peak with what
# autograd saved held to its end (`archprof.text.peak_rows`), not an inference peak.
_TRAINING_HEADINGS = {"peak_memory_bytes": "Forward peak"}


def sorted_heading(frame: pd.DataFrame) -> str | None:
    """The heading of the column `sort_comparison` sorted `frame` by (None: unsorted)."""
    return _heading(frame.attrs.get("sorted_by"), _is_training(frame))


def _heading(column: str | None, training: bool = False) -> str | None:
    """The heading a comparison's table gives the frame's `column` (None: no such column)."""
    if training and column in _TRAINING_HEADINGS:
        return _TRAINING_HEADINGS[column]
    return next((header for header, name, _ in _CELLS if name == column), None)


def _is_training(frame: pd.DataFrame) -> bool:
    return "training_peak_bytes" in frame.columns


def training_optimizer(frame: pd.DataFrame) -> str | None:
    """The optimizer whose state a training comparison's step peaks hold, as its outputs
    name it ("adam"; names that differ joined, "adam, sgd"); None in an inference comparison."""
    if "optimizer" not in frame.columns:
        return None
    return ", ".join(dict.fromkeys(frame["optimizer"].dropna()))


def comparison_columns(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """(heading, frame column) of each column a comparison's table shows, in order."""
    return [(header, column) for header, column, _ in _present(frame)]


def comparison_cells(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Headers and human-readable cells of a comparison (for tables, Markdown and HTML), the
    columns of `comparison_columns`."""
    present = _present(frame)
    rows = []
    for record in comparison_records(frame):
        rows.append([_cell(record, column, show) for _, column, show in present])
    return [header for header, _, _ in present], rows


def _present(frame: pd.DataFrame) -> list[tuple[str, str, Callable[[Any], str]]]:
    training = _is_training(frame)
    return [(_heading(column, training), column, show) for _, column, show in _CELLS if column in frame.columns]


def _cell(record: dict[str, Any], column: str, show: Callable[[Any], str]) -> str:
    value = record[column]
    if column == "receptive_field":
        # Per spatial dimension, as summary and rf show a field: "212x212", not its smallest
        # side alone (the column, what budgets and --sort read); "≤212x212" where it is only
        # an upper bound, "undefined" where it has none, `bound_notes` saying why.
        note = record.get("receptive_field_note") or ""
        if value is None:
            return "undefined" if note.startswith("undefined") else "-"
        return ("≤" if note else "") + show(record["receptive_field_dims"])
    return "-" if value is None else show(value)


def bound_notes(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """(model, note) for each model whose receptive field is only an upper bound, or undefined:
    the note says why ("an upper bound: aten.slice in (model) picks ...", "undefined: ..."),
    as `archprof rf` does."""
    if "receptive_field_note" not in frame.columns:
        return []
    return [(r["model"], r["receptive_field_note"]) for r in comparison_records(frame) if r["receptive_field_note"]]


def ratio_notes(frame: pd.DataFrame) -> list[str]:
    """Why a ratio column is empty: the baseline's figure, which it divides by, is 0 (a model
    of activations alone has no parameters and no MACs), so every model's ratio is NaN."""
    return [
        f"{_heading(column)}: none, as the baseline has 0 {what}"
        for column, what in (("param_ratio", "parameters"), ("macs_ratio", "MACs"))
        if len(frame) and column in frame.columns and frame[column].isna().all()
    ]


def comparison_markdown(frame: pd.DataFrame) -> str:
    headers, rows = comparison_cells(frame)
    baseline, optimizer = frame.attrs.get("baseline"), training_optimizer(frame)
    lines = []
    if optimizer:
        named = markdown_code(optimizer, in_table=False)
        lines += [f"Training step peak: one training step with optimizer {named}.", ""]
    if baseline:
        lines += [f"Ratios are against {markdown_code(baseline, in_table=False)}.", ""]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join("---" if i < 2 else "---:" for i in range(len(headers))) + "|")
    lines += ["| " + " | ".join(map(markdown_literal, row)) + " |" for row in rows]
    notes = [f"- {note}" for note in ratio_notes(frame)] + [
        f"- {markdown_code(model, in_table=False)}: receptive field is {markdown_literal(note)}"
        for model, note in bound_notes(frame)
    ]
    lines += ["", *notes] if notes else []
    return "\n".join(lines) + "\n"
