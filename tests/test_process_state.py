"""The caller's process as archprof found it: an analysis inside a model's forward, a
caller's own patch of a name archprof routes, the caller's random generator, and analyses
in several threads at once (process-wide state each saves and puts back: the recursion
limit, warning filters, generators, the model's tables)."""

import concurrent.futures
import sys
import threading
import time
import warnings

import pytest
import torch
from torch import nn

import archprof
from archprof.errors import ArchprofWarning

# Frequent thread switches: the races below show within a few rounds, not by chance.
FREQUENT_SWITCHES = 1e-5


@pytest.fixture
def switching_often():
    interval = sys.getswitchinterval()
    sys.setswitchinterval(FREQUENT_SWITCHES)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def _registered(operator: str, key: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(operator, key)


# What `AnalysesItsChild`'s inner analyses found: not an attribute of the model, which
# archprof puts back as it was after the trace.
INNER_MACS: list[int] = []


class AnalysesItsChild(nn.Module):
    """A forward that analyses a submodule (a trace inside a trace)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.inner = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())

    def forward(self, x):
        INNER_MACS.append(archprof.analyze(self.inner, input_size=(3, 8, 8)).totals.macs)
        return self.conv(x)


def test_an_analysis_inside_a_forward_works_and_leaves_torch_as_it_was():
    """The inner analysis deleted torch._VF.lstm, which the outer one then failed to delete:
    the outer analysis failed ("'VFModule' object has no attribute 'lstm'") and left
    Tensor.clone wrapped and archprof's kernels on the dispatcher (forward-mode AD of
    svdvals hit an internal assert until the collector freed them)."""
    assert not _registered("aten::matmul", "AutogradCPU")  # PyTorch's composite: no kernel of its own
    INNER_MACS.clear()
    report = archprof.analyze(AnalysesItsChild().eval(), input_size=(3, 8, 8))
    assert report.totals.macs == 8 * 3 * 9 * 6 * 6  # the outer convolution's: C_out x C_in x k x k x H x W
    assert INNER_MACS == [4 * 3 * 9 * 6 * 6]
    assert "clone" not in vars(torch.Tensor) and "lstm" not in vars(torch._VF)
    assert not _registered("aten::matmul", "AutogradCPU")
    matrix, tangent = torch.randn(3, 3), torch.randn(3, 3)
    torch.func.jvp(torch.linalg.svdvals, (matrix,), (tangent,))  # PyTorch's own kernels again


def test_a_callers_own_lstm_route_is_kept(monkeypatch):
    """archprof deleted torch._VF.lstm after each trace: a caller's own routing of it was lost."""
    calls = []

    def own_lstm(*args, **kwargs):
        calls.append(1)
        return torch._C._VariableFunctions.lstm(*args, **kwargs)

    monkeypatch.setattr(torch._VF, "lstm", own_lstm, raising=False)
    archprof.analyze(nn.LSTM(4, 8), inputs=[(5, 4)])
    assert vars(torch._VF).get("lstm") is own_lstm
    nn.LSTM(4, 8)(torch.randn(5, 1, 4))
    assert calls == [1]


class StochasticDepth(nn.Module):
    """Drops its block at random in training: a CPU draw, read in the forward."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        x = self.stem(x)
        if self.training and torch.rand(1).item() < 0.5:
            return x
        return x + self.body(x)


def test_a_meta_trace_draws_from_its_own_generator():
    """A meta trace ran the forward's CPU draws on the caller's generator: the caller's next
    numbers moved, and the figures depended on the caller's seed (the block dropped or not)."""
    model = StochasticDepth().train()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    archprof.analyze(model, input_size=(3, 16, 16), training=True, batch=2)
    assert torch.equal(torch.rand(3), expected)
    macs = set()
    for seed in range(6):
        torch.manual_seed(seed)
        macs.add(archprof.analyze(model, input_size=(3, 16, 16), training=True, batch=2).totals.macs)
    assert len(macs) == 1


def test_analyses_in_threads_leave_the_recursion_limit(switching_often):
    """The receptive-field pass raises the process's recursion limit and puts it back: two
    threads' passes interleaved and left it at 100,000 for good."""
    limit = sys.getrecursionlimit()
    archprof.analyze("resnet18")
    for _ in range(10):
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(archprof.analyze, ["resnet18", "lenet5", "resnet18", "lenet5"]))
    assert sys.getrecursionlimit() == limit


