"""Conventions a user meets everywhere (issue 17): every help page (-h, plain metavars, one
wording of each default, the options it names), `-o -` and the umask, the memory plot; and
the repository a newcomer clones (licence, Python version, .gitignore, docs/formulas.md)."""

from __future__ import annotations

import itertools
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest
import tomllib
import typer

import archprof
from archprof.cli import app
from archprof.fit import fit_batch
from archprof.passes.optimizer_state import OPTIMIZER_STATE_COPIES
from archprof.units import human_bytes
from tests.cli import cli, runner

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = [command.name or command.callback.__name__ for command in app.registered_commands]


def _help(*command: str) -> str:
    result = cli(*command, "--help")
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    """Every help page: the app's and each command's."""
    return {name: _help(*([name] if name else [])) for name in ["", *COMMANDS]}


# --- help ------------------------------------------------------------------------------------


def test_the_commands_are_the_documented_ones():
    assert {"summary", "profile", "memory", "rf", "compare", "check", "diff", "zoo"} <= set(COMMANDS)


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_h_is_help(command, pages):
    result = cli(*([command] if command else []), "-h")
    assert result.exit_code == 0 and result.stdout == pages[command]
    assert "-h" in pages[command] and "--help" in pages[command]


def test_help_shows_plain_metavars_never_python_types(pages):
    for name, page in pages.items():
        assert not re.search(r"<(str|int|bool|path|float|list\[[^\]]*\])>", page), name
        usage = next(line for line in page.splitlines() if "Usage:" in line)
        assert "{" not in usage, usage
    assert "Usage: archprof summary [OPTIONS] MODEL" in pages["summary"]
    assert "Usage: archprof compare [OPTIONS] MODELS..." in pages["compare"]
    assert "Usage: archprof check [OPTIONS] [MODEL...]" in pages["check"]
    for metavar in (r"--input +-i +SHAPE ", r"--arg +-a +KEY=VALUE ", r"-o +FILE "):
        assert re.search(metavar, pages["summary"]), metavar


def test_each_default_is_worded_one_way(pages):
    for name, page in pages.items():
        text = " ".join(page.split())  # a default may wrap
        assert not re.search(r"(?<!\[)default:", text), name
        assert "(default)" not in text, name
    assert "[default: (the model's own)]" in " ".join(pages["summary"].split())
    assert "[default: (sgd)]" in " ".join(pages["memory"].split())


@pytest.mark.parametrize("command", ["memory", "check"])
def test_the_optimizer_help_names_every_optimizer_that_works(command, pages):
    text = " ".join(pages[command].split())
    for optimizer in OPTIMIZER_STATE_COPIES:
        assert re.search(rf"\b{optimizer}\b", text), (command, optimizer)


@pytest.mark.parametrize("command", ["compare", "check"])
def test_compare_and_check_take_a_model_in_any_form(command, pages):
    text = " ".join(pages[command].split())
    assert "any form summary takes" in text
    assert "built-in or package.module:factory" not in text


def test_the_model_forms_are_listed_where_a_model_is_taken(pages):
    text = " ".join(pages["summary"].split())
    for form in ("torchvision:NAME", "timm:NAME", "package.module:factory", "path/to/file.py:factory", ".pt2"):
        assert form in text


def _examples(page: str, command: str) -> list[list[str]]:
    """The example command lines of a help page: after 'Example', each line that runs `command`."""
    lines = page[page.index("Example") :].splitlines()
    found = [line.strip(" │") for line in lines if line.strip(" │").startswith(f"archprof {command}")]
    return [shlex.split(line.split("#")[0])[2:] for line in found]


# The commands of one_model and several_models; explain (archprof/cli/explain.py) is to gain its example.
DOCUMENTED = [
    command.name or command.callback.__name__
    for command in app.registered_commands
    if command.callback.__module__ in ("archprof.cli.one_model", "archprof.cli.several_models", "archprof.cli.explain")
]


@pytest.mark.parametrize("command", DOCUMENTED)
def test_every_help_page_has_an_example_that_parses(command, pages):
    examples = _examples(pages[command], command)
    assert examples, command
    group = typer.main.get_command(app)
    for arguments in examples:
        with group.make_context("archprof", [command, *arguments]) as parent:  # parsed, never run
            group.commands[command].make_context(command, arguments, parent=parent)


# --- output files ------------------------------------------------------------------------------


