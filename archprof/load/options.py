"""Keyword arguments for a model factory (`--arg key=value`), and `ModelOptions`: every
option a model command takes, read once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from archprof.errors import ArchprofError
from archprof.load.common import printable_errors
from archprof.load.inputs import InputSpec
from archprof.load.model import LoadedModel
from archprof.load.specs import load_model

# -- factory arguments ---------------------------------------------------------------------


def parse_arg_value(text: str) -> Any:
    """'10' -> 10, '0.5' -> 0.5, 'true' -> True, 'none' -> None, anything else a string
    (quotes keep it one: "'10'" -> '10')."""
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    if len(stripped) >= 2 and stripped[0] == stripped[-1] and stripped[0] in "'\"":
        return stripped[1:-1]
    if not stripped.isascii():  # int() and float() read "٣" as 3: a number is written in digits 0-9
        return text
    for kind in (int, float):
        try:
            return kind(stripped)
        except ValueError:
            pass
    return text


@printable_errors
def parse_args(items: Sequence[str] | None) -> dict[str, Any]:
    """['num_classes=10', 'width=0.5'] -> {'num_classes': 10, 'width': 0.5}."""
    args: dict[str, Any] = {}
    for item in items or ():
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals or not key.isidentifier():
            raise ArchprofError(f"malformed --arg '{item}': expected key=value, e.g. num_classes=10")
        if key in args:
            raise ArchprofError(f"--arg {key} is given twice")
        args[key] = parse_arg_value(value)
    return args


# -- the options every model command takes -------------------------------------------------


@dataclass(frozen=True)
class ModelOptions:
    """What every command that analyses a model takes besides the model itself: the CLI's
    --input (repeatable), --batch, --dtype, --arg, --weights, --trust-pickle and --fold-bn,
    read once. None keeps the model's own: its usual inputs, batch 1 (or an exported
    program's), its dtype. `keywords()` passes them to any of the API's functions
    (`archprof.analyze`, `profile`, `compare`, `archprof.fit.fit_batch`, `archprof.diff.diff`);
    `fold_bn` only when set (`analyze(fold_bn=True)`: the inference view, BatchNorms folded)."""

    inputs: tuple[InputSpec, ...] | None = None
    batch: int | None = None
    dtype: torch.dtype | None = None
    args: Mapping[str, Any] = field(default_factory=dict)
    weights: Path | None = None
    trust_pickle: bool = False
    fold_bn: bool = False

    def keywords(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "batch": self.batch,
            "dtype": self.dtype,
            "args": dict(self.args),
            "weights": self.weights,
            "trust_pickle": self.trust_pickle,
            **({"fold_bn": True} if self.fold_bn else {}),
        }

    def load(self, spec: Any, base_dir: Path | None = None, confined_to: Sequence[Path] | None = None) -> LoadedModel:
        """`spec` loaded with these factory arguments and weights (a budget file's models
        from `base_dir`, their Python code held to the folders `confined_to`: `load_model`)."""
        return load_model(
            spec,
            args=self.args,
            weights=self.weights,
            trust_pickle=self.trust_pickle,
            base_dir=base_dir,
            confined_to=confined_to,
        )
