"""`archprof check`'s entries: the files an entry reads kept from its outputs, an exported
program's own batch, a minimum against an upper bound, entries told apart, and the line an
entry's error names (tests/test_budget.py has the rest)."""

import xml.etree.ElementTree as ET

import pytest
import torch
from torch import nn

import archprof
from archprof.budget import Limit, Verdict, evaluate, parse_limit
from archprof.metrics import METRICS
from tests.markdown_tables import first_table
from tests.test_budget import invoke, one_error_line, write

# LeNet-5's parameters by hand: conv 1->6 5x5 (150 + 6), conv 6->16 5x5 (2,400 + 16), fc
# 400->120 (48,000 + 120), 120->84 (10,080 + 84), 84->classes (84 c + c).
LENET5_PARAMS = {10: 156 + 2_416 + 48_120 + 10_164 + 850, 1000: 156 + 2_416 + 48_120 + 10_164 + 85_000}


def test_junit_and_the_step_summary_never_overwrite_an_entrys_own_weights(tmp_path, monkeypatch):
    """An entry's `weights = "w.pt"`, found beside its budget file, was not among the files
    --junit and GITHUB_STEP_SUMMARY must not name: --junit overwrote the checkpoint with XML
    (--weights on the command line was refused). Each is refused before any work, the
    checkpoint's bytes as they were."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "budgets"
    folder.mkdir()
    write(folder / "entry_weights_net.py", "import torch.nn as nn\ndef make():\n    return nn.Conv2d(3, 4, 3)\n")
    torch.save(nn.Conv2d(3, 4, 3).state_dict(), folder / "w.pt")
    before = (folder / "w.pt").read_bytes()
    budget = "budgets/archprof.toml"
    write(
        folder / "archprof.toml",
        '[[models]]\nname = "entry_weights_net:make"\ninput = "3x8x8"\nweights = "w.pt"\nmax-params = "1K"\n',
    )
    refused = invoke("check", "--config", budget, "--junit", "budgets/w.pt")
    assert refused.exit_code == 2
    assert one_error_line(refused) == (
        "error: --junit budgets/w.pt would overwrite the weights file 'budgets/w.pt': give another file name"
    )
    appended = invoke("check", "--config", budget, env={"GITHUB_STEP_SUMMARY": "budgets/w.pt"})
    assert appended.exit_code == 2
    assert "would append to the weights file 'budgets/w.pt'" in one_error_line(appended)
    assert (folder / "w.pt").read_bytes() == before
    assert invoke("check", "--config", budget).exit_code == 0  # still loads: 4*3*3*3 + 4 = 112 parameters


def test_an_exported_program_is_checked_at_its_own_batch(tmp_path, monkeypatch):
    """`check --help`: the batch is 1, or an exported program's. check forced 1 on a program
    exported at batch 4, which cannot be analysed there (exit 2), from options and budget
    files alike. MACs by hand: 4 samples x 4 channels x 14x14 outputs x 3x3x3 = 84,672."""
    monkeypatch.chdir(tmp_path)
    torch.export.save(torch.export.export(nn.Conv2d(3, 4, 3), (torch.randn(4, 3, 16, 16),)), "net.pt2")
    junit = tmp_path / "budget.xml"
    result = invoke("check", "net.pt2", "--max-macs", "84672", "--junit", str(junit))
    assert result.exit_code == 0, result.output
    assert "input 4x3x16x16" in result.stdout
    (case,) = ET.parse(junit).getroot().iter("testcase")
    assert case.get("name") == "max-macs at 4x3x16x16, float32"
    assert "(84,672) at input 4x3x16x16" in case.find("system-out").text
    assert invoke("check", "net.pt2", "--max-macs", "84671").exit_code == 1
    write(tmp_path / "archprof.toml", '[[models]]\nname = "net.pt2"\nmax-macs = 84672\n')
    assert invoke("check").exit_code == 0
    # An entry that fails is labelled with the batch it was to be analysed at, as its error says.
    write(tmp_path / "archprof.toml", '[[models]]\nname = "net.pt2"\ninput = "3x8x8"\nmax-macs = 84672\n')
    summary = tmp_path / "summary.md"
    failed = invoke("check", env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert failed.exit_code == 2 and "cannot be analysed at 4x3x8x8" in one_error_line(failed)
    assert first_table(summary.read_text())[1][1] == "4x3x8x8"


def test_a_minimum_receptive_field_is_not_met_by_an_upper_bound(tmp_path):
    """UnshuffledChannelPicked's unit reads one pixel (a pixel unshuffle's channel 0 reads
    pixel 2h, 2w alone), where archprof can only say ≤2x2. A minimum of 2 passed against that
    bound: it now fails, the table, JUnit and step summary saying why. A bound under the
    minimum fails as ever; an exact field at the minimum passes; a maximum is met by a bound
    within it (the true value is smaller still)."""
    junit, summary = tmp_path / "budget.xml", tmp_path / "summary.md"
    model = "tests/models.py:UnshuffledChannelPicked"
    args = ("--input", "1x8x8", "--min-receptive-field", "2", "--junit", str(junit))
    result = invoke("check", model, *args, env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert result.exit_code == 1, result.output
    assert "min-receptive-field 2 cannot be shown to hold: the field ≤2x2 is an upper bound" in result.stdout
    failure = next(ET.parse(junit).getroot().iter("testcase")).find("failure")
    assert failure.get("type") == "BudgetUnverifiable" and "cannot be shown to hold" in failure.get("message")
    text = summary.read_text()
    assert "❌ **FAIL**" in text and "cannot be shown to hold: the field ≤2x2 is an upper bound" in text

    report = archprof.analyze(model, input_size=(1, 8, 8))
    at_bound, over_bound = evaluate(report, [parse_limit("min-receptive-field", n) for n in (2, 3)])
    assert (at_bound.passed, at_bound.note != "") == (False, True)
    assert (over_bound.passed, over_bound.note) == (False, "")  # under the minimum whatever the true field
    assert invoke("check", "tests/models.py:PooledBlock", "-i", "1x8x8", "--min-receptive-field", "4").exit_code == 0
    at_most = Limit("max-receptive-field", METRICS["receptive-field"], "max", 2, "2")  # no option sets one
    assert Verdict("m", "1x1x8x8", at_most, 2, bound="an upper bound: ...", field=(2, 2)).passed


def test_entries_that_differ_only_in_args_are_two_tests(tmp_path, monkeypatch):
    """Two entries of lenet5 at one input and dtype, 10 and 1,000 classes: one table, one
    JUnit classname and testcase name twice (CI reporters merged them) and '(1 model)'. Each
    is now named with its args; ordinary names stay as they were."""
    monkeypatch.chdir(tmp_path)
    limit = LENET5_PARAMS[1000]
    write(
        tmp_path / "archprof.toml",
        "".join(
            f'[[models]]\nname = "lenet5"\nargs = {{ num_classes = {n} }}\nmax-params = {limit}\n\n'
            for n in LENET5_PARAMS
        ),
    )
    junit, summary = tmp_path / "budget.xml", tmp_path / "summary.md"
    result = invoke("check", "--junit", str(junit), env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert result.exit_code == 0, result.output
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    at = "max-params at 1x1x32x32, float32"
    assert [case.get("name") for case in cases] == [f"{at}, args num_classes=10", f"{at}, args num_classes=1000"]
    outs = [case.find("system-out").text for case in cases]
    assert [f"({LENET5_PARAMS[n]:,})" in out for n, out in zip(LENET5_PARAMS, outs, strict=True)] == [True, True]
    words = " ".join(result.stdout.split())  # the titles wrap to the tables' width
    for n in LENET5_PARAMS:
        assert f"lenet5 · input 1x1x32x32 · float32, args num_classes={n} · within budget" in words
    assert "all 2 limits hold (2 models)" in summary.read_text()


def test_entries_nothing_given_tells_apart_are_named_by_their_line(tmp_path, monkeypatch):
    """Two identical entries: their testcases are named by the line of their name."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "archprof.toml", '[[models]]\nname = "lenet5"\nmax-params = "1M"\n\n' * 2)
    junit = tmp_path / "budget.xml"
    assert invoke("check", "--junit", str(junit)).exit_code == 0
    names = [case.get("name") for case in ET.parse(junit).getroot().iter("testcase")]
    assert names == ["max-params at 1x1x32x32, float32, line 2", "max-params at 1x1x32x32, float32, line 6"]


