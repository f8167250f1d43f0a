"""Budget files (`archprof.toml`, or `[tool.archprof]` in `pyproject.toml`; the package's
docstring shows one): found, read and checked line by line into `BudgetEntry`s; and the
entries `archprof check` judges (`plan_check`), from the command line or such a file."""

from __future__ import annotations

import dataclasses
import decimal
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import tomllib

from archprof.budget import LIMIT_KEYS, BudgetEntry, Limit, close_key_hint, parse_limit
from archprof.errors import ArchprofError
from archprof.load import DTYPES, ModelOptions, parse_input_size
from archprof.optimizers import OPTIMIZERS
from archprof.output import read_text
from archprof.passes.optimizer_state import optimizer_state_copies
from archprof.units import (
    shape_text,
)

ENTRY_KEYS = ("name", "input", "batch", "dtype", "optimizer", "args", "weights", "fold-bn", *LIMIT_KEYS)


def _key(name: str) -> str:
    """A TOML key in a header, bare or quoted (`models`, `"models"`, `'models'`: one key)."""
    return rf"(?:{name}|\"{name}\"|'{name}')"


_MODELS_HEADER = re.compile(
    rf"^[ \t]*\[\[\s*(?:{_key('tool')}\s*\.\s*{_key('archprof')}\s*\.\s*)?{_key('models')}\s*\]\]", re.MULTILINE
)
_TOOL_HEADER = re.compile(rf"^[ \t]*\[\s*{_key('tool')}\s*\.\s*{_key('archprof')}\s*\]", re.MULTILINE)
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
        table, table_name, entry_header = document["tool"]["archprof"], "[tool.archprof]", "[[tool.archprof.models]]"
    else:
        table, table_name, entry_header = document, "the budget file", "[[models]]"
    if not isinstance(table, dict):
        raise ArchprofError(f"{budget.at('archprof')}{table_name} must be a table")
    for key in table:
        if key != "models":
            hint = close_key_hint(key, ["models"])
            raise ArchprofError(
                f"{budget.at(key)}unknown key '{key}' in {table_name}{hint}: list models as {entry_header}"
            )
    models = table.get("models")
    if not models:
        raise ArchprofError(f"{path}: no models to check: add a {entry_header} entry with a name and limits")
    if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
        raise ArchprofError(f"{budget.at('models')}'models' must be an array of tables ({entry_header})")
    if len(budget.headers) != len(models):
        # Headers this reading does not know (or a header's text inside a string): mapping them
        # to entries would name a wrong line, so each entry is named by its number instead.
        budget.headers = []
    return [_entry(budget, index, raw) for index, raw in enumerate(models)]


