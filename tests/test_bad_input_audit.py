"""A careless or hostile user's input, found by an audit of the CLI and the API: each case
one that went wrong before (a traceback, a silent empty report, a corrupted one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import typer
import typer.core
import typer.main

import archprof
from archprof import ArchprofError
from archprof.cli import main
from tests.cli import cli, one_error_line

REPOSITORY = Path(__file__).resolve().parent.parent


def archprof_process(*args: str, cwd: Path, **environment: str | None) -> subprocess.CompletedProcess:
    """The real `archprof` process: file descriptors and the environment are process-level facts."""
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    env.pop("COLUMNS", None)
    env.update({key: value for key, value in environment.items() if value is not None})
    return subprocess.run(
        [sys.executable, "-m", "archprof", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("args", [("zoo",), ("check", "lenet5", "--max-params", "1M"), ("summary", "lenet5")])
def test_columns_zero_reads_as_columns_unset(tmp_path, args):
    """COLUMNS=0 made Rich draw on 0 columns: zoo and check printed nothing and exited 0 (a
    budget check with no verdict), summary failed with a traceback."""
    unset = archprof_process(*args, cwd=tmp_path)
    zero = archprof_process(*args, cwd=tmp_path, COLUMNS="0")
    assert unset.returncode == 0 and unset.stdout.strip()
    assert (zero.returncode, zero.stdout, zero.stderr) == (0, unset.stdout, "")


def test_what_a_model_writes_to_descriptor_1_goes_to_stderr_not_into_the_report(tmp_path):
    """Python's sys.stdout went to stderr while the model ran, but not file descriptor 1
    itself: os.write(1, ...), print(file=sys.__stdout__) and a subprocess's output landed
    inside `-f json`'s report, which then no longer parsed."""
    (tmp_path / "chatty.py").write_text(
        "import os, subprocess, sys\n"
        "from torch import nn\n\n\n"
        "class Chatty(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 4, 3)\n"
        "        os.write(1, b'DESCRIPTOR-1\\n')\n\n"
        "    def forward(self, x):\n"
        "        print('DUNDER-STDOUT', file=sys.__stdout__, flush=True)\n"
        "        subprocess.run([sys.executable, '-c', 'print(\"SUBPROCESS\")'], check=True)\n"
        "        return self.conv(x)\n"
    )
    done = archprof_process("summary", "chatty.py:Chatty", "--input", "3x8x8", "-f", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["totals"]["param_count"] == 4 * 3 * 3 * 3 + 4  # weight and bias, counted by hand
    for marker in ("DESCRIPTOR-1", "DUNDER-STDOUT", "SUBPROCESS"):
        assert marker in done.stderr


def test_a_module_named_by_a_spec_is_refused_as_not_a_factory(tmp_path):
    """`file.py:model` naming a module built at import was called as a factory, which ran
    its forward with no input: 'model factory failed: forward() missing ... input'."""
    (tmp_path / "built.py").write_text("from torch import nn\n\nconv = nn.Conv2d(3, 4, 3)\n")
    with pytest.raises(ArchprofError, match=r"^'.*built.py:conv' is a Conv2d built as its file was imported, not a"):
        archprof.analyze(f"{tmp_path / 'built.py'}:conv", input_size=(3, 8, 8))


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda model: archprof.analyze(torch.zeros(4, 4, 4)), "(of type Tensor)"),
        (lambda model: archprof.analyze(model, inputs=[torch.zeros(3, 8, 8)]), "is a tensor: archprof reads shapes"),
        (lambda model: archprof.analyze(model, inputs=torch.zeros(3, 8, 8)), "is a tensor: archprof reads shapes"),
    ],
    ids=["a tensor as the model", "a tensor in inputs", "a tensor as inputs"],
)
def test_a_tensor_given_for_a_shape_or_a_model_is_named_on_one_line(call, named):
    """The error quoted the tensor's repr, one line per row of it (12 lines for 4x4x4)."""
    with pytest.raises(ArchprofError) as raised:
        call(torch.nn.Conv2d(3, 4, 3))
    message = str(raised.value)
    assert "\n" not in message and named in message and len(message) < 300


