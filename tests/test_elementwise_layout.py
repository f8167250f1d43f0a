"""An elementwise operator's output laid out as a CPU's TensorIterator lays it out, by the
trace's fast path (`meta_outputs.answer_from_formula`, `strides.elementwise_strides`).

TensorIterator makes contiguous operands' output contiguous (and channels-last ones'
channels last) only when every operand has the output's shape: a broadcast operand, or a
Python number it wraps into a 0-d operand (`x * 2.0`, aten.mul.Tensor(x, 2.0); add.Scalar's
number, wrapped by its CPU kernel), sends it to its general rule, which orders the output's
dimensions by the operands' strides, an operand's broadcast and missing leading dimensions
abstaining. Where a tensor's strides say both contiguous and channels last ((N, 1, H, W) or
(N, C, 1, 1) made channels last) the two rules differ. A Scalar-typed argument (clamp's
bounds, leaky ReLU's slope) is no operand. The oracle is a real CPU call, every stride
compared (a dimension of size 1 too: the next convolution picks its layout by them)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archprof.tracing.recorder import Recorder
from archprof.tracing.trace import trace

aten = torch.ops.aten
CL = torch.channels_last


def _cl(*shape):
    return lambda device: torch.empty(shape, device=device, memory_format=CL)


def _plain(*shape):
    return lambda device: torch.empty(shape, device=device)


def _reversed(*shape):  # every dimension permuted: strides ascending
    return lambda device: torch.empty(shape[::-1], device=device).permute(*reversed(range(len(shape))))


AMBIGUOUS = {  # channels last, contiguous too: a dimension of size 1
    "(2,1,3,3) channels last": _cl(2, 1, 3, 3),
    "(2,3,1,1) channels last": _cl(2, 3, 1, 1),
    "(1,1,8,8) channels last": _cl(1, 1, 8, 8),
}
LAYOUTS = {
    **AMBIGUOUS,
    "(2,3,4,5) channels last": _cl(2, 3, 4, 5),
    "(3,4) transposed": lambda device: torch.empty(4, 3, device=device).t(),
    "(3,4) expanded": lambda device: torch.empty(3, 1, device=device).expand(3, 4),
    "(2,1,3) strides (3,100,1)": lambda device: torch.empty_strided((2, 1, 3), (3, 100, 1), device=device),
    "(2,1,3) permuted": lambda device: torch.empty(3, 1, 2, device=device).permute(2, 1, 0),
}

UNARY = {
    # Python numbers in a Tensor slot: wrapped into 0-d operands.
    "x * 2.0": lambda x: x * 2.0,
    "2.0 * x": lambda x: 2.0 * x,
    "x + 1": lambda x: x + 1,
    "x - 1": lambda x: x - 1,
    "x / 2": lambda x: x / 2,
    "add(x, 2, alpha=3)": lambda x: torch.add(x, 2, alpha=3),
    "div(x, 2.0, floor)": lambda x: torch.div(x, 2.0, rounding_mode="floor"),
    "x * 0-d tensor": lambda x: x * torch.empty((), device=x.device),
    # The Scalar overloads: their CPU kernels wrap the number into a tensor.
    "add.Scalar": lambda x: aten.add.Scalar(x, 2.0, 3),
    "sub.Scalar": lambda x: aten.sub.Scalar(x, 2.0),
    "mul.Scalar": lambda x: aten.mul.Scalar(x, 2.0),
    "div.Scalar": lambda x: aten.div.Scalar(x, 2.0),
    "div.Scalar_mode": lambda x: aten.div.Scalar_mode(x, 2.0, rounding_mode="trunc"),
    # Scalar-typed arguments are no operands: TensorIterator's fast setup applies.
    "clamp(x, min=0.)": lambda x: torch.clamp(x, min=0.0),
    "clamp(x, 0., 1.)": lambda x: torch.clamp(x, 0.0, 1.0),
    "clamp_min(x, 0.)": lambda x: torch.clamp_min(x, 0.0),
    "leaky_relu(x, 0.1)": lambda x: F.leaky_relu(x, 0.1),
    "elu": F.elu,
    "softplus": F.softplus,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "gelu": F.gelu,
    "hardswish": F.hardswish,
    "exp": torch.exp,
    "neg": torch.neg,
    # Same-shape tensor operands: the fast setup.
    "x + x": lambda x: x + x,
    "clamp(x, min=x)": lambda x: torch.clamp(x, min=x),
}


def _strides(call):
    want = call("cpu")
    with Recorder():
        got = call("meta")
    assert tuple(got.shape) == tuple(want.shape)
    return tuple(got.stride()), tuple(want.stride())


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op", UNARY)
def test_one_tensor_with_numbers_laid_out_as_a_cpu_lays_it(op, layout):
    got, want = _strides(lambda device: UNARY[op](LAYOUTS[layout](device)))
    assert got == want


BINARY = {
    "add": torch.add,
    "b + x": lambda x, b: b + x,
    "sub alpha": lambda x, b: torch.sub(x, b, alpha=2),
    "mul": torch.mul,
    "div floor": lambda x, b: torch.div(x, b, rounding_mode="floor"),
    "clamp(x, min=b)": lambda x, b: torch.clamp(x, min=b),
    "clamp(b, x, x)": lambda x, b: torch.clamp(b, x, x),
    "clamp_min(x, b)": torch.clamp_min,
    "silu_backward(x, b)": aten.silu_backward,
    "sigmoid_backward(b, x)": lambda x, b: aten.sigmoid_backward(b, x),
    "threshold_backward(x, b)": lambda x, b: aten.threshold_backward(x, b, 0.0),  # the forward's input first
    "threshold_backward(b, x)": lambda x, b: aten.threshold_backward(b, x, 0.0),
    "leaky_relu_backward(b, x)": lambda x, b: aten.leaky_relu_backward(b, x, 0.01, False),
    "hardtanh_backward(x, b)": lambda x, b: aten.hardtanh_backward(x, b, -1.0, 1.0),
}
# A map and an operand of lower rank broadcast over it (a bias, a scale), or one of the same
# rank with a dimension of size 1.
BROADCAST = [
    ("(2,1,3,3) channels last", _plain(3)),
    ("(2,1,3,3) channels last", _plain(1)),
    ("(2,1,3,3) channels last", _plain(1, 3, 3)),
    ("(2,1,3,3) channels last", _plain(2, 1, 1, 1)),
    ("(2,3,1,1) channels last", _plain(3, 1, 1)),
    ("(2,3,1,1) channels last", _plain(1, 1)),
    ("(2,3,1,1) channels last", _reversed(3, 1, 1)),
    ("(1,1,8,8) channels last", _plain(1)),
    ("(1,1,8,8) channels last", _plain(8, 1)),
    ("(1,1,8,8) channels last", _reversed(8, 1)),
    ("(2,3,4,5) channels last", _plain(3, 1, 1)),
    ("(2,3,4,5) channels last", _plain(5)),
    ("(3,4) transposed", _plain(4)),
    ("(3,4) expanded", _plain(3, 1)),
    ("(2,1,3) strides (3,100,1)", _plain(3)),
    ("(2,1,3) permuted", _plain(1, 1)),
]


@pytest.mark.parametrize("first", [True, False], ids=["map first", "map second"])
@pytest.mark.parametrize(("layout", "other"), BROADCAST, ids=[f"{name} b{i}" for i, (name, _) in enumerate(BROADCAST)])
@pytest.mark.parametrize("op", BINARY)
def test_a_broadcast_operand_laid_out_as_a_cpu_lays_it(op, layout, other, first):
    def call(device):
        x, b = LAYOUTS[layout](device), other(device)
        return BINARY[op](x, b) if first else BINARY[op](b, x)

    got, want = _strides(call)
    assert got == want


@pytest.mark.parametrize("second", list(LAYOUTS))
@pytest.mark.parametrize("first", list(AMBIGUOUS))
@pytest.mark.parametrize("op", ["add", "mul", "silu_backward(x, b)", "threshold_backward(x, b)"])
def test_two_maps_laid_out_as_a_cpu_lays_them(op, first, second):
    def call(device):
        return BINARY[op](LAYOUTS[first](device), LAYOUTS[second](device))

    try:
        torch.broadcast_shapes(LAYOUTS[first]("meta").shape, LAYOUTS[second]("meta").shape)
    except RuntimeError:
        pytest.skip("shapes that do not broadcast")
    got, want = _strides(call)
    assert got == want


@pytest.mark.parametrize(
    "call",
    [
        # the repro's: a transposed operand and a lower-rank one of another layout
        lambda d: torch.empty(3, 1, 1, device=d).transpose(0, 1) + torch.empty(2, 3, device=d).t(),
        lambda d: torch.add(
            torch.empty(2, 1, 6, device=d)[..., ::2],
            torch.empty(3, 4, 1, 1, 2, device=d).permute(4, 3, 2, 1, 0),
            alpha=2,
        ),
    ],
    ids=["transposed + lower rank", "sliced + permuted 5-d"],
)
def test_operands_of_different_layouts_laid_out_as_a_cpu_lays_them(call):
    got, want = _strides(call)
    assert got == want


class ScaledOneChannelMap(nn.Module):
    """A one-channel map a CPU's convolution writes channels last (its input is), scaled by
    a Python number (aten.mul.Tensor(y, 2.0): TensorIterator's general rule keeps it channels
    last), convolved again and flattened: the second convolution then writes channels last
    too, and the flatten copies."""

    def __init__(self) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(4, 1, 3, padding=1)
        self.expand = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x):
        y = self.squeeze(x.contiguous(memory_format=torch.channels_last)) * 2.0
        return self.expand(y).flatten(1)


class PermutedNormScaled(nn.Module):
    """ConvNeXt-style: a layer norm over a permuted map (the convolution after it writes
    channels last), a one-channel map scaled by 2, a convolution and a flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(8)
        self.squeeze = nn.Conv2d(8, 1, 3, padding=1)
        self.expand = nn.Conv2d(1, 8, 3, padding=1)

    def forward(self, x):
        x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.expand(self.squeeze(x) * 2.0).flatten(1)


