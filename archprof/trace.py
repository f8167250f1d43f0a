"""Run a model once on meta tensors and capture every aten operation it performs.

No weight and no activation is allocated: parameters and buffers are replaced by empty
meta stand-ins through `torch.func.functional_call`, so the caller's model is never
touched. Each operation is attributed to the innermost module call running when it ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from archprof.errors import ArchprofError
from archprof.formulas import FORMULAS, SAME_DTYPE_OPS
from archprof.graph import Graph, ModuleCall, OpNode, ParameterInfo, TensorKind, TensorMeta
from archprof.structure import map_structure, tensors_in


def trace(
    model: torch.nn.Module,
    input_shapes: Sequence[tuple[int, ...]],
    *,
    dtype: torch.dtype | None = None,
    training: bool = False,
) -> Graph:
    """Trace `model` in eval mode on meta inputs of the given full shapes (batch included).

    `dtype` casts floating parameters, buffers and inputs (as `model.to(dtype)` would);
    None keeps the model's own dtypes and feeds inputs in the dtype of its first floating
    parameter.

    `training` traces a training forward instead: train mode, grad enabled, stand-ins of
    trainable parameters requiring grad, and every tensor autograd saves for the backward
    pass recorded in `Graph.saved` (through `saved_tensors_hooks`, which sees the same
    tensor objects as the recorder, fast-path answers included).
    """
    recorder = _Recorder()
    stand_ins, parameters = _stand_ins(model, dtype, recorder, requires_grad=training)
    input_dtype = dtype or _first_floating_dtype(model)
    inputs = [torch.empty(shape, dtype=input_dtype, device="meta") for shape in input_shapes]
    input_metas = [recorder.register(x, "input") for x in inputs]

    training_modes = {module: module.training for module in model.modules()}
    model.train(training)
    try:
        with ExitStack() as stack:
            for handle in _attach_hooks(model, recorder):
                stack.callback(handle.remove)
            if training:
                stack.enter_context(torch.enable_grad())
                stack.enter_context(torch.autograd.graph.saved_tensors_hooks(recorder.pack_saved, _unpack_saved))
            else:
                stack.enter_context(torch.no_grad())
            stack.enter_context(recorder)
            output = torch.func.functional_call(model, stand_ins, tuple(inputs), tie_weights=True, strict=False)
    except ArchprofError:
        raise
    except Exception as exc:  # the user's forward failed: say where and on what
        raise ArchprofError(recorder.describe_failure(exc, input_shapes)) from exc
    finally:
        for module, was_training in training_modes.items():
            module.training = was_training

    outputs = [recorder.lookup(t) for t in tensors_in(output)]
    return Graph(
        ops=recorder.ops,
        module_calls=recorder.calls,
        call_outputs=recorder.call_outputs,
        inputs=input_metas,
        outputs=outputs,
        parameters=parameters,
        module_types={path: type(module).__name__ for path, module in model.named_modules()},
        training=training,
        saved=recorder.saved,
    )


def _first_floating_dtype(model: torch.nn.Module) -> torch.dtype:
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.get_default_dtype()


def _stand_ins(model: torch.nn.Module, dtype: torch.dtype | None, recorder: _Recorder, requires_grad: bool = False):
    """Empty meta tensors, one per parameter and buffer (tied ones once); with
    `requires_grad`, those of trainable parameters require grad, as in training."""
    stand_ins: dict[str, torch.Tensor] = {}
    parameters: list[ParameterInfo] = []
    named = [(n, t, False) for n, t in model.named_parameters()]
    named += [(n, t, True) for n, t in model.named_buffers()]
    for name, tensor, is_buffer in named:
        if isinstance(tensor, torch.nn.parameter.UninitializedTensorMixin):
            raise ArchprofError(f"'{name}' is a lazy parameter not yet initialised: run one forward pass first")
        target = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
        stand_in = torch.empty(tensor.shape, dtype=target, device="meta")
        if requires_grad and not is_buffer and tensor.requires_grad and stand_in.is_floating_point():
            stand_in.requires_grad_(True)
        stand_ins[name] = stand_in
        recorder.register(stand_in, "buffer" if is_buffer else "parameter", name)
        parameters.append(
            ParameterInfo(
                name=name,
                module_path=name.rpartition(".")[0],
                shape=tuple(tensor.shape),
                dtype=target,
                trainable=not is_buffer and tensor.requires_grad,
                is_buffer=is_buffer,
            )
        )
    return stand_ins, parameters


def _attach_hooks(model: torch.nn.Module, recorder: _Recorder):
    handles = []
    for path, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(recorder.pre_hook(path)))
        handles.append(module.register_forward_hook(recorder.post_hook))
    return handles


class _Recorder(TorchDispatchMode):
    """Records every aten op; answers the ops it has a shape formula for itself."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[OpNode] = []
        self.calls: list[ModuleCall] = []
        self.call_outputs: dict[int, tuple[TensorMeta, ...]] = {}
        self._stack: list[tuple[ModuleCall, tuple[tuple[int, ...], ...]]] = []
        self._call_counts: dict[str, int] = {}
        self._metas: dict[int, TensorMeta] = {}  # id(tensor) -> its latest version
        self._alive: list[torch.Tensor] = []  # keeps ids unique; meta tensors cost nothing
        self._next_storage = 0
        self.saved: list[TensorMeta] = []  # what autograd saved (training traces)

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # Otherwise torch wraps __torch_dispatch__ in dynamo.disable, whose first call
        # imports torch._dynamo: 1.1 s of the CLI's start-up for nothing (no compilation
        # ever happens inside the trace).
        return False

    # -- tensors -------------------------------------------------------------------------

    def register(self, tensor: torch.Tensor, kind: TensorKind, name: str = "", storage: int | None = None):
        if storage is None:
            storage = self._next_storage
            self._next_storage += 1
        meta = TensorMeta(len(self._alive), tuple(tensor.shape), tensor.dtype, storage, kind, name)
        self._metas[id(tensor)] = meta
        self._alive.append(tensor)
        return meta

    def lookup(self, tensor: torch.Tensor) -> TensorMeta:
        meta = self._metas.get(id(tensor))
        # A tensor made outside the trace (a plain tensor attribute of a module).
        return meta if meta is not None else self.register(tensor, "constant")

    def pack_saved(self, tensor: torch.Tensor) -> torch.Tensor:
        """saved_tensors_hooks' pack hook: note what autograd keeps for the backward pass."""
        meta = self._metas.get(id(tensor))
        if meta is None:  # not seen by the recorder: a view made above the dispatch mode?
            base = self._metas.get(id(tensor._base)) if tensor._base is not None else None
            meta = self.register(tensor, "constant", storage=base.storage if base is not None else None)
        self.saved.append(meta)
        return tensor

    # -- modules -------------------------------------------------------------------------

    def pre_hook(self, path: str):
        def hook(module, args):
            count = self._call_counts.get(path, 0)
            self._call_counts[path] = count + 1
            call = ModuleCall(path, type(module).__name__, count, len(self.calls), len(self.ops))
            self.calls.append(call)
            shapes = tuple(tuple(a.shape) for a in tensors_in(args))
            self._stack.append((call, shapes))

        return hook

    def post_hook(self, module, args, output):
        call, _ = self._stack.pop()
        self.call_outputs[call.index] = tuple(self.lookup(t) for t in tensors_in(output))

    def describe_failure(self, exc: Exception, input_shapes) -> str:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if not self._stack:
            return f"the model's forward failed on input {_shapes_text(input_shapes)}: {reason}"
        call, shapes = self._stack[-1]
        where = f"module '{call.path}' ({call.type})" if call.path else f"the model ({call.type})"
        return f"the forward pass failed in {where} on input {_shapes_text(shapes)}: {reason}"

    # -- operators -----------------------------------------------------------------------

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func.overloadpacket)
        if name in SAME_DTYPE_OPS and len({t.dtype for t in tensors_in(args)}) > 1:
            dtypes = ", ".join(sorted({str(t.dtype).removeprefix("torch.") for t in tensors_in(args)}))
            raise RuntimeError(f"{name} expects its tensors in one dtype, got {dtypes}")
        formula = FORMULAS.get(name)
        out = None
        if formula is not None and formula.shape is not None:
            out = _answer_from_formula(func, formula.shape, args, kwargs)
        if out is None:
            out = func(*args, **kwargs)
        self._record(func, name, args, kwargs, out)
        return out

    def _record(self, func, name: str, args, kwargs, out) -> None:
        tensors = tensors_in((args, kwargs))
        inputs = tuple(self.lookup(t) for t in tensors)
        schema_returns = func._schema.returns
        alias = schema_returns[0].alias_info if len(schema_returns) == 1 else None
        writes_input = alias is not None and alias.is_write
        is_view = alias is not None and not alias.is_write
        # In-place ops and views live in their first input's storage.
        storage = inputs[0].storage if alias is not None and inputs else None
        outputs = tuple(self.register(t, "activation", storage=storage) for t in tensors_in(out))
        to_meta = {id(t): meta for t, meta in zip(tensors, inputs, strict=True)}
        node_args, node_kwargs = map_structure(lambda a: to_meta.get(id(a), a), (args, kwargs))
        module = self._stack[-1][0] if self._stack else None
        self.ops.append(
            OpNode(len(self.ops), name, node_args, node_kwargs, inputs, outputs, module, writes_input, is_view)
        )


