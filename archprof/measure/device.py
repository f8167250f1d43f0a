"""The device a real run uses, its name, the real model on it and random inputs."""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from archprof.analysis import Analysis
from archprof.errors import ArchprofError, first_line, shown
from archprof.random_state import REAL_TRACE_SEED, real_input
from archprof.report import Report
from archprof.tracing.model_state import in_traced_mode
from archprof.tracing.trace import forward_exits_as_errors
from archprof.units import human_bytes


def resolve_device(device: str | None) -> torch.device:
    """'cpu', 'cuda' or 'cuda:N' (None: cuda when torch sees a GPU, else cpu)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str | torch.device):
        raise ArchprofError(f"device must be cpu, cuda or cuda:N (a string or a torch.device), got {shown(device)}")
    text = str(device).strip().lower()
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise ArchprofError(f"unknown device '{device}': choose cpu or cuda (cuda:N for another GPU)")
    target = torch.device(text)
    if target.type == "cuda":
        if not torch.cuda.is_available():
            raise ArchprofError(
                f"device '{text}' needs a CUDA GPU, and torch sees none (torch.cuda.is_available() is False)"
            )
        if target.index is not None and target.index >= torch.cuda.device_count():
            raise ArchprofError(f"device '{text}': torch sees {torch.cuda.device_count()} GPU(s)")
        if target.index is None:
            target = torch.device("cuda", torch.cuda.current_device())
    return target


# Room on top of a predicted peak for what the analysis does not count (operators'
# workspace, the allocator's rounding): a real run near the limit is refused in one line
# rather than killed by the system's out-of-memory killer with no word (exit 137).
REAL_RUN_MARGIN = 1.5


def too_large_for(what: str, predicted: int, free: int, where: str, hint: str) -> ArchprofError:
    """The one line that refuses a real run `beyond_free_memory`: its prediction, the margin
    that decides, what `where` (a device) has available, and `hint`. A bare 'needs 15.98 GB,
    but the cpu has 23.19 GB free' gave no reason."""
    return ArchprofError(
        f"{what} is predicted to need {human_bytes(predicted)}, {human_bytes(round(predicted * REAL_RUN_MARGIN))}"
        f" with half again for operators' workspace, more than the {human_bytes(free)} {where} has available: {hint}"
    )


def beyond_free_memory(predicted: int, free: int | None) -> bool:
    """Whether a real run predicted to need `predicted` bytes, with REAL_RUN_MARGIN on top,
    would pass the `free` bytes of its device (None: cannot tell, so never)."""
    return free is not None and predicted * REAL_RUN_MARGIN > free


def free_memory(device: torch.device) -> int | None:
    """The bytes a real run on `device` can take: CUDA's free memory, or the system's
    available memory (None where it cannot tell)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return cpu_available_memory()


def refuse_a_run_that_cannot_fit(analysed: Analysis, target: torch.device) -> None:
    """Refuse, before anything is built or measured, a real run of `analysed` whose predicted
    inference peak (with REAL_RUN_MARGIN) passes what `target` has free: it would be killed
    by the system's out-of-memory killer without a word, or swap for as long as it took."""
    predicted = analysed.report.totals.peak_memory_bytes
    free = free_memory(target)
    if beyond_free_memory(predicted, free):
        where = "the CPU" if target.type == "cpu" else str(target)
        what = f"a real run of {analysed.loaded.name} at batch {analysed.batch}"
        raise too_large_for(what, predicted, free, where, "give a smaller batch or input")


def cpu_available_memory() -> int | None:
    """The system's available memory in bytes (None where it cannot tell)."""
    try:
        with open("/proc/meminfo") as meminfo:  # MemAvailable: free memory and what can be reclaimed
            fields = dict(line.split(":", 1) for line in meminfo)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):  # no /proc (macOS): the free pages, a lower bound
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            return None


