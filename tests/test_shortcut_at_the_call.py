"""archprof.tracing.shortcuts: whether a call is answered by its shortcut is decided at the
call (`reaches_as_defined`), not also as the trace begins. A torch.nn.functional function
patched as the trace begins and put back by the forward before its layer's call: the layer
is answered, and the trace records what the forward records (`Passing`: every forward run)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from archprof.tracing.recorder import Recorder
from archprof.tracing.trace import trace

F = torch.nn.functional
RELU = F.relu


class Passing(TorchFunctionMode):
    """Every torch call goes through, unchanged: the forward runs as without archprof."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


class PutsBackReLU(nn.Module):
    """Puts torch's F.relu back before its activation's call."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x):
        F.relu = RELU
        return self.act(self.conv(x))


def _pooling_relu(x, inplace=False):
    return F.max_pool2d(torch.clamp(x, min=0), 2)


def test_a_patch_put_back_before_the_call_leaves_the_call_answered(monkeypatch):
    answered = []
    answer_directly = Recorder.answer_directly

    def counted(self, module, x, shortcut):
        output = answer_directly(self, module, x, shortcut)
        answered.append((type(module).__name__, output is not None))
        return output

    monkeypatch.setattr(Recorder, "answer_directly", counted)
    model = PutsBackReLU().eval()
    graphs = []
    for mode in (Passing, None):
        monkeypatch.setattr(F, "relu", _pooling_relu)  # patched as the trace begins
        with mode() if mode is not None else torch.no_grad():
            graphs.append(repr(trace(model, [(1, 3, 16, 16)])))
        assert F.relu is RELU
    assert graphs[1] == graphs[0]
    assert ("ReLU", True) in answered


@pytest.mark.parametrize("patched", [True, False])
def test_a_patch_left_in_place_runs_the_patch(patched, monkeypatch):
    """The same model without the put-back: the patched F.relu runs (its pooling halves the map)."""

    class KeepsIt(PutsBackReLU):
        def forward(self, x):
            return self.act(self.conv(x))

    if patched:
        monkeypatch.setattr(F, "relu", _pooling_relu)
    graph = trace(KeepsIt().eval(), [(1, 3, 16, 16)])
    assert graph.outputs[0].shape == ((1, 8, 8, 8) if patched else (1, 8, 16, 16))
