"""Text shown to people: names from the user's model made visible on one line, layer
labels, fields as '212x212', Markdown cells, and how text folds on a narrow terminal. No
archprof imports but units: the Report and the renderers both build on it."""

from __future__ import annotations

import re
import unicodedata
from functools import cache

from archprof.units import human_bytes, human_count, shape_text

# The narrowest width text and tables are laid out for. Under it (COLUMNS=1 to 29), every name
# and figure was cut to a character or two and an ellipsis ('con…  1x…'): laid out for 30, each
# stays whole, its lines longer than the terminal's, which wraps them.
NARROWEST_WIDTH = 30


def layer_label(layer: str, call: int) -> str:
    """A row's name as tables and messages show it: 'layer1.0.conv1', '(model)' for the
    model's own operations, '(call 2)' from a module's second call on, '(not called)'."""
    name = layer or "(model)"
    if call > 0:
        return f"{name} (call {call + 1})"
    if call < 0:
        return f"{name} (not called)"
    return name


def counted(count: int, noun: str) -> str:
    """'1 row', '3 rows', '1 memory-bound layer': a count with its noun, plural but for 1."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def peak_rows(totals) -> list[tuple[str, int]]:
    """The peaks a report's totals show, each with its label: the inference peak; in a
    training report, the forward's (what autograd saved held to its end) and, where the
    report has its graph, the whole step's."""
    at = visible_text(totals.peak_layer) or "(model)"
    if not totals.training:
        return [(f"Peak inference memory (at {at})", totals.peak_memory_bytes)]
    rows = [(f"Forward peak, saved activations held (at {at})", totals.peak_memory_bytes)]
    if totals.training_peak_bytes is not None:
        place = training_peak_place(visible_text(totals.training_peak_layer), totals.training_peak_phase)
        rows.append((f"Training step peak ({totals.optimizer}; {place})", totals.training_peak_bytes))
    return rows


def totals_rows(totals) -> list[tuple[str, str, str]]:
    """Every figure of a report's totals as the summary shows it, each (label, human form,
    exact form): the terminal's and the HTML page's totals tables."""
    counts = [
        ("Total parameters", totals.param_count),
        ("Trainable parameters", totals.trainable_param_count),
        ("Non-trainable parameters", totals.non_trainable_param_count),
        ("MACs (multiply-accumulates)", totals.macs),
        ("FLOPs (2 x MACs)", totals.flops),
        ("Elementwise FLOPs", totals.elementwise_flops),
    ]
    if totals.training_flops is not None:
        counts += [
            ("Backward MACs, input gradients", totals.backward_input_macs),
            ("Backward MACs, weight gradients", totals.backward_weight_macs),
            ("Recomputed MACs (checkpointing)", totals.recomputed_macs),
            ("Backward elementwise FLOPs", totals.backward_elementwise_flops),
            ("Training step FLOPs (2 x all MACs)", totals.training_flops),
        ]
    sizes = [
        ("Parameter memory", totals.param_bytes),
        ("Buffer memory", totals.buffer_bytes),
        ("Activation memory (sum of layer outputs)", totals.activation_bytes),
        *peak_rows(totals),
    ]
    return [(label, human_count(value), f"{value:,}") for label, value in counts] + [
        (label, human_bytes(value), f"{value:,} B") for label, value in sizes
    ]


def training_peak_place(layer: str, phase: str) -> str:
    """Where a training step's peak is, as the memory tables say it: "at layer1.0.conv1,
    backward" ("(model)" for the model's own operations), or "in the optimizer step"."""
    if phase == "optimizer step":
        return "in the optimizer step"
    return f"at {layer_label(layer, 0)}, {phase}"


def limits_verdict(failed: int, total: int) -> str:
    """A budget check's verdict on its limits: '1 of 3 limits exceeded', 'all 3 limits hold';
    of one limit, 'the 1 limit holds', '1 of 1 limit exceeded' (not 'all 1 limits hold')."""
    limits = "limit" if total == 1 else "limits"
    if failed:
        return f"{failed} of {total} {limits} exceeded"
    return f"all {total} limits hold" if total != 1 else "the 1 limit holds"


def dims_text(value: tuple[int, ...] | str | None) -> str:
    """A field, stride or start as the CSV writes it: '212x212', 'input' or 'undefined' (a
    `FieldMark`, a str), '' for None."""
    if value is None:
        return ""
    return value if isinstance(value, str) else shape_text(value)


def field_text(value: tuple[int, ...] | str | None) -> str:
    """A receptive field as a table shows it: 'global' where every unit sees the whole input
    (the report's columns, CSV and JSON write 'input'), else as `dims_text` writes it."""
    return "global" if value == "input" else dims_text(value)


