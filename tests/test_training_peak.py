"""The training step's peak memory (forward, then backward): a chain worked by hand, the
gradients left in `.grad`, the peak against torch.profiler on a real CPU training step,
`memory --train` and `--fit --train`."""

import json
import math
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn
from torch._prims_common import is_non_overlapping_and_dense_or_false
from torch.nn import functional as F
from torch.utils._pytree import tree_leaves
from typer.testing import CliRunner

import archprof
from archprof.analysis import analysis, load
from archprof.cli import app
from archprof.errors import ArchprofWarning
from archprof.fit import fit_batch
from archprof.operators.strides import is_dense
from archprof.optimizers import OPTIMIZERS
from archprof.passes.liveness import liveness
from archprof.passes.training_memory import training_timeline
from archprof.tracing.trace import trace
from archprof.units import human_bytes
from archprof.zoo import MODELS
from tests.memory_oracle import (
    allocation_peaks,
    profiled_peaks,
    profiled_training_peak_operator,
    profiled_training_peaks,
)
from tests.models import (
    Calls,
    Checkpointed,
    CheckpointedBlocks,
    ClampedAroundItsMean,
    ConcatenatedBias,
    ConvAfterAChannelsLastConv,
    ConvOfAChannelsLastMap,
    DividedByItsSum,
    GroupNormAfterAChannelsLastNorm,
    IgnoredPool,
    IgnoredScaledMean,
    KeepsItsMap,
    LargestMagnitudes,
    MishFunction,
    NestedCheckpoints,
    NestedNotLast,
    NormedTokensPooledAsAMap,
    NumbersFirst,
    PaddedChannelsLastMap,
    PartialShortcut,
    PickedByIndex,
    ReadsItsValues,
    Residual,
    ResponseNorm,
    ReturnsAParameter,
    RunningProduct,
    ScaledByNumbers,
    SkipsHeldInLocals,
    SliceAssignedBeforeSoftmax,
    SumOfThreeTerms,
    SwishFunction,
    SwishOnItsContext,
    ThresholdedLinearUnit,
    TiedTransposed,
    TransposedTokensBatchNormed,
    TwoHeads,
    TwoLosses,
    UnusedAndGatedLayers,
    UpdatesHeldInLocals,
    WithACustomActivation,
    WithACustomFunctionOfAWeight,
    WithAnIndexOutput,
    dropout_in_place_on_a_view,
    weight_normed_layer,
)
from tests.test_memory import BAGS_OF_ROWS, ONE_CPU_OPERATOR_CALLS, BagsOfRows
from tests.test_memory_kernels import AttentionBlock


def chain():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def test_a_chain_worked_by_hand():
    """Batch 3, float32. Forward: x (48 B), fc1's result (96, freed once relu has read it),
    relu's r (96), the output (24): 168 B held at the end, x and r saved.

    Backward, from a gradient of ones (24, held by the caller):
    - fc2's node: grad r (96), fc2.weight's gradient (64), fc2.bias's (8): 360 B;
    - relu's node: grad h (96): 456 B, the peak; then grad r and r are freed (264);
    - fc1's node: fc1.weight's gradient (128), fc1.bias's (32): 424; then grad h goes.
    At the end: x (held by the caller), the output, the seed and every parameter's gradient
    (232): 328 B."""
    graph = trace(chain(), [(3, 4)], training=True)
    timeline = training_timeline(graph)
    forward = len(graph.ops)
    assert timeline.held[forward - 1] == 168
    assert timeline.peak_bytes == 456
    assert timeline.steps[timeline.peak_step].op == "aten.threshold_backward"
    assert timeline.held[-1] == 328
    parameters = (8 * 4 + 8 + 2 * 8 + 2) * 4
    sgd = archprof.analyze(chain(), input_size=(4,), batch=3, training=True, optimizer="sgd").totals
    assert sgd.training_peak_bytes == parameters + 456
    assert (sgd.training_peak_layer, sgd.training_peak_phase) == ("1", "backward")
    # Adam then updates from the 328 B the backward pass left but the 24 B seed (the
    # caller's gradient of ones, gone once backward returns), beside its two moments and a
    # 4 B step counter per parameter: fc1's weight first, its denominator sqrt(v) / c two
    # new tensors of 128 B (no earlier one held yet) while c is a tensor too (8 B): 568 B,
    # above the backward's 456.
    state = 2 * parameters + 4 * 4
    totals = archprof.analyze(chain(), input_size=(4,), batch=3, training=True, optimizer="adam").totals
    assert totals.optimizer_state_bytes == state
    assert totals.training_peak_bytes == parameters + state + (328 - 24) + 2 * 128 + 8
    assert (totals.training_peak_layer, totals.training_peak_phase) == ("", "optimizer step")
    # The sum of the parts (every saved activation and gradient at once) misses the gradients
    # of the activations: 1,088 B here.
    assert totals.training_memory_bytes == parameters + state + 48 + 96 + parameters < totals.training_peak_bytes


def test_adams_update_of_a_large_layer_against_a_real_cpu_step():
    """The oracle: torch.profiler's allocations over a real step, Adam's update included,
    counted from what was held before it (the parameters, the optimizer's state, its step
    counters too, and the input): those that outlive the aten op that made them, equal to
    the byte (the output is still held when the update runs, the gradient of ones is gone)."""
    from tests.memory_oracle import allocation_peaks

    def mlp():
        return nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 10))

    model, x = mlp(), torch.randn(2, 256)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)  # on the CPU: one parameter at a time

    def step():
        optimizer.zero_grad(set_to_none=True)  # the last step's gradients go, unseen by the profiler
        output = model(x)
        output.backward(torch.ones_like(output))
        optimizer.step()

    step()  # makes the moments
    _, lasting = allocation_peaks(step)
    held = sum(t.nbytes for t in model.parameters()) + x.nbytes
    held += sum(v.nbytes for state in optimizer.state.values() for v in state.values())
    totals = archprof.analyze(mlp, input_size=(256,), batch=2, training=True, optimizer="adam").totals
    assert totals.training_peak_phase == "optimizer step"
    assert totals.training_peak_bytes == held + lasting


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_parameters_without_a_gradient_get_no_state_and_no_update(optimizer):
    """The oracle: a real CPU step with torch.optim. A layer never called and one called only
    under no_grad keep `.grad` None; the optimizer skips both (no state, no update). The
    gradients, the state and the step's peak (allocations that outlive their aten op, from
    what was held before it) are each equal to the byte."""
    model, x = UnusedAndGatedLayers(), torch.randn(2, 32)
    real = real_optimizer_step(model, x, optimizer)
    totals = archprof.analyze(model, input_size=(32,), batch=2, training=True, optimizer=optimizer).totals
    assert real.gradient_bytes < totals.trainable_param_count * 4  # the oracle's premise
    assert (totals.gradient_bytes, totals.optimizer_state_bytes) == (real.gradient_bytes, real.state_bytes)
    assert totals.training_peak_bytes == real.peak_bytes


@pytest.mark.parametrize("viewed", [False, True], ids=["as it is", "viewed"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_parameter_returned_as_an_output(optimizer, viewed):
    """The oracle: a real CPU step with torch.optim. The gradient of ones the backward pass
    starts from for the parameter is held by the caller, so AccumulateGrad copies it into
    `.grad` (where a view's node passes on a new tensor of the same storage, it takes that
    over) and the seed is gone once backward returns. Adam's update was 400,000 B (the
    parameter's size) over: the parameter, read by no forward op, was counted as an
    activation from the backward's `ones_like` on, while the seed was taken over as `.grad`.
    SGD's peak, in the backward pass, was equal: the two errors cancelled there."""
    model, x = ReturnsAParameter(viewed), torch.randn(4, 32)
    real = real_optimizer_step(model, x, optimizer)
    totals = archprof.analyze(model, input_size=(32,), batch=4, training=True, optimizer=optimizer).totals
    assert totals.training_peak_bytes == real.peak_bytes


def test_reentrant_checkpointing_hands_its_inputs_gradients_on():
    """The oracle: a real CPU step with torch.optim.Adam, whose update is the peak here. A
    reentrant block's backward takes the gradient of its input from the `.grad` of a detached
    copy of it and returns it to the engine: no parameter's gradient, held to the end. Held so,
    Adam's update was 1,024 B a block over (179,200 B against 177,152). The real step also holds
    each block's random-number state then (5,056 B, counted since): the caller holds the output,
    and with it the block's node."""
    model, x = CheckpointedBlocks(blocks=2, reentrant=True), torch.randn(1, 3, 4, 4)
    real = real_optimizer_step(model, x, "adam")
    totals = archprof.analyze(model, input_size=(3, 4, 4), batch=1, training=True, optimizer="adam").totals
    assert totals.training_peak_phase == "optimizer step"
    assert totals.training_peak_bytes == real.peak_bytes


@pytest.fixture
def float64_by_default():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adams_step_counters_take_the_default_dtype(optimizer, float64_by_default):
    """The oracle: a real CPU step with torch.optim. Adam's `state["step"]` is a tensor of the
    default dtype where that is float64 (torch.optim's `_get_scalar_dtype()`): 8 B a parameter,
    counted 4 B before (state 74,896 B here against 74,912, the peak 16 B short too)."""
    model, x = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8)), torch.randn(2, 64)
    real = real_optimizer_step(model, x, optimizer)
    totals = archprof.analyze(model, input_size=(64,), batch=2, training=True, optimizer=optimizer).totals
    assert (totals.optimizer_state_bytes, totals.training_peak_bytes) == (real.state_bytes, real.peak_bytes)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize(
    "build, shape",
    [(KeepsItsMap, (16, 64)), (partial(KeepsItsMap, detached=False), (16, 64)), (weight_normed_layer, (4, 32))],
    ids=["a detached map", "a map with its graph", "weight_norm's weight"],
)
def test_a_tensor_the_model_keeps_is_held_through_the_step(build, shape, optimizer):
    """The oracle: a real CPU step with torch.optim (its second: what the first step's forward
    kept is freed when the forward replaces it, a block the recording never saw allocated,
    and so not counted). A tensor a module keeps in an attribute is held until its next
    forward, past the backward pass and the update; freed at the end of the forward, or after
    the backward node that read it last (weight_norm's weight), the step's peak was one such
    tensor short: 16,384 B for the map (16 x 256 floats), 8,192 B for the weight (64 x 32)."""
    model = build()
    real = real_optimizer_step(model, torch.randn(*shape), optimizer)
    totals = archprof.analyze(model, input_size=shape[1:], batch=shape[0], training=True, optimizer=optimizer).totals
    assert totals.training_peak_bytes == real.peak_bytes


