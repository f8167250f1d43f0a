"""What changed between two reports: per layer (matched by layer and call) and in total.

Each side is a CSV report written by `archprof summary -f csv` (or `Report.to_csv`), a model
spec (analysed here), or a Report. Here: `diff`, each side loaded (a CSV or JSON report read
back and checked, or a model analysed); `changes` compares two sides, `cells` reads a CSV
cell back into its value, `change_text` writes the changes as the tables show them."""

from __future__ import annotations

import bisect
import csv
import functools
import io
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch  # imported already (archprof.analysis): here for the annotations, which get_type_hints reads

from archprof.analysis import analyze, model_label
from archprof.diff.cells import LARGEST, SHAPE_COLUMNS, cell_reader, dims, is_shapes_text, lowest
from archprof.diff.changes import (
    FIELDS,
    KERNEL,
    OPERATORS,
    REQUIRED,
    TEXT,
    ReportDiff,
    Side,
    diff_reports,
    side_from_report,
)
from archprof.errors import ArchprofError, check_flag, errors_named, first_line, warn
from archprof.load.common import shorten
from archprof.output import read_text
from archprof.passes.receptive_field import FieldMark
from archprof.report import Report
from archprof.report.columns import COLUMNS, TRAINING_COLUMNS
from archprof.report.formats import utf8_text
from archprof.text import visible_text

# The most of a report file read: a report has a row of a few hundred bytes per layer, so
# this is a million layers with long names; a larger file (or /dev/zero) is refused unread.
REPORT_BYTES = 256 * 2**20
# The most rows a report read may hold: the largest report of the 1,451 torchvision and timm
# models has 2,179 (timm's mvitv2_huge_cls). Each row read costs kilobytes: a file of tiny
# rows within REPORT_BYTES took gigabytes (8 MiB of CSV, 1.7 GB) before this bound.
MOST_ROWS = 50_000
# The most JSON values a report may hold, counted in its text before it is parsed (a report's
# row holds 30 to 40): 255 MiB of `[]` took 6.8 GB to parse.
MOST_VALUES = 100 * MOST_ROWS


def read_csv_report(path: str | Path) -> Side:
    """Rows of a CSV report; a file that is not one raises ArchprofError naming the problem and line.

    Names come back exactly as the model had them (`archprof.report.formats.csv_cell` undone, line
    breaks inside quoted cells kept). A byte-order mark (Excel's "CSV UTF-8") is skipped."""
    path = Path(path)
    return Side(path.stem, _read_rows(path, REQUIRED, optional=(*FIELDS, KERNEL, OPERATORS)))


def read_csv_layers(path: str | Path) -> list[dict[str, Any]]:
    """Every row of a CSV report with every column of `archprof.report.columns.COLUMNS` (and, from a
    training report, `TRAINING_COLUMNS`) it has, read
    back into the values `Report.rows()` holds: ints, (212, 212) for '212x212', FieldMark for
    'input' / 'undefined', None for '', {'aten.cumsum': 1} for 'aten.cumsum x1', True / False /
    None for covers_input. A file that is not a report, or a cell a report cannot hold, raises
    ArchprofError naming the column and line."""

    return _read_rows(Path(path))


