"""The one operator catalogue: every operator the built-in models and torchvision's
classification, segmentation and video models run is known to it (costed or declared
free), it holds no operator a dispatch trace never sees, and the trace's fast-path answers
carry the real meta kernel's strides."""

import math
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing._internal.two_tensor import TwoTensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import archprof
from archprof.kernels import DeviceKernels
from archprof.kernels.one_cpu_operator import STAYS_COMPOSITE
from archprof.operators import OPERATORS, Family, operator_named
from archprof.passes.flops import op_cost
from archprof.passes.receptive_field import FieldMark
from archprof.passes.receptive_field.rules import rule_for
from archprof.tracing.recorder import Recorder
from archprof.tracing.trace import trace
from archprof.zoo import MODELS
from tests.fast_path import check_answers_match_the_meta_kernel, check_laid_out_as_the_cpu

aten = torch.ops.aten


# One model per architecture of torchvision.models where the variants share their code
# (resnet18 stands for resnet34-152 and wide_resnet; efficientnet_b0 for b1-b7; swin_t and
# swin_v2_t for their larger variants), traced at small inputs where the architecture allows.
TORCHVISION = [
    ("alexnet", (3, 64, 64)),
    ("convnext_tiny", (3, 64, 64)),
    ("densenet121", (3, 64, 64)),
    ("efficientnet_b0", (3, 64, 64)),
    ("efficientnet_v2_s", (3, 64, 64)),
    ("googlenet", (3, 64, 64)),
    ("inception_v3", (3, 75, 75)),
    ("maxvit_t", (3, 224, 224)),
    ("mnasnet0_5", (3, 64, 64)),
    ("mobilenet_v2", (3, 64, 64)),
    ("mobilenet_v3_small", (3, 64, 64)),
    ("resnet18", (3, 64, 64)),
    ("resnext50_32x4d", (3, 64, 64)),
    ("shufflenet_v2_x0_5", (3, 64, 64)),
    ("squeezenet1_0", (3, 64, 64)),
    ("swin_t", (3, 64, 64)),
    ("swin_v2_t", (3, 64, 64)),
    ("vgg11_bn", (3, 64, 64)),
    ("vit_b_32", (3, 224, 224)),
    ("fcn_resnet50", (3, 64, 64)),
    ("deeplabv3_mobilenet_v3_large", (3, 64, 64)),
    ("deeplabv3_resnet50", (3, 64, 64)),
    ("lraspp_mobilenet_v3_large", (3, 64, 64)),
    ("r3d_18", (3, 4, 32, 32)),
    ("mc3_18", (3, 4, 32, 32)),
    ("r2plus1d_18", (3, 4, 32, 32)),
    ("s3d", (3, 16, 224, 224)),
    ("mvit_v1_b", (3, 16, 224, 224)),
    ("mvit_v2_s", (3, 16, 224, 224)),
    ("swin3d_t", (3, 4, 64, 64)),
]


def _unknown_operators(model: torch.nn.Module, input_size) -> set[str]:
    graph = trace(model, [(1, *input_size)])
    return {op.op for op in graph.ops if operator_named(op.op) is None}


def test_every_operator_of_the_built_in_models_is_catalogued():
    unknown = {}
    for name, zoo_model in MODELS.items():
        with torch.device("meta"):
            model = zoo_model.build()
        unknown[name] = _unknown_operators(model, zoo_model.input_size)
    assert unknown == {name: set() for name in MODELS}


@pytest.mark.parametrize(("name", "input_size"), TORCHVISION, ids=[name for name, _ in TORCHVISION])
def test_every_operator_of_torchvision_models_is_catalogued(hub_packages, name, input_size):
    torchvision, _ = hub_packages
    with torch.device("meta"):
        model = torchvision.models.get_model(name, weights=None, **_no_backbone_weights(name))
    assert _unknown_operators(model, input_size) == set()


def _no_backbone_weights(name: str) -> dict:
    segmentation = ("fcn_", "deeplabv3_", "lraspp_")
    return {"weights_backbone": None} if name.startswith(segmentation) else {}


def test_data_movement_is_free_and_not_listed_as_not_counted():
    """Swin's shifted windows roll, index and pad: no arithmetic, and no 'not counted'."""

    class Shifted(torch.nn.Module):
        def forward(self, x):
            x = torch.roll(x, shifts=1, dims=2).repeat(1, 1, 1, 2)
            x = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
            return torch.nn.functional.pixel_shuffle(x[:, :, :, [0, 2, 4, 6]], 1)

    totals = archprof.analyze(Shifted(), input_size=(4, 6, 6)).totals
    assert (totals.macs, totals.elementwise_flops, totals.not_counted) == (0, 0, {})


def test_a_formula_said_to_read_the_output_alone_reads_nothing_else():
    # `op_cost` hands such a formula the output's shape alone: one that read an argument would
    # fail without it, or count otherwise with other arguments.
    said = [operator for operator in OPERATORS.values() if operator.output_shape_only]
    assert operator_named("aten.relu") in said and operator_named("aten.convolution") not in said
    out = (2, 3, 5, 7)
    for operator in said:
        alone = operator.cost(out=out)
        assert alone == operator.cost((2, 3, 5, 7), (1, 3, 1, 1), 0.5, dim=1, out=out), operator.name
        assert alone.elementwise_flops % math.prod(out) == 0 and alone.macs == 0, operator.name


def test_the_real_gaps_are_costed():
    """Softmax 3 per element (exp, sum, divide), pow and trigonometry 1 per element, a
    variance 3 per input element (mean, centre, square), a 2-norm 2 per input element and a
    square root per output, bilinear interpolation 7 per output (4 multiplies, 3 adds)."""

    class Gaps(torch.nn.Module):
        def forward(self, x):  # x: [1, 2, 4, 4], 32 elements
            a = torch.softmax(x, dim=-1) + x.pow(2) + torch.sin(x)  # 96 + 32 + 32 + 32 + 32
            v = x.var(dim=1)  # 3 * 32
            n = torch.linalg.vector_norm(x, dim=-1)  # 2 * 32 + 8
            up = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear")  # 7 * 128
            return a, v, n, up

    totals = archprof.analyze(Gaps(), input_size=(2, 4, 4)).totals
    assert totals.not_counted == {}
    assert totals.elementwise_flops == 96 + 4 * 32 + 3 * 32 + 2 * 32 + 8 + 7 * 128


def test_the_operators_the_hub_sweep_found_uncounted_are_costed():
    """VOLO's outlooker and TNT cut windows out (F.unfold, free) and VOLO folds them back
    (F.fold: one addition per window element); EdgeNeXt's positional encoding takes running
    sums (one addition per element); BoTNet's relative positions make an identity (free)."""

    class Found(torch.nn.Module):
        def forward(self, x):  # x: [1, 4, 8, 8]
            columns = torch.nn.functional.unfold(x, 3, padding=1, stride=2)  # [1, 36, 16]
            folded = torch.nn.functional.fold(columns, (8, 8), 3, padding=1, stride=2)  # 576 additions
            return folded.cumsum(1) + folded.cumsum(3) + torch.eye(8)  # 256 + 256, then 256 + 256

    report = archprof.analyze(Found(), input_size=(4, 8, 8))
    assert report.totals.not_counted == {}
    assert report.totals.elementwise_flops == 4 * 9 * 16 + 256 + 256 + 256 + 256


@pytest.mark.parametrize("dim,stride", [(1, (1, 1)), (3, FieldMark.UNDEFINED)])
def test_a_running_sum_keeps_the_field_unless_it_runs_along_a_spatial_axis(dim, stride):
    """Along a spatial axis unit u reads units 0 to u (tests/test_rf_view_ops.py checks every
    unit against the gradient oracle): unit 0 itself alone, the fields growing from a start
    they share, with no stride."""

    class RunningSum(torch.nn.Module):
        def forward(self, x):
            return x.cumsum(dim)

    report = archprof.analyze(RunningSum(), input_size=(4, 8, 8))
    assert report.columns["receptive_field"] == [(1, 1)]
    assert report.columns["effective_stride"] == [stride]


