"""The self-contained HTML report: what it holds, that nothing from the model runs in it,
and, in a real headless browser, that it shows the totals, sorts, filters and fetches
nothing. CI installs Debian's chromium and sets ARCHPROF_REQUIRE_BROWSER=1, so that there
the browser tests run or fail; elsewhere they are skipped when no browser is found."""

from __future__ import annotations

import math
import os
import re
import shutil
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from torch import nn

import archprof
from archprof.render.html import report_html
from archprof.units import human_count
from archprof.zoo import MODELS
from tests.cli import cli, one_error_line

ARTEFACTS = Path(__file__).resolve().parent.parent / "test-artefacts"


class _Page(HTMLParser):
    """Tags, scripts and every attribute that could fetch something."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.script_texts: list[str] = []
        self.fetching: list[tuple[str, str]] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in_script = tag == "script"
        for name, value in attrs:
            if name in ("src", "href", "xlink:href", "action", "poster") and not (value or "").startswith("#"):
                self.fetching.append((tag, f"{name}={value}"))

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.script_texts.append(data)


def _parsed(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


class _Named(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.add_module("<script>alert(1)</script>", nn.Conv2d(3, 4, 3))

    def forward(self, x):
        return getattr(self, "<script>alert(1)</script>")(x)


def test_the_page_holds_the_totals_and_fetches_nothing():
    model = MODELS["vgg11"].build()
    report = archprof.analyze(model, input_size=(3, 64, 64))
    text = report_html(report)
    page = _parsed(text)
    assert page.fetching == []
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    params = sum(p.numel() for p in model.parameters())  # torch's own count
    assert f"{params:,}" in text
    assert page.tags.count("svg") == 2  # memory over time, receptive fields
    assert len(page.script_texts) == 1


def test_the_pages_totals_are_the_summarys():
    """Every total the terminal's summary shows, the page shows, in the same words: a frozen
    layer's parameters, the sum of the layer outputs, a training step's backward MACs."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    model[0].requires_grad_(False)
    report = archprof.analyze(model, input_size=(3, 16, 16), training=True)
    totals = re.search(r'<table id="totals"[^>]*>(.*?)</table>', report_html(report)).group(1)
    shown = re.findall(r'<th scope="row">(.*?)</th><td>.*?</td><td class="exact">(.*?)</td>', totals)
    assert ("Non-trainable parameters", f"{8 * 3 * 9 + 8:,}") in shown  # the frozen convolution's
    outputs = 2 * 8 * 14 * 14 * 4 + 4 * 12 * 12 * 4  # conv and ReLU, conv: float32
    assert ("Activation memory (sum of layer outputs)", f"{outputs:,} B") in shown
    assert ("Backward MACs, weight gradients", f"{4 * 12 * 12 * 8 * 9:,}") in shown  # the second's only


