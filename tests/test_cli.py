import csv
import io
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from archprof.cli import app
from tests.cli import cli, one_error_line

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, list(args))


def test_summary_vgg16_prints_the_table_and_totals():
    result = runner.invoke(app, ["summary", "vgg16"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    for text in ("features.0", "Conv2d", "138.36 M", "138,357,544", "15.47 G", "1x3x224x224", "float32"):
        assert text in result.output


def test_a_narrow_terminal_drops_columns_but_never_cuts_numbers():
    result = runner.invoke(app, ["summary", "vgg16"], env={"COLUMNS": "80"})
    first_conv = next(line for line in result.output.splitlines() if line.strip().startswith("features.0 "))
    assert "1x64x224x224" in first_conv and "1.79 K" in first_conv and "86.70 M" in first_conv
    assert "…" not in result.output


def test_csv_is_machine_readable_and_sums_to_the_totals():
    result = invoke("summary", "resnet18", "--format", "csv")
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert sum(int(r["param_count"]) for r in rows) == 11_689_512
    assert all(r["macs"].isdigit() and r["activation_bytes"].isdigit() for r in rows)
    document = json.loads(invoke("summary", "resnet18", "--format", "json").stdout)
    assert sum(int(r["macs"]) for r in rows) == document["totals"]["macs"]
    assert len(document["layers"]) == len(rows)


def test_output_format_follows_the_suffix(tmp_path):
    for suffix, check in ((".csv", "layer,module_type"), (".json", '"totals"'), (".md", "| Layer |")):
        target = tmp_path / f"report{suffix}"
        result = invoke("summary", "lenet5", "--output", str(target))
        assert result.exit_code == 0, result.output
        assert check in target.read_text()


def test_depth_rolls_rows_up():
    result = invoke("summary", "vgg16", "--depth", "1", "--format", "csv")
    layers = [row["layer"] for row in csv.DictReader(io.StringIO(result.stdout))]
    assert layers == ["features", "avgpool", "", "classifier"]


def test_memory_rolls_rows_up_too_keeping_the_peak():
    """--depth on memory: the rows of the modules down to that depth (resnet18's top-level
    children, from named_modules), each its subtree's highest peak; the totals unchanged."""
    import torch

    from archprof.zoo import MODELS

    with torch.device("meta"):
        children = [name for name, _ in MODELS["resnet18"].build().named_children()]
    flat = json.loads(invoke("memory", "resnet18", "--format", "json").stdout)
    rolled = json.loads(invoke("memory", "resnet18", "--depth", "1", "--format", "json").stdout)
    assert [r["layer"] for r in rolled["layers"] if r["layer"]] == children
    assert rolled["totals"]["peak_memory_bytes"] == flat["totals"]["peak_memory_bytes"]
    for row in rolled["layers"]:
        if row["layer"]:
            subtree = [
                r for r in flat["layers"] if r["layer"] == row["layer"] or r["layer"].startswith(row["layer"] + ".")
            ]
            assert row["peak_live_bytes"] == max(r["peak_live_bytes"] for r in subtree)


def test_batch_and_dtype_options():
    result = invoke("summary", "lenet5", "--batch", "8", "--dtype", "float16", "--format", "json")
    totals = json.loads(result.stdout)["totals"]
    assert totals["input_shapes"] == [[8, 1, 32, 32]]
    assert totals["param_bytes"] == 61_706 * 2


def test_dtype_float64_from_the_cli_as_from_python():
    """--dtype took float32, float16 and bfloat16 only, where analyze(dtype=...) takes float64 too."""
    result = invoke("summary", "lenet5", "--dtype", "float64", "--format", "json")
    assert result.exit_code == 0, result.output
    totals = json.loads(result.stdout)["totals"]
    assert totals["param_bytes"] == 61_706 * 8
    assert totals["dtype"] == "float64"


def test_zoo_lists_every_model():
    from archprof.zoo import MODELS

    result = invoke("zoo")
    assert result.exit_code == 0
    for name in MODELS:
        assert name in result.output
    assert "138.36 M" in result.output


def test_zoo_writes_csv_json_and_markdown_for_scripts(tmp_path):
    """Each model's exact parameter count (a built model's own sum) and default input."""
    import csv
    import io
    import json

    from archprof.zoo import MODELS

    documented = json.loads(invoke("zoo", "-f", "json").stdout)
    assert [m["name"] for m in documented] == list(MODELS)
    vgg16 = next(m for m in documented if m["name"] == "vgg16")
    assert vgg16["param_count"] == 138_357_544 and vgg16["input_size"] == [3, 224, 224]
    rows = list(csv.DictReader(io.StringIO(invoke("zoo", "-f", "csv").stdout)))
    assert {r["name"]: (int(r["param_count"]), r["input_size"]) for r in rows}["lenet5"] == (61_706, "1x32x32")
    assert "| lenet5 | 61.71 K | 1x32x32 |" in invoke("zoo", "-f", "markdown").stdout
    assert invoke("zoo", "-o", str(tmp_path / "zoo.json")).exit_code == 0
    assert json.loads((tmp_path / "zoo.json").read_text()) == documented
    refused = invoke("zoo", "-f", "html")
    assert refused.exit_code == 2 and "not HTML" in refused.output
    assert "Output format: table, csv, json or markdown" in invoke("zoo", "-h").output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("summary", "vgg61"), "closest built-in names: vgg19, vgg16"),
        (("summary", "vgg16", "--input", "3x224"), "has 2 dimensions"),
        (("summary", "vgg16", "--input", "0x224x224"), "at least 1"),
        (("summary", "vgg16", "--input", "abc"), "malformed input size"),
        (("summary", "vgg16", "--input", "-3x224x224"), "malformed input size"),
        (("summary", "lenet5", "--input", "3x224x224"), "1x3x224x224"),
        (("summary", "lenet5", "--batch", "0"), "at least 1"),
        (("summary", "lenet5", "--output", "report.xyz"), "suffix"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1


@pytest.mark.parametrize(
    ("args", "words", "hint"),
    [
        (("summary", "vgg16", "-f", "xml"), ("'--format'", "'xml'", "'csv'"), "archprof summary -h"),
        (("summary", "vgg16", "--batch", "many"), ("'--batch'",), "archprof summary -h"),
        (("compare", "vgg11", "vgg13", "--jobs", "0"), ("'--jobs'",), "archprof compare -h"),
        (("summary",), ("missing argument", "MODEL"), "archprof summary -h"),
        (("diff", "vgg11"), ("missing argument", "NEW"), "archprof diff -h"),
        (("check", "--max-params"), ("'--max-params'", "requires an argument"), "archprof check -h"),
        (("summary", "vgg16", "--no-such-option"), ("no such option", "--no-such-option"), "archprof summary -h"),
        (("--no-such-option",), ("no such option",), "archprof -h"),
        (("no-such-command",), ("no such command", "'no-such-command'"), "archprof -h"),
    ],
)
def test_a_command_line_click_cannot_parse_is_one_line_and_exit_2(args, words, hint):
    result = runner.invoke(app, list(args), prog_name="archprof")
    assert result.exit_code == 2, result.output
    line = one_error_line(result)
    for word in words:
        assert word in line
    assert line.endswith(f"({hint} for help)")
    assert "Usage:" not in result.output and "╭" not in result.output


def test_archprof_alone_still_prints_its_help():
    result = runner.invoke(app, [], prog_name="archprof")
    assert "Usage: archprof" in result.output and "summary" in result.output
    assert "error:" not in result.output


def test_failing_forward_names_the_module():
    result = invoke("summary", "lenet5", "--input", "3x224x224")
    assert "module 'features.0' (Conv2d)" in result.output
    assert "expects 1 input channels, got 3" in result.output  # as a real forward would say


def test_output_into_a_missing_directory_writes_nothing(tmp_path):
    target = tmp_path / "missing" / "report.csv"
    result = invoke("summary", "lenet5", "--output", str(target))
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert not target.parent.exists()


def test_unwritable_output_leaves_no_half_file(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()  # a directory where the report should go: the rename must fail
    result = invoke("summary", "lenet5", "--output", str(target), "--format", "csv")
    assert result.exit_code == 2
    assert "cannot write" in result.output
    assert list(tmp_path.iterdir()) == [target] and not any(target.iterdir())


def test_a_failed_analysis_leaves_no_file(tmp_path):
    target = tmp_path / "report.csv"
    result = invoke("summary", "lenet5", "--input", "3x224x224", "--output", str(target))
    assert result.exit_code == 2
    assert not target.exists()


def test_version_and_module_entry_point():
    assert "archprof" in invoke("--version").output
    completed = subprocess.run([sys.executable, "-m", "archprof", "--help"], capture_output=True, text=True)
    assert completed.returncode == 0
    assert "summary" in completed.stdout


def test_rf_and_memory_take_several_inputs_and_factory_arguments():
    spec = "tests/fixtures/tiny_models.py:TwoInputs"
    rf = invoke("rf", spec, "--input", "3x32x32", "--input", "10", "--format", "json")
    assert rf.exit_code == 0, rf.output
    assert json.loads(rf.stdout)["totals"]["input_shapes"] == [[1, 3, 32, 32], [1, 10]]
    tokens = ("tests/fixtures/tiny_models.py:token_model", "--input", "77:int64", "--format", "json")
    small = json.loads(invoke("memory", *tokens, "--arg", "vocab=1000").stdout)["totals"]
    big = json.loads(invoke("memory", *tokens, "--arg", "vocab=4000").stdout)["totals"]
    assert big["param_bytes"] > small["param_bytes"]  # the factory argument reached the model
    assert small["input_shapes"] == [[1, 77]]


NOISY_FACTORY = """
import torch


class Noisy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        print("building Noisy")
        self.conv = torch.nn.Conv2d(3, 8, 3)

    def forward(self, x):
        print("forward got", tuple(x.shape))
        return self.conv(x)
"""


DOTTED_FACTORY = """
import torch


class Dotted(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self._modules["a.b"] = torch.nn.Conv2d(3, 8, 3)
        self.a = torch.nn.Sequential()
        self.a._modules["b"] = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self._modules["a.b"](x).sum() + self.a.b(x).sum()
"""


def test_a_submodule_name_with_a_dot_is_one_error_line_and_exit_2(tmp_path):
    (tmp_path / "dotted.py").write_text(DOTTED_FACTORY)
    result = invoke("summary", f"{tmp_path / 'dotted.py'}:Dotted", "--input", "3x8x8")
    assert result.exit_code == 2, result.output
    assert "'a.b'" in one_error_line(result) and "Traceback" not in result.output


@pytest.mark.parametrize("command", [["summary"], ["memory"], ["rf"], ["compare", "lenet5"]])
def test_what_the_model_prints_goes_to_stderr_and_the_report_alone_to_stdout(tmp_path, command):
    (tmp_path / "noisy.py").write_text(NOISY_FACTORY)
    model = f"{tmp_path / 'noisy.py'}:Noisy"
    args = [*command[:1], model, *command[1:], "--input", "3x8x8", "-f", "json"]
    if command[0] == "compare":  # lenet5 takes a 1x32x32 input: both at the one given
        args[args.index("3x8x8")] = "1x32x32"
        (tmp_path / "noisy.py").write_text(NOISY_FACTORY.replace("Conv2d(3,", "Conv2d(1,"))
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)  # the report, and nothing else
    assert "building Noisy" in result.stderr and "forward got" in result.stderr


FAILS_FOR_REAL = """
import torch


class FailsForReal(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)

    def forward(self, x):
        if not x.is_meta:  # as a kernel the device lacks: cdist in float16 on the CPU
            raise NotImplementedError("no kernel for this on the device")
        return self.conv(x)
"""


@pytest.mark.parametrize(
    "command",
    [["profile", "--peak-flops", "1G", "--bandwidth", "1GB/s", "--repeat", "1"], ["memory", "--measure"], ["compare"]],
)
def test_a_real_forward_that_fails_is_one_line_and_exit_2(tmp_path, command):
    (tmp_path / "fails.py").write_text(FAILS_FOR_REAL)
    model = f"{tmp_path / 'fails.py'}:FailsForReal"
    models = [model, "--profile"] if command == ["compare"] else [model]
    result = runner.invoke(app, [command[0], *models, *command[1:], "--input", "3x8x8"])
    assert result.exit_code == 2, result.output
    line = one_error_line(result)
    assert "the real forward of" in line and "failed on cpu: no kernel for this on the device" in line


def test_memory_measure_refuses_fold_bn_as_profile_does():
    """It would measure the model unfolded and set that beside the folded prediction."""
    for command in (["memory", "lenet5", "--measure"], ["profile", "lenet5"]):
        result = invoke(*command, "--fold-bn")
        assert result.exit_code == 2, result.output
        assert "drop --fold-bn" in one_error_line(result)


def test_memory_measure_refuses_a_batch_the_device_cannot_hold(monkeypatch):
    """`--fit 16GB --measure` on a smaller machine was killed (exit 137, no word): refused first."""
    from archprof.cli import one_model
    from archprof.errors import ArchprofError

    def measuring(*args, **kwargs):
        raise ArchprofError("measuring")

    monkeypatch.setattr("archprof.measure.peak_memory.measure_memory", measuring)
    monkeypatch.setattr(one_model, "available_memory", lambda: ("the CPU", 100_000))
    for args in (["--measure"], ["--fit", "1MB", "--measure"], ["--train", "--batch", "64", "--measure"]):
        result = invoke("memory", "lenet5", *args)
        assert result.exit_code == 2, (args, result.output)
        line = one_error_line(result)
        assert "--measure" in line and "the CPU has available" in line and "measuring" not in line
    monkeypatch.setattr(one_model, "available_memory", lambda: ("the CPU", 10**12))
    assert one_error_line(invoke("memory", "lenet5", "--measure")) == "error: measuring"
    monkeypatch.setattr(one_model, "available_memory", lambda: ("the cpu", None))  # cannot tell: measure
    assert one_error_line(invoke("memory", "lenet5", "--measure")) == "error: measuring"


def test_available_memory_is_the_devices_free_memory(monkeypatch):
    from archprof.cli.one_model import available_memory

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    device, free = available_memory()
    assert device == "the CPU" and free > 0
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.mem_get_info", lambda *device: (123_456, 1_000_000))
    assert available_memory() == ("cuda", 123_456)


@pytest.mark.parametrize(
    "args",
    [
        ["profile", "lenet5", "--repeat", "1", "--warmup", "0"],
        ["compare", "lenet5"],
        ["check", "lenet5", "--max-params", "1M"],
        ["memory", "lenet5", "--fit", "1MB"],
    ],
)
def test_every_command_with_a_progress_display_takes_quiet(args):
    """profile took --quiet/-q and compare and check, which show progress too, refused it."""
    result = invoke(*args, "-q")
    assert result.exit_code == 0, result.output
    assert "--quiet" in " ".join(invoke(args[0], "-h").stdout.split())


def test_memory_says_what_it_is_doing_on_a_terminal_and_nothing_piped(monkeypatch):
    """--fit (ten seconds for resnet50's training step) and --measure (twenty) ran without a word.
    On a terminal (FORCE_COLOR=1, which Rich 13 and 15 alike take for one) a spinner says which;
    piped, or with --quiet, stderr stays empty."""
    monkeypatch.setattr("archprof.measure.peak_memory.predicted_and_measured", lambda *args: None)
    args = ["memory", "lenet5", "--fit", "1MB", "--measure"]
    said = runner.invoke(app, args, env={"FORCE_COLOR": "1"}).stderr
    assert "finding the largest batch that fits in 1.00 MB" in said
    assert "measuring the peak of inference and of a training step at batch " in said
    assert runner.invoke(app, args).stderr == ""
    assert runner.invoke(app, [*args, "--quiet"], env={"FORCE_COLOR": "1"}).stderr == ""


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["summary", "lenet5", "--depth", "-1"], "'--depth' / '-d': must be at least 0, got -1 ("),
        (["compare", "lenet5", "--jobs", "0"], "'--jobs' / '-j': must be at least 1, got 0 ("),
        (["summary", "lenet5", "--batch", "x"], "'--batch' / '-b': must be a whole number, got 'x' ("),
        (["summary", "lenet5", "--batch", "1.5"], "'--batch' / '-b': must be a whole number, got '1.5' ("),
        # as a whole number is worded: it read "--batch must be at least 1, got 0", in a style of its own (QA)
        (["summary", "lenet5", "--batch", "0"], "'--batch' / '-b': must be at least 1, got 0 ("),
        (["check", "lenet5", "--max-params", "1M", "--batch", "-2"], "'--batch' / '-b': must be at least 1, got -2 ("),
        # bytes that are not UTF-8, as a shell passes them ($'\xff'): pydantic said "unable to parse raw data as a
        # unicode string", not what to type
        (["profile", "lenet5", "--repeat", "\udcff"], "'--repeat': must be a whole number, got '\\udcff' ("),
    ],
)
def test_a_bad_number_is_worded_as_archprof_words_it(args, said):
    """Not pydantic's 'Input should be greater than or equal to 0', which read as about --input."""
    line = one_error_line(invoke(*args))
    assert said in line and "should be" not in line, line


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ["--unit", "\udcff", "--layer", "features.0"],
            "error: --unit takes whole numbers separated by commas (3,4), got '\\udcff'",
        ),
        (["--unit", "1,1", "--layer", "a\nb"], "error: no layer 'a\\nb' in the model"),
    ],
)
def test_rf_unit_errors_show_an_unprintable_value_escaped_once(args, said):
    """The value quoted as typed, its unprintable characters as one escape each: repr() of the
    escaped text doubled every backslash ('\\\\udcff')."""
    assert one_error_line(invoke("rf", "lenet5", *args)).startswith(said)


