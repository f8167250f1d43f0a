"""BatchNorm folded into the convolution or linear layer before it: the inference view.

At inference a BatchNorm is a fixed per-channel affine map, `y = (x - mean) / sqrt(var + eps)
* gamma + beta`; right after a convolution or a linear layer it folds into that layer's
weights and bias (`W' = W * gamma / sqrt(var + eps)` per output channel, `b' = (b - mean) *
gamma / sqrt(var + eps) + beta`), as deployment tools do. The folded graph loses the norm's
operation, parameters and buffers; the layer gains a bias if it had none.

A norm folds when it uses its running statistics (eval mode), reads the output of a
convolution or a matrix product with parameter weights, and is that output's only reader,
and when neither the layer's weights nor the norm's parameters are used by another pair.
Every other norm stays, with the reason."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass

from archprof.graph import Graph, ModuleCall, OpNode, ParameterInfo, TensorMeta
from archprof.operators import Family, operator_named
from archprof.structure import map_op_args

# Batch norms that use their running statistics whatever their arguments say.
_INFERENCE_NORMS = frozenset({"aten._native_batch_norm_legit_no_training", "aten._batch_norm_no_update"})
# Batch norms given (input, weight, bias, running_mean, running_var, training, ...): they use
# the running statistics when both are given and `training` is false.
_FLAGGED_NORMS = frozenset(
    {"aten.native_batch_norm", "aten._native_batch_norm_legit", "aten.cudnn_batch_norm", "aten.miopen_batch_norm"}
)
_ALWAYS_TRAINING_NORMS = frozenset({"aten._native_batch_norm_legit_functional", "aten._batch_norm_with_update"})
BATCH_NORMS = _INFERENCE_NORMS | _FLAGGED_NORMS | _ALWAYS_TRAINING_NORMS
# Layers a norm folds into: the op, and the position of its weight and its bias.
_CONVOLUTIONS = frozenset({"aten.convolution", "aten._convolution"})
_MATRIX_PRODUCTS = frozenset({"aten.addmm", "aten.mm"})


@dataclass(frozen=True, slots=True)
class FoldedNorm:
    """A BatchNorm call folded into the layer call before it (module paths and calls)."""

    norm: str
    norm_call: int
    into: str
    into_call: int


@dataclass(frozen=True, slots=True)
class KeptNorm:
    """A BatchNorm call that stays, and why."""

    norm: str
    norm_call: int
    reason: str


@dataclass(frozen=True, slots=True)
class Folding:
    folded: tuple[FoldedNorm, ...]
    kept: tuple[KeptNorm, ...]


def fold_batch_norms(graph: Graph) -> tuple[Graph, Folding]:
    """The graph with every BatchNorm that can fold folded into the layer before it, and
    which norms folded and which stayed (with the reason)."""
    norms = [op for op in graph.ops if op.op in BATCH_NORMS and not runs_instance_norm(op)]
    if not norms:
        return graph, Folding((), ())
    producer = {t.id: op for op in graph.ops for t in op.outputs}
    readers: dict[int, list[OpNode]] = defaultdict(list)
    for op in graph.ops:
        for tensor in dict.fromkeys(op.inputs):
            readers[tensor.id].append(op)
    returned = {t.id for t in graph.outputs}

    pairs: dict[int, OpNode] = {}  # norm op index -> the layer op it folds into
    kept: list[tuple[OpNode, str]] = []
    for norm in norms:
        reason = _why_not(norm, producer, readers, returned, graph.training)
        if reason:
            kept.append((norm, reason))
        else:
            pairs[norm.index] = producer[norm.args[0].id]
    for norm_index, reason in _shared_weights(graph.ops, pairs, producer).items():
        norm = graph.ops[norm_index]
        kept.append((norm, reason))
        del pairs[norm_index]

    folding = Folding(
        tuple(
            FoldedNorm(graph.ops[i].module.path, graph.ops[i].module.call, layer.module.path, layer.module.call)
            for i, layer in pairs.items()
        ),
        tuple(KeptNorm(norm.module.path, norm.module.call, reason) for norm, reason in sorted(kept, key=_op_index)),
    )
    return (_folded(graph, pairs, producer) if pairs else graph), folding


def runs_instance_norm(op: OpNode) -> bool:
    """Whether a batch norm is the one an InstanceNorm module runs, over its input reshaped to
    one sample of N·C channels: no BatchNorm, nothing to fold."""
    return op.module.type.startswith("InstanceNorm")


def _op_index(item: tuple[OpNode, str]) -> int:
    return item[0].index


def _why_not(norm: OpNode, producer, readers, returned, training: bool) -> str:
    """Why `norm` cannot fold ("" when it can)."""
    if training:  # even one the model froze with .eval(): the step trains its weight and bias
        return "a training step trains it (the folded view is inference's)"
    if not _uses_running_statistics(norm):
        return "it computes batch statistics (training mode, or no running statistics)"
    x = norm.args[0]
    layer = producer.get(x.id)
    if layer is None:
        return "it reads an input of the model, not a layer's output"
    where = f"{layer.op} in {_module_name(layer.module)}"
    if layer.op not in _CONVOLUTIONS | _MATRIX_PRODUCTS:
        return f"it follows {where}, not a convolution or a linear layer"
    if _weight(layer, producer) is None:
        return f"the weight of {where} is computed, not a parameter"
    if layer.op == "aten.addmm" and not _is_bias(layer.args[0]):
        return f"{where} adds a computed tensor, not a bias"
    others = [op for op in readers[x.id] if op is not norm]
    if others or x.id in returned:
        also = f"{others[0].op} in {_module_name(others[0].module)}" if others else "the model's output"
        return f"the output of {where} is also read by {also}"
    if any(readers[t.id] or t.id in returned for t in norm.outputs[1:]):
        return "its batch statistics are read"
    if any(t is not None and not _is_state(t) for t in norm.args[1:5]):
        return "its scale, shift or statistics are computed, not parameters"
    return ""


def _uses_running_statistics(norm: OpNode) -> bool:
    """Whether the norm is the fixed affine map of inference (eval mode, running statistics)."""
    if norm.op in _INFERENCE_NORMS:
        return True
    if norm.op not in _FLAGGED_NORMS or len(norm.args) < 6:  # _native_batch_norm_legit without statistics
        return False
    statistics = norm.args[3:5]
    return all(isinstance(t, TensorMeta) for t in statistics) and not norm.args[5]


def _is_state(value) -> bool:
    """A parameter or a buffer of the model."""
    return isinstance(value, TensorMeta) and value.kind in ("parameter", "buffer")


def _is_bias(value) -> bool:
    return isinstance(value, TensorMeta) and value.kind == "parameter" and len(value.shape) == 1


def _module_name(call: ModuleCall) -> str:
    return f"'{call.path}'" if call.path else "the model"


def _weight(layer: OpNode, producer: dict[int, OpNode]) -> TensorMeta | None:
    """The layer's weight parameter (a linear layer's through its transposing view), or None."""
    weight = layer.args[1] if layer.op in _CONVOLUTIONS else layer.args[-1]
    view = producer.get(weight.id) if isinstance(weight, TensorMeta) else None
    if view is not None and view.is_view and view.inputs:
        weight = view.inputs[0]
    parameter = isinstance(weight, TensorMeta) and weight.kind == "parameter" and weight.name
    return weight if parameter else None


def _shared_weights(ops: list[OpNode], pairs: dict[int, OpNode], producer: dict[int, OpNode]) -> dict[int, str]:
    """Norms whose layer weights or bias or own parameters another op reads outside its pair:
    one tensor cannot take two foldings (a layer called twice, one call folded, the other
    not; a bias two layers share, only one of them followed by the norm)."""
    partner: dict[str, set] = defaultdict(set)  # parameter name -> the pairs (or lone ops) reading it
    pair_of = {}
    for norm_index, layer in pairs.items():
        pair_of[norm_index] = pair_of[layer.index] = (norm_index, layer.index)
    for op in ops:
        key = pair_of.get(op.index, op.index)
        for tensor in op.inputs:
            if _is_state(tensor):
                partner[tensor.name].add(key)
    shared = {}
    for norm_index, layer in pairs.items():
        read = (*ops[norm_index].inputs, _weight(layer, producer), _current_bias(layer))
        names = [t.name for t in read if _is_state(t)]
        if any(len(partner[name]) > 1 for name in names):
            shared[norm_index] = "its parameters or its layer's weights or bias are used by other operations too"
    return shared


def _folded(graph: Graph, pairs: dict[int, OpNode], producer: dict[int, OpNode]) -> Graph:
    """The graph rewritten: the norms and their scratch tensors gone, their readers reading
    the layer's output instead, each layer with a bias."""
    removed = set(pairs)
    for norm_index in pairs:
        removed |= _scratch_before(graph.ops, norm_index)
    names = {p.name for p in graph.parameters}
    next_id = max((t.id for op in graph.ops for t in (*op.inputs, *op.outputs)), default=-1) + 1
    next_storage = max((t.storage for op in graph.ops for t in (*op.inputs, *op.outputs)), default=-1) + 1
    replaced: dict[int, TensorMeta] = {}  # a norm's output -> the layer's output
    # A norm's output storage -> the layer's: in-place ops and views after the norm lived in it.
    storages: dict[int, int] = {}
    biased: dict[int, OpNode] = {}  # layer op index -> the layer with a bias
    new_biases: dict[str, ParameterInfo] = {}  # weight name -> the bias it gained
    dropped_parameters: set[str] = set()
    for norm_index, layer in pairs.items():
        norm = graph.ops[norm_index]
        replaced[norm.outputs[0].id] = layer.outputs[0]
        storages[norm.outputs[0].storage] = layer.outputs[0].storage
        dropped_parameters |= {t.name for t in norm.inputs if _is_state(t)}
        for statistics in (t.name for t in norm.inputs if t.kind == "buffer"):
            stem, dot, _ = statistics.rpartition(".")
            dropped_parameters.add(f"{stem}{dot}num_batches_tracked")  # the module's counter, read by no op
        if _current_bias(layer) is not None:
            continue
        weight = _weight(layer, producer)
        name = _free_name(weight.name, names)
        names.add(name)
        bias = TensorMeta(next_id, (layer.outputs[0].shape[1],), weight.dtype, next_storage, "parameter", name)
        next_id += 1
        next_storage += 1
        info = next(p for p in graph.parameters if p.name == weight.name)
        new_biases[weight.name] = dataclasses.replace(info, name=name, shape=bias.shape)
        biased[layer.index] = _with_bias(layer, bias)

    def substitute(tensor: TensorMeta) -> TensorMeta:
        tensor = replaced.get(tensor.id, tensor)
        storage = storages.get(tensor.storage)
        return tensor if storage is None else dataclasses.replace(tensor, storage=storage)

    kept_ops = [op for op in graph.ops if op.index not in removed]
    calls_with_ops = {op.module.index for op in kept_ops}
    emptied = {op.module.index for op in graph.ops if op.index in removed} - calls_with_ops
    kept_before = [0]  # kept_before[i]: ops kept among the first i
    for op in graph.ops:
        kept_before.append(kept_before[-1] + (op.index not in removed))
    calls = {
        call.index: dataclasses.replace(call, first_op=kept_before[call.first_op])
        for call in graph.module_calls
        if call.index not in emptied
    }
    ops = []
    for position, op in enumerate(kept_ops):
        op = biased.get(op.index, op)
        args, kwargs = map_op_args(substitute, TensorMeta, op.args, op.kwargs)
        ops.append(
            dataclasses.replace(
                op,
                index=position,
                args=args,
                kwargs=kwargs,
                inputs=tuple(map(substitute, op.inputs)),
                outputs=tuple(map(substitute, op.outputs)),
                module=calls.get(op.module.index, op.module),
            )
        )
    parameters = []
    for parameter in graph.parameters:
        if parameter.name not in dropped_parameters:
            parameters.append(parameter)
        if parameter.name in new_biases:
            parameters.append(new_biases[parameter.name])
    return dataclasses.replace(
        graph,
        ops=ops,
        module_calls=list(calls.values()),
        call_outputs={
            index: tuple(map(substitute, outputs)) for index, outputs in graph.call_outputs.items() if index in calls
        },
        outputs=[substitute(t) for t in graph.outputs],
        parameters=parameters,
        released=_released(graph.released, storages, kept_before),
    )


