"""archprof.compare(): one typed DataFrame row per model, ratios against the first; the
`compare` command; the example script."""

import csv
import io
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import archprof
from archprof.cli import app
from archprof.comparison import sort_comparison
from archprof.errors import ArchprofError
from archprof.metrics import MetricUnavailable, final_receptive_field
from tests.field_oracle import positive, unit_gradient_box
from tests.models import FlattenedClassifier, PooledBlock, UnshuffledChannelPicked

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
MODELS = ["vgg16", "resnet50", "mobilenet_v2", "densenet121"]


@pytest.fixture(scope="module")
def frame():
    return archprof.compare(MODELS)


@pytest.fixture(scope="module")
def reports():
    return {name: archprof.analyze(name) for name in MODELS}


def invoke(*args):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def test_one_typed_row_per_model(frame, reports):
    assert list(frame["model"]) == MODELS
    for column in ("param_count", "param_bytes", "macs", "flops", "elementwise_flops", "activation_bytes"):
        assert frame[column].dtype == "int64", column
        assert list(frame[column]) == [getattr(reports[m].totals, column) for m in MODELS]
    assert frame["model"].dtype == "string" and frame["input_shape"].dtype == "string"
    assert list(frame["input_shape"]) == ["1x3x224x224"] * 4
    assert frame["param_ratio"].dtype == "float64" and frame["macs_ratio"].dtype == "float64"
    assert frame.loc[frame["model"] == "vgg16", "param_count"].item() == 138_357_544


def test_a_baseline_with_nothing_to_divide_by_leaves_its_ratios_empty_and_says_why(tmp_path):
    """A baseline of activations alone: no parameters, no MACs (its own row says 0), so
    every ratio is NaN, and the table, Markdown and HTML say why under the table; a
    baseline with parameters but no MACs (a batch norm) keeps x Params."""
    from archprof.comparison import comparison_markdown, ratio_notes
    from archprof.render.compare_html import comparison_html

    relu = torch.nn.Sequential(torch.nn.ReLU())
    assert sum(p.numel() for p in relu.parameters()) == 0
    frame = archprof.compare({"relu": relu, "lenet5": "lenet5"}, input_size=(1, 32, 32))
    assert frame["param_count"].iloc[0] == 0 and frame["macs"].iloc[0] == 0
    assert frame["param_ratio"].isna().all() and frame["macs_ratio"].isna().all()
    notes = ["x Params: none, as the baseline has 0 parameters", "x MACs: none, as the baseline has 0 MACs"]
    assert ratio_notes(frame) == notes
    assert all(f"- {note}" in comparison_markdown(frame) for note in notes)
    assert all(note in comparison_html(frame) for note in notes)
    (tmp_path / "relu.py").write_text("import torch\n\ndef relu():\n    return torch.nn.Sequential(torch.nn.ReLU())\n")
    done = invoke("compare", f"{tmp_path}/relu.py:relu", "lenet5", "--input", "1x32x32", "--jobs", "1")
    assert done.exit_code == 0 and all(note in done.output for note in notes), done.output
    done = invoke("compare", "lenet5", "edge_conv", "--jobs", "1")
    assert done.exit_code == 0 and "none, as the baseline" not in done.output  # a baseline with figures: no note

    norm = torch.nn.Sequential(torch.nn.BatchNorm2d(1).eval())
    frame = archprof.compare({"norm": norm, "lenet5": "lenet5"}, input_size=(1, 32, 32))
    assert frame["param_ratio"].iloc[1] == pytest.approx(61_706 / 2)  # LeNet-5's and 2 (weight, bias)
    assert ratio_notes(frame) == ["x MACs: none, as the baseline has 0 MACs"]


def test_ratios_are_against_the_first_model(frame, reports):
    vgg = reports["vgg16"].totals
    for name in MODELS:
        row = frame.set_index("model").loc[name]
        assert row["param_ratio"] == pytest.approx(reports[name].totals.param_count / vgg.param_count, rel=1e-12)
        assert row["macs_ratio"] == pytest.approx(reports[name].totals.macs / vgg.macs, rel=1e-12)
    assert frame["param_ratio"].iloc[0] == 1.0
    assert frame.attrs["baseline"] == "vgg16"


