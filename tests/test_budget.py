"""Budgets: limits with units, `archprof check` exit codes, budget files, JUnit XML and the
GitHub step summary."""

import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

import archprof
from archprof.budget import evaluate, parse_limit
from archprof.budget.files import load_budget_file
from archprof.cli import app
from archprof.errors import ArchprofError
from archprof.report import Report
from tests.markdown_tables import first_table, html_in

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RESNET50_PARAMS = 25_557_032
RESNET50_MACS = 4_089_184_256


def invoke(*args, env=None):
    return runner.invoke(app, list(args), env={"COLUMNS": "120", "GITHUB_STEP_SUMMARY": "", **(env or {})})


def one_error_line(result) -> str:
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


# -- numbers with units ------------------------------------------------------------------


def test_limits_parse_by_the_unit_of_their_metric():
    assert parse_limit("max-params", "30M").threshold == 30_000_000
    assert parse_limit("max-activation", "200MiB").threshold == 200 * 2**20
    assert parse_limit("min-receptive-field", 200).threshold == 200
    assert parse_limit("max-peak-memory", "1_000MB").threshold == 10**9  # the one grammar of archprof.units
    assert parse_limit("max-params", "1.5e9").threshold == 1_500_000_000
    with pytest.raises(ArchprofError, match="max-macs"):
        parse_limit("max-macs", "5Q")


# -- archprof check on the command line ----------------------------------------------------


def test_every_limit_within_budget_exits_0():
    result = invoke(
        "check",
        "resnet50",
        *("--max-params", "30M", "--max-macs", "5G", "--max-flops", "8.2G", "--max-activation", "200MB"),
        *("--max-peak-memory", "1GB", "--min-receptive-field", "200"),
    )
    assert result.exit_code == 0, result.output
    assert "25.56 M" in result.output and "+4.44 M (+14.8%)" in result.output
    assert result.output.count("pass") >= 6 and "FAIL" not in result.output


def test_one_limit_exceeded_exits_1_and_says_which():
    result = invoke("check", "resnet50", "--max-params", "20M", "--max-macs", "5G")
    assert result.exit_code == 1, result.output
    row = next(line for line in result.output.splitlines() if "max-params" in line)
    assert "FAIL" in row and "-5.56 M" in row
    assert "1 of 2 limits exceeded" in result.output
    assert "error:" not in result.output


def test_the_limit_itself_passes():
    assert invoke("check", "resnet50", "--max-params", str(RESNET50_PARAMS)).exit_code == 0
    assert invoke("check", "resnet50", "--max-params", str(RESNET50_PARAMS - 1)).exit_code == 1


def test_a_minimum_receptive_field_fails_below_it():
    assert invoke("check", "resnet50", "--min-receptive-field", "427").exit_code == 0
    result = invoke("check", "resnet50", "--min-receptive-field", "500")
    assert result.exit_code == 1
    assert " 427x427 " in result.output and "-73 px" in result.output  # its smallest side 73 short of 500


def test_input_and_batch_change_what_is_checked():
    # MACs scale with the batch and the input area.
    assert invoke("check", "resnet50", "--max-macs", "5G", "--batch", "2").exit_code == 1
    assert invoke("check", "resnet50", "--max-macs", "5G", "--input", "3x112x112", "--batch", "2").exit_code == 0


def test_training_memory_budget():
    ok = invoke("check", "mobilenet_v2", "--max-training-memory", "1GB", "--optimizer", "adam")
    assert ok.exit_code == 0, ok.output
    assert invoke("check", "mobilenet_v2", "--max-training-memory", "10MB").exit_code == 1
    assert invoke("check", "mobilenet_v2", "--max-training-memory", "1GB", "--optimizer", "lion").exit_code == 2


def test_an_empty_config_name_is_refused_as_empty_not_read_as_the_folder():
    result = invoke("check", "--config", "")
    assert result.exit_code == 2
    assert "'--config' / '-c': it is empty: give a file name" in one_error_line(result)


def test_an_optimizer_no_limit_reads_is_refused(tmp_path, monkeypatch):
    """--optimizer changes only max-training-memory: without that limit it would change nothing
    and pass unnoticed (exit 0), where `memory` refuses it without --train."""
    result = invoke("check", "lenet5", "--max-params", "1M", "--optimizer", "adam")
    assert result.exit_code == 2
    assert (
        one_error_line(result)
        == "error: --optimizer applies to --max-training-memory: add that limit, or drop --optimizer"
    )
    monkeypatch.chdir(tmp_path)
    (tmp_path / "archprof.toml").write_text('[[models]]\nname = "lenet5"\nmax-params = "1M"\n')
    assert invoke("check", "--optimizer", "adam").exit_code == 2
    (tmp_path / "archprof.toml").write_text(
        '[[models]]\nname = "lenet5"\nmax-params = "1M"\nmax-training-memory = "1GB"\n'
    )
    assert invoke("check", "--optimizer", "adam").exit_code == 0


