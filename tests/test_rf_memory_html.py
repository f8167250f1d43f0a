"""`archprof rf -o x.html` and `archprof memory -o x.html` write their own table's page (they
wrote the summary's): the page's table holds the rows and columns the command's Markdown and
CSV hold, the fields LeNet-5's layers give in closed form, and the memory figures the CSV and
JSON give; `-o x.html` and `-f html` write one page, in the HTML report's frame."""

from __future__ import annotations

import csv
import io
import json
import re
from html.parser import HTMLParser

import archprof
from archprof.zoo.lenet import LeNet5
from tests.cli import cli
from tests.markdown_tables import first_table

NBSP = "\u00a0"
PEAK_MARK = "◀ peak"
_UNITS = {"B": 1, "kB": 10**3, "MB": 10**6, "GB": 10**9}


class _Page(HTMLParser):
    """A page read: its title, its Content-Security-Policy, its tags and its tables, each its
    caption, its headings (its `<thead>`'s cells) and its other rows, each cell as text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.title = self.policy = ""
        self.tags: list[str] = []
        self.tables: list[dict] = []
        self._text: list[str] | None = None  # of the cell, caption or title being read
        self._head = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attributes = dict(attrs)
        if tag == "meta" and attributes.get("http-equiv") == "Content-Security-Policy":
            self.policy = attributes["content"]
        elif tag == "table":
            self.tables.append({"caption": "", "head": [], "rows": []})
        elif tag == "thead":
            self._head = True
        elif tag == "tr" and not self._head:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th", "caption", "title"):
            self._text = []

    def handle_endtag(self, tag):
        if tag == "thead":
            self._head = False
        if tag not in ("td", "th", "caption", "title") or self._text is None:
            return
        text, self._text = "".join(self._text).strip(" " + NBSP), None
        if tag == "title":
            self.title = text
        elif tag == "caption":
            self.tables[-1]["caption"] = text
        else:
            (self.tables[-1]["head"] if self._head else self.tables[-1]["rows"][-1]).append(text)

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)


def _page(tmp_path, *command: str) -> _Page:
    """The page `command -o x.html` writes, read, asserted the one `command -f html` writes."""
    target = tmp_path / "page.html"
    written = cli(*command, "-o", target)
    assert written.exit_code == 0, written.output
    printed = cli(*command, "-f", "html")
    assert printed.exit_code == 0, printed.output
    text = target.read_text(encoding="utf-8")
    assert printed.stdout == text
    page = _Page(text)
    page.text = text
    return page


def _output(*command: str) -> str:
    result = cli(*command)
    assert result.exit_code == 0, result.output
    return result.stdout


def _csv_rows(*command: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(_output(*command, "-f", "csv"))))


def _markdown_table(*command: str) -> list[list[str]]:
    """The first table of the command's Markdown as GitHub shows it, its headings first."""
    return [[cell.strip(" " + NBSP) for cell in row] for row in first_table(_output(*command, "-f", "markdown"))]


def _table_with(page: _Page, heading: str) -> dict:
    """The page's one table with `heading` among its headings."""
    [table] = [table for table in page.tables if heading in table["head"]]
    return table


def _breakdown(page: _Page) -> dict:
    """The memory page's breakdown: the one table with a row of its parameters' bytes."""
    [table] = [table for table in page.tables if any(row and row[0] == "Parameters" for row in table["rows"])]
    return table


def _is_own_page(page: _Page, view: str) -> None:
    """`archprof VIEW`'s own page: titled so, in the summary page's frame, not the summary's."""
    assert page.title == f"archprof {view}: lenet5"
    assert page.policy == _Page(_output("summary", "lenet5", "-f", "html")).policy
    assert "default-src 'none'" in page.policy
    assert "script" not in page.tags and 'id="layers"' not in page.text and "<h2>Totals</h2>" not in page.text
    assert all("MACs" not in table["head"] for table in page.tables)


def _lenet5_fields() -> dict[str, tuple[int, int]]:
    """features.i's (field, stride) in closed form from the model's own layers: r += (k - 1) j,
    j *= s (square kernels and strides; an activation keeps both)."""
    field, jump, fields = 1, 1, {}
    for index, layer in enumerate(LeNet5().features):
        kernel = getattr(layer, "kernel_size", 1)
        kernel = kernel[0] if isinstance(kernel, tuple) else kernel
        stride = getattr(layer, "stride", 1)
        stride = stride[0] if isinstance(stride, tuple) else stride
        field, jump = field + (kernel - 1) * jump, jump * stride
        fields[f"features.{index}"] = (field, jump)
    return fields


