"""A module call and the shapes it was given, in words, for an error that names where a
forward failed (`Recorder.describe_failure`, a training step's gradients)."""

from __future__ import annotations

from archprof.graph import ModuleCall
from archprof.structure import tensors_in
from archprof.units import shapes_text


def call_text(call: ModuleCall | None) -> str:
    """A module call in words: "module 'layer1.0' (BasicBlock)", "the model (ResNet)" for its own."""
    if call is None:
        return "the model"
    return f"module '{call.path}' ({call.type})" if call.path else f"the model ({call.type})"


def input_shapes_text(shapes) -> str:
    """The shapes a forward was given, for an error: "1x3x224x224", "(no tensor)"."""
    return shapes_text(shapes) or "(no tensor)"


def shapes_of(args) -> tuple[tuple[int, ...], ...]:
    """The shapes of the tensors among a module call's arguments, for an error."""
    return tuple(tuple(a.shape) for a in tensors_in(args))
