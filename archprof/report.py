"""The Report: one row per layer, roll-ups by module depth, totals, and its file formats.

Rows are kept as plain columns (lists) of typed values (integers, tuples, dicts) so that
rendering a summary needs no pandas; `Report.layers` builds the DataFrame on first use.
Totals are always computed from the rows. Values become text only in the writers (CSV,
JSON, Markdown) and in render/; `archprof.diff` reads a CSV back into the same values."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import cached_property
from typing import TYPE_CHECKING, Any

from archprof.errors import ArchprofError, shown
from archprof.output import json_text, write_atomically
from archprof.passes.flops import OperatorCost, merged_costs
from archprof.passes.memory import TrainingStep, training_step
from archprof.text import dims_text, visible_text
from archprof.text import layer_label as layer_label  # where diff, render and measure import it from
from archprof.units import checked_count, shape_text

if TYPE_CHECKING:
    import pandas as pd


# An operator name written as it is in a cell of names: none of the separators (a space, "; "),
# nor a double quote, which opens a name written as a JSON string.
_BARE_NAME = re.compile(r'[^\s;"]+')


def operator_text(name: str) -> str:
    """An operator's name as a cell of names writes it: as it is ('aten.cumsum'), or, where it
    holds a space, a ';' or a '"' (a custom library's namespace may be any text), as a JSON
    string ('"my lib.f"'), so that `archprof.diff` reads every name back exactly."""
    return name if _BARE_NAME.fullmatch(name) else json.dumps(name, ensure_ascii=False)


def operators_text(names: tuple[str, ...]) -> str:
    """A row's operators as the CSV and JSON write them: 'convolution relu_'."""
    return " ".join(map(operator_text, names))


def counts_text(counts: dict[str, int]) -> str:
    """Operator counts as the CSV writes them: 'aten.cumsum x1; aten.sort x2'."""
    return "; ".join(f"{operator_text(op)} x{n}" for op, n in counts.items())


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    dtype: str  # pandas dtype
    description: str
    summable: bool = False
    # Text from the user's model, neutralised in CSV (`csv_cell`): its names, and its operators'
    # (a custom operator's namespace may be any text: "=cmd|' /C calc'!A0").
    user_text: bool = False
    text: Callable[[Any], str] | None = None  # how CSV and Markdown write a value that is not text or a number
    text_in_json: bool = False  # JSON writes it as `text` too (as reports always have)


# The documented columns of `Report.layers`, in order.
COLUMNS: tuple[Column, ...] = (
    Column("layer", "string", "module path, e.g. 'layer1.0.conv1' ('' for the model itself)", user_text=True),
    Column("module_type", "string", "class name of the module, e.g. 'Conv2d'", user_text=True),
    Column("call", "int64", "which call of the module this is (0 = first; -1 = never called)"),
    Column("depth", "int64", "nesting depth of the module (0 = the model)"),
    # A tuple of names, ("convolution", "relu_"); CSV and JSON "convolution relu_" (`operators_text`).
    Column(
        "operators",
        "object",
        "aten operators the row ran, in order, repeats merged",
        user_text=True,
        text=operators_text,
        text_in_json=True,
    ),
    Column("output_shape", "string", "shape of the row's output, batch included, e.g. '1x64x112x112'"),
    Column(
        "input_shape",
        "string",
        "shapes of the activations the row reads from outside it, in the order read, e.g. '1x3x224x224'",
    ),
    Column("kernel", "string", "window of the row's first convolution or pooling, e.g. '3x3' ('' without one)"),
    Column("param_count", "int64", "parameters first used by this row", summable=True),
    Column("trainable_param_count", "int64", "of which require a gradient", summable=True),
    Column("param_bytes", "int64", "bytes of those parameters", summable=True),
    Column("buffer_bytes", "int64", "bytes of buffers (BatchNorm running statistics, ...)", summable=True),
    Column(
        "gradient_bytes",
        "int64",
        "bytes of the gradients of the trainable ones the backward pass reaches (training)",
        summable=True,
    ),
    Column("macs", "int64", "multiply-accumulates (convolution, linear, matmul)", summable=True),
    Column("flops", "int64", "floating-point operations of the MACs: 2 x macs", summable=True),
    Column(
        "elementwise_flops", "int64", "FLOPs of elementwise work (activations, norms, pooling, adds)", summable=True
    ),
    Column("activation_bytes", "int64", "bytes of the row's output tensor(s)", summable=True),
    Column("live_bytes", "int64", "activation bytes live right after the row's last op (parameters and buffers apart)"),
    Column("peak_live_bytes", "int64", "largest activation bytes live while one of the row's ops ran"),
    Column(
        "saved_activation_bytes",
        "int64",
        "training: bytes of what the row made that autograd saves for backward (each storage once)",
        summable=True,
    ),
    Column(
        "receptive_field",
        "object",
        "input pixels per spatial dim that can reach output unit 0, padding included: a tuple of ints ((212, 212);"
        " CSV '212x212'), FieldMark.INPUT ('input': the whole input), FieldMark.UNDEFINED ('undefined': not"
        " computable exactly) or None (CSV '': no spatial field)",
        text=dims_text,
    ),
    Column(
        "effective_stride",
        "object",
        "input pixels between neighbouring output units, per spatial dim ((32, 32); CSV '32x32'; a Fraction after"
        " upsampling: CSV '1/2x1/2'), UNDEFINED or None",
        text=dims_text,
    ),
    Column(
        "receptive_field_start",
        "object",
        "input coordinate of the field's first pixel per dim ((-90, -90); CSV '-90x-90'), UNDEFINED or None",
        text=dims_text,
    ),
    Column(
        "covers_input",
        "boolean",
        "output unit 0's field spans the whole input in every dim (NA if undefined, or if the row reads no input)",
    ),
    Column(
        "receptive_field_note",
        "string",
        "why the field (or its stride) is undefined, or that it is an upper bound",
        user_text=True,
    ),
    Column(
        "not_counted",
        "object",
        "operators without a formula -> how often the row ran them, a dict ({'aten.cumsum': 2}; CSV"
        " 'aten.cumsum x2; ...')",
        user_text=True,
        text=counts_text,
    ),
)
# Rolled-up rows take these from their last row (the module's output), like output_shape.
LAST_ROW_COLUMNS = (
    "receptive_field",
    "effective_stride",
    "receptive_field_start",
    "covers_input",
    "receptive_field_note",
)
SUMMABLE = tuple(c.name for c in COLUMNS if c.summable)

# Appended to COLUMNS in a training report (`analyze(..., training=True)`): one training
# step's compute per row, from its backward pass traced on meta (`archprof.passes.backward`).
TRAINING_COLUMNS: tuple[Column, ...] = (
    Column(
        "backward_input_macs",
        "int64",
        "training: MACs of the gradients sent back to the row's inputs (none to the network's input)",
        summable=True,
    ),
    Column(
        "backward_weight_macs", "int64", "training: MACs of the gradients of its trainable parameters", summable=True
    ),
    Column(
        "recomputed_macs",
        "int64",
        "training: MACs of its forward run again inside the backward (activation checkpointing)",
        summable=True,
    ),
    Column(
        "backward_flops",
        "int64",
        "training: 2 x (backward_input_macs + backward_weight_macs + recomputed_macs)",
        summable=True,
    ),
    Column(
        "backward_elementwise_flops",
        "int64",
        "training: elementwise FLOPs of the backward (activation, norm and pooling gradients, gradient sums)",
        summable=True,
    ),
    Column("training_flops", "int64", "training: flops + backward_flops, one training step", summable=True),
)
_INT64 = range(-(2**63), 2**63)

# Appended to the columns of a profiled Report (`archprof.profile`), one value per row:
# empty (NaN, "" in CSV) where a row has none. Times are medians over the timed passes.
MEASURED_COLUMNS: tuple[Column, ...] = (
    Column(
        "time_ms",
        "float64",
        "median time of the row's module call, less the timed calls inside it (empty: the model's own ops, "
        "a later row of the same call, not timed)",
    ),
    Column("time_share", "float64", "the row's share of the forward timed with hooks (median over the passes)"),
    Column("achieved_flops_per_s", "float64", "(flops + elementwise_flops) / time_ms, per second"),
    Column("bytes_moved", "int64", "fewest bytes the row moves: what it reads from outside once, outputs once"),
    Column("arithmetic_intensity", "float64", "(flops + elementwise_flops) / bytes_moved (empty: no bytes)"),
    Column("bound", "string", "'compute' or 'memory': intensity against the device's ridge (peak / bandwidth)"),
    Column("roofline_time_ms", "float64", "max(work / peak FLOP/s, bytes_moved / bandwidth): the roofline's floor"),
)
# The measured columns a rollup sums over the rows it merges (None where none has a value).
_SUMMED_MEASURED = ("time_ms", "time_share", "bytes_moved", "roofline_time_ms")


def measured_rates(work: int, ms: float | None, nbytes: int, ridge: float) -> dict[str, Any]:
    """A row's achieved FLOP/s, arithmetic intensity and roofline bound, from its work
    (flops + elementwise_flops), its time and the bytes it moves; None where there is no
    time or no bytes."""
    intensity = work / nbytes if nbytes else None
    return {
        "achieved_flops_per_s": work / (ms / 1e3) if ms else None,
        "arithmetic_intensity": intensity,
        "bound": "" if intensity is None else ("compute" if intensity >= ridge else "memory"),
    }


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
    # Memory. In a training report peak_* are the forward pass's, with what autograd saved
    # held until the end; training_peak_* are the whole step's, backward included.
    peak_activation_bytes: int  # largest live activation bytes, over all rows
    peak_memory_bytes: int  # param_bytes + buffer_bytes + peak_activation_bytes
    peak_layer: str  # the layer of the (first) row where that peak happens
    training: bool
    gradient_bytes: int  # one gradient per trainable parameter the backward pass reaches, in its dtype
    # Training reports only (None otherwise):
    optimizer: str | None  # a name in archprof.optimizers.OPTIMIZERS: sgd, momentum, adam, ...
    optimizer_state_bytes: int | None  # copies of the trainable parameters the optimizer keeps, and its 0-dim scalars
    saved_activation_bytes: int | None  # what autograd saves for backward, each storage once
    # params + buffers + gradients + optimizer state + saved, all at once: a sum, no timeline
    training_memory_bytes: int | None
    # The training step's peak (`passes.memory.training_timeline`): params + buffers +
    # optimizer state + the activations and gradients held at the step's busiest op, the
    # layer it belongs to and its phase (forward, backward, recompute); or, where higher,
    # at the optimizer's update ("optimizer step", layer "": its temporaries on top of
    # the gradients). A rolled-up report keeps its own (its layer named by the ancestor at the depth).
    training_peak_bytes: int | None
    training_peak_layer: str | None
    training_peak_phase: str | None
    # Training reports only (None otherwise): one training step's compute, the sums of the
    # TRAINING_COLUMNS; training_flops = flops + backward_flops.
    backward_input_macs: int | None = None
    backward_weight_macs: int | None = None
    recomputed_macs: int | None = None
    backward_flops: int | None = None
    backward_elementwise_flops: int | None = None
    training_flops: int | None = None

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

    @cached_property
    def totals(self) -> Totals:
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
        each access: changing it (adding a column) leaves the report as it is."""
        return self._layers.copy()

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
        are in `totals.not_counted`."""
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
        the row of '' holds the report's totals."""
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
        return [dict(zip(self.columns, values, strict=True)) for values in zip(*self.columns.values(), strict=True)]

    def row(self, index: int) -> dict[str, Any]:
        return {name: values[index] for name, values in self.columns.items()}

    def merged_row(self, path: str, indices: Sequence[int]) -> dict[str, Any]:
        """Rows `indices` (in the order they ran) as one row of module `path`, as `rollup`
        merges them: the sums of the summable columns, and, of the rows that ran (a module
        never called, an unused head, adds its parameters only), live bytes after the last,
        the peak over all, the input of the first (no kernel where there are several: the
        rows have theirs), and the output and field of the last (the module's output). A
        profiled report's measured columns too: time, share, bytes moved and roofline time
        summed, the rates worked out from those sums."""
        ran = self._ran(indices)
        merged: dict[str, Any] = {
            "layer": path,
            "module_type": self.module_types.get(path, ""),
            "call": min(self.columns["call"][i] for i in ran),
            "depth": 0 if not path else path.count(".") + 1,
            "operators": tuple(dict.fromkeys(op for i in ran for op in self.columns["operators"][i])),
            "output_shape": self.columns["output_shape"][ran[-1]],
            "input_shape": self.columns["input_shape"][ran[0]],
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
        return [(path, indices) for (path, _), indices in groups.items()]

    def rollup(self, depth: int) -> Report:
        """Merge every row below module depth `depth` into its ancestor at that depth. A row
        at that depth or above stays one row per call (a module called twice, two rows); the
        rows below a module called more than once join its first call's row (the rows do not
        say which call ran them), and so do the rows of modules never called (an unused
        head, MultiheadAttention's out_proj), parameters alone, where anything of that
        ancestor ran. Whole-model figures stay: the training step's peak (its layer named by
        its ancestor), the measured memory, the BatchNorm folding. A profiled report keeps its
        measurement and its measured columns: a merged row's time, share, bytes moved and
        roofline time the sums of its rows', its rates worked out from those sums."""
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
            measured=self.measured,  # whole-model figures: true of any rows
            measured_memory=self.measured_memory,
            batch_fit=self.batch_fit,
            batch_norm_folding=self.batch_norm_folding,
            step=self._step_at(depth),
        )

    def _merged_measurements(self, merged: dict[str, Any], indices: Sequence[int]) -> dict[str, Any]:
        """The measured columns of rows `indices` merged into row `merged`."""
        sums: dict[str, Any] = {}
        for name in _SUMMED_MEASURED:
            values = [self.columns[name][i] for i in indices if self.columns[name][i] is not None]
            sums[name] = sum(values) if values else None
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
        return _write(csv_text([c.name for c in specs], rows, user_text), path)

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
        return _write(json_text(document, default=json_fraction), path)

    def to_markdown(self, path=None) -> str:
        """Markdown: `table()` as the terminal shows it (every column, units, a module's
        subtotals in parentheses), then the totals; as `archprof summary -f markdown` writes
        it, or for a profiled report the measured tables, the whole model, the ceilings and
        the cross-check, as `archprof profile -f markdown` does. CSV and JSON hold every
        column's exact values."""
        from archprof.render.export import markdown_text

        return _write(markdown_text(self.table()), path)

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


def _exact_dtype(dtype: str, values: list) -> str:
    """`dtype`, or "object" (exact Python integers) for an int64 column whose values or sum
    would wrap around in int64."""
    if dtype != "int64":
        return dtype
    numbers = [value for value in values if value is not None]
    return dtype if all(n in _INT64 for n in (*numbers, sum(numbers))) else "object"


# -- text from the user's model (module names, class names, the model's name) ------------

# OWASP's list of the first characters that make a spreadsheet read a cell as a formula.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_QUOTE = "'"


def csv_cell(value):
    """A cell for a CSV file: text starting with = + - @, a tab or a carriage return gets a
    leading ' (OWASP's defence against formula injection), and so does text already starting
    with ', so that `csv_cell_text` gives every text back exactly. Numbers pass unchanged."""
    if isinstance(value, str) and value.startswith((*_FORMULA_STARTS, _QUOTE)):
        return _QUOTE + value
    return value


def csv_cell_text(cell: str) -> str:
    """The text `csv_cell` wrote."""
    return cell.removeprefix(_QUOTE)


def csv_text(header: Sequence[str], rows: Iterable[Sequence], user_text: Sequence[bool]) -> str:
    """CSV with a header; the cells where `user_text` is true go through `csv_cell`."""
    buffer = io.StringIO()
    plain = csv.writer(buffer, lineterminator="\n")
    # The csv module quotes a cell holding "\n" but not one holding "\r", which a reader
    # takes for the end of the line: a row with one is written with every cell quoted.
    quoted = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)
    plain.writerow(header)
    for row in rows:
        cells = [csv_cell(cell) if is_user_text else cell for cell, is_user_text in zip(row, user_text, strict=True)]
        has_return = any(isinstance(cell, str) and "\r" in cell for cell in cells)
        (quoted if has_return else plain).writerow(cells)
    return buffer.getvalue()


def json_fraction(value: Any) -> str:
    """JSON for a fractional effective stride: '1/2', as the CSV writes it."""
    if isinstance(value, Fraction):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _write(text: str, path) -> str:
    """`text`, written to `path` (a str or os.PathLike) where given."""
    if path is not None:
        if not isinstance(path, (str, os.PathLike)):
            raise ArchprofError(
                f"path must be a file name (a str or a Path), got {shown(path)} ({type(path).__name__})"
            )
        write_atomically(path, text)
    return text