def _read_rows(path: Path, names: Sequence[str] | None = None, optional: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The columns `names` (default every report column the file has), and those of
    `optional` it has, of every row, each cell read by its column's reader; an error names
    the row's last physical line (a quoted cell may span several)."""

    text = read_text(path, "report", REPORT_BYTES)
    with _fields_up_to(len(text)):
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = reader.fieldnames or []
        missing = [name for name in REQUIRED if name not in header]
        if missing:
            raise ArchprofError(
                f"{path} is not an archprof CSV report (from `archprof summary -f csv`): no column {', '.join(missing)}"
            )
        # csv.DictReader would keep the last of two cells of one name, silently.
        repeated = [name for name, count in Counter(header).items() if count > 1]
        if repeated:
            raise ArchprofError(f"{path}, line 1: column {shorten(repeated[0])} appears twice: which is the report's?")
        columns = {c.name: c for c in (*COLUMNS, *TRAINING_COLUMNS)}
        names = [name for name in columns if name in header] if names is None else names
        names = [*names, *(name for name in optional if name in header)]
        readers = {name: cell_reader(columns[name]) for name in names}
        rows, lines = [], []
        for raw in reader:
            line = reader.line_num
            if len(rows) == MOST_ROWS:
                raise ArchprofError(_too_many_rows(path, f"line {line}"))
            lines.append(line)
            row: dict[str, Any] = {}
            for name, read in readers.items():
                if raw[name] is None:  # DictReader's filler for the cells a short row lacks
                    ends = f"the row ends before its {name} cell"
                    raise ArchprofError(f"{path}, line {line}: {ends}: is the file cut short?")
                try:
                    row[name] = read(raw[name])
                except ValueError as exc:
                    raise ArchprofError(f"{path}, line {line}: {name} is {shorten(raw[name])}, {exc}") from None
            rows.append(row)
    if not rows:
        raise ArchprofError(f"{path} has no rows: a report has one per layer; is the file cut short?")
    _refuse_a_repeated_row(rows, lambda index: f"line {lines[index]}", path)
    return rows


def read_json_report(path: str | Path) -> Side:
    """Rows of a JSON report (`archprof summary -f json`): its "layers", each checked to
    hold the columns a diff compares, of the types a report writes them in; a file that is
    not one raises ArchprofError naming the problem (and the layer's index)."""
    path = Path(path)
    document = read_report_json(path)
    if isinstance(document, dict) and "model" not in document and {"old", "new"} <= document.keys():
        raise ArchprofError(
            f"{path} is a diff (from `archprof diff -f json`), not a report: diff the reports or models it compares"
        )
    layers = document.get("layers") if isinstance(document, dict) else None
    if not isinstance(layers, list) or not layers:
        raise ArchprofError(f"{path} is not an archprof JSON report (from `archprof summary -f json`): no layers")
    if len(layers) > MOST_ROWS:
        raise ArchprofError(_too_many_rows(path, f"layer {MOST_ROWS}"))
    rows = [_json_row(path, index, layer) for index, layer in enumerate(layers)]
    _refuse_a_repeated_row(rows, lambda index: f"layer {index}", path)
    return Side(path.stem, rows)


def read_report_json(path: Path) -> Any:
    """The document of a JSON report file, parsed where it holds no more values than a report
    of MOST_ROWS rows; a key repeated in an object is refused (json.loads keeps the last)."""
    text = read_text(path, "report", REPORT_BYTES)
    values = text.count(",") + text.count("[") + text.count("{")  # a bound: commas inside strings count too
    if values > MOST_VALUES:
        raise ArchprofError(
            f"{path} holds over {MOST_VALUES:,} JSON values, more than a report of {MOST_ROWS:,} layers:"
            " is it a report?"
        )
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as exc:  # ValueError: JSONDecodeError, int()'s digit limit
        reason = first_line(exc, bare=True)
        if "integer string conversion" in reason:  # Python's advice (sys.set_int_max_str_digits) is not the user's
            reason = (
                f"it holds a number of over {sys.get_int_max_str_digits():,} digits, larger than any model's figure"
            )
        raise ArchprofError(f"{path} is not valid JSON: {reason}") from None


def _too_many_rows(path: Path, where: str) -> str:
    return (
        f"{path}, {where}: more than {MOST_ROWS:,} rows, more than a report of any network"
        " (the largest of torchvision's and timm's has 2,179): is it a report?"
    )


# The most levels of a layer's name in a report read, the most characters of a nested one's
# (a name of one level, any length, costs no more to read than its length), and the most
# modules its names may name in all, containers included: a module's path runs to a few
# dozen characters and levels in any network. A name of 80,000 levels in a 160 KB file took
# gigabytes to read (each of its ancestors' names kept), and its tree crashed Python's stack.
MOST_LAYER_LEVELS = 128
MOST_LAYER_CHARS = 512
MOST_MODULES = MOST_ROWS


def _refuse_a_repeated_row(rows: list[dict[str, Any]], where: Callable[[int], str], path: Path) -> None:
    """Refuse a report with a row repeated (a file edited, or two joined): a report writes one
    module call as two rows only where a submodule's call ran between its own operations
    (`changes._keyed`'s segments), so a repeat with no row of a submodule since its layer's
    last row matches no row of the other side, or the wrong one. Linear in the rows: each row
    counts for its ancestors, whose repeats compare the count with the one at their last row.
    Refused too: a name past MOST_LAYER_LEVELS, a nested one past MOST_LAYER_CHARS, names of
    more than MOST_MODULES modules."""
    below: Counter[int] = Counter()  # module -> rows of its submodules so far
    last: dict[tuple[int, int], tuple[int, int]] = {}  # (layer's module, call) -> (its last row, `below` there)
    modules: dict[tuple[int, str], int] = {}  # (parent, name) -> module; '' (the model) is 0
    for index, row in enumerate(rows):
        layer, call = row["layer"], row["call"]
        _check_layer_name(layer, path, where(index))
        chain = [0]  # the modules from the model's down to the layer's
        for part in layer.split(".") if layer else ():
            chain.append(modules.setdefault((chain[-1], part), len(modules) + 1))
        if len(modules) > MOST_MODULES:
            raise ArchprofError(
                f"{path}, {where(index)}: its layers name more than {MOST_MODULES:,} modules, more than a report of"
                " any network: is it a report?"
            )
        module = chain[-1]
        earlier = last.get((module, call))
        if earlier is not None and below[module] == earlier[1]:
            raise ArchprofError(
                f"{path}, {where(index)}: layer {shorten(layer)} call {call} repeats the row of {where(earlier[0])}"
                " with no submodule's row between: was the file edited?"
            )
        last[(module, call)] = (index, below[module])
        for ancestor in chain[:-1]:
            below[ancestor] += 1


def _check_layer_name(layer: str, path: Path, where: str) -> None:
    levels = layer.count(".") + 1
    if levels > MOST_LAYER_LEVELS:
        too_much = f"is named in {levels:,} levels, more than the {MOST_LAYER_LEVELS} levels"
    elif levels > 1 and len(layer) > MOST_LAYER_CHARS:
        characters = f"{len(layer):,} characters"
        too_much = f"nested {levels} levels deep is named in {characters}, more than the {MOST_LAYER_CHARS}"
    else:
        return
    raise ArchprofError(
        f"{path}, {where}: layer {shorten(layer)} {too_much} a report's layer may have (a network's run to a few"
        " dozen): is it a report?"
    )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refused where a key repeats: json.loads would keep the last, silently."""
    repeated = [key for key, count in Counter(key for key, _ in pairs).items() if count > 1]
    if repeated:
        raise ValueError(f"key {shorten(repeated[0])} appears twice in an object")
    return dict(pairs)


def _json_row(path: Path, index: int, layer: Any) -> dict[str, Any]:
    """The columns a diff compares of one layer of a JSON report, checked."""
    if not isinstance(layer, dict):
        raise ArchprofError(f"{path}, layer {index}: not an object")
    for name in REQUIRED:
        if name not in layer:
            raise ArchprofError(f"{path}, layer {index}: no {name}")
        if not _as_written(name, layer[name]):
            raise ArchprofError(f"{path}, layer {index}: {name} is {shorten(json.dumps(layer[name]))}, not a report's")
    row = {name: layer[name] for name in REQUIRED}
    # Its names as a CSV report and a model's side hold them: a lone surrogate as its escape.
    row["layer"], row["module_type"] = utf8_text(row["layer"]), utf8_text(row["module_type"])
    if isinstance(layer.get(KERNEL), str):  # a text column, as the CSV's: '' for a row without a window
        row[KERNEL] = layer[KERNEL]
    if isinstance(layer.get(OPERATORS), str):  # written as the CSV writes it: read alike
        column = next(column for column in COLUMNS if column.name == OPERATORS)
        try:
            row[OPERATORS] = cell_reader(column)(layer[OPERATORS])
        except ValueError as exc:
            raise ArchprofError(f"{path}, layer {index}: operators is {shorten(layer[OPERATORS])}, {exc}") from None
    for name in (name for name in FIELDS if name in layer):
        try:
            row[name] = _JSON_FIELD_READERS[name](layer[name])
        except ValueError as exc:
            raise ArchprofError(f"{path}, layer {index}: {name} is {shorten(json.dumps(layer[name]))}, {exc}") from None
    return row


def _json_dims(column: str, value: Any):
    """A JSON report's field or stride ([212, 212], ["1/2", "1/2"], "input", null) as `dims`
    reads the CSV's text of it, each entry as a report writes it in `column`."""
    if value is None:
        return None
    if isinstance(value, list) and value and all(type(part) is int or _fraction_part(part) for part in value):
        return dims("x".join(map(str, value)), column=column)
    if value in tuple(FieldMark):
        return FieldMark(value)
    raise ValueError("not a list of numbers, 'input', 'undefined' or null")


def _fraction_part(part: Any) -> bool:
    """A fractional stride's entry as JSON writes it ("1/2"): one number, never joined ones
    (a whole entry is a JSON number: "2" is no report's)."""
    return isinstance(part, str) and "/" in part and "x" not in part


def _json_note(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("not text")
    return value


_JSON_FIELD_READERS = {
    "receptive_field": functools.partial(_json_dims, "receptive_field"),
    "effective_stride": functools.partial(_json_dims, "effective_stride"),
    "receptive_field_note": _json_note,
}


def _as_written(name: str, value: Any) -> bool:
    """Whether a JSON report's cell of column `name` is what a report writes there: text,
    or (call and the metrics) a whole number a report can hold; shapes as it writes them."""
    if name in SHAPE_COLUMNS:
        return isinstance(value, str) and is_shapes_text(value)
    if name in ("layer", *TEXT):
        return isinstance(value, str)
    return type(value) is int and lowest(name) <= value < LARGEST


@contextmanager
def _fields_up_to(length: int) -> Iterator[None]:
    """The csv module's limit on a cell's length (131,072 characters) raised to `length` for
    the block: a report holds a module's name whole, however long."""
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, length))
    try:
        yield
    finally:
        csv.field_size_limit(limit)