@pytest.mark.parametrize("format", ["csv", "table"])
def test_output_dash_is_standard_output(format, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("summary", "lenet5", "-o", "-", "-f", format)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("layer,module_type" if format == "csv" else "lenet5")
    assert "features.0" in result.stdout and "wrote" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no file named '-'


@pytest.fixture
def umask():
    """Set the process umask for a test (os.umask returns the old one), then restore it."""
    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_a_new_report_gets_0666_less_the_umask(umask, mask, mode, tmp_path):
    umask(mask)
    target = tmp_path / "report.csv"
    assert cli("summary", "lenet5", "-o", target).exit_code == 0
    assert stat.S_IMODE(target.stat().st_mode) == mode


def test_a_rewritten_report_keeps_its_mode(umask, tmp_path):
    target = tmp_path / "report.csv"
    target.write_text("old\n")
    target.chmod(0o644)
    umask(0o077)  # would give a new file 0600: an existing one keeps its 0644
    assert cli("summary", "lenet5", "-o", target).exit_code == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o644 and target.read_text().startswith("layer,")


# --- the memory plot ---------------------------------------------------------------------------


def _texts(figure) -> list[str]:
    return [text.get_text() for axes in figure.axes for text in axes.texts]


def test_the_memory_plot_marks_the_peak_of_the_report():
    pytest.importorskip("matplotlib")
    from archprof.render.memory_plot import memory_figure

    fit = fit_batch("lenet5", 10**6)
    report, totals = fit.report, fit.report.totals
    figure = memory_figure(report, fit)
    axes = figure.axes[0]
    texts = _texts(figure)
    assert f"peak {human_bytes(totals.peak_memory_bytes)} at {totals.peak_layer}" in texts
    assert "--fit 1.00 MB" in texts
    (held,) = [line for line in axes.get_lines() if line.get_label() == "most held while the layer ran"]
    # in the unit of the axis's top, the budget: parameters + buffers + live activations
    assert axes.get_ylabel() == "memory held (MB)"
    assert max(held.get_ydata()) * 10**6 == pytest.approx(totals.peak_memory_bytes)
    assert min(held.get_ydata()) * 10**6 >= totals.param_bytes + totals.buffer_bytes - 1e-6
    assert {"parameters and buffers", "activations live after it"} <= {
        text.get_text() for text in axes.get_legend().get_texts()
    }


def test_the_budgets_label_is_struck_through_by_no_line_of_the_memory_drawn():
    """mobilenet_v2 --fit 512MiB: the budget's label lay at the left, under its line, where
    the peak's spike (layer 9, 508 MiB) ran through it, in the peak's red and in no legend.
    The oracle: the drawn label's box, against every point of the memory line in it."""
    pytest.importorskip("matplotlib")
    from archprof.render.memory_plot import memory_figure

    fit = fit_batch("mobilenet_v2", "512MiB")
    figure = memory_figure(fit.report, fit)
    figure.canvas.draw()
    axes = figure.axes[0]
    (label,) = [text for text in axes.texts if text.get_text() == "--fit 512.00 MiB"]
    box = label.get_window_extent(figure.canvas.get_renderer())
    (held,) = [line for line in axes.get_lines() if line.get_label() == "most held while the layer ran"]
    drawn = axes.transData.transform(list(zip(held.get_xdata(), held.get_ydata(), strict=True)))
    assert not [(x, y) for x, y in drawn if box.x0 <= x <= box.x1 and y >= box.y0]  # no spike up through it
    (budget,) = [line for line in axes.get_lines() if line.get_label() == "--fit budget"]
    peak_marker = [line for line in axes.get_lines() if line.get_marker() == "v"]
    assert budget.get_color() != peak_marker[0].get_color() and label.get_color() == budget.get_color()
    assert "--fit budget" in [text.get_text() for text in axes.get_legend().get_texts()]


def test_the_memory_plot_of_a_budget_in_binary_units_is_in_them_with_distinct_ticks():
    """memory --fit 1MiB: the budget's line said '--fit 1.05 MB' beside a table in MiB, and the
    axis (decimal, no decimals) ticked '1 MB' at both 1.0 and 1.2 MB."""
    pytest.importorskip("matplotlib")
    from archprof.render.memory_plot import memory_figure

    fit = fit_batch("lenet5", 2**20, binary=True)
    figure = memory_figure(fit.report, fit)
    figure.canvas.draw()
    axes = figure.axes[0]
    texts = _texts(figure)
    assert "--fit 1.00 MiB" in texts
    peak = fit.report.totals.peak_memory_bytes
    assert any(text.startswith(f"peak {peak / 2**10:.2f} KiB") for text in texts), texts
    assert axes.get_ylabel() == "memory held (MiB)"
    (held,) = [line for line in axes.get_lines() if line.get_label() == "most held while the layer ran"]
    assert max(held.get_ydata()) * 2**20 == pytest.approx(peak)
    low, high = axes.get_ylim()
    labels = zip(axes.get_yticklabels(), axes.get_yticks(), strict=True)
    ticks = [label.get_text() for label, at in labels if low <= at <= high]
    assert len(ticks) >= 3 and len(set(ticks)) == len(ticks), ticks


def test_the_memory_plot_of_a_training_report_draws_the_training_estimate():
    pytest.importorskip("matplotlib")
    from archprof.render.memory_plot import memory_figure

    report = archprof.analyze("lenet5", training=True, optimizer="adam")
    expected = f"sum of the parts {human_bytes(report.totals.training_memory_bytes)} (adam), not the step's peak"
    assert expected in _texts(memory_figure(report))


def test_the_training_lines_labels_are_not_struck_through_by_the_other_line():
    """ResNet-18 with Adam: the training estimate (209 MB) and the step's peak (207 MB) lie a few
    pixels apart; each label sits on the side of its line away from the other, crossed by neither."""
    pytest.importorskip("matplotlib")
    from archprof.render.memory_plot import memory_figure

    report = archprof.analyze("resnet18", training=True, optimizer="adam")
    totals = report.totals
    figure = memory_figure(report)
    figure.canvas.draw()
    axes = figure.axes[0]
    renderer = figure.canvas.get_renderer()
    heights = [axes.transData.transform((0, y))[1] for y in (totals.training_memory_bytes, totals.training_peak_bytes)]
    labels = [text for text in axes.texts if text.get_text().startswith(("sum of the parts", "training step peak"))]
    assert len(labels) == 2
    for label in labels:
        box = label.get_window_extent(renderer)
        assert not any(box.y0 < height < box.y1 for height in heights), (label.get_text(), box, heights)


def _crossed(box, line, axes) -> bool:
    """Whether a segment of `line` as drawn (its steps, or a horizontal line across the axes)
    passes through the display box `box`: each segment is horizontal or vertical."""
    if line.get_drawstyle() == "steps-mid":
        points = axes.transData.transform(line.get_path().vertices)
    else:  # axhline: from the left of the axes to the right, at its height
        height = axes.transData.transform((0, line.get_ydata()[0]))[1]
        left, right = axes.get_window_extent().x0, axes.get_window_extent().x1
        points = [(left, height), (right, height)]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        across = min(x0, x1) <= box.x1 and max(x0, x1) >= box.x0
        along = min(y0, y1) <= box.y1 and max(y0, y1) >= box.y0
        if across and along:
            return True
    return False


def test_no_line_drawn_crosses_a_label_of_the_memory_plot():
    """resnet50 trained with AdamW to fit 16 GB: the forward peak lies just under the budget,
    the sum of the parts and the step's peak, which lie a few pixels apart; the peak's label
    was struck through by those lines and the memory held ran through the budget's label.
    The oracle: every segment of every line drawn, against every label's box."""
    pytest.importorskip("matplotlib")
    from archprof.render.memory_plot import memory_figure

    fit = fit_batch("resnet50", "16GB", training=True, optimizer="adamw")
    figure = memory_figure(fit.report, fit)
    figure.canvas.draw()
    axes = figure.axes[0]
    renderer = figure.canvas.get_renderer()
    lines = [line for line in axes.get_lines() if line.get_marker() != "v"]
    assert len(lines) == 4 and len(axes.texts) == 4
    for label in axes.texts:
        box = label.get_window_extent(renderer)
        assert not [line.get_label() for line in lines if _crossed(box, line, axes)], label.get_text()
        assert axes.get_window_extent().y0 <= box.y0 and box.y1 <= axes.get_window_extent().y1


def test_the_layer_axes_tick_whole_layers_only():
    """Rows and steps are whole: a two-layer model's axis reads 0 and 1, not 0.0, 0.2, ..."""
    pytest.importorskip("matplotlib")
    from torch import nn

    from archprof.render.memory_plot import memory_figure
    from archprof.render.rf_plot import fields_figure

    report = archprof.analyze(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), input_size=(3, 8, 8))
    for figure in (memory_figure(report), fields_figure(report)):
        figure.canvas.draw()
        axes = figure.axes[-1]  # the receptive-field figure's x axis is shared, labelled below
        low, high = axes.get_xlim()
        ticks = [tick for tick in axes.get_xticks() if low <= tick <= high]
        assert ticks == [0, 1], ticks