@pytest.mark.parametrize("command", ["summary", "profile", "memory", "rf", "explain", "compare", "diff"])
def test_a_help_page_on_80_columns_leaves_the_options_help_half_the_line(command):
    """--format's metavar was its choices, table|csv|json|markdown|html: 30 of a help page's 80
    columns, which left every option's help 26 (about four words a line: summary -h ran to 100
    lines). FORMAT, and the choices in its help."""
    page = runner.invoke(app, [command, "-h"], env={"COLUMNS": "80"}).stdout
    first = next(line for line in page.splitlines() if "One input's" in line)
    assert first.index("One input's") <= 80 - 40, first  # 40 columns or more of help
    formats = "table or markdown" if command == "explain" else "table, csv, json, markdown or html"
    assert f"-f FORMAT Output format: {formats}" in " ".join(page.replace("│", " ").split())


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["summary", "lenet5", "--dept", "2"], "error: no such option: --dept; did you mean --depth? ("),
        (["summary", "lenet5", "--fold"], "error: no such option: --fold; did you mean --fold-bn? ("),
        (["sumary", "lenet5"], "error: no such command 'sumary'; did you mean 'summary'? ("),
        # Click offered two here ("Did you mean 'memory', 'summary'?"), which the rewording missed.
        (["memroy", "lenet5"], "error: no such command 'memroy'; did you mean 'memory'? ("),
    ],
)
def test_a_mistyped_option_or_command_is_answered_with_the_closest_one(args, said):
    """--dept listed '(Possible options: --depth, --help, --wide)', alphabetically, and a
    command asked '. Did you mean ...?' in other words: now both the closest, one way."""
    assert one_error_line(invoke(*args)).startswith(said)


