"""Common mistakes on the command line, each answered by one error line that says the fix; the
command with the fix applied then works."""

import importlib
import re
import sys
import textwrap

import pytest
import torch
from torch import nn

import archprof
from archprof.errors import ArchprofError
from tests.cli import cli, one_error_line

NET = textwrap.dedent(
    """
    import pathlib

    import torch.nn as nn

    pathlib.Path("imported").touch()  # a mark that the file's code ran


    class Net(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(8, num_classes)

        def forward(self, x):
            return self.fc(self.pool(self.conv(x).relu()).flatten(1))


    def build(width):
        return Net()


    def _helper():
        pass
    """
)


@pytest.fixture
def net_file(tmp_path, monkeypatch):
    """mynet.py in the current directory, and its Net as the file defines it."""
    (tmp_path / "mynet.py").write_text(NET)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "mynet", None)  # the entry the import makes goes after the test
    del sys.modules["mynet"]
    net = importlib.import_module("mynet").Net  # importable by name: torch.save pickles it by reference
    (tmp_path / "imported").unlink()
    return net


def _suggested(line: str, pattern: str) -> str:
    found = re.search(pattern, line)
    assert found, line
    return found.group(1)


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(size) for size in text.split("x"))


@pytest.mark.parametrize("model", ["mynet.py:Net", "net.pt"])
def test_an_input_with_the_batch_in_it_is_said_to_leave_it_out(net_file, model):
    """A factory or a TorchScript file has no default input to compare --input with: the
    forward fails on 1x1x3x32x32 (torch refuses it), and the error says what a built-in's says."""
    torch.jit.save(torch.jit.script(net_file().eval()), "net.pt")
    with pytest.raises(RuntimeError):  # torch's own verdict on the shape traced
        net_file()(torch.randn(1, 1, 3, 32, 32))
    result = cli("summary", model, "--input", "1x3x32x32")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "leaves the batch out (--batch sets it; Python: batch=)" in line
    meant = _suggested(line, r"did you mean --input (\S+)\?$")
    net_file()(torch.randn(1, *_shape(meant)))  # what it suggests, torch runs
    assert cli("summary", model, "--input", meant).exit_code == 0


@pytest.mark.parametrize(("model", "given"), [("resnet18", "224x224x3"), ("mynet.py:Net", "32x32x3")])
def test_an_input_with_the_channels_last_is_said_to_put_them_first(net_file, model, given):
    result = cli("summary", model, "--input", given)
    assert result.exit_code == 2
    meant = _suggested(one_error_line(result), r"\(channels come first: (\S+)\?\)$")
    assert sorted(_shape(meant)) == sorted(_shape(given)) and _shape(meant)[0] == 3  # Conv2d(3, ...) first
    assert cli("summary", model, "--input", meant).exit_code == 0


def test_a_batch_with_the_channels_last_too_is_given_both_fixes(net_file):
    line = one_error_line(cli("summary", "mynet.py:Net", "--input", "1x32x32x3"))
    assert _suggested(line, r"did you mean --input (\S+)\?$") == "3x32x32"


def test_an_input_of_one_channel_first_gets_no_hint_it_does_not_need(net_file):
    """1x32x32 is a grayscale image, not a batch put in: the hint would be wrong."""
    line = one_error_line(cli("summary", "mynet.py:Net", "--input", "1x32x32"))
    assert "did you mean" not in line and "channels come first" not in line


def test_a_whole_pickled_module_given_as_weights_is_said_to_be_analysed_directly(net_file):
    torch.save(net_file(), "whole_net.pt")
    assert isinstance(torch.load("whole_net.pt", weights_only=False), torch.nn.Module)  # torch's view of the file
    result = cli("summary", "mynet.py:Net", "--input", "3x32x32", "--weights", "whole_net.pt", "--trust-pickle")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "whole pickled module" in line and "not weights" in line
    command = _suggested(line, r"\(archprof (summary whole_net.pt --trust-pickle);")
    assert cli(*command.split(), "--input", "3x32x32").exit_code == 0


@pytest.mark.parametrize("spec", ["adir", "adir/", "d.pt", "d.pt/"])
def test_a_folder_given_as_the_model_is_said_to_be_one(tmp_path, monkeypatch, spec):
    (tmp_path / spec.rstrip("/")).mkdir()
    monkeypatch.chdir(tmp_path)
    result = cli("summary", spec)
    assert result.exit_code == 2
    assert f"cannot load '{spec}': it is a folder" in one_error_line(result)


def test_a_built_in_name_wins_over_a_folder_of_that_name(tmp_path, monkeypatch):
    (tmp_path / "lenet5").mkdir()
    monkeypatch.chdir(tmp_path)
    assert cli("summary", "lenet5").exit_code == 0


