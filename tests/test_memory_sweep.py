"""benchmarks/memory_sweep.py, on a built-in model, so that it cannot rot: it calls into
archprof's measurement (a signature changed under it once, and every model of a run failed).
The oracle is the sweep's own: the CPU allocator's events under torch.profiler, set beside
archprof's predicted peak."""

import importlib
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def sweep(monkeypatch, hub_packages):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports its siblings
    threads = torch.get_num_threads()
    yield importlib.import_module("memory_sweep")
    torch.set_num_threads(threads)  # a sweep's worker takes one thread


def test_an_inference_peak_is_measured_and_equal_to_the_prediction(sweep):
    row = sweep.measure_one("lenet5", max_bytes=2**31)
    assert (row["status"], row["why"]) == ("measured", "")
    assert row["measured"] == row["predicted"] > 0


def test_a_training_steps_peak_is_measured_and_equal_to_the_prediction(sweep):
    row = sweep.measure_step_one("lenet5", max_bytes=2**31)
    assert (row["status"], row["why"]) == ("measured", "")
    assert row["measured"] == row["predicted"] > 0