def test_md_is_markdown_as_the_suffix_is():
    """`-o x.md` writes Markdown, but `-f md` was refused ('md' is not one of ...): a new user
    types the suffix's name. A name that is neither is refused in one line, naming both."""
    markdown, md = cli("summary", "lenet5", "-f", "markdown"), cli("summary", "lenet5", "-f", "md")
    assert md.exit_code == 0 and md.stdout == markdown.stdout and md.stdout.startswith("**lenet5")
    refused = cli("summary", "lenet5", "-f", "mdx")
    assert refused.exit_code == 2
    assert "'mdx' is not one of 'table', 'csv', 'json', 'markdown', 'html' (or 'md')" in one_error_line(refused)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["explain", "lenet5", "conv1"], "'table', 'markdown' (or 'md')"),
        (["zoo"], "'table', 'csv', 'json', 'markdown' (or 'md')"),
    ],
)
def test_a_format_that_is_none_is_refused_naming_the_commands_own(args, named):
    """explain and zoo refused -f xml naming every format ('csv', 'html', ...), and then refused
    the csv or html the user tried next: the command's own formats, which its help names."""
    refused = cli(*args, "-f", "xml")
    assert refused.exit_code == 2
    assert f"'xml' is not one of {named} (" in one_error_line(refused)
    help_formats = named.removesuffix(" (or 'md')").replace("'", "")
    page = " ".join(cli(args[0], "-h").stdout.replace("│", " ").split())
    assert f"Output format: {help_formats.rsplit(', ', 1)[0]} or {help_formats.rsplit(', ', 1)[1]}" in page