def visible_text(text: str) -> str:
    """`text` on one line, with every control character, line or paragraph separator shown
    as its escape (a newline as \\n, U+2028 as \\u2028): safe in a Markdown table, a
    terminal and XML 1.0. So is every format character: a bidirectional override or isolate
    (U+202E would show the rest of its line reversed, the figures after a name too) and the
    invisible ones (a zero-width space, U+200B, makes two names look the same)."""
    return "".join(_visible(char) for char in text)


def _visible(char: str) -> str:
    if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp") or char in "\ufffe\uffff":
        return char.encode("unicode_escape", "backslashreplace").decode("ascii")
    return char


def markdown_literal(text: str) -> str:
    """`text` as Markdown shows it literally, in a paragraph, a heading or a table cell: on
    one line (`visible_text`), with the characters that start emphasis, links and images
    (a module named "![x](http://...)" would fetch the image wherever the file is viewed),
    code, headings, quotes and strikethrough escaped, | (the row keeps its columns), a <
    that would open HTML (a module named "<img src=x onerror=...>"), and an & that would start
    a character reference (a module named "&lt;b&gt;" would show as "<b>")."""
    return _MARKDOWN_SPECIAL.sub(r"\\\g<0>", visible_text(text))


def markdown_code(text: str, in_table: bool = True) -> str:
    """`text` as a Markdown code span, shown verbatim but for control characters
    (`visible_text`) and, in a table cell, | (escaped: GFM splits cells before it sees code
    spans). Nothing in a code span is HTML, emphasis or a link."""
    shown = visible_text(text)
    if in_table:
        shown = shown.replace("|", "\\|")
    fence = "`" * (max(map(len, re.findall("`+", shown)), default=0) + 1)  # longer than any run inside
    pad = " " if shown.startswith("`") or shown.endswith("`") else ""
    return f"{fence}{pad}{shown}{pad}{fence}"


# Markdown's own characters, a < that CommonMark reads as the start of a tag, a comment or an
# autolink (one followed by a letter, /, ! or ?) and an & that may start a character reference
# ("&lt;", "&#60;", "&#x3C;"). Any other < or & stays as it is, so that "<0.1%" reads plainly.
_MARKDOWN_SPECIAL = re.compile(r"[\\`*_\[\]#>|~]|<(?=[A-Za-z/!?])|&(?=#?[A-Za-z0-9]+;)")


# One cell wide, no space to Rich (a private-use character: none of archprof's own text has it):
# between two words, it keeps them on one line, and is printed as a space.
JOINER = "\ue000"


def fitted_indentation(indentation: int, longest: int, width: int | None) -> int:
    """At most `indentation` spaces, fewer where a word `longest` cells wide would not fit after
    them in `width` (None: any), down to none: a deep line's text moves nearer the left rather
    than past the edge (where even none is too many, the word is folded)."""
    if width is None:
        return indentation
    return max(min(indentation, width - longest), 0)


def folded_lines(text: str, width: int | None, indent: int = 0, hang: int = 0) -> list[str]:
    """`text` after `indent` spaces, wrapped at spaces to `width` (None: one line) with `hang`
    spaces before each line after the first, as a stacked table row's text is (`render.base`):
    each indentation nearer the left where the longest word would not fit after it, and a word
    longer than the line folded onto the next, never cut or past the edge. A `JOINER` keeps the
    words either side of it on one line (the same word to the rule), printed as a space."""
    if width is None:
        return [" " * indent + text.replace(JOINER, " ")]
    from rich.cells import cell_len  # here, as Rich's below: `import archprof` loads no Rich

    longest = max(map(cell_len, text.split()), default=0)
    indent, hang = (fitted_indentation(spaces, longest, width) for spaces in (indent, hang))
    first = _folded(text, width - indent)[0]
    lines = [" " * indent + first.rstrip()]
    rest = text[len(first) :].lstrip(" ")
    if rest:
        lines += [" " * hang + line.rstrip() for line in _folded(rest, width - hang)]
    return [line.replace(JOINER, " ") for line in lines]


def _folded(text: str, width: int) -> list[str]:
    """`text` wrapped at spaces to `width` by Rich, a word longer than the line folded (each
    line a slice of `text`: they join back into it)."""
    from rich.text import Text

    return [line.plain for line in Text(text, overflow="fold").wrap(_console(), max(width, 1))] or [""]


@cache
def _console():
    from rich.console import Console

    return Console()  # what Text.wrap asks for; it wraps by cells alone


def spatial_names(dims: int) -> list[str]:
    """The names of `dims` spatial dimensions, as formulas and messages write them: L; H, W; D, H, W."""
    return {1: ["L"], 2: ["H", "W"], 3: ["D", "H", "W"]}.get(dims, [f"X{i + 1}" for i in range(dims)])
