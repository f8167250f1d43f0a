"""A loaded model (`LoadedModel`): the module to trace, its name and usual inputs, and how to build it for real."""

from __future__ import annotations

import contextlib
import copy
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from archprof.errors import ArchprofError, first_line
from archprof.load.common import quiet
from archprof.load.inputs import InputSpec
from archprof.meta import is_uninitialised

# -- the loaded model ----------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to trace: `module` (on the meta device when archprof built it), what to
    call it, and what it takes by default.

    `owned` is True when archprof built or loaded the module itself (a built-in, a factory, a
    file): it may then be rebuilt for real (`materialize`). A module the caller passed is
    never changed. `state_dict` holds the `--weights` (CPU tensors, memory-mapped), checked
    against the module's parameter names and shapes."""

    module: torch.nn.Module
    name: str
    input_size: tuple[int, ...] | None  # the model's default per-sample (first) input, if known
    inputs: tuple[InputSpec, ...] | None = None  # all default inputs, when the model says
    batch: int | None = None  # default batch (an exported program's); None: 1
    kind: str = "module"  # builtin, hub, factory, module, torchscript, exported, pickle
    owned: bool = False
    state_dict: Mapping[str, torch.Tensor] | None = field(default=None, repr=False)
    source: Path | None = None  # the file it came from
    # Per input (in order), each dimension's size where the model was specialised to it (an
    # exported program's static shapes), None where any size works.
    static_shapes: tuple[tuple[int | None, ...], ...] | None = None
    # The batches the model takes, (smallest, largest; None: no limit), where it says: an
    # exported program's range for a dynamic batch (torch.export.Dim's min and max).
    batch_range: tuple[int, int | None] | None = None
    build: Callable[[torch.device], torch.nn.Module] | None = field(default=None, repr=False, compare=False)

    @property
    def default_inputs(self) -> tuple[InputSpec, ...] | None:
        if self.inputs is not None:
            return self.inputs
        return (InputSpec(self.input_size),) if self.input_size is not None else None

    def materialize(
        self, device: str | torch.device | None = None, dtype: torch.dtype | None = None, copy_module: bool = False
    ) -> torch.nn.Module:
        """The model with real weights on `device`, to run it for real (profiling, the CPU
        fallback of the trace).

        A model archprof built is built again there, with random weights (a factory's own
        initialisation), then `state_dict` (--weights) loaded into it; a TorchScript file
        is loaded again there. A module the caller passed is returned as it is (do not
        change it) unless `copy_module`, another device or dtype asks for a copy; one whose
        weights are on the meta device is copied with random weights.
        `device` None: the CPU for a model archprof built, the caller's module's own device."""
        if self.owned and self.build is not None:
            target = torch.device(device or "cpu")
            with quiet():
                module = self.build(target)
            if self.state_dict is not None:
                load_weights_into(module, self.state_dict, self.name)
        else:
            module = self.module
            current = device_of(module)
            target = torch.device(device) if device is not None else current
            if current.type == "meta":
                module = _copy(module).to_empty(device=target if target.type != "meta" else "cpu")
                _initialise(module)
            elif copy_module or target != current or _needs_cast(module, dtype):
                module = _copy(module).to(target)
        if dtype is not None and _needs_cast(module, dtype):
            with quiet():
                module = module.to(dtype)
        return module


# The wrappers that spread a batch over devices: the network analysed is the one inside,
# named as itself (the trace's stateless calls refuse DataParallel, and every row would
# start with "module."), as a checkpoint saved from one is read (`archprof.load.weights`).
_DATA_PARALLEL = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)


def unwrapped(module: torch.nn.Module) -> torch.nn.Module:
    """The network inside DataParallel, DistributedDataParallel and torch.compile's wrapper
    (whose rows would all start with "_orig_mod.", and whose call would compile)."""
    while True:
        if isinstance(module, _DATA_PARALLEL):
            module = module.module
        elif _compiled(module):
            module = module._orig_mod
        else:
            return module


def _compiled(module: torch.nn.Module) -> bool:
    """Whether `module` is torch.compile's OptimizedModule; torch._dynamo, which makes them,
    is not imported here (a second of start-up) where nothing has imported it."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    return eval_frame is not None and isinstance(module, eval_frame.OptimizedModule)


def _copy(module: torch.nn.Module) -> torch.nn.Module:
    """A deep copy, a lazy layer's parameters and buffers not yet made staying so (they
    cannot be copied): its first forward makes them."""
    memo = {
        id(t): type(t)(requires_grad=t.requires_grad, device=t.device, dtype=t.dtype)
        for t in (*module.parameters(), *module.buffers())
        if is_uninitialised(t)
    }
    # A ScriptModule's copy clones its parameters, which autograd would record (CloneBackward0):
    # no longer leaves, a backward pass writes none of their .grad. Made outside it, and each
    # then given its original's need of a gradient.
    with torch.no_grad():
        copied = copy.deepcopy(module, memo)
    for original, made in zip(module.parameters(), copied.parameters(), strict=True):
        if made.requires_grad != original.requires_grad:
            made.requires_grad_(original.requires_grad)
    return copied


def device_of(module: torch.nn.Module) -> torch.device:
    """The device of the module's first parameter or buffer; the CPU where it has none."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _needs_cast(module: torch.nn.Module, dtype: torch.dtype | None) -> bool:
    return dtype is not None and any(
        t.is_floating_point() and t.dtype != dtype for t in (*module.parameters(), *module.buffers())
    )