def test_a_budget_file_takes_any_optimizer_archprof_names(tmp_path, monkeypatch):
    """lenet5's step with RAdam (two moments, its update five temporaries of fc1's weight) needs
    more than with SGD: a limit between the two holds for one only."""
    sgd = archprof.analyze("lenet5", training=True).totals.training_peak_bytes
    radam = archprof.analyze("lenet5", training=True, optimizer="radam").totals.training_peak_bytes
    assert sgd < radam
    monkeypatch.chdir(tmp_path)
    entry = f'[[models]]\nname = "lenet5"\nmax-training-memory = "{sgd}"\n'
    write(tmp_path / "archprof.toml", entry)
    assert invoke("check").exit_code == 0
    write(tmp_path / "archprof.toml", entry + 'optimizer = "RAdam"\n')
    assert invoke("check").exit_code == 1
    write(tmp_path / "archprof.toml", entry + 'optimizer = "lion"\n')
    result = invoke("check")
    assert result.exit_code == 2 and "unknown optimizer 'lion'; choose one of sgd, momentum, nesterov" in result.output


def test_a_margin_under_a_tenth_of_a_percent_is_not_shown_as_zero():
    """lenet5 (61,706 parameters) over max-params 61705 by one: the margin read "-1 (-0.0%)"
    beside FAIL; exactly at the limit it is "+0 (+0.0%)"."""
    over = invoke("check", "lenet5", "--max-params", "61705")
    assert over.exit_code == 1 and "-1 (-<0.1%)" in over.stdout and "0.0%" not in over.stdout
    at = invoke("check", "lenet5", "--max-params", "61706")
    assert at.exit_code == 0 and "+0 (+0.0%)" in at.stdout


def test_a_margin_of_nearly_the_whole_limit_is_not_shown_as_all_of_it():
    """lenet5's 61,706 parameters under max-params 200M leave 199,938,294 of 200,000,000:
    99.969%, which read "100.0%", as if the model had no parameters."""
    result = invoke("check", "lenet5", "--max-params", "200M")
    assert result.exit_code == 0 and "(>+99.9%)" in result.stdout and "100.0%" not in result.stdout


def test_a_training_memory_verdict_names_its_optimizer(tmp_path, monkeypatch):
    """Two entries of one model and input, one limit each, sgd and adam: the rows read the
    same, "max-training-memory 1MB", one passing and one failing, and nothing said which
    optimizer failed (table, JUnit, step summary)."""
    monkeypatch.chdir(tmp_path)
    adam = archprof.analyze("lenet5", training=True, optimizer="adam").totals.training_peak_bytes
    entries = "".join(
        f'[[models]]\nname = "lenet5"\noptimizer = "{name}"\nmax-training-memory = "{adam - 1}"\n\n'
        for name in ("sgd", "adam")
    )
    write(tmp_path / "archprof.toml", entries)
    summary, junit = tmp_path / "summary.md", tmp_path / "budget.xml"
    result = invoke("check", "--junit", str(junit), env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert result.exit_code == 1, result.output
    rows = [line.split() for line in result.stdout.splitlines() if "max-training-memory" in line]
    assert [(row[2], row[-1]) for row in rows] == [("(sgd)", "pass"), ("(adam)", "FAIL")]
    cases = ET.parse(junit).getroot().findall(".//testcase")
    at = "at 1x1x32x32, float32"  # a test each to a CI's reporter, with the entry's input and dtype
    assert [case.get("name") for case in cases] == [
        f"max-training-memory (sgd) {at}",
        f"max-training-memory (adam) {at}",
    ]
    assert "(adam)" in cases[1].find("failure").get("message")
    assert f"`max-training-memory {adam - 1} (adam)` |" in summary.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--max-params", "30Q"), "--max-params: cannot read the count '30Q'"),
        (("--max-params=-5M",), "--max-params"),
        (("--max-params", ""), "--max-params: cannot read the count ''"),
        (("--max-activation", "200QB"), "--max-activation"),
        (("--max-macs", "1.2345K"), "not a whole number"),
    ],
)
def test_unreadable_limits_exit_2_not_1(args, message):
    result = invoke("check", "resnet50", *args)
    assert result.exit_code == 2, result.output
    assert message in one_error_line(result)


def test_bad_model_and_bad_combinations_exit_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no budget file here
    cases = [
        (("check", "resnet5", "--max-params", "30M"), "unknown model 'resnet5'"),
        (("check", "--max-params", "30M"), "need a model"),
        (("check",), "nothing to check"),
        (("check", "resnet50"), "nothing to check"),
        (("check", "resnet50", "--max-params", "30M", "--batch", "0"), "at least 1"),
        (("check", "resnet50", "--max-params", "30M", "--input", "3x224"), "dimensions"),
        (("check", "nosuchmodule_xyz:factory", "--max-params", "1M", "--input", "3x8x8"), "cannot import"),
    ]
    for args, message in cases:
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in one_error_line(result), args


