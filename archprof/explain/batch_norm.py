"""A batch norm explained: its parameters, running statistics and elementwise FLOPs, and the
InstanceNorm it runs where aten's instance_norm folds a batch into channels."""

from __future__ import annotations

from archprof.explain.document import Section, Step
from archprof.explain.notation import product_text
from archprof.explain.sources import RESHAPES, Sources, own_parameters
from archprof.graph import OpNode, TensorMeta
from archprof.passes.flops import op_cost
from archprof.passes.fold_bn import runs_instance_norm
from archprof.units import shape_text


def batch_norm(op: OpNode, sources: Sources) -> Section:
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
    own, notes = own_parameters(op, sources, (("scale", op.args[1]), ("shift", op.args[2])))
    if not own:
        return Step("parameters", "none counted on this row" if notes else "none (affine=False)", "", 0), notes
    names = " and ".join(name for name, _ in own)
    count = f"{len(own)}C" if len(own) > 1 else "C"
    worked = f"{len(own)} · {channels}" if len(own) > 1 else str(channels)
    return Step("parameters", f"{count} ({names})", worked, sum(size for _, size in own)), notes


def _instance_norm_input(op: OpNode, sources: Sources) -> TensorMeta | None:
    """The N x C x ... input of the InstanceNorm a batch norm runs (aten's instance_norm
    reshapes it to 1 x (N·C) x ..., one sample of N·C channels), or None for a batch norm.
    The module called says which it is; a functional one is an InstanceNorm where the
    reshape folds a batch of N > 1 into channels (at N = 1 it changes nothing)."""
    if "BatchNorm" in op.module.type:
        return None
    x = op.args[0]
    reshape = sources.made_by.get(x.id)
    if reshape is None or reshape.op not in RESHAPES:
        return None
    sample = reshape.inputs[0]
    if len(sample.shape) != len(x.shape) or x.shape != (1, sample.shape[0] * sample.shape[1], *sample.shape[2:]):
        return None
    return sample if sample.shape[0] > 1 or runs_instance_norm(op) else None
