"""Resolve what the user names (a model spec, its inputs, a dtype, a weights file) into
objects, with one clear error for anything that does not resolve.

Model specs (`load_model`):

    vgg16                          a built-in model (`archprof zoo`)
    torchvision:resnet50           a torchvision model, when torchvision imports
    timm:convnext_tiny             a timm model, when timm imports
    package.module:factory         a function or class in an importable module
    path/to/file.py:factory        a function or class in a Python file
    model.pt | model.pth | .ts     a TorchScript file (torch.jit.save)
    model.pt2                      an exported program (torch.export.save)

Factories are called under `torch.device("meta")` with `args` as keyword arguments. Files
are data: a TorchScript or exported-program file is read without running Python code, and
pickles are unpickled with `weights_only=True` unless the caller trusts them
(`trust_pickle=True`, `--trust-pickle`). Only a spec that names a Python module or file
imports code.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import functools
import importlib
import importlib.util
import io
import logging
import math
import os
import re
import sys
import types
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from archprof.errors import ArchprofError, ArchprofWarning

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# What an input may be: the model dtypes above plus integers (token ids), bool and float64.
INPUT_DTYPES = {
    **DTYPES,
    "float64": torch.float64,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}

MODEL_FILE_SUFFIXES = (".pt", ".pth", ".pt2", ".ts")
WEIGHTS_ONLY_SUFFIXES = (".ckpt", ".bin", ".safetensors")
HUBS = {"torchvision": "torchvision", "timm": "timm"}  # spec prefix -> package to install
INT64_MAX = 2**63 - 1  # torch's sizes, element counts and byte offsets are int64


def _printable_errors(function: Callable[..., Any]) -> Callable[..., Any]:
    """An error quotes what the user gave, which can hold characters no stream prints (an
    undecodable file name arrives as lone surrogates): those become backslash escapes."""

    @functools.wraps(function)
    def checked(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except ArchprofError as exc:
            text = str(exc)
            printable = text.encode("utf-8", "backslashreplace").decode("utf-8")
            if printable == text:
                raise
            raise ArchprofError(printable) from None

    return checked


# -- inputs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSpec:
    """One input of the model's forward: one sample's shape and, optionally, its dtype and
    keyword.

    `shape` leaves the batch out: archprof puts the batch in front (`batched=False` keeps
    the shape as it is, for an input without a batch dimension). `dtype` None means the
    model's floating dtype (or `analyze(dtype=...)`); give `torch.int64` for token ids.
    `name` None passes the input positionally, in order; a name passes it as that keyword
    argument of `forward`."""

    shape: tuple[int, ...]
    dtype: torch.dtype | None = None
    name: str | None = None
    batched: bool = True

    def __post_init__(self) -> None:
        shape = tuple(self.shape)
        if any(isinstance(size, bool) or not isinstance(size, int) or size < 1 for size in shape):
            raise ArchprofError(f"malformed input shape {shape!r}: every size must be a whole number of at least 1")
        object.__setattr__(self, "shape", shape)
        if self.dtype is not None and not isinstance(self.dtype, torch.dtype):
            object.__setattr__(self, "dtype", parse_input_dtype(str(self.dtype)))
        _check_fits(shape, self.dtype, f"input shape {_shown_shape(shape)}")
        if self.name is not None and not str(self.name).isidentifier():
            raise ArchprofError(f"input name '{self.name}' is not a Python identifier (a keyword of forward)")

    def full_shape(self, batch: int) -> tuple[int, ...]:
        shape = (batch, *self.shape) if self.batched else self.shape
        batch_shown = f" (batch {_shown_shape(shape[:1])})" if self.batched else ""
        _check_fits(shape, self.dtype, f"input {_shown_shape(shape)}{batch_shown}")
        return shape

    def __str__(self) -> str:
        text = "x".join(map(str, self.shape))
        if self.dtype is not None:
            text += f":{str(self.dtype).removeprefix('torch.')}"
        return f"{self.name}={text}" if self.name else text


InputsLike = Any  # see normalize_inputs


def _check_fits(shape: tuple[int, ...], dtype: torch.dtype | None, what: str) -> None:
    """Every size, the element count and the byte size of a tensor must fit in int64 (each
    size is at least 1, so the byte size bounds the rest). dtype None: the model's, at most
    float32's 4 bytes."""
    itemsize = dtype.itemsize if dtype is not None else 4
    if math.prod(shape) * itemsize > INT64_MAX:
        raise ArchprofError(
            f"{what} is too large: its elements of {itemsize} bytes would take more than 2**63 - 1 bytes, the most"
            " torch can address; give smaller sizes"
        )


def _shown_shape(shape: Sequence[int]) -> str:
    """'3x224x224'; a size of more than 30 digits as its power of two (str() refuses past 4300 digits)."""
    return "x".join(str(size) if size.bit_length() <= 100 else f"2**{size.bit_length() - 1}+" for size in shape)


_SIZE = re.compile(r"\d+(x\d+)*")


@_printable_errors
def parse_input_size(text: str) -> tuple[int, ...]:
    """'3x224x224' -> (3, 224, 224): the per-sample input, without the batch."""
    size = _sizes(text)
    _check_fits(size, None, f"input size '{text}'")
    return size