@pytest.mark.parametrize("weights", [{"weight": torch.zeros(4, 3, 3, 3)}, 5], ids=["a state dict", "an int"])
def test_weights_that_are_not_a_file_name_are_refused_as_such(weights):
    """`weights=` given a state dict in memory said 'weights file {'weight': tensor(...)} does
    not exist': its str() taken for a file name, over several lines."""
    with pytest.raises(
        ArchprofError, match=r"^weights must be a checkpoint's file name \(a str or a Path\), got"
    ) as raised:
        archprof.analyze("lenet5", weights=weights)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("kind", ["a broken link", "a folder"])
def test_an_archprof_toml_that_is_not_a_file_is_an_error_not_passed_over(tmp_path, monkeypatch, kind):
    """An archprof.toml that could not be read (a link to a file gone, a folder) was skipped:
    `archprof check` then checked pyproject.toml's budgets instead, and passed (exit 0)."""
    (tmp_path / "pyproject.toml").write_text('[[tool.archprof.models]]\nname = "lenet5"\nmax-params = "1M"\n')
    if kind == "a folder":
        (tmp_path / "archprof.toml").mkdir()
    else:
        (tmp_path / "archprof.toml").symlink_to(tmp_path / "gone.toml")
    monkeypatch.chdir(tmp_path)
    result = cli("check")
    assert result.exit_code == 2, result.output
    assert "budget file archprof.toml" in one_error_line(result)


@pytest.mark.parametrize("shape", [{3, 224, 225}, {3: "channels", 224: "height", 225: "width"}], ids=["set", "dict"])
def test_an_input_spec_of_an_unordered_shape_is_refused(shape):
    """InputSpec took any iterable: {3, 224, 224} became the 2-d shape its set iterates in
    (224x3), a dict its keys; the analysis then ran on that, or failed deep in the model."""
    with pytest.raises(ArchprofError, match=r"^input shape must be a sequence of sizes"):
        archprof.InputSpec(shape)


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_while_the_command_line_is_parsed_is_said_on_one_line(monkeypatch):
    """Typer turned a Ctrl-C while Click parsed the options into exit 130 without a word."""
    monkeypatch.setattr(typer.core.TyperCommand, "parse_args", _interrupt)
    result = cli("summary", "lenet5", "--depth", "2")
    assert (result.exit_code, result.stderr) == (130, "interrupted (Ctrl-C)\n")


def test_ctrl_c_while_typer_builds_the_commands_is_said_on_one_line(monkeypatch, capsys):
    """A Ctrl-C while Typer built the Click commands, before parsing, left main() as a traceback."""
    monkeypatch.setattr(typer.main, "get_command", _interrupt)
    monkeypatch.setattr(sys, "argv", ["archprof", "zoo"])
    try:
        with pytest.raises(SystemExit) as exited:
            main()
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt left main(): a traceback")
    assert exited.value.code == 130
    assert capsys.readouterr().err == "interrupted (Ctrl-C)\n"


def test_ctrl_c_while_the_cli_is_imported_is_said_on_one_line(tmp_path):
    """The entry point imported the CLI (Typer, Rich: a tenth of a second) outside any
    handler: a Ctrl-C then ended in a traceback from inside the import."""
    script = (
        "import sys\n"
        "class Interrupted:\n"  # the Ctrl-C arrives as Typer is imported
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'typer':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupted())\n"
        "from archprof.__main__ import run\n"
        "run()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert (done.returncode, done.stderr, done.stdout) == (130, "interrupted (Ctrl-C)\n", "")


def test_the_installed_command_enters_through_the_handled_import():
    """The console script is the entry point that handles a Ctrl-C while the CLI imports."""
    import tomllib

    scripts = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["archprof"] == "archprof.__main__:run"


def test_analyze_refuses_an_input_size_with_no_order():
    """analyze(input_size={3, 8}) ran on the shape the set iterates in (8x3): a made-up input."""
    with pytest.raises(ArchprofError, match=r"^input_size must be a shape such as"):
        archprof.analyze(torch.nn.Conv2d(3, 4, 3), input_size={3, 8})


