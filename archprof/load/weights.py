"""Checkpoints (`--weights`): a state dict read as data, checked against the model before any tensor is read."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.nn.modules.lazy import LazyModuleMixin

from archprof.errors import ArchprofError
from archprof.load.common import described, lookup_path, printable_errors, resolve_path, shorten, unreadable
from archprof.load.files import archive_kind, is_extra_state, state_dict_in, torch_load
from archprof.load.zip_archive import is_torch_zip
from archprof.meta import is_uninitialised

# -- weights -------------------------------------------------------------------------------


@printable_errors
def load_state_dict(
    path: str | Path,
    trust_pickle: bool = False,
    base_dir: str | Path | None = None,
    device: str = "cpu",
    module: torch.nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """A state dict from a checkpoint (torch.save, weights_only=True; .safetensors with the
    safetensors package): CPU tensors, memory-mapped where the format allows. A checkpoint
    that wraps it ({'state_dict': ...}, {'model': ...}) is unwrapped, and the prefix of a
    wrapped model's names dropped (DataParallel's 'module.', torch.compile's '_orig_mod.'),
    unless they are the names of `module`'s own state dict.
    `device="meta"`: names and shapes only, nothing read or allocated (a checkpoint may
    claim storage far beyond its size)."""
    if not isinstance(path, (str, os.PathLike)):  # str() of a state dict in memory would name it as a file
        raise ArchprofError(f"weights must be a checkpoint's file name (a str or a Path), got {described(path)}")
    spec = str(path)
    if not spec:  # Path("") is ".", a folder: "weights file . is not a file"
        raise ArchprofError("the weights file's name is empty: give a checkpoint's file name")
    base = Path(base_dir) if base_dir is not None else None
    resolved = resolve_path(spec, base)
    found = lookup_path(resolved, spec)
    if found == "missing":
        raise ArchprofError(f"weights file {spec} does not exist")
    if found != "file":
        raise ArchprofError(f"weights file {spec} is not a file")
    if resolved.suffix.lower() == ".py":
        raise ArchprofError(f"weights file {spec} is a Python file: give a checkpoint saved with torch.save")
    if resolved.suffix.lower() == ".safetensors":
        loaded: Any = _safetensors(resolved, spec, device)
    else:
        if archive_kind(resolved, spec) in ("torchscript", "exported"):  # a corrupt zip refused here, in one line
            raise ArchprofError(f"{spec} is a whole model (TorchScript or exported), not weights: analyse it directly")
        mmap = device != "meta" and is_torch_zip(resolved)  # torch.save's legacy format cannot be mapped
        loaded = torch_load(resolved, spec, trust_pickle, map_location=device, mmap=mmap, base=base)
    if isinstance(loaded, torch.nn.Module):  # torch.save(model): the trusted unpickle gave the model itself
        raise ArchprofError(
            f"{spec} is a whole pickled module (a {type(loaded).__name__}), not weights: analyse it directly"
            f" (archprof summary {spec} --trust-pickle; Python: analyze({spec!r}, trust_pickle=True))"
        )
    names = module.state_dict().keys() if module is not None else None
    state = state_dict_in(loaded, names) if isinstance(loaded, Mapping) else None
    if state is None:
        raise ArchprofError(f"{spec} holds no state dict (name -> tensor) but {_held(loaded)}")
    return state


def _held(loaded: Any) -> str:
    """What a checkpoint holds instead of a state dict: a dict by its keys (a state dict kept
    under a key archprof does not look in, timm's 'state_dict_ema')."""
    if not isinstance(loaded, Mapping):
        return f"a {type(loaded).__name__}"
    if not loaded:
        return "an empty dict"
    keys = [shorten(str(key), 40) for key in list(loaded)[:5]]
    more = f" and {len(loaded) - 5} more" if len(loaded) > 5 else ""
    kind = "dict" if isinstance(loaded, dict) else type(loaded).__name__  # an OrderedDict too
    return f"a {kind} of keys {', '.join(keys)}{more}"


# safetensors' dtype names (its format's header)
_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _safetensors(path: Path, spec: str, device: str) -> dict[str, torch.Tensor]:
    """A .safetensors file's tensors; on meta, from its header alone (names, shapes, dtypes):
    safetensors loads onto real devices only."""
    try:
        from safetensors import safe_open
        from safetensors.torch import load_file
    except ImportError:
        raise ArchprofError(
            f"reading {spec} needs safetensors, which is not installed: pip install safetensors"
        ) from None
    try:
        if device != "meta":
            return load_file(str(path), device=device)
        with safe_open(str(path), framework="pt") as handle:
            slices = {name: handle.get_slice(name) for name in handle.keys()}  # noqa: SIM118 (not a dict)
            kinds = {name: (part.get_shape(), part.get_dtype()) for name, part in slices.items()}
    except Exception as exc:
        raise unreadable(spec, exc) from None
    unknown = sorted({kind for _, kind in kinds.values() if kind not in _SAFETENSORS_DTYPES})
    if unknown:
        raise ArchprofError(f"{spec} holds tensors of a dtype archprof does not read: {', '.join(unknown)}")
    try:
        return {
            name: torch.empty(shape, dtype=_SAFETENSORS_DTYPES[kind], device="meta")
            for name, (shape, kind) in kinds.items()
        }
    except (RuntimeError, TypeError, OverflowError) as exc:  # a size past int64 beside a 0: no bytes claimed
        raise unreadable(spec, exc) from None


def check_weights(module: torch.nn.Module, state: Mapping[str, Any], name: str, path: Any) -> None:
    """Refuse a checkpoint that torch's strict load_state_dict would refuse for `module`: a
    name missing (but one torch fills in itself) or unexpected, a tensor of another shape."""
    expected = {k: _shape_to_fit(k, v) for k, v in module.state_dict().items()}
    missing = [k for k in expected if k not in state and not _filled_in_by_torch(module, k, state)]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k, shape in expected.items() if k in state and shape is not None and tuple(state[k].shape) != shape]
    problems = []
    if missing:
        problems.append(f"missing {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected {_some(unexpected)}")
    for key in wrong[:2]:
        got, want = "x".join(map(str, state[key].shape)), "x".join(map(str, expected[key]))
        problems.append(f"{key} is {got} in the file, {want} in the model")
    if problems:
        raise ArchprofError(f"weights {path} do not fit model '{name}': {'; '.join(problems)}")


