"""What an explanation is (`Step`, `Section`, `Explanation`) and how it is written: text
for a terminal, Markdown for a pull request or a course page."""

from __future__ import annotations

from dataclasses import dataclass

from rich.cells import cell_len

from archprof.text import JOINER, fitted_indentation, folded_lines, markdown_literal, visible_text
from archprof.units import shape_text

# -- what an explanation is ------------------------------------------------------------------

Value = int | tuple[int, ...] | str


@dataclass(frozen=True, slots=True)
class Step:
    """One figure: `name = formula = worked = result`; `worked` is the formula with this
    layer's values put in ("" where the formula has no letters to replace)."""

    name: str
    formula: str
    worked: str
    value: Value

    @property
    def result(self) -> str:
        return value_text(self.value)


@dataclass(frozen=True, slots=True)
class Section:
    title: str
    steps: tuple[Step, ...] = ()
    notes: tuple[str, ...] = ()
    table: tuple[tuple[str, ...], ...] = ()  # a header row, then rows


@dataclass(frozen=True, slots=True)
class Explanation:
    title: str
    sections: tuple[Section, ...]

    def steps(self, name: str) -> list[Step]:
        """Every step named `name`, in order (tests read the figures back this way)."""
        return [step for section in self.sections for step in section.steps if step.name == name]

    def text(self, width: int | None = None) -> str:
        """Each figure on one line, or wrapped at spaces to `width` (a terminal's): a figure's
        `= formula`, `= worked` and `= result` each go under its first `=`; a note's and a
        table row's further lines hang two spaces in. A word, a number or a formula without
        spaces (1·64·224·224) is split only where it alone is wider than the line: folded
        onto the next, as a stacked table's name (`archprof.text.folded_lines`)."""
        lines = folded_lines(visible_text(self.title), width)
        for section in self.sections:
            lines += ["", *folded_lines(visible_text(section.title), width)]
            for step in section.steps:
                lines += _step_lines(step, width)
            for note in section.notes:
                lines += folded_lines(visible_text(note), width, 2, 4)
            for row in _aligned(section.table):
                lines += folded_lines(row, width, 2, 4)
        return "\n".join(lines).rstrip("\n") + "\n"

    def markdown(self) -> str:
        lines = [f"### {markdown_literal(self.title)}", ""]
        for section in self.sections:
            lines += [f"**{markdown_literal(section.title)}**", ""]
            if section.steps:
                lines += ["| figure | formula | with this layer's values | result |", "|---|---|---|---|"]
                for step in section.steps:
                    cells = (step.name, step.formula, step.worked, step.result)
                    lines.append("| " + " | ".join(markdown_literal(cell) for cell in cells) + " |")
                lines.append("")
            lines += [f"- {markdown_literal(note)}" for note in section.notes]
            if section.notes:
                lines.append("")
            if section.table:
                header, *rows = section.table
                lines += ["| " + " | ".join(map(markdown_literal, header)) + " |", "|" + "---|" * len(header)]
                lines += ["| " + " | ".join(map(markdown_literal, row)) + " |" for row in rows]
                lines.append("")
        return "\n".join(lines).rstrip("\n") + "\n"


def sum_step(name: str, terms: list[tuple[str, int]], total: int, formula: str = "") -> Step:
    """`name = formula = a (label) + b (label) + ... = total`: each term named."""
    return Step(name, formula, " + ".join(f"{value:,} ({label})" for label, value in terms), total)


def flops_step(macs: int) -> Step:
    """`FLOPs = 2 · MACs`: a multiply-accumulate is two FLOPs, in every section that counts MACs."""
    return Step("FLOPs", "2 · MACs", f"2 · {macs:,}", 2 * macs)


def value_text(value: Value) -> str:
    """12845056 -> '12,845,056'; (1, 64, 224, 224) -> '1x64x224x224'."""
    if isinstance(value, tuple):
        return shape_text(value)
    return f"{value:,}" if isinstance(value, int) else value


def _step_lines(step: Step, width: int | None) -> list[str]:
    """`name = formula = worked = result` on one line, or, where it is wider than `width`,
    each `= part` that does not fit on the line before on a line of its own under the first
    `=` (a part too long for any line wraps where it is, a word longer than the line folded)."""
    parts = [step.name]
    for part in (step.formula, step.worked):
        if part and part != parts[-1] and part != step.result:
            parts.append(part)
    name, *parts = (visible_text(part) for part in (*parts, step.result))
    lines = folded_lines(name, width, 2, 4)  # a name wider than the line wraps too ("backward input MACs")
    # Under the first `=`, or, where a part's longest word would not fit after it ("= " and a wrapped
    # line's two more before it), nearer the left ("(features.0.weight)" on 30 columns).
    longest = max((cell_len(word) for part in parts for word in part.split()), default=0)
    hang = fitted_indentation(cell_len(lines[-1]) + 1, 4 + longest, width)
    for part in parts:
        if width is None or cell_len(lines[-1]) + 3 + cell_len(part) <= width:
            lines[-1] += f" = {part}"
        elif hang + 2 + cell_len(part) <= width:
            lines.append(f"{' ' * hang}= {part}")
        else:  # the JOINER keeps the `=` with the word after it: never last on a line
            lines[-1:] = folded_lines(f"{lines[-1]} ={JOINER}{part}", width, 0, hang + 2)
    return lines


def _aligned(table: tuple[tuple[str, ...], ...]) -> list[str]:
    if not table:
        return []
    # Sized and padded in terminal cells, as shown: a CJK character takes two, an escaped
    # control character (`visible_text`) its escape's length.
    shown = [[visible_text(cell) for cell in row] for row in table]
    widths = [max(cell_len(row[i]) for row in shown) for i in range(len(shown[0]))]
    return [
        "  ".join(cell + " " * (width - cell_len(cell)) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in shown
    ]
