"""The style and the script of every page (the report's, `diff`'s, `compare`'s), inlined
(no file is fetched). The script sorts each table of class "sortable" by a clicked heading
(again: the other way). A number sorts by its cell's exact `data-v`, not its rounded text,
largest first; text, and the first column, from the start (a first column `#` restores the
order written). It filters the rows by the text of the columns whose heading has
`data-filter`, as typed in the table's section's `input.filter`, hides the rows marked
`data-idle` while its `input.hide-idle` is checked, and counts the rows shown in its `.shown`."""

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #1d1d1f; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
h1, h2 { overflow-wrap: anywhere; }  /* a long model's name wraps, not past the page */
table { border-collapse: collapse; }
/* A table wider than the page scrolls itself, not the page. */
table.figures, #diff-totals, .archprof table { display: block; max-width: 100%; overflow-x: auto; }
/* A total's label wraps, in a long layer's name anywhere, but keeps 8em (a long note beside
   it squeezed it to a letter a line); a figure never wraps (between its number and its unit).
   The report's totals and the figures rf's and memory's pages put first. */
table.figures th, section.figures .archprof td:first-child { white-space: normal; overflow-wrap: anywhere;
  min-width: 8em; }
table.figures th { text-align: left; font-weight: normal; padding: 2px 1.5em 2px 0; }
table.figures td { text-align: right; padding: 2px 0 2px 1.5em; white-space: nowrap; }
td.exact { color: #6e6e73; font-variant-numeric: tabular-nums; }
/* A table in a box of its own: the box scrolls, not the page nor the table, its headings kept
   at its top and its layers' names at its left (the report's and diff's td.layer, under the
   second heading; rf's and memory's first column). */
.scroll { overflow: auto; max-height: 85vh; }
.scroll .archprof table { display: table; }
.scroll th { position: sticky; top: 0; background: #f5f5f7; }
.scroll td.layer, .scroll .archprof td:first-child { position: sticky; left: 0; background: #fff; }
.scroll table.sortable th:nth-child(2), .scroll .archprof th:first-child { left: 0; z-index: 2; }
/* A name, however long, leaves room for the figures: wrapped where it is wider than the cap
   (break-word, not anywhere: a table wider than its box would narrow it to a letter). */
table.sortable td.layer, table.sortable td.name, .scroll .archprof td:first-child {
  max-width: min(28em, 40vw); white-space: normal; overflow-wrap: break-word; }
table.sortable { width: 100%; font-variant-numeric: tabular-nums; }
table.sortable th { cursor: pointer; user-select: none;
  text-align: right; padding: 4px 8px; border-bottom: 1px solid #d2d2d7; white-space: nowrap; }
table.sortable th[data-kind="text"], table.sortable th.text { text-align: left; }
table.sortable th.sorted-up::after { content: " ▲"; } table.sortable th.sorted-down::after { content: " ▼"; }
table.sortable td { text-align: right; padding: 2px 8px; border-bottom: 1px solid #f0f0f2; white-space: nowrap; }
table.sortable td.layer, table.sortable td.text { text-align: left; }
table.sortable tr:hover td { background: #eef4ff; }
.controls input { width: 22em; padding: 4px 6px; }
.note, .shown, .subtotal { color: #6e6e73; }
tr.module td.layer { font-weight: 600; }
/* One chart a row, never drawn narrower than 600px (a phone scrolls it sideways): two in a
   row of 1280px, or one on a phone's 400px, drew their 8pt labels 6px and 4px tall. */
.charts { display: flex; flex-direction: column; gap: 1em; }
figure.chart { margin: 0; max-width: 900px; overflow-x: auto; }
figure.chart svg { width: 100%; min-width: 600px; height: auto; }
#diff-totals th { text-align: left; font-weight: normal; padding: 2px 1.5em 2px 0; }
#diff-totals tr:first-child th { font-weight: 600; text-align: right; padding: 2px 0 2px 1.5em; }
#diff-totals tr:first-child th:first-child { text-align: left; padding: 2px 1.5em 2px 0; }
#diff-totals td { text-align: right; padding: 2px 0 2px 1.5em; font-variant-numeric: tabular-nums;
  white-space: nowrap; }
.archprof table { margin-bottom: 0.8em; font-variant-numeric: tabular-nums; }
.archprof th, .archprof td { padding: 2px 8px; border-bottom: 1px solid #f0f0f2; white-space: nowrap; }
.grew td:nth-child(n+4), td.grew { color: #b35900; } .shrank td:nth-child(n+4), td.shrank { color: #1f5fbf; }
.grew td:nth-child(4)::before, td.grew::before { content: "▲ "; }
.shrank td:nth-child(4)::before, td.shrank::before { content: "▼ "; }
tr.added td.status { color: #1b6e3a; } tr.removed td.status { color: #b3261e; }
tr.changed td.status { color: #a05a00; }
"""

SCRIPT = """
(function () {
  function key(row, index, kind) {
    const cell = row.cells[index];
    return kind === "number" ? parseFloat(cell.dataset.v) : cell.textContent.toLowerCase();
  }

  function makeSortable(table) {
    const body = table.tBodies[0];
    const rows = Array.from(body.rows);
    const headings = Array.from(table.tHead.rows[0].cells);
    let sortedBy = null, ascending = true;
    headings.forEach(function (heading, index) {
      heading.addEventListener("click", function () {
        ascending = sortedBy === index ? !ascending : index === 0 || heading.dataset.kind === "text";
        sortedBy = index;
        const kind = heading.dataset.kind;
        const order = rows.slice().sort(function (a, b) {
          const x = key(a, index, kind), y = key(b, index, kind);
          return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
        });
        order.forEach(function (row) { body.appendChild(row); });
        headings.forEach(function (h) { h.classList.remove("sorted-up", "sorted-down"); });
        heading.classList.add(ascending ? "sorted-up" : "sorted-down");
      });
    });
    const section = table.closest("section");
    const filter = section && section.querySelector("input.filter");
    const hideIdle = section && section.querySelector("input.hide-idle");
    if (filter) makeFilterable(rows, headings, filter, section.querySelector(".shown"), hideIdle);
  }

  function makeFilterable(rows, headings, filter, shown, hideIdle) {
    const columns = headings.filter(function (h) { return h.hasAttribute("data-filter"); })
      .map(function (h) { return headings.indexOf(h); });
    function applyFilter() {
      const words = filter.value.toLowerCase().split(/\\s+/).filter(Boolean);
      let count = 0;
      rows.forEach(function (row) {
        const text = columns.map(function (index) { return row.cells[index].textContent; }).join(" ").toLowerCase();
        const visible = words.every(function (word) { return text.includes(word); })
          && !(hideIdle && hideIdle.checked && row.hasAttribute("data-idle"));
        row.hidden = !visible;
        if (visible) count += 1;
      });
      if (shown) shown.textContent = count + " of " + rows.length + " rows";
    }
    filter.addEventListener("input", applyFilter);
    if (hideIdle) hideIdle.addEventListener("change", applyFilter);
    applyFilter();
  }

  document.querySelectorAll("table.sortable").forEach(makeSortable);
})();
"""