@pytest.mark.parametrize(
    ("model", "shape"), [(ScaledOneChannelMap, (2, 4, 8, 8)), (PermutedNormScaled, (1, 8, 16, 16))]
)
def test_a_meta_trace_records_what_a_real_forward_runs(model, shape):
    torch.manual_seed(0)
    module = model().eval()
    on_meta = trace(module, [shape])
    real = trace(module, [shape], real=True)
    assert [op.op for op in on_meta.ops] == [op.op for op in real.ops]
    assert [[t.shape for t in op.outputs] for op in on_meta.ops] == [[t.shape for t in op.outputs] for op in real.ops]


# Hardtanh (ReLU6) writes into `torch.empty_like(input)`: the input's strides where it is
# dense, else dense ones in the order of its strides; not TensorIterator's layout.
LIKE_INPUT = {
    "ambiguous (2,1,3,3)": _cl(2, 1, 3, 3),
    "ambiguous (1,8,1,1)": _cl(1, 8, 1, 1),
    "size-1 stride of its own": lambda device: torch.empty_strided((2, 1, 3), (3, 100, 1), device=device),
    "sliced, transposed": lambda device: torch.empty(4, 8, device=device)[:, ::2].t(),
    "channel slice of channels last": lambda device: torch.empty(2, 8, 4, 4, device=device, memory_format=CL)[:, :4],
    "expanded": lambda device: torch.empty(1, 3, 5, device=device).expand(4, 3, 5),
    "reversed": _reversed(2, 3, 4),
    "channels last 3d": lambda device: torch.empty(2, 3, 2, 4, 4, device=device).to(
        memory_format=torch.channels_last_3d
    ),
}


@pytest.mark.parametrize("make", LIKE_INPUT.values(), ids=LIKE_INPUT.keys())
@pytest.mark.parametrize("call", [lambda x: F.hardtanh(x, 0.0, 6.0), lambda x: F.hardtanh(x)], ids=["relu6", "default"])
def test_hardtanh_is_laid_out_as_empty_like_lays_its_input_out(make, call):
    want = call(make("cpu")).stride()
    with Recorder():
        got = call(make("meta")).stride()
    assert got == want
