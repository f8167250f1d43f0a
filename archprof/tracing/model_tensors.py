"""The model's parameters and buffers as a trace runs on them: empty meta stand-ins
(`meta_stand_ins`) or the model's own tensors (`own_tensors`), each registered with the
recorder and listed for the report (`ParameterInfo`), and what a trace reads of them after
its forward (the gradients its backward pass wrote, a real buffer's smallest value).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch

from archprof.errors import ArchprofError
from archprof.graph import ParameterInfo, TensorMeta
from archprof.meta import is_uninitialised
from archprof.tracing.meta_outputs import empty_meta
from archprof.tracing.recorder import Recorder

# The classes of nearly every parameter and buffer, neither a lazy layer's uninitialised one:
# asked first, as cheaply as a set's lookup (`is_uninitialised` is a call and an isinstance).
_PLAIN_TENSORS = frozenset({torch.Tensor, torch.nn.Parameter})


def stands_for_itself(tensors: list[torch.Tensor], dtype: torch.dtype | None) -> bool:
    """Whether the model's own tensors can be traced as they are: all on meta already (a
    model archprof built) and none to cast. Stand-ins would only cost time (ResNet-50:
    creating and swapping 320 tensors, a fifth of the trace). Not one made in inference
    mode (a model built inside `torch.inference_mode()`), which autograd may not save and
    nothing may write in place outside it."""
    return all(
        tensor.is_meta
        # Before `is_inference`, which an uninitialised one refuses: `meta_stand_ins` then says so.
        and (type(tensor) in _PLAIN_TENSORS or not is_uninitialised(tensor))
        and not tensor.is_inference()
        and (dtype is None or not tensor.is_floating_point() or tensor.dtype == dtype)
        for tensor in tensors
    )


def own_tensors(named: list[tuple[str, torch.Tensor, bool]], recorder: Recorder):
    """The model's own parameters and buffers (`named`: name, tensor, is a buffer),
    registered by name (no stand-ins)."""
    parameters: list[ParameterInfo] = []
    seen: set[int] = set()  # a tensor that is a parameter and a buffer too, under another name
    register = recorder.register_held  # looked up once: a method a tensor, hundreds a model
    for name, tensor, is_buffer in named:
        key = id(tensor)
        if key not in seen:
            seen.add(key)
            meta = register(tensor, "buffer" if is_buffer else "parameter", name)
            parameters.append(_parameter_info(meta, tensor, is_buffer))
    return None, parameters


def buffer_minima(named: list[tuple[str, torch.Tensor, bool]], recorder: Recorder) -> dict[int, float]:
    """The smallest value of each floating buffer the model holds for real, by the id of its
    TensorMeta (`Graph.buffer_minima`)."""
    minima: dict[int, float] = {}
    with torch.no_grad():
        for name, tensor, is_buffer in named:
            meta = recorder.named(name) if is_buffer else None
            if meta is not None and tensor.is_floating_point() and tensor.numel() and tensor.device.type != "meta":
                minima[meta.id] = float(tensor.min())
    return minima


def given_gradients(named: list[tuple[str, torch.Tensor, bool]], stand_ins: dict[int, torch.Tensor] | None) -> set[str]:
    """The names of the parameters whose `.grad` the backward pass wrote (`EngineNotes.given_gradients`),
    each read from the tensor the trace ran on."""
    return {name for name, t, is_buffer in named if not is_buffer and traced(t, stand_ins).grad is not None}


def traced(tensor: torch.Tensor, stand_ins: dict[int, torch.Tensor] | None) -> torch.Tensor:
    """The tensor the trace ran on for one of the model's: its stand-in, or itself."""
    return stand_ins.get(id(tensor), tensor) if stand_ins is not None else tensor


def _parameter_info(meta: TensorMeta, tensor: torch.Tensor, is_buffer: bool) -> ParameterInfo:
    """What the report lists of a parameter or buffer, from its registered stand-in (`meta`:
    its name, shape and traced dtype) and the model's own tensor (whether it trains)."""
    return ParameterInfo(
        meta.name,
        meta.name.rpartition(".")[0],
        meta.shape,
        meta.dtype,
        not is_buffer and tensor.requires_grad,
        is_buffer,
    )


def packed_parameters(modules: list[tuple[str, torch.nn.Module]]) -> list[ParameterInfo]:
    """The weights and biases packed into TorchScript objects, as torch.ao's quantized
    linear and convolution layers keep theirs (`unpack()` gives them back): parameters that
    no table lists, counted as their module's, in their quantized dtype, not trained."""
    found = []
    for path, module in modules:
        for attribute, value in _attributes(module):
            if not isinstance(value, torch.ScriptObject) or not hasattr(value, "unpack"):
                continue
            owner = _packed_for(path, module)
            unpacked = value.unpack()  # (weight, bias); a quantized embedding's weight alone
            for role, tensor in zip(
                ("weight", "bias"), (unpacked,) if isinstance(unpacked, torch.Tensor) else unpacked, strict=False
            ):
                if isinstance(tensor, torch.Tensor):
                    name = ".".join(part for part in (path, attribute, role) if part)
                    found.append(ParameterInfo(name, owner, tuple(tensor.shape), tensor.dtype, False, False))
    return found