class _LayerRows(HTMLParser):
    """The rows of a page's layer table: each its class and its cells' (text, data-v)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self._inside = self._in_body = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "table":
            self._inside = attributes.get("id") == "layers"
        elif self._inside and tag == "tbody":
            self._in_body = True
        elif self._in_body and tag == "tr":
            self.rows.append({"class": attributes.get("class", ""), "cells": []})
        elif self._in_body and tag == "td":
            self.rows[-1]["cells"].append(["", attributes.get("data-v")])

    def handle_endtag(self, tag):
        if tag == "table":
            self._inside = self._in_body = False

    def handle_data(self, data):
        if self._in_body and self.rows and self.rows[-1]["cells"]:
            self.rows[-1]["cells"][-1][0] += data


def _layer_rows(text: str) -> tuple[list[str], list[dict]]:
    """The headings and the rows of the layer table of page `text`."""
    headings = re.search(r'<table id="layers".*?<thead><tr>(.*?)</tr>', text).group(1)
    parser = _LayerRows()
    parser.feed(text)
    return re.findall(r"<th[^>]*>(.*?)</th>", headings), parser.rows


def test_the_layer_table_is_the_module_tree_its_modules_subtotals_their_subtrees():
    """The page listed the layers in the order they ran, with no line for a module holding
    layers: resnet18's layer1.0 (its residual add) after layer1.0.bn2, no line for layer1.
    Now, as the summary, the module tree: every module first seen where torch's
    named_modules() lists it, # numbering the lines in that order, and each module's own
    parameters (the figure sorted by) with those of the lines under it adding up to its
    subtree's, torch's count, which its cell shows in parentheses."""
    model = MODELS["resnet18"].build()
    report = archprof.analyze(model, input_size=(3, 64, 64))
    headings, rows = _layer_rows(report_html(report))
    assert [int(row["cells"][0][1]) for row in rows] == list(range(len(rows)))
    names = [re.sub(r" \(call \d+\)$", "", row["cells"][1][0]) for row in rows]
    modules = dict(model.named_modules())
    assert [name for name in dict.fromkeys(names) if name != "(model)"] == [name for name in modules if name]
    params = headings.index("Params")
    containers = [position for position, row in enumerate(rows) if row["class"] == "module"]
    assert [names[position] for position in containers] == [n for n, m in modules.items() if n and any(m.children())]
    for position in containers:
        name, end = names[position], position + 1
        while end < len(rows) and names[end].startswith(names[position] + "."):
            end += 1
        expected = sum(p.numel() for p in modules[name].parameters())
        assert sum(int(row["cells"][params][1]) for row in rows[position:end]) == expected, name
        assert rows[position]["cells"][params][0].endswith(f"({human_count(expected)})"), name
    assert sum(int(row["cells"][params][1]) for row in rows) == sum(p.numel() for p in model.parameters())


def test_fields_strides_and_shapes_sort_by_their_size():
    """The page sorted Receptive field, Stride and Output shape as text ('107x107' before
    '11x11', '16x16' before '2x2'): now as numbers, by the field's and the stride's area and
    the shape's elements, the whole input above every field. The oracle: each layer's own
    figures in the summary, multiplied out."""
    report = archprof.analyze("resnet18", input_size=(3, 64, 64))
    headings, rows = _layer_rows(report_html(report))
    cells = {heading: headings.index(heading) for heading in ("Receptive field", "Stride", "Output shape")}
    by_text = {}
    for row in report.rows():
        field, stride = row["receptive_field"], row["effective_stride"]
        by_text[row["output_shape"]] = math.prod(int(n) for n in row["output_shape"].split("x"))
        if isinstance(field, tuple):
            by_text["x".join(map(str, field))] = math.prod(field)
        if isinstance(stride, tuple):
            by_text["x".join(map(str, stride))] = math.prod(stride)
    checked = 0
    for row in rows:
        for index in cells.values():
            text, value = row["cells"][index]
            if text in by_text:
                assert float(value) == by_text[text], (text, value)
                checked += 1
            elif text == "global":
                assert float(value) > max(by_text.values())
    assert checked > 3 * len(report.rows()) // 2
    assert re.search(r'<th data-kind="number">Receptive field</th>', report_html(report))


def test_a_training_pages_table_has_the_backward_macs():
    """The page of a training report left out the backward pass's MACs, which --train adds
    and the table and Markdown show: now its columns, each row's own figure adding up to the
    step's totals (as the summary's do)."""
    report = archprof.analyze("lenet5", training=True)
    headings, rows = _layer_rows(report_html(report))
    for heading, total in (
        ("Bwd input MACs", report.totals.backward_input_macs),
        ("Bwd weight MACs", report.totals.backward_weight_macs),
    ):
        assert sum(int(row["cells"][headings.index(heading)][1]) for row in rows) == total > 0


_CEILINGS = {"peak_flops": "50G", "bandwidth": "20GB/s"}


def test_a_profiled_page_adds_the_roofline_and_the_timings():
    report = archprof.profile("lenet5", device="cpu", repeat=1, warmup=0, peak_flops="50G", bandwidth="20GB/s")
    text = report_html(report)
    page = _parsed(text)
    assert page.tags.count("svg") == 3  # memory, receptive fields, roofline
    assert page.fetching == []
    timed = [value for value in report.columns["time_ms"] if value == value]
    assert timed and all(value > 0 for value in timed)
    assert '<th data-kind="number">Time</th>' in text and '<th data-kind="text">Bound</th>' in text
    # The measurements first, after the type, as profile's table has them (they were columns 14 to 20).
    headings = re.findall(r"<th data-kind=\"\w+\"[^>]*>([^<]+)</th>", text[text.index('id="layers"') :])
    measured = ["Time", "Share of time", "Roofline", "Achieved", "Bound", "Intensity", "Bytes moved"]
    assert headings[2:10] == ["Type", *measured], headings


class _ExtraProduct(nn.Module):
    """Its real forward does a second matrix product the meta trace never sees."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 8))

    def forward(self, x):
        y = x @ self.weight
        return y if x.is_meta else y + 0 * (x @ self.weight)


