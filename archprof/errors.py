"""The one error type a user can cause, its warning, how an exception reads on one line, and
whether it says the meta device lacks what a real one has."""

import builtins
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


class ArchprofError(Exception):
    """Something the user gave was wrong: the message says what and what to do.

    The CLI prints the message on one line and exits with status 2.
    """


class ArchprofWarning(UserWarning):
    """archprof had to do something other than asked, and says so once (the CPU fallback of
    a forward that cannot run on the meta device). The CLI prints it as one line on stderr."""


def warn(message: str, category: type[Warning] = ArchprofWarning) -> None:
    """`warnings.warn`, attributed to the caller's own line: the first frame outside archprof,
    whatever road inside the package led here (`archprof.analyze`, `compare`, `fit_batch`), so
    that the warning names the caller's file and a filter on the caller's module applies."""
    frame, depth = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] == "archprof":
        frame, depth = frame.f_back, depth + 1
    warnings.warn(message, category, stacklevel=depth + 1)


# The most of a value's repr an error quotes: a DataFrame's runs to many lines, a list of a
# million numbers to megabytes.
SHOWN_CHARACTERS = 80


def shown(value: object, limit: int = SHOWN_CHARACTERS) -> str:
    """`repr(value)`, for an error that quotes what the caller gave: on one line (a repr of
    several lines, a DataFrame's, its runs of whitespace one space; a string's, whose repr
    escapes its line breaks, as it is), cut to `limit` characters ("..." last where cut);
    where the object's own `__repr__` raises, what Python's traceback prints for it,
    '<unprintable Bad object>', not that exception in place of archprof's message."""
    try:
        text = repr(value)
    except Exception:
        return f"<unprintable {type(value).__name__} object>"
    if "\n" in text or "\r" in text:
        text = " ".join(text.split())
    return cut(text, limit)


def cut(text: str, limit: int) -> str:
    """`text`, or its first `limit` - 3 characters and "..." where it is longer than `limit`."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_flag(name: str, value: object) -> None:
    """A True-or-False keyword of the API given anything else is refused: a string "false" is
    true, and `trust_pickle="false"` would run the code in a pickle."""
    if not isinstance(value, bool):
        kind = type(value)  # np.True_'s is NumPy's bool: a builtin's name but not the builtin, named with its module
        builtin_name = kind.__module__ != "builtins" and hasattr(builtins, kind.__name__)
        named = f"{kind.__module__}.{kind.__qualname__}" if builtin_name else kind.__name__
        raise ArchprofError(f"{name} must be True or False, got {shown(value)} ({named})")


def first_line(exc: BaseException, bare: bool = False) -> str:
    """An exception as one line: its type and the first line of its message (`bare`: the
    message only, or the type when there is none). A TorchScript interpreter error's first
    line only says where; the cause is its last, or, for a Python exception raised inside
    (a kernel of archprof's), the last before its Python stack ("At:" and its frames)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if text.startswith("The following operation failed in the TorchScript interpreter") and len(lines) > 1:
        python_stack = len(lines) - 1 - lines[::-1].index("At:") if "At:" in lines else len(lines)
        text = lines[max(python_stack - 1, 0)]
    if bare:
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def errors_named(label: str) -> Iterator[None]:
    """An ArchprofError raised in the block, led by `label` ("lenet5: the forward pass failed
    in ..."): which of several models it is about. Its class is kept (a MetaUnsupported stays one)."""
    try:
        yield
    except ArchprofError as exc:
        exc.args = (f"{label}: {exc.args[0] if exc.args else exc}", *exc.args[1:])
        raise


def short_reason(exc: BaseException) -> str:
    """`first_line(exc, bare=True)`, cut to its first sentence where it is long (torch's
    explanation for nonzero runs to 300 characters), a number of thousands of digits cut to
    its first and how many (a hostile file's range constraint: "4 not in VR[10000000…(4,000
    digits)…]", where the line ran to 8,000 characters)."""
    line = _LONG_NUMBER.sub(_cut_number, first_line(exc, bare=True))
    return line.split(". ")[0] if len(line) > 120 else line


_LONG_NUMBER = re.compile(r"\d{41,}")  # past any figure archprof writes (int64's 19 digits, a count's past it)


def _cut_number(found: re.Match) -> str:
    return f"{found[0][:8]}…({len(found[0]):,} digits)"


def failure_reason(exc: BaseException) -> str:
    """Why the user's forward failed: `short_reason`, led by the exception's type where the
    type says something ("KeyError: 'scale'", where the bare message would be "'scale'");
    bare for a RuntimeError, the class of most of PyTorch's errors (their messages say it
    all; `torch.linalg`'s and NotImplementedError derive from it), and for an ArchprofError
    (archprof's own words)."""
    reason = short_reason(exc)
    if isinstance(exc, RuntimeError | ArchprofError) or not str(exc).strip():
        return reason
    return f"{type(exc).__name__}: {reason}"


_META_LIMITATION = re.compile(r"\bmeta\b|data.dependent|no data|cannot copy out", re.IGNORECASE)


def exception_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """`exc` and what caused it, in turn (its `__cause__`, else its `__context__`), each once:
    what raised first, where a library replaced it on its way out."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_meta_limitation(exc: BaseException) -> bool:
    """Whether an exception says the meta device lacks what a real device has (data, a
    kernel), rather than that the model is wrong: then a real forward may work."""
    return any(
        isinstance(raised, NotImplementedError)
        or "DataDependent" in type(raised).__name__
        or _META_LIMITATION.search(str(raised))
        for raised in exception_chain(exc)
    )


_NO_MEMORY = re.compile(r"can't allocate memory|out of memory", re.IGNORECASE)


@contextmanager
def memory_for(what: str) -> Iterator[None]:
    """A real tensor the block allocates that does not fit in its device's memory (the CPU
    allocator's RuntimeError, a GPU's out of memory, Python's MemoryError) as one
    ArchprofError naming `what` (an input of the size asked: `--batch 100000000000`)."""
    try:
        yield
    except MemoryError:
        raise ArchprofError(f"{what} does not fit in memory") from None
    except RuntimeError as exc:
        if not _NO_MEMORY.search(str(exc)):
            raise
        raise ArchprofError(f"{what} does not fit in memory") from None