@dataclass(frozen=True)
class RealStep:
    gradient_bytes: int  # in `.grad` after the step
    state_bytes: int  # the optimizer's
    peak_bytes: int  # what was held before the step (parameters, buffers, state, input) + its allocations' peak


# The oracle's own optimizers: what each of archprof's names means in torch.optim, written
# here, not taken from archprof.optimizers (which must name the same ones).
REAL_OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "momentum": partial(torch.optim.SGD, momentum=0.9),
    "nesterov": partial(torch.optim.SGD, momentum=0.9, nesterov=True),
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adam-amsgrad": partial(torch.optim.Adam, amsgrad=True),
    "adamw-amsgrad": partial(torch.optim.AdamW, amsgrad=True),
    "nadam": torch.optim.NAdam,
    "radam": torch.optim.RAdam,
    "adamax": torch.optim.Adamax,
    "adagrad": torch.optim.Adagrad,
    "adadelta": torch.optim.Adadelta,
    "rmsprop": torch.optim.RMSprop,
    "rmsprop-momentum": partial(torch.optim.RMSprop, momentum=0.9),
    "rmsprop-centered": partial(torch.optim.RMSprop, centered=True),
    "rmsprop-centered-momentum": partial(torch.optim.RMSprop, momentum=0.9, centered=True),
}
# RAdam rectifies its variance once rho_t > 5: from its 6th step on with the default betas
# (rho_6 = 5.994), a heavier update than its first five. The oracle measures a step from then on.
RECTIFIED_FROM = 6


def real_optimizer_step(model: nn.Module, x: torch.Tensor, optimizer: str, steps_before: int = 1) -> RealStep:
    """A real CPU step with torch.optim (after `steps_before`: the first makes the state), from
    gradients of ones on the floating outputs requiring grad, every `.grad` None before it, under
    torch.profiler: allocations that outlive the aten op that made them (`allocation_peaks`)."""
    step_optimizer = REAL_OPTIMIZERS[optimizer](model.parameters(), lr=1e-3)

    def step():
        step_optimizer.zero_grad(set_to_none=True)  # the last step's gradients go, unseen by the profiler
        output = model(x)
        roots = [t for t in tree_leaves(output) if t.requires_grad]
        torch.autograd.backward(roots, [torch.ones_like(t) for t in roots])
        step_optimizer.step()

    for _ in range(steps_before):
        step()  # the first makes the state
    gradients = sum(p.grad.nbytes for p in model.parameters() if p.grad is not None)
    state = sum(v.nbytes for values in step_optimizer.state.values() for v in values.values())
    _, lasting = allocation_peaks(step)
    held = sum(t.nbytes for t in (*model.parameters(), *model.buffers())) + state + x.nbytes
    return RealStep(gradients, state, held + lasting)


def wide_mlp():
    return nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 10))


def conv_net_with_batchnorm():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def steps_before(optimizer: str) -> int:
    """The oracle's steps before the one it measures: one (it makes the state), RAdam five."""
    return RECTIFIED_FROM - 1 if optimizer == "radam" else 1


def test_every_optimizer_archprof_names_is_one_the_oracle_runs():
    assert list(OPTIMIZERS) == list(REAL_OPTIMIZERS)
    for name, model in OPTIMIZERS.items():  # the same torch.optim class and options as the oracle's
        real = REAL_OPTIMIZERS[name]
        built = model.build([nn.Parameter(torch.zeros(1))])
        assert type(built) is (real.func if isinstance(real, partial) else real), name
        assert all(built.defaults[key] == value for key, value in getattr(real, "keywords", {}).items()), name


@pytest.mark.parametrize("optimizer", list(REAL_OPTIMIZERS))
@pytest.mark.parametrize(
    "build, shape", [(wide_mlp, (2, 256)), (conv_net_with_batchnorm, (2, 3, 16, 16))], ids=["mlp", "conv-bn"]
)
def test_each_optimizers_state_and_step_peak_against_a_real_cpu_step(optimizer, build, shape):
    """The oracle: a real CPU step with torch.optim, float32 (RAdam's sixth, rectified). Its
    state, the sum of the tensors in `optimizer.state` (each parameter's copies and 0-dim
    scalars), and the step's peak (torch.profiler: allocations that outlive their aten op,
    from what was held before the step), each equal to the byte."""
    model = build()
    real = real_optimizer_step(model, torch.randn(*shape), optimizer, steps_before(optimizer))
    totals = archprof.analyze(model, input_size=shape[1:], batch=shape[0], training=True, optimizer=optimizer).totals
    assert (totals.optimizer_state_bytes, totals.training_peak_bytes) == (real.state_bytes, real.peak_bytes)


@pytest.mark.parametrize("optimizer", [name for name in REAL_OPTIMIZERS if name not in ("sgd", "momentum")])
def test_each_optimizers_update_of_a_large_layer_is_the_peak(optimizer):
    """The oracle: a real CPU step with torch.optim. A 1024 x 512 first layer (2 MiB) at batch
    2: every optimizer whose update makes a temporary of a parameter's size peaks in its update,
    the first layer's, equal to the byte; Adagrad's, RMSprop's and Adadelta's while the last
    layer's temporaries are still held too."""

    def mlp():
        return nn.Sequential(nn.Linear(1024, 512), nn.ReLU(), nn.Linear(512, 10))

    model = mlp()
    real = real_optimizer_step(model, torch.randn(2, 1024), optimizer, steps_before(optimizer))
    totals = archprof.analyze(mlp, input_size=(1024,), batch=2, training=True, optimizer=optimizer).totals
    assert totals.training_peak_phase == "optimizer step"
    assert (totals.optimizer_state_bytes, totals.training_peak_bytes) == (real.state_bytes, real.peak_bytes)


@pytest.mark.parametrize("optimizer", [name for name in REAL_OPTIMIZERS if name not in ("sgd", "momentum", "adam")])
def test_each_optimizer_in_float64_by_default(optimizer, float64_by_default):
    """The oracle: a real CPU step with torch.optim where the default dtype is float64: the
    parameters are float64 and so are the optimizer's 0-dim scalars (its step counter, NAdam's
    mu_product too: 8 B each)."""
    model, x = conv_net_with_batchnorm(), torch.randn(2, 3, 16, 16)
    real = real_optimizer_step(model, x, optimizer, steps_before(optimizer))
    totals = archprof.analyze(model, input_size=(3, 16, 16), batch=2, training=True, optimizer=optimizer).totals
    assert (totals.optimizer_state_bytes, totals.training_peak_bytes) == (real.state_bytes, real.peak_bytes)


@pytest.mark.parametrize("optimizer", [name for name in REAL_OPTIMIZERS if name != "sgd"])
def test_each_optimizer_on_a_bfloat16_model(optimizer):
    """The oracle: a real CPU step with torch.optim on a bfloat16 model: the state's copies
    are bfloat16, its 0-dim scalars float32 (torch.optim's scalar dtype, not the parameters'),
    and the numbers its update wraps as tensors 8 B whatever the parameters' dtype."""
    model, x = wide_mlp().to(torch.bfloat16), torch.randn(2, 256, dtype=torch.bfloat16)
    real = real_optimizer_step(model, x, optimizer, steps_before(optimizer))
    totals = archprof.analyze(
        model, input_size=(256,), batch=2, dtype=torch.bfloat16, training=True, optimizer=optimizer
    ).totals
    assert (totals.optimizer_state_bytes, totals.training_peak_bytes) == (real.state_bytes, real.peak_bytes)


def test_radam_is_modelled_rectified_its_heaviest_step():
    """The oracle: RAdam's real CPU steps. Its first five (default betas) make one temporary
    of a parameter's size less than four: the 2nd step peaks lower than predicted, the 6th
    (rectified, as every later one) equal."""
    model, x = wide_mlp(), torch.randn(2, 256)
    early = real_optimizer_step(model, x, "radam", steps_before=1)
    rectified = real_optimizer_step(wide_mlp(), x, "radam", steps_before=RECTIFIED_FROM - 1)
    totals = archprof.analyze(wide_mlp, input_size=(256,), batch=2, training=True, optimizer="radam").totals
    assert early.peak_bytes < totals.training_peak_bytes == rectified.peak_bytes


def test_adagrad_keeps_state_for_every_parameter_it_is_given():
    """The oracle: a real CPU step with torch.optim.Adagrad, which makes its state when built,
    for every parameter given (a layer never called, one called under no_grad), while it
    updates only those with a gradient. State and peak equal to the byte."""
    model, x = UnusedAndGatedLayers(), torch.randn(2, 32)
    real = real_optimizer_step(model, x, "adagrad")
    totals = archprof.analyze(model, input_size=(32,), batch=2, training=True, optimizer="adagrad").totals
    assert real.state_bytes == sum(p.nbytes + 4 for p in model.parameters())  # the oracle's premise
    assert (totals.optimizer_state_bytes, totals.training_peak_bytes) == (real.state_bytes, real.peak_bytes)