def _sizes(text: str) -> tuple[int, ...]:
    cleaned = text.strip().lower()
    if not _SIZE.fullmatch(cleaned):
        raise ArchprofError(f"malformed input size '{text}': expected positive sizes joined by 'x', e.g. 3x224x224")
    if any(len(part.lstrip("0")) > 19 for part in cleaned.split("x")):
        raise ArchprofError(f"input size {_shorten(text)} is too large: torch's sizes are at most 2**63 - 1")
    size = tuple(int(part) for part in cleaned.split("x"))
    if any(part == 0 for part in size):
        raise ArchprofError(f"malformed input size '{text}': every size must be at least 1")
    return size


@_printable_errors
def parse_input_spec(text: str) -> InputSpec:
    """'[name=]3x224x224[:dtype]' -> InputSpec, e.g. '77:int64', 'mask=77:bool'."""
    name, equals, rest = text.strip().partition("=")
    if not equals:
        name, rest = "", text.strip()
    size, colon, dtype = rest.partition(":")
    if colon and not dtype.strip():
        raise ArchprofError(f"malformed input '{text}': nothing after ':', expected a dtype such as int64")
    if not _SIZE.fullmatch(size.strip().lower()):
        raise ArchprofError(
            f"malformed input size '{text}': expected [name=]SIZES[:dtype], e.g. 3x224x224, 77:int64 or mask=77:bool"
        )
    shape = _sizes(size)  # says which size is 0; InputSpec checks the size in bytes of its dtype
    name = name.strip()
    if equals and not name.isidentifier():
        raise ArchprofError(f"malformed input '{text}': '{name}' is not a keyword name")
    return InputSpec(shape, parse_input_dtype(dtype.strip()) if colon else None, name or None)


def parse_dtype(text: str) -> torch.dtype:
    """A model dtype: float32, float16 or bfloat16."""
    try:
        return DTYPES[text]
    except KeyError:
        raise ArchprofError(f"unknown dtype '{text}'; choose one of {', '.join(DTYPES)}") from None


def parse_input_dtype(text: str) -> torch.dtype:
    """An input's dtype: a model dtype, float64, an integer type or bool."""
    cleaned = text.strip().lower().removeprefix("torch.")
    try:
        return INPUT_DTYPES[cleaned]
    except KeyError:
        raise ArchprofError(f"unknown input dtype '{text}'; choose one of {', '.join(INPUT_DTYPES)}") from None


def normalize_inputs(inputs: InputsLike) -> tuple[InputSpec, ...]:
    """The forms `analyze(inputs=...)` takes, as InputSpecs (positional ones first, in order).

    - one shape: `(3, 224, 224)` or `"3x224x224"` or `"77:int64"`, or one `InputSpec`
    - several positional inputs: a list of those, or of `(shape, dtype)` pairs
    - keyword inputs: a dict `{"x": (3, 32, 32), "ids": ((77,), torch.int64), "mask": "77:bool"}`
    """
    if isinstance(inputs, Mapping):
        specs = []
        for name, value in inputs.items():
            spec = _one_input(value, f"inputs[{name!r}]")
            specs.append(InputSpec(spec.shape, spec.dtype, str(name), spec.batched))
    elif isinstance(inputs, (str, InputSpec)) or _is_shape(inputs):
        specs = [_one_input(inputs, "inputs")]
    elif isinstance(inputs, Sequence) and inputs:
        specs = [_one_input(value, f"inputs[{i}]") for i, value in enumerate(inputs)]
    else:
        raise ArchprofError(
            f"cannot read inputs {inputs!r}: give a shape such as (3, 224, 224), a list of shapes or InputSpecs, "
            "or a dict of keyword inputs"
        )
    names = [spec.name for spec in specs if spec.name]
    if len(names) != len(set(names)):
        raise ArchprofError(f"an input name is given twice: {', '.join(names)}")
    positional = [spec for spec in specs if not spec.name]
    return (*positional, *(spec for spec in specs if spec.name))


def _is_shape(value: Any) -> bool:
    return isinstance(value, (tuple, list, torch.Size)) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    )


def _one_input(value: Any, where: str) -> InputSpec:
    if isinstance(value, InputSpec):
        return value
    if isinstance(value, str):
        return parse_input_spec(value)
    if _is_shape(value):
        return InputSpec(tuple(value))
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and _is_shape(value[0])
        and isinstance(value[1], (torch.dtype, str))
    ):
        dtype = value[1] if isinstance(value[1], torch.dtype) else parse_input_dtype(value[1])
        return InputSpec(tuple(value[0]), dtype)
    raise ArchprofError(
        f"cannot read {where} = {value!r}: expected a shape such as (3, 224, 224), '77:int64', "
        "(shape, dtype) or an InputSpec"
    )


# -- factory arguments ---------------------------------------------------------------------


def parse_arg_value(text: str) -> Any:
    """'10' -> 10, '0.5' -> 0.5, 'true' -> True, 'none' -> None, anything else a string
    (quotes keep it one: "'10'" -> '10')."""
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    if len(stripped) >= 2 and stripped[0] == stripped[-1] and stripped[0] in "'\"":
        return stripped[1:-1]
    for kind in (int, float):
        try:
            return kind(stripped)
        except ValueError:
            pass
    return text


