"""A bound on the memory a model file's TorchScript code takes in all, its lists and strings
included (`native_memory_bounded`).

TorchScript's interpreter makes a file's lists and strings itself, without one operator
reaching the dispatcher, where the bounds on tensors (`cpu_allocation`) and on operators
stand. Measured on 2 KB files (`archprof summary`, a 24 GB machine): a forward that doubled
a string 40 times took all 24 GB in 100 s and was killed; `[0] * 400_000_000` took 6.5 GB
over 15 s; `str()` of a list of 1,000 references to a list of 1,000 references to a list of
1,000 numbers took 9 GB over 78 s (references, not copies: no count of the elements made
bounds what writing them out makes). So while the code runs, the process's data segment
(Linux's RLIMIT_DATA: the memory it writes, its heap and private mappings) may grow by at
most the bound: an allocation past it fails, which the interpreter raises as
`std::bad_alloc` and Python as a MemoryError, and which is said as the bound passed. With
the bound, those three files are refused after 6.5, 2.6 and 44 s, at 2.3 GB, 0.25 and 2.3.

What it bounds is the process's growth, not the code's own allocations: memory the process
freed earlier, still in its heap, is taken again without growth. The time a single operator
of the interpreter takes within the bound is not bounded (the third file's 44 s); a loop's
is (`archprof.tracing.script_loops`). The limit is the process's, as the kernel keeps it:
another thread's allocations meet it too while it stands. Where the system keeps no such
limit (Windows; macOS does not enforce it), nothing is bounded.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable
from types import TracebackType

from archprof.cpu_allocation import MOST_FILE_CPU_BYTES
from archprof.errors import exception_chain

try:
    import resource
except ImportError:  # Windows
    resource = None

# The most memory a model file's code may take while it loads or while its forward is traced:
# the CPU tensors it may make (MOST_FILE_CPU_BYTES), and 2 GiB for the rest, its lists and
# strings and the trace's records of its operators (kilobytes each; the largest of
# torchvision's and timm's networks runs 10,928).
MOST_FILE_MEMORY = MOST_FILE_CPU_BYTES + 2**31

_DATA_SIZE = re.compile(rb"^VmData:\s+(\d+) kB$", re.MULTILINE)


class native_memory_bounded:
    """While active, the process may take at most `most` bytes more than it held as it
    entered; where code inside runs out of them, the error `refusal(most)` makes is raised
    instead. A limit of the caller's own that is lower stands, and its errors pass as they
    are. Threads take turns (`_LIMIT_HELD`): one that put its limit back while another's
    stood would leave the process bounded, or unbounded, for good. Where the limit cannot be
    read or set (no /proc, a sandbox refusing the call), nothing is bounded."""

    def __init__(self, most: int, refusal: Callable[[int], Exception]) -> None:
        self.most = most
        self.refusal = refusal
        self._limits: tuple[int, int] | None = None  # while active and bounding: the limits to put back

    def __enter__(self) -> native_memory_bounded:
        if resource is None or not sys.platform.startswith("linux"):
            return self
        _LIMIT_HELD.acquire()
        try:
            soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
            bound = _data_size() + self.most
            if soft == resource.RLIM_INFINITY or bound <= soft:  # the hard limit is at least the soft one
                resource.setrlimit(resource.RLIMIT_DATA, (bound, hard))
                self._limits = (soft, hard)
        except (OSError, ValueError):  # no /proc, or a sandbox that refuses the call: nothing bounded
            pass
        finally:
            if self._limits is None:  # not bounding: another may
                _LIMIT_HELD.release()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._limits is None:
            return
        try:
            resource.setrlimit(resource.RLIMIT_DATA, self._limits)
        finally:
            self._limits = None
            _LIMIT_HELD.release()
        if exc is not None and ran_out_of_memory(exc):
            raise self.refusal(self.most) from None


# Held while a bound stands (re-entrant: a bound inside another, in one thread, puts the outer back).
_LIMIT_HELD = threading.RLock()


def _data_size() -> int:
    """The bytes of the process's data segment now (what RLIMIT_DATA bounds)."""
    with open("/proc/self/status", "rb") as status:
        found = _DATA_SIZE.search(status.read())
    return int(found.group(1)) * 1024 if found else 0


def ran_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc`, or what it was raised from, is an allocation that failed: Python's
    MemoryError, or one handed on by TorchScript's interpreter as a RuntimeError, C++'s
    `std::bad_alloc` or Python's (a line of its message)."""
    return any(
        isinstance(raised, MemoryError) or (isinstance(raised, RuntimeError) and _HANDED_ON.search(str(raised)))
        for raised in exception_chain(exc)
    )


# The line TorchScript's interpreter ends an allocation's failure with, "RuntimeError: std::bad_alloc",
# or puts a Python MemoryError's in, "RuntimeError: MemoryError: <EMPTY MESSAGE>".
_HANDED_ON = re.compile(r"^(?:RuntimeError: )?(?:std::bad_alloc$|MemoryError: )", re.MULTILINE)
