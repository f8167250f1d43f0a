"""Training FLOPs: the backward pass traced on meta, against PyTorch's FlopCounterMode run
around a real CPU forward and backward of the same model (matrix products and convolutions,
all FlopCounterMode counts), and against gradients worked by hand."""

import copy
import gc

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.checkpoint import checkpoint
from torch.utils.flop_counter import FlopCounterMode

import archprof
from archprof.errors import ArchprofWarning
from archprof.meta import on_meta
from archprof.passes.flops import op_cost
from archprof.report.columns import TRAINING_COLUMNS
from archprof.tracing.trace import trace
from archprof.tracing.training_recorder import TrainingRecorder
from archprof.zoo import MODELS
from tests.cli import cli, one_error_line
from tests.models import Calls, Checkpointed


def counted_training_flops(model: nn.Module, *inputs: torch.Tensor) -> FlopCounterMode:
    """FlopCounterMode around one real training step: forward, then backward from ones."""
    model.train()
    with FlopCounterMode(display=False) as counter:
        output = model(*inputs)
        if output.requires_grad:  # else every parameter is frozen: no backward pass
            output.backward(torch.ones_like(output))
    return counter


def training_report(model: nn.Module, size, batch: int = 2):
    return archprof.analyze(model, input_size=size, batch=batch, training=True)


# --- hand-worked ---------------------------------------------------------------------------


def test_a_two_layer_perceptron_worked_by_hand():
    # batch 4: fc1 [4, 3] @ [3, 5] is 60 MACs, fc2 [4, 5] @ [5, 2] 40. The backward: fc1's
    # weight gradient x^T @ g (60 MACs) and no input gradient (the network's input needs
    # none); fc2's weight gradient (40) and its input gradient g @ W (40).
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    report = training_report(model, (3,), batch=4)
    rows = report.columns
    assert rows["layer"] == ["0", "1", "2"]
    assert rows["macs"] == [60, 0, 40]
    assert rows["backward_input_macs"] == [0, 0, 40]
    assert rows["backward_weight_macs"] == [60, 0, 40]
    assert rows["training_flops"] == [2 * (60 + 60), 0, 2 * (40 + 40 + 40)]
    totals = report.totals
    assert totals.training_flops == 2 * (100 + 100 + 40) == 480  # not 3 x 200 = 600
    # Elementwise: ReLU's gradient one per element (4 x 5), the two bias gradients sum the
    # output gradients (4 x 5 and 4 x 2).
    assert totals.backward_elementwise_flops == 20 + 20 + 8
    assert counted_training_flops(model, torch.randn(4, 3)).get_total_flops() == 480


def test_frozen_layers_compute_no_weight_gradient_and_nothing_flows_into_a_frozen_stem():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    for parameter in model[0].parameters():
        parameter.requires_grad_(False)
    for parameter in model[4].parameters():
        parameter.requires_grad_(False)
    report = training_report(model, (3, 10, 10), batch=1)
    macs = dict(zip(report.columns["layer"], report.columns["macs"], strict=True))
    # Hand: conv 0 8x8x8 outputs x 27 = 13,824 MACs; conv 2 8x6x6 x 72 = 20,736; conv 4 4x4x4 x 72 = 4,608.
    assert (macs["0"], macs["2"], macs["4"]) == (13_824, 20_736, 4_608)
    by_layer = {
        layer: (inputs, weights)
        for layer, inputs, weights in zip(
            report.columns["layer"],
            report.columns["backward_input_macs"],
            report.columns["backward_weight_macs"],
            strict=True,
        )
    }
    assert by_layer["0"] == (0, 0)  # frozen, and nothing before it needs a gradient
    assert by_layer["2"] == (0, 20_736)  # its input comes from the frozen stem
    assert by_layer["4"] == (4_608, 0)  # frozen, but conv 2's weights need the gradient through it
    expected = counted_training_flops(model, torch.randn(1, 3, 10, 10)).get_total_flops()
    assert report.totals.training_flops == expected == 2 * (13_824 + 20_736 + 4_608 + 20_736 + 4_608)