@pytest.mark.parametrize("axis,lengths,field", [(1, [[1, 3]], (1, 1)), (3, [[[[4, 4]] * 8] * 4], FieldMark.UNDEFINED)])
def test_a_segment_reduction_keeps_the_field_unless_its_segments_run_along_a_spatial_axis(axis, lengths, field):
    """Each output reads a segment of the input along `axis`: the channels' segments leave the
    field as it was; a spatial axis's, whose bounds are the lengths' values, leave it undefined."""

    class SegmentSums(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("lengths", torch.tensor(lengths))

        def forward(self, x):
            return torch.segment_reduce(x, "sum", lengths=self.lengths, axis=axis)

    report = archprof.analyze(SegmentSums(), input_size=(4, 8, 8))
    assert report.columns["receptive_field"] == [field]


def _dispatched(packet) -> bool:
    """Whether a dispatch trace can see the operator: one of its overloads other than
    `out=` forms has a kernel of its own (not only a composite decomposition)."""
    for overload in packet.overloads():
        if "out" in overload:
            continue
        qualified = packet._qualified_op_name + ("" if overload == "default" else f".{overload}")
        try:
            if not torch._C._dispatch_has_kernel_for_dispatch_key(qualified, "CompositeImplicitAutograd"):
                return True
        except RuntimeError:  # a TorchScript-only overload
            continue
    return False


def test_the_catalogue_holds_no_composite_operator():
    """But those the trace hands down whole, as a CPU runs them (`kernels.one_cpu_operator.STAYS_COMPOSITE`)."""
    assert sorted(str(p) for p in OPERATORS if not _dispatched(p)) == sorted(STAYS_COMPOSITE)
    assert not _dispatched(aten.matmul) and not _dispatched(aten.flatten)  # the check can fail


def test_every_catalogued_operator_has_a_receptive_field_rule_or_is_declared_opaque():
    """Pointwise, creation, reduction and normalisation have a family rule; the others a
    rule of their own or none (the field is 'undefined', saying archprof has no rule)."""
    with_family_rule = {Family.POINTWISE, Family.CREATION, Family.REDUCTION, Family.NORMALISATION}
    for packet, operator in OPERATORS.items():
        if operator.family in with_family_rule:
            assert rule_for(str(packet)) is not None, packet
    assert rule_for("aten.relu_") is rule_for("aten.relu")
    assert rule_for("aten.abs") is not None  # pointwise by PyTorch's tag


def test_pointwise_is_seeded_from_the_pointwise_tag():
    for name in ("abs", "eq", "cos", "pow", "addcmul", "masked_fill", "where"):
        packet = getattr(aten, name)
        assert any(torch.Tag.pointwise in getattr(packet, o).tags for o in packet.overloads())
        assert operator_named(f"aten.{name}").family is Family.POINTWISE


# --- the fast path answers as the meta kernel would ---------------------------------------


_LAYOUTS = ["contiguous", "channels_last", "transposed", "sliced", "expanded"]


def _layouts(draw, shape):
    """A meta tensor of `shape`: contiguous, channels last, transposed, sliced or expanded."""
    return _laid_out(shape, draw(st.sampled_from(_LAYOUTS)), "meta")


def _laid_out(shape, kind: str, device: str) -> torch.Tensor:
    if kind == "permuted" and len(shape) == 4:  # a (N, C, H, W) map's (N, H, W, C) view, as `shape`
        return torch.empty(shape[0], shape[3], shape[1], shape[2], device=device).permute(0, 2, 3, 1)
    if kind == "channels_last" and len(shape) in (4, 5):
        channels_last = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
        return torch.empty(shape, device=device).to(memory_format=channels_last)
    if kind == "transposed":
        return torch.empty(shape[::-1], device=device).permute(*range(len(shape) - 1, -1, -1))
    if kind == "sliced":
        return torch.empty((*shape[:-1], 2 * shape[-1]), device=device)[..., ::2]
    if kind == "expanded" and shape[0] > 1:
        return torch.empty((1, *shape[1:]), device=device).expand(shape)
    return torch.empty(shape, device=device)


@st.composite
def _calls(draw):
    """An operator the fast path answers, on inputs of random shapes and layouts."""
    n, c, h, w = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(4, 7)), draw(st.integers(4, 7)))
    x = _layouts(draw, (n, c, h, w))
    other = _layouts(draw, draw(st.sampled_from([(n, c, h, w), (1, c, 1, 1), (w,)])))
    a, b = _layouts(draw, (h, w)), _layouts(draw, (w, c))
    batched_a, batched_b = _layouts(draw, (n, h, w)), _layouts(draw, (n, w, c))
    volume = _layouts(draw, (n, c, 2, h, w))
    grad = _layouts(draw, (n, c, h, w))  # a gradient of x's shape, laid out on its own
    per_channel, stats = torch.ones(c, device="meta"), torch.ones(n, 1, device="meta")
    mask = draw(st.lists(st.booleans(), min_size=3, max_size=3))
    affine = draw(st.booleans())
    dim = draw(st.integers(-4, 3))
    grid = _layouts(draw, (n, draw(st.integers(1, 3)), draw(st.integers(1, 5)), 2))
    volume_grid = _layouts(draw, (n, draw(st.integers(1, 2)), draw(st.integers(1, 3)), 4, 3))
    sampling = {
        "mode": draw(st.sampled_from(["bilinear", "nearest", "bicubic"])),
        "padding_mode": draw(st.sampled_from(["zeros", "border", "reflection"])),
        "align_corners": draw(st.booleans()),
    }
    volume_mode = sampling["mode"].replace("bicubic", "bilinear")  # no bicubic sampling in 3-d
    spread = draw(st.integers(1, 2))
    windows = {  # F.unfold's, each fitting in the input (at least 4 x 4): a dilation of 2 padded
        "kernel_size": (draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        "dilation": spread,
        "padding": (spread - 1 + draw(st.integers(0, 1)), spread - 1 + draw(st.integers(0, 1))),
        "stride": draw(st.integers(1, 3)),
    }
    grouped = draw(st.sampled_from([torch.contiguous_format, torch.channels_last]))
    calls = [
        lambda: torch.relu(x),
        lambda: torch.nn.functional.gelu(x),
        lambda: x + other,
        lambda: x * other,
        lambda: torch.nn.functional.max_pool2d(x, 2),
        lambda: torch.nn.functional.avg_pool2d(x, 2),
        lambda: torch.nn.functional.adaptive_avg_pool2d(x, 2),
        lambda: x.mean(dim=(2, 3), keepdim=True),
        lambda: torch.cat([x, x], dim=1),
        lambda: torch.cat([x, x[:1]], dim=0),
        lambda: torch.cat([x, grad, x], dim=dim),  # operands laid out each its own way
        lambda: torch.cat([volume, volume.contiguous(memory_format=torch.channels_last_3d)], dim=2),
        lambda: torch.cat([x, torch.empty(0, device="meta")], dim=1),  # a 1-d empty operand, skipped
        lambda: torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear"),
        lambda: torch.nn.functional.interpolate(x, size=(5, 9), mode="bicubic", align_corners=True),
        lambda: torch.nn.functional.interpolate(x, scale_factor=3, mode="nearest"),
        lambda: torch.nn.functional.interpolate(x[:, :, 0], scale_factor=2, mode="linear"),
        lambda: torch.nn.functional.interpolate(volume, scale_factor=2, mode="trilinear"),
        lambda: torch.nn.functional.interpolate(volume, size=(3, 5, 5), mode="nearest"),
        lambda: F.grid_sample(x, grid, **sampling),
        lambda: F.grid_sample(volume, volume_grid, **{**sampling, "mode": volume_mode}),
        lambda: F.unfold(x, **windows),
        lambda: F.unfold(x[0], **windows),  # unbatched
        lambda: torch.nn.functional.group_norm(x, 1),
        lambda: torch.nn.functional.group_norm(volume, 1),
        lambda: torch.nn.functional.group_norm(x, c, torch.ones(c, device="meta"), torch.zeros(c, device="meta")),
        lambda: a @ b,
        lambda: torch.addmm(torch.empty(c, device="meta"), a, b),
        lambda: torch.bmm(batched_a, batched_b),
        # gradients, as a training trace's backward pass runs them
        # (its decomposition views the maps as (N, C, H W): contiguous or channels last only)
        lambda: aten.native_group_norm_backward(
            grad.contiguous(memory_format=grouped),
            x.contiguous(memory_format=grouped),
            stats,
            stats,
            per_channel if affine else None,
            n,
            c,
            h * w,
            1,
            mask,
        ),
        lambda: aten._softmax_backward_data(grad, x, dim, torch.float32),
        lambda: aten._log_softmax_backward_data(grad, x, 1, torch.float32),
        lambda: aten.select_backward(x, [n, c, 3, h, w], 2, 1),
        lambda: aten.slice_backward(x, [n, c, h, 2 * w + 1], 3, 1, 2 * w + 1, 2),
    ]
    return draw(st.sampled_from(calls))


@settings(max_examples=150, deadline=None)
@given(call=_calls())
def test_fast_path_answers_carry_the_meta_kernels_strides(call):
    """Each answered output has the shape, dtype and significant strides (those of
    dimensions longer than 1) of the meta kernel's output for the same call."""
    check_answers_match_the_meta_kernel(call)


@settings(max_examples=60, deadline=None)
@given(call=_calls())
def test_a_call_made_again_is_answered_as_the_meta_kernel_answered_it(call):
    """A call the fast path declines (a layout it does not model) is answered by the meta
    kernel once per trace and layout; made again, from that answer: fresh tensors of the
    same shapes, dtypes and significant strides."""
    check_answers_match_the_meta_kernel(lambda: (call(), call()))


@settings(max_examples=100, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=4, max_size=4),
    grad_kind=st.sampled_from([*_LAYOUTS, "permuted"]),
    input_kind=st.sampled_from([*_LAYOUTS, "permuted"]),
    dims=st.integers(1, 2),
    affine=st.booleans(),
    mask=st.lists(st.booleans(), min_size=3, max_size=3),
)
def test_a_layer_norms_gradient_is_laid_out_as_a_cpu_lays_it_out(shape, grad_kind, input_kind, dims, affine, mask):
    """The fast path answers a layer norm's gradient contiguous, as the CPU kernel writes it
    whatever the layouts of the incoming gradient and the input (the meta kernel follows a
    non-contiguous gradient: ConvNeXt's and PVT's normalise a (N, H, W, C) view of an
    (N, C, H, W) map, "permuted" here): the same shapes and significant strides as the real
    CPU outputs for the same call."""

    def call(device):
        normalized = shape[-dims:]
        statistics = torch.ones(*shape[:-dims], *[1] * dims, device=device)
        weight = torch.ones(normalized, device=device) if affine else None
        return aten.native_layer_norm_backward(
            _laid_out(shape, grad_kind, device),
            _laid_out(shape, input_kind, device),
            normalized,
            statistics,
            statistics,
            weight,
            weight,
            [mask[0], affine and mask[1], affine and mask[2]],  # no weight, no gradient of one (as autograd asks)
        )

    check_laid_out_as_the_cpu(call)


@st.composite
def _calls_laid_out_by_the_cpu(draw):
    """A call whose CPU kernel lays its output out otherwise than its meta kernel on some
    layouts: a function of the device, on inputs of random shapes and layouts (the
    "permuted" kind is a ConvNeXt-style channels-last view)."""
    n, c, h, w = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(2, 4)), draw(st.integers(2, 4)))
    kinds = [*_LAYOUTS, "permuted"]
    x_kind, other_kind = draw(st.sampled_from(kinds)), draw(st.sampled_from(kinds))
    shape = (n, 4 * c, 2 * h, 2 * w)  # whole pixel (un)shuffles by 2, two channel groups
    volume = (n, c, 2, h, w)
    single = (n, 1, 2 * h, 2 * w)
    train, affine = draw(st.booleans()), draw(st.booleans())
    mask = draw(st.lists(st.booleans(), min_size=3, max_size=3))
    calls = [
        lambda d: F.pixel_shuffle(_laid_out(shape, x_kind, d), 2),
        lambda d: F.pixel_unshuffle(_laid_out(shape, x_kind, d), 2),
        lambda d: F.channel_shuffle(_laid_out(shape, x_kind, d), 2),
        lambda d: torch.roll(_laid_out(shape, x_kind, d), 1, 2),
        lambda d: torch.roll(_laid_out(shape, x_kind, d), (1, -1), (2, 3)),
        lambda d: torch.roll(_laid_out(shape, x_kind, d), 3),  # flattened
        lambda d: torch.cat([_laid_out(shape, x_kind, d), _laid_out(shape, other_kind, d)], dim=1),
        lambda d: torch.cat([_laid_out(volume, x_kind, d), _laid_out(volume, other_kind, d)], dim=0),
        # one channel: a dimension of size 1, whose stride channels last sets otherwise than contiguous
        lambda d: torch.cat([_laid_out(single, x_kind, d), _laid_out(single, other_kind, d)], dim=2),
        # zeros, not empty, on the CPU: the grid's values are read (a transposed grid)
        lambda d: F.grid_sample(
            _laid_out(shape, x_kind, d), torch.zeros(n, w, h, 2, device=d).transpose(1, 2), align_corners=False
        ),
        lambda d: F.unfold(_laid_out(shape, x_kind, d), 3, padding=1),
        lambda d: F.pad(_laid_out(shape, x_kind, d), (1, 1, 0, 1), mode="reflect"),
        lambda d: F.pad(_laid_out(shape, x_kind, d), (2, 0, 1, 1), mode="replicate"),
        lambda d: F.pad(_laid_out(volume, x_kind, d), (1, 1, 1, 0, 1, 1), mode="reflect"),
        lambda d: F.pad(_laid_out(volume, x_kind, d), (1, 1, 1, 0, 0, 2), mode="replicate"),
        lambda d: F.batch_norm(_laid_out(shape, x_kind, d), torch.zeros(4 * c, device=d), torch.ones(4 * c, device=d)),
        lambda d: aten.native_batch_norm(
            _laid_out(shape, x_kind, d),
            None,
            None,
            torch.zeros(4 * c, device=d),
            torch.ones(4 * c, device=d),
            train,
            0.1,
            1e-5,
        ),
        lambda d: F.batch_norm(  # BatchNorm1d after a transpose, (B, C, L)
            _laid_out((n, c, 2 * h), x_kind, d), torch.zeros(c, device=d), torch.ones(c, device=d), training=train
        ),
        # activations' gradients, the incoming gradient and the input laid out apart
        lambda d: aten.threshold_backward(_laid_out(shape, other_kind, d), _laid_out(shape, x_kind, d), 0.0),
        lambda d: aten.leaky_relu_backward(_laid_out(shape, other_kind, d), _laid_out(shape, x_kind, d), 0.1, False),
        lambda d: aten.gelu_backward(_laid_out(shape, other_kind, d), _laid_out(shape, x_kind, d)),
        lambda d: aten.sigmoid_backward(_laid_out(shape, other_kind, d), _laid_out(shape, x_kind, d)),
        lambda d: aten.hardswish_backward(_laid_out(shape, other_kind, d), _laid_out(shape, x_kind, d)),
        lambda d: aten.hardtanh_backward(_laid_out(shape, other_kind, d), _laid_out(shape, x_kind, d), 0.0, 6.0),
        lambda d: aten.softplus_backward(_laid_out(shape, other_kind, d), _laid_out(shape, x_kind, d), 1.0, 20.0),
        lambda d: aten.native_batch_norm_backward(
            _laid_out(shape, other_kind, d),  # the incoming gradient
            _laid_out(shape, x_kind, d),
            torch.ones(4 * c, device=d) if affine else None,
            torch.ones(4 * c, device=d),
            torch.ones(4 * c, device=d),
            torch.ones(4 * c, device=d),
            torch.ones(4 * c, device=d),
            train,
            1e-5,
            [mask[0], affine and mask[1], affine and mask[2]],  # no weight, no gradient of one (as autograd asks)
        ),
    ]
    return draw(st.sampled_from(calls))