def test_the_receptive_field_plot_reads_plainly_on_its_log_axes():
    """Strides and field sizes tick as plain numbers (2, 4, 8, not 2 x 10^0), both axes say they
    are logarithmic, and square inputs list their size once in the legend, not once per dimension."""
    pytest.importorskip("matplotlib")
    from archprof.render.rf_plot import fields_figure

    figure = fields_figure(archprof.analyze("lenet5"))
    figure.canvas.draw()
    sizes_axes, strides_axes = figure.axes
    for axes in (sizes_axes, strides_axes):
        assert "log scale" in axes.get_ylabel()
        labels = [label.get_text() for label in axes.get_yticklabels() if label.get_text()]
        assert labels and not any("times" in label or "^" in label for label in labels), labels
    assert {"1", "2", "4"} <= {label.get_text() for label in strides_axes.get_yticklabels()}
    legend = [text.get_text() for text in sizes_axes.get_legend().get_texts()]
    assert len(legend) == len(set(legend)) and "input size 32" in legend, legend


def test_the_receptive_field_plot_marks_where_the_field_covers_the_input_as_rf_says():
    """mobilenet_v2 at 3x48x200: rf says the field covers the whole input from
    features.16.conv.1.0 on (row 132), but the plot shaded only the global rows (149 on) and its
    field line crossed the input's width near row 97, where a reader would guess it began."""
    pytest.importorskip("matplotlib")
    from archprof.render.rf_plot import fields_figure

    report = archprof.analyze("mobilenet_v2", input_size=(3, 48, 200))
    said = " ".join(cli("rf", "mobilenet_v2", "--input", "3x48x200").stdout.split())
    layer = re.search(r"covers the whole 48x200 input from layer (\S+) on", said).group(1)
    rows = report.rows()
    first = next(index for index, row in enumerate(rows) if row["layer"] == layer)
    assert all(row["covers_input"] for row in rows[first:]) and rows[first - 1]["covers_input"] is False
    for axes in fields_figure(report).axes:
        (marker,) = [line for line in axes.get_lines() if line.get_color() == "tab:green"]
        assert set(marker.get_xdata()) == {first - 0.5}
    legend = [text.get_text() for text in fields_figure(report).axes[0].get_legend().get_texts()]
    assert "covers the whole input from here on" in legend


