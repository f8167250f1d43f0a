"""What a budget file may make archprof do, and what a --baseline report holds a check to.

A budget file is data: its `module:factory` and `file.py:factory` models must be the
project's own code (in the budget file's folder or the current directory), never any
importable callable called with the file's arguments (`os:system`, `torch:load`). A model
named on the command line is the user's own word and stays unrestricted. A --baseline's
limits hold only for a report made at the baseline's input, batch and dtype."""

import sys
from pathlib import Path

import pytest
import torch

import archprof
from archprof.budget import evaluate
from archprof.budget.baseline import growth_limits
from archprof.errors import ArchprofError
from archprof.load import python_factory
from tests.cli import cli, one_error_line

NET = "from torch import nn\ndef net(width=8):\n    return nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU())\n"


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder, the current directory, with a factory of its own in trust_project_nets.py."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "trust_project_nets.py").write_text(NET)
    monkeypatch.chdir(folder)
    monkeypatch.delitem(sys.modules, "trust_project_nets", raising=False)  # another test's project's
    return folder


def _budget(folder: Path, *entries: str) -> Path:
    path = folder / "archprof.toml"
    path.write_text("".join(f'[[models]]\n{entry}\nmax-params = "1M"\n\n' for entry in entries))
    return path


def _errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


def test_a_budget_file_cannot_run_a_shell_command_and_its_projects_factory_still_runs(project, tmp_path):
    marker = tmp_path / "ran"
    _budget(
        project,
        f'name = "os:system"\nargs = {{ command = "echo payload > {marker}" }}',
        'name = "subprocess:getoutput"\n' + f'args = {{ cmd = "echo payload > {marker}" }}',
        'name = "trust_project_nets.py:net"\ninput = "3x16x16"',
        'name = "trust_project_nets:net"\ninput = "3x16x16"\nargs = { width = 4 }',
    )
    result = cli("check", "-j", "1")
    assert not marker.exists()  # the payload never ran
    assert result.exit_code == 2, result.output
    assert (
        "trust_project_nets.py:net" in result.stdout and "trust_project_nets:net" in result.stdout
    )  # the project's factories were checked
    first, second = _errors(result)
    assert first.startswith("error: archprof.toml, line 2: model 'os:system' is named in a budget file")
    assert "project's own code" in first and "module 'os' lies outside it" in first
    assert "name it on the command line instead" in first and "torchvision:NAME" in first
    assert second.startswith("error: archprof.toml, line 7: model 'subprocess:getoutput'")


def test_a_builtin_module_is_refused_from_a_budget_file(project):
    _budget(project, 'name = "sys:exit"')
    error = one_error_line(cli("check", "-j", "1"))
    assert "model 'sys:exit' is named in a budget file" in error and "module 'sys' is built into Python" in error


def test_an_installed_package_is_refused_from_a_budget_file(project):
    # torch:load would unpickle what --trust-pickle alone allows; refused before torch is looked into.
    _budget(project, 'name = "torch:load"\nargs = { f = "model.pt", weights_only = false }')
    error = one_error_line(cli("check", "-j", "1"))
    assert "module 'torch' lies outside it" in error
    # A project whose folder holds the virtual environment: an installed package is still not its code.
    site_packages = Path(torch.__file__).parents[1]
    with pytest.raises(ArchprofError, match=r"module 'torch' is an installed package's or Python's own"):
        python_factory("torch:load", confined_to=[site_packages.parent])


