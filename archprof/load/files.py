"""Model files read as data: TorchScript archives and pickles (weights-only unless trusted)."""

from __future__ import annotations

import ast
import functools
import shutil
import tempfile
import weakref
from collections import OrderedDict
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from archprof.cpu_allocation import MOST_FILE_CPU_BYTES, MOST_FILE_CPU_ELEMENTS, CpuBytesBounded
from archprof.errors import ArchprofError, first_line
from archprof.load.common import (
    MODEL_FILE_SUFFIXES,
    WEIGHTS_ONLY_SUFFIXES,
    importable,
    lookup_path,
    needs_code,
    quiet,
    refuse_extras,
    refuse_frozen,
    resolve_path,
    shorten,
    spread_too_far,
    unreadable,
    weights_only_reason,
)
from archprof.load.exported import load_exported
from archprof.load.model import LoadedModel, unwrapped
from archprof.load.torchscript import refuse_unsafe_torchscript
from archprof.load.unpickling import Unbounded, weights_only_bounded
from archprof.load.zip_archive import checked_archive, folded, is_torch_zip
from archprof.native_memory import MOST_FILE_MEMORY, native_memory_bounded
from archprof.units import human_bytes

# -- files ---------------------------------------------------------------------------------


_WHAT_LOADS = (
    "archprof reads TorchScript (.pt, .pth, .ts), exported programs (.pt2) and Python factories (file.py:factory)"
)


def load_file(spec: str, args: dict[str, Any], trust_pickle: bool, base: Path | None) -> LoadedModel:
    path = resolve_path(spec, base)
    found = lookup_path(path, spec)
    if found == "folder":
        raise ArchprofError(f"cannot load '{spec}': it is a folder; {_WHAT_LOADS}")
    suffix = path.suffix.lower()
    # A file archprof would read is said to be missing; one it would not is told what it reads instead.
    if found == "missing" and suffix in (".py", *MODEL_FILE_SUFFIXES):
        raise ArchprofError(f"file {spec} does not exist")
    if suffix == ".py":
        raise ArchprofError(f"'{spec}' is a Python file: name the factory in it{_factories_hint(path, spec, found)}")
    if suffix in WEIGHTS_ONLY_SUFFIXES:
        raise ArchprofError(
            f"'{spec}' holds weights, not an architecture: name the model and pass the file with --weights, "
            f"e.g. my_models.py:Net --weights {spec}"
        )
    if suffix not in MODEL_FILE_SUFFIXES:
        shown = f"suffix '{suffix}'" if suffix else "no suffix"
        raise ArchprofError(f"cannot load '{spec}' ({shown}): {_WHAT_LOADS}")
    if found != "file":
        raise ArchprofError(f"{spec} is not a file")
    refuse_extras(path, spec, args, None, "a model file")
    kind = archive_kind(path)
    if kind == "exported":
        return load_exported(path, spec, trust_pickle)
    if kind == "torchscript":
        return _load_torchscript(path, spec, trust_pickle)
    if kind == "pt2-other":
        raise ArchprofError(f"cannot read {spec}: a .pt2 archive without an exported program (AOTInductor package?)")
    return _load_pickle(path, spec, trust_pickle, base)


# The largest Python file whose factories an error names (parsing a 12 MB one took 30 s and 5 GB).
_MOST_PARSED = 1_000_000


def _factories_hint(path: Path, spec: str, found: str) -> str:
    """The classes and functions a Python file defines at its top level, read by parsing it
    (its code is not run: the spec names no factory to run it for), as `spec:NAME` to give;
    none named for a file over `_MOST_PARSED` bytes. `found`: what `lookup_path` found there (a
    pipe named .py is not read)."""
    try:
        small = found == "file" and path.stat().st_size <= _MOST_PARSED
        tree = ast.parse(path.read_bytes()) if small else None
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        tree = None
    kinds = (ast.ClassDef, ast.FunctionDef)
    defined = [node for node in tree.body if isinstance(node, kinds) and not node.name.startswith("_")] if tree else []
    if not defined:
        return f" ({spec}:factory, the function or class that builds the model)"
    # A model is most often a class: one of those is the example.
    example = next((node for node in defined if isinstance(node, ast.ClassDef)), defined[0]).name
    names = ", ".join(node.name for node in defined[:5]) + (f" and {len(defined) - 5} more" if len(defined) > 5 else "")
    return f", e.g. {spec}:{example} (it defines {names})"


