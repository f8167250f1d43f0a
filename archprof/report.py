"""The Report: one row per layer, roll-ups by module depth, totals, and its file formats.

Rows are kept as plain columns (lists) so that rendering a summary needs no pandas;
`Report.layers` builds the typed DataFrame on first use. Totals are always computed from
the rows."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    dtype: str  # pandas dtype
    description: str
    summable: bool = False


# The documented columns of `Report.layers`, in order.
COLUMNS: tuple[Column, ...] = (
    Column("layer", "string", "module path, e.g. 'layer1.0.conv1' ('' for the model itself)"),
    Column("module_type", "string", "class name of the module, e.g. 'Conv2d'"),
    Column("call", "int64", "which call of the module this is (0 = first; -1 = never called)"),
    Column("depth", "int64", "nesting depth of the module (0 = the model)"),
    Column("operators", "string", "aten operators the row ran, in order, repeats merged"),
    Column("output_shape", "string", "shape of the row's output, batch included, e.g. '1x64x112x112'"),
    Column("param_count", "int64", "parameters first used by this row", summable=True),
    Column("trainable_param_count", "int64", "of which require a gradient", summable=True),
    Column("param_bytes", "int64", "bytes of those parameters", summable=True),
    Column("buffer_bytes", "int64", "bytes of buffers (BatchNorm running statistics, ...)", summable=True),
    Column("macs", "int64", "multiply-accumulates (convolution, linear, matmul)", summable=True),
    Column("flops", "int64", "floating-point operations of the MACs: 2 x macs", summable=True),
    Column(
        "elementwise_flops", "int64", "FLOPs of elementwise work (activations, norms, pooling, adds)", summable=True
    ),
    Column("activation_bytes", "int64", "bytes of the row's output tensor(s)", summable=True),
    Column("not_counted", "string", "operators without a formula, with how often they ran ('op x2; ...')"),
)
SUMMABLE = tuple(c.name for c in COLUMNS if c.summable)


@dataclass(frozen=True)
class Totals:
    param_count: int
    trainable_param_count: int
    non_trainable_param_count: int
    param_bytes: int
    buffer_bytes: int
    macs: int
    flops: int
    elementwise_flops: int
    activation_bytes: int
    input_shapes: tuple[tuple[int, ...], ...]
    dtype: str
    not_counted: dict[str, int]  # operator -> how often it ran without a formula

    def as_dict(self) -> dict[str, Any]:
        return {
            **{name: getattr(self, name) for name in self.__dataclass_fields__},
            "input_shapes": [list(s) for s in self.input_shapes],
        }


@dataclass
class Report:
    """The analysis of one model at one input: `layers` (DataFrame), `totals`, roll-ups."""

    model: str
    input_shapes: tuple[tuple[int, ...], ...]  # batch included
    dtype: str
    columns: dict[str, list]  # one list per column of COLUMNS, one entry per row
    module_types: dict[str, str] = field(repr=False, default_factory=dict)

    def __len__(self) -> int:
        return len(self.columns["layer"])

    @cached_property
    def totals(self) -> Totals:
        sums = {name: sum(self.columns[name]) for name in SUMMABLE}
        not_counted: Counter[str] = Counter()
        for cell in self.columns["not_counted"]:
            not_counted.update(parse_counts(cell))
        return Totals(
            param_count=sums["param_count"],
            trainable_param_count=sums["trainable_param_count"],
            non_trainable_param_count=sums["param_count"] - sums["trainable_param_count"],
            param_bytes=sums["param_bytes"],
            buffer_bytes=sums["buffer_bytes"],
            macs=sums["macs"],
            flops=sums["flops"],
            elementwise_flops=sums["elementwise_flops"],
            activation_bytes=sums["activation_bytes"],
            input_shapes=self.input_shapes,
            dtype=self.dtype,
            not_counted=dict(not_counted),
        )

    @cached_property
    def layers(self) -> pd.DataFrame:
        """One row per layer; columns and dtypes as documented in `COLUMNS`."""
        import pandas as pd

        return pd.DataFrame({c.name: pd.Series(self.columns[c.name], dtype=c.dtype) for c in COLUMNS})

    def rows(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, values, strict=True)) for values in zip(*self.columns.values(), strict=True)]

    def rollup(self, depth: int) -> Report:
        """Merge every row below module depth `depth` into its ancestor at that depth."""
        if depth < 0:
            raise ValueError("depth must be >= 0")
        groups: dict[str, list[int]] = {}
        for index, path in enumerate(self.columns["layer"]):
            groups.setdefault(".".join(path.split(".")[:depth]) if path else "", []).append(index)
        columns: dict[str, list] = {c.name: [] for c in COLUMNS}
        for path, indices in groups.items():
            if len(indices) == 1:
                for name, values in self.columns.items():
                    columns[name].append(values[indices[0]])
                continue
            columns["layer"].append(path)
            columns["module_type"].append(self.module_types.get(path, ""))
            columns["call"].append(min(self.columns["call"][i] for i in indices))
            columns["depth"].append(0 if not path else path.count(".") + 1)
            operators = dict.fromkeys(op for i in indices for op in self.columns["operators"][i].split() if op)
            columns["operators"].append(" ".join(operators))
            columns["output_shape"].append(self.columns["output_shape"][indices[-1]])
            for name in SUMMABLE:
                columns[name].append(sum(self.columns[name][i] for i in indices))
            merged: Counter[str] = Counter()
            for i in indices:
                merged.update(parse_counts(self.columns["not_counted"][i]))
            columns["not_counted"].append(format_counts(merged))
        return Report(self.model, self.input_shapes, self.dtype, columns, self.module_types)

    # -- file formats --------------------------------------------------------------------

    def to_csv(self, path=None) -> str:
        """CSV, the format of record: one row per layer, exact integers, bytes in bytes."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([c.name for c in COLUMNS])
        writer.writerows(zip(*(self.columns[c.name] for c in COLUMNS), strict=True))
        return _write(buffer.getvalue(), path)

    def to_json(self, path=None) -> str:
        document = {
            "model": self.model,
            "totals": self.totals.as_dict(),
            "columns": {c.name: c.description for c in COLUMNS},
            "layers": self.rows(),
        }
        return _write(json.dumps(document, indent=2) + "\n", path)

    def to_markdown(self, path=None) -> str:
        names = [c.name for c in COLUMNS]
        lines = [
            f"# {self.model}: input {shapes_text(self.input_shapes)}, {self.dtype}",
            "",
            "| " + " | ".join(names) + " |",
            "|" + "|".join("---" for _ in names) + "|",
        ]
        for row in self.rows():
            lines.append("| " + " | ".join(str(row[n]) for n in names) + " |")
        lines += ["", "| total | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in self.totals.as_dict().items()]
        return _write("\n".join(lines) + "\n", path)


def format_counts(counts: dict[str, int]) -> str:
    return "; ".join(f"{op} x{n}" for op, n in counts.items())


def parse_counts(cell: str) -> dict[str, int]:
    counts = {}
    for item in filter(None, cell.split("; ")):
        op, _, n = item.rpartition(" x")
        counts[op] = int(n)
    return counts


def shapes_text(shapes) -> str:
    return ", ".join("x".join(map(str, s)) for s in shapes)


def _write(text: str, path) -> str:
    if path is not None:
        from archprof.output import write_atomically

        write_atomically(path, text)
    return text