@_printable_errors
def parse_args(items: Sequence[str] | None) -> dict[str, Any]:
    """['num_classes=10', 'width=0.5'] -> {'num_classes': 10, 'width': 0.5}."""
    args: dict[str, Any] = {}
    for item in items or ():
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals or not key.isidentifier():
            raise ArchprofError(f"malformed --arg '{item}': expected key=value, e.g. num_classes=10")
        if key in args:
            raise ArchprofError(f"--arg {key} is given twice")
        args[key] = parse_arg_value(value)
    return args


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
            with _quiet():
                module = self.build(target)
            if self.state_dict is not None:
                _load_weights_into(module, self.state_dict, self.name)
        else:
            module = self.module
            current = _device_of(module)
            target = torch.device(device) if device is not None else current
            if current.type == "meta":
                module = copy.deepcopy(module).to_empty(device=target if target.type != "meta" else "cpu")
                _initialise(module)
            elif copy_module or target != current or _needs_cast(module, dtype):
                module = copy.deepcopy(module).to(target)
        if dtype is not None and _needs_cast(module, dtype):
            with _quiet():
                module = module.to(dtype)
        return module


def _device_of(module: torch.nn.Module) -> torch.device:
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


@_printable_errors
def load_model(
    spec: str | torch.nn.Module | Callable[..., torch.nn.Module] | LoadedModel,
    *,
    args: Mapping[str, Any] | None = None,
    weights: str | Path | None = None,
    trust_pickle: bool = False,
    base_dir: str | Path | None = None,
) -> LoadedModel:
    """A model spec (see the module's docstring), a module (used as it is, never copied) or a
    factory (called on meta with `args`). `weights`: a state-dict file for a built-in or a
    factory. `base_dir`: where relative file paths and modules are looked for first (a
    budget file's folder); the current directory otherwise."""
    if isinstance(spec, LoadedModel):
        if args or weights is not None:
            raise ArchprofError("args and weights apply when a model is loaded: pass them to load_model")
        return spec
    args = dict(args or {})
    base = Path(base_dir) if base_dir is not None else None
    if isinstance(spec, torch.nn.Module):
        _refuse_extras(spec, type(spec).__name__, args, weights, "a module you pass")
        return LoadedModel(spec, type(spec).__name__, None, kind="module")
    if isinstance(spec, str):
        loaded = _load_spec(spec.strip(), args, trust_pickle, base)
    elif callable(spec):
        target = spec.target if isinstance(spec, PythonFactory) else spec
        name = getattr(spec, "__name__", type(spec).__name__)
        loaded = _from_factory(target, name, args, kind="factory")
    else:
        raise ArchprofError(
            f"cannot analyse a {type(spec).__name__}: give a model name, a spec such as 'my_models.py:net', "
            "a torch.nn.Module or a factory"
        )
    if weights is not None:
        if loaded.kind not in ("builtin", "hub", "factory"):
            raise ArchprofError(
                f"--weights applies to a built-in model or a factory; '{loaded.name}' already holds its weights"
            )
        shapes = load_state_dict(weights, trust_pickle=trust_pickle, base_dir=base, device="meta")
        _check_weights(loaded.module, shapes, loaded.name, weights)
        loaded = _replace(loaded, state_dict=load_state_dict(weights, trust_pickle=trust_pickle, base_dir=base))
    return loaded


def _replace(loaded: LoadedModel, **changes) -> LoadedModel:
    import dataclasses

    return dataclasses.replace(loaded, **changes)


def _refuse_extras(spec: Any, name: str, args: Mapping[str, Any], weights: Any, what: str) -> None:
    if args:
        raise ArchprofError(f"--arg/args apply to a factory; {what} ('{name}') takes none")
    if weights is not None:
        raise ArchprofError(f"--weights applies to a built-in model or a factory; {what} ('{name}') has its own")


def _load_spec(spec: str, args: dict[str, Any], trust_pickle: bool, base: Path | None) -> LoadedModel:
    if not spec:
        raise ArchprofError("empty model spec: give a built-in name (archprof zoo), a file or module:factory")
    if ":" in spec and not _is_windows_path(spec):
        location, _, attribute = spec.rpartition(":")
        if location in HUBS:
            return _load_hub(location, attribute, spec, args)
        factory = python_factory(spec, base_dir=base)
        return _from_factory(factory.target, spec, args, kind="factory")
    if _looks_like_path(spec, base):
        return _load_file(spec, args, trust_pickle, base)
    return _load_builtin(spec, args)


def _is_windows_path(spec: str) -> bool:
    return re.match(r"^[A-Za-z]:[\\/]", spec) is not None and spec.count(":") == 1


def _looks_like_path(spec: str, base: Path | None) -> bool:
    suffix = Path(spec).suffix.lower()
    known = (*MODEL_FILE_SUFFIXES, *WEIGHTS_ONLY_SUFFIXES, ".py", ".onnx", ".pkl", ".h5", ".tflite", ".json")
    if "/" in spec or "\\" in spec or suffix in known:
        return True
    from archprof.zoo import MODELS

    return spec not in MODELS and _lookup(_resolve_path(spec, base), spec) == "file"  # a built-in name wins


def _resolve_path(spec: str | Path, base: Path | None) -> Path:
    path = Path(spec).expanduser()
    if base is not None and not path.is_absolute() and _lookup(base / path, str(spec)) != "missing":
        return base / path
    return path


def _lookup(path: Path, spec: str) -> str:
    """What is at `path`: 'file', 'other' (a folder, a device) or 'missing'. A name the
    system cannot look up (too long, not encodable, no permission) is one error naming it."""
    try:
        return "file" if path.is_file() else "other" if path.exists() else "missing"
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _first_line(exc, bare=True)
        raise ArchprofError(f"cannot look up {_shorten(spec)} as a file: {reason}") from None


# -- built-ins and hubs --------------------------------------------------------------------


