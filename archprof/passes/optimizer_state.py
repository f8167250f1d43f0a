"""The optimizer's memory: which trainable parameters it updates and holds state for, the bytes
of that state, and the temporaries of its step [docs/formulas.md, Memory]."""

from __future__ import annotations

import torch

from archprof.graph import Graph, ParameterInfo
from archprof.optimizers import OPTIMIZERS, optimizer_model

# Copies of the trainable parameters each optimizer keeps as state [docs/formulas.md, Memory]:
# plain SGD none, SGD with momentum its momentum buffer, Adam(W) two moment estimates, ...
# (`archprof.optimizers.OPTIMIZERS`, where each optimizer is described).
OPTIMIZER_STATE_COPIES = {name: model.copies for name, model in OPTIMIZERS.items()}


def optimizer_step_temporaries(optimizer: str, parameter_bytes: list[int]) -> int:
    """The most the optimizer's step allocates beyond its state, its parameters (in the
    optimizer's order: the model's) each of `parameter_bytes`: on the CPU, PyTorch's default
    updates one parameter at a time, and each optimizer's `UpdatePhase`s say what one
    parameter's update holds at once (Adam: its denominator sqrt(v) / c, two new tensors of
    the parameter's size, the first freed once the second exists, while the previous
    parameter's denominator is still held, and the Python number c a tensor too, 8 B, while
    the division runs). Plain SGD updates in place. (CUDA's default, one update over all
    parameters at once, holds temporaries the size of all of them instead.)"""
    return optimizer_model(optimizer).step_temporaries(parameter_bytes)


def optimizer_state_bytes(optimizer: str, parameter_bytes: list[int]) -> int:
    """The state the optimizer keeps for the parameters it holds state for, each of
    `parameter_bytes`: `OptimizerModel.copies` copies of each, and its 0-dim scalars per parameter
    (Adam's step counter, NAdam's and its mu_product: `optimizer_scalar_bytes` each)."""
    model = optimizer_model(optimizer)
    return model.copies * sum(parameter_bytes) + len(model.scalars) * optimizer_scalar_bytes() * len(parameter_bytes)


def optimizer_scalar_bytes() -> int:
    """One 0-dim scalar of an optimizer's state (Adam's `state["step"]`): on the CPU (neither
    fused nor capturable, PyTorch's default there) a tensor of torch.optim's scalar dtype
    (`_get_scalar_dtype()`), float64 where the default dtype is float64, else float32,
    whatever the parameters' dtype."""
    return 8 if torch.get_default_dtype() == torch.float64 else 4


def optimizer_state_copies(optimizer: str) -> int:
    """Copies of the parameters the optimizer's state holds; an unknown name is an ArchprofError."""
    return optimizer_model(optimizer).copies


def parameters_given_gradients(graph: Graph) -> list[ParameterInfo]:
    """The trainable parameters that get a gradient, in the model's order: in a training
    step's trace, those the backward pass reached (`EngineNotes.given_gradients`); an
    optimizer holds state for these and updates only these. Otherwise every trainable one."""
    trainable = trainable_parameters(graph)
    given = names_given_gradients(graph)
    if given is None:
        return trainable
    return [p for p in trainable if p.name in given]


def names_given_gradients(graph: Graph) -> set[str] | None:
    """The names of the trainable parameters that get a gradient where only some may (a training
    step's trace: `EngineNotes.given_gradients`); None where every trainable one does. The rule
    of `parameters_given_gradients`, for a caller that walks the parameters itself."""
    return graph.engine.given_gradients if graph.training else None


def trainable_parameters(graph: Graph) -> list[ParameterInfo]:
    """Every trainable parameter, in the model's order, reached by the backward pass or not: an
    optimizer given them all that makes its state when built (Adagrad) holds state for each."""
    return [p for p in graph.parameters if p.trainable and not p.is_buffer]
