"""benchmarks/profile_sweep.py, on built-in models, so that it cannot rot: it calls into
archprof's profile (its real run, its cross-check) as `archprof profile` does. The oracles
are the run's own: the CPU allocator's events for the peak, FlopCounterMode on the real
forward for the FLOPs, the real outputs for the shapes."""

import csv
import sys

import pandas as pd
import pytest

LIMITS = {"device": "cpu", "max_macs": 10**12, "max_bytes": 2**31, "warmup": 0, "repeat": 1}


@pytest.fixture
def sweep(benchmark_script, hub_packages):
    return benchmark_script("profile_sweep")


def test_a_model_is_run_and_every_check_passes(sweep):
    row = sweep.profile_one("lenet5", **LIMITS)
    assert (row["status"], row["why"], row["mismatches"]) == ("checked", "", "")
    assert (row["shapes"], row["flops"], row["memory"]) == ("ok", "ok", "ok")
    assert row["measured_peak"] == row["predicted_peak"] > 0
    assert row["params"] == 61_706  # LeNet-5's: (1*25+1)*6 + (6*25+1)*16 + 401*120 + 121*84 + 85*10
    assert row["median_ms"] > 0 and row["hooked_ms"] > 0
    assert row["rows_timed"] > 2 and -1 <= row["rank_correlation"] <= 1


def test_at_another_input_batch_and_dtype_the_run_is_of_that_input(sweep):
    """resnet18 at odd sides, batch 3, in bfloat16: the peak the CPU reaches is the one
    predicted there, nearly half float32's (two bytes an element, not four; its max pool's
    indices are int64 in both)."""
    odd = {"resnet18": [(3, 61, 47)]}
    half = sweep.profile_one("resnet18", **LIMITS, dtype="bfloat16", inputs=odd, batch=3)
    full = sweep.profile_one("resnet18", **LIMITS, inputs=odd, batch=3)
    for row in (half, full):
        assert (row["status"], row["mismatches"]) == ("checked", "")
        assert row["measured_peak"] == row["predicted_peak"] > 0
    assert half["measured_peak"] < full["measured_peak"] < 2 * half["measured_peak"] + 1024


def test_a_model_of_two_inputs_runs_at_both(sweep):
    """torchvision's RAFT (`--families optical_flow`) takes two frames: at 128x128 each, its
    real run's peak is the one predicted there."""
    frames = {"torchvision:raft_small": [(3, 128, 128), (3, 128, 128)]}
    row = sweep.profile_one("torchvision:raft_small", **LIMITS, inputs=frames)
    assert (row["status"], row["mismatches"]) == ("checked", "")
    assert row["measured_peak"] == row["predicted_peak"] > 0


def test_a_model_over_the_limits_is_analysed_not_run(sweep):
    row = sweep.profile_one("lenet5", **{**LIMITS, "max_macs": 1000})
    assert row["status"] == "not run" and "1,000 MACs" in row["why"]
    assert row["macs"] > 1000 and row["measured_peak"] == row["median_ms"] == ""


def test_a_model_that_refuses_the_input_is_no_failure(sweep):
    """LeNet-5's classifier takes a 32x32 image's features: at 40x40 its own forward raises too."""
    row = sweep.profile_one("lenet5", **LIMITS, inputs={"lenet5": [(1, 40, 40)]})
    assert row["status"] == "refused by the model" and "400x120" in row["why"]


@pytest.mark.parametrize(
    ("measured", "expected"),
    [
        ([1.0, 2.0, 30.0, 400.0], 1.0),
        ([400.0, 30.0, 2.0, 1.0], -1.0),
        ([1.0, 30.0, 2.0, 400.0], 0.8),  # 1 - 6 * (0 + 1 + 1 + 0) / (4 * (16 - 1))
        ([5.0, 5.0, 5.0, 5.0], ""),  # no order to correlate with
    ],
)
def test_the_rank_correlation_is_spearmans(sweep, measured, expected):
    """Of ranks, not values: the times here lie far from any straight line."""
    times = pd.DataFrame({"roofline_time_ms": [0.1, 0.2, 0.3, 9.0], "time_ms": measured})
    assert sweep._rank_correlation(times) == expected


def test_the_report_counts_each_check_and_lists_what_disagreed(sweep):
    checked = dict.fromkeys(sweep.FIELDS, "") | {"status": "checked", "shapes": "ok", "flops": "ok", "memory": "ok"}
    rows = [
        checked | {"model": "a", "predicted_peak": 100, "measured_peak": 100, "median_ms": 2.0, "hooked_ms": 3.0},
        checked
        | {
            "model": "b",
            "flops": "mismatch",
            "mismatches": "FLOPs: total: analytic 10, FlopCounterMode 12",
            "predicted_peak": 100,
            "measured_peak": 110,
            "median_ms": 1.0,
            "hooked_ms": 1.0,
        },
        dict.fromkeys(sweep.FIELDS, "") | {"model": "c", "status": "failed", "why": "boom"},
    ]
    text = sweep.markdown(rows, "--models a b c", 1, 1.0, "cpu", "default input")
    assert "Checked: 2 of 3 models (0 over the limits and not run, 1 failed, 0 refused" in text
    assert "| FLOPs | 1 | 1 | 0 |" in text and "| output shapes | 2 | 0 | 0 |" in text
    assert "| peak memory measured to the byte | 1 of 2 |" in text
    assert "| measured / predicted peak: median (lowest, highest) | 1.0500 (1.0000, 1.1000) |" in text
    assert "| 1.25 (1.00, 1.50) |" in text  # the hooked forward over the plain one
    assert "- `b`: FLOPs: total: analytic 10, FlopCounterMode 12" in text
    assert "## Failed\n\n- `c`: boom" in text


def test_the_command_writes_its_report_and_rows(sweep, monkeypatch, tmp_path):
    report = tmp_path / "sweep.md"
    monkeypatch.setattr(sys, "argv", ["profile_sweep.py", "--models", "lenet5", "--report", str(report)])
    sweep.main()
    assert "Checked: 1 of 1 models" in report.read_text()
    with report.with_suffix(".csv").open() as file:
        (row,) = csv.DictReader(file)
    assert (row["model"], row["status"], row["flops"]) == ("lenet5", "checked", "ok")


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--device", "tpu"], "tpu"),
        (["--repeat", "0"], "'0' is no pass count"),
        (["--warmup", "-1"], "'-1' is no pass count"),
        (["--sample", "100000"], "--sample 100000: give 0 to"),
    ],
)
def test_bad_options_are_one_line_and_exit_2_before_any_model_runs(sweep, monkeypatch, capsys, tmp_path, options, said):
    report = tmp_path / "sweep.md"
    monkeypatch.setattr(sys, "argv", ["profile_sweep.py", *options, "--report", str(report)])
    with pytest.raises(SystemExit) as exited:
        sweep.main()
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("profile_sweep.py: error:") and said in error
    assert not report.exists()


def test_a_report_it_cannot_write_is_refused_before_any_model_runs(sweep, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "argv", ["profile_sweep.py", "--models", "lenet5", "--report", str(tmp_path)])
    with pytest.raises(SystemExit) as exited:
        sweep.main()
    assert exited.value.code == 2 and "Traceback" not in capsys.readouterr().err
