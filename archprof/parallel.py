"""Many analyses at once: a process pool over every core, with the results, the warnings and
the first error exactly as one process working through the items in order gives them.

Workers are spawned (a fresh interpreter): forking a process that has torch running does
not mix well. What a worker gets is pickled, so only plain data goes there (model specs,
`ModelOptions`, budget entries); a module or a callable is analysed here."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import torch

from archprof.errors import ArchprofError, ArchprofWarning, shown, warn
from archprof.units import checked_count

T = TypeVar("T")
R = TypeVar("R")
Progress = Callable[[str, int, int], None]  # (phase, done, total), as `archprof.profile` reports


# Measured on a 2-core machine: a spawned worker imports torch and archprof (1.5 s), then
# pays the first analysis in a process (1.5 s more: lazy imports and first-call set-up).
WORKER_START_S = 3.0


def default_jobs() -> int:
    """One worker per core this process may run on (its affinity: `taskset`, a container's
    CPU set), not per core of the machine."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def checked_jobs(jobs: Any) -> int:
    """A public entry point's `jobs`, checked before any work: None (every core) or an int of at least 1."""
    return default_jobs() if jobs is None else checked_count("jobs", jobs, 1, note="or None: every core")


def checked_progress(progress: Any) -> None:
    """A public entry point's `progress`, checked before any work: None or a function."""
    if progress is not None and not callable(progress):
        raise ArchprofError(
            f"progress must be a function called as progress(phase, done, total), or None; got {shown(progress)}"
        )


def ordered_map(
    function: Callable[[T], R],
    items: Sequence[T],
    *,
    jobs: int | None = None,
    local: Callable[[T], bool] = lambda item: False,
    progress: Progress | None = None,
    phase: str = "analysing",
    each: Callable[[int, R], None] | None = None,
    crashed: Callable[[T, str], R] | None = None,
) -> list[R]:
    """`[function(item) for item in items]` over up to `jobs` processes (None: one per core).

    This process works through the items from the last; once the items left, at the
    quickest pace so far (from the second item: the first pays the set-up), would outlast
    starting a worker (WORKER_START_S), up to jobs - 1 workers start and take them from the
    first. `function` must be a module-level
    function; an item that `local` picks, or that does not pickle, runs here, and so does
    everything with jobs=1, in order. The error raised is the one of the first failing item
    in the order given; warnings a worker raised are raised again here, in that order.

    `each(index, result)` is called here as each item's result comes in (in the order they
    finish, not the order given; an item that raised, none): what a long run has done so far
    is saved as it goes (benchmarks/hub_sweep.py's CSV), not lost when it is stopped.

    A worker that dies (out of memory, killed, a model that crashes the interpreter, which
    one process would not survive either) takes the pool's other items down with it: each
    is then run again alone, in a worker of its own, so that only the one that dies again
    fails. `crashed(item, reason)` gives what that item stands for (`check`: the entry's
    error, the others checked as ever); without it, the item raises an ArchprofError."""
    jobs = checked_jobs(jobs)
    report = progress or (lambda phase, done, total: None)
    deliver = each or (lambda index, result: None)
    sendable = [i for i, item in enumerate(items) if jobs > 1 and not local(item) and _pickles(function, item)]
    if len(sendable) < 2:
        results = []
        for done, item in enumerate(items, 1):
            results.append(function(item))
            deliver(done - 1, results[-1])
            report(phase, done, len(items))
        return results
    outcomes: list[Future] = [Future() for _ in items]
    sent = set(sendable)
    order = [i for i in range(len(items)) if i not in sent] + sendable[::-1]
    paces: list[float] = []
    executor = None

    reported = [0]
    delivered: set[int] = set()

    def hand_over(index: int) -> None:
        """`each` for the item at `index`, once, where its outcome is in and did not raise."""
        outcome = outcomes[index]
        if index not in delivered and outcome.done() and not outcome.exception():
            delivered.add(index)
            deliver(index, outcome.result()[0])

    def finished() -> None:
        for index in range(len(outcomes)):
            hand_over(index)
        done = sum(outcome.done() for outcome in outcomes)
        if done > reported[0]:
            reported[0] = done
            report(phase, done, len(items))

    try:
        for position, index in enumerate(order):
            left = [i for i in order[position:] if i in sent]
            if executor is None and len(left) > 1 and len(paces) > 1 and min(paces) * len(left) > WORKER_START_S:
                taken = _CONTEXT.RawArray("b", len(items))  # the items this process took back
                executor = _pool(min(jobs - 1, len(left)), taken)
                for i in sorted(left):
                    outcomes[i] = executor.submit(_recorded_unless_taken, function, items[i], i)
            if executor is not None:
                if outcomes[index].running() or outcomes[index].done():
                    break  # the workers have it, and every item before it
                # This process takes it back: marked, so that a worker that reaches it passes
                # it over. Not by cancelling the pool's: should a worker die, Python 3.11's pool
                # thread fails on a cancelled item it still holds and leaves the items after it
                # pending for good.
                taken[index] = 1
                outcomes[index] = Future()
            start = time.perf_counter()
            _settle(outcomes[index], function, items[index])
            paces.append(time.perf_counter() - start)
            finished()
        for _ in as_completed(outcomes):
            # Decided first, then handed over: an item that comes in between the two (the last one
            # in flight) is in for both; the other way round, it was left out of `each`.
            decided = _decided(outcomes)  # an error in order: what runs after it cannot change which is raised
            finished()
            if decided:
                break
        decided = _first_undone(outcomes)
        for index in range(decided):
            if _broken(outcomes[index]):
                outcomes[index] = _alone(function, items[index], crashed)
                hand_over(index)  # its result (or what `crashed` makes of it) comes in now
            if outcomes[index].exception() is not None:
                break  # the first error in order, which `_replayed` raises: nothing after it is needed
        return [_replayed(outcome) for outcome in outcomes[:decided]]
    finally:
        if executor is not None:
            _ended(executor)


