"""The peak memory of one real forward, on its device: CUDA's allocator counter
(`torch.cuda.max_memory_allocated`), or on the CPU, which keeps no such counter, the CPU
allocator's own events as torch.profiler records them (`profile_memory=True`): every
allocation and free, in order, whose running sum at its highest is the most the forward
held beyond what was held before it (the model's parameters and buffers, the inputs)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch

from archprof.measure.cuda_memory import peak_bytes
from archprof.structure import tensors_in


def measured_peak(run: Callable[[], Any], device: torch.device, before: int, held: int) -> int | None:
    """The peak bytes of one call of `run`. CUDA: max_memory_allocated, less `before` (what
    was allocated before the model was built). CPU: `held` (its parameters, buffers and
    inputs) plus the most the call allocated beyond them. Another device: None."""
    if device.type == "cuda":
        return peak_bytes(device, before, run)
    if device.type == "cpu":
        return held + cpu_allocation_peak(run)
    return None


def held_bytes(module: torch.nn.Module, inputs: Any) -> int:
    """The bytes of the module's parameters and buffers (each once) and of the input tensors."""
    tensors = {id(t): t for t in (*module.parameters(), *module.buffers(), *tensors_in(inputs))}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def cpu_allocation_peak(run: Callable[[], Any]) -> int:
    """The highest running sum of the CPU allocator's allocations and frees during `run`."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with _native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as recorded:
        run()
    events = [
        event
        for event in recorded.profiler.kineto_results.events()
        if event.name() == "[memory]" and event.device_type() == DeviceType.CPU
    ]
    events.sort(key=lambda event: event.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()  # negative for a free
        peak = max(peak, live)
    return peak


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """The profiler's native code writes its start and stop to the process's stderr (file
    descriptor 2, "USDT: ... profiler_start"): not a line for the user."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
