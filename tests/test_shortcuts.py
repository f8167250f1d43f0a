"""archprof.tracing.shortcuts: a module call answered without its forward records what the forward
records. The oracle is the same trace under a torch-function mode that passes every call
through (`Passing`): no shortcut is taken there, and the module's forward runs. A profile
function watching the functional call each forward makes (`spy`) says whether it ran."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.overrides import TorchFunctionMode

import archprof
import archprof.tracing.recorder
from archprof.errors import ArchprofError
from archprof.tracing.trace import trace

F = torch.nn.functional


class Passing(TorchFunctionMode):
    """Every torch call goes through, unchanged: the forward runs as without archprof."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def _weight_on_the_instance() -> nn.Module:
    """A convolution whose weight is a plain tensor set on the instance, out of its
    `_parameters` (as the old `nn.utils.weight_norm` sets the weight it computes): Python's
    lookup finds it there before nn.Module's `__getattr__` searches the tables."""
    conv = nn.Conv2d(4, 8, 3, device="meta")
    conv.__dict__["weight"] = conv._parameters.pop("weight").detach()
    return conv


def _statistic_in_another_table() -> nn.Module:
    """A batch norm whose running variance is a parameter, not a buffer: `self.running_var`
    finds it all the same, where the shortcut reads the buffers only."""
    norm = nn.BatchNorm2d(4, device="meta")
    norm.register_parameter("running_var", nn.Parameter(norm._buffers.pop("running_var"), requires_grad=False))
    return norm


# Module, input shape, and the functional call its forward makes (the spy's target).
ANSWERED = [
    (_weight_on_the_instance, (1, 4, 6, 6), (F, "conv2d")),
    (lambda: nn.Conv1d(4, 6, 3, stride=2, padding=1, bias=False), (2, 4, 11), (F, "conv1d")),
    (lambda: nn.Conv2d(4, 8, 3, stride=2, padding=1), (2, 4, 9, 9), (F, "conv2d")),
    (lambda: nn.Conv2d(8, 8, (3, 5), padding=(2, 1), dilation=(2, 1), groups=4), (1, 8, 12, 10), (F, "conv2d")),
    (lambda: nn.Conv3d(2, 4, 3, stride=(1, 2, 2)), (1, 2, 5, 8, 8), (F, "conv3d")),
    (lambda: nn.BatchNorm1d(6), (3, 6), (F, "batch_norm")),
    (lambda: nn.BatchNorm1d(6, affine=False), (3, 6, 7), (F, "batch_norm")),
    (lambda: nn.BatchNorm2d(4, momentum=None, eps=1e-3), (2, 4, 5, 5), (F, "batch_norm")),
    (lambda: nn.BatchNorm3d(4), (1, 4, 2, 3, 3), (F, "batch_norm")),
    (lambda: nn.LayerNorm(8), (2, 5, 8), (F, "layer_norm")),
    (lambda: nn.LayerNorm((5, 8), elementwise_affine=False, eps=1e-6), (2, 5, 8), (F, "layer_norm")),
    (lambda: nn.LayerNorm(8, bias=False), (8,), (F, "layer_norm")),
    (lambda: nn.ReLU(), (2, 3, 4, 4), (F, "relu")),
    (lambda: nn.ReLU(inplace=True), (2, 3, 4, 4), (F, "relu")),
    (lambda: nn.ReLU6(), (2, 3, 4), (F, "hardtanh")),
    (lambda: nn.ReLU6(inplace=True), (2, 3, 4), (F, "hardtanh")),
    (lambda: nn.Hardtanh(-2.0, 2.0), (2, 3), (F, "hardtanh")),
    (lambda: nn.Hardtanh(0, 6), (2, 3), (F, "hardtanh")),
    (lambda: nn.SiLU(), (2, 5), (F, "silu")),
    (lambda: nn.SiLU(inplace=True), (2, 5), (F, "silu")),
    (lambda: nn.Hardswish(), (2, 5), (F, "hardswish")),
    (lambda: nn.Hardswish(inplace=True), (2, 5), (F, "hardswish")),
    (lambda: nn.Hardsigmoid(), (2, 5), (F, "hardsigmoid")),
    (lambda: nn.Hardsigmoid(inplace=True), (2, 5), (F, "hardsigmoid")),
    (lambda: nn.Sigmoid(), (2, 5), (torch, "sigmoid")),
    (lambda: nn.GELU(), (2, 5), (F, "gelu")),
]

