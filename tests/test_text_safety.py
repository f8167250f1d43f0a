"""Text from the user's model in archprof's files: module names that a spreadsheet would run as
a formula, or whose control characters would break a CSV, a Markdown table or JUnit XML; and
figures too big for int64. Issue 12."""

import csv
import io
import json
import warnings
import xml.etree.ElementTree as ET
from html import escape
from pathlib import Path

import markdown_it
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import archprof
from archprof.cli import app
from archprof.comparison import comparison_markdown
from archprof.diff import diff, read_csv_layers, read_csv_report
from archprof.errors import ArchprofError
from archprof.render.html import report_html
from archprof.text import markdown_literal
from tests.markdown_tables import first_table, html_in
from tests.models import HOSTILE_NAMESPACE, CustomOperatorCalls, HostileNamespace

runner = CliRunner()

# Each first character makes Excel or LibreOffice read the cell as a formula (OWASP's list).
FORMULA_NAMES = ["=cmd|' /C calc'!A0", "+1", "@SUM(1)", "-2", "\tx", "\r=1+1"]
# A cell starting with ' is escaped too, so that archprof reads every name back exactly.
QUOTED_NAME = "'quoted"
# Characters that end a line for str.splitlines, a CSV reader or Markdown, or that XML 1.0 forbids.
CONTROL_NAMES = ["a\rb", "c\nd", "e\r\nf", "g\u2028h", "i\u2029j", "k\x85l", "m\x01n", "o\x1bp", "q|r", "s\\|t"]
FORMULA_CLASS = "=HYPERLINK(1)"  # a module class name is the user's text too
PADDED = "padded"  # a 3x3 conv, padding 1: its receptive field starts at -1x-1


def model_file(tmp_path: Path, names: list[str]) -> str:
    """A factory spec for a model with one conv per name (and a padded one), in tmp_path."""
    source = f"""\
from torch import nn

Hostile = type({FORMULA_CLASS!r}, (nn.Conv2d,), {{}})


class Named(nn.Module):
    def __init__(self):
        super().__init__()
        for name in {names!r}:
            self.add_module(name, nn.Conv2d(3, 3, 1))
        self.add_module({PADDED!r}, Hostile(3, 3, 3, padding=1))

    def forward(self, x):
        for module in self.children():
            x = module(x)
        return x
"""
    path = tmp_path / "named.py"
    path.write_text(source, encoding="utf-8")
    return f"{path}:Named"


def invoke(*args, env=None):
    return runner.invoke(app, list(args), env={"COLUMNS": "200", "GITHUB_STEP_SUMMARY": "", **(env or {})})