_REPORT_READERS = {"csv": read_csv_report, "json": read_json_report}
# What archprof writes that diff cannot read back: Markdown and text tables, HTML pages, JUnit XML.
_WRITTEN_NOT_READ = frozenset({"md", "txt", "html", "xml"})


def _suffix(spec: Any) -> str:
    return os.fspath(spec).lower().rpartition(".")[2] if isinstance(spec, str | os.PathLike) else ""


def _is_report_file(spec: Any) -> bool:
    """Whether `spec` names a CSV or JSON report (read, not analysed)."""
    return _suffix(spec) in _REPORT_READERS


# Each option of a model to analyse: its CLI name, its keyword.
_MODEL_OPTIONS = {
    "input_size": "--input",
    "inputs": "--input",
    "batch": "--batch",
    "dtype": "--dtype",
    "args": "--arg",
    "weights": "--weights",
    "trust_pickle": "--trust-pickle",
    "fold_bn": "--fold-bn",
}


def _given(value: Any) -> bool:
    """Whether an option was given: not its default (None, False, or an empty mapping of
    --arg); by identity and type, as a tensor (an input given as one) has no truth value."""
    if value is None or value is False:
        return False
    return not (isinstance(value, Mapping | tuple | list) and not value)


def _refuse_model_options(given: dict[str, Any]) -> None:
    """Options of a model to analyse, given where both sides are reports: refused, as summary
    refuses --arg for a model file, not let go unread."""
    named = [name for name in _MODEL_OPTIONS if _given(given.get(name))]
    if named:
        *most, last = dict.fromkeys(_MODEL_OPTIONS[name] for name in named)
        cli = f"{', '.join(most)} and {last}" if most else last
        applies, them = ("apply", "them") if most else ("applies", "it")
        raise ArchprofError(
            f"{cli} (Python: {', '.join(named)}) {applies} to a model to analyse, and both sides are reports: drop"
            f" {them}, or give a model as one side"
        )