def _entry(budget: _BudgetText, index: int, raw: dict[str, Any]) -> BudgetEntry:

    header = budget.at(None, index)
    for key in raw:
        if key.replace("_", "-") not in ENTRY_KEYS:
            raise ArchprofError(
                f"{budget.at(key, index)}unknown key '{key}' in model entry {index + 1}"
                f"{close_key_hint(key, ENTRY_KEYS)}; known keys: {', '.join(ENTRY_KEYS)}"
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

    def fail(key: str, message: str) -> NoReturn:
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
    batch = None  # as `analyze` takes it: 1, or an exported program's own
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
    options = _entry_options(values, fail)
    limits = []
    for key in LIMIT_KEYS:
        if key in values:
            try:
                limits.append(parse_limit(key, _whole_if_integral(values[key][1])))
            except ArchprofError as exc:
                fail(key, str(exc).removeprefix(f"{key}: "))
    if not limits:
        raise ArchprofError(f"{header}model entry {index + 1} ('{name}') sets no limit: add e.g. max-params = \"30M\"")
    if "optimizer" in values and not any(limit.key == "max-training-memory" for limit in limits):
        # as --optimizer without the limit: a choice that changes nothing would pass unnoticed
        fail("optimizer", "applies to max-training-memory: add that limit, or drop optimizer")
    return BudgetEntry(
        model=name.strip(),
        limits=tuple(limits),
        input_size=input_size,
        batch=batch,
        dtype=dtype,
        optimizer=optimizer,
        source=budget.at(values["name"][0], index).removesuffix(": "),  # errors of the model: its name's line
        search_dir=budget.path.parent,
        confined_to=(budget.path.parent, Path.cwd()),  # the project's code: a data file names no other
        options=options,
    )


def _whole_if_integral(value: Any) -> Any:
    """A TOML float that is a whole number (`max-params = 5e5`) as that int, 500000, which the
    limit then shows as it shows one written so; any other value as it is (`parse_limit`
    refuses a fraction). Read from its shortest text: 1e23 is 10**23, not the float's
    99999999999999991611392."""
    if isinstance(value, float) and value.is_integer():
        return int(decimal.Decimal(repr(value)))
    return value


def _entry_options(values: dict[str, tuple[str, Any]], fail: Callable[[str, str], NoReturn]) -> ModelOptions:
    """An entry's own factory arguments (`args = { width = 16 }`), weights file (looked for
    beside the budget file first, as its models are) and `fold-bn`. Never trust in a pickle:
    only --trust-pickle, on the command line, gives that."""
    args: dict[str, Any] = {}
    if "args" in values:
        args = values["args"][1]
        if not isinstance(args, dict):
            fail("args", "expected a table of the factory's keyword arguments, e.g. args = { num_classes = 10 }")
    weights = None
    if "weights" in values:
        weights = values["weights"][1]
        if not isinstance(weights, str) or not weights.strip():
            fail("weights", 'expected a state-dict file in quotes, e.g. weights = "checkpoints/model.pt"')
        weights = Path(weights)
    fold_bn = False
    if "fold-bn" in values:
        fold_bn = values["fold-bn"][1]
        if not isinstance(fold_bn, bool):
            fail("fold-bn", f"expected true or false, got {fold_bn!r}")
    return ModelOptions(args=args, weights=weights, fold_bn=fold_bn)


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
        """'archprof.toml, line 7: ' (the key's line within model entry `entry`), or '<path>: '.
        An entry written inline (`models = [{...}, {...}]`) has no header line to start from:
        its key's line is given only where no other place holds that key, else the entry's
        number, 'archprof.toml, model entry 2: '."""
        start, end = self.table_start, len(self.lines)
        headed = entry is not None and entry < len(self.headers)
        if headed:
            start = self.headers[entry]
            end = self.headers[entry + 1] if entry + 1 < len(self.headers) else len(self.lines)
            if key is None:
                return f"{self.path}, line {start + 1}: "
        if key is None:
            return f"{self.path}: "  # what is said of an entry as a whole names it
        unplaced = f"{self.path}, model entry {entry + 1}: " if entry is not None and not headed else f"{self.path}: "
        name = re.escape(key)
        pattern = re.compile(  # `key = `, `{ key = ` in an inline table, or a table's header: `[[key]]`, `[models.key]`
            rf"^\s*(?:[\w.\"'-]*\.)?[\"']?{name}[\"']?\s*=|[{{,]\s*[\"']?{name}[\"']?\s*="
            rf"|^\s*\[\[?\s*(?:[\w.\"'-]*\.)?[\"']?{name}[\"']?\s*\]"
        )
        found = [number for number in range(start, end) if pattern.search(self.lines[number])]
        if not found:
            return unplaced
        sure = headed or entry is None or (len(found) == 1 and len(pattern.findall(self.lines[found[0]])) == 1)
        return f"{self.path}, line {found[0] + 1}: " if sure else unplaced


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
    dtype, factory arguments, weights, --fold-bn) and the optimizer replace the file's for
    every entry; trust in pickles comes from `options` alone."""
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
            if isinstance(value, Limit):  # made already: relative to a baseline (`archprof.budget.baseline`)
                parsed.append(value)
                continue
            try:
                parsed.append(parse_limit(key, value))
            except ArchprofError as exc:
                raise ArchprofError(f"--{exc}") from None
        _check_optimizer_is_used(optimizer, [tuple(parsed)])
        optimizer, batch = "sgd" if optimizer is None else optimizer, options.batch  # None: as `analyze` takes it
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
    _check_optimizer_is_used(optimizer, [entry.limits for entry in entries])
    overrides = {"batch": options.batch, "dtype": dtype, "optimizer": optimizer}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    return [dataclasses.replace(entry, options=_options_over(entry.options, options), **overrides) for entry in entries]


def _options_over(own: ModelOptions, given: ModelOptions) -> ModelOptions:
    """An entry's own options with those given on the command line in their place."""
    return dataclasses.replace(
        given,
        args=given.args or own.args,
        weights=given.weights if given.weights is not None else own.weights,
        fold_bn=given.fold_bn or own.fold_bn,
    )


def _check_optimizer_is_used(optimizer: str | None, limits: Sequence[Sequence[Limit]]) -> None:
    """Refuse --optimizer where no limit reads it (only max-training-memory does), as `memory`
    refuses it without --train: a choice that changes nothing would pass unnoticed."""
    if optimizer is not None and not any(limit.key == "max-training-memory" for entry in limits for limit in entry):
        raise ArchprofError("--optimizer applies to --max-training-memory: add that limit, or drop --optimizer")
