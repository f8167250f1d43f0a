"""What the device can do at most, the two slopes of the roofline: peak FLOP/s (a large
matrix product) and memory bandwidth (a large copy). Measured once, then cached in
ceilings.json per device (threads included on a CPU), torch version and precision, with
the time of the measurement: a figure that a layer beats is measured again
(`archprof.measure.profile`), and `forget_device` drops a device's figures (--remeasure)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from archprof.errors import ArchprofError
from archprof.measure.clock import Clock, ProgressFn, best_seconds, no_progress
from archprof.measure.device import device_name
from archprof.output import read_text, write_atomically

CACHE_VERSION = 2  # 1 keyed the figures by device alone: read as empty, measured again

FIGURES = ("peak_flops", "bandwidth")  # what `remeasure` may name


@dataclass(frozen=True)
class Ceilings:
    """What the device can do at most: the two slopes of the roofline."""

    device: str  # "cuda: NVIDIA H200", "cpu: AMD EPYC, 16 threads"
    dtype: str  # of the matrix product behind peak_flops_per_s ("float32+tf32": TF32 on a GPU)
    peak_flops_per_s: float  # a large matrix product (the best of a few runs)
    bandwidth_bytes_per_s: float  # a large device-to-device copy: bytes read + bytes written
    flops_source: str  # "measured" (by this run), "cached" or "given"
    bandwidth_source: str
    flops_measured_at: float | None = None  # Unix time of the measurement; None: given by hand
    bandwidth_measured_at: float | None = None

    @property
    def ridge(self) -> float:
        """FLOPs per byte where the roofline bends: above it a row is compute-bound."""
        return self.peak_flops_per_s / self.bandwidth_bytes_per_s

    def roof(self, intensity: float) -> float:
        """The most FLOP/s the roofline allows at `intensity` FLOPs per byte."""
        return min(self.peak_flops_per_s, intensity * self.bandwidth_bytes_per_s)

    def above_roof(self, rate: float | None, intensity: float | None) -> bool:
        """Whether a row that achieved `rate` FLOP/s at `intensity` ran above the roof (the
        table's ▲, the plot's red ring, the notes' count); False where it has either none."""
        return bool(rate) and intensity is not None and rate > self.roof(intensity)

    def source(self, figure: str) -> str:
        """ "measured", "cached" or "given", for "peak_flops" or "bandwidth"."""
        return self.flops_source if figure == "peak_flops" else self.bandwidth_source

    @property
    def remeasure_hint(self) -> str:
        """How to measure the figures not given again ('' where both were given)."""
        measured = [figure for figure in ("peak_flops", "bandwidth") if self.source(figure) != "given"]
        if not measured:
            return ""
        which = "them" if len(measured) == 2 else "the " + ("peak" if measured == ["peak_flops"] else "bandwidth")
        return f"archprof profile --remeasure measures {which} again."

    def origin(self, figure: str) -> str:
        """Where a figure ("peak_flops" or "bandwidth") came from, and how old it is:
        'given', 'measured now', 'cached, measured 3 days ago'."""
        source = self.source(figure)
        at = self.flops_measured_at if figure == "peak_flops" else self.bandwidth_measured_at
        if source == "cached" and at is not None:
            return f"cached, measured {age_text(time.time() - at)} ago"
        return "measured now" if source == "measured" else source


def age_text(seconds: float) -> str:
    """3 -> '3 s', 7200 -> '2 h', 400000 -> '4 days': the largest unit that fits."""
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{max(seconds, 0):.0f} s"


def cache_path() -> Path:
    """ceilings.json in $ARCHPROF_CACHE_DIR, else $XDG_CACHE_HOME/archprof, else ~/.cache/archprof."""
    directory = os.environ.get("ARCHPROF_CACHE_DIR")
    if directory:
        return Path(directory) / "ceilings.json"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "archprof" / "ceilings.json"


def cache_key(device: torch.device, precision: str) -> str:
    """What a cached figure holds for: the device (a CPU's threads included), torch, the precision."""
    return f"{_device_label(device)} | torch {torch.__version__} | {precision}"


def _device_label(device: torch.device) -> str:
    return f"{device.type}: {device_name(device)}"


_CACHE_BYTES = 2**20  # a few hundred bytes per device and precision


def read_cache(path: Path | None = None) -> dict[str, Any]:
    """The cache's entries, by `cache_key` ({} when missing or unreadable: measured again)."""
    path = path or cache_path()
    try:
        document = json.loads(read_text(path, "cache", _CACHE_BYTES))  # a FIFO or /dev/zero never hangs
    except (ArchprofError, ValueError, RecursionError):  # json reads nested arrays by recursion
        return {}
    if not isinstance(document, dict) or document.get("version") != CACHE_VERSION:
        return {}
    entries = document.get("entries")
    return entries if isinstance(entries, dict) else {}


def write_cache(entries: dict[str, Any], path: Path | None = None) -> None:
    path = path or cache_path()
    with contextlib.suppress(OSError, ArchprofError):  # unwritable: measured again next time
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps({"version": CACHE_VERSION, "entries": entries}, indent=2) + "\n")


