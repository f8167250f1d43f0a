"""One operator explained: its formulas with its own arguments put in (convolution,
matrix product, BatchNorm, pooling, interpolation (its mode named), concatenation, and any
other operator of the catalogue by its cost formula), and the receptive-field step of a
window. The values are the catalogue's and the receptive-field pass's; only the layout is
this module's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from math import prod
from typing import Any

from archprof.explain.document import Section, Step
from archprof.graph import Graph, OpNode, TensorMeta
from archprof.operators import Family, operator_named
from archprof.operators.costs import FREE, antialiased_windows, expand
from archprof.operators.shapes import conv_output_size, pool_output_size, transposed_conv_output_size
from archprof.passes.flops import op_cost
from archprof.passes.fold_bn import BATCH_NORMS, runs_instance_norm
from archprof.passes.layers import LayerGroup
from archprof.passes.receptive_field import FieldMark, receptive_field_columns
from archprof.passes.receptive_field.walk import UPPER_BOUND
from archprof.text import dims_text
from archprof.units import shape_text


@dataclass(frozen=True, slots=True)
class FieldCells:
    """A tensor's receptive field as the report's columns hold a row's: the size, effective
    stride and start per spatial dimension (tuples), or a FieldMark, or None; and why."""

    field: Any
    stride: Any
    start: Any
    note: str

    def windowed(self) -> bool:
        """Whether the recurrence of a window can start from it: numbers in every cell, whole
        strides (after upsampling, a fraction, unit 0's field is not the recurrence's)."""
        cells = (self.field, self.stride, self.start)
        return all(isinstance(cell, tuple) for cell in cells) and all(isinstance(j, int) for j in self.stride)


Fields = dict[int, FieldCells]  # TensorMeta.id -> its cells (absent: no field)


def field_cells(graph: Graph) -> Fields:
    """The receptive-field cells of every tensor the ops read or write: the pass's
    `receptive_field_columns`, asked of one tensor at a time (a group per tensor)."""
    tensors = list({t.id: t for op in graph.ops for t in (*op.inputs, *op.outputs)}.values())
    columns = receptive_field_columns(graph, [LayerGroup("", "", 0, (), (t,)) for t in tensors])
    cells = zip(*(columns[name] for name in _FIELD_COLUMNS), strict=True)
    return {t.id: FieldCells(*row) for t, row in zip(tensors, cells, strict=True) if row[0] is not None}


_FIELD_COLUMNS = ("receptive_field", "effective_stride", "receptive_field_start", "receptive_field_note")


def field_note(fields: Fields, tensor: TensorMeta | None) -> str:
    """A tensor's receptive field in words."""
    cells = fields.get(tensor.id) if tensor is not None else None
    if cells is None:
        return "none (no spatial field)"
    if cells.field == FieldMark.INPUT:
        return "the whole input"
    if cells.field == FieldMark.UNDEFINED:
        return f"undefined ({cells.note})"
    words = f"field {dims_text(cells.field)}, jump {dims_text(cells.stride)}, start {dims_text(cells.start)}"
    return f"{words} ({cells.note})" if cells.note.startswith(UPPER_BOUND) else words


@dataclass(frozen=True, slots=True)
class Sources:
    """Where the tensors an operator reads come from, for the words on its weights: the op
    that made each tensor, the row of each op, and the row whose parameter count holds each
    parameter (the first row that reads it, as the parameters pass counts)."""

    made_by: dict[int, OpNode]  # TensorMeta.id -> the op that wrote it
    row_of: dict[int, int]  # OpNode.index -> its row
    counted_on: dict[str, int]  # parameter name -> the row that counts it
    labels: Sequence[str]  # the rows' labels

    def origin(self, tensor: TensorMeta) -> TensorMeta:
        """The tensor `tensor` was read from: back through views, copies and repeats (free
        operators of one tensor) to a parameter, a buffer or the output of a computation."""
        while (maker := self.made_by.get(tensor.id)) is not None and len(maker.inputs) == 1 and is_free(maker):
            tensor = maker.inputs[0]
        return tensor

    def not_counted_here(self, op: OpNode, name: str, tensor: TensorMeta) -> str | None:
        """None where `tensor` is a parameter that `op`'s row counts; else why its `name`
        (weights, bias, scale) is not among the row's parameters."""
        source = self.origin(tensor)
        if source.kind == "parameter":
            row = self.counted_on[source.name]
            if row == self.row_of[op.index]:
                return None
            label = self.labels[row]
            return f"{name}: the parameter {source.name}, counted on row {row + 1} ({label}), the first to use it"
        if source.kind == "buffer":
            return f"{name}: the buffer {source.name}, model state counted in buffer bytes, not a parameter"
        made = "an input of the model" if source.kind == "input" else "computed in the forward pass"
        return f"{name}: {made}, not a parameter"