def _packed_for(path: str, module: torch.nn.Module) -> str:
    """The module whose call reads packed weights held at `path`: a quantized linear layer's
    (or embedding's), where they sit in a holder of torch.ao's (`LinearPackedParams`), which
    its layer reads and never calls; else the module holding them (a quantized convolution)."""
    if isinstance(module, torch.jit.ScriptModule):  # its class as TorchScript names it: __torch__.torch.ao....
        where, _, name = module._c._type().qualified_name().removeprefix("__torch__.").rpartition(".")
    else:
        where, name = type(module).__module__, type(module).__name__
    holder = name.endswith("PackedParams") and where.startswith("torch.ao.")
    return path.rpartition(".")[0] if holder and path else path


def _attributes(module: torch.nn.Module) -> Iterable[tuple[str, Any]]:
    """A module's own attributes: a ScriptModule (a TorchScript file's) keeps them in C++,
    out of its `vars()`."""
    if isinstance(module, torch.jit.ScriptModule):
        return torch._C._jit_debug_module_iterators(module._c)["named_attributes"]
    return vars(module).items()


def first_floating_dtype(tensors: list[torch.Tensor]) -> torch.dtype:
    for tensor in tensors:
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.get_default_dtype()


def meta_stand_ins(
    named: list[tuple[str, torch.Tensor, bool]],
    dtype: torch.dtype | None,
    recorder: Recorder,
    cast: dict[str, torch.dtype] | None = None,
):
    """Empty meta tensors, one per parameter and buffer of `named` (tied ones once), keyed by
    the id of the tensor each stands in for; those of trainable parameters require grad, in
    inference too: a composite picks its kernels by it under no_grad as well (matmul of a
    non-contiguous batch by a weight that requires grad copies the batch and takes one mm,
    where it would otherwise expand the weight for a bmm). With a `dtype`, each floating or
    complex one in it, as `model.to(dtype)` casts them, but those `cast` names (a module's
    own cast: `dtypes_after_cast`)."""
    cast = cast or {}
    stand_ins: dict[int, torch.Tensor] = {}
    parameters: list[ParameterInfo] = []
    for name, tensor, is_buffer in named:
        if is_uninitialised(tensor):
            raise ArchprofError(f"'{name}' is a lazy parameter not yet initialised: run one forward pass first")
        target = cast.get(name)
        if target is None:
            cast_too = dtype is not None and (tensor.is_floating_point() or tensor.is_complex())
            target = dtype if cast_too else tensor.dtype
        stand_in = empty_meta(tensor.shape, target)
        if not is_buffer and tensor.requires_grad and (stand_in.is_floating_point() or stand_in.is_complex()):
            stand_in.requires_grad_(True)
        stand_ins[id(tensor)] = stand_in
        meta = recorder.register_held(stand_in, "buffer" if is_buffer else "parameter", name)
        if target == tensor.dtype:  # a cast would leave a plain attribute viewing it in the old memory
            recorder.state_memory.add(tensor, meta.storage)  # which the stand-in's stands for
        parameters.append(_parameter_info(meta, tensor, is_buffer))
    return stand_ins, parameters


def dtypes_after_cast(
    model: torch.nn.Module, modules: list[tuple[str, torch.nn.Module]], dtype: torch.dtype
) -> dict[str, torch.dtype]:
    """The dtype `model.to(dtype)` leaves each parameter and buffer in, by name, where one of
    its `modules` casts its own (an `_apply` of its own: timm's rotary embeddings keep their
    tables in float32 after a cast to half); found on a copy of the whole model without data,
    so that a tensor tied across modules is cast as `model.to` casts it. Nearly always none
    (no module casts its own, or the model cannot be copied: an attribute holding a lock):
    every tensor is then cast as `meta_stand_ins` casts it."""
    if all(type(module)._apply is torch.nn.Module._apply for _, module in modules):
        return {}
    try:
        cast = meta_copy(model).to(dtype)
    except Exception:  # the user's attributes, which deepcopy may refuse (a lock, an open file)
        return {}
    named = (*cast.named_parameters(remove_duplicate=False), *cast.named_buffers(remove_duplicate=False))
    return {name: tensor.dtype for name, tensor in named}


def meta_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of `model` with every parameter and buffer an empty meta tensor of its
    kind, shape and dtype (a lazy one stays uninitialised, on meta): no data is copied."""
    memo: dict[int, Any] = {}
    for tensor in (*model.parameters(), *model.buffers()):
        if is_uninitialised(tensor):
            kind = type(tensor)
            memo[id(tensor)] = kind(requires_grad=tensor.requires_grad, device="meta", dtype=tensor.dtype)
        elif isinstance(tensor, torch.nn.Parameter):
            memo[id(tensor)] = type(tensor)(torch.empty_like(tensor, device="meta"), tensor.requires_grad)
        else:
            memo[id(tensor)] = torch.empty_like(tensor, device="meta")
    return copy.deepcopy(model, memo)