def _first_undone(outcomes: list[Future]) -> int:
    """The index of the first outcome not yet in (their number where all are)."""
    return next((index for index, outcome in enumerate(outcomes) if not outcome.done()), len(outcomes))


def _decided(outcomes: list[Future]) -> bool:
    """Whether the result is known: every outcome is in, or one that raised (not for a dead
    worker: that item runs again) with every one before it in."""
    first = _first_undone(outcomes)
    return first == len(outcomes) or any(
        outcome.exception() is not None and not _broken(outcome) for outcome in outcomes[:first]
    )


def _broken(outcome: Future) -> bool:
    return isinstance(outcome.exception(), BrokenProcessPool)


def _alone(function: Callable, item: Any, crashed: Callable | None) -> Future:
    """The outcome of `item` run again in a worker of its own (its pool died under it, or under
    another item), or what `crashed` makes of it where that worker dies too."""
    executor = _pool(1, None)
    try:
        outcome = executor.submit(_recorded, function, item)
        outcome.exception()  # waits
    finally:
        _ended(executor)
    if not _broken(outcome):
        return outcome
    if not _workers_start():
        raise ArchprofError(_NO_WORKERS)
    reason = "its worker process died (out of memory, killed, or the model crashed the interpreter)"
    again: Future = Future()
    if crashed is None:
        again.set_exception(ArchprofError(reason))
    else:
        _settle(again, lambda _: crashed(item, reason), None)
    return again


_NO_WORKERS = (
    "worker processes cannot start in this program: a script calling archprof with jobs > 1 must do so under"
    ' `if __name__ == "__main__":` (a spawned worker imports the script again), from a file, not standard input;'
    " or pass jobs=1"
)


def _workers_start() -> bool:
    """Whether a worker can run anything at all here: not where each imports the main script
    again and that starts a pool of its own, nor where the script has no file to import."""
    executor = _pool(1, None)
    try:
        probe = executor.submit(abs, 0)
        probe.exception()  # waits
    finally:
        _ended(executor)
    return not _broken(probe)