# Calls a shortcut does not know: the forward runs, and records the same as without archprof.
FORWARD_RUNS = [
    (lambda: nn.Conv2d(4, 8, 3, padding="same"), (1, 4, 8, 8), (F, "conv2d")),
    (lambda: nn.Conv2d(4, 8, 4, padding="valid"), (1, 4, 8, 8), (F, "conv2d")),
    (lambda: nn.Conv2d(4, 8, 3, padding=1, padding_mode="reflect"), (1, 4, 8, 8), (F, "conv2d")),
    (lambda: nn.Conv2d(4, 8, 3), (4, 8, 8), (F, "conv2d")),  # unbatched
    (lambda: nn.Conv1d(4, 8, 3), (4, 8), (F, "conv1d")),  # unbatched
    (lambda: nn.BatchNorm2d(4, track_running_stats=False), (2, 4, 3, 3), (F, "batch_norm")),
    (lambda: nn.BatchNorm2d(4), (0, 4, 3, 3), (F, "batch_norm")),  # empty
    (lambda: nn.LayerNorm(8), (2, 8, 5), (F, "layer_norm")),  # refused: not the last dimension
    (lambda: nn.Hardtanh(), (2, 3), (F, "hardtanh")),  # its defaults, left out by the dispatcher
    (lambda: nn.Hardtanh(-3.0, 1.0), (2, 3), (F, "hardtanh")),
    (lambda: nn.GELU(approximate="tanh"), (2, 5), (F, "gelu")),
    (_statistic_in_another_table, (2, 4, 3, 3), (F, "batch_norm")),
]


def _model(make) -> nn.Module:
    return nn.Sequential(make(), nn.Flatten()).to("meta").eval()


@pytest.fixture
def spy():
    """`spy(owner, name)`: the list of the calls of `owner.name` from then on, seen by a profile
    function. Nothing is patched: a shortcut stands for the function as torch defines it, and
    a patched one (a spy put in its place) runs instead."""
    calls, watched = [], {}

    def profile(frame, event, arg):
        if event == "call":
            name = watched.get(id(frame.f_code))
        elif event == "c_call":
            name = watched.get(id(arg))
        else:
            return
        if name is not None:
            calls.append(name)

    def start(owner, name) -> list:
        function = getattr(owner, name)
        watched[id(getattr(function, "__code__", function))] = name  # torch's own: held there
        return calls

    sys.setprofile(profile)
    yield start
    sys.setprofile(None)


def _traced(model: nn.Module, shape, **options) -> str:
    """The graph's repr, or the error's message where the forward is refused."""
    try:
        return repr(trace(model, [shape], **options))
    except ArchprofError as error:
        return f"refused: {error}"


def _forward_traced(model: nn.Module, shape, **options):
    with Passing():
        return _traced(model, shape, **options)


def _ids(cases):
    return [f"{make()!r}-{shape}" for make, shape, _ in cases]


@pytest.mark.parametrize(("make", "shape", "reached"), ANSWERED, ids=_ids(ANSWERED))
def test_an_answered_call_records_what_its_forward_records(make, shape, reached, spy):
    model = _model(make)
    calls = spy(*reached)
    expected = _forward_traced(model, shape)
    assert calls, "the oracle must run the forward"
    calls.clear()
    assert _traced(model, shape) == expected
    assert calls == [], "the shortcut should have answered the call"


@pytest.mark.parametrize(("make", "shape", "reached"), FORWARD_RUNS, ids=_ids(FORWARD_RUNS))
def test_a_call_no_shortcut_knows_runs_the_forward(make, shape, reached, spy):
    model = _model(make)
    calls = spy(*reached)
    expected = _forward_traced(model, shape)
    calls.clear()
    assert _traced(model, shape) == expected
    assert calls