def archive_kind(path: Path, shown: str | None = None) -> str:
    """exported | torchscript | pickle (torch.save, zip or legacy) | pt2-other; a corrupt
    archive, or one torch could read otherwise than Python (`zip_archive`), raises, naming
    the file `shown` (default `path`: a private copy is named by its original)."""
    shown = shown or str(path)
    try:
        if _is_flatbuffer(path):
            raise ArchprofError(
                f"cannot read {shown}: it is marked as a TorchScript flatbuffer ('PTMF' at byte 4), which"
                " torch.jit.load takes before any zip archive and runs the code inside; archprof reads"
                " TorchScript saved as a zip archive (torch.jit.save)"
            )
        if not is_torch_zip(path):
            return "pickle"  # torch.save's legacy format, or not a PyTorch file: torch.load says which
    except OSError as exc:
        raise ArchprofError(f"cannot read {shown}: {first_line(exc, bare=True)}") from None
    with checked_archive(path, shown) as archive:
        names = [member.filename for member in archive.infolist()]
    tails = {folded(name.split("/", 1)[1] if "/" in name else name) for name in names}
    if "archive_format" in tails:
        return "exported" if any(t.startswith("models/") for t in tails) else "pt2-other"
    if "constants.pkl" in tails or any(t.startswith("code/") for t in tails):
        return "torchscript"
    return "pickle"


def _is_flatbuffer(path: Path) -> bool:
    """Whether bytes 4 to 8 of the file are a TorchScript flatbuffer's mark. torch.jit.load
    looks for it before the zip signature at byte 0, so a file can be a harmless zip archive to
    archprof's checks and a flatbuffer, its code compiled and run, to torch. No zip archive
    has it there (a local header's version and flags)."""
    with path.open("rb") as stream:
        return stream.read(8)[4:] == b"PTMF"


def _load_torchscript(path: Path, spec: str, trust_pickle: bool) -> LoadedModel:
    """A TorchScript archive read from `path`, its weights loaded straight onto the meta
    device (nothing real is allocated); should that not work, loaded on the CPU and moved.
    The file is read once, into a private copy: the archive checked is the archive loaded
    and built later, however the file changes after. torch loads from that copy's path,
    reading each tensor as it needs it; from a buffer it copied the whole archive twice
    first (a Linear of 64 MiB peaked at 4x its size on meta, the copy at 1x)."""
    folder = Path(tempfile.mkdtemp(prefix="archprof-"))  # readable by this user only
    try:
        copy = _private_copy(path, spec, folder)
        if archive_kind(copy, spec) != "torchscript":  # the zip bombs and the kind checked on what loads
            raise ArchprofError(f"cannot read {spec}: it changed while archprof read it")
        if not trust_pickle:
            refuse_unsafe_torchscript(copy, spec)
        module = _load_script_module(copy, spec)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise

    def build(device: torch.device) -> torch.nn.Module:
        return torch.jit.load(str(copy), map_location=device)

    weakref.finalize(build, shutil.rmtree, folder, ignore_errors=True)  # the copy lives as long as build
    return LoadedModel(module, spec, None, kind="torchscript", owned=True, source=path, build=build)


def _private_copy(path: Path, spec: str, folder: Path) -> Path:
    """`path` copied into `folder`, its bytes not held once written."""
    try:
        archive = path.read_bytes()
    except OSError as exc:  # gone or locked since it was first opened
        raise ArchprofError(f"cannot read {spec}: {exc.strerror or exc}") from None
    copy = folder / "model.pt"
    try:
        copy.write_bytes(archive)
    except OSError as exc:
        raise ArchprofError(f"cannot copy {spec} into {folder}: {exc.strerror or exc}") from None
    return copy


def _load_script_module(copy: Path, spec: str) -> torch.jit.ScriptModule:
    """The archive at `copy` loaded on meta, else on the CPU, what its code makes on the CPU
    as it loads (a `__setstate__`'s tensors) bounded (`_bounded_load`)."""
    try:
        module = _bounded_load(copy, spec, "meta")
    except ArchprofError:
        raise
    except Exception:
        try:
            module = _bounded_load(copy, spec, "cpu")
        except ArchprofError:
            raise
        except Exception as exc:
            raise unreadable(spec, exc) from None
    refuse_frozen(module, spec)
    _refuse_spread_tensors(module, spec)
    return module


