"""The Report: one row per layer, roll-ups by module depth, totals, and its file formats.

Rows are kept as plain columns (lists) of typed values (integers, tuples, dicts) so that
rendering a summary needs no pandas; `Report.layers` builds the DataFrame on first use.
Totals are always computed from the rows. Values become text only in the writers (CSV,
JSON, Markdown) and in render/; `archprof.diff` reads a CSV back into the same values.
The columns are defined in `columns`, the totals in `totals`, the files' text in `formats`."""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

from archprof.errors import ArchprofError, shown
from archprof.lazy_modules import LazyModule
from archprof.output import json_text
from archprof.passes.flops import OperatorCost, merged_costs
from archprof.passes.training_memory import TrainingStep, training_step
from archprof.report.columns import (
    COLUMNS,
    LAST_ROW_COLUMNS,
    MEASURED_COLUMNS,
    SUMMED_MEASURED,
    TRAINING_COLUMNS,
    Column,
    measured_rates,
)
from archprof.report.formats import csv_text, json_fraction, write
from archprof.report.totals import Totals
from archprof.text import layer_label as layer_label  # where diff, render and measure import it from
from archprof.text import visible_text
from archprof.units import checked_count, shape_text, whole_number

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = LazyModule("pandas")  # for typing.get_type_hints: pandas imported only when an annotation is read


