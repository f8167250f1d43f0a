"""The pages' layout, in a real headless browser at 1400 and at 420 pixels: the memory and rf
pages in the summary page's order (figures, chart, layers); on a narrow screen their layer
tables scroll in a box with the layers' names kept in view, a long label wraps and no figure
does; long model and layer names leave the figures on screen. Skipped without chromium, as
tests/test_html_report.py's browser tests are."""

from __future__ import annotations

import re

import pytest

import archprof
from archprof.render.html import memory_html, report_html, rf_html
from tests.cli import cli
from tests.test_html_report import browser  # noqa: F401 (a fixture: headless Chromium, else skipped)

WIDE, NARROW = 1400, 420

# A net whose names run long, as a generated or exported model's do: its peak is at a layer
# named by 101 characters; its file's name gives compare's Model cell 80 more.
LONG_NET = """from torch import nn


class VeryLongNamedBlockForTestingWideLabels(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.depthwise_separable_convolution_with_a_really_long_name = nn.Conv2d(cin, cout, 3, padding=1)
        self.batch_normalization_layer_after_the_convolution = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.batch_normalization_layer_after_the_convolution(
            self.depthwise_separable_convolution_with_a_really_long_name(x)
        )


class LongNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder_stage_number_one_high_resolution_features = VeryLongNamedBlockForTestingWideLabels(3, 16)
        self.downsampling_max_pool_between_the_stages = nn.MaxPool2d(2)
        self.encoder_stage_number_two_medium_resolution_features = VeryLongNamedBlockForTestingWideLabels(16, 32)
        self.global_average_pooling_over_all_spatial_positions = nn.AdaptiveAvgPool2d(1)
        self.flatten_before_the_classifier_head = nn.Flatten()
        self.fully_connected_classification_head_producing_logits = nn.Linear(32, 10)

    def forward(self, x):
        x = self.encoder_stage_number_one_high_resolution_features(x)
        x = self.encoder_stage_number_two_medium_resolution_features(self.downsampling_max_pool_between_the_stages(x))
        x = self.global_average_pooling_over_all_spatial_positions(x)
        return self.fully_connected_classification_head_producing_logits(self.flatten_before_the_classifier_head(x))


def net():
    return LongNet()
"""
LONG_FILE = "encoder_decoder_with_extremely_long_descriptive_module_name_v2.py"
SHORT_NAME = "flatten_before_the_classifier_head"  # 34 characters: room for it on one line at 1400