@settings(max_examples=60, deadline=None)
@given(
    dims=st.integers(1, 3),
    kernel=st.integers(1, 4),
    stride=st.integers(1, 3),
    padding=st.integers(0, 2),
    dilation=st.integers(1, 2),
    groups=st.sampled_from([1, 2]),
    bias=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
    channels_last=st.booleans(),
)
def test_convolutions_of_every_kind_record_what_their_forward_records(
    dims, kernel, stride, padding, dilation, groups, bias, dtype, channels_last
):
    conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1]
    size = dilation * (kernel - 1) + 1 + stride
    model = nn.Sequential(
        conv(4, 6, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=bias),
        nn.BatchNorm1d(6) if dims == 1 else (nn.BatchNorm2d(6) if dims == 2 else nn.BatchNorm3d(6)),
        nn.ReLU(inplace=True),
    )
    model = model.to("meta", dtype)
    if channels_last and dims == 2:
        model = model.to(memory_format=torch.channels_last)
    shape = (2, 4, *[size + d for d in range(dims)])
    assert _traced(model, shape) == _forward_traced(model, shape)


class HalfInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x.half())


@pytest.mark.parametrize(
    ("model", "size", "says"),
    [
        (
            nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(5)),
            (3, 8, 8),
            "running_mean should contain 4 elements not 5",
        ),
        (nn.Sequential(nn.Conv2d(3, 4, 3)), (5, 8, 8), "expects 3 input channels, got 5"),
        (HalfInput(), (3, 8, 8), "Input type (c10::Half) and bias type (float) should be the same"),
    ],
)
def test_a_refused_call_says_what_the_forward_says(model, size, says):
    """Statistics of another size than the channels, a convolution given other channels or
    an input of another dtype than its weights: the error of the forward, word for word."""
    model = model.to("meta")
    with pytest.raises(ArchprofError) as answered:
        archprof.analyze(model, input_size=size)
    with Passing(), pytest.raises(ArchprofError) as forward:
        archprof.analyze(model, input_size=size)
    assert str(answered.value) == str(forward.value)
    assert says in str(answered.value)


def test_no_shortcut_where_the_module_forward_is_not_the_one_known(monkeypatch, spy):
    """A forward of the module's own, a subclass, a class forward patched since import, and
    a training step's trace: the forward runs each time."""
    calls = spy(F, "relu")

    class MyReLU(nn.ReLU):
        pass

    own = nn.ReLU()
    own.forward = lambda x: F.relu(x) * 2
    for module in (own, MyReLU()):
        calls.clear()
        trace(nn.Sequential(module), [(2, 3)])
        assert calls == ["relu"]
    calls.clear()
    trace(nn.Sequential(nn.Linear(3, 3), nn.ReLU()).to("meta"), [(2, 3)], training=True)
    assert calls == ["relu"]
    monkeypatch.setattr(nn.ReLU, "forward", lambda self, x: F.relu(x + 1))
    calls.clear()
    graph = trace(nn.Sequential(nn.ReLU()), [(2, 3)])
    assert calls == ["relu"] and [op.op for op in graph.ops] == ["aten.add", "aten.relu"]


@pytest.mark.filterwarnings("ignore:.*weight_norm.*is deprecated:FutureWarning")
def test_hooks_still_see_an_answered_call():
    """Pre-hooks run before the call (weight norm's recomputes the weight there) and forward
    hooks after it, replacing its output as they may."""
    conv = nn.utils.weight_norm(nn.Conv2d(3, 4, 3)).to("meta")
    doubled = nn.ReLU()
    doubled.register_forward_hook(lambda module, args, output: output * 2)
    model = nn.Sequential(conv, doubled)
    ops = [op.op for op in trace(model, [(1, 3, 8, 8)]).ops]
    assert ops == _forward_ops(model, (1, 3, 8, 8))
    assert ops[-2:] == ["aten.relu", "aten.mul"] and "aten.convolution" in ops and ops.index("aten.convolution") > 0


