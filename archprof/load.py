"""Resolve what the user names (a model spec, an input size, a dtype) into objects,
with one clear error for anything that does not resolve."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from archprof.errors import ArchprofError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class LoadedModel:
    module: torch.nn.Module
    name: str
    input_size: tuple[int, ...] | None  # the model's default per-sample input, if known


def load_model(spec: str | torch.nn.Module | Callable[[], torch.nn.Module]) -> LoadedModel:
    """A built-in name, a module (used as it is, never copied), or a factory (called on meta)."""
    if isinstance(spec, torch.nn.Module):
        return LoadedModel(spec, type(spec).__name__, None)
    if isinstance(spec, str):
        return _load_builtin(spec)
    if callable(spec):
        with torch.device("meta"):
            module = spec()
        if not isinstance(module, torch.nn.Module):
            raise ArchprofError(
                f"factory {getattr(spec, '__name__', spec)!r} returned {type(module).__name__}, not a torch.nn.Module"
            )
        return LoadedModel(module, getattr(spec, "__name__", type(module).__name__), None)
    raise ArchprofError(f"cannot analyse a {type(spec).__name__}: give a model name, a torch.nn.Module or a factory")


def _load_builtin(name: str) -> LoadedModel:
    from archprof.zoo import MODELS

    entry = MODELS.get(name)
    if entry is None:
        close = difflib.get_close_matches(name.lower(), MODELS, n=3, cutoff=0.5)
        hint = f"closest built-in names: {', '.join(close)}" if close else "`archprof zoo` lists the built-in models"
        raise ArchprofError(f"unknown model '{name}'; {hint}")
    # Built on the meta device: VGG-16's 528 MB of weights never exist.
    with torch.device("meta"):
        module = entry.build()
    return LoadedModel(module, name, entry.input_size)


_SIZE = re.compile(r"\d+(x\d+)*")


def parse_input_size(text: str) -> tuple[int, ...]:
    """'3x224x224' -> (3, 224, 224): the per-sample input, without the batch."""
    cleaned = text.strip().lower()
    if not _SIZE.fullmatch(cleaned):
        raise ArchprofError(f"malformed input size '{text}': expected positive sizes joined by 'x', e.g. 3x224x224")
    size = tuple(int(part) for part in cleaned.split("x"))
    if any(part == 0 for part in size):
        raise ArchprofError(f"malformed input size '{text}': every size must be at least 1")
    return size


def parse_dtype(text: str) -> torch.dtype:
    try:
        return DTYPES[text]
    except KeyError:
        raise ArchprofError(f"unknown dtype '{text}'; choose one of {', '.join(DTYPES)}") from None