def _load_builtin(name: str, args: dict[str, Any]) -> LoadedModel:
    from archprof.zoo import MODELS

    entry = MODELS.get(name)
    if entry is None:
        close = difflib.get_close_matches(name.lower(), MODELS, n=3, cutoff=0.5)
        hint = f"closest built-in names: {', '.join(close)}" if close else "`archprof zoo` lists the built-in models"
        raise ArchprofError(
            f"unknown model '{name}'; {hint} (or give a file, module:factory, torchvision:NAME or timm:NAME)"
        )
    if not args:
        # Built on the meta device: VGG-16's 528 MB of weights never exist.
        with torch.device("meta"):
            module = entry.build()
        return LoadedModel(
            module, name, entry.input_size, kind="builtin", owned=True, build=_builder(entry.build, {}, name)
        )
    loaded = _from_factory(entry.build, name, args, kind="builtin")
    return _replace(loaded, input_size=entry.input_size)


def _load_hub(hub: str, model_name: str, spec: str, args: dict[str, Any]) -> LoadedModel:
    """torchvision:NAME or timm:NAME, built on meta by the package's own builder."""
    package = HUBS[hub]
    try:
        importlib.import_module(package)
    except ImportError:
        raise ArchprofError(f"'{spec}' needs {package}, which is not installed here: pip install {package}") from None
    except Exception as exc:
        raise ArchprofError(f"importing {package} for '{spec}' failed: {_first_line(exc)}") from None
    if not model_name:
        raise ArchprofError(f"malformed model spec '{spec}': name a {package} model, e.g. {hub}:resnet50")
    if hub == "torchvision":
        models = importlib.import_module("torchvision.models")
        names = list(models.list_models()) if hasattr(models, "list_models") else []
        known = model_name in names if names else callable(getattr(models, model_name, None))
        if not known:
            raise ArchprofError(f"torchvision has no model '{model_name}'{_closest(model_name, names)}")
        builder = models.get_model_builder(model_name) if hasattr(models, "get_model_builder") else None
        builder = builder or getattr(models, model_name)
        classification = set(models.list_models(module=models)) if hasattr(models, "list_models") else set(names)
        input_size = (3, 299, 299) if model_name == "inception_v3" else (3, 224, 224)
        default = input_size if model_name in classification else None
        loaded = _from_factory(builder, spec, args, kind="hub")
        return _replace(loaded, input_size=default)
    timm = importlib.import_module("timm")
    if not timm.is_model(model_name):
        raise ArchprofError(f"timm has no model '{model_name}'{_closest(model_name, list(timm.list_models()))}")

    def create(**kwargs):
        return timm.create_model(model_name, **{"pretrained": False, **kwargs})

    create.__name__ = spec
    loaded = _from_factory(create, spec, args, kind="hub")
    config = getattr(loaded.module, "pretrained_cfg", None) or getattr(loaded.module, "default_cfg", None) or {}
    size = config.get("input_size") if isinstance(config, Mapping) else None
    return _replace(loaded, input_size=tuple(size) if size else None)


def _closest(name: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    return f"; closest: {', '.join(close)}" if close else ""


# -- Python factories ----------------------------------------------------------------------


@dataclass(frozen=True)
class PythonFactory:
    """`package.module:factory` or `path/to/file.py:factory`, imported and looked up. Calling
    it calls the factory (on whatever device is current), errors as ArchprofError."""

    spec: str
    target: Callable[..., Any]

    @property
    def __name__(self) -> str:  # the report's model name
        return self.spec

    def __call__(self, **kwargs) -> torch.nn.Module:
        with _user_code(f"model factory '{self.spec}' failed"):
            return self.target(**kwargs)


@_printable_errors
def python_factory(spec: str, base_dir: str | Path | None = None) -> PythonFactory:
    """Import the module or file a `location:factory` spec names (user code runs: only ever
    for a spec that names it) and look the factory up. Relative files and modules are found
    in `base_dir`, then in the current directory."""
    location, colon, attribute = spec.rpartition(":")
    base = Path(base_dir) if base_dir is not None else None
    if not colon or not location or not attribute or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", attribute):
        raise ArchprofError(
            f"malformed model spec '{spec}': expected package.module:factory or path/to/file.py:factory"
        )
    if location.lower().endswith(".py"):
        module, where = _import_file(location, spec, base), f"'{location}'"
    elif Path(location).suffix.lower() in MODEL_FILE_SUFFIXES:
        raise ArchprofError(f"'{spec}': a {Path(location).suffix} file is a model by itself; give it without ':'")
    elif re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", location):
        module, where = _import_module(location, spec, base), f"module '{location}'"
    else:
        raise ArchprofError(
            f"malformed model spec '{spec}': expected package.module:factory or path/to/file.py:factory"
        )
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            public = [n for n, v in vars(module).items() if not n.startswith("_") and callable(v)]
            raise ArchprofError(f"{where} has no '{attribute}' (model '{spec}'){_closest(attribute, public)}")
        target = getattr(target, part)
    if not callable(target):
        raise ArchprofError(f"'{spec}' is a {type(target).__name__}, not a factory returning a torch.nn.Module")
    return PythonFactory(spec, target)


@contextlib.contextmanager
def _importable(*directories: Path | None) -> Iterator[None]:
    """Let `import` find modules in these directories for the duration."""
    added = []
    for directory in directories:
        if directory is None:
            continue
        entry = str(Path(directory).resolve())
        if entry not in sys.path:
            sys.path.insert(0, entry)
            added.append(entry)
    try:
        yield
    finally:
        for entry in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(entry)


@contextlib.contextmanager
def _user_code(failure: str) -> Iterator[None]:
    """Run user code (import a module, call a factory): whatever it raises, sys.exit and
    argparse's exit included, becomes one ArchprofError '<failure>: <what it raised>'; Ctrl-C
    still stops. What it writes to stderr is held back, then written out should it succeed
    (argparse prints its usage before it exits: the error quotes the last line instead)."""
    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held):
            yield
    except (ArchprofError, KeyboardInterrupt):
        sys.stderr.write(held.getvalue())
        raise
    except BaseException as exc:
        printed = [line.strip() for line in held.getvalue().splitlines() if line.strip()]
        said = f" (it printed: {printed[-1]})" if printed else ""
        raise ArchprofError(f"{failure}: {_first_line(exc)}{said}") from None
    sys.stderr.write(held.getvalue())