def operator_section(op: OpNode, fields: Fields, sources: Sources) -> Section | None:
    """The operator's own formulas, or None for a free one (data movement, creation)."""
    if op.op in ("aten.convolution", "aten._convolution"):
        return _convolution(op, fields, sources)
    if op.op in ("aten.addmm", "aten.mm", "aten._addmm_activation"):
        return _matrix_product(op, sources)
    if op.op in BATCH_NORMS:
        return _batch_norm(op, sources)
    if op.op in (
        "aten.max_pool2d_with_indices",
        "aten.max_pool3d_with_indices",
        "aten.avg_pool2d",
        "aten.avg_pool3d",
    ):
        return _pool(op, fields)
    if op.op.startswith(("aten._adaptive_avg_pool", "aten.adaptive_max_pool")) and not op.op.endswith("_backward"):
        return _adaptive_pool(op)
    if op.op == "aten.mkldnn_rnn_layer":
        return _lstm_layer(op)
    if resampling_mode(op) is not None:
        return _resampling(op)
    if op.op == "aten.cat":
        return _cat(op, fields)
    if op.op == "aten._scaled_dot_product_flash_attention_for_cpu":
        return _fused_attention(op)
    section = catalogue_section(op, fields)
    if section is not None and op.op in ("aten.add", "aten.add_"):
        return _with_added_parameters(op, section, sources)
    return section


def _with_added_parameters(op: OpNode, section: Section, sources: Sources) -> Section:
    """An add whose operand is a parameter its row counts (a linear layer's bias, added as an
    operator of its own after a matmul of a non-contiguous input) names it among the
    section's parameters."""
    added = [
        sources.origin(t)
        for t in op.args[:2]
        if isinstance(t, TensorMeta)
        and sources.origin(t).kind == "parameter"
        and sources.not_counted_here(op, "", t) is None
    ]
    if not added:
        return section
    sizes = [t.numel for t in added]
    step = Step("parameters", "the parameters added", " + ".join(f"{n:,}" for n in sizes), sum(sizes))
    names = ", ".join(t.name for t in added)
    note = f"adds {names}: 1 FLOP per element, as any add is counted (a bias a kernel adds itself is not)"
    return replace(section, steps=(*section.steps, step), notes=(*section.notes, note))


def _fused_attention(op: OpNode) -> Section:
    """The CPU's fused attention, counted as the math it replaces (`flash_attention_cost`):
    softmax(Q K^T · scale + mask) V over B batches of Hq heads, L queries and S keys."""
    q, k, v = op.args[:3]
    batch, heads, length, width = q.shape
    keys, value_width = k.shape[-2], v.shape[-1]
    masked = isinstance(op.kwargs.get("attn_mask"), TensorMeta)
    cost = op_cost(op)
    scores = batch * heads * length * keys
    per_score = 3 + masked
    steps = (
        Step("scores", "B · Hq · L · S", f"{batch} · {heads} · {length} · {keys}", scores),
        Step(
            "MACs",
            "scores · (E + Ev): Q K^T, then the probabilities times V",
            f"{scores:,} · ({width} + {value_width})",
            cost.macs,
        ),
        Step("FLOPs", "2 · MACs", f"2 · {cost.macs:,}", 2 * cost.macs),
        Step(
            "elementwise FLOPs",
            f"numel(Q) + numel(K) (each scaled) + {per_score} · scores (softmax 3{', mask 1' if masked else ''})",
            f"{product_text(q.shape)} + {product_text(k.shape)} + {per_score} · {scores:,}",
            cost.elementwise_flops,
        ),
    )
    notes = (
        "one fused kernel (flash attention on the CPU): the L x S scores are never stored whole,"
        " but their arithmetic is counted as the math decomposition's",
    )
    title = f"{op.op}: attention of {length} queries over {keys} keys, {heads} heads of {width}"
    return Section(title, steps, notes)


