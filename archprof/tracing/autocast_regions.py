"""torch.autocast regions met by a trace on meta.

Autocast acts on a device's own tensors (its dispatch key is the device's), never on meta
ones: on meta a region's convolutions and matrix products would run in their inputs' dtype,
its float32 operators (an average pooling, a distance, a loss) in theirs, and no cast would
be recorded. A CPU region is one a CPU runs exactly: the meta trace gives way to a real
forward on the CPU (`NotImplementedError`, which the trace takes for a limitation of the meta
device), which autocast acts on; noted first, so that a forward catching the error (its own
`try`) still gives way when it returns (`cpu_region_refused`). Another device's region
(CUDA's) acts on no tensor of a trace on this machine: it is traced in its tensors' dtypes,
and noted for a warning.

Regions are seen as they are entered, opened by the forward (a `with` block, a decorator)
or open already around the trace, not at each operator: a dispatch mode runs with autocast off.
One made for the device of the forward's tensors (`torch.autocast(x.device.type, ...)`, often
to turn autocast off) is made for the CPU's: autocast refuses the meta device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch.amp.autocast_mode import autocast

_DEVICES = ("cpu", "cuda", "xpu", "mps", "hpu")


@contextmanager
def autocast_regions(noted: Callable[[str, torch.dtype], None]) -> Iterator[None]:
    """While active (a meta trace's forward): each enabled autocast region, open already or
    opened by the forward, is handed to `noted` (its device and dtype); a CPU one then raises
    NotImplementedError before it is entered, another device's is entered."""
    for device in _DEVICES:
        if torch.is_autocast_enabled(device):
            _met(device, torch.get_autocast_dtype(device), noted)
    init, enter = autocast.__init__, autocast.__enter__

    def made(region: autocast, device_type: str, *args, **kwargs) -> None:
        # A region asked for on its tensors' device (`x.device.type`): on meta, which autocast
        # refuses, the CPU's, where a real forward runs it.
        init(region, "cpu" if device_type == "meta" else device_type, *args, **kwargs)

    def entered(region: autocast):
        if region._enabled:
            _met(region.device, region.fast_dtype, noted)  # before it changes any state
        return enter(region)

    autocast.__init__, autocast.__enter__ = made, entered
    try:
        yield
    finally:
        autocast.__init__, autocast.__enter__ = init, enter


def _met(device: str, dtype: torch.dtype, noted: Callable[[str, torch.dtype], None]) -> None:
    noted(device, dtype)
    if device == "cpu":
        raise cpu_region_refused(dtype)


def cpu_region_refused(dtype: torch.dtype) -> NotImplementedError:
    """The error that makes a meta trace give way to a real forward on the CPU, for a CPU
    autocast region of `dtype`."""
    return NotImplementedError(
        f'torch.autocast("cpu", dtype={dtype}) acts on CPU tensors, not on meta ones: the CPU runs the region'
    )
