"""What every figure shares: matplotlib checked for before any work, the user's text made
plain, a plot's target checked, the plot drawn in memory and written atomically, and a figure as inline SVG for the
HTML report."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from archprof.errors import ArchprofError, short_reason
from archprof.output import open_output
from archprof.text import visible_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def figure_text(text: str) -> str:
    """Text from the user's model (a model or layer name) as a figure shows it: on one line
    (`visible_text`), each $ escaped, so that matplotlib does not read it as mathematics (a
    module named "c$^_$" would stop the figure from drawing), and a name longer than
    `LONGEST_NAME` characters cut in its middle: matplotlib neither wraps nor cuts a word,
    and a name of 100 characters ran off the image and squeezed the axes to a third."""
    shown = visible_text(text)
    if len(shown) > LONGEST_NAME:
        head = (LONGEST_NAME - 1) // 2
        shown = f"{shown[:head]}…{shown[len(shown) - (LONGEST_NAME - 1 - head) :]}"
    return shown.replace("$", r"\$")


LONGEST_NAME = 48

# The most layers a figure names under its axis, one a tick; past it, ticks are numbers.
MOST_NAMED_LAYERS = 30
# A layer's name under a tick, its end kept (the leaf that tells it from its siblings).
_LONGEST_TICK = 16  # more: the rotated names take the height of the rf plot's two panels


def named_layer_ticks(axes, names: list[str]) -> None:
    """Each layer named under its tick on `axes`' x axis, where there are few enough to read
    (`MOST_NAMED_LAYERS`): a model of a dozen layers is read by name, not by its position;
    a long name keeps its end, "…layer1.0.conv2"."""
    if not names or len(names) > MOST_NAMED_LAYERS:
        return
    shown = [visible_text(name) or "(model)" for name in names]
    shown = [name if len(name) <= _LONGEST_TICK else "…" + name[1 - _LONGEST_TICK :] for name in shown]
    labels = [name.replace("$", r"\$") for name in shown]  # not read as mathematics (`figure_text`)
    axes.set_xticks(range(len(names)), labels, rotation=60, ha="right", fontsize=7)


def require_matplotlib(what: str) -> None:
    """Fail with one line, before any work, where matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ArchprofError(
            f"{what} needs matplotlib, which is not installed: pip install 'archprof[plot]' (or matplotlib)"
        ) from None


def check_plot_target(path: str | os.PathLike) -> Path:
    """Fail early, before any profiling: matplotlib missing, an unknown image suffix, a PGF
    figure without the TeX program matplotlib writes it with."""
    require_matplotlib("--plot")
    from matplotlib import rcParams
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    target = Path(path)
    formats = FigureCanvasAgg.get_supported_filetypes()
    image_format = _image_format(target)
    if image_format not in formats:
        known = ", ".join(f".{name}" for name in sorted(formats))
        raise ArchprofError(f"cannot tell the image format of '{target}' from its suffix ({known})")
    tex = rcParams["pgf.texsystem"]
    if image_format == "pgf" and shutil.which(tex) is None:
        raise ArchprofError(f"a .pgf figure needs LaTeX ({tex}), which is not installed: give a .pdf, .svg or .png")
    return target


def image_bytes(figure: Figure, target: Path) -> bytes:
    """`figure` drawn in the format of `target`'s suffix (checked by `check_plot_target`),
    in memory: a command draws its plot before it writes any file, so that a figure that
    cannot be drawn leaves the report's file as it was."""
    buffer = io.BytesIO()
    try:
        with _backend_notes_quiet():
            figure.savefig(buffer, format=_image_format(target), dpi=150)
    except (RuntimeError, ValueError, OSError) as exc:  # a backend's own failure (its TeX run)
        raise ArchprofError(f"cannot draw {target}: {short_reason(exc)}") from None
    return buffer.getvalue()


@contextlib.contextmanager
def _backend_notes_quiet() -> Iterator[None]:
    """matplotlib's log held to errors while a figure is saved: a backend's notes on what its
    format cannot hold (PostScript: "does not support transparency; ... rendered opaque", of
    the charts' translucent bands) are not the user's to act on."""
    logger = logging.getLogger("matplotlib")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def write_image(image: bytes, target: Path) -> None:
    """`image` (`image_bytes`) written to `target`, atomically."""
    with open_output(target, binary=True) as handle:
        handle.write(image)


def _image_format(target: Path) -> str:
    return target.suffix.lower().lstrip(".")


def svg_text(figure: Figure, name: str) -> str:
    """The figure as an inline <svg> element; `name` salts its element ids, so that several
    charts on one page never share one."""
    from matplotlib import rc_context

    buffer = io.StringIO()
    with rc_context({"svg.hashsalt": name, "svg.fonttype": "path"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]
