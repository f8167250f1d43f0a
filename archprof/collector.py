"""The cyclic garbage collector held off while archprof makes objects by the thousand."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block, then as it was. A trace, and a build
    on meta, make tens of thousands of small objects, none of them garbage in a cycle; each
    time they pass the collector's threshold it walks every object the process holds (all of
    torch, and timm or torchvision where imported): 5 to 10% of an analysis, 5 to 14% of a
    build."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