def test_a_metric_this_archprof_cannot_compute_is_not_available(monkeypatch):
    import archprof.analysis

    build_report = archprof.analysis.build_report

    def without_receptive_field(*args, **kwargs):
        report = build_report(*args, **kwargs)
        del report.columns["receptive_field"]
        return report

    monkeypatch.setattr(archprof.analysis, "build_report", without_receptive_field)
    result = invoke("check", "resnet50", "--min-receptive-field", "200")
    assert result.exit_code == 2
    assert "not available" in one_error_line(result)

    class Totals:  # as a report of an archprof without the memory pass has them
        param_count = 1

    class WithoutMemoryPass(Report):
        totals = Totals()

    report = archprof.analyze("lenet5")
    report.__class__ = WithoutMemoryPass
    with pytest.raises(ArchprofError, match="max-peak-memory: peak memory is not available"):
        evaluate(report, [parse_limit("max-peak-memory", "1GB")])


def test_a_model_without_a_spatial_layer_has_no_receptive_field():
    result = invoke("check", "tests/models.py:FlattenedClassifier", "-i", "1x32x32", "--min-receptive-field", "10")
    assert result.exit_code == 2
    assert "no layer with a spatial receptive field" in one_error_line(result)


# -- JUnit XML and the GitHub step summary ---------------------------------------------------


def test_junit_has_one_testcase_per_limit_and_a_failure_per_exceeded_one(tmp_path):
    target = tmp_path / "budget.xml"
    args = ("--max-params", "20M", "--max-macs", "5G", "--max-activation", "100MB", "--junit", str(target))
    result = invoke("check", "resnet50", *args)
    assert result.exit_code == 1
    root = ET.parse(target).getroot()
    assert root.tag == "testsuites"
    cases = root.findall(".//testcase")
    at = "at 1x3x224x224, float32"
    assert [case.get("name") for case in cases] == [f"max-params {at}", f"max-macs {at}", f"max-activation {at}"]
    failed = [case.get("name") for case in cases if case.find("failure") is not None]
    assert failed == [f"max-params {at}", f"max-activation {at}"]
    assert root.get("tests") == "3" and root.get("failures") == "2"
    assert "25.56 M" in cases[0].find("failure").get("message")
    assert [p.name for p in tmp_path.iterdir()] == ["budget.xml"]  # written atomically, nothing left over


def test_a_receptive_field_that_is_an_upper_bound_is_marked_in_every_verdict(tmp_path):
    """UnshuffledChannelPicked's unit reads 1 px (its gradient: tests/test_compare.py) where
    archprof gives the 2 px of its block, an upper bound: the table, the step summary and the
    JUnit XML show '≤2x2'; PooledBlock's exact 4x4 is shown bare. A minimum against the bound
    cannot be shown to hold (tests/test_budget_entries.py): the bound's verdict fails, with its note."""
    summary, junit = tmp_path / "summary.md", tmp_path / "budget.xml"
    models = ("tests/models.py:UnshuffledChannelPicked", "tests/models.py:PooledBlock")
    args = ("--input", "1x8x8", "--min-receptive-field", "1", "--junit", str(junit))
    result = invoke("check", *models, *args, env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert result.exit_code == 1, result.output
    rows = [line for line in result.stdout.splitlines() if line.startswith(" min-receptive-field")]
    assert [row.split()[2] for row in rows] == ["≤2x2", "4x4"]
    assert "| ≤2x2 |" in summary.read_text() and "| 4x4 |" in summary.read_text()
    unshuffled, pooled = ET.parse(junit).getroot().iter("testcase")
    assert unshuffled.find("failure").text.startswith("Receptive field ≤2x2 (2 px, its smallest side) at input")
    assert pooled.find("system-out").text.startswith("Receptive field 4x4 (4 px, its smallest side)")


def test_junit_into_a_missing_directory_exits_2(tmp_path):
    result = invoke("check", "lenet5", "--max-params", "1M", "--junit", str(tmp_path / "nope" / "x.xml"))
    assert result.exit_code == 2
    assert "does not exist" in one_error_line(result)


def test_github_step_summary_is_appended(tmp_path):
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n")
    env = {"GITHUB_STEP_SUMMARY": str(summary)}
    assert invoke("check", "resnet50", "--max-params", "30M", env=env).exit_code == 0
    assert invoke("check", "resnet50", "--max-params", "20M", env=env).exit_code == 1
    text = summary.read_text()
    assert text.startswith("# earlier step\n")
    assert "the 1 limit holds" in text and "1 of 1 limit exceeded" in text  # not "all 1 limits hold"
    assert "| `resnet50` | 1x3x224x224 | float32 | `max-params 30M` | 25.56 M |" in text
    assert "**FAIL**" in text


def test_without_github_step_summary_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert invoke("check", "lenet5", "--max-params", "1M").exit_code == 0
    assert list(tmp_path.iterdir()) == []


# -- budget files ----------------------------------------------------------------------------

BUDGET = """\
[[models]]
name = "resnet50"
input = "3x224x224"
max-params = "30M"
max-macs = "5G"

[[models]]
name = "mobilenet_v2"
batch = 2
max-params = "4M"
max-activation = "200MiB"
"""


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_check_without_a_model_checks_every_model_of_archprof_toml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "archprof.toml", BUDGET)
    junit = tmp_path / "out.xml"
    result = invoke("check", "--junit", str(junit))
    assert result.exit_code == 0, result.output
    assert "resnet50" in result.output and "mobilenet_v2" in result.output and "2x3x224x224" in result.output
    assert len(ET.parse(junit).getroot().findall(".//testcase")) == 4