def test_a_profiled_page_holds_the_whole_model_figures_and_the_cross_check():
    """As the table and Markdown do: latency, p90, throughput, the measured peak, the
    cross-check's verdict and each mismatch (here a planted one: 128 FLOPs predicted, 256 run)."""
    report = archprof.profile(
        nn.Sequential(_ExtraProduct()), input_size=(8,), device="cpu", repeat=2, warmup=0, **_CEILINGS
    )
    text = report_html(report)
    measured = report.measured
    assert _parsed(text).fetching == []
    assert f"Measured on cpu ({measured.device_name})" in text
    for figure in (f"{measured.median_ms:,.3f} ms", f"p90 {measured.p90_ms:,.3f} ms"):
        assert figure in text
    assert f"{measured.throughput_per_s:,.1f} samples/s" in text and "Achieved FLOP/s" in text
    assert f"measured {measured.measured_peak_memory_bytes:,} B" in text
    assert "Cross-check: 1 MISMATCH" in text and "0: analytic 128, FlopCounterMode 256" in text
    assert "Measured on" not in report_html(archprof.analyze("lenet5"))


def test_a_measured_memory_page_sets_each_peak_beside_its_prediction():
    """`memory --measure -o page.html`: each step's figures, exact in the cell's title, and
    the workspace column only where the measurement has it (the CPU's, not CUDA's)."""
    from dataclasses import replace

    from archprof.measure.peak_memory import MeasuredMemory, MeasuredStep, Peak

    report = archprof.analyze("lenet5")
    cpu = MeasuredMemory("a CPU", (MeasuredStep("Inference peak", 1_000_000, Peak(900_000, 1_000_000)),))
    text = report_html(replace(report, measured_memory=cpu).rollup(1))  # whole-model figures: kept
    assert "<h2>Measured on a CPU</h2>" in text and "With workspace" in text
    assert all(f'title="{value} B"' in text for value in ("1,000,000", "900,000")) and "<td>0.900</td>" in text
    cuda = MeasuredMemory("a GPU", (MeasuredStep("Inference peak", 1_000_000, Peak(1_100_000)),))
    text = report_html(replace(report, measured_memory=cuda))
    assert "<td>1.100</td>" in text and "With workspace" not in text and "kernel workspace included" in text
    assert "Measured on" not in report_html(report)


def test_names_from_the_model_are_text_not_markup():
    text = report_html(archprof.analyze(_Named(), input_size=(3, 8, 8)))
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert len(_parsed(text).script_texts) == 1  # only the page's own


def test_a_right_to_left_override_in_a_name_leaves_the_heading_in_order():
    """U+202E in the model's name showed the rest of the heading reversed: "input 1x3x8x8 ·
    float32" as "23taolf · 8x8x3x1 tupni"; it shows as its escape."""
    named = type("Net\u202e", (nn.Sequential,), {})
    text = report_html(archprof.analyze(named(nn.Conv2d(3, 4, 3)), input_size=(3, 8, 8)))
    assert "\u202e" not in text
    assert "<h1>Net\\u202e · input 1x3x8x8 · float32</h1>" in text


def test_summary_writes_html_by_suffix_and_format(tmp_path):
    target = tmp_path / "model.html"
    result = cli("summary", "resnet18", "--input", "3x64x64", "-o", target)
    assert result.exit_code == 0, result.output
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    result = cli("rf", "resnet18", "--input", "3x64x64", "--format", "html")
    assert result.exit_code == 0 and result.stdout.startswith("<!DOCTYPE html>")


