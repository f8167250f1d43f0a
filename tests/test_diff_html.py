"""archprof diff as an HTML page: the totals with their signed change, % and ratio, grown and
shrunk marked, the final field and stride, the changed layers; every name escaped; in a real
headless browser, it sorts, filters and fetches nothing. Expected figures are counted by hand
from the two tiny nets below, or are the two reports' own totals."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

import archprof
from archprof.render.diff_html import diff_html
from tests.cli import cli, one_error_line
from tests.test_html_report import browser  # noqa: F401 (a fixture: headless Chromium, else skipped)

SCRIPT_NAME = "<script>alert(1)</script>"
# OLD: conv 1 -> 2 channels, 3x3, on 1x6x6: 2 x 4 x 4 out; params 2 x 9 + 2 = 20, MACs 2 x 9 x 16 = 288.
# NEW: conv 1 -> 3 channels (params 30, MACs 3 x 9 x 16 = 432), then a layer named like a
# script, 3 -> 1, 3x3: 1 x 2 x 2 out, params 27 + 1 = 28, MACs 27 x 4 = 108. Fields: 3 -> 5 px, stride 1.
NETS = f"""from collections import OrderedDict

from torch import nn


def old():
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 2, 3)))


def new():
    return nn.Sequential(OrderedDict([("conv", nn.Conv2d(1, 3, 3)), ({SCRIPT_NAME!r}, nn.Conv2d(3, 1, 3))]))
"""
OLD_PARAMS, NEW_PARAMS, OLD_MACS, NEW_MACS = 20, 30 + 28, 288, 432 + 108


class _Tables(HTMLParser):
    """Each table's rows by its id: the text of each cell, each row's and cell's class and
    each cell's data-v; the text of each paragraph of class "note"."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[dict]] = {}
        self.scripts = 0
        self.notes: list[str] = []
        self._table = self._cell = None
        self._note = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.scripts += tag == "script"
        if tag == "p" and attrs.get("class") == "note":
            self._note = True
            self.notes.append("")
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._table.append({"class": attrs.get("class"), "cells": [], "classes": [], "values": []})
        elif tag in ("td", "th") and self._table is not None:
            self._table[-1]["classes"].append(attrs.get("class"))
            self._table[-1]["values"].append(attrs.get("data-v"))
            self._table[-1]["cells"].append("")
            self._cell = True

    def handle_endtag(self, tag):
        if tag == "p":
            self._note = False
        elif tag in ("td", "th"):
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._note:
            self.notes[-1] += data
        if self._cell:
            self._table[-1]["cells"][-1] += data


def tables(text: str) -> _Tables:
    parsed = _Tables()
    parsed.feed(text)
    parsed.close()
    return parsed


@pytest.fixture
def nets(tmp_path):
    path = tmp_path / "nets<i>.py"  # a name from the user: escaped in the heading too
    path.write_text(NETS)
    return f"{path}:old", f"{path}:new"


def totals_by_label(page: _Tables) -> dict[str, dict]:
    return {row["cells"][0]: row for row in page.tables["diff-totals"][1:]}


def test_the_page_shows_each_total_s_change_percent_and_ratio(nets, tmp_path):
    old, new = nets
    target = tmp_path / "diff.html"
    result = cli("diff", old, new, "--input", "1x6x6", "-o", target)
    assert result.exit_code == 0, result.output
    page = tables(target.read_text(encoding="utf-8"))
    totals = totals_by_label(page)
    for label, before, after in (("Parameters", OLD_PARAMS, NEW_PARAMS), ("MACs", OLD_MACS, NEW_MACS)):
        change = after - before
        expected = [str(before), str(after), f"+{change}", f"+{100 * change / before:,.1f}%", f"{after / before:.2f}x"]
        assert totals[label]["cells"][1:] == expected
        assert totals[label]["class"] == "grew"
    # The reports' own totals: FLOPs and activation bytes, grown by the new layers.
    reports = [archprof.analyze(spec, (1, 6, 6)).totals for spec in nets]
    assert totals["FLOPs"]["cells"][3] == f"+{reports[1].flops - reports[0].flops}"
    added_bytes = reports[1].activation_bytes - reports[0].activation_bytes
    assert totals["Activation memory"]["cells"][3] == f"+{added_bytes} B" and added_bytes > 0
    # The final field: 3 px, then 3 + (3 - 1) x 1 = 5 px; stride 1 on both sides.
    assert totals["Final receptive field"]["cells"][1:] == ["3x3", "5x5", "+2 px", "+66.7%", "1.67x"]
    assert totals["Final stride"]["cells"][1:] == ["1x1", "1x1", "0", "+0.0%", "1.00x"]
    assert totals["Final stride"]["class"] is None  # neither grew nor shrank


