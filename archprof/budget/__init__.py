"""Model budgets for CI: limits and the verdicts of a model's report against them, budget
entries and their checking, several at once (the budget files are files.py's, the verdicts'
rows, JUnit XML and Markdown summary verdicts.py's).

A budget is a set of limits on one model at one input, e.g. at most 30M parameters and 5G
MACs. Limits come from the command line (`archprof check resnet50 --max-params 30M`) or
from a budget file: `archprof.toml`, or `[tool.archprof]` in `pyproject.toml`:

    [[models]]
    name = "resnet50"            # a built-in name, or "package.module:factory"
    input = "3x224x224"          # optional for built-ins: one sample's shape
    batch = 1                    # optional: default 1, or an exported program's own
    dtype = "float32"            # optional: float32, float16 or bfloat16
    args = { num_classes = 10 }  # optional: the factory's keyword arguments (as --arg)
    weights = "resnet50.pt"      # optional: a state-dict file, beside the budget file (as --weights)
    fold-bn = true               # optional: BatchNorms folded, the inference view (as --fold-bn)
    max-params = "30M"           # counts: K, M, G, T (decimal), "1.5G", or a plain integer
    max-macs = "5G"
    max-flops = "10G"
    max-activation = "200MB"     # sizes: kB, MB, GB, TB (decimal), KiB, MiB, GiB, TiB (binary)
    max-peak-memory = "1GB"      # inference: parameters, buffers and the largest live activations
    min-receptive-field = 200    # pixels: the field of the last spatial layer (an upper bound cannot meet it)
    max-training-memory = "8GB"  # one training step's peak, backward included (optimizer state too)
    optimizer = "adam"           # for max-training-memory: sgd (default), momentum, adam, ... (archprof.optimizers)
    max-training-flops = "30G"   # one training step: forward and backward (the backward traced on meta)

(In pyproject.toml the table is `[[tool.archprof.models]]`.) Anything wrong in a file is an
ArchprofError naming the file, the line and the key."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archprof.analysis import analyze
from archprof.errors import ArchprofError, cut, shown
from archprof.load import ModelOptions, parse_dtype
from archprof.metrics import METRICS, Metric, final_receptive_field_bound, final_receptive_field_dims
from archprof.parallel import Progress, ordered_map
from archprof.passes.receptive_field import FieldMark
from archprof.report import Report
from archprof.text import dims_text, field_text, visible_text
from archprof.units import (
    human_value,
    in_binary_units,
    parse_count,
    parse_pixels,
    parse_size,
    shapes_text,
)

# -- limits ------------------------------------------------------------------------------


def close_key_hint(key: str, known: Sequence[str]) -> str:
    """ " (did you mean 'max-params'?)" for a key close to one of `known` (underscores read as
    dashes, any case); else ""."""
    spelled = key.replace("_", "-").lower() if isinstance(key, str) else None
    close = difflib.get_close_matches(spelled, known, n=1, cutoff=0.6) if spelled is not None else []
    return f" (did you mean '{close[0]}'?)" if close else ""


@dataclass(frozen=True)
class Limit:
    key: str  # as in budgets: "max-params", "min-receptive-field"
    metric: Metric
    bound: str  # "max" or "min"
    threshold: int
    text: str  # as the user wrote it, e.g. "30M"
    # Of a limit relative to a baseline report (`archprof.budget.baseline.MadeAt`): called with
    # the report judged and its model's name, it refuses one not made at the baseline's input.
    made_alike: Callable[[Report, str], None] | None = field(default=None, compare=False)

    def margin(self, value: int) -> int:
        """Headroom: how far the value is inside the limit (negative when it is exceeded)."""
        return self.threshold - value if self.bound == "max" else value - self.threshold

    def figure_text(self, value: int) -> str:
        """A figure of the limit's metric as tables show it; bytes in the limit's own units
        (MiB where it was given as "512MiB": not 102.47 MB against 512MiB)."""
        return human_value(self.metric.unit, value, binary=in_binary_units(self.text))


LIMIT_KEYS: dict[str, tuple[str, str]] = {
    "max-params": ("params", "max"),
    "max-macs": ("macs", "max"),
    "max-flops": ("flops", "max"),
    "max-activation": ("activation", "max"),
    "max-peak-memory": ("peak-memory", "max"),
    "min-receptive-field": ("receptive-field", "min"),
    "max-training-memory": ("training-memory", "max"),
    "max-training-flops": ("training-flops", "max"),
}


def parse_limit(key: str, value: Any) -> Limit:
    """The limit `key` (a name of LIMIT_KEYS, with dashes or underscores: "max-params",
    "max_params") at `value` ("30M", "1GB", 200)."""
    canonical = key.replace("_", "-") if isinstance(key, str) else None
    if canonical not in LIMIT_KEYS:
        raise ArchprofError(
            f"unknown limit {shown(key)}{close_key_hint(canonical, LIMIT_KEYS)}; known limits: {', '.join(LIMIT_KEYS)}"
        )
    key = canonical
    metric_key, bound = LIMIT_KEYS[key]
    metric = METRICS[metric_key]
    parse = {"bytes": parse_size, "pixels": parse_pixels}.get(metric.unit, parse_count)
    try:
        threshold = parse(value)
    except ArchprofError as exc:
        raise ArchprofError(f"{key}: {exc}") from None
    return Limit(key, metric, bound, threshold, str(value).strip())


@dataclass(frozen=True)
class Verdict:
    model: str
    input_shape: str  # batch included, e.g. "1x3x224x224"
    limit: Limit
    value: int
    dtype: str = ""  # the report's: two entries of one model and input may differ in it alone
    optimizer: str = ""  # of a max-training-memory limit: the optimizer whose step it was
    bound: str = ""  # of a receptive-field limit: why the value is only an upper bound ("an upper bound: ...")
    # Of a receptive-field limit: the field per dimension, `value` its smallest side; or
    # FieldMark.INPUT, every unit of the last map seeing the whole input, `value` the input's.
    field: tuple[int, ...] | FieldMark = ()
    folded: bool = False  # judged on the inference view, BatchNorms folded (--fold-bn)
    # What sets its entry apart from another of the same model, input and dtype ("args num_classes=10",
    # "line 5"), which `check_all` gives only where two such entries were checked; else "".
    variant: str = ""

    @property
    def setting(self) -> str:
        """The dtype, the view where it is not the model as it is and the entry's variant, if any:
        "float32, BatchNorms folded", "float32, args num_classes=10". Tables, JUnit and summary
        group and name verdicts by model, input and setting: two entries are two groups."""
        parts = (self.dtype, "BatchNorms folded" if self.folded else "", self.variant)
        return ", ".join(part for part in parts if part)

    @property
    def value_text(self) -> str:
        """The value as tables show it; a field per dimension, as summary and rf show it:
        "212x212", "≤2x2" where it is only an upper bound, "global (224 px)" where every unit
        sees the whole input."""
        if self.field == FieldMark.INPUT:
            shown = f"{field_text(self.field)} ({self.limit.figure_text(self.value)})"
        else:
            shown = dims_text(self.field) if self.field else self.limit.figure_text(self.value)
        return ("≤" if self.bound else "") + shown

    @property
    def margin(self) -> int:
        return self.limit.margin(self.value)

    @property
    def limit_text(self) -> str:
        """The limit as written, e.g. "max-params 30M", "max-training-memory 8GB (adam)"."""
        return f"{self.limit.key} {self.limit.text}{self._optimizer_suffix}"

    @property
    def limit_name(self) -> str:
        """The limit's key, with the optimizer it was checked for: "max-training-memory (adam)"."""
        return f"{self.limit.key}{self._optimizer_suffix}"

    @property
    def _optimizer_suffix(self) -> str:
        return f" ({self.optimizer})" if self.optimizer else ""

    @property
    def unverifiable(self) -> bool:
        """A minimum held against a value that is only an upper bound (a receptive field's):
        the true value may be smaller, so the minimum cannot be shown to hold. (A maximum
        against an upper bound within it holds: the true value is smaller still.)"""
        return self.limit.bound == "min" and bool(self.bound) and self.margin >= 0

    @property
    def passed(self) -> bool:
        return self.margin >= 0 and not self.unverifiable

    @property
    def note(self) -> str:
        """Why a limit within whose figure the value lies fails anyway (`unverifiable`), else ""."""
        if not self.unverifiable:
            return ""
        return f"{self.limit_text} cannot be shown to hold: the field {self.value_text} is {self.bound}"