@pytest.mark.parametrize("frozen_norm", [False, True])
def test_a_batch_norm_on_its_running_statistics_has_a_cheaper_input_gradient(frozen_norm):
    """A batch norm that computes its statistics sends back gamma / sigma · (grad - mean(grad)
    - x_hat · mean(grad · x_hat)): 4 FLOPs per element; one frozen by eval() in a training step
    normalises by constants, its input gradient grad · gamma / sigma: 1. Its parameter
    gradients are 5 either way (x_hat again 2, grad · x_hat 1, the two sums 2)."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    if frozen_norm:
        model[1].eval()
    rows = training_report(model, (3, 5, 5), batch=2).columns
    elements = 2 * 4 * 5 * 5  # the gradient reaching the norm
    by_layer = dict(zip(rows["layer"], rows["backward_elementwise_flops"], strict=True))
    assert by_layer["1"] == ((1 if frozen_norm else 4) + 5) * elements
    assert by_layer["2"] == elements  # ReLU's gradient, for scale


def test_checkpointing_recomputes_the_forward_inside_the_backward():
    model = Checkpointed()
    report = training_report(model, (3, 6, 6))
    # The backward of block.2 needs block.1's output: block.0 and block.1 run again; block.2,
    # whose output nothing saved needs, does not (checkpoint stops early).
    conv = 2 * 8 * 6 * 6 * 8 * 9  # batch 2, 8 channels of 6x6 outputs, 8 x 3 x 3 weights each
    recomputed = dict(zip(report.columns["layer"], report.columns["recomputed_macs"], strict=True))
    assert recomputed == {"stem": 0, "block.0": conv, "block.1": 0, "block.2": 0, "head": 0}
    totals = report.totals
    assert totals.training_flops == totals.flops + 2 * (totals.backward_input_macs + totals.backward_weight_macs + conv)
    expected = counted_training_flops(copy.deepcopy(model), torch.randn(2, 3, 6, 6)).get_total_flops()
    assert totals.training_flops == expected


class _CheckpointedInner(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


class _CheckpointedStage(nn.Module):
    def __init__(self, inner, reentrant):
        super().__init__()
        self.inner, self.reentrant = inner, reentrant

    def forward(self, x):
        return checkpoint(self.inner, x, use_reentrant=self.reentrant)


class _HoldsTheCheckpointedBlockTwice(nn.Module):
    """The checkpointed block held first as `block`, then by the stage that runs it."""

    def __init__(self, reentrant, shared):
        super().__init__()
        inner = _CheckpointedInner()
        if shared:
            self.block = inner
        self.pre = nn.Linear(8, 8)
        self.stage = _CheckpointedStage(inner, reentrant)

    def forward(self, x):
        return self.stage(self.pre(x))


@pytest.mark.parametrize("reentrant", [False, True])
def test_a_checkpointed_block_held_under_two_names_is_recomputed_under_the_name_it_ran_by(reentrant):
    """The backward pass runs the block again outside any module call: under the name its
    forward call had (it took the first, `block.a`, and its recomputation and gradients
    missed their forward rows). The oracle: the same network without the second name."""
    columns = ("layer", "call", "flops", "backward_flops", "recomputed_macs")
    rows = []
    for shared in (True, False):
        torch.manual_seed(0)
        report = archprof.analyze(_HoldsTheCheckpointedBlockTwice(reentrant, shared), input_size=(8,), training=True)
        rows.append([tuple(row[c] for c in columns) for row in report.rows()])
    assert rows[0] == rows[1]
    assert ("stage.inner.a", 0) in [row[:2] for row in rows[0]]


def test_reentrant_checkpointing_recomputes_the_whole_block_and_attributes_its_gradients():
    class Reentrant(Checkpointed):
        def forward(self, x):
            return self.head(checkpoint(self.block, self.stem(x), use_reentrant=True))

    model = Reentrant()
    report = training_report(model, (3, 6, 6))
    conv = 2 * 8 * 6 * 6 * 8 * 9  # as above
    columns = report.columns
    by_layer = {
        layer: (recomputed, inputs, weights)
        for layer, recomputed, inputs, weights in zip(
            columns["layer"],
            columns["recomputed_macs"],
            columns["backward_input_macs"],
            columns["backward_weight_macs"],
            strict=True,
        )
    }
    # The block runs again from its saved input, both convolutions; each layer's gradients
    # stay in its own row.
    assert by_layer["block.0"] == (conv, conv, conv)
    assert by_layer["block.2"] == (conv, conv, conv)
    assert by_layer["stem"] == (0, 0, 2 * 8 * 6 * 6 * 3 * 9)
    expected = counted_training_flops(copy.deepcopy(model), torch.randn(2, 3, 6, 6)).get_total_flops()
    assert report.totals.training_flops == expected


class HeadAtTwoSizes(nn.Module):
    """One head called on an 8x8 map, then on a 4x4 one, each call checkpointed."""

    def __init__(self, reentrant: bool):
        super().__init__()
        self.stem, self.down = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 2, stride=2)
        self.head = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
        self.reentrant = reentrant

    def forward(self, x):
        a = self.stem(x)
        b = self.down(a)
        return torch.cat(
            [checkpoint(self.head, t, use_reentrant=self.reentrant).flatten(1) for t in (a, b)],
            dim=1,
        )


@pytest.mark.parametrize("reentrant", [False, True])
def test_each_call_of_a_block_checkpointed_twice_recomputes_its_own_row(reentrant):
    # The backward pass recomputes the last checkpointed call first: its ops are the 4x4
    # call's, not the head's first call's.
    model = HeadAtTwoSizes(reentrant)
    report = training_report(model, (3, 8, 8))
    columns = report.columns
    by_call = {
        (layer, call): (macs, recomputed, inputs, weights, elementwise)
        for layer, call, macs, recomputed, inputs, weights, elementwise in zip(
            columns["layer"],
            columns["call"],
            columns["macs"],
            columns["recomputed_macs"],
            columns["backward_input_macs"],
            columns["backward_weight_macs"],
            columns["backward_elementwise_flops"],
            strict=True,
        )
    }
    # Batch 2, 4 -> 4 channels, 3x3: 2 x 4 x 8 x 8 x 4 x 9 MACs on the 8x8 map, 2 x 4 x 4 x 4 x 4 x 9 on the 4x4.
    large, small = 2 * 4 * 8 * 8 * 4 * 9, 2 * 4 * 4 * 4 * 4 * 9
    assert (large, small) == (18_432, 4_608)
    # head.0 runs again in either checkpointing, head.2 (whose output nothing saved needs)
    # only in the reentrant one, which runs the whole block; each gradient as large as its forward.
    for call, conv in ((0, large), (1, small)):
        assert by_call[("head.0", call)][:4] == (conv, conv, conv, conv)
        assert by_call[("head.2", call)][:4] == (conv, conv if reentrant else 0, conv, conv)
    # The ReLU's gradient one per element (2 x 4 x 8 x 8, then 2 x 4 x 4 x 4), and as many for
    # its recomputation.
    assert by_call[("head.1", 0)][4] == 2 * 512
    assert by_call[("head.1", 1)][4] == 2 * 128
    expected = counted_training_flops(copy.deepcopy(model), torch.randn(2, 3, 8, 8)).get_total_flops()
    assert report.totals.training_flops == expected


class CheckpointedFunction(nn.Module):
    """A function checkpointed: a product with a parameter and a tanh in the model's own code,
    then a layer; `nested`, inside a function checkpointed too, with a layer after it."""

    def __init__(self, reentrant: bool, nested: bool = False):
        super().__init__()
        self.a, self.d = nn.Linear(6, 6), nn.Linear(6, 3)
        self.w = nn.Parameter(torch.randn(6, 6))
        self.reentrant, self.nested = reentrant, nested
        if nested:
            self.e = nn.Linear(3, 3)

    def f(self, t):
        return self.d(torch.tanh(t @ self.w))

    def outer(self, t):
        return self.e(checkpoint(self.f, t, use_reentrant=self.reentrant))

    def forward(self, x):
        return checkpoint(self.outer if self.nested else self.f, self.a(x), use_reentrant=self.reentrant)


@pytest.mark.parametrize("reentrant", [False, True])
def test_ops_a_checkpointed_function_runs_itself_are_recomputed_on_its_row(reentrant):
    # `t @ w` ([2, 6] @ [6, 6], 72 MACs) and the tanh (12 elements) run in the model's own
    # forward: their recomputation is the model's row's, not d's (whose node asks for it).
    model = CheckpointedFunction(reentrant)
    report = training_report(model, (6,))
    columns = report.columns
    assert columns["layer"] == ["a", "", "d"]
    assert columns["macs"] == [72, 72, 36]
    # d ([2, 6] @ [6, 3], 36 MACs) runs again only in the reentrant checkpointing (the whole
    # function); the non-reentrant one stops once it has what d's gradient reads.
    assert columns["recomputed_macs"] == [0, 72, 36 if reentrant else 0]
    # t @ w's gradients (72 MACs each) stay on its row too, in either checkpointing.
    assert columns["backward_input_macs"] == [0, 72, 36]
    assert columns["backward_weight_macs"] == [72, 72, 36]
    # The tanh's gradient and its recomputation (12 each); d's bias gradient sums [2, 3].
    assert columns["backward_elementwise_flops"] == [12, 24, 6]
    expected = counted_training_flops(copy.deepcopy(model), torch.randn(2, 6)).get_total_flops()
    assert report.totals.training_flops == expected


def test_ops_of_a_nested_checkpoint_are_recomputed_on_their_own_row():
    # Non-reentrant: e's gradient asks for the outer recomputation, which runs the inner
    # function again (t @ w, the tanh, d) and stops at e's product, whose operand it needs;
    # d's gradient then asks for the inner one, which runs t @ w and the tanh again and stops
    # at d's product: t @ w (72 MACs) is recomputed twice, on the model's row; d's product
    # (36) once, on d's; e's never.
    model = CheckpointedFunction(reentrant=False, nested=True)
    report = training_report(model, (6,))
    columns = report.columns
    assert columns["layer"] == ["a", "", "d", "e"]
    assert columns["recomputed_macs"] == [0, 2 * 72, 36, 0]
    expected = counted_training_flops(copy.deepcopy(model), torch.randn(2, 6)).get_total_flops()
    assert report.totals.training_flops == expected


def test_checkpointing_saves_less_for_the_backward():
    class Plain(Checkpointed):
        def forward(self, x):
            return self.head(self.block(self.stem(x)))

    saved = [training_report(m, (3, 6, 6)).totals.saved_activation_bytes for m in (Plain(), Checkpointed())]
    assert saved[1] < saved[0]


# --- against FlopCounterMode ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name, size",
    [("lenet5", (1, 32, 32)), ("vgg11", (3, 32, 32)), ("resnet18", (3, 32, 32)), ("alexnet", (3, 63, 63))],
)
def test_training_flops_of_built_in_models_equal_flop_counter_mode(name, size):
    report = archprof.analyze(name, input_size=size, batch=2, training=True)
    counter = counted_training_flops(MODELS[name].build(), torch.randn(2, *size))
    assert report.totals.training_flops == counter.get_total_flops()
    totals = report.totals
    # Not three times the forward: the first layer computes no input gradient.
    assert totals.backward_weight_macs == totals.macs
    assert totals.backward_input_macs == totals.macs - report.columns["macs"][0]


def test_every_layer_of_a_chain_pays_its_gradient_products():
    # For a dense layer each gradient product is as large as its forward (dL/dW = x^T g,
    # dL/dx = g W^T); the first layer sends no gradient to the network's input. (Per module,
    # FlopCounterMode is no oracle: its module tracker gives the last layer's backward, and
    # a residual branch's, to other modules; its totals are right, as above.)
    report = archprof.analyze("vgg11", input_size=(3, 32, 32), batch=2, training=True)
    rows = [
        (macs, inputs, weights)
        for kind, macs, inputs, weights in zip(
            report.columns["module_type"],
            report.columns["macs"],
            report.columns["backward_input_macs"],
            report.columns["backward_weight_macs"],
            strict=True,
        )
        if kind in ("Conv2d", "Linear")
    ]
    assert len(rows) == 11
    assert rows[0][1] == 0 and rows[0][2] == rows[0][0] > 0
    assert all(inputs == weights == macs > 0 for macs, inputs, weights in rows[1:])


def test_a_grouped_convolution_costs_its_groups_as_separate_convolutions():
    # FlopCounterMode (torch 2.13) counts a grouped convolution's weight gradient as if it
    # were dense (G times too much); the same layer written as G convolutions is its oracle.
    grouped = nn.Conv2d(8, 8, 3, groups=4)
    split = nn.ModuleList(nn.Conv2d(2, 2, 3) for _ in range(4))

    class Split(nn.Module):
        def forward(self, x):
            return torch.cat([conv(part) for conv, part in zip(split, x.chunk(4, dim=1), strict=True)], dim=1)

    x = torch.randn(2, 8, 6, 6).requires_grad_(True)  # so that the input gradient is computed too
    expected = counted_training_flops(Split(), x).get_flop_counts()["Global"]
    stem = nn.Sequential(nn.Conv2d(8, 8, 1), grouped)
    report = training_report(stem, (8, 6, 6))
    row = report.columns["layer"].index("1")
    assert report.columns["macs"][row] * 2 == expected[torch.ops.aten.convolution]
    backward = report.columns["backward_input_macs"][row] + report.columns["backward_weight_macs"][row]
    assert backward * 2 == expected[torch.ops.aten.convolution_backward]


def test_a_transformer_trains_with_every_backward_operator_counted(hub_packages):
    # Swin-T: layer norms, GELU, attention as bmm with a relative position bias gathered by
    # advanced indexing (index_put in the backward), shifted windows (slices, selects).
    torchvision, _ = hub_packages
    model = torchvision.models.swin_t()
    report = archprof.analyze(model, input_size=(3, 32, 32), batch=1, training=True)
    assert report.totals.not_counted == {}
    expected = counted_training_flops(model, torch.randn(1, 3, 32, 32)).get_total_flops()
    assert report.totals.training_flops == expected


_ACTIVATIONS = {"relu": lambda: nn.ReLU(), "relu_": lambda: nn.ReLU(inplace=True), "gelu": nn.GELU, "tanh": nn.Tanh}
_ACTIVATION_TYPES = (nn.ReLU, nn.GELU, nn.Tanh)


@st.composite
def layer_stacks(draw):
    """A random stack of convolutions (some frozen), norms, activations and pools, then a
    linear head; and its input size."""
    channels, size = draw(st.integers(1, 4)), draw(st.integers(6, 12))
    shape = (channels, size, size)
    layers: list[nn.Module] = []
    frozen: list[bool] = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["conv", "conv", "norm", "activation", "pool"]))
        if kind == "conv":
            out, kernel = draw(st.integers(1, 6)), draw(st.integers(1, 3))
            stride, padding = draw(st.integers(1, 2)), draw(st.integers(0, 1))
            if size + 2 * padding < kernel:
                continue
            layers.append(nn.Conv2d(channels, out, kernel, stride, padding, bias=draw(st.booleans())))
            frozen.append(draw(st.booleans()))
            channels, size = out, (size + 2 * padding - kernel) // stride + 1
        elif kind == "norm" and size >= 2:  # training BatchNorm refuses one value per channel (batch 1, 1x1)
            layers.append(nn.BatchNorm2d(channels))
            frozen.append(draw(st.booleans()))
        elif kind == "activation":
            # An in-place ReLU would overwrite what an activation before it saved for its
            # backward (PyTorch's own backward then fails): in place only after other layers.
            after_activation = bool(layers) and type(layers[-1]) in _ACTIVATION_TYPES
            names = sorted(_ACTIVATIONS) if not after_activation else sorted(set(_ACTIVATIONS) - {"relu_"})
            layers.append(_ACTIVATIONS[draw(st.sampled_from(names))]())
            frozen.append(False)
        elif size >= 2:
            layers.append(draw(st.sampled_from([nn.MaxPool2d(2), nn.AvgPool2d(2)])))
            frozen.append(False)
            size //= 2
    layers += [nn.Flatten(), nn.Linear(channels * size * size, draw(st.integers(1, 5)))]
    frozen += [False, draw(st.booleans())]
    model = nn.Sequential(*layers)
    for layer, is_frozen in zip(model, frozen, strict=True):
        for parameter in layer.parameters():
            parameter.requires_grad_(not is_frozen)
    return model, shape


@settings(max_examples=25, deadline=None)
@given(stack=layer_stacks(), batch=st.integers(1, 3))
def test_training_flops_of_random_stacks_equal_flop_counter_mode(stack, batch):
    model, shape = stack
    report = training_report(model, shape, batch=batch)
    expected = counted_training_flops(model, torch.randn(batch, *shape)).get_total_flops()
    assert report.totals.training_flops == expected
    assert report.totals.not_counted == {}


# --- the report, the commands ---------------------------------------------------------------


def test_training_columns_only_in_a_training_report():
    inference = archprof.analyze("lenet5")
    names = {c.name for c in TRAINING_COLUMNS}
    assert not names & set(inference.layers.columns)
    assert inference.totals.training_flops is None
    assert trace(MODELS["lenet5"].build().to("meta"), [(1, 1, 32, 32)]).backward_ops == []
    training = archprof.analyze("lenet5", training=True)
    assert names <= set(training.layers.columns)
    assert names <= set(training.to_csv().splitlines()[0].split(","))
    for depth in (0, 1):
        rolled = training.rollup(depth)
        assert rolled.totals.training_flops == training.totals.training_flops
    root = training.by_module().set_index("module").loc[""]
    assert root["backward_weight_macs"] == training.totals.backward_weight_macs


def test_summary_train_shows_gradient_macs_and_the_training_step():
    result = cli("summary", "lenet5", "--train")
    assert result.exit_code == 0, result.output
    assert "Bwd input MACs" in result.output and "Bwd weight MACs" in result.output
    total = archprof.analyze("lenet5", training=True).totals.training_flops
    assert "Training step FLOPs" in result.output and f"{total:,}" in result.output
    assert "Bwd input MACs" not in cli("summary", "lenet5").output


def test_compare_train_and_check_max_training_flops():
    result = cli("compare", "lenet5", "alexnet", "--train", "-f", "csv")
    assert result.exit_code == 0, result.output
    header, lenet, _ = result.output.strip().splitlines()
    training_flops = lenet.split(",")[header.split(",").index("training_flops")]
    assert int(training_flops) == archprof.analyze("lenet5", training=True).totals.training_flops
    assert "training_flops" not in cli("compare", "lenet5", "-f", "csv").output
    assert cli("check", "lenet5", "--max-training-flops", "1M").exit_code == 1
    assert cli("check", "lenet5", "--max-training-flops", "1G").exit_code == 0


def test_a_budget_file_limits_training_flops(tmp_path):
    from archprof.budget import check_entries
    from archprof.budget.files import load_budget_file

    step = archprof.analyze("lenet5", training=True).totals.training_flops
    path = tmp_path / "archprof.toml"
    path.write_text(
        f'[[models]]\nname = "lenet5"\nmax-training-flops = {step}\n\n'
        f'[[models]]\nname = "lenet5"\nmax-training-flops = {step - 1}\nmax-flops = "1G"\n'
    )
    verdicts = check_entries(load_budget_file(path))
    assert [(v.limit.key, v.value, v.passed) for v in verdicts] == [
        ("max-training-flops", step, True),
        ("max-flops", archprof.analyze("lenet5").totals.flops, True),
        ("max-training-flops", step, False),
    ]


def test_a_training_trace_leaves_the_models_own_gradients_as_they_were():
    with on_meta():
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))

    def backward_ops():
        return [op.op for op in trace(model, [(1, 3, 8, 8)], training=True).backward_ops]

    fresh = backward_ops()
    marker = torch.empty(2, device="meta")
    model[3].bias.grad = marker
    assert backward_ops() == fresh  # a step from no gradient, not one added into the caller's
    assert model[3].bias.grad is marker and model[0].weight.grad is None


class _Resampling(nn.Module):
    """A 1x1 convolution (a weight to train), then reflection padding, a bilinear upsampling,
    a sliding-window unfold and an adaptive max-pool: the backward pass runs each one's gradient."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, bias=False)

    def forward(self, x):
        x = F.pad(self.conv(x), (1, 1, 1, 1), mode="reflect")  # 1x1x4x4 -> 1x1x6x6
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)  # -> 1x1x12x12
        pooled = F.adaptive_max_pool2d(x, 3)  # -> 1x1x3x3
        return x.unfold(3, 4, 4), pooled  # -> 1x1x12x3x4: windows of 4 along the width, no overlap