def _bounded_load(copy: Path, spec: str, device: str) -> torch.jit.ScriptModule:
    """torch.jit.load of `copy` on `device`, the tensors its code makes on the CPU as it loads
    bounded by MOST_FILE_CPU_BYTES, and the elements of CPU tensors it reads by
    MOST_FILE_CPU_ELEMENTS, each besides the file's own size (its weights, read on the CPU,
    and read again where its code packs them): a straight-line `__setstate__` made 2.8 GB
    from a 2 KB file (`torch.ones(n)`)."""
    size = copy.stat().st_size
    bound = CpuBytesBounded(MOST_FILE_CPU_BYTES + size, MOST_FILE_CPU_ELEMENTS + size)
    memory = native_memory_bounded(MOST_FILE_MEMORY + size, functools.partial(_memory_refused, spec, size))
    try:
        with quiet(), bound, memory:
            return torch.jit.load(str(copy), map_location=device)
    except Exception:
        tally = bound.tally
        if tally.past is None:
            raise
        raise ArchprofError(
            f"refusing to load {spec}: its TorchScript code {tally.done()} while the file loads (by {tally.past}),"
            f" more than a model file may ({tally.bound(besides=size)} besides its own size)"
        ) from None


def _memory_refused(spec: str, size: int, most: int) -> ArchprofError:
    return ArchprofError(
        f"refusing to load {spec}: its TorchScript code took more than {human_bytes(most - size)} of memory while"
        " the file loads (its lists and strings, its tensors), more than a model file may besides its own size"
    )


def _refuse_spread_tensors(module: torch.jit.ScriptModule, spec: str) -> None:
    """Refuse a parameter or buffer declared over far more elements than its storage holds
    (`spread_too_far`): strides of 0 over 28 bytes stood for 2.3 billion elements, which a
    cast to another dtype (--dtype) copied out: 4.8 GB from a 4.3 KB file."""
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        stored = tensor.untyped_storage().nbytes()
        if spread_too_far(tensor.numel(), stored):
            raise ArchprofError(
                f"cannot read {spec}: its tensor {shorten(name)} declares {tensor.numel():,} elements over {stored:,}"
                " bytes (strides of 0, which a cast to another dtype copies out in full)"
            )


def _load_pickle(path: Path, spec: str, trust_pickle: bool, base: Path | None) -> LoadedModel:
    """A torch.save file given as a model: a whole pickled module only with trust_pickle,
    analysed as the network inside a DataParallel or torch.compile wrapper (`unwrapped`), as
    a module passed in is."""
    loaded = torch_load(path, spec, trust_pickle, map_location="meta", base=base)
    if isinstance(loaded, torch.nn.Module):

        def build(device: torch.device) -> torch.nn.Module:
            return unwrapped(_trusted_load(path, device, base))

        return LoadedModel(unwrapped(loaded), spec, None, kind="pickle", owned=True, source=path, build=build)
    if isinstance(loaded, Mapping) and state_dict_in(loaded) is not None:
        raise ArchprofError(
            f"{spec} holds weights (a state dict), not a model: name the architecture and pass the file with "
            f"--weights, e.g. my_models.py:Net --weights {spec}"
        )
    raise ArchprofError(f"{spec} holds a {type(loaded).__name__}, not a model (TorchScript, .pt2 or a pickled module)")


def torch_load(
    path: Path, spec: str, trust_pickle: bool, map_location: str, mmap: bool = False, base: Path | None = None
) -> Any:
    """torch.load with weights_only=True; a pickle that needs code is refused unless trusted
    (then `_trusted_load`, its classes imported from `base` and the current directory), and
    so is a legacy .tar checkpoint, which torch reads only so."""
    import pickle

    if _is_tar(path):  # torch parses it with tarfile before it refuses it weights-only
        if not trust_pickle:
            raise ArchprofError(
                f"refusing to load {spec}: a legacy .tar checkpoint (PyTorch before 0.4), which torch reads only as"
                " code; if you trust it, pass --trust-pickle (Python: trust_pickle=True)"
            )
    else:
        try:
            with quiet(), weights_only_bounded(), _sparse_invariants_checked_on_data():
                return torch.load(str(path), map_location=map_location, weights_only=True, mmap=mmap)
        except Unbounded as exc:
            raise ArchprofError(f"refusing to load {spec}: {exc}") from None
        except pickle.UnpicklingError as exc:
            if not needs_code(exc):  # a bad opcode: not a pickle at all, or a damaged one
                raise _unreadable_file(path, spec, exc) from None
            if not trust_pickle:
                reason = weights_only_reason(exc)
                raise ArchprofError(
                    f"refusing to unpickle {spec}: loading it would run code from the file ({reason}); if you trust"
                    " it, pass --trust-pickle (Python: trust_pickle=True)"
                ) from None
        except Exception as exc:
            raise _unreadable_file(path, spec, exc) from None
    try:
        return _trusted_load(path, map_location, base, mmap)
    except Exception as exc:
        raise ArchprofError(f"cannot unpickle {spec}: {first_line(exc)}") from None


