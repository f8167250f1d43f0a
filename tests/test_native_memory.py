"""A TorchScript file's lists and strings, which its interpreter makes without an operator
reaching the dispatcher, bounded in memory (`archprof.native_memory`) as the file loads and
as its forward is traced; and its loops bounded in time (`script_loops.MOST_LOOP_SECONDS`).
Unbounded, a 2 KB file's forward that doubled a string 40 times took all of a 24 GB
machine's memory and was killed. And how the interpreter hands on an exception raised in
Python inside it: an allocation's failure told from another's, and its words said."""

from __future__ import annotations

import sys
from typing import List, Tuple  # noqa: UP035 (TorchScript's annotations of a list's element type)

import pytest
import torch
from torch import nn

import archprof
import archprof.load.files
import archprof.tracing.script_loops
import archprof.tracing.trace
from archprof.errors import first_line
from archprof.native_memory import ran_out_of_memory
from tests.cli import cli, one_error_line

try:
    import resource
except ImportError:  # Windows: no process limits; the tests that set them are skipped
    resource = None

# The memory bound is Linux's RLIMIT_DATA; the loops' time bound and the interpreter's words hold anywhere.
_ON_LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA is enforced on Linux")

# The bound the tests set: 64 MiB, "67.11 MB" said in decimal units.
_BOUND = 2**26
_BOUND_TEXT = "67.11 MB"


class _RepeatsAList(nn.Module):
    """`[0] * n`: n references to one number, 16 bytes each."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x):
        return x + len([0] * self.n)


class _DoublesAString(nn.Module):
    """A string doubled `n` times in a loop: 2**n characters from 2."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x):
        text = "ab"
        for _ in range(self.n):
            text = text + text
        return x + len(text)


@pytest.fixture
def bound(monkeypatch):
    """The bound on a model file's memory lowered to `_BOUND`, where the trace and the loader read it."""
    monkeypatch.setattr(archprof.tracing.trace, "MOST_FILE_MEMORY", _BOUND)
    monkeypatch.setattr(archprof.load.files, "MOST_FILE_MEMORY", _BOUND)


@_ON_LINUX
@pytest.mark.parametrize(
    ("model", "small"),
    [(_RepeatsAList, 1000), (_DoublesAString, 10)],
    ids=["list-repeated", "string-doubled"],
)
def test_a_model_files_lists_and_strings_are_bounded_in_memory(tmp_path, bound, model, small):
    """Each file's forward would take gigabytes outside any tensor (16 GB for the list's 10**9
    references, 2**40 characters for the string): refused at the bound, one line, exit 2,
    and the process's own limit put back. The same code at a size within the bound runs, its
    report that of the same module run eagerly (the oracle: eager code is not bounded)."""
    hostile = {_RepeatsAList: 10**9, _DoublesAString: 40}[model]
    path = tmp_path / "grows.pt"
    torch.jit.script(model(hostile)).save(str(path))
    limits = resource.getrlimit(resource.RLIMIT_DATA)
    for command in (["summary"], ["summary", "--train"]):
        result = cli(*command, path, "-i", "4")
        assert result.exit_code == 2
        assert one_error_line(result) == (
            f"error: the forward took more than {_BOUND_TEXT} of memory (its lists and strings, its tensors on the"
            " CPU, the trace's records), more than a model file's may: a list or string that grows without end?"
        )
        assert resource.getrlimit(resource.RLIMIT_DATA) == limits
    within_bound = tmp_path / "small.pt"
    torch.jit.script(model(small)).save(str(within_bound))
    graph = archprof.analyze(str(within_bound), input_size=(4,)).graph
    eager = archprof.analyze(model(small), input_size=(4,)).graph
    assert [op.op for op in graph.ops] == [op.op for op in eager.ops] == ["aten.add"]