@settings(max_examples=150, deadline=None)
@given(call=_calls_laid_out_by_the_cpu())
def test_copies_and_gradients_are_laid_out_as_a_cpu_lays_them_out(call):
    """The fast path answers as the CPU kernel lays the output out, where the meta kernel
    may not: dense, channels last wherever the input (a batch norm gradient's: its forward
    input) suggests it, else contiguous, where the meta kernel answers contiguous (padding,
    rolls, shuffles) or follows the input (batch norm of a transposed map) or the incoming
    gradient (batch norm's gradient); an activation's gradient by TensorIterator's
    rule over the incoming gradient and the input in the CPU kernel's order (the meta
    kernels of hardswish's, hardtanh's and softplus's follow the input). The same shapes and
    significant strides as the real CPU outputs, and the same outputs left out (a batch
    norm's input gradient where its mask does not ask for it, which the meta kernel makes)."""
    check_laid_out_as_the_cpu(call)


@st.composite
def _convolutions(draw):
    """A convolution's arguments: 2-d or 3-d, plain, grouped, depthwise or transposed,
    strided or not, with or without a bias, its input and weight in random layouts (as
    `_laid_out` kinds, to be made on either device)."""
    dims = draw(st.sampled_from([2, 3]))
    groups = draw(st.sampled_from([1, 2, 4]))
    n, per_group = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    depthwise = draw(st.booleans())
    channels, out_channels = groups * per_group, groups * (1 if depthwise else draw(st.integers(1, 3)))
    kernel, stride, transposed = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.booleans())
    spatial = tuple(draw(st.integers(3, 6)) for _ in range(dims))
    if transposed:
        weight = (channels, out_channels // groups, *(kernel,) * dims)
    else:
        weight = (out_channels, per_group, *(kernel,) * dims)
    return {
        "input": ((n, channels, *spatial), draw(st.sampled_from(_LAYOUTS))),
        "weight": (weight, draw(st.sampled_from(["contiguous", "channels_last", "transposed"]))),
        "bias": out_channels if draw(st.booleans()) else None,
        "stride": [stride] * dims,
        "padding": [draw(st.integers(0, kernel - 1))] * dims,
        "dilation": [1] * dims,
        "transposed": transposed,
        "output_padding": [stride - 1 if transposed else 0] * dims,
        "groups": groups,
    }


def _convolution_on(device: str, arguments: dict) -> tuple:
    (x_shape, x_kind), (w_shape, w_kind) = arguments["input"], arguments["weight"]
    bias = torch.empty(arguments["bias"], device=device) if arguments["bias"] is not None else None
    rest = [arguments[key] for key in ("stride", "padding", "dilation", "transposed", "output_padding", "groups")]
    return (_laid_out(x_shape, x_kind, device), _laid_out(w_shape, w_kind, device), bias, *rest)


@settings(max_examples=150, deadline=None)
@given(arguments=_convolutions())
def test_a_convolution_is_laid_out_as_a_cpu_lays_it_out(arguments):
    """The fast path answers a convolution with the layout the CPU kernel gives it, channels
    last where its input or weight is (the meta kernel answers contiguous always): the
    same shape and significant strides as the real CPU output for the same call."""
    check_laid_out_as_the_cpu(lambda device: aten.convolution.default(*_convolution_on(device, arguments)))


@settings(max_examples=200, deadline=None)
@given(
    shape=st.lists(st.integers(1, 3), min_size=4, max_size=5),
    layout=st.sampled_from(["contiguous", "channels_last", "transposed"]),
)
def test_suggests_channels_last_as_pytorch_does(shape, layout):
    """A contiguous tensor with a dimension of one may still be taken for channels last by
    the kernels that follow their input's layout: archprof's port of c10's check agrees
    with torch._prims_common.suggest_memory_format (PyTorch's own)."""
    from torch._prims_common import suggest_memory_format

    from archprof.operators.strides import suggests_channels_last

    tensor = torch.empty(shape, device="meta")
    if layout == "channels_last":
        tensor = tensor.to(memory_format=torch.channels_last if len(shape) == 4 else torch.channels_last_3d)
    elif layout == "transposed":
        tensor = torch.empty(shape[::-1], device="meta").permute(*range(len(shape) - 1, -1, -1))
    pytorch = suggest_memory_format(tensor) in (torch.channels_last, torch.channels_last_3d)
    if tensor.is_contiguous():
        assert suggests_channels_last(tuple(tensor.shape), tensor.stride()) == pytorch


def test_weight_and_spectral_normalisation_are_costed():
    """nn.utils.parametrizations: a weight-normalised convolution makes its weight at every
    call, w = v * (g / |v|) per output channel (the norm 2 per element of v and a root per
    channel, a division per channel and a multiply per element); a spectrally normalised
    linear layer divides its weight by sigma = u . (W v), a matrix-vector product and a dot
    product (MACs)."""
    from torch.nn.utils.parametrizations import spectral_norm, weight_norm

    conv = weight_norm(torch.nn.Conv2d(3, 8, 3, bias=False))  # v: 8x3x3x3 = 216 elements, g: 8
    totals = archprof.analyze(conv, input_size=(3, 5, 5)).totals
    assert totals.not_counted == {}
    assert totals.elementwise_flops == 3 * 216 + 2 * 8 and totals.macs == 8 * 3 * 3 * 3 * 3 * 3

    linear = spectral_norm(torch.nn.Linear(48, 10, bias=False)).eval()  # W: 10x48
    totals = archprof.analyze(linear, input_size=(48,)).totals
    assert totals.not_counted == {}
    assert totals.macs == 48 * 10 + 10 * 48 + 10  # the layer, W v, u . (W v)


def test_shuffles_unpooling_and_a_spatial_transformer_are_costed():
    """A channel shuffle and max-unpooling move values (free; a shuffle keeps each spatial
    unit's field); a spatial transformer's grid is a matrix product per location (its 3
    homogeneous coordinates times theta^T, 2 x 3: 6 MACs) and each output is sampled from it
    as a bilinear interpolation is (7 FLOPs)."""

    class Transformer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
            self.shuffle = torch.nn.ChannelShuffle(2)

        def forward(self, x):  # x: [2, 4, 8, 8]
            y = self.shuffle(self.conv(x))
            pooled, indices = torch.nn.functional.max_pool2d(y, 2, return_indices=True)
            y = torch.nn.functional.max_unpool2d(pooled, indices, 2)
            theta = torch.eye(2, 3, device=x.device).expand(2, 2, 3)
            grid = torch.nn.functional.affine_grid(theta, [2, 4, 8, 8], align_corners=False)
            return torch.nn.functional.grid_sample(y, grid, align_corners=False)

    report = archprof.analyze(Transformer(), input_size=(4, 8, 8), batch=2)
    assert report.totals.not_counted == {}
    costs = {c.operator: c for row in report.operator_costs for c in row}
    assert costs["aten.channel_shuffle"].elementwise_flops == costs["aten.max_unpool2d"].elementwise_flops == 0
    assert costs["aten.affine_grid_generator"].macs == 2 * 8 * 8 * 3 * 2
    assert costs["aten.grid_sampler_2d"].elementwise_flops == 7 * 2 * 4 * 8 * 8
    fields = dict(zip(report.columns["layer"], report.columns["receptive_field"], strict=True))
    assert fields["shuffle"] == fields["conv"] == (3, 3)


@pytest.mark.parametrize(
    ("operator", "call", "kernel_runs"),
    [
        # kept from the meta kernel, run once per grid shape (3 of them)
        ("aten.grid_sampler_2d", lambda x, i: F.grid_sample(x, torch.empty(2, 4 + i % 3, 5, 2, device="meta")), 3),
        ("aten.im2col", lambda x, i: F.unfold(x, 3, padding=1 + i % 3), 0),  # the shape formula's
    ],
)
def test_grid_sampling_and_unfolding_do_not_run_their_meta_kernels_per_call(operator, call, kernel_runs):
    """The meta kernels of a 2-d grid sample and of F.unfold are Python decompositions (9 and
    1.2 ms a call), which RAFT's correlation lookups (48) and flow upsamplings (12) made 90% of
    its analysis: a grid sample's answer is kept per layout, an unfold's comes from its shape
    formula, however many calls the trace records (kernels counted beneath the recorder,
    where every kernel it runs dispatches)."""
    x = torch.empty(2, 3, 16, 16, device="meta")
    with _Dispatched() as ran, Recorder() as recorder:
        for i in range(12):
            call(x, i)
    assert [op.op for op in recorder.ops].count(operator) == 12
    assert [name for name, _ in ran.calls].count(operator) == kernel_runs


def test_the_gradients_of_more_activations_are_pointwise():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 1), torch.nn.PReLU(), torch.nn.LogSigmoid(), torch.nn.GLU(dim=1),
        torch.nn.Hardshrink(), torch.nn.Softshrink(),
    )  # fmt: skip
    report = archprof.analyze(model, input_size=(3, 4, 4), batch=2, training=True)
    assert report.totals.not_counted == {}
    backward = {op.op for op in report.graph.backward_ops}
    assert {"aten._prelu_kernel_backward", "aten.log_sigmoid_backward", "aten.glu_backward"} <= backward


def test_complex_views_conjugation_and_window_functions_are_catalogued():
    """Viewing a complex tensor as real pairs and back, and a lazy conjugate, are views;
    torch.complex interleaves two tensors (a copy); a window function is a new tensor: all
    free. torch.polar makes each output from its magnitude and angle: pointwise, 1 per
    output element (a complex one), as `angle` and `abs` are. None is left uncounted."""

    class Complex(torch.nn.Module):
        def forward(self, x):  # x: [2, 8, 2]
            z = torch.view_as_complex(x) * torch.hann_window(8, device=x.device)  # 16 complex outputs
            z = z.conj() + torch.complex(x[..., 0], x[..., 1])  # 16
            return torch.view_as_real(torch.polar(x[..., 0], x[..., 1]) + z).real  # 16 + 16

    totals = archprof.analyze(Complex(), input_size=(8, 2), batch=2).totals
    assert totals.not_counted == {}
    assert totals.elementwise_flops == 4 * 2 * 8


def _operator_costs(report) -> dict[str, list]:
    """operator -> the costs of its calls, forward and backward, in order."""
    calls: dict[str, list] = {}
    for op in [*report.graph.ops, *report.graph.backward_ops]:
        calls.setdefault(op.op, []).append(op_cost(op))
    return calls


