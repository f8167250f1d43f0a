"""A model's final receptive field (compare, check, diff) is its last feature map's: where a
squeeze-excitation gate makes every unit of that map see the whole input, it is global, not
the field of the last layer before the first gate."""

import json

import pytest
import torch
from torch import nn

import archprof
from archprof.budget import evaluate, parse_limit
from archprof.diff import diff as archprof_diff
from archprof.metrics import final_receptive_field, final_receptive_field_dims
from archprof.passes.receptive_field import FieldMark
from tests.cli import cli, one_error_line
from tests.field_oracle import positive, unit_gradient_box
from tests.models import se_net

INPUT = (3, 32, 32)


def _every_pixel_reaches(features: nn.Module, unit: tuple[int, int]) -> bool:
    """The gradient oracle: whether every input pixel reaches `unit` of the features' last map."""
    box = unit_gradient_box(positive(features), INPUT, unit)
    return box == [(0, INPUT[1] - 1), (0, INPUT[2] - 1)]


def test_a_gated_maps_final_field_is_global_and_reads_as_the_inputs_size():
    assert _every_pixel_reaches(se_net(gated=True)[0], (0, 0))  # even the corner unit of the last map
    model = se_net(gated=True)
    report = archprof.analyze(model, input_size=INPUT)
    assert final_receptive_field_dims(report) == "input"
    assert final_receptive_field(report) == min(INPUT[1:])
    frame = archprof.compare([model, se_net(gated=False)], input_size=INPUT)
    assert frame["receptive_field_dims"].tolist()[0] == "input"
    # Without the gate, the last convolution's own field (r + (K - 1) j): 3 + 2 · 1 + 2 · 2 = 9 pixels.
    assert frame["receptive_field_dims"].tolist()[1] == (9, 9)


def test_a_minimum_field_within_the_input_holds_for_a_global_field():
    report = archprof.analyze(se_net(gated=True), input_size=INPUT)
    (verdict,) = evaluate(report, [parse_limit("min-receptive-field", "32")])
    assert verdict.passed and verdict.value_text == "global (32 px)"
    (over,) = evaluate(report, [parse_limit("min-receptive-field", "33")])
    assert not over.passed  # more than the whole input: not seen


SPEC = "tests/models.py:se_net"


def test_the_check_and_compare_tables_show_a_global_field():
    spec = SPEC
    checked = cli("check", spec, "-i", "3x32x32", "--min-receptive-field", "32")
    assert checked.exit_code == 0 and "global (32 px)" in checked.stdout
    compared = cli("compare", spec, "-i", "3x32x32")
    assert compared.exit_code == 0 and "global" in compared.stdout


def test_diff_sets_a_global_field_beside_a_spatial_one():
    gated = archprof.analyze(se_net(gated=True), input_size=INPUT)
    plain = archprof.analyze(se_net(gated=False), input_size=INPUT)
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
    report = archprof.analyze(se_net(gated=True), input_size=INPUT)
    (verdict,) = evaluate(report, [parse_limit("min-receptive-field", "33")])
    from archprof.budget.verdicts import junit_xml

    message = junit_xml([verdict])
    assert "Receptive field global (32 px) at input" in message and "smallest side" not in message


def test_a_unit_of_a_global_map_reads_the_whole_input():
    """`rf --unit` of a map after a gate said 'no unit box to give'; each of its units reads
    every pixel (the gradient oracle of the first test), and one outside it is refused."""
    done = cli("rf", SPEC, "-i", "3x32x32", "--unit", "7,0")  # the last map: 32 / 2 / 2 = 8 units a side
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == "layer 0.3, unit 7,0 reads input pixels 0..31 x 0..31 (of 32x32)"
    outside = cli("rf", SPEC, "-i", "3x32x32", "--unit", "8,0")
    assert outside.exit_code == 2 and "outside the layer's 8 units along H" in one_error_line(outside)


@pytest.mark.parametrize("stride, padding", [(2, 0), (1, 1)], ids=["leaving pixels unread", "reaching every pixel"])
def test_a_flattens_field_is_what_its_units_read_together(stride, padding):
    """The flatten convention (the whole input) holds where the flattened units reach every
    pixel, as for a pooling: a stride-2 1x1 convolution's on 4 pixels never read pixel 3, and
    the flatten showed the whole input where the linear layer after it showed 3x3."""
    model = positive(nn.Sequential(nn.Conv2d(1, 4, 3 - 2 * (stride - 1), stride, padding), nn.Flatten(1)))
    x = (torch.rand(1, 1, 4, 4, dtype=torch.float64) + 0.5).requires_grad_()
    model(x).sum().backward()
    reached = x.grad[0, 0] != 0
    rows_read, columns_read = (torch.nonzero(reached.any(dim=1 - axis)).flatten() for axis in range(2))
    flatten = archprof.analyze(model, input_size=(1, 4, 4), dtype=torch.float64).rows()[-1]
    if bool(reached.all()):
        assert flatten["receptive_field"] == FieldMark.INPUT and flatten["covers_input"] is True
    else:
        hull = [(int(read[0]), int(read[-1])) for read in (rows_read, columns_read)]
        assert flatten["receptive_field"] == tuple(last - first + 1 for first, last in hull) == (3, 3)
        assert flatten["receptive_field_start"] == tuple(first for first, _ in hull)
        assert flatten["covers_input"] is False and "do not reach all" in flatten["receptive_field_note"]
