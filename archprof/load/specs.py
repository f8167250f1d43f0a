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
imports code; `confined_to` (a budget file's models) holds it to the project's own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib
import importlib.machinery
import importlib.util
import inspect
import io
import os
import re
import site
import sys
import sysconfig
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from archprof.errors import ArchprofError, check_flag, first_line, is_meta_limitation, warn
from archprof.load.common import (
    HUBS,
    MODEL_FILE_SUFFIXES,
    WEIGHTS_ONLY_SUFFIXES,
    described,
    importable,
    lookup_path,
    printable_errors,
    refuse_extras,
    refuse_frozen,
    resolve_path,
)
from archprof.load.exported import program_loaded
from archprof.load.files import load_file
from archprof.load.model import LoadedModel, unwrapped
from archprof.load.weights import check_weights, load_state_dict, take_lazy_shapes
from archprof.meta import on_meta, weights_on_meta
from archprof.random_state import random_state_kept
from archprof.zoo import MODELS


@printable_errors
def load_model(
    spec: str | os.PathLike | torch.nn.Module | Callable[..., torch.nn.Module] | LoadedModel,
    *,
    args: Mapping[str, Any] | None = None,
    weights: str | Path | None = None,
    trust_pickle: bool = False,
    base_dir: str | Path | None = None,
    confined_to: Sequence[str | Path] | None = None,
) -> LoadedModel:
    """A model spec (see the module's docstring), a path to a model file (`pathlib.Path`), a
    module (used as it is, never copied) or a factory (called on meta with `args`).
    `weights`: a state-dict file for a built-in or a factory. `base_dir`: where relative file
    paths and modules are looked for first (a budget file's folder); the current directory
    otherwise. `confined_to`: folders (a budget file's and the current directory) that a
    `module:factory` or `file.py:factory` spec's code must lie in, checked before it is
    imported (`python_factory`); None: anywhere (a spec the user typed)."""
    if isinstance(spec, LoadedModel):
        if args or weights is not None:
            raise ArchprofError("args and weights apply when a model is loaded: pass them to load_model")
        return spec
    check_flag("trust_pickle", trust_pickle)
    if args is not None and not isinstance(args, Mapping):
        raise ArchprofError(f"args must map keyword names to values (a dict), got a {type(args).__name__}")
    args = dict(args or {})
    base = Path(base_dir) if base_dir is not None else None
    if isinstance(spec, torch.nn.Module):
        refuse_extras(spec, type(spec).__name__, args, weights, "a module you pass")
        module = unwrapped(spec)
        refuse_frozen(module, f"the {type(module).__name__} you pass")
        return LoadedModel(module, type(module).__name__, None, kind="module")
    if isinstance(spec, torch.export.ExportedProgram):  # callable, but no factory: analysed as a .pt2 file is
        refuse_extras(spec, "ExportedProgram", args, weights, "an exported program you pass")
        return program_loaded(spec, "ExportedProgram")
    if isinstance(spec, str):
        loaded = _load_spec(spec.strip(), args, trust_pickle, base, confined_to)
    elif isinstance(spec, os.PathLike):  # a path is a file, never a built-in name or module:factory
        loaded = load_file(os.fspath(spec), args, trust_pickle, base)
    elif callable(spec):
        target = spec.target if isinstance(spec, PythonFactory) else spec
        name = getattr(spec, "__name__", type(spec).__name__)
        loaded = _from_factory(target, name, args, kind="factory")
    else:
        raise ArchprofError(
            f"cannot analyse {described(spec)}: give a model name, a spec such as"
            " 'my_models.py:net', a model file's path, a torch.nn.Module or a factory"
        )
    if weights is not None:
        if loaded.kind not in ("builtin", "hub", "factory"):
            raise ArchprofError(
                f"--weights applies to a built-in model or a factory; '{loaded.name}' already holds its weights"
            )
        model = loaded.module
        shapes = load_state_dict(weights, trust_pickle=trust_pickle, base_dir=base, device="meta", module=model)
        check_weights(model, shapes, loaded.name, weights)
        take_lazy_shapes(model, shapes)
        state = load_state_dict(weights, trust_pickle=trust_pickle, base_dir=base, module=model)
        loaded = _replace(loaded, state_dict=state)
    return loaded


def _replace(loaded: LoadedModel, **changes) -> LoadedModel:

    return dataclasses.replace(loaded, **changes)


def _load_spec(
    spec: str, args: dict[str, Any], trust_pickle: bool, base: Path | None, confined_to: Sequence[str | Path] | None
) -> LoadedModel:
    if not spec:
        raise ArchprofError("empty model spec: give a built-in name (archprof zoo), a file or module:factory")
    if ":" in spec and not _is_windows_path(spec):
        location, _, attribute = spec.rpartition(":")
        if location in HUBS:
            return _load_hub(location, attribute, spec, args)
        factory = python_factory(spec, base_dir=base, confined_to=confined_to)
        return _from_factory(factory.target, spec, args, kind="factory")
    if _looks_like_path(spec, base):
        return load_file(spec, args, trust_pickle, base)
    return _load_builtin(spec, args)


def _is_windows_path(spec: str) -> bool:
    return re.match(r"^[A-Za-z]:[\\/]", spec) is not None and spec.count(":") == 1


def _looks_like_path(spec: str, base: Path | None) -> bool:
    suffix = Path(spec).suffix.lower()
    known = (*MODEL_FILE_SUFFIXES, *WEIGHTS_ONLY_SUFFIXES, ".py", ".onnx", ".pkl", ".h5", ".tflite", ".json")
    if "/" in spec or "\\" in spec or suffix in known:
        return True

    # A built-in name wins; a folder is loaded as a file to be refused as one.
    return spec not in MODELS and lookup_path(resolve_path(spec, base), spec) in ("file", "folder")


# -- built-ins and hubs --------------------------------------------------------------------


def _load_builtin(name: str, args: dict[str, Any]) -> LoadedModel:

    entry = MODELS.get(name)
    if entry is None:
        close = difflib.get_close_matches(name.lower(), MODELS, n=3, cutoff=0.5)
        hint = f"closest built-in names: {', '.join(close)}" if close else "`archprof zoo` lists the built-in models"
        raise ArchprofError(
            f"unknown model '{name}'; {hint} (or give a file, module:factory, torchvision:NAME or timm:NAME)"
        )
    if not args:
        # Built on the meta device: VGG-16's 528 MB of weights never exist.
        with on_meta():
            module = entry.build()
        return LoadedModel(
            module, name, entry.input_size, kind="builtin", owned=True, build=_builder(entry.build, {}, name)
        )
    loaded = _from_factory(entry.build, name, args, kind="builtin")
    return _replace(loaded, input_size=entry.input_size)


def _build_hint(exc: Exception) -> str:
    """What to do where torchvision's compiled operators do not load ("operator
    torchvision::nms does not exist"): a torchvision wheel built for another torch (a CUDA
    one beside a CPU-only torch, or another release), which timm imports too."""
    if "torchvision::" not in str(exc):
        return ""
    return (
        f"; torchvision's compiled operators do not load with torch {torch.__version__}: install the torchvision"
        " release built for it, from the index torch came from"
    )


def _load_hub(hub: str, model_name: str, spec: str, args: dict[str, Any]) -> LoadedModel:
    """torchvision:NAME or timm:NAME, built on meta by the package's own builder."""
    package = HUBS[hub]
    try:
        importlib.import_module(package)
    except ImportError:
        raise ArchprofError(f"'{spec}' needs {package}, which is not installed here: pip install {package}") from None
    except Exception as exc:
        raise ArchprofError(f"importing {package} for '{spec}' failed: {first_line(exc)}{_build_hint(exc)}") from None
    if not model_name:
        raise ArchprofError(f"malformed model spec '{spec}': name a {package} model, e.g. {hub}:resnet50")
    _refuse_downloads(spec, args)
    if hub == "torchvision":
        models = importlib.import_module("torchvision.models")
        names = list(models.list_models()) if hasattr(models, "list_models") else []
        known = model_name in names if names else callable(getattr(models, model_name, None))
        if not known:
            raise ArchprofError(f"torchvision has no model '{model_name}'{_closest(model_name, names)}")
        builder = models.get_model_builder(model_name) if hasattr(models, "get_model_builder") else None
        builder = builder or getattr(models, model_name)
        loaded = _from_factory(builder, spec, _without_backbone_download(builder, args), kind="hub")
        return _replace(loaded, input_size=_torchvision_input_size(models, model_name))
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


# torchvision's video reference trains and evaluates on clips of 16 frames; its weights record only a minimum.
VIDEO_FRAMES = 16


def _torchvision_input_size(models: Any, name: str) -> tuple[int, ...] | None:
    """The per-sample input a torchvision model is made for: 3x224x224 (inception_v3 3x299x299)
    for a classifier, quantizable ones too; for a video classifier a clip of VIDEO_FRAMES frames at its default
    weights' crop size (3x16x112x112 for r3d_18); for a segmentation model a square image
    at its weights' resize size (3x520x520); None for the rest (detection, optical flow)."""
    if not hasattr(models, "list_models"):  # an old torchvision, with no registry of its families
        return None
    if name in models.list_models(module=models) or name in models.list_models(module=models.quantization):
        return (3, 299, 299) if name.endswith("inception_v3") else (3, 224, 224)
    family = next((f for f in ("video", "segmentation") if name in models.list_models(module=getattr(models, f))), None)
    if family is None:
        return None
    weights = models.get_model_weights(name).DEFAULT
    size = getattr(weights.transforms, "keywords", {}).get("crop_size" if family == "video" else "resize_size")
    if family == "video" and isinstance(size, tuple) and len(size) == 2:
        frames = max(VIDEO_FRAMES, weights.meta.get("min_temporal_size", 1))
        return (3, frames, *size)
    if family == "segmentation" and isinstance(size, int):
        return (3, size, size)
    return None


# A hub builder's arguments that fetch pretrained weights over the network when set.
_DOWNLOADING = ("weights", "weights_backbone", "pretrained", "pretrained_backbone")


def _refuse_downloads(spec: str, args: dict[str, Any]) -> None:
    """Refuse arguments that would download weights: the figures never read a weight's value,
    and archprof fetches nothing (offline, the build would fail after a wait)."""
    asked = [name for name in _DOWNLOADING if args.get(name) not in (None, False)]
    if asked:
        raise ArchprofError(
            f"{asked[0]}= would download {spec}'s pretrained weights, which no figure depends on: drop it"
            " (weights of your own: --weights FILE; Python: weights=)"
        )


def _without_backbone_download(builder: Callable[..., Any], args: dict[str, Any]) -> dict[str, Any]:
    """`args` with `weights_backbone=None` where the builder takes it and the caller left it
    out: torchvision's segmentation and detection builders otherwise download ImageNet
    backbone weights (about 100 MB; offline, the build fails), which random-weight analysis
    never needs."""
    try:
        takes_backbone = "weights_backbone" in inspect.signature(builder).parameters
    except (TypeError, ValueError):  # no signature to read
        return args
    return {"weights_backbone": None, **args} if takes_backbone else args


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


@printable_errors
def python_factory(
    spec: str, base_dir: str | Path | None = None, confined_to: Sequence[str | Path] | None = None
) -> PythonFactory:
    """Import the module or file a `location:factory` spec names (user code runs: only ever
    for a spec that names it) and look the factory up. Relative files and modules are found
    in `base_dir`, then in the current directory. With `confined_to` (a budget file's
    models), the module's or file's code, found without importing it, must lie in one of
    those folders and outside Python's library and installed packages: the project's own,
    not `os:system` with arguments from a data file."""
    location, colon, attribute = spec.rpartition(":")
    base = Path(base_dir) if base_dir is not None else None
    if not colon or not location or not attribute or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", attribute):
        raise ArchprofError(
            f"malformed model spec '{spec}': expected package.module:factory or path/to/file.py:factory"
        )
    if location.lower().endswith(".py"):
        path = resolve_path(location, base)
        if confined_to is not None and lookup_path(path, location) == "file":  # else _import_file says what it is
            _refuse_outside_project(spec, f"'{location}'", [path], confined_to)
        module, where = _import_file(location, spec, base), f"'{location}'"
    elif Path(location).suffix.lower() in MODEL_FILE_SUFFIXES:
        raise ArchprofError(f"'{spec}': a {Path(location).suffix} file is a model by itself; give it without ':'")
    elif _MODULE_NAME.fullmatch(location):
        if confined_to is not None:
            _refuse_outside_project(spec, f"module '{location}'", _module_code(location, base), confined_to)
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
    if isinstance(target, torch.nn.Module):  # callable, but a call is its forward
        raise ArchprofError(
            f"'{spec}' is a {type(target).__name__} built as its file was imported, not a factory: name the function"
            " or class that builds it"
        )
    if confined_to is not None:  # the project's module may hold others' code: `nn.functional.torch.os.system`
        _refuse_outside_project(spec, f"'{attribute}'", _defined_in(target), confined_to)
    return PythonFactory(spec, target)


_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _module_levels(name: str, base: Path | None) -> list[tuple[str | None, list[str]]]:
    """Each level of a dotted module name as the path finder finds it, without running any
    of it: its file and its package folders, where imported already from `sys.modules`,
    else from `base`, the current directory and sys.path. The levels found up to the first
    that is not."""
    levels: list[tuple[str | None, list[str]]] = []
    where: list[str] | None = [str(Path(d).resolve()) for d in (base, Path.cwd()) if d is not None] + sys.path
    parts = name.split(".")
    for depth in range(1, len(parts) + 1):
        dotted = ".".join(parts[:depth])
        module = sys.modules.get(dotted)
        if module is not None:
            origin = getattr(module, "__file__", None)
            locations = [str(p) for p in getattr(module, "__path__", None) or ()]
        else:
            spec = importlib.machinery.PathFinder.find_spec(dotted, where) if where else None
            if spec is None:
                return levels
            origin = spec.origin if spec.has_location else None
            locations = [str(p) for p in spec.submodule_search_locations or ()]
        levels.append((origin, locations))
        where = locations or None  # a module: nothing below it
    return levels


def _module_code(name: str, base: Path | None) -> list[Path] | None:
    """The files and package folders `import name` would run code from, each level of a
    dotted name (a package's __init__ too), found as the import finds them (`_module_levels`);
    None where a level is built into Python or frozen, or has neither, [] where one is not found."""
    top = name.partition(".")[0]
    built_in = top in sys.builtin_module_names or importlib.machinery.FrozenImporter.find_spec(top)
    if top not in sys.modules and built_in:
        return None
    levels = _module_levels(name, base)
    if any(not origin and not locations for origin, locations in levels):
        return None
    if len(levels) < name.count(".") + 1:
        return []
    return [Path(p) for origin, locations in levels for p in (origin, *locations) if p]


def _defined_in(target: Any) -> list[Path] | None:
    """The file a factory's code was defined in (a bound method's, its function's); None for
    one without (a builtin, such as `os.system`)."""
    source = getattr(inspect.getmodule(getattr(target, "__func__", target)), "__file__", None)
    return [Path(source)] if source else None


def _installed_dirs() -> list[Path]:
    """Python's own library and the folders packages are installed in (a virtual
    environment's whole tree too): code there is no project's, wherever the project lies."""
    paths = [*site.getsitepackages(), site.getusersitepackages()]
    base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix, "installed_base": sys.base_prefix}
    for scheme in (sysconfig.get_paths(), sysconfig.get_paths(vars=base)):
        paths += [scheme[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")]
    if sys.prefix != sys.base_prefix:
        paths.append(sys.prefix)
    return list(dict.fromkeys(Path(p).resolve() for p in paths if p))


def _refuse_outside_project(spec: str, what: str, code: list[Path] | None, confined_to: Sequence[str | Path]) -> None:
    """Refuse a spec whose code (`_module_code`'s, or a file's) is not the project's own: built
    into Python, not found, or a file outside `confined_to`'s folders or inside an installed one."""
    folders = [Path(d).resolve() for d in confined_to]
    places = " or ".join(dict.fromkeys(str(d) for d in folders))
    installed = _installed_dirs()
    reason = f"{what} is built into Python" if code is None else f"{what} is not found in {places}"
    for path in (p.resolve() for p in code or ()):
        if not any(path.is_relative_to(d) for d in folders):
            reason = f"{what} lies outside it ({path}, not in {places})"
            break
        if any(path.is_relative_to(d) for d in installed):
            reason = f"{what} is an installed package's or Python's own ({path})"
            break
    else:
        if code:
            return
    raise ArchprofError(
        f"model '{spec}' is named in a budget file, where a factory must be the project's own code, and {reason}:"
        " name it on the command line instead (archprof check MODEL --max-params ...), use a torchvision:NAME or"
        " timm:NAME spec, or wrap it in a .py file of the project"
    )


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
        printed = _printed_lines(held.getvalue())
        said = f" (it printed: {printed[-1]})" if printed else ""
        raise ArchprofError(f"{failure}: {first_line(exc)}{said}") from None
    sys.stderr.write(held.getvalue())


# A warning as Python prints it: "file.py:12: UserWarning: text", then its source line, indented.
_WARNING = re.compile(r"^\S.*:\d+: \w*Warning: ")


def _printed_lines(text: str) -> list[str]:
    """The lines of what user code wrote to stderr, a warning's echo of its source line left
    out (the warning's own line says what it was)."""
    lines, after_warning = [], False
    for line in text.splitlines():
        if after_warning and line.startswith(" "):
            after_warning = False
            continue
        after_warning = bool(_WARNING.match(line))
        if line.strip():
            lines.append(line.strip())
    return lines


def _import_module(name: str, spec: str, base: Path | None):
    with importable(Path.cwd(), base), _user_code(f"importing '{name}' for model '{spec}' failed"):
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            raise ArchprofError(f"cannot import '{name}' for model '{spec}': {first_line(exc, bare=True)}") from None


def module_source(name: str, base: Path | None = None) -> Path | None:
    """The file `import name` runs for a `package.module:factory` spec, looked up where
    `python_factory` imports from (`base`, the current directory, sys.path), without running
    any of it (a package's __init__ included); None where there is none to find."""
    if not _MODULE_NAME.fullmatch(name):
        return None
    levels = _module_levels(name, base)
    if len(levels) < name.count(".") + 1:
        return None
    origin = levels[-1][0]
    return Path(origin) if origin else None


def _import_file(location: str, spec: str, base: Path | None):
    path = resolve_path(location, base)
    found = lookup_path(path, location)
    if found == "missing":
        raise ArchprofError(f"file {location} does not exist (model '{spec}')")
    if found != "file":
        raise ArchprofError(f"{location} is not a file (model '{spec}')")
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
    # As `python -m`: its own folder, then the current directory (a project's package, run
    # from the project's root); `importable` puts the last directory given first.
    with importable(Path.cwd(), resolved.parent), _user_code(f"importing {location} for model '{spec}' failed"):
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
        return unwrapped(module).to(device)

    return build


def _built_on_meta(fn: Callable[..., Any], args: Mapping[str, Any]) -> Any:
    """`fn(**args)` with every tensor on meta, else (it reads a value it computed) with its
    parameters and buffers alone on meta; the error of the second try if both fail."""
    try:
        with on_meta():
            return fn(**args)
    except Exception as exc:
        if isinstance(exc, ArchprofError) or not is_meta_limitation(exc):
            raise
    with weights_on_meta():
        return fn(**args)


def _from_factory(fn: Callable[..., Any], name: str, args: Mapping[str, Any], kind: str) -> LoadedModel:
    """Call the factory on the meta device; should it not build there (it reads values it
    computes, say), with only its weights on meta; failing that too (it reads its weights),
    build it on the CPU instead, saying so once."""

    meta_failure = None
    # A build on the CPU initialises its weights at random: from a fork of the caller's generators.
    with _user_code(f"model factory '{name}' failed"), random_state_kept(torch.device("cpu")):
        try:
            module = _built_on_meta(fn, args)
        except ArchprofError:
            raise
        except Exception as exc:
            if not is_meta_limitation(exc):
                raise
            meta_failure = first_line(exc, bare=True)
            module = fn(**args)
    if meta_failure is not None:
        warn(f"model '{name}' cannot be built on the meta device ({meta_failure}): built on the CPU")
    if not isinstance(module, torch.nn.Module):
        raise ArchprofError(f"model factory '{name}' returned {type(module).__name__}, not a torch.nn.Module")
    module = unwrapped(module)
    refuse_frozen(module, f"what the model factory '{name}' returned")
    return LoadedModel(module, name, None, kind=kind, owned=True, build=_builder(fn, args, name))
