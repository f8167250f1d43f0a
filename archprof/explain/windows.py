"""Operators that slide a window explained: convolution (transposed, grouped, depthwise),
max- and average-pooling and adaptive pooling, each output size, weight, MAC and FLOP with the
operator's own arguments put in, and the receptive-field step of the window; and a
convolution's or a pool's kernel and stride as text, for the network's view."""

from __future__ import annotations

from archprof.explain.document import Section, Step, flops_step
from archprof.explain.notation import product_text, window_symbols
from archprof.explain.receptive_fields import Fields, window_field
from archprof.explain.sources import Sources, layer_parameters
from archprof.graph import OpNode, TensorMeta
from archprof.operators.costs import expand
from archprof.operators.shapes import conv_output_size, pool_output_size, pool_window, transposed_conv_output_size
from archprof.passes.flops import op_cost
from archprof.text import spatial_names
from archprof.units import shape_text


def convolution(op: OpNode, fields: Fields, sources: Sources) -> Section:
    x, w, bias = op.args[0], op.args[1], op.args[2]
    stride, padding, dilation, transposed, output_padding, groups = op.args[3:9]
    dims = len(w.shape) - 2
    stride, padding, dilation = (expand(v, dims) for v in (stride, padding, dilation))
    names = spatial_names(dims)
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
        K, S, P, D = window_symbols(names, d)
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
    k_letters = " · ".join(window_symbols(names, d)[0] for d in range(dims))
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
    parameters, notes = layer_parameters(op, sources, w, bias)
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
    steps.append(flops_step(macs))
    setting = (
        f"input {shape_text(x.shape)}, weight {shape_text(w.shape)}, bias {'yes' if bias_count else 'no'},"
        f" stride {shape_text(stride)}, padding {shape_text(padding)}, dilation {shape_text(dilation)},"
        f" groups {groups}"
    )
    steps += window_field(fields, op, x, kernel, stride, padding, dilation)
    return Section(f"{op.op}: a {kind}; {setting}", tuple(steps), notes)


def pool(op: OpNode, fields: Fields) -> Section:
    x = op.args[0]
    maximum = op.op.startswith("aten.max")
    kernel, stride, padding, dilation, ceil_mode = pool_window(op)
    dims = len(kernel)
    names = spatial_names(dims)
    steps = []
    sizes = []
    for d, name in enumerate(names):
        size_in, k, s, p, dl = x.shape[-dims + d], kernel[d], stride[d], padding[d], dilation[d]
        size = pool_output_size(size_in, k, s, p, dl, ceil_mode)
        rounding = "ceil" if ceil_mode else "floor"
        K, S, P, D = window_symbols(names, d)
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
    window = " · ".join(window_symbols(names, d)[0] for d in range(dims))  # K_h · K_w: the window's size
    window_worked = " · ".join(map(str, kernel))
    cost = op_cost(op)
    if maximum:
        formula, worked = f"({window} - 1) comparisons · numel(out)", f"({window_worked} - 1) · {product_text(out)}"
    else:
        formula = f"{window} (the window's additions but one, a division) · numel(out)"
        worked = f"{window_worked} · {product_text(out)}"
    steps.append(Step("elementwise FLOPs", formula, worked, cost.elementwise_flops))
    steps += window_field(fields, op, x, kernel, stride, padding, dilation)
    kind = "a max-pool" if maximum else "an average-pool"
    setting = f"kernel {shape_text(kernel)}, stride {shape_text(stride)}, padding {shape_text(padding)}"
    if maximum and any(d != 1 for d in dilation):
        setting += f", dilation {shape_text(dilation)}"
    notes = ()
    if ceil_mode:
        setting += ", ceil_mode"
    if not maximum and not op.argument(5, "count_include_pad", True):
        notes = ("count_include_pad False: a window over the padding is divided by its elements inside the input",)
    return Section(f"{op.op}: {kind} of {shape_text(x.shape)}; {setting}", tuple(steps), notes)


def adaptive_pool(op: OpNode) -> Section:
    """An adaptive pool: output i of a dimension pools input [floor(i In / Out), ceil((i + 1)
    In / Out)), so the windows' sizes summed over the output are a product over dimensions."""
    x, out = op.args[0], op.outputs[0].shape
    dims = len(op.args[1])
    names = spatial_names(dims)
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


def kernel_and_stride(op: OpNode, lead: int = 0) -> tuple[str, str] | None:
    """(kernel, stride) of a convolution or a pooling, as text, its first `lead` dimensions
    left out (`window_lead`: a 1-d pooling's, run as a 2-d one); None for other operators."""
    if op.op in ("aten.convolution", "aten._convolution"):
        w = op.args[1].shape
        dims = len(w) - 2
        kernel, stride, dilation = w[2:], expand(op.args[3], dims), expand(op.args[5], dims)
        text = shape_text(kernel) + (f" (dilation {shape_text(dilation)})" if any(d != 1 for d in dilation) else "")
        return text, shape_text(stride)
    if op.op.startswith(("aten.max_pool", "aten.avg_pool")):
        kernel, stride, *_ = pool_window(op)
        return shape_text(kernel[lead:]), shape_text(stride[lead:])
    return None
