"""The roofline plot of a profiled report (matplotlib, loaded only here)."""

from __future__ import annotations

import os
from pathlib import Path

from archprof.errors import ArchprofError
from archprof.output import open_output
from archprof.report import Report, layer_label


def check_plot_target(path: str | os.PathLike) -> Path:
    """Fail early, before any profiling: matplotlib missing, an unknown image suffix."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError:
        raise ArchprofError(
            "--plot needs matplotlib, which is not installed: pip install 'archprof[plot]' (or matplotlib)"
        ) from None
    target = Path(path)
    formats = FigureCanvasAgg.get_supported_filetypes()
    if target.suffix.lower().lstrip(".") not in formats:
        known = ", ".join(f".{name}" for name in sorted(formats))
        raise ArchprofError(f"cannot tell the image format of '{target}' from its suffix ({known})")
    return target


def plot_roofline(report: Report, path: str | os.PathLike, label_top: int = 6) -> None:
    """Draw the timed rows on the roofline (log-log: FLOPs per byte against achieved
    FLOP/s) and save the figure to `path` (format from its suffix), atomically. Uses
    matplotlib's object API, so pyplot's global state is never touched."""
    target = check_plot_target(path)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    measured = report.measured
    if measured is None:
        raise ArchprofError("plot_roofline needs a profiled report (archprof.profile)")
    suffix = target.suffix.lower().lstrip(".")

    ceilings = measured.ceilings
    points = [
        (
            row["arithmetic_intensity"],
            row["achieved_flops_per_s"],
            row["time_ms"],
            layer_label(row["layer"], row["call"]),
        )
        for row in report.rows()
        if row["arithmetic_intensity"] and row["achieved_flops_per_s"]
    ]
    figure = Figure(figsize=(8, 5.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    intensities = [p[0] for p in points] or [ceilings.ridge]
    low = min(min(intensities), ceilings.ridge) / 4
    high = max(max(intensities), ceilings.ridge) * 4
    xs = [low * (high / low) ** (i / 200) for i in range(201)]
    axes.plot(
        xs, [min(ceilings.peak_flops_per_s, x * ceilings.bandwidth_bytes_per_s) for x in xs], color="black", lw=1.5
    )
    axes.axvline(ceilings.ridge, color="grey", ls=":", lw=1)
    if points:
        total = sum(p[2] for p in points)
        sizes = [20 + 400 * p[2] / total for p in points]
        axes.scatter([p[0] for p in points], [p[1] for p in points], s=sizes, alpha=0.6, edgecolors="black")
        for x, y, _, name in sorted(points, key=lambda p: -p[2])[:label_top]:
            axes.annotate(name, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("arithmetic intensity (FLOPs per byte moved)")
    axes.set_ylabel("achieved FLOP/s (flops + elementwise_flops)")
    axes.set_title(
        f"{report.model} on {measured.device_name} ({report.dtype}): peak {ceilings.peak_flops_per_s:.3g} FLOP/s, "
        f"{ceilings.bandwidth_bytes_per_s:.3g} B/s",
        fontsize=9,
    )
    axes.grid(True, which="both", alpha=0.3)
    with open_output(target, binary=True) as handle:
        figure.savefig(handle, format=suffix, dpi=150)
