"""One thread at a time through the work that changes torch for the whole process.

A trace routes torch functions and registers dispatcher kernels (`kernels.DeviceKernels`),
swaps stand-ins into the model's tables and sets its modes; a build on meta replaces
torch.nn.init's functions (`meta`). None of that is per thread: two analyses at once in
two threads each saw the other's routes and stand-ins (wrong MACs, errors from inside
torch) and could leave torch patched for good, every later analysis of the process wrong.
`PATCHING_TORCH` (reentrant: a build inside a trace, a trace inside a forward) makes them
take turns.
"""

from __future__ import annotations

import threading

PATCHING_TORCH = threading.RLock()
