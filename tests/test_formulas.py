"""The worked examples of docs/formulas.md, verbatim."""

import pytest
import torch
from torch import nn

import archprof
from archprof.operators.shapes import conv_output_size, pool_output_size, transposed_conv_output_size
from archprof.passes.flops import op_cost
from tests.models import Calls


@pytest.mark.parametrize(
    ("height", "width", "kernel", "padding", "stride", "expected"),
    [
        (6, 9, 3, 0, 1, (4, 7)),  # [000] 6 x 9 input, 3 x 3 kernel, no padding
        (6, 9, 3, 1, 1, (6, 9)),  # [000] with P = 1
        (6, 9, 3, 1, 2, (3, 5)),  # [000] with P = 1, S = 2
        (10, 10, 3, 0, 1, (8, 8)),  # [003] 10 x 10 x 3 input, one 3 x 3 x 3 filter
    ],
)
def test_convolution_output_size(height, width, kernel, padding, stride, expected):
    assert (
        conv_output_size(height, kernel, stride, padding, 1),
        conv_output_size(width, kernel, stride, padding, 1),
    ) == expected


def test_one_3x3x3_filter_on_10x10x3_gives_8x8x1():
    report = archprof.analyze(nn.Conv2d(3, 1, 3), input_size=(3, 10, 10))
    assert report.rows()[0]["output_shape"] == "1x1x8x8"


def test_max_pool_2x2_stride_1_on_5x5_gives_4x4():
    assert pool_output_size(5, 2, 1, 0, 1, False) == 4  # [001]
    report = archprof.analyze(nn.MaxPool2d(2, stride=1), input_size=(1, 5, 5))
    assert report.rows()[0]["output_shape"] == "1x1x4x4"