def device_name(device: torch.device) -> str:
    """What the device is: the GPU's name, or the CPU's model and the threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        pass
    if not model:
        model = platform.processor() or platform.machine() or "unknown CPU"
    threads = torch.get_num_threads()
    return f"{model}, {threads} thread{'' if threads == 1 else 's'}"


def materialise(loaded, device: torch.device, dtype: torch.dtype | None) -> torch.nn.Module:
    """The model with real storage on `device`, in eval mode (`LoadedModel.materialize`).

    A built-in or a factory is built again there with random weights (its own
    initialisation; BatchNorm running statistics mean 0, variance 1), `--weights` loaded
    into it; a module the caller gave is copied there with its own weights (the caller's
    is untouched), with random ones if they were on the meta device. Random, never
    uninitialised: garbage memory can hold NaNs and denormals, which run at other speeds."""
    return in_traced_mode(loaded.materialize(device, dtype, copy_module=True), training=False)


@contextmanager
def real_run_errors(name: str, device: torch.device, batch: int, run: str = "forward") -> Iterator[None]:
    """Run the model for real (`run`: what the block does, "forward" or "training step"), its
    failures each one ArchprofError: the GPU out of memory, the model's own code failing on
    real data (a kernel the device lacks: cdist in float16 on the CPU), a SystemExit."""
    try:
        with forward_exits_as_errors(name):
            yield
    except torch.cuda.OutOfMemoryError as exc:
        raise ArchprofError(
            f"the GPU ran out of memory running {name} at batch {batch}: {first_line(exc, bare=True)}"
        ) from None
    except ArchprofError:
        raise
    except Exception as exc:
        raise ArchprofError(f"the real {run} of {name} failed on {device}: {first_line(exc, bare=True)}") from None


@dataclass(frozen=True)
class ForwardInputs:
    """The real inputs: positional, then by keyword, as the trace passed them."""

    args: tuple
    kwargs: dict

    def __call__(self, module):
        return module(*self.args, **self.kwargs)


def leaf_paths(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Leaf modules by path, each under its first name (`Graph.calls_as_named` names its
    calls as the rows do); none for a TorchScript module, which runs no Python hooks."""
    if isinstance(module, torch.jit.ScriptModule) or getattr(module, "_archprof_attribution", "") == "parameters":
        return {}
    # Without children of its own, not without children listed under it: a container whose
    # one child is held under an earlier name too has its rows in that child's.
    return {path: m for path, m in hookable_modules(module).items() if next(m.children(), None) is None}


def hookable_modules(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The modules by (first) path that take Python hooks: not a TorchScript submodule of an
    eager model, nor, scripted too, what lies inside it (its work is its caller's own)."""
    return {path: m for path, m in module.named_modules() if not isinstance(m, torch.jit.ScriptModule)}


def timed_paths(module: torch.nn.Module, report: Report, aliases: dict[str, str]) -> dict[str, torch.nn.Module]:
    """The modules `archprof profile` times, by (first) path: every leaf, and every other
    module whose call has a row, i.e. ran operators of its own (a BatchNorm with an activation
    child, MultiheadAttention, a ResNet block's add), under any of its names (`aliases`:
    `Graph.aliases`). Not the model itself when it has children: its own operations are the
    remainder between hooks. None for TorchScript."""
    leaves = leaf_paths(module)
    if not leaves:
        return {}
    named = hookable_modules(module)
    calls = zip(report.columns["layer"], report.columns["call"], strict=True)
    with_rows = {aliases.get(layer, layer) for layer, call in calls if call >= 0}
    return {**leaves, **{path: named[path] for path in with_rows if path and path in named}}


def random_inputs(analysed: Analysis, device: torch.device) -> ForwardInputs:
    """Random inputs of the shapes, dtypes and keywords the analysis traced, drawn one by one
    in the order it took them, as a real trace draws its own (`real_input`)."""
    pairs = zip(analysed.inputs, analysed.graph.inputs, strict=True)
    drawn = [(traced.name, real_input(meta.shape, meta.dtype, device)) for traced, meta in pairs]
    return ForwardInputs(tuple(x for name, x in drawn if not name), {name: x for name, x in drawn if name})


def drawn_as_traced(analysed: Analysis) -> int | None:
    """The seed a real run of `analysed` draws its weights and inputs from (`random_state_kept`):
    where the analysis traced a real forward, whose shapes may follow its values (a
    detector's kept boxes), that trace's own (REAL_TRACE_SEED), so that on the device it ran
    on, the run is the forward analysed; None (the caller's generators, forked) after a meta
    trace, whose figures no value changes."""
    return None if analysed.report.traced_on == "meta" else REAL_TRACE_SEED