@pytest.fixture(scope="module")
def long_net(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("long") / LONG_FILE
    path.write_text(LONG_NET)
    return f"{path}:net"


@pytest.fixture(scope="module")
def long_report(long_net):
    report = archprof.analyze(long_net, input_size=(3, 32, 32))
    assert len(report.totals.peak_layer) > 80  # the label "Peak live activations (at ...)" is long
    return report


def _open(browser, tmp_path, text: str, width: int):  # noqa: F811
    target = tmp_path / f"page{width}.html"
    target.write_text(text, encoding="utf-8")
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(target.as_uri())
    return page


def _headings(text: str) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>", text)


# -- the summary's order -----------------------------------------------------------------------


def test_memory_and_rf_pages_put_their_figures_then_their_chart_then_their_layers():
    """summary's page reads totals, charts, layers; memory's put its totals (the peak) and rf's
    its verdict after some 180 layer rows of resnet50."""
    report = archprof.analyze("lenet5")
    summary = _headings(report_html(report))
    assert summary[0] == "Totals" and summary[-2:] == ["Charts", "Layers"]

    memory = memory_html(report)
    assert _headings(memory) == ["Memory", "Charts", "Layers"]
    peak = memory.index("Peak inference memory")
    assert peak < memory.index("<h2>Charts</h2>") < memory.index("<h2>Layers</h2>") < memory.index(">Live after<")

    fields = rf_html(report)
    assert _headings(fields) == ["Receptive fields", "Charts", "Layers"]
    verdict = fields.index("the field covers the whole 32x32 input")
    assert verdict < fields.index("<h2>Charts</h2>") < fields.index("<h2>Layers</h2>") < fields.index(">Coverage<")


# -- a narrow screen -----------------------------------------------------------------------


_SCROLLER = """table => {  // the box that scrolls the table sideways: the table itself or one around it
    for (let box = table; box; box = box.parentElement) {
        if (box.scrollWidth > box.clientWidth + 1 && getComputedStyle(box).overflowX !== "visible") return box;
    }
    return null;
}"""


@pytest.mark.parametrize("view", ["memory", "rf"])
def test_on_a_narrow_screen_the_layer_table_scrolls_its_names_kept_in_view(browser, tmp_path, view):  # noqa: F811
    """At 420 px the page showed Layer and Type only, and scrolling the table took the names
    away: the table scrolls in its box, every column reachable, each name at its left edge."""
    report = archprof.analyze("resnet18", input_size=(3, 64, 64))
    page = _open(browser, tmp_path, (memory_html if view == "memory" else rf_html)(report), NARROW)
    assert page.evaluate("document.documentElement.scrollWidth") == NARROW  # the page does not scroll sideways
    table = page.locator("table", has=page.locator("th", has_text=re.compile("^Layer$")))
    scrolled = table.evaluate(
        f"""table => {{
        const box = ({_SCROLLER})(table);
        if (box === null) return null;
        box.scrollLeft = box.scrollWidth;
        const edge = box.getBoundingClientRect();
        const last = table.tHead.rows[0].lastElementChild.getBoundingClientRect();
        const names = Array.from(table.tBodies[0].rows, row => row.cells[0]);
        const range = document.createRange(); range.selectNodeContents(names[0]);
        return {{
            scrolled: box.scrollLeft,
            lastInView: last.left >= edge.left && last.right <= edge.right + 1,
            offsets: names.map(name => Math.abs(name.getBoundingClientRect().left - edge.left)),
            firstNameLines: new Set(Array.from(range.getClientRects(), rect => Math.round(rect.top))).size,
        }};
    }}"""
    )
    assert scrolled is not None and scrolled["scrolled"] > 0
    assert scrolled["lastInView"]
    assert max(scrolled["offsets"]) < 2, scrolled["offsets"]
    assert scrolled["firstNameLines"] == 1  # a short name ("conv1") keeps to a line: the column is not a sliver
    page.close()


# Each cell's text, its lines (the tops of its text's boxes: a styled run inside is a box of
# the same line) and its right edge.
_LINES_AND_EDGES = """cells => cells.map(cell => {
    const range = document.createRange(); range.selectNodeContents(cell);
    const tops = new Set(Array.from(range.getClientRects(), rect => Math.round(rect.top)));
    return [cell.textContent, tops.size, cell.getBoundingClientRect().right];
})"""


def test_on_a_narrow_screen_memory_s_long_peak_label_wraps_and_its_figures_stay_in_view(
    browser,  # noqa: F811
    tmp_path,
    long_report,
):
    """The label 'Peak live activations (at <a 101-character name>)' never wrapped: the
    figures beside it were off the screen."""
    page = _open(browser, tmp_path, memory_html(long_report), NARROW)
    totals = page.locator("section#memory table").first  # the breakdown, headed by its section
    cells = totals.locator("td").evaluate_all(_LINES_AND_EDGES)
    [(_, label_lines, _)] = [cell for cell in cells if cell[0].startswith("Peak live activations")]
    assert label_lines > 1
    figures = [cell for cell in cells if re.search(r"\d", cell[0]) and "Peak live" not in cell[0]]
    assert figures and all(lines == 1 for _, lines, _ in figures), figures
    assert all(right <= NARROW for _, _, right in cells), cells
    page.close()


def test_on_a_narrow_screen_no_figure_of_diff_s_totals_wraps(browser, tmp_path):  # noqa: F811
    """At 420 px "▲ +13.87 M" took three lines and "150.25 MB" two: each figure keeps to a line
    (the labels may wrap, the table may scroll)."""
    target = tmp_path / "diff.html"
    result = cli("diff", "resnet18", "resnet50", "--input", "3x64x64", "-o", target)
    assert result.exit_code == 0, result.output
    page = browser.new_page(viewport={"width": NARROW, "height": 900})
    page.goto(target.as_uri())
    cells = page.eval_on_selector_all("#diff-totals td", _LINES_AND_EDGES)
    assert any(text.startswith("+") for text, _, _ in cells)  # the changes (their ▲ drawn by the style)
    assert all(lines == 1 for _, lines, _ in cells), [cell for cell in cells if cell[1] != 1]
    assert page.evaluate("document.documentElement.scrollWidth") == NARROW
    page.close()


# -- long names ----------------------------------------------------------------------------


def test_a_long_model_name_wraps_in_the_heading_and_leaves_compare_s_figures_in_view(
    browser,  # noqa: F811
    tmp_path,
    long_net,
):
    """compare's heading ran past the page at 420 px, and a long Model cell pushed the last
    columns off it at 1400 px."""
    target = tmp_path / "compare.html"
    result = cli("compare", "resnet18", "vgg11", long_net, "--input", "3x32x32", "-q", "-o", target)
    assert result.exit_code == 0, result.output
    page = browser.new_page(viewport={"width": NARROW, "height": 900})
    page.goto(target.as_uri())
    assert page.evaluate("document.documentElement.scrollWidth") == NARROW
    heading = page.locator("h1").evaluate("h => [h.scrollWidth, h.clientWidth]")
    assert heading[0] <= heading[1]
    page.set_viewport_size({"width": WIDE, "height": 900})
    scroller = page.locator("#models").evaluate(f"table => ({_SCROLLER})(table) !== null")
    assert not scroller  # every column in view: nothing to scroll
    names = page.eval_on_selector_all("#models tbody tr", "rows => rows.map(row => row.cells[0].textContent)")
    assert names[-1] == long_net
    page.close()


def test_long_layer_names_wrap_and_leave_the_summary_s_figures_in_view(browser, tmp_path, long_report):  # noqa: F811
    """A 101-character layer name made the Layer column some 830 px wide at 1400 px, the
    figures off the screen: a long name wraps, the first figures stay in view, and a name
    with room keeps to its line."""
    page = _open(browser, tmp_path, report_html(long_report), WIDE)
    box = page.locator(".scroll").bounding_box()
    for heading in ("Params", "MACs", "FLOPs"):
        cell = page.locator("#layers thead th", has_text=re.compile(f"^{heading}$")).bounding_box()
        assert cell["x"] + cell["width"] <= box["x"] + box["width"], heading
    by_name = {name: lines for name, lines, _ in page.eval_on_selector_all("#layers td.layer", _LINES_AND_EDGES)}
    assert by_name[SHORT_NAME] == 1
    longest = max(by_name, key=len)
    assert len(longest) > 90 and by_name[longest] > 1
    page.close()