def forget_device(device: torch.device, figures: Collection[str] = FIGURES) -> int:
    """Drop the cached `figures` of `device` (any torch, any precision), so that the next
    profile measures them again; returns how many entries lost one. An entry left with
    no figure goes."""
    entries = read_cache()
    prefix = f"{_device_label(device)} | "
    dropped = {name for figure in figures for name in (figure, f"{figure}_measured_at")}
    kept, forgotten = {}, 0
    for key, entry in entries.items():
        if key.startswith(prefix):
            left = {}  # of an entry that is not a table of figures (a cache edited by hand): nothing
            if isinstance(entry, dict):
                left = {name: value for name, value in entry.items() if name not in dropped}
            forgotten += left != entry
            entry = left
        if entry:
            kept[key] = entry
    if forgotten:
        write_cache(kept)
    return forgotten


def device_ceilings(
    device: torch.device,
    dtype: str,
    peak_flops: float | None = None,
    bandwidth: float | None = None,
    progress: ProgressFn = no_progress,
    remeasure: Collection[str] = (),
    beaten: Collection[str] = (),
) -> Ceilings:
    """Peak FLOP/s (for `dtype`) and bandwidth of `device`: given by hand, else from the
    cache, else measured now (and cached). A figure named in `remeasure` ("peak_flops",
    "bandwidth") is measured now whatever the cache holds. One named in `beaten`, a cached
    ceiling a layer ran faster than, is measured now too, and the higher of the two figures
    kept: a measurement on a busy machine would lower a ceiling already shown too low. A
    figure given by hand is never cached."""
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype) or not torch_dtype.is_floating_point:
        dtype, torch_dtype = "float32", torch.float32  # a model without floating inputs or weights
    precision = precision_label(device, dtype)
    key = cache_key(device, precision)
    entries = read_cache()
    entry = entries.get(key) if isinstance(entries.get(key), dict) else {}
    benchmarks = {
        "peak_flops": ("peak FLOP/s", lambda: measure_peak_flops(device, torch_dtype)),
        "bandwidth": ("memory bandwidth", lambda: measure_bandwidth(device)),
    }
    found: dict[str, tuple[float, str, float | None]] = {}
    for figure, given in zip(FIGURES, (peak_flops, bandwidth), strict=True):
        cached, at = entry.get(figure), entry.get(f"{figure}_measured_at")
        if given is not None:
            found[figure] = (float(given), "given", None)
        elif (
            figure not in remeasure
            and figure not in beaten
            and _usable(cached, _MOST[figure])
            and _usable(at, time.time() + _CLOCK_SKEW_S)
        ):
            found[figure] = (float(cached), "cached", float(at))
        else:
            what, benchmark = benchmarks[figure]
            progress(f"measuring the device's {what}", 0, 1)
            value = benchmark()
            progress(f"measuring the device's {what}", 1, 1)
            if figure in beaten and _usable(cached, _MOST[figure]):
                value = max(value, float(cached))
            found[figure] = (value, "measured", time.time())
            entry = {**entry, figure: value, f"{figure}_measured_at": found[figure][2]}
            entries[key] = entry
    if any(source == "measured" for _, source, _ in found.values()):
        write_cache(entries)
    (flops, flops_source, flops_at), (bytes_rate, bandwidth_source, bandwidth_at) = found.values()
    return Ceilings(
        _device_label(device),
        precision,
        flops,
        bytes_rate,
        flops_source,
        bandwidth_source,
        flops_measured_at=flops_at,
        bandwidth_measured_at=bandwidth_at,
    )