def test_same_padding_keeps_the_size():
    for kernel in (1, 3, 5, 7):
        assert conv_output_size(17, kernel, 1, (kernel - 1) // 2, 1) == 17  # [000]


def test_transposed_convolution_output_size():
    # (H_in - 1) S - 2P + D (H_K - 1) + output_padding + 1
    assert transposed_conv_output_size(7, 3, 2, 1, 1, 1) == 14


def test_worked_example_1_sixteen_5x5_filters():
    """[000] 16 filters of 8 x 5 x 5, P = 2, S = 1, on an 8 x 32 x 32 input."""
    report = archprof.analyze(nn.Conv2d(8, 16, 5, padding=2), input_size=(8, 32, 32))
    totals = report.totals
    row = report.rows()[0]
    assert totals.param_count == 3_216
    assert row["output_shape"] == "1x16x32x32"
    assert totals.activation_bytes == 65_536  # 16,384 values, 64 KiB in float32
    assert totals.macs == 3_276_800
    assert totals.flops == 6_553_600


def test_a_5x5_convolution_on_3_channels_has_75_weights():
    assert archprof.analyze(nn.Conv2d(3, 1, 5, bias=False), input_size=(3, 5, 5)).totals.param_count == 75
    assert archprof.analyze(nn.Conv2d(3, 1, 5), input_size=(3, 5, 5)).totals.param_count == 76


def test_worked_example_2_vertical_edge_detector():
    """[000] 224 x 224 image to 224 x 223 outputs: fully connected vs a 1 x 2 convolution."""
    fully_connected = archprof.analyze("edge_fc").totals
    assert fully_connected.param_count == 2_506_391_552  # (224*224) * (224*223)
    assert fully_connected.flops == 2 * 2_506_391_552  # "twice that in FLOPs"

    convolution = archprof.analyze("edge_conv")
    assert convolution.totals.param_count == 2
    assert convolution.rows()[0]["output_shape"] == "1x1x224x223"
    outputs = 224 * 223
    # A count by hand says 2 multiplies and 1 add per output: 149,856 FLOPs. archprof counts
    # a MAC as 2 FLOPs (the first add accumulates into zero), one more add per output.
    assert convolution.totals.macs == 2 * outputs
    assert convolution.totals.flops - outputs == 149_856


def test_worked_example_3_vgg16():
    """[004] VGG-16 has about 138 M parameters, more than double AlexNet's 60 M."""
    vgg16 = archprof.analyze("vgg16").totals.param_count
    alexnet = archprof.analyze("alexnet").totals.param_count
    assert vgg16 == 138_357_544
    assert round(vgg16 / 1e6) == 138
    assert round(alexnet / 1e6) == 61
    assert vgg16 > 2 * alexnet


def test_batchnorm_has_2c_parameters_and_2c_buffers():
    """[000, 001, 004] gamma and beta are learnable; running mean and variance are state."""
    channels = 32
    report = archprof.analyze(nn.BatchNorm2d(channels), input_size=(channels, 4, 4))
    assert report.totals.param_count == 2 * channels
    # running mean and variance in float32, plus the int64 num_batches_tracked counter
    assert report.totals.buffer_bytes == 2 * channels * 4 + 8


def test_linear_parameters_and_macs():
    report = archprof.analyze(nn.Linear(300, 70), input_size=(300,), batch=3)
    assert report.totals.param_count == 300 * 70 + 70
    assert report.totals.macs == 3 * 300 * 70


def test_pooling_and_activations_have_no_parameters():
    model = nn.Sequential(nn.MaxPool2d(2), nn.ReLU(), nn.AvgPool2d(2))
    assert archprof.analyze(model, input_size=(3, 8, 8)).totals.param_count == 0


def test_elementwise_flop_conventions():
    x = (2, 6, 6)
    relu = archprof.analyze(nn.ReLU(), input_size=x).totals
    assert (relu.macs, relu.elementwise_flops) == (0, 72)  # one per output element
    max_pool = archprof.analyze(nn.MaxPool2d(3), input_size=x).totals
    assert max_pool.elementwise_flops == 2 * 2 * 2 * (9 - 1)  # K - 1 comparisons per output
    avg_pool = archprof.analyze(nn.AvgPool2d(3), input_size=x).totals
    assert avg_pool.elementwise_flops == 2 * 2 * 2 * 9  # K - 1 adds and a division
    batch_norm = archprof.analyze(nn.BatchNorm2d(2), input_size=x).totals
    assert batch_norm.elementwise_flops == 2 * 72  # inference: scale and shift
    # Adaptive pooling 5 -> 3 uses windows [0,2), [1,4), [3,5): sizes 2 + 3 + 2 per dimension.
    adaptive = archprof.analyze(nn.AdaptiveAvgPool2d(3), input_size=(1, 5, 5)).totals
    assert adaptive.elementwise_flops == 7 * 7


@pytest.mark.parametrize(
    ("pool", "shape", "window", "per_window"),
    [
        (nn.MaxPool2d([3], stride=[1]), (2, 7, 7), 9, -1),  # K - 1 comparisons
        (nn.AvgPool2d([3], stride=[1]), (2, 7, 7), 9, 0),  # K - 1 adds and a division
        (nn.MaxPool3d([2], stride=[1]), (2, 4, 4, 4), 8, -1),
        (nn.AvgPool3d([2], stride=[1]), (2, 4, 4, 4), 8, 0),
    ],
    ids=["max2d", "avg2d", "max3d", "avg3d"],
)
def test_a_one_element_kernel_on_an_unbatched_input_is_the_whole_window(pool, shape, window, per_window):
    """A one-element kernel_size is that size along each of the pool's spatial dimensions,
    however many dimensions come before them; the output's size from a real forward."""
    out = pool(torch.randn(shape))
    row = archprof.analyze(pool, inputs=[archprof.InputSpec(shape, batched=False)]).rows()[0]
    assert row["elementwise_flops"] == (window + per_window) * out.numel()
    assert row["kernel"] == "x".join([str(pool.kernel_size[0])] * (len(shape) - 1))


class _LessCommonProducts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(3, 5))

    def forward(self, a, b):
        return torch.addbmm(self.bias, a, b), torch.addr(self.bias, a[0, :, 0], b[0, 0])


def test_less_common_products_norms_and_copies_have_their_documented_costs():
    """addbmm is a batch of products summed (batch n k m MACs); addr a multiply and an add
    per output element; a p-norm 2 per input element and a root per output; triangles,
    diagonals and random tensors are data movement and creation. None is left uncounted."""
    products = archprof.analyze(_LessCommonProducts(), inputs=[(3, 4), (4, 5)], batch=2)
    assert products.totals.macs == 2 * 3 * 4 * 5
    assert products.totals.elementwise_flops == 2 * 3 * 5
    distance = archprof.analyze(Calls(lambda x: nn.functional.pairwise_distance(x[:, 0], x[:, 1])), input_size=(2, 6))
    # |a - b + eps| (the subtraction and the eps: 2 per element), then the norm over 6 elements.
    assert distance.totals.elementwise_flops == 2 * 6 + (2 * 6 + 1)
    copies = Calls(lambda x: x.triu() + x.tril() + torch.rand_like(x) + torch.diagonal(x, dim1=1, dim2=2).sum())
    copied = archprof.analyze(copies, input_size=(4, 4))
    for report in (products, distance, copied):
        assert not report.totals.not_counted


class _HalfThenFloat(nn.Module):
    def __init__(self):
        super().__init__()
        self.half_layer = nn.Linear(4, 4).half()
        self.float_layer = nn.Linear(4, 4)

    def forward(self, x):
        return self.float_layer(self.half_layer(x).float())


