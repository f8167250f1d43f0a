"""benchmarks/rf_sweep.py, on a few small models, so that it cannot rot: every row it checks
agrees with the gradient oracle, and its oracle keeps archprof's max-pooling convention."""

from collections import Counter

import pytest
import torch
import torch.nn.functional as F


@pytest.fixture
def rf_sweep(benchmark_script, hub_packages):
    return benchmark_script("rf_sweep")


# A ResNet stem's max pooling and residual blocks; an EfficientNet's squeeze-excitation
# gates (global pooling: whole-input rows) and GroupNorms; a ConvNeXt's channels-last LayerNorms.
@pytest.mark.parametrize("spec", ["timm:test_resnet", "timm:test_efficientnet_gn", "timm:test_convnext"])
def test_small_models_agree_with_the_oracle_on_every_row(rf_sweep, spec):
    line = rf_sweep.sweep_one(spec, rows=0)
    assert line["status"] == "checked", line["why"]
    agreeing = line["exact"] + line["input"]
    assert line["exact"] > 10 and agreeing + line["unchecked"] == line["rows"], line
    assert not line["noted"]  # no wrong, padded or flattened row


def test_a_max_pooling_in_the_oracle_keeps_its_value_and_reaches_its_whole_window(rf_sweep):
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    with rf_sweep.WholeWindows():
        pooled = F.max_pool2d(x, 2)
        padded = F.max_pool2d(F.pad(x, (1, 1, 1, 1), value=-torch.inf), 3, 2, ceil_mode=True)  # timm's "same"
        reduced = x.amax((2, 3))
        adaptive = F.adaptive_max_pool2d(x, 1)
    assert torch.equal(pooled, F.max_pool2d(x, 2)) and torch.equal(reduced, x.amax((2, 3)))
    assert torch.equal(adaptive, F.adaptive_max_pool2d(x, 1))
    # Unit (0, 0) of a 2x2 window with stride 2 reads rows 0-1 and columns 0-1; of the padded
    # 3x3 window, rows and columns -1 to 1 of x, the padding's -inf reaching no pixel; of a
    # maximum over the map and of an adaptive pooling to 1x1, every pixel.
    for unit, window in ((pooled, 2), (padded, 2), (reduced, 4), (adaptive, 4)):
        (gradient,) = torch.autograd.grad(unit.flatten()[0], x)
        assert torch.isfinite(gradient).all()
        expected = torch.zeros(4, 4, dtype=torch.bool)
        expected[:window, :window] = True
        assert torch.equal(gradient[0, 0] != 0, expected)
    (winner,) = torch.autograd.grad(F.max_pool2d(x, 2)[0, 0, 0, 0], x)
    assert (winner != 0).sum() == 1  # without it: the maximum's gradient reaches its winner only


def test_a_normalisation_in_the_oracle_is_pointwise_and_positive(rf_sweep):
    """archprof's convention: a GroupNorm's statistics over the map are not part of the field.
    Its value is made positive: a centred map below 0 at unit (0, 0) in every channel, then a
    ReLU, cut that unit's whole gradient off (PoolFormerV2's StarReLU: 16 rows "wrong")."""
    x = torch.rand(1, 2, 4, 4, dtype=torch.float64)
    x[..., 0, 0] = -1.0  # below the map's mean in both channels
    x.requires_grad_()
    centred = F.group_norm(x, 1)
    assert (centred[0, :, 0, 0] < 0).all()
    with rf_sweep.PointwiseNorms():
        normed = F.group_norm(x, 1)
    assert torch.equal(normed, centred.abs() + 0.1)
    (gradient,) = torch.autograd.grad(F.relu(normed)[0, :, 0, 0].sum(), x)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[0, 0] = True  # unit (0, 0) of each channel reads pixel (0, 0) only
    assert torch.equal(gradient[0].abs().sum(0) != 0, expected)
    (statistics,) = torch.autograd.grad(centred[0, :, 0, 0].sum(), x, retain_graph=True)
    assert (statistics[0].abs().sum(0) != 0).all()  # without it: every position, through the statistics
    (cut,) = torch.autograd.grad(F.relu(centred)[0, :, 0, 0].sum(), x)
    assert (cut == 0).all()  # its value kept: the ReLU reaches no pixel


def test_a_softmax_row_whose_unit_sums_to_one_takes_one_element(rf_sweep):
    """A global row's unit 0 (index 0 of its first two dimensions) of a softmax over the
    positions sums to 1 whatever the input: its gradient reaches no pixel. Its first element
    alone reads every position, as archprof's `input` says; the sum said 'wrong' (EfficientFormerV2's
    and MobileViTv2's attention rows)."""
    from archprof.passes.receptive_field.dims import WHOLE

    torch.manual_seed(0)
    x = (torch.rand(1, 2, 6, 6, dtype=torch.float64) + 0.5).requires_grad_()
    weights = F.conv2d(x, torch.rand(3, 2, 3, 3, dtype=torch.float64), padding=1).flatten(2).softmax(-1)
    row = {"receptive_field": "input"}
    # Zero but for rounding (exactly zero on some CPUs, 1e-17 on others): the sum reads no pixel.
    (gradient,) = torch.autograd.grad(weights[0, 0].sum(), x, retain_graph=True)
    assert gradient.abs().max() < 1e-12
    assert rf_sweep._verdict(WHOLE, row, weights, x, (6, 6)) == {
        "verdict": "input",
        "archprof": "input",
        "oracle": "0..5 x 0..5",
    }


def test_at_an_input_its_patches_do_not_divide_a_token_row_is_the_flatten_convention(rf_sweep):
    """A vision transformer at 61x47: its 16-pixel patches cover 48x32, and a token row's field
    is what the tokens read together, 48x32 (docs/formulas.md's flatten convention), where the
    oracle's token 0 reads its own patch until attention mixes the tokens: flattened, not
    wrong; after attention the two agree."""
    import archprof
    from archprof.load import load_model

    loaded = load_model("timm:test_vit", args={"img_size": (61, 47), "dynamic_img_size": False})
    checks = rf_sweep._checks(loaded, archprof.analyze(loaded, input_size=(3, 61, 47)), 0)
    verdicts = Counter(check["verdict"] for check in checks)
    assert verdicts["wrong"] == 0 and verdicts["exact"] > 0 and verdicts["flattened"] > 0, verdicts
    flattened = [check for check in checks if check["verdict"] == "flattened"]
    assert {(check["archprof"], check["oracle"]) for check in flattened} == {("0..47 x 0..31", "0..15 x 0..15")}


def test_a_model_that_refuses_the_input_is_no_failure(rf_sweep):
    """`--input`: LeNet-5's classifier is made for a 32x32 image's features; at 40x40 its own
    forward raises too."""
    line = rf_sweep.sweep_one("lenet5", rows=0, size=(1, 40, 40))
    assert line["status"] == "refused by the model", line["why"]
    assert "(1x784 and 400x120)" in line["why"]


def test_rows_that_read_the_whole_of_an_input_dimension_are_padded_where_unit_0_reads_all_theirs(rf_sweep):
    """PiT at 61x47: its last stage's tokens mix along the height what the stem's patches
    (16 pixels, stride 8) read, rows 0 to 55, padding counted past pixel 60: "every unit reads
    the whole of input dimension 1", a column that counts padding, as INPUT does; in the
    oracle every unit reads what all read, rows 0 to 55. Not a wrong row."""
    line = rf_sweep.sweep_one("timm:pit_ti_224", rows=0, size=(3, 61, 47))
    assert line["status"] == "checked", line["noted"]
    assert line["built_with"] == "img_size=(61, 47)" and line["padded"] > 0