def test_fourier_transforms_count_5_n_log2_n_per_complex_transform():
    """torch.fft: 5 N log2 N real FLOPs per complex transform of length N, half that for a
    real signal, per transformed dimension (log2 rounded up: 12 points take 4 levels); an
    inverse's 1/N scales each output (1 more per element)."""

    class Spectral(torch.nn.Module):
        def forward(self, x):  # x: [2, 3, 8, 12]
            half = torch.fft.rfft(x)  # 2*3*8 real transforms of 12 points
            full = torch.fft.fft2(half)  # complex, over the 8 x 7 map
            back = torch.fft.irfft(half, n=12)  # real output of 12 points, scaled by 1/12
            return full.abs(), back

    report = archprof.analyze(Spectral(), input_size=(3, 8, 12), batch=2)
    assert report.totals.not_counted == {}
    costs = _operator_costs(report)
    lines = 2 * 3 * 8
    log2 = lambda n: math.ceil(math.log2(n))  # noqa: E731
    assert costs["aten._fft_r2c"][0].elementwise_flops == lines * 5 * 12 * log2(12) // 2
    assert costs["aten._fft_c2c"][0].elementwise_flops == 5 * (2 * 3 * 8 * 7) * (log2(8) + log2(7))
    assert costs["aten._fft_c2r"][0].elementwise_flops == lines * 5 * 12 * log2(12) // 2 + lines * 12
    assert costs["aten._fft_c2r"][0].macs == 0


def test_sorting_counts_comparisons():
    """sort (and argsort): N ceil(log2 N) comparisons per row; topk: N - 1 (a maximum) plus
    N ceil(log2 k) to keep the k best in a heap."""

    class Ranked(torch.nn.Module):
        def forward(self, x):  # x: [2, 4, 10]
            values, _ = x.sort(dim=1)  # 2*10 rows of 4
            order = x.argsort(dim=-1, descending=True)  # 2*4 rows of 10
            best = x.topk(3).values  # 2*4 rows of 10, k = 3
            return values, order, best

    report = archprof.analyze(Ranked(), input_size=(4, 10), batch=2)
    assert report.totals.not_counted == {}
    costs = _operator_costs(report)
    assert [c.elementwise_flops for c in costs["aten.sort"]] == [2 * 10 * 4 * 2, 2 * 4 * 10 * 4]
    assert costs["aten.topk"][0].elementwise_flops == 2 * 4 * (10 - 1 + 10 * math.ceil(math.log2(3)))


@pytest.mark.parametrize(
    "along_width",
    [
        lambda y: y.sort(dim=3).values,
        lambda y: y.argsort(dim=-1),
        lambda y: y.topk(2, dim=3).indices,
        lambda y: torch.fft.rfft(y).abs(),
        lambda y: torch.fft.ifft(torch.fft.fft(y)).abs(),
    ],
    ids=["sort", "argsort", "topk", "rfft", "fft-ifft"],
)
def test_sorting_and_transforms_read_the_whole_axis(along_width):
    """After a 3 x 3 convolution, an op along the width reads every column: 3 x 8 on 8 x 8."""

    class AlongWidth(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x):
            return along_width(self.conv(x))

    report = archprof.analyze(AlongWidth(), input_size=(1, 8, 8))
    assert report.columns["receptive_field"] == [(3, 3), (3, 8)]


def test_running_products_extrema_and_random_fills_are_costed():
    """cumprod, cummax and cummin count as cumsum does, 1 per element; logcumsumexp 3 per
    element (exp, accumulate, log); count_nonzero 1 per input element; gumbel_softmax draws
    its noise with exponential_ (a random fill, free as rand is) before -log, add, divide
    and a softmax."""

    class Running(torch.nn.Module):
        def forward(self, x):  # x: [2, 5, 6], 60 elements
            y = x.cumprod(1) + x.cummax(2).values + x.cummin(0).values  # 3 * 60, then 2 * 60
            z = x.logcumsumexp(-1) + x.count_nonzero(-1).unsqueeze(-1)  # 3 * 60 + 60, then 60
            return y, z, F.gumbel_softmax(x, tau=2.0)  # log, neg, add, divide 4 * 60, softmax 3 * 60

    report = archprof.analyze(Running(), input_size=(5, 6), batch=2)
    assert report.totals.not_counted == {}
    assert "aten.exponential_" in {op.op for op in report.graph.ops}
    n = 2 * 5 * 6
    assert report.totals.elementwise_flops == 3 * n + 2 * n + 3 * n + n + n + 4 * n + 3 * n
    training = archprof.analyze(torch.nn.Sequential(torch.nn.Linear(6, 6), Running()), input_size=(5, 6), training=True)
    assert training.totals.not_counted == {}


def test_isfinite_is_one_operator_costed_as_its_composite():
    """isfinite of a floating map is one operator, as a CPU runs it (`kernels`), counted as
    the operations its composite runs there, `(x == x) * (x.abs() != inf)`: 4 per element; of
    an integer map its composite's `ones_like`, free."""

    class Finite(torch.nn.Module):
        def forward(self, x):  # x: [2, 5, 6], 60 elements
            return x * torch.isfinite(x), torch.isfinite(x.long())  # 4 * 60, then a product, 60

    report = archprof.analyze(Finite(), input_size=(5, 6), batch=2)
    assert [op.op for op in report.graph.ops].count("aten.isfinite") == 1
    assert report.totals.elementwise_flops == 4 * 60 + 60


class _Losses(torch.nn.Module):
    """Every loss of the catalogue over a [4, 6] batch of scores (24 elements) and, for the
    2-d cross entropy, a [2, 6, 3, 3] map (18 targets)."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(6, 6)

    def forward(self, x):
        x = self.linear(x)
        y = torch.zeros_like(x)
        p = torch.sigmoid(x)
        labels = torch.zeros(4, dtype=torch.long, device=x.device)
        weight = torch.ones(6, device=x.device)
        return (
            F.mse_loss(x, y),
            F.smooth_l1_loss(x, y, reduction="none", beta=0.5),
            F.huber_loss(x, y, reduction="sum"),
            F.binary_cross_entropy(p, y, weight=weight),
            F.binary_cross_entropy_with_logits(x, y, pos_weight=weight),
            F.cross_entropy(x, labels),
            F.cross_entropy(x, labels, weight=weight, reduction="sum"),
            F.cross_entropy(x.reshape(2, 6, 2), labels.reshape(2, 2), reduction="none"),
            F.nll_loss(x.reshape(2, 6, 2, 1).expand(2, 6, 2, 9).reshape(2, 6, 3, 6)[..., :3],
                       torch.zeros(2, 3, 3, dtype=torch.long, device=x.device)),
        )  # fmt: skip


def test_losses_count_their_kernels_elementwise_work_then_their_reduction():
    """mse (x - y)^2: 2 per element; smooth L1 |x - y|, a comparison and the quadratic branch
    0.5 z z / beta: 6; Huber 5 (its quadratic branch 0.5 z z); BCE (y - 1) max(log1p(-x), -100)
    - y max(log x, -100): 9, a weight 1 more; BCE with logits (1 - y) x - log_sigmoid(x): 4,
    pos_weight 3 more per element and 1 per weight; a reduction 1 per element. nll_loss (a
    cross entropy after its log-softmax): per target the pick and negation 1, a class weight
    1, reduced an accumulation 1 (a weighted mean also sums the weights, 1), a mean's division 1."""
    report = archprof.analyze(_Losses(), input_size=(6,), batch=4)
    assert report.totals.not_counted == {}
    costs = {name: [c.elementwise_flops for c in calls] for name, calls in _operator_costs(report).items()}
    n = 4 * 6
    assert costs["aten.mse_loss"] == [(2 + 1) * n]
    assert costs["aten.smooth_l1_loss"] == [6 * n]  # reduction="none"
    assert costs["aten.huber_loss"] == [(5 + 1) * n]
    assert costs["aten.binary_cross_entropy"] == [(9 + 1 + 1) * n]
    assert costs["aten.binary_cross_entropy_with_logits"] == [(4 + 3 + 1) * n + 6]
    assert costs["aten.nll_loss_forward"] == [(1 + 1) * 4 + 1, (1 + 1 + 1) * 4]
    # a 3-d input goes to the 2-d kernel as [2, 6, 1, 2]
    assert costs["aten.nll_loss2d_forward"] == [1 * 2 * 2, (1 + 1) * 2 * 3 * 3 + 1]


def test_the_gradients_of_the_losses_are_costed():
    """A training step through every loss: mse's gradient (x - y) norm grad, 3 per element;
    BCE's grad (x - y) / max((1 - x) x, eps), 6, a weight and a mean's division 1 each; smooth
    L1's 6 and Huber's 5 (a difference, two comparisons, a branch's products); a cross
    entropy's gradient written at each target's class, 1 per target, a class weight 1 more, a
    mean's division once."""
    report = archprof.analyze(_Losses(), input_size=(6,), batch=4, training=True)
    assert report.totals.not_counted == {}
    costs = {name: [c.elementwise_flops for c in calls] for name, calls in _operator_costs(report).items()}
    n = 4 * 6
    assert costs["aten.mse_loss_backward"] == [3 * n]
    assert costs["aten.smooth_l1_loss_backward"] == [6 * n]
    assert costs["aten.huber_loss_backward"] == [5 * n]
    assert costs["aten.binary_cross_entropy_backward"] == [(6 + 1 + 1) * n]
    assert sorted(costs["aten.nll_loss_backward"]) == sorted([4 + 1, 2 * 4])
    assert sorted(costs["aten.nll_loss2d_backward"]) == sorted([2 * 3 * 3 + 1, 2 * 2])


def test_a_loss_reads_every_unit_unless_unreduced():
    class Scored(torch.nn.Module):
        def __init__(self, reduction):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
            self.reduction = reduction

        def forward(self, x):
            y = self.conv(x)
            labels = torch.zeros(1, 8, 8, dtype=torch.long, device=x.device)
            return F.mse_loss(y, torch.zeros_like(y), reduction=self.reduction), F.cross_entropy(
                y, labels, reduction=self.reduction
            )

    fields = archprof.analyze(Scored("none"), input_size=(3, 8, 8)).columns["receptive_field"]
    assert fields == [(3, 3), (3, 3)]
    fields = archprof.analyze(Scored("mean"), input_size=(3, 8, 8)).columns["receptive_field"]
    assert fields == [(3, 3), FieldMark.INPUT]


def test_an_embedding_with_max_norm_renormalises_the_rows_it_looks_up():
    """Per index, every one taken as a distinct row over max_norm (on meta the values are
    unknown): the indices sorted, I ceil(log2 I), then the row's 2-norm 2D and a root, a
    comparison, the scale's division and D multiplies: 3D + 3."""
    embedding = torch.nn.Embedding(10, 8, max_norm=1.0)
    report = archprof.analyze(embedding, inputs=["5:int64"], batch=2)
    assert report.totals.not_counted == {}
    indices = 2 * 5
    assert _operator_costs(report)["aten.embedding_renorm_"][0].elementwise_flops == (
        indices * math.ceil(math.log2(indices)) + indices * (3 * 8 + 3)
    )
    training = archprof.analyze(embedding, inputs=["5:int64"], batch=2, training=True)
    assert training.totals.not_counted == {}