def test_padding_resampling_and_unfold_gradients_are_counted_by_hand():
    """Their gradients, as docs/formulas.md states them: a gather's (reflection padding,
    unfold) adds each output gradient into the input it was read from, 1 FLOP per output
    gradient element; a bilinear interpolation's spreads each over its 4 taps, a multiply
    and an addition each, 8."""
    report = archprof.analyze(_Resampling(), input_size=(1, 4, 4), training=True)
    assert report.totals.not_counted == {}
    costs = {c.operator: c.elementwise_flops for row in report.operator_costs for c in row}
    assert costs["aten.reflection_pad2d"] == 0 and costs["aten.upsample_bilinear2d"] == 7 * 12 * 12
    backward = report.graph.backward_ops
    names = [op.op for op in backward]
    assert "aten.reflection_pad2d_backward" in names and "aten.upsample_bilinear2d_backward" in names
    assert "aten.unfold_backward" in names
    by_name = {}
    for op in backward:
        cost = op_cost(op)
        by_name[op.op] = by_name.get(op.op, 0) + cost.elementwise_flops
    assert by_name["aten.unfold_backward"] == 12 * 3 * 4  # the unfolded gradient, 1x1x12x3x4
    assert by_name["aten.upsample_bilinear2d_backward"] == 8 * 12 * 12  # 4 taps of the 12x12 gradient
    assert by_name["aten.reflection_pad2d_backward"] == 6 * 6  # the padded 6x6 gradient
    assert by_name["aten.adaptive_max_pool2d_backward"] == 3 * 3  # each into its window's maximum