def test_summary_of_a_training_step_takes_the_optimizer_its_peak_holds():
    """summary --train had no --optimizer: its totals' training step peak always held plain
    SGD's state (none), where memory, compare and check take any optimizer. The oracle:
    archprof.analyze with that optimizer, and Adam's two copies per parameter over SGD's none."""
    import archprof

    result = cli("summary", "lenet5", "--train", "--optimizer", "adam", "-f", "json")
    assert result.exit_code == 0, result.output
    totals = json.loads(result.stdout)["totals"]
    adam = archprof.analyze("lenet5", training=True, optimizer="adam").totals
    sgd = archprof.analyze("lenet5", training=True).totals
    assert (totals["optimizer"], totals["training_peak_bytes"]) == ("adam", adam.training_peak_bytes)
    assert adam.training_peak_bytes > sgd.training_peak_bytes
    table = cli("summary", "lenet5", "--train", "--optimizer", "adam")
    assert "Training step peak (adam;" in table.stdout
    refused = cli("summary", "lenet5", "--optimizer", "adam")
    assert refused.exit_code == 2 and "add --train" in one_error_line(refused)


def test_an_input_in_another_dtype_than_the_model_says_to_cast_the_model():
    """--input 1x32x32:float16 for a float32 model: its first layer refuses the two dtypes,
    and the error said no more; the fix it now names runs."""
    refused = cli("summary", "lenet5", "--input", "1x32x32:float16")
    assert refused.exit_code == 2
    assert one_error_line(refused).endswith(
        "; the input is float16, the model float32: cast the model too (--dtype float16; dtype='float16' from Python)"
    )
    assert cli("summary", "lenet5", "--input", "1x32x32:float16", "--dtype", "float16").exit_code == 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ("summary", "lenet5", "-f", "jsn"),
            "'jsn' is not one of 'table', 'csv', 'json', 'markdown', 'html' (or 'md'); did you mean 'json'?",
        ),
        (("summary", "lenet5", "--dtype", "fp16"), "; did you mean 'float16'?"),
        (("summary", "lenet5", "--dtype", "bf16"), "; did you mean 'bfloat16'?"),
        (("summary", "lenet5", "-i", "3,32,32"), "; did you mean 3x32x32?"),
        (("summary", "lenet5", "-i", "3 32 32"), "; did you mean 3x32x32?"),
        (("summary", "lenet5", "-i", "32"), "input 32 has 1 dimension; lenet5 takes 3"),
        (("memory", "lenet5", "--fit", "16", "GB"), "(GB): a size is one word (16GB, not 16 GB)"),
    ],
    ids=["format", "fp16", "bf16", "commas", "spaces", "one dimension", "size split"],
)
def test_a_near_miss_on_the_command_line_is_answered_with_what_was_meant(args, says):
    """A value close to one the option takes, sizes joined by another separator than 'x', a
    size's unit split from its number: one line, exit 2, with what would have been read."""
    result = cli(*args)
    assert result.exit_code == 2
    assert says in one_error_line(result)


def test_a_value_close_to_no_choice_gets_no_guess():
    result = cli("summary", "lenet5", "-f", "xlsx")
    assert result.exit_code == 2 and "did you mean" not in one_error_line(result)


@pytest.mark.parametrize("command", ["summary", "memory", "rf"])
def test_the_note_of_columns_left_out_is_set_apart_from_what_follows(command):
    """On a narrow terminal a table ends with the note of the columns it left out; the totals
    printed next ('Totals', 'Memory') read as part of that note: a blank line ends it."""
    result = runner.invoke(app, [command, "resnet18"], env={"COLUMNS": "60"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Left out to fit 60 columns"))
    end = next(i for i in range(start, len(lines)) if "--columns)" in lines[i])
    assert lines[end + 1].strip() == "" and lines[end + 2].strip()