@torch.no_grad()
def _initialise(module: torch.nn.Module) -> None:
    """Random, finite values for storage made by `to_empty`: small normal weights, zero
    buffers, then each module's own `reset_parameters` (BatchNorm's running variance 1, ...)."""
    for tensor in module.parameters():
        if tensor.is_floating_point():
            tensor.normal_(0, 0.02)
        else:
            tensor.zero_()
    for tensor in module.buffers():
        tensor.zero_()
    for submodule in module.modules():
        reset = getattr(submodule, "reset_parameters", None)
        if callable(reset):
            with contextlib.suppress(Exception):
                reset()


def check_static_shapes(loaded: LoadedModel, inputs: Sequence[Any]) -> None:
    """An exported program specialised to some sizes cannot be analysed at others: its
    graph holds those sizes as constants, so the figures would be wrong. `inputs` (each with
    its full `shape` and its keyword `name`, None for a positional one) are matched to the
    program's by keyword, in any order, else by position; they must be the program's own
    (`_check_exported_arguments`)."""
    if loaded.kind == "exported":
        _check_exported_arguments(loaded, inputs)
    if loaded.static_shapes is None:
        return
    names = [spec.name for spec in loaded.default_inputs or ()]
    for position, given in enumerate(inputs):
        index = names.index(given.name) if given.name is not None and given.name in names else position
        if index >= len(loaded.static_shapes):
            continue
        expected, shape = loaded.static_shapes[index], given.shape
        if len(expected) != len(shape) or any(e is not None and e != s for e, s in zip(expected, shape, strict=True)):
            if _only_the_batch_differs(expected, shape):  # the program's own batch is the default one
                fix = (
                    f"its batch is fixed: drop --batch (Python: batch=) or give {expected[0]}, or export with a"
                    " torch.export.Dim on the batch dimension"
                )
            else:
                fix = "give that shape, or export with dynamic dimensions (torch.export.Dim)"
            wanted = "x".join("*" if e is None else str(e) for e in expected)
            got = "x".join(map(str, shape))
            raise ArchprofError(
                f"{loaded.name} was exported for input {index + 1} of shape {wanted} (batch included; * = any size)"
                f" and cannot be analysed at {got}: {fix}"
            )


def _only_the_batch_differs(expected: tuple[int | None, ...], shape: tuple[int, ...]) -> bool:
    """Whether a shape differs from a program's static one in its fixed first size alone."""
    if len(expected) != len(shape) or not shape or expected[0] in (None, shape[0]):
        return False
    return all(e is None or e == s for e, s in zip(expected[1:], shape[1:], strict=True))


def _check_exported_arguments(loaded: LoadedModel, inputs: Sequence[Any]) -> None:
    """An exported program takes the inputs it was exported with (its in_spec): as many
    positional ones, and the same keywords. Called otherwise, torch's unflattened module
    prints both specs (several lines, on stdout) before it fails."""
    exported = loaded.inputs or ()
    wanted, given = _arguments(exported), _arguments(inputs)
    if given == wanted:
        return
    missing = [spec for spec in exported if spec.name is not None and spec.name not in given[1]]
    hint = f"; a keyword input is given by its name, e.g. --input {missing[0]}" if missing else ""
    raise ArchprofError(
        f"{loaded.name} was exported to take {_arguments_text(*wanted)}, and cannot be called with"
        f" {_arguments_text(*given)}{hint}"
    )


def _arguments(inputs: Sequence[Any]) -> tuple[int, tuple[str, ...]]:
    """How many inputs are positional, and the keywords of the others, sorted."""
    keywords = sorted(spec.name for spec in inputs if spec.name is not None)
    return len(inputs) - len(keywords), tuple(keywords)


def _arguments_text(positional: int, keywords: tuple[str, ...]) -> str:
    named = f"the keyword input{'s' if len(keywords) > 1 else ''} {', '.join(keywords)}" if keywords else ""
    counted = f"{positional} positional input{'' if positional == 1 else 's'}"
    return f"{counted} and {named}" if named else counted


def load_weights_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor], name: str) -> None:
    try:
        module.load_state_dict(state)
    except Exception as exc:
        raise ArchprofError(f"loading the weights into '{name}' failed: {_state_dict_failure(exc)}") from None


# One tensor load_state_dict could not copy: `While copying the parameter named "0.weight", whose
# dimensions ... an exception occurred : ('Cannot copy out of meta tensor; no data!',).`
_COPY_FAILED = re.compile(
    r"While copying the parameter named \"(?P<name>.*?)\".*an exception occurred : \((?P<q>['\"])(?P<why>.*)(?P=q),\)"
)


def _state_dict_failure(exc: Exception) -> str:
    """Why load_state_dict failed, in one line: its first line only says that it did (`Error(s)
    in loading state_dict for Sequential:`), the next names the first tensor and the reason."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) < 2 or not lines[0].startswith("Error(s) in loading state_dict"):
        return first_line(exc)
    copying = _COPY_FAILED.match(lines[1])
    return f"{copying['name']}: {copying['why']}" if copying else lines[1]