def test_scatter_writes_are_free_and_a_scatter_add_adds_each_source_element():
    class Scatters(nn.Module):
        def forward(self, x):
            index = torch.zeros(1, 3, dtype=torch.int64, device=x.device)
            return x.scatter(1, index, x[:, :3]) + x.scatter_add(1, index, x[:, :3])

    report = archprof.analyze(Scatters(), input_size=(5,))
    costs = {c.operator: c.elementwise_flops for row in report.operator_costs for c in row}
    assert costs["aten.scatter"] == 0 and costs["aten.scatter_add"] == 3 and report.totals.not_counted == {}


def test_a_batch_norm_that_trains_on_one_value_per_channel_says_to_raise_the_batch():
    # PyTorch refuses it in training (the variance of one value); archprof says what fixes it.
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    with pytest.raises(archprof.ArchprofError, match=r"1 value per channel.*batch of at least 2 here \(--batch 2"):
        archprof.analyze(model, input_size=(4,), training=True)
    assert archprof.analyze(model, input_size=(4,), training=True, batch=2).totals.training_flops > 0
    assert archprof.analyze(model, input_size=(4,)).totals.macs == 16  # inference at batch 1 is fine


class _Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(5, 3, batch_first=True)

    def forward(self, x):
        return self.lstm(x)[0]


