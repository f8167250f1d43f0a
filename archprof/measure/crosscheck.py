"""The analysis checked against one real forward: every leaf call's output shape, the FLOPs
PyTorch's FlopCounterMode counts (in total and per leaf; FLOPs of operators it has no formula
for are named and left out), and the peak memory."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode, flop_registry, sdpa_flop_count
from torch.utils.module_tracker import ModuleTracker

from archprof.graph import Graph
from archprof.measure.device import hookable_modules
from archprof.measure.peak_memory import Peak, measured_text
from archprof.report import Report, layer_label
from archprof.structure import tensors_in
from archprof.text import counted
from archprof.tracing.trace import native_attention_off
from archprof.units import shape_text, shapes_text

# The cross-check accepts measured / predicted peak memory within these bounds. A
# measurement also holds what the analysis does not count: kernel workspace (cuDNN, oneDNN's
# scratch on the CPU), CUDA's rounding to 512-byte blocks, a local kept alive by eager Python.
MEMORY_RATIO_BOUNDS = (0.8, 1.25)
# Or within this many bytes: a small model's forward holds less than such extras take (a
# few kB of oneDNN scratch on the CPU against a 4 kB prediction).
MEMORY_SLACK_BYTES = 64 * 1024


@dataclass(frozen=True)
class Check:
    """One comparison of the analysis with the real run."""

    name: str  # "output shapes", "FLOPs", "peak memory"
    status: str  # "ok", "mismatch" or "skipped"
    summary: str  # one line
    mismatches: tuple[str, ...] = ()  # one line per disagreement

    @property
    def ok(self) -> bool:
        return self.status != "mismatch"


def _cpu_flash_attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """The CPU's flash attention as FlopCounterMode counts fused attention on a GPU: the
    products Q K^T and P V."""
    return sdpa_flop_count(query, key, value)


# Formulas lent to FlopCounterMode for operators it has none for, from its own.
_LENT_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention_flops}


@dataclass
class RealRun:
    """What one real forward showed: leaf output shapes, model outputs, counted FLOPs."""

    leaf_shapes: dict[tuple[str, int], str]
    output_shapes: list[str]
    counted_total: int
    counted_by_module: dict[str, int]  # FlopCounterMode's module names ("ResNet.layer1.0.conv1")
    root_name: str


def check_run(module, inputs, leaves, names: dict[tuple[str, int], tuple[str, int]]) -> RealRun:
    """One more forward, untimed: leaf output shapes (hooks) and FLOPs (FlopCounterMode).
    Without attention's inference fast path, as the analysis traces it: its fused operator
    (`_native_multi_head_attention`) has no FlopCounterMode formula, the operators the
    analysis counted instead do. Each call is named as the trace named it (`names`:
    `Graph.calls_as_named`), a module held under two names by the one it ran under."""
    shapes: dict[tuple[str, int], str] = {}
    counts: dict[str, int] = {}

    def post_hook(path):
        def hook(_module, _args, output):
            call = counts.get(path, 0)
            counts[path] = call + 1
            shapes[names.get((path, call), (path, call))] = shapes_text(t.shape for t in tensors_in(output))

        return hook

    # Always called: a call that raises (the model catching it) is counted, so that the
    # module's later calls keep their numbers.
    handles = [leaf.register_forward_hook(post_hook(path), always_call=True) for path, leaf in leaves.items()]
    counter = FlopCounterMode(display=False, custom_mapping=_LENT_FORMULAS)
    counter.mod_tracker = _ModelCalls(module, names)
    try:
        with native_attention_off(), counter:
            output = inputs(module)
    finally:
        for handle in handles:
            handle.remove()
    by_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    return RealRun(
        shapes,
        [shape_text(t.shape) for t in tensors_in(output)],
        counter.get_total_flops(),
        by_module,
        type(module).__name__,
    )


class _ModelCalls(ModuleTracker):
    """FlopCounterMode's module tracker, on the model's own modules: a module's FLOPs are
    those of its call, its own forward hooks and pre-hooks included, as the trace counts them.
    torch's tracker hooks every module globally, and a global forward hook runs before the
    module's own forward hooks: what they compute went to the caller. Here each module's pre-hook runs
    before its own pre-hooks and its forward hook after its own forward hooks, always (a call
    that raises, the model catching it, leaves too, or its caller's FLOPs would be its). No
    backward hooks: the check's forward runs under no_grad, and registering them fails on an
    argument that requires grad but has no grad_fn, a parameter's view made under no_grad
    (timm's CaiT hands its class token, expanded, to each class-attention block).

    Each call is named as the trace named it (`check_run`'s `names`): torch's tracker names
    a module held under two names by the last it found, for all its calls. A TorchScript
    module runs no Python hooks (and takes none): none is tracked."""

    def __init__(self, model: torch.nn.Module, names: dict[tuple[str, int], tuple[str, int]]) -> None:
        super().__init__()
        self._model = model
        self._root = type(model).__name__
        self._names = names
        self._calls: dict[str, int] = {}
        self._entered: list[str] = []
        self._handles: list = []

    def __enter__(self) -> _ModelCalls:
        for path, module in hookable_modules(self._model).items():  # each module once, under its first name
            self._handles.append(module.register_forward_pre_hook(self._entering(path), prepend=True))
            self._handles.append(module.register_forward_hook(self._leaving, always_call=True))
        return self

    def __exit__(self, *args) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _entering(self, first: str):
        def hook(_module, _args) -> None:
            count = self._calls.get(first, 0)
            self._calls[first] = count + 1
            path = self._names.get((first, count), (first, count))[0]
            self._entered.append(f"{self._root}.{path}" if path else self._root)
            self.parents.add(self._entered[-1])

        return hook

    def _leaving(self, _module, _args, _output) -> None:
        left = self._entered.pop()
        if left not in self._entered:  # a module that called itself is still inside its outer call
            self.parents.discard(left)


def check_shapes(report: Report, real: RealRun, leaves, graph: Graph) -> Check:
    """Every leaf call's output shape from the real run equals the predicted one; the same
    leaf calls ran; the model's outputs have the predicted shapes."""
    predicted = {
        (layer, call): shape
        for layer, call, shape in zip(
            report.columns["layer"], report.columns["call"], report.columns["output_shape"], strict=True
        )
        if graph.aliases.get(layer, layer) in leaves and call >= 0
    }
    leaf_lines = {}  # (layer, call) -> what differs, in the order the calls ran
    for key in sorted(predicted.keys() | real.leaf_shapes.keys(), key=_call_order(predicted, real.leaf_shapes)):
        line = _leaf_line(layer_label(*key), predicted.get(key), real.leaf_shapes.get(key))
        if line:
            leaf_lines[key] = line
    lines = list(leaf_lines.values())
    differing = sum(1 for key in leaf_lines if key in predicted)  # of the predicted calls; the rest ran unseen
    predicted_outputs = [shape_text(t.shape) for t in graph.outputs]
    outputs_differ = predicted_outputs != real.output_shapes
    if outputs_differ:
        lines.append(
            f"model output: predicted {', '.join(predicted_outputs)}, measured {', '.join(real.output_shapes)}"
        )
    if lines:
        summary = _shapes_summary(differing, len(predicted), len(leaf_lines) - differing, outputs_differ)
        return Check("output shapes", "mismatch", summary, tuple(lines))
    matched = counted(len(predicted), "leaf call")
    return Check("output shapes", "ok", f"{matched} and the model's output match the analysis")


def _leaf_line(name: str, predicted: str | None, measured: str | None) -> str | None:
    """How a leaf call's predicted output shape and the real one differ (None: a shape is
    missing, the call did not run there), or None where they agree. A call that raised (the
    model catching it) returned no tensor: its shape is ''."""
    if measured is None:
        return f"{name}: predicted ({predicted}) but did not run"
    if predicted is None:
        return f"{name}: ran ({measured}) but the analysis did not see it"
    if predicted != measured:
        return f"{name}: predicted {predicted or 'no tensor'}, measured {measured or 'no tensor'}"
    return None


def _shapes_summary(differing: int, predicted: int, unseen: int, outputs_differ: bool) -> str:
    """What the shape check found, each kind of mismatch counted apart: "1 of 1 leaf calls
    differ; 1 leaf call ran that the analysis did not see; the model's output differs"."""
    parts = []
    if differing:
        parts.append(f"{differing} of {predicted} leaf calls differ")
    if unseen:
        parts.append(f"{counted(unseen, 'leaf call')} ran that the analysis did not see")
    if outputs_differ:
        parts.append("the model's output differs")
    return "; ".join(parts)


def _call_order(*maps):
    order = {key: i for mapping in maps for i, key in enumerate(mapping)}
    return lambda key: order.get(key, 0)


# nn.MultiheadAttention's and nn.TransformerEncoderLayer's fused inference kernels
# (`archprof.kernels`' fast paths), which FlopCounterMode has no formula for: the check runs
# their composite roads (`native_attention_off`), where it counts the same products.
_FUSED = frozenset({"_native_multi_head_attention", "_transformer_encoder_layer_fwd"})

# What FlopCounterMode counts: the operators it has a formula for ("aten.mm", ...), those
# the check lends it one for, and the fused kernels, through their composite roads.
_COUNTABLE = frozenset(str(packet) for packet in (*flop_registry, *_LENT_FORMULAS)) | {
    f"aten.{name}" for name in _FUSED
}


def compared_modules(
    report: Report, leaves: dict[str, torch.nn.Module], module, aliases: dict[str, str]
) -> dict[str, torch.nn.Module]:
    """What the check compares call by call (`leaves`, by first path): the leaf modules, but
    that a module whose row ran a fused kernel (under any of its names: `aliases`) stands for
    the leaves under it, which a CPU does not call there (the check's composite road does:
    FlopCounterMode counts a module's subtree)."""
    fused = {
        aliases.get(layer, layer)
        for layer, operators in zip(report.columns["layer"], report.columns["operators"], strict=True)
        if layer and _FUSED.intersection(operators)
    }
    if not fused:
        return leaves
    kept = {path: leaf for path, leaf in leaves.items() if not any(path.startswith(f"{f}.") for f in fused)}
    return {**kept, **{path: module.get_submodule(path) for path in sorted(fused)}}


def check_flops(report: Report, real: RealRun, leaves, graph: Graph) -> Check:
    """FLOPs that torch's FlopCounterMode counts on the real run (matrix products and
    convolutions, 2 per MAC) equal the analytic `flops`, in total and per leaf module. The
    analytic FLOPs of operators FlopCounterMode has no formula for (oneDNN's LSTM layer,
    `mv`) are left out of both sides and named in the summary: it counts none of them."""
    uncountable = [
        {cost.operator: cost.flops for cost in costs if cost.flops and cost.operator not in _COUNTABLE}
        for costs in report.operator_costs
    ]
    predicted: dict[str, int] = {}
    for layer, flops, left_out in zip(report.columns["layer"], report.columns["flops"], uncountable, strict=True):
        if graph.aliases.get(layer, layer) in leaves:
            predicted[layer] = predicted.get(layer, 0) + flops - sum(left_out.values())
    lines = []
    attributed = 0
    for layer, flops in predicted.items():
        name = real.root_name if not layer else f"{real.root_name}.{layer}"
        counted = real.counted_by_module.get(name, 0)
        attributed += counted
        if counted != flops:
            lines.append(f"{layer or '(model)'}: analytic {flops:,}, FlopCounterMode {counted:,}")
    total = report.totals.flops - sum(sum(left_out.values()) for left_out in uncountable)
    not_compared = _not_compared_text(report.columns["layer"], uncountable)
    if real.counted_total != total:
        analytic_rest = total - sum(predicted.values())
        counted_rest = real.counted_total - attributed
        if analytic_rest != counted_rest:
            lines.append(
                f"outside leaf modules (functional ops): analytic {analytic_rest:,}, FlopCounterMode {counted_rest:,}"
            )
        lines.append(f"total: analytic {total:,}, FlopCounterMode {real.counted_total:,}")
        summary = f"analytic {total:,} FLOPs, FlopCounterMode counted {real.counted_total:,}{not_compared}"
        return Check("FLOPs", "mismatch", summary, tuple(lines))
    if lines:
        return Check("FLOPs", "mismatch", f"totals agree, but not per layer{not_compared}", tuple(lines))
    return Check("FLOPs", "ok", f"{total:,} FLOPs, as FlopCounterMode counts on the real run{not_compared}")


def _not_compared_text(layers: list[str], uncountable: list[dict[str, int]]) -> str:
    """ "; not compared: 921,600 FLOPs of aten.mkldnn_rnn_layer (in lstm), ...", or ""."""
    by_operator: dict[str, tuple[int, list[str]]] = {}
    for layer, left_out in zip(layers, uncountable, strict=True):
        for operator, flops in left_out.items():
            earlier, where = by_operator.get(operator, (0, []))
            by_operator[operator] = (earlier + flops, where if layer in where else [*where, layer])
    if not by_operator:
        return ""
    parts = [
        f"{flops:,} FLOPs of {operator} (in {', '.join(layer or '(model)' for layer in where)})"
        for operator, (flops, where) in by_operator.items()
    ]
    return f"; not compared, FlopCounterMode has no formula for them: {'; '.join(parts)}"


def check_memory(predicted: int, measured: Peak | None, device) -> Check:
    """The predicted peak against the measured one: within the ratio bounds, within the
    slack, or (on the CPU) between the measurements without and with operators' workspace,
    where PyTorch runs one operator as several that the analysis counts each."""
    if measured is None:
        return Check("peak memory", "skipped", f"predicted {predicted:,} B; {memory_note(device)}")
    low, high = MEMORY_RATIO_BOUNDS
    ratio = measured.bytes / predicted if predicted else math.inf
    summary = f"predicted {predicted:,} B, {measured_text(measured)} (x{ratio:.3f})"
    if low <= ratio <= high:
        return Check("peak memory", "ok", summary)
    if abs(measured.bytes - predicted) <= MEMORY_SLACK_BYTES:
        return Check("peak memory", "ok", f"{summary}; within {MEMORY_SLACK_BYTES // 1024} KiB")
    if measured.with_workspace is not None and measured.bytes <= predicted <= measured.with_workspace:
        return Check("peak memory", "ok", f"{summary}; between the measurements without and with workspace")
    return Check(
        "peak memory",
        "mismatch",
        summary,
        (f"measured / predicted = {ratio:.3f}, outside [{low}, {high}], and more than {MEMORY_SLACK_BYTES:,} B apart",),
    )


def memory_note(device) -> str:
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated over the first forward (kernel workspace, allocator rounding included)"
    if device.type == "cpu":
        return "the CPU allocator's events over the first forward (torch.profiler), operators' workspace left out"
    return f"not measured on {device.type}: archprof reads the peak on CUDA and the CPU only"