def test_memory_and_receptive_field_columns_when_their_passes_exist(frame, reports):
    if hasattr(reports["vgg16"].totals, "peak_memory_bytes"):
        assert frame["peak_memory_bytes"].dtype == "int64"
        assert list(frame["peak_memory_bytes"]) == [reports[m].totals.peak_memory_bytes for m in MODELS]
    if "receptive_field" in reports["vgg16"].columns:
        assert frame["receptive_field"].dtype == "Int64"
        # VGG-16's last conv block: 212 pixels (the classic figure), read from its last spatial row.
        assert frame["receptive_field"].iloc[0] == 212
        assert final_receptive_field(reports["resnet50"]) == 427


def test_the_dataframe_is_ready_for_pandas(frame):
    indexed = frame.set_index("model")
    assert indexed["macs"].idxmin() == "mobilenet_v2"
    merged = frame.merge(pd.DataFrame({"model": ["resnet50"], "top1": [76.1]}), on="model")
    assert merged["param_count"].item() == 25_557_032
    assert frame.groupby("input_shape")["param_count"].sum().item() == frame["param_count"].sum()


def test_sorting_keeps_the_baseline(frame):
    ordered = sort_comparison(frame, "macs")
    assert list(ordered["model"]) == ["mobilenet_v2", "densenet121", "resnet50", "vgg16"]
    assert ordered.attrs["baseline"] == "vgg16"
    assert ordered.set_index("model").loc["vgg16", "macs_ratio"] == 1.0
    with pytest.raises(ArchprofError, match="cannot sort by 'speed'"):
        sort_comparison(frame, "speed")


def test_compare_sorts_as_asked_with_the_ratios_still_against_the_first_model():
    """`sort=` orders the rows as `--sort` does: ascending, the first model given still the
    ratios' baseline. The oracle: the unsorted frame, sorted by pandas."""
    models = ["vgg11", "lenet5", "resnet18"]
    unsorted = archprof.compare(models)
    ordered = archprof.compare(models, sort="params")
    expected = list(unsorted.sort_values("param_count")["model"])
    assert list(ordered["model"]) == expected == ["lenet5", "resnet18", "vgg11"]
    assert ordered.attrs["baseline"] == "vgg11"
    assert ordered.set_index("model").loc["vgg11", "param_ratio"] == 1.0
    pd.testing.assert_frame_equal(ordered.set_index("model").loc[models], unsorted.set_index("model"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sort": "speed"}, "cannot sort by 'speed': choose one of"),
        ({"sort": "latency"}, "nothing was timed: add --profile (Python: profile=True)"),
        ({"sort": "training-flops"}, "a training step's figure: add --train (Python: training=True)"),
        ({"sort": 3}, "sort must be a name such as 'macs', got 3"),
    ],
)
def test_a_sort_the_comparison_cannot_have_is_refused_before_any_model_is_analysed(options, message):
    """Refused up front (the model that cannot load is never reached), in Python and in the
    CLI, where it came after every model had been analysed."""
    with pytest.raises(ArchprofError, match=re.escape(message)):
        archprof.compare(["lenet5", "no_such_model"], **options)
    if isinstance(options["sort"], str):
        result = invoke("compare", "lenet5", "no_such_model", "--sort", options["sort"])
        assert result.exit_code == 2 and message in result.stderr and "no_such_model" not in result.stderr


def test_models_of_your_own_and_factory_specs(monkeypatch):
    import torch

    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
    frame = archprof.compare([model, "my_models:small_cnn"], input_size=(3, 64, 64), batch=2)
    assert list(frame["param_count"]) == [224, 24_458]
    assert frame["model"].iloc[1] == "my_models:small_cnn"
    assert frame["input_shape"].iloc[0] == "2x3x64x64"
    with pytest.raises(ArchprofError, match="at least one model"):
        archprof.compare([])


@pytest.mark.parametrize(
    ("models", "given"),
    [("lenet5", "str"), (Path("net.pt"), type(Path()).__name__), (7, "int"), ("sequential", "Sequential")],
    ids=["a spec", "a path", "a number", "a Sequential"],
)
def test_one_model_where_a_list_belongs_is_refused_not_taken_apart(models, given):
    """A string or a Sequential is iterable: taken as the list, it would be one model per
    character ("unknown model 'l'") or per layer."""
    import torch

    if models == "sequential":
        models = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
    with pytest.raises(ArchprofError, match=rf"^compare takes a list of models, got one {given}: e\.g\. compare\(\["):
        archprof.compare(models)


