"""Ctrl-C and SIGTERM end a command even where its main thread cannot answer them. Python
runs a signal's handler in the main thread between two bytecodes: a TorchScript forward
that loops forever runs in torch's interpreter, where that never happens, and the process
went on after SIGTERM until killed (`kill -9`). Here a thread learns of each signal through
Python's wakeup file descriptor, written as the signal arrives, and gives the handler
`ANSWER_WITHIN` seconds to run (it calls `answered`); unanswered, it says so on one line and
ends the process with the status a shell reports for the signal."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

ANSWER_WITHIN = 5.0

_ENDINGS = {signal.SIGINT: ("interrupted (Ctrl-C)", 130), signal.SIGTERM: ("terminated", 128 + signal.SIGTERM)}
_answered = threading.Event()


def answered() -> None:
    """Called by the handlers of Ctrl-C and SIGTERM as they run: the main thread answered."""
    _answered.set()


@contextmanager
def ended_if_unanswered() -> Iterator[None]:
    """While active, Ctrl-C or SIGTERM that the main thread does not answer within
    `ANSWER_WITHIN` seconds ends the process. Outside the main thread, or where the wakeup
    descriptor is someone else's (an event loop's), nothing is watched."""
    read, write = os.pipe()
    os.set_blocking(write, False)
    try:
        previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    except ValueError:  # not the main thread
        previous = None
    if previous != -1:
        if previous is not None:
            signal.set_wakeup_fd(previous)
        os.close(read)
        os.close(write)
        yield
        return
    _answered.clear()
    watcher = threading.Thread(target=_watch, args=(read,), name="archprof-signals", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(-1)
        os.close(write)  # the watcher reads the end of the pipe and stops
        watcher.join(ANSWER_WITHIN)
        os.close(read)


def _watch(read: int) -> None:
    while signals := os.read(read, 64):
        for signum in signals:
            if signum not in _ENDINGS:
                continue
            if not _answered.wait(ANSWER_WITHIN):
                message, status = _ENDINGS[signum]
                sys.stderr.write(f"{message}: the model's code did not stop (native code?), ended at once\n")
                sys.stderr.flush()
                os._exit(status)
            _answered.clear()
