"""What every part of loading shares: dtype names, file suffixes, the int64 limit, and errors that print."""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from archprof.errors import ArchprofError, cut, first_line, short_reason, shown

# What a model may be cast to (the CLI's --dtype, a budget file's dtype, analyze's dtype).
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
# What an input may be: the model dtypes above plus integers (token ids) and bool.
INPUT_DTYPES = {
    **DTYPES,
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

# Operators, by their qualified names ("aten::save", as TorchScript code and an operator's
# schema name them), whose effect reaches past the model: files (torch.from_file maps any file
# into a tensor, shared: what is written to the tensor is written to the file; torch.save
# writes one), the terminal (a forward that prints could corrupt a report archprof writes to
# stdout), other processes (RPC) and the process's own random state. A model file's code
# (TorchScript) or graph (an exported program) that calls one is refused.
REACHING_OUT = {
    "aten::from_file": "reads or writes files",
    "aten::save": "reads or writes files",
    "aten::_print": "writes to the terminal",
    "prim::Print": "writes to the terminal",
    "prim::rpc_async": "calls other processes",
    "prim::rpc_remote": "calls other processes",
    "prim::rpc_sync": "calls other processes",
    "aten::manual_seed": "changes the process's random state",
    "aten::seed": "changes the process's random state",
}
INT64_MAX = 2**63 - 1  # torch's sizes, element counts and byte offsets are int64


def printable_errors(function: Callable[..., Any]) -> Callable[..., Any]:
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


@contextlib.contextmanager
def quiet() -> Iterator[list[str]]:
    """Silence torch's own warnings and log lines while loading (they come as tracebacks);
    yields the last line of each log line kept from the user, its error where it logged one
    ("Please check the warnings above", torch.export.load's own error says of it)."""
    loggers = [logging.getLogger(name) for name in ("torch.export", "torch._export", "torch.export.pt2_archive")]
    kept: list[str] = []
    handler = _LastLines(kept)
    saved = [(logger.propagate, logger.level, logger.handlers) for logger in loggers]
    for logger in loggers:  # their records to `handler` alone
        logger.propagate = False
        logger.setLevel(logging.WARNING)
        logger.handlers = [handler]
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="torch")
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=UserWarning, message=".*(grad|meta|TypedStorage).*")
            yield kept
    finally:
        for logger, (propagate, level, handlers) in zip(loggers, saved, strict=True):
            logger.propagate, logger.level, logger.handlers = propagate, level, handlers


@contextlib.contextmanager
def importable(*directories: Path | None) -> Iterator[None]:
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


class _LastLines(logging.Handler):
    """Keeps the first sentence of the last line of each record's text (a traceback's: the
    error, without miniz's advice to report it)."""

    def __init__(self, kept: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.kept = kept

    def emit(self, record: logging.LogRecord) -> None:
        lines = [line.strip() for line in self.format(record).splitlines() if line.strip()]
        if lines:
            self.kept.append(lines[-1].split(". ")[0].rstrip("."))


def shorten(text: str, limit: int = 60) -> str:
    return repr(cut(text, limit))


def described(value: Any, limit: int = 60) -> str:
    """A value the user passed, for an error: its repr on one line (a tensor's runs to one
    line per row), cut to `limit` characters, and its type."""
    return f"{shown(value, limit)} (of type {type(value).__name__})"


def resolve_path(spec: str | Path, base: Path | None) -> Path:
    path = Path(spec).expanduser()
    if base is not None and not path.is_absolute() and lookup_path(base / path, str(spec)) != "missing":
        return base / path
    return path


def lookup_path(path: Path, spec: str) -> str:
    """What is at `path`: 'file', 'folder', 'other' (a device, a socket) or 'missing'. A name
    the system cannot look up (too long, not encodable, no permission) is one error naming it."""
    try:
        if path.is_file():
            return "file"
        return "folder" if path.is_dir() else "other" if path.exists() else "missing"
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else first_line(exc, bare=True)
        raise ArchprofError(f"cannot look up {shorten(spec)} as a file: {reason}") from None


def refuse_extras(spec: Any, name: str, args: Mapping[str, Any], weights: Any, what: str) -> None:
    if args:
        raise ArchprofError(f"--arg/args apply to a factory; {what} ('{name}') takes none")
    if weights is not None:
        raise ArchprofError(f"--weights applies to a built-in model or a factory; {what} ('{name}') has its own")


def refuse_frozen(module: torch.nn.Module, name: str) -> None:
    """Refuse a frozen TorchScript module: torch.jit.freeze (and optimize_for_inference) folds
    its weights into its code as constants and drops its submodules and `training` flag, so
    nothing is left to count as a parameter or to attribute to a layer (a budget check would
    pass on 0 parameters)."""
    if isinstance(module, torch.jit.ScriptModule) and not module._c.hasattr("training"):
        raise ArchprofError(
            f"cannot analyse {name}: it is a frozen TorchScript module (torch.jit.freeze), its weights folded"
            " into its code as constants, with no parameters or layers left to count; give the module saved"
            " before freezing (torch.jit.script(model).save(...))"
        )


def unreadable(spec: str, exc: BaseException) -> ArchprofError:
    return ArchprofError(f"cannot read {spec}: corrupted or truncated? ({_load_failure(exc)})")


def _load_failure(exc: BaseException) -> str:
    """torch.load's reason, in one line. Where weights_only=True refused the file, the
    unpickler's own words ("Unsupported operand 103"): the first line of torch's message is
    advice to load it with weights_only=False, which would run whatever code the file holds.
    Else its first sentence: after it, torch may give the same advice ("Cannot use
    weights_only=True with files saved in the legacy .tar format. ... Re-running torch.load
    with weights_only set to False will likely succeed", of any file of zeros)."""
    found = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(exc))
    return found.group(1).strip() if found else short_reason(exc)


def needs_code(exc: BaseException) -> bool:
    """Whether weights_only=True refused a global (a function or class to import and call)."""
    return re.search(r"GLOBAL|Can only (create|build)|reduce", str(exc), re.IGNORECASE) is not None


def weights_only_reason(exc: BaseException) -> str:
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    return f"it imports {found.group(1)}" if found else "weights_only=True refused it"


# A tensor declared over more than 100 elements a byte stored, past 2**18 elements: strides of
# 0 repeat a few bytes (torch.export.save writes an expanded tensor so), and a copy (unflatten
# building an exported program's module tree, a cast to --dtype) makes it whole: gigabytes
# from a few kilobytes. An expanded buffer of torch's own, a few elements repeated to a map's
# size, is under the bound.
_MOST_SPREAD = 100
_MOST_ELEMENTS_SPREAD = 2**18


def spread_too_far(elements: int, stored_bytes: int) -> bool:
    """Whether `elements` declared over `stored_bytes` stored would be a bomb if copied."""
    return elements > max(_MOST_ELEMENTS_SPREAD, _MOST_SPREAD * stored_bytes)
