import importlib
import os
import signal
from pathlib import Path

import pytest
import torch
from hypothesis import settings

from benchmarks.torchvision_ops import import_torchvision

# CI (`.ci/run`) draws the same examples every run, so that a landing never hangs on a draw;
# a run anywhere else draws new ones (and keeps any that fail in .hypothesis/ to replay).
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


# A pytest-xdist worker starts with COLUMNS=80 and LINES=24 in its environment, which the
# tables its tests render and the processes they start would follow: each worker takes the
# controller's, so that a test sees under xdist what it sees in one process.
TERMINAL_SIZE = ("COLUMNS", "LINES")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist's controller: hand each worker its COLUMNS and LINES (None where unset)."""
    node.workerinput["terminal_size"] = {name: os.environ.get(name) for name in TERMINAL_SIZE}


def pytest_configure(config):
    """Ctrl-C answered as Python answers it by default; and in an xdist worker, the
    controller's COLUMNS and LINES in place of its own."""
    _sigint_answered()
    for name, value in getattr(config, "workerinput", {}).get("terminal_size", {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _sigint_answered() -> None:
    """A suite started with SIGINT ignored (a background job of a shell without job control:
    `bash .ci/run &`) would pass that on to every archprof its tests start, where Python then
    leaves it ignored, and the tests of Ctrl-C see none arrive. Python's own handler, which a
    process started from here turns back into the default, as a terminal's command has."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def hub_packages():
    """torchvision and timm, imported for real: (torchvision, timm).

    torchvision's wheel here is a CUDA build whose C operators do not load beside the CPU
    torch; its model code is pure Python. `benchmarks/torchvision_ops.py` stands in for the
    module that registers those operators' meta kernels, and for the operators a detector
    calls where they did not load. archprof itself imports both normally."""
    torchvision = import_torchvision()  # before timm, which imports it
    import timm

    return torchvision, timm


@pytest.fixture
def benchmark_script(monkeypatch):
    """A script of benchmarks/ imported by its name (`benchmark_script("memory_sweep")`), its
    siblings importable as it imports them; torch's thread count, which a sweep's worker sets
    to one, put back for the tests after it."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    threads = torch.get_num_threads()
    yield importlib.import_module
    torch.set_num_threads(threads)