def _is_tar(path: Path) -> bool:
    """Whether the file opens with a tar header, as PyTorch before 0.4 saved. torch.load
    parses any file but a zip archive as a tar archive first, and Python's tarfile before
    3.11.10 reads a pax header of digits in quadratic time (CVE-2024-6232: 301 KB took 80 s):
    here its first block alone is read."""
    import tarfile

    try:
        with path.open("rb") as stream:
            tarfile.TarInfo.frombuf(stream.read(tarfile.BLOCKSIZE), "utf-8", "surrogateescape")
    except (OSError, tarfile.HeaderError):
        return False
    return True


def _trusted_load(path: Path, map_location: str | torch.device, base: Path | None, mmap: bool = False) -> Any:
    """torch.load running the file's code (trusted: --trust-pickle). The modules its classes
    live in are found as a `module:factory` spec's module is, in `base` and the current
    directory: the `archprof` script, unlike `python -m archprof`, does not put the current
    directory on sys.path."""
    with importable(Path.cwd(), base), quiet(), _sparse_invariants_checked_on_data():
        return torch.load(str(path), map_location=map_location, weights_only=False, mmap=mmap)


@contextmanager
def _sparse_invariants_checked_on_data() -> Iterator[None]:
    """torch.load's check of each sparse tensor's indices it rebuilt (always weights-only from
    PyTorch 2.14, else where `torch.sparse.check_sparse_tensor_invariants` is on), left out for
    those on meta: they hold no index to check, and the check raised "Cannot copy out of meta
    tensor" for the whole file. Their values are checked where they are loaded (`materialize`)."""
    check = torch._utils._validate_loaded_sparse_tensors

    def on_data(*args, **kwargs):
        pending = _sparse_tensors_to_check()
        if pending is not None:
            pending[:] = [tensor for tensor in pending if not tensor.is_meta]
        return check(*args, **kwargs)

    torch._utils._validate_loaded_sparse_tensors = on_data
    try:
        yield
    finally:
        torch._utils._validate_loaded_sparse_tensors = check


def _sparse_tensors_to_check() -> list[torch.Tensor] | None:
    """The list of sparse tensors torch.load has rebuilt and is to check: the load's own (a
    thread's) from PyTorch 2.15, a module's before; None where this torch keeps it elsewhere."""
    per_load = getattr(torch._utils, "_get_sparse_tensors_to_validate", None)
    return per_load() if per_load is not None else getattr(torch._utils, "_sparse_tensors_to_validate", None)


_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_EXTRA_STATE = "_extra_state"  # the last part of its key: torch.nn.modules.module._EXTRA_STATE_KEY_SUFFIX
_MOST_WRAPPINGS = 16


def state_dict_in(
    value: Mapping, names: Collection[str] | None = None, depth: int = 0, seen: dict[int, int] | None = None
) -> dict[str, Any] | None:
    """The state dict a checkpoint holds (tensors, and any module's extra state), unwrapped.
    Saved from a wrapped model (DataParallel's "module.", torch.compile's "_orig_mod.", one
    inside the other), its names are made the network's inside, which is what archprof
    analyses; but not where they are the `names` of the model's own state dict already (a
    model whose one child is called `module`). Looked for `_MOST_WRAPPINGS` dicts deep at
    most (`depth`: how deep `value` is): a checkpoint nesting dicts past Python's stack is no
    one's; and each dict once at a depth (`seen`: the shallowest each id was looked into at,
    which searches deepest), as a pickle may share one dict under every key of every level
    (1.8 KB held 6**18 paths)."""
    seen = {} if seen is None else seen
    if depth > _MOST_WRAPPINGS or seen.get(id(value), _MOST_WRAPPINGS + 1) <= depth:
        return None
    seen[id(value)] = depth
    if value and all(_is_state_entry(k, v) for k, v in value.items()):
        return _unwrapped_state(value, names)
    for key in ("state_dict", "model_state_dict", "model", "module", "net", "weights"):
        inner = value.get(key)
        if isinstance(inner, Mapping):
            found = state_dict_in(inner, names, depth + 1, seen)
            if found is not None:
                return found
    return None


