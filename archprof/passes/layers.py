"""Group the graph's ops into the report's rows ("layers").

A row is a run of consecutive ops that ran directly in one module call: a leaf module's
call (a convolution), or a container's own functional ops between two child calls (the
residual `+` of a ResNet block). A leaf module that ran no op (Dropout in eval, Identity)
still gets a row, as does a module that owns parameters but was never called."""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter

from archprof.graph import Graph, ModuleCall, OpNode, TensorMeta, value_record
from archprof.operators.costs import expand
from archprof.operators.shapes import pool_window
from archprof.units import shape_text, shapes_text


@value_record
class LayerGroup:
    path: str
    module_type: str
    call: int  # -1 for a module that was never called
    ops: tuple[OpNode, ...]
    outputs: tuple[TensorMeta, ...]

    @property
    def depth(self) -> int:
        return 0 if not self.path else self.path.count(".") + 1

    @property
    def made_outputs(self) -> tuple[TensorMeta, ...]:
        """The outputs the row's own operations made, each once (`return y, y`): its activation
        bytes. Empty for a row that makes nothing (an nn.Identity, a Dropout in evaluation, whose
        output is their input, which another row made and holds), so that one network counts
        the same however many such placeholders its code calls (timm's mobilenetv3_large_100
        calls 96 where torchvision's mobilenet_v3_large calls none)."""
        outputs, ops = self.outputs, self.ops
        if not ops:
            return ()
        last = ops[-1].outputs
        if len(outputs) == 1 and last and outputs[0].id == last[0].id:  # nearly every row
            return outputs
        made = {t.id for op in ops for t in op.outputs}
        return tuple({t.id: t for t in outputs if t.id in made}.values())


def group_layers(graph: Graph) -> list[LayerGroup]:
    leaves = _leaf_paths(graph.module_types)
    keyed: list[tuple[tuple[int, int, int], LayerGroup]] = []
    run: list[OpNode] = []
    for op in graph.ops:
        if run and op.module is not run[0].module:
            keyed.append(_op_run(graph, run, leaves))
            run = []
        run.append(op)
    if run:
        keyed.append(_op_run(graph, run, leaves))

    called_with_ops = {group.ops[0].module.index for _, group in keyed}  # a run's ops share their call
    for call in graph.module_calls:
        if call.path in leaves and call.index not in called_with_ops:
            # An op-less call ran before the op recorded next: sort it ahead of that op.
            group = LayerGroup(call.path, call.type, call.call, (), graph.call_outputs.get(call.index, ()))
            keyed.append(((call.first_op, 0, call.index), group))

    aliases = graph.aliases
    called = {aliases.get(call.path, call.path) for call in graph.module_calls}  # under any of its names
    owners = {p.module_path for p in graph.parameters}
    never_called = owners - called
    if never_called:  # most models call every module that owns parameters: no order to look up
        order = {path: place for place, path in enumerate(graph.module_types)}  # the module tree's
        for path in sorted(never_called, key=order.__getitem__):
            group = LayerGroup(path, graph.module_types[path], -1, (), ())
            keyed.append(((len(graph.ops), 1, 0), group))
    keyed.sort(key=itemgetter(0))
    return [group for _, group in keyed]


def _op_run(graph: Graph, run: list[OpNode], leaves: frozenset[str]) -> tuple[tuple[int, int, int], LayerGroup]:
    """A run of one module call's own ops, its outputs what the call returned (a leaf's; a
    container's where this run made them: MultiheadAttention, whose out_proj is never
    called, returns its output and the averaged weights, the last op's), else the last op's."""
    call: ModuleCall = run[0].module
    returned = graph.call_outputs.get(call.index)
    if returned is None:
        outputs = run[-1].outputs[:1]
    elif call.path in leaves:
        outputs = returned
    else:  # plain loops, not a comprehension's call each: a container's run (a residual add, timm's SE gate)
        made = set()
        for op in run:
            for tensor in op.outputs:
                made.add(tensor.id)
        kept = []
        for tensor in returned:
            if tensor.id in made:
                kept.append(tensor)
        outputs = tuple(kept) or run[-1].outputs[:1]
    return (run[0].index, 1, 0), LayerGroup(call.path, call.type, call.call, tuple(run), outputs)


def _leaf_paths(module_types: dict[str, str]) -> frozenset[str]:
    parents = {path.rpartition(".")[0] for path in module_types if path}
    return frozenset(module_types.keys() - parents)


# The window's size: a convolution's from its weight, a pooling's from its kernel_size
# argument, over its number of spatial dimensions (a one-element kernel_size along each).
_WINDOWED = {
    "aten.convolution": "weight",
    "aten._convolution": "weight",  # a torch.jit.trace'd convolution's
    "aten.max_pool2d_with_indices": 2,
    "aten.max_pool3d_with_indices": 3,
    "aten.avg_pool2d": 2,
    "aten.avg_pool3d": 3,
    "aten.fractional_max_pool2d": 2,
    "aten.fractional_max_pool3d": 3,
}


