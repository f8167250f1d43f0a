"""A training comparison names the optimizer whose state its step peaks hold, in every
output: the frame (and so CSV and JSON), the table's title, Markdown and HTML. Two pasted
comparisons with different optimizers looked the same; an inference comparison names none."""

import csv
import io
import json

import pytest
from typer.testing import CliRunner

import archprof
from archprof.cli import app

MODELS = ["lenet5", "resnet18"]
runner = CliRunner()


def outputs(*options: str) -> dict[str, str]:
    """`archprof compare MODELS` with `options`, as each format writes it (the table at 200 columns)."""
    written = {"table": _stdout(*options)}
    for name in ("csv", "json", "markdown", "html"):
        written[name] = _stdout(*options, "-f", name)
    return written


def _stdout(*args: str) -> str:
    result = runner.invoke(app, ["compare", *MODELS, "-j", "1", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module", params=["Adam", "momentum"])
def given(request):
    """An optimizer as given (`--optimizer`), the name each model's own analysis gives it, its step peaks."""
    totals = [archprof.analyze(name, training=True, optimizer=request.param).totals for name in MODELS]
    (named,) = {t.optimizer for t in totals}
    return request.param, named, [t.training_peak_bytes for t in totals]


@pytest.fixture(scope="module")
def written(given):
    return outputs("--train", "--optimizer", given[0])


def test_the_frame_holds_the_optimizer_beside_the_step_peak(given):
    option, named, peaks = given
    assert named == option.lower()
    frame = archprof.compare(MODELS, training=True, optimizer=option)
    columns = list(frame.columns)
    assert columns[columns.index("training_peak_bytes") + 1] == "optimizer"
    assert frame["optimizer"].dtype == "string"
    assert list(frame["optimizer"]) == [named, named]
    assert list(frame["training_peak_bytes"]) == peaks
    # Sorting keeps it with its row.
    assert list(archprof.compare(MODELS, training=True, optimizer=option, sort="model")["optimizer"]) == [named] * 2


def test_csv_and_json_name_each_rows_optimizer(given, written):
    _, named, peaks = given
    rows = list(csv.DictReader(io.StringIO(written["csv"])))
    assert [(row["optimizer"], int(row["training_peak_bytes"])) for row in rows] == [(named, p) for p in peaks]
    models = json.loads(written["json"])["models"]
    assert [(m["optimizer"], m["training_peak_bytes"]) for m in models] == [(named, p) for p in peaks]


def test_the_table_markdown_and_html_name_the_optimizer(given, written):
    named = given[1]
    title = next(line for line in written["table"].splitlines() if line.startswith("Comparison"))
    assert f"training step, {named}" in title
    assert f"one training step with optimizer `{named}`." in written["markdown"]
    assert f"one training step with optimizer {named}." in written["html"]


def test_comparisons_with_different_optimizers_differ_in_every_output():
    """Pasted side by side, each says which optimizer its step peaks hold."""
    adam, sgd = outputs("--train", "--optimizer", "adam"), outputs("--train")
    for name in adam:
        assert "adam" in adam[name] and "adam" not in sgd[name], name
        assert "sgd" in sgd[name] and "sgd" not in adam[name], name


def test_an_inference_comparison_names_no_optimizer():
    frame = archprof.compare(MODELS)
    assert "optimizer" not in frame.columns
    written = outputs()
    assert "optimizer" not in next(csv.reader(io.StringIO(written["csv"])))
    assert all("optimizer" not in model for model in json.loads(written["json"])["models"])
    for name in ("table", "markdown", "html"):
        assert "optimizer" not in written[name].lower() and "training step" not in written[name].lower(), name
