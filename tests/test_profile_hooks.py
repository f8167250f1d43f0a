"""`archprof profile` around the model's own hooks and exceptions, the shape check's counts,
and the rates of a call whose own operations fall in two rows.

Sleeps are the timing oracle: a call that sleeps S ms takes at least S ms, and rarely 10 ms
more even on a loaded machine. FLOPs and counts are worked out by hand from the models."""

import contextlib
import time

import pytest
import torch
from torch import nn

import archprof
from archprof.measure.ceilings import Ceilings
from archprof.measure.clock import Timing
from archprof.measure.profile import measured_columns, roofline_notes

FAST = {"device": "cpu", "warmup": 1, "repeat": 3, "peak_flops": "100G", "bandwidth": "10GB/s"}
NAP_MS = 30


@pytest.fixture(autouse=True)
def _one_thread_and_a_private_cache(monkeypatch, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("ARCHPROF_CACHE_DIR", str(tmp_path / "cache"))
    yield
    torch.set_num_threads(threads)


def nap(x: torch.Tensor) -> None:
    """NAP_MS of sleep on a real tensor; none in the meta trace, which would only be slower."""
    if x.device.type != "meta":
        time.sleep(NAP_MS / 1e3)


def row_times(report) -> dict[str, float | None]:
    return {row["layer"]: row["time_ms"] for row in report.rows() if row["call"] >= 0}


def check(report, name: str):
    return next(c for c in report.measured.checks if c.name == name)


# --- a call that raises, the model catching it ---------------------------------------------


class NapsThenRaises(nn.Module):
    def forward(self, x):
        nap(x)
        raise ValueError("wants another input")


class CatchesARaise(nn.Module):
    """Tries an optional module and carries on without it when it raises."""

    def __init__(self):
        super().__init__()
        self.optional = NapsThenRaises()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        with contextlib.suppress(ValueError):
            x = self.optional(x)
        return self.fc(x)


@pytest.fixture(scope="module")
def caught_raise():
    return archprof.profile(CatchesARaise(), input_size=(8,), **FAST)


def test_a_call_that_raises_and_is_caught_is_timed_up_to_its_raise(caught_raise):
    """torch skips a module's forward hooks when its forward raises: the call stayed under
    way, fc's post-hook closed it, and the profile failed. The raising call's nap is its own
    time, neither fc's nor between hooks."""
    times = row_times(caught_raise)
    assert times["optional"] >= NAP_MS - 5
    assert times["fc"] < NAP_MS - 5
    assert caught_raise.measured.unattributed_ms < NAP_MS - 5


def test_a_caught_raise_leaves_no_flops_with_the_module_that_raised(caught_raise):
    """FlopCounterMode's tracker never saw the raising module leave: fc's product, 2 x 8 x 4
    = 64 FLOPs at batch 1, counted in it too."""
    flops = check(caught_raise, "FLOPs")
    assert flops.status == "ok", flops.mismatches
    assert flops.summary.startswith("64 FLOPs")


class RaisesEveryOtherCall(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls % 2:
            raise ValueError("not this time")
        return x * 2


class RetriesALayer(nn.Module):
    """Calls a layer that raises, then again: its second call returns x * 2, 1x8."""

    def __init__(self):
        super().__init__()
        self.flaky = RaisesEveryOtherCall()
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        with contextlib.suppress(ValueError):
            self.flaky(x)
        return self.fc(self.flaky(x))


def test_a_call_that_raised_keeps_the_numbers_of_the_calls_after_it():
    """The shape check's hook missed the raising first call: the second was taken for the
    first, and the second "did not run"."""
    shapes = check(archprof.profile(RetriesALayer(), input_size=(8,), **FAST), "output shapes")
    assert not [line for line in shapes.mismatches if "did not run" in line or line.startswith("flaky (call 2)")]


# --- the model's own hooks -----------------------------------------------------------------


def napping_hook(module, args, *output):
    nap(args[0])


class NappingHooks(nn.Module):
    """A pre-hook of its own on one layer, a forward hook on the next, each NAP_MS."""

    def __init__(self):
        super().__init__()
        self.before = nn.ReLU()
        self.after = nn.ReLU()
        self.before.register_forward_pre_hook(napping_hook)
        self.after.register_forward_hook(napping_hook)

    def forward(self, x):
        return self.after(self.before(x))


def test_the_models_own_pre_hooks_and_forward_hooks_are_timed_in_their_rows():
    """The trace counts what a module's hooks run in its row: its time takes them in too, a
    pre-hook's as a forward hook's (a pre-hook's nap fell between hooks)."""
    report = archprof.profile(NappingHooks(), input_size=(8,), **FAST)
    times = row_times(report)
    assert times["before"] >= NAP_MS - 5
    assert times["after"] >= NAP_MS - 5
    assert report.measured.unattributed_ms < NAP_MS - 5


class ProjectsAfter(nn.Module):
    """A forward hook of the model's own that multiplies the layer's output by a matrix."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 64)
        self.head = nn.Linear(64, 8)
        self.register_buffer("projection", torch.eye(64))
        self.fc.register_forward_hook(lambda module, args, output: output @ self.projection)

    def forward(self, x):
        return self.head(self.fc(x))


def test_flops_of_a_models_forward_hook_are_its_modules_in_the_cross_check():
    """fc's own product and its hook's, each 2 x 64 x 64 = 8,192 FLOPs, are fc's, as the
    analysis counts them; torch's tracker left fc before its hook ran. head: 2 x 64 x 8."""
    report = archprof.profile(ProjectsAfter(), input_size=(64,), **FAST)
    flops = check(report, "FLOPs")
    assert flops.status == "ok", flops.mismatches
    assert flops.summary.startswith(f"{2 * 8_192 + 2 * 64 * 8:,} FLOPs")


# --- the shape check's counts --------------------------------------------------------------


class WiderOnARealRun(nn.Module):
    """Its one leaf call matches; its own concatenation doubles the output on a real run."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = self.fc(x)
        return y if x.is_meta else torch.cat([y, y], 1)


class OtherBranchOnARealRun(nn.Module):
    """fc on meta, fc2 on a real run: the one predicted call does not run, an unseen one
    does, and the output is 6 wide instead of 4."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)
        self.fc2 = nn.Linear(8, 6)

    def forward(self, x):
        return self.fc(x) if x.is_meta else self.fc2(x)


@pytest.mark.parametrize(
    ("model", "summary"),
    [
        (WiderOnARealRun, "the model's output differs"),
        (
            OtherBranchOnARealRun,
            "1 of 1 leaf calls differ; 1 leaf call ran that the analysis did not see; the model's output differs",
        ),
    ],
)
def test_the_shape_summary_counts_each_kind_of_mismatch_apart(model, summary):
    """Every mismatch line was counted as a differing leaf call: "1 of 1 leaf calls differ"
    where the one leaf call matched, "3 of 1" where one of one did not run."""
    shapes = check(archprof.profile(model(), input_size=(8,), **FAST), "output shapes")
    assert shapes.status == "mismatch"
    assert shapes.summary == summary


# --- a call whose own operations fall in two rows ------------------------------------------


class AddsAroundAChild(nn.Module):
    """x + 1 before its child, x * 2 after it: 4 FLOPs each at (1, 4), two rows of one call."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        return self.linear(x + 1) * 2


@pytest.fixture(scope="module")
def split_call():
    """The rows ('0' add, '0.linear', '0' mul), 1 ms on the call of '0', and bytes moved
    given by hand: 100 B for the add, 300 B for the mul."""
    report = archprof.analyze(nn.Sequential(AddsAroundAChild()), input_size=(4,))
    assert report.columns["layer"] == ["0", "0.linear", "0"]
    timing = Timing([2.0], [2.0], {("0", 0): [1.0]}, [(2.0, {("0", 0): 1.0})])
    return report, timing, [100, 0, 300]


def test_a_split_calls_rates_are_of_all_its_rows_on_its_first(split_call):
    """The call's 8 FLOPs in its 1 ms: 8,000 FLOP/s, at 8 / 400 FLOPs per byte, on its first
    row (the table's line for it); the first row's 4 FLOPs alone gave 4,000 FLOP/s at 0.04."""
    report, timing, moved = split_call
    ceilings = Ceilings("cpu: x", "float32", 1e12, 1e9, "given", "given")
    columns, _ = measured_columns(report, moved, timing, ceilings, {"0", "0.linear"})
    assert columns["time_ms"] == [1.0, None, None]
    assert columns["achieved_flops_per_s"][0] == pytest.approx(8 / 1e-3)
    assert columns["arithmetic_intensity"][0] == pytest.approx(8 / 400)
    assert columns["bound"][0] == "memory"
    assert (columns["achieved_flops_per_s"][2], columns["arithmetic_intensity"][2], columns["bound"][2]) == (
        None,
        None,
        "",
    )


def test_a_split_call_above_the_roof_is_counted_in_the_notes(split_call):
    """At 250 kB/s the call's roof is 0.02 x 250,000 = 5,000 FLOP/s, below its 8,000: above
    the roof, and one row says so. Its first row's 4,000 FLOP/s against that row's roof,
    0.04 x 250,000 = 10,000, was not: the table's ▲ had no note."""
    report, timing, moved = split_call
    ceilings = Ceilings("cpu: x", "float32", 1e12, 250e3, "given", "given")
    columns, _ = measured_columns(report, moved, timing, ceilings, {"0", "0.linear"})
    (note,) = roofline_notes(columns, ceilings)
    assert note.startswith("1 memory-bound row ran faster than bytes / bandwidth allows")


# --- a TorchScript submodule of an eager model -----------------------------------------------


def test_a_scripted_submodule_is_timed_as_its_callers_own_work():
    """torch refuses Python hooks on a ScriptModule, which made `profile` of an eager model
    holding one fail ("register_forward_pre_hook is not supported on ScriptModules"). Its
    work is timed where hooks can see it: as its caller's own, here the model's, between
    hooks; the rows around it are timed, and the cross-check still holds."""
    scripted = torch.jit.script(nn.Sequential(nn.ReLU(), nn.Conv2d(4, 4, 1)))
    with pytest.raises(RuntimeError, match="not supported on ScriptModules"):
        scripted.register_forward_pre_hook(lambda module, args: None)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), scripted, nn.Flatten(), nn.Linear(144, 2))
    report = archprof.profile(model, input_size=(3, 8, 8), **FAST)
    times = row_times(report)
    assert times["0"] is not None and times["3"] is not None
    assert all(time is None for layer, time in times.items() if layer.startswith("1"))
    assert all(c.ok for c in report.measured.checks)
