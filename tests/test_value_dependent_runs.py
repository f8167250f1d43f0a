"""A model whose shapes follow its values (a detector's kept boxes: here the positive outputs
of a random layer) cannot be traced on meta: the analysis traces a real CPU forward, drawing
its weights and inputs from a fixed seed. Every real run of that analysis (`profile`,
`memory --measure`, `compare --profile`) must draw the same ones, or it runs another forward
than the one analysed: its cross-check then sets other shapes against the analysis's. The
oracle is the real run itself: its leaf shapes and the allocator's peak."""

import pytest
import torch
from torch import nn

import archprof
from archprof.measure.peak_memory import measure_memory
from archprof.measure.profile import traced_elsewhere_notes


class KeepsPositives(nn.Module):
    """A layer, then only its positive outputs, then a layer on each of them: how many there
    are depends on the weights and the input."""

    def __init__(self):
        super().__init__()
        self.score = nn.Linear(64, 512)
        self.head = nn.Linear(1, 32)

    def forward(self, x):
        scores = self.score(x)
        return self.head(scores[scores > 0].unsqueeze(1))


MODELS = pytest.mark.parametrize(
    "model",
    [KeepsPositives(), "tests.test_value_dependent_runs:KeepsPositives"],
    ids=["its own weights", "built by archprof, random weights"],
)
# The caller's seeds: the analysis traces the same forward under any of them, and so must the run.
CALLERS_SEEDS = (1, 2)


def _kept(report) -> int:
    (head,) = report.layers.query("layer == 'head'").itertuples()
    return int(head.output_shape.split("x")[0])


@MODELS
def test_profile_runs_the_forward_the_analysis_traced(model, recwarn):
    for seed in CALLERS_SEEDS:
        torch.manual_seed(seed)
        report = archprof.profile(model, input_size=(64,), device="cpu", warmup=0, repeat=1)
        assert report.traced_on == "cpu"
        assert 0 < _kept(report) < 512  # some outputs kept, not all: a count that other draws change
        checks = {check.name: check.status for check in report.measured.checks}
        assert checks == {"output shapes": "ok", "FLOPs": "ok", "peak memory": "ok"}, report.measured.mismatches
        assert report.measured.measured_peak_memory_bytes == report.totals.peak_memory_bytes


@MODELS
def test_memory_measure_runs_the_forward_the_analysis_traced(model, recwarn):
    analysed = archprof.analysis.analysis(archprof.load.load_model(model), (64,), 1, None)
    for seed in CALLERS_SEEDS:
        torch.manual_seed(seed)
        assert measure_memory(analysed, training=False).inference.bytes == analysed.report.totals.peak_memory_bytes


def test_a_run_on_another_device_than_the_real_trace_says_its_values_differ():
    """The same seed gives other numbers on another device: said where it can matter, only there."""
    (note,) = traced_elsewhere_notes("cpu", torch.device("cuda"))
    assert "real forward on cpu, run on cuda" in note and "kept boxes" in note
    assert traced_elsewhere_notes("meta", torch.device("cuda")) == ()
    assert traced_elsewhere_notes("cpu", torch.device("cpu")) == ()
    assert traced_elsewhere_notes("cuda:0", torch.device("cuda:0")) == ()