def test_the_fused_lstm_gradient_splits_into_input_and_weight_gradients():
    """oneDNN's LSTM gradient is one operator making every gradient; its weights' part is one
    forward's products, steps x batch x 4H (I + H), as the weight gradients of the cell loop
    (float64, one product per step) add up to."""
    steps, batch, features, hidden = 4, 2, 5, 3
    weights = steps * batch * 4 * hidden * (features + hidden)
    fused = archprof.analyze(_Recurrent(), input_size=(steps, features), batch=batch, training=True).totals
    loop = archprof.analyze(_Recurrent(), input_size=(steps, features), batch=batch, training=True, dtype=torch.float64)
    assert fused.backward_weight_macs == loop.totals.backward_weight_macs == weights
    assert fused.backward_input_macs == weights  # the kernel's other half: input and hidden states


def _square_middle(frozen: bool) -> nn.Module:
    middle = nn.Linear(8, 8).requires_grad_(not frozen)
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), middle, nn.ReLU(), nn.Linear(8, 4))


@pytest.mark.parametrize("frozen", [True, False])
def test_a_square_layer_s_gradients_are_told_apart_by_what_they_read(frozen):
    """At batch 8 a Linear(8, 8)'s input gradient has its weight's shape. Autograd's facts
    are the oracle: its input needs a gradient (one forward's products), its weight gets one
    only when it trains (`.grad` None when frozen)."""
    model, x = _square_middle(frozen), torch.randn(8, 8)
    model(x).sum().backward()
    row = archprof.analyze(_square_middle(frozen), input_size=(8,), batch=8, training=True).rows()[2]
    assert row["backward_input_macs"] == row["macs"] == 8 * 8 * 8
    assert row["backward_weight_macs"] == (0 if model[2].weight.grad is None else row["macs"])