def test_the_python_page_is_the_one_the_cli_writes(tmp_path):
    """`archprof.render.html.report_html(report)`, as the README gives it: `summary -o`'s page."""
    written = tmp_path / "cli.html"
    assert cli("summary", "lenet5", "-o", written).exit_code == 0
    assert written.read_text(encoding="utf-8") == report_html(archprof.analyze("lenet5"))


COMPARED = """from torch import nn


def small():
    return nn.Conv2d(3, 4, 3)


def large():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3))
"""


def test_compare_writes_its_table_as_a_page(tmp_path):
    """Each model's figures as the table shows them, here small enough to be exact: params
    (torch's count) and MACs (C_out x C_in x 3 x 3 per output pixel, 6x6 then 4x4 on 3x8x8);
    the models' names (file names: anything) escaped. Every column: --columns is refused."""
    from torch import nn

    path = tmp_path / "<b>nets.py"
    path.write_text(COMPARED)
    small, large = nn.Conv2d(3, 4, 3), nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3))
    params = [sum(p.numel() for p in model.parameters()) for model in (small, large)]
    macs = [4 * 3 * 9 * 36, 8 * 3 * 9 * 36 + 8 * 8 * 9 * 16]  # 3,888 and 17,280: 3.89 K and 17.28 K
    target = tmp_path / "compare.html"
    result = cli("compare", f"{path}:small", f"{path}:large", "--input", "3x8x8", "-q", "-o", target)
    assert result.exit_code == 0, result.output
    text = target.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "default-src 'none'" in text
    rows = re.findall(r"<tr>(.*?)</tr>", text)
    cells = [re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row) for row in rows]
    assert cells[0][:6] == ["Model", "Input", "Params", "x Params", "MACs", "x MACs"]
    names = [f"{escape(str(path))}:{factory}" for factory in ("small", "large")]
    assert [row[:6] for row in cells[1:]] == [
        [names[0], "1x3x8x8", str(params[0]), "1.00x", f"{macs[0] / 1000:.2f} K", "1.00x"],
        [
            names[1],
            "1x3x8x8",
            str(params[1]),
            f"{params[1] / params[0]:.2f}x",
            f"{macs[1] / 1000:.2f} K",
            f"{macs[1] / macs[0]:.2f}x",
        ],
    ]
    # Each figure's exact value, which the page's script sorts by (its one script: nothing fetched).
    assert re.findall(r'<td data-v="([^"]*)">', rows[2])[:4] == [
        repr(params[1]),
        repr(params[1] / params[0]),
        repr(macs[1]),
        repr(macs[1] / macs[0]),
    ]
    assert "<b>nets" not in text and len(_parsed(text).script_texts) == 1
    chosen = cli("compare", f"{path}:small", f"{path}:large", "-f", "html", "--columns", "MACs")
    assert chosen.exit_code == 2 and "html lays out its sortable table itself" in one_error_line(chosen)


def test_compare_s_page_marks_a_bound_field_and_says_why_names_escaped():
    """A field that is only an upper bound reads '≤' and its note follows the table, as in the
    terminal; the model's name and the note are text. The field: a 3x3 conv's, 3x3."""
    from archprof.render.compare_html import comparison_html

    frame = archprof.compare([nn.Conv2d(3, 4, 3)], input_size=(3, 8, 8))
    frame.loc[0, ["model", "receptive_field_note"]] = ["<b>net", "an upper bound: <i>picked</i>"]
    frame.attrs["baseline"] = "<b>net"
    text = comparison_html(frame)
    assert "<b>" not in text and "<i>" not in text
    assert '<td data-v="3">≤3x3</td>' in text
    assert '<p class="note">&lt;b&gt;net: receptive field is an upper bound: &lt;i&gt;picked&lt;/i&gt;</p>' in text
    page = _parsed(text)
    assert len(page.script_texts) == 1 and page.fetching == []


# -- in a real browser ------------------------------------------------------------------------