def test_the_page_lists_the_layers_as_the_module_tree_each_module_sorted_by_its_own_change():
    """The page listed the changed layers in the order they ran, '#' their order there, with
    no line for a module. Now the table's module tree (tests.test_diff.TREE_LINES, checked
    there against torch's named_modules()): '#' numbers the lines in it; a module's line
    sorts by its own change (0 where its own rows did not change, the removed block's
    residual add) and shows its subtree's in parentheses, which the lines under it add up to,
    torch's parameters of its two sides."""
    from tests.test_diff import TREE_LINES, tree_diff

    result, old, new = tree_diff()
    heading, *rows = tables(diff_html(result)).tables["layers"]
    assert [(row["cells"][4], row["cells"][1], row["cells"][6]) for row in rows] == TREE_LINES
    assert heading["cells"][6] == "Parameters"
    assert [int(row["values"][0]) for row in rows] == list(range(len(rows)))
    assert [row["class"] for row in rows][:3] == ["module changed", "module removed", "removed"]
    names = [row["cells"][1] for row in rows]
    sides = dict(old.named_modules()), dict(new.named_modules())
    for position, name in enumerate(names):
        end = position + 1
        while end < len(names) and names[end].startswith(name + "."):
            end += 1
        if end == position + 1:
            continue  # a layer
        counts = [sum(p.numel() for p in side[name].parameters()) if name in side else 0 for side in sides]
        assert sum(int(row["values"][6]) for row in rows[position:end]) == counts[1] - counts[0], name
        assert int(rows[position]["values"][6]) == 0, name  # its own rows hold no parameters


def test_the_page_lists_the_changed_layers_with_their_deltas(nets):
    old, new = nets
    text = cli("diff", old, new, "--input", "1x6x6", "-f", "html").stdout
    assert text.startswith("<!DOCTYPE html>")
    heading, *rows = tables(text).tables["layers"]
    assert heading["cells"][:6] == ["#", "Layer", "Type", "Kernel", "Status", "Output shape"]
    by_layer = {row["cells"][1]: row for row in rows}
    conv, script = by_layer["conv"], by_layer[SCRIPT_NAME]
    # conv: 2 -> 3 output channels, +10 params, +144 MACs; the new layer: all its own.
    assert conv["cells"][2:8] == ["Conv2d", "3x3", "changed", "1x2x4x4 → 1x3x4x4", "+10", "+144"]
    assert script["cells"][2:8] == ["Conv2d", "3x3", "added", "1x1x2x2", "+28", "+108"]
    assert script["cells"][-1] == "5x5" and script["class"] == "added"
    assert script["classes"][6:8] == ["grew", "grew"]
    backwards = tables(cli("diff", new, old, "--input", "1x6x6", "-f", "html").stdout)
    assert {row["cells"][1]: row["class"] for row in backwards.tables["layers"][1:]}[SCRIPT_NAME] == "removed"
    assert {row["class"] for row in backwards.tables["diff-totals"][1:3]} == {"shrank"}


def test_every_name_on_the_page_is_text_not_markup(nets):
    old, new = nets
    text = cli("diff", old, new, "--input", "1x6x6", "-f", "html").stdout
    assert SCRIPT_NAME not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<i>" not in text and "nets&lt;i&gt;.py:old → " in text  # the title and the heading
    assert tables(text).scripts == 1  # the page's own, which sorts and filters


def test_a_diff_without_changed_layers_has_no_layer_table_nor_script(tmp_path):
    text = cli("diff", "lenet5", "lenet5", "-f", "html").stdout
    page = tables(text)
    assert "layers" not in page.tables and page.scripts == 0
    assert "layers: none added, removed or changed, 12 unchanged" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-f", "xml"), "invalid value for '--format'"),
        (("-o", "missing/diff.html"), "cannot write missing/diff.html: directory"),
        (("-o", "diff.htm"), "cannot tell the format of 'diff.htm'"),
    ],
)
def test_bad_output_is_one_line_and_writes_nothing(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = cli("diff", "lenet5", "lenet5", *args)
    assert result.exit_code == 2 and message in one_error_line(result)
    assert list(tmp_path.iterdir()) == []


def test_in_a_browser_it_sorts_filters_and_fetches_nothing(browser, nets, tmp_path):  # noqa: F811
    old, new = nets
    target = tmp_path / "diff.html"
    assert cli("diff", old, new, "--input", "1x6x6", "-o", target).exit_code == 0
    page = browser.new_page()
    requests, errors = [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(target.as_uri())
    assert requests == [target.as_uri()] and errors == []
    layers = "rows => rows.map(row => row.cells[1].textContent)"
    in_order = page.eval_on_selector_all("#layers tbody tr", layers)
    page.locator("#layers thead th", has_text="MACs").click()  # a number: largest first
    assert page.eval_on_selector_all("#layers tbody tr", layers)[:2] == ["conv", SCRIPT_NAME]  # +144, +108
    page.locator("#layers thead th").first.click()
    assert page.eval_on_selector_all("#layers tbody tr", layers) == in_order
    page.fill(".filter", "script")
    assert page.locator("#layers tbody tr:visible").count() == 1
    assert page.locator(".shown").inner_text() == f"1 of {len(in_order)} rows"
    page.close()