@dataclass
class Report:
    """The analysis of one model at one input: `layers` (DataFrame), `totals`, roll-ups."""

    model: str
    input_shapes: tuple[tuple[int, ...], ...]  # batch included
    dtype: str
    columns: dict[str, list]  # one list per column of COLUMNS, one entry per row
    # Per row, the cost of each operator with a formula it ran (`by_operator`), in order.
    operator_costs: list[tuple[OperatorCost, ...]] = field(repr=False, default_factory=list)
    module_types: dict[str, str] = field(repr=False, default_factory=dict)
    training: bool = False  # rows from a training forward (saved_activation_bytes filled in)
    optimizer: str = "sgd"  # for the training estimate: a name in archprof.optimizers.OPTIMIZERS
    # A profiled report (archprof.profile): an archprof.measure.Measurement (whole-model
    # figures, ceilings, cross-check), and the MEASURED_COLUMNS in `columns`.
    measured: Any = field(default=None, repr=False)
    # Where the trace ran: "meta" (nothing real allocated), or the device of the real forward
    # archprof fell back to for a model that cannot run on meta ("cpu").
    traced_on: str = "meta"
    # Each input's dtype ("int64" for token ids): the report's floating `dtype` is not theirs.
    input_dtypes: tuple[str, ...] = ()
    # The graph the rows were computed from (`explain` reads its operators' arguments); None
    # for a rolled-up report.
    graph: Any = field(default=None, repr=False, compare=False)
    # `memory --measure`'s: an archprof.measure.peak_memory.MeasuredMemory, each step's peak
    # measured beside the prediction; written to the JSON.
    measured_memory: Any = field(default=None, repr=False)
    # `memory --fit`'s answer (`archprof.fit.Fit.as_dict`: the budget, the largest batch that
    # fits it, the bytes at that batch and at the next); written to the JSON.
    batch_fit: dict[str, int] | None = field(default=None, repr=False)
    # A rolled-up training report's step totals, from the graph of the report it was rolled
    # up from (it has none of its own to follow the step through).
    step: TrainingStep | None = field(default=None, repr=False)
    # Analysed with fold_bn: an archprof.passes.fold_bn.Folding, the BatchNorms that folded
    # into the layer before them and those that stayed, with the reason; None otherwise.
    batch_norm_folding: Any = field(default=None, repr=False)

    @property
    def input_text(self) -> str:
        """The inputs as given: each shape, with its dtype where it is not the report's own
        ('1x3x224x224', '1x77:int64')."""
        dtypes = self.input_dtypes or (self.dtype,) * len(self.input_shapes)
        return ", ".join(
            shape_text(shape) + ("" if dtype == self.dtype else f":{dtype}")
            for shape, dtype in zip(self.input_shapes, dtypes, strict=True)
        )

    @property
    def column_specs(self) -> tuple[Column, ...]:
        """The columns of this report: COLUMNS, TRAINING_COLUMNS in a training report, then
        MEASURED_COLUMNS when profiled."""
        return self._analytic_specs + (MEASURED_COLUMNS if self.measured is not None else ())

    @property
    def _analytic_specs(self) -> tuple[Column, ...]:
        return COLUMNS + TRAINING_COLUMNS if self.training else COLUMNS

    @property
    def _summable(self) -> tuple[str, ...]:
        return tuple(c.name for c in self._analytic_specs if c.summable)

    def __len__(self) -> int:
        return len(self.columns["layer"])

    @property
    def totals(self) -> Totals:
        """The whole model's figures; its `not_counted` the caller's own to change."""
        totals = self._totals
        return replace(totals, not_counted=dict(totals.not_counted))

    @cached_property
    def _totals(self) -> Totals:
        sums = {name: sum(self.columns[name]) for name in self._summable}
        not_counted: Counter[str] = Counter()
        for counts in self.columns["not_counted"]:
            not_counted.update(counts)
        return Totals(
            **{c.name: sums[c.name] for c in TRAINING_COLUMNS if self.training},
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
            **self._memory_totals(sums),
        )

    def _memory_totals(self, sums: dict[str, int]) -> dict[str, Any]:

        peaks = self.columns["peak_live_bytes"]
        peak_row = max(range(len(peaks)), key=peaks.__getitem__, default=None)
        peak = peaks[peak_row] if peak_row is not None else 0
        model_bytes = sums["param_bytes"] + sums["buffer_bytes"]
        totals: dict[str, Any] = {
            "peak_activation_bytes": peak,
            "peak_memory_bytes": model_bytes + peak,
            "peak_layer": self.columns["layer"][peak_row] if peak_row is not None else "",
            "training": self.training,
            "gradient_bytes": sums["gradient_bytes"],
            "optimizer": None,
            "optimizer_state_bytes": None,
            "saved_activation_bytes": None,
            "training_memory_bytes": None,
            "training_peak_bytes": None,
            "training_peak_layer": None,
            "training_peak_phase": None,
        }
        if self.training:
            step = self._training_step
            state = step.optimizer_state_bytes if step is not None else None
            saved = sums["saved_activation_bytes"]
            totals.update(
                optimizer=self.optimizer,
                optimizer_state_bytes=state,
                saved_activation_bytes=saved,
                training_memory_bytes=model_bytes + sums["gradient_bytes"] + (state or 0) + saved,
            )
            if step is not None:
                totals.update(
                    training_peak_bytes=model_bytes + step.optimizer_state_bytes + step.peak_bytes,
                    training_peak_layer=step.peak_layer,
                    training_peak_phase=step.peak_phase,
                )
        return totals

    @property
    def layers(self) -> pd.DataFrame:
        """One row per layer; columns and dtypes as documented in `COLUMNS`, except that an
        integer column whose values or sum do not fit in int64 holds exact Python integers
        (dtype object), so that no cell and no `.sum()` wraps around. A copy of its own at
        each access: changing it (adding a column, a count in `not_counted`) leaves the report
        as it is."""
        frame = self._layers.copy()
        for name in _COUNTS:
            if name in frame:
                frame[name] = [dict(counts) for counts in frame[name]]
        return frame

    @cached_property
    def _layers(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({c.name: pd.Series(self.columns[c.name], dtype=self._dtype(c)) for c in self.column_specs})

    def _dtype(self, column: Column) -> str:
        return _exact_dtype(column.dtype, self.columns[column.name])

    def by_operator(self) -> pd.DataFrame:
        """One row per aten operator with a formula, summed over every row of the report:
        operator, calls, macs, flops, elementwise_flops; most FLOPs first (then most
        elementwise FLOPs). Its sums are the report's totals; operators without a formula
        are in `totals.not_counted`.

        Example (ResNet-50's 53 convolutions: all its 4,089,184,256 multiply-adds but the
        classifier's 2,048 x 1,000):

            >>> frame = archprof.analyze("resnet50").by_operator().set_index("operator")
            >>> frame.loc["aten.convolution", ["calls", "macs"]].tolist()
            [53, 4087136256]
        """
        import pandas as pd

        costs = sorted(merged_costs(self.operator_costs), key=lambda c: (-c.flops, -c.elementwise_flops, c.operator))
        columns = {
            "operator": [c.operator for c in costs],
            "calls": [c.calls for c in costs],
            "macs": [c.macs for c in costs],
            "flops": [c.flops for c in costs],
            "elementwise_flops": [c.elementwise_flops for c in costs],
        }
        return pd.DataFrame(
            {
                name: pd.Series(values, dtype=_exact_dtype("string" if name == "operator" else "int64", values))
                for name, values in columns.items()
            }
        )

    def by_module(self, depth: int | None = None) -> pd.DataFrame:
        """One row per module path, containers included ('' = the model), with the sums of the
        summable columns over its whole subtree (every call of it and of its sub-modules):
        module, module_type, depth, then the summable columns (SUMMABLE, then those of
        TRAINING_COLUMNS in a training report). `depth` keeps the modules at most that deep
        (None: all). Parents come before their children, in the order the modules first ran;
        the row of '' holds the sums over every row, the report's totals of those columns
        (`saved_activation_bytes` 0 in an inference report, where `Totals` has None: nothing
        is saved).

        Example (ResNet-50's first convolution: 64 filters of 3 x 7 x 7, each applied at
        112 x 112 positions):

            >>> frame = archprof.analyze("resnet50").by_module(depth=1).set_index("module")
            >>> frame.loc["conv1", ["param_count", "macs"]].tolist()
            [9408, 118013952]
        """
        import pandas as pd

        if depth is not None:
            _check_depth(depth, "by_module")
        sums: dict[str, list[int]] = {}
        for index, path in enumerate(self.columns["layer"]):
            parts = path.split(".") if path else []
            deepest = len(parts) if depth is None else min(depth, len(parts))
            values = [self.columns[name][index] for name in self._summable]
            for level in range(deepest + 1):
                totals = sums.setdefault(".".join(parts[:level]), [0] * len(values))
                for position, value in enumerate(values):
                    totals[position] += value
        modules = list(sums)
        columns: dict[str, tuple[str, list]] = {
            "module": ("string", modules),
            "module_type": ("string", [self.module_types.get(m, "") for m in modules]),
            "depth": ("int64", [m.count(".") + 1 if m else 0 for m in modules]),
        }
        for position, name in enumerate(self._summable):
            columns[name] = ("int64", [sums[m][position] for m in modules])
        return pd.DataFrame(
            {name: pd.Series(values, dtype=_exact_dtype(dtype, values)) for name, (dtype, values) in columns.items()}
        )

    def explain(self, layer: str | int | None = None, markdown: bool = False, width: int | None = None) -> str:
        """Every figure of one layer worked out with the layer's own numbers, by the formulas
        that computed them (`archprof.explain`): `layer` is a row's name as the summary shows
        it ('features.0', 'relu (call 2)'), its number (1 = the first row; '#3' always a
        number) or a container ('layer1.0': its children's totals and its own operations).
        None: the receptive-field table down the network and each stage's share. Text (each
        figure on one line, or wrapped at spaces to `width`), or Markdown with `markdown=True`.
        Needs the report `analyze` returned (not rolled up)."""
        from archprof.explain import explain

        return explain(self, layer, markdown=markdown, width=width)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per row, column -> value, each the caller's own: its count dicts
        (`not_counted`) copied, so that changing one leaves the report as it is."""
        names = list(self.columns)
        return [_owned(dict(zip(names, values, strict=True))) for values in zip(*self.columns.values(), strict=True)]

    def row(self, index: int) -> dict[str, Any]:
        """Row `index` (0 to len - 1, in the order the rows ran) as `rows` gives it."""
        position = self._row_number(index)
        return _owned({name: values[position] for name, values in self.columns.items()})

    def _row_number(self, index: object) -> int:
        """`index` as a row's number, 0 to len - 1 (a NumPy integer too), refused in one line otherwise."""
        position = whole_number(index)
        if position is None or not 0 <= position < len(self):
            last = len(self) - 1
            raise ArchprofError(f"row {shown(index)} does not exist: {self.model}'s report has rows 0 to {last}")
        return position

    def merged_row(self, path: str, indices: Sequence[int]) -> dict[str, Any]:
        """Rows `indices` (in the order they ran) as one row of module `path`, as `rollup`
        merges them: the sums of the summable columns, and, of the rows that ran (a module
        never called, an unused head, adds its parameters only), live bytes after the last,
        the peak over all, the input of the first that read one (no kernel where there are several: the
        rows have theirs), and the output and field of the last (the module's output). A
        profiled report's measured columns too: time, share, bytes moved and roofline time
        summed, the rates worked out from those sums."""
        if not isinstance(path, str):
            raise ArchprofError(f"merged_row takes the module's path as a string ('layer1'), got {shown(path)}")
        if isinstance(indices, str) or not isinstance(indices, Sequence) or not indices:
            raise ArchprofError(f"merged_row takes a list of row numbers, at least one, got {shown(indices)}")
        indices = [self._row_number(index) for index in indices]
        ran = self._ran(indices)
        merged: dict[str, Any] = {
            "layer": path,
            "module_type": self.module_types.get(path, ""),
            "call": min(self.columns["call"][i] for i in ran),
            "depth": 0 if not path else path.count(".") + 1,
            "operators": tuple(dict.fromkeys(op for i in ran for op in self.columns["operators"][i])),
            "output_shape": self.columns["output_shape"][ran[-1]],
            # The first that read one: a row before it may run no operator (a Dropout in evaluation).
            "input_shape": next((shape for i in ran if (shape := self.columns["input_shape"][i])), ""),
            "kernel": self.columns["kernel"][ran[0]] if len(ran) == 1 else "",  # several rows, several windows
            "live_bytes": self.columns["live_bytes"][ran[-1]],
            "peak_live_bytes": max(self.columns["peak_live_bytes"][i] for i in ran),
        }
        for name in self._summable:
            merged[name] = sum(self.columns[name][i] for i in indices)
        for name in LAST_ROW_COLUMNS:
            merged[name] = self.columns[name][ran[-1]]
        not_counted: Counter[str] = Counter()
        for i in indices:
            not_counted.update(self.columns["not_counted"][i])
        merged["not_counted"] = dict(not_counted)
        if self.measured is not None:
            merged.update(self._merged_measurements(merged, indices))
        return merged

    def _ran(self, indices: Sequence[int]) -> list[int]:
        """Of rows `indices`, those that ran (all of them where none did: parameters alone)."""
        return [i for i in indices if self.columns["call"][i] >= 0] or list(indices)

    def output_row(self, indices: Sequence[int]) -> int:
        """Of rows `indices` merged into one, the row whose output and field the merged row
        takes: the last that ran."""
        return self._ran(indices)[-1]

    def rollup_groups(self, depth: int) -> list[tuple[str, list[int]]]:
        """The rows of `rollup(depth)`, in order: each its module's path and the indices of
        the rows merged into it."""
        _check_depth(depth, "rollup")
        calls = self.columns["call"]
        ancestors = [".".join(path.split(".")[:depth]) for path in self.columns["layer"]]
        ran = {ancestor for ancestor, call in zip(ancestors, calls, strict=True) if call >= 0}
        groups: dict[tuple[str, int], list[int]] = {}
        for index, (path, ancestor) in enumerate(zip(self.columns["layer"], ancestors, strict=True)):
            # A deeper row joins its ancestor's first call; so does a never-called row (its
            # parameters alone) where anything of its ancestor ran, else its one row never called.
            joined = 0 if ancestor in ran else -1
            call = calls[index] if path == ancestor and calls[index] >= 0 else joined
            groups.setdefault((ancestor, call), []).append(index)
        rows: list[tuple[str, list[int]]] = []
        for (path, _), indices in groups.items():
            if len(indices) > 1 and all(self.columns["layer"][i] == path for i in indices):
                rows += [(path, run) for run in self._runs_between_rows_kept(indices, ancestors)]
            else:
                rows.append((path, indices))
        return sorted(rows, key=lambda row: row[1][0])

    def _runs_between_rows_kept(self, indices: list[int], ancestors: list[str]) -> list[list[int]]:
        """A module call's own rows and nothing under it merged (`rollup_groups`), split where a
        row of another module that stays a row of its own at this depth ran between them (its
        operations before and after a child's call, the child at or above the depth): each
        run in place, as the rows ran. Its own rows around a deeper child's, which joins another
        row (its first call's), stay one row, as the call's."""
        runs = [[indices[0]]]
        for before, index in itertools.pairwise(indices):
            kept_between = any(self.columns["layer"][k] == ancestors[k] for k in range(before + 1, index))
            if kept_between:
                runs.append([index])
            else:
                runs[-1].append(index)
        return runs

    def rollup(self, depth: int) -> Report:
        """Merge every row below module depth `depth` into its ancestor at that depth. A row
        at that depth or above stays one row per call (a module called twice, two rows); the
        rows below a module called more than once join its first call's row (the rows do not
        say which call ran them), and so do the rows of modules never called (an unused
        head, MultiheadAttention's out_proj), parameters alone, where anything of that
        ancestor ran. Whole-model figures stay: the training step's peak (its layer named by
        its ancestor), the measured memory, the BatchNorm folding. A profiled report keeps its
        measurement and its measured columns: a merged row's time, share, bytes moved and
        roofline time the sums of its rows', its rates worked out from those sums; the
        measurement's notes that count rows (above the roof) count the merged rows."""
        groups = self.rollup_groups(depth)
        columns: dict[str, list] = {c.name: [] for c in self.column_specs}
        operator_costs = [merged_costs(self.operator_costs[i] for i in indices) for _, indices in groups]
        for path, indices in groups:
            # A row of that module itself stays as it is; a deeper one alone is its
            # ancestor's row all the same.
            alone = len(indices) == 1 and self.columns["layer"][indices[0]] == path
            merged = self.row(indices[0]) if alone else self.merged_row(path, indices)
            for name, values in columns.items():
                values.append(merged[name])
        return Report(
            self.model,
            self.input_shapes,
            self.dtype,
            columns,
            operator_costs,
            self.module_types,
            self.training,
            self.optimizer,
            traced_on=self.traced_on,
            input_dtypes=self.input_dtypes,
            # whole-model figures, true of any rows; the notes that count rows count these
            measured=self.measured.for_rows(columns, self.columns) if self.measured is not None else None,
            measured_memory=self.measured_memory,
            batch_fit=self.batch_fit,
            batch_norm_folding=self.batch_norm_folding,
            step=self._step_at(depth),
        )

    def _merged_measurements(self, merged: dict[str, Any], indices: Sequence[int]) -> dict[str, Any]:
        """The measured columns of rows `indices` merged into row `merged`: the sums, the time
        rounded as a row's (to 0.1 ns: past it, the sum's binary noise), its share of it."""
        sums: dict[str, Any] = {}
        for name in SUMMED_MEASURED:
            values = [self.columns[name][i] for i in indices if self.columns[name][i] is not None]
            sums[name] = sum(values) if values else None
        if sums["time_ms"] is not None:
            sums["time_ms"] = round(sums["time_ms"], 7)
        sums["time_share"] = self.measured.share(sums["time_ms"])
        work = merged["flops"] + merged["elementwise_flops"]
        return {**sums, **measured_rates(work, sums["time_ms"], sums["bytes_moved"], self.measured.ceilings.ridge)}

    @cached_property
    def _training_step(self) -> TrainingStep | None:
        """A training report's step totals: its own graph's, or those it was rolled up with."""
        if not self.training or (self.step is None and self.graph is None):
            return self.step
        return self.step or training_step(self.graph, self.optimizer)

    def _step_at(self, depth: int) -> TrainingStep | None:
        """The training step's totals, its peak's layer as a rollup to `depth` names it."""
        step = self._training_step
        if step is None:
            return None
        return replace(step, peak_layer=".".join(step.peak_layer.split(".")[:depth]))

    # -- file formats --------------------------------------------------------------------

    def to_csv(self, path=None) -> str:
        """CSV, the format of record: one row per layer, exact integers, bytes in bytes; fields
        and strides as '212x212', operator counts as 'aten.cumsum x1; ...' (`Column.text`).
        Names from the model are neutralised against formula injection (`csv_cell`)."""
        specs = self.column_specs
        user_text = [c.user_text for c in specs]
        rows = zip(*(self._cells(c) for c in specs), strict=True)
        return write(csv_text([c.name for c in specs], rows, user_text), path)

    def to_json(self, path=None) -> str:
        """JSON: the values as they are (a field or stride is a list of ints, a fractional
        stride's entries strings such as "1/2", or "input" / "undefined", or null;
        not_counted an object operator -> count)."""
        document = {
            "model": self.model,
            "traced_on": self.traced_on,
            "totals": self.totals.as_dict(),
            "columns": {c.name: c.description for c in self.column_specs},
            "layers": self._json_rows(),
        }
        if self.measured is not None:
            document["measured"] = self.measured.as_dict()
        if self.measured_memory is not None:
            document["measured_memory"] = self.measured_memory.as_dict()
        if self.batch_fit is not None:
            document["batch_fit"] = self.batch_fit
        if self.batch_norm_folding is not None:  # the inference view: a reader tells it from the model as it is
            document["batch_norm_folding"] = dataclasses.asdict(self.batch_norm_folding)
        return write(json_text(document, default=json_fraction), path)

    def to_markdown(self, path=None) -> str:
        """Markdown: `table()` as the terminal shows it (every column, units, a module's
        subtotals in parentheses), then the totals; as `archprof summary -f markdown` writes
        it, or for a profiled report the measured tables, the whole model, the ceilings and
        the cross-check, as `archprof profile -f markdown` does. CSV and JSON hold every
        column's exact values."""
        from archprof.render.export import markdown_text

        return write(markdown_text(self.table()), path)

    # -- notebooks -----------------------------------------------------------------------

    def table(self):
        """The report as a Rich renderable (every column): `rich.print(report.table())`; the
        summary, or for a profiled report the profile (`render.profile.report_table`, which
        the CLI draws too)."""
        from archprof.render.profile import report_table

        return report_table(self)

    def _repr_html_(self) -> str:
        from archprof.render.export import html_text

        return html_text(self.table())

    def __repr__(self) -> str:
        from archprof.units import human_bytes, human_count

        totals = self.totals
        if totals.training_peak_bytes is not None:
            peak = f"training step peak {human_bytes(totals.training_peak_bytes)}"
        elif self.training:
            peak = f"forward peak {human_bytes(totals.peak_memory_bytes)}"
        else:
            peak = f"peak memory (inference) {human_bytes(totals.peak_memory_bytes)}"
        return (
            f"<archprof Report of {visible_text(self.model)}: input {self.input_text} {self.dtype},"
            f" {len(self)} rows>\n"
            f"  params {human_count(totals.param_count)} ({totals.param_count:,}), MACs {human_count(totals.macs)},"
            f" FLOPs {human_count(totals.flops)}, {peak}\n"
            "  .table() to print it, .layers for the DataFrame, .by_module() / .by_operator() to query it"
        )

    def _json_rows(self) -> list[dict[str, Any]]:
        """`rows()`, with the columns JSON writes as text (`Column.text_in_json`) as text."""
        texts = {c.name: c.text for c in self.column_specs if c.text_in_json}
        rows = self.rows()
        for row in rows:
            for name, text in texts.items():
                row[name] = text(row[name])
        return rows

    def _cells(self, column: Column) -> list:
        """The column's values as CSV and Markdown write them."""
        values = self.columns[column.name]
        return values if column.text is None else [column.text(value) for value in values]


def _check_depth(depth, what: str) -> None:
    checked_count(f"{what} depth", depth, 0, note="0 = the whole model")


_INT64 = range(-(2**63), 2**63)


# The columns whose cells are dicts of counts: copied wherever a row leaves the report.
_COUNTS = ("not_counted",)


def _owned(row: dict[str, Any]) -> dict[str, Any]:
    """`row` with its count dicts copied: the caller's own to change."""
    for name in _COUNTS:
        if name in row:
            row[name] = dict(row[name])
    return row


def fits_int64(values: list) -> bool:
    """Whether integers (None: no value) and their sum fit in int64, where pandas would
    otherwise wrap them around."""
    numbers = [value for value in values if value is not None]
    return all(n in _INT64 for n in (*numbers, sum(numbers)))


def _exact_dtype(dtype: str, values: list) -> str:
    """`dtype`, or "object" (exact Python integers) for an int64 column whose values or sum
    would wrap around in int64 (`fits_int64`)."""
    return dtype if dtype != "int64" or fits_int64(values) else "object"