class ReadsItsValue(nn.Module):
    """A forward meta cannot run (it reads a value): a real CPU trace, from a copy."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)

    def forward(self, x):
        kept = int((self.conv.weight > 0).sum().item())  # 216: every weight
        return self.conv(x).flatten(1)[:, :kept]


def test_fallbacks_in_threads_leave_the_process_and_the_model_as_they_were(switching_often):
    """The CPU fallback copied the model, forked the generators and set warning filters
    outside the lock: beside another thread's trace of the same module it copied meta
    stand-ins ("param must be a Parameter"), and left the caller's generator and filters
    changed."""
    model = ReadsItsValue().eval()
    quick = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.simplefilter("ignore", ArchprofWarning)  # the fallback's, said each time
        filters = list(warnings.filters)
        torch.manual_seed(1234)
        state = torch.get_rng_state()

        def fallback(_):
            return archprof.analyze(model, input_size=(3, 8, 8)).rows()[-1]["output_shape"]

        outcomes = []
        for _ in range(10):
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                futures = [pool.submit(fallback, 0) for _ in range(3)]
                futures.append(pool.submit(lambda: [archprof.analyze(quick, input_size=(3, 8, 8)) for _ in range(5)]))
                outcomes += [future.result() for future in futures[:3]]
                futures[3].result()
        assert set(outcomes) == {"1x216"}
        assert torch.equal(torch.get_rng_state(), state)
        assert warnings.filters == filters
    assert bool((model.conv.weight == 1).all()) and not model.conv.weight.is_meta


def test_another_threads_random_state_is_not_the_trace_s(switching_often):
    """A training trace replaces torch.get_rng_state process-wide to note the states a
    checkpointed forward takes: another thread's call (a fork_rng) was noted too, 5,056 B
    (one CPU generator's state) on the step's memory each time."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), *[nn.Conv2d(8, 8, 3, padding=1) for _ in range(10)])

    def step():
        report = archprof.analyze(model, input_size=(3, 8, 8), training=True, batch=2)
        return report.totals.peak_activation_bytes, report.totals.training_peak_bytes, report.graph.engine.random_states

    alone = step()
    stop = threading.Event()

    def saves_states():
        while not stop.is_set():
            with torch.random.fork_rng():
                time.sleep(0.001)

    other = threading.Thread(target=saves_states)
    other.start()
    try:
        beside = [step() for _ in range(3)]
    finally:
        stop.set()
        other.join()
    assert alone[2] == [] and all(figures == alone for figures in beside)


class Wraps(nn.Module):
    """One level of a deep module tree: its forward calls its one child."""

    def __init__(self, child: nn.Module):
        super().__init__()
        self.child = child

    def forward(self, x):
        return self.child(x)


def test_a_model_nested_as_deep_as_pytorch_runs_it_is_analysed():
    """Each level of modules takes more frames under the trace than in a plain forward:
    modules nested 164 deep (PyTorch's own forward runs 247 at the default limit) failed with
    "maximum recursion depth exceeded". The limit is the process's again afterwards."""
    limit = sys.getrecursionlimit()
    model = nn.Conv2d(3, 8, 1)
    for _ in range(200):
        model = Wraps(model)
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 8, 8, 8)  # the oracle: PyTorch runs it
    report = archprof.analyze(model, input_size=(3, 8, 8))
    assert report.totals.param_count == 8 * 3 + 8
    assert report.totals.macs == 8 * 3 * 8 * 8
    assert sys.getrecursionlimit() == limit


def test_the_highest_recursion_limit_python_takes_is_no_error(monkeypatch):
    """The trace asked for more than the largest limit sys.setrecursionlimit takes (a C int):
    OverflowError, and the request stayed counted, so every later analysis failed too."""
    limit = sys.getrecursionlimit()
    monkeypatch.setattr(sys, "getrecursionlimit", lambda: 2**31 - 1)
    model = nn.Sequential(nn.Conv2d(3, 8, 3))  # a level of modules: room asked for past the highest
    highest = archprof.analyze(model, input_size=(3, 8, 8)).totals.macs
    monkeypatch.undo()
    sys.setrecursionlimit(limit)
    assert highest == archprof.analyze(model, input_size=(3, 8, 8)).totals.macs == 8 * 3 * 9 * 6 * 6
    assert sys.getrecursionlimit() == limit


class ReadsAValue(nn.Module):
    """A forward meta cannot run (it reads a value): traced on the CPU, from a copy."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)

    def forward(self, x):
        return self.conv(x) * float(x.mean().item() > -1e9)


def test_a_deep_model_traced_on_the_cpu_is_copied_with_room_too():
    """The room was made for the meta trace alone: a model nested 200 deep whose forward reads
    a value reached the CPU fallback's copy of it, which raised a bare RecursionError."""
    model = ReadsAValue()
    for _ in range(200):
        model = Wraps(model)
    model(torch.randn(1, 3, 8, 8))  # the oracle: PyTorch runs it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ArchprofWarning)
        report = archprof.analyze(model, input_size=(3, 8, 8))
    assert report.traced_on == "cpu" and report.totals.macs == 8 * 3 * 8 * 8