def evaluate(report: Report, limits: Sequence[Limit], model: str | None = None) -> list[Verdict]:
    """One verdict per limit (`parse_limit`'s). A metric this archprof cannot compute raises
    ArchprofError, as do a report that is not a Report and limits that are not a list of Limits."""
    if not isinstance(report, Report):
        kind = type(report).__name__
        raise ArchprofError(f"evaluate takes the Report analyze returned, got {shown(report)} ({kind})")
    if isinstance(limits, Limit) or not isinstance(limits, Sequence) or not all(isinstance(x, Limit) for x in limits):
        raise ArchprofError(
            f"evaluate takes a list of limits, each made by parse_limit (e.g. [parse_limit('max-params', '30M')]),"
            f" got {shown(limits)}"
        )
    for limit in limits:
        if limit.made_alike is not None:
            limit.made_alike(report, model or report.model)
    shape = shapes_text(report.input_shapes)
    verdicts = []
    for limit in limits:
        try:
            value = limit.metric.read(report)
        except ArchprofError as exc:
            raise ArchprofError(f"{limit.key}: {exc}") from None
        optimizer = (report.totals.optimizer or "") if limit.key == "max-training-memory" else ""
        field = limit.metric.key == "receptive-field"
        bound = final_receptive_field_bound(report) if field else ""
        dims = final_receptive_field_dims(report) if field else ()
        folded = report.batch_norm_folding is not None
        verdict = Verdict(model or report.model, shape, limit, value, report.dtype, optimizer, bound, dims, folded)
        verdicts.append(verdict)
    return verdicts