class SpectralFilter(nn.Module):
    """A learnt complex filter on a map's spectrum (Fourier neural operators' layer)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.weight = nn.Parameter(torch.randn(4, 8, 5, dtype=torch.cfloat))

    def forward(self, x):
        return torch.fft.irfft2(torch.fft.rfft2(self.conv(x)) * self.weight, s=x.shape[-2:])


class ComplexScale(nn.Module):
    """A complex parameter times a real input: a complex output, which requires grad."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, dtype=torch.cfloat))

    def forward(self, x):
        return x * self.weight


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("build, shape", [(SpectralFilter, (2, 3, 8, 8)), (ComplexScale, (2, 8))])
def test_a_complex_parameter_trains(build, shape, optimizer):
    """A trainable complex parameter gets a gradient and optimizer state, and a complex output
    that requires grad seeds the backward pass, as in a real step (the oracle: torch.optim on
    a CPU, its `.grad`s, its state and its peak); both were taken for frozen."""
    model = build()
    real = real_optimizer_step(model, torch.randn(*shape), optimizer)
    totals = archprof.analyze(model, input_size=shape[1:], batch=shape[0], training=True, optimizer=optimizer).totals
    assert real.gradient_bytes == sum(p.nbytes for p in model.parameters())  # the oracle's premise: all trained
    found = (totals.gradient_bytes, totals.optimizer_state_bytes, totals.training_peak_bytes)
    assert found == (real.gradient_bytes, real.state_bytes, real.peak_bytes)


def test_measure_seeds_a_complex_output():
    """`memory --measure`'s real step runs the backward pass from a complex output too."""
    from archprof.load import load_model
    from archprof.measure.peak_memory import predicted_and_measured

    _, step = predicted_and_measured(load_model(ComplexScale), [(8,)], 2, None, "adam").steps
    assert (
        step.measured.bytes
        == step.predicted_bytes
        == real_optimizer_step(ComplexScale(), torch.randn(2, 8), "adam").peak_bytes
    )


def test_measure_runs_radam_to_its_rectified_step():
    """`memory --measure` measures the step the analysis models: RAdam's sixth, equal."""
    from archprof.load import load_model
    from archprof.measure.peak_memory import predicted_and_measured

    _, step = predicted_and_measured(load_model(wide_mlp), [(256,)], 2, None, "radam").steps
    assert step.measured.bytes == step.predicted_bytes


def test_measure_holds_every_output_through_the_step():
    """`memory --measure`'s real step holds every output, an int64 one too, as the analysis
    does and as the tests' own oracle step does (`profiled_training_peaks`)."""
    from archprof.load import load_model
    from archprof.measure.peak_memory import predicted_and_measured

    _, step = predicted_and_measured(load_model(WithAnIndexOutput), [(3, 16, 16)], 3, None, "sgd").steps
    model, x = WithAnIndexOutput(), torch.randn(3, 3, 16, 16)
    _, lasting = profiled_training_peaks(model, x)
    oracle = sum(p.nbytes for p in model.parameters()) + x.nbytes + lasting
    assert step.measured.bytes == step.predicted_bytes == oracle


def frozen_first_layer():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1), nn.Flatten())
    model[0].requires_grad_(False)
    return model


class CalledTwice(nn.Module):
    """One layer's parameters used twice: their two gradients are added before `.grad`."""

    def __init__(self):
        super().__init__()
        self.layer, self.head = nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x):
        return self.head(torch.relu(self.layer(torch.relu(self.layer(x)))))


@pytest.mark.parametrize(
    "build, shape",
    [
        (chain, (3, 4)),
        (frozen_first_layer, (2, 3, 8, 8)),
        (lambda: Residual(4), (2, 4, 6, 6)),
        (lambda: nn.LSTM(8, 12, num_layers=2, bidirectional=True), (5, 2, 8)),
        (AttentionBlock, (1, 2, 16, 64)),
        (CalledTwice, (4, 16)),
        (partial(CheckpointedBlocks, blocks=2, reentrant=True), (1, 3, 4, 4)),  # and the blocks' inputs' `.grad`
    ],
)
def test_the_gradients_left_at_the_end_are_the_trainable_parameters(build, shape):
    model = build()
    timeline = training_timeline(trace(model, [shape], training=True))
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    assert sum(timeline.parameter_gradients.values()) == trainable


def test_a_model_traced_again_has_the_same_peak():
    """A meta model traces with its own parameters, whose `.grad` the first backward pass
    leaves set: the next trace accumulates into it (add_) instead of copying. A step starts
    with every `.grad` None either way."""
    loaded = load("lenet5")
    first, again = (analysis(loaded, None, 2, None, True).report.totals for _ in range(2))
    assert again.training_peak_bytes == first.training_peak_bytes
    assert again.training_peak_layer == first.training_peak_layer


def test_a_rolled_up_report_keeps_the_steps_peak():
    """A whole-model figure: true of any rows (its layer named by its ancestor at the depth)."""
    report = archprof.analyze(chain(), input_size=(4,), training=True)
    assert report.totals.training_peak_bytes is not None
    assert report.rollup(0).totals.training_peak_bytes == report.totals.training_peak_bytes
    assert report.rollup(0).totals.training_peak_layer == ""
    assert archprof.analyze(chain(), input_size=(4,)).totals.training_peak_bytes is None  # inference


# --- against torch.profiler on a real CPU training step ---------------------------------------


def mlp_with_a_frozen_first_layer():
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.GELU(), nn.Linear(512, 10))
    model[0].requires_grad_(False)
    return model


class Branches(nn.Module):
    """A tensor read twice: its two gradients meet in the autograd engine, which adds them."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        y = self.a(x)
        return self.b(y) + y


class ThreeReaders(nn.Module):
    """Three gradients of one tensor: the engine adds the third into the sum of the first two."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = (nn.Conv2d(8, 8, 3, padding=1) for _ in range(3))
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.a(x)
        return self.head(self.b(y) + self.c(y) + y * 2)


def _read_twice(copy: Callable, y: torch.Tensor) -> torch.Tensor:
    """`copy` of the conjugate of a complex map made of `y` and its flip, read by a product at
    once, then by an exponential."""
    z = torch.complex(y, y.flip(1))
    conjugate = copy(z.conj())
    return torch.view_as_real(conjugate * 2 + conjugate.exp())