def test_any_iterable_of_models_is_a_list_of_them():
    listed = archprof.compare(["lenet5", "edge_fc"])
    generated = archprof.compare(name for name in ("lenet5", "edge_fc"))
    assert generated.equals(listed)


def test_profile_adds_a_measured_cpu_latency():
    frame = archprof.compare(["lenet5", "edge_conv"], profile=True, runs=2)
    assert frame["latency_ms"].dtype == "float64"
    assert (frame["latency_ms"] > 0).all()


def test_profile_refuses_a_model_that_cannot_fit_before_timing_any(monkeypatch):
    """The memory free lies between lenet5's predicted peak and resnet18's: resnet18 is
    refused, and lenet5, listed first, was not timed (nothing reached the clock)."""
    import archprof.comparison as comparison
    from archprof.measure.device import REAL_RUN_MARGIN

    small, large = (archprof.analyze(name).totals.peak_memory_bytes for name in ("lenet5", "resnet18"))
    assert small < large
    monkeypatch.setattr(
        "archprof.measure.device.cpu_available_memory", lambda: int(REAL_RUN_MARGIN * (small + large) / 2)
    )
    timed = []
    monkeypatch.setattr(comparison, "latency_ms", lambda *args: timed.append(args) or [1.0])
    with pytest.raises(ArchprofError, match=r"^a real run of resnet18 at batch 1 is predicted to need .* available"):
        archprof.compare(["lenet5", "resnet18"], profile=True, runs=1)
    assert timed == []


def test_archprof_compare_is_the_function():
    from archprof import compare

    assert archprof.compare(["lenet5"])["param_count"].item() == 61_706
    assert compare(["lenet5"])["macs"].item() == 416_520


def test_a_model_without_a_spatial_field():
    report = archprof.analyze(FlattenedClassifier(), input_size=(1, 32, 32))
    with pytest.raises(MetricUnavailable, match="no layer with a spatial receptive field"):
        final_receptive_field(report)
    frame = archprof.compare([FlattenedClassifier(), "lenet5"], input_size=(1, 32, 32))
    assert pd.isna(frame["receptive_field"].iloc[0])


# A field that is an upper bound (one channel of a pixel unshuffle, given the union of its
# block's four) and an exact one, as `archprof compare` names them.
BOUND, EXACT = "tests/models.py:UnshuffledChannelPicked", "tests/models.py:PooledBlock"


def test_the_gradient_says_which_field_is_a_bound():
    """The oracle for the tests below: unit (1, 1) of UnshuffledChannelPicked reads pixel
    (2, 2) alone, 1 px where archprof gives the 2 px of its block; PooledBlock's unit (1, 1)
    reads pixels 1..4, the 4 px archprof gives."""
    assert unit_gradient_box(positive(UnshuffledChannelPicked()), (1, 8, 8), (1, 1)) == [(2, 2), (2, 2)]
    assert unit_gradient_box(positive(PooledBlock()), (1, 8, 8), (1, 1)) == [(1, 4), (1, 4)]


def test_a_receptive_field_that_is_an_upper_bound_says_so_in_the_dataframe():
    """`receptive_field_note` holds the bound's note, as the report's column does, and is empty
    for an exact field (the field was given as if exact)."""
    frame = archprof.compare([UnshuffledChannelPicked(), PooledBlock()], input_size=(1, 8, 8))
    assert list(frame["receptive_field"]) == [2, 4] and frame["receptive_field_note"].dtype == "string"
    note, exact = frame["receptive_field_note"]
    assert note.startswith("an upper bound: aten.slice in (model) picks indices") and exact == ""
    no_field = archprof.compare([FlattenedClassifier()], input_size=(1, 32, 32))
    assert pd.isna(no_field["receptive_field_note"].item())  # no field: no note either


