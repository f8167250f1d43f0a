"""Property tests: random conv / pool / norm / linear stacks in 1, 2 and 3 dimensions.

archprof's shapes must equal a real forward pass, its parameters `sum(p.numel())`, and its
MACs what two independent counters report: PyTorch's FlopCounterMode (2 FLOPs per MAC)
and fvcore (one "flop" per MAC)."""

import warnings

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import archprof

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
MAX_POOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
AVG_POOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
BATCH_NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
INSTANCE_NORM = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}


@st.composite
def layer_stacks(draw):
    """A random stack and its per-sample input size; it may or may not run."""
    dims = draw(st.sampled_from([1, 2, 3]))
    small = 6 if dims == 3 else 16
    size = tuple(draw(st.integers(4, small)) for _ in range(dims))
    channels = draw(st.integers(1, 6))
    in_channels = channels
    layers = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["conv", "conv", "max_pool", "avg_pool", "norm", "act"]))
        kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
        stride = draw(st.integers(1, 2))
        if kind == "conv":
            groups = draw(st.sampled_from([g for g in (1, 2, 3) if channels % g == 0]))
            out_channels = groups * draw(st.integers(1, 3))
            layers.append(
                CONV[dims](
                    channels,
                    out_channels,
                    kernel,
                    stride=stride,
                    padding=draw(st.integers(0, 2)),
                    dilation=draw(st.integers(1, 2)),
                    groups=groups,
                    bias=draw(st.booleans()),
                )
            )
            channels = out_channels
        elif kind == "max_pool":
            k = max(kernel)
            layers.append(
                MAX_POOL[dims](
                    k,
                    stride=stride,
                    padding=draw(st.integers(0, k // 2)),
                    dilation=draw(st.integers(1, 2)),
                    ceil_mode=draw(st.booleans()),
                )
            )
        elif kind == "avg_pool":
            k = max(kernel)
            layers.append(
                AVG_POOL[dims](k, stride=stride, padding=draw(st.integers(0, k // 2)), ceil_mode=draw(st.booleans()))
            )
        elif kind == "norm":
            norm = draw(st.sampled_from([BATCH_NORM, INSTANCE_NORM]))
            layers.append(norm[dims](channels, affine=True))
        else:
            layers.append(draw(st.sampled_from([nn.ReLU(), nn.ReLU(inplace=True), nn.Sigmoid(), nn.Hardtanh()])))
    if draw(st.booleans()):
        layers += [nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.Identity(), nn.Flatten()]
        layers.append(nn.LazyLinear(draw(st.integers(1, 5))))
    return nn.Sequential(*layers).eval(), (in_channels, *size), draw(st.integers(1, 2))


def _real_run(model, input_size, batch):
    """Output shape of every leaf module in call order, or None if the forward fails."""
    shapes = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
        for m in model.modules()
        if not list(m.children())
    ]
    try:
        with torch.no_grad():
            model(torch.rand(batch, *input_size))
    except (RuntimeError, ValueError):
        return None
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def _leaf_output_shapes(report):
    return [tuple(map(int, row["output_shape"].split("x"))) for row in report.rows() if row["layer"]]


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(layer_stacks())
def test_shapes_params_and_macs_match_a_real_forward(stack):
    model, input_size, batch = stack
    real_shapes = _real_run(model, input_size, batch)  # also materialises LazyLinear
    if real_shapes is None:
        # What a real forward refuses, archprof refuses too (with a one-line error).
        with pytest.raises(archprof.ArchprofError):
            archprof.analyze(model, input_size=input_size, batch=batch)
        return
    report = archprof.analyze(model, input_size=input_size, batch=batch)
    assert _leaf_output_shapes(report) == real_shapes
    assert report.totals.param_count == sum(p.numel() for p in model.parameters())

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.rand(batch, *input_size))
    assert report.totals.flops == counter.get_total_flops()
    assert report.totals.macs * 2 == counter.get_total_flops()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer_stacks())
def test_conv_and_linear_macs_match_fvcore(stack):
    fvcore = pytest.importorskip("fvcore.nn")
    model, input_size, batch = stack
    real_shapes = _real_run(model, input_size, batch)
    assume(real_shapes is not None)
    analysis = fvcore.FlopCountAnalysis(model, torch.rand(batch, *input_size))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        by_operator = analysis.by_operator()
    fvcore_macs = sum(by_operator.get(op, 0) for op in ("conv", "linear", "addmm", "matmul"))
    assert archprof.analyze(model, input_size=input_size, batch=batch).totals.macs == fvcore_macs


@pytest.mark.parametrize("transposed_dims", [1, 2, 3])
def test_transposed_and_depthwise_convolutions(transposed_dims):
    conv_t = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[transposed_dims]
    model = nn.Sequential(
        conv_t(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
        CONV[transposed_dims](6, 6, 3, padding=1, groups=6),  # depthwise
    ).eval()
    input_size = (4, *(5,) * transposed_dims)
    real_shapes = _real_run(model, input_size, 2)
    report = archprof.analyze(model, input_size=input_size, batch=2)
    assert _leaf_output_shapes(report) == real_shapes
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.rand(2, *input_size))
    assert report.totals.macs * 2 == counter.get_total_flops()
