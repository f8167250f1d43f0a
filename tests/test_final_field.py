"""A model's final receptive field (compare, check, diff) is its last feature map's: where a
squeeze-excitation gate makes every unit of that map see the whole input, it is global, not
the field of the last layer before the first gate."""

import json

import pytest
from torch import nn

import archprof
from archprof.budget import evaluate, parse_limit
from archprof.diff import diff as archprof_diff
from archprof.metrics import final_receptive_field, final_receptive_field_dims
from tests.field_oracle import positive, unit_gradient_box

INPUT = (3, 32, 32)


class Gate(nn.Module):
    """A squeeze-excitation gate: the map scaled per channel by its global mean, convolved (no
    sigmoid, which the gradient oracle's positive weights would saturate to a gradient of 0)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        return x * self.fc(x.mean((2, 3), keepdim=True))


def _net(gated: bool) -> nn.Sequential:
    """Features (a 3x3 convolution, a gate or not, two stride-2 3x3 convolutions), then a head."""
    features = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        Gate(8) if gated else nn.Identity(),
        nn.Conv2d(8, 8, 3, 2, padding=1),
        nn.Conv2d(8, 8, 3, 2, padding=1),
    )
    return nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def _every_pixel_reaches(features: nn.Module, unit: tuple[int, int]) -> bool:
    """The gradient oracle: whether every input pixel reaches `unit` of the features' last map."""
    box = unit_gradient_box(positive(features), INPUT, unit)
    return box == [(0, INPUT[1] - 1), (0, INPUT[2] - 1)]


def test_a_gated_maps_final_field_is_global_and_reads_as_the_inputs_size():
    assert _every_pixel_reaches(_net(gated=True)[0], (0, 0))  # even the corner unit of the last map
    model = _net(gated=True)
    report = archprof.analyze(model, input_size=INPUT)
    assert final_receptive_field_dims(report) == "input"
    assert final_receptive_field(report) == min(INPUT[1:])
    frame = archprof.compare([model, _net(gated=False)], input_size=INPUT)
    assert frame["receptive_field_dims"].tolist()[0] == "input"
    # Without the gate, the last convolution's own field (r + (K - 1) j): 3 + 2 · 1 + 2 · 2 = 9 pixels.
    assert frame["receptive_field_dims"].tolist()[1] == (9, 9)


def test_a_minimum_field_within_the_input_holds_for_a_global_field():
    report = archprof.analyze(_net(gated=True), input_size=INPUT)
    (verdict,) = evaluate(report, [parse_limit("min-receptive-field", "32")])
    assert verdict.passed and verdict.value_text == "global (32 px)"
    (over,) = evaluate(report, [parse_limit("min-receptive-field", "33")])
    assert not over.passed  # more than the whole input: not seen


def test_the_check_and_compare_tables_show_a_global_field(tmp_path):
    from tests.cli import cli

    path = tmp_path / "gated.py"
    path.write_text(
        "import torch\nfrom torch import nn\n"
        "class Gate(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.fc = nn.Conv2d(8, 8, 1)\n"
        "    def forward(self, x):\n        return x * torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))\n"
        "def net():\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Gate(), nn.Conv2d(8, 8, 3, 2, padding=1),"
        " nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))\n"
    )
    spec = f"{path}:net"
    checked = cli("check", spec, "-i", "3x32x32", "--min-receptive-field", "32")
    assert checked.exit_code == 0 and "global (32 px)" in checked.stdout
    compared = cli("compare", spec, "-i", "3x32x32")
    assert compared.exit_code == 0 and "global" in compared.stdout


def test_diff_sets_a_global_field_beside_a_spatial_one():
    gated = archprof.analyze(_net(gated=True), input_size=INPUT)
    plain = archprof.analyze(_net(gated=False), input_size=INPUT)
    diff = archprof_diff(plain, gated)
    assert diff.fields.new.whole_input and diff.fields.new.layer == "0.3"
    assert diff.fields.old.size == 9
    document = json.loads(diff.to_json())
    assert document["final_receptive_field"]["new"]["receptive_field"] == "input"
    assert document["final_receptive_field"]["new"]["effective_stride"] is None


class BoxHead(nn.Module):
    """A convolution of 3 over `dims` spatial dimensions, global pooling, then logits viewed
    as 100 boxes of 4 (1x100x4: as many dimensions as a 1-d map's 1xCxL)."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.conv = (nn.Conv1d, nn.Conv2d)[dims - 1](3, 8, 3, padding=1)
        self.pool = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)[dims - 1](1)
        self.fc = nn.Linear(8, 400)

    def forward(self, x):
        return self.fc(self.pool(self.conv(x)).flatten(1)).view(-1, 100, 4)


@pytest.mark.parametrize("dims", [1, 2])
def test_logits_viewed_as_boxes_after_global_pooling_are_not_a_map(dims):
    """The 1x100x4 boxes read as a global map of 400 positions: the view only moves data, and
    the final field is still the last feature map's, the convolution's 3 along each dimension."""
    report = archprof.analyze(BoxHead(dims), input_size=(3, *[32] * dims))
    assert final_receptive_field_dims(report) == (3,) * dims


def test_the_junit_message_of_a_global_field_says_its_size_once():
    report = archprof.analyze(_net(gated=True), input_size=INPUT)
    (verdict,) = evaluate(report, [parse_limit("min-receptive-field", "33")])
    from archprof.budget.verdicts import junit_xml

    message = junit_xml([verdict])
    assert "Receptive field global (32 px) at input" in message and "smallest side" not in message


def test_a_unit_of_a_global_map_reads_the_whole_input(tmp_path):
    """`rf --unit` of a map after a gate said 'no unit box to give'; each of its units reads
    every pixel (the gradient oracle of the first test), and one outside it is refused."""
    from tests.cli import cli, one_error_line

    (tmp_path / "gated.py").write_text(
        "from torch import nn\n"
        "class Gate(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.fc = nn.Conv2d(8, 8, 1)\n"
        "    def forward(self, x):\n        return x * self.fc(x.mean((2, 3), keepdim=True))\n"
        "def net():\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Gate(), nn.Conv2d(8, 8, 3, 2, padding=1))\n"
    )
    spec = f"{tmp_path / 'gated.py'}:net"
    done = cli("rf", spec, "-i", "3x32x32", "--unit", "15,0")
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == "layer 2, unit 15,0 reads input pixels 0..31 x 0..31 (of 32x32)"
    outside = cli("rf", spec, "-i", "3x32x32", "--unit", "16,0")
    assert outside.exit_code == 2 and "outside the layer's 16 units along H" in one_error_line(outside)
