"""The trace's fourth round of fast paths: nn.AdaptiveAvgPool2d answered by its shortcut where
it reduces to one element a channel; the statistics a norm's shortcut lets go of at once noted
without being made (`meta_outputs.Unmade`); the concatenation's shape formula written as one loop.
The oracles: the same trace with every forward run (`Passing`, under which no shortcut is taken),
and PyTorch's meta kernel for the concatenation's shape and refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import archprof.tracing.meta_outputs as meta_outputs
from archprof.operators.shapes import cat_shape
from tests.test_shortcuts import _forward_traced, _traced, spy  # noqa: F401 (spy: a fixture, each test's argument)

F = torch.nn.functional


def _pooled(output_size, shape, channels_last: bool) -> nn.Module:
    """A convolution making the pool's input of `shape` (the trace's input too), then the pool."""
    conv = nn.Conv3d if len(shape) == 5 else nn.Conv2d
    channels = shape[-3] if len(shape) == 3 else shape[1]
    model = nn.Sequential(conv(channels, channels, 1), nn.AdaptiveAvgPool2d(output_size)).to("meta").eval()
    return model.to(memory_format=torch.channels_last) if channels_last else model


# (output size, input shape, channels last): each reduces to the mean the shortcut records.
ONE_BY_ONE = [
    (1, (2, 4, 5, 5), False),
    ((1, 1), (2, 4, 5, 5), False),
    ([1, 1], (2, 4, 3, 6), False),
    (1, (4, 5, 5), False),  # unbatched
    (1, (2, 4, 1, 1), False),  # already one element a channel
    (1, (2, 1, 5, 5), True),  # one channel: the convolution's output contiguous, not suggested
]
# Each runs the forward: another output size, one of None, a 5-d input, an input that suggests
# channels last (the composite restrides its mean in place: an as_strided_ recorded after it).
FORWARD_RUNS = [
    (2, (2, 4, 5, 5), False),
    ((1, 2), (2, 4, 5, 5), False),
    ((None, 1), (2, 4, 1, 5), False),
    ((True, True), (2, 4, 5, 5), False),
    (1, (2, 4, 5, 5, 5), False),
    (1, (2, 4, 5, 5), True),
    (1, (2, 4, 1, 1), True),  # one element a channel, contiguous too, and still suggested
]


@pytest.mark.parametrize(("output_size", "shape", "channels_last"), ONE_BY_ONE)
def test_a_pool_to_one_element_a_channel_records_its_forwards_ops(output_size, shape, channels_last, spy):  # noqa: F811
    model = _pooled(output_size, shape, channels_last)
    calls = spy(F, "adaptive_avg_pool2d")
    expected = _forward_traced(model, shape)
    assert calls and "aten.mean" in expected
    calls.clear()
    assert _traced(model, shape) == expected
    assert calls == [], "the shortcut should have answered the call"


@pytest.mark.parametrize(("output_size", "shape", "channels_last"), FORWARD_RUNS)
def test_a_pool_the_shortcut_does_not_know_runs_its_forward(output_size, shape, channels_last, spy):  # noqa: F811
    model = _pooled(output_size, shape, channels_last)
    calls = spy(F, "adaptive_avg_pool2d")
    expected = _forward_traced(model, shape)
    calls.clear()
    assert _traced(model, shape) == expected
    assert calls, "the forward should have run"


def test_a_channels_last_pool_input_records_the_composite_restriding_its_mean():
    assert "aten.as_strided_" in _traced(_pooled(1, (2, 4, 5, 5), channels_last=True), (2, 4, 5, 5))


def _meta_cat(shapes: list[tuple[int, ...]], dim: int) -> tuple[int, ...] | None:
    """The meta kernel's result shape (None where it refuses the call)."""
    try:
        return tuple(torch.cat([torch.empty(shape, device="meta") for shape in shapes], dim).shape)
    except (RuntimeError, IndexError):
        return None


CONCATENATIONS = [
    ([(1, 2, 3, 3)] * 12, 1),
    ([(1, 2, 3, 3), (1, 5, 3, 3), (1, 1, 3, 3), (1, 7, 3, 3)], -3),
    ([(2, 3), (0,), (4, 3), (0,), (1, 3)], 0),  # 1-d empty tensors skipped, wherever they are
    ([(0,), (0,)], 1),
    ([(2, 3), (2, 4)], 0),  # another size off the dimension
    ([(2, 3), (2, 3, 1)], 0),  # another rank
    ([(2, 3, 4), (2, 5, 4), (2, 3, 5)], 1),  # the last one off
    ([(2, 3), (2, 3)], 2),  # the dimension out of range
]


@pytest.mark.parametrize(("shapes", "dim"), CONCATENATIONS)
def test_the_concatenation_formula_gives_the_meta_kernels_shape_or_refuses_where_it_does(shapes, dim):
    expected = _meta_cat(shapes, dim)
    if expected is None:
        with pytest.raises(RuntimeError):
            cat_shape(list(shapes), dim)
    else:
        assert cat_shape(list(shapes), dim) == [expected]


def _norms(make, blocks: int) -> nn.Module:
    """`blocks` alike blocks (the later ones replayed from the first), each a convolution then the norm."""
    return nn.Sequential(*[nn.Sequential(nn.Conv2d(4, 4, 1), make()) for _ in range(blocks)]).to("meta").eval()


# Norms whose shortcut's operator returns statistics the call lets go of at once.
NORMS = {
    "batch norm": lambda: nn.BatchNorm2d(4),
    "batch norm, no affine": lambda: nn.BatchNorm2d(4, affine=False),
    "layer norm": lambda: nn.LayerNorm(6),
}


@pytest.mark.parametrize("blocks", [1, 3])
@pytest.mark.parametrize("name", NORMS)
def test_statistics_let_go_of_at_once_are_recorded_as_the_forward_records_them(name, blocks):
    model = _norms(NORMS[name], blocks)
    assert _traced(model, (2, 4, 6, 6)) == _forward_traced(model, (2, 4, 6, 6))


@pytest.mark.parametrize("name", NORMS)
def test_a_shortcut_makes_no_tensor_for_the_statistics_it_lets_go_of(name, monkeypatch):
    made = []
    empty = meta_outputs._empty
    monkeypatch.setattr(meta_outputs, "_empty", lambda shape, dtype: made.append(shape) or empty(shape, dtype))
    _traced(_norms(NORMS[name], 1), (2, 4, 6, 6))
    assert len(made) == 2, made  # the convolution's output and the norm's: none for the statistics