def test_a_model_named_alone_takes_its_entries_from_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "archprof.toml", BUDGET)
    result = invoke("check", "mobilenet_v2")
    assert result.exit_code == 0
    assert "mobilenet_v2" in result.output and "resnet50" not in result.output
    assert invoke("check", "mobilenet_v2", "--batch", "64").exit_code == 1  # the command line overrides the file
    result = invoke("check", "vgg16")
    assert result.exit_code == 2 and "no entry for 'vgg16'" in one_error_line(result)


def test_several_models_on_the_command_line_are_each_held_to_the_limits(tmp_path):
    """resnet50 has 25,557,032 parameters, lenet5 61,706: a 1M limit holds for one only."""
    junit = tmp_path / "out.xml"
    result = invoke("check", "lenet5", "resnet50", "--max-params", "1M", "--jobs", "2", "--junit", str(junit))
    assert result.exit_code == 1, result.output
    suites = ET.parse(junit).getroot().findall("testsuite")
    failed = {suite.get("name"): suite.find("testcase/failure") is not None for suite in suites}
    assert failed == {"lenet5 (1x1x32x32, float32)": False, "resnet50 (1x3x224x224, float32)": True}
    assert invoke("check", "lenet5", "resnet50", "--max-params", "30M").exit_code == 0


def test_several_models_named_alone_take_their_entries_from_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "archprof.toml", BUDGET + '\n[[models]]\nname = "lenet5"\nmax-params = "1"\n')
    result = invoke("check", "mobilenet_v2", "resnet50")
    assert result.exit_code == 0, result.output
    assert "mobilenet_v2" in result.output and "resnet50" in result.output and "lenet5" not in result.output
    assert invoke("check", "mobilenet_v2", "lenet5").exit_code == 1  # lenet5's entry of the file fails
    result = invoke("check", "mobilenet_v2", "vgg16")
    assert result.exit_code == 2 and "no entry for 'vgg16'" in one_error_line(result)


def test_a_model_whose_forward_fails_is_named_among_several(tmp_path):
    """lenet5 refuses a 3x64x64 input: with several models on the command line, the error
    said why but not whose forward it was."""
    result = invoke("check", "resnet18", "lenet5", "-i", "3x64x64", "--max-params", "30M")
    assert result.exit_code == 2
    assert one_error_line(result).startswith("error: lenet5: ")


def test_a_model_that_cannot_be_checked_exits_2_without_hiding_the_others(tmp_path, monkeypatch):
    """One broken entry of three: the others' verdicts are still shown and written (table,
    JUnit, step summary; lenet5's exceeded limit among them), the broken one is named in an
    error line, in the JUnit as an <error> and in the summary, and the exit status is 2. It
    was one error line alone: every other verdict hidden."""
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path / "archprof.toml",
        """\
        [[models]]
        name = "lenet5"
        max-params = "61705"

        [[models]]
        name = "no<such>&model"
        max-params = "1M"

        [[models]]
        name = "lenet5"
        batch = 2
        max-macs = "1G"
        """,
    )
    summary = tmp_path / "summary.md"
    outputs = []
    for jobs in ("1", "2"):
        junit = tmp_path / f"budget{jobs}.xml"
        result = invoke("check", "--junit", str(junit), "--jobs", jobs, env={"GITHUB_STEP_SUMMARY": str(summary)})
        assert result.exit_code == 2, result.output
        error = one_error_line(result)
        assert error.startswith("error: archprof.toml, line 6: unknown model 'no<such>&model'")
        assert "1x1x32x32" in result.stdout and "2x1x32x32" in result.stdout and "FAIL" in result.stdout
        # The last line is the run's verdict: an error, never "pass" (nor "FAIL" alone).
        last = result.stdout.strip().splitlines()[-1]
        assert last.startswith("ERROR: 1 model could not be checked") and "of the models checked, 1 of" in last
        root = ET.parse(junit).getroot()
        assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("3", "1", "1")
        suites = {suite.get("name"): suite for suite in root.findall("testsuite")}
        assert list(suites) == ["lenet5 (1x1x32x32, float32)", "no<such>&model", "lenet5 (2x1x32x32, float32)"]
        assert "unknown model" in suites["no<such>&model"].find("testcase/error").get("message")
        outputs.append((result.stdout, junit.read_text()))
    assert outputs[0] == outputs[1]
    text = summary.read_text()
    assert text.count("could not be checked") == 2 and "`no<such>&model`" in text and "**FAIL**" in text
    rows = first_table(text)
    assert [len(row) for row in rows] == [7] * 4 and not html_in(text)
    assert rows[2][0] == "no<such>&model" and "unknown model 'no<such>&model'" in rows[2][3]