def summary_csv(spec: str, path: Path, *options: str) -> list[dict[str, str]]:
    result = invoke("summary", spec, *options, "-f", "csv", "-o", str(path))
    assert result.exit_code == 0, result.output
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def json_diff(old: str, new: str, *options: str) -> dict:
    result = invoke("diff", old, new, *options, "-f", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# -- formula injection ---------------------------------------------------------------------


def test_formula_names_are_neutralised_in_the_csv_and_read_back_exactly(tmp_path):
    names = [*FORMULA_NAMES, QUOTED_NAME]
    spec = model_file(tmp_path, names)
    report = tmp_path / "report.csv"
    rows = summary_csv(spec, report, "--input", "3x8x8")
    layers = [row["layer"] for row in rows]
    for name in names:
        assert "'" + name in layers, name  # OWASP: a leading single quote
    for row in rows:
        for column in ("layer", "module_type"):
            assert not row[column].startswith(("=", "+", "-", "@", "\t", "\r")), (column, row[column])
    padded = next(row for row in rows if row["layer"] == PADDED)
    assert padded["module_type"] == "'" + FORMULA_CLASS
    # archprof's own text and the numbers are left as they are.
    assert padded["receptive_field_start"] == "-1x-1"
    assert padded["param_count"] == str(3 * 3 * 3 * 3 + 3)

    side = read_csv_report(report)
    assert [row["layer"] for row in side.rows if row["layer"]] == [*names, PADDED]
    assert next(row for row in side.rows if row["layer"] == PADDED)["module_type"] == FORMULA_CLASS

    itself = json_diff(str(report), str(report))
    assert itself["layers"] == [] and itself["unchanged_layers"] == len(rows)
    against_the_model = json_diff(str(report), spec, "--input", "3x8x8")
    assert against_the_model["layers"] == [] and against_the_model["unchanged_layers"] == len(rows)


def test_the_diff_csv_neutralises_the_names_it_copies(tmp_path):
    spec = model_file(tmp_path, FORMULA_NAMES)
    report = tmp_path / "report.csv"
    summary_csv(spec, report, "--input", "3x8x8")
    result = invoke("diff", str(report), spec, "--input", "3x16x16", "-f", "csv")  # every output shape changes
    assert result.exit_code == 0, result.output
    *rows, final = csv.DictReader(io.StringIO(result.stdout, newline=""))
    assert {row["status"] for row in rows} == {"changed"} and final["status"] == "final"
    assert sorted(row["layer"] for row in rows) == sorted(["'" + name for name in FORMULA_NAMES] + [PADDED])
    padded = next(row for row in rows if row["layer"] == PADDED)
    assert padded["old_module_type"] == padded["new_module_type"] == "'" + FORMULA_CLASS
    assert int(padded["macs_change"]) == 3 * 3 * 3 * 3 * (16 * 16 - 8 * 8)  # C_out x C_in x 3 x 3 per output pixel


# -- control characters --------------------------------------------------------------------


def test_control_characters_round_trip_through_the_csv(tmp_path):
    spec = model_file(tmp_path, CONTROL_NAMES)
    report = tmp_path / "report.csv"
    rows = summary_csv(spec, report, "--input", "3x8x8")
    assert [row["layer"] for row in rows if row["layer"]] == [*CONTROL_NAMES, PADDED]
    side = read_csv_report(report)
    assert [row["layer"] for row in side.rows if row["layer"]] == [*CONTROL_NAMES, PADDED]
    loaded = pd.read_csv(report, keep_default_na=False)  # pandas reads the same cells
    assert [name for name in loaded["layer"] if name] == [*CONTROL_NAMES, PADDED]

    itself = json_diff(str(report), str(report))
    assert itself["layers"] == [] and itself["unchanged_layers"] == len(rows)
    against_the_model = json_diff(str(report), spec, "--input", "3x8x8")
    assert against_the_model["layers"] == [] and against_the_model["unchanged_layers"] == len(rows)


def test_the_markdown_table_keeps_its_columns_and_shows_control_characters(tmp_path):
    spec = model_file(tmp_path, CONTROL_NAMES)
    result = invoke("summary", spec, "--input", "3x8x8", "-f", "markdown")
    assert result.exit_code == 0, result.output
    rows = first_table(result.stdout)
    header = rows[0]
    assert header[:2] == ["Layer", "Type"]
    assert len(rows) == 1 + 1 + len(CONTROL_NAMES)  # header, the padded conv, one per name
    assert all(len(row) == len(header) for row in rows), [len(row) for row in rows]
    layers = [row[0] for row in rows[1:]]
    shown = ["a\\rb", "c\\nd", "e\\r\\nf", "g\\u2028h", "i\\u2029j", "k\\x85l", "m\\x01n", "o\\x1bp", "q|r", "s\\|t"]
    assert layers == [*shown, PADDED]

    report = tmp_path / "report.csv"
    summary_csv(spec, report, "--input", "3x8x8")
    changed = invoke("diff", str(report), spec, "--input", "3x16x16", "-f", "markdown")  # every layer changes
    assert changed.exit_code == 0, changed.output
    layer_rows = first_table(changed.stdout.split(" unchanged")[1])  # the table after the totals'
    assert all(len(row) == len(layer_rows[0]) for row in layer_rows)
    layer = layer_rows[0].index("Layer")
    assert [row[layer] for row in layer_rows[1:]] == [*shown, PADDED]


HTML_NAMES = ["<img src=x onerror=alert(1)>", "x</td><script>alert(2)</script>", "<!--c-->", "<mailto:a@b>", "a<b"]


def test_markdown_tables_show_names_that_look_like_html_as_text(tmp_path):
    """A renderer of Markdown (GitHub, an IDE's preview, a docs site) would take a module
    named "<img ...>" for HTML: the name must show as the text it is, in every table."""
    spec = model_file(tmp_path, HTML_NAMES)
    summary = invoke("summary", spec, "--input", "3x8x8", "-f", "markdown")
    assert summary.exit_code == 0, summary.output
    assert html_in(summary.stdout) == []
    assert [row[0] for row in first_table(summary.stdout)[1:]] == [*HTML_NAMES, PADDED]

    report = tmp_path / "report.csv"
    summary_csv(spec, report, "--input", "3x8x8")
    changed = invoke("diff", str(report), spec, "--input", "3x16x16", "-f", "markdown")
    assert changed.exit_code == 0, changed.output
    assert html_in(changed.stdout) == []
    header, *rows = first_table(changed.stdout.split(" unchanged")[1])  # the table after the totals'
    assert [row[header.index("Layer")] for row in rows] == [*HTML_NAMES, PADDED]


# Markdown's own syntax: an image is fetched wherever the file is viewed (a pull request, a
# job summary), a link is live; emphasis, code and strikethrough would change the name shown.
MARKDOWN_NAMES = ["![x](http://2130706433/track)", "[click](http://2130706433/p)", "*em*", "__b__", "~~s~~", "`c`"]
# A character reference would show as the character it names: "&lt;b&gt;" as "<b>".
MARKDOWN_NAMES += ["&lt;b&gt;", "&#60;i", "&#x3C;u"]


def test_markdown_shows_names_written_in_markdown_as_text(tmp_path):
    """In the summary's table and totals, and in explain's heading and tables."""
    spec = model_file(tmp_path, MARKDOWN_NAMES)
    summary = invoke("summary", spec, "--input", "3x8x8", "-f", "markdown")
    assert summary.exit_code == 0, summary.output
    assert html_in(summary.stdout) == []
    assert [row[0] for row in first_table(summary.stdout)[1:]] == [*MARKDOWN_NAMES, PADDED]
    for name in MARKDOWN_NAMES:
        explained = invoke("explain", spec, name, "--input", "3x8x8", "-f", "markdown")
        assert explained.exit_code == 0, explained.output
        assert html_in(explained.stdout) == []
        heading = markdown_it.MarkdownIt("commonmark").parse(explained.stdout)[1]
        assert heading.content.startswith(markdown_literal(name)) and heading.children[0].content.startswith(name)


def test_compare_markdown_shows_model_names_as_text_in_their_columns():
    """The model's name is the user's text too (a class name, a file name): in compare's
    table it keeps the row's columns and opens no HTML; in the sentence naming the baseline
    it is one code span, whatever backticks it holds."""
    name = "<b>x|y`z"
    hostile = type(name, (nn.Sequential,), {})
    frame = archprof.compare([hostile(nn.Conv2d(1, 4, 3)), "lenet5"], input_size=(1, 32, 32))
    text = comparison_markdown(frame)
    assert html_in(text) == []
    rows = first_table(text)
    assert all(len(row) == len(rows[0]) for row in rows)
    assert [row[0] for row in rows[1:]] == [name, "lenet5"]
    tokens = markdown_it.MarkdownIt("commonmark").parse(text.split("\n\n")[0])
    spans = [child.content for token in tokens for child in token.children or () if child.type == "code_inline"]
    assert spans == [name]


MATH_NAMES = ["a$\\foo{x}$b", "c$^_$"]  # mathtext matplotlib cannot parse: the figure would not draw


def test_figures_show_names_with_dollar_signs_as_text_and_still_draw():
    """matplotlib reads text between two $ as mathematics: a module named "c$^_$" stopped
    the memory plot and the HTML report with a traceback. Each figure now draws, and its
    SVG (text kept as text) holds the names as they are."""
    pytest.importorskip("matplotlib")
    from matplotlib import rc_context

    from archprof.render.memory_plot import memory_figure
    from archprof.render.rf_plot import fields_figure
    from archprof.render.roofline import roofline_figure

    model_class = type("Net$x^$", (nn.Sequential,), {})
    model = model_class()
    for name in MATH_NAMES:
        model.add_module(name, nn.Conv2d(3, 3, 3))
    report = archprof.profile(model, input_size=(3, 16, 16), device="cpu", repeat=1, warmup=0, peak_flops="50G")

    def svg(figure) -> str:
        buffer = io.StringIO()
        with rc_context({"svg.fonttype": "none"}):
            figure.savefig(buffer, format="svg")
        return buffer.getvalue()

    memory = svg(memory_figure(report))
    assert report.totals.peak_layer in MATH_NAMES
    assert "of Net$x^$, input" in memory and f"at {report.totals.peak_layer}</text>" in memory
    assert "Net$x^$: receptive field" in svg(fields_figure(report))
    roofline = svg(roofline_figure(report))
    assert "Roofline of Net$x^$" in roofline and all(f">{name}</text>" in roofline for name in MATH_NAMES)
    assert "Net$x^$" in report_html(report)


def test_a_less_than_sign_that_opens_no_html_stays_as_it_is():
    assert [markdown_literal(text) for text in ("<0.1%", "a < b", "<", "1<2")] == ["<0.1%", "a < b", "<", "1<2"]
    assert html_in("| a |\n|---|\n| <b>x</b> |\n") == ["<b>", "</b>"]  # the oracle sees HTML where there is


def test_terminal_tables_show_names_neither_as_markup_nor_as_escape_sequences(tmp_path):
    names = ["[/x]", "[bold]b", "o\x1b[31mred", "c\nd"]
    spec = model_file(tmp_path, names)
    for command in ("summary", "memory", "rf"):
        result = invoke(command, spec, "--input", "3x8x8")
        assert result.exit_code == 0, (command, result.output)
        for text in ("[/x]", "[bold]b", "o\\x1b[31mred", "c\\nd"):
            assert text in result.output, (command, text)
        assert "\x1b" not in result.output


# Unicode's format characters: a right-to-left override shows the rest of its line reversed (the
# figures after a name: "1x3x8x8" as "8x8x3x1"), an isolate likewise; a zero-width space or joiner
# makes two names look the same.
FORMAT_NAMES = ["a\u202eb", "c\u2067d", "e\u200bf", "g\u200dh", "i\ufeffj"]
FORMAT_SHOWN = ["a\\u202eb", "c\\u2067d", "e\\u200bf", "g\\u200dh", "i\\ufeffj"]


def test_format_characters_in_names_show_as_escapes_and_the_data_keeps_them(tmp_path):
    spec = model_file(tmp_path, FORMAT_NAMES)
    for command in ("summary", "memory", "rf"):
        result = invoke(command, spec, "--input", "3x8x8")
        assert result.exit_code == 0, (command, result.output)
        assert all(shown in result.output for shown in FORMAT_SHOWN), command
        assert not any(char in result.output for char in "\u202e\u2067\u200b\u200d\ufeff"), command
    markdown = invoke("summary", spec, "--input", "3x8x8", "-f", "markdown")
    assert [row[0] for row in first_table(markdown.stdout)[1:]] == [*FORMAT_SHOWN, PADDED]
    page = report_html(archprof.analyze(spec, input_size=(3, 8, 8)))
    assert all(f">{shown}</td>" in page for shown in FORMAT_SHOWN)
    rows = summary_csv(spec, tmp_path / "report.csv", "--input", "3x8x8")  # the data: the names as they are
    assert [row["layer"] for row in rows] == [*FORMAT_NAMES, PADDED]


CONTROL_IN_A_NAME = "o\x1b[31mred"  # an ANSI colour: the ESC of an OSC 8 hyperlink, too
CUT_FIELD = f"""\
from torch import nn


class Cut(nn.Module):
    def forward(self, x):
        return x.flatten(2)[..., 1:5]  # a slice of a flattened dimension: the field is undefined


def net():
    model = nn.Sequential(nn.Conv2d(1, 4, 3))
    model.add_module({CONTROL_IN_A_NAME!r}, Cut())
    return model
"""


def test_compare_rf_notes_and_diff_show_control_characters_as_escapes(tmp_path, monkeypatch):
    """Beside the layer tables: compare's model names (a file's name), rf's note on an undefined
    field (it names the layer) and the output shapes diff reads from a CSV."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / f"{CONTROL_IN_A_NAME}.py").write_text(CUT_FIELD, encoding="utf-8")
    spec = f"{CONTROL_IN_A_NAME}.py:net"
    shown = "o\\x1b[31mred"

    compared = invoke("compare", spec, "lenet5", "--input", "1x32x32")
    assert compared.exit_code == 0, compared.output
    assert "\x1b" not in compared.output and f"{shown}.py:net" in compared.output

    fields = invoke("rf", spec, "--input", "1x8x8")
    assert fields.exit_code == 0, fields.output
    assert "\x1b" not in fields.output and f"aten.slice in {shown}: it cuts" in fields.output

    report = tmp_path / "report.csv"
    summary_csv(spec, report, "--input", "1x8x8")
    edited = tmp_path / "edited.csv"
    edited.write_text(report.read_text(encoding="utf-8").replace("1x4x6x6", "1x4\x1b[31m6x6"), encoding="utf-8")
    changed = invoke("diff", str(report), str(edited))  # refused, an output shape no report writes
    assert changed.exit_code == 2, changed.output
    assert "\x1b" not in changed.output and "output_shape is '1x4\\x1b[31m6x6', not shapes" in changed.stderr


def test_diff_refuses_an_output_shape_no_report_writes(tmp_path):
    """A CSV from elsewhere can hold anything as an output shape: diff took it as a change
    (`1x6x28x28 → 1xax28x28`; a formula, which its CSV then had to neutralise), where a
    malformed count is refused naming its line."""
    report = tmp_path / "report.csv"
    rows = summary_csv("lenet5", report)
    for shape in ("=1+1", "1xax28x28", "1x6x28x"):
        edited = tmp_path / "edited.csv"
        edited.write_text(
            report.read_text(encoding="utf-8").replace(rows[0]["output_shape"], shape, 1), encoding="utf-8"
        )
        result = invoke("diff", str(report), str(edited), "-f", "csv")
        assert result.exit_code == 2, result.output
        assert f"edited.csv, line 2: output_shape is '{shape}', not shapes" in result.stderr
    several = tmp_path / "several.csv"
    several.write_text(report.read_text(encoding="utf-8").replace(rows[0]["output_shape"], '"1x6x28x28, ()"', 1))
    assert invoke("diff", str(report), str(several), "-f", "csv").exit_code == 0  # shapes as a report writes them


def test_the_diff_csv_neutralises_field_notes_read_from_a_csv(tmp_path):
    """A note can hold any text in a CSV from elsewhere: diff's CSV copies a listed layer's
    notes, and the final row a final field's (here lenet5's last layer's, which it reads
    as why its stride is undefined)."""
    report = tmp_path / "report.csv"
    rows = summary_csv("lenet5", report)
    rows[0]["output_shape"], rows[0]["receptive_field_note"] = "1x6x1x1", "=1+1"  # a layer changed
    last = max(i for i, row in enumerate(rows) if "x" in row["receptive_field"])
    rows[last]["receptive_field_note"] = "@SUM(A1)"
    edited = tmp_path / "edited.csv"
    with edited.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    result = invoke("diff", str(report), str(edited), "-f", "csv")
    assert result.exit_code == 0, result.output
    *layers, final = csv.DictReader(io.StringIO(result.stdout, newline=""))
    assert [(row["old_receptive_field_note"], row["new_receptive_field_note"]) for row in layers] == [("", "'=1+1")]
    assert (final["old_receptive_field_note"], final["new_receptive_field_note"]) == ("", "'@SUM(A1)")


def test_junit_and_step_summary_of_a_model_with_control_characters(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nets\x01\u2028.py").write_text(
        "from torch import nn\n\ndef tiny():\n    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())\n"
    )
    (tmp_path / "archprof.toml").write_text(
        '[[models]]\nname = "nets\\u0001\\u2028.py:tiny"\ninput = "3x16x16"\nmax-params = 10\nmax-macs = "1G"\n'
    )
    junit, summary = tmp_path / "out.xml", tmp_path / "summary.md"
    result = invoke("check", "--junit", str(junit), env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert result.exit_code == 1, result.output  # 8 x 3 x 9 + 8 = 224 parameters > 10
    root = ET.parse(junit).getroot()
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "nets\\x01\\u2028.py:tiny (1x3x16x16, float32)"
    at = "at 1x3x16x16, float32"
    assert [case.get("name") for case in suite.findall("testcase")] == [f"max-params {at}", f"max-macs {at}"]
    assert len(root.findall(".//failure")) == 1
    rows = first_table(summary.read_text(encoding="utf-8"))
    assert len(rows) == 3 and all(len(row) == 7 for row in rows)
    assert rows[1][0] == "nets\\x01\\u2028.py:tiny"


# -- CSV files from elsewhere -------------------------------------------------------------


def test_a_csv_with_a_byte_order_mark_is_read(tmp_path):
    report = tmp_path / "report.csv"
    rows = summary_csv("lenet5", report)
    excel = tmp_path / "excel.csv"
    excel.write_text(report.read_text(encoding="utf-8"), encoding="utf-8-sig")  # Excel's "CSV UTF-8"
    assert excel.read_bytes().startswith(b"\xef\xbb\xbf")
    result = json_diff(str(excel), "lenet5")
    assert result["layers"] == [] and result["unchanged_layers"] == len(rows)


def test_a_duplicated_row_is_refused_naming_its_line(tmp_path):
    """A row written twice (a file edited, or two joined) was diffed as a layer added: the
    first layer counted twice in the totals, the final receptive field read off the copy."""
    report = tmp_path / "report.csv"
    rows = summary_csv("lenet5", report)
    lines = report.read_text(encoding="utf-8").splitlines(keepends=True)
    duplicated = tmp_path / "duplicated.csv"
    duplicated.write_text("".join([*lines, lines[1]]), encoding="utf-8")  # the first layer twice
    result = invoke("diff", str(report), str(duplicated), "--format", "json")
    assert result.exit_code == 2 and result.stdout == ""
    assert f"line {len(lines) + 1}: layer {rows[0]['layer']!r} call 0 repeats the row of line 2" in result.stderr


class OwnOperationsAroundAChild(nn.Module):
    """The model's own operations before and after its child: two rows of layer '' call 0."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x * 2) + 1