# -- what to check -----------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetEntry:
    """One model at one input with its limits (from the command line or a budget file)."""

    model: str  # a built-in name or "package.module:factory"
    limits: tuple[Limit, ...]
    input_size: tuple[int, ...] | None = None
    batch: int | None = None  # None: 1, or an exported program's own (as `analyze` takes it)
    dtype: str | None = None
    optimizer: str = "sgd"  # for max-training-memory: a name in archprof.optimizers.OPTIMIZERS
    source: str = ""  # "archprof.toml, line 3": where the entry was defined, for errors
    search_dir: Path | None = field(default=None, compare=False)  # where "module:factory" modules live
    # The folders a "module:factory" or "file.py:factory" entry's code must lie in: a budget
    # file's, whose data must not name `os:system`; None for a model named on the command line.
    confined_to: tuple[Path, ...] | None = field(default=None, compare=False)
    # From the command line: inputs (replacing input_size), factory arguments, weights, trust.
    options: ModelOptions = field(default_factory=ModelOptions)

    def named(self, message: str) -> str:
        """`message` led by which entry it is about: its line in the budget file, else its model."""
        return f"{self.source or self.model}: {message}"


class _Unchecked(ArchprofError):
    """An entry's error, with the batch its model was to be analysed at (None: it did not load
    and the entry gives none, so an exported program's own is not known)."""

    def __init__(self, message: str, batch: int | None = None):  # a default: pickle makes it again from the message
        super().__init__(message)
        self.batch = batch


def check_entry(entry: BudgetEntry) -> list[Verdict]:
    """Analyse the entry's model and judge every limit."""

    dtype = parse_dtype(entry.dtype) if entry.dtype else None
    batch = entry.batch
    try:
        # Once for both analyses; files and modules are looked for in the budget file's folder first.
        loaded = entry.options.load(entry.model, base_dir=entry.search_dir, confined_to=entry.confined_to)
        batch = batch or loaded.batch or 1  # as `analyze` takes None: an exported program's own batch
        inputs = entry.options.inputs or ((entry.input_size,) if entry.input_size is not None else None)
        if loaded.default_inputs is None and inputs is None:
            hint = 'input = "3x224x224"' if entry.source else "--input 3x224x224"
            raise ArchprofError(f"model '{entry.model}' has no default input: give one, e.g. {hint}")
        verdicts: dict[Limit, Verdict] = {}
        # Inference figures from an inference analysis; the training estimate from a training one.
        for training in (False, True):
            limits = [limit for limit in entry.limits if limit.metric.training is training]
            if not limits:
                continue
            report = analyze(
                loaded,
                inputs=inputs,
                batch=entry.batch,
                dtype=dtype,
                fold_bn=entry.options.fold_bn,
                **({"training": True, "optimizer": entry.optimizer} if training else {}),
            )
            verdicts.update(zip(limits, evaluate(report, limits, model=entry.model), strict=True))
        return [verdicts[limit] for limit in entry.limits]
    except ArchprofError as exc:  # which entry: its line in the budget file, else its model
        raise _Unchecked(entry.named(str(exc)), batch) from None


@dataclass(frozen=True)
class EntryError:
    """An entry that could not be checked (a model that does not load, a forward that
    fails): its model and the error, which names the entry's line or model; its input
    (batch included) and dtype where the entry gives them, else ''."""

    model: str
    message: str
    input_shape: str = ""
    dtype: str = ""


def _checked(entry: BudgetEntry) -> list[Verdict] | EntryError:
    try:
        return check_entry(entry)
    except ArchprofError as exc:
        return _entry_error(entry, str(exc), getattr(exc, "batch", entry.batch))


