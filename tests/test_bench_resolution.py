"""benchmarks/bench_resolution.py, on built-in models, so that it cannot rot: it times every
side a model's forward takes, leaves out the ones it refuses, and judges flatness from the
times it measured."""

import pytest


@pytest.fixture
def bench(benchmark_script):
    return benchmark_script("bench_resolution")


def test_each_side_the_forward_takes_is_timed_and_reported(bench):
    results = {"resnet18": bench.measure("resnet18", rounds=2), "lenet5": bench.measure("lenet5", rounds=2)}
    assert sorted(results["resnet18"].analysis) == sorted(results["resnet18"].passes) == [224, 448, 896]
    assert sorted(results["lenet5"].analysis) == [32]  # its classifier takes 32x32 only: the larger sides left out
    for timings in results.values():
        assert all(len(runs) == 2 and min(runs) > 0 for runs in (*timings.analysis.values(), *timings.passes.values()))
    text = bench.report(results, 2, "python benchmarks/bench_resolution.py")
    ops = results["resnet18"].operators
    assert ops[224] == ops[448] == ops[896] > 50  # the same network at every side
    assert (
        f"| `resnet18` | 224, 448, 896 | {ops[224]}, {ops[448]}, {ops[896]} |" in text and "| `lenet5` | 32 |" in text
    )


def test_the_ratio_pairs_runs_of_one_round_and_judges_flatness_by_it(bench):
    # a: the largest side takes 1.5x and 1.6x the smallest's time in its two rounds, 1.55x.
    # b: 1.0x in a quiet round, 1.5x in one the machine slowed: 1.25x, where the ratio of the
    # medians (20 ms over 15) would say 1.33x, setting runs of different moments side by side.
    slow = bench.Timings(
        {224: [0.010, 0.010], 896: [0.015, 0.016]}, {224: [0.001] * 2, 896: [0.002] * 2}, {224: 5, 896: 5}
    )
    flat = bench.Timings(
        {224: [0.010, 0.020], 896: [0.010, 0.030]}, {224: [0.001] * 2, 896: [0.001] * 2}, {224: 5, 896: 6}
    )
    assert slow.ratio(slow.analysis) == pytest.approx(1.55) and flat.ratio(flat.analysis) == pytest.approx(1.25)
    text = bench.report({"a": slow, "b": flat}, 2, "x")
    assert "| `a` | 224, 896 | 5, 5 | 10.0, 15.5 | 1.55x | 1.0, 2.0 | 2.00x | **no** |" in text
    assert "| `b` | 224, 896 | 5, 6 | 15.0, 20.0 | 1.25x | 1.0, 1.0 | 1.00x | yes |" in text