def test_rf_page_holds_rf_s_table_with_lenet5_s_fields(tmp_path):
    page = _page(tmp_path, "rf", "lenet5")
    _is_own_page(page, "rf")
    table = _table_with(page, "Field")
    headings, *markdown_rows = _markdown_table("rf", "lenet5")
    assert table["head"] == headings == ["Layer", "Type", "Output shape", "Field", "Stride", "Centred", "Coverage"]
    assert table["rows"] == markdown_rows and "receptive fields on a 32x32 input" in table["caption"]
    shown = {row[0]: dict(zip(headings, row, strict=True)) for row in table["rows"]}

    csv_rows = _csv_rows("rf", "lenet5")
    assert {row["layer"] for row in csv_rows} <= set(shown)
    for row in csv_rows:
        cells = shown[row["layer"]]
        assert cells["Type"] == row["module_type"] and cells["Output shape"] == row["output_shape"]
        if row["receptive_field"] == "input":  # reads the whole input
            assert (cells["Field"], cells["Stride"]) == ("global", "-")
        else:
            assert (cells["Field"], cells["Stride"]) == (row["receptive_field"], row["effective_stride"])

    closed_form = _lenet5_fields()
    for layer, (field, stride) in closed_form.items():
        assert (shown[layer]["Field"], shown[layer]["Stride"]) == (f"{field}x{field}", f"{stride}x{stride}")
    changes = [closed_form[f"features.{i}"] for i in (0, 2, 3, 5)]  # conv5x5, pool2, conv5x5, pool2
    assert changes == [(5, 1), (6, 2), (14, 2), (16, 4)]
    assert shown["features"]["Field"] == "16x16" and shown["classifier.4"]["Field"] == "global"
    assert "the field covers the whole 32x32 input from layer flatten on" in page.text


def _bytes(cell: str) -> tuple[float, int]:
    """A cell's bytes ("18.82 kB", a module's "(56.74 kB)") and the size of its unit."""
    value, unit = re.fullmatch(r"\(?([\d.]+) (B|kB|MB|GB)\)?", cell).groups()
    return float(value) * _UNITS[unit], _UNITS[unit]


def test_memory_page_holds_memory_s_table_not_the_summary_s(tmp_path):
    page = _page(tmp_path, "memory", "lenet5")
    _is_own_page(page, "memory")
    table = _table_with(page, "Live after")
    headings, *markdown_rows = _markdown_table("memory", "lenet5")
    assert table["head"] == headings == ["Layer", "Type", "Output shape", "Activations", "Live after", "Peak in layer"]
    assert table["rows"] == markdown_rows
    shown = {row[0].removesuffix(PEAK_MARK).strip(): dict(zip(headings, row, strict=True)) for row in table["rows"]}

    csv_rows = _csv_rows("memory", "lenet5")
    for row in csv_rows:  # each figure the CSV's exact bytes, to the 2 decimals shown
        cells = shown[row["layer"]]
        for heading, column in (("Activations", "activation_bytes"), ("Live after", "live_bytes")):
            (shown_bytes, unit), exact = _bytes(cells[heading]), int(row[column])
            assert abs(shown_bytes - exact) <= 0.005 * unit, (row["layer"], heading)
    peak = max(csv_rows, key=lambda row: int(row["peak_live_bytes"]))["layer"]
    assert [row[0] for row in table["rows"] if row[0].endswith(PEAK_MARK)] == [f"{peak}  {PEAK_MARK}"]

    totals = json.loads(_output("memory", "lenet5", "-f", "json"))["totals"]
    exact = {row[0]: row[2] for row in _breakdown(page)["rows"]}
    assert exact["Peak inference memory"] == f"{totals['peak_memory_bytes']:,} B"
    assert exact["Parameters"] == f"{totals['param_bytes']:,} B"


def test_memory_fit_page_holds_the_answer_then_that_batch_s_table(tmp_path):
    page = _page(tmp_path, "memory", "lenet5", "--fit", "1MB")
    _is_own_page(page, "memory")
    batch = json.loads(_output("memory", "lenet5", "--fit", "1MB", "-f", "json"))["batch_fit"]["batch"]
    peaks = {b: archprof.analyze("lenet5", batch=b).totals.peak_memory_bytes for b in (batch, batch + 1)}
    assert peaks[batch] <= 1_000_000 < peaks[batch + 1]
    # Said once, in the answer's section: the breakdown under it leaves it out.
    answers = [row[1] for table in page.tables for row in table["rows"] if row and row[0] == "Largest batch that fits"]
    assert answers == [str(batch)] and not any(row[0] == "Budget" for row in _breakdown(page)["rows"])
    assert page.text.index("Largest batch that fits") < page.text.index("Live after")  # the answer at the top
    rows = _table_with(page, "Live after")["rows"]
    assert rows == _markdown_table("memory", "lenet5", "--fit", "1MB")[1:]
    assert rows[1][:3] == ["features.0", "Conv2d", f"{batch}x6x28x28"]  # at the batch found


def test_training_memory_page_has_training_s_columns(tmp_path):
    page = _page(tmp_path, "memory", "lenet5", "--train")
    _is_own_page(page, "memory")
    table = _table_with(page, "Saved for backward")
    headings, *markdown_rows = _markdown_table("memory", "lenet5", "--train")
    assert table["head"] == headings and table["rows"] == markdown_rows


def test_rf_and_memory_pages_escape_names(tmp_path):
    source = tmp_path / "hostile.py"
    source.write_text(
        "from torch import nn\n\n\ndef net():\n"
        "    model = nn.Sequential()\n"
        "    model.add_module('<img src=x onerror=alert(1)>', nn.Conv2d(3, 4, 3))\n"
        "    return model\n"
    )
    for command in ("rf", "memory"):
        page = _page(tmp_path, command, f"{source}:net", "--input", "3x8x8")
        assert "img" not in page.tags and "script" not in page.tags
        assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
        assert _table_with(page, "Layer")["rows"][0][0].startswith("<img src=x onerror=alert(1)>")  # as text
