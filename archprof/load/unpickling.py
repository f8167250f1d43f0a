"""Bounds on what torch's weights-only unpickler builds from a file. It runs no code from
the file, but these of its ways let a few bytes become gigabytes or hours of work:
- `bytearray(N)`, on its allowlist, allocates N zeroed bytes (a 404-byte file asked for
  64 GiB); torch.save writes a bytearray as `bytearray(text, 'latin-1')`, never from a size.
- `_codecs.encode`, on its allowlist for bytes (`encode(text, 'latin1')`), takes any codec:
  'hex' doubles its input, and 31 of them made 3.4 GB of a 766-byte file.
- set, Counter, OrderedDict and torch.Size, on its allowlist, take any iterable: of a tensor,
  one 0-d tensor an element; and the legacy tensor constructors (`torch.ByteTensor`)
  allocate the size they are called with. torch.save writes these of items only, and
  rebuilds tensors through `torch._utils` from the file's own data.
- the memo hands out one container again and again: `t = (t, t)`, forty deep, is 1.4 KB and
  2**40 leaves to anyone who walks it (torch.export.load walks a program's sample inputs), or
  hashes it (a dict keyed by it: the unpickler itself, for hours). So the pickle is read
  ahead, opcode by opcode, nothing built, and the objects it builds measured as TorchScript's
  pickles are (`pickle_graph`): far past the pickle's length (torch.save shares a tensor, a
  string, a small tuple: a few items more), holding themselves or nested past a bound, refused.
- a legacy checkpoint (no zip archive) names each storage with its element count, and torch
  allocates it at that size before it reads the data that follows the pickle: storages
  declared over more bytes than the file holds there are refused (`_legacy_storages_within`).
`weights_only_bounded` refuses each while it is in force, naming what it refused."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

from archprof.errors import ArchprofError, exception_chain
from archprof.load.common import spread_too_far
from archprof.load.pickle_graph import UNFOLLOWED, built_problem


class Unbounded(ArchprofError):
    """What a weights-only unpickling would build is refused: too large for the file."""


@contextlib.contextmanager
def weights_only_bounded() -> Iterator[None]:
    """torch's weights-only unpickler, for the duration: `bytearray` of a size and `_codecs`
    other than latin-1 refused, and a pickle whose objects are unbounded, or that calls a
    tensor class itself, refused before it is read (`_refuse_what_it_builds`)."""
    from unittest import mock

    import torch._weights_only_unpickler as unpickler

    plain = unpickler._get_allowed_globals()
    allowed = {
        **plain,
        "builtins.bytearray": _bytearray_of_data,
        "_codecs.encode": _bytes_of_text,
        # Each from the items the pickle spells out, never from a tensor, whose elements it
        # would make one by one (set(torch.ByteTensor(5_000_000)): 3.5 GB of 398 bytes).
        **{name: _of_items(plain[name]) for name in _FROM_ITEMS if name in plain},
        _TO_A_DEVICE: _within_its_storage(plain[_TO_A_DEVICE]),
    }
    plain_init, plain_load = unpickler.Unpickler.__init__, unpickler.Unpickler.load

    def init(self, file, *args, **kwargs) -> None:
        plain_init(self, file, *args, **kwargs)
        self.archprof_stream = file  # torch's is seekable: a zip member's bytes, or the legacy file

    def load(self) -> Any:
        _refuse_what_it_builds(self.archprof_stream)
        persistent_load = getattr(self, "persistent_load", None)
        if persistent_load is not None:  # torch's, set before load: it allocates each storage the pickle names
            self.persistent_load = _legacy_storages_within(persistent_load, _bytes_left(self.archprof_stream))
        with warnings.catch_warnings():  # torch's, which name this frame as their caller
            warnings.filterwarnings("ignore", module=__name__)
            return plain_load(self)

    with (
        mock.patch.object(unpickler, "_get_allowed_globals", lambda: allowed),
        mock.patch.object(unpickler.Unpickler, "__init__", init),
        mock.patch.object(unpickler.Unpickler, "load", load),
    ):
        yield


_FROM_ITEMS = ("builtins.set", "builtins.frozenset", "collections.Counter", "collections.OrderedDict", "torch.Size")
_ITEMS = (list, tuple, dict, set, frozenset)


def _of_items(make: Any) -> Any:
    """`make` (set, Counter, OrderedDict, torch.Size) of a list, tuple, dict or set alone."""

    def of_items(*args: Any) -> Any:
        if len(args) > 1 or (args and not isinstance(args[0], _ITEMS)):
            raise Unbounded(f"a pickled {make.__name__} made from {type(args[-1]).__name__}, not from its items")
        return make(*args)

    return of_items


# torch.save's rebuild of a tensor of a device it saves no storage of: the CPU tensor, copied
# with `.to(dtype, device)`, which writes each of its elements out.
_TO_A_DEVICE = "torch._utils._rebuild_device_tensor_from_cpu_tensor"


def _within_its_storage(rebuild: Any) -> Any:
    """`rebuild` of a CPU tensor declared over no more elements than its storage holds, or
    not far more (`common.spread_too_far`): one element broadcast to 400 million, copied out
    in float64, made 3.5 GB of an 8 KB program's sample inputs."""

    def rebuilt(data: Any, *args: Any) -> Any:
        import torch

        if isinstance(data, torch.Tensor) and spread_too_far(data.numel(), data.untyped_storage().nbytes()):
            raise Unbounded(
                f"a pickled tensor of {data.numel():,} elements over {data.untyped_storage().nbytes():,} bytes stored,"
                " which its rebuild copies out element by element"
            )
        return rebuild(data, *args)

    return rebuilt