def _released(released: dict[int, int], storages: dict[int, int], kept_before: list[int]) -> dict[int, int]:
    """`Graph.released` of the folded graph: counted in the ops kept, a norm's output
    storage taken into its layer's (let go of when the later of the two is)."""
    folded: dict[int, int] = {}
    for storage, steps_run in released.items():
        storage = storages.get(storage, storage)
        folded[storage] = max(folded.get(storage, 0), kept_before[steps_run])
    return dict(sorted(folded.items()))


def _scratch_before(ops: list[OpNode], norm_index: int) -> set[int]:
    """The creation ops right before a norm, in its module call, whose tensors nobody reads
    (the empty reserve tensor of a batch-norm module)."""
    norm = ops[norm_index]
    scratch = set()
    index = norm_index - 1
    while index >= 0 and ops[index].module is norm.module and _is_creation(ops[index]):
        made = {t.id for t in ops[index].outputs}
        if any(made & {t.id for t in op.inputs} for op in ops[index + 1 :]):
            break
        scratch.add(index)
        index -= 1
    return scratch


def _is_creation(op: OpNode) -> bool:
    operator = operator_named(op.op)
    return operator is not None and operator.family is Family.CREATION


def _current_bias(layer: OpNode) -> TensorMeta | None:
    bias = layer.args[2] if layer.op in _CONVOLUTIONS else (layer.args[0] if layer.op == "aten.addmm" else None)
    return bias if isinstance(bias, TensorMeta) else None


def _with_bias(layer: OpNode, bias: TensorMeta) -> OpNode:
    """The layer op, without a bias until now, reading `bias` (a matrix product becomes an addmm)."""
    if layer.op in _CONVOLUTIONS:
        args = (*layer.args[:2], bias, *layer.args[3:])
        return dataclasses.replace(layer, args=args, inputs=(*layer.inputs[:2], bias, *layer.inputs[2:]))
    return dataclasses.replace(layer, op="aten.addmm", args=(bias, *layer.args), inputs=(bias, *layer.inputs))


def _free_name(weight: str, taken: set[str]) -> str:
    """The new bias's name: 'conv.bias' beside 'conv.weight' (else '<weight>_bias'), unique."""
    stem, dot, last = weight.rpartition(".")
    name = f"{stem}{dot}bias" if last == "weight" else f"{weight}_bias"
    while name in taken:
        name += "_folded"
    return name
