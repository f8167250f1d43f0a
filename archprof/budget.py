"""Model budgets for CI: limits, budget files, verdicts, JUnit XML and a Markdown summary.

A budget is a set of limits on one model at one input, e.g. at most 30M parameters and 5G
MACs. Limits come from the command line (`archprof check resnet50 --max-params 30M`) or
from a budget file: `archprof.toml`, or `[tool.archprof]` in `pyproject.toml`:

    [[models]]
    name = "resnet50"            # a built-in name, or "package.module:factory"
    input = "3x224x224"          # optional for built-ins: one sample's shape
    batch = 1                    # optional, default 1
    dtype = "float32"            # optional: float32, float16 or bfloat16
    max-params = "30M"           # counts: K, M, G, T (decimal), "1.5G", or a plain integer
    max-macs = "5G"
    max-flops = "10G"
    max-activation = "200MB"     # sizes: kB, MB, GB, TB (decimal), KiB, MiB, GiB, TiB (binary)
    max-peak-memory = "1GB"      # inference: parameters, buffers and the largest live activations
    min-receptive-field = 200    # pixels: the field of the last spatial layer
    max-training-memory = "8GB"  # one training step's peak, backward included (optimizer state too)
    optimizer = "adam"           # for max-training-memory: sgd (default), momentum, adam, ... (archprof.optimizers)
    max-training-flops = "30G"   # one training step: forward and backward (the backward traced on meta)

(In pyproject.toml the table is `[[tool.archprof.models]]`.) Anything wrong in a file is an
ArchprofError naming the file, the line and the key."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from archprof.analysis import analyze
from archprof.comparison import METRICS, Metric, final_receptive_field_bound, final_receptive_field_dims
from archprof.errors import ArchprofError
from archprof.load import DTYPES, ModelOptions, parse_dtype, parse_input_size
from archprof.optimizers import OPTIMIZERS
from archprof.output import read_text
from archprof.parallel import Progress, ordered_map
from archprof.passes.optimizer_state import optimizer_state_copies
from archprof.report import Report
from archprof.text import dims_text, limits_verdict, markdown_code, markdown_literal, visible_text
from archprof.units import (
    human_value,
    parse_count,
    parse_pixels,
    parse_size,
    percent_change_text,
    shape_text,
    shapes_text,
)

# -- limits ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limit:
    key: str  # as in budgets: "max-params", "min-receptive-field"
    metric: Metric
    bound: str  # "max" or "min"
    threshold: int
    text: str  # as the user wrote it, e.g. "30M"

    def margin(self, value: int) -> int:
        """Headroom: how far the value is inside the limit (negative when it is exceeded)."""
        return self.threshold - value if self.bound == "max" else value - self.threshold


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
    optimizer: str = ""  # of a max-training-memory limit: the optimizer whose step it was
    bound: str = ""  # of a receptive-field limit: why the value is only an upper bound ("an upper bound: ...")
    field: tuple[int, ...] = ()  # of a receptive-field limit: the field per dimension, `value` its smallest side

    @property
    def value_text(self) -> str:
        """The value as tables show it; a field per dimension, as summary and rf show it:
        "212x212", "≤2x2" where it is only an upper bound."""
        shown = dims_text(self.field) if self.field else human_value(self.limit.metric.unit, self.value)
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
    def passed(self) -> bool:
        return self.margin >= 0


def evaluate(report: Report, limits: Sequence[Limit], model: str | None = None) -> list[Verdict]:
    """One verdict per limit. A metric this archprof cannot compute raises ArchprofError."""

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
        verdicts.append(Verdict(model or report.model, shape, limit, value, optimizer, bound, dims))
    return verdicts


# -- what to check -----------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetEntry:
    """One model at one input with its limits (from the command line or a budget file)."""

    model: str  # a built-in name or "package.module:factory"
    limits: tuple[Limit, ...]
    input_size: tuple[int, ...] | None = None
    batch: int = 1
    dtype: str | None = None
    optimizer: str = "sgd"  # for max-training-memory: a name in archprof.optimizers.OPTIMIZERS
    source: str = ""  # "archprof.toml, line 3": where the entry was defined, for errors
    search_dir: Path | None = field(default=None, compare=False)  # where "module:factory" modules live
    # From the command line: inputs (replacing input_size), factory arguments, weights, trust.
    options: ModelOptions = field(default_factory=ModelOptions)

    def where(self) -> str:
        return f"{self.source}: " if self.source else ""


def check_entry(entry: BudgetEntry) -> list[Verdict]:
    """Analyse the entry's model and judge every limit."""

    dtype = parse_dtype(entry.dtype) if entry.dtype else None
    try:
        # Once for both analyses; files and modules are looked for in the budget file's folder first.
        loaded = entry.options.load(entry.model, base_dir=entry.search_dir)
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
        raise ArchprofError(f"{entry.where() or f'{entry.model}: '}{exc}") from None