@pytest.mark.parametrize("model", ["lenet5", "googlenet"])
def test_the_receptive_field_plots_axes_have_a_tick_past_each_end_of_what_they_draw(model):
    """lenet5's first fields (5 px) lay below the field axis's lowest tick (8), googlenet's last
    (379 px) above its highest (256): their sizes could not be read off the axis."""
    pytest.importorskip("matplotlib")
    from archprof.render.rf_plot import fields_figure

    report = archprof.analyze(model)
    figure = fields_figure(report)
    figure.canvas.draw()
    fields = [f[0] for f in report.columns["receptive_field"] if isinstance(f, tuple)]
    strides = [float(s[0]) for s in report.columns["effective_stride"] if isinstance(s, tuple)]
    side = report.input_shapes[0][-1]
    for axes, values in zip(figure.axes, ([*fields, side], strides), strict=True):
        low, high = axes.get_ylim()
        ticks = [tick for tick in axes.get_yticks() if low <= tick <= high]
        assert min(ticks) <= min(values) and max(ticks) >= max(values), (ticks, min(values), max(values))


def test_the_receptive_field_plots_axis_labels_keep_apart_under_long_layer_names(tmp_path):
    """Long layer names, rotated under the plot, take the panels' height: the field axis's
    label ('field size, centre unit (px, log scale)') grew taller than its panel and ran into
    the stride axis's. The oracle: the drawn labels' boxes."""
    pytest.importorskip("matplotlib")
    from torch import nn

    from archprof.passes.layers import group_layers
    from archprof.passes.receptive_field import row_states, spreads
    from archprof.render.rf_plot import fields_figure

    long = nn.Sequential()
    names = ["encoder_stage_one_with_an_extremely_long_descriptive_identifier_for_layout_testing", "block_" + "x" * 120]
    long.add_module(names[0], nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU()))
    long.add_module(names[1], nn.Conv2d(16, 32, 3, stride=2, padding=1))
    long.add_module("relu_after_the_second_convolution_which_also_has_a_long_name", nn.ReLU())
    long.add_module("pool", nn.AdaptiveAvgPool2d(1))
    long.add_module("flat", nn.Flatten())
    long.add_module("fc_classifier_head_with_long_name_but_not_so_silly", nn.Linear(32, 10))
    report = archprof.analyze(long, input_size=(3, 32, 32))
    figure = fields_figure(report, spreads(*row_states(report.graph, group_layers(report.graph))))  # as rf's
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    upper, lower = (axes.yaxis.label.get_window_extent(renderer) for axes in figure.axes)
    assert not upper.overlaps(lower)
    for axes in figure.axes:  # each label within its panel's height
        label, panel = axes.yaxis.label.get_window_extent(renderer), axes.get_window_extent(renderer)
        assert label.height <= panel.height


