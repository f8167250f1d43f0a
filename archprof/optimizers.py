"""The optimizers a training step can be analysed with, one table (`OPTIMIZERS`): for each
name, the torch.optim optimizer it means and how that optimizer's step uses memory on the
CPU, as PyTorch runs it there by default (neither foreach nor fused: `_single_tensor_*` in
torch/optim, one parameter at a time) [docs/formulas.md, Memory].

Per parameter it updates, an optimizer keeps `state` tensors of the parameter's size and
dtype and `scalars`, 0-dim tensors of torch.optim's scalar dtype (float32, float64 where
the default dtype is float64); made at its first step for the parameters that have a
gradient, or, `eager`, when it is built, for every parameter it is given (Adagrad).

Its update allocates temporaries, one parameter at a time. Each `UpdatePhase` is a moment
of one parameter's update: how many tensors of the previous parameter's size are still
held (a local variable rebound only once this parameter's is made: Adam's `denom`), how
many of this parameter's size are held, and what else (a Python number an op takes where a
tensor goes, `exp_avg_sq.mul_(beta2)`, is an 8-byte tensor while the op runs). The update's
peak is the largest phase over the parameters (`step_temporaries`).

Read from PyTorch 2.13's source and checked against the CPU allocator's events on real
steps (tests/test_training_peak.py). Adding an optimizer is adding an entry here. This
module imports no torch: the CLI names the optimizers without loading it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from archprof.errors import ArchprofError

# A Python number an op takes where a tensor goes: a float64 or int64 0-dim tensor (graph.WRAPPED_NUMBER_BYTES).
WRAPPED = 8


@dataclass(frozen=True, slots=True)
class UpdatePhase:
    """A moment of one parameter's update: `previous` temporaries of the previous
    parameter's size still held, `current` of this parameter's size, and `extra` bytes."""

    previous: int
    current: int
    extra: int = 0

    def bytes(self, previous_bytes: int, current_bytes: int) -> int:
        return self.previous * previous_bytes + self.current * current_bytes + self.extra


@dataclass(frozen=True, slots=True)
class OptimizerModel:
    """One optimizer as archprof models it (see the module's docstring)."""

    torch_class: str  # in torch.optim
    options: dict[str, Any] = field(default_factory=dict)  # beyond lr, which changes no memory
    state: tuple[str, ...] = ()  # per parameter, tensors of its size and dtype (their keys in optimizer.state)
    scalars: tuple[str, ...] = ()  # per parameter, 0-dim tensors of torch.optim's scalar dtype
    update: tuple[UpdatePhase, ...] = ()  # its update's moments, per parameter
    eager: bool = False  # state made when built, for every parameter given (else at the first step, those with a grad)
    steady_from: int = 2  # the first step whose update is the one modelled (the first makes the state)

    @property
    def copies(self) -> int:
        """Copies of the parameters it updates that its state holds."""
        return len(self.state)

    @property
    def call(self) -> str:
        """How torch.optim builds it: "torch.optim.SGD(params, momentum=0.9)"."""
        options = "".join(f", {key}={value!r}" for key, value in self.options.items())
        return f"torch.optim.{self.torch_class}(params{options})"

    def build(self, params: Iterable[Any], lr: float = 1e-3) -> Any:
        """The real torch.optim optimizer over `params`, updating one parameter at a time, as
        modelled (`update`): on a GPU torch.optim's default is its `foreach` update, which
        works on all the parameters at once, up to a copy of them more at its peak."""
        import torch

        return getattr(torch.optim, self.torch_class)(params, lr=lr, foreach=False, **self.options)

    def step_temporaries(self, parameter_bytes: list[int]) -> int:
        """The most its update allocates beyond the state, the parameters it updates (in its
        order: the model's, those with a gradient) each of `parameter_bytes`."""
        most = previous = 0
        for nbytes in parameter_bytes:
            most = max([most, *(phase.bytes(previous, nbytes) for phase in self.update)])
            previous = nbytes
        return most


P = UpdatePhase
_ADAM = dict(
    state=("exp_avg", "exp_avg_sq"),
    scalars=("step",),
    # step_t += 1 and exp_avg_sq.mul_(beta2), the last denominator held; then
    # denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps): the square root and the
    # quotient, the number a tensor, the last denominator still held until `denom` is rebound.
    update=(P(1, 0, WRAPPED), P(1, 2, WRAPPED), P(0, 1, WRAPPED)),
)
_AMSGRAD = dict(_ADAM, state=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"))  # torch.maximum(..., out=) in place
_RMSPROP = (
    # step += 1 and square_avg.mul_(alpha), the last `avg` held; avg = square_avg.sqrt() (centered:
    # square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()) while the last is held until rebound;
    # avg.add_(eps) (and buf.mul_(momentum)).
    P(1, 0, WRAPPED),
    P(1, 1),
    P(0, 1, WRAPPED),
)

OPTIMIZERS: dict[str, OptimizerModel] = {
    "sgd": OptimizerModel("SGD"),  # param.add_(grad, alpha=-lr): in place
    "momentum": OptimizerModel(
        "SGD",
        {"momentum": 0.9},
        state=("momentum_buffer",),
        update=(P(0, 0, WRAPPED),),  # buf.mul_(momentum).add_(grad, ...): in place
    ),
    "nesterov": OptimizerModel(
        "SGD",
        {"momentum": 0.9, "nesterov": True},
        state=("momentum_buffer",),
        update=(P(0, 0, WRAPPED), P(0, 1)),  # buf.mul_(momentum); grad = grad.add(buf, alpha=momentum)
    ),
    "adam": OptimizerModel("Adam", **_ADAM),
    "adamw": OptimizerModel("AdamW", **_ADAM),  # param.mul_(1 - lr * weight_decay): in place
    "adam-amsgrad": OptimizerModel("Adam", {"amsgrad": True}, **_AMSGRAD),
    "adamw-amsgrad": OptimizerModel("AdamW", {"amsgrad": True}, **_AMSGRAD),
    "nadam": OptimizerModel(
        "NAdam",
        state=("exp_avg", "exp_avg_sq"),
        scalars=("step", "mu_product"),
        # step_t += 1, mu_product *= mu, exp_avg_sq.mul_(beta2), the last denom held; then
        # denom = exp_avg_sq.div(bias_correction2).sqrt(): the quotient (the number a tensor),
        # then its square root, the last denom held until rebound; denom.add_(eps).
        update=(P(1, 0, WRAPPED), P(1, 1, WRAPPED), P(1, 2), P(0, 1, WRAPPED)),
    ),
    "radam": OptimizerModel(
        "RAdam",
        state=("exp_avg", "exp_avg_sq"),
        scalars=("step",),
        # From the 6th step on (default betas: the variance is rectified once rho_t > 5):
        # bias_corrected_exp_avg = exp_avg / bias_correction1, the last one held until rebound;
        # then bias_corrected_exp_avg * lr * _compute_adaptive_lr(), where exp_avg_sq.sqrt()
        # and bias_correction2 ** 0.5 / it (a reciprocal, then a product) are made while the
        # first product is held: five of the parameter's size and a number at once. (Steps 2
        # to 5 hold at most two: bias_corrected_exp_avg * lr.)
        update=(P(1, 0, WRAPPED), P(1, 1, WRAPPED), P(0, 2, WRAPPED), P(0, 3, WRAPPED), P(0, 5, WRAPPED)),
        steady_from=6,
    ),
    "adamax": OptimizerModel(
        "Adamax",
        state=("exp_avg", "exp_inf"),
        scalars=("step",),
        # torch.maximum(exp_inf.mul_(beta2), grad.abs().add_(eps), out=exp_inf): the absolute
        # value while add_ takes eps as a tensor, freed at once
        update=(P(0, 0, WRAPPED), P(0, 1, WRAPPED)),
    ),
    "adagrad": OptimizerModel(
        "Adagrad",
        state=("sum",),
        scalars=("step",),
        eager=True,
        # step_t += 1, the last std held; std = state_sum.sqrt().add_(eps), the last std
        # held until rebound
        update=(P(1, 0, WRAPPED), P(1, 1, WRAPPED)),
    ),
    "adadelta": OptimizerModel(
        "Adadelta",
        state=("square_avg", "acc_delta"),
        scalars=("step",),
        # step += 1, square_avg.mul_(rho), the last std and delta held; std =
        # square_avg.add(eps).sqrt_() while both are held, the last std then freed;
        # delta = acc_delta.add(eps).sqrt_() beside std while the last delta is held;
        # acc_delta.mul_(rho) with both.
        update=(P(2, 0, WRAPPED), P(2, 1, WRAPPED), P(1, 2, WRAPPED), P(0, 2, WRAPPED)),
    ),
    "rmsprop": OptimizerModel("RMSprop", state=("square_avg",), scalars=("step",), update=_RMSPROP),
    "rmsprop-momentum": OptimizerModel(
        "RMSprop", {"momentum": 0.9}, state=("square_avg", "momentum_buffer"), scalars=("step",), update=_RMSPROP
    ),
    "rmsprop-centered": OptimizerModel(
        "RMSprop", {"centered": True}, state=("square_avg", "grad_avg"), scalars=("step",), update=_RMSPROP
    ),
    "rmsprop-centered-momentum": OptimizerModel(
        "RMSprop",
        {"momentum": 0.9, "centered": True},
        state=("square_avg", "momentum_buffer", "grad_avg"),
        scalars=("step",),
        update=_RMSPROP,
    ),
}
del P


def optimizer_model(name: str) -> OptimizerModel:
    """The optimizer called `name` (any case); an unknown name is an ArchprofError naming them all."""
    try:
        return OPTIMIZERS[name.lower()]
    except (KeyError, AttributeError):
        raise ArchprofError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}") from None


def optimizer_names(last: str = "or") -> str:
    """The names, for a help text: "sgd, momentum, ..., rmsprop-centered-momentum"."""
    *first, final = OPTIMIZERS
    return f"{', '.join(first)} {last} {final}"