def test_pyproject_tool_archprof_and_config_option(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pyproject = write(
        tmp_path / "pyproject.toml",
        """\
        [project]
        name = "mine"

        [[tool.archprof.models]]
        name = "resnet50"
        max-params = "20M"
        """,
    )
    result = invoke("check")
    assert result.exit_code == 1, result.output
    assert "resnet50" in result.output
    write(tmp_path / "archprof.toml", BUDGET)  # archprof.toml wins over pyproject.toml
    assert invoke("check").exit_code == 0
    assert invoke("check", "--config", str(pyproject)).exit_code == 1
    assert invoke("check", "resnet50", "--max-params", "1M", "--config", str(pyproject)).exit_code == 2


def test_the_example_budget_file_passes():
    result = invoke("check", "--config", str(EXAMPLES / "archprof.toml"))
    assert result.exit_code == 0, result.output
    assert "my_models:small_cnn" in result.output


def test_a_factory_spec_loads_from_the_budget_files_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    write(
        tmp_path / "models" / "budget_nets.py",
        """\
        import torch

        def tiny():
            return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())

        def broken():
            raise RuntimeError("no weights here")

        NOT_A_FACTORY = 3
        """,
    )
    write(
        tmp_path / "models" / "archprof.toml",
        """\
        [[models]]
        name = "budget_nets:tiny"
        input = "3x16x16"
        max-params = 224
        max-macs = "1K"
        """,
    )
    result = invoke("check", "--config", "models/archprof.toml")
    assert result.exit_code == 1, result.output  # 224 parameters fit; 8*14*14*27 = 42,336 MACs do not
    assert "budget_nets:tiny" in result.output
    cases = [
        ('name = "budget_nets:broken"\ninput = "3x16x16"', "model factory 'budget_nets:broken' failed"),
        ('name = "budget_nets:NOT_A_FACTORY"\ninput = "3x16x16"', "not a factory"),
        ('name = "budget_nets:missing"\ninput = "3x16x16"', "has no 'missing'"),
        ('name = "budget_nets:tiny"', "no default input"),
    ]
    for entry, message in cases:
        write(tmp_path / "models" / "archprof.toml", f'[[models]]\n{entry}\nmax-params = "1M"\n')
        result = invoke("check", "--config", "models/archprof.toml")
        assert result.exit_code == 2, entry
        error = one_error_line(result)
        assert message in error and "archprof.toml, line 2" in error, error


def test_each_entry_takes_its_own_factory_arguments_weights_and_folding(tmp_path, monkeypatch):
    """One -a on the command line went to every entry: a file of factories taking different
    arguments could not be checked (lenet5() got an unexpected keyword argument 'width')."""
    import torch

    from archprof.budget import check_entries
    from archprof.budget.files import plan_check
    from archprof.load import load_model

    monkeypatch.chdir(tmp_path)
    write(
        tmp_path / "nets.py",
        """\
        import torch

        def net(width=8):
            return torch.nn.Sequential(torch.nn.Conv2d(3, width, 3), torch.nn.BatchNorm2d(width))

        def two_blocks():
            return torch.nn.Sequential(net(), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3), torch.nn.BatchNorm2d(4))
        """,
    )
    write(
        tmp_path / "archprof.toml",
        """\
        [[models]]
        name = "nets:net"
        input = "3x8x8"
        args = { width = 16 }
        max-params = "1M"

        [[models]]
        name = "lenet5"
        max-params = "1M"
        """,
    )
    entries = plan_check([], {})
    assert [dict(entry.options.args) for entry in entries] == [{"width": 16}, {}]
    params = [verdict.value for verdict in check_entries(entries, jobs=1)]
    assert params == [3 * 16 * 9 + 16 + 2 * 16, archprof.analyze("lenet5").totals.param_count]  # conv, batch norm
    assert invoke("check").exit_code == 0
    assert invoke("check", "--arg", "width=4").exit_code == 2  # the command line's in every entry's place

    with torch.device("meta"):
        shapes = {name: tensor.shape for name, tensor in load_model("nets:two_blocks").module.state_dict().items()}
    torch.save({name: torch.zeros(shape) for name, shape in shapes.items()}, tmp_path / "blocks.pt")
    folded = archprof.analyze("nets:two_blocks", input_size=(3, 8, 8), fold_bn=True).totals.param_count
    write(
        tmp_path / "archprof.toml",
        f"""\
        [[models]]
        name = "nets:two_blocks"
        input = "3x8x8"
        weights = "blocks.pt"
        fold-bn = true
        max-params = {folded}
        """,
    )
    (entry,) = plan_check([], {})
    assert entry.options.weights == Path("blocks.pt") and entry.options.fold_bn and not entry.options.trust_pickle
    (verdict,) = check_entries([entry], jobs=1)
    assert verdict.value == folded < archprof.analyze("nets:two_blocks", input_size=(3, 8, 8)).totals.param_count
    assert invoke("check").exit_code == 0  # the folded count, exactly at its limit


@pytest.mark.parametrize(
    ("text", "messages"),
    [
        (BUDGET.replace('max-macs = "5G"', 'max-mac = "5G"'), ["line 5", "unknown key 'max-mac'", "max-macs"]),
        (BUDGET.replace('max-activation = "200MiB"', 'max-activation = "200QB"'), ["line 11", "max-activation"]),
        (BUDGET.replace('max-params = "4M"', 'max-params = "-4M"'), ["line 10", "max-params", "-4M"]),
        (BUDGET.replace('max-macs = "5G"', "max-macs = 5G"), ["not valid TOML", "line 5"]),
        (BUDGET.replace("batch = 2", "batch = 0"), ["line 9", "batch"]),
        (BUDGET.replace('input = "3x224x224"', 'input = "3x224"'), ["line 2", "input 3x224 has 2 dimensions"]),
        (BUDGET.replace('input = "3x224x224"', 'input = "3x0x224"'), ["line 3", "input"]),
        (BUDGET.replace('name = "mobilenet_v2"', 'name = "mobilenet_v3"'), ["line 8", "unknown model 'mobilenet_v3'"]),
        (BUDGET.replace('name = "mobilenet_v2"\n', ""), ["line 7", "no 'name'"]),
        ('[[models]]\nname = "resnet50"\n', ["line 1", "sets no limit"]),
        ('max-params = "30M"\n', ["line 1", "unknown key 'max-params'"]),
        ("", ["no models to check"]),
        ('[[models]]\nname = "resnet50"\ndtype = "float8"\nmax-params = "1M"\n', ["line 3", "unknown dtype 'float8'"]),
        ('[[models]]\nname = "resnet50"\ndtype = [1]\nmax-params = "1M"\n', ["line 3", "unknown dtype [1]"]),
        ('[[models]]\nname = "resnet50"\ndtype = {a = 1}\nmax-params = "1M"\n', ["line 3", "unknown dtype {'a': 1}"]),
        ('[[model]]\nname = "lenet5"\nmax-params = "1M"\n', ["line 1", "unknown key 'model'", "'models'"]),
        (
            '[[models]]\nname = "lenet5"\nmax-params = "1M"\n\n[models.extra]\nx = 1\n',
            ["line 5", "unknown key 'extra'"],
        ),
        ('[[models]]\nname = "lenet5"\nargs = 3\nmax-params = "1M"\n', ["line 3", "args: expected a table"]),
        ('[[models]]\nname = "lenet5"\nweights = 1\nmax-params = "1M"\n', ["line 3", "weights: expected a state-dict"]),
        ('[[models]]\nname = "lenet5"\nfold-bn = "yes"\nmax-params = "1M"\n', ["line 3", "expected true or false"]),
        ('[[models]]\nname = "lenet5"\nmax-params = ' + "[" * 2000 + "]" * 2000 + "\n", ["not valid TOML", "nested"]),
    ],
)
def test_a_malformed_budget_file_names_the_line_and_key(tmp_path, monkeypatch, text, messages):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "archprof.toml").write_text(text)
    result = invoke("check")
    assert result.exit_code == 2, result.output
    error = one_error_line(result)
    assert "archprof.toml" in error
    for message in messages:
        assert message in error, (message, error)