def test_mixed_precision_counts_each_tensor_in_its_own_dtype():
    report = archprof.analyze(_HalfThenFloat(), input_size=(4,))
    assert report.totals.param_bytes == 20 * 2 + 20 * 4
    assert report.totals.activation_bytes == 4 * 2 + 4 * 4 + 4 * 4  # half out, .float(), float out


def test_mixed_dtypes_that_a_real_forward_refuses_are_refused():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4).half())
    with pytest.raises(RuntimeError):
        model(torch.randn(1, 4))
    with pytest.raises(archprof.ArchprofError, match="one dtype"):
        archprof.analyze(model, input_size=(4,))


class _Antialiased(nn.Module):
    """F.interpolate with antialias=True to `size`, the input's gradient not asked for (so a
    training step runs the interpolation's backward only through `scale`)."""

    def __init__(self, mode: str, size: tuple[int, int]):
        super().__init__()
        self.mode, self.size = mode, size
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return nn.functional.interpolate(x * self.scale, size=self.size, mode=self.mode, antialias=True)


def _taps_per_output(mode: str, size_in: tuple[int, int], size_out: tuple[int, int]) -> torch.Tensor:
    """The oracle: how many inputs each output reads, the nonzero entries of its row of the
    Jacobian (float64, inputs away from zero, two draws united against a chance zero)."""
    rows = []
    for seed in (0, 1):
        x = torch.rand(1, 1, *size_in, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) + 0.5

        def resample(t):
            return nn.functional.interpolate(t, size=size_out, mode=mode, antialias=True).flatten()

        rows.append(torch.autograd.functional.jacobian(resample, x).reshape(size_out[0] * size_out[1], -1) != 0)
    return (rows[0] | rows[1]).sum(1)


ANTIALIASED = [
    ("bilinear", (32, 32), (8, 8)),  # downsampling by 4: windows of 8 inputs, 6 at the borders
    ("bicubic", (32, 32), (8, 8)),  # 16 wide, 10 at the borders
    ("bilinear", (30, 30), (7, 7)),  # a scale of 30/7: windows of different widths
    ("bicubic", (30, 30), (7, 7)),
    ("bilinear", (30, 32), (7, 8)),  # each axis its own scale
    ("bicubic", (8, 8), (16, 16)),  # upsampling: the plain kernel's window, clipped at the borders
    ("bilinear", (8, 8), (16, 16)),
]


@pytest.mark.parametrize(("mode", "size_in", "size_out"), ANTIALIASED)
def test_an_antialiased_interpolation_costs_2t_minus_1_over_the_inputs_each_output_reads(mode, size_in, size_out):
    """docs/formulas.md: an interpolation over T inputs costs 2T - 1 per output; with antialias
    T widens with a downsampling's scale (a bilinear 32 -> 8 reads 56 inputs per output on
    average, where the plain kernel's 4 were counted), for each channel and batch element."""
    taps = _taps_per_output(mode, size_in, size_out)
    per_channel = int((2 * taps - 1).sum())
    report = archprof.analyze(_Antialiased(mode, size_out), input_size=(3, *size_in), batch=2)
    assert report.totals.elementwise_flops == 2 * 3 * per_channel + 2 * 3 * size_in[0] * size_in[1]  # x * scale


@pytest.mark.parametrize(("mode", "size_in", "size_out"), ANTIALIASED)
def test_an_antialiased_interpolations_gradient_costs_2t_per_output_gradient(mode, size_in, size_out):
    """The gradient spreads each output gradient over its T inputs: 2T per element."""
    taps = _taps_per_output(mode, size_in, size_out)
    report = archprof.analyze(_Antialiased(mode, size_out), input_size=(1, *size_in), training=True)
    interpolation = [op for op in report.graph.backward_ops if op.op.endswith("_aa_backward")]
    assert len(interpolation) == 1
    assert op_cost(interpolation[0]).elementwise_flops == int((2 * taps).sum())


def test_an_antialiased_interpolation_to_the_same_size_is_a_copy():
    """PyTorch's kernel copies the input when no size changes (each output reads one input,
    with weight 1): free, as any copy; an axis whose size does not change is copied too."""
    same = archprof.analyze(_Antialiased("bicubic", (9, 9)), input_size=(1, 9, 9))
    assert same.totals.elementwise_flops == 81  # x * scale only
    taps = _taps_per_output("bicubic", (9, 12), (9, 5))
    assert bool((taps == taps.reshape(9, 5)[0].repeat(9)).all())  # rows: one input each
    one_axis = archprof.analyze(_Antialiased("bicubic", (9, 5)), input_size=(1, 9, 12))
    assert one_axis.totals.elementwise_flops == 9 * 12 + int((2 * taps - 1).sum())