def precision_label(device: torch.device, dtype: str) -> str:
    """The arithmetic a model in `dtype` runs its convolutions in: on a GPU, float32
    convolutions use TF32 tensor cores where cuDNN's flags allow it (PyTorch's default),
    "float32+tf32", many times float32's peak."""
    if device.type == "cuda" and dtype == "float32" and _convolutions_in_tf32():
        return "float32+tf32"
    return dtype


def _convolutions_in_tf32() -> bool:
    """Whether cuDNN runs float32 convolutions in TF32: PyTorch's per-operator flag
    (`torch.backends.cudnn.conv.fp32_precision`, from 2.9; once set, reading the legacy
    allow_tf32 raises where conv and RNN differ), else the legacy flag."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None:
        return conv.fp32_precision == "tf32"
    return torch.backends.cudnn.allow_tf32


@contextlib.contextmanager
def _products_in_tf32(tf32: bool):
    """Matrix products in TF32 (`tf32`) or full float32 for the block, then as they were: by the
    per-operator flag where PyTorch has one (mixing it with the legacy allow_tf32 makes PyTorch
    raise), else by the legacy flag."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        flag, value = "fp32_precision", "tf32" if tf32 else "ieee"
    else:
        flag, value = "allow_tf32", tf32
    saved = getattr(matmul, flag)
    setattr(matmul, flag, value)
    try:
        yield
    finally:
        setattr(matmul, flag, saved)


# The most a cached figure may say, for one device: a thousand times today's fastest (an
# H200's 4 PFLOP/s of FP8, 4.8 TB/s), so that a cache edited by hand (1e300 FLOP/s, which
# profile showed as 230 digits of TFLOP/s) is measured again, not believed.
_MOST = {"peak_flops": 1e19, "bandwidth": 1e16}
_CLOCK_SKEW_S = 24 * 3600  # a measurement's time may be this far ahead of the clock, not more


def _usable(value: Any, most: float) -> bool:
    """Whether a cached rate or time is a number from 1 to `most` that a float holds, as a
    rate given by hand must be at least 1 (a cache edited by hand may hold 10**400, 1e-300,
    1e300, a time in the future, text or a list)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value) and 1 <= value <= most
    except OverflowError:  # an int past a float's range
        return False


def measure_peak_flops(device: torch.device, dtype: torch.dtype, max_size: int | None = None) -> float:
    """FLOP/s of a large square matrix product (2 n^3 FLOPs) in `dtype`, the best of a few
    runs after warm-up, on random data (never zeros: they can run faster). n doubles from
    256 until one product takes 20 ms or n reaches `max_size` (8192 on a GPU, 2048 on a CPU).
    On a GPU, a float32 product runs in TF32 exactly when convolutions do, the precision a
    CNN's FLOPs run in: see `precision_label`."""
    if device.type == "cuda":
        with _products_in_tf32(_convolutions_in_tf32()):
            return _matmul_rate(device, dtype, max_size or 8192)
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
