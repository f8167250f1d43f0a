"""Profiling: the measured columns and their arithmetic, bytes moved by hand, the
cross-check on zoo models and on planted mismatches, the ceilings cache, and the
`profile` command. CPU only (the CUDA test skips without a GPU).

Timing runs single-threaded here: on a shared two-core CI machine, a parallel CPU kernel
waits for a descheduled thread (tens of ms for LeNet's 0.2 ms), which is noise, not what
these tests check."""

import csv
import dataclasses
import io
import json
import math
import re
import statistics
import sys
import time

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import archprof
from archprof import measure
from archprof.cli import app
from archprof.errors import ArchprofError
from archprof.measure import ceilings, clock, crosscheck, device
from archprof.measure.profile import timing_notes
from archprof.operators import OPERATORS, Cost
from archprof.render import profile_table, to_text
from archprof.render.base import Layout
from archprof.report import layer_label
from archprof.report.columns import MEASURED_COLUMNS
from tests.markdown_tables import first_table
from tests.models import Residual

runner = CliRunner()
# Hand-given ceilings: no micro-benchmark in the tests that do not test it.
CEILINGS = {"peak_flops": "100G", "bandwidth": "10GB/s"}
FAST = {"device": "cpu", "warmup": 1, "repeat": 3, **CEILINGS}