@pytest.mark.parametrize(
    ("pool", "shape", "window"),
    [
        (nn.FractionalMaxPool2d(3, output_size=(4, 5)), (3, 9, 10), 9),
        (nn.FractionalMaxPool3d(2, output_size=3), (2, 5, 6, 7), 8),
    ],
    ids=["2d", "3d"],
)
def test_a_fractional_max_pool_compares_its_window_as_a_max_pool_does(pool, shape, window):
    """K - 1 comparisons per output for a window of K elements, the output's size from a real
    forward; its window is the row's kernel."""
    out = pool(torch.randn(2, *shape))
    report = archprof.analyze(pool, input_size=shape, batch=2)
    assert report.totals.not_counted == {}
    assert report.totals.elementwise_flops == (window - 1) * out.numel()
    assert report.rows()[0]["kernel"] == "x".join(map(str, pool.kernel_size))


class _Called(nn.Module):
    """A forward of several inputs that is one call, around `layer` (registered for its parameters)."""

    def __init__(self, call, layer: nn.Module | None = None):
        super().__init__()
        self.call, self.layer = call, layer

    def forward(self, *inputs):
        return self.call(*inputs)


@pytest.mark.parametrize("rows", [(5, 6), (30, 4)], ids=["direct", "matrix product"])
def test_cdist_counts_each_pairs_difference_and_norm_or_its_matrix_product(rows):
    """torch.cdist with p = 2 on inputs of at most 25 rows takes each pair's difference and
    its norm (1 + 2 per term of the sum, a root per distance); beyond 25 rows, the matrix
    product |a|^2 - 2 a.b + |b|^2 (PyTorch's _euclidean_dist: the squares and sums of both
    inputs, -2 a, a product over m + 2 columns, a clamp and a root per distance)."""
    (r1, r2), m, batch = rows, 3, 2
    report = archprof.analyze(_Called(torch.cdist), inputs=[(r1, m), (r2, m)], batch=batch)
    assert report.totals.not_counted == {}
    distances = batch * r1 * r2
    if max(r1, r2) <= 25:
        assert (report.totals.macs, report.totals.elementwise_flops) == (0, 3 * distances * m + distances)
    else:
        assert report.totals.macs == distances * (m + 2)
        assert report.totals.elementwise_flops == 3 * batch * r1 * m + 2 * batch * r2 * m + 2 * distances


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_an_embedding_bag_reduces_the_rows_it_looks_up(mode):
    """A bag is a reduction over the rows its indices look up: a sum or a mean one FLOP per
    element looked up, a maximum one comparison per element beyond each bag's first; weights
    per index (sum only) one multiply more per element."""
    bags, per_bag, dim = 3, 4, 5
    bag = nn.EmbeddingBag(10, dim, mode=mode)
    totals = archprof.analyze(bag, inputs=["4:int64"], batch=bags).totals
    assert totals.not_counted == {}
    looked_up = bags * per_bag * dim
    assert totals.elementwise_flops == looked_up - (bags * dim if mode == "max" else 0)
    assert totals.activation_bytes == bag(torch.zeros(bags, per_bag, dtype=torch.long)).nbytes


def test_an_embedding_bag_weighted_per_index_multiplies_each_row():
    bag = nn.EmbeddingBag(10, 5, mode="sum")
    model = _Called(lambda ids, weights: bag(ids, per_sample_weights=weights), bag)
    totals = archprof.analyze(model, inputs=["4:int64", (4,)], batch=3).totals
    assert totals.not_counted == {}
    assert totals.elementwise_flops == 2 * 3 * 4 * 5


def test_a_segment_reduction_and_its_gradient_cost_one_per_element_and_per_output_as_worked():
    """docs/formulas.md's worked segment reductions, per the CPU kernel's loops: 6 rows of 4 in
    segments of 2, 3 and 1 rows (12 outputs): a sum, a maximum (a comparison with the running
    maximum, from -inf) or a product 24, a mean 24 + 12 (a division per output); the gradients
    of a sum free (copies), of a mean 12 (a division per output), of a maximum 24 (`x == max`),
    of a product 12 + 24 (`grad * prod` per output, divided by each element; randn rows: no
    zeros, no ties)."""

    class Segments(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 4)

        def forward(self, x):  # x: [6, 4]
            y = self.linear(x)
            lengths = torch.tensor([2, 3, 1], device=x.device)
            return [torch.segment_reduce(y, reduce, lengths=lengths) for reduce in ("sum", "mean", "max", "prod")]

    report = archprof.analyze(Segments(), input_size=(4,), batch=6, training=True)
    assert report.totals.not_counted == {}
    graph = report.graph

    def flops(operator: str) -> list[int]:
        return [op_cost(op).elementwise_flops for op in (*graph.ops, *graph.backward_ops) if op.op == operator]

    assert flops("aten.segment_reduce") == [24, 24 + 12, 24, 24]
    assert sorted(flops("aten._segment_reduce_backward")) == [0, 12, 24, 12 + 24]
