"""archprof: static analysis and cost profiling of CNN architectures.

    >>> import archprof
    >>> report = archprof.analyze("vgg16", input_size=(3, 224, 224))
    >>> report.totals.param_count
    138357544

Importing archprof is cheap: torch, pandas and rich load only when first needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["ArchprofError", "ArchprofWarning", "InputSpec", "Report", "analyze", "compare", "count_operator", "profile"]

if TYPE_CHECKING:
    from archprof.api import analyze, profile
    from archprof.comparison import compare
    from archprof.errors import ArchprofError, ArchprofWarning
    from archprof.load import InputSpec
    from archprof.operators.given import count_operator
    from archprof.report import Report

_LAZY = {
    "analyze": "archprof.api",
    "profile": "archprof.api",
    "ArchprofError": "archprof.errors",
    "ArchprofWarning": "archprof.errors",
    "InputSpec": "archprof.load",
    "Report": "archprof.report",
    "compare": "archprof.comparison",
    "count_operator": "archprof.operators.given",
}


def __getattr__(name: str):
    import importlib
    import importlib.util

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    # A module of the package, imported at its first use (`archprof.diff.diff`,
    # `archprof.fit.fit_batch` after a plain `import archprof`), as an eager import would give.
    elif name.isidentifier() and not name.startswith("_") and importlib.util.find_spec(f"archprof.{name}") is not None:
        value = importlib.import_module(f"archprof.{name}")
    else:
        raise AttributeError(f"module 'archprof' has no attribute {name!r}")
    # Kept as the package's own attribute: later reads (`archprof.analyze` in a loop) find it
    # without coming here, where each read went through `import_module` (about 5 µs).
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The lazy names too, for tab completion."""
    return sorted({*globals(), *__all__})
