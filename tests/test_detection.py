"""torchvision's detectors and their operators (`torchvision::nms`, `torchvision::roi_align`).

Their forward cannot run on the meta device (`torch.nonzero` picks the boxes): archprof
traces a real CPU forward instead. The oracles: the sum of `numel()`, FlopCounterMode's
MACs over the same real forward (the same weights, the same random input), and for
torchvision's own operators, which FlopCounterMode does not count, formulas written here
from their CPU kernels and handed to it as its own."""

import warnings

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import archprof
from archprof.errors import ArchprofWarning
from archprof.random_state import REAL_TRACE_SEED
from archprof.structure import tensors_in
from benchmarks.torchvision_ops import greedy_nms, roi_align_box_by_box


def _roi_align_flops(x, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned, out_shape):
    # torchvision's roi_align_kernel.cpp, per box, channel and bin: for each of the
    # sampling_ratio x sampling_ratio points, w1 v1 + w2 v2 + w3 v3 + w4 v4 added to the bin's
    # sum (4 multiplies, 4 additions), then the sum divided by the number of points.
    points = sampling_ratio * sampling_ratio
    boxes, channels, height, width = out_shape
    return boxes * channels * height * width * (points * (4 + 4) + 1)


def _nms_flops(boxes, scores, iou_threshold, out_shape):
    # torchvision's nms_kernel.cpp: areas (x2 - x1) (y2 - y1), a sort of the scores
    # (n ceil(log2 n) comparisons), then IoU tests of 13 operations (4 max / min for the
    # intersection, 2 differences clamped at 0, a product, the union's sum and difference,
    # the ratio, the threshold). Of those tests, the ones every run makes: each kept box
    # against each later kept box, and each suppressed box against the box that suppressed it.
    n, kept = boxes[0], out_shape[0]
    levels = (n - 1).bit_length()
    return 3 * n + n * levels + 13 * (kept * (kept - 1) // 2 + (n - kept))


class RoIPooled(torch.nn.Module):
    """Three boxes of one image pooled to 2 x 3 bins, 2 x 2 samples a bin."""

    def __init__(self):
        super().__init__()
        self.register_buffer("boxes", torch.tensor([[0, 0, 0, 4, 4], [0, 2, 2, 6, 6], [0, 1, 1, 7, 7.0]]))

    def forward(self, x):
        import torchvision

        return torchvision.ops.roi_align(x, self.boxes, output_size=(2, 3), sampling_ratio=2)


class Suppressed(torch.nn.Module):
    """Non-maximum suppression of three boxes: B overlaps A (IoU 81 / 119), C stands apart."""

    def __init__(self):
        super().__init__()
        self.register_buffer("boxes", torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30.0]]))
        self.register_buffer("scores", torch.tensor([0.9, 0.8, 0.7]))

    def forward(self, x):
        import torchvision

        return x * torchvision.ops.nms(self.boxes, self.scores, 0.5).sum()


def test_the_stand_in_nms_keeps_what_greedy_suppression_keeps(hub_packages):
    boxes = torch.tensor([[1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10], [21, 21, 31, 31.0]])
    scores = torch.tensor([0.8, 0.6, 0.9, 0.7])
    # 2 (score 0.9) suppresses 0 (IoU 81 / 119); 3 (0.7) suppresses 1 (IoU 81 / 119).
    assert greedy_nms(boxes, scores, 0.5).tolist() == [2, 3]
    assert greedy_nms(boxes, scores, 0.7).tolist() == [2, 0, 3, 1]  # 0.68 is not over 0.7
    assert hub_packages[0].ops.nms(boxes, scores, 0.5).tolist() == [2, 3]
    assert greedy_nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []


def test_the_stand_in_nms_is_greedy_suppression_by_torchvisions_iou(hub_packages):
    """On 400 random boxes: a box is kept where no kept box of a higher score overlaps it by
    more than the threshold, the IoUs from torchvision's own `box_iou`."""
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(400, 2, generator=generator) * 100
    boxes = torch.cat([corners, corners + 5 + torch.rand(400, 2, generator=generator) * 30], dim=1)
    scores = torch.rand(400, generator=generator)
    overlaps = hub_packages[0].ops.box_iou(boxes, boxes) > 0.5
    kept = []
    for box in scores.sort(stable=True, descending=True).indices.tolist():
        if not any(overlaps[box, earlier] for earlier in kept):
            kept.append(box)
    assert greedy_nms(boxes, scores, 0.5).tolist() == kept
    assert 20 < len(kept) < 380  # suppression at work, and not of nearly all


def test_the_stand_in_nms_holds_no_matrix_of_every_pair(hub_packages):
    """Its most memory, read from the CPU allocator's events, grows with the boxes, as the
    real kernel's does: 4,000 boxes' matrix of every pair alone would be 16 MB of floats."""
    from archprof.measure.peak_memory import cpu_allocation_peaks

    corners = torch.rand(4000, 2, generator=torch.Generator().manual_seed(1)) * 1000
    boxes = torch.cat([corners, corners + 10], dim=1)
    scores = torch.rand(4000, generator=torch.Generator().manual_seed(2))
    most, _ = cpu_allocation_peaks(lambda: greedy_nms(boxes, scores, 0.5))
    assert most < 4000 * 4 * 20  # a few vectors of one float a box