@pytest.fixture(autouse=True)
def _one_thread_and_a_private_cache(monkeypatch, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("ARCHPROF_CACHE_DIR", str(tmp_path / "cache"))
    yield
    torch.set_num_threads(threads)


def one_thread_lenet_profile(repeat: int):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return archprof.profile("lenet5", device="cpu", warmup=1, repeat=repeat, **CEILINGS)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lenet():
    return one_thread_lenet_profile(repeat=5)


# --- the measured columns ------------------------------------------------------------------


def test_every_measured_column_is_there_typed_and_plausible(lenet):
    frame = lenet.layers
    for column in MEASURED_COLUMNS:
        assert column.name in frame.columns
        assert str(frame[column.name].dtype) == column.dtype
    assert len(frame) == 12  # lenet5's leaf modules, each a row and each timed
    assert (frame["time_ms"] > 0).all()
    assert ((frame["time_share"] > 0) & (frame["time_share"] <= 1)).all()
    assert (frame["bytes_moved"] >= 0).all()
    assert set(frame["bound"]) <= {"compute", "memory", ""}
    assert (frame["roofline_time_ms"] >= 0).all()


def test_a_median_of_two_clock_readings_has_no_binary_noise(lenet):
    """Whole nanoseconds from the CPU's clock (175,205 and 175,206 ns): their median is
    0.1752055 ms, not 0.17520550000000001 as a CSV wrote it."""
    from archprof.measure.clock import Timing
    from archprof.measure.profile import measured_columns

    key = (lenet.columns["layer"][0], lenet.columns["call"][0])
    readings = [175_205 / 1e6, 175_206 / 1e6]
    assert repr(statistics.median(readings)) == "0.17520550000000001"  # the noise, as the clock's floats give it
    timing = Timing([1.0], [1.0], {key: readings}, [(1.0, dict.fromkeys([key], 0.2))])
    moved = [0] * len(lenet.columns["layer"])
    columns, _ = measured_columns(lenet, moved, timing, lenet.measured.ceilings, {key[0]})
    assert repr(columns["time_ms"][0]) == "0.1752055"


def test_shares_and_the_unattributed_remainder_make_the_whole():
    # Each share is of the rows' median times and the median remainder summed: the parts
    # make the whole, to rounding, however busy the machine.
    report = one_thread_lenet_profile(repeat=21)
    measured = report.measured
    total = report.layers["time_share"].sum() + measured.unattributed_share
    assert total == pytest.approx(1.0, abs=1e-9)
    assert 0 <= measured.unattributed_share < 1
    assert measured.layer_sum_ms == pytest.approx(report.layers["time_ms"].sum())


def test_derived_columns_are_computed_as_documented(lenet):
    ceilings = lenet.measured.ceilings
    assert (ceilings.peak_flops_per_s, ceilings.bandwidth_bytes_per_s) == (100e9, 10e9)
    assert ceilings.flops_source == ceilings.bandwidth_source == "given"
    for row in lenet.rows():
        work = row["flops"] + row["elementwise_flops"]
        assert row["achieved_flops_per_s"] == work / (row["time_ms"] / 1e3)
        assert row["roofline_time_ms"] == max(work / 100e9, row["bytes_moved"] / 10e9) * 1e3
        if row["bytes_moved"]:
            assert row["arithmetic_intensity"] == work / row["bytes_moved"]
            assert row["bound"] == ("compute" if work / row["bytes_moved"] >= 10.0 else "memory")
        else:
            assert row["arithmetic_intensity"] is None and row["bound"] == ""


def test_whole_model_figures(lenet):
    m = lenet.measured
    assert len(m.latencies_ms) == m.repeat == 5 and m.warmup == 1
    assert min(m.latencies_ms) <= m.median_ms <= m.p90_ms <= max(m.latencies_ms)
    assert m.throughput_per_s == 1 / (m.median_ms / 1e3)
    work = lenet.totals.flops + lenet.totals.elementwise_flops
    assert m.work_flops == work and m.achieved_flops_per_s == work / (m.median_ms / 1e3)
    assert m.hooked_median_ms > 0 and m.roofline_ms == pytest.approx(lenet.layers["roofline_time_ms"].sum())
    assert m.bytes_moved == lenet.layers["bytes_moved"].sum()
    assert m.predicted_peak_memory_bytes == lenet.totals.peak_memory_bytes
    # Measured from the CPU allocator's own events: at least what the model and input hold.
    held = lenet.totals.param_bytes + lenet.totals.buffer_bytes + 32 * 32 * 4
    assert m.measured_peak_memory_bytes > held and "CPU allocator" in m.memory_note
    (memory,) = [check for check in m.checks if check.name == "peak memory"]
    assert memory.status == "ok", memory.summary


def test_the_cpu_peak_is_the_highest_running_sum_of_the_allocators_events():
    """Known allocations as the oracle: 4,000 and 2,000 bytes held together; then 4,000
    freed before 2,000 are taken (the peak stays 4,000); nothing held before counts."""
    from archprof.measure.peak_memory import cpu_allocation_peaks

    held_before = torch.empty(10_000)

    def together():
        a, b = torch.empty(1000), torch.empty(500)
        return a, b

    def one_after_the_other():
        a = torch.empty(1000)
        del a
        return torch.empty(500)

    assert cpu_allocation_peaks(together) == (6000, 6000)  # freed outside the op that made them: no workspace
    assert cpu_allocation_peaks(one_after_the_other) == (4000, 4000)
    assert held_before.numel() == 10_000


def test_a_block_made_before_the_recording_does_not_lower_the_peak_when_freed():
    """An earlier recording saw the 4 MB block made, so the profiler reports its free in a
    later one, as a training step's old gradients freed by zero_grad are: left out, the
    later step's peak is the 1 MB it made, not what a -4 MB start would leave of it."""
    from archprof.measure.peak_memory import cpu_allocation_peaks

    kept = []
    cpu_allocation_peaks(lambda: kept.append(torch.empty(1_000_000)))

    def step():
        kept.clear()
        torch.empty(250_000)

    assert cpu_allocation_peaks(step) == (1_000_000, 1_000_000)


def test_measuring_the_cpu_peak_writes_nothing_to_stderr(capfd):
    """The profiler's native code logs its start and stop on file descriptor 2."""
    from archprof.measure.peak_memory import cpu_allocation_peaks

    cpu_allocation_peaks(lambda: torch.empty(10))
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(("name", "batch"), [("resnet18", 1), ("mobilenet_v2", 1), ("lenet5", 32)])
def test_the_predicted_peak_agrees_with_the_cpu_allocator(name, batch):
    """The profile's cross-check on the CPU: measured / predicted inside its bounds. The
    operators' workspace is left out, as the analysis has none: lenet5 at batch 32 reads
    1.09x without it, 1.78x with oneDNN's output-sized convolution buffers."""
    report = archprof.profile(name, batch=batch, device="cpu", warmup=1, repeat=1, **CEILINGS)
    measured, predicted = report.measured.measured_peak_memory_bytes, report.totals.peak_memory_bytes
    low, high = crosscheck.MEMORY_RATIO_BOUNDS
    assert low <= measured / predicted <= high, (measured, predicted)


def test_unreliable_timings_are_flagged():
    steady = clock.Timing([10.0] * 5, [11.0] * 5, {}, [])
    assert timing_notes(steady) == ()
    slowed = clock.Timing([30.0] * 5, [11.0] * 5, {}, [])
    assert "slower than with them" in timing_notes(slowed)[0]
    noisy = clock.Timing([10.0, 10.0, 10.0, 10.0, 40.0], [11.0] * 5, {}, [])
    assert "p90 is 4.0x the median" in timing_notes(noisy)[0]


def test_the_nearest_rank_percentile():
    assert clock.percentile([5, 1, 4, 2, 3], 0.9) == 5
    assert clock.percentile(list(range(1, 21)), 0.9) == 18
    assert clock.percentile([7.0], 0.9) == 7.0


def test_default_passes_are_the_documented_ones():
    import inspect

    parameters = inspect.signature(archprof.profile).parameters
    assert parameters["warmup"].default == measure.DEFAULT_WARMUP
    assert parameters["repeat"].default == measure.DEFAULT_REPEAT


# --- attribution: each call's own time, nested calls counted once --------------------------
# Sleeps are the oracle: a call that sleeps S ms takes at least S ms, and rarely 10 ms more
# even on a loaded machine, so the bounds below tell own time from time with a child's in it.


class Sleeps(nn.Module):
    def __init__(self, ms):
        super().__init__()
        self.seconds = ms / 1e3

    def forward(self, x):
        time.sleep(self.seconds)
        return x.relu()


class BatchNormAct(nn.BatchNorm2d):
    """timm's BatchNormAct2d: a batch norm of its own, and an activation child."""

    def __init__(self, channels, act_ms):
        super().__init__(channels)
        self.act = Sleeps(act_ms)

    def forward(self, x):
        time.sleep(0.020)
        return self.act(super().forward(x))


class NormActThenAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.utils.parametrizations.weight_norm(nn.Conv2d(3, 8, 3, padding=1))
        self.bn = BatchNormAct(8, act_ms=60)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        x = self.bn(self.conv(x))
        tokens = x.flatten(2).transpose(1, 2)
        return self.attn(tokens, tokens, tokens)[0]


def test_a_module_with_operators_of_its_own_and_children_is_timed_without_them():
    report = archprof.profile(NormActThenAttention(), input_size=(3, 8, 8), **FAST)
    times = {row["layer"]: row["time_ms"] for row in report.rows() if row["call"] >= 0}
    assert 15 <= times["bn"] < 50  # its own 20 ms, not its child's 60
    assert times["bn.act"] >= 55
    # MultiheadAttention's own operators (its out_proj is never called) and a weight-normed
    # convolution (whose weight a parametrization child computes) have times too.
    assert times["attn"] > 0 and times["conv"] > 0
    assert 0 <= report.measured.unattributed_ms < 15  # the 20 ms are bn's, not between hooks


class CallsAnother(nn.Module):
    """A leaf (no children) whose forward calls a module of the model held in a list."""

    def __init__(self, inner):
        super().__init__()
        self._inner = [inner]

    def forward(self, x):
        time.sleep(0.020)
        return self._inner[0](x) * 2


class LeafCallsLeaf(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = Sleeps(60)
        self.wrap = CallsAnother(self.inner)

    def forward(self, x):
        return self.wrap(x)


def test_a_leaf_calling_another_module_is_timed_without_it_and_the_rows_add_up():
    report = archprof.profile(LeafCallsLeaf(), input_size=(4,), **FAST)
    times = {row["layer"]: row["time_ms"] for row in report.rows()}
    assert 15 <= times["wrap"] < 50 and times["inner"] >= 55
    measured = report.measured
    assert measured.unattributed_ms >= 0
    assert report.layers["time_share"].sum() <= 1.05  # 1.8 when the inner call counted twice
    assert measured.layer_sum_ms <= measured.hooked_median_ms * 1.05


class OwnOpsAroundAChild(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        time.sleep(0.020)
        x = self.linear(x * 2)
        return x + 1


def test_a_call_whose_own_operators_fall_in_two_rows_is_timed_once_on_the_first():
    model = nn.Sequential(OwnOpsAroundAChild())
    report = archprof.profile(model, input_size=(4,), **FAST)
    own = [row["time_ms"] for row in report.rows() if row["layer"] == "0"]
    assert len(own) == 2  # x * 2 before the child, x + 1 after it
    assert own[0] >= 15 and own[1] is None


class SharedNap(nn.Module):
    """A layer and a sleep held twice: as `fc` and `nap`, called by the model, and as
    `stage.0` and `stage.1`, called by the stage; torch names each by its first name to hooks
    and by its last to FlopCounterMode's module tracker."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.nap = Sleeps(20)
        self.stage = nn.Sequential(self.fc, self.nap, Sleeps(40))

    def forward(self, x):
        return self.stage(self.nap(self.fc(x)))


def test_a_module_held_under_two_names_is_timed_and_checked_under_the_name_each_call_ran_by():
    """Each call's time on its row, named as the analysis names it ("stage.1" when the stage
    called the sleep): the rows of the second names had no time, and the cross-check said the
    leaf calls the analysis named so had not run, and the shared layer's FLOPs were all the
    last name's. The oracle: the sleeps, and FlopCounterMode per module."""
    report = archprof.profile(SharedNap(), input_size=(4,), **FAST)
    times = {row["layer"]: row["time_ms"] for row in report.rows()}
    assert list(times) == ["fc", "nap", "stage.0", "stage.1", "stage.2"]
    assert times["fc"] is not None and times["stage.0"] is not None
    assert 15 <= times["nap"] < 35 and 15 <= times["stage.1"] < 35 and times["stage.2"] >= 35
    checks = {check.name: check for check in report.measured.checks}
    assert checks["output shapes"].status == "ok", checks["output shapes"].mismatches
    assert checks["FLOPs"].status == "ok", checks["FLOPs"].mismatches


class WrapsASharedLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(8, 8)
        self.wrap = nn.Sequential(self.linear)  # its one child listed under `linear` first

    def forward(self, x):
        return self.wrap(x)


def test_a_container_whose_children_are_held_under_other_names_is_no_leaf_of_the_check():
    """Taken for a leaf (no child listed under it by `named_modules()`), it was hooked, and
    the check said it ran though the analysis had not seen it: its rows are its child's."""
    report = archprof.profile(WrapsASharedLayer(), input_size=(8,), **FAST)
    assert [row["layer"] for row in report.rows()] == ["wrap.0"]
    assert all(check.status == "ok" for check in report.measured.checks), report.measured.checks


# --- bytes moved, by hand ------------------------------------------------------------------


def test_bytes_moved_of_a_convolution_is_input_weights_and_output():
    report = archprof.profile(nn.Sequential(nn.Conv2d(3, 8, 3)), input_size=(3, 16, 16), **FAST)
    (row,) = report.rows()
    assert row["bytes_moved"] == (3 * 16 * 16 + 8 * 3 * 3 * 3 + 8 + 8 * 14 * 14) * 4


def test_bytes_moved_counts_reads_from_outside_and_in_place_writes():
    report = archprof.profile(Residual(), input_size=(4, 8, 8), **FAST)
    rows = {(r["layer"], r["call"]): r for r in report.rows()}
    plane = 4 * 8 * 8 * 4  # one 4x8x8 float32 tensor
    assert rows[("relu", 0)]["bytes_moved"] == 2 * plane  # in place: read once, written once
    assert rows[("bn", 0)]["bytes_moved"] == 2 * plane + 4 * 4 * 4  # + weight, bias, mean, var
    # out += x in the container's own forward: reads out and x, writes out.
    assert rows[("", 0)]["bytes_moved"] == 3 * plane
    assert rows[("", 0)]["time_ms"] is None  # not a leaf call: in the unattributed remainder


# --- the cross-check -----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "size"), [("lenet5", None), ("resnet18", (3, 32, 32)), ("mobilenet_v2", (3, 64, 64))])
def test_the_cross_check_passes_on_zoo_models(name, size):
    report = archprof.profile(name, input_size=size, device="cpu", warmup=0, repeat=1, **CEILINGS)
    checks = {check.name: check for check in report.measured.checks}
    assert report.measured.passed, report.measured.mismatches
    assert checks["output shapes"].status == "ok" and checks["FLOPs"].status == "ok"
    assert checks["peak memory"].status == "ok"  # the CPU allocator's events
    assert f"{report.totals.flops:,} FLOPs" in checks["FLOPs"].summary


class SneakyMatmul(nn.Module):
    """A leaf whose real forward does an extra matrix product the meta trace never sees."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 8))

    def forward(self, x):
        y = x @ self.weight
        if x.device.type != "meta":
            y = y + 0 * (x @ self.weight)
        return y


class SneakyShape(nn.Module):
    def forward(self, x):
        return x[:, :4] if x.device.type != "meta" else x


def test_a_planted_flop_mismatch_is_reported_at_its_layer():
    model = nn.Sequential(nn.Linear(8, 8), SneakyMatmul(), nn.ReLU())
    report = archprof.profile(model, input_size=(8,), **FAST)
    flops = next(c for c in report.measured.checks if c.name == "FLOPs")
    assert not report.measured.passed and flops.status == "mismatch"
    assert "1: analytic 128, FlopCounterMode 256" in flops.mismatches
    assert "total: analytic 256, FlopCounterMode 384" in flops.mismatches


class Attends(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, 2, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x)[0]


class Recurrent(nn.Module):
    def __init__(self, inputs, hidden):
        super().__init__()
        self.lstm = nn.LSTM(inputs, hidden, batch_first=True)

    def forward(self, x):
        return self.lstm(x)[0]


def _flops_check(report):
    return next(c for c in report.measured.checks if c.name == "FLOPs")


def test_flops_of_an_operator_flopcountermode_has_no_formula_for_are_named_not_a_mismatch():
    """oneDNN's LSTM layer: FlopCounterMode counts 0, the analysis the hand formula."""
    steps, batch, inputs, hidden = 10, 3, 32, 48
    report = archprof.profile(Recurrent(inputs, hidden), input_size=(steps, inputs), batch=batch, **FAST)
    by_hand = 2 * steps * batch * 4 * (inputs * hidden + hidden * hidden)
    assert report.totals.flops == by_hand
    flops = _flops_check(report)
    assert flops.status == "ok", flops.mismatches
    assert f"{by_hand:,} FLOPs of aten.mkldnn_rnn_layer (in lstm)" in flops.summary


def test_attention_in_eval_is_compared_through_the_operators_the_analysis_counted():
    """MultiheadAttention's inference fast path is one fused operator FlopCounterMode cannot
    count; the cross-check runs the operators the analysis counted, and they agree with the
    hand formula: the in-projection, two products of the tokens, the out-projection."""
    tokens, width = 5, 8
    report = archprof.profile(Attends(width), input_size=(tokens, width), **FAST)
    by_hand = 2 * tokens * width * 3 * width + 2 * 2 * tokens * tokens * width + 2 * tokens * width * width
    assert report.totals.flops == by_hand
    flops = _flops_check(report)
    assert flops.status == "ok" and "not compared" not in flops.summary, flops


class FlashAttends(nn.Module):
    """Attention through F.scaled_dot_product_attention, as timm's ViTs call it: PyTorch's
    CPU flash attention kernel."""

    def __init__(self, heads):
        super().__init__()
        self.heads = heads

    def forward(self, x):
        batch, tokens, width = x.shape
        q = x.view(batch, tokens, self.heads, width // self.heads).transpose(1, 2)
        return nn.functional.scaled_dot_product_attention(q, q, q).transpose(1, 2).reshape(batch, tokens, width)


def test_the_cpus_flash_attention_is_compared_as_pytorch_counts_fused_attention():
    """FlopCounterMode has no formula for the CPU's flash attention, but one for fused
    attention on a GPU (`sdpa_flop`), which the check lends it: every ViT's attention was
    left out of the comparison, an error in its formula unseen."""
    tokens, width, heads = 6, 8, 2
    report = archprof.profile(FlashAttends(heads), input_size=(tokens, width), batch=2, **FAST)
    by_hand = 2 * 2 * 2 * tokens * tokens * width
    assert report.totals.flops == by_hand
    flops = _flops_check(report)
    assert flops.status == "ok" and "not compared" not in flops.summary, flops


def test_a_planted_attention_formula_error_is_reported(monkeypatch):
    flash = OPERATORS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu]
    real = flash.cost

    def doubled(*args, **kwargs):
        cost = real(*args, **kwargs)
        return Cost(2 * cost.macs, cost.elementwise_flops)

    monkeypatch.setattr(flash, "cost", doubled)
    flops = _flops_check(archprof.profile(FlashAttends(2), input_size=(6, 8), **FAST))
    assert flops.status == "mismatch" and "total: analytic 2,304, FlopCounterMode 1,152" in flops.mismatches


def test_a_real_flop_mismatch_beside_an_uncountable_operator_is_still_reported():
    model = nn.Sequential(Recurrent(8, 8), SneakyMatmul())
    flops = _flops_check(archprof.profile(model, input_size=(4, 8), **FAST))
    assert flops.status == "mismatch" and "aten.mkldnn_rnn_layer" in flops.summary
    assert "1: analytic 512, FlopCounterMode 1,024" in flops.mismatches


class ClassToken(nn.Module):
    """A parameter's view handed to a child module, as timm's CaiT hands its class token to
    each class-attention block: made under no_grad, the view requires grad but has no grad_fn."""

    def __init__(self, width):
        super().__init__()
        self.token = nn.Parameter(torch.zeros(1, 1, width))
        self.block = nn.Linear(width, width)

    def forward(self, x):
        token = self.block(self.token.expand(x.shape[0], -1, -1))
        return torch.cat([token, x], dim=1)


def test_a_view_of_a_parameter_passed_to_a_module_is_cross_checked():
    """FlopCounterMode's module tracker hooks the backward of every argument that requires
    grad, and fails on such a view ("Expected gradient function to be set"): the real
    forward failed."""
    report = archprof.profile(ClassToken(8), input_size=(3, 8), batch=2, **FAST)
    assert report.measured.passed, report.measured.mismatches
    assert f"{2 * 2 * 8 * 8:,} FLOPs" in _flops_check(report).summary


class CachedScale(nn.Module):
    """Keeps a tensor made from its parameter between calls in eval, as timm's LeViT keeps
    its attention biases (`attention_bias_cache`): the first forward makes it, later ones
    read it."""

    def __init__(self, width):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(width, width))
        self.cache = {}

    def forward(self, x):
        if self.training:
            return x * self.weight.exp()
        if x.device.type not in self.cache:
            self.cache[x.device.type] = self.weight.exp()
        return x * self.cache[x.device.type]


def test_the_measured_peak_is_the_first_forwards_as_the_analysis_traces_it():
    """The analysis traces a first forward, which makes the cache; the timed passes before
    the measurement had made it, held outside the parameters and inputs counted: it read
    the cache (a quarter of the prediction) short."""
    width = 256
    report = archprof.profile(CachedScale(width), input_size=(width,), batch=width, **FAST)
    assert report.measured.passed, report.measured.mismatches
    assert report.measured.measured_peak_memory_bytes == report.totals.peak_memory_bytes == 4 * width * width * 4


def test_a_planted_formula_error_is_reported(monkeypatch):
    real = OPERATORS[torch.ops.aten.convolution].cost

    def doubled(*args, **kwargs):
        cost = real(*args, **kwargs)
        return Cost(2 * cost.macs, cost.elementwise_flops)

    monkeypatch.setattr(OPERATORS[torch.ops.aten.convolution], "cost", doubled)
    report = archprof.profile("lenet5", **FAST)
    lines = report.measured.mismatches
    assert "FLOPs: features.0: analytic 470,400, FlopCounterMode 235,200" in lines
    assert any(line.startswith("FLOPs: features.3: ") for line in lines)
    assert not any(line.startswith("FLOPs: classifier") for line in lines)


def test_a_planted_shape_mismatch_is_reported():
    model = nn.Sequential(nn.Linear(8, 8), SneakyShape(), nn.ReLU())
    report = archprof.profile(model, input_size=(8,), **FAST)
    shapes = next(c for c in report.measured.checks if c.name == "output shapes")
    assert shapes.status == "mismatch"
    assert "1: predicted 1x8, measured 1x4" in shapes.mismatches
    assert "model output: predicted 1x8, measured 1x4" in shapes.mismatches


def sneaky_model():
    return nn.Sequential(nn.Linear(8, 8), SneakyMatmul())


def test_mismatches_are_printed_in_the_table_and_on_stderr():
    options = ["profile", "tests.test_measure:sneaky_model", "--input", "8", *_fast_options()]
    result = runner.invoke(app, options, env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "Cross-check: 1 MISMATCH" in result.stdout
    assert "MISMATCH FLOPs: 1: analytic 128, FlopCounterMode 256" in result.stdout
    result = runner.invoke(app, [*options, "--format", "csv"])  # no table: stderr says it
    assert "MISMATCH FLOPs: 1: analytic 128, FlopCounterMode 256" in result.stderr


def test_memory_check_bounds():
    from archprof.measure.peak_memory import Peak

    cuda, cpu, mb = torch.device("cuda"), torch.device("cpu"), 10**6
    assert crosscheck.check_memory(mb, Peak(mb * 11 // 10), cuda).status == "ok"
    assert crosscheck.check_memory(mb, Peak(2 * mb), cuda).status == "mismatch"
    assert crosscheck.check_memory(mb, Peak(mb // 2), cuda).mismatches
    # A few kB apart is within the slack, whatever the ratio (a tiny model's kernel scratch).
    assert crosscheck.check_memory(4_000, Peak(13_000), cuda).status == "ok"
    assert crosscheck.check_memory(4_000, Peak(4_000 + crosscheck.MEMORY_SLACK_BYTES + 1), cuda).status == "mismatch"
    assert crosscheck.check_memory(1000, None, torch.device("mps")).status == "skipped"
    # On the CPU, a prediction between the measurements without and with workspace agrees
    # (an operator PyTorch runs as several), one outside both and the bounds does not.
    between = crosscheck.check_memory(mb, Peak(mb // 2, mb), cpu)
    assert between.status == "ok" and "between the measurements" in between.summary
    assert crosscheck.check_memory(mb, Peak(mb // 2, mb - 1), cpu).status == "mismatch"


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed, self.fc = nn.Embedding(10, 8), nn.Linear(8, 4)

    def forward(self, ids, *, scale):
        return self.fc(self.embed(ids)) * scale


class ReadsValues(nn.Module):
    """Data-dependent control flow: traced with a real CPU forward, not on meta."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        y = self.fc(x)
        return torch.relu(y) if y.sum().item() > -1e9 else y


def test_several_inputs_token_ids_and_keywords():
    from archprof.load import InputSpec

    inputs = [InputSpec((6,), torch.int64), InputSpec((6, 4), name="scale")]
    report = archprof.profile(Scaled(), inputs=inputs, batch=2, **FAST)
    assert report.input_shapes == ((2, 6), (2, 6, 4)) and report.measured.batch == 2
    assert report.measured.passed, report.measured.mismatches
    assert report.layers.set_index("layer").loc["fc", "time_ms"] > 0


def test_a_model_traced_on_the_cpu_is_profiled_too():
    from archprof.errors import ArchprofWarning

    with pytest.warns(ArchprofWarning, match="cannot run on the meta device"):
        report = archprof.profile(ReadsValues(), input_size=(8,), **FAST)
    assert report.traced_on == "cpu" and report.measured.passed, report.measured.mismatches


# --- the model: random weights, the caller's untouched ------------------------------------


def test_the_callers_module_is_neither_changed_nor_moved():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    archprof.profile(model, input_size=(3, 8, 8), **FAST)
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_a_built_model_gets_random_finite_weights_and_unit_batchnorm_statistics():
    from archprof.load import load_model

    module = device.materialise(load_model("resnet18"), torch.device("cpu"), None)
    assert not module.training
    assert all(torch.isfinite(p).all() and p.std() > 0 for p in module.parameters() if p.dim() > 1)
    assert torch.equal(module.bn1.running_var, torch.ones(64))
    assert torch.equal(module.bn1.running_mean, torch.zeros(64))


def test_a_profiled_report_writes_its_measured_columns_and_rolls_up():
    report = archprof.profile(Residual(), input_size=(4, 8, 8), **FAST)
    header = report.to_csv().splitlines()[0].split(",")
    assert header[-len(MEASURED_COLUMNS) :] == [c.name for c in MEASURED_COLUMNS]
    document = json.loads(report.to_json())
    assert document["measured"]["passed"] is True and document["measured"]["ceilings"]["ridge_flops_per_byte"] == 10
    # An analytic report is unchanged: no measured column anywhere.
    assert "time_ms" not in archprof.analyze("lenet5").to_csv()


def test_a_profiled_report_rolls_up_with_its_measurements(lenet):
    """A merged row's time, share, bytes moved and roofline time are its rows' sums, and its
    rates follow from those as a row's do (it lost them all: a rolled profile was analytic)."""
    rolled = lenet.rollup(1)
    # Whole-model figures kept; only the notes that count rows above the roof count the merged rows.
    kept = [f.name for f in dataclasses.fields(lenet.measured) if f.name != "notes"]
    assert all(getattr(rolled.measured, name) == getattr(lenet.measured, name) for name in kept)
    assert [c.name for c in rolled.column_specs[-len(MEASURED_COLUMNS) :]] == [c.name for c in MEASURED_COLUMNS]
    fine = lenet.rows()
    for row in rolled.rows():
        below = [r for r in fine if r["layer"] == row["layer"] or r["layer"].startswith(row["layer"] + ".")]
        times = [r["time_ms"] for r in below if r["time_ms"] is not None]
        assert row["time_ms"] == pytest.approx(sum(times)), row["layer"]
        assert row["time_share"] == pytest.approx(sum(r["time_share"] for r in below if r["time_share"] is not None))
        assert row["bytes_moved"] == sum(r["bytes_moved"] for r in below)
        assert row["roofline_time_ms"] == pytest.approx(sum(r["roofline_time_ms"] for r in below))
        work = sum(r["flops"] + r["elementwise_flops"] for r in below)
        assert row["achieved_flops_per_s"] == pytest.approx(work / (row["time_ms"] / 1e3))
        if row["bytes_moved"]:
            assert row["arithmetic_intensity"] == pytest.approx(work / row["bytes_moved"])
            assert row["bound"] == ("compute" if work / row["bytes_moved"] >= 10.0 else "memory")
        else:  # a view (flatten) moves nothing
            assert row["arithmetic_intensity"] is None and row["bound"] == ""
    assert len(rolled) < len(lenet)
    assert sum(rolled.columns["time_ms"]) == pytest.approx(sum(t for t in lenet.columns["time_ms"] if t is not None))


def test_progress_is_reported_per_phase():
    seen = {}
    archprof.profile("lenet5", device="cpu", warmup=2, repeat=3, progress=lambda p, d, t: seen.__setitem__(p, (d, t)))
    assert seen["warm-up"] == (2, 2)
    assert seen["timing the whole model"] == (3, 3) and seen["timing each layer"] == (3, 3)
    assert seen["measuring the device's peak FLOP/s"] == (1, 1)  # an empty cache: measured


def test_numpy_pass_counts_are_taken_and_the_report_still_writes_its_json():
    import numpy as np

    report = archprof.profile("lenet5", device="cpu", warmup=np.int64(1), repeat=np.int64(2), **CEILINGS)
    measured = json.loads(report.to_json())["measured"]
    assert (measured["warmup"], measured["repeat"]) == (1, 2) and len(measured["latencies_ms"]) == 2


def test_bad_arguments_are_user_errors():
    with pytest.raises(ArchprofError, match="unknown device 'gpu'"):
        archprof.profile("lenet5", device="gpu")
    with pytest.raises(ArchprofError, match="repeat must be at least 1"):
        archprof.profile("lenet5", device="cpu", repeat=0)
    with pytest.raises(ArchprofError, match="warmup must be at most 1,000,000"):
        archprof.profile("lenet5", device="cpu", warmup=10**20)  # before any pass runs
    with pytest.raises(ArchprofError, match="unknown model"):
        archprof.profile("lenet", **FAST)


# --- ceilings: units, micro-benchmark, cache ------------------------------------------------


def test_the_micro_benchmark_measures_both_ceilings_quickly():
    cpu = torch.device("cpu")
    assert ceilings.measure_peak_flops(cpu, torch.float32, max_size=256) > 1e6
    assert ceilings.measure_bandwidth(cpu, nbytes=1 << 20) > 1e6


@pytest.fixture
def fake_benchmarks(monkeypatch):
    """The micro-benchmarks replaced: they return `rates` (change it to change what a
    measurement finds) and log each call."""
    calls = []
    rates = {"peak_flops": 5e10, "bandwidth": 2e10}
    monkeypatch.setattr(
        ceilings, "measure_peak_flops", lambda device, dtype: calls.append(("flops", dtype)) or rates["peak_flops"]
    )
    monkeypatch.setattr(
        ceilings, "measure_bandwidth", lambda device: calls.append(("bandwidth",)) or rates["bandwidth"]
    )
    return calls, rates


def _cache_entries(tmp_path):
    return json.loads((tmp_path / "cache" / "ceilings.json").read_text())["entries"]


def test_ceilings_are_measured_once_then_read_from_the_cache_with_their_age(fake_benchmarks, tmp_path):
    calls, _ = fake_benchmarks
    cpu = torch.device("cpu")
    before = time.time()
    first = ceilings.device_ceilings(cpu, "float32")
    assert (first.flops_source, first.bandwidth_source) == ("measured", "measured")
    assert first.origin("peak_flops") == first.origin("bandwidth") == "measured now"
    assert ceilings.cache_path() == tmp_path / "cache" / "ceilings.json"
    (entry,) = _cache_entries(tmp_path).values()
    assert (entry["peak_flops"], entry["bandwidth"]) == (5e10, 2e10)
    assert before <= entry["peak_flops_measured_at"] <= time.time()

    again = ceilings.device_ceilings(cpu, "float32")
    assert (again.flops_source, again.bandwidth_source) == ("cached", "cached")
    assert (again.peak_flops_per_s, again.bandwidth_bytes_per_s, again.ridge) == (5e10, 2e10, 2.5)
    assert again.origin("peak_flops").startswith("cached, measured ")
    assert calls == [("flops", torch.float32), ("bandwidth",)]


def test_the_origin_says_how_old_a_cached_figure_is():
    two_hours_ago, three_days_ago = time.time() - 7200, time.time() - 3 * 86400
    cached = ceilings.Ceilings("cpu: x", "float32", 1e9, 1e9, "cached", "cached", two_hours_ago, three_days_ago)
    assert cached.origin("peak_flops") == "cached, measured 2 h ago"
    assert cached.origin("bandwidth") == "cached, measured 3 days ago"
    given = ceilings.Ceilings("cpu: x", "float32", 1e9, 1e9, "given", "given")
    assert given.origin("peak_flops") == "given"


def test_the_cache_holds_per_device_threads_torch_and_dtype(fake_benchmarks, tmp_path, monkeypatch):
    calls, _ = fake_benchmarks
    cpu = torch.device("cpu")
    ceilings.device_ceilings(cpu, "float32")
    ceilings.device_ceilings(cpu, "bfloat16")  # another precision
    torch.set_num_threads(2)  # another thread count: another CPU
    ceilings.device_ceilings(cpu, "float32")
    monkeypatch.setattr(torch, "__version__", "9.9.9")  # another torch
    ceilings.device_ceilings(cpu, "float32")
    assert len(calls) == 8  # every one measured both figures
    keys = list(_cache_entries(tmp_path))
    assert len(keys) == 4
    assert sum("bfloat16" in key for key in keys) == 1 and sum("2 threads" in key for key in keys) == 2
    assert sum("torch 9.9.9" in key for key in keys) == 1


def test_a_cache_of_the_first_format_is_measured_again(fake_benchmarks, tmp_path):
    # Version 1 kept one figure per device whatever the torch, dtype or threads: a 6.49 GB/s
    # measured once on a busy machine was used for ever.
    path = tmp_path / "cache" / "ceilings.json"
    path.parent.mkdir(parents=True)
    device_key = f"cpu: {device.device_name(torch.device('cpu'))}"
    old = {device_key: {"peak_flops_per_s": {"float32": 9.62e9}, "bandwidth_bytes_per_s": 6.49e9}}
    path.write_text(json.dumps({"version": 1, "devices": old}))
    fresh = ceilings.device_ceilings(torch.device("cpu"), "float32")
    assert (fresh.flops_source, fresh.bandwidth_source) == ("measured", "measured")
    assert fresh.bandwidth_bytes_per_s == 2e10


def test_remeasure_measures_a_cached_figure_again(fake_benchmarks, tmp_path):
    calls, rates = fake_benchmarks
    cpu = torch.device("cpu")
    ceilings.device_ceilings(cpu, "float32")
    rates["peak_flops"] = 7e10
    again = ceilings.device_ceilings(cpu, "float32", remeasure={"peak_flops"})
    assert (again.flops_source, again.peak_flops_per_s, again.bandwidth_source) == ("measured", 7e10, "cached")
    (entry,) = _cache_entries(tmp_path).values()
    assert entry["peak_flops"] == 7e10 and len(calls) == 3


def test_a_beaten_ceiling_measured_again_never_falls(fake_benchmarks, tmp_path):
    """A layer ran faster than the cached 20 GB/s: measured again on a busy machine, 10 GB/s
    replaced it (and was cached), a ceiling half as high as one already beaten. The higher
    stays; a higher one measured again is taken; --remeasure still takes what it measures."""
    calls, rates = fake_benchmarks
    cpu = torch.device("cpu")
    ceilings.device_ceilings(cpu, "float32")
    rates["bandwidth"] = 1e10
    again = ceilings.device_ceilings(cpu, "float32", beaten={"bandwidth"})
    assert (again.bandwidth_source, again.bandwidth_bytes_per_s) == ("measured", 2e10)
    assert _cache_entries(tmp_path).popitem()[1]["bandwidth"] == 2e10
    rates["bandwidth"] = 3e10
    assert ceilings.device_ceilings(cpu, "float32", beaten={"bandwidth"}).bandwidth_bytes_per_s == 3e10
    rates["bandwidth"] = 1e10
    assert ceilings.device_ceilings(cpu, "float32", remeasure={"bandwidth"}).bandwidth_bytes_per_s == 1e10
    assert calls.count(("bandwidth",)) == 4


def test_forget_device_drops_only_that_devices_figures(fake_benchmarks, tmp_path):
    cpu = torch.device("cpu")
    ceilings.device_ceilings(cpu, "float32")
    entries = _cache_entries(tmp_path)
    entries["cuda: Some GPU | torch 2.13 | float32"] = {"peak_flops": 1e14}
    ceilings.write_cache(entries)
    assert ceilings.forget_device(cpu) == 1
    assert list(_cache_entries(tmp_path)) == ["cuda: Some GPU | torch 2.13 | float32"]
    assert ceilings.device_ceilings(cpu, "float32").flops_source == "measured"


def test_hand_given_ceilings_override_the_cache_and_are_not_cached(fake_benchmarks, tmp_path):
    calls, _ = fake_benchmarks
    cpu = torch.device("cpu")
    ceilings.device_ceilings(cpu, "float32")
    given = ceilings.device_ceilings(cpu, "float32", peak_flops=989e12)
    assert (given.peak_flops_per_s, given.flops_source) == (989e12, "given")
    assert (given.bandwidth_bytes_per_s, given.bandwidth_source) == (2e10, "cached")
    both = ceilings.device_ceilings(cpu, "float32", peak_flops=1e12, bandwidth=1e11)
    assert (both.flops_source, both.bandwidth_source) == ("given", "given")
    (entry,) = _cache_entries(tmp_path).values()
    assert entry["peak_flops"] == 5e10
    assert len(calls) == 2


@pytest.mark.parametrize(
    "cached",
    [
        "{not json",
        "[" * 100_000 + "]" * 100_000,  # json's recursion: RecursionError
        {"peak_flops": 10**400},  # past a float: OverflowError
        {"peak_flops": 1e-300},  # roofline times past a float
        {"peak_flops_measured_at": [1]},
        {"peak_flops": 1e300},  # profile showed 230 digits of TFLOP/s
        {"peak_flops_measured_at": time.time() + 10 * 365 * 24 * 3600},  # "measured 0 s ago", in ten years
    ],
    ids=["not json", "nested", "huge int", "tiny rate", "a list", "huge rate", "future"],
)
def test_a_corrupt_cache_is_measured_again(fake_benchmarks, tmp_path, cached):
    path = tmp_path / "cache" / "ceilings.json"
    path.parent.mkdir(parents=True)
    if isinstance(cached, dict):  # an entry for the device, edited
        entry = {"peak_flops": 9e10, "peak_flops_measured_at": 1.7e9, "bandwidth": 2e10, "bandwidth_measured_at": 1.7e9}
        key = ceilings.cache_key(torch.device("cpu"), "float32")
        cached = json.dumps({"version": ceilings.CACHE_VERSION, "entries": {key: {**entry, **cached}}})
    path.write_text(cached)
    found = ceilings.device_ceilings(torch.device("cpu"), "float32")
    assert (found.flops_source, found.peak_flops_per_s) == ("measured", 5e10)
    assert found.bandwidth_source == ("measured" if "entries" not in cached else "cached")
    assert json.loads(path.read_text())["version"] == ceilings.CACHE_VERSION


def _cache_lenet_ceilings(rates, peak, bandwidth):
    """Cache these ceilings for the CPU at float32 (what lenet5 is profiled with)."""
    saved = dict(rates)
    rates.update(peak_flops=peak, bandwidth=bandwidth)
    ceilings.device_ceilings(torch.device("cpu"), "float32")
    rates.update(saved)


def test_a_cached_peak_that_layers_beat_is_measured_again(fake_benchmarks):
    calls, rates = fake_benchmarks
    # 1 KFLOP/s: LeNet's first convolution (235,200 FLOPs) would take 0.2 s under it.
    _cache_lenet_ceilings(rates, peak=1e3, bandwidth=1e15)
    calls.clear()
    rates["peak_flops"] = 1e14
    report = archprof.profile("lenet5", device="cpu", warmup=0, repeat=1)
    measured = report.measured
    assert (measured.ceilings.flops_source, measured.ceilings.peak_flops_per_s) == ("measured", 1e14)
    assert measured.ceilings.bandwidth_source == "cached"
    assert calls == [("flops", torch.float32)]
    assert any("above the cached peak 1.00 KFLOP/s" in note and "now 100.00 TFLOP/s" in note for note in measured.notes)
    assert not any("marked ▲" in note for note in measured.notes)


def test_a_beaten_peak_measured_lower_again_is_kept_and_said_so(fake_benchmarks, tmp_path):
    """Measured again on a busy machine, the peak came out lower still and replaced the cached
    one, for every later run: the cached figure stays, in the report and the cache."""
    _, rates = fake_benchmarks
    _cache_lenet_ceilings(rates, peak=1e3, bandwidth=1e15)  # beaten by every convolution
    rates["peak_flops"] = 5e2
    measured = archprof.profile("lenet5", device="cpu", warmup=0, repeat=1).measured
    assert measured.ceilings.peak_flops_per_s == 1e3
    assert any("above the cached peak 1.00 KFLOP/s" in note and "no higher: kept" in note for note in measured.notes)
    assert {entry["peak_flops"] for entry in _cache_entries(tmp_path).values()} == {1e3}


def test_layers_above_a_fresh_roof_are_marked_in_the_table(fake_benchmarks):
    _, rates = fake_benchmarks
    rates.update(peak_flops=1e3, bandwidth=1e15)  # measured now, and still beaten
    report = archprof.profile("lenet5", device="cpu", warmup=0, repeat=1)
    measured = report.measured
    assert measured.ceilings.flops_source == "measured"
    above = [row for row in report.rows() if row["achieved_flops_per_s"] and row["achieved_flops_per_s"] > 1e3]
    assert above
    (note,) = [note for note in measured.notes if "above the peak FLOP/s" in note]
    assert note.startswith(f"{len(above)} rows") and "measured low" in note
    text = to_text(profile_table(report, Layout(width=200)))
    assert text.count("▲") == len(above) + 2  # each row, the caption, the note


def test_the_cache_lives_in_the_user_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("ARCHPROF_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ceilings.cache_path() == tmp_path / "xdg" / "archprof" / "ceilings.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ceilings.cache_path() == tmp_path / "home" / ".cache" / "archprof" / "ceilings.json"


# --- the command ---------------------------------------------------------------------------


def test_profile_command_on_the_cpu(tmp_path):
    result = runner.invoke(
        app, ["profile", "lenet5", "--device", "cpu", "--repeat", "3", "--warmup", "1"], env={"COLUMNS": "160"}
    )
    assert result.exit_code == 0, result.output
    for text in ("features.0", "Conv2d", "(between hooks)", "Latency, median (no hooks)", "Cross-check", "FLOPs"):
        assert text in result.output
    assert (tmp_path / "cache" / "ceilings.json").is_file()  # the ceilings were measured and cached
    ceilings = ["--peak-flops", "100G", "--bandwidth", "10GB/s"]
    rolled = runner.invoke(
        app, ["profile", "lenet5", "--device", "cpu", "--repeat", "3", "-d", "1", "-f", "csv", *ceilings]
    )
    assert rolled.exit_code == 0, rolled.output
    rows = list(csv.DictReader(io.StringIO(rolled.stdout)))
    from archprof.zoo import MODELS

    assert [row["layer"] for row in rows] == [name for name, _ in MODELS["lenet5"].build().named_children()]
    assert all(float(row["time_ms"]) > 0 for row in rows)


def test_profile_prints_where_the_ceilings_came_from_and_remeasure_measures_them_again(fake_benchmarks):
    calls, rates = fake_benchmarks
    _cache_lenet_ceilings(rates, peak=1e15, bandwidth=1e15)  # never beaten: kept
    calls.clear()
    options = ["profile", "lenet5", "--device", "cpu", "--repeat", "1", "--warmup", "0"]
    cached = runner.invoke(app, options, env={"COLUMNS": "300"})
    assert cached.exit_code == 0, cached.output
    # Its age is the seconds since the cache was written: the command's own run on a loaded machine.
    assert re.search(r"peak 1\.00 PFLOP/s \(cached, measured \d+ s ago\)", cached.stdout) and calls == []
    again = runner.invoke(app, [*options, "--remeasure"], env={"COLUMNS": "300"})
    assert again.exit_code == 0, again.output
    assert "peak 50.00 GFLOP/s (measured now), bandwidth 20.00 GB/s (measured now)" in again.stdout
    assert len(calls) == 2


def test_remeasure_leaves_a_ceiling_given_by_hand_cached_and_refuses_when_both_are_given(fake_benchmarks, tmp_path):
    """--remeasure measures what is not given: a figure given by hand is neither measured nor
    cached, so its cached value (of every precision) stays. With both given it has nothing to do."""
    calls, rates = fake_benchmarks
    _cache_lenet_ceilings(rates, peak=1e15, bandwidth=1e15)
    ceilings.device_ceilings(torch.device("cpu"), "bfloat16")  # another precision's figures
    before = _cache_entries(tmp_path)
    calls.clear()
    options = ["profile", "lenet5", "--device", "cpu", "--repeat", "1", "--warmup", "0", "--remeasure"]
    both = runner.invoke(app, [*options, "--peak-flops", "1T", "--bandwidth", "1TB/s"])
    assert both.exit_code == 2 and "--remeasure has nothing to measure" in both.stderr
    assert _cache_entries(tmp_path) == before and calls == []
    one = runner.invoke(app, [*options, "--peak-flops", "1T"], env={"COLUMNS": "300"})
    assert one.exit_code == 0, one.output
    assert calls == [("bandwidth",)]
    after = _cache_entries(tmp_path)
    assert [entry["peak_flops"] for entry in after.values()] == [entry["peak_flops"] for entry in before.values()]
    assert sum(entry.get("bandwidth") == rates["bandwidth"] for entry in after.values()) == 1  # float32's, again
    assert sum("bandwidth" not in entry for entry in after.values()) == 1  # bfloat16's: forgotten, not measured


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_profile_on_cuda_without_cuda_is_a_one_line_error():
    result = runner.invoke(app, ["profile", "lenet5", "--device", "cuda"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: device 'cuda' needs a CUDA GPU, and torch sees none (torch.cuda.is_available() is False)"
    ]


@pytest.mark.parametrize(
    "command",
    [
        ["profile", "lenet5", "--batch", "100000000000", "--repeat", "1"],
        ["compare", "lenet5", "edge_conv", "--batch", "100000000000", "--profile"],
    ],
    ids=["profile", "compare --profile"],
)
def test_an_input_too_large_to_run_is_refused_before_running_it(command):
    """The analysis of a batch of 10**11 is fine; its real run (400 TB for the input alone) is
    refused on one line, as memory --measure refuses it, against the memory free."""
    result = runner.invoke(app, command)
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: a real run of lenet5 at batch 100000000000 is predicted to need")
    assert " with half again for operators' workspace, more than the " in line and "the CPU has available" in line


def test_memory_measure_refuses_a_batch_too_large_before_running_it():
    """memory --measure compares the predicted peak with the free memory before any real run."""
    result = runner.invoke(app, ["memory", "lenet5", "--batch", "100000000000", "--measure"])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: --measure's run at batch 100000000000 is predicted to need")
    # the margin that decides is said: '15.98 GB, but the cpu has 23.19 GB free' gave no reason
    units = {"TB": 1e12, "PB": 1e15, "EB": 1e18}
    figures = re.search(r"need ([\d.]+) ([TPE]B), ([\d.]+) ([TPE]B) with half again for operators' workspace", line)
    need, margin = (float(figures[i]) * units[figures[i + 1]] for i in (1, 3))
    assert margin == pytest.approx(1.5 * need, rel=0.01) and "the CPU has available" in line


def test_profile_command_writes_csv_and_json(tmp_path):
    options = ["--device", "cpu", "--repeat", "2", "--warmup", "0", "--peak-flops", "1T", "--bandwidth", "50GB/s"]
    result = runner.invoke(app, ["profile", "lenet5", *options, "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert "time_ms,time_share" in result.stdout.splitlines()[0]
    target = tmp_path / "lenet5.json"
    result = runner.invoke(app, ["profile", "lenet5", *options, "--output", str(target)])
    assert result.exit_code == 0, result.output
    measured = json.loads(target.read_text())["measured"]
    assert measured["ceilings"]["peak_flops_per_s"] == 1e12 and measured["ceilings"]["flops_source"] == "given"
    assert not (tmp_path / "cache" / "ceilings.json").exists()  # both given: nothing measured or cached


def test_profile_markdown_holds_the_whole_model_and_the_ceilings():
    result = runner.invoke(app, ["profile", "lenet5", *_fast_options(), "--format", "markdown"])
    assert result.exit_code == 0, result.output
    for text in ("**Whole model**", "| Latency, median (no hooks) |", "peak 100.00 GFLOP/s (given)", "Cross-check"):
        assert text in result.stdout
    assert "| Peak memory, with workspace |" in result.stdout  # on the CPU, the second figure


def test_a_profiled_reports_markdown_is_the_profile_commands(lenet, monkeypatch):
    """`archprof.profile(...).to_markdown()` is what `archprof profile -f markdown` writes for
    the same measurement (the command handed the fixture's report): the measured tables, the
    whole model and the cross-check, not the summary."""
    monkeypatch.setattr("archprof.api.profile", lambda model, **options: lenet)
    result = runner.invoke(app, ["profile", "lenet5", "--device", "cpu", "--format", "markdown"])
    assert result.exit_code == 0, result.output
    markdown = lenet.to_markdown()
    assert markdown == result.stdout
    measured = lenet.measured
    layers = first_table(markdown)
    assert layers[0][:2] == ["Layer", "Type"] and _time_unit(layers[0]) in ("ms", "µs")
    # the module tree, as the summary's: features and classifier before their layers
    assert [row[1] for row in layers[1:-1] if row[1] != "Sequential"] == list(lenet.layers["module_type"])
    containers = [row[0].strip("\u00a0") for row in layers[1:-1] if row[1] == "Sequential"]
    assert containers == ["features", "classifier"]
    assert layers[-1][0] == "(between hooks)"
    for heading in ("**Whole model**", "Ceilings of cpu", "Cross-check"):
        assert heading in markdown
    # The measurement's own figures, formatted here: milliseconds to 3 places, samples/s to 1.
    assert f"median of {measured.repeat} passes after {measured.warmup} warm-up" in markdown
    assert f"| Latency, median (no hooks) | {measured.median_ms:,.3f} ms | p90 {measured.p90_ms:,.3f} ms |" in markdown
    assert f"| Throughput | {measured.throughput_per_s:,.1f} samples/s |" in markdown


def test_a_profiled_report_shows_its_measurement_in_a_notebook(lenet):
    page = lenet._repr_html_()
    measured = lenet.measured
    assert "<b>Whole model</b>" in page and "(between hooks)" in page
    assert f"{measured.median_ms:,.3f} ms" in page and f"{measured.throughput_per_s:,.1f} samples/s" in page


def test_bad_ceilings_fail_before_any_work():
    result = runner.invoke(app, ["profile", "lenet5", "--device", "cpu", "--bandwidth", "fast"])
    assert result.exit_code == 2 and "cannot read the bandwidth 'fast'" in result.stderr


def test_plot_draws_the_roofline(tmp_path):
    pytest.importorskip("matplotlib")
    target = tmp_path / "roofline.png"
    result = runner.invoke(app, ["profile", "lenet5", "--plot", str(target), *_fast_options()])
    assert result.exit_code == 0, result.output
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _texts(figure) -> list[str]:
    return [text.get_text() for axes in figure.axes for text in axes.texts]


def _collection(axes, label):
    (found,) = [c for c in axes.collections if c.get_label() == label]
    return found


def test_the_roofline_figure_labels_its_roofs_colours_its_bounds_and_names_the_slowest_rows():
    pytest.importorskip("matplotlib")
    from archprof.render.roofline import roofline_figure

    # Ceilings no CPU reaches: every row sits under the roof. Ridge 1e15 / 2e14 = 5 FLOPs/byte, between
    # LeNet's convolutions (conv2: 480,000 FLOPs over about 21 kB) and its activations (a FLOP per 8 bytes).
    report = archprof.profile("lenet5", device="cpu", warmup=0, repeat=1, peak_flops="1P", bandwidth="200TB/s")
    figure = roofline_figure(report, label_top=3)
    axes = figure.axes[0]
    texts = _texts(figure)
    assert "peak 1.00 PFLOP/s (given)" in texts and "bandwidth 200.00 TB/s (given)" in texts
    assert any(text.startswith("ridge 5.0 FLOPs/byte") for text in texts)
    assert not any("above the roof" in text for text in texts)
    assert axes.yaxis.get_major_formatter()(1e9) == "1 GFLOP/s"  # SI prefixes, never 1e+09
    assert "lenet5" in axes.get_title() and "e+" not in axes.get_title()
    assert "log scale" in axes.get_xlabel() and "log scale" in axes.get_ylabel()  # log-log: said so
    timed = [row for row in report.rows() if row["arithmetic_intensity"] and row["achieved_flops_per_s"]]
    compute = [row for row in timed if row["arithmetic_intensity"] >= 5]
    memory = [row for row in timed if row["arithmetic_intensity"] < 5]
    assert compute and memory  # LeNet's convolutions and its activations
    colours = set()
    for label, rows in (("compute-bound layers", compute), ("memory-bound layers", memory)):
        points = _collection(axes, label)
        assert len(points.get_offsets()) == len(rows)
        colours.add(tuple(points.get_facecolor()[0][:3]))
    assert len(colours) == 2
    names = [child for child in axes.texts if child.get_text() in {layer_label(r["layer"], r["call"]) for r in timed}]
    slowest = sorted(timed, key=lambda r: -r["time_ms"])[:3]
    assert 1 <= len(names) <= 3
    assert {n.get_text() for n in names} <= {layer_label(r["layer"], r["call"]) for r in slowest}
    renderer = figure.canvas.get_renderer()
    boxes = [n.get_window_extent(renderer) for n in names]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    legend = [text.get_text() for text in axes.get_legend().get_texts()]
    assert {"roofline", "25% of the time", "5% of the time"} <= set(legend)
    # A marker's size is its share of the time: the colour key's two markers are one size, not the
    # size of whichever layer each colour drew first (LeNet's convolutions are far slower than its activations).
    handles = dict(zip(legend, _legend_handles(axes.get_legend()), strict=True))
    areas = {_marker_area(handles[label]) for label in ("compute-bound layers", "memory-bound layers")}
    assert len(areas) == 1 and areas.pop() < _marker_area(handles["5% of the time"]), areas


def _legend_handles(legend) -> list:
    return getattr(legend, "legend_handles", None) or legend.legendHandles  # matplotlib < 3.7: legendHandles


def _marker_area(handle) -> float:
    """A legend marker's area in points², from a proxy line or a scatter's own handle."""
    return handle.get_markersize() ** 2 if hasattr(handle, "get_markersize") else float(handle.get_sizes()[0])


def test_a_ridge_under_one_flop_a_byte_is_not_printed_as_zero():
    pytest.importorskip("matplotlib")
    from archprof.render.roofline import roofline_figure

    report = archprof.profile("lenet5", device="cpu", warmup=0, repeat=1, peak_flops="1G", bandwidth="70GB/s")
    texts = _texts(roofline_figure(report))
    assert any(text.startswith("ridge 0.014 FLOPs/byte") for text in texts), texts
    table = " ".join(to_text(profile_table(report, Layout(width=300))).split())
    assert "ridge 0.014 FLOPs/byte" in table  # the table's ceilings line said "ridge 0.0" too


@pytest.mark.parametrize(
    ("peak", "bandwidth"),
    [
        ("10G", "1EB/s"),  # ridge 1e-8 FLOPs/byte: a roof short and steep at the left; rotated, out the top
        ("1P", "1kB/s"),  # ridge 1e12: at the right edge, its label ran on into the peak's and out the side
    ],
)
def test_the_bandwidth_label_stays_inside_the_axes_clear_of_the_peak_label(peak, bandwidth):
    label, axes, renderer = _drawn_roofline_label(peak, bandwidth, "bandwidth ")
    (peak_label,) = [text for text in axes.texts if text.get_text().startswith("peak ")]
    assert not label.get_window_extent(renderer).overlaps(peak_label.get_window_extent(renderer))


def _drawn_roofline_label(peak: str, bandwidth: str, starts: str):
    """lenet5's roofline under these ceilings, drawn as saved (laid out again, with every
    label): the label starting `starts`, checked to lie inside the axes, its axes and renderer."""
    pytest.importorskip("matplotlib")
    from archprof.render.roofline import roofline_figure

    report = archprof.profile("lenet5", device="cpu", warmup=0, repeat=1, peak_flops=peak, bandwidth=bandwidth)
    figure = roofline_figure(report)
    figure.draw_without_rendering()
    axes = figure.axes[0]
    renderer = figure.canvas.get_renderer()
    (label,) = [text for text in axes.texts if text.get_text().startswith(starts)]
    box, frame = label.get_window_extent(renderer), axes.get_window_extent(renderer)
    assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, (box, frame)
    return label, axes, renderer


@pytest.mark.parametrize(
    ("peak", "bandwidth", "ridge"),
    [
        ("1P", "200TB/s", 5.0),  # mid-plot: centred on the ridge, as it was
        ("100G", "10GB/s", 10.0),  # right of the middle: centred, it lay under the legend (lower right)
        ("1P", "1kB/s", 1e12),  # at the right edge: centred, it left the axes and lay under the legend
        ("10G", "1EB/s", 1e-8),  # at the left edge: centred, it left the axes
    ],
)
def test_the_ridge_label_stays_inside_the_axes_clear_of_the_legend_its_bar_on_the_ridge(peak, bandwidth, ridge):
    """The ridge (peak / bandwidth, worked by hand above) is the dotted line; the label's "|" marks it,
    memory-bound left of it and compute-bound right, wherever the label has to go."""
    label, axes, renderer = _drawn_roofline_label(peak, bandwidth, "ridge ")
    box = label.get_window_extent(renderer)
    assert not box.overlaps(axes.get_legend().get_window_extent(renderer))
    assert not any(box.overlaps(text.get_window_extent(renderer)) for text in axes.texts if text is not label)
    ridge_x = axes.transData.transform((ridge, 1))[0]
    (bar_line,) = [line for line in label.get_text().split("\n") if "|" in line]
    left, right = bar_line.split("|")
    assert "compute" not in left and "memory" not in right
    if left.strip() and right.strip():  # "← memory-bound | compute-bound →", centred on the ridge
        assert bar_line == "← memory-bound | compute-bound →" and abs((box.x0 + box.x1) / 2 - ridge_x) < 2
    elif left.strip():  # "← memory-bound |", ending on the ridge
        assert "compute-bound right of it" in label.get_text() and abs(box.x1 - ridge_x) < 2
    else:  # "| compute-bound →", starting on it
        assert "memory-bound left of it" in label.get_text() and abs(box.x0 - ridge_x) < 2


def test_rows_above_the_roof_are_ringed_and_explained_on_the_plot():
    pytest.importorskip("matplotlib")
    from archprof.render.roofline import roofline_figure

    report = archprof.profile("lenet5", device="cpu", warmup=0, repeat=1, peak_flops="1K", bandwidth="10TB/s")
    figure = roofline_figure(report)
    timed = [row for row in report.rows() if row["arithmetic_intensity"] and row["achieved_flops_per_s"]]
    # 1 KFLOP/s: no real layer is that slow, so every timed row beats the peak.
    assert all(row["achieved_flops_per_s"] > 1e3 for row in timed)
    rings = _collection(figure.axes[0], "above the roof")
    assert len(rings.get_offsets()) == len(timed)
    texts = _texts(figure)
    assert f"{len(timed)} layers above the roof (red rings): see the note below" in texts
    assert any(f"WARNING: {len(timed)} layers ran above the peak FLOP/s" in text for text in texts)


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch, tmp_path):
    for name in ["matplotlib", *(m for m in sys.modules if m.startswith("matplotlib."))]:
        monkeypatch.setitem(sys.modules, name, None)  # importing matplotlib (or a part) now fails
    result = runner.invoke(app, ["profile", "lenet5", "--plot", str(tmp_path / "r.png"), *_fast_options()])
    assert result.exit_code == 2
    assert "--plot needs matplotlib" in result.stderr and "archprof[plot]" in result.stderr
    assert not (tmp_path / "r.png").exists()


def test_an_unknown_plot_suffix_fails_before_profiling(tmp_path):
    pytest.importorskip("matplotlib")
    result = runner.invoke(app, ["profile", "lenet5", "--plot", str(tmp_path / "r.xyz"), *_fast_options()])
    assert result.exit_code == 2 and "cannot tell the image format" in result.stderr


def _fast_options():
    return ["--device", "cpu", "--repeat", "2", "--warmup", "0", "--peak-flops", "100G", "--bandwidth", "10GB/s"]


# --- CUDA ------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_profile_on_cuda_measures_memory_and_agrees_with_the_analysis():
    report = archprof.profile("resnet18", input_size=(3, 64, 64), device="cuda", warmup=2, repeat=5)
    m = report.measured
    assert m.device.startswith("cuda") and m.measured_peak_memory_bytes > 0
    assert m.passed, m.mismatches
    assert (report.layers["time_ms"].dropna() > 0).all()
    assert m.ceilings.peak_flops_per_s > 1e12 and m.ceilings.bandwidth_bytes_per_s > 1e11
    assert math.isfinite(m.achieved_flops_per_s)


def test_the_cpu_is_named_with_its_threads_in_good_english():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert device.device_name(torch.device("cpu")).endswith(", 1 thread")
        torch.set_num_threads(2)
        assert device.device_name(torch.device("cpu")).endswith(", 2 threads")
    finally:
        torch.set_num_threads(threads)


def test_a_tiny_share_of_the_peak_is_not_read_as_none():
    """lenet5 against a 1 PFLOP/s peak: '<0.1% of peak', as every share reads (it said 0.0%)."""
    report = archprof.profile("lenet5", device="cpu", warmup=0, repeat=1, peak_flops="1000T", bandwidth="10GB/s")
    text = " ".join(to_text(profile_table(report, Layout(width=200))).split())
    assert "<0.1% of peak" in text and "0.0% of peak" not in text


def test_a_measured_cell_above_zero_never_reads_zero():
    """A column is in one unit: a row far below the others' (1 FLOP/s among GFLOP/s) reads
    '<0.01 GFLOP/s', not '0.00 GFLOP/s' (as a share reads '<0.1%')."""
    report = archprof.profile("lenet5", device="cpu", warmup=0, repeat=1, **CEILINGS)
    rates = report.columns["achieved_flops_per_s"]
    slow = next(index for index, rate in enumerate(rates) if rate)
    rates[slow] = 1.0
    rates[next(index for index, rate in enumerate(rates) if rate and index != slow)] = 5e9  # GFLOP/s
    text = to_text(profile_table(report, Layout(width=300)))
    row = next(line for line in text.splitlines() if line.split()[:1] == [report.columns["layer"][slow]])
    assert "<0.01 GFLOP/s" in row and "0.00 GFLOP/s" not in row, row


def test_a_ridge_of_many_flops_a_byte_reads_in_thousands_not_every_digit():
    """1 PFLOP/s over 1 kB/s puts the ridge at 10**15 / 10**3 = 10**12 FLOPs a byte, which
    read "ridge 1000000000000.0 FLOPs/byte"."""
    pytest.importorskip("matplotlib")
    from archprof.render.roofline import roofline_figure

    report = archprof.profile("lenet5", device="cpu", warmup=0, repeat=1, peak_flops="1P", bandwidth="1kB/s")
    texts = _texts(roofline_figure(report))
    assert any(text.startswith("ridge 1.00 T FLOPs/byte") for text in texts), texts
    table = " ".join(to_text(profile_table(report, Layout(width=300))).split())
    assert "ridge 1.00 T FLOPs/byte" in table


def _milliseconds(cell: str, unit: str) -> float:
    """'1.234' or '(56.78)' (a profile table's time, in `unit`, 'ms' or 'µs') in milliseconds."""
    return float(cell.strip("()").replace(",", "")) * {"ms": 1.0, "µs": 1e-3}[unit]


def _headings(lines: list[str]) -> list[str]:
    """The headings of a profile table drawn as `lines`."""
    return re.split(r"\s{2,}", next(line for line in lines if line.lstrip().startswith("Layer")).strip())


def _time_unit(headings: list[str]) -> str:
    """'ms' of 'Time (ms)': the unit a profile table's time headings name (both the same)."""
    units = {re.fullmatch(r"(?:Time|Roofline) \((ms|µs)\)", h)[1] for h in headings if h.startswith(("Time", "Roof"))}
    assert len(units) == 1, headings
    return units.pop()


def test_the_time_columns_of_a_profile_table_are_in_one_unit_named_in_their_headings():
    """Time was in ms and Roofline in µs in one table (each column took its own largest
    value's unit): a layer's two times did not compare at a glance. Now both, and the
    (between hooks) line, take the unit of the largest time in the table, which the headings
    name; every cell reads back as the report's figure to the last digit shown."""
    report = archprof.profile("lenet5", device="cpu", warmup=0, repeat=1, **CEILINGS)
    times, roofline = report.columns["time_ms"], report.columns["roofline_time_ms"]
    slow = max(range(len(times)), key=lambda index: roofline[index])
    times[slow] = 2.5  # a layer of 2.5 ms: the table is in ms, where every roofline time is µs
    assert max(roofline) < 0.5, "the planted time must be the largest, and the roofline's well under a ms"
    lines = to_text(profile_table(report, Layout(width=300))).splitlines()
    heading = _headings(lines)
    time_column, roofline_column = heading.index("Time (ms)"), heading.index("Roofline (ms)")
    for index, layer in enumerate(report.columns["layer"]):
        line = next(line for line in lines if line.split()[:1] == [layer])
        cells = re.split(r"\s{2,}", line.strip())
        # Half the last digit shown, and a float's error past it: 0.0675 shows as 0.068.
        assert _milliseconds(cells[time_column], "ms") == pytest.approx(times[index], abs=0.0005 + 1e-12)
        shown = cells[roofline_column]
        if shown == "-":  # a row that moves no bytes (a view)
            assert roofline[index] == 0
        elif shown.startswith("<"):  # above zero, under the last digit shown
            assert shown == "<0.001" and 0 < roofline[index] < 0.0005
        else:
            assert _milliseconds(shown, "ms") == pytest.approx(roofline[index], abs=0.0005 + 1e-12), shown


def test_profile_rows_are_the_module_tree_as_in_the_summary():
    """profile listed its rows in the order they ran: the block's own row (its residual add)
    after its conv2, indented under nothing, and no row at all for the Sequential holding two
    layers. Now the summary's tree: each module before its layers, its own time (the add's),
    then in parentheses its subtree's: the sum of the measured medians of its rows."""
    model = nn.Sequential(Residual(4), nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU()))
    report = archprof.profile(model, input_size=(4, 8, 8), **FAST)
    from archprof.render import summary_table

    def rows(table) -> list[list[str]]:
        lines = to_text(table).splitlines()
        start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("─")) + 1
        body = lines[start : next(i for i, line in enumerate(lines) if "(between hooks)" in line or "Totals" in line)]
        return [re.split(r"\s{2,}", line.strip()) for line in body if line.strip()]

    profiled = rows(profile_table(report, Layout(width=250)))
    names = [row[0] for row in profiled]
    assert names == [row[0] for row in rows(summary_table(report, Layout(width=250)))]
    assert names[:2] == ["0", "0.conv1"] and names.index("1") == names.index("0.relu (call 2)") + 1
    timed = list(zip(report.columns["layer"], report.columns["time_ms"], strict=True))  # 0.relu twice
    times = dict(timed)
    block = [ms for layer, ms in timed if layer == "0" or layer.startswith("0.")]
    unit = _time_unit(_headings(to_text(profile_table(report, Layout(width=250))).splitlines()))
    own, subtree = profiled[0][2].split(" (")  # the add's time, then the block's in parentheses
    assert _milliseconds(own, unit) == pytest.approx(times["0"], abs=0.001)
    assert _milliseconds(subtree, unit) == pytest.approx(sum(block), abs=0.001)
    sequential = profiled[names.index("1")][2]
    assert sequential.startswith("(") and _milliseconds(sequential, unit) == pytest.approx(
        times["1.0"] + times["1.1"], abs=0.001
    )


class Encodes(nn.Module):
    """An nn.TransformerEncoderLayer, which a CPU runs in inference as one fused kernel."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(width, 2, 2 * width, batch_first=True)

    def forward(self, x):
        return self.layer(x)


def test_a_fused_encoder_layer_is_checked_as_one_module():
    """The analysis records the layer as one fused kernel, whose submodules a CPU does not
    call; the check's run (its composite road) calls them. The layer stands for them: its
    output shape and its subtree's FLOPs, FlopCounterMode's count of the feed-forward's and
    the attention's products (by hand: 2 · (4 L W² + 2 L² W + 2 L W F))."""
    tokens, width = 5, 8
    report = archprof.profile(Encodes(width), input_size=(tokens, width), **FAST)
    assert "_transformer_encoder_layer_fwd" in report.layers.set_index("layer").loc["layer", "operators"]
    by_hand = 2 * (4 * tokens * width**2 + 2 * tokens**2 * width + 2 * tokens * width * 2 * width)
    assert report.totals.flops == by_hand
    assert all(check.status == "ok" for check in report.measured.checks), report.measured.checks


@pytest.fixture
def tf32_flags():
    """PyTorch's TF32 flags as they were after the test (the per-operator ones, from 2.9)."""
    flags = (torch.backends, torch.backends.cudnn, torch.backends.cudnn.conv, torch.backends.cuda.matmul)
    saved = [flag.fp32_precision for flag in flags]
    yield
    for flag, precision in zip(flags, saved, strict=True):
        flag.fp32_precision = precision


def test_the_precision_follows_pytorchs_per_operator_tf32_flag(tf32_flags):
    """A user who turned TF32 off for cuDNN's convolutions by PyTorch's per-operator flag (its
    documented API from 2.9) got a RuntimeError from archprof's read of the legacy
    allow_tf32, which PyTorch refuses once the flags of convolutions and RNNs differ."""
    from archprof.measure.ceilings import precision_label

    gpu = torch.device("cuda")  # the label reads flags only: no GPU needed
    assert precision_label(gpu, "float32") == "float32+tf32"  # PyTorch's default for convolutions
    torch.backends.cudnn.conv.fp32_precision = "ieee"
    with pytest.raises(RuntimeError, match="mix of the legacy and new APIs"):
        torch.backends.cudnn.allow_tf32  # noqa: B018 -- the oracle: PyTorch's own refusal
    assert precision_label(gpu, "float32") == "float32"
    assert precision_label(torch.device("cpu"), "float32") == "float32"


def test_a_peak_measured_in_tf32_leaves_the_flags_as_they_were(tf32_flags):
    """The peak's products run in TF32 for the block, and the flag is as it was after: the
    legacy round trip set matmul's 'none' (follow the global flag) to 'ieee', so that a
    later `torch.backends.fp32_precision = "tf32"` no longer reached matrix products."""
    from archprof.measure.ceilings import _products_in_tf32

    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    with _products_in_tf32(True):
        assert matmul.fp32_precision == "tf32"
    assert matmul.fp32_precision == before
    torch.backends.fp32_precision = "tf32"
    assert matmul.fp32_precision == "tf32"


def test_a_measured_step_updates_one_parameter_at_a_time_as_modelled():
    """On a GPU torch.optim's default is the `foreach` update, all the parameters at once (a
    copy of them more at its peak, PyTorch's docs say): `memory --measure` measured another
    step than the one it predicts (lenet5 with Adagrad: 1.32x). The step archprof builds is
    the one-at-a-time update, whatever the device, and its peak is the prediction."""
    from archprof.load import load_model
    from archprof.measure.peak_memory import predicted_and_measured
    from archprof.optimizers import OPTIMIZERS

    for name, model in OPTIMIZERS.items():
        assert model.build([nn.Parameter(torch.zeros(1))]).defaults["foreach"] is False, name
    _, step = predicted_and_measured(load_model("lenet5"), [(1, 32, 32)], 2, None, "adagrad").steps
    assert step.measured.bytes == step.predicted_bytes


def test_the_ceilings_line_offers_to_measure_again_only_what_was_measured(fake_benchmarks):
    """With both ceilings given, the line still said "--remeasure measures them again",
    which `--remeasure` then refuses; with one given, only the other is offered."""
    _, rates = fake_benchmarks
    _cache_lenet_ceilings(rates, peak=1e15, bandwidth=1e15)
    options = ["profile", "lenet5", "--device", "cpu", "--repeat", "1", "--warmup", "0"]
    both = runner.invoke(app, [*options, "--peak-flops", "2T", "--bandwidth", "50GB/s"], env={"COLUMNS": "300"})
    assert both.exit_code == 0, both.output
    assert "bandwidth 50.00 GB/s (given)" in both.stdout and "--remeasure" not in both.stdout
    one = runner.invoke(app, [*options, "--peak-flops", "2T"], env={"COLUMNS": "300"})
    assert one.exit_code == 0, one.output
    assert "archprof profile --remeasure measures the bandwidth again." in one.stdout
