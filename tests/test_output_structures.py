"""What a module returns, as the report shows it: a dataclass of tensors (a model's output
record), a tensor returned twice, and a container module's returned shapes. The oracles are
a real forward on the CPU (what each module returns, captured by forward hooks; `is`), and
FlopCounterMode's count of a real training step's backward."""

from __future__ import annotations

from dataclasses import dataclass

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


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 8, 3, stride=2, padding=1)

    def forward(self, x):
        fine = self.conv(x)
        return fine, self.down(fine)


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 2, 1)
        self.aux = nn.Linear(8, 5)

    def forward(self, x):
        out = self.conv(x)
        self.aux(x.mean((2, 3)))  # run after the output is made, and not returned
        return out


class EncoderAndHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = Encoder()
        self.head = Head()

    def forward(self, x):
        fine, coarse = self.enc(x)
        return self.head(coarse), fine


def test_a_container_row_shows_what_its_module_returned():
    model = EncoderAndHead()
    returned = {}
    hooks = [
        getattr(model, name).register_forward_hook(lambda m, args, out, name=name: returned.setdefault(name, out))
        for name in ("enc", "head")
    ]
    returned[""] = model(torch.randn(1, 3, 16, 16))
    for hook in hooks:
        hook.remove()
    report = archprof.analyze(model, input_size=(3, 16, 16))
    for depth in (0, 1):
        for _, row in report.rollup(depth).layers.iterrows():
            expected = returned[row.layer]
            tensors = expected if isinstance(expected, tuple) else (expected,)
            assert row.output_shape == ", ".join("x".join(map(str, t.shape)) for t in tensors)