def test_a_weight_made_from_parameters_gets_a_weight_gradient():
    """weight_norm's w = g v / |v| is no parameter, but what autograd computes for it goes
    to g and v (their `.grad`): a weight gradient, as a convolution's output mask says."""
    model = nn.Sequential(nn.Linear(3, 5), nn.utils.parametrizations.weight_norm(nn.Linear(5, 4)))
    model(torch.randn(2, 3)).sum().backward()
    assert all(p.grad is not None for p in model[1].parametrizations.weight.parameters())
    row = archprof.analyze(model, input_size=(3,), batch=2, training=True).rows()[-1]
    assert row["backward_input_macs"] == row["backward_weight_macs"] == 2 * 5 * 4


class _KernelFromItsInput(nn.Module):
    """A dynamic convolution: a 4 -> 4 channel 3x3 kernel made from the very map it convolves."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.kernels = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 4 * 4 * 3 * 3)

    def forward(self, x):
        h = self.stem(x)
        return F.conv2d(h, self.kernels(h.mean((2, 3))).reshape(4, 4, 3, 3), padding=1)


def test_a_kernel_made_from_the_input_takes_an_input_gradient():
    """A weight is a parameter or a tensor no network input reaches (README). Autograd's facts:
    the generated kernel depends on x, so both of the convolution's gradient products carry
    gradients on to x and none is a weight's. The convolution (the root's own code): 4 x 8 x 8
    outputs of 4 x 3 x 3 products each; its two gradients that many each, both the input's,
    as `h @ w` with `w` made from `h` has been."""
    model, x = _KernelFromItsInput(), torch.randn(1, 3, 8, 8, requires_grad=True)
    h = model.stem(x)
    kernel = model.kernels(h.mean((2, 3)))
    assert torch.autograd.grad(kernel.sum(), x, allow_unused=True)[0] is not None  # x reaches the kernel
    root = archprof.analyze(model, input_size=(3, 8, 8), batch=1, training=True).rows()[-1]  # after the kernels' row
    macs = 4 * 8 * 8 * (4 * 3 * 3)
    assert (root["layer"], root["macs"]) == ("", macs)
    assert (root["backward_input_macs"], root["backward_weight_macs"]) == (2 * macs, 0)


@pytest.mark.parametrize(
    "weight_norm", [nn.utils.weight_norm, nn.utils.parametrizations.weight_norm], ids=["pre-hook", "parametrization"]
)
def test_weight_norms_gradient_is_counted_as_the_cpu_kernel_computes_it(weight_norm):
    """`_weight_norm_interface_backward`, per slice of v along dim 0, as ATen's CPU kernel
    (WeightNormKernel.cpp) computes it: s = sum(grad_w * v), grad_g = s / |v|, a = g / |v|,
    b = a * grad_g / |v|, grad_v = a * grad_w - b * v. 5 FLOPs per element of v (the sum's
    product and add, two products and a difference) and 4 per slice (three divisions and a
    product). The same convolution without it is the baseline: the rest of the step alike."""
    normed = archprof.analyze(weight_norm(nn.Conv2d(3, 8, 3)), input_size=(3, 8, 8), training=True).totals
    plain = archprof.analyze(nn.Conv2d(3, 8, 3), input_size=(3, 8, 8), training=True).totals
    assert normed.not_counted == {}
    assert normed.backward_elementwise_flops - plain.backward_elementwise_flops == 5 * (8 * 3 * 3 * 3) + 4 * 8


@pytest.mark.parametrize("given", ["module", "name"])
def test_a_training_step_analysed_inside_inference_mode_is_the_step_outside_it(given):
    """No step runs inside inference mode (its tensors record no graph: backward raises), and
    none is run here: the step analysed is the one outside it, as under torch.no_grad(). A
    model archprof builds there (from a name) has inference tensors, which autograd may not
    save: stand-ins of its own take their place."""
    model = MODELS["lenet5"].build() if given == "module" else "lenet5"
    with torch.inference_mode():
        inside = training_report(model, (1, 32, 32))
        assert torch.is_inference_mode_enabled() and not torch.is_grad_enabled()  # as it was
    outside = training_report(model, (1, 32, 32))
    counter = counted_training_flops(MODELS["lenet5"].build(), torch.randn(2, 1, 32, 32))
    assert inside.totals.training_flops == counter.get_total_flops() > 0
    assert inside.totals.gradient_bytes == outside.totals.gradient_bytes > 0
    assert inside.rows() == outside.rows()


# --- a step whose backward cannot run ------------------------------------------------------


class _InPlaceAfter(nn.Module):
    """A convolution, an op, then an in-place op on its result; `saved_input` also multiplies
    the convolution's output by itself (MulBackward saves it) before adding into it in place."""

    def __init__(self, case: str) -> None:
        super().__init__()
        self.conv, self.case = nn.Conv2d(3, 4, 3, padding=1), case

    def forward(self, x):
        y = self.conv(x)
        if self.case == "relu_after_conv":  # the convolution saves its input, not its output
            return torch.relu_(y)
        if self.case == "relu_after_sigmoid":  # sigmoid saves its output
            return torch.relu_(torch.sigmoid(y))
        if self.case == "dropout_after_relu":  # ReLU saves its output
            return F.dropout(torch.relu(y), 0.3, training=True, inplace=True)
        if self.case == "add_into_saved_input":
            square = y * y
            return square + y.add_(1)
        if self.case == "write_into_a_view_of_saved_output":  # a view shares its base's version
            s = torch.sigmoid(y)
            s[:, :1].mul_(2)
            return s
        if self.case == "relu_after_scaling":  # y * 2 saves the number 2, not y
            return torch.relu_(y * 2)
        raise AssertionError(self.case)