def test_a_python_file_without_its_factory_is_given_the_ones_it_defines_without_running_it(net_file, tmp_path):
    result = cli("summary", "mynet.py")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "(it defines Net, build)" in line and "_helper" not in line and "build_model" not in line
    assert not (tmp_path / "imported").exists()  # the file's code did not run
    example = _suggested(line, r"e\.g\. (\S+) ")
    assert example == "mynet.py:Net"
    assert cli("summary", example, "--input", "3x32x32").exit_code == 0


def test_a_python_file_defining_nothing_is_asked_for_its_factory_without_a_made_up_name(tmp_path, monkeypatch):
    (tmp_path / "empty.py").write_text("x = 1\n")
    monkeypatch.chdir(tmp_path)
    line = one_error_line(cli("summary", "empty.py"))
    assert "is a Python file: name the factory in it (empty.py:factory," in line


def test_a_batch_other_than_a_programs_fixed_one_is_said_to_be_dropped(net_file):
    program = torch.export.export(net_file().eval(), (torch.randn(2, 3, 32, 32),))
    with pytest.raises(AssertionError):  # torch's own verdict: the program takes batch 2 only
        program.module()(torch.randn(8, 3, 32, 32))
    torch.export.save(program, "net.pt2")
    result = cli("summary", "net.pt2", "--batch", "8")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "its batch is fixed: drop --batch (Python: batch=) or give 2" in line and "give that shape" not in line
    assert cli("summary", "net.pt2").exit_code == 0
    assert cli("summary", "net.pt2", "--batch", "2").exit_code == 0


def test_rf_help_says_what_each_format_writes():
    """The Markdown is the table shown (no receptive_field* columns); CSV and JSON the full report."""
    help_text = " ".join(cli("rf", "-h").output.replace("│", " ").split())
    assert "CSV, JSON and Markdown write the full report" not in help_text
    assert "CSV and JSON write the full report" in help_text
    assert "receptive_field" not in cli("rf", "lenet5", "-f", "markdown").output
    assert "receptive_field" in cli("rf", "lenet5", "-f", "csv").output.splitlines()[0]


class _FramesFolded(nn.Module):
    """Samples of one channel, T frames, folded into the batch for its Conv2d(1, ...); its head
    is built for the wrong number of frames, so a correct input fails past the convolution."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 8, 3), nn.Linear(9, 2)

    def forward(self, x):
        batch, channels, frames, height, width = x.shape
        pooled = self.conv(x.transpose(1, 2).reshape(batch * frames, channels, height, width)).mean((1, 2, 3))
        return self.fc(pooled.reshape(batch, frames))


class _PermutesItself(nn.Module):
    """Takes channels-last images and permutes them itself; its head has the wrong width."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 8, 3), nn.Linear(10, 2)

    def forward(self, x):
        return self.fc(self.conv(x.permute(0, 3, 1, 2)).flatten(1))


@pytest.mark.parametrize(("model", "given"), [(_FramesFolded(), (1, 16, 32, 32)), (_PermutesItself(), (32, 32, 3))])
def test_a_correct_input_failing_past_the_convolution_gets_no_shape_it_would_fail_at(model, given):
    """The hint named a shape from the first convolution alone: for these inputs, right for
    their models, it said "did you mean --input 16x32x32?" and "channels come first:
    3x32x32?", shapes torch refuses earlier still. The oracle: torch runs the given shape past
    the convolution and fails in the head, and fails at once at the one the hint would name."""
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        model(torch.randn(1, *given))
    with pytest.raises(ArchprofError) as raised:
        archprof.analyze(model, input_size=given)
    assert "did you mean" not in str(raised.value) and "channels come first" not in str(raised.value)


def test_a_large_python_file_is_not_parsed_for_its_factories(tmp_path, monkeypatch):
    """Naming a file's factories parsed the whole file: 30 s and 5 GB for a 12 MB one."""
    monkeypatch.chdir(tmp_path)
    big = tmp_path / "big.py"
    big.write_text("class Net:\n    pass\n" + "x = 1\n" * 200_000)
    result = cli("summary", "big.py")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "big.py:factory" in line and "Net" not in line


@pytest.mark.parametrize(
    "args, option",
    [
        (("check", "lenet5", "--max-params", "10K", "--max-params", "100M"), "--max-params"),
        (("check", "lenet5", "--max-params", "100M", "--max-params=10K"), "--max-params"),
        (("summary", "lenet5", "-f", "csv", "--format", "json"), "--format"),
    ],
)
def test_an_option_of_one_value_given_twice_is_refused(args, option):
    """Click keeps the last value silently: a stricter limit added before a looser one was lost."""
    result = cli(*args)
    assert result.exit_code == 2
    assert f"{option} is given twice" in one_error_line(result)


def test_a_flag_given_twice_still_runs():
    result = cli("summary", "lenet5", "-f", "csv", "--train", "--train")
    assert result.exit_code == 0, result.output
    assert "training_flops" in result.stdout.splitlines()[0]