def test_the_receptive_field_plot_shades_global_rows_and_draws_equal_dimensions_once():
    """resnet18's pooled head reads the whole input: drawn at the input's size, its 435 px field
    fell to 224, a field that seemed to shrink; now those rows are a band, off the line. Equal
    dimensions are one line ('dimensions 1 and 2'); a 3x5 kernel's differ, two lines."""
    pytest.importorskip("matplotlib")
    from torch import nn

    from archprof.render.rf_plot import fields_figure

    report = archprof.analyze("resnet18", input_size=(3, 64, 64))
    global_rows = [index for index, field in enumerate(report.columns["receptive_field"]) if field == "input"]
    assert global_rows
    sizes_axes = fields_figure(report).axes[0]
    (line,) = [line for line in sizes_axes.get_lines() if line.get_label().startswith("dimension")]
    assert line.get_label() == "dimensions 1 and 2"
    assert not set(line.get_xdata()) & set(global_rows)
    assert max(line.get_ydata()) > 64  # the last convolutions' fields, past the input's side
    (band,) = [patch for patch in sizes_axes.patches if patch.get_label() == "global: reads the whole input"]
    left, right = band.get_x(), band.get_x() + band.get_width()
    assert left < global_rows[0] and right > global_rows[-1]
    assert "global: reads the whole input" in [text.get_text() for text in sizes_axes.get_legend().get_texts()]

    wide = archprof.analyze(nn.Conv2d(1, 1, (3, 5)), input_size=(1, 16, 16))
    labels = {line.get_label(): max(line.get_ydata()) for line in fields_figure(wide).axes[0].get_lines()}
    assert labels["dimension 1"] == 3 and labels["dimension 2"] == 5


def test_memory_plot_command_writes_an_image(tmp_path):
    pytest.importorskip("matplotlib")
    target = tmp_path / "memory.png"
    result = cli("memory", "lenet5", "--plot", target, "-f", "csv")
    assert result.exit_code == 0, result.output
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {target}" in result.stderr


def test_memory_plot_with_an_unknown_suffix_fails_before_any_work(tmp_path):
    pytest.importorskip("matplotlib")
    result = cli("memory", "lenet5", "--plot", tmp_path / "memory.xyz")
    assert result.exit_code == 2 and "cannot tell the image format" in result.stderr
    assert result.stdout == ""


# --- the repository ----------------------------------------------------------------------------


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_licence_is_there_and_declared_as_spdx():
    project = _pyproject()["project"]
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]


def test_the_python_versions_claimed_can_import_the_package():
    """tomllib is in the standard library from 3.11: a 3.10 claim needs a tomli fallback."""
    claimed = _pyproject()["project"]["requires-python"]
    low = tuple(int(part) for part in re.fullmatch(r">=(\d+)\.(\d+)", claimed).groups())
    uses_tomllib = any("import tomllib" in path.read_text() for path in (ROOT / "archprof").rglob("*.py"))
    if uses_tomllib and low < (3, 11):
        assert any(d.startswith("tomli") for d in _pyproject()["project"]["dependencies"])
    assert sys.version_info[:2] >= low


