"""archprof.tracing.shortcuts: a module whose forward reaches a replacement (a method set on
the module, a method patched on its class, a torch.nn.functional function patched) is not
answered from its attributes: the replacement runs. The oracles: the model's real forward
(its output's shape, and FlopCounterMode's count, two flops a MAC), and the same trace with
every forward run (`Passing`, under which no shortcut is taken)."""

from __future__ import annotations

import functools
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

import archprof
import archprof.tracing.shortcuts as shortcuts
from archprof.errors import ArchprofError
from archprof.tracing.recorder import Recorder
from archprof.tracing.trace import trace

F = torch.nn.functional
RELU = F.relu
SIZE = (3, 32, 32)


class Passing(TorchFunctionMode):
    """Every torch call goes through, unchanged: the forward runs as without archprof."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def _shortcut_now(module: nn.Module) -> shortcuts.Shortcut | None:
    """The shortcut a call of the module would take now: its class's, where its forward
    reaches what the class's does as defined (as a trace asks at each call)."""
    shortcut = shortcuts.class_shortcut(type(module))
    return shortcut if shortcut is not None and shortcuts.reaches_as_defined(type(module), vars(module)) else None


def _model() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)
    ).eval()


def _strided_conv_forward(module, x, weight, bias):
    return F.conv2d(x, weight, bias, 2, module.padding, module.dilation, module.groups)


def _instance_conv_forward(model, monkeypatch):
    conv = model[0]
    conv._conv_forward = lambda x, weight, bias: _strided_conv_forward(conv, x, weight, bias)


def _class_conv_forward(model, monkeypatch):
    monkeypatch.setattr(nn.Conv2d, "_conv_forward", _strided_conv_forward)


def _pooling_relu(model, monkeypatch):
    monkeypatch.setattr(F, "relu", lambda x, inplace=False: F.max_pool2d(torch.clamp(x, min=0), 2))