def test_a_pyproject_nested_too_deeply_is_found_and_refused_in_one_line(tmp_path, monkeypatch):
    """tomllib reads nested arrays by recursion: 2,000 deep raised RecursionError, a traceback."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "pyproject.toml", "[tool.archprof]\nx = " + "[" * 2000 + "]" * 2000 + "\n")
    result = invoke("check")
    assert result.exit_code == 2, result.output
    assert "pyproject.toml: not valid TOML: nested too deeply" in one_error_line(result)


@pytest.mark.parametrize("name", ["archprof.toml", "pyproject.toml"])
def test_an_integer_longer_than_python_reads_is_refused_in_one_line(tmp_path, monkeypatch, name):
    """tomllib raises ValueError (Python's 4,300-digit limit on int()), not TOMLDecodeError: a traceback."""
    monkeypatch.chdir(tmp_path)
    table = "[[tool.archprof.models]]" if name == "pyproject.toml" else "[[models]]"
    write(tmp_path / name, f'{table}\nname = "lenet5"\nmax-params = {"9" * 5000}\n')
    result = invoke("check")
    assert result.exit_code == 2, result.output
    assert f"{name}: not valid TOML" in one_error_line(result)


@pytest.mark.parametrize("tool", ["5", '"archprof"', '["archprof"]'])
def test_a_pyproject_whose_tool_is_not_a_table_has_no_budget(tmp_path, monkeypatch, tool):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "pyproject.toml", f"tool = {tool}\n")
    result = invoke("check")
    assert result.exit_code == 2, result.output
    assert "nothing to check" in one_error_line(result)