@pytest.mark.parametrize("header", ['[["models"]]', "[['models']]", '[[ "models" ]]'])
def test_a_quoted_models_header_names_the_right_line(tmp_path, monkeypatch, header):
    """`[["models"]]` is `[[models]]` to TOML; it was not counted as a header, and entry 1's
    error named line 7, entry 2's."""
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path / "archprof.toml",
        f'{header}\nname = "lenet5"\nmax-params = "1Q"\n\n[[models]]\nname = "resnet18"\nmax-params = "30M"\n',
    )
    assert one_error_line(invoke("check")).startswith("error: archprof.toml, line 3: max-params: cannot read")


def test_headers_that_are_not_the_entries_name_each_entry_by_its_number(tmp_path, monkeypatch):
    """A header's text inside a multi-line string: three headers found for two entries, so
    entry 2's key was looked for after the false one, and line 6 (entry 1's) named."""
    monkeypatch.chdir(tmp_path)
    text = '[[models]]\nname = "lenet5"\nargs = { x = """\n[[models]]\n""" }\nmax-params = "1M"\n\n'
    write(tmp_path / "archprof.toml", text + '[[models]]\nname = "lenet5"\nmax-params = "1Q"\n')
    assert one_error_line(invoke("check")).startswith("error: archprof.toml, model entry 2: max-params: cannot read")
