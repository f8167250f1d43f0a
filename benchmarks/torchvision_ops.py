"""torchvision, importable and with its detection operators, for the tests and benchmarks.

torchvision's wheel on the development machine is a CUDA build whose C++ operators
(`torchvision::nms`, `torchvision::roi_align`, ...) do not load beside the CPU torch; its
model code is pure Python. Two stand-ins make it usable here:
- an empty `torchvision._meta_registrations`, the module that registers those operators'
  meta kernels (it clashes with this torch's own registrations), replaced by the real one
  where the operators did load (a torchvision built for the torch beside it);
- where the operators did not load, the two the detectors call, `nms` and `roi_align`,
  defined under torchvision's own schemas with CPU kernels in plain PyTorch (and a meta
  kernel for `roi_align`, whose output size is static), so that a detector's forward runs
  and a dispatch trace sees one `torchvision.nms` or `torchvision.roi_align` call, as on a
  machine where the real operators load. Each works through its boxes as the C++ kernel
  does, holding little beyond its output, so that a detector's measured peak is the one the
  real operators give. There (users' machines, the GPU machine) nothing
  is replaced.

Tests only: archprof itself imports torchvision as it is.
"""

from __future__ import annotations

import functools
import importlib
import sys
import types

import torch

# As torchvision's C++ library declares them (csrc/ops/nms.cpp, roi_align.cpp).
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width,"
    " int sampling_ratio, bool aligned) -> Tensor",
)
_META_REGISTRATIONS = "torchvision._meta_registrations"
# Kept alive: the registrations last as long as their library object.
_LIBRARIES: list[torch.library.Library] = []


def import_torchvision() -> types.ModuleType:
    """torchvision, imported with its meta registrations stubbed, and `nms` and `roi_align`
    stood in for where its C++ operators did not load."""
    stub = sys.modules.setdefault(_META_REGISTRATIONS, types.ModuleType(_META_REGISTRATIONS))
    import torchvision

    if not torchvision.extension._has_ops():
        _stand_in_operators(torchvision)
    elif _own_operators_loaded() and sys.modules[_META_REGISTRATIONS] is stub:
        # Its C++ operators loaded (not only the two stood in for by an earlier call, in this
        # module or in another copy of it): their meta kernels too.
        del sys.modules[_META_REGISTRATIONS]
        importlib.import_module(_META_REGISTRATIONS)
    return torchvision


def _own_operators_loaded() -> bool:
    """Whether torchvision's C++ library is loaded: it defines the gradient of roi_align, which
    no stand-in does."""
    return hasattr(torch.ops.torchvision, "_roi_align_backward")


def _stand_in_operators(torchvision: types.ModuleType) -> None:
    roi_align_module = sys.modules["torchvision.ops.roi_align"]
    # Its pure-PyTorch reference, without the torch.compile its first call would wrap it in.
    roi_align_reference = roi_align_module._roi_align.__wrapped__
    library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        library.define(schema)
    library.impl("nms", greedy_nms, "CPU")
    library.impl("roi_align", functools.partial(roi_align_box_by_box, roi_align_reference), "CPU")
    library.impl("roi_align", _roi_align_shape, "Meta")
    _LIBRARIES.append(library)
    # torchvision asks `_has_ops` before calling its operators (roi_align imported the name itself).
    torchvision.extension._has_ops = _has_ops
    roi_align_module._has_ops = _has_ops


def _has_ops() -> bool:
    return True


def greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """torchvision's CPU kernel (nms_kernel.cpp) in plain PyTorch: boxes in decreasing score
    order (a stable sort), each kept unless an earlier kept box overlaps it by an IoU over
    `iou_threshold`; the indices kept, in that order. A kept box is tested against the later
    boxes one row at a time, as the kernel does: memory in proportion to the boxes, never a
    matrix of every pair, which a measured peak (a detector's `profile`) would hold and the
    real operator never makes."""
    order = scores.sort(stable=True, descending=True).indices
    x1, y1, x2, y2 = boxes[order].unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    kept = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        kept.append(i)
        later = slice(i + 1, None)
        width = (torch.minimum(x2[i], x2[later]) - torch.maximum(x1[i], x1[later])).clamp(min=0)
        height = (torch.minimum(y2[i], y2[later]) - torch.maximum(y1[i], y1[later])).clamp(min=0)
        intersection = width * height
        suppressed[later] |= intersection / (areas[i] + areas[later] - intersection) > iou_threshold
    return order[torch.tensor(kept, dtype=torch.long)]


def roi_align_box_by_box(reference, input, rois, *options):
    """torchvision's pure-PyTorch `roi_align` (`reference`), run one box at a time into the
    output, as its C++ kernel fills it: the reference computes every sample of every box at
    once (for a detector's 150 boxes of 256 channels, tensors of tens of MB each), which a
    measured peak would hold and the real operator never makes. Each box's values are the
    reference's: it computes them box by box too."""
    output = _roi_align_shape(input, rois, *options)
    for box in range(len(rois)):
        output[box : box + 1] = reference(input, rois[box : box + 1], *options)
    return output


def _roi_align_shape(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    # One pooled_height x pooled_width map per box and channel.
    return input.new_empty((rois.shape[0], input.shape[1], pooled_height, pooled_width))