PROFILED_STEPS = {
    "conv stack": (
        lambda: nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 3)
        ),
        (4, 3, 32, 32),
    ),
    "conv-bn-pool-linear": (
        lambda: nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * 16 * 16, 10),
        ),
        (4, 3, 32, 32),
    ),
    "residual block": (lambda: Residual(8), (4, 8, 16, 16)),
    "two readers of one tensor": (Branches, (2, 8, 16, 16)),
    "three readers of one tensor": (ThreeReaders, (2, 8, 16, 16)),
    "a layer called twice": (CalledTwice, (32, 16)),
    "resnet18": (MODELS["resnet18"].build, (2, 3, 64, 64)),
    "mlp, first layer frozen": (mlp_with_a_frozen_first_layer, (16, 256)),
    "conv, first layer frozen": (frozen_first_layer, (4, 3, 32, 32)),
    "attention": (AttentionBlock, (1, 1, 1024, 64)),
    # (heads, L, d): one batch of heads to a CPU's flash attention from PyTorch 2.14, math before
    "attention of three dimensions": (AttentionBlock, (2, 256, 64)),
    "lstm": (lambda: nn.LSTM(32, 48, batch_first=True), (4, 10, 32)),
    "checkpointed block": (Checkpointed, (4, 3, 32, 32)),
    "a checkpointed block ending in a ReLU": (CheckpointedBlocks, (2, 3, 32, 32)),
    "a checkpointed block with a batch norm": (partial(CheckpointedBlocks, batch_norm=True), (2, 3, 32, 32)),
    "two checkpointed blocks": (partial(CheckpointedBlocks, blocks=2), (2, 3, 32, 32)),
    "a block checkpointed reentrantly": (partial(CheckpointedBlocks, reentrant=True), (2, 3, 32, 32)),
    "a reentrant block with a batch norm": (
        partial(CheckpointedBlocks, reentrant=True, batch_norm=True, ends_in_relu=False),
        (2, 3, 32, 32),
    ),
    "two blocks checkpointed reentrantly": (partial(CheckpointedBlocks, blocks=2, reentrant=True), (1, 3, 4, 4)),
    **{
        f"two blocks checkpointed{how}, no random state kept": (
            partial(CheckpointedBlocks, blocks=2, reentrant=reentrant, preserve_rng_state=False),
            (2, 3, 32, 32),
        )
        for how, reentrant in (("", False), (" reentrantly", True))
    },
    # The block's frame holds its input until the block's last saving node has run, not only
    # until the replay reads it: one 2x16x32x32 map short before.
    **{
        f"two blocks checkpointed{how}, each starting with a ReLU{rng}": (
            partial(CheckpointedBlocks, blocks=2, reentrant=reentrant, relu_first=True, preserve_rng_state=kept),
            (2, 3, 32, 32),
        )
        for how, reentrant in (("", False), (" reentrantly", True))
        for rng, kept in (("", True), (", no random state kept", False))
    },
    # The inner block's input, packed by the outer block's frame, is let go of: 16,384 B over
    # when taken for held by the inner frame.
    "a checkpointed block inside another": (NestedCheckpoints, (2, 3, 16, 16)),
    # The state the inner block takes as the outer one's replay runs it dies with the replay:
    # 5,056 B over when held by the nodes the trace keeps.
    "a checkpointed block inside another, not its last op": (NestedNotLast, (2, 3, 16, 16)),
    "skips held in locals": (SkipsHeldInLocals, (2, 3, 32, 32)),
    "updates held in locals": (UpdatesHeldInLocals, (2, 64, 16)),
    "padded before its convolution": (lambda: nn.Sequential(nn.ZeroPad2d(1), nn.Conv2d(3, 8, 3)), (4, 3, 32, 32)),
    "a convolution of a channels-last map": (ConvOfAChannelsLastMap, (2, 64, 8, 8)),
    "a convolution after a channels-last convolution": (ConvAfterAChannelsLastConv, (2, 32, 16, 16)),
    "a slice assigned before a softmax": (SliceAssignedBeforeSoftmax, (4, 33, 16)),
    "a group norm of a channels-last map": (GroupNormAfterAChannelsLastNorm, (2, 3, 16, 16)),
    "normed tokens pooled as a map": (NormedTokensPooledAsAMap, (2, 64, 16)),
    "a padded channels-last map": (PaddedChannelsLastMap, (2, 16, 8, 8)),
    "a batch norm of transposed tokens": (TransposedTokensBatchNormed, (4, 32, 16)),
    "a batch norm of the input": (lambda: nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 8, 3)), (4, 3, 16, 16)),
    "a shortcut into the first channels": (PartialShortcut, (2, 3, 16, 16)),
    "scaled by Python numbers": (ScaledByNumbers, (2, 3, 16, 16)),
    "Python numbers first": (NumbersFirst, (2, 3, 16, 16)),
    "two heads": (TwoHeads, (8, 64)),
    "two losses": (TwoLosses, (8, 64)),
    "a weight tied to its transpose": (TiedTransposed, (8, 64)),
    **{f"picked by {how}": (partial(PickedByIndex, how), (2, 3, 16, 16)) for how in PickedByIndex.PICKS},
    "a global response norm": (ResponseNorm, (2, 3, 16, 16)),
    "an in-place dropout on a view": (dropout_in_place_on_a_view, (2, 3, 16, 16)),
    "a bias concatenated from parts": (ConcatenatedBias, (8, 64)),
    "a thresholded linear unit": (ThresholdedLinearUnit, (2, 3, 16, 16)),
    "divided by its sum": (DividedByItsSum, (2, 3, 16, 16)),
    "a pooled map nothing reads": (IgnoredPool, (2, 3, 16, 16)),
    "a scaled mean nothing reads": (IgnoredScaledMean, (2, 3, 16, 16)),
    "a mish after a convolution": (lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Mish()), (2, 3, 16, 16)),
    "each map's largest magnitude": (LargestMagnitudes, (2, 3, 16, 16)),
    "clamped around its mean": (ClampedAroundItsMean, (2, 3, 16, 16)),
    # the bounds' gradients share a 0-dim zero, freed as their formula's call returns
    "clamped around its mean, the bounds learning": (partial(ClampedAroundItsMean, bounds_learn=True), (2, 3, 16, 16)),
    "a running product": (RunningProduct, (2, 3, 16, 16)),
    # norm_backward's `grad * (self / norm).masked_fill_(norm == 0, 0)`: the mask held until the product
    "a 2-norm along the channels": (
        lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(lambda y: torch.linalg.vector_norm(y, 2, dim=1))),
        (2, 3, 16, 16),
    ),
    # renorm's `grad_norm`, a local read once by the return's `.to()`: its statement's temporaries die with it
    "a renorm along the channels": (
        lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(lambda y: torch.renorm(y, 2, 1, 1.0))),
        (2, 3, 16, 16),
    ),
    # the same where `.to()` keeps the dtype and returns `grad_norm` itself, read by the `where`
    "a renorm of float64 maps": (
        lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(lambda y: torch.renorm(y.double(), 2, 1, 1.0))),
        (2, 3, 16, 16),
    ),
    # logcumsumexp's locals, each read once, and its lambda, whose return frees its temporaries
    "a running log-sum-exp along the channels": (
        lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(lambda y: y.logcumsumexp(1))),
        (2, 3, 16, 16),
    ),
    # the same, from dist's `norm_backward(grad, self - other, p, result)`: `self - other` held through it
    "the distance of a map to its flip": (
        lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(lambda y: torch.dist(y, y.flip(1)))),
        (2, 3, 16, 16),
    ),
    # norm_backward's `self_scaled` (and for p > 1 `scale_v`), locals read once by the product it returns:
    # their statements' temporaries freed as each is made, they as norm_backward returns
    **{
        f"the {p}-distance of a map to its flip": (
            lambda p=p: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(lambda y: torch.dist(y, y.flip(1), p))),
            (2, 3, 16, 16),
        )
        for p in (3, 1.5, 0.5)
    },
    **{
        f"a {p}-norm along the channels": (
            lambda p=p: nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), Calls(lambda y: torch.linalg.vector_norm(y, p, dim=1))
            ),
            (2, 3, 16, 16),
        )
        for p in (3, 1.5, 0.5)
    },
    # the same locals through aten.norm's four nodes (at::norm, as pairwise_distance calls it)
    **{
        f"aten.norm's {how}": (
            lambda call=call: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(call)),
            (2, 3, 16, 16),
        )
        for how, call in (
            ("3-norm along the channels", lambda y: torch.ops.aten.norm.ScalarOpt_dim(y, 3, [1])),
            ("0.5-norm of the whole map", lambda y: torch.ops.aten.norm.Scalar(y, 0.5)),
            ("1.5-norm in float64", lambda y: torch.ops.aten.norm.ScalarOpt_dtype(y, 1.5, dtype=torch.float64)),
            (
                "3-norm along the channels in float64",
                lambda y: torch.ops.aten.norm.ScalarOpt_dim_dtype(y, 3, [1], False, dtype=torch.float64),
            ),
        )
    },
    # the engine's cast of a float64 gradient to the float32 map's dtype, once the formula has returned
    **{
        f"a {p}-norm along the channels in float64": (
            lambda p=p: nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1),
                Calls(lambda y: torch.linalg.vector_norm(y, p, dim=1, dtype=torch.float64)),
            ),
            (2, 3, 16, 16),
        )
        for p in (2, 3)
    },
    # prod_backward's road where the input has no zeros (randn's): the zeros counted, then
    # `grad * (result / input)`; along a dim, its mask and count named locals
    **{
        f"a product {how}": (
            lambda call=call: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(call)),
            (2, 3, 16, 16),
        )
        for how, call in (
            ("along the channels", lambda y: y.prod(1)),
            ("along the channels, kept", lambda y: y.prod(1, keepdim=True)),
            ("along the last dim", lambda y: y.prod(-1)),
            ("of the whole map", lambda y: y.prod()),
            # `self.to(grad.scalar_type())`, a copy, and the engine's cast of the gradient back
            ("along the channels in float64", lambda y: y.prod(1, dtype=torch.float64)),
            ("of the whole map in float64", lambda y: y.prod(dtype=torch.float64)),
        )
    },
    # i1_backward's `gradx` and copysign's `ratio`, locals read once: their statements' temporaries
    # freed as each is made (i1's product `result * safe_self.reciprocal()`, copysign's mask)
    **{
        name: (lambda call=call: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(call)), (2, 3, 16, 16))
        for name, call in (
            ("an i1", torch.special.i1),
            ("an i1e", torch.special.i1e),
            ("a map with its flip's signs", lambda y: torch.copysign(y, y.flip(1))),
            ("a map made negative", lambda y: torch.copysign(y, -1.0)),
            # mvlgamma's `args`, reassigned: the arange it held first freed then
            ("a multivariate log-gamma", lambda y: torch.mvlgamma(y.abs() + 3, 4)),
        )
    },
    # the gradients of maximum, minimum, fmax, fmin and clamp between tensors: from PyTorch 2.14 ties
    # split (`where(self == other, grad / 2, grad)`), then the other side filled with zeros in place
    **{
        name: (lambda call=call: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(call)), (2, 3, 16, 16))
        for name, call in (
            ("the larger of a map and its flip", lambda y: torch.maximum(y, y.flip(1))),
            ("the smaller of a map and its flip", lambda y: torch.minimum(y, y.flip(1))),
            ("fmax of a map and its flip", lambda y: torch.fmax(y, y.flip(1))),
            ("fmin of a map and its first channel", lambda y: torch.fmin(y, y[:, :1])),
            ("a map clamped below by its flip", lambda y: y.clamp(min=y.flip(1))),
            ("a map clamped above by its first channel", lambda y: y.clamp(max=y[:, :1])),
            ("a map clamped between its flip less and plus 1", lambda y: y.clamp(y.flip(1) - 1, y.flip(1) + 1)),
        )
    },
    # sinc_backward's `out`, named, read once by the `where` it returns: its statement's five maps freed first
    "a sinc": (lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(torch.sinc)), (2, 3, 16, 16)),
    # the same ops in one statement (pow_backward_self's `where`): its temporaries held to the `where`
    "a power of a tensor exponent": (
        lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(lambda y: torch.pow(y.abs() + 1, y.flip(1)))),
        (2, 3, 16, 16),
    ),
    # the engine's sum of a gradient to its broadcast operand's shape, once the formula has returned
    **{
        f"{name} of a map and {how}": (
            lambda call=call: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(call)),
            (2, 3, 16, 16),
        )
        for name, how, call in (
            ("atan2", "its first flipped", lambda y: torch.atan2(y, y[:1].flip(1))),
            ("atan2", "its first channel", lambda y: torch.atan2(y[:, :1], y)),
            ("cdist", "its first flipped", lambda y: torch.cdist(y.flatten(2), y[:1].flip(1).flatten(2))),
            ("lerp", "its flip, by its first channel", lambda y: torch.lerp(y, y.flip(1), y[:1, :1])),
            # to a 0-dim operand, `grad.sum()`
            ("atan2", "its mean", lambda y: torch.atan2(y, y.mean())),
            ("atan2", "its mean, swapped", lambda y: torch.atan2(y.mean(), y)),
            # the bounds' `where`s make the gradients their call returns, before the engine's sums
            ("clamp", "its mean as 0-dim bounds", lambda y: y.clamp(y.mean() - 0.1, y.mean() + 0.1)),
        )
    },
    # sgn's gradient of a real map, a zero tensor (`_efficientzerotensor`), which holds no byte
    "the signs of a map": (lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(torch.sgn)), (2, 3, 16, 16)),
    # the engine's sum of that zero and the map's other gradient: on a CPU a copy of the other, its shape
    # worked out on the meta device; in place where the other comes first and no one else holds it
    "a map plus its signs": (
        lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(lambda y: torch.sgn(y) + y)),
        (2, 3, 16, 16),
    ),
    "a map's signs times its exponential": (
        lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(lambda y: torch.sgn(y) * y.exp())),
        (2, 3, 16, 16),
    ),
    # the zero first (sgn's node runs first): it takes no sum in place; the peak at the weight's gradient
    "a linear map's exponential plus its signs": (
        lambda: nn.Sequential(nn.Linear(1024, 1024), Calls(lambda y: y.exp() + torch.sgn(y))),
        (2, 1024),
    ),
    # nn.EmbeddingBag's results as a CPU sizes them, saved for its gradient
    **{
        name: (lambda options=options: BagsOfRows(**options), (2, 12))
        for name, options in BAGS_OF_ROWS.items()
        if not options.get("frozen")
    },
    # losses whose gradients have no meta kernel (a step through them failed; CTC's, with the composites below)
    **{
        name: (lambda call=call: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(call)), (2, 3, 16, 16))
        for name, call in (
            (
                "a multi-class margin loss",
                lambda y: F.multi_margin_loss(y.flatten(1), y.new_zeros(2, dtype=torch.long)),
            ),
            (
                "a multi-label margin loss",
                lambda y: F.multilabel_margin_loss(y.flatten(1), y.new_zeros((2, 2048), dtype=torch.long)),
            ),
        )
    },
    # a conjugate view's copy, made by the math-bit fallback inside the operator reading it: its workspace
    **{
        name: (lambda call=call: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(call)), (2, 3, 16, 16))
        for name, call in (
            (
                "complex numbers from a map's magnitudes and angles",
                lambda y: torch.view_as_real(torch.polar(y.abs(), y)),
            ),
            (
                "a product of two maps' spectra",
                lambda y: torch.fft.irfft2(torch.fft.rfft2(y) * torch.fft.rfft2(y.flip(1)), s=y.shape[-2:]),
            ),
        )
    },
    # the user's own copy of a conjugate view, read at once by the next op and kept for a later one:
    # an autograd node's result, which the fallback's copy never is
    **{
        name: (
            lambda copy=copy: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(partial(_read_twice, copy))),
            (2, 3, 16, 16),
        )
        for name, copy in (
            ("a complex map's conjugate resolved and read twice", torch.resolve_conj),
            ("a complex map's conjugate cloned and read twice", torch.clone),
        )
    },
    # composites a CPU runs as one operator: the temporaries it makes and frees inside are its workspace
    **{
        name: (lambda call=call: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(call)), (2, 3, 16, 16))
        for name, call in (
            *ONE_CPU_OPERATOR_CALLS.items(),
            # isfinite, the CPU's one operator, inside nan_to_num's gradient `grad * at::isfinite(self)`
            ("a map with its NaNs and infinities replaced", torch.nan_to_num),
            ("a map kept where finite", lambda y: y * torch.isfinite(y)),
        )
    },
    # inverse's gradient `-matmul(inverse.mH(), matmul(grad, inverse.mH()))`, one statement: the
    # inner product held through the negation (4,096 B short before)
    "an inverse of a map's matrices": (
        lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(torch.linalg.inv)),
        (2, 3, 8, 8),
    ),
    # matrix_exp's gradient, the block matrix written into zeros by copies on a CPU (concatenated
    # under a dispatch mode: 20,480 B over before); nn.utils.parametrizations.orthogonal's default map
    "a matrix exponential of a map's matrices": (
        lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(torch.linalg.matrix_exp)),
        (2, 3, 8, 8),
    ),
    "an orthogonal weight": (
        lambda: nn.Sequential(nn.utils.parametrizations.orthogonal(nn.Linear(16, 16)), nn.Linear(16, 4)),
        (2, 16),
    ),
    # norm_backward(p=inf)'s named `self_abs` and `mask`, freed as it returns, before the negation;
    # `self - other`, which it reads twice, as the statement that passed it ends
    "the largest difference of a map from its flip": (
        lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(lambda y: torch.dist(y, y.flip(1), math.inf))),
        (2, 3, 16, 16),
    ),
}