def _browser_path() -> str | None:
    found = next((shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None)
    if found is None and os.environ.get("ARCHPROF_REQUIRE_BROWSER") == "1":
        pytest.fail("ARCHPROF_REQUIRE_BROWSER=1 but no chromium on PATH")
    return found


@pytest.fixture(scope="module")
def browser():
    executable = _browser_path()
    if executable is None:
        pytest.skip("no chromium on PATH (CI installs it)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


def _column(page, heading: str) -> list[float]:
    index = page.locator("#layers thead th").all_inner_texts().index(heading)
    return [
        float(value)
        for value in page.eval_on_selector_all(
            "#layers tbody tr", f"rows => rows.map(row => row.cells[{index}].dataset.v)"
        )
    ]


def test_in_a_browser_it_shows_sorts_filters_and_fetches_nothing(browser, tmp_path):
    model = MODELS["resnet18"].build()
    report = archprof.analyze(model, input_size=(3, 64, 64))
    target = tmp_path / "resnet18.html"
    target.write_text(report_html(report), encoding="utf-8")

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    requests, errors = [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(target.as_uri())

    assert requests == [target.as_uri()]
    assert errors == []
    params = sum(p.numel() for p in model.parameters())
    assert f"{params:,}" in page.locator("#totals").inner_text()

    # a line per module holding others (resnet18's stages, blocks and downsamples), its own
    # rows (a block's residual add) on it, and a line per other row
    containers = {name for name, module in model.named_modules() if name and any(module.children())}
    rows = len(containers) + sum(layer not in containers for layer in report.columns["layer"])
    assert page.locator("#layers tbody tr").count() == rows
    macs_heading = page.locator("#layers thead th", has_text=re.compile("^MACs$"))
    macs_heading.click()  # a number: largest first
    macs = _column(page, "MACs")
    assert macs == sorted(macs, reverse=True) and macs[0] == max(report.columns["macs"])
    macs_heading.click()
    assert _column(page, "MACs") == sorted(macs)
    page.locator("#layers thead th").first.click()  # back to the module tree's order
    assert _column(page, "#") == list(range(rows))

    page.fill(".filter", "conv")
    names = zip(report.columns["layer"], report.columns["module_type"], strict=True)
    wanted = sum("conv" in f"{layer} {kind}".lower() for layer, kind in names)
    assert 0 < wanted < rows
    assert page.locator("#layers tbody tr:visible").count() == wanted
    assert page.locator(".shown").inner_text() == f"{wanted} of {rows} rows"

    ARTEFACTS.mkdir(exist_ok=True)
    page.fill(".filter", "")
    page.screenshot(path=str(ARTEFACTS / "html_report.png"), full_page=True)
    page.close()


class _Placeholders(nn.Module):
    """A convolution among placeholders, timm's way: `aa` and `drop_path` run nothing, nor
    does `head`, a Sequential of two Identities (idle as a whole: three lines)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.aa = nn.Identity()
        self.drop_path = nn.Identity()
        self.head = nn.Sequential(nn.Identity(), nn.Identity())

    def forward(self, x):
        return self.head(self.drop_path(self.aa(self.conv(x))))


def test_in_a_browser_a_box_hides_the_rows_that_ran_nothing_with_the_filter(browser, tmp_path):
    target = tmp_path / "placeholders.html"
    target.write_text(report_html(archprof.analyze(_Placeholders(), input_size=(3, 8, 8))), encoding="utf-8")
    page = browser.new_page()
    page.goto(target.as_uri())
    rows, idle = 6, 5  # conv, aa, drop_path, head with head.0 and head.1 (the model runs no operation of its own)
    assert page.locator("#layers tbody tr").count() == rows
    box = page.locator("input.hide-idle")
    assert (
        page.locator(".controls label").inner_text().strip()
        == f"hide the {idle} rows that ran no operation and hold no parameters"
    )
    box.check()
    assert page.locator("#layers tbody tr:visible td.layer").all_inner_texts() == ["conv"]
    assert page.locator(".shown").inner_text() == f"{rows - idle} of {rows} rows"
    page.fill(".filter", "head")  # both at once: nothing
    assert page.locator("#layers tbody tr:visible").count() == 0
    box.uncheck()
    assert page.locator("#layers tbody tr:visible").count() == 3
    page.close()


def test_a_page_without_rows_that_ran_nothing_has_no_box():
    assert "hide-idle" not in report_html(archprof.analyze("lenet5")).split("<script")[0]


# Given in this order, "deep" (9,996 parameters) before "wide" (10,004), both shown as 10.00 K:
# sorted by their text, or rounded, the two would keep this order either way round.
SORTED = """from torch import nn


def deep():
    return nn.Conv2d(3, 357, 3, padding=1)


def wide():
    return nn.Conv2d(3, 2501, 1)


def small():
    return nn.Conv2d(3, 4, 3)
"""


def test_in_a_narrow_browser_no_figure_wraps_between_its_number_and_its_unit(browser, tmp_path):
    """At 420 px the totals' figures wrapped, '25.56' over 'M'. The labels may wrap; each
    figure (value and exact) keeps to one line: its cell is one line of text high."""
    report = archprof.analyze("resnet50")
    target = tmp_path / "resnet50.html"
    target.write_text(report_html(report), encoding="utf-8")
    page = browser.new_page(viewport={"width": 420, "height": 900})
    page.goto(target.as_uri())
    heights = page.eval_on_selector_all(
        "#totals td",
        """cells => cells.map(cell => {
            const range = document.createRange(); range.selectNodeContents(cell);
            return [cell.textContent, range.getClientRects().length];
        })""",
    )
    assert len(heights) == 2 * len(page.locator("#totals tr").all())
    assert all(lines == 1 for _, lines in heights), heights
    page.close()


def test_on_a_phone_the_page_does_not_scroll_sideways_and_names_stay_in_view(browser, tmp_path):
    """resnet50's page was 1,581 px wide on a 390 px phone (and at 1,280 px): the whole page
    scrolled sideways, the layer names out of view. Each table scrolls in a box of its own,
    and the layer's name stays at its left edge as the box scrolls."""
    target = tmp_path / "resnet50.html"
    target.write_text(report_html(archprof.analyze("resnet50")), encoding="utf-8")
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(target.as_uri())
    assert page.evaluate("document.documentElement.scrollWidth") == 390
    page.evaluate("document.querySelector('.scroll').scrollLeft = 400")
    name = page.locator("#layers td.layer").first.bounding_box()
    box = page.locator(".scroll").first.bounding_box()
    assert abs(name["x"] - box["x"]) < 2
    page.close()


def test_in_a_browser_compare_sorts_by_exact_figures_filters_by_name_and_fetches_nothing(browser, tmp_path):
    import runpy

    path = tmp_path / "nets.py"
    path.write_text(SORTED)
    factories = runpy.run_path(str(path))
    given = ("deep", "wide", "small")
    params = {name: sum(p.numel() for p in factories[name]().parameters()) for name in given}
    target = tmp_path / "compare.html"
    result = cli("compare", *(f"{path}:{name}" for name in given), "--input", "3x8x8", "-q", "-o", target)
    assert result.exit_code == 0, result.output

    page = browser.new_page()
    requests, errors = [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(target.as_uri())
    assert requests == [target.as_uri()] and errors == []

    def models() -> list[str]:
        shown = page.eval_on_selector_all("#models tbody tr", "rows => rows.map(row => row.cells[0].textContent)")
        return [name.rpartition(":")[2] for name in shown]

    assert models() == list(given)
    heading = page.locator("#models thead th", has_text=re.compile("^Params$"))
    heading.click()  # a number: largest first
    assert models() == sorted(given, key=params.get, reverse=True)
    heading.click()
    assert models() == sorted(given, key=params.get)
    page.fill(".filter", "WIDE")  # the model's name, whatever its case
    assert page.locator("#models tbody tr:visible").all_inner_texts()[0].startswith(f"{path}:wide")
    assert page.locator(".shown").inner_text() == f"1 of {len(given)} rows"
    page.fill(".filter", "1x3x8x8")  # the input, not a name: no row
    assert page.locator(".shown").inner_text() == f"0 of {len(given)} rows"
    assert errors == [] and requests == [target.as_uri()]
    page.close()


# Each would run script, fetch something or end the page's markup early, if shown as HTML.
HOSTILE_NAMES = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(2)>',
    "</style><script>alert(3)</script>",
    "</title><svg onload=alert(4)>",
    "<!--",
    "]]>",
    "a\u202eb",
]
HOSTILE_CLASS = "<img src=y onerror=alert(5)>"


def test_in_a_browser_hostile_names_run_nothing_fetch_nothing_and_show_as_written(browser, tmp_path):
    model = nn.Sequential()
    for name in HOSTILE_NAMES:
        model.add_module(name, type(HOSTILE_CLASS, (nn.Conv2d,), {})(3, 3, 1))
    target = tmp_path / "hostile.html"
    target.write_text(report_html(archprof.analyze(model, input_size=(3, 8, 8))), encoding="utf-8")

    page = browser.new_page()
    requests, dialogs, errors = [], [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(target.as_uri())
    assert requests == [target.as_uri()] and dialogs == [] and errors == []
    assert page.locator("script").count() == 1 and page.locator("img, svg image").count() == 0
    rows = page.eval_on_selector_all(
        "#layers tbody tr", "rows => rows.map(row => [row.cells[1].textContent.trim(), row.cells[2].textContent])"
    )
    assert rows == [[name.replace("\u202e", "\\u202e"), HOSTILE_CLASS] for name in HOSTILE_NAMES]
    page.fill(".filter", "onerror=alert(2)")
    assert page.locator(".shown").inner_text() == f"1 of {len(HOSTILE_NAMES)} rows"
    page.close()


def test_the_page_of_memory_fit_holds_the_batch_that_fits(tmp_path):
    """`memory --fit` written as HTML says the budget and the batch found (it wrote the page of
    that batch's analysis alone, the answer left out); each batch's figure is its own
    analysis's inference peak, the one at or under the budget, the next over it."""
    page = tmp_path / "fit.html"
    result = cli("memory", "lenet5", "--fit", "1MB", "-o", str(page))
    assert result.exit_code == 0, result.output
    cells = dict(
        re.findall(r'<tr><th scope="row">([^<]*)</th><td>[^<]*</td><td class="exact">([^<]*)</td>', page.read_text())
    )
    batch = int(re.search(r"<th scope=\"row\">Largest batch that fits</th><td>(\d+)</td>", page.read_text()).group(1))
    peak = {b: archprof.analyze("lenet5", batch=b).totals.peak_memory_bytes for b in (batch, batch + 1)}
    assert cells["Budget"] == "1,000,000 B"
    assert cells[f"Predicted at batch {batch}"] == f"{peak[batch]:,} B" and peak[batch] <= 1_000_000
    assert cells[f"Predicted at batch {batch + 1}"] == f"{peak[batch + 1]:,} B" and peak[batch + 1] > 1_000_000


def test_the_page_of_memory_fit_says_each_thing_once(tmp_path):
    """The page headed its breakdown "Memory" over a table titled "Memory", and the breakdown
    repeated the budget and the batch found, which the section above it gives: each once now."""
    page = tmp_path / "fit.html"
    assert cli("memory", "lenet5", "--fit", "1MB", "-o", str(page)).exit_code == 0
    text = re.sub(r"<style.*?</style>|<script.*?</script>", "", page.read_text(), flags=re.S)
    words = [line.strip() for line in re.sub(r"<[^>]+>", "\n", text).splitlines() if line.strip()]
    for said in ("Memory", "Budget", "Largest batch that fits"):
        assert words.count(said) == 1, said


def test_every_page_is_titled_with_its_command(tmp_path):
    """summary's, profile's, diff's and compare's pages were titled "archprof: NAME", where
    rf's and memory's said "archprof rf: NAME": each now names its command."""
    for command, args in (
        ("summary", ("lenet5",)),
        ("rf", ("lenet5",)),
        ("memory", ("lenet5",)),
        ("diff", ("lenet5", "alexnet")),
        ("compare", ("lenet5", "alexnet")),
    ):
        target = tmp_path / f"{command}.html"
        result = cli(command, *args, "-o", target)
        assert result.exit_code == 0, result.output
        assert re.search(rf"<title>archprof {command}: [^<]+</title>", target.read_text(encoding="utf-8")), command


@pytest.mark.parametrize("profiled", [False, True])
def test_in_a_browser_every_layer_cell_is_aligned_as_its_heading(browser, tmp_path, profiled):
    """The page aligned the layer table's 3rd and 4th columns left by their place (Type and
    Output shape on a summary's page): on a profile's page the 4th is Time, its figures then
    left of their right-aligned heading. The oracle: the browser's own computed alignment."""
    if profiled:
        report = archprof.profile("lenet5", device="cpu", repeat=1, warmup=0, peak_flops="50G", bandwidth="20GB/s")
    else:
        report = archprof.analyze("lenet5")
    target = tmp_path / "page.html"
    target.write_text(report_html(report), encoding="utf-8")
    page = browser.new_page()
    page.goto(target.as_uri())
    headings = page.locator("#layers thead th").all_inner_texts()
    aligned = page.eval_on_selector_all(
        "#layers tr",
        "rows => rows.map(row => Array.from(row.cells, cell => getComputedStyle(cell).textAlign))",
    )
    assert ("Time" in headings) == profiled and "Output shape" in headings
    for row in aligned[1:]:
        for heading, head, cell in zip(headings, aligned[0], row, strict=True):
            assert (head == "left") == (cell == "left"), (heading, head, cell)


@pytest.mark.parametrize(("viewport", "widest"), [(1280, 900), (420, None)])
def test_in_a_browser_a_chart_is_never_drawn_small_enough_to_lose_its_labels(browser, tmp_path, viewport, widest):
    """Two charts shared a row of 1280px (about 620px each) and a phone drew one 400px wide:
    matplotlib's 8pt labels came out 6px and 4px tall. One a row now, at least 600px wide (a
    phone scrolls it sideways). The oracle: the browser's layout of each chart."""
    pytest.importorskip("matplotlib")
    target = tmp_path / "page.html"
    target.write_text(report_html(archprof.analyze("lenet5")), encoding="utf-8")
    page = browser.new_page(viewport={"width": viewport, "height": 900})
    page.goto(target.as_uri())
    boxes = page.eval_on_selector_all(
        "figure.chart svg", "charts => charts.map(chart => chart.getBoundingClientRect().toJSON())"
    )
    assert len(boxes) >= 2
    assert len({round(box["top"]) for box in boxes}) == len(boxes)  # one a row
    for box in boxes:
        assert box["width"] >= 600
        if widest is not None:
            assert box["width"] <= widest


def test_in_a_browser_a_diffs_status_is_coloured_by_its_row_and_nothing_else_is(browser, tmp_path):
    """The diff page coloured a row's 4th cell by its status (added green, removed red): the
    Kernel cell since the column came in ('3x3' green), the Status ('added') left plain."""
    from archprof.diff import diff
    from archprof.render.diff_html import diff_html

    target = tmp_path / "diff.html"
    target.write_text(diff_html(diff("lenet5", "edge_conv")), encoding="utf-8")
    page = browser.new_page()
    page.goto(target.as_uri())
    headings = page.locator("#layers thead th").all_inner_texts()
    status, kernel = headings.index("Status"), headings.index("Kernel")
    colours = page.eval_on_selector_all(
        "#layers tbody tr.added, #layers tbody tr.removed",
        "rows => rows.map(row => [row.className, Array.from(row.cells, cell => getComputedStyle(cell).color)])",
    )
    plain = page.eval_on_selector("#layers tbody td.layer", "cell => getComputedStyle(cell).color")
    expected = {"added": "rgb(27, 110, 58)", "removed": "rgb(179, 38, 30)"}
    assert {kind for kind, _ in colours} == {"added", "removed", "module removed"}  # lenet5's features, classifier
    for kind, cells in colours:
        assert cells[status] == expected[kind.split()[-1]] and cells[kernel] == plain