def _import_module(name: str, spec: str, base: Path | None):
    with _importable(Path.cwd(), base), _user_code(f"importing '{name}' for model '{spec}' failed"):
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            raise ArchprofError(f"cannot import '{name}' for model '{spec}': {_first_line(exc, bare=True)}") from None


def _import_file(location: str, spec: str, base: Path | None):
    path = _resolve_path(location, base)
    if _lookup(path, location) != "file":
        raise ArchprofError(f"file {location} does not exist (model '{spec}')")
    resolved = path.resolve()
    # One module per file, named after its path so that two files called models.py differ.
    name = "archprof_user_" + re.sub(r"\W", "_", str(resolved))
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, resolved)
    if module_spec is None or module_spec.loader is None:
        raise ArchprofError(f"cannot import {location} (model '{spec}')")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up here
    with _importable(resolved.parent), _user_code(f"importing {location} for model '{spec}' failed"):
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return module


def _builder(fn: Callable[..., Any], args: Mapping[str, Any], name: str) -> Callable[[torch.device], torch.nn.Module]:
    def build(device: torch.device) -> torch.nn.Module:
        with _user_code(f"model factory '{name}' failed on {device}"), torch.device(device):
            module = fn(**args)
        return module.to(device)

    return build


def _from_factory(fn: Callable[..., Any], name: str, args: Mapping[str, Any], kind: str) -> LoadedModel:
    """Call the factory on the meta device; should it not build there (it computes with
    tensors, say), build it on the CPU instead, saying so once."""
    from archprof.trace import is_meta_limitation

    meta_failure = None
    with _user_code(f"model factory '{name}' failed"):
        try:
            with torch.device("meta"):
                module = fn(**args)
        except ArchprofError:
            raise
        except Exception as exc:
            if not is_meta_limitation(exc):
                raise
            meta_failure = _first_line(exc, bare=True)
            module = fn(**args)
    if meta_failure is not None:
        warnings.warn(
            f"model '{name}' cannot be built on the meta device ({meta_failure}): built on the CPU",
            ArchprofWarning,
            stacklevel=3,
        )
    if not isinstance(module, torch.nn.Module):
        raise ArchprofError(f"model factory '{name}' returned {type(module).__name__}, not a torch.nn.Module")
    return LoadedModel(module, name, None, kind=kind, owned=True, build=_builder(fn, args, name))


# -- files ---------------------------------------------------------------------------------


def _load_file(spec: str, args: dict[str, Any], trust_pickle: bool, base: Path | None) -> LoadedModel:
    path = _resolve_path(spec, base)
    suffix = path.suffix.lower()
    if suffix == ".py":
        raise ArchprofError(f"'{spec}' is a Python file: name the factory in it, e.g. {spec}:build_model")
    if suffix in WEIGHTS_ONLY_SUFFIXES:
        raise ArchprofError(
            f"'{spec}' holds weights, not an architecture: name the model and pass the file with --weights, "
            f"e.g. my_models.py:Net --weights {spec}"
        )
    if suffix not in MODEL_FILE_SUFFIXES:
        shown = f"suffix '{suffix}'" if suffix else "no suffix"
        raise ArchprofError(
            f"cannot load '{spec}' ({shown}): archprof reads TorchScript (.pt, .pth, .ts), exported programs "
            "(.pt2) and Python factories (file.py:factory)"
        )
    found = _lookup(path, spec)
    if found == "missing":
        raise ArchprofError(f"file {spec} does not exist")
    if found != "file":
        raise ArchprofError(f"{spec} is not a file")
    _refuse_extras(path, spec, args, None, "a model file")
    kind = _archive_kind(path)
    if kind == "exported":
        return _load_exported(path, spec, trust_pickle)
    if kind == "torchscript":
        return _load_torchscript(path, spec)
    if kind == "pt2-other":
        raise ArchprofError(f"cannot read {spec}: a .pt2 archive without an exported program (AOTInductor package?)")
    return _load_pickle(path, spec, trust_pickle)


def _archive_kind(path: Path) -> str:
    """exported | torchscript | pickle (torch.save, zip or legacy) | pt2-other; corrupt files raise."""
    if not zipfile.is_zipfile(path):
        return "pickle"  # torch.save's legacy format, or not a PyTorch file: torch.load says which
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArchprofError(f"cannot read {path}: corrupted or truncated ({_first_line(exc, bare=True)})") from None
    tails = {name.split("/", 1)[1] if "/" in name else name for name in names}
    if "archive_format" in tails:
        return "exported" if any(t.startswith("models/") for t in tails) else "pt2-other"
    if "constants.pkl" in tails or any(t.startswith("code/") for t in tails):
        return "torchscript"
    return "pickle"