@dataclass(frozen=True)
class EntryError:
    """An entry that could not be checked (a model that does not load, a forward that
    fails): its model and the error, which names the entry's line or model."""

    model: str
    message: str


def _checked(entry: BudgetEntry) -> list[Verdict] | EntryError:
    try:
        return check_entry(entry)
    except ArchprofError as exc:
        return EntryError(entry.model, str(exc))


def check_all(
    entries: Sequence[BudgetEntry], jobs: int | None = None, progress: Progress | None = None
) -> list[Verdict | EntryError]:
    """Every entry's verdicts, in order, an entry that could not be checked as its
    EntryError (the others are checked all the same); the entries analysed in `jobs` worker
    processes (None: one per core, 1: in this process), as `archprof.parallel.ordered_map`
    runs them."""
    per_entry = ordered_map(_checked, entries, jobs=jobs, progress=progress, phase="checking")
    return [item for result in per_entry for item in ([result] if isinstance(result, EntryError) else result)]


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


# -- budget files ------------------------------------------------------------------------

ENTRY_KEYS = ("name", "input", "batch", "dtype", "optimizer", *LIMIT_KEYS)
_MODELS_HEADER = re.compile(r"^[ \t]*\[\[\s*(?:tool\s*\.\s*archprof\s*\.\s*)?models\s*\]\]", re.MULTILINE)
_TOOL_HEADER = re.compile(r"^[ \t]*\[\s*tool\s*\.\s*archprof\s*\]", re.MULTILINE)
# The most of a budget file read (hand-written: a few hundred bytes a model); a larger file,
# or one that never ends, is refused unread.
BUDGET_BYTES = 16 * 2**20


def find_budget_file(directory: Path | None = None) -> Path | None:
    """`archprof.toml`, else a `pyproject.toml` with a [tool.archprof] table, in `directory`."""
    directory = directory or Path()  # relative: errors then name "archprof.toml", not a long path
    candidate = directory / "archprof.toml"
    if os.path.lexists(candidate):  # a folder or a broken link too: load_budget_file says what is wrong
        return candidate
    pyproject = directory / "pyproject.toml"
    if pyproject.is_file():
        try:
            document = tomllib.loads(read_text(pyproject, "budget file", BUDGET_BYTES))
        except (ArchprofError, ValueError, RecursionError):  # ValueError: TOMLDecodeError, int()'s limit
            return pyproject  # load_budget_file reports what is wrong with it
        if _has_tool_table(document):
            return pyproject
    return None


def _has_tool_table(document: dict[str, Any]) -> bool:
    """Whether a TOML document has a [tool.archprof] table (`tool` may be anything in a hostile file)."""
    tool = document.get("tool")
    return isinstance(tool, dict) and "archprof" in tool