def test_the_stand_in_roi_align_is_torchvisions_reference_box_by_box(hub_packages):
    """The same values as torchvision's pure-PyTorch roi_align, to the bit, holding one box's
    samples at a time: the reference's own peak, read from the CPU allocator's events, holds
    every box's samples at once (several times its output), the stand-in's its output and a
    few tensors of one box's samples."""
    import sys

    from archprof.measure.peak_memory import cpu_allocation_peaks

    reference = sys.modules["torchvision.ops.roi_align"]._roi_align.__wrapped__
    generator = torch.Generator().manual_seed(0)
    features = torch.rand(2, 64, 40, 40, generator=generator)
    corners = torch.rand(150, 2, generator=generator) * 300
    sizes = 8 + torch.rand(150, 2, generator=generator) * 200
    rois = torch.cat([torch.randint(0, 2, (150, 1), generator=generator).float(), corners, corners + sizes], dim=1)
    options = (1 / 8, 7, 7, 2, False)  # a detector's: an 8-pixel stride, 7 x 7 bins, 2 x 2 samples a bin
    expected = reference(features, rois, *options)
    assert torch.equal(roi_align_box_by_box(reference, features, rois, *options), expected)
    output_bytes = expected.numel() * expected.element_size()
    samples_bytes = 4 * output_bytes  # 2 x 2 samples a bin, of every box
    by_box, _ = cpu_allocation_peaks(lambda: roi_align_box_by_box(reference, features, rois, *options))
    at_once, _ = cpu_allocation_peaks(lambda: reference(features, rois, *options))
    # A tensor of one box's samples is samples_bytes / 150; the reference's of all boxes' samples.
    assert output_bytes < by_box < output_bytes + 20 * samples_bytes / 150
    assert at_once > output_bytes + 2 * samples_bytes


def test_roi_align_costs_eight_per_sample_and_a_division_per_bin(hub_packages):
    report = archprof.analyze(RoIPooled(), inputs=[(4, 8, 8)])
    assert report.traced_on == "meta"  # its output size is static: the stand-in's meta kernel
    (row,) = report.by_operator().query("operator == 'torchvision.roi_align'").itertuples()
    # 3 boxes x 4 channels x 2 x 3 bins, each 2 x 2 points of 4 multiplies and 4 additions, and a division
    assert row.elementwise_flops == 3 * 4 * 2 * 3 * (2 * 2 * (4 + 4) + 1) == 2376
    assert row.macs == 0
    assert report.totals.not_counted == {}


def test_nms_counts_the_iou_tests_every_run_makes(hub_packages):
    # Said as a fallback that worked, not as a failure.
    fell_back = r"^Suppressed: traced with a real forward on cpu instead \(its own weights; slower than a meta trace\)"
    with pytest.warns(ArchprofWarning, match=fell_back):
        report = archprof.analyze(Suppressed(), inputs=[(2,)])
    (row,) = report.by_operator().query("operator == 'torchvision.nms'").itertuples()
    # 3 areas (2 differences and a product each), 3 scores sorted (3 x ceil(log2 3)), then
    # A tested against B (suppressed) and C (kept): 2 IoU tests of 13
    assert row.elementwise_flops == 3 * 3 + 3 * 2 + 2 * 13 == 41
    assert report.totals.not_counted == {}


class NonZero(torch.nn.Module):
    def forward(self, x):
        return torch.nonzero(x > 0)


def test_nonzero_compares_each_input_element_once():
    with pytest.warns(ArchprofWarning, match="traced with a real forward"):
        report = archprof.analyze(NonZero(), inputs=[(3, 5)])
    (row,) = report.by_operator().query("operator == 'aten.nonzero'").itertuples()
    assert row.elementwise_flops == 3 * 5  # each element of the 1 x 3 x 5 mask tested against zero
    assert report.totals.not_counted == {}


class Unique(torch.nn.Module):
    def forward(self, x):
        return torch.unique(x)


def test_unique_sorts_then_compares_neighbours():
    with pytest.warns(ArchprofWarning, match="traced with a real forward"):
        report = archprof.analyze(Unique(), inputs=[(8,)])
    (row,) = report.by_operator().query("operator == 'aten._unique2'").itertuples()
    assert row.elementwise_flops == 8 * 3 + 7  # a sort of 8 (3 levels of 8 comparisons), 7 neighbours compared
    assert report.totals.not_counted == {}


def test_a_detector_counts_what_its_real_forward_runs(hub_packages):
    """Faster R-CNN on an image resized to 128 pixels: its region-proposal network (NMS),
    RoI pooling and box head (30 s on a busy 2-core machine; the sweep runs the others)."""
    torchvision = hub_packages[0]
    torch.manual_seed(0)
    model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights_backbone=None, min_size=128, max_size=128
    ).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ArchprofWarning)  # traced with a real forward
        report = archprof.analyze(model, inputs=[(3, 128, 128)])
    # The same forward: archprof's fallback draws its input first from its own seed.
    torch.manual_seed(REAL_TRACE_SEED)
    image = torch.randn(1, 3, 128, 128)
    mapping = {torch.ops.torchvision.roi_align: _roi_align_flops, torch.ops.torchvision.nms: _nms_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter, torch.no_grad():
        output = model(image)
    counts = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    ours = report.by_operator().set_index("operator")

    assert report.traced_on == "cpu"
    assert report.totals.param_count == sum(p.numel() for p in model.parameters())
    assert [tuple(t.shape) for t in report.graph.outputs] == [tuple(t.shape) for t in tensors_in(output)]
    torchvision_ops = {"torchvision.roi_align", "torchvision.nms"}
    aten_flops = sum(n for op, n in counts.items() if op not in torchvision_ops)
    assert report.totals.macs == aten_flops // 2
    for op in torchvision_ops & counts.keys():
        assert ours.loc[op, "elementwise_flops"] == counts[op]
    assert "torchvision.nms" in counts  # the forward suppressed boxes
    assert report.totals.not_counted == {}
