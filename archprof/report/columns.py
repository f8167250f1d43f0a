"""The report's columns: each one's name, pandas dtype, meaning and how the files write it; the
training step's and a profiled report's columns, and a measured row's rates."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from archprof.report.formats import counts_text, operators_text
from archprof.text import dims_text


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    dtype: str  # pandas dtype
    description: str
    summable: bool = False
    # Text from the user's model, neutralised in CSV (`formats.csv_cell`): its names, and its operators'
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
        "shapes of the activations the row reads from outside it, in the order read, e.g. '1x3x224x224';"
        " of a row that runs no operator, those it passes on",
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
    Column("activation_bytes", "int64", "bytes of the output tensor(s) the row's own operations made", summable=True),
    Column("live_bytes", "int64", "activation bytes live right after the row's last op (parameters and buffers apart)"),
    Column("peak_live_bytes", "int64", "largest activation bytes live while one of the row's ops ran"),
    Column(
        "saved_activation_bytes",
        "int64",
        "training: bytes of what the row made that autograd saves for backward (each storage once; the network"
        " input, which no row makes, on the first row that saves it)",
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


# Appended to the columns of a profiled Report (`archprof.profile`), one value per row:
# empty (NaN, "" in CSV) where a row has none. Times are medians over the timed passes.
MEASURED_COLUMNS: tuple[Column, ...] = (
    Column(
        "time_ms",
        "float64",
        "median time of the row's module call, less the timed calls inside it (empty: the model's own ops, "
        "a later row of the same call, not timed)",
    ),
    Column(
        "time_share",
        "float64",
        "time_ms over the sum of every row's time_ms and the unattributed time (between hooks)",
    ),
    Column(
        "achieved_flops_per_s",
        "float64",
        "(flops + elementwise_flops) / time_ms, per second (a call in several rows: of all of them, on the first)",
    ),
    Column("bytes_moved", "int64", "fewest bytes the row moves: what it reads from outside once, outputs once"),
    Column(
        "arithmetic_intensity",
        "float64",
        "(flops + elementwise_flops) / bytes_moved (empty: no bytes; a call in several rows: of all, on the first)",
    ),
    Column("bound", "string", "'compute' or 'memory': intensity against the device's ridge (peak / bandwidth)"),
    Column("roofline_time_ms", "float64", "max(work / peak FLOP/s, bytes_moved / bandwidth): the roofline's floor"),
)
# The measured columns a rollup sums over the rows it merges (None where none has a value).
SUMMED_MEASURED = ("time_ms", "time_share", "bytes_moved", "roofline_time_ms")


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