def _readme_outputs() -> set[str]:
    """The files the README's commands and the examples write in the directory they run from."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    written = re.findall(r"(?:--output|-o|--plot|--junit|>)\s+([\w.-]+\.\w+)\b", readme)
    written += re.findall(r"""save\([^\n]*?["']([\w.-]+\.pt2?)["']\)""", readme)
    examples = {"params_vs_macs.png", "resnet18_profile.csv", "resnet18_roofline.png", "lenet5_profile.csv"}
    return {name for name in written if name != "/dev/null"} | examples


def test_the_gitignore_covers_what_the_readme_writes():
    outputs = _readme_outputs()
    assert {"densenet121.csv", "model.pt", "model.pt2", "budget.xml", "roofline.png"} <= outputs
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        input="\n".join(sorted(outputs)),
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.split()
    assert set(ignored) == outputs


def test_no_generated_file_is_tracked_at_the_root():
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    at_root = [path for path in tracked.split("\n") if path and "/" not in path]
    generated = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        input="\n".join(at_root),
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.split()
    assert generated == []
    assert "LICENSE" in at_root


def test_the_formulas_page_is_the_projects_own_with_the_worked_examples_the_tests_check():
    page = (ROOT / "docs" / "formulas.md").read_text(encoding="utf-8")
    assert "lecture" not in page.lower() and "FORMULAS.md" not in page
    tested = (ROOT / "tests" / "test_formulas.py").read_text(encoding="utf-8")
    for number in ("3,216", "3,276,800", "6,553,600", "65,536", "2,506,391,552", "138,357,544"):
        assert number in page and number.replace(",", "_") in tested


def test_an_input_is_shown_in_the_dtype_it_was_given(tmp_path):
    (tmp_path / "tokens.py").write_text(
        "import torch\n"
        "def model():\n"
        "    return torch.nn.Sequential(torch.nn.Embedding(1000, 16), torch.nn.Linear(16, 4))\n"
    )
    result = cli("summary", f"{tmp_path / 'tokens.py'}:model", "--input", "77:int64")
    assert result.exit_code == 0, result.output
    assert "input 1x77:int64  ·  float32" in result.stdout  # the input's dtype, then the model's
    assert re.search(r"Input\s*│\s*1x77:int64\s*│\s*model in float32", result.stdout)
    report = archprof.analyze(f"{tmp_path / 'tokens.py'}:model", inputs=["77:int64"])
    assert report.input_dtypes == ("int64",) and "1x77:int64" in repr(report)


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_a_help_page_on_80_columns_keeps_examples_whole_and_fills_its_lines(command, pages):
    """On a terminal 80 columns wide: each example on one line, as on a wide one (a long one
    went on over two, to be pasted as two commands); prose paragraphs wrapped once, to the
    width (the docstring's own breaks, made for 88 columns, left a word alone on every other
    line); --dtype's four choices whole (its metavar was cut: 'bfloa', 't16')."""
    result = runner.invoke(app, [*([command] if command else []), "-h"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    page = result.stdout
    for example in _examples(pages[command], command) if command in DOCUMENTED else []:
        assert f"archprof {command} {shlex.join(example)}".strip() in [line.strip() for line in page.splitlines()]
    prose = page[: page.find("╭")].split("Example")[0]
    for paragraph in re.split(r"\n\s*\n", prose):
        lines = [line.rstrip() for line in paragraph.splitlines() if line.strip()]
        assert all(len(line) > 60 for line in lines[:-1]), lines
    if "--dtype" in page:
        assert all(dtype in " ".join(page.split()) for dtype in ("float32", "float16", "bfloat16", "float64"))


def _shown_parameters(command: str) -> list[tuple[typer.core.click.Parameter, str]]:
    """Each parameter a help page lists, with the metavar it should show whole (none for a flag)."""
    group = typer.main.get_command(app)
    click_command = group.commands[command] if command else group
    context = click_command.context_class(click_command)
    shown = [parameter for parameter in click_command.get_params(context) if not getattr(parameter, "hidden", False)]
    return [(parameter, parameter.display_type_rich(ctx=context) or "") for parameter in shown]


def _whole(word: str, line: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", line) is not None


@pytest.mark.parametrize("width", [40, 50, 60, 80, 120])
@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_a_narrow_help_page_shows_every_option_name_and_metavar_whole(command, width):
    """However narrow the terminal, each parameter's names stand whole on one line and its
    metavar whole on that line or the next (Rich cut them on 60 columns and under:
    '--min-receptive-f…', 'KEY=VAL'/'UE', and 'table|csv|json|markdown|' on 80), and no word
    of the page is ellipsised ('weights_only=Tr…')."""
    result = runner.invoke(app, [*([command] if command else []), "-h"], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for parameter, metavar in _shown_parameters(command):
        if parameter.param_type_name == "option":
            names = [*parameter.opts, *parameter.secondary_opts]
        else:  # an argument by its metavar or its name in capitals: MODEL, OLD
            names = [parameter.metavar or parameter.name.upper()]
        named = [index for index, line in enumerate(lines) if all(_whole(name, line) for name in names)]
        assert named, (names, result.stdout)
        assert any(_whole(metavar, line) for index in named for line in lines[index : index + 2]), (metavar, names)
    assert "…" not in result.stdout


def test_a_typer_whose_internals_moved_still_prints_its_help(monkeypatch):
    """The whole-names panel reads Typer's internals, and pyproject allows Typer from 0.12,
    whose parameters have no `display_type_rich`: there a help page is Typer's own panel, not
    an AttributeError."""
    from archprof.cli import help_panels

    def moved(*args, **kwargs):
        raise AttributeError("'TyperOption' object has no attribute 'display_type_rich'")

    monkeypatch.setattr(help_panels, "_row", moved)
    result = runner.invoke(app, ["summary", "-h"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "--input" in result.stdout and "--weights" in result.stdout


def _public_callables():
    """Each public function and class of the package's public modules, and each public method
    and property of those classes: (name, callable)."""
    import importlib
    import inspect

    modules = ["archprof", "archprof.report", "archprof.load", "archprof.diff", "archprof.fit", "archprof.comparison"]
    found = {}
    for module_name in modules:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]:
            value = getattr(module, name)
            if (inspect.isfunction(value) or inspect.isclass(value)) and value.__module__.startswith("archprof"):
                found[f"{module_name}.{name}"] = value
    for label, value in list(found.items()):
        if inspect.isclass(value):
            for name, member in vars(value).items():
                member = getattr(member, "fget", None) or getattr(member, "__func__", None) or member
                if inspect.isfunction(member) and (not name.startswith("_") or name == "__init__"):
                    found[f"{label}.{name}"] = member
    return found


def test_every_public_annotation_resolves():
    """`typing.get_type_hints` (IDEs, pydantic's validate_call, sphinx-autodoc-typehints) on
    every public function, class and method: pandas and torch named in annotations are
    there to resolve (`archprof.lazy_modules.LazyModule`), not only for type checkers."""
    import typing

    callables = _public_callables()
    assert {"archprof.compare", "archprof.diff.diff", "archprof.report.Report.by_module"} <= set(callables)
    failures = {}
    for label, value in callables.items():
        try:
            typing.get_type_hints(value)
        except Exception as exc:  # every failure listed at once
            failures[label] = f"{type(exc).__name__}: {exc}"
    assert failures == {}


def test_importing_the_report_and_comparison_modules_leaves_pandas_unimported():
    code = "import sys, archprof.report, archprof.comparison, archprof.diff; print('pandas' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.stdout.strip() == "False"


def test_the_memory_plots_labels_overlap_no_other_label_nor_the_peaks_marker():
    """With --fit the budget, the training estimate and the step's peak lie close together by
    design: their labels, and the forward peak's beside the step peak's, were drawn over one
    another (mobilenet_v2 trained to a 2 GB budget); and a peak at the last layer put its marker
    on the end of the budget's label (resnet50 trained with adamw to 16 GB). The labels' and the
    marker's boxes as the renderer draws them."""
    pytest.importorskip("matplotlib")
    from archprof.render.memory_plot import memory_figure

    fits = (
        fit_batch("mobilenet_v2", "2GB", training=True),
        fit_batch("resnet50", "16GB", training=True, optimizer="adamw"),
    )
    for fit in (*fits, None):
        report = fit.report if fit is not None else archprof.analyze("mobilenet_v2", training=True)
        figure = memory_figure(report, fit)
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        axes = figure.axes[0]
        (marker,) = [line for line in axes.get_lines() if line.get_marker() == "v"]
        drawn = {text.get_text(): text.get_window_extent(renderer) for text in axes.texts}
        drawn["the peak's marker"] = marker.get_window_extent(renderer)
        assert len(drawn) >= 4
        names = list(drawn)
        touching = [(a, b) for index, a in enumerate(names) for b in names[index + 1 :] if drawn[a].overlaps(drawn[b])]
        assert touching == [], (report.model, touching)


def test_a_non_square_inputs_sizes_are_two_lines_told_apart():
    """resnet18 at 3x64x200 draws both dimensions' fields as one line (they are equal), and
    marked the input's 64 and 200 with two lines of the same colour and dashes, each named
    'input size' (now the side it is: 'input height 64', 'input width 200')."""
    pytest.importorskip("matplotlib")
    from archprof.render.rf_plot import fields_figure

    figure = fields_figure(archprof.analyze("resnet18", input_size=(3, 64, 200)))
    sizes = [line for line in figure.axes[0].get_lines() if line.get_label().startswith("input ")]
    assert sorted(line.get_label() for line in sizes) == ["input height 64", "input width 200"]
    assert sizes[0].get_linestyle() != sizes[1].get_linestyle() or sizes[0].get_dashes() != sizes[1].get_dashes()


def test_the_memory_plots_axis_starts_at_zero_and_holds_the_peak(tmp_path):
    """ResNet-50's 102 MB of parameters under 11 MB of activations: the axis started at 98.76 MB
    (ticks 100 to 114), drawing the activations taller than the parameters. Read from the SVG the
    command writes: the axis's lowest tick is 0, on the frame's bottom; the ticks are evenly
    spaced; the peak's marker (the report's peak, from the API) lies within the frame, at its
    value on the axis."""
    pytest.importorskip("matplotlib")
    target = tmp_path / "memory.svg"
    assert cli("memory", "resnet50", "--plot", target, "-f", "csv").exit_code == 0
    root = ElementTree.parse(target, ElementTree.XMLParser(target=ElementTree.TreeBuilder(insert_comments=True)))
    groups = {group.get("id"): group for group in root.iterfind(".//{*}g[@id]")}
    y_ticks = [group for name, group in groups.items() if name.startswith("ytick_")]
    ticks = sorted((float(_comment(group)), float(group.find(".//{*}use").get("y"))) for group in y_ticks)
    frame = [float(number) for number in re.findall(r"[\d.]+", groups["patch_2"].find("{*}path").get("d"))]
    top, bottom = min(frame[1::2]), max(frame[1::2])
    (zero, zero_y), (step, step_y) = ticks[:2]
    assert zero == 0 and zero_y == pytest.approx(bottom)
    assert [value for value, _ in ticks] == [step * index for index in range(len(ticks))]
    assert "memory held (MB)" in [node.text.strip() for node in root.iter(ElementTree.Comment)]  # the axis's unit

    def value_at(y: float) -> float:
        return (zero_y - y) / (zero_y - step_y) * step

    (marker,) = [use for use in root.iterfind(".//{*}use") if "#d62728" in use.get("style", "")]  # the peak's, in red
    peak = archprof.analyze("resnet50").totals.peak_memory_bytes / 10**6
    assert top < float(marker.get("y")) < bottom and value_at(float(marker.get("y"))) == pytest.approx(peak, rel=1e-3)
    assert value_at(top) > peak


def _comment(group) -> str:
    """The text matplotlib writes as a comment in an SVG group drawing it (its glyphs are paths)."""
    return next(node.text.strip() for node in group.iter() if node.tag is ElementTree.Comment)


def test_the_layer_axes_name_the_layers_of_a_small_model_and_number_a_large_ones():
    """lenet5's twelve layers were ticks 0, 2, 4, ...: now each tick is named as its leaf module is."""
    pytest.importorskip("matplotlib")
    from torch import nn

    from archprof.render.memory_plot import memory_figure
    from archprof.render.rf_plot import fields_figure
    from archprof.zoo import MODELS

    model = MODELS["lenet5"].build()
    leaves = [name for name, module in model.named_modules() if name and not list(module.children())]
    report = archprof.analyze("lenet5")
    for figure in (memory_figure(report), fields_figure(report)):
        figure.canvas.draw()
        axes = figure.axes[-1]
        assert [label.get_text() for label in axes.get_xticklabels()] == leaves
    deep = archprof.analyze(nn.Sequential(*[nn.ReLU() for _ in range(40)]), input_size=(1, 4, 4))
    figure = memory_figure(deep)
    figure.canvas.draw()
    axes = figure.axes[0]
    low, high = axes.get_xlim()
    ticks = zip(axes.get_xticklabels(), axes.get_xticks(), strict=True)
    shown = [label.get_text() for label, at in ticks if low <= at <= high]
    assert shown and all(text.isdigit() for text in shown), shown  # forty layers: numbered


def test_long_tick_names_leave_the_rf_plots_two_axis_labels_apart():
    """Names of 24 characters under the ticks took the height of the plot's two panels: their
    y labels ran into each other (measured by matplotlib's own renderer)."""
    pytest.importorskip("matplotlib")
    from torch import nn

    from archprof.render.rf_plot import fields_figure

    model = nn.Sequential()
    for index in range(12):
        model.add_module(f"a_rather_long_layer_name_{index:02d}", nn.Conv2d(3, 3, 3, padding=1))
    from archprof.analysis import analysis, load
    from archprof.passes.layers import group_layers
    from archprof.passes.receptive_field import row_states, spreads

    found = analysis(load(model), (3, 16, 16), None, None)  # as `rf --plot` draws it: the centre unit's fields
    states, spatial = row_states(found.graph, group_layers(found.graph))
    figure = fields_figure(found.report, spreads(states, spatial))
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    top, bottom = (axes.yaxis.label.get_window_extent(renderer) for axes in figure.axes)
    assert not top.overlaps(bottom) and top.y1 <= figure.bbox.y1
