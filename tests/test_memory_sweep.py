"""benchmarks/memory_sweep.py, on a built-in model, so that it cannot rot: it calls into
archprof's measurement (a signature changed under it once, and every model of a run failed).
The oracle is the sweep's own: the CPU allocator's events under torch.profiler, set beside
archprof's predicted peak."""

import pytest


@pytest.fixture
def sweep(benchmark_script, hub_packages):
    return benchmark_script("memory_sweep")


def test_an_inference_peak_is_measured_and_equal_to_the_prediction(sweep):
    row = sweep.measure_one("lenet5", max_bytes=2**31)
    assert (row["status"], row["why"]) == ("measured", "")
    assert row["measured"] == row["predicted"] > 0


def test_a_training_steps_peak_is_measured_and_equal_to_the_prediction(sweep):
    row = sweep.measure_step_one("lenet5", max_bytes=2**31)
    assert (row["status"], row["why"]) == ("measured", "")
    assert row["measured"] == row["predicted"] > 0


def test_at_another_input_and_batch_the_peaks_are_measured_there(sweep):
    """resnet18 at odd sides and batch 3: the measured peak equals the prediction, both of
    that input and batch (more than batch 1's there, less than batch 1's at 224x224)."""
    three = sweep.measure_one("resnet18", max_bytes=2**31, size=(3, 61, 47), batch=3)
    one = sweep.measure_one("resnet18", max_bytes=2**31, size=(3, 61, 47))
    default = sweep.measure_one("resnet18", max_bytes=2**31)
    for row in (three, one, default):
        assert (row["status"], row["why"]) == ("measured", "")
        assert row["measured"] == row["predicted"] > 0
    assert default["measured"] > one["measured"] < three["measured"]
    step = sweep.measure_step_one("resnet18", max_bytes=2**31, size=(3, 61, 47), batch=3)
    assert step["measured"] == step["predicted"] > 0


def test_a_model_that_refuses_the_input_is_no_failure(sweep):
    """LeNet-5's classifier takes a 32x32 image's features: at 40x40 its own forward raises too."""
    row = sweep.measure_one("lenet5", max_bytes=2**31, size=(1, 40, 40))
    assert row["status"] == "refused by the model"
    assert "400x120" in row["why"] and row["measured"] == ""