def _forward_ops(model, shape):
    with Passing():
        return [op.op for op in trace(model, [shape]).ops]


def test_a_model_with_real_weights_is_answered_on_its_stand_ins(spy):
    """A model built on the CPU is traced on meta stand-ins put in place for the call
    (`functional_call`), cast to float16 here: the shortcut reads the stand-ins, as the
    forward does."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True)).eval()
    calls = spy(F, "conv2d")
    expected = _forward_traced(model, (2, 3, 8, 8), dtype=torch.float16)
    calls.clear()
    graph = trace(model, [(2, 3, 8, 8)], dtype=torch.float16)
    assert repr(graph) == expected and calls == []
    assert {op.inputs[1].dtype for op in graph.ops if op.op == "aten.convolution"} == {torch.float16}
    assert all(not p.is_meta for p in model.parameters())


class _FunctionalNorm(nn.BatchNorm2d):
    """A batch norm of a forward of its own: no shortcut answers the module; its F.batch_norm
    call is handed to the recorder by `DeviceKernels`."""

    def __init__(self, channels, batch_statistics=False, running=True, momentum=0.1, eps=1e-5):
        super().__init__(channels)
        self.batch_statistics, self.running, self.options = batch_statistics, running, (momentum, eps)

    def forward(self, x):
        mean, var = (self.running_mean, self.running_var) if self.running else (None, None)
        return F.relu(F.batch_norm(x, mean, var, self.weight, self.bias, self.batch_statistics, *self.options))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"batch_statistics": True},
        {"batch_statistics": True, "running": False},
        {"momentum": 0, "eps": 1},  # ints, as the dispatcher hands floats to the mode
    ],
    ids=repr,
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_functional_batch_norm_skips_the_dispatcher_and_records_the_same(options, dtype, monkeypatch):
    """The oracle: the same trace with the recorder refusing the call, which then goes down
    through the C++ dispatcher and back into the recorder."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), _FunctionalNorm(4, **options)).to("meta", dtype).eval()
    answered = _operators_answered(model, (2, 3, 6, 6), monkeypatch)
    assert answered == ["aten::native_batch_norm"]


def _operators_answered(model: nn.Module, shape, monkeypatch) -> list[str]:
    """The operators `DeviceKernels` hands the recorder straight in the model's trace, once
    that trace is checked against the oracle: the same trace with the recorder refusing
    them, each then going down through the C++ dispatcher and back into the recorder."""
    answering = archprof.tracing.recorder.Recorder.answering
    monkeypatch.setattr(archprof.tracing.recorder.Recorder, "answering", lambda self, x: None)
    expected = _traced(model, shape)
    answered = []

    def spy(self, x):
        answer = answering(self, x)

        def noted(func, args):
            answered.append(func.name())
            return answer(func, args)

        return noted if answer is not None else None

    monkeypatch.setattr(archprof.tracing.recorder.Recorder, "answering", spy)
    assert _traced(model, shape) == expected
    return answered


# How Linear.cpp views a flattened product back to the input's leading sizes: `view` up to
# PyTorch 2.14, `_unsafe_view` from 2.15 (tests/test_linear_bias_road.py holds archprof's
# operators to a CPU's under torch.profiler).
VIEW_BACK = "aten::view" if torch.__version__ < (2, 15) else "aten::_unsafe_view"


class _Transposed(nn.Module):
    def forward(self, x):
        return x.transpose(-1, -2)