_ACTIVATIONS = ("activation", "input")  # the kinds of tensor a row reads from other rows


def interface_columns(groups: list[LayerGroup]) -> dict[str, list[str]]:
    """Per row: `input_shape`, the shapes of the activations it reads that were made outside
    it (the model's inputs included, parameters and constants not), in the order first read,
    or, of a row that runs no op (a dropout in evaluation, an identity), those it returns as
    they came (its output, made outside it); `kernel`, the window of its first convolution or
    pooling ('3x3'; '' without one)."""
    input_shapes, kernels = [], []
    for group in groups:
        ops = group.ops
        if len(ops) == 1:  # (most rows) it made none of what it reads, and most of those have no window
            input_shapes.append(shapes_text(_activation_shapes(ops[0].inputs)))
            kernels.append(_first_window(ops) if ops[0].op in _WINDOWED else "")
        elif ops:
            input_shapes.append(shapes_text(_read_from_outside(ops)))
            kernels.append(_first_window(ops))
        else:  # an op-less row (timm's Identity: a third of some models' rows) has no window
            input_shapes.append(shapes_text(_activation_shapes(group.outputs)))
            kernels.append("")
    return {"input_shape": input_shapes, "kernel": kernels}


def _read_from_outside(ops: tuple[OpNode, ...]) -> list[tuple[int, ...]]:
    """The shapes of the activations (and inputs) `ops` read that none of them made, in the
    order first read. One walk: an op reads only tensors made before it, so a tensor made in
    the run is made before any of its ops reads it."""
    made: set[int] = set()
    read: dict[int, tuple[int, ...]] = {}
    for op in ops:
        for tensor in op.inputs:
            if tensor.kind in _ACTIVATIONS and tensor.id not in made:
                read.setdefault(tensor.id, tensor.shape)
        for tensor in op.outputs:
            made.add(tensor.id)
    return list(read.values())


def _activation_shapes(tensors: Sequence[TensorMeta]) -> list[tuple[int, ...]]:
    """The shapes of the activations (and inputs) among `tensors`, each once, in order: what a
    row that runs no op returns, or what a row of one op reads."""
    if len(tensors) == 1:  # most rows' one output, a one-op row's one input: no dict
        return [tensors[0].shape] if tensors[0].kind in _ACTIVATIONS else []
    shapes: dict[int, tuple[int, ...]] = {}
    for tensor in tensors:  # a loop, not a comprehension's call: a convolution's row, a batch norm's
        if tensor.kind in _ACTIVATIONS:
            shapes[tensor.id] = tensor.shape
    return list(shapes.values())


def _first_window(ops: tuple[OpNode, ...]) -> str:
    """The window of the first convolution or pooling among `ops` ('3x3'), or ''."""
    for op in ops:
        where = _WINDOWED.get(op.op)
        if where is None:
            continue
        # A convolution's window is all its own: `window_lead` looks at poolings only.
        window = op.inputs[1].shape[2:] if where == "weight" else expand(op.args[1], where)[window_lead(op, ops) :]
        if window:
            return shape_text(window)
    return ""


def window_lead(op: OpNode, ops: Sequence[OpNode]) -> int:
    """How many leading dimensions of the window of `op`, a convolution or pooling among a
    row's `ops`, are not the row's own: 1 where PyTorch runs a 1-d pooling (`F.max_pool1d`,
    `F.avg_pool1d`) as a 2-d one on its input unsqueezed before the length, its window 1 x K
    (kernel, stride and dilation 1 and no padding along the added dimension); else 0 (a 3x3
    pooling of a map the model unsqueezed itself is a 2-d one)."""
    if not op.op.startswith(("aten.max_pool2d", "aten.avg_pool2d")) or not op.inputs:
        return 0
    kernel, stride, padding, dilation, _ = pool_window(op)
    if (kernel[0], stride[0], padding[0], dilation[0]) != (1, 1, 0, 1):
        return 0
    x = op.inputs[0]
    ndim = len(x.shape)
    for maker in ops:
        if maker.op == "aten.unsqueeze" and any(t.id == x.id for t in maker.outputs):
            return int(maker.argument(1, "dim") % ndim == ndim - 2)
    return 0


def consecutive_runs(values: Sequence[int]) -> list[list[int]]:
    """Ascending integers cut into runs of consecutive ones: [1, 2, 4] -> [[1, 2], [4]]."""
    runs: list[list[int]] = []
    for value in values:
        if runs and value == runs[-1][-1] + 1:
            runs[-1].append(value)
        else:
            runs.append([value])
    return runs