def _convolution(op: OpNode, fields: Fields, sources: Sources) -> Section:
    x, w, bias = op.args[0], op.args[1], op.args[2]
    stride, padding, dilation, transposed, output_padding, groups = op.args[3:9]
    dims = len(w.shape) - 2
    stride, padding, dilation = (expand(v, dims) for v in (stride, padding, dilation))
    names = _spatial_names(dims)
    kernel = w.shape[2:]
    c_in = x.shape[1]
    c_out = w.shape[1] * groups if transposed else w.shape[0]
    kind = "transposed convolution" if transposed else "convolution"
    if groups > 1:
        kind = f"depthwise {kind} (G = C_in = {groups})" if groups == c_in else f"grouped {kind} (G = {groups})"
    steps = []
    sizes = []
    for d, name in enumerate(names):
        size_in, k, s, p, dl = x.shape[2 + d], kernel[d], stride[d], padding[d], dilation[d]
        K, S, P, D = _window_symbols(names, d)
        if transposed:
            op_pad = expand(output_padding, dims)[d]
            size = transposed_conv_output_size(size_in, k, s, p, dl, op_pad)
            formula = f"({name}_in - 1) {S} - 2{P} + {D} ({K} - 1) + output_padding_{name.lower()} + 1"
            worked = f"({size_in} - 1) · {s} - 2 · {p} + {dl} · ({k} - 1) + {op_pad} + 1"
        else:
            size = conv_output_size(size_in, k, s, p, dl)
            formula = f"floor(({name}_in + 2{P} - {D} ({K} - 1) - 1) / {S}) + 1"
            worked = f"floor(({size_in} + 2 · {p} - {dl} · ({k} - 1) - 1) / {s}) + 1"
        steps.append(Step(f"{name}_out", formula, worked, size))
        sizes.append(size)
    spatial = " x ".join(f"{n}_out" for n in names)
    out = (x.shape[0], c_out, *sizes)
    steps.append(Step("output shape", f"N x C_out x {spatial}", " x ".join(map(str, out)), out))
    k_letters = " · ".join(_window_symbols(names, d)[0] for d in range(dims))
    k_values = " · ".join(map(str, kernel))
    if transposed:
        weight_formula, weight_worked = (
            f"C_in · (C_out / G) · {k_letters}",
            f"{c_in} · ({c_out} / {groups}) · {k_values}",
        )
    else:
        weight_formula, weight_worked = (
            f"C_out · (C_in / G) · {k_letters}",
            f"{c_out} · ({c_in} / {groups}) · {k_values}",
        )
    steps.append(Step("weights", weight_formula, weight_worked, w.numel))
    bias_count = bias.numel if isinstance(bias, TensorMeta) else 0
    steps.append(Step("bias", "C_out" if bias_count else "none", "", bias_count))
    parameters, notes = _layer_parameters(op, sources, w, bias)
    steps.append(parameters)
    macs = op_cost(op).macs
    if transposed:
        in_letters = " · ".join(f"{n}_in" for n in names)
        formula = f"N · C_in · {in_letters} · (C_out / G) · {k_letters}"
        worked = f"{x.shape[0]} · {c_in} · {' · '.join(map(str, x.shape[2:]))} · ({c_out} / {groups}) · {k_values}"
    else:
        out_letters = " · ".join(f"{n}_out" for n in names)
        formula = f"N · C_out · {out_letters} · (C_in / G) · {k_letters}"
        worked = f"{x.shape[0]} · {c_out} · {' · '.join(map(str, sizes))} · ({c_in} / {groups}) · {k_values}"
    steps.append(Step("MACs", formula, worked, macs))
    steps.append(Step("FLOPs", "2 · MACs", f"2 · {macs:,}", 2 * macs))
    setting = (
        f"input {shape_text(x.shape)}, weight {shape_text(w.shape)}, bias {'yes' if bias_count else 'no'},"
        f" stride {shape_text(stride)}, padding {shape_text(padding)}, dilation {shape_text(dilation)},"
        f" groups {groups}"
    )
    steps += _window_field(fields, op, x, kernel, stride, padding, dilation)
    return Section(f"{op.op}: a {kind}; {setting}", tuple(steps), notes)


def _matrix_product(op: OpNode, sources: Sources) -> Section:
    """A linear layer where the second operand is a weight (read from a parameter or a
    buffer), else a product of activations: no weights."""
    has_bias = op.op != "aten.mm"
    bias = op.args[0] if has_bias else None
    a, b = op.args[1:3] if has_bias else op.args[0:2]
    n, k, m = a.shape[0], a.shape[1], b.shape[1]
    cost = op_cost(op)
    leading = _flattened_leading(a, sources)
    if leading:  # a linear layer on N x L x in: its rows are every position of every sample
        steps = [
            Step("rows", "the product of the leading dimensions", " · ".join(map(str, leading)), n),
            Step("output shape", "leading dimensions x out", " x ".join(map(str, (*leading, m))), (*leading, m)),
        ]
    else:
        steps = [Step("output shape", "rows x out", f"{n} x {m}", tuple(op.outputs[0].shape))]
    bias_count = bias.numel if isinstance(bias, TensorMeta) else 0
    if sources.origin(b).kind in ("parameter", "buffer"):
        title = f"{op.op}: a matrix product [{n}, {k}] @ [{k}, {m}], a linear layer {k} -> {m} over {n} row(s)"
        steps.append(Step("weights", "in · out", f"{k} · {m}", k * m))
        steps.append(Step("bias", "out" if bias_count else "none", "", bias_count))
        parameters, notes = _layer_parameters(op, sources, b, bias)
        steps.append(parameters)
    else:
        title = f"{op.op}: a matrix product [{n}, {k}] @ [{k}, {m}] of activations (no weights)"
        own, notes = _own_parameters(op, sources, (("bias", bias),))
        steps += [Step("parameters", "bias", f"{size:,}", size) for _, size in own]
    steps.append(Step("MACs", "rows · in · out", f"{n} · {k} · {m}", cost.macs))
    steps.append(Step("FLOPs", "2 · MACs", f"2 · {cost.macs:,}", 2 * cost.macs))
    if cost.elementwise_flops:
        steps.append(
            Step(
                "elementwise FLOPs",
                "1 · numel(out) (the fused activation)",
                product_text(op.outputs[0].shape),
                cost.elementwise_flops,
            )
        )
    if bias_count:
        notes += ("the bias addition is not counted, as in PyTorch's FlopCounterMode",)
    return Section(title, tuple(steps), notes)


def _flattened_leading(a: TensorMeta, sources: Sources) -> tuple[int, ...]:
    """The leading dimensions (N, L, ...) a matrix product's rows were flattened from (a
    linear layer on a 3-d or larger input: a view to [N · L, in]); () where none were."""
    reshape = sources.made_by.get(a.id)
    if reshape is None or reshape.op not in _RESHAPES or not reshape.inputs:
        return ()
    leading = tuple(reshape.inputs[0].shape[:-1])
    return leading if len(leading) > 1 and prod(leading) == a.shape[0] else ()