class _Logged(TorchDispatchMode):
    """The aten operators a real forward runs, by name, in order."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def test_one_hot_runs_as_on_a_cpu():
    """F.one_hot on a CPU checks its indices' minimum and maximum (aminmax, read back with
    item()) and scatters a 1 per index into zeros: 2 (N - 1) comparisons, where the meta
    device's road compares every index with every class (N x C). The trace records the CPU's
    operators, but the item() reads, which meta cannot make (no values)."""

    class Encoded(torch.nn.Module):
        def forward(self, labels):  # labels: [2, 5]
            return F.one_hot(labels, 7)

    labels = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 0, 1, 2]])
    with _Logged() as cpu:
        Encoded()(labels)
    report = archprof.analyze(Encoded(), inputs=["5:int64"], batch=2)
    assert [op.op for op in report.graph.ops] == [op for op in cpu.ops if op != "aten._local_scalar_dense"]
    assert report.totals.not_counted == {}
    assert report.totals.elementwise_flops == 2 * (2 * 5 - 1)


@pytest.mark.parametrize("num_classes", [0, -2])
@pytest.mark.parametrize("length", [5, 0])
def test_one_hot_refused_whatever_the_values_is_refused_as_on_a_cpu(num_classes, length):
    """A CPU refuses F.one_hot with no class, or an empty input with none given, whatever the
    indices hold: archprof says the CPU's error, where meta answered an empty one-hot."""

    class Encoded(torch.nn.Module):
        def forward(self, labels):
            return F.one_hot(labels[:, :length], num_classes)

    with pytest.raises(RuntimeError) as cpu:
        Encoded()(torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(archprof.ArchprofError) as traced:
        archprof.analyze(Encoded(), inputs=["5:int64"], batch=2)
    assert str(cpu.value) in str(traced.value)


class _GaussianHead(torch.nn.Module):
    """A mean and a variance per output, scored by nn.GaussianNLLLoss and F.gaussian_nll_loss."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(6, 12)
        self.loss = torch.nn.GaussianNLLLoss()

    def forward(self, x):
        mean, var = self.linear(x).chunk(2, -1)
        target = torch.zeros_like(mean)
        return self.loss(mean, target, F.softplus(var)), F.gaussian_nll_loss(
            mean, target, var[:, :1].exp(), full=True, reduction="none"
        )


def test_gaussian_nll_loss_traces_on_meta_as_a_cpu_runs_it():
    """F.gaussian_nll_loss reads a value, `torch.any(var < 0)`, which meta does not hold: it
    traces on meta, that check answered "none negative", recording the operators a real CPU
    forward runs (its lt, any and item() read included) and FlopCounterMode's MACs, the
    parameters and the outputs' shapes of that forward; a training step too."""

    model, x = _GaussianHead(), torch.randn(4, 6)
    with _Logged() as cpu, torch.no_grad(), FlopCounterMode(display=False) as counted:
        outputs = model(x)
    report = archprof.analyze(model, input_size=(6,), batch=4)
    assert report.traced_on == "meta"
    assert report.totals.not_counted == {}
    assert [op.op for op in report.graph.ops] == cpu.ops
    assert report.totals.macs == counted.get_total_flops() // 2
    assert report.totals.param_count == sum(p.numel() for p in model.parameters())
    assert [output.shape for output in report.graph.outputs] == [tuple(output.shape) for output in outputs]
    training = archprof.analyze(model, input_size=(6,), batch=4, training=True)
    assert training.traced_on == "meta"
    assert training.totals.not_counted == {}


def test_one_hot_of_a_maps_classes_keeps_its_field():
    """A segmentation map's classes one-hot encoded: each output reads its own position's
    label (scatter along the new class axis), the field of the convolution before it."""

    class Encoded(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return F.one_hot(self.conv(x).argmax(1), 4).permute(0, 3, 1, 2).float()

    report = archprof.analyze(Encoded(), input_size=(3, 8, 8))
    assert report.columns["receptive_field"] == [(3, 3), (3, 3)]
    assert "aten.scatter_" in {op.op for op in report.graph.ops}


def test_selections_count_one_comparison_per_element_and_mode_sorts():
    """kthvalue and median select (a quickselect, std::nth_element on the CPU): N comparisons
    per row of N; nanmedian counts each row's NaNs first, N more; mode sorts each row
    (N ceil(log2 N)) then scans it for its longest run (N)."""

    class Selected(torch.nn.Module):
        def forward(self, x):  # x: [2, 4, 10]
            return (
                x.kthvalue(3).values,  # 2*4 rows of 10
                x.median(dim=1).values,  # 2*10 rows of 4
                x.median(),  # one row of 80
                x.nanmedian(dim=-1).values,  # 2*4 rows of 10
                x.nanmedian(),
                x.mode(dim=1).values,  # 2*10 rows of 4
            )

    report = archprof.analyze(Selected(), input_size=(4, 10), batch=2)
    assert report.totals.not_counted == {}
    costs = {name: [c.elementwise_flops for c in calls] for name, calls in _operator_costs(report).items()}
    n = 2 * 4 * 10
    assert costs["aten.kthvalue"] == [n]
    assert costs["aten.median"] == [n, n]
    assert costs["aten.nanmedian"] == [2 * n, 2 * n]
    assert costs["aten.mode"] == [2 * 10 * (4 * math.ceil(math.log2(4)) + 4)]
    training = archprof.analyze(
        torch.nn.Sequential(torch.nn.Linear(10, 10), Selected()), input_size=(4, 10), training=True
    )
    assert training.totals.not_counted == {}


def test_searchsorted_and_bucketize_count_a_binary_search_per_value():
    """A binary search among N sorted boundaries: ceil(log2 (N + 1)) comparisons per value in
    the worst case (floor(log2 N) + 1 halvings)."""

    class Searched(torch.nn.Module):
        def forward(self, x):  # x: [2, 4, 10]
            edges = torch.linspace(-1, 1, 5, device=x.device)
            rows = torch.linspace(-1, 1, 8, device=x.device).expand(2, 4, 8).contiguous()
            return torch.searchsorted(edges, x), torch.bucketize(x, edges, right=True), torch.searchsorted(rows, x)

    report = archprof.analyze(Searched(), input_size=(4, 10), batch=2)
    assert report.totals.not_counted == {}
    costs = {name: [c.elementwise_flops for c in calls] for name, calls in _operator_costs(report).items()}
    values = 2 * 4 * 10
    log2 = lambda n: math.ceil(math.log2(n))  # noqa: E731
    assert costs["aten.searchsorted"] == [values * log2(5 + 1), values * log2(8 + 1)]
    assert costs["aten.bucketize"] == [values * log2(5 + 1)]


def test_index_add_adds_each_source_element_and_index_copies_and_fills_are_free():
    """index_add: one addition per element of its source (as scatter_add); index_copy,
    index_fill, masked_scatter (and its gradient) and diag_embed only move data."""

    class Indexed(torch.nn.Module):
        def forward(self, x):  # x: [2, 4, 10]
            index = torch.tensor([0, 2], device=x.device)
            source = x[:, :2] * 2  # [2, 2, 10]
            return (
                x.index_add(1, index, source, alpha=0.5),
                x.clone().index_add_(2, index, x[..., :2]),
                x.index_copy(1, index, source),
                x.index_fill(1, index, 0.0),
                x.masked_scatter(x > 0, source.repeat(1, 2, 1)),
                torch.diag_embed(x),
            )

    report = archprof.analyze(Indexed(), input_size=(4, 10), batch=2)
    assert report.totals.not_counted == {}
    costs = {name: [c.elementwise_flops for c in calls] for name, calls in _operator_costs(report).items()}
    assert costs["aten.index_add"] == [2 * 2 * 10]
    assert costs["aten.index_add_"] == [2 * 4 * 2]
    for name in ("aten.index_copy", "aten.index_fill", "aten.masked_scatter", "aten.diag_embed"):
        assert costs[name] == [0], name
    training = archprof.analyze(
        torch.nn.Sequential(torch.nn.Linear(10, 10), Indexed()), input_size=(4, 10), training=True
    )
    assert training.totals.not_counted == {}
    assert "aten.masked_scatter_backward" in {op.op for op in training.graph.backward_ops}


def test_soft_margin_loss_and_its_gradient_are_costed():
    """log(1 + exp(-x y)): neg, mul, exp, log1p, 4 per element, a reduction 1 more; its
    gradient -norm y z / (1 + z) grad with z = exp(-y x), 8 per element."""

    class Margin(torch.nn.Module):
        def forward(self, x):
            y = torch.ones_like(x)
            return F.soft_margin_loss(x, y), F.soft_margin_loss(x, y, reduction="none")

    report = archprof.analyze(_after_a_linear(Margin()), input_size=(6,), batch=4, training=True)
    assert report.totals.not_counted == {}
    costs = {name: [c.elementwise_flops for c in calls] for name, calls in _operator_costs(report).items()}
    n = 4 * 6
    assert costs["aten.soft_margin_loss"] == [(4 + 1) * n, 4 * n]
    assert costs["aten.soft_margin_loss_backward"] == [8 * n, 8 * n]


def _labels(y: torch.Tensor, *shape: int) -> torch.Tensor:
    return torch.zeros(shape, dtype=torch.long, device=y.device)


def _after_a_linear(losses: torch.nn.Module) -> torch.nn.Module:
    """`losses` of the scores of a trainable 6 -> 6 linear layer."""
    return torch.nn.Sequential(torch.nn.Linear(6, 6), losses)


class _MarginLosses(torch.nn.Module):
    """The multi-class and multi-label margin losses over a [4, 6] batch of scores."""

    def forward(self, x):
        labels = torch.tensor([0, 1, 2, 5], device=x.device)
        weight = torch.ones(6, device=x.device)
        label_sets = torch.tensor([[0, 1, -1, 0, 0, 0]] * 4, device=x.device)  # classes 0 and 1, then the end
        return (
            F.multi_margin_loss(x, labels),
            F.multi_margin_loss(x, labels, p=2, weight=weight, reduction="sum"),
            F.multi_margin_loss(x, labels, reduction="none"),
            F.multilabel_margin_loss(x, label_sets),
            F.multilabel_margin_loss(x[0], label_sets[0], reduction="none"),
        )


def test_margin_losses_and_their_gradients_count_every_hinge_as_above_zero():
    """multi_margin_loss, per sample of C scores with target y: sum over the C - 1 other
    classes j of w_y max(0, margin - x_y + x_j)^p, over C. Per term: margin - x_y + x_j 2, the
    comparison with 0 1, the accumulation 1, the square (p = 2) 1, the weight 1; the division by
    C 1 per sample; reduced, 1 per sample, and a mean's division 1. Its gradient per term: the
    argument 2 and comparison 1, 2 g z (p = 2) 2, the weight 1, taken from the target's gradient
    1; every element times the incoming gradient 1.
    multilabel_margin_loss: per pair of a target class j and another i, max(0, 1 - x_j + x_i):
    2 + comparison 1 + accumulation 1; the targets are values, so the most pairs C classes can
    make, 3 targets x 3 others for C = 6; per sample the division by C, then the reduction. Its
    gradient per pair the argument, comparison, and g added to one class and taken from the
    other (5), then every element times the incoming gradient. Every hinge counted as above
    zero: which are depends on the values."""
    report = archprof.analyze(_after_a_linear(_MarginLosses()), input_size=(6,), batch=4, training=True)
    assert report.totals.not_counted == {}
    costs = {name: [c.elementwise_flops for c in calls] for name, calls in _operator_costs(report).items()}
    samples, classes = 4, 6
    terms = samples * (classes - 1)
    assert costs["aten.multi_margin_loss"] == [
        terms * 4 + samples + samples + 1,
        terms * (4 + 1 + 1) + samples + samples,
        terms * 4 + samples,
    ]
    assert sorted(costs["aten.multi_margin_loss_backward"]) == [  # the backward runs the last loss's first
        terms * 4 + samples * classes,
        terms * 4 + samples * classes,
        terms * (4 + 2 + 1) + samples * classes,
    ]
    pairs = 3 * 3
    assert costs["aten.multilabel_margin_loss_forward"] == [samples * (pairs * 4 + 1) + samples + 1, pairs * 4 + 1]
    assert sorted(costs["aten.multilabel_margin_loss_backward"]) == [
        pairs * 5 + classes,
        samples * pairs * 5 + samples * classes,
    ]


class _Transcribed(torch.nn.Module):
    """F.ctc_loss over 7 steps of 5 classes for 2 sequences, its lengths as lists (inputs of
    7 and 5 steps, targets of 3 and 2 labels) or as tensors."""

    def __init__(self, lengths_as_tensors: bool):
        super().__init__()
        self.linear = torch.nn.Linear(5, 5)
        self.lengths_as_tensors = lengths_as_tensors

    def forward(self, x):  # x: [7, 2, 5]
        log_probs = self.linear(x).log_softmax(2)
        targets = torch.tensor([[1, 2, 2], [3, 4, 0]], device=x.device)
        input_lengths, target_lengths = [7, 5], [3, 2]
        if self.lengths_as_tensors:
            input_lengths, target_lengths = torch.tensor(input_lengths), torch.tensor(target_lengths)
        return F.ctc_loss(log_probs, targets, input_lengths, target_lengths, reduction="sum")


def test_ctc_loss_and_its_gradient_count_their_lattices():
    """A sequence of T steps and L labels aligns on a lattice of T x (2L + 1) states (a blank
    before, between and after the labels). Forward: every state after the first step is a
    log-sum-exp of its 3 predecessors (2 per term and the log, as logsumexp counts: 7) plus its
    label's log-probability, 8; the loss a log-sum-exp of the last 2 states and a negation, 6
    per sequence. Backward: beta as alpha (8 per state before the last step), alpha + beta
    added into a log-sum-exp of two per state (6), and per step and class exp(lp) - exp(g +
    nll - lp) times the incoming gradient (6). Lengths given as tensors are values: bounded
    by the input's T and the targets' width S."""
    classes = 5
    lattices = [(7, 2 * 3 + 1), (5, 2 * 2 + 1)]  # (T, 2L + 1)
    bound = [(7, 2 * 3 + 1)] * 2
    for lengths_as_tensors, sequences in ((False, lattices), (True, bound)):
        report = archprof.analyze(_Transcribed(lengths_as_tensors), input_size=(2, 5), batch=7, training=True)
        assert report.totals.not_counted == {}
        costs = {name: [c.elementwise_flops for c in calls] for name, calls in _operator_costs(report).items()}
        forward = sum(8 * (steps - 1) * states + 6 for steps, states in sequences)
        backward = sum(
            8 * (steps - 1) * states + 6 * steps * states + 6 * steps * classes for steps, states in sequences
        )
        assert costs["aten._ctc_loss"] == [forward], lengths_as_tensors
        assert costs["aten._ctc_loss_backward"] == [backward], lengths_as_tensors


def test_conv_tbc_counts_the_macs_of_the_conv1d_it_equals():
    """conv_tbc (time, batch, channels) is conv1d over a permuted input and weight: the same
    outputs on a CPU, and FlopCounterMode's MACs of that conv1d."""
    weight, bias = torch.randn(3, 4, 5), torch.randn(5)

    class TimeFirst(torch.nn.Module):
        def forward(self, x):  # x: [T, B, C_in]
            return torch.conv_tbc(x, weight.to(x.device), bias.to(x.device), 1)

    x = torch.randn(9, 2, 4)
    as_conv1d = F.conv1d(x.permute(1, 2, 0), weight.permute(2, 1, 0), bias, padding=1).permute(2, 0, 1)
    torch.testing.assert_close(TimeFirst()(x), as_conv1d)
    with FlopCounterMode(display=False) as counted:
        F.conv1d(x.permute(1, 2, 0), weight.permute(2, 1, 0), bias, padding=1)
    report = archprof.analyze(TimeFirst(), input_size=(2, 4), batch=9)
    assert report.totals.not_counted == {}
    assert report.totals.macs == counted.get_total_flops() // 2


def test_embedding_bag_gradients_count_each_element_looked_up():
    """nn.EmbeddingBag's weight gradient: each looked-up element's bag gradient added into its
    row (1), a mean's division by the bag size 1 more, a weight per index's multiply 1 more;
    a max bag's gradient added at each output's argmax (1 per bag output element). The weights
    per index get a dot product of the row looked up with the bag's gradient, D MACs each."""

    class Bags(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scores = torch.nn.Linear(3, 3)
            self.sums = torch.nn.EmbeddingBag(10, 4, mode="sum")
            self.means = torch.nn.EmbeddingBag(10, 4, mode="mean")
            self.maxima = torch.nn.EmbeddingBag(10, 4, mode="max")

        def forward(self, x):  # x: [2, 3]
            indices = torch.zeros(2, 3, dtype=torch.long, device=x.device)  # 2 bags of 3
            return self.sums(indices, per_sample_weights=self.scores(x)), self.means(indices), self.maxima(indices)

    report = archprof.analyze(Bags(), input_size=(3,), batch=2, training=True)
    assert report.totals.not_counted == {}
    costs = _operator_costs(report)
    looked_up, bag_outputs = 2 * 3 * 4, 2 * 4
    assert sorted(c.elementwise_flops for c in costs["aten._embedding_bag_backward"]) == [
        bag_outputs,
        2 * looked_up,
        2 * looked_up,
    ]
    assert [c.macs for c in costs["aten._embedding_bag_per_sample_weights_backward"]] == [2 * 3 * 4]


def test_histograms_rot90_and_the_gradients_of_rrelu_fractional_pools_and_diagonals_are_costed():
    """histc per element: the range check 2, the bin (x - lo) n / (hi - lo) 3, the count 1;
    rot90 and a diagonal's gradient copy; rrelu's gradient in training multiplies each
    element's slope, 1; a fractional max pool's adds each output gradient into its maximum's
    input, 1."""

    class Mixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(2, 2, 1)

        def forward(self, x):  # x: [1, 2, 8, 8]
            y = self.conv(x)
            return (
                torch.histc(y, bins=10, min=-1, max=1),
                y.rot90(1, (2, 3)),
                F.rrelu(y, training=True),
                F.fractional_max_pool2d(y, 2, output_size=(3, 3)),
                torch.diagonal(y[0, 0]),
            )

    report = archprof.analyze(Mixed(), input_size=(2, 8, 8), training=True)
    assert report.totals.not_counted == {}
    costs = {name: [c.elementwise_flops for c in calls] for name, calls in _operator_costs(report).items()}
    n = 2 * 8 * 8
    assert costs["aten.histc"] == [6 * n]
    assert costs["aten.rot90"] == [0, 0]  # and its gradient's
    assert costs["aten.rrelu_with_noise_backward"] == [n]
    assert costs["aten.fractional_max_pool2d_backward"] == [2 * 3 * 3]
    assert costs["aten.diagonal_backward"] == [0]


def test_counts_runs_index_reductions_and_cdist_gradients_are_costed():
    """bincount adds one count (or weight) per element; unique_consecutive compares each
    element with the one before it (N - 1); index_reduce reduces each source element into its
    index's place (1), a mean then divides each element of self (1); masked_select,
    block_diag and triu_indices copy or create; cdist's gradient per term of each distance:
    the difference again, the norm's gradient grad * diff / dist, accumulated: 4."""

    class Counted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(10, 10)

        def forward(self, x):  # x: [2, 4, 10]
            y = self.linear(x)
            index = torch.tensor([0, 2], device=x.device)
            return (
                torch.bincount(torch.zeros(7, dtype=torch.long, device=x.device), minlength=3),
                torch.unique_consecutive(torch.zeros(9, device=x.device)),
                y.index_reduce(1, index, y[:, :2], "mean"),
                y.index_reduce(1, index, y[:, :2], "amax"),
                torch.masked_select(y, torch.ones_like(y, dtype=torch.bool)),
                torch.block_diag(y[0], y[1]),
                torch.triu_indices(4, 4, device=x.device),
                torch.cdist(y[:, :3], y[:, 1:]),  # [2, 3, 10] against [2, 3, 10]: [2, 3, 3]
            )

    report = archprof.analyze(Counted(), input_size=(4, 10), batch=2, training=True)
    assert report.totals.not_counted == {}
    costs = {name: [c.elementwise_flops for c in calls] for name, calls in _operator_costs(report).items()}
    n, source = 2 * 4 * 10, 2 * 2 * 10
    assert costs["aten.bincount"] == [7]
    assert costs["aten.unique_consecutive"] == [9 - 1]
    assert costs["aten.index_reduce"] == [source + n, source]
    for name in ("aten.masked_select", "aten.block_diag", "aten.triu_indices"):
        assert costs[name] == [0], name
    distances, features = 2 * 3 * 3, 10
    assert costs["aten._cdist_backward"] == [4 * distances * features] * 2  # each input's gradient


def test_norms_distances_traces_and_cross_products_are_costed():
    """renorm: per slice along dim its p-norm (2 per element, a root), the factor norm >
    maxnorm ? maxnorm / (norm + 1e-7) : 1 (3), a multiply per element: 3 per element + 4 per
    slice; dist: a difference and the norm's 2 per broadcast element, and a root; pdist: 3
    per term of each of the N (N - 1) / 2 distances and a root each; trace: one addition per
    diagonal element; a cross product 3 per output element (a b - c d)."""

    class Measured(torch.nn.Module):
        def forward(self, x):  # x: [2, 3, 10]
            return (
                torch.renorm(x, 2, 1, 1.0),  # 3 slices along dim 1
                torch.dist(x, x[0, 0]),  # x against a [10] row, broadcast
                F.pdist(x.reshape(5, 12)),  # 5 rows of 12: 10 distances
                torch.trace(x.reshape(6, 10)),  # 6 diagonal elements
                torch.linalg.cross(x, x.flip(0), dim=1),  # 2*10 vectors of 3
            )

    report = archprof.analyze(Measured(), input_size=(3, 10), batch=2)
    assert report.totals.not_counted == {}
    costs = {name: [c.elementwise_flops for c in calls] for name, calls in _operator_costs(report).items()}
    n = 2 * 3 * 10
    assert costs["aten.renorm"] == [3 * n + 4 * 3]
    assert costs["aten.dist"] == [3 * n + 1]
    pairs = 5 * 4 // 2
    assert costs["aten._pdist_forward"] == [3 * pairs * 12 + pairs]
    assert costs["aten.trace"] == [min(6, 10)]
    assert costs["aten.linalg_cross"] == [3 * n]


@pytest.mark.parametrize(
    ("after_conv", "field"),
    [
        (lambda y: y.kthvalue(2, dim=3).values, (3, 8)),
        (lambda y: y.median(dim=-1).values, (3, 8)),
        (lambda y: y.nanmedian(dim=3).values, (3, 8)),
        (lambda y: y.mode().values, (3, 8)),
        (lambda y: y.median(dim=1).values, (3, 3)),
        (lambda y: y.median(), FieldMark.INPUT),
        (lambda y: torch.searchsorted(torch.linspace(-1, 1, 5, device=y.device), y), (3, 3)),
        (lambda y: torch.bucketize(y, torch.linspace(-1, 1, 5, device=y.device)), (3, 3)),
        (lambda y: y.index_add(1, torch.tensor([0], device=y.device), y[:, :1]), (3, 3)),
        (lambda y: y.index_add(3, torch.tensor([0], device=y.device), y[..., :1]), FieldMark.UNDEFINED),
        (lambda y: y.index_copy(1, torch.tensor([0], device=y.device), y[:, :1]), (3, 3)),
        (lambda y: y.index_fill(3, torch.tensor([0], device=y.device), 0.0), (3, 3)),
        (lambda y: y.masked_scatter(y > 0, torch.ones_like(y)), (3, 3)),
        (lambda y: y.masked_scatter(y > 0, y * 2), FieldMark.UNDEFINED),
        (lambda y: F.soft_margin_loss(y, torch.ones_like(y), reduction="none"), (3, 3)),
        (lambda y: F.soft_margin_loss(y, torch.ones_like(y)), FieldMark.INPUT),
        (lambda y: torch.renorm(y, 2, 1, 1.0), FieldMark.INPUT),
        (lambda y: torch.dist(y, torch.zeros_like(y)), FieldMark.INPUT),
        (lambda y: torch.linalg.cross(y, y * 2, dim=1), (3, 3)),
        (lambda y: torch.diag_embed(y.permute(0, 2, 3, 1)), (3, 3)),
        (lambda y: torch.diag_embed(y), FieldMark.UNDEFINED),
        (lambda y: F.multi_margin_loss(y[0, :, 0, :].t(), _labels(y, 8), reduction="none"), (3, 3)),
        (lambda y: F.multi_margin_loss(y[0, :, 0, :].t(), _labels(y, 8)), (3, 8)),
        (lambda y: F.multilabel_margin_loss(y[0, :, 0, :].t(), _labels(y, 8, 3), reduction="none"), (3, 3)),
        (lambda y: F.multilabel_margin_loss(y[0, :, 0, :].t(), _labels(y, 8, 3), reduction="sum"), (3, 8)),
        (lambda y: F.ctc_loss(y[:, :, 0].permute(2, 0, 1).log_softmax(2), _labels(y, 1, 2) + 1, [8], [2]), (3, 8)),
        (lambda y: torch.histc(y, 10, -1, 1), FieldMark.UNDEFINED),
    ],
    ids=[
        "kthvalue",
        "median-width",
        "nanmedian",
        "mode",
        "median-channels",
        "median-all",
        "searchsorted",
        "bucketize",
        "index_add-channels",
        "index_add-width",
        "index_copy",
        "index_fill",
        "masked_scatter-constant",
        "masked_scatter-source",
        "soft_margin-none",
        "soft_margin-mean",
        "renorm-channels",
        "dist",
        "cross",
        "diag_embed-channels",
        "diag_embed-width",
        "multi_margin-none",
        "multi_margin-mean",
        "multilabel_margin-none",
        "multilabel_margin-sum",
        "ctc-over-the-width",
        "histc",
    ],
)
def test_selections_searches_and_index_writes_have_fields(after_conv, field):
    """After a 3 x 3 convolution on 8 x 8 (3 channels): along the width, the whole row (3 x 8);
    along channels, or per unit, the convolution's 3 x 3; written at positions along a
    spatial axis that values name, undefined. A margin loss's sample (a pixel of the top row)
    reads its class scores (the channels), reduced every pixel of the row; a CTC loss over
    the row as time reads the whole row; a histogram's bins count units by their values."""

    class AfterConv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            return after_conv(self.conv(x))

    report = archprof.analyze(AfterConv(), input_size=(3, 8, 8))
    assert report.columns["receptive_field"] == [(3, 3), field]


@pytest.mark.parametrize(
    "complex_view",
    [
        lambda y: torch.fft.fft(y).real,
        lambda y: torch.fft.fft(y).imag,
        lambda y: torch.view_as_real(torch.fft.fft(y)),
        lambda y: torch.view_as_complex(torch.stack([y, y], -1)).abs().sum(-1, keepdim=True).expand(-1, -1, -1, 8),
    ],
    ids=["real", "imag", "view_as_real", "view_as_complex"],
)
def test_complex_views_keep_the_field(complex_view):
    """view_as_real adds a trailing axis of size 2 (real, imaginary) and view_as_complex takes
    it away: each unit stays where it was, so a transform along the width then .real reads the
    whole row, 3 x 8 on 8 x 8, as the transform does."""

    class AlongWidth(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x):
            return complex_view(self.conv(x))

    report = archprof.analyze(AlongWidth(), input_size=(1, 8, 8))
    assert report.columns["receptive_field"] == [(3, 3), (3, 8)]


# torch.linalg on a batch of 3: s, 8 x 8 symmetric positive definite; t, 8 x 5; r, 8 x 2
# right-hand sides. Each call, the aten operators a CPU dispatches for it (the oracle checks
# archprof's trace records those), and the FLOPs Golub & Van Loan count for the one that
# computes (Matrix Computations, 4th ed.), per matrix, rounded down, times 3.
LU_8 = math.floor(2 * 8**3 / 3)  # Gaussian elimination: 2n^3/3
QR_8_5 = math.floor(2 * 8 * 5**2 - 2 * 5**3 / 3)  # Householder QR's R (and its thin Q): 2mn^2 - 2n^3/3
LINEAR_ALGEBRA = {
    "inv": (lambda s, t, r: torch.linalg.inv(s), "linalg_inv_ex", LU_8 + 2 * 8**3),  # LU, then A X = I
    "solve": (lambda s, t, r: torch.linalg.solve(s, r), "_linalg_solve_ex", LU_8 + 2 * 8**2 * 2),
    "solve-vector": (lambda s, t, r: torch.linalg.solve(s, r[..., 0]), "_linalg_solve_ex", LU_8 + 2 * 8**2),
    "lu_factor": (lambda s, t, r: torch.linalg.lu_factor(s), "linalg_lu_factor_ex", LU_8),
    "lu": (lambda s, t, r: torch.linalg.lu(s), "linalg_lu", LU_8),
    "lu_solve": (lambda s, t, r: torch.linalg.lu_solve(*torch.linalg.lu_factor(s), r), "linalg_lu_solve", 2 * 8**2 * 2),
    "det": (lambda s, t, r: torch.linalg.det(s), "_linalg_det", LU_8),
    "slogdet": (lambda s, t, r: torch.linalg.slogdet(s), "_linalg_slogdet", LU_8),
    "cholesky": (lambda s, t, r: torch.linalg.cholesky(s), "linalg_cholesky_ex", math.floor(8**3 / 3)),
    "ldl_factor": (lambda s, t, r: torch.linalg.ldl_factor(s), "linalg_ldl_factor_ex", math.floor(8**3 / 3)),
    "cholesky_solve": (lambda s, t, r: torch.cholesky_solve(r, s), "cholesky_solve", 2 * 8**2 * 2),
    "cholesky_inverse": (lambda s, t, r: torch.cholesky_inverse(s), "cholesky_inverse", math.floor(2 * 8**3 / 3)),
    "solve_triangular": (
        lambda s, t, r: torch.linalg.solve_triangular(s, r, upper=True),
        "linalg_solve_triangular",
        8**2 * 2,  # n^2 per right-hand side
    ),
    "solve_triangular-right": (
        lambda s, t, r: torch.linalg.solve_triangular(s, r.mT, upper=False, left=False),
        "linalg_solve_triangular",
        8**2 * 2,
    ),
    "triangular_solve": (lambda s, t, r: torch.triangular_solve(r, s), "triangular_solve", 8**2 * 2),
    "qr": (lambda s, t, r: torch.linalg.qr(t), "linalg_qr", 2 * QR_8_5),
    "qr-r": (lambda s, t, r: torch.linalg.qr(t, mode="r"), "linalg_qr", QR_8_5),
    # the full Q: 4(m^2 n - m n^2 + n^3/3)
    "qr-complete": (
        lambda s, t, r: torch.linalg.qr(t, mode="complete"),
        "linalg_qr",
        QR_8_5 + math.floor(4 * (8**2 * 5 - 8 * 5**2 + 5**3 / 3)),
    ),
    "householder_product": (
        lambda s, t, r: torch.linalg.householder_product(t, t[:, 0]),
        "linalg_householder_product",
        QR_8_5,
    ),
    "svd": (lambda s, t, r: torch.linalg.svd(t, full_matrices=False), "_linalg_svd", 14 * 8 * 5**2 + 8 * 5**3),
    "svd-full": (lambda s, t, r: torch.linalg.svd(t), "_linalg_svd", 4 * 8**2 * 5 + 8 * 8 * 5**2 + 9 * 5**3),
    # svdvals, eigvalsh and eigvals without autograd, as a CPU runs them outside a dispatch mode
    "svd-values": (
        lambda s, t, r: aten._linalg_svd(t, False, False),
        "_linalg_svd",
        math.floor(4 * 8 * 5**2 - 4 * 5**3 / 3),
    ),
    "svd-wide": (lambda s, t, r: torch.linalg.svd(t.mT, full_matrices=False), "_linalg_svd", 14 * 8 * 5**2 + 8 * 5**3),
    "eigh": (lambda s, t, r: torch.linalg.eigh(s), "_linalg_eigh", 9 * 8**3),
    "eigh-values": (lambda s, t, r: aten._linalg_eigh(s, "L", False), "_linalg_eigh", math.floor(4 * 8**3 / 3)),
    "eig": (lambda s, t, r: torch.linalg.eig(s), "linalg_eig", 25 * 8**3),
    "eigvals": (lambda s, t, r: aten._linalg_eigvals(s), "_linalg_eigvals", 10 * 8**3),
    # V^H and the eigenvectors as LAPACK writes them, column by column: flattening copies them
    "svd-vh-flattened": (
        lambda s, t, r: torch.linalg.svd(t, full_matrices=False).Vh.flatten(1),
        "_linalg_svd",
        14 * 8 * 5**2 + 8 * 5**3,
    ),
    "eig-vectors-flattened": (lambda s, t, r: torch.linalg.eig(s).eigenvectors.flatten(1), "linalg_eig", 25 * 8**3),
    # the degree-18 Taylor approximant: 5 products of 2n^3
    "matrix_exp": (lambda s, t, r: torch.linalg.matrix_exp(s / 100), "linalg_matrix_exp", 5 * 2 * 8**3),
    # the thin SVD, then V diag(1/s) U^H: 2 m n min(m, n)
    "pinv": (lambda s, t, r: torch.linalg.pinv(t), "linalg_pinv", 14 * 8 * 5**2 + 8 * 5**3 + 2 * 8 * 5 * 5),
    "pinv-hermitian": (lambda s, t, r: torch.linalg.pinv(s, hermitian=True), "linalg_pinv", 9 * 8**3 + 2 * 8**3),
    # QR, then per right-hand side Q^H b (4mn - 2n^2) and a back substitution (n^2)
    "lstsq": (lambda s, t, r: torch.linalg.lstsq(t, r), "linalg_lstsq", QR_8_5 + 2 * (4 * 8 * 5 - 5**2)),
    "logdet": (lambda s, t, r: torch.logdet(s), "_linalg_slogdet", LU_8),
}


class _LinearAlgebra(torch.nn.Module):
    def __init__(self, call):
        super().__init__()
        self.call = call

    def forward(self, x):  # x: [3, 8, 8]
        s = x @ x.mT + 8 * torch.eye(8, device=x.device)
        return self.call(s, x[..., :5], x[..., :2])


class _Dispatched(TorchDispatchMode):
    """The aten operators a call dispatches, with their outputs' shapes."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        outputs = result if isinstance(result, (tuple, list)) else (result,)
        self.calls.append((str(func.overloadpacket), [tuple(o.shape) for o in outputs if isinstance(o, torch.Tensor)]))
        return result


def _cpu_dispatch(call) -> list:
    x = torch.randn(3, 8, 8)
    s, t, r = x @ x.mT + 8 * torch.eye(8), x[..., :5], x[..., :2]
    with _Dispatched() as dispatched:
        call(s, t, r)
    return dispatched.calls


@pytest.mark.parametrize("case", LINEAR_ALGEBRA)
def test_linear_algebra_counts_golub_and_van_loans_flops_for_what_a_cpu_dispatches(case):
    """The operators archprof traces for a torch.linalg call, and their output shapes, are
    those a real CPU dispatches (after those that make s, t and r), none left uncounted, and
    the one that computes costs GVL's FLOPs, elementwise."""
    call, operator, flops = LINEAR_ALGEBRA[case]
    inputs = archprof.analyze(_LinearAlgebra(lambda s, t, r: (s, t, r)), input_size=(8, 8), batch=3).graph.ops
    report = archprof.analyze(_LinearAlgebra(call), input_size=(8, 8), batch=3)
    traced = [(op.op, [o.shape for o in op.outputs]) for op in report.graph.ops[len(inputs) :]]
    assert traced == _cpu_dispatch(call)
    assert report.totals.not_counted == {}
    costs = _operator_costs(report)
    assert [(c.macs, c.elementwise_flops) for c in costs[f"aten.{operator}"]] == [(0, 3 * flops)]


# svdvals, eigvalsh and eigvals, each with Golub & Van Loan's FLOPs per matrix (8 x 5 for
# the SVD, 8 x 8 for the eigenvalues) without and with the vectors; and the functions that
# reach them from C++ (matrix_norm's 2, -2 and nuclear norms, linalg.norm's, cond,
# matrix_rank: an integer, added to a sum to be a loss).
_SVDVALS_TAKEN_AT_IMPORT = torch.linalg.svdvals  # as `from torch.linalg import svdvals` in a model's module
SVD_8_5 = {False: math.floor(4 * 8 * 5**2 - 4 * 5**3 / 3), True: 14 * 8 * 5**2 + 8 * 5**3}
EIGH_8 = {False: math.floor(4 * 8**3 / 3), True: 9 * 8**3}
VALUES_ONLY = {
    "svdvals": (lambda s: torch.linalg.svdvals(s[..., :5]), SVD_8_5),
    "eigvalsh": (lambda s: torch.linalg.eigvalsh(s), EIGH_8),
    "eigvals": (lambda s: torch.linalg.eigvals(s).abs(), {False: 10 * 8**3, True: 25 * 8**3}),
    "matrix_norm-2": (lambda s: torch.linalg.matrix_norm(s[..., :5], 2), SVD_8_5),
    "matrix_norm-minus-2": (lambda s: torch.linalg.matrix_norm(s[..., :5].mT, -2), SVD_8_5),
    "matrix_norm-nuc": (lambda s: torch.linalg.matrix_norm(s[..., :5], "nuc"), SVD_8_5),
    "norm-nuc": (lambda s: torch.linalg.norm(s[..., :5], "nuc", dim=(-2, -1)), SVD_8_5),
    "cond": (lambda s: torch.linalg.cond(s[..., :5]), SVD_8_5),
    "matrix_rank": (lambda s: torch.linalg.matrix_rank(s[..., :5]) + s.sum(), SVD_8_5),
    "matrix_rank-hermitian": (lambda s: torch.linalg.matrix_rank(s, hermitian=True) + s.sum(), EIGH_8),
    "svdvals-by-a-name-taken-before": (lambda s: _SVDVALS_TAKEN_AT_IMPORT(s[..., :5]), SVD_8_5),
}
# The operators that compute them, and where one takes its flag to compute the vectors.
_VECTORS_FLAG = {"_linalg_svd": 2, "_linalg_eigh": 2}  # compute_uv, compute_v
_ALWAYS_VECTORS = {"linalg_eig": True, "_linalg_eigvals": False}


class _ValuesOf(torch.nn.Module):
    def __init__(self, call):
        super().__init__()
        self.linear = torch.nn.Linear(8, 8)
        self.call = call

    def forward(self, x):  # x: [3, 8, 8]
        y = self.linear(x)
        return self.call(y @ y.mT + 8 * torch.eye(8, device=x.device))


def _computes_vectors(name: str, args) -> bool:
    if name in _ALWAYS_VECTORS:
        return _ALWAYS_VECTORS[name]
    flag = _VECTORS_FLAG[name]
    if len(args) > flag:
        return args[flag]
    return getattr(torch.ops.aten, name).default._schema.arguments[flag].default_value  # left out: the default


def _what_a_cpu_computes(call, grad: bool) -> list[tuple[str, bool]]:
    """The operators a real CPU call runs, outside any dispatch mode (torch.profiler: its
    outermost event of each operator), and whether each computes the vectors."""
    with torch.set_grad_enabled(grad), torch.profiler.profile(record_shapes=True) as profiled:
        _ValuesOf(call)(torch.randn(3, 8, 8))
    names = {f"aten::{name}" for name in (*_VECTORS_FLAG, *_ALWAYS_VECTORS)}
    return [
        (e.name.removeprefix("aten::"), _computes_vectors(e.name.removeprefix("aten::"), e.concrete_inputs))
        for e in profiled.events()
        if e.name in names and (e.cpu_parent is None or e.cpu_parent.name != e.name)
    ]


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("case", VALUES_ONLY)
def test_eigenvalues_and_singular_values_count_the_vectors_only_where_autograd_needs_them(case, training):
    """Under a dispatch mode torch.linalg computes the vectors always, called directly or from
    C++ (matrix_norm, cond, matrix_rank); a real CPU call only where the input requires grad (a
    training step's activation): archprof traces what the CPU computes, and counts GVL's FLOPs
    for it."""
    call, flops = VALUES_ONLY[case]
    report = archprof.analyze(_ValuesOf(call), input_size=(8, 8), batch=3, training=training)
    computing = {*_VECTORS_FLAG, *_ALWAYS_VECTORS}
    traced = [
        (op.op.removeprefix("aten."), _computes_vectors(op.op.removeprefix("aten."), op.args))
        for op in report.graph.ops
        if op.op.removeprefix("aten.") in computing
    ]
    assert traced == _what_a_cpu_computes(call, grad=training)
    ((name, vectors),) = traced
    assert vectors is training  # the vectors for a training step's activation only
    assert [(c.macs, c.elementwise_flops) for c in _operator_costs(report)[f"aten.{name}"]] == [(0, 3 * flops[vectors])]


class _OwnCpuTable(torch.nn.Module):
    """A forward that makes a CPU tensor of its own (a table) and takes its singular values."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(8, 8)

    def forward(self, x):
        torch.linalg.svdvals(torch.randn(8, 5))
        return self.linear(x)


def test_singular_values_of_a_cpu_tensor_the_forward_makes_count_no_vectors_in_a_meta_trace():
    """In a trace on meta the CPU's autograd kernels are archprof's too (AutogradCPU): a table
    the forward makes on the CPU has its values taken as a CPU takes them. Registering only
    the meta device's would save 0.2 ms an analysis, and count the vectors for it."""
    report = archprof.analyze(_OwnCpuTable(), input_size=(8,))
    assert report.traced_on == "meta"
    traced = [
        (op.op.removeprefix("aten."), _computes_vectors(op.op.removeprefix("aten."), op.args))
        for op in report.graph.ops
        if op.op.removeprefix("aten.") in _VECTORS_FLAG
    ]
    with torch.profiler.profile(record_shapes=True) as profiled:
        torch.linalg.svdvals(torch.randn(8, 5))
    on_a_cpu = [(e.name, _computes_vectors("_linalg_svd", e.concrete_inputs)) for e in profiled.events()]
    assert traced == [(name.removeprefix("aten::"), v) for name, v in on_a_cpu if name == "aten::_linalg_svd"]
    assert traced == [("_linalg_svd", False)]
    assert [c.elementwise_flops for c in _operator_costs(report)["aten._linalg_svd"]] == [SVD_8_5[False]]


class _LoggedPair(TwoTensor):
    """A tensor subclass (a Python dispatch key of its own) that logs the operators it sees."""

    calls: ClassVar[list[str]] = []

    @classmethod
    def __torch_dispatch__(cls, func, types, args, kwargs):
        cls.calls.append(str(func))
        return super().__torch_dispatch__(func, types, args, kwargs)


def _values_of_a_subclass() -> list[str]:
    _LoggedPair.calls = []
    a = torch.randn(3, 8, 5)
    s = a[..., :5, :5] + a[..., :5, :5].mT
    torch.linalg.svdvals(_LoggedPair(a, a.clone()))
    torch.linalg.eigvalsh(_LoggedPair(s, s.clone()))
    torch.linalg.eigvals(_LoggedPair(s, s.clone()))
    return _LoggedPair.calls


def test_eigenvalues_of_a_tensor_subclass_take_pytorchs_road():
    """PyTorch computes the vectors for a tensor subclass (it may need them for autograd), and
    so do the trace's kernels of values only: the same operators with them active as without."""
    plain = _values_of_a_subclass()
    with DeviceKernels():
        routed = _values_of_a_subclass()
    assert routed == plain == ["aten._linalg_svd.default", "aten._linalg_eigh.default", "aten.linalg_eig.default"]


def test_eigenvalues_of_what_is_not_a_tensor_are_refused_as_pytorch_refuses_them():
    class NotATensor(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.eigvalsh([[1.0]])

    with pytest.raises(archprof.ArchprofError) as refused:
        archprof.analyze(NotATensor(), input_size=(8,))
    with pytest.raises(TypeError) as by_pytorch:
        torch.linalg.eigvalsh([[1.0]])
    assert str(by_pytorch.value) in str(refused.value)


def _per_pixel(y):
    """A 2 x 2 matrix of a 4-channel map's channels at each pixel: [1, 8, 8, 2, 2]."""
    return y.permute(0, 2, 3, 1).reshape(*y.shape[:1], *y.shape[2:], 2, 2)


@pytest.mark.parametrize(
    ("after_conv", "field"),
    [
        (lambda y: torch.linalg.det(_per_pixel(y)), (3, 3)),
        (lambda y: torch.linalg.eigvalsh(_per_pixel(y)), (3, 3)),
        (lambda y: torch.linalg.solve(_per_pixel(y), y.permute(0, 2, 3, 1)[..., :2]), (3, 3)),
        (lambda y: torch.linalg.det(y), FieldMark.INPUT),
        (lambda y: torch.linalg.inv(y), FieldMark.INPUT),
        # columns 0..4 of the map, each reading pixels -1..5: every row, and 7 columns padded
        (lambda y: torch.linalg.svd(y[..., :5]).U, (8, 7)),
    ],
    ids=["det-per-pixel", "eigvalsh-per-pixel", "solve-per-pixel", "det-of-the-map", "inv-of-the-map", "svd"],
)
def test_linear_algebra_reads_whole_matrices_and_keeps_the_batch(after_conv, field):
    """After a 3 x 3 convolution on 8 x 8 (4 channels): a 2 x 2 matrix of channels per pixel
    keeps each pixel's 3 x 3; a matrix over the map's rows and columns reads all of it (over
    its first 5 columns, what they read: it said the whole input)."""

    class AfterConv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return after_conv(self.conv(x))

    report = archprof.analyze(AfterConv(), input_size=(3, 8, 8))
    assert report.columns["receptive_field"][0] == (3, 3)
    assert report.columns["receptive_field"][-1] == field


def test_the_gradient_of_pdist_counts_5_per_term():
    """F.pdist's gradient, as its CPU kernel runs it, per pair and feature: the difference,
    grad * diff / dist (p = 2) and the two accumulations into the rows' gradients."""

    class Distances(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(12, 12)

        def forward(self, x):  # x: [5, 12]
            return F.pdist(self.linear(x))

    report = archprof.analyze(Distances(), input_size=(12,), batch=5, training=True)
    assert report.totals.not_counted == {}
    pairs = 5 * 4 // 2
    costs = _operator_costs(report)
    assert [c.elementwise_flops for c in costs["aten._pdist_backward"]] == [5 * pairs * 12]