@pytest.mark.parametrize("name", PROFILED_STEPS)
def test_the_training_peak_matches_the_profiler(name):
    """One real CPU step (forward, then backward from gradients of ones, every `.grad` None
    before it) under torch.profiler, against the timeline of the same graph, which holds the
    input to the end as the caller does (it was allocated before profiling began, so its
    bytes are added to the measurement; a padding reads it and saves nothing, so by its last
    reader alone the padded convolution would read one input short). Parameters are allocated before profiling and not
    counted on either side; their gradients are allocated during the step on both.

    The measurement is the peak of the allocations that outlive the aten op that made them:
    what a kernel allocates and frees inside one op (oneDNN's scratch and blocked-layout
    copies, flash attention's buffers: up to +89% over the measurement here) is not in the
    graph. That raw peak, scratch included, bounds the prediction from above.

    The tolerance is 0 B: equal for every model here (ResNet-18: 49,062,944 B). A checkpointed
    block keeps the CPU's random-number state (torch.get_rng_state(), 5,056 B), made by no aten
    op, to replay the block with (non-reentrant, until its last node that saved a tensor has run;
    reentrant, with its node, as long as the caller holds the output), and forks one more while
    it replays it: without them the blocks were up to two states short (10,112 B), as they are
    equal without them where checkpoint keeps none (preserve_rng_state=False). Holding what a
    block's re-run made until the node that asked for the re-run had run, the block ending in a
    ReLU was 131,072 B over (its last convolution's output, one map), 120,960 B over the
    measurement; freeing a reentrant block's incoming gradient and replayed output at their
    last reader, though its Python backward holds them until its own backward pass returns, the
    block checkpointed reentrantly was a map short (131,072 B) and the two blocks 1,024 B (the
    gradient of the second block's input, taken over from its `.grad`, freed early). A looser
    bound would hide the engine's ways the timeline follows: without the seed held by the caller
    the residual block is 14% short (32,768 B), without releasing a node's tensors only once it
    has run the MLP is 2,048 B short, and without the engine adding two gradients in place
    ResNet-18 is 65,536 B over, and with it adding into a slice of a gradient too the shortcut
    into the first channels is 8,192 B over.
    The numbers a model multiplies and divides by are tensors autograd keeps (8 B each): without
    them the model scaled by numbers is 16 B short (its forward 32 B, four numbers), and the
    forward of the three readers of one tensor (`y * 2`) 8 B. Freeing a temporary of a node
    only when the node ends, the global response norm is 19% over (65,408 B); taking every
    new_empty_strided + copy_ for AccumulateGrad's, the in-place dropout on a view 256 B; and
    judging a gradient taken over by its storage, not its tensor, the concatenated bias 256 B;
    freeing a temporary at its last reader rather than at the end of its C++ statement, the
    thresholded linear unit 16,384 B short and the map divided by its sum 65,536 B (16%);
    holding what autograd saved to the end of the forward even where its node died with a
    result nothing read, the pooled map nothing reads 32,768 B over (its indices), and holding
    the number a product kept to the step's end though its node died so, the scaled mean nothing
    reads 8 B over (its forward too); laying a
    convolution of a channels-last map out contiguous (the meta kernel's answer, not the CPU's),
    the convolution after a channels-last convolution 8,192 B short (its weight gradient's copy);
    taking the ops of the node a write into a slice makes (CopySlices) for the softmax's before
    it, the slice assigned before a softmax 17,424 B over (one attention matrix held on); copying
    a channels-last map contiguous for its group norm and the norm's gradient (the meta device's
    road, not the CPU's), the group norm of a channels-last map 128 B over (its forward 32,768 B);
    laying a layer norm's gradient out as its meta kernel does, after the incoming gradient's
    permutation (a CPU writes it contiguous), the normed tokens pooled as a map 8,192 B over (a
    copy of that gradient for the matrix product after it); padding a channels-last map contiguous
    (the meta kernel's layout; a CPU pads it channels last), the padded channels-last map 5,632 B
    short; making a batch norm's input gradient where its mask does not ask for one (as the meta
    kernel does, not the CPU's), the batch norm of the input 24 B over; decomposing mish's
    gradient into its composite formula on meta (the CPU runs one fused kernel), the mish after
    a convolution 65,536 B over (four maps); freeing a gradient formula's tensor read by two
    later operators (a named local) at the end of the statement that read it last, and taking
    the statement that named it for part of the one that read it, each map's largest magnitude
    8,192 B over (the two masks `mask` is made of held on) or, the first only, 16,384 B short
    (`self_abs`, freed before the product after it); combining clamp's masks out of place (the
    road of a tensor that looks like a subclass), the map clamped around its mean 4,096 B over
    (a mask), and in place but ending the statement there, as in-place ops on a named tensor do,
    4,096 B short (the mask it reads, freed before the `where`); running cumprod's gradient as
    its composite formula's operators on meta (the road of a tensor that looks like a subclass,
    where a CPU runs one operator), the running product 155,648 B over; holding a named local to
    its node's end, not to the end of its formula's C++ call (the node runs one per gradient
    formula), the map clamped around its mean with its bounds learning 4 B over (the bounds'
    zero); taking renorm's `grad_norm`, a local read once, for a temporary of the return
    statement, each renorm 32,776 B over (its statement's temporaries held through the `where`);
    taking logcumsumexp's locals read once for temporaries, the running log-sum-exp 139,264 B
    over (its formula read as one statement), then, with its lambda's ops taken for its caller's
    statement, 32,768 B over (the lambda's two temporaries held through the `exp`); taking
    sinc's `out` (a local its `where` alone reads) for a temporary of that `where`'s statement,
    the sinc 20,484 B over (the five maps of its statement held until that `where`, made at the
    peak); and the engine's sum of a gradient to its broadcast operand's shape for part of the
    formula's last statement, atan2 with its first map flipped 8,192 B over (with the first
    channel, 2,048 B), held to the end of the formula's one statement, and cdist and lerp
    1,024 B over; not knowing the engine's `grad.sum()` to a 0-dim operand, atan2 with the map's
    mean 4 B over either way round (the sum taken for part of the formula's one statement), and
    the clamp between 0-dim bounds 4 B over where the bounds' call is taken to end with that sum
    (the bounds' shared 0-dim zero held through it); taking norm_backward's `self_scaled` and
    `scale_v`, locals read once, for temporaries of the statement returning their product, the
    3-, 1.5- and 0.5-distances 16,389, 16,393 and 32,772 B over, the vector norms 18,944, 20,992
    and 34,816 B and aten.norm's alike (the power of `self.abs()` and, for p < 1, `self.sgn()`
    held through that product), and i1_backward's `gradx` and copysign's `ratio`, the i1 and
    i1e 32,772 B over and the copysigns 4,096 B (a mask held through the product), and taking
    mvlgamma's reassigned `args` for a temporary, the multivariate log-gamma 16 B over (the
    arange it held first, held through the return);
    and the engine's cast of a gradient to its input's dtype for part of the formula's last
    statement, the 2- and 3-norms in float64 of float32 maps 16,384 B over (the formula's
    temporaries held through the cast); taking prod's gradient road of an input that looks like a
    subclass (exclusive running products from both ends) for a CPU's on randn maps (no zeros),
    the product along the channels 73,728 B over (of the whole maps 81,920 B, in float64 155,648
    and 163,840 B), and that road with its mask and count taken for temporaries 8,192 B short;
    counting the temporaries of a composite a CPU runs as one operator (its workspace there), the
    pairwise distance 16,374 B over (`x1 - x2`), the triplet margin loss 16,372 B, the margin
    ranking loss 32,764 B, the hinge embedding loss 69,624 B, the summed L1 loss 16,380 B (the
    absolute differences the sum reads) and the Poisson loss with Stirling's term 32,760 B, and,
    isfinite run as its composite's four operators, the map with its NaNs and infinities
    replaced 24,576 B (in its gradient);
    counting the zero tensor sgn's gradient of a real map is (which a CPU allocates no byte
    for) as a map, the signs of a map 16,384 B over, and the engine's sum of that zero and the
    map's other gradient as the meta device's ops (a 0-dim zero expanded and a `prims.add` making a
    whole map, which a CPU works out on the meta device, allocating nothing), the map plus its
    signs 16,388 B over, or, that sum made one add, as one the engine makes in place into the zero
    that came first (immutable: a CPU copies the other gradient), the linear map's exponential
    plus its signs 8,192 B short; and counting the copy PyTorch's math-bit
    fallback makes of a conjugate view inside the operator reading it (polar's gradient's
    `grad.conj() * result.sgn()`, a complex product's `grad * other.conj()`) for a tensor of the
    step's, the complex numbers from magnitudes and angles 32,768 B over, the product of two
    spectra 8,192 B, and taking the user's own copy of a conjugate view, read at once and kept,
    for such a copy, the complex map's conjugate resolved and read twice 32,768 B short (cloned,
    8 B); sizing an embedding bag's results by their meta shapes, the bag sums 144 B
    over (offset2bag, which a CPU's fast road never makes), the means and the padded sum 56 B
    short (offset2bag's storage one index longer, max_indices one per bag), the maxes 8 B short;
    and the CTC loss's mean over its target lengths taken for operators of
    their own, 4 B over."""
    build, shape = PROFILED_STEPS[name]
    model = build()
    x = torch.randn(*shape)
    graph = trace(model, [x.shape], training=True)
    predicted = training_timeline(graph).peak_bytes
    everything, lasting = profiled_training_peaks(model, x)
    measured = lasting + x.nbytes
    assert predicted == measured
    assert predicted <= everything + x.nbytes


