"""benchmarks/hub_sweep.py keeps each model's row as it comes in: a run killed part way,
then resumed (--resume), gives the rows an uninterrupted run gives."""

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Built-in models, quick to analyse, standing in for the hub's 1,451.
MODELS = ["edge_conv", "lenet5", "alexnet", "resnet18", "mobilenet_v2", "googlenet", "vgg11", "squeezed"]
# The model a stopped run hangs on: the sweep is killed there, mid-run.
HANGS_ON = "mobilenet_v2"
TIMED = ("build_ms", "first_analysis_ms", "analysis_ms")

# The sweep over MODELS instead of the hub; with HANG set, it never finishes HANGS_ON.
SWEEP = f"""
import os, sys, time
sys.path.insert(0, "benchmarks")
import hub_sweep
hub_sweep.hub_models = lambda families=("classification",): {MODELS!r}
if os.environ.get("HANG"):
    real = hub_sweep.sweep_one
    def sweep_one(spec, **options):
        if spec == {HANGS_ON!r}:
            time.sleep(600)
        return real(spec, **options)
    hub_sweep.sweep_one = sweep_one
hub_sweep.main()
"""


def sweep(report: Path, *options: str, hang: bool = False) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **({"HANG": "1"} if hang else {})}
    command = [sys.executable, "-c", SWEEP, "--sample", "6", "--seed", "3", "--report", str(report), *options]
    return subprocess.Popen(
        command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finished(process: subprocess.Popen) -> None:
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err


def rows(table: Path) -> list[dict]:
    """The CSV's rows, their timings left out (they differ run to run)."""
    with table.open(newline="") as file:
        return [{k: v for k, v in row.items() if k not in TIMED} for row in csv.DictReader(file)]


def data_lines(table: Path) -> list[str]:
    return table.read_text().splitlines()[1:] if table.exists() else []


def test_a_killed_sweep_resumed_gives_the_rows_of_one_never_stopped(tmp_path):
    whole = tmp_path / "not made yet" / "whole.md"  # the sweep makes the report's folder
    finished(sweep(whole, "--jobs", "2"))
    assert "python benchmarks/hub_sweep.py --sample 6 --seed 3 --jobs 2`" in whole.read_text()  # it draws again
    expected = rows(whole.with_suffix(".csv"))
    assert len(expected) == 6 and len({row["model"] for row in expected}) == 6
    assert HANGS_ON in {row["model"] for row in expected}  # the seed draws it: the stopped run hangs there

    stopped = tmp_path / "stopped.md"
    table = stopped.with_suffix(".csv")
    process = sweep(stopped, "--jobs", "1", hang=True)
    before = sorted(row["model"] for row in expected).index(HANGS_ON)  # one process sweeps in order
    deadline = time.monotonic() + 120
    while len(data_lines(table)) < before and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    assert process.poll() is None, "the sweep ended before it was stopped"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not stopped.exists()  # the report is written at the end
    kept = rows(table)
    assert kept == expected[:before] and before > 0  # each row written as it came in, whole
    # A stop in the middle of a line (a writer other than this one, the power cut): that line is swept again.
    with table.open("a") as file:
        file.write(f"{HANGS_ON},exa")

    resumed = sweep(stopped, "--jobs", "1", "--resume")
    finished(resumed)
    assert rows(table) == expected
    statuses = [row["status"] for row in expected]
    order = ("exact", "wrong", "failed", "refused by the model", "no reference", "does not build on meta")
    counts = [statuses.count(s) for s in order]
    assert "| " + " | ".join(map(str, counts)) + " |" in stopped.read_text().splitlines()
    assert f"resuming a stopped run: {before} models from its CSV" in stopped.read_text()
    # the load average as a figure, not the template
    assert re.search(r"; load average \d+\.\d on \d+ cores at the start", stopped.read_text())
    assert not list(tmp_path.glob("*.partial"))


def test_resume_refuses_a_csv_of_other_columns_in_one_line(tmp_path):
    report = tmp_path / "other.md"
    report.with_suffix(".csv").write_text("model,peak\nlenet5,3\n")
    process = sweep(report, "--resume")
    _, err = process.communicate(timeout=300)
    assert process.returncode == 2
    assert err.strip().splitlines() == [
        f"error: {report.with_suffix('.csv')} has columns ['model', 'peak'], not this sweep's:"
        " sweep again without --resume"
    ]


class _Recurrent(__import__("torch").nn.Module):
    def __init__(self, **options):
        import torch

        super().__init__()
        self.rnn = torch.nn.LSTM(8, 16, **options)

    def forward(self, x):
        return self.rnn(x)[0]


def test_the_reference_adds_the_lstm_gradients_its_decomposition_skips(monkeypatch):
    """The sweep's reference, FlopCounterMode over the decomposition on meta, counts no initial
    state's gradient (zeros) and no input's gradient where the input needs none; a CPU's
    oneDNN kernel computes both, as archprof counts. With those products added, the two agree
    on one training step of LSTMs of one or two layers, either direction; and on one with a
    projection, which a CPU runs without oneDNN, its products those of the decomposition."""
    import archprof

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import hub_sweep

    for options in ({}, {"bidirectional": True}, {"num_layers": 2, "bidirectional": True}, {"proj_size": 4}):
        report = archprof.analyze(_Recurrent(**options), input_size=(5, 8), batch=3, training=True)
        reference = hub_sweep._reference(_Recurrent(**options).to("meta"), [(3, 5, 8)], "meta", training=True)
        assert reference["reference_training_flops"] == report.totals.training_flops, options


def _hub_sweep(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import hub_sweep

    return hub_sweep


def test_input_and_batch_reach_the_analysis_and_the_reference(monkeypatch):
    """At an input of odd sides and batch 3, archprof's figures equal FlopCounterMode's on
    the same input (exact), and the batch reached both: three times batch 1's MACs, whose row
    at that input is exact too."""
    hub_sweep = _hub_sweep(monkeypatch)
    inputs = {"resnet18": [(3, 97, 83)]}
    three = hub_sweep.sweep_one("resnet18", inputs=inputs, batch=3)
    one = hub_sweep.sweep_one("resnet18", inputs=inputs)
    assert (three["status"], one["status"]) == ("exact", "exact"), (three["why"], one["why"])
    assert three["output_shape"] == three["reference_output_shape"] == "3x1000"
    assert three["reference_macs"] == 3 * one["reference_macs"] > 0


def test_a_model_that_refuses_the_input_is_told_from_a_failure(monkeypatch):
    """LeNet-5's first linear layer takes the 16x5x5 features of a 32x32 image: at 40x40 its
    own forward raises, run by the reference, as archprof does; not a failure of archprof's.
    Where archprof raises and the model's forward runs, the row stays a failure, and says so."""
    import archprof
    from archprof.errors import ArchprofError

    hub_sweep = _hub_sweep(monkeypatch)
    refused = hub_sweep.sweep_one("lenet5", inputs={"lenet5": [(1, 40, 40)]})
    assert refused["status"] == "refused by the model"
    assert refused["macs"] == ""
    archprofs, references = refused["why"].split("; FlopCounterMode: on meta ")  # each error, archprof's first
    assert "(1x784 and 400x120)" in archprofs  # 16x7x7 features, not 16x5x5
    assert "784" in references and "400" in references  # torch's meta kernel, in its own words

    def raises(*args, **kwargs):
        raise ArchprofError("a stand-in for a bug")

    monkeypatch.setattr(archprof, "analyze", raises)
    failed = hub_sweep.sweep_one("lenet5", inputs={"lenet5": [(1, 32, 32)]})
    assert failed["status"] == "failed"
    assert failed["why"] == "ArchprofError: a stand-in for a bug (the reference ran)"


def test_the_sweep_at_an_input_and_batch_says_them_and_refuses_bad_ones(tmp_path):
    report = tmp_path / "odd.md"
    finished(sweep(report, "--input", "3x61x47", "--batch", "2", "--jobs", "1"))
    text = report.read_text()
    assert "--input 3x61x47 --batch 2 --jobs 1`" in text and ", every input 3x61x47, batch 2" in text
    assert "| exact | wrong | failed | refused by the model | no reference | does not build on meta |" in text
    table = {row["model"]: row for row in rows(report.with_suffix(".csv"))}
    assert table["resnet18"]["output_shape"] == "2x1000"
    for option, value in (("--input", "3x0x4"), ("--batch", "0")):
        process = sweep(tmp_path / "never.md", option, value)
        _, err = process.communicate(timeout=300)
        assert process.returncode == 2
        assert f"error: argument {option}:" in err.strip().splitlines()[-1]
    assert not (tmp_path / "never.md").exists()


def test_the_scripts_that_import_an_earlier_commit_import_no_archprof_before_it():
    """same_reports.py and bench_revisions.py import an earlier commit's archprof in their
    workers (`worktree.import_archprof_from`), after their siblings: a sibling that imported
    this checkout's first made every such worker exit (hub_sweep's argument types did)."""
    check = (
        "import sys; sys.path.insert(0, 'benchmarks'); import same_reports, bench_revisions;"
        " print(sorted(m for m in sys.modules if m.split('.')[0] == 'archprof'))"
    )
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