def test_compare_marks_a_bound_in_every_format():
    """The table and Markdown show '≤2x2' and say why under it; CSV and JSON carry the note;
    the exact field's cell has no mark, its model no note."""
    table = invoke("compare", BOUND, EXACT, "--input", "1x8x8")
    assert table.exit_code == 0, table.output
    rows = {line.split()[0]: line.rstrip() for line in table.output.splitlines() if line.strip().startswith("tests/")}
    assert rows[BOUND].endswith(" ≤2x2") and rows[EXACT].endswith(" 4x4") and table.output.count("≤") == 1
    text = " ".join(table.output.split())
    assert f"{BOUND}: receptive field is an upper bound: aten.slice in (model)" in text
    assert f"{EXACT}: receptive field" not in text
    markdown = invoke("compare", BOUND, EXACT, "--input", "1x8x8", "-f", "markdown").stdout
    assert "| ≤2x2 |" in markdown and "| 4x4 |" in markdown
    assert f"- `{BOUND}`: receptive field is an upper bound: aten.slice in (model)" in markdown
    assert markdown.count("upper bound") == 1
    rows = list(csv.DictReader(io.StringIO(invoke("compare", BOUND, EXACT, "--input", "1x8x8", "-f", "csv").stdout)))
    assert [(r["receptive_field"], r["receptive_field_note"][:16]) for r in rows] == [
        ("2", "an upper bound: "),
        ("4", ""),
    ]
    document = json.loads(invoke("compare", BOUND, EXACT, "--input", "1x8x8", "-f", "json").stdout)
    notes = [m["receptive_field_note"] for m in document["models"]]
    assert notes[0].startswith("an upper bound: aten.slice") and notes[1] == ""


# -- the command ---------------------------------------------------------------------------


def test_compare_command_table():
    result = invoke("compare", *MODELS, "--sort", "macs")
    assert result.exit_code == 0, result.output
    for text in ("ratios against vgg16", "138.36 M", "25.56 M", "0.18x", "1.00x", "15.47 G"):
        assert text in result.output
    lines = [line for line in result.output.splitlines() if line.strip().split(" ")[0] in MODELS]
    assert [line.split()[0] for line in lines] == ["mobilenet_v2", "densenet121", "resnet50", "vgg16"]


def test_the_table_shows_control_characters_in_a_model_name_as_escapes(tmp_path):
    """As summary, check and diff do: the table and its title wrote the ESC and newline of a
    file's name to the terminal."""
    path = tmp_path / "a\x1b[31m\nb.py"
    path.write_text("from torch import nn\n\ndef net():\n    return nn.Sequential(nn.Conv2d(1, 4, 3))\n")
    result = invoke("compare", f"{path}:net", "lenet5", "--input", "1x32x32")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "a\\x1b[31m\\nb.py:net" in result.output
    assert result.output.count("\\x1b") == 2  # the title's baseline and the row


def test_a_narrow_terminal_leaves_columns_out_but_never_cuts_numbers():
    result = runner.invoke(app, ["compare", *MODELS], env={"COLUMNS": "60"})
    assert result.exit_code == 0
    assert "…" not in result.output and "138.36 M" in result.output


def test_compare_command_csv_json_markdown(tmp_path, reports):
    rows = list(csv.DictReader(io.StringIO(invoke("compare", "vgg16", "resnet50", "-f", "csv").stdout)))
    assert [r["model"] for r in rows] == ["vgg16", "resnet50"]
    assert int(rows[1]["macs"]) == reports["resnet50"].totals.macs
    assert float(rows[1]["param_ratio"]) == pytest.approx(25_557_032 / 138_357_544)
    document = json.loads(invoke("compare", "vgg16", "resnet50", "--sort", "params", "-f", "json").stdout)
    assert document["baseline"] == "vgg16"
    assert [m["model"] for m in document["models"]] == ["resnet50", "vgg16"]
    assert document["models"][0]["param_count"] == 25_557_032
    target = tmp_path / "comparison.md"
    result = invoke("compare", "vgg16", "resnet50", "--output", str(target))
    assert result.exit_code == 0
    text = target.read_text()
    assert "| Model |" in text and "| resnet50 |" in text and "Ratios are against `vgg16`" in text


