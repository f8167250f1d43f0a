"""The trace's fast path (`meta_outputs.answer_from_formula`) answers an operator from its
shape formula: a call PyTorch's kernels refuse must be refused under the recorder too (the
formula raises RuntimeError, so that the meta kernel decides, or Refused), never answered,
and never met with a ZeroDivisionError or an IndexError of the formula's own; and the
checks must not refuse the valid calls next to them."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archprof
import archprof.tracing.recorder as recorder_module
from archprof.errors import ArchprofError
from archprof.tracing.recorder import Recorder

aten = torch.ops.aten


def _e(shape, device):
    return torch.zeros(shape, device=device)


# Each call takes the device its tensors are made on.
REFUSED = {
    "sum dim out of range": lambda d: _e((2, 3), d).sum(dim=5),
    "sum dim negative out of range": lambda d: _e((2, 3), d).sum(dim=-3),
    "sum dim repeated": lambda d: _e((2, 3), d).sum(dim=(1, -1)),
    "sum dim repeated twice the same": lambda d: _e((2, 3), d).sum(dim=(1, 1)),
    "mean dim out of range": lambda d: _e((2, 3), d).mean(dim=2),
    "0-d sum dim 1": lambda d: _e((), d).sum(dim=1),
    "0-d sum dims 0 and -1": lambda d: _e((), d).sum(dim=(0, -1)),
    "cat dim out of range": lambda d: torch.cat([_e((2, 3), d), _e((2, 3), d)], dim=5),
    "cat dim negative out of range": lambda d: torch.cat([_e((2, 3), d), _e((2, 3), d)], dim=-3),
    "cat of 0-d tensors": lambda d: torch.cat([_e((), d), _e((), d)]),
    "cat of an empty and a 0-d tensor": lambda d: torch.cat([_e((0,), d), _e((), d)]),
    "clamp without bounds": lambda d: aten.clamp(_e((2, 3), d)),
    "clamp with None bounds": lambda d: aten.clamp(_e((2, 3), d), None, None),
    "clamp_ without bounds": lambda d: aten.clamp_(_e((2, 3), d)),
    "mm 3-d and 2-d": lambda d: aten.mm(_e((2, 3, 4), d), _e((3, 5), d)),
    "mm 1-d and 2-d": lambda d: aten.mm(_e((3,), d), _e((3, 5), d)),
    "mm 2-d and 1-d": lambda d: aten.mm(_e((5, 3), d), _e((3,), d)),
    "addmm 1-d": lambda d: aten.addmm(_e((5,), d), _e((3,), d), _e((3, 5), d)),
    "bmm 4-d and 3-d": lambda d: aten.bmm(_e((2, 3, 4, 1), d), _e((2, 4, 5), d)),
    "bmm 3-d and 2-d": lambda d: aten.bmm(_e((2, 3, 4), d), _e((4, 5), d)),
    "avg_pool2d divisor_override 0": lambda d: F.avg_pool2d(_e((1, 3, 8, 8), d), 2, divisor_override=0),
    "avg_pool2d 5-d input": lambda d: aten.avg_pool2d(_e((1, 2, 3, 8, 8), d), [2, 2]),
    "avg_pool2d 2-d input": lambda d: aten.avg_pool2d(_e((8, 8), d), [2, 2]),
    "avg_pool2d stride 0": lambda d: aten.avg_pool2d(_e((1, 3, 8, 8), d), [2, 2], [0, 1]),
    "avg_pool2d stride negative": lambda d: aten.avg_pool2d(_e((1, 3, 8, 8), d), [2, 2], [-1, 1]),
    "avg_pool2d kernel 0": lambda d: aten.avg_pool2d(_e((1, 3, 8, 8), d), [0, 2], [1, 1]),
    "avg_pool2d three kernel sizes": lambda d: aten.avg_pool2d(_e((1, 3, 8, 8), d), [2, 2, 2]),
    "max_pool2d 5-d input": lambda d: aten.max_pool2d_with_indices(_e((1, 2, 3, 8, 8), d), [2, 2]),
    "max_pool2d dilation 0": lambda d: aten.max_pool2d_with_indices(
        _e((1, 3, 8, 8), d), [2, 2], [2, 2], [0, 0], [0, 1]
    ),
    "max_pool2d stride 0": lambda d: aten.max_pool2d_with_indices(_e((1, 3, 8, 8), d), [2, 2], [0, 0]),
    "max_pool2d negative padding": lambda d: aten.max_pool2d_with_indices(_e((1, 3, 8, 8), d), [2, 2], [2, 2], [-1, 0]),
    "max_pool2d three strides": lambda d: aten.max_pool2d_with_indices(_e((1, 3, 8, 8), d), [2, 2], [2, 2, 2]),
    "max_pool3d 3-d input": lambda d: aten.max_pool3d_with_indices(_e((8, 8, 8), d), [2, 2, 2]),
    "adaptive_avg_pool2d 2-d input": lambda d: aten._adaptive_avg_pool2d(_e((8, 8), d), [2, 2]),
    "adaptive_avg_pool2d 5-d input": lambda d: aten._adaptive_avg_pool2d(_e((1, 2, 3, 8, 8), d), [2, 2]),
    "adaptive_avg_pool2d empty map": lambda d: aten._adaptive_avg_pool2d(_e((1, 3, 0, 8), d), [2, 2]),
    "adaptive_avg_pool3d empty map": lambda d: aten._adaptive_avg_pool3d(_e((1, 2, 0, 8, 8), d), [2, 2, 2]),
    # The meta kernel answers these two, as (1, 0, 2, 2, 2) and (1, 3, 2, 2, 2).
    "adaptive_avg_pool3d no channels": lambda d: aten._adaptive_avg_pool3d(_e((1, 0, 4, 4, 4), d), [2, 2, 2]),
    "adaptive_avg_pool2d three output sizes": lambda d: aten._adaptive_avg_pool2d(_e((1, 3, 8, 8), d), [2, 2, 2]),
    "adaptive_avg_pool3d two output sizes": lambda d: aten._adaptive_avg_pool3d(_e((1, 3, 4, 4, 4), d), [2, 2]),
    "roll shifts and dims mismatched": lambda d: torch.roll(_e((2, 3), d), [1, 2], [0]),
    "roll dim out of range": lambda d: torch.roll(_e((2, 3), d), 1, 4),
    "roll dim negative out of range": lambda d: torch.roll(_e((2, 3), d), 1, -3),
    "roll of a 0-d tensor along a dim": lambda d: torch.roll(_e((), d), 1, 0),
    "channel_shuffle channels not divisible": lambda d: aten.channel_shuffle(_e((1, 4, 2, 2), d), 3),
    "channel_shuffle 2-d input": lambda d: aten.channel_shuffle(_e((4, 2), d), 2),
    "channel_shuffle 0 groups": lambda d: aten.channel_shuffle(_e((1, 4, 2, 2), d), 0),
    "unfold no window fits across": lambda d: F.unfold(_e((3, 3, 5, 2), d), 3),
    "unfold no window fits down": lambda d: F.unfold(_e((3, 3, 2, 5), d), 3),
    "group_norm HxW wrong": lambda d: aten.native_group_norm(_e((2, 6, 3), d), None, None, 2, 6, 5, 3, 1e-5),
    "group_norm weight of the wrong size": lambda d: aten.native_group_norm(
        _e((2, 6, 3), d), _e((5,), d), None, 2, 6, 3, 3, 1e-5
    ),
    "group_norm bias of the wrong shape": lambda d: aten.native_group_norm(
        _e((2, 6, 3), d), None, _e((6, 1), d), 2, 6, 3, 3, 1e-5
    ),
    "group_norm 0 groups": lambda d: aten.native_group_norm(_e((2, 6, 3), d), None, None, 2, 6, 3, 0, 1e-5),
    "add with complex alpha": lambda d: torch.add(_e((4, 3), d), _e((4, 3), d), alpha=1j),
}


def _raised(call, device: str) -> BaseException:
    with pytest.raises(Exception) as caught:  # the oracle: PyTorch's own error, whatever its type
        call(device)
    return caught.value


@pytest.mark.parametrize("name", list(REFUSED))
def test_a_call_pytorch_refuses_is_refused_in_a_trace(name):
    call = REFUSED[name]
    _raised(call, "cpu")  # the oracle: a real forward fails on it
    with Recorder():
        refusal = _raised(call, "meta")
    assert not isinstance(refusal, ZeroDivisionError), refusal
    if not isinstance(refusal, RuntimeError):
        # Only PyTorch's own error, as its meta kernel raises it outside a trace (an IndexError
        # for a dimension out of range, the meta kernel's ValueError for a complex alpha):
        # never one of the formula's own (`a[1]` of a 1-d shape).
        expected = _raised(call, "meta")
        assert (type(refusal), str(refusal)) == (type(expected), str(expected))


# Valid calls next to the refused ones: answered by their formula (the meta kernel is never
# asked), with the CPU's shape and dtype.
VALID = {
    "sum dim 1": lambda d: _e((2, 3), d).sum(dim=1),
    "sum dim -1": lambda d: _e((2, 3), d).sum(dim=-1),
    "sum dims 0 and -1": lambda d: _e((2, 3, 4), d).sum(dim=(0, -1)),
    "sum dims keepdim": lambda d: _e((2, 3, 4), d).sum(dim=(2, 0), keepdim=True),
    "sum of everything": lambda d: _e((2, 3), d).sum(),
    "sum dim []": lambda d: _e((2, 3), d).sum(dim=[]),
    "mean dim -2": lambda d: _e((2, 3, 4), d).mean(dim=-2),
    "0-d sum dim 0": lambda d: _e((), d).sum(dim=0),
    "0-d sum dim -1 keepdim": lambda d: _e((), d).sum(dim=-1, keepdim=True),
    "cat dim -1": lambda d: torch.cat([_e((2, 3), d), _e((2, 4), d)], dim=-1),
    "cat dim 1": lambda d: torch.cat([_e((2, 3), d), _e((2, 4), d)], dim=1),
    "cat dim -2": lambda d: torch.cat([_e((2, 3), d), _e((5, 3), d)], dim=-2),
    "cat with a legacy empty tensor": lambda d: torch.cat([_e((0,), d), _e((2, 3), d)], dim=1),
    "cat of empty tensors, any dim": lambda d: torch.cat([_e((0,), d), _e((0,), d)], dim=5),
    "clamp min only": lambda d: torch.clamp(_e((2, 3), d), min=0.0),
    "clamp max only": lambda d: torch.clamp(_e((2, 3), d), max=1.0),
    "clamp both": lambda d: torch.clamp(_e((2, 3), d), -1.0, 1.0),
    "clamp_ min only": lambda d: _e((2, 3), d).clamp_(min=0.0),
    "clamp tensor min": lambda d: torch.clamp(_e((2, 1), d), min=_e((2, 3), d)),
    "clamp_min": lambda d: torch.clamp_min(_e((2, 3), d), 0.5),
    "mm 2-d": lambda d: aten.mm(_e((2, 3), d), _e((3, 5), d)),
    "addmm": lambda d: aten.addmm(_e((5,), d), _e((2, 3), d), _e((3, 5), d)),
    "bmm 3-d": lambda d: aten.bmm(_e((2, 3, 4), d), _e((2, 4, 5), d)),
    "avg_pool2d": lambda d: F.avg_pool2d(_e((1, 3, 8, 8), d), 2),
    "avg_pool2d divisor_override 3": lambda d: F.avg_pool2d(_e((1, 3, 8, 8), d), 2, divisor_override=3),
    "avg_pool2d 3-d input, padding, ceil": lambda d: F.avg_pool2d(_e((3, 9, 9), d), 3, 2, 1, ceil_mode=True),
    "max_pool2d dilation 2": lambda d: F.max_pool2d(_e((1, 3, 9, 9), d), 2, 2, 1, 2),
    "max_pool2d 3-d input": lambda d: F.max_pool2d(_e((3, 8, 8), d), 2),
    "max_pool2d stride (1, 2)": lambda d: aten.max_pool2d_with_indices(_e((1, 3, 8, 8), d), [2, 2], [1, 2]),
    "max_pool3d 4-d input": lambda d: aten.max_pool3d_with_indices(_e((3, 8, 8, 8), d), [2, 2, 2]),
    "adaptive_avg_pool2d 4-d": lambda d: aten._adaptive_avg_pool2d(_e((1, 3, 8, 8), d), [2, 2]),
    "adaptive_avg_pool2d 3-d": lambda d: aten._adaptive_avg_pool2d(_e((3, 8, 8), d), [1, 1]),
    "adaptive_avg_pool3d 5-d": lambda d: aten._adaptive_avg_pool3d(_e((1, 3, 4, 8, 8), d), [2, 2, 2]),
    "roll shifts and dims matching": lambda d: torch.roll(_e((2, 3), d), [1, 2], [0, 1]),
    "roll dim -2": lambda d: torch.roll(_e((2, 3), d), 1, -2),
    "roll one dim twice": lambda d: torch.roll(_e((2, 3), d), [1, 1], [0, 0]),
    "channel_shuffle divisible": lambda d: aten.channel_shuffle(_e((1, 4, 2, 2), d), 2),
    "channel_shuffle 3-d": lambda d: aten.channel_shuffle(_e((1, 6, 2), d), 3),
    "unfold a window fits": lambda d: F.unfold(_e((3, 3, 5, 4), d), 3),
    "unfold one window": lambda d: F.unfold(_e((1, 2, 3, 3), d), 3, padding=1, stride=2),
    "group_norm": lambda d: aten.native_group_norm(_e((2, 6, 3), d), _e((6,), d), _e((6,), d), 2, 6, 3, 3, 1e-5),
    "group_norm 4-d": lambda d: aten.native_group_norm(_e((2, 6, 3, 4), d), None, None, 2, 6, 12, 2, 1e-5),
    "add alpha 2": lambda d: torch.add(_e((4, 3), d), _e((4, 3), d), alpha=2),
    "mul other 1j (a complex result)": lambda d: torch.mul(_e((4, 3), d), other=1j),
}


@pytest.mark.parametrize("name", list(VALID))
def test_a_valid_call_is_answered_as_the_cpu_answers_it(name, monkeypatch):
    call = VALID[name]
    asked = []
    answer = recorder_module.answer_from_formula

    def spied(func, info, args, kwargs, tensors, *first_only):
        def meta_kernel(*a, **k):  # asked only where the formula raised
            asked.append(info.name)
            return func(*a, **k)

        return answer(meta_kernel, info, args, kwargs, tensors, *first_only)

    monkeypatch.setattr(recorder_module, "answer_from_formula", spied)
    expected = call("cpu")
    with Recorder():
        got = call("meta")
    expected, got = (out[0] if isinstance(out, tuple) else out for out in (expected, got))
    assert (tuple(got.shape), got.dtype) == (tuple(expected.shape), expected.dtype)
    assert asked == [], f"the formula refused a valid call: {asked}"


class SumTwice(nn.Module):
    def forward(self, x):
        return x.sum(dim=(1, 1))


class Unfold(nn.Module):
    def forward(self, x):
        return F.unfold(x, 3)


@pytest.mark.parametrize(("model", "size"), [(SumTwice(), (3, 8, 8)), (Unfold(), (3, 5, 2))])
def test_analysis_fails_where_the_real_forward_fails(model, size):
    with pytest.raises(RuntimeError):
        model(torch.randn(1, *size))
    with pytest.raises(ArchprofError):
        archprof.analyze(model, input_size=size)