def _last(operator: str) -> Callable:
    return lambda ops: [next(op for op in reversed(ops) if op.op == operator)]


def _first_after_each(marker: str, operator: str) -> Callable:
    """The first `operator` op after each `marker` op."""

    def found(ops):
        marks = [index for index, op in enumerate(ops) if op.op == marker]
        return [next(op for op in ops[mark:] if op.op == operator) for mark in marks]

    return found


def _norm_backward_locals(ops):
    """norm_backward's `self_scaled` (`self * self.abs().pow_(p - 2)` for p > 2, `self.sgn() *
    self.abs().pow_(p - 1)`, masked for p < 1: the first product after each `pow_`) and `scale_v`
    (`grad / norm.pow(p - 1)` for p > 1: each quotient)."""
    return _first_after_each("aten.pow_", "aten.mul")(ops) + [op for op in ops if op.op == "aten.div"]


# Locals a gradient formula reads once (FunctionsManual.cpp), each found from the formula's text
# among its node's ops, as the ops that make them.
LOCALS_READ_ONCE = {
    # `grad_norm = maxnorm * invnorm * (grad - invnorm * nb)`, the formula's last product: not the
    # mask `norm > maxnorm` its `where` reads too, nor the `.to()` copy of it (float32 maps)
    "renorm": (lambda y: torch.renorm(y, 2, 1, 1.0), "aten.renorm", _last("aten.mul")),
    "renorm of float64 maps": (lambda y: torch.renorm(y.double(), 2, 1, 1.0), "aten.renorm", _last("aten.mul")),
    # `out = grad * (...)`, its last product: not the mask or the 0-dim zeros its `where` reads too
    "sinc": (torch.sinc, "aten.sinc", _last("aten.mul")),
    # `log_grad_positive` and `_negative` (the `where`s), `output_pos` and `_neg` (the `exp`s): not
    # the `result` the forward made, which the formula subtracts from the first two
    "logcumsumexp": (
        lambda y: y.logcumsumexp(1),
        "aten.logcumsumexp",
        lambda ops: [op for op in ops if op.op in ("aten.where", "aten.exp")],
    ),
    # norm_backward's locals (`_norm_backward_locals`), in each of dist's two calls of it: not
    # `self - other`, nor `self.sgn()`, the first factors of the products making `self_scaled`,
    # nor (p < 1) the product `self_scaled * grad` its return multiplies by `norm.pow(1 - p)`
    **{
        f"dist, p = {p}": (lambda y, p=p: torch.dist(y, y.flip(1), p), "aten.dist", _norm_backward_locals)
        for p in (3, 1.5, 0.5)
    },
    **{
        f"a vector norm, p = {p}": (
            lambda y, p=p: torch.linalg.vector_norm(y, p, dim=1),
            "aten.linalg_vector_norm",
            _norm_backward_locals,
        )
        for p in (3, 1.5, 0.5)
    },
    # prod_backward's `zero_mask = (input == 0)` and `slice_zero_count = zero_mask.sum(dim, true)`,
    # each read once by a `sum` (the second's, `slice_zero_count.sum().item()`, a temporary)
    "prod": (
        lambda y: y.prod(1),
        "aten.prod",
        lambda ops: [next(op for op in ops if op.op == operator) for operator in ("aten.eq", "aten.sum")],
    ),
    # i1_backward's `gradx = (safe_self.i0() - (result * safe_self.reciprocal()))`, an argument of
    # the second `where` (the second up to PyTorch 2.14, the third from 2.15): not the forward's
    # `self`, which the first `where` reads there, nor the 0-dim half
    "i1": (torch.special.i1, "aten.special_i1", _last("aten.sub")),
    # mvlgamma's second `args = args.add(self.unsqueeze(-1))`, read by the `sum` once digamma_ wrote it
    "mvlgamma": (lambda y: torch.mvlgamma(y.abs() + 3, 4), "aten.mvlgamma", _last("aten.add")),
    # copysign's `ratio = result / self`, read by `grad * ratio` once masked in place
    "copysign": (lambda y: torch.copysign(y, y.flip(1)), "aten.copysign", _last("aten.div")),
    "aten.norm along a dim, p = 3": (
        lambda y: torch.ops.aten.norm.ScalarOpt_dim(y, 3, [1]),
        "aten.norm",
        _norm_backward_locals,
    ),
    # none for p = 2 (`grad * (self / norm).masked_fill_(norm == 0, 0)`) or inf (its two locals are read twice)
    **{
        f"dist, p = {p}": (lambda y, p=p: torch.dist(y, y.flip(1), p), "aten.dist", lambda ops: [])
        for p in (2, math.inf)
    },
}


