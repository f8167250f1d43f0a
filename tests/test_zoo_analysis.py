"""Every built-in model at its default input: archprof's parameters equal the published
figure, its output shape a real forward's, and its MACs what FlopCounterMode counts on the
same model."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import archprof
from archprof.zoo import MODELS
from tests.test_zoo import EXPECTED_OUTPUT, PUBLISHED_PARAMS


def _count_and_run(name: str):
    """Output shape and FlopCounterMode's FLOPs of a real run (on meta for edge_fc's 10 GB)."""
    entry = MODELS[name]
    device = "meta" if name == "edge_fc" else "cpu"
    with torch.device(device):
        model = entry.build().eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        output = model(torch.rand(1, *entry.input_size, device=device))
    return tuple(output.shape), counter.get_total_flops()


@pytest.mark.parametrize("name", list(MODELS))
def test_zoo_model_matches_published_params_real_shape_and_flop_counter(name):
    report = archprof.analyze(name)
    assert report.totals.param_count == PUBLISHED_PARAMS[name]
    real_shape, counted_flops = _count_and_run(name)
    assert real_shape == EXPECTED_OUTPUT.get(name, (1, 1000))
    final_shape = report.rows()[-1]["output_shape"]
    assert final_shape == "x".join(map(str, real_shape))
    assert report.totals.macs * 2 == counted_flops
    assert report.totals.not_counted == {}


@pytest.mark.parametrize(
    ("name", "gmacs"),
    # Published figures (torchvision's model cards give GFLOPS meaning multiply-accumulates).
    [("vgg16", 15.47), ("resnet50", 4.09), ("alexnet", 0.71), ("mobilenet_v2", 0.30), ("densenet121", 2.83)],
)
def test_published_macs(name, gmacs):
    assert round(archprof.analyze(name).totals.macs / 1e9, 2) == gmacs
