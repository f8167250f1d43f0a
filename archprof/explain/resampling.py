"""F.interpolate explained: its mode (nearest, linear, bilinear, bicubic, antialiased),
align_corners and whether it was given a scale factor or a size; each output size, where an
output reads its inputs from, and its FLOPs per output element. A gradient of one is
explained from the same modes and window sums (`explain.training`)."""

from __future__ import annotations

from collections.abc import Sequence

from archprof.explain.document import Section, Step
from archprof.explain.notation import product_text
from archprof.graph import OpNode
from archprof.operators.costs import antialiased_windows
from archprof.passes.flops import op_cost
from archprof.text import spatial_names
from archprof.units import shape_text

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


def resampling(op: OpNode) -> Section:
    """F.interpolate: its mode, align_corners and whether it was given a scale factor or a
    size; each output size; the FLOPs per output element of docs/formulas.md (2T - 1 for a
    weighted sum of T inputs, a nearest copy none)."""
    mode, taps = resampling_mode(op)
    x, out = op.args[0], op.outputs[0].shape
    dims = len(op.argument(1, "output_size"))
    names = spatial_names(dims)
    copies = taps is None
    align_corners = None if copies else bool(op.argument(2, "align_corners", False))
    scale_names = ["scales"] if dims == 1 else [f"scales_{n.lower()}" for n in names]
    first_scale = 2 if copies else 3
    scales = [op.argument(first_scale + d, name) for d, name in enumerate(scale_names)]
    scaled = all(scale is not None for scale in scales)
    steps = []
    for d, name in enumerate(names):
        size_in, size_out = x.shape[-dims + d], out[-dims + d]
        if scaled:
            # The product in double precision, as PyTorch takes it: 100 · 1.15 is 114.99999999999999.
            product = size_in * scales[d]
            worked = f"floor({size_in} · {scales[d]})"
            if product != int(product):
                worked += f" = floor({product!r})"
            steps.append(Step(f"{name}_out", f"floor({name}_in · scale_{name.lower()})", worked, size_out))
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
    return " · ".join(f"T_{name.lower()}" for name in spatial_names(dims))


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
    align_corners = bool(forward.argument(2, "align_corners", False))
    steps = []
    for d, name in enumerate(spatial_names(2)):
        size_in, size_out = x.shape[-2 + d], out[-2 + d]
        copied = copies_unchanged and size_in == size_out
        scale = forward.argument(3 + d, f"scales_{name.lower()}")
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
