"""The report's whole-model totals, computed from its rows (`Report.totals`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Totals:
    param_count: int
    trainable_param_count: int
    non_trainable_param_count: int
    param_bytes: int
    buffer_bytes: int
    macs: int
    flops: int
    elementwise_flops: int
    activation_bytes: int
    input_shapes: tuple[tuple[int, ...], ...]
    dtype: str
    not_counted: dict[str, int]  # operator -> how often it ran without a formula
    # Memory. In a training report peak_* are the forward pass's, with what autograd saved
    # held until the end; training_peak_* are the whole step's, backward included.
    peak_activation_bytes: int  # largest live activation bytes, over all rows
    peak_memory_bytes: int  # param_bytes + buffer_bytes + peak_activation_bytes
    peak_layer: str  # the layer of the (first) row where that peak happens
    training: bool
    gradient_bytes: int  # one gradient per trainable parameter the backward pass reaches, in its dtype
    # Training reports only (None otherwise):
    optimizer: str | None  # a name in archprof.optimizers.OPTIMIZERS: sgd, momentum, adam, ...
    optimizer_state_bytes: int | None  # copies of the trainable parameters the optimizer keeps, and its 0-dim scalars
    saved_activation_bytes: int | None  # what autograd saves for backward, each storage once
    # params + buffers + gradients + optimizer state + saved, all at once: a sum, no timeline
    training_memory_bytes: int | None
    # The training step's peak (`passes.training_memory.training_timeline`): params + buffers +
    # optimizer state + the activations and gradients held at the step's busiest op, the
    # layer it belongs to and its phase (forward, backward, recompute); or, where higher,
    # at the optimizer's update ("optimizer step", layer "": its temporaries on top of
    # the gradients). A rolled-up report keeps its own (its layer named by the ancestor at the depth).
    training_peak_bytes: int | None
    training_peak_layer: str | None
    training_peak_phase: str | None
    # Training reports only (None otherwise): one training step's compute, the sums of the
    # TRAINING_COLUMNS; training_flops = flops + backward_flops.
    backward_input_macs: int | None = None
    backward_weight_macs: int | None = None
    recomputed_macs: int | None = None
    backward_flops: int | None = None
    backward_elementwise_flops: int | None = None
    training_flops: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            **{name: getattr(self, name) for name in self.__dataclass_fields__},
            "input_shapes": [list(s) for s in self.input_shapes],
        }