def _real_step_error(model: nn.Module, x: torch.Tensor) -> str | None:
    """The error a real CPU training step raises (forward, then backward from ones), None if it runs."""
    model.train()
    try:
        output = model(x)
        output.backward(torch.ones_like(output))
    except RuntimeError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize(
    "case",
    [
        "relu_after_conv",
        "relu_after_sigmoid",
        "dropout_after_relu",
        "add_into_saved_input",
        "write_into_a_view_of_saved_output",
        "relu_after_scaling",
    ],
)
def test_a_step_whose_backward_reads_a_tensor_written_over_in_place_is_refused_as_a_real_one_fails(case):
    """Autograd refuses to unpack a saved tensor whose version has changed since it was saved
    (SavedVariable::unpack), except where saved-tensor hooks pack it, as archprof's do: the
    trace checks it itself. A real CPU step is the oracle of which steps cannot run."""
    real_error = _real_step_error(_InPlaceAfter(case), torch.randn(2, 3, 8, 8))
    assert real_error is None or "modified by an inplace operation" in real_error
    if real_error is None:
        assert training_report(_InPlaceAfter(case), (3, 8, 8)).totals.training_flops > 0
    else:
        with pytest.raises(archprof.ArchprofError, match=r"the training step cannot run: .* wrote over in place"):
            training_report(_InPlaceAfter(case), (3, 8, 8))
    assert archprof.analyze(_InPlaceAfter(case), input_size=(3, 8, 8)).totals.macs > 0  # inference is unaffected


def _dropout_over_relu() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Dropout(0.3, inplace=True), nn.Conv2d(8, 8, 3))


def test_an_in_place_dropout_over_a_relu_names_both_layers_and_the_cli_exits_2(tmp_path):
    assert "modified by an inplace operation" in _real_step_error(_dropout_over_relu(), torch.randn(2, 3, 16, 16))
    with pytest.raises(archprof.ArchprofError) as raised:
        training_report(_dropout_over_relu(), (3, 16, 16))
    message = str(raised.value)
    assert "ReluBackward0, the gradient of module '1' (ReLU)" in message
    assert "aten.mul_ in module '2' (Dropout) then wrote over in place" in message
    (tmp_path / "dropout.py").write_text(
        "from torch import nn\n\n\ndef build():\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Dropout(0.3, inplace=True))\n"
    )
    result = cli("summary", f"{tmp_path / 'dropout.py'}:build", "--input", "3x16x16", "--train")
    assert result.exit_code == 2, result.output
    assert one_error_line(result).startswith("error: the training step cannot run: ReluBackward0")
    assert cli("summary", f"{tmp_path / 'dropout.py'}:build", "--input", "3x16x16").exit_code == 0


class _Lookup(nn.Module):
    def __init__(self, table: nn.Module) -> None:
        super().__init__()
        self.table, self.head = table, nn.Linear(8, 2)

    def forward(self, ids):
        return self.head(self.table(ids).reshape(-1, 8))


@pytest.mark.parametrize("bag", [False, True])
def test_a_sparse_gradient_is_refused_in_one_line_where_a_dense_one_is_analysed(bag):
    """A sparse embedding's weight gradient holds the rows looked up (a real step's `.grad` is
    sparse COO), its momentum buffer grows each step and Adam refuses it: archprof, which sizes
    gradients and optimizer state dense, refuses the step rather than size it dense."""

    def model(sparse: bool) -> nn.Module:
        table = nn.EmbeddingBag(100, 8, sparse=sparse) if bag else nn.Embedding(100, 8, sparse=sparse)
        return _Lookup(table)

    real = model(sparse=True)
    real(torch.randint(0, 100, (2, 4))).sum().backward()
    assert real.table.weight.grad.layout == torch.sparse_coo
    with pytest.raises(archprof.ArchprofError, match=r"module 'table' \(Embedding(Bag)?\) makes a sparse gradient"):
        archprof.analyze(model(sparse=True), inputs=["4:int64"], batch=2, training=True)
    dense = archprof.analyze(model(sparse=False), inputs=["4:int64"], batch=2, training=True).totals
    assert dense.gradient_bytes == (100 * 8 + 2 * 8 + 2) * 4
    assert archprof.analyze(model(sparse=True), inputs=["4:int64"], batch=2).totals.macs > 0  # inference is unaffected