def _crashed(entry: BudgetEntry, reason: str) -> EntryError:
    """An entry whose worker process died analysing it (`ordered_map`): not checked, as one
    whose model failed, the others checked as ever."""
    return _entry_error(entry, entry.named(reason), entry.batch)


def _entry_error(entry: BudgetEntry, message: str, batch: int | None) -> EntryError:
    return EntryError(entry.model, message, _given_input(entry, batch), entry.dtype or "")


def _given_input(entry: BudgetEntry, batch: int | None) -> str:
    """The entry's input as a verdict shows it ("4x3x32x32"), where it gives one sample's shape
    and the batch is known (given, or its model's own: an exported program's is known only once loaded)."""
    if batch is None:
        return ""
    given = entry.options.inputs
    if given is not None:
        try:
            return shapes_text([spec.full_shape(batch) for spec in given])
        except ArchprofError:  # an input too large to make: the entry's error says so
            return ""
    return shapes_text([(batch, *entry.input_size)]) if entry.input_size is not None else ""


def check_all(
    entries: Sequence[BudgetEntry], jobs: int | None = None, progress: Progress | None = None
) -> list[Verdict | EntryError]:
    """Every entry's verdicts, in order, an entry that could not be checked as its
    EntryError (the others are checked all the same); the entries analysed in `jobs` worker
    processes (None: one per core, 1: in this process), as `archprof.parallel.ordered_map`
    runs them."""
    per_entry = ordered_map(_checked, entries, jobs=jobs, progress=progress, phase="checking", crashed=_crashed)
    per_entry = _told_apart(entries, per_entry)
    return [item for result in per_entry for item in ([result] if isinstance(result, EntryError) else result)]


def _told_apart(
    entries: Sequence[BudgetEntry], per_entry: Sequence[list[Verdict] | EntryError]
) -> list[list[Verdict] | EntryError]:
    """The verdicts of entries of one model, input and setting given each a `variant` where
    what no verdict shows sets them apart: their args and weights where those differ; their
    line in the budget file (or place among the models given) where they would otherwise
    make one JUnit testcase twice (as entries that differ only in the optimizer of some other
    limit). Without it, CI reporters merged such testcases (one classname and name), and the
    table and summary showed two models as one."""
    sharing: dict[tuple[str, str, str], list[int]] = {}
    for index, result in enumerate(per_entry):
        if not isinstance(result, EntryError):
            for key in dict.fromkeys((v.model, v.input_shape, v.setting) for v in result):
                sharing.setdefault(key, []).append(index)
    variants: dict[int, str] = {}
    for (model, shape, setting), indices in sharing.items():
        if len(indices) < 2:
            continue
        labels = [_described(entries[index]) for index in indices]
        tests = [
            {v.limit_name for v in per_entry[index] if (v.model, v.input_shape, v.setting) == (model, shape, setting)}
            for index in indices
        ]
        one_test_twice = len(set().union(*tests)) < sum(map(len, tests))
        if one_test_twice and len(set(labels)) < len(labels):  # what they are given does not tell them apart
            labels = [_placed(entries[index], index) for index in indices]
        for index, label in zip(indices, labels, strict=True):
            variants.setdefault(index, label)
    return [
        [dataclasses.replace(v, variant=variants[index]) for v in result] if variants.get(index) else result
        for index, result in enumerate(per_entry)
    ]


def _described(entry: BudgetEntry) -> str:
    """An entry's factory arguments and weights file: "args num_classes=10, weights w.pt"; "" for neither."""
    args = " ".join(f"{key}={shown(value, 40)}" for key, value in entry.options.args.items())
    parts = (f"args {args}" if args else "", f"weights {entry.options.weights}" if entry.options.weights else "")
    return cut(visible_text(", ".join(part for part in parts if part)), 80)


def _placed(entry: BudgetEntry, index: int) -> str:
    """Where an entry was defined: "line 5" (of its budget file: its source less the file's
    name), "model entry 2" (an inline entry's), else "model 2" (its place among those given)."""
    return visible_text(entry.source.rpartition(", ")[2]) if entry.source else f"model {index + 1}"


def check_entries(
    entries: Sequence[BudgetEntry], jobs: int | None = None, progress: Progress | None = None
) -> list[Verdict]:
    """Every entry's verdicts, in order (`check_all`); an entry that could not be checked
    raises its ArchprofError, the first in order."""
    results = check_all(entries, jobs=jobs, progress=progress)
    for result in results:
        if isinstance(result, EntryError):
            raise ArchprofError(result.message)
    return results