def _own_parameters(
    op: OpNode, sources: Sources, operands: Sequence[tuple[str, Any]]
) -> tuple[list[tuple[str, int]], tuple[str, ...]]:
    """Of a layer's weight operands (a name, the argument: a tensor or None), those its row
    counts as parameters (the name, the parameter's size), and why each other one is not."""
    own, notes = [], []
    for name, tensor in operands:
        if not isinstance(tensor, TensorMeta):
            continue
        note = sources.not_counted_here(op, name, tensor)
        if note is None:
            own.append((name, sources.origin(tensor).numel))
        else:
            notes.append(note)
    return own, tuple(notes)


def _layer_parameters(op: OpNode, sources: Sources, weight: TensorMeta, bias: Any) -> tuple[Step, tuple[str, ...]]:
    """`parameters = weights + bias` of a convolution or a linear layer, of the operands its
    row counts as parameters (a missing bias adds 0), and why each other one is not."""
    own, notes = _own_parameters(op, sources, (("weights", weight), ("bias", bias)))
    if not isinstance(bias, TensorMeta):
        own.append(("bias", 0))
    if notes and not any(size for _, size in own):
        return Step("parameters", "none counted on this row", "", 0), notes
    names, sizes = " + ".join(name for name, _ in own), " + ".join(f"{size:,}" for _, size in own)
    return Step("parameters", names, sizes, sum(size for _, size in own)), notes


def _batch_norm(op: OpNode, sources: Sources) -> Section:
    x = op.args[0]
    sample = _instance_norm_input(op, sources)
    shape = sample.shape if sample is not None else x.shape  # an InstanceNorm's: N x C x ...
    channels = shape[1]
    cost = op_cost(op)
    per_element = cost.elementwise_flops // x.numel if x.numel else 0
    state = [t for t in op.args[1:5] if isinstance(t, TensorMeta)]
    statistics = sum(sources.origin(t).numel for t in op.args[3:5] if isinstance(t, TensorMeta))
    why = "scale and shift" if per_element == 2 else "mean 1, variance 2, normalise and affine 2"
    parameters, notes = _norm_parameters(op, sources, channels)
    steps = [
        parameters,
        Step(
            "running statistics (buffers)",
            "2C (mean and variance)" if statistics else "none",
            f"2 · {channels}" if statistics else "",
            statistics,
        ),
        Step(
            "elementwise FLOPs",
            f"{per_element} ({why}) · numel",
            f"{per_element} · {product_text(shape)}",
            cost.elementwise_flops,
        ),
    ]
    if not state:
        notes += ("computed scale and statistics",)
    inference = per_element == 2
    if sample is None:
        mode = "inference: a fixed per-channel affine map" if inference else "computing its batch statistics"
        return Section(f"{op.op}: BatchNorm over {channels} channels, {mode}", tuple(steps), notes)
    mode = "inference: a fixed per-channel affine map" if inference else "computing each sample's own statistics"
    repeated = ", its scale, shift and statistics repeated N times" if state else ""
    notes += (
        f"run as a batch norm over its input reshaped to {shape_text(x.shape)}: N · C = {shape[0]} · {channels}"
        f" channels of one sample{repeated}",
    )
    title = f"{op.op}: InstanceNorm over {channels} channels of each of {shape[0]} samples, {mode}"
    return Section(title, tuple(steps), notes)


def _norm_parameters(op: OpNode, sources: Sources, channels: int) -> tuple[Step, tuple[str, ...]]:
    """A norm's parameters, `2C (scale and shift)`, of those its row counts as parameters."""
    own, notes = _own_parameters(op, sources, (("scale", op.args[1]), ("shift", op.args[2])))
    if not own:
        return Step("parameters", "none counted on this row" if notes else "none (affine=False)", "", 0), notes
    names = " and ".join(name for name, _ in own)
    count = f"{len(own)}C" if len(own) > 1 else "C"
    worked = f"{len(own)} · {channels}" if len(own) > 1 else str(channels)
    return Step("parameters", f"{count} ({names})", worked, sum(size for _, size in own)), notes


_RESHAPES = frozenset({"aten.view", "aten._unsafe_view", "aten.reshape"})


def _instance_norm_input(op: OpNode, sources: Sources) -> TensorMeta | None:
    """The N x C x ... input of the InstanceNorm a batch norm runs (aten's instance_norm
    reshapes it to 1 x (N·C) x ..., one sample of N·C channels), or None for a batch norm.
    The module called says which it is; a functional one is an InstanceNorm where the
    reshape folds a batch of N > 1 into channels (at N = 1 it changes nothing)."""
    if "BatchNorm" in op.module.type:
        return None
    x = op.args[0]
    reshape = sources.made_by.get(x.id)
    if reshape is None or reshape.op not in _RESHAPES:
        return None
    sample = reshape.inputs[0]
    if len(sample.shape) != len(x.shape) or x.shape != (1, sample.shape[0] * sample.shape[1], *sample.shape[2:]):
        return None
    return sample if sample.shape[0] > 1 or runs_instance_norm(op) else None