def test_a_pyproject_without_tool_archprof_is_an_error(tmp_path):
    path = write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n')
    with pytest.raises(ArchprofError, match=r"no \[tool.archprof\] table"):
        load_budget_file(path)
    with pytest.raises(ArchprofError, match="does not exist"):
        load_budget_file(tmp_path / "missing.toml")


def test_underscored_keys_and_array_inputs_are_accepted(tmp_path):
    path = write(
        tmp_path / "archprof.toml",
        '[[models]]\nname = "lenet5"\ninput = [1, 32, 32]\nmax_params = 100_000\nmax_peak_memory = "1MiB"\n',
    )
    (entry,) = load_budget_file(path)
    assert entry.input_size == (1, 32, 32)
    assert [(limit.key, limit.threshold) for limit in entry.limits] == [
        ("max-params", 100_000),
        ("max-peak-memory", 2**20),
    ]


def test_the_verdict_line_counts_its_limits_in_words():
    """One limit: 'the 1 limit holds', '1 of 1 limit exceeded' (it said 'all 1 limits hold')."""
    one = invoke("check", "lenet5", "--max-params", "1M")
    assert one.exit_code == 0 and one.stdout.splitlines()[-1].strip() == "pass: the 1 limit holds", one.stdout
    over = invoke("check", "lenet5", "--max-params", "1K")
    assert over.exit_code == 1 and over.stdout.splitlines()[-1].strip() == "FAIL: 1 of 1 limit exceeded"
    two = invoke("check", "lenet5", "--max-params", "1M", "--max-macs", "1G")
    assert two.stdout.splitlines()[-1].strip() == "pass: all 2 limits hold"


def test_a_size_limit_in_binary_units_shows_its_value_and_margin_in_them():
    """max-peak-memory 512MiB read back 24.03 MiB against it, not 25.20 MB and +511.67 MB."""
    report = archprof.analyze("mobilenet_v2")
    peak = report.totals.peak_memory_bytes
    result = invoke("check", "mobilenet_v2", "--max-peak-memory", "512MiB", "-j", "1")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if "max-peak-memory" in line)
    margin = 512 * 2**20 - peak
    assert f"{peak / 2**20:.2f} MiB" in line and f"+{margin / 2**20:.2f} MiB" in line, line
    decimal = invoke("check", "mobilenet_v2", "--max-peak-memory", "600MB", "-j", "1")
    assert f"{peak / 1e6:.2f} MB" in next(line for line in decimal.output.splitlines() if "max-peak-memory" in line)