def test_a_container_with_two_segments_reads_back_and_diffs_clean(tmp_path):
    model = OwnOperationsAroundAChild()
    written = tmp_path / "segments.csv"
    report = archprof.analyze(model, input_size=(3, 8, 8))
    report.to_csv(written)
    rows = list(csv.DictReader(io.StringIO(written.read_text(encoding="utf-8"))))
    assert [(row["layer"], row["call"]) for row in rows].count(("", "0")) == 2
    for new in (str(written), report):  # the file with itself, and with the report it came from
        result = diff(str(written), new)
        assert not result.layers and result.unchanged == len(rows)


# -- figures past int64 -------------------------------------------------------------------

CHANNELS, SIDE, KERNEL = 4096, 4096, 3


class TwoWideConvs(nn.Sequential):
    def __init__(self):
        conv = {"kernel_size": KERNEL, "padding": KERNEL // 2}
        super().__init__(nn.Conv2d(CHANNELS, CHANNELS, **conv), nn.Conv2d(CHANNELS, CHANNELS, **conv))


def conv_flops(batch: int) -> int:
    """2 x MACs of one conv: batch x C_out x H_out x W_out x (C_in x k x k), 'same' padding."""
    return 2 * batch * CHANNELS * SIDE * SIDE * CHANNELS * KERNEL * KERNEL


@pytest.mark.parametrize("batch", [1024, 4096])
def test_flops_past_int64_stay_exact(batch, tmp_path):
    flops = conv_flops(batch)
    assert 2 * flops >= 2**63  # the sum does not fit int64 (at batch 4096, each row does not either)
    report = archprof.analyze(TwoWideConvs, input_size=(CHANNELS, SIDE, SIDE), batch=batch)  # built on meta
    layers = report.layers
    convs = layers[layers["module_type"] == "Conv2d"]
    assert list(convs["flops"]) == [flops, flops]
    assert layers["flops"].sum() == 2 * flops == report.totals.flops
    assert layers["macs"].sum() == flops
    assert layers["param_count"].dtype == "int64"  # columns that fit keep their documented dtype
    report.to_csv(tmp_path / "big.csv")
    assert read_csv_report(tmp_path / "big.csv").total("flops") == 2 * flops
    assert json.loads(report.to_json())["totals"]["flops"] == 2 * flops


# -- bad arguments -------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [-1, 1.5, "1", True])
def test_rollup_refuses_a_bad_depth(depth):
    report = archprof.analyze("lenet5")
    with pytest.raises(ArchprofError, match=r"depth must be (a whole number|at least 0)"):
        report.rollup(depth)


def test_a_budget_key_written_with_a_dash_and_an_underscore_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "archprof.toml").write_text(
        '[[models]]\nname = "lenet5"\nmax-params = "1M"\nmax_params = "10"\nmax-macs = "1G"\n'
    )
    result = invoke("check")
    assert result.exit_code == 2, result.output
    (error,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert "archprof.toml, line 4" in error and "max_params" in error and "max-params" in error


def test_compare_neutralises_a_model_name_that_reads_as_a_formula(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "=cmd.py").write_text("from torch import nn\n\n\ndef net():\n    return nn.Conv2d(3, 4, 3)\n")
    result = invoke("compare", "=cmd.py:net", "--input", "3x8x8", "--format", "csv")
    assert result.exit_code == 0, result.output
    (row,) = csv.DictReader(io.StringIO(result.stdout))
    assert row["model"] == "'=cmd.py:net"


def test_compare_csv_keeps_a_model_name_with_a_carriage_return_in_its_row(tmp_path, monkeypatch):
    """The csv module quotes a cell holding a newline but not one holding only a carriage
    return, which a reader takes for the end of the row."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a\rb.py").write_text("from torch import nn\n\n\ndef net():\n    return nn.Conv2d(1, 4, 3)\n")
    result = invoke("compare", "a\rb.py:net", "lenet5", "--input", "1x32x32", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout, newline="")))
    assert [row["model"] for row in rows] == ["a\rb.py:net", "lenet5"]
    assert list(pd.read_csv(io.StringIO(result.stdout, newline=""))["model"]) == ["a\rb.py:net", "lenet5"]


HOSTILE_OP = f"{HOSTILE_NAMESPACE}.f"  # as archprof names it: the overload packet


def test_a_custom_operator_with_a_hostile_namespace_is_not_counted_and_shown_as_text(tmp_path):
    """A library namespace the dispatcher's name parser refuses ("=cmd|' /C calc'!A0", with a
    space, an ESC and Rich markup): the operator is listed as not counted, as any unknown one,
    its name neutralised in the CSV and read back exactly, escaped everywhere it is shown."""
    spec = "tests.models:HostileNamespace"
    report = archprof.analyze(HostileNamespace(), input_size=(3, 8, 8))
    assert report.totals.not_counted == {HOSTILE_OP: 1}
    model_row = report.rows()[-1]
    assert model_row["operators"] == (HOSTILE_OP,) and model_row["not_counted"] == {HOSTILE_OP: 1}
    assert model_row["receptive_field_note"].startswith(HOSTILE_OP)
    shown = "=cmd|' /C calc'!A0 \\x1b[31m[bold]x.f"  # the ESC as its escape, [bold] as text

    for args in (["summary", spec], ["rf", spec], ["explain", spec, "2"]):
        result = invoke(*args, "--input", "3x8x8")
        assert result.exit_code == 0, (args, result.output)
        assert shown in result.output and "\x1b" not in result.output, args
    markdown = invoke("summary", spec, "--input", "3x8x8", "-f", "markdown")
    assert markdown_literal(HOSTILE_OP) in markdown.stdout and "\x1b" not in markdown.stdout
    assert html_in(markdown.stdout) == []
    explained = invoke("explain", spec, "2", "--input", "3x8x8", "-f", "markdown")
    assert markdown_literal(HOSTILE_OP) in explained.stdout and "\x1b" not in explained.stdout
    page = report_html(report)
    assert f"(not counted): {escape(shown)} ×1" in page and "\x1b" not in page

    document = json.loads(report.to_json())  # the data: the name as it is
    assert document["totals"]["not_counted"] == {HOSTILE_OP: 1}
    assert document["layers"][-1]["not_counted"] == {HOSTILE_OP: 1}
    written = '"' + HOSTILE_OP.replace("\x1b", "\\u001b") + '"'  # a name with a space: a JSON string
    assert document["layers"][-1]["operators"] == written

    path = tmp_path / "report.csv"
    cells = summary_csv(spec, path, "--input", "3x8x8")[-1]
    assert cells["operators"] == written  # starts with '"': no formula
    assert cells["not_counted"] == f"{written} x1"
    assert cells["receptive_field_note"].startswith("'" + HOSTILE_OP)
    back = read_csv_layers(path)
    assert back == [{name: row[name] for name in back[0]} for row in report.rows()]
    itself = json_diff(str(path), str(path))
    assert itself["layers"] == [] and itself["unchanged_layers"] == 2


# Library namespaces holding what separates the names in a CSV cell ("; " in not_counted, a
# space in operators), quotes, line breaks and tabs, and a formula's first characters.
SEPARATOR_NAMESPACES = ["a; b", "my lib", 'say "hi"', "line\nbreak", "tab\tand;semicolon", "=cmd", "'q", "+1", "-x y"]


def test_operator_names_holding_separators_round_trip_through_the_csv(tmp_path):
    """Each row runs one custom operator (no formula): its names as defined come back exactly
    from the CSV, as diff reads it, at every depth; no cell of them starts a formula."""
    names = [f"{namespace}.f" for namespace in SEPARATOR_NAMESPACES]  # as archprof names an overload packet
    report = archprof.analyze(CustomOperatorCalls([(ns, "f") for ns in SEPARATOR_NAMESPACES]), input_size=(2,))
    assert [(row["operators"], row["not_counted"]) for row in report.rows()] == [((n,), {n: 1}) for n in names]
    for depth, rows in ((2, len(names)), (1, 1)):
        path = tmp_path / f"depth{depth}.csv"
        rolled = report.rollup(depth)
        rolled.to_csv(path)
        back = read_csv_layers(path)
        assert back == [{name: row[name] for name in back[0]} for row in rolled.rows()]
        assert len(back) == rows and json_diff(str(path), str(path))["unchanged_layers"] == rows
        with path.open(encoding="utf-8", newline="") as handle:
            cells = [cell for row in csv.DictReader(handle) for cell in (row["operators"], row["not_counted"])]
        assert not any(cell.startswith(("=", "+", "-", "@", "\t")) for cell in cells), cells
    assert rolled.rows()[0]["operators"] == tuple(names)
    assert rolled.rows()[0]["not_counted"] == dict.fromkeys(names, 1)


def test_a_rolled_up_row_keeps_operator_names_holding_a_space_whole():
    """Two operators of a namespace with a space, f and g, in two modules merged into one row:
    the row names the two, not "my lib.f lib.g" (the names split at their space)."""
    report = archprof.analyze(CustomOperatorCalls([("my lib", "f"), ("my lib", "g")]), input_size=(2,))
    assert report.rollup(0).rows()[0]["operators"] == ("my lib.f", "my lib.g")
    assert report.rollup(0).totals.not_counted == {"my lib.f": 1, "my lib.g": 1}


class _Warns(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        warnings.warn("\x1b]0;TITLE\x07\x1b[2J\nerror: a line of the model's own", stacklevel=2)
        return self.linear(x)


def test_a_warning_from_a_models_forward_is_shown_on_one_line_with_its_escapes(tmp_path):
    """A TorchScript file loads without trust and may warn (`aten::warn`): its text set the
    terminal's title, cleared the screen and wrote a line that read as archprof's own."""
    path = tmp_path / "warns.pt"
    torch.jit.save(torch.jit.script(_Warns()), path)
    result = runner.invoke(app, ["summary", str(path), "--input", "4", "-f", "csv"])
    assert result.exit_code == 0, result.output
    warned = [line for line in result.stderr.splitlines() if "UserWarning" in line]
    assert warned and all("\x1b" not in line and "\x07" not in line for line in result.stderr.splitlines())
    assert r"\x1b]0;TITLE\x07\x1b[2J\nerror: a line of the model's own" in warned[0]
    assert not any(line.startswith("error:") for line in result.stderr.splitlines())
