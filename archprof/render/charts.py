"""A matplotlib figure as inline SVG, for the HTML report."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from archprof.errors import ArchprofError

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def require_matplotlib(what: str) -> None:
    """Fail with one line, before any work, where matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ArchprofError(
            f"{what} needs matplotlib, which is not installed: pip install 'archprof[plot]' (or matplotlib)"
        ) from None


def svg_text(figure: Figure, name: str) -> str:
    """The figure as an inline <svg> element; `name` salts its element ids, so that several
    charts on one page never share one."""
    from matplotlib import rc_context

    buffer = io.StringIO()
    with rc_context({"svg.hashsalt": name, "svg.fonttype": "path"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]