def _pool(op: OpNode, fields: Fields) -> Section:
    x = op.args[0]
    maximum = op.op.startswith("aten.max")
    dims = 3 if "3d" in op.op else 2
    kernel = expand(_arg(op, 1, "kernel_size"), dims)
    stride = _arg(op, 2, "stride", ())
    stride = expand(stride, dims) if stride else kernel
    padding = expand(_arg(op, 3, "padding", 0), dims)
    dilation = expand(_arg(op, 4, "dilation", 1), dims) if maximum else (1,) * dims
    ceil_mode = bool(_arg(op, 5 if maximum else 4, "ceil_mode", False))
    names = _spatial_names(dims)
    steps = []
    sizes = []
    for d, name in enumerate(names):
        size_in, k, s, p, dl = x.shape[-dims + d], kernel[d], stride[d], padding[d], dilation[d]
        size = pool_output_size(size_in, k, s, p, dl, ceil_mode)
        rounding = "ceil" if ceil_mode else "floor"
        K, S, P, D = _window_symbols(names, d)
        formula = f"{rounding}(({name}_in + 2{P} - {D} ({K} - 1) - 1) / {S}) + 1"
        worked = f"{rounding}(({size_in} + 2 · {p} - {dl} · ({k} - 1) - 1) / {s}) + 1"
        if ceil_mode and size != -(-(size_in + 2 * p - dl * (k - 1) - 1) // s) + 1:
            # torch drops a last window that would start in the right padding
            formula, worked = f"{formula} - 1 (a last window starting in the padding dropped)", f"{worked} - 1"
        steps.append(Step(f"{name}_out", formula, worked, size))
        sizes.append(size)
    out = (*x.shape[:-dims], *sizes)
    steps.append(
        Step("output shape", "N x C x " + " x ".join(f"{n}_out" for n in names), " x ".join(map(str, out)), out)
    )
    window = " · ".join(_window_symbols(names, d)[0] for d in range(dims))  # K_h · K_w: the window's size
    window_worked = " · ".join(map(str, kernel))
    cost = op_cost(op)
    if maximum:
        formula, worked = f"({window} - 1) comparisons · numel(out)", f"({window_worked} - 1) · {product_text(out)}"
    else:
        formula = f"{window} (the window's additions but one, a division) · numel(out)"
        worked = f"{window_worked} · {product_text(out)}"
    steps.append(Step("elementwise FLOPs", formula, worked, cost.elementwise_flops))
    steps += _window_field(fields, op, x, kernel, stride, padding, dilation)
    kind = "a max-pool" if maximum else "an average-pool"
    setting = f"kernel {shape_text(kernel)}, stride {shape_text(stride)}, padding {shape_text(padding)}"
    if maximum and any(d != 1 for d in dilation):
        setting += f", dilation {shape_text(dilation)}"
    notes = ()
    if ceil_mode:
        setting += ", ceil_mode"
    if not maximum and not _arg(op, 5, "count_include_pad", True):
        notes = ("count_include_pad False: a window over the padding is divided by its elements inside the input",)
    return Section(f"{op.op}: {kind} of {shape_text(x.shape)}; {setting}", tuple(steps), notes)


def _adaptive_pool(op: OpNode) -> Section:
    """An adaptive pool: output i of a dimension pools input [floor(i In / Out), ceil((i + 1)
    In / Out)), so the windows' sizes summed over the output are a product over dimensions."""
    x, out = op.args[0], op.outputs[0].shape
    dims = len(op.args[1])
    names = _spatial_names(dims)
    leading = out[:-dims]
    steps = []
    for name, size_in, size_out in zip(names, x.shape[-dims:], out[-dims:], strict=True):
        windows = [-(-(i + 1) * size_in // size_out) - i * size_in // size_out for i in range(size_out)]
        formula = f"the windows along {name}, ceil((i + 1) {name}_in / {name}_out) - floor(i {name}_in / {name}_out)"
        steps.append(Step(f"Σ_{name.lower()}", formula, " + ".join(map(str, windows)), sum(windows)))
    sums = " · ".join(f"Σ_{n.lower()}" for n in names)
    worked = " · ".join(map(str, (*leading, *(step.value for step in steps))))
    maximum = "max" in op.op
    formula = f"N · C · {sums}" + (" - numel(out) (a window's comparisons: its size - 1)" if maximum else "")
    worked += f" - {product_text(out)}" if maximum else ""
    steps.append(
        Step("output shape", "N x C x " + " x ".join(f"{n}_out" for n in names), " x ".join(map(str, out)), tuple(out))
    )
    steps.append(Step("elementwise FLOPs", formula, worked, op_cost(op).elementwise_flops))
    kind = "an adaptive max-pool" if maximum else "an adaptive average-pool"
    return Section(f"{op.op}: {kind} of {shape_text(x.shape)} to {shape_text(out[-dims:])}", tuple(steps))


def _lstm_layer(op: OpNode) -> Section:
    """oneDNN's LSTM layer (one layer, one direction), counted as the cell loop it replaces
    (`costs.onednn_lstm_layer_cost`)."""
    x, w_hh = op.args[0], op.args[2]
    steps_in_time, batch, width = x.shape
    hidden = w_hh.shape[1]
    cost = op_cost(op)
    steps = (
        Step(
            "MACs",
            "T · B · 4H · (I + H)",
            f"{steps_in_time} · {batch} · 4 · {hidden} · ({width} + {hidden})",
            cost.macs,
        ),
        Step("FLOPs", "2 · MACs", f"2 · {cost.macs:,}", 2 * cost.macs),
        Step(
            "elementwise FLOPs", "13 · T · B · H", f"13 · {steps_in_time} · {batch} · {hidden}", cost.elementwise_flops
        ),
    )
    notes = (
        "per step and sequence: the 4 gates' products with the input and the hidden state; per hidden unit 13 FLOPs:"
        " 5 additions (the two products' gates, the new cell state), 3 sigmoids, 3 multiplications, 2 tanh",
    )
    title = f"{op.op}: an LSTM layer of {hidden} hidden units over T = {steps_in_time} steps, B = {batch}, I = {width}"
    return Section(title, steps, notes)


# F.interpolate's kernels: mode -> (taps per axis, None for a copy); `_aa`: antialias=True
_RESAMPLING_MODES = {
    "upsample_nearest": ("nearest", None),
    "_upsample_nearest_exact": ("nearest-exact", None),
    "upsample_linear": ("linear", 2),
    "upsample_bilinear": ("bilinear", 2),
    "upsample_trilinear": ("trilinear", 2),
    "upsample_bicubic": ("bicubic", 4),
    "_upsample_bilinear": ("bilinear", 2),  # the _aa kernel's name
    "_upsample_bicubic": ("bicubic", 4),
}


def resampling_mode(op: OpNode) -> tuple[str, int | None] | None:
    """(mode, taps per axis) of a forward F.interpolate kernel; None for any other operator."""
    name = op.op.removeprefix("aten.")
    if name.endswith("_backward") or not name.endswith(("1d", "2d", "3d", "2d_aa")):
        return None
    return _RESAMPLING_MODES.get(name.removesuffix("_aa")[:-2])


def _resampling(op: OpNode) -> Section:
    """F.interpolate: its mode, align_corners and whether it was given a scale factor or a
    size; each output size; the FLOPs per output element of docs/formulas.md (2T - 1 for a
    weighted sum of T inputs, a nearest copy none)."""
    mode, taps = resampling_mode(op)
    x, out = op.args[0], op.outputs[0].shape
    dims = len(_arg(op, 1, "output_size"))
    names = _spatial_names(dims)
    copies = taps is None
    align_corners = None if copies else bool(_arg(op, 2, "align_corners", False))
    scale_names = ["scales"] if dims == 1 else [f"scales_{n.lower()}" for n in names]
    first_scale = 2 if copies else 3
    scales = [_arg(op, first_scale + d, name) for d, name in enumerate(scale_names)]
    scaled = all(scale is not None for scale in scales)
    steps = []
    for d, name in enumerate(names):
        size_in, size_out = x.shape[-dims + d], out[-dims + d]
        if scaled:
            steps.append(
                Step(
                    f"{name}_out",
                    f"floor({name}_in · scale_{name.lower()})",
                    f"floor({size_in} · {scales[d]})",
                    size_out,
                )
            )
        else:
            steps.append(Step(f"{name}_out", "output_size", "", size_out))
    steps += _resampling_flops(op, names, taps, scales, align_corners, out)
    given = (
        "scale factor " + " x ".join(map(str, scales))
        if scaled
        else "to a size (the kernel is given the output size only: a size, or a scale factor recomputed into one)"
    )
    setting = f"{mode}" + ("" if copies else f", align_corners={align_corners}")
    if op.op.endswith("_aa"):
        setting += ", antialias=True"
    title = f"{op.op}: {setting}; {shape_text(x.shape[-dims:])} to {shape_text(out[-dims:])}, {given}"
    return Section(title, tuple(steps), (_source_coordinate(mode, align_corners, scaled),))


def _resampling_flops(
    op: OpNode, names: Sequence[str], taps: int | None, scales: list, align_corners: bool | None, out: Sequence[int]
) -> list[Step]:
    if taps is None:
        return [Step("elementwise FLOPs", "none: each output copies one input", "", 0)]
    if op.op.endswith("_aa"):
        return _antialiased_flops(op, names, out)
    window = taps_product(len(names))
    worked = " · ".join(str(taps) for _ in names)
    return [
        Step(
            "elementwise FLOPs",
            f"(2 · {window} - 1) per output element · numel(out)",
            f"(2 · {worked} - 1) · {product_text(out)}",
            op_cost(op).elementwise_flops,
        )
    ]


def taps_product(dims: int) -> str:
    """T_h · T_w: an interpolation's inputs per output, the taps along each axis multiplied."""
    return " · ".join(f"T_{name.lower()}" for name in _spatial_names(dims))


def _antialiased_flops(op: OpNode, names: Sequence[str], out: Sequence[int]) -> list[Step]:
    """antialias=True: T varies from output to output, separable: the sum of T over the
    outputs is the product of the windows' sums along each axis, times N · C."""
    cost = op_cost(op)
    if not cost.elementwise_flops:
        return [Step("elementwise FLOPs", "none: a resize to the same size copies its input", "", 0)]
    steps = antialiased_window_sums(op, copies_unchanged=True)
    sums = " · ".join(f"ΣT_{n.lower()}" for n in names)
    worked = " · ".join(str(step.value) for step in steps)
    batch, channels = out[0], out[1]
    steps.append(
        Step(
            "elementwise FLOPs",
            f"2 · {sums} · N · C - numel(out)",
            f"2 · {worked} · {batch} · {channels} - {product_text(out)}",
            cost.elementwise_flops,
        )
    )
    return steps


def antialiased_window_sums(forward: OpNode, copies_unchanged: bool) -> list[Step]:
    """ΣT along each axis of an anti-aliased interpolation `forward`: the sum over its outputs
    of each one's window (the filter's taps, widened by a downsampling, clipped at the
    borders). Where `copies_unchanged` (the forward kernel), an axis whose size does not
    change reads one input per output; the gradient's kernel filters every axis."""
    _, taps = resampling_mode(forward)
    x, out = forward.args[0], forward.outputs[0].shape
    align_corners = bool(_arg(forward, 2, "align_corners", False))
    steps = []
    for d, name in enumerate(_spatial_names(2)):
        size_in, size_out = x.shape[-2 + d], out[-2 + d]
        copied = copies_unchanged and size_in == size_out
        scale = _arg(forward, 3 + d, f"scales_{name.lower()}")
        windows = (
            [1] * size_out if copied else antialiased_windows(size_in, size_out, taps, scale, align_corners, x.dtype)
        )
        listed = " + ".join(map(str, windows)) if len(windows) <= 16 else ""
        why = "each output's window"
        if size_in == size_out:
            why = "one input per output (its size unchanged)" if copied else f"{why} (its size unchanged, filtered)"
        steps.append(Step(f"ΣT_{name.lower()}", f"the sum of {why} along {name}", listed, sum(windows)))
    return steps


def _source_coordinate(mode: str, align_corners: bool | None, scaled: bool) -> str:
    """Where an output's value is read from along an axis, as PyTorch's CPU kernels map it."""
    ratio = "1 / scale" if scaled else "in / out"
    if mode == "nearest":
        return f"output i reads input floor(i · {ratio}): a copy, no arithmetic"
    if mode == "nearest-exact":
        return f"output i reads input floor((i + 0.5) · {ratio}): a copy, no arithmetic"
    taps = "4 inputs (cubic convolution, a = -0.75)" if mode == "bicubic" else "the 2 inputs either side"
    if align_corners:
        where = "i · (in - 1) / (out - 1): the corner pixels' centres line up"
    else:
        where = f"(i + 0.5) · {ratio} - 0.5: the pixels' areas line up"
    return (
        f"output i reads, along each axis, {taps} of source coordinate {where}; an output is their weighted sum"
        " over the axes, T inputs (the taps' product): T multiplies, T - 1 additions"
    )


def _cat(op: OpNode, fields: Fields) -> Section:
    tensors = [t for t in op.args[0] if isinstance(t, TensorMeta)]
    out = op.outputs[0].shape
    dim = _arg(op, 1, "dim", 0) % len(out)
    sizes = " + ".join(str(t.shape[dim]) for t in tensors)
    steps = (
        Step(f"size along dimension {dim}", "sum of the inputs' sizes", sizes, out[dim]),
        Step("output shape", "", "", tuple(out)),
    )
    return Section(
        f"{op.op}: a concatenation of {len(tensors)} tensors along dimension {dim}",
        steps,
        ("data movement: no arithmetic",),
    )


def catalogue_section(op: OpNode, fields: Fields) -> Section | None:
    operator = operator_named(op.op)
    if operator is None:
        return Section(f"{op.op}: not in the catalogue", notes=("not counted: archprof has no formula for it",))
    cost = op_cost(op)
    if is_free(op):
        return None  # a scatter_add or an accumulating index_put moves data and adds: worked out below
    out = op.outputs[0].shape if op.outputs else ()
    steps = []
    if cost.macs:
        formula = _formula_of(operator.cost).removeprefix("MACs = ").rstrip(".")
        steps.append(Step("MACs", formula, _batched_product(op), cost.macs))
        steps.append(Step("FLOPs", "2 · MACs", f"2 · {cost.macs:,}", 2 * cost.macs))
    if cost.elementwise_flops or not cost.macs:
        steps.append(_elementwise_step(op, operator.cost, cost.elementwise_flops, out))
    inputs = ", ".join(shape_text(t.shape) for t in op.inputs) or "no tensor"
    what = (
        "a residual merge"
        if op.op in ("aten.add", "aten.add_") and sum(t.kind in ("activation", "input") for t in op.inputs) > 1
        else operator.family.value
    )
    notes = [f"output {shape_text(out)} from {inputs}"]
    if operator.family is Family.POINTWISE:
        notes += _merge_note(fields, op)
    return Section(f"{op.op}: {what}", tuple(steps), tuple(notes))


def is_free(op: OpNode) -> bool:
    """Whether the operator moves or makes data with no arithmetic (a view, a copy, a repeat)."""
    operator = operator_named(op.op)
    return operator is not None and operator.family in (Family.DATA_MOVEMENT, Family.CREATION) and op_cost(op) == FREE


def _batched_product(op: OpNode) -> str:
    """n · k · m of a matrix product [n, k] @ [k, m] (a gradient's: a forward mm is a linear
    layer's, explained as such), batch · n · k · m of a batched one; "" for others."""
    if op.op == "aten.mm":
        a, b = op.args[:2]
        return " · ".join(map(str, (*a.shape, b.shape[1])))
    if op.op not in ("aten.bmm", "aten.baddbmm"):
        return ""
    a, b = op.args[-2:] if op.op == "aten.bmm" else op.args[1:3]
    return " · ".join(map(str, (*a.shape, b.shape[2])))


# -- receptive fields --------------------------------------------------------------------


def _window_field(fields: Fields, op: OpNode, x: TensorMeta, kernel, stride, padding, dilation) -> list[Step]:
    """The receptive-field step of a window (convolution, pooling): the recurrence worked
    with the field before it, the results the receptive-field pass's."""
    before, after = fields.get(x.id), fields.get(op.outputs[0].id)
    transposed = op.args[6:7] == (True,)
    if before is None or after is None or not before.windowed() or not after.windowed() or transposed:
        return [Step("receptive field", "", "", field_note(fields, op.outputs[0]))]
    # A 1-d pooling runs as a 2-d one on its input unsqueezed before the length: the window's
    # first dimension is that one of size 1, the fields' dimensions are its last ones.
    lead = len(kernel) - len(before.field)
    if lead < 0:
        return [Step("receptive field", "", "", field_note(fields, op.outputs[0]))]
    steps = []
    names = _spatial_names(len(before.field))
    for d, name in enumerate(names):
        tag = f"_{name.lower()}"
        w = lead + d
        k, s, p, dl, j = kernel[w], stride[w], padding[w], dilation[w], before.stride[d]
        size, start = before.field[d], before.start[d]
        K, S, P, D = _window_symbols(names, d)
        worked = f"{size} + {dl} · ({k} - 1) · {j}"
        steps.append(Step(f"r{tag}", f"r_prev + {D} ({K} - 1) j_prev", worked, after.field[d]))
        steps.append(Step(f"j{tag}", f"j_prev · {S}", f"{j} · {s}", str(after.stride[d])))
        steps.append(Step(f"start{tag}", f"start_prev - {P} · j_prev", f"{start} - {p} · {j}", after.start[d]))
    return steps


def _merge_note(fields: Fields, op: OpNode) -> list[str]:
    fielded = [t for t in dict.fromkeys(op.inputs) if t.id in fields]
    if len(fielded) < 2 or not op.outputs:
        return []
    parts = "; ".join(field_note(fields, t) for t in fielded)
    merged = field_note(fields, op.outputs[0])
    return [f"receptive field: the union of its inputs' ({parts}): smallest start, largest end -> {merged}"]


def _arg(op: OpNode, index: int, name: str, default=None):
    if len(op.args) > index:
        return op.args[index]
    return op.kwargs.get(name, default)


def _window_symbols(names: Sequence[str], d: int) -> tuple[str, str, str, str]:
    """The kernel, stride, padding and dilation along spatial dimension `d` of `names`:
    K_h, S_h, P_h, D_h; where D names the depth (a 3-d window), the dilation is dil_d."""
    tag = names[d].lower()
    dilation = "dil" if "D" in names else "D"
    return f"K_{tag}", f"S_{tag}", f"P_{tag}", f"{dilation}_{tag}"


def _spatial_names(dims: int) -> list[str]:
    return {1: ["L"], 2: ["H", "W"], 3: ["D", "H", "W"]}.get(dims, [f"X{i + 1}" for i in range(dims)])


def product_text(shape: Sequence[int]) -> str:
    return "·".join(map(str, shape)) if shape else "1"


def _elementwise_step(op: OpNode, formula, flops: int, out: Sequence[int]) -> Step:
    """An operator's elementwise FLOPs: so many per output element, or per input element
    (a reduction), as its cost formula counts them; else the formula's own words."""
    doc = _formula_of(formula)
    x = op.inputs[0].shape if op.inputs else ()
    if "adaptive" in op.op:
        counted = "the sum of every output's window size"
        return Step("elementwise FLOPs", counted + (" - numel(out)" if "max" in op.op else ""), "", flops)
    if op.op.endswith(("_aa", "_aa_backward")):
        # T varies from output to output (the antialias filter's window, clipped at the
        # borders): no one figure per element to multiply out
        return Step("elementwise FLOPs", doc.rstrip("."), "", flops)
    if doc.endswith("per output element.") and prod(out):
        per = flops // prod(out)
        worked = f"{per} · {product_text(out)}"
        return Step("elementwise FLOPs", f"{per} per output element · numel(out)", worked, flops)
    if x and prod(x) and flops % prod(x) == 0 and flops:
        per = flops // prod(x)
        return Step("elementwise FLOPs", f"{per} per input element · numel(in)", f"{per} · {product_text(x)}", flops)
    return Step("elementwise FLOPs", doc, "", flops)


def _formula_of(cost) -> str:
    """The first sentence of a cost formula's docstring (its lines joined): the catalogue's
    words for it."""
    text = " ".join((cost.__doc__ or "the catalogue's formula").split())
    return text.split(". ", 1)[0]


def kernel_and_stride(op: OpNode) -> tuple[str, str] | None:
    """(kernel, stride) of a convolution or a pooling, as text; None for other operators."""
    if op.op in ("aten.convolution", "aten._convolution"):
        w = op.args[1].shape
        dims = len(w) - 2
        kernel, stride, dilation = w[2:], expand(op.args[3], dims), expand(op.args[5], dims)
        text = shape_text(kernel) + (f" (dilation {shape_text(dilation)})" if any(d != 1 for d in dilation) else "")
        return text, shape_text(stride)
    if op.op.startswith(("aten.max_pool", "aten.avg_pool")):
        dims = 3 if "3d" in op.op else 2
        kernel = expand(_arg(op, 1, "kernel_size"), dims)
        stride = _arg(op, 2, "stride", ())
        return shape_text(kernel), shape_text(expand(stride, dims) if stride else kernel)
    return None
