"""Bounds on what torch's weights-only unpickler builds from a file. It runs no code from
the file, but two of its ways let a few bytes become gigabytes or hours of work:
- `bytearray(N)`, on its allowlist, allocates N zeroed bytes (a 404-byte file asked for
  64 GiB); torch.save writes a bytearray as `bytearray(text, 'latin-1')`, never from a size.
- the memo hands out one container again and again: `t = (t, t)`, forty deep, is 1.4 KB and
  2**40 leaves to anyone who walks it (torch.export.load walks a program's sample inputs).
`weights_only_bounded` refuses both while it is in force, naming what it refused."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

from archprof.errors import ArchprofError

# A walk of what a file unpickled to, each container counted as often as it is reached;
# past this many, where containers are shared, it is refused (one of torch's walks of it
# would take as long).
MOST_REACHED = 1_000_000


class Unbounded(ArchprofError):
    """What a weights-only unpickling would build is refused: too large for the file."""


@contextlib.contextmanager
def weights_only_bounded() -> Iterator[None]:
    """torch's weights-only unpickler, for the duration: `bytearray` of a size refused, and a
    result whose containers, shared, are reached more than `MOST_REACHED` times."""
    from unittest import mock

    import torch._weights_only_unpickler as unpickler

    allowed = {**unpickler._get_allowed_globals(), "builtins.bytearray": _bytearray_of_data}
    plain_load = unpickler.Unpickler.load

    def load(self) -> Any:
        with warnings.catch_warnings():  # torch's, which name this frame as their caller
            warnings.filterwarnings("ignore", module=__name__)
            loaded = plain_load(self)
        _refuse_shared_past_bound(loaded)
        return loaded

    with (
        mock.patch.object(unpickler, "_get_allowed_globals", lambda: allowed),
        mock.patch.object(unpickler.Unpickler, "load", load),
    ):
        yield


def _bytearray_of_data(*args: Any) -> bytearray:
    if args and isinstance(args[0], int):
        raise Unbounded(f"a pickled bytearray of {args[0]:,} bytes made from its size, not from data in the file")
    return bytearray(*args)


def _refuse_shared_past_bound(loaded: Any) -> None:
    """Refuse `loaded` where walking it, a container each time it is reached, reaches more
    than `MOST_REACHED` containers and items, some container more than once (a cycle too: the
    walk stops there). A large structure of its own items, shared by none, is walked once."""
    reached, shared, seen = 0, False, set()
    stack = [loaded]
    while stack:
        value = stack.pop()
        reached += 1
        if shared and reached > MOST_REACHED:
            raise Unbounded(
                f"pickled containers that hold each other over and over: over {MOST_REACHED:,} items to walk"
                f" from {len(seen):,} containers"
            )
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list | tuple | set | frozenset):
            stack.extend(value)
        else:
            continue
        shared = shared or id(value) in seen
        seen.add(id(value))


def unbounded_in(exc: BaseException) -> Unbounded | None:
    """The refusal of `weights_only_bounded` that caused `exc`, where torch replaced it on the
    way out (torch.export.load tries each artifact again before it fails)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, Unbounded):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