def test_a_file_outside_the_project_is_refused_even_through_a_link(project, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    marker = tmp_path / "imported"
    (elsewhere / "payload.py").write_text(f"open({str(marker)!r}, 'w').close()\n{NET}")
    (project / "linked.py").symlink_to(elsewhere / "payload.py")
    (project / "linked_pkg_for_trust").symlink_to(elsewhere, target_is_directory=True)
    for name in ("../elsewhere/payload.py:net", "linked.py:net", "linked_pkg_for_trust.payload:net"):
        _budget(project, f'name = "{name}"\ninput = "3x16x16"')
        error = one_error_line(cli("check", "-j", "1"))
        assert "lies outside it" in error and f"({elsewhere.resolve()}" in error, name
        assert not marker.exists(), name
    # Named on the command line, the same file is the user's choice: it runs.
    done = cli("check", f"{elsewhere / 'payload.py'}:net", "-i", "3x16x16", "--max-params", "1M", "-j", "1")
    assert done.exit_code == 0, done.output
    assert marker.exists()


def test_the_budget_files_folder_and_the_current_directory_are_the_project(tmp_path, monkeypatch):
    models, here = tmp_path / "repo" / "models", tmp_path / "here"
    models.mkdir(parents=True)
    here.mkdir()
    for folder, name in ((models, "trust_folder_nets"), (here, "trust_here_nets"), (tmp_path / "repo", "beside")):
        (folder / f"{name}.py").write_text(NET)
    monkeypatch.chdir(here)
    budget = _budget(
        models,
        'name = "trust_folder_nets:net"\ninput = "3x16x16"',
        'name = "trust_here_nets:net"\ninput = "3x16x16"',
        'name = "lenet5"',
    )
    result = cli("check", "--config", budget, "-j", "1")
    assert result.exit_code == 0, result.output
    _budget(models, 'name = "../beside.py:net"\ninput = "3x16x16"')  # the repository's, but in neither folder
    error = one_error_line(cli("check", "--config", budget, "-j", "1"))
    assert f"'../beside.py' lies outside it ({(tmp_path / 'repo' / 'beside.py').resolve()}, not in" in error


def test_python_factory_is_unrestricted_without_confined_to(tmp_path):
    assert python_factory("os:getcwd").target is __import__("os").getcwd
    with pytest.raises(ArchprofError, match=r"module 'os' lies outside it"):
        python_factory("os:getcwd", confined_to=[tmp_path])
    with pytest.raises(ArchprofError, match=r"module 'no_such_module_x' is not found in "):
        python_factory("no_such_module_x:net", confined_to=[tmp_path])
    assert "no_such_module_x" not in sys.modules


# -- a --baseline made at another input --------------------------------------------------


@pytest.fixture
def net(tmp_path):
    (tmp_path / "nets.py").write_text(NET)
    return f"{tmp_path / 'nets.py'}:net"


@pytest.mark.parametrize(
    ("made", "checked", "made_at", "checked_at"),
    [
        (["-b", "4"], [], "4x3x16x16, float32", "1x3x16x16, float32"),
        (["--dtype", "float16"], [], "1x3x16x16, float16", "1x3x16x16, float32"),
        ([], ["-i", "3x20x20"], "1x3x16x16, float32", "1x3x20x20, float32"),
    ],
)
def test_a_json_baseline_made_at_another_input_is_refused(tmp_path, net, made, checked, made_at, checked_at):
    path = tmp_path / "main.json"
    assert cli("summary", net, "-i", "3x16x16", *made, "-o", path).exit_code == 0
    checked = checked or ["-i", "3x16x16"]
    done = cli("check", net, *checked, "--baseline", path, "--max-increase", "macs=0%", "-j", "1")
    assert done.exit_code == 2, done.output
    assert one_error_line(done) == (
        f"error: {net}: baseline main.json was made at input {made_at}; this check runs {net} at {checked_at}:"
        " make the baseline at the same input and dtype"
    )
    _holds_at_the_baselines_input(net, made, path)


def _holds_at_the_baselines_input(net, made, path):
    done = cli("check", net, "-i", "3x16x16", *made, "--baseline", path, "--max-increase", "macs=0%", "-j", "1")
    assert done.exit_code == 0, done.output


@pytest.mark.parametrize(
    ("made", "checked", "message"),
    [
        (
            ["-b", "4"],
            [],
            "another input: its first layer, 0 (Conv2d), takes 4x3x16x16, in this check of {net} 1x3x16x16",
        ),
        (
            ["--dtype", "float16"],
            [],
            "another dtype: its first layer, 0 (Conv2d), outputs 2-byte elements, in this"
            " check of {net} (float32) 4-byte",
        ),
        (
            [],
            ["-i", "3x20x20"],
            "another input: its first layer, 0 (Conv2d), takes 1x3x16x16, in this check of {net} 1x3x20x20",
        ),
    ],
)
def test_a_csv_baseline_made_at_another_input_is_refused(tmp_path, net, made, checked, message):
    # A CSV report records neither the model's input nor its dtype: its first row's input and element size tell them.
    path = tmp_path / "main.csv"
    assert cli("summary", net, "-i", "3x16x16", *made, "-o", path).exit_code == 0
    checked = checked or ["-i", "3x16x16"]
    done = cli("check", net, *checked, "--baseline", path, "--max-increase", "macs=0%", "-j", "1")
    assert done.exit_code == 2, done.output
    expected = f"error: {net}: baseline main.csv was made at {message.format(net=net)}: make the baseline at the same"
    assert one_error_line(done) == expected + " input and dtype"
    _holds_at_the_baselines_input(net, made, path)


def test_a_baseline_of_another_model_is_warned_of_not_refused(tmp_path, net):
    path = tmp_path / "main.json"
    assert cli("summary", net, "-i", "3x16x16", "-o", path).exit_code == 0
    (tmp_path / "renamed.py").write_text(NET)  # the model moved: its ratchet holds it still
    report = archprof.analyze(f"{tmp_path / 'renamed.py'}:net", input_size="3x16x16")
    with pytest.warns(UserWarning, match=r"baseline main.json is a report of '.*nets.py:net', not of 'renamed.py:net'"):
        (verdict,) = evaluate(report, growth_limits(path, ["macs=0"]), model="renamed.py:net")
    assert verdict.passed


def test_a_csv_baseline_of_another_model_is_warned_of_not_refused(tmp_path, net):
    """A CSV records no model name: check lenet5 --baseline resnet18.csv held lenet5 to
    resnet18's totals (-414,691.3%) without a word. Its first layer tells another model."""
    path = tmp_path / "main.csv"
    assert cli("summary", net, "-i", "3x16x16", "-o", path).exit_code == 0
    report = archprof.analyze("lenet5")
    first = report.layers.iloc[0]
    warned = rf"baseline main.csv begins with layer 0 \(Conv2d\), lenet5 with {first.layer} \({first.module_type}\)"
    with pytest.warns(UserWarning, match=warned):
        (verdict,) = evaluate(report, growth_limits(path, ["macs=0"]), model="lenet5")
    assert not verdict.passed  # held to it all the same, as a JSON one of another model is


def test_a_junit_file_that_is_not_xml_is_refused_and_kept(tmp_path):
    """`--junit models.py` replaced the code with XML; a stream still takes it."""
    code = tmp_path / "models.py"
    code.write_text("print('mine')\n")
    result = cli("check", "lenet5", "--max-params", "1", "--junit", code)
    assert result.exit_code == 2 and "ending in .xml" in one_error_line(result)
    assert code.read_text() == "print('mine')\n"
    assert cli("check", "lenet5", "--max-params", "1", "--junit", "/dev/null").exit_code == 1


def test_a_budget_file_cannot_walk_out_of_the_projects_module(project, tmp_path):
    """The project's module imports torch: `nn.functional.torch.os.system` reached os.system
    through it, and `nn.functional.torch.load` torch.load; what a factory's path reaches must
    be defined in the project too."""
    marker = tmp_path / "ran"
    _budget(
        project,
        f'name = "trust_project_nets.py:nn.functional.torch.os.system"\nargs = {{ command = "echo x > {marker}" }}',
        f'name = "trust_project_nets:nn.functional.torch.os.system"\nargs = {{ command = "echo x > {marker}" }}',
        'name = "trust_project_nets:nn.functional.torch.load"\nargs = { f = "model.pt" }',
        'name = "trust_project_nets:net"\ninput = "3x16x16"',
    )
    result = cli("check", "-j", "1")
    assert not marker.exists()
    assert result.exit_code == 2 and "trust_project_nets:net" in result.stdout, result.stderr
    first, second, third = _errors(result)
    assert "'nn.functional.torch.os.system' is built into Python" in first and "line 2" in first
    assert "'nn.functional.torch.os.system' is built into Python" in second
    assert "'nn.functional.torch.load' lies outside it" in third and "torch/serialization.py" in third