def _strided_conv2d(model, monkeypatch):
    conv2d = F.conv2d

    def strided(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        return conv2d(x, weight, bias, 2, padding, dilation, groups)

    monkeypatch.setattr(F, "conv2d", strided)


# Each replaces what a forward reaches, changing the model's output shape and its MACs.
REPLACEMENTS = {
    "instance _conv_forward": _instance_conv_forward,
    "class-level _conv_forward": _class_conv_forward,
    "F.relu": _pooling_relu,
    "F.conv2d": _strided_conv2d,
}


@pytest.mark.parametrize("replace", REPLACEMENTS.values(), ids=REPLACEMENTS)
def test_a_replacement_the_forward_reaches_runs(replace, monkeypatch):
    model = _model()
    trace(model, [(1, *SIZE)])  # archprof has met each class before the replacement
    replace(model, monkeypatch)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        real = model(torch.randn(1, *SIZE))
    report = archprof.analyze(model, input_size=SIZE)
    assert [tuple(output.shape) for output in report.graph.outputs] == [tuple(real.shape)]
    assert report.totals.macs * 2 == counter.get_total_flops()
    with Passing():
        expected = repr(trace(model, [(1, *SIZE)]))
    assert repr(trace(model, [(1, *SIZE)])) == expected


def test_a_function_patched_before_the_first_analysis_runs():
    """archprof's tracing is imported on the first analysis, here after the patch: the
    patched F.relu (a ReLU then a 2x2 max pool) is not taken for torch's."""
    code = (
        "import torch, archprof\n"
        "F = torch.nn.functional\n"
        "F.relu = lambda x, inplace=False: F.max_pool2d(torch.clamp(x, min=0), 2)\n"
        "model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())\n"
        "real = model(torch.randn(1, 3, 32, 32))\n"
        "report = archprof.analyze(model, input_size=(3, 32, 32))\n"
        "print(tuple(real.shape))\n"
        "print(tuple(report.graph.outputs[0].shape))\n"
    )
    shapes = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert shapes.splitlines() == ["(1, 8, 16, 16)", "(1, 8, 16, 16)"]


def test_a_batch_norm_input_check_set_on_the_module_runs():
    """`_check_input_dim` set on the module runs, as its forward calls it: here it raises,
    and archprof says what the forward says."""
    model = _model()
    checked = []

    def check(x):
        checked.append(tuple(x.shape))
        raise ValueError(f"expected a batch of 2 (got {x.shape[0]})")

    model[1]._check_input_dim = check
    with pytest.raises(ValueError, match="expected a batch of 2") as forward:
        model(torch.randn(1, *SIZE))
    checked.clear()
    with pytest.raises(ArchprofError) as traced:
        archprof.analyze(model, input_size=SIZE)
    assert str(forward.value) in str(traced.value)
    assert checked and set(checked) == {(1, 8, 32, 32)}


def test_a_batch_norm_input_check_patched_on_the_class_runs(monkeypatch):
    """A `_check_input_dim` that records an operator of its own: in the graph, as in the
    trace with every forward run."""

    def check(self, x):
        x.abs()

    model = _model()
    monkeypatch.setattr(nn.BatchNorm2d, "_check_input_dim", check)
    with Passing():
        expected = repr(trace(model, [(1, *SIZE)]))
    graph = trace(model, [(1, *SIZE)])
    assert repr(graph) == expected
    assert [op.op for op in graph.ops][1:3] == ["aten.abs", "aten.native_batch_norm"]


def test_the_shortcut_is_taken_again_once_the_patch_is_undone(monkeypatch):
    """A patch undone leaves the class's forward as defined: answered again, whether archprof
    met the class before the patch or under it (its record of the class emptied first)."""
    monkeypatch.setattr(shortcuts, "_FORWARDS", {})
    for known_before in (False, True):
        if known_before:
            assert _shortcut_now(nn.ReLU()) is not None
        with monkeypatch.context() as patch:
            _pooling_relu(None, patch)
            assert _shortcut_now(nn.ReLU()) is None
        assert _shortcut_now(nn.ReLU()) is not None


def test_a_wrapper_that_keeps_the_name_is_not_taken_for_the_function(monkeypatch):
    """functools.wraps gives a wrapper F.relu's module and name: it still runs."""
    relu = F.relu

    @functools.wraps(relu)
    def pooled(x, inplace=False):
        return F.max_pool2d(relu(x, inplace), 2)

    monkeypatch.setattr(F, "relu", pooled)
    model = _model()
    with torch.no_grad():
        real = model(torch.randn(1, *SIZE))
    report = archprof.analyze(model, input_size=SIZE)
    assert [tuple(output.shape) for output in report.graph.outputs] == [tuple(real.shape)]


class SetsUpItsStride(nn.Module):
    """Sets its convolution's `_conv_forward` at its first call (a lazy set-up): after archprof
    chose the module's shortcut, as its wrappers were put in place."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        if "_conv_forward" not in vars(self.conv):
            conv = self.conv
            conv._conv_forward = lambda x, weight, bias: _strided_conv_forward(conv, x, weight, bias)
        return self.conv(x)


class PoolsInItsReLU(nn.Module):
    """Patches F.relu for its activation's call, and puts it back."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x):
        relu = F.relu
        F.relu = lambda t, inplace=False: F.max_pool2d(torch.clamp(t, min=0), 2)
        try:
            return self.act(self.conv(x))
        finally:
            F.relu = relu


class PutsBackReLU(PoolsInItsReLU):
    """The same layers; puts torch's F.relu back before its activation's call (patched as the trace begins)."""

    def forward(self, x):
        F.relu = RELU
        return self.act(self.conv(x))


def test_a_patch_put_back_before_the_call_leaves_the_call_answered(monkeypatch):
    """Whether a call takes its shortcut is asked at the call (`reaches_as_defined`), not also
    as the trace begins: the layer is answered, and the trace records what the forward does."""
    answered = []
    answer_directly = Recorder.answer_directly

    def noted(self, own, x, shortcut):  # `own`: the module's attributes
        output = answer_directly(self, own, x, shortcut)
        answered.append((own, output is not None))
        return output

    monkeypatch.setattr(Recorder, "answer_directly", noted)
    graphs = []
    for mode in (Passing, torch.no_grad):
        _pooling_relu(None, monkeypatch)
        model = PutsBackReLU().eval()
        with mode():
            graphs.append(repr(trace(model, [(1, *SIZE)])))
        assert F.relu is RELU
    assert graphs[1] == graphs[0]
    assert (vars(model.act), True) in answered


@pytest.mark.parametrize("make", [SetsUpItsStride, PoolsInItsReLU])
def test_a_replacement_made_by_the_forward_itself_runs(make):
    with torch.no_grad():
        real = make().eval()(torch.randn(1, *SIZE))
    report = archprof.analyze(make().eval(), input_size=SIZE)
    assert [tuple(output.shape) for output in report.graph.outputs] == [tuple(real.shape)]
    with Passing():
        expected = repr(trace(make().eval(), [(1, *SIZE)]))
    assert repr(trace(make().eval(), [(1, *SIZE)])) == expected


def test_an_install_without_sources_is_answered_as_one_with_them(monkeypatch):
    """Installed without sources, a module's __file__ is its .pyc, and its functions' code
    names the .py it was compiled from: the class is still the one torch defines."""
    monkeypatch.setattr(shortcuts, "_FORWARDS", {})
    monkeypatch.setattr(nn.modules.conv, "__file__", nn.modules.conv.__file__ + "c")
    monkeypatch.setattr(F, "__file__", F.__file__ + "c")
    assert _shortcut_now(nn.Conv2d(3, 8, 3)) is not None
    assert _shortcut_now(nn.ReLU()) is not None
