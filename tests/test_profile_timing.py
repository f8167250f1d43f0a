"""The profile's timing arithmetic with deterministic clocks and timings: the hooks' work
falls between hooks, never in a caller's own time; a row's share is its time over one
total; the notes count the rows shown, rolled up or not."""

import dataclasses
import time

import pytest
import torch
from torch import nn

import archprof
from archprof.measure import clock
from archprof.measure.ceilings import Ceilings
from archprof.measure.clock import Timing
from archprof.measure.profile import measured_columns, roofline_notes

MS = 1_000_000  # ns


class FakeClock:
    """perf_counter_ns that moves only when work is done (`spend`), a module's or a hook's."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now

    def spend(self, ns: int) -> None:
        self.now += ns


class Work(nn.Module):
    def __init__(self, clock: FakeClock, ns: int) -> None:
        super().__init__()
        self.clock, self.ns = clock, ns

    def forward(self, x):
        self.clock.spend(self.ns)
        return x


class Parent(nn.Module):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock, self.a, self.b = clock, Work(clock, 2 * MS), Work(clock, 3 * MS)

    def forward(self, x):
        x = self.a(x)
        self.clock.spend(MS // 2)  # its own operation, between its children
        return self.b(x)


def test_a_callers_own_time_leaves_out_its_childrens_hooks(monkeypatch):
    """a's work takes 2 ms, b's 3 ms, the parent's own 0.5 ms; each pre-hook's bookkeeping
    (the call's record, made between its first and its last reading) 1 ms. The pass, read
    by hand (ms): parent's hook 0 to 1 | a's hook 1 to 2, a 2 to 4 | parent's own 4 to 4.5 |
    b's hook 4.5 to 5.5, b 5.5 to 8.5. The parent's own time is its 0.5 ms: its span, 1 to
    8.5, less a's and b's with their hooks, 1 to 4 and 4.5 to 8.5 (less only a's and b's
    calls, it held their hooks: 2.5 ms). The three hooks' 3 ms fall between hooks, and the
    rows and that make the pass, 8.5 ms."""
    fake = FakeClock()
    monkeypatch.setattr(time, "perf_counter_ns", fake)

    class SlowRecord(clock._Call):
        def __init__(self, *args) -> None:
            fake.spend(MS)
            super().__init__(*args)

    monkeypatch.setattr(clock, "_Call", SlowRecord)
    model = Parent(fake)
    timed = {"": model, "a": model.a, "b": model.b}
    timing = clock.time_model(model, lambda module: module(torch.zeros(1)), torch.device("cpu"), timed, 0, 1)
    ((hooked, per_layer),) = timing.passes
    assert per_layer == pytest.approx({("", 0): 0.5, ("a", 0): 2.0, ("b", 0): 3.0})
    assert hooked == timing.hooked_ms[0] == pytest.approx(8.5)
    assert hooked - sum(per_layer.values()) == pytest.approx(3.0)


@pytest.fixture(scope="module")
def lenet():
    return archprof.analyze("lenet5")


GIVEN = Ceilings("cpu: x", "float32", 1e9, 1e9, "given", "given")


def test_shares_are_of_one_total_and_follow_the_times(lenet):
    """Three passes of two rows (hooked forward, a, b, unattributed = forward - a - b):
    (10, 1, 2, 7), (100, 5, 4, 91), (100, 6, 50, 44). Medians: a 5, b 4, unattributed 44,
    whose sum 53 every share is of: a 5/53, b 4/53, unattributed 44/53, adding up to 1, a's
    share above b's as its time is. Medians of each pass's shares gave a 0.06 below b's 0.2,
    and with 0.7 unattributed a sum of 0.96."""
    a, b = ("features.0", 0), ("features.1", 0)
    passes = [(10.0, {a: 1.0, b: 2.0}), (100.0, {a: 5.0, b: 4.0}), (100.0, {a: 6.0, b: 50.0})]
    layer_ms = {a: [1.0, 5.0, 6.0], b: [2.0, 4.0, 50.0]}
    timing = Timing([10.0, 100.0, 100.0], [10.0, 100.0, 100.0], layer_ms, passes)
    moved = [0] * len(lenet)
    columns, figures = measured_columns(lenet, moved, timing, GIVEN, {"features.0", "features.1"})
    assert columns["time_ms"][:2] == [5.0, 4.0]
    assert columns["time_share"][:2] == pytest.approx([5 / 53, 4 / 53])
    assert set(columns["time_share"][2:]) == {None}
    assert (figures["unattributed_ms"], figures["unattributed_share"]) == (44.0, pytest.approx(44 / 53))
    # 53 ms against a hooked median of 100 ms: 47% less, said in a note.
    from archprof.measure.profile import sum_note

    (note,) = sum_note(figures)
    assert "add up to 53.000 ms, 47% less than the median forward with hooks (100.000 ms)" in note


def test_summed_times_carry_no_binary_noise(lenet):
    """0.1 + 0.2 is 0.30000000000000004 in floats: the sum of the rows' times is 0.3 ms, as
    a row's time is rounded (to 0.1 ns), in the whole-model figures and in a rolled-up row."""
    assert 0.1 + 0.2 == 0.30000000000000004
    a, b = ("features.0", 0), ("features.1", 0)
    timing = Timing([0.5], [0.5], {a: [0.1], b: [0.2]}, [(0.5, {a: 0.1, b: 0.2})])
    _, figures = measured_columns(lenet, [0] * len(lenet), timing, GIVEN, {"features.0", "features.1"})
    assert repr(figures["layer_sum_ms"]) == "0.3"
    profiled = archprof.profile("lenet5", device="cpu", warmup=0, repeat=1, peak_flops="1T", bandwidth="1TB/s")
    times = [0.1, 0.2] + [0.0] * (len(profiled) - 2)  # features.0 and .1, then nothing: 'features' takes 0.3
    report = dataclasses.replace(profiled, columns={**profiled.columns, "time_ms": times})
    rolled = report.rollup(1)
    features = rolled.columns["layer"].index("features")
    assert repr(rolled.columns["time_ms"][features]) == "0.3"
    measured = report.measured
    assert rolled.columns["time_share"][features] == pytest.approx(
        0.3 / (measured.layer_sum_ms + measured.unattributed_ms)
    )


@pytest.fixture(scope="module")
def above_the_roof():
    """lenet5 against a roof of 1 KFLOP/s and 1 KB/s: every row with work (flops +
    elementwise_flops) runs above it unless it takes seconds; flatten has none."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return archprof.profile("lenet5", device="cpu", warmup=1, repeat=3, peak_flops="1K", bandwidth="1KB/s")
    finally:
        torch.set_num_threads(threads)


def test_the_notes_count_the_rows_shown(above_the_roof):
    report = above_the_roof
    working = sum(1 for f, e in zip(report.columns["flops"], report.columns["elementwise_flops"], strict=True) if f + e)
    assert working == 11  # lenet5's 12 leaves less flatten

    def above_peak(measured) -> list[str]:
        return [note for note in measured.notes if "above the peak FLOP/s" in note]

    assert above_peak(report.measured)[0].startswith("11 rows ran above the peak FLOP/s")
    rolled = report.rollup(1)  # features, flatten, classifier
    (note,) = above_peak(rolled.measured)
    assert note.startswith("2 rows ran above the peak FLOP/s")
    assert sum("above the peak" in note for note in rolled.measured.notes) == 1  # the 11 rows' note is gone
    assert note in " ".join(rolled.to_markdown().split())  # the Markdown (and HTML) show these notes
    (whole,) = above_peak(report.rollup(0).measured)
    assert whole.startswith("1 row ran above the peak FLOP/s")
    # The rolled report's shares and its unattributed share still make the whole.
    shares = [share for share in rolled.columns["time_share"] if share is not None]
    assert sum(shares) + rolled.measured.unattributed_share == pytest.approx(1.0)


def test_one_memory_bound_row_is_one_row():
    """A row at 0.5 GFLOP/s with 0.1 FLOPs per byte, against 1 GFLOP/s and 1 GB/s: its
    roof is 0.1 GFLOP/s (memory-bound), below the peak. Work 5e5 FLOPs in 1 ms, 5e6 bytes."""
    columns = {
        "achieved_flops_per_s": [5e8],
        "arithmetic_intensity": [0.1],
        "time_ms": [1.0],
        "roofline_time_ms": [5.0],
        "bound": ["memory"],
    }
    (note,) = roofline_notes(columns, GIVEN)
    assert note.startswith("1 memory-bound row ran faster than bytes / bandwidth allows")