def test_compare_names_each_row_of_a_dict_by_its_key():
    """compare({'a': model}) took the keys for model names: 'unknown model 'a''."""
    small, big = torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(3, 8, 3)
    frame = archprof.compare({"mine": small, "wider": big}, input_size=(3, 8, 8))
    assert list(frame["model"]) == ["mine", "wider"]
    counts = [sum(p.numel() for p in model.parameters()) for model in (small, big)]
    assert list(frame["param_count"]) == counts
    assert list(frame["param_ratio"]) == [1.0, counts[1] / counts[0]]
    assert frame.attrs["baseline"] == "mine"


def test_diff_checks_its_columns_where_no_layer_changed():
    """`diff X X --columns nosuch` exited 0 with the totals: the layer table, where a column
    name is looked up, was not drawn."""
    result = cli("diff", "lenet5", "lenet5", "--columns", "nosuch")
    assert result.exit_code == 2
    assert "no column 'nosuch'" in one_error_line(result)


@pytest.mark.parametrize("flag", [torch.zeros(2), "false"], ids=["a tensor", "a string"])
def test_profile_refuses_a_fold_bn_that_is_not_a_bool_in_one_line(flag):
    """profile read fold_bn's truth before checking it: a tensor raised torch's RuntimeError
    ('Boolean value of Tensor ... is ambiguous'), "false" was refused as a request to fold."""
    with pytest.raises(ArchprofError, match=r"^fold_bn must be True or False, got .*\((Tensor|str)\)$"):
        archprof.profile(torch.nn.Conv2d(3, 4, 3), input_size=(3, 8, 8), device="cpu", fold_bn=flag)


@pytest.mark.parametrize(
    "run",
    [
        lambda conv: archprof.profile(conv, input_size=(3, 8, 8), device="cpu", repeat=1, warmup=0, **NO_CEILINGS),
        lambda conv: archprof.compare([conv], input_size=(3, 8, 8), profile=True, runs=1),
    ],
    ids=["profile", "compare profile=True"],
)
def test_a_real_run_that_cannot_fit_is_refused_before_it_starts(monkeypatch, run):
    """profile and compare's latency ran any input for real: one whose activations pass the
    machine's memory was killed by the out-of-memory killer (exit 137, no word) or swapped
    for as long as it took. memory --measure refused such a run; they now do too."""
    conv = torch.nn.Conv2d(3, 4, 3)
    calls = []
    # The devices it runs on (meta: the analysis); a copy that profile runs keeps the hook.
    conv.register_forward_hook(lambda module, inputs, output: calls.append(output.device.type))
    # By hand: its parameters (4*3*3*3 + 4 floats), input (3*8*8) and output (4*6*6) alone take
    # 4 * (112 + 192 + 144) = 1,792 bytes; with 1,000 free no run can fit.
    monkeypatch.setattr("archprof.measure.device.cpu_available_memory", lambda: 1_000)
    refused = (
        r"^a real run of Conv2d at batch 1 is predicted to need 1\.79 kB, 2\.69 kB with half again"
        r" for operators' workspace, more than the 1\.00 kB the CPU has available: "
    )
    with pytest.raises(ArchprofError, match=refused):
        run(conv)
    assert "cpu" not in calls
    monkeypatch.setattr("archprof.measure.device.cpu_available_memory", lambda: 10**12)
    run(conv)
    assert "cpu" in calls  # the same call runs where the memory is there


NO_CEILINGS = {"peak_flops": "1T", "bandwidth": "1TB/s"}  # given, so that none is measured


