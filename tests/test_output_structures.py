"""What a module returns, as the report shows it: a dataclass of tensors (a model's output
record: one that holds itself, a field never set), and a tensor returned twice. The oracles
are a real forward on the CPU (what it returns; `is`), and FlopCounterMode's count of a real
training step's backward."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import archprof


@dataclass
class Features:
    map: torch.Tensor
    logits: torch.Tensor


class ReturnsARecord(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        y = self.conv(x)
        return Features(y, self.fc(y.mean((2, 3))))


def test_a_dataclass_output_is_the_forward_s_output_and_the_training_step_s_start():
    model = ReturnsARecord()
    with FlopCounterMode(display=False) as forward_only:
        out = model(torch.randn(2, 3, 8, 8))
    with FlopCounterMode(display=False) as step:
        out = model(torch.randn(2, 3, 8, 8))
        (out.map.sum() + out.logits.sum()).backward()
    backward = step.get_total_flops() - forward_only.get_total_flops()
    assert backward > 0
    report = archprof.analyze(model, input_size=(3, 8, 8), batch=2, training=True)
    assert [t.shape for t in report.graph.outputs] == [tuple(out.map.shape), tuple(out.logits.shape)]
    # The backward's matrix products, as FlopCounterMode counts them (two flops a MAC).
    layers = report.layers
    assert 2 * int(layers.backward_input_macs.sum() + layers.backward_weight_macs.sum()) == backward


class ReturnsTwice(nn.Module):
    def forward(self, x):
        y = torch.relu(x)
        return y, y


class UsesTheDuplicate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dup = ReturnsTwice()  # a leaf: its row's outputs are what it returned

    def forward(self, x):
        a, b = self.dup(x)
        return a + b


def test_a_tensor_returned_twice_is_counted_once():
    model = UsesTheDuplicate()
    a, b = model.dup(torch.randn(1, 8, 16, 16))
    assert a is b
    report = archprof.analyze(model, input_size=(8, 16, 16))
    row = report.layers.set_index("layer").loc["dup"]
    assert row.output_shape == "1x8x16x16, 1x8x16x16"  # what it returned, listed as returned
    assert row.activation_bytes == a.numel() * a.element_size()


@dataclass
class Linked:
    """A record that holds itself, and a field its constructor does not set."""

    out: torch.Tensor
    previous: Linked | None = None
    late: torch.Tensor = field(init=False)


class ReturnsALinkedRecord(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        record = Linked(self.conv(x))
        record.previous = record
        return record


def test_a_record_that_holds_itself_or_lacks_a_field_is_walked_once():
    out = ReturnsALinkedRecord()(torch.randn(1, 3, 8, 8)).out
    report = archprof.analyze(ReturnsALinkedRecord(), input_size=(3, 8, 8))
    assert [t.shape for t in report.graph.outputs] == [tuple(out.shape)]