def load_side(spec: Any, input_size: Sequence[int] | str | None = None, **options: Any) -> Side:
    """A CSV or JSON report (a path ending in .csv or .json, a string or a `pathlib.Path`),
    else a model in any form `archprof.analyze` takes (a spec, a model file, a module, a factory), analysed here
    (`options`: the keywords of `archprof.analyze`)."""
    if _is_report_file(spec):
        return _REPORT_READERS[_suffix(spec)](os.fspath(spec))
    if _suffix(spec) in _WRITTEN_NOT_READ:  # else refused as a model file of a suffix archprof does not read
        raise ArchprofError(
            f"cannot diff '{visible_text(os.fspath(spec))}': diff reads a report as CSV or JSON"
            " (archprof summary MODEL -o report.csv), or analyses a model"
        )
    named = isinstance(spec, str | os.PathLike)
    with errors_named(model_label(spec)):  # which side failed: both may have a module 'features.0'
        report = analyze(spec, input_size, **options)
    return side_from_report(report, os.fspath(spec) if named else report.model)


def diff(
    old: str | Report,
    new: str | Report,
    input_size: Sequence[int] | str | None = None,
    batch: int | None = None,
    dtype: torch.dtype | str | None = None,
    *,
    inputs: Any = None,
    args: Mapping[str, Any] | None = None,
    weights: str | Path | None = None,
    trust_pickle: bool = False,
    fold_bn: bool = False,
) -> ReportDiff:
    """Diff two reports, CSV paths or models (any form `archprof.analyze` takes); the other
    arguments, as for `archprof.analyze`, apply to the models.

    Example (VGG-13 adds a 64- and a 128-channel 3 x 3 convolution to VGG-11: 36,928 and
    147,584 parameters):

        >>> changes = archprof.diff.diff("vgg11", "vgg13")
        >>> [(t.metric, t.change) for t in changes.totals][0]
        ('param_count', 184512)
    """
    check_flag("trust_pickle", trust_pickle)  # here, not per side: an error of the call, not of one model
    options = {"batch": batch, "dtype": dtype, "inputs": inputs, "args": args, "weights": weights, "fold_bn": fold_bn}
    if all(isinstance(side, Report) or _is_report_file(side) for side in (old, new)):
        _refuse_model_options({**options, "input_size": input_size, "trust_pickle": trust_pickle})
    sides = [
        side_from_report(side)
        if isinstance(side, Report)
        else load_side(side, input_size, trust_pickle=trust_pickle, **options)
        for side in (old, new)
    ]
    _warn_of_rolled_up_rows(*sides)
    return diff_reports(*sides)


def _warn_of_rolled_up_rows(old: Side, new: Side) -> None:
    """Warn where a row of one side sums rows the other lists apart (`features` beside
    `features.0`, ...): a report written with `--depth` set beside one without, whose
    layers would all show as removed and added. The layers inside a row are found by
    bisection of the other side's, sorted: a report may have a million rows."""
    for rolled, apart in ((old, new), (new, old)):
        layers = sorted({row["layer"] for row in apart.rows})
        listed = set(layers)
        for row in rolled.rows:
            prefix = row["layer"] + "."
            first = bisect.bisect_left(layers, prefix)
            if first < len(layers) and layers[first].startswith(prefix) and row["layer"] not in listed:
                warn(
                    f"{visible_text(rolled.name)}'s row {shorten(visible_text(row['layer']))} sums rows that"
                    f" {visible_text(apart.name)} lists apart ({shorten(visible_text(layers[first]))}, ...): a report"
                    " written with --depth? Diff reports written at the same depth"
                )
                return
