"""A model that catches what one of its modules raised and goes on without it: that call
returned nothing, and what the model does next is its own (or the next module's), not the
raising module's. The call was left open, so the model's later product was put on the raising
module's row, with the model's output, and `profile` reported a shape and a FLOPs mismatch
for it. Oracles: each row's matrix product counted by hand (in · out MACs), FlopCounterMode's
total for a real forward (its count per module is thrown by the raise as archprof's was: it
puts the model's later work on the raising module), the real call's output (none), and the
real forward's allocations. An uncaught raise is still named where it happened."""

import contextlib

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import archprof
from archprof.errors import ArchprofError
from tests.memory_oracle import profiled_peaks


class Refuses(nn.Module):
    def forward(self, x):
        y = x * 2  # some work first, then the refusal
        raise ValueError(f"cannot take {tuple(y.shape)}")


def _rows(report) -> dict[str, tuple[str, int]]:
    """Each row's output shape and MACs, by its layer."""
    columns = (report.columns[name] for name in ("layer", "output_shape", "macs"))
    return {layer: (shape, macs) for layer, shape, macs in zip(*columns, strict=True)}


class TriesFirst(nn.Module):
    """Tries an optional module, carries on without it where it raises."""

    def __init__(self, catch: bool = True) -> None:
        super().__init__()
        self.catch = catch
        self.optional = Refuses()
        self.fc = nn.Linear(8, 8)
        self.w = nn.Parameter(torch.randn(8, 4))

    def forward(self, x):
        with contextlib.suppress(ValueError) if self.catch else contextlib.nullcontext():
            x = self.optional(x)
        x = self.fc(x)
        return x @ self.w  # the model's own product, after the caught raise


def test_what_the_model_does_after_a_caught_raise_is_its_own():
    model = TriesFirst()
    report = archprof.analyze(model, input_size=(8,))
    rows = _rows(report)
    assert rows["optional"] == ("", 0)  # no tensor returned; its x * 2 is elementwise
    assert rows["fc"] == ("1x8", 8 * 8)  # in · out
    assert rows[""] == ("1x4", 8 * 4)  # the model's own product, (1, 8) @ (8, 4)
    with FlopCounterMode(display=False) as counter:
        output = model(torch.randn(1, 8))
    assert report.totals.macs == counter.get_total_flops() // 2
    assert report.graph.outputs[0].shape == tuple(output.shape)
    assert report.totals.param_count == sum(p.numel() for p in model.parameters())


def test_profile_finds_the_prediction_of_a_caught_raise_as_measured():
    result = archprof.profile(
        TriesFirst(), input_size=(8,), device="cpu", warmup=0, repeat=1, peak_flops="10G", bandwidth="10GB/s"
    )
    assert all(check.status != "mismatch" for check in result.measured.checks), result.measured.checks


def test_a_raise_the_model_does_not_catch_is_named_where_it_happened():
    with pytest.raises(ArchprofError, match=r"failed in module 'optional' \(Refuses\) on input 1x8: .*cannot take"):
        archprof.analyze(TriesFirst(catch=False), input_size=(8,))


class RefusesAfterAWideCopy(nn.Module):
    def forward(self, x):
        wide = torch.cat([x] * 16)  # held by this frame, which Python frees once the raise is caught
        raise ValueError(f"cannot take {tuple(wide.shape)}")


class ThenThreeMaps(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.optional = RefusesAfterAWideCopy()

    def forward(self, x):
        with contextlib.suppress(ValueError):
            x = self.optional(x)
        return x.relu().relu().relu()


def test_what_a_caught_raise_made_is_let_go_of_as_python_lets_go_of_it():
    """Keeping the exception for the error kept its traceback, the raising forward's frame and
    its wide copy: 12,288 B over the real forward's peak."""
    x = torch.randn(4, 256)
    peak = archprof.analyze(ThenThreeMaps(), input_size=(256,), batch=4).totals.peak_activation_bytes
    _, lasting = profiled_peaks(ThenThreeMaps(), x)
    assert peak == lasting + x.nbytes


def _refuse(module, args, *rest):
    raise ValueError("a hook refuses")


class HookRefuses(nn.Module):
    """An optional layer whose own forward pre-hook (`before`) or forward hook refuses, caught."""

    def __init__(self, before: bool) -> None:
        super().__init__()
        self.optional = nn.Linear(8, 8)
        register = self.optional.register_forward_pre_hook if before else self.optional.register_forward_hook
        register(_refuse)
        self.fc = nn.Linear(8, 8)
        self.w = nn.Parameter(torch.randn(8, 4))

    def forward(self, x):
        with contextlib.suppress(ValueError):
            x = self.optional(x)
        return self.fc(x) @ self.w


@pytest.mark.parametrize("before", [True, False], ids=["pre-hook", "forward hook"])
def test_a_hook_of_the_modules_own_that_raises_closes_its_call_too(before):
    """No forward of archprof's sees a hook's raise: the call stayed open, the model's product
    went on the layer's row, and the model's own row was lost."""
    model = HookRefuses(before)
    rows = _rows(archprof.analyze(model, input_size=(8,)))
    # Refused before its forward: nothing ran; after it: its product ran, its output made.
    assert rows["optional"] == (("", 0) if before else ("1x8", 8 * 8))
    assert rows["fc"] == ("1x8", 8 * 8)
    assert rows[""] == ("1x4", 8 * 4)
    result = archprof.profile(
        HookRefuses(before), input_size=(8,), device="cpu", warmup=0, repeat=1, peak_flops="10G", bandwidth="10GB/s"
    )
    assert all(check.status != "mismatch" for check in result.measured.checks), result.measured.checks
