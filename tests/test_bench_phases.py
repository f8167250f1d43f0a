"""benchmarks/bench_phases.py, so that it cannot rot: the functions it wraps are still the
ones an analysis calls, each phase holds what it says, and the script puts them back."""

import gc

import pytest

import archprof.analysis
import archprof.tracing.trace

# A forward that sleeps: its time is known, and must land in the forward's phase alone.
SLEEPING_MODEL = """
import time
from torch import nn

class Sleeping(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        time.sleep(0.2)
        return self.conv(x).relu()

def sleeping():
    return Sleeping()
"""


@pytest.fixture
def bench(benchmark_script):
    return benchmark_script("bench_phases")


def test_a_forwards_own_time_is_the_forwards_phase(bench, tmp_path, monkeypatch):
    (tmp_path / "sleeping.py").write_text(SLEEPING_MODEL)
    monkeypatch.chdir(tmp_path)
    (sleeping,) = bench.measure(("sleeping.py:sleeping",), rounds=2, size=(3, 8, 8))
    assert (sleeping.operators, sleeping.module_calls) == (2, 2)  # the convolution and the ReLU; the model, its conv
    assert len(sleeping.runs) == 2
    for run in sleeping.runs:
        assert run["forward under the recorder"] >= 0.2
        assert 0 < run["set-up and tear-down"] < 0.2 and 0 < run["passes"] < 0.2
        assert run["rest"] >= 0 and run["collector"] >= 0
        assert run["total"] >= run["forward under the recorder"] + run["set-up and tear-down"] + run["passes"]


def test_the_report_has_a_row_per_model_and_what_was_wrapped_is_put_back(bench, tmp_path):
    def wrapped():
        return archprof.analysis.trace_loaded, archprof.analysis.build_report, archprof.tracing.trace.model_called

    before, callbacks = wrapped(), list(gc.callbacks)
    report = tmp_path / "phases.md"
    assert bench.main(["--models", "lenet5", "edge_conv", "--rounds", "2", "--report", str(report)]) == 0
    text = report.read_text()
    assert "| `lenet5` | 15 | 15 |" in text and "| `edge_conv` | 1 | 2 |" in text
    assert wrapped() == before and gc.callbacks == callbacks