def _unpack_saved(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def _answer_from_formula(func, shape_formula, args, kwargs) -> Any:
    """Answer an op with empty meta tensors of the shapes its formula gives.

    PyTorch's meta kernels for batch norm, ReLU, add and others are Python decompositions
    costing 0.4-5 ms a call; this answers them in microseconds. Returns None (use the real
    meta kernel) whenever the answer could differ from it: mixed dtypes, non-float input,
    or an in-place op whose result would not fit its destination."""
    tensors = tensors_in((args, kwargs))
    first = tensors[0] if tensors else None
    if first is None or not first.is_floating_point() or any(t.dtype != first.dtype for t in tensors):
        return None
    shape_args, shape_kwargs = map_structure(
        lambda a: tuple(a.shape) if isinstance(a, torch.Tensor) else a, (args, kwargs)
    )
    try:
        shapes = shape_formula(*shape_args, **shape_kwargs)
    except RuntimeError:  # e.g. shapes that do not broadcast: let the meta kernel say so
        return None
    returns = func._schema.returns
    if returns[0].alias_info is not None and returns[0].alias_info.is_write:
        return args[0] if shapes[0] == tuple(args[0].shape) else None
    outputs = [_empty(first, shape) for shape in shapes]
    return outputs[0] if len(returns) == 1 else tuple(outputs)


def _empty(like: torch.Tensor, shape) -> torch.Tensor:
    """An empty meta tensor of `shape` (or `(shape, dtype)`), laid out like `like` if same-shaped."""
    dtype = like.dtype
    if len(shape) == 2 and isinstance(shape[1], torch.dtype):
        shape, dtype = shape
    if shape == tuple(like.shape) and dtype == like.dtype:
        return torch.empty_strided(like.shape, like.stride(), dtype=dtype, device="meta")
    return torch.empty(shape, dtype=dtype, device="meta")


def _shapes_text(shapes) -> str:
    return ", ".join("x".join(map(str, s)) for s in shapes) or "(no tensor)"
