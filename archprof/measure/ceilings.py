"""What the device can do at most, the two slopes of the roofline: peak FLOP/s (a large
matrix product) and memory bandwidth (a large copy), measured once per device and dtype and
cached in ceilings.json."""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from archprof.errors import ArchprofError
from archprof.measure.clock import Clock, ProgressFn, best_seconds, no_progress
from archprof.measure.device import device_name
from archprof.output import write_atomically

CACHE_VERSION = 1


@dataclass(frozen=True)
class Ceilings:
    """What the device can do at most: the two slopes of the roofline."""

    device: str  # the cache key: "cuda: NVIDIA H200", "cpu: AMD EPYC, 16 threads"
    dtype: str  # of the matrix product behind peak_flops_per_s ("float32+tf32": TF32 on a GPU)
    peak_flops_per_s: float  # a large matrix product (the best of a few runs)
    bandwidth_bytes_per_s: float  # a large device-to-device copy: bytes read + bytes written
    flops_source: str  # "measured", "cached" or "given"
    bandwidth_source: str

    @property
    def ridge(self) -> float:
        """FLOPs per byte where the roofline bends: above it a row is compute-bound."""
        return self.peak_flops_per_s / self.bandwidth_bytes_per_s


def cache_path() -> Path:
    """ceilings.json in $ARCHPROF_CACHE_DIR, else $XDG_CACHE_HOME/archprof, else ~/.cache/archprof."""
    directory = os.environ.get("ARCHPROF_CACHE_DIR")
    if directory:
        return Path(directory) / "ceilings.json"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "archprof" / "ceilings.json"


def read_cache(path: Path | None = None) -> dict[str, Any]:
    """The cache's devices ({} when missing or unreadable: it is measured again)."""
    path = path or cache_path()
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(document, dict) or document.get("version") != CACHE_VERSION:
        return {}
    devices = document.get("devices")
    return devices if isinstance(devices, dict) else {}


def write_cache(devices: dict[str, Any], path: Path | None = None) -> None:
    path = path or cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps({"version": CACHE_VERSION, "devices": devices}, indent=2) + "\n")


def device_ceilings(
    device: torch.device,
    dtype: str,
    peak_flops: float | None = None,
    bandwidth: float | None = None,
    progress: ProgressFn = no_progress,
) -> Ceilings:
    """Peak FLOP/s (for `dtype`) and bandwidth of `device`: given by hand, else from the
    cache, else measured now (and cached). A figure given by hand is never cached."""
    key = f"{device.type}: {device_name(device)}"
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype) or not torch_dtype.is_floating_point:
        dtype, torch_dtype = "float32", torch.float32  # a model without floating inputs or weights
    precision = precision_label(device, dtype)
    devices = read_cache()
    entry = devices.get(key) if isinstance(devices.get(key), dict) else {}
    flops_by_dtype = entry.get("peak_flops_per_s") if isinstance(entry.get("peak_flops_per_s"), dict) else {}

    flops_source = bandwidth_source = "given"
    changed = False
    if peak_flops is None:
        cached = flops_by_dtype.get(precision)
        if _positive(cached):
            peak_flops, flops_source = float(cached), "cached"
        else:
            progress("measuring the device's peak FLOP/s", 0, 1)
            peak_flops, flops_source = measure_peak_flops(device, torch_dtype), "measured"
            progress("measuring the device's peak FLOP/s", 1, 1)
            flops_by_dtype = {**flops_by_dtype, precision: peak_flops}
            changed = True
    if bandwidth is None:
        cached = entry.get("bandwidth_bytes_per_s")
        if _positive(cached):
            bandwidth, bandwidth_source = float(cached), "cached"
        else:
            progress("measuring the device's memory bandwidth", 0, 1)
            bandwidth, bandwidth_source = measure_bandwidth(device), "measured"
            progress("measuring the device's memory bandwidth", 1, 1)
            entry = {**entry, "bandwidth_bytes_per_s": bandwidth}
            changed = True
    if changed:
        devices[key] = {**entry, "peak_flops_per_s": flops_by_dtype, "torch": torch.__version__}
        with contextlib.suppress(OSError, ArchprofError):  # unwritable: measured again next time
            write_cache(devices)
    return Ceilings(key, precision, float(peak_flops), float(bandwidth), flops_source, bandwidth_source)


def precision_label(device: torch.device, dtype: str) -> str:
    """The arithmetic a model in `dtype` runs its convolutions in: on a GPU, float32
    convolutions use TF32 tensor cores when torch.backends.cudnn.allow_tf32 (PyTorch's
    default), "float32+tf32", many times float32's peak."""
    if device.type == "cuda" and dtype == "float32" and torch.backends.cudnn.allow_tf32:
        return "float32+tf32"
    return dtype


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def measure_peak_flops(device: torch.device, dtype: torch.dtype, max_size: int | None = None) -> float:
    """FLOP/s of a large square matrix product (2 n^3 FLOPs) in `dtype`, the best of a few
    runs after warm-up, on random data (never zeros: they can run faster). n doubles from
    256 until one product takes 20 ms or n reaches `max_size` (8192 on a GPU, 2048 on a CPU).
    On a GPU, a float32 product runs in TF32 exactly when convolutions do
    (torch.backends.cudnn.allow_tf32), the precision a CNN's FLOPs run in: see `precision_label`."""
    if device.type == "cuda":
        matmul = torch.backends.cuda.matmul
        saved = matmul.allow_tf32
        matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
        try:
            return _matmul_rate(device, dtype, max_size or 8192)
        finally:
            matmul.allow_tf32 = saved
    return _matmul_rate(device, dtype, max_size or 2048)


def _matmul_rate(device: torch.device, dtype: torch.dtype, max_size: int) -> float:
    clock = Clock(device)
    size = min(256, max_size)
    while True:
        a = torch.randn(size, size, device=device).to(dtype)
        b = torch.randn(size, size, device=device).to(dtype)
        seconds = best_seconds(clock, lambda a=a, b=b: torch.mm(a, b), runs=3)
        if seconds >= 0.02 or size * 2 > max_size:
            break
        size *= 2
    seconds = best_seconds(clock, lambda: torch.mm(a, b), runs=5)
    return 2 * size**3 / seconds


def measure_bandwidth(device: torch.device, nbytes: int | None = None) -> float:
    """Bytes per second of a large device-to-device copy, counting bytes read plus bytes
    written, the best of a few runs after warm-up. 1 GiB on a GPU (less if it has less
    free), 128 MiB on a CPU: larger than its caches."""
    if nbytes is None:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            nbytes = min(2**30, free // 4)
        else:
            nbytes = 2**27
    numel = max(nbytes // 4, 1)
    # Filled (never zeros, and every page touched before timing); a copy's speed does not
    # depend on the values.
    source = torch.empty(numel, dtype=torch.float32, device=device).fill_(1.5)
    target = torch.empty_like(source)
    clock = Clock(device)
    seconds = best_seconds(clock, lambda: target.copy_(source), runs=5)
    return 2 * numel * 4 / seconds