def load_budget_file(path: str | Path) -> list[BudgetEntry]:
    """The entries of a budget file; any mistake raises ArchprofError naming the line and key."""
    path = Path(path)
    text = read_text(path, "budget file", BUDGET_BYTES)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        where = re.search(r"\(at line (\d+), column \d+\)$", str(exc))
        line = f", line {where.group(1)}" if where else ""
        raise ArchprofError(f"{path}{line}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib parses arrays and inline tables by recursion
        raise ArchprofError(f"{path}: not valid TOML: nested too deeply to read") from None
    except ValueError:  # int() refuses more than 4,300 digits (sys.get_int_max_str_digits)
        raise ArchprofError(f"{path}: not valid TOML: a number with too many digits to read") from None
    budget = _BudgetText(path, text)
    in_tool = _has_tool_table(document)
    if path.name == "pyproject.toml" or (in_tool and "models" not in document):
        if not in_tool:
            raise ArchprofError(f"{path} has no [tool.archprof] table: add [[tool.archprof.models]] entries")
        table, table_name = document["tool"]["archprof"], "[tool.archprof]"
    else:
        table, table_name = document, "the budget file"
    if not isinstance(table, dict):
        raise ArchprofError(f"{budget.at('archprof')}{table_name} must be a table")
    for key in table:
        if key != "models":
            hint = _hint(key, ["models"])
            raise ArchprofError(f"{budget.at(key)}unknown key '{key}' in {table_name}{hint}: list models as [[models]]")
    models = table.get("models")
    if not models:
        raise ArchprofError(f"{path}: no models to check: add a [[models]] entry with a name and limits")
    if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
        raise ArchprofError(f"{budget.at('models')}'models' must be an array of tables ([[models]])")
    return [_entry(budget, index, raw) for index, raw in enumerate(models)]


def _entry(budget: _BudgetText, index: int, raw: dict[str, Any]) -> BudgetEntry:

    header = budget.at(None, index)
    for key in raw:
        if key.replace("_", "-") not in ENTRY_KEYS:
            raise ArchprofError(
                f"{budget.at(key, index)}unknown key '{key}' in model entry {index + 1}{_hint(key, ENTRY_KEYS)};"
                f" known keys: {', '.join(ENTRY_KEYS)}"
            )
    values: dict[str, tuple[str, Any]] = {}
    for key, value in raw.items():
        canonical = key.replace("_", "-")
        if canonical in values:
            raise ArchprofError(
                f"{budget.at(key, index)}'{key}' repeats '{values[canonical][0]}' in model entry {index + 1}"
                " (- and _ are the same in keys): keep one"
            )
        values[canonical] = (key, value)

    def fail(key: str, message: str):
        raise ArchprofError(f"{budget.at(values[key][0], index)}{values[key][0]}: {message}")

    if "name" not in values:
        raise ArchprofError(
            f"{header}model entry {index + 1} has no 'name' (a built-in name or 'package.module:factory')"
        )
    name = values["name"][1]
    if not isinstance(name, str) or not name.strip():
        fail("name", 'expected a model name in quotes, e.g. name = "resnet50"')
    input_size = None
    if "input" in values:
        raw_input = values["input"][1]
        if isinstance(raw_input, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in raw_input):
            raw_input = shape_text(raw_input)
        if not isinstance(raw_input, str):
            fail("input", 'expected one sample\'s shape, e.g. input = "3x224x224"')
        try:
            input_size = parse_input_size(raw_input)
        except ArchprofError as exc:
            fail("input", str(exc))
    batch = 1
    if "batch" in values:
        batch = values["batch"][1]
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            fail("batch", f"expected a whole number of at least 1, got {batch!r}")
    dtype = None
    if "dtype" in values:
        dtype = values["dtype"][1]
        if not isinstance(dtype, str) or dtype not in DTYPES:
            fail("dtype", f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    optimizer = "sgd"
    if "optimizer" in values:
        optimizer = values["optimizer"][1]
        if not isinstance(optimizer, str) or optimizer.lower() not in OPTIMIZERS:
            fail("optimizer", f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        optimizer = optimizer.lower()
    limits = []
    for key in LIMIT_KEYS:
        if key in values:
            try:
                limits.append(parse_limit(key, values[key][1]))
            except ArchprofError as exc:
                fail(key, str(exc).removeprefix(f"{key}: "))
    if not limits:
        raise ArchprofError(f"{header}model entry {index + 1} ('{name}') sets no limit: add e.g. max-params = \"30M\"")
    return BudgetEntry(
        model=name.strip(),
        limits=tuple(limits),
        input_size=input_size,
        batch=batch,
        dtype=dtype,
        optimizer=optimizer,
        source=budget.at(values["name"][0], index).removesuffix(": "),  # errors of the model: its name's line
        search_dir=budget.path.parent,
    )


def _hint(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key.replace("_", "-"), known, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _line_numbers(text: str, offsets: Sequence[int]) -> list[int]:
    """The line (from 0) of each of the ascending `offsets` in `text`, counting each stretch
    once: counting from the start for each would take quadratic time in 100,000 entries."""
    numbers, line, counted = [], 0, 0
    for offset in offsets:
        line += text.count("\n", counted, offset)
        counted = offset
        numbers.append(line)
    return numbers


class _BudgetText:
    """Finds the line of a key in a budget file (tomllib gives lines only for syntax errors)."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.lines = text.splitlines()
        starts = [m.start() for m in _MODELS_HEADER.finditer(text)]
        self.headers = _line_numbers(text, starts)
        tool_table = _TOOL_HEADER.search(text)
        self.table_start = text.count("\n", 0, tool_table.start()) if tool_table else 0

    def at(self, key: str | None, entry: int | None = None) -> str:
        """'archprof.toml, line 7: ' (the key's line within model entry `entry`), or '<path>: '."""
        start, end = self.table_start, len(self.lines)
        if entry is not None and entry < len(self.headers):
            start = self.headers[entry]
            end = self.headers[entry + 1] if entry + 1 < len(self.headers) else len(self.lines)
            if key is None:
                return f"{self.path}, line {start + 1}: "
        if key is not None:
            pattern = re.compile(
                rf"^\s*(?:[\w.\"'-]*\.)?[\"']?{re.escape(key)}[\"']?\s*=|[{{,]\s*[\"']?{re.escape(key)}[\"']?\s*="
            )
            for number in range(start, end):
                if pattern.search(self.lines[number]):
                    return f"{self.path}, line {number + 1}: "
        return f"{self.path}: "


# -- reporting a verdict -----------------------------------------------------------------


def format_margin(verdict: Verdict) -> str:
    margin = verdict.margin
    sign = "-" if margin < 0 else "+"
    shown = human_value(verdict.limit.metric.unit, abs(margin))
    if verdict.limit.threshold:
        return f"{sign}{shown} ({percent_change_text(margin / verdict.limit.threshold)})"
    return f"{sign}{shown}"


def verdict_rows(verdicts: Sequence[Verdict]) -> list[dict[str, str]]:
    """Plain text cells, one dict per limit: model, input, limit, value, margin, verdict."""
    return [
        {
            "model": v.model,
            "input": v.input_shape,
            "limit": v.limit_text,
            "value": v.value_text,
            "margin": format_margin(v),
            "verdict": "pass" if v.passed else "FAIL",
        }
        for v in verdicts
    ]


def unchecked_text(count: int) -> str:
    """ "1 model could not be checked", "2 models ...": what a verdict says of EntryErrors."""
    return f"{count} model{'s' * (count != 1)} could not be checked"


def markdown_summary(results: Sequence[Verdict | EntryError]) -> str:
    """The verdict as GitHub-flavoured Markdown (for $GITHUB_STEP_SUMMARY); an entry that
    could not be checked is a row with its error."""

    verdicts = [v for v in results if isinstance(v, Verdict)]
    errors = len(results) - len(verdicts)
    failed = sum(not v.passed for v in verdicts)
    models = len(dict.fromkeys((v.model, v.input_shape) for v in verdicts))
    if errors:
        exceeded = f", {limits_verdict(failed, len(verdicts))}" if failed else ""
        title = f"### ⚠️ archprof budget: {unchecked_text(errors)}{exceeded}"
    elif failed:
        title = f"### ❌ archprof budget: {limits_verdict(failed, len(verdicts))}"
    else:
        title = f"### ✅ archprof budget: {limits_verdict(0, len(verdicts))} ({models} model{'s' * (models != 1)})"
    lines = [title, "", "| Model | Input | Limit | Value | Margin | Verdict |", "|---|---|---|---:|---:|---|"]
    for result in results:
        if isinstance(result, EntryError):
            cells = [markdown_code(result.model), "", markdown_literal(result.message), "", "", "⚠️ **ERROR**"]
        else:
            row = verdict_rows([result])[0]
            verdict = "✅ pass" if row["verdict"] == "pass" else "❌ **FAIL**"
            cells = [markdown_code(row["model"]), row["input"], markdown_code(row["limit"]), row["value"]]
            cells += [row["margin"], verdict]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n"


def append_step_summary(results: Sequence[Verdict | EntryError], path: str | Path) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(markdown_summary(results))


def junit_xml(results: Sequence[Verdict | EntryError]) -> str:
    """JUnit XML: one testsuite per model and input, one testcase per limit, <failure> when exceeded;
    an entry that could not be checked, a testsuite of the model with one testcase, its <error>.
    The model's name and the limits as written are given with control characters shown as
    escapes (`visible_text`): XML 1.0 has no way to hold most of them."""
    suites = ET.Element("testsuites", name="archprof budget")
    by_model: dict[tuple[str, str] | int, list[Verdict] | EntryError] = {}
    for index, result in enumerate(results):
        if isinstance(result, EntryError):
            by_model[index] = result
        else:
            by_model.setdefault((result.model, result.input_shape), []).append(result)
    for group in by_model.values():
        if isinstance(group, EntryError):
            model, message = visible_text(group.model), visible_text(group.message)
            suite = ET.SubElement(suites, "testsuite", name=model, tests="1", failures="0", errors="1", skipped="0")
            case = ET.SubElement(suite, "testcase", classname=f"archprof.budget.{model}", name="check")
            ET.SubElement(case, "error", message=message, type="ArchprofError").text = message
            continue
        name, shape = group[0].model, group[0].input_shape
        model = visible_text(name)
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=f"{model} ({shape})",
            tests=str(len(group)),
            failures=str(sum(not v.passed for v in group)),
            errors="0",
            skipped="0",
        )
        for verdict in group:
            case = ET.SubElement(suite, "testcase", classname=f"archprof.budget.{model}", name=verdict.limit_name)
            exact = f"{verdict.value:,} px, its smallest side" if verdict.field else f"{verdict.value:,}"
            detail = f"{verdict.limit.metric.label} {verdict.value_text} ({exact}) at input {shape}"
            limit = visible_text(verdict.limit_text)
            if verdict.passed:
                ET.SubElement(case, "system-out").text = f"{detail}: within {limit}"
            else:
                bound = "over" if verdict.limit.bound == "max" else "under"
                message = f"{detail} is {bound} {limit} ({format_margin(verdict)})"
                ET.SubElement(case, "failure", message=message, type="BudgetExceeded").text = message
    verdicts = [v for v in results if isinstance(v, Verdict)]
    suites.set("tests", str(len(results)))
    suites.set("failures", str(sum(not v.passed for v in verdicts)))
    suites.set("errors", str(len(results) - len(verdicts)))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


# -- what `archprof check` checks --------------------------------------------------------


def plan_check(
    models: Sequence[str],
    limits: dict[str, Any],
    config: Path | None = None,
    options: ModelOptions | None = None,
    optimizer: str | None = None,
    directory: Path | None = None,
) -> list[BudgetEntry]:
    """The entries `archprof check` judges.

    MODELs with limits: those limits, for each. MODELs alone: their entries in the budget
    file. Neither: every entry of the budget file (`config`, else archprof.toml or
    [tool.archprof] in pyproject.toml in `directory`). The `options` given (inputs, batch,
    dtype) and the optimizer replace the file's; factory arguments, weights and trust apply
    to every entry."""
    options = options or ModelOptions()
    dtype = str(options.dtype).removeprefix("torch.") if options.dtype is not None else None
    given = {key: value for key, value in limits.items() if value is not None}
    if optimizer is not None:
        optimizer_state_copies(optimizer)
        optimizer = optimizer.lower()
    if given:
        if not models:
            raise ArchprofError(
                "limits on the command line need a model, e.g. archprof check resnet50 --max-params 30M"
            )
        if config is not None:
            raise ArchprofError("give limits on the command line or in --config, not both")
        parsed = []
        for key, value in given.items():
            try:
                parsed.append(parse_limit(key, value))
            except ArchprofError as exc:
                raise ArchprofError(f"--{exc}") from None
        batch, optimizer = options.batch or 1, optimizer or "sgd"
        return [BudgetEntry(model, tuple(parsed), None, batch, dtype, optimizer, options=options) for model in models]
    path = config or find_budget_file(directory)
    if path is None:
        raise ArchprofError(
            "nothing to check: give a model and limits (archprof check resnet50 --max-params 30M), or a budget file:"
            " archprof.toml or [tool.archprof] in pyproject.toml here, or --config PATH"
        )
    entries = load_budget_file(path)
    if models:
        listed = {entry.model for entry in entries}
        missing = [model for model in models if model not in listed]
        if missing:
            raise ArchprofError(f"{path} has no entry for '{missing[0]}': give limits, e.g. --max-params 30M")
        entries = [entry for entry in entries if entry.model in models]
    overrides = {"batch": options.batch, "dtype": dtype, "optimizer": optimizer}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    overrides["options"] = options
    return [dataclasses.replace(entry, **overrides) for entry in entries]