def _unreadable(spec: str, exc: BaseException) -> ArchprofError:
    return ArchprofError(f"cannot read {spec}: corrupted or truncated? ({_first_line(exc, bare=True)})")


def _load_torchscript(path: Path, spec: str) -> LoadedModel:
    """A TorchScript file, its weights loaded straight onto the meta device (nothing real is
    allocated); should that not work, loaded on the CPU and moved."""
    try:
        with _quiet():
            module = torch.jit.load(str(path), map_location="meta")
    except Exception:
        try:
            with _quiet():
                module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise _unreadable(spec, exc) from None

    def build(device: torch.device) -> torch.nn.Module:
        return torch.jit.load(str(path), map_location=device)

    return LoadedModel(module, spec, None, kind="torchscript", owned=True, source=path, build=build)


def _load_pickle(path: Path, spec: str, trust_pickle: bool) -> LoadedModel:
    """A torch.save file given as a model: a whole pickled module only with trust_pickle."""
    loaded = _torch_load(path, spec, trust_pickle, map_location="meta")
    if isinstance(loaded, torch.nn.Module):

        def build(device: torch.device) -> torch.nn.Module:
            return torch.load(str(path), map_location=device, weights_only=False)

        return LoadedModel(loaded, spec, None, kind="pickle", owned=True, source=path, build=build)
    if isinstance(loaded, Mapping) and _state_dict_in(loaded) is not None:
        raise ArchprofError(
            f"{spec} holds weights (a state dict), not a model: name the architecture and pass the file with "
            f"--weights, e.g. my_models.py:Net --weights {spec}"
        )
    raise ArchprofError(f"{spec} holds a {type(loaded).__name__}, not a model (TorchScript, .pt2 or a pickled module)")


def _torch_load(path: Path, spec: str, trust_pickle: bool, map_location: str, mmap: bool = False) -> Any:
    """torch.load with weights_only=True; a pickle that needs code is refused unless trusted."""
    import pickle

    try:
        with _quiet():
            return torch.load(str(path), map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        if not _needs_code(exc):  # a bad opcode: not a pickle at all, or a damaged one
            raise _unreadable(spec, exc) from None
        if not trust_pickle:
            reason = _weights_only_reason(exc)
            raise ArchprofError(
                f"refusing to unpickle {spec}: loading it would run code from the file ({reason}); if you trust it,"
                " pass --trust-pickle (Python: trust_pickle=True)"
            ) from None
    except Exception as exc:
        raise _unreadable(spec, exc) from None
    try:
        with _quiet():
            return torch.load(str(path), map_location=map_location, weights_only=False, mmap=mmap)
    except Exception as exc:
        raise ArchprofError(f"cannot unpickle {spec}: {_first_line(exc)}") from None


def _needs_code(exc: BaseException) -> bool:
    """Whether weights_only=True refused a global (a function or class to import and call)."""
    return re.search(r"GLOBAL|Can only (create|build)|reduce", str(exc), re.IGNORECASE) is not None


def _weights_only_reason(exc: BaseException) -> str:
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    return f"it imports {found.group(1)}" if found else "weights_only=True refused it"


# -- exported programs ---------------------------------------------------------------------


def _load_exported(path: Path, spec: str, trust_pickle: bool) -> LoadedModel:
    refused: list[str] = []
    try:
        with _quiet(), contextlib.nullcontext() if trust_pickle else _loading_as_data(refused):
            program = torch.export.load(str(path))
    except Exception as exc:
        pickle_reason = None if refused else _code_in_pickle(exc)
        if refused or pickle_reason:
            what = refused[0] if refused else "pickled weights, constants or sample inputs"
            why = f" ({pickle_reason})" if pickle_reason else ""
            raise ArchprofError(
                f"refusing to load {spec}: its {what} would run code from the file when loaded{why}; if you trust"
                " it, pass --trust-pickle (Python: trust_pickle=True)"
            ) from None
        raise _unreadable(spec, exc) from None
    module = _exported_module(program)
    inputs, batch, static = _exported_inputs(program, spec)

    def build(device: torch.device) -> torch.nn.Module:
        return copy.deepcopy(module).to(device)

    first = inputs[0].shape if inputs and inputs[0].batched else None
    return LoadedModel(
        module,
        spec,
        first,
        inputs=inputs,
        batch=batch,
        kind="exported",
        owned=True,
        source=path,
        static_shapes=static,
        build=build,
    )


class _Refused(Exception):
    """Raised inside torch.export.load where loading would run code from the file."""


@contextlib.contextmanager
def _loading_as_data(refused: list[str]) -> Iterator[None]:
    """While torch.export.load runs: every torch.load it makes is weights-only, whichever
    member of the archive it reads (TORCH_FORCE_WEIGHTS_ONLY_LOAD overrides its explicit
    weights_only=False), and each other way it has of running code from the file refuses,
    noting what in `refused` (torch may replace the exception on its way out): unpickling an
    opaque Python object (pickle.loads) or a TorchScript object, loading compiled
    AOTInductor code, and a shape expression that is more than sympy arithmetic (sympify
    evaluates it as Python)."""
    from unittest import mock

    import sympy
    import torch._export.serde.serialize as serde
    from torch.export.pt2_archive import _package

    def refuser(what: str) -> Callable[..., Any]:
        def refuse(*args, **kwargs):
            refused.append(what)
            raise _Refused(what)

        return refuse

    def sympify(expression, *args, **kwargs):
        if isinstance(expression, str) and not _is_sympy_arithmetic(expression, kwargs.get("locals") or {}):
            refuser(f"shape expression {_shorten(expression)}")()
        return sympy.sympify(expression, *args, **kwargs)

    with contextlib.ExitStack() as stack:
        stack.enter_context(_environment(TORCH_FORCE_WEIGHTS_ONLY_LOAD="1", TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=None))
        refusing_pickle = types.SimpleNamespace(loads=refuser("pickled Python object (an opaque constant)"))
        stack.enter_context(mock.patch.object(_package, "pickle", refusing_pickle))
        stack.enter_context(mock.patch.object(torch._C, "_pickle_load_obj", refuser("TorchScript object constant")))
        stack.enter_context(mock.patch.object(_package, "_load_aoti", refuser("compiled AOTInductor code")))
        guarded_sympy = types.SimpleNamespace(**{**vars(sympy), "sympify": sympify})
        stack.enter_context(mock.patch.object(serde, "sympy", guarded_sympy))
        yield


@contextlib.contextmanager
def _environment(**values: str | None) -> Iterator[None]:
    """Set (a string) or unset (None) environment variables for the duration."""

    def assign(name: str, value: str | None) -> None:
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

    before = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            assign(name, value)
        yield
    finally:
        for name, value in before.items():
            assign(name, value)


def _code_in_pickle(exc: BaseException) -> str | None:
    """Why a weights-only unpickling refused, where this exception's chain holds one."""
    import pickle

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, pickle.UnpicklingError) and _needs_code(seen):
            return _weights_only_reason(seen)
        seen = seen.__cause__ or seen.__context__
    return None