@pytest.mark.parametrize("target", ["archprof.toml", "report.xml"], ids=["the budget file", "the --junit file"])
def test_a_step_summary_onto_a_file_check_reads_or_writes_is_refused(tmp_path, monkeypatch, target):
    """GITHUB_STEP_SUMMARY naming the budget file had the verdict's Markdown appended to it:
    the next `archprof check` failed on 'not valid TOML'; naming the --junit file, after the
    XML it appended Markdown. Refused before any work, both files as they were."""
    budget_text = '[[models]]\nname = "lenet5"\nmax-params = "1M"\n'
    (tmp_path / "archprof.toml").write_text(budget_text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", target)
    result = cli("check", "--junit", "report.xml", "-j", "1")
    assert result.exit_code == 2, result.output
    assert one_error_line(result).startswith(f"error: GITHUB_STEP_SUMMARY {target} would append to")
    assert sorted(os.listdir(tmp_path)) == ["archprof.toml"]
    assert (tmp_path / "archprof.toml").read_text() == budget_text


@pytest.mark.parametrize("columns", ["²", "1" * 5000, "999999", "10000000"])
def test_a_columns_that_is_no_width_of_ascii_digits_reads_as_unset(tmp_path, columns):
    """str.isdigit passed "²", which int() refuses (a traceback before any command,
    -h too); 5000 digits passed int()'s limit; a width of ten million padded every help line
    to it (300 MB of help)."""
    unset = archprof_process("-h", cwd=tmp_path)
    given = archprof_process("-h", cwd=tmp_path, COLUMNS=columns)
    assert (given.returncode, given.stdout, given.stderr) == (0, unset.stdout, "")


@pytest.mark.parametrize(
    "args",
    [
        ("summary", "lenet5", "-i", "١x٣٢x٣٢"),  # Arabic-Indic digits, read as 1x32x32
        ("summary", "lenet5", "-i", "３x３２x３２"),  # fullwidth, read as 3x32x32
        ("rf", "lenet5", "--unit", "３,４", "--layer", "features.0"),
    ],
)
def test_sizes_and_units_are_written_in_digits_0_to_9(args):
    """As every other number archprof reads (`units`, a diff's cells, explain's rows): int()
    reads any script's digits, and the regular expression's \\d matched them."""
    result = cli(*args)
    assert result.exit_code == 2
    assert "expected" in one_error_line(result) or "whole numbers" in one_error_line(result)


def test_an_arg_in_other_digits_is_text_not_a_number():
    from archprof.load.options import parse_arg_value

    assert parse_arg_value("٣") == "٣"
    assert parse_arg_value("３.5") == "３.5"
    assert (parse_arg_value("3"), parse_arg_value("0.5")) == (3, 0.5)


@pytest.mark.parametrize(
    "args", [("edge_fc",), ("torch.nn:Linear", "-a", "in_features=3", "-a", "out_features=4", "-i", "3")]
)
def test_a_receptive_field_plot_with_nothing_to_draw_is_refused_in_one_line(tmp_path, args):
    """Every row global (a fully connected model), or no spatial input: matplotlib's "Data
    cannot be log-scaled" came back as the error, or a blank plot was written with a Python
    warning on stderr."""
    plot = tmp_path / "fields.png"
    result = cli("rf", *args, "--plot", plot)
    assert result.exit_code == 2
    assert "nothing to plot" in one_error_line(result)
    assert not plot.exists()


def test_a_unit_coordinate_may_carry_a_plus_sign_as_int_reads_it():
    signed, plain = (cli("rf", "lenet5", "--unit", unit, "--layer", "features.0") for unit in ("+1,2", "1,2"))
    assert signed.exit_code == plain.exit_code == 0
    assert signed.stdout == plain.stdout.replace("unit 1,2", "unit +1,2")


@pytest.mark.parametrize("where", ["the model", "a submodule"])
def test_a_module_whose_init_never_ran_is_refused_in_one_line(tmp_path, monkeypatch, where):
    """A module whose class's `__init__` does not call `super().__init__()` has no tables: the
    trace's walk, then the input hint's, raised Python's AttributeError as a traceback."""
    broken = "Broken()" if where == "the model" else "torch.nn.Sequential(torch.nn.ReLU(), Broken())"
    (tmp_path / "broken.py").write_text(
        "import torch\n\n\nclass Broken(torch.nn.Module):\n    def __init__(self):\n        pass\n\n"
        "    def forward(self, x):\n        return x\n\n\n"
        f"def make():\n    return {broken}\n"
    )
    monkeypatch.chdir(tmp_path)
    result = cli("summary", "broken.py:make", "--input", "3x8x8")
    assert result.exit_code == 2, result.output
    line = one_error_line(result)
    assert "'Broken' object has no attribute '_parameters'" in line and "super().__init__()" in line