@pytest.mark.parametrize("name", LOCALS_READ_ONCE)
def test_the_locals_a_formula_reads_once_are_those_its_text_names(name):
    """The trace names a formula's locals read once (which its ops cannot tell from temporaries)
    by the operator and the argument that reads each, through a `.to()` (renorm's
    `grad_norm.to(grad.scalar_type())`): the tensors those ops make, and no other tensor the
    same operator reads. Named by the operator alone, renorm's mask (and, for float32 maps, the
    `.to()` copy) were taken for locals too."""
    call, forward_operator, makers = LOCALS_READ_ONCE[name]
    graph = trace(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(call)), [(2, 3, 16, 16)], training=True)
    origin = next(index for index, op in enumerate(graph.ops) if op.op == forward_operator)
    formula = [op for op in graph.backward_ops if op.origin == origin]
    assert graph.engine.named_locals == {tensor.storage for op in makers(formula) for tensor in op.outputs}


# Steps whose peak op the profiler names alike (its outermost operators are the trace's here).
PEAK_OPS = [
    "conv stack",
    "resnet18",
    "divided by its sum",
    "each map's largest magnitude",
    "a 2-norm along the channels",
    "the distance of a map to its flip",
    "the largest difference of a map from its flip",
    "a running log-sum-exp along the channels",
    "the 0.5-distance of a map to its flip",
    "a 0.5-norm along the channels",
    "a product along the channels",
]


@pytest.mark.parametrize("name", PEAK_OPS)
def test_the_training_peak_is_at_the_op_the_profiler_peaks_in(name):
    """The op at which the step's timeline peaks (the one `memory --train` names) is the one in
    which a real CPU step's allocations peak under torch.profiler: the same operator, as many
    times run by then. dist's gradient `-norm_backward(grad, self - other, p, result)` frees
    norm_backward's quotient and mask as the function returns, before the negation: held
    through it, the negation tied the second gradient's product at the peak and came first
    (p = inf's `self_abs` and `mask` alike). logcumsumexp's lambda frees its inner flip and
    running log-sum-exp as it returns: held through the `exp`, that was the peak op."""
    build, shape = PROFILED_STEPS[name]
    model = build()
    x = torch.randn(*shape)
    timeline = training_timeline(trace(model, [x.shape], training=True))
    at = timeline.steps[timeline.peak_step].op
    runs = sum(step.op == at for step in timeline.steps[: timeline.peak_step + 1])
    assert (at.removeprefix("aten."), runs) == profiled_training_peak_operator(model, x)


PYTHON_BACKWARDS = {
    "swish": (partial(WithACustomActivation, SwishFunction), (3, 16, 16)),
    "swish keeping its input on its context": (partial(WithACustomActivation, SwishOnItsContext), (3, 16, 16)),
    "mish": (partial(WithACustomActivation, MishFunction), (3, 16, 16)),
    "swish of a weight": (WithACustomFunctionOfAWeight, (64,)),
    "a sum of three named terms": (partial(WithACustomActivation, SumOfThreeTerms), (3, 16, 16)),
}


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("name", PYTHON_BACKWARDS)
def test_a_python_backward_frees_its_temporaries_as_python_does(name, batch):
    """A custom autograd Function's Python backward (timm's memory-efficient Swish and
    Mish) frees each unnamed temporary as soon as the op after it has read it, and a local
    variable (x_sigmoid) when the function returns, not at the end of a C++ statement; the
    gradient it returns goes on to the engine (to AccumulateGrad, for the weight). Equal to
    the byte against a real CPU step. Holding every temporary to the node's end, as C++ holds
    a statement's, the swish was over by three maps less 8 B (24,568 B at batch 1, 73,720 at
    batch 3: the 8-byte tensor `1 + t` wraps its 1 in was not counted), the mish by two (16,384,
    49,152), the swish of a weight by 196,600 and 196,600; freeing every one at its last reader
    instead, the mish would be one map short (x_sigmoid, read last two ops before its return).
    Taking an add of two tensors the backward made for the engine's sum of two gradients (folded
    into its first in place), the sum of three named terms was a map short (8,192 B at batch 1,
    24,576 at batch 3): the engine's adds are those it runs after a node's formula returns."""
    build, shape = PYTHON_BACKWARDS[name]
    x = torch.randn(batch, *shape)
    totals = archprof.analyze(build(), input_size=shape, batch=batch, training=True).totals
    _, lasting = profiled_training_peaks(build(), x)
    assert totals.training_peak_bytes == totals.param_bytes + lasting + x.nbytes


def test_a_python_backward_in_a_fresh_process():
    """The first analysis of a process, as the CLI's: `1 - x_sigmoid` runs rsub's meta
    decomposition, which imports torch's dynamo the first time, and that import leaves frames
    in a reference cycle that holds the backward's frame, its locals and temporaries with it,
    until the cyclic collector runs (off during an analysis). Without a collection after that
    import, the swish's temporaries seemed held to the end: 8,184 B over at batch 1."""
    code = (
        "import archprof; from tests.models import WithACustomActivation; "
        "print(archprof.analyze(WithACustomActivation(), input_size=(3, 16, 16), batch=1, training=True)"
        ".totals.training_peak_bytes)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1]
    )
    x = torch.randn(1, 3, 16, 16)
    model = WithACustomActivation()
    _, lasting = profiled_training_peaks(model, x)
    parameters = sum(p.nbytes for p in model.parameters())
    assert int(done.stdout) == parameters + lasting + x.nbytes


MAPS = torch.empty(2, 12, 5, 7, device="meta")


@pytest.mark.parametrize(
    "tensor",
    [
        MAPS,
        MAPS[:, :8],  # a channel slice: gaps between the samples
        MAPS[:1],  # a batch slice: one block
        MAPS.permute(0, 2, 3, 1),
        MAPS[:, :, ::2],
        MAPS[:, :1],
        MAPS.expand(3, -1, -1, -1, -1),  # each element read three times
        MAPS.transpose(2, 3)[..., :3],
        torch.empty(6, device="meta")[::2],
        torch.empty(1, 5, 1, device="meta"),
    ],
)
def test_a_gradient_is_dense_where_torch_says_so(tensor):
    """The engine adds into a waiting gradient in place only where it is non-overlapping
    and dense: the recorder's test of that, against torch's own."""
    assert is_dense(tuple(tensor.shape), tensor.stride()) == is_non_overlapping_and_dense_or_false(tensor)


# --- the command and --fit ---------------------------------------------------------------------

runner = CliRunner()


def test_a_step_traced_on_the_cpu_matches_the_profiler():
    """A model that cannot run on meta is traced with a real CPU forward and backward pass
    (`trace(real=True)`): its step follows the same timeline, each parameter's gradient
    left in `.grad` to the end (9,280 B short before the real trace recorded AccumulateGrad
    as the meta one does)."""
    model, x = ReadsItsValues(), torch.randn(2, 3, 32, 32)
    with pytest.warns(ArchprofWarning, match="cannot run on the meta device"):
        totals = archprof.analyze(model, input_size=(3, 32, 32), batch=2, training=True).totals
    _, lasting = profiled_training_peaks(model, x)
    assert totals.training_peak_bytes == totals.param_bytes + lasting + x.nbytes


@pytest.mark.parametrize("name", PROFILED_STEPS)
def test_the_training_forward_peak_matches_the_profiler(name):
    """The forward of the same step alone (train mode, autograd saving what the backward
    pass reads), against the liveness of the step's forward ops with the input and what
    autograd saved held: its peak is the training report's "Forward peak". As in inference,
    a tensor is held until the forward lets go of it, not freed at its last reader: the
    MLPs' updates held in a list until the forward returns read 16,384 B (6%) short by the
    last-reader rule. Equal to the byte, as the step's, checkpointed blocks' random-number
    states included, and a batch norm's statistics in a checkpointed block, where autograd
    keeps nothing of them: they die before aten.batch_norm (which the graph records as
    native_batch_norm) returns, its workspace (the trace held them to the next operator, 128 B
    over)."""
    build, shape = PROFILED_STEPS[name]
    model = build()
    x = torch.randn(*shape)
    graph = trace(model, [x.shape], training=True)
    live = liveness(graph)
    predicted = max(live.start, *live.during)
    everything, lasting = profiled_peaks(model, x, training=True)
    measured = lasting + x.nbytes
    assert predicted == measured
    assert predicted <= everything + x.nbytes