_SYMPY_OPERATORS = frozenset(
    ["(", ")", ",", "=", "+", "-", "*", "/", "**", "//", "%", "<", ">", "<=", ">=", "==", "!=", "&", "|", "~"]
)


def _is_sympy_arithmetic(expression: str, given: Mapping[str, Any]) -> bool:
    """Whether a shape expression is what torch writes (`Mul(Integer(2), Symbol('s0',
    integer=True))`): numbers, operators, symbol names, sympy classes and constants; no
    attribute access, indexing, builtins or sympy's functions (`sympify` itself evaluates
    a string). `given`: the names torch defines for the expression."""
    import ast
    import tokenize

    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(expression).readline))
    except (tokenize.TokenError, SyntaxError):
        return False
    for token in tokens:
        if token.type in (tokenize.NUMBER, tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER):
            continue
        if token.type == tokenize.OP and token.string in _SYMPY_OPERATORS:
            continue
        if token.type == tokenize.NAME and _is_sympy_name(token.string, given):
            continue
        if token.type == tokenize.STRING:  # a symbol's name, or Float('1.5')
            try:
                text = ast.literal_eval(token.string)
            except (ValueError, SyntaxError):
                return False
            if isinstance(text, str) and (re.fullmatch(r"[\d.e+-]+", text) or _is_sympy_name(text, given)):
                continue
        return False
    return True


def _is_sympy_name(name: str, given: Mapping[str, Any]) -> bool:
    import builtins
    import keyword

    import sympy

    if name in given or name in ("True", "False", "None"):
        return True
    if not name.isidentifier() or name.startswith("_") or keyword.iskeyword(name) or hasattr(builtins, name):
        return False
    value = getattr(sympy, name, None)  # None: a name sympify makes a Symbol of
    return (
        value is None or isinstance(value, sympy.Basic) or (isinstance(value, type) and issubclass(value, sympy.Basic))
    )