def _unwrapped_state(value: Mapping[str, Any], names: Collection[str] | None) -> dict[str, Any]:
    """A state dict, its wrapper prefixes dropped (`state_dict_in`), from its names and from its
    metadata's (the versions torch's load_state_dict reads: a batch norm's before 2 gets its
    missing `num_batches_tracked` filled in), which it keeps."""
    state, metadata = dict(value), _metadata(value)
    while not (names is not None and state.keys() <= set(names)) and (
        prefix := next((p for p in _WRAPPER_PREFIXES if all(k.startswith(p) for k in state)), None)
    ):
        state = {k.removeprefix(prefix): v for k, v in state.items()}
        metadata = _unprefixed(metadata, prefix) if metadata is not None else None
    if metadata is None:
        return state
    kept = OrderedDict(state)
    kept._metadata = metadata  # type: ignore[attr-defined]  # where Module.state_dict puts it
    return kept


def _metadata(value: Mapping[str, Any]) -> dict[str, Mapping[str, Any]] | None:
    """A state dict's `_metadata` (module path -> {"version": ...}), as Module.state_dict saves
    it; None where it has none, or holds something else (it is the file's data)."""
    found = getattr(value, "_metadata", None)
    if isinstance(found, Mapping) and all(isinstance(k, str) and isinstance(v, Mapping) for k, v in found.items()):
        return dict(found)
    return None


def _unprefixed(metadata: Mapping[str, Mapping[str, Any]], prefix: str) -> dict[str, Mapping[str, Any]]:
    """Metadata of a wrapped model's state dict made its inner network's: "module" (the
    wrapper's child) becomes the root "", "module.conv1" "conv1", the wrapper's own goes."""
    inner = prefix.removesuffix(".")
    return {
        "" if path == inner else path.removeprefix(prefix): entry
        for path, entry in metadata.items()
        if path == inner or path.startswith(prefix)
    }


def _is_state_entry(key: Any, value: Any) -> bool:
    """A state dict's entry: a tensor under its name, or a module's extra state."""
    return isinstance(key, str) and (isinstance(value, torch.Tensor) or is_extra_state(key))


def is_extra_state(key: str) -> bool:
    """A module's extra state (Module.get_extra_state), which a state dict holds as it is (any
    value, unpickled weights-only) and torch's load_state_dict hands to set_extra_state."""
    return key.rpartition(".")[2] == _EXTRA_STATE


def _unreadable_file(path: Path, spec: str, exc: BaseException) -> ArchprofError:
    """torch.load's failure: a file no PyTorch writer makes (a text file named .pt, whose first
    letter torch.load's legacy reader takes for a key: "KeyError: 101") said to be one, else
    torch's reason (`unreadable`)."""
    head = _head(path)
    if head is not None and len(head) >= 2 and head[0] == 0x80 and head[1] >= 3:  # pickle's PROTO opcode
        # pickle.dump's default protocol, 4 or 5, or torch.save's legacy format with pickle_protocol=3 or more:
        # torch's weights-only reader stops at the first opcode of 4 ("Unsupported operand 149").
        return ArchprofError(
            f"cannot read {spec}: a pickle of protocol {head[1]}, which torch's weights-only reader does not read"
            " (torch.save writes a zip archive, its legacy format a protocol-2 pickle)"
        )
    if head is None or _opens_as_torch_writes(path, head):
        return unreadable(spec, exc)
    if not head:
        return ArchprofError(f"cannot read {spec}: the file is empty")
    return ArchprofError(
        f"cannot read {spec}: not a file PyTorch writes (torch.save, torch.jit.save and torch.export.save"
        " write a zip archive, older torch.save a pickle)"
    )


def _head(path: Path) -> bytes | None:
    """The file's first 4 bytes (fewer where it is shorter); None where it cannot be read now
    (gone, no permission): then torch's own reason stands."""
    try:
        with path.open("rb") as stream:
            return stream.read(4)
    except OSError:
        return None


def _opens_as_torch_writes(path: Path, head: bytes) -> bool:
    """Whether the file, which opens with `head`, is a zip archive (a whole one, or the start of
    one cut short), a pickle of protocol 2 or later (torch.save's legacy format) or a tar
    archive (its format before PyTorch 0.4): an uncompressed one, its header's "ustar" magic at
    byte 257 (`tarfile.is_tarfile` tries every compressed reader first, reading a sparse
    gigabyte of zeros for a minute)."""
    if head.startswith((b"\x80", b"PK\x03\x04")):
        return True
    try:
        with open(path, "rb") as file:
            file.seek(257)
            return file.read(5) == b"ustar"
    except OSError:
        return True