def _bytes_left(stream: Any) -> int:
    """The bytes of `stream` from its position on (it stays there)."""
    start = stream.tell()
    try:
        return stream.seek(0, 2) - start
    finally:
        stream.seek(start)


def _legacy_storages_within(persistent_load: Any, room: int) -> Any:
    """`persistent_load` (torch's), refusing a legacy checkpoint's storages (torch.save without
    its zip archive: ('storage', class, key, device, elements, view)) once the bytes they
    declare pass `room`, the bytes of the file from its pickle on, where their data follows
    it. torch allocates each storage at the size it declares before it reads a byte of it:
    1.2e9 elements declared in a 250 KB file reserved 4.8 GB. A zip archive's storages (five
    items) are read from their records, at the size the record has."""
    import torch

    declared: set[Any] = set()
    total = 0

    def storage_within(saved_id: Any) -> Any:
        nonlocal total
        if isinstance(saved_id, tuple) and len(saved_id) == 6 and saved_id[0] in ("storage", b"storage"):
            storage_class, key, elements = saved_id[1], saved_id[2], saved_id[4]
            dtype = getattr(storage_class, "dtype", None)
            if key not in declared and isinstance(elements, int) and isinstance(dtype, torch.dtype):
                declared.add(key)
                total += elements * torch._utils._element_size(dtype)
                if total > room:
                    raise Unbounded(
                        f"a legacy checkpoint whose storages declare {total:,} bytes, more than the {room:,} bytes"
                        " that follow its pickle in the file (torch allocates them before reading)"
                    )
        return persistent_load(saved_id)

    return storage_within


def _bytearray_of_data(*args: Any) -> bytearray:
    """A bytearray as torch.save writes one, of bytes (or empty): never of a size, an int's
    or a one-element tensor's (`__index__`), which it would allocate zeroed."""
    if args and isinstance(args[0], int):
        raise Unbounded(f"a pickled bytearray of {args[0]:,} bytes made from its size, not from data in the file")
    if args and not (len(args) == 1 and isinstance(args[0], bytes | bytearray)):
        raise Unbounded(f"a pickled bytearray made from {type(args[0]).__name__}, not from data in the file")
    return bytearray(*args)


def _bytes_of_text(text: Any, encoding: Any = "utf-8", *rest: Any) -> bytes:
    """bytes as pickle writes them, `_codecs.encode(text, 'latin1')`; another codec is
    refused: 'hex' doubles its input, and a chain of them made 3 GB of 766 bytes."""
    import codecs

    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or rest:
        raise Unbounded(f"pickled bytes encoded as {encoding!r}, not as pickle writes them ('latin1')")
    return codecs.encode(text, encoding)


def _refuse_what_it_builds(stream: Any) -> None:
    """Read the pickle at `stream`'s position ahead (`pickle_graph.built_problem`), nothing
    built: refuse one whose objects are unbounded, or that calls a tensor or storage class
    itself. Then back to where it was, for torch to read. A pickle that cannot be followed
    so is left to torch, whose error says why."""
    start = stream.tell()
    try:
        problem = built_problem(stream, _tensor_data_called)
    except UNFOLLOWED:  # not a pickle this reading follows: torch says what
        problem = None
    finally:
        stream.seek(start)
    if problem:
        raise Unbounded(f"a pickle that {problem}")


def _tensor_data_called(opcode: str, argument: Any, called: tuple[str, ...]) -> str | None:
    """A call of a tensor or storage class, made directly or handed to
    `_rebuild_from_type_v2`, which calls the function it is given with the arguments given."""
    callee = called[0] if called else ""
    if callee == _REBUILD_FROM_TYPE and len(called) > 1:
        callee = called[1]
    if not _makes_tensor_data(callee):
        return None
    module, _, name = callee.partition(" ")
    return (
        f"calls {module}.{name} itself, which allocates what the file asks: torch.save rebuilds tensors through"
        " torch._utils from the file's own data"
    )


# The one call on torch's allowlist that calls a function it is given: a tensor subclass's
# (torch.save hands it a rebuild function of torch._utils, never a tensor class).
_REBUILD_FROM_TYPE = "torch._tensor _rebuild_from_type_v2"


def _makes_tensor_data(named: str) -> bool:
    """Whether a GLOBAL names a tensor or storage class of torch's (torch.LongTensor,
    torch.storage.UntypedStorage), which called with a size allocates it. torch.save passes
    such classes as arguments only (to `_rebuild_from_type_v2`, a parameter's class)."""
    module, _, name = named.partition(" ")
    return module.split(".")[0] == "torch" and name.endswith(("Tensor", "Storage"))


def unbounded_in(exc: BaseException) -> Unbounded | None:
    """The refusal of `weights_only_bounded` that caused `exc`, where torch replaced it on the
    way out (torch.export.load tries each artifact again before it fails)."""
    return next((raised for raised in exception_chain(exc) if isinstance(raised, Unbounded)), None)