@pytest.mark.parametrize(
    ("sample", "transposed", "layers_answered"),
    [
        ((8,), False, 2),  # a matrix: t and addmm
        ((5, 8), False, 2),  # rows viewed, t, addmm, viewed back
        ((3, 5, 8), False, 2),
        ((8, 5), True, 1),  # not contiguous: a product and the bias added, through the dispatcher
    ],
    ids=repr,
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_linear_layers_addmm_skips_the_dispatcher_and_records_the_same(
    sample, transposed, layers_answered, dtype, monkeypatch
):
    """Two linear layers with a bias, at batch 2: where at::linear makes one addmm its
    operators go to the recorder straight, in the order and with the arguments the composite
    sends them down the dispatcher."""
    first = [_Transposed()] if transposed else []
    model = nn.Sequential(*first, nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4)).to("meta", dtype).eval()
    answered = _operators_answered(model, (2, *sample), monkeypatch)
    addmm = ["aten::t", "aten::addmm"]
    one_layer = addmm if len(sample) == 1 else ["aten::view", *addmm, VIEW_BACK]
    assert answered == one_layer * layers_answered  # the second's input, the first's output, is contiguous


def _analysed_in_a_fresh_process_without(module: str, layers: str, input_size: tuple[int, ...]) -> None:
    """`torch.nn.Sequential(<layers>)` analysed in a fresh Python, which then has not imported `module`."""
    code = (
        "import sys, torch, archprof\n"
        f"model = torch.nn.Sequential({layers})\n"
        f"archprof.analyze(model, input_size={input_size})\n"
        f"assert {module!r} not in sys.modules, 'the analysis imported {module}'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_asking_how_linear_views_its_product_back_imports_no_dynamo():
    """The shortcut asks PyTorch once how Linear.cpp views a flattened product back, on a CPU:
    on meta the product's decomposition imports torch._dynamo, 1.6 s of a CLI call."""
    _analysed_in_a_fresh_process_without("torch._dynamo", "torch.nn.Linear(8, 6)", (5, 8))


def test_a_functional_batch_norm_goes_through_the_dispatcher_in_a_training_step(monkeypatch):
    """Autograd must see the call: the recorder is not handed it."""
    model = nn.Sequential(_FunctionalNorm(4, batch_statistics=True)).to("meta")
    monkeypatch.setattr(
        archprof.tracing.recorder.Recorder, "answering", lambda *a: pytest.fail("handed to the recorder")
    )
    graph = trace(model, [(2, 4, 3, 3)], training=True)
    assert "aten.native_batch_norm" in [op.op for op in graph.ops] and graph.backward_ops


# timm's BatchNormAct2d, made from timm.layers: its batch norm answered, its drop and act then
# called as module calls. Each case's input is (2, 4, 5, 5).
TIMM_ANSWERED = {
    "relu": lambda layers: layers.BatchNormAct2d(4),
    "hardswish": lambda layers: layers.BatchNormAct2d(4, act_layer=nn.Hardswish, momentum=None, eps=1e-3),
    "silu-not-in-place": lambda layers: layers.BatchNormAct2d(4, act_layer=nn.SiLU, inplace=False),
    "no-act": lambda layers: layers.BatchNormAct2d(4, apply_act=False),
    "no-affine": lambda layers: layers.BatchNormAct2d(4, affine=False),
    "drop-block": lambda layers: layers.BatchNormAct2d(4, drop_layer=lambda: layers.DropBlock2d(0.1)),
    "dropout": lambda layers: layers.BatchNormAct2d(4, drop_layer=lambda: nn.Dropout(0.2)),
    # A drop that records an operator of its own, answered by its own shortcut.
    "hardtanh-drop": lambda layers: layers.BatchNormAct2d(4, drop_layer=lambda: nn.Hardtanh(-2.0, 2.0)),
}


def _norm_act(layers, **options) -> nn.Module:
    return _model(lambda: layers.BatchNormAct2d(4, **options))


def _in_training(model):
    model[0].train()  # the model itself in evaluation
    return model


def _act_deleted(model):
    del model[0].act
    return model


def _own_forward(model):
    model[0].forward = lambda x: F.relu(F.batch_norm(x, None, None, training=True))
    return model


# The forward runs: what the shortcut does not know, and what must fail as the forward fails.
TIMM_FORWARD_RUNS = {
    "training": (lambda layers: _in_training(_norm_act(layers)), (2, 4, 5, 5)),
    "no-running-stats": (lambda layers: _norm_act(layers, track_running_stats=False), (2, 4, 5, 5)),
    "3-d input": (_norm_act, (4, 5, 5)),  # the forward's assertion
    "empty input": (_norm_act, (0, 4, 5, 5)),
    "other channels": (_norm_act, (2, 3, 5, 5)),
    "act deleted": (lambda layers: _act_deleted(_norm_act(layers)), (2, 4, 5, 5)),
    "own forward": (lambda layers: _own_forward(_norm_act(layers)), (2, 4, 5, 5)),
}


@pytest.mark.parametrize("make", TIMM_ANSWERED.values(), ids=TIMM_ANSWERED)
def test_timm_batch_norm_act_is_answered_and_records_what_its_forward_records(make, hub_packages, spy):
    """The oracle: the same model traced with its forwards run (`Passing`), F.batch_norm
    reached there and not here; the drop and act are still their own module calls."""
    model = _model(lambda: make(hub_packages[1].layers))
    calls = spy(F, "batch_norm")
    expected = _forward_traced(model, (2, 4, 5, 5))
    assert calls, "the oracle must run the forward"
    calls.clear()
    graph = trace(model, [(2, 4, 5, 5)])
    assert repr(graph) == expected
    assert calls == [], "the shortcut should have answered the call"
    assert [call.path for call in graph.module_calls][1:4] == ["0", "0.drop", "0.act"]


@pytest.mark.parametrize(("make", "shape"), TIMM_FORWARD_RUNS.values(), ids=TIMM_FORWARD_RUNS)
def test_timm_batch_norm_act_the_shortcut_does_not_know_runs_its_forward(make, shape, hub_packages, spy):
    model = make(hub_packages[1].layers)
    calls = spy(F, "batch_norm")
    expected = _forward_traced(model, shape)
    calls.clear()
    assert _traced(model, shape) == expected
    assert calls or expected.startswith("refused: ")


def test_timm_batch_norm_act_children_are_hooked_as_module_calls(hub_packages):
    """A forward hook on the act replaces its output (doubled), as it does in the forward."""
    norm = hub_packages[1].layers.BatchNormAct2d(4)
    norm.act.register_forward_hook(lambda module, args, output: output * 2)
    model = _model(lambda: norm)
    ops = [op.op for op in trace(model, [(2, 4, 5, 5)]).ops]
    assert ops == _forward_ops(model, (2, 4, 5, 5))
    assert ops[:3] == ["aten.native_batch_norm", "aten.relu_", "aten.mul"]


def test_timm_batch_norm_act_forward_patched_runs_the_patch(hub_packages, monkeypatch, spy):
    """A class forward replaced before archprof first meets the class, or after: the patch
    runs (an addition after the batch norm), until it is taken back."""
    import archprof.tracing.shortcuts as shortcuts

    norm_act = hub_packages[1].layers.BatchNormAct2d
    original = norm_act.forward
    model = _model(lambda: norm_act(4))
    calls = spy(F, "batch_norm")

    def patched(self, x):
        return original(self, x) + 1

    for first_sight in (True, False):
        if first_sight:
            monkeypatch.delitem(shortcuts._SHORTCUTS, norm_act, raising=False)
            monkeypatch.delitem(shortcuts._FORWARDS, norm_act, raising=False)
        monkeypatch.setattr(norm_act, "forward", patched)
        calls.clear()
        assert [op.op for op in trace(model, [(2, 4, 5, 5)]).ops][-3:-1] == ["aten.relu_", "aten.add"]
        assert calls == ["batch_norm"]
        monkeypatch.setattr(norm_act, "forward", original)
        calls.clear()
        assert [op.op for op in trace(model, [(2, 4, 5, 5)]).ops][-2] == "aten.relu_"
        assert calls == [], "the class's own forward is answered again"


def test_archprof_does_not_import_timm():
    """timm stays optional: a model of torch.nn alone is analysed without it."""
    _analysed_in_a_fresh_process_without("timm", "torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)", (3, 8, 8))