def test_memory_train_shows_the_step_peak_where_it_happens():
    totals = archprof.analyze("lenet5", training=True, optimizer="momentum").totals
    result = runner.invoke(app, ["memory", "lenet5", "--train", "--optimizer", "momentum"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    label = f"Training step peak (momentum; at {totals.training_peak_layer}, {totals.training_peak_phase})"
    assert label in result.stdout and f"{totals.training_peak_bytes:,} B" in result.stdout
    document = json.loads(runner.invoke(app, ["memory", "lenet5", "--train", "-f", "json"]).stdout)
    assert document["totals"]["training_peak_phase"] == "backward"
    assert document["totals"]["training_peak_bytes"] > document["totals"]["peak_memory_bytes"]


def test_memory_train_says_when_the_peak_is_adams_update():
    """lenet5's fc1 weight (192,000 B) makes Adam's update the step's peak: the backward
    pass's gradients, both moments, and that weight's denominator twice over."""
    totals = archprof.analyze("lenet5", training=True, optimizer="adam").totals
    assert totals.training_peak_phase == "optimizer step"
    result = runner.invoke(app, ["memory", "lenet5", "--train", "--optimizer", "adam"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "Training step peak (adam; in the optimizer step)" in result.stdout
    assert f"{totals.training_peak_bytes:,} B" in result.stdout


def test_a_training_summary_names_its_peaks_for_what_they_are(tmp_path):
    """In a training report the forward's peak holds what autograd saved: it is not the
    inference peak, and the step's own peak (backward included) stands beside it, in the
    terminal table, the HTML page and the report's repr alike."""
    totals = archprof.analyze("lenet5", training=True).totals
    step = (
        f"Training step peak (sgd; at {totals.training_peak_layer}, {totals.training_peak_phase})",
        f"{totals.training_peak_bytes:,} B",
    )
    forward = (f"Forward peak, saved activations held (at {totals.peak_layer})", f"{totals.peak_memory_bytes:,} B")
    page = tmp_path / "lenet5.html"
    result = runner.invoke(app, ["summary", "lenet5", "--train", "--wide"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    written = runner.invoke(app, ["summary", "lenet5", "--train", "-o", str(page)])
    assert written.exit_code == 0, written.output
    for shown in (result.stdout, page.read_text()):
        assert "Peak inference memory" not in shown
        assert all(text in shown for text in (*step, *forward))
    assert f"training step peak {human_bytes(totals.training_peak_bytes)}" in repr(
        archprof.analyze("lenet5", training=True)
    )


def test_fit_train_fits_the_step_peak():
    budget = 3_000_000
    found = fit_batch("lenet5", budget, training=True, optimizer="adam")
    at = archprof.analyze("lenet5", batch=found.batch, training=True, optimizer="adam").totals
    beyond = archprof.analyze("lenet5", batch=found.batch + 1, training=True, optimizer="adam").totals
    assert found.bytes_at_batch == at.training_peak_bytes <= budget < beyond.training_peak_bytes
    assert found.bytes_at_next == beyond.training_peak_bytes


def test_compare_sets_each_training_step_peak_beside_the_forward_peak():
    """compare(training=True): the step's peak against a real CPU step (the profiler), and
    peak_memory_bytes the forward's, as the report's totals give it."""
    model = TwoHeads()
    x = torch.randn(8, 64)
    frame = archprof.compare([model], input_size=(64,), batch=8, training=True)
    totals = archprof.analyze(model, input_size=(64,), batch=8, training=True).totals
    _, lasting = profiled_training_peaks(model, x)
    assert frame["training_peak_bytes"].iloc[0] == totals.param_bytes + lasting + x.nbytes
    assert frame["peak_memory_bytes"].iloc[0] == totals.peak_memory_bytes


def test_a_model_already_in_the_mode_asked_keeps_its_modules_own():
    """train() then a BatchNorm frozen by its own eval(): the step is traced with that norm
    in evaluation (2 FLOPs an element, formulas.md, not 5; no statistics computed), and
    its peak is the real step's with the norm frozen; the modes are put back after."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    model.train()
    model[1].eval()
    x = torch.randn(2, 3, 8, 8)
    report = archprof.analyze(model, input_size=(3, 8, 8), batch=2, training=True)
    norm = next(r for r in report.rows() if r["layer"] == "1")
    assert norm["elementwise_flops"] == 2 * 2 * 8 * 6 * 6
    predicted = training_timeline(trace(model, [x.shape], training=True)).peak_bytes

    def step():
        output = model(x)
        output.backward(torch.ones_like(output))
        del output

    step()
    model.zero_grad(set_to_none=True)
    _, lasting = allocation_peaks(step)
    assert predicted == lasting + x.nbytes
    assert model.training and not model[1].training
    # memory --measure's real step (after its inference forward) has the norm frozen too
    from archprof.load import load_model
    from archprof.measure.peak_memory import predicted_and_measured

    _, measured = predicted_and_measured(load_model(model), [(3, 8, 8)], 2, None, "sgd").steps
    held = sum(t.nbytes for t in (*model.parameters(), *model.buffers())) + x.nbytes
    assert measured.measured.bytes == held + lasting


def test_monte_carlo_dropout_in_an_inference_analysis_is_kept():
    """eval() then a Dropout's own train(): the inference forward draws its mask, as the
    real one does (its output and mask in memory)."""
    model = nn.Sequential(nn.Linear(16, 16), nn.Dropout(0.5))
    model.eval()
    model[1].train()
    report = archprof.analyze(model, input_size=(16,))
    assert "bernoulli_" in next(r for r in report.rows() if r["layer"] == "1")["operators"]


class _UnderNoGrad(nn.Module):
    """A frozen part run under no_grad in a training step, then a trainable head."""

    def __init__(self, frozen: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.frozen, self.head = frozen, head

    def forward(self, x):
        with torch.no_grad():
            features = self.frozen(x)
        return self.head(features)


@pytest.mark.parametrize(
    ("build", "shape"),
    [
        # max_pool2d's argmax indices: 4 x 16 x 16 x 16 int64, 131,072 B
        (
            lambda: _UnderNoGrad(
                nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)),
                nn.Sequential(nn.Conv2d(16, 4, 1), nn.Flatten(), nn.Linear(4 * 16 * 16, 10)),
            ),
            (4, 3, 32, 32),
        ),
        # layer_norm's mean and rstd: 2 x 20 floats, 160 B
        (lambda: _UnderNoGrad(nn.Sequential(nn.Linear(32, 64), nn.LayerNorm(64)), nn.Linear(64, 10)), (20, 32)),
        # dropout's random mask: 20 x 128 floats, 10,240 B
        (lambda: _UnderNoGrad(nn.Sequential(nn.Linear(32, 128), nn.Dropout(0.1)), nn.Linear(128, 10)), (20, 32)),
        (
            lambda: _UnderNoGrad(nn.Sequential(nn.Linear(32, 128), nn.Dropout(0.1, inplace=True)), nn.Linear(128, 10)),
            (20, 32),
        ),
    ],
    ids=["max-pool-indices", "layer-norm-statistics", "dropout-mask", "in-place-dropout-mask"],
)
def test_what_a_composite_lets_go_of_under_no_grad_in_a_step_is_not_held(build, shape):
    """A CPU lets go of these inside the operator that made them where no gradient is
    recorded: the step's peak counted them held until the next operator (or, a dropout's
    mask, held through its product: its composite was not one CPU operator)."""
    model = build()
    real = real_optimizer_step(model, torch.randn(*shape), "sgd")
    totals = archprof.analyze(model, input_size=shape[1:], batch=shape[0], training=True).totals
    assert totals.training_peak_bytes == real.peak_bytes


def test_chains_of_sums_added_into_again_resolve_to_their_last_storage():
    """Each storage a gradient sum moved into -> the last of its chain, walked once per link
    (a training step of 8,000 residual blocks walked 32 million links, one chain per storage).
    The oracle: following each chain to its end, step by step."""
    import random

    from archprof.passes.training_memory import _finals

    rng = random.Random(0)
    for _ in range(300):
        storages = rng.sample(range(100), 40)
        moved = {}
        for place, storage in enumerate(storages[:-1]):  # each into a later one: no cycle
            if rng.random() < 0.7:
                moved[storage] = rng.choice(storages[place + 1 :])
        expected = {}
        for storage in moved:
            end = storage
            while end in moved:
                end = moved[end]
            expected[storage] = end
        finals = _finals(moved)
        assert finals == expected and list(finals) == list(moved)


class _HookedGradient(nn.Module):
    """A ReLU's output whose gradient a tensor hook halves: the engine replaces the gradient
    coming in with the hook's result and lets go of the first as the hook returns."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 4, 1)

    def forward(self, x):
        y = torch.relu(self.a(x))
        if y.requires_grad:
            y.register_hook(lambda gradient: gradient * 0.5)
        return self.b(y)


def test_a_tensor_hook_that_replaces_a_gradient_frees_the_one_it_replaced():
    """The hook's op was taken for one of the node's, and the gradient it replaced held until
    the node (the ReLU's) had run: the step's peak a 16-channel map over (65,536 B at batch
    4, 16x16); its `0.5`, a tensor of 8 B while the multiplication runs, was not counted.
    The oracle: the allocator during a real CPU step."""
    x = torch.randn(4, 3, 16, 16)
    totals = archprof.analyze(_HookedGradient(), input_size=(3, 16, 16), batch=4, training=True).totals
    _, lasting = profiled_training_peaks(_HookedGradient(), x)
    assert totals.training_peak_bytes == totals.param_bytes + lasting + x.nbytes


class _SelectivelyCheckpointedBlocks(nn.Module):
    """Two residual blocks checkpointed with a policy that saves their convolutions' outputs
    (selective checkpointing): its cache holds them for the replay, apart from what autograd saves."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1)
            )
            for _ in range(2)
        )
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

        def policy(_context, operator, *_args, **_kwargs):
            saved = operator == torch.ops.aten.convolution.default
            return CheckpointPolicy.MUST_SAVE if saved else CheckpointPolicy.PREFER_RECOMPUTE

        x = self.stem(x)
        for block in self.blocks:
            contexts = partial(create_selective_checkpoint_contexts, policy)
            x = x + checkpoint(block, x, use_reentrant=False, context_fn=contexts)
        return self.head(x.mean((2, 3)))


def test_selective_checkpointing_holds_the_outputs_its_cache_saved_for_the_replay():
    """The cache of a policy that saves the convolutions holds their outputs from the forward
    until the replay takes them, or the block's frame dies: not counted, the step's peak read
    two 4x16x32x32 maps low (2,206,944 B of 2,731,232). The oracle: the allocator during a
    real CPU step."""
    x = torch.randn(4, 3, 32, 32)
    totals = archprof.analyze(_SelectivelyCheckpointedBlocks(), input_size=(3, 32, 32), batch=4, training=True).totals
    _, lasting = profiled_training_peaks(_SelectivelyCheckpointedBlocks(), x)
    assert totals.training_peak_bytes == totals.param_bytes + totals.buffer_bytes + lasting + x.nbytes
