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
  ahead, opcode by opcode, nothing built, each object's reach summed from what it holds, and
  refused where that runs far past the pickle's length (torch.save shares a tensor, a
  string, a small tuple: a few items more).
`weights_only_bounded` refuses each while it is in force, naming what it refused."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

from archprof.errors import ArchprofError, exception_chain


class Unbounded(ArchprofError):
    """What a weights-only unpickling would build is refused: too large for the file."""


@contextlib.contextmanager
def weights_only_bounded() -> Iterator[None]:
    """torch's weights-only unpickler, for the duration: `bytearray` of a size and `_codecs`
    other than latin-1 refused, and a pickle whose sharing reaches far past its length
    refused before it is read (`_refuse_shared_containers`)."""
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
    }
    plain_init, plain_load = unpickler.Unpickler.__init__, unpickler.Unpickler.load

    def init(self, file, *args, **kwargs) -> None:
        plain_init(self, file, *args, **kwargs)
        self.archprof_stream = file  # torch's is seekable: a zip member's bytes, or the legacy file

    def load(self) -> Any:
        _refuse_shared_containers(self.archprof_stream)
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


# What a pickle may reach beyond what it spells out: a walk of the objects it builds, each
# shared one counted wherever it is held, may meet this many more than the pickle has
# opcodes (torch.save shares a tensor, a string, a small tuple; never much).
MOST_REACHED = 1_000_000
# Opcodes that fill the object beneath their arguments (a list, a dict, a set, an object's
# state) and leave it there.
_FILLING = frozenset({"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"})
_GETS = frozenset({"GET", "BINGET", "LONG_BINGET", "DUP"})
_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"})


class _Reach:
    """What walking one object a pickle builds would meet (`count`, itself included), and
    whether the memo has handed it out again (`shared`)."""

    __slots__ = ("count", "named", "shared")

    def __init__(self, count: int, named: str = "") -> None:
        self.count, self.shared = count, False
        self.named = named  # of a GLOBAL: the module and name, "torch LongTensor"


def _refuse_shared_containers(stream: Any) -> None:
    """Read the pickle at `stream`'s position ahead, opcode by opcode, nothing built, each
    object's reach summed from what it holds; refuse one whose reach runs past the opcodes
    read by `MOST_REACHED` (a container shared at every level: t = (t, t)), or that is
    filled after the memo handed it out (what holds it would be counted too small: a cycle,
    or a list grown after a tuple took it). Then back to where it was, for torch to read. A
    pickle that cannot be followed so is left to torch, whose error says why."""
    import pickletools

    start = stream.tell()
    stack: list[_Reach] = []
    marks: list[int] = []
    memo: dict[Any, _Reach] = {}
    try:
        for read, (opcode, argument, _) in enumerate(pickletools.genops(stream)):
            name = opcode.name
            if name == "MARK":
                marks.append(len(stack))
            elif name in _GETS:
                again = stack[-1] if name == "DUP" else memo[argument]
                again.shared = True
                stack.append(again)
            elif name in _PUTS:
                memo[len(memo) if name == "MEMOIZE" else argument] = stack[-1]
            else:
                made = _made(opcode, argument, stack, marks)
                if made.count > read + MOST_REACHED:
                    raise Unbounded(
                        "a pickle that hands out one container again and again (t = (t, t)): walked or hashed,"
                        " a few bytes of it are hours of work"
                    )
                stack.extend([made] * len(opcode.stack_after))
    except (ValueError, IndexError, KeyError):  # not a pickle this reading follows: torch says what
        pass
    finally:
        stream.seek(start)


def _made(opcode: Any, argument: Any, stack: list[_Reach], marks: list[int]) -> _Reach:
    """What `opcode` leaves on the stack (if anything: PROTO, POP, STOP leave nothing), its
    arguments taken off: a new object holding them, or the one it fills."""
    import pickletools

    held = stack[marks.pop() :] if pickletools.markobject in opcode.stack_before else []
    del stack[len(stack) - len(held) :]
    taken = sum(1 for item in opcode.stack_before if item not in (pickletools.markobject, pickletools.stackslice))
    arguments = stack[len(stack) - taken :] if taken else []
    del stack[len(stack) - taken :]
    if opcode.name in _FILLING:
        filled, *held_too = arguments
        if filled.shared:
            raise Unbounded("a pickle that fills a container after handing it out (a cycle, or a list grown late)")
        filled.count += sum(reach.count for reach in [*held_too, *held])
        return filled
    if opcode.name in ("REDUCE", "NEWOBJ") and _makes_tensor_data(arguments[0].named):
        module, _, name = arguments[0].named.partition(" ")
        raise Unbounded(
            f"a pickle that calls {module}.{name} itself, which allocates what the file asks:"
            " torch.save rebuilds tensors through torch._utils from the file's own data"
        )
    return _Reach(1 + sum(reach.count for reach in [*arguments, *held]), argument if opcode.name == "GLOBAL" else "")


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
