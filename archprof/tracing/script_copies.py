"""A ScriptModule saved and loaded again (`saved_and_loaded`), so that the code files its
call stacks name are at hand; the archive written without the weights' data where the copy
needs none."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch

from archprof.load.torchscript import code_files


def saved_and_loaded(
    model: torch.jit.ScriptModule, device: torch.device, share: bool = False
) -> tuple[torch.jit.ScriptModule, dict]:
    """A copy of `model` loaded onto `device` from the archive `torch.jit.save` writes of it,
    and that archive's code files: the copy's call stacks name their lines. `share`: the
    copy's parameters and buffers are then the model's own tensors, its weights held once
    (its forward writes the model's buffers: a batch norm's statistics in training). Where
    the copy needs no weights' values (on meta, or `share`), the archive holds none
    (`_weights_left_out`): writing and reading back real ones took four times their size."""
    buffer = io.BytesIO()
    with _weights_left_out(model) if share or device.type == "meta" else nullcontext():
        torch.jit.save(model, buffer)
    buffer.seek(0)
    code = code_files(buffer)
    buffer.seek(0)
    copied = torch.jit.load(buffer, map_location=device)
    if share:
        copies = dict(copied.named_modules())
        for path, _, name, tensor in _own_tensors(model):
            setattr(copies[path], name, tensor)
    return copied, code


def _own_tensors(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module, str, torch.Tensor]]:
    """Each parameter and buffer of each module of `model`: (the module's path, the module,
    its name there, the tensor). Attributes of other kinds are not: a quantized layer's
    packed weights, a plain tensor attribute."""
    return [
        (path, module, name, tensor)
        for path, module in model.named_modules()
        for name, tensor in (*module.named_parameters(recurse=False), *module.named_buffers(recurse=False))
    ]


@contextmanager
def _weights_left_out(model: torch.jit.ScriptModule) -> Iterator[None]:
    """While active, the model's parameters and buffers are meta tensors like them (one for a
    tensor two modules hold), which hold no data; then its own again. Left as they are where
    two of them are views of one storage, which stand-ins would part (or one has no meta
    stand-in)."""
    held = _own_tensors(model)
    stand_ins = _meta_stand_ins([tensor for *_, tensor in held])
    try:
        for _, module, name, tensor in held:
            if id(tensor) in stand_ins:
                setattr(module, name, stand_ins[id(tensor)])
        yield
    finally:
        for _, module, name, tensor in held:
            if id(tensor) in stand_ins:
                setattr(module, name, tensor)


def _meta_stand_ins(tensors: list[torch.Tensor]) -> dict[int, torch.Tensor]:
    """A meta tensor like each real one of `tensors` (shape, dtype, strides, requires_grad),
    by its id; none where two of them share a storage, or one cannot have a stand-in."""
    real = {id(t): t for t in tensors if not t.is_meta and t.numel()}
    if len({t.untyped_storage().data_ptr() for t in real.values()}) < len(real):
        return {}
    try:
        return {key: torch.empty_like(t, device="meta").requires_grad_(t.requires_grad) for key, t in real.items()}
    except (RuntimeError, NotImplementedError):  # a dtype the meta device lacks (a quantized one)
        return {}