def test_compare_command_input_and_batch():
    rows = list(
        csv.DictReader(io.StringIO(invoke("compare", "resnet18", "-i", "3x112x112", "-b", "4", "-f", "csv").stdout))
    )
    assert rows[0]["input_shape"] == "4x3x112x112"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("compare", "vgg16", "resnet5"), "unknown model 'resnet5'"),
        (("compare", "vgg16", "--sort", "speed"), "cannot sort by 'speed'"),
        (("compare", "vgg16", "--sort", "latency"), "nothing was timed: add --profile"),
        (("compare", "vgg16", "--sort", "training-memory"), "a training step's figure: add --train"),
        (("compare", "vgg16", "--input", "3x224"), "dimensions"),
        (("compare", "vgg16", "--output", "out.xyz"), "suffix"),
    ],
)
def test_compare_bad_input_exits_2(args, message):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_the_example_script_runs(tmp_path):
    chart = tmp_path / "chart.png"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "compare_architectures.py"), str(chart)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "mobilenet_v2" in completed.stdout and "vgg16" in completed.stdout
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "chart skipped" in completed.stdout
    else:
        assert chart.stat().st_size > 0


def test_the_sort_help_lists_every_key_compare_takes_and_each_works():
    """The help left out training-memory, which sorts; the keys come from the refusal of a bad one."""
    help_text = " ".join(runner.invoke(app, ["compare", "-h"], env={"COLUMNS": "400"}).stdout.replace("│", " ").split())
    listed = re.search(r"Sort ascending by (.*?) \(", help_text).group(1).split(", ")
    refusal = invoke("compare", "lenet5", "alexnet", "-j", "1", "--sort", "bogus").stderr
    accepted = re.search(r"choose one of (.*)", refusal).group(1).strip().split(", ")
    assert sorted(listed) == sorted(accepted)
    for key in sorted(set(listed) - {"latency"}):  # latency needs --profile, which times the models: slow
        result = invoke("compare", "lenet5", "edge_fc", "-j", "1", "--train", "--sort", key, "-f", "csv")
        assert result.exit_code == 0, (key, result.output)