def _shorten(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _exported_module(program) -> torch.nn.Module:
    """The exported program as a module tree: `torch.export.unflatten` gives one submodule
    per original module (hooks then attribute operators as for a Python model), each
    labelled with its original class; else the flat `program.module()`."""
    types: dict[str, str] = {}
    for node in program.graph.nodes:
        for path, kind in (node.meta.get("nn_module_stack") or {}).values():
            name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
            types.setdefault(path, name.rpartition(".")[2])
    try:
        with _quiet():
            module = torch.export.unflatten(program)
    except Exception:
        with _quiet():
            module = program.module()
        module._archprof_attribution = "parameters"
        module._archprof_type = types.get("", "ExportedProgram")
        return module
    for path, submodule in module.named_modules():
        submodule._archprof_type = types.get(path, type(submodule).__name__)
    return module


def _exported_inputs(program, spec: str):
    """Default inputs from the program's example inputs (or its input placeholders): per
    input, one sample's shape and dtype (keyword inputs by name), the batch (the shared first
    dimension, when there is one) and which dimensions the program was specialised to."""
    from torch.utils import _pytree as pytree

    signature = program.graph_signature
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    values = [placeholders[name].meta.get("val") for name in signature.user_inputs if name in placeholders]
    examples = getattr(program, "example_inputs", None)
    if examples is not None:
        if not (isinstance(examples, tuple) and len(examples) == 2 and isinstance(examples[1], Mapping)):
            kind = type(examples).__name__
            raise ArchprofError(f"cannot read {spec}: its sample inputs are a {kind}, not (args, kwargs)")
        args, kwargs = examples
    else:
        args, kwargs = pytree.tree_unflatten(values, program.call_spec.in_spec)
    named = [(None, a) for a in args] + list(kwargs.items())
    if not all(isinstance(v, torch.Tensor) for _, v in named) or len(named) != len(values):
        raise ArchprofError(f"{spec} takes inputs other than tensors: archprof analyses tensor inputs only")
    shapes = [tuple(_concrete(d) for d in v.shape) for _, v in named]
    static = tuple(
        tuple(d if isinstance(d, int) else None for d in getattr(value, "shape", ()))
        for value in values
        if value is not None
    )
    leading = {shape[0] for shape in shapes if shape}
    batched = len(leading) == 1 and all(shapes)
    inputs = tuple(
        InputSpec(shape[1:] if batched else shape, v.dtype, name, batched)
        for (name, v), shape in zip(named, shapes, strict=True)
    )
    return inputs, (leading.pop() if batched else None), (static if len(static) == len(inputs) else None)


def _concrete(size) -> int:
    if isinstance(size, int):
        return size
    hint = getattr(getattr(size, "node", None), "hint", None)
    return int(hint) if hint is not None else 2


def check_static_shapes(loaded: LoadedModel, shapes: Sequence[tuple[int, ...]]) -> None:
    """An exported program specialised to some sizes cannot be analysed at others: its
    graph holds those sizes as constants, so the figures would be wrong."""
    if loaded.static_shapes is None:
        return
    for index, (expected, shape) in enumerate(zip(loaded.static_shapes, shapes, strict=False)):
        if len(expected) != len(shape) or any(e is not None and e != s for e, s in zip(expected, shape, strict=True)):
            wanted = "x".join("*" if e is None else str(e) for e in expected)
            got = "x".join(map(str, shape))
            raise ArchprofError(
                f"{loaded.name} was exported for input {index + 1} of shape {wanted} (batch included; * = any size)"
                f" and cannot be analysed at {got}: give that shape, or export with dynamic dimensions"
                " (torch.export.Dim)"
            )


# -- weights -------------------------------------------------------------------------------


@_printable_errors
def load_state_dict(
    path: str | Path, trust_pickle: bool = False, base_dir: str | Path | None = None, device: str = "cpu"
) -> dict[str, torch.Tensor]:
    """A state dict from a checkpoint (torch.save, weights_only=True; .safetensors with the
    safetensors package): CPU tensors, memory-mapped where the format allows. A checkpoint
    that wraps it ({'state_dict': ...}, {'model': ...}) is unwrapped and a DataParallel
    'module.' prefix dropped. `device="meta"`: names and shapes only, nothing read or
    allocated (a checkpoint may claim storage far beyond its size)."""
    spec = str(path)
    resolved = _resolve_path(spec, Path(base_dir) if base_dir is not None else None)
    found = _lookup(resolved, spec)
    if found == "missing":
        raise ArchprofError(f"weights file {spec} does not exist")
    if found != "file":
        raise ArchprofError(f"weights file {spec} is not a file")
    if resolved.suffix.lower() == ".py":
        raise ArchprofError(f"weights file {spec} is a Python file: give a checkpoint saved with torch.save")
    if resolved.suffix.lower() == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ArchprofError(
                f"reading {spec} needs safetensors, which is not installed: pip install safetensors"
            ) from None
        try:
            loaded: Any = load_file(str(resolved), device=device)
        except Exception as exc:
            raise _unreadable(spec, exc) from None
    else:
        if zipfile.is_zipfile(resolved) and _archive_kind(resolved) in ("torchscript", "exported"):
            raise ArchprofError(f"{spec} is a whole model (TorchScript or exported), not weights: analyse it directly")
        mmap = device != "meta" and zipfile.is_zipfile(resolved)  # torch.save's legacy format cannot be mapped
        loaded = _torch_load(resolved, spec, trust_pickle, map_location=device, mmap=mmap)
    state = _state_dict_in(loaded) if isinstance(loaded, Mapping) else None
    if state is None:
        raise ArchprofError(f"{spec} holds no state dict (name -> tensor) but a {type(loaded).__name__}")
    return state


def _state_dict_in(value: Mapping) -> dict[str, torch.Tensor] | None:
    if value and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()):
        state = dict(value)
        if all(k.startswith("module.") for k in state):
            state = {k.removeprefix("module."): v for k, v in state.items()}
        return state
    for key in ("state_dict", "model_state_dict", "model", "module", "net", "weights"):
        inner = value.get(key)
        if isinstance(inner, Mapping):
            found = _state_dict_in(inner)
            if found is not None:
                return found
    return None


def _check_weights(module: torch.nn.Module, state: Mapping[str, torch.Tensor], name: str, path: Any) -> None:
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    problems = []
    if missing:
        problems.append(f"missing {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected {_some(unexpected)}")
    for key in wrong[:2]:
        got, want = "x".join(map(str, state[key].shape)), "x".join(map(str, expected[key]))
        problems.append(f"{key} is {got} in the file, {want} in the model")
    if problems:
        raise ArchprofError(f"weights {path} do not fit model '{name}': {'; '.join(problems)}")


def _some(keys: list[str]) -> str:
    more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
    return ", ".join(keys[:3]) + more


def _load_weights_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor], name: str) -> None:
    try:
        module.load_state_dict(state)
    except Exception as exc:
        raise ArchprofError(f"loading the weights into '{name}' failed: {_first_line(exc)}") from None


# -- helpers -------------------------------------------------------------------------------


def _first_line(exc: BaseException, bare: bool = False) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if text.startswith("The following operation failed in the TorchScript interpreter") and len(lines) > 1:
        text = lines[-1]
    if bare:
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch's own warnings and log lines while loading (they come as tracebacks)."""
    loggers = [logging.getLogger(name) for name in ("torch.export", "torch._export", "torch.export.pt2_archive")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="torch")
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=UserWarning, message=".*(grad|meta|TypedStorage).*")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