class _GrowsAsItLoads(nn.Module):
    """A `__setstate__` (straight-line, as a file's must be) that makes a list of `n` x 10**8 numbers."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 1
        self.held: List[int] = [0]  # noqa: UP006

    def forward(self, x):
        return x + len(self.held)

    @torch.jit.export
    def __getstate__(self) -> Tuple[int, bool]:  # noqa: UP006
        return (self.n, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[int, bool]) -> None:  # noqa: UP006
        self.n = state[0]
        self.training = state[1]
        self.held = [0] * (self.n * 100_000_000)


@_ON_LINUX
def test_a_model_files_lists_are_bounded_in_memory_as_it_loads(tmp_path, bound):
    """1.6 GB of references from a 2 KB file's `__setstate__`, refused as the file loads."""
    path = tmp_path / "grows.pt"
    torch.jit.script(_GrowsAsItLoads()).save(str(path))
    limits = resource.getrlimit(resource.RLIMIT_DATA)
    result = cli("summary", path, "-i", "4")
    assert result.exit_code == 2
    assert one_error_line(result) == (
        f"error: refusing to load {path}: its TorchScript code took more than {_BOUND_TEXT} of memory while the"
        " file loads (its lists and strings, its tensors), more than a model file may besides its own size"
    )
    assert resource.getrlimit(resource.RLIMIT_DATA) == limits


class _WritesOutEachTime(nn.Module):
    """A loop of few iterations, each the text of a list of a million numbers (tens of ms)."""

    def forward(self, x):
        numbers = [0] * 1_000_000
        total = 0
        for _ in range(100_000):
            total = total + len(str(numbers))
        return x + total


def test_a_model_files_loops_are_bounded_in_time(tmp_path, monkeypatch):
    """100,000 iterations, within the bound on them, of work whose memory is within its
    bound too: an hour. Refused once the forward has run its loops for MOST_LOOP_SECONDS
    (here 1)."""
    monkeypatch.setattr(archprof.tracing.script_loops, "MOST_LOOP_SECONDS", 1)
    path = tmp_path / "slow.pt"
    torch.jit.script(_WritesOutEachTime()).save(str(path))
    result = cli("summary", path, "-i", "4")
    assert result.exit_code == 2
    assert one_error_line(result) == (
        "error: the forward has run its loops for more than 1 s, longer than any network's: a loop that does not end?"
    )


def _raise(kind: int) -> None:
    raise (MemoryError if kind else ValueError)("raised in a kernel")


_LIBRARY = torch.library.Library("archprof_test_memory", "DEF")  # kept: its op lives as long as it
_LIBRARY.define("fails(int kind) -> ()", alias_analysis="CONSERVATIVE")
_LIBRARY.impl("fails", _raise, "CompositeExplicitAutograd")


@torch.jit.script
def _fails(kind: int) -> int:
    torch.ops.archprof_test_memory.fails(kind)
    return kind


def test_an_allocation_that_failed_is_told_however_the_interpreter_hands_it_on():
    """TorchScript's interpreter hands on a Python exception raised inside it (the recorder's,
    in a trace) as a RuntimeError with its text: a MemoryError's is told from another's."""
    for kind, ran_out in ((1, True), (0, False)):
        with pytest.raises(RuntimeError) as raised:
            _fails(kind)
        assert ran_out_of_memory(raised.value) is ran_out


def test_a_python_exception_raised_inside_the_interpreter_is_said_by_its_own_words():
    """Its message ends with its Python stack ("At:", then frames), not with its words."""
    with pytest.raises(RuntimeError) as raised:
        _fails(0)
    assert first_line(raised.value, bare=True) == "RuntimeError: ValueError: raised in a kernel"


@_ON_LINUX
def test_a_file_is_analysed_unbounded_where_the_limit_cannot_be_set(tmp_path, monkeypatch):
    """A sandbox that refuses setrlimit: the file loads and its forward is traced as without the bound."""

    def refused(*args):
        raise OSError("Operation not permitted")

    monkeypatch.setattr(resource, "setrlimit", refused)
    path = tmp_path / "small.pt"
    torch.jit.script(_DoublesAString(3)).save(str(path))
    graph = archprof.analyze(str(path), input_size=(4,)).graph
    assert [op.op for op in graph.ops] == ["aten.add"]
