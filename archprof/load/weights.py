"""Checkpoints (`--weights`): a state dict read as data, checked against the model before any tensor is read."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from archprof.errors import ArchprofError
from archprof.load.common import lookup_path, printable_errors, resolve_path, unreadable
from archprof.load.files import archive_kind, state_dict_in, torch_load

# -- weights -------------------------------------------------------------------------------


@printable_errors
def load_state_dict(
    path: str | Path, trust_pickle: bool = False, base_dir: str | Path | None = None, device: str = "cpu"
) -> dict[str, torch.Tensor]:
    """A state dict from a checkpoint (torch.save, weights_only=True; .safetensors with the
    safetensors package): CPU tensors, memory-mapped where the format allows. A checkpoint
    that wraps it ({'state_dict': ...}, {'model': ...}) is unwrapped, and the prefix of a
    wrapped model's names dropped (DataParallel's 'module.', torch.compile's '_orig_mod.').
    `device="meta"`: names and shapes only, nothing read or allocated (a checkpoint may
    claim storage far beyond its size)."""
    spec = str(path)
    resolved = resolve_path(spec, Path(base_dir) if base_dir is not None else None)
    found = lookup_path(resolved, spec)
    if found == "missing":
        raise ArchprofError(f"weights file {spec} does not exist")
    if found != "file":
        raise ArchprofError(f"weights file {spec} is not a file")
    if resolved.suffix.lower() == ".py":
        raise ArchprofError(f"weights file {spec} is a Python file: give a checkpoint saved with torch.save")
    if resolved.suffix.lower() == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ArchprofError(
                f"reading {spec} needs safetensors, which is not installed: pip install safetensors"
            ) from None
        try:
            loaded: Any = load_file(str(resolved), device=device)
        except Exception as exc:
            raise unreadable(spec, exc) from None
    else:
        if zipfile.is_zipfile(resolved) and archive_kind(resolved) in ("torchscript", "exported"):
            raise ArchprofError(f"{spec} is a whole model (TorchScript or exported), not weights: analyse it directly")
        mmap = device != "meta" and zipfile.is_zipfile(resolved)  # torch.save's legacy format cannot be mapped
        loaded = torch_load(resolved, spec, trust_pickle, map_location=device, mmap=mmap)
    state = state_dict_in(loaded) if isinstance(loaded, Mapping) else None
    if state is None:
        raise ArchprofError(f"{spec} holds no state dict (name -> tensor) but a {type(loaded).__name__}")
    return state


def check_weights(module: torch.nn.Module, state: Mapping[str, torch.Tensor], name: str, path: Any) -> None:
    # A lazy layer's tensors have no shape before its first call: any shape fits them (loading
    # the checkpoint gives them its own, as torch's load_state_dict does).
    expected = {
        k: None if isinstance(v, torch.nn.parameter.UninitializedTensorMixin) else tuple(v.shape)
        for k, v in module.state_dict().items()
    }
    missing = [k for k in expected if k not in state]
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


def _some(keys: list[str]) -> str:
    more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
    return ", ".join(keys[:3]) + more