class _NothingToDifferentiate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x).argmax(1)  # an int64 map: no gradient flows from it


def test_a_step_with_no_output_to_differentiate_is_said_so():
    """A real loss.backward() raises there (the oracle); the analysis says, in a warning, that
    its step has no backward pass, where it said nothing."""
    model = _NothingToDifferentiate()
    with pytest.raises(RuntimeError, match="does not require grad"):
        model(torch.randn(1, 3, 8, 8)).float().sum().backward()
    with pytest.warns(ArchprofWarning, match="no backward pass"):
        totals = archprof.analyze(model, input_size=(3, 8, 8), training=True).totals
    assert totals.training_flops == totals.flops  # the forward alone


# Each case: the call after a convolution, and the sums of two gradients of one tensor its
# backward pass needs, counted by hand: a tensor read k times (the caller's reads too, each
# with a gradient of ones) gets k gradients, summed by the engine with k - 1 adds.
ENGINE_ADDS = {
    "a map read by atan2 and its flip": (lambda y: torch.atan2(y, y.flip(1)), 1),  # not `self*self + other*other`
    "a logcumsumexp": (lambda y: y.logcumsumexp(1), 0),  # not `flip(...) + self`, twice
    "a map returned twice beside its relu": (lambda y: (y, y.relu(), y), 2),  # two seeds meet at once
    "a map whose gradient a hook halves": (lambda y: _halve_its_gradient(y).sigmoid() * y, 1),  # not the hook's mul
    "a reentrant block reading its input twice": (
        lambda y: checkpoint(lambda z: z.relu() * z, y, use_reentrant=True),
        1,  # the block's own backward pass, whose first node (the product's) the recomputation made last
    ),
}


def _halve_its_gradient(y: torch.Tensor) -> torch.Tensor:
    if y.requires_grad:  # the engine runs the hook before the pre hooks of the node it feeds
        y.register_hook(lambda gradient: gradient * 0.5)
    return y


@pytest.mark.parametrize("name", ENGINE_ADDS)
def test_the_engines_adds_are_told_from_a_gradient_formulas_own(name):
    """The trace notes as the engine's the adds it runs where two gradients of one tensor meet,
    after a node's formula has returned, not an add inside a formula of two tensors it made."""
    call, adds = ENGINE_ADDS[name]
    graph = trace(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Calls(call)), [(2, 3, 16, 16)], training=True)
    marked = [graph.backward_ops[index].op for index in sorted(graph.engine.gradient_sums)]
    assert marked == ["aten.add"] * adds


def test_a_training_trace_lets_go_of_its_recorder():
    """The hooks the trace leaves on the autograd nodes (`autograd_hooks.RunningFormulas`) hold no recorder:
    through one, the nodes the traced tensors keep would keep every tensor it kept alive: one
    more recorder each trace."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
    alive = []
    for _ in range(3):
        trace(model, [(2, 3, 16, 16)], training=True)
        gc.collect()
        alive.append(sum(isinstance(held, TrainingRecorder) for held in gc.get_objects()))
    assert alive[1] == alive[2]


def test_the_network_input_autograd_saves_is_counted_on_the_first_row_that_saves_it():
    """No row makes the network input, but the first convolution saves it for its weight's
    gradient: its bytes go on that row, as the README's column says; the total is every
    storage autograd saves on a real forward (parameters apart)."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    report = archprof.analyze(model, input_size=(3, 8, 8), training=True)
    saved = dict(zip(report.columns["layer"], report.columns["saved_activation_bytes"], strict=True))
    x = torch.randn(1, 3, 8, 8)
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(x)
    assert saved["0"] == x.nbytes  # the input, which the convolution keeps
    assert sum(saved.values()) == sum(storages.values())


class _SelectivelyCheckpointed(nn.Module):
    """A block checkpointed with a policy that saves its convolutions' outputs
    (torch.utils.checkpoint's selective checkpointing) and recomputes the rest."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3))
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        import functools

        from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

        def policy(_context, operator, *_args, **_kwargs):
            saved = operator == torch.ops.aten.convolution.default
            return CheckpointPolicy.MUST_SAVE if saved else CheckpointPolicy.PREFER_RECOMPUTE

        contexts = functools.partial(create_selective_checkpoint_contexts, policy)
        x = checkpoint(self.block, self.stem(x), use_reentrant=False, context_fn=contexts)
        return self.head(x.mean((2, 3)))


def test_selective_checkpointing_that_saves_convolutions_counts_their_gradients():
    """Its recomputation hands the saved convolutions' outputs back without running them, so
    their gradients' autograd nodes are another op's: the input and weight gradients were
    told apart from that op's operands, which it has one of (a ValueError, raw). The oracle:
    FlopCounterMode around a real step, which runs no convolution again."""
    model = _SelectivelyCheckpointed()
    report = training_report(model, (3, 8, 8), batch=2)
    counted = counted_training_flops(copy.deepcopy(model), torch.randn(2, 3, 8, 8)).get_total_flops()
    assert report.totals.training_flops == counted