def _shape_to_fit(key: str, value: Any) -> tuple[int, ...] | None:
    """The shape the checkpoint's tensor must have; None where any will do: a lazy layer's
    tensors before their first call (the checkpoint gives them its own, as torch's
    load_state_dict does: `take_lazy_shapes`) and a module's extra state (handed to its
    set_extra_state as it is)."""
    if is_extra_state(key) or not isinstance(value, torch.Tensor) or is_uninitialised(value):
        return None
    return tuple(value.shape)


_BATCHES_TRACKED = "num_batches_tracked"


def _filled_in_by_torch(module: torch.nn.Module, key: str, state: Mapping[str, Any]) -> bool:
    """Whether torch's load_state_dict fills in this missing key itself: a norm's
    `num_batches_tracked` (added in PyTorch 0.4.1, so missing from older checkpoints and
    converted ones) where the norm tracks running statistics and the checkpoint's metadata
    gives it no version, or one before 2 (`_NormBase._load_from_state_dict`)."""
    path, _, leaf = key.rpartition(".")
    if leaf != _BATCHES_TRACKED:
        return False
    try:
        norm = module.get_submodule(path)
    except AttributeError:
        return False
    if not (isinstance(norm, torch.nn.modules.batchnorm._NormBase) and norm.track_running_stats):
        return False
    metadata = getattr(state, "_metadata", None) or {}  # kept by `state_dict_in`, module path -> entry
    version = metadata.get(path, {}).get("version")
    return version is None or (isinstance(version, int) and version < 2)


@torch.no_grad()
def take_lazy_shapes(module: torch.nn.Module, state: Mapping[str, Any]) -> None:
    """Lazy layers (nn.LazyLinear, ...) given the checkpoint's shapes, as torch's
    load_state_dict gives them (`LazyModuleMixin._lazy_load_hook`), on the device each was
    made on (`materialize` refuses another; meta where archprof built the model: nothing
    allocated).
    The model analysed is then the one the weights make: without them, the first forward
    would make its tensors to fit the input, counting parameters the checkpoint does not
    hold, and an input the weights do not fit fails as in torch."""
    for key, tensor in module.state_dict(keep_vars=True).items():
        given = state.get(key)
        if is_uninitialised(tensor) and isinstance(given, torch.Tensor) and not is_uninitialised(given):
            tensor.materialize(given.shape)
    _labelled_as_they_become(module)


def _labelled_as_they_become(module: torch.nn.Module) -> None:
    """Each lazy layer its checkpoint gave every shape labelled as the class its first call
    makes it (`cls_to_become`: Linear for LazyLinear), as a lazy layer the input gives its
    shapes is shown: until that call (the trace's) it is still of its lazy class."""
    for layer in module.modules():
        if (
            isinstance(layer, LazyModuleMixin)
            and layer.cls_to_become is not None
            and not layer.has_uninitialized_params()
        ):
            layer._archprof_type = layer.cls_to_become.__name__  # read by the trace's `type_name`


def _some(keys: list[str]) -> str:
    more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
    return ", ".join(keys[:3]) + more