def _pool(workers: int, taken) -> ProcessPoolExecutor:
    """A pool of spawned workers, which pass over the items marked in `taken` (a shared array,
    or None)."""
    initargs = (taken, torch.get_default_dtype())
    return ProcessPoolExecutor(workers, mp_context=_CONTEXT, initializer=_worker_started, initargs=initargs)


def _ended(executor: ProcessPoolExecutor) -> None:
    """Every result is in, or no longer wanted (an error, Ctrl-C): the workers ended now rather
    than after their item, or after they have finished starting. The pool then marks what it
    still holds as failed, which no one waits for. Nothing is cancelled: Python 3.11's pool
    thread, marking a cancelled item so, raises and prints a traceback (3.12 passes over them)."""
    processes = list(executor._processes.values())
    for process in processes:
        process.terminate()
    executor.shutdown(wait=True)
    for process in processes:
        process.join()


def _pickles(function: Callable, item: Any) -> bool:
    try:
        pickle.dumps((function, item))
    except Exception:  # anything pickling raises means: run it here
        return False
    return True


_CONTEXT = multiprocessing.get_context("spawn")


def _worker_started(taken, default_dtype: torch.dtype) -> None:
    """Workers ignore Ctrl-C: this process ends them, without a traceback from each. What a
    model prints in a worker goes to standard error, as in this process under the CLI:
    standard output carries the report alone (a worker's results come back pickled). `taken`:
    the items the ordering process took back (`_recorded_unless_taken`). torch's default
    dtype is this process's, which a model built from a name is made in."""
    global _TAKEN
    _TAKEN = taken
    torch.set_default_dtype(default_dtype)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stdout = sys.stderr


_TAKEN = None  # in a worker: the shared array of the items taken back


def _recorded_unless_taken(function: Callable[[T], R], item: T, index: int):
    """`_recorded`, in a worker, unless the ordering process took item `index` back (it runs
    it itself, and passes over what this returns)."""
    if _TAKEN is not None and _TAKEN[index]:
        return None
    return _recorded(function, item)


def _recorded(function: Callable[[T], R], item: T) -> tuple[R, list[tuple]]:
    """`function(item)` and the warnings it raised, each with where it was made (its file,
    line and module), which the filters of the process that replays it match."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = function(item)
    return result, [(str(w.message), w.category, w.filename, w.lineno, _module_of(w.filename)) for w in caught]


def _module_of(filename: str) -> str | None:
    """The name of the module loaded from `filename` (a warning's module, which a filter's
    `module=` matches); None where none is (then `warn_explicit` makes one of the file's name)."""
    for name, module in list(sys.modules.items()):
        if getattr(module, "__file__", None) == filename:
            return name
    return None


def _settle(outcome: Future, function: Callable, item: Any) -> None:
    try:
        outcome.set_result(_recorded(function, item))
    except Exception as exc:  # raised in order, by _replayed
        outcome.set_exception(exc)


def _replayed(outcome: Future) -> Any:
    """The outcome's result, its warnings raised again here; its exception raised (one of a
    dead worker's never comes here: `_alone` ran that item again)."""
    result, caught = outcome.result()
    for message, category, filename, line, module in caught:
        if issubclass(category, ArchprofWarning):
            warn(message, category)  # at the caller's line, as the same warning made in this process
        else:  # another library's, as from where it was made: its module's filters and registry apply
            warnings.warn_explicit(message, category, filename, line, module=module, registry=_registry(module))
    return result


def _registry(module: str | None) -> dict:
    """The warnings registry of `module` (which remembers what "default" and "module" filters
    have shown once): its own where this process imported it, else one kept here for it."""
    loaded = sys.modules.get(module) if module is not None else None
    if loaded is not None:
        return loaded.__dict__.setdefault("__warningregistry__", {})
    return _REGISTRIES.setdefault(module, {})


_REGISTRIES: dict[str | None, dict] = {}  # the registries of modules only workers imported