def test_the_readme_shows_the_compare_markdown_as_the_tool_writes_it():
    """The README showed `mobilenet_v2` where the tool writes `mobilenet\\_v2`."""
    readme = (Path(archprof.__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    command = "archprof compare vgg16 resnet50 mobilenet_v2 densenet121 --sort macs --format markdown"
    assert command in readme
    written = invoke(*command.split()[1:], "-j", "1").stdout
    assert written.strip() in readme


@pytest.mark.parametrize(
    ("extra", "kept"),
    [
        (["--sort", "receptive-field"], ["Receptive field"]),
        (["--sort", "flops"], ["FLOPs"]),
        (["--train", "--sort", "training-flops"], ["Training FLOPs", "Training step peak"]),
    ],
)
def test_a_narrow_comparison_keeps_the_column_it_is_sorted_by_and_what_was_asked_for(extra, kept):
    """On 80 columns the rows sorted by training FLOPs (or the receptive field) showed
    neither that column nor any training figure: --train's columns came last."""
    result = runner.invoke(app, ["compare", "lenet5", "alexnet", *extra], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if line.lstrip().startswith("Model"))
    assert all(heading in header for heading in kept), result.stdout
    assert all(len(line) <= 80 for line in result.stdout.splitlines())


def test_a_narrow_comparison_of_models_at_different_inputs_keeps_the_input():
    """resnet18 at 3x224x224 beside lenet5 at 1x32x32: the Input column was the first left out,
    so that 1.81 G against 416.52 K MACs read as the same image's."""
    result = runner.invoke(app, ["compare", "resnet18", "lenet5", "-j", "1"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    rows = {
        line.split()[0]: line.split()[1]
        for line in result.stdout.splitlines()
        if line.split()[:1] in (["resnet18"], ["lenet5"])
    }
    assert rows == {"resnet18": "1x3x224x224", "lenet5": "1x1x32x32"}, result.stdout


def test_a_large_ratio_is_grouped_as_counts_are(tmp_path):
    """A ratio of thousands read '20000.00x', its digits ungrouped beside '20.00 K'. Worked by
    hand: Linear(1, 1) without bias holds 1 parameter and makes 1 MAC; Linear(1, 10000) holds
    1 x 10,000 + 10,000 = 20,000 and makes 10,000: ratios 20,000.00x and 10,000.00x."""
    path = tmp_path / "nets.py"
    path.write_text(
        "from torch import nn\n\ndef small():\n    return nn.Linear(1, 1, bias=False)\n\n"
        "def large():\n    return nn.Linear(1, 10000)\n"
    )
    table = invoke("compare", f"{path}:small", f"{path}:large", "--input", "1")
    assert table.exit_code == 0, table.output
    large = next(line.split() for line in table.output.splitlines() if line.split()[:1] == [f"{path}:large"])
    assert large[1:6] == ["20.00", "K", "20,000.00x", "10.00", "K"] and large[6] == "10,000.00x"
    markdown = invoke("compare", f"{path}:small", f"{path}:large", "--input", "1", "-f", "markdown").stdout
    assert "| 20.00 K | 20,000.00x | 10.00 K | 10,000.00x |" in markdown


def test_a_final_field_reads_as_summary_and_rf_write_it_in_every_command(tmp_path):
    """compare, check and diff wrote a final field as its smallest side, '5 px', where summary
    and rf write '5x9': a field that is not square read as a square one. By hand (r' = r +
    (K - 1) j, j' = j S), a (3, 5) conv then a (3, 5) conv of stride 2: height 3 + 2 = 5,
    width 5 + 4 = 9, stride 2 both ways; a lone 3x3 conv: 3x3, stride 1."""
    path = tmp_path / "nets.py"
    path.write_text(
        "from torch import nn\n\ndef wide():\n"
        "    return nn.Sequential(nn.Conv2d(1, 2, (3, 5)), nn.Conv2d(2, 2, (3, 5), stride=2))\n\n"
        "def square():\n    return nn.Conv2d(1, 2, 3)\n"
    )
    wide, square, size = f"{path}:wide", f"{path}:square", ("--input", "1x32x32")
    assert invoke("rf", wide, *size).stdout.splitlines()[-3].split()[3:5] == ["5x9", "2x2"]
    assert invoke("summary", wide, *size).stdout.count(" 5x9\n") == 1  # its last layer's field
    compared = invoke("compare", square, wide, *size).stdout.splitlines()
    fields = {line.split()[0]: line.split()[-1] for line in compared if line.strip().startswith(str(path))}
    assert fields == {square: "3x3", wide: "5x9"}
    document = json.loads(invoke("compare", wide, *size, "-f", "json").stdout)["models"][0]
    assert (document["receptive_field"], document["receptive_field_dims"]) == (5, [5, 9])  # its smallest side
    (row,) = csv.DictReader(io.StringIO(invoke("compare", wide, *size, "-f", "csv").stdout))
    assert row["receptive_field_dims"] == "5x9"
    checked = invoke("check", wide, *size, "--min-receptive-field", "6").stdout
    assert re.search(r"min-receptive-field 6 +5x9 +-1 px \(-16\.7%\) +FAIL", checked), checked
    lines = invoke("diff", square, wide, *size).stdout.splitlines()
    totals = {line.split()[1]: line.split()[2:] for line in lines if line.lstrip().startswith("Final ")}
    assert totals["receptive"][1:4] == ["3x3", "5x9", "+2"]  # the change and % of the smallest side, 3 -> 5
    assert totals["stride"] == ["1x1", "2x2", "+1", "px", "+100.0%"]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_model_that_fails_among_several_is_named_in_the_error(jobs):
    """lenet5 takes one channel: on 3x32x32 its first convolution refuses the input. Both
    models have a module 'features.0', so the error says which model it was."""
    result = CliRunner().invoke(app, ["compare", "vgg11", "lenet5", "--input", "3x32x32", "--jobs", jobs])
    assert result.exit_code == 2, result.output
    assert result.output.strip().startswith("error: lenet5: the forward pass failed in module 'features.0' (Conv2d)")


def test_the_apis_compare_names_the_failing_model_and_keeps_the_errors_class():
    from archprof.tracing.trace import NeedsTwoSamples

    one_value_per_channel = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    with pytest.raises(NeedsTwoSamples, match=r"^my_net: the forward pass failed in module '1' \(BatchNorm2d\)"):
        archprof.compare(
            {"fine": torch.nn.Conv2d(3, 4, 1), "my_net": one_value_per_channel}, input_size=(3, 1, 1), training=True
        )


def test_compare_holds_each_training_step_with_the_optimizer_given():
    """`optimizer` (`--optimizer`) with a training step: each model's step peak holds that
    optimizer's state, as its own analysis does (Adam's two copies per parameter: above plain
    SGD's, which keeps none); without a training step it is refused, as by analyze."""
    models = ["lenet5", "alexnet"]
    adam = archprof.compare(models, training=True, optimizer="adam")
    sgd = archprof.compare(models, training=True)
    for name, peak in zip(adam["model"], adam["training_peak_bytes"], strict=True):
        assert peak == archprof.analyze(name, training=True, optimizer="adam").totals.training_peak_bytes
    assert (adam["training_peak_bytes"] > sgd["training_peak_bytes"]).all()
    with pytest.raises(ArchprofError, match="optimizer 'adam' applies to a training step: add --train"):
        archprof.compare(models, optimizer="adam")
    result = CliRunner().invoke(app, ["compare", *models, "--train", "--optimizer", "adam", "-f", "csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [int(row["training_peak_bytes"]) for row in rows] == list(adam["training_peak_bytes"])
    refused = CliRunner().invoke(app, ["compare", *models, "--optimizer", "adam"])
    assert refused.exit_code == 2 and "add --train" in refused.output


def test_an_undefined_final_field_is_said_so_not_taken_for_no_spatial_layer(tmp_path):
    """A convolution then grid_sample, which archprof has no receptive-field rule for: compare
    gave <NA> and no note, as for an MLP, where summary says why. Its note now says it is
    undefined and why, the table shows 'undefined' and the reason under it; an MLP stays <NA>
    with no note."""
    path = tmp_path / "nets.py"
    path.write_text(
        "import torch\nfrom torch import nn\nimport torch.nn.functional as F\n\n"
        "class Grid(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 4, 3)\n\n    def forward(self, x):\n"
        "        grid = torch.zeros(x.shape[0], 5, 5, 2, device=x.device, dtype=x.dtype)\n"
        "        return F.grid_sample(self.conv(x), grid, align_corners=False)\n\n"
        "def mlp():\n    return nn.Sequential(nn.Flatten(), nn.Linear(300, 4))\n"
    )
    frame = archprof.compare([f"{path}:Grid", f"{path}:mlp"], input_size=(3, 10, 10))
    summary = archprof.analyze(f"{path}:Grid", input_size=(3, 10, 10))
    fields = zip(summary.columns["receptive_field"], summary.columns["receptive_field_note"], strict=True)
    reason = next(note for field, note in fields if field == "undefined")
    assert "grid_sampler_2d" in reason
    grid, mlp = frame.to_dict("records")
    assert pd.isna(grid["receptive_field"]) and grid["receptive_field_note"] == f"undefined: {reason}"
    assert pd.isna(mlp["receptive_field"]) and pd.isna(mlp["receptive_field_note"])
    result = runner.invoke(
        app, ["compare", f"{path}:Grid", f"{path}:mlp", "--input", "3x10x10"], env={"COLUMNS": "200"}
    )
    row = next(line for line in result.stdout.splitlines() if "nets.py:Grid" in line and "1.00x" in line)
    assert row.rstrip().endswith("undefined")
    assert f"receptive field is undefined: {reason}" in result.stdout


@pytest.mark.parametrize(("keyword", "value"), [("training", "no"), ("fold_bn", 1)])
def test_a_bad_flag_is_an_error_of_the_call_not_of_the_first_model(keyword, value):
    """'lenet5: training must be True or False': the error named the first model, as if it
    alone were at fault."""
    with pytest.raises(ArchprofError, match=rf"^{keyword} must be True or False, got {value!r}"):
        archprof.compare(["lenet5", "resnet18"], **{keyword: value})


@pytest.mark.parametrize("output", [[], ["-f", "markdown"]])
def test_rows_sorted_by_model_keep_the_models_name_with_the_columns_asked_for(output):
    """`--sort model --columns Params` moved the name out of its first place, and the column
    kept as the label was then Params: two rows of figures, no model named."""
    result = runner.invoke(
        app, ["compare", "resnet18", "lenet5", "-j", "1", "--sort", "model", "--columns", "Params", *output]
    )
    assert result.exit_code == 0, result.output
    rows = [
        line.strip(" |").split() for line in result.stdout.splitlines() if line.strip(" |").startswith(("le", "re"))
    ]
    assert [row[0] for row in rows] == ["lenet5", "resnet18"], result.stdout
    assert [row[-2:] for row in rows] == [["61.71", "K"], ["11.69", "M"]]  # each beside its figure


def test_a_training_comparison_names_its_forward_peak_as_the_summary_does():
    """With --train the peak column holds the forward's peak with what autograd saved held
    (a training report's `peak_memory_bytes`, as the summary labels it): it was headed "Peak
    memory", as an inference comparison's inference peak is."""
    from archprof.text import peak_rows
    from archprof.units import human_bytes

    trained = archprof.analyze("lenet5", training=True).totals
    (forward_label, forward_peak), _ = peak_rows(trained)
    assert forward_label.startswith("Forward peak, saved activations held")
    table = runner.invoke(app, ["compare", "lenet5", "--train", "--wide"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    header = next(line for line in table.stdout.splitlines() if line.lstrip().startswith("Model"))
    row = next(line for line in table.stdout.splitlines() if line.lstrip().startswith("lenet5"))
    headings = re.split(r"\s{2,}", header.strip())
    assert "Peak memory" not in headings and "Forward peak" in headings
    assert human_bytes(forward_peak) in row
    markdown = runner.invoke(app, ["compare", "lenet5", "--train", "-f", "markdown"])
    assert "| Forward peak |" in markdown.stdout and "Peak memory" not in markdown.stdout
    inference = runner.invoke(app, ["compare", "lenet5", "-f", "markdown"])
    assert "| Peak memory |" in inference.stdout
    # --columns written for the usual heading (its help's example) finds the renamed column.
    chosen = runner.invoke(app, ["compare", "lenet5", "--train", "--columns", "Params,Peak memory"])
    assert chosen.exit_code == 0, chosen.output
    assert "Forward peak" in chosen.stdout and human_bytes(forward_peak) in chosen.stdout


def test_a_model_named_twice_is_said_and_keeps_its_rows():
    """compare resnet18 resnet18 printed two identical rows without a word; the same module
    object twice alike. Two modules of one class are two models: not said."""
    with pytest.warns(UserWarning, match=r"^lenet5: named more than once, each time analysed alike"):
        frame = archprof.compare(["lenet5", "edge_conv", "lenet5"])
    assert frame["model"].tolist() == ["lenet5", "edge_conv", "lenet5"]
    block = torch.nn.Conv2d(3, 4, 3)
    with pytest.warns(UserWarning, match="named more than once"):
        archprof.compare([block, block], input_size=(3, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        archprof.compare([torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(3, 8, 3)], input_size=(3, 8, 8))


def test_compare_profile_warns_where_the_machine_was_busy(monkeypatch):
    """Latencies measured while other processes held the CPUs swung from 27 to 895 ms between
    runs without a word, where `profile` says the machine was busy: so does compare."""
    import archprof.measure.clock
    from archprof.errors import ArchprofWarning

    monkeypatch.setattr(archprof.measure.clock.os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    with pytest.warns(ArchprofWarning, match=r"latency_ms: the machine was busy \(load average 64\.0 on \d+ CPUs\)"):
        frame = archprof.compare(["lenet5"], profile=True, runs=1)
    assert frame["latency_ms"].iloc[0] > 0


def test_compare_profile_warns_where_a_models_passes_vary_widely(monkeypatch):
    """Ten passes of 1 ms but two of 5 ms: the p90 (nearest rank, the 9th smallest) is 5 ms,
    5.0x the 1 ms median, past the 1.5x `profile` warns at: said per model."""
    import archprof.comparison
    from archprof.errors import ArchprofWarning

    monkeypatch.setattr(archprof.comparison, "latency_ms", lambda run, device, runs: [1.0] * 8 + [5.0, 5.0])
    monkeypatch.setattr(archprof.measure.clock.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    said = r"lenet5's latency_ms: the passes vary widely \(p90 is 5\.0x the median\)"
    with pytest.warns(ArchprofWarning, match=said):
        frame = archprof.compare(["lenet5"], profile=True, runs=1)
    assert frame["latency_ms"].tolist() == [1.0]
