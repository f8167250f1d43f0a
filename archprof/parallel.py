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

from archprof.errors import ArchprofError, ArchprofWarning, shown, warn
from archprof.units import checked_count

T = TypeVar("T")
R = TypeVar("R")
Progress = Callable[[str, int, int], None]  # (phase, done, total), as `archprof.profile` reports


# Measured on a 2-core machine: a spawned worker imports torch and archprof (1.5 s), then
# pays the first analysis in a process (1.5 s more: lazy imports and first-call set-up).
WORKER_START_S = 3.0


def default_jobs() -> int:
    """One worker per core."""
    return os.cpu_count() or 1


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
    is saved as it goes (benchmarks/hub_sweep.py's CSV), not lost when it is stopped."""
    jobs = default_jobs() if jobs is None else checked_count("jobs", jobs, 1, note="or None: every core")
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

    def finished() -> None:
        for index, outcome in enumerate(outcomes):
            if index not in delivered and outcome.done() and not outcome.cancelled() and not outcome.exception():
                delivered.add(index)
                deliver(index, outcome.result()[0])
        done = sum(outcome.done() for outcome in outcomes)
        if done > reported[0]:
            reported[0] = done
            report(phase, done, len(items))

    try:
        for position, index in enumerate(order):
            left = [i for i in order[position:] if i in sent]
            if executor is None and len(left) > 1 and len(paces) > 1 and min(paces) * len(left) > WORKER_START_S:
                executor = ProcessPoolExecutor(
                    min(jobs - 1, len(left)), mp_context=multiprocessing.get_context("spawn"), initializer=_quiet
                )
                for i in sorted(left):
                    outcomes[i] = executor.submit(_recorded, function, items[i])
            if executor is not None:
                if not outcomes[index].cancel():
                    break  # the workers have it, and every item before it
                outcomes[index] = Future()
            start = time.perf_counter()
            _settle(outcomes[index], function, items[index])
            paces.append(time.perf_counter() - start)
            finished()
        for outcome in as_completed(outcomes):
            finished()
            if not outcome.cancelled() and outcome.exception() is not None:
                for later in outcomes[outcomes.index(outcome) + 1 :]:  # cannot change which error is raised
                    later.cancel()
        return [_replayed(outcome) for outcome in outcomes]
    finally:
        if executor is not None:
            # Every result is in, or no longer wanted (an error, Ctrl-C): end the workers now
            # rather than after their model, or after they have finished starting.
            for process in list(executor._processes.values()):
                process.terminate()
            executor.shutdown(wait=True, cancel_futures=True)


def _pickles(function: Callable, item: Any) -> bool:
    try:
        pickle.dumps((function, item))
    except Exception:  # anything pickling raises means: run it here
        return False
    return True


def _quiet() -> None:
    """Workers ignore Ctrl-C: this process ends them, without a traceback from each. What a
    model prints in a worker goes to standard error, as in this process under the CLI:
    standard output carries the report alone (a worker's results come back pickled)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stdout = sys.stderr


def _recorded(function: Callable[[T], R], item: T) -> tuple[R, list[tuple[str, type[Warning]]]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = function(item)
    return result, [(str(w.message), w.category) for w in caught]


def _settle(outcome: Future, function: Callable, item: Any) -> None:
    try:
        outcome.set_result(_recorded(function, item))
    except Exception as exc:  # raised in order, by _replayed
        outcome.set_exception(exc)


def _replayed(outcome: Future) -> Any:
    try:
        result, caught = outcome.result()
    except BrokenProcessPool:
        raise ArchprofError(
            "a worker process died (out of memory, or killed): run with jobs=1 (--jobs 1) to analyse in one process"
        ) from None
    for message, category in caught:
        if issubclass(category, ArchprofWarning):
            warn(message, category)  # at the caller's line, as the same warning made in this process
        else:  # another library's, as from where it was made: its module's filters still apply
            warnings.warn(message, category, stacklevel=2)
    return result
