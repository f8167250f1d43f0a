"""Every command that analyses a model takes the same options (`archprof.load.ModelOptions`):
several --input, --batch, --dtype, --arg, --weights and --trust-pickle, and every model form."""

import json

import torch
from typer.testing import CliRunner

import archprof
from archprof.cli import app
from archprof.load import ModelOptions, parse_input_spec
from tests.fixtures.tiny_models import small_cnn

runner = CliRunner()
SMALL_CNN = "tests/fixtures/tiny_models.py:small_cnn"
TWO_INPUTS = "tests/fixtures/tiny_models.py:TwoInputs"
# small_cnn(num_classes=100): conv 3->8 3x3 (8*27 + 8), BatchNorm(8) (2*8), linear 8->100 (8*100 + 100)
SMALL_CNN_100_PARAMS = 8 * 27 + 8 + 2 * 8 + 8 * 100 + 100


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_compare_takes_factory_arguments_and_several_inputs():
    (row,) = json.loads(invoke("compare", SMALL_CNN, "-i", "3x16x16", "--arg", "num_classes=100", "-f", "json"))[
        "models"
    ]
    assert row["param_count"] == SMALL_CNN_100_PARAMS
    (row,) = json.loads(invoke("compare", TWO_INPUTS, "-i", "3x32x32", "-i", "10", "--batch", "4", "-f", "json"))[
        "models"
    ]
    assert row["input_shape"] == "4x3x32x32, 4x10"


def test_check_and_diff_take_the_same_options(tmp_path):
    out = invoke("check", TWO_INPUTS, "--input", "3x32x32", "--input", "10", "--max-params", "1M")
    assert "pass" in out
    weights = tmp_path / "small_cnn.pt"
    torch.save(small_cnn(num_classes=100).state_dict(), weights)
    common = ("--input", "3x16x16", "--arg", "num_classes=100", "--weights", weights)
    document = json.loads(invoke("diff", SMALL_CNN, SMALL_CNN, *common, "-f", "json"))
    assert document["layers"] == []
    params = next(t for t in document["totals"] if t["metric"] == "param_count")
    assert params["old"] == params["new"] == SMALL_CNN_100_PARAMS


def test_memory_and_rf_keep_the_models_own_dtype_unless_told():
    def dtype(*command):
        return json.loads(invoke(*command, "-f", "json"))["totals"]["dtype"]

    assert dtype("memory", "lenet5") == "float32"
    assert dtype("memory", "lenet5", "--dtype", "bfloat16") == "bfloat16"
    assert dtype("rf", "lenet5", "--dtype", "float16") == "float16"


def test_compare_profile_times_a_model_from_a_file():
    (row,) = json.loads(invoke("compare", SMALL_CNN, "--input", "3x16x16", "--profile", "-f", "json"))["models"]
    assert row["latency_ms"] > 0


def test_options_pass_as_keywords_to_every_api_function():
    options = ModelOptions(inputs=(parse_input_spec("3x16x16"),), batch=2, args={"num_classes": 100})
    report = archprof.analyze(SMALL_CNN, **options.keywords())
    assert report.input_shapes == ((2, 3, 16, 16),) and report.totals.param_count == SMALL_CNN_100_PARAMS
    frame = archprof.compare([SMALL_CNN], **options.keywords())
    assert int(frame["param_count"].iloc[0]) == SMALL_CNN_100_PARAMS