def test_entries_that_differ_only_in_dtype_are_kept_apart_everywhere(tmp_path, monkeypatch):
    """Two entries of one model and input, float32 and bfloat16: parameter bytes halve, so
    a peak-memory limit between the two fails only float32's. The table, the step summary
    and the JUnit XML each keep them as two models, each named with its dtype (they were one
    'lenet5 · input 1x1x32x32' with both limits, one passed and one failed)."""
    peaks = {
        dtype: archprof.analyze("lenet5", dtype=dtype).totals.peak_memory_bytes for dtype in ("float32", "bfloat16")
    }
    assert peaks["bfloat16"] < peaks["float32"]
    limit = (peaks["bfloat16"] + peaks["float32"]) // 2
    monkeypatch.chdir(tmp_path)
    entries = "".join(f'[[models]]\nname = "lenet5"\ndtype = "{dtype}"\nmax-peak-memory = {limit}\n' for dtype in peaks)
    write(tmp_path / "archprof.toml", entries)
    summary, junit = tmp_path / "summary.md", tmp_path / "budget.xml"
    result = invoke("check", "--junit", str(junit), env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert result.exit_code == 1, result.output
    titles = [line.strip() for line in result.stdout.splitlines() if line.startswith("lenet5")]
    assert titles == [
        "lenet5  ·  input 1x1x32x32  ·  float32  ·  1 exceeded",
        "lenet5  ·  input 1x1x32x32  ·  bfloat16  ·  within budget",
    ]
    rows = [line for line in summary.read_text().splitlines() if line.startswith("| `lenet5`")]
    assert [row.split(" | ")[2] for row in rows] == ["float32", "bfloat16"]
    assert "(2 models)" not in summary.read_text()  # a failed check's title counts limits only
    suites = {suite.get("name"): suite.get("failures") for suite in ET.parse(junit).getroot().iter("testsuite")}
    assert suites == {"lenet5 (1x1x32x32, float32)": "1", "lenet5 (1x1x32x32, bfloat16)": "0"}


def test_the_step_summary_starts_on_a_line_of_its_own(tmp_path):
    """An earlier step that left no newline at the end: the title ran into its last line,
    and '### ...' in mid-line is no heading."""
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step, no newline")
    assert invoke("check", "lenet5", "--max-params", "1M", env={"GITHUB_STEP_SUMMARY": str(summary)}).exit_code == 0
    lines = summary.read_text().splitlines()
    assert lines[0] == "earlier step, no newline" and lines[1].startswith("### ✅ archprof budget")


def test_an_optimizer_in_a_budget_entry_without_a_training_limit_is_refused(tmp_path, monkeypatch):
    """As --optimizer is: only max-training-memory reads it, so alone it would change nothing."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "archprof.toml", '[[models]]\nname = "lenet5"\nmax-params = "1M"\noptimizer = "adam"\n')
    result = invoke("check")
    assert result.exit_code == 2
    assert one_error_line(result) == (
        "error: archprof.toml, line 4: optimizer: applies to max-training-memory: add that limit, or drop optimizer"
    )


def test_a_pyprojects_hints_name_its_own_table(tmp_path, monkeypatch):
    """In pyproject.toml the entries are [[tool.archprof.models]]; a hint of [[models]] would
    make a top-level table archprof never reads there."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "pyproject.toml", "[tool.archprof]\nmodel = 1\n")
    assert one_error_line(invoke("check")).endswith("list models as [[tool.archprof.models]]")
    write(tmp_path / "pyproject.toml", "[tool.archprof]\n")
    assert "add a [[tool.archprof.models]] entry" in one_error_line(invoke("check"))


@pytest.mark.parametrize(
    ("models", "where"),
    [
        ('[\n  { name = "lenet5", max-params = "1M" },\n  { name = "lenet5", max-params = "1X" },\n]', "model entry 2"),
        ('[{ name = "lenet5", max-params = "1M" }, { name = "lenet5", max-params = "1X" }]', "model entry 2"),
        ('[\n  { name = "lenet5", max-params = "1M" },\n  { name = "lenet5", max-macs = "1X" },\n]', "line 4"),
    ],
)
def test_an_inline_entry_is_named_by_its_line_only_where_that_line_is_sure(tmp_path, monkeypatch, models, where):
    """Entries written inline have no [[models]] line to count from: the first line holding
    the key was named, entry 1's, where entry 2's value was wrong."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "archprof.toml", f"# budgets\nmodels = {models}\n")
    error = one_error_line(invoke("check"))
    assert error.startswith(f"error: archprof.toml, {where}: max-"), error
    assert "cannot read the count '1X'" in error


def test_a_check_on_the_folded_view_says_so_in_the_table_junit_and_summary(tmp_path):
    """--fold-bn's verdicts looked like the model's own: nothing said BatchNorms were folded."""
    folded = archprof.analyze("resnet18", fold_bn=True).totals.param_count
    junit, summary = tmp_path / "budget.xml", tmp_path / "summary.md"
    limit = ("--max-params", str(folded))
    result = invoke(
        "check", "resnet18", *limit, "--fold-bn", "--junit", str(junit), env={"GITHUB_STEP_SUMMARY": str(summary)}
    )
    assert result.exit_code == 0, result.output  # exactly at the folded count
    assert "float32, BatchNorms folded" in " ".join(result.stdout.split())  # the title wraps to the table
    (suite,) = ET.parse(junit).getroot().findall("testsuite")
    assert suite.get("name") == "resnet18 (1x3x224x224, float32, BatchNorms folded)"
    assert first_table(summary.read_text())[1][2] == "float32, BatchNorms folded"
    plain = invoke("check", "resnet18", *limit)
    assert plain.exit_code == 1 and "folded" not in plain.stdout  # the model as it is: its BatchNorms' parameters


def test_an_entry_that_could_not_be_checked_shows_the_input_and_dtype_it_gives(tmp_path, monkeypatch):
    """Its summary row had Input and Dtype blank, its JUnit suite the model's name alone,
    where the entry names both (two broken entries of one model could not be told apart)."""
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path / "archprof.toml",
        """\
        [[models]]
        name = "no_such_model"
        input = "3x8x8"
        batch = 4
        dtype = "float16"
        max-params = "1M"

        [[models]]
        name = "no_such_model"
        max-params = "1M"
        """,
    )
    junit, summary = tmp_path / "budget.xml", tmp_path / "summary.md"
    result = invoke("check", "--junit", str(junit), env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert result.exit_code == 2
    rows = first_table(summary.read_text())
    assert [row[:3] for row in rows[1:]] == [["no_such_model", "4x3x8x8", "float16"], ["no_such_model", "", ""]]
    suites = [suite.get("name") for suite in ET.parse(junit).getroot().iter("testsuite")]
    assert suites == ["no_such_model (4x3x8x8, float16)", "no_such_model"]
