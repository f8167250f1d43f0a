"""Room on Python's stack while archprof needs more than the process's recursion limit gives:
a trace of a model nested deeper than its own frames per level leave room for, a receptive-field
pass over a map as deep as the network.

The limit is the process's: each holder's need is counted, the limit raised to the largest
and put back when the last one leaves, so that two threads' raises and restores cannot
interleave and leave it raised (or lowered under a deep pass still running)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_LOCK = threading.Lock()
_HIGHEST = 2**31 - 1  # sys.setrecursionlimit takes a C int
_needs: list[int] = []  # each holder's limit, while it holds one
_before: list[int] = []  # the limit before the first holder: put back after the last


@contextmanager
def recursion_room(limit: int) -> Iterator[None]:
    """The recursion limit at least `limit` (at most the highest Python takes) for the block,
    never lowered by it."""
    limit = min(limit, _HIGHEST)
    with _LOCK:
        if not _needs:
            _before[:] = [sys.getrecursionlimit()]
        sys.setrecursionlimit(max([_before[0], *_needs, limit]))
        _needs.append(limit)
    try:
        yield
    finally:
        with _LOCK:
            _needs.remove(limit)
            sys.setrecursionlimit(max([_before[0], *_needs]))
