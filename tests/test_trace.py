import contextlib
import copy
import inspect
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import prune

import archprof
from archprof.errors import ArchprofError, ArchprofWarning
from archprof.tracing.trace import trace
from tests.models import Calls, FunctionalOps, Residual, Uncounted, WithUnusedHead

ROOT = Path(__file__).parents[1]


def test_functional_ops_are_captured_and_attributed():
    report = archprof.analyze(FunctionalOps(), input_size=(3, 8, 8))
    rows = report.rows()
    ops = {op for r in rows for op in r["operators"]}
    for op in ("convolution", "relu", "add", "cat", "max_pool2d_with_indices", "view", "mm"):
        assert op in ops
    conv_calls = [r["call"] for r in rows if r["layer"] == "conv"]
    assert conv_calls == [0, 1]  # a module called twice shows two calls
    # The functional ops ran directly in the root module.
    root_ops = {op for r in rows if r["layer"] == "" for op in r["operators"]}
    assert "relu" in root_ops and "cat" in root_ops and "mm" in root_ops
    # MACs: two 3x3 convolutions 3->4 on 8x8 (padding 1), and a [1,128] @ [128,5] product.
    conv_macs = 4 * 8 * 8 * 3 * 3 * 3
    assert report.totals.macs == 2 * conv_macs + 128 * 5
    # Both conv calls use the same weights: counted once.
    assert report.totals.param_count == sum(p.numel() for p in FunctionalOps().parameters())


def test_residual_add_is_counted_in_the_block():
    report = archprof.analyze(Residual(), input_size=(4, 6, 6), batch=2)
    rows = report.rows()
    add_rows = [r for r in rows if r["layer"] == "" and "add_" in r["operators"]]
    assert len(add_rows) == 1
    assert add_rows[0]["elementwise_flops"] == 2 * 4 * 6 * 6  # one FLOP per output element
    relu_calls = [r["call"] for r in rows if r["layer"] == "relu"]
    assert relu_calls == [0, 1]


def test_not_counted_operators_are_listed_never_zero_in_silence():
    report = archprof.analyze(Uncounted(), input_size=(6,))
    assert report.totals.not_counted == {"archprof_tests.uncosted": 1}
    assert report.totals.macs == 36


def test_parameters_of_a_module_never_called_are_kept():
    report = archprof.analyze(WithUnusedHead(), input_size=(4,))
    assert report.totals.param_count == 4 * 4 + 4 + 4 * 2 + 2
    aux = [r for r in report.rows() if r["layer"] == "aux"]
    assert aux and aux[0]["call"] == -1


@pytest.mark.parametrize("training", [False, True])
def test_callers_model_is_never_touched(training):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    model.train(training)
    before = copy.deepcopy(model.state_dict())
    archprof.analyze(model, input_size=(3, 8, 8))
    after = model.state_dict()
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert after[name].device.type == "cpu"
        assert torch.equal(tensor, after[name]), name
    assert model.training is training
    assert all(m.training is training for m in model.modules())


class _Stateful(nn.Module):
    """A forward that changes its module: it counts its calls, keeps the shapes it saw,
    caches a position table for its input length (made on the input's device, over the
    one it was built with) and makes a submodule and a buffer on its first call."""

    def __init__(self, fail: bool = False):
        super().__init__()
        self.linear = nn.Linear(16, 16)
        self.calls = 0
        self.seen = []
        self.cache = torch.zeros(8, 16)
        self.by_length = {}
        self.fail = fail

    def forward(self, x):
        self.calls += 1
        self.seen.append(tuple(x.shape))
        if not hasattr(self, "made"):
            self.made = nn.Identity()
            self.register_buffer("table", torch.ones(16, device=x.device))
        self.cache = torch.arange(x.shape[1], dtype=x.dtype, device=x.device)[:, None].expand(-1, 16)
        self.by_length[x.shape[1]] = self.cache
        if self.fail:
            raise ValueError("no more")
        return self.made(self.linear(x)) + self.cache


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_what_a_forward_changes_of_the_callers_model_is_put_back(training, device):
    model = _Stateful().to(device)
    seen, by_length, cache = model.seen, model.by_length, model.cache
    report = archprof.analyze(model, input_size=(8, 16), training=training)
    assert report.totals.macs == 8 * 16 * 16  # it did run
    assert (model.calls, "made" in vars(model), list(model._modules)) == (0, False, ["linear"])
    assert list(model._buffers) == []
    assert model.cache is cache and model.seen is seen and seen == [] and model.by_length is by_length
    assert by_length == {}
    if device == "cpu":  # the next real forward works: no meta tensor left in a cache
        assert model(torch.rand(1, 8, 16)).device.type == "cpu" and model.calls == 1


def test_a_forward_that_fails_leaves_the_callers_model_as_it_was():
    model = _Stateful(fail=True)
    cache = model.cache
    with pytest.raises(ArchprofError, match="no more"):
        archprof.analyze(model, input_size=(8, 16))
    assert (model.calls, model.seen, model.by_length, "made" in vars(model)) == (0, [], {}, False)
    assert model.cache is cache


class FrozenNorm(nn.Sequential):
    """Its own `train` keeps the BatchNorm in eval mode, as detection backbones do."""

    def __init__(self):
        super().__init__(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())

    def train(self, mode=True):
        super().train(mode)
        self[1].eval()
        return self


def _updates_running_statistics(graph) -> bool:
    return any(op.op == "aten.add_" and op.inputs[0].name.endswith("num_batches_tracked") for op in graph.ops)


def test_a_models_own_train_is_respected_and_every_mode_put_back():
    from archprof.tracing.trace import trace

    model = FrozenNorm().to("meta")
    model.eval()
    model[2].train()  # mixed modes: each module gets its own back
    graph = trace(model, [(1, 3, 8, 8)], training=True)
    assert not _updates_running_statistics(graph)  # the frozen norm stayed in eval
    assert [m.training for m in model] == [False, False, True] and model.training is False

    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).to("meta").eval()
    assert _updates_running_statistics(trace(plain, [(1, 3, 8, 8)], training=True))
    assert not any(m.training for m in plain.modules())


class _ModeAsProperty(nn.Module):
    """A module whose `training` flag is a property, kept in an attribute of another name:
    its forward doubles its output in training mode only."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    @property
    def training(self):
        return self._mode

    @training.setter
    def training(self, value):
        self.__dict__["_mode"] = value

    def forward(self, x):
        return self.linear(x) * 2 if self.training else self.linear(x)


@pytest.mark.parametrize("training", [False, True])
def test_a_mode_kept_by_a_property_is_set_through_it_and_put_back(training):
    model = _ModeAsProperty().train(not training)
    graph = trace(model, [(1, 4)], training=training)
    assert any(op.op == "aten.mul" for op in graph.ops) == training  # the forward ran in the mode asked
    assert model.training is (not training) and "training" not in model.__dict__  # nothing left behind


def test_failing_forward_names_the_module_and_its_input():
    with pytest.raises(ArchprofError) as error:
        archprof.analyze("lenet5", input_size=(3, 224, 224))
    message = str(error.value)
    assert "'features.0'" in message or "Conv2d" in message
    assert "1x3x224x224" in message
    assert "\n" not in message


def test_dtype_sets_parameter_and_activation_bytes():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    half = archprof.analyze(model, input_size=(3, 8, 8), dtype=torch.float16)
    full = archprof.analyze(model, input_size=(3, 8, 8))
    assert half.totals.param_bytes * 2 == full.totals.param_bytes
    assert half.totals.activation_bytes * 2 == full.totals.activation_bytes
    assert half.dtype == "float16"
    # num_batches_tracked stays int64: 8 bytes in both; the float buffers halve.
    float_buffers = 2 * 4
    assert full.totals.buffer_bytes == float_buffers * 4 + 8
    assert half.totals.buffer_bytes == float_buffers * 2 + 8


def test_batch_multiplies_every_per_sample_count():
    one = archprof.analyze("lenet5")
    four = archprof.analyze("lenet5", batch=4)
    assert four.totals.macs == 4 * one.totals.macs
    assert four.totals.activation_bytes == 4 * one.totals.activation_bytes
    assert four.totals.param_count == one.totals.param_count


def test_no_real_memory_is_allocated_for_the_zoo():
    # VGG-16's weights are 553 MB; on meta they are never allocated, so RSS stays flat.
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    archprof.analyze("vgg16", input_size=(3, 1024, 1024))
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 100 * 1024


class _TwoCalls(nn.Module):
    """A module called twice, one whose forward is its own instance attribute, and a forward
    hook of the user's that replaces a module's output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.scaled = nn.Linear(4, 4)
        self.scaled.forward = lambda x: nn.functional.linear(x, self.scaled.weight) * 2
        self.conv.register_forward_hook(lambda module, args, output: output[:, :2])

    def forward(self, x):
        y = self.conv(x)
        return self.scaled(torch.cat([y, self.conv(x)], 1).mean((2, 3)))


def test_module_calls_are_recorded_and_the_model_left_as_it_was():
    model = _TwoCalls()
    own_forward = model.scaled.__dict__["forward"]
    report = archprof.analyze(model, input_size=(3, 6, 6))
    assert [r["call"] for r in report.rows() if r["layer"] == "conv"] == [0, 1]
    # the user's hook ran, after the module's ops: each conv call's output is its first two channels
    assert [r["output_shape"] for r in report.rows() if r["layer"] == "conv"] == ["1x2x6x6"] * 2
    assert [r["operators"] for r in report.rows() if r["layer"] == "conv"] == [("convolution", "slice")] * 2
    scaled = [r for r in report.rows() if r["layer"] == "scaled"]
    assert scaled[0]["macs"] == 4 * 4 and "mul" in scaled[0]["operators"]
    assert model.scaled.__dict__["forward"] is own_forward
    assert all("forward" not in module.__dict__ for module in (model, model.conv))
    assert model(torch.rand(1, 3, 6, 6)).shape == (1, 4)


class _CallOverride(nn.Module):
    """A model whose own `__call__` runs an operator outside its forward."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def __call__(self, x):
        return self.conv(x) * 2


def _root_pre_hooked() -> nn.Module:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
    model.register_forward_pre_hook(lambda module, args: ((args[0] - 0.5) / 0.25,))
    return model


@contextlib.contextmanager
def _global_forward_hook():
    handle = torch.nn.modules.module.register_module_forward_hook(lambda module, args, output: output * 2)
    try:
        yield
    finally:
        handle.remove()


@pytest.mark.parametrize(
    ("make", "hooks"),
    [
        (_root_pre_hooked, contextlib.nullcontext),
        (lambda: nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3)), _global_forward_hook),
        (_CallOverride, contextlib.nullcontext),
    ],
    ids=["root pre-hook", "global forward hook", "root __call__"],
)
def test_ops_outside_the_model_forward_are_the_model_own(make, hooks):
    """Ops that run outside every module's forward (the model's pre-hook, a global module hook
    on the model, a `__call__` of its own) are the model's own operations, as a real forward
    runs them. The oracle: FlopCounterMode over a real forward, and that forward's output."""
    from torch.utils.flop_counter import FlopCounterMode

    with hooks():
        model = make()
        with FlopCounterMode(display=False) as counter:
            output = model(torch.rand(1, 3, 16, 16))
        report = archprof.analyze(model, input_size=(3, 16, 16))
    assert report.totals.macs == counter.get_total_flops() // 2
    assert report.rows()[-1]["output_shape"] == "x".join(map(str, output.shape))
    outside = [r for r in report.rows() if r["layer"] == ""]
    assert outside and all(r["call"] == 0 for r in outside)  # the model was called once


def test_a_submodule_pre_hook_computes_in_the_submodule_call():
    """What a submodule's forward pre-hooks compute (torch.nn.utils.prune's masked weight, the
    old `weight_norm`'s) is that submodule's call's, as its forward hooks' ops are: its row
    holds the parameters the hook reads. The oracles: each module's own parameters
    (`sum(p.numel())`), and the hooks' arithmetic by the elementwise rule, one FLOP per
    weight element for the mask's product."""
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), nn.Conv2d(4, 2, 1))
    prune.l1_unstructured(model[0][0], "weight", 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the old weight_norm: deprecated, still in models
        torch.nn.utils.weight_norm(model[1])
    report = archprof.analyze(model, input_size=(3, 6, 6))
    rows = {row["layer"]: row for row in report.rows()}
    for path in ("0.0", "1"):
        assert rows[path]["param_count"] == sum(p.numel() for p in model.get_submodule(path).parameters())
    assert rows["0.0"]["operators"] == ("mul", "convolution")
    assert rows["0.0"]["elementwise_flops"] == model[0][0].weight.numel()
    assert "_weight_norm_interface" in rows["1"]["operators"]
    assert [len(module._forward_pre_hooks) for module in (model[0][0], model[1])] == [1, 1]  # the trace's gone


class _DottedName(nn.Module):
    """A direct child named 'a.b' (through `_modules`) beside the child 'b' of 'a'."""

    def __init__(self):
        super().__init__()
        self._modules["a.b"] = nn.Conv2d(3, 8, 3)
        self.a = nn.Sequential()
        self.a._modules["b"] = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self._modules["a.b"](x).sum() + self.a.b(x).sum()


def test_a_submodule_name_with_a_dot_is_refused_in_one_line():
    """Two modules whose paths read the same cannot be two rows of their own: refused, where
    they were one layer called twice. The oracle: `named_modules`, which names both 'a.b'."""
    model = _DottedName()
    model(torch.rand(1, 3, 8, 8))  # PyTorch runs it
    assert [path for path, _ in model.named_modules()].count("a.b") == 2
    with pytest.raises(ArchprofError, match=r"submodule named 'a\.b'") as raised:
        archprof.analyze(model, input_size=(3, 8, 8))
    assert "\n" not in str(raised.value)


class _KeyedChild(nn.Module):
    """A child set straight into `_modules` under a key add_module refuses."""

    def __init__(self, key):
        super().__init__()
        self.key = key
        self._modules[key] = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self._modules[self.key](x) + 1


@pytest.mark.parametrize("key", ["", 3], ids=["empty", "a number"])
def test_a_submodule_named_as_add_module_refuses_is_refused_in_one_line(key):
    """A child named '' read as the model's own row (its convolution's MACs on the model's
    type, half the activations: two maps made, one counted); one named 3 was a TypeError's
    traceback. The oracle: torch's add_module, which refuses both names."""
    model = _KeyedChild(key)
    model(torch.rand(1, 3, 8, 8))  # PyTorch runs it
    with pytest.raises((KeyError, TypeError)):
        nn.Module().add_module(key, nn.Conv2d(3, 3, 1))
    with pytest.raises(ArchprofError, match=r"submodule named .*non-empty string") as raised:
        archprof.analyze(model, input_size=(3, 8, 8))
    assert "\n" not in str(raised.value)


def test_a_failing_forward_leaves_no_recorded_forward_behind():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(5, 2))
    with pytest.raises(ArchprofError, match="'1' \\(Linear\\)"):
        archprof.analyze(model, input_size=(3, 6, 6))
    assert all("forward" not in module.__dict__ for module in model.modules())


class _Scaled(nn.Module):
    def forward(self, x, scale=2.0):
        return x * scale


class _ReadsItsChildsSignature(nn.Module):
    """Runs its head only where `inspect.signature` of its child's forward names `scale`, as
    code that adapts its call to a layer's keywords does."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 8)
        self.child = _Scaled()

    def forward(self, x):
        if "scale" in inspect.signature(self.child.forward).parameters:
            x = self.head(x)
        return self.child(x, scale=3.0)


def test_a_forward_reading_its_childs_signature_reads_the_childs_own():
    """The trace's forward wrapper lets `inspect.signature` see the forward it wraps. The
    oracle: FlopCounterMode over a real forward, which runs the head."""
    model = _ReadsItsChildsSignature()
    expected = _forward_macs(model, torch.rand(2, 8))
    assert expected == 2 * 8 * 8
    assert archprof.analyze(model, input_size=(8,), batch=2).totals.macs == expected


class _CopiesABlockInItsForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Linear(8, 16), nn.ReLU())

    def forward(self, x):
        twin = copy.deepcopy(self.block)
        return twin(x) + self.block(x)


def test_a_block_copied_inside_the_forward_runs_as_in_a_real_forward():
    """A copy made inside the forward shares the trace's forward wrappers, as it shares the
    module's hooks, and none is left behind. The oracles: FlopCounterMode over a real
    forward (both blocks' products), and a forward hook on the block's Linear, which the
    copy takes along: two calls."""
    model = _CopiesABlockInItsForward()
    calls = []
    handle = model.block[0].register_forward_hook(lambda *_: calls.append(1))
    expected = _forward_macs(model, torch.rand(1, 8))
    handle.remove()
    assert expected == 2 * 8 * 16 and len(calls) == 2
    report = archprof.analyze(model, input_size=(8,))
    assert report.totals.macs == expected
    linear_rows = [row for row in report.rows() if row["layer"] == "block.0"]
    assert [row["call"] for row in linear_rows] == [0, 1]
    assert sum(row["macs"] for row in linear_rows) == expected
    assert all("forward" not in module.__dict__ for module in model.modules())


class _NotATree(nn.Module):
    """Branches at three depths, a block reached under two names, a weight tied across two
    layers, an empty submodule slot and an empty parameter slot, a buffer of the model's own."""

    def __init__(self):
        super().__init__()
        shared = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        self.a = nn.Sequential(nn.Linear(4, 4), shared, nn.Sequential(nn.BatchNorm1d(4), nn.Tanh()))
        self.b = shared
        self.c = nn.Linear(4, 4, bias=False)
        self.c.weight = self.a[0].weight
        self.register_module("gone", None)
        self.register_parameter("nothing", None)
        self.register_buffer("count", torch.zeros(()))

    def forward(self, x):
        return self.c(self.b(self.a(x)))


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_modules_parameters_and_buffers_are_listed_as_torch_lists_them(device):
    """Each module under every path it is reached by, in `named_modules(remove_duplicate=False)`
    order, each path but its first an alias of that first; each tensor once, as
    `named_parameters()` then `named_buffers()` name it. The oracle: those four."""
    model = _NotATree().to(device).eval()
    graph = trace(model, [(2, 4)])
    assert list(graph.module_types) == [path for path, _ in model.named_modules(remove_duplicate=False)]
    first = {module: path for path, module in model.named_modules()}
    every = model.named_modules(remove_duplicate=False)
    assert graph.aliases == {path: first[module] for path, module in every if path != first[module]}
    assert graph.aliases  # the block `b` and its layers
    assert [p.name for p in graph.parameters] == [
        *(name for name, _ in model.named_parameters()),
        *(name for name, _ in model.named_buffers()),
    ]


class _Loop(nn.Module):
    def __init__(self, layers: nn.ModuleList):
        super().__init__()
        self.layers = layers

    def forward(self, x):
        for layer in self.layers:  # the ModuleList itself is never called
            x = layer(x)
        return x


class _StageOfSharedLayers(nn.Module):
    """A convolution held twice: as `conv`, called by the model, and as `stage.0`, called by
    the stage; a BatchNorm held as `norm` and `stage.2`, which only the stage calls; a
    ModuleList held as `pointwise` and `loop.layers`, whose layer the loop calls; and a head
    the model holds as `head` and `tail` and calls as `tail`."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.stage = nn.Sequential(self.conv, nn.ReLU(), self.norm)
        self.pointwise = nn.ModuleList([nn.Conv2d(8, 8, 1)])
        self.loop = _Loop(self.pointwise)
        self.head = nn.Linear(8, 4)
        self.tail = self.head

    def forward(self, x):
        return self.tail(self.loop(self.stage(self.conv(x))).mean((2, 3)))


@pytest.mark.parametrize("training", [False, True])
def test_a_module_held_under_two_names_is_counted_under_the_name_it_was_called_by(training):
    """Each call is the row of the path its caller holds the module by, so that the stage's
    roll-up and `by_module` hold what its forward ran (they summed by name, and missed the
    shared convolution's call); each parameter and buffer counted once, on the row that ran
    it first, and no module left as never called for having run under its other name. The
    oracle: FlopCounterMode over the stage's own forward and over the model's. A caller
    holding the module under two names (the head) cannot be told apart: its first name."""
    model = _StageOfSharedLayers().eval()
    x = torch.rand(1, 8, 16, 16)
    report = archprof.analyze(model, input_size=(8, 16, 16), training=training)
    assert [(row["layer"], row["call"]) for row in report.rows()] == [
        ("conv", 0),
        ("stage.0", 0),
        ("stage.1", 0),
        ("stage.2", 0),
        ("loop.layers.0", 0),
        ("", 0),  # the mean
        ("head", 0),
    ]
    by_module = report.by_module().set_index("module")
    rolled_up = report.rollup(1).layers.set_index("layer")
    for block, macs in (("stage", 8 * 8 * 9 * 16 * 16), ("loop", 8 * 8 * 16 * 16)):
        assert _forward_macs(getattr(model, block), torch.rand(1, 8, 16, 16)) == macs
        assert by_module.loc[block, "macs"] == rolled_up.loc[block, "macs"] == macs
    assert report.totals.macs == _forward_macs(model, x)
    params = {row["layer"]: row["param_count"] for row in report.rows()}
    own = {"conv": 8 * 8 * 9 + 8, "stage.2": 16, "loop.layers.0": 8 * 8 + 8, "head": 8 * 4 + 4}
    assert params == {row: own.get(row, 0) for row in params}
    assert report.totals.param_count == sum(p.numel() for p in model.parameters())
    buffers = {row["layer"]: row["buffer_bytes"] for row in report.rows()}
    assert buffers["stage.2"] == sum(b.numel() * b.element_size() for b in model.norm.buffers())
    if training:  # each gradient where its parameter is counted
        gradients = {row["layer"]: row["gradient_bytes"] for row in report.rows()}
        assert gradients == {layer: count * 4 for layer, count in params.items()}
    with pytest.raises(ArchprofError, match=r"^'norm' ran under another name, as 'stage.2': explain that$"):
        report.explain("norm")
    assert report.explain("stage.2").startswith("stage.2 (BatchNorm2d)")


class _BlocksAndTheLast(nn.Module):
    """Blocks looped over, the last also held as `last` (a name that sorts nearer the model)."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(8, 8) for _ in range(3)])
        self.last = self.blocks[-1]

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


class _OneLayerTwiceInAStage(nn.Module):
    """A stage holding one convolution at two places, and a second name for the stage."""

    def __init__(self):
        super().__init__()
        conv = nn.Conv2d(4, 4, 3, padding=1)
        self.stage = nn.Sequential(conv, nn.ReLU(), conv)
        self.alias = self.stage

    def forward(self, x):
        return self.stage(x)


@pytest.mark.parametrize(
    ("model", "size", "rows", "block"),
    [
        (_BlocksAndTheLast, (8,), [("blocks.0", 0), ("blocks.1", 0), ("blocks.2", 0)], "blocks"),
        (_OneLayerTwiceInAStage, (4, 8, 8), [("stage.0", 0), ("stage.1", 0), ("stage.0", 1)], "stage"),
    ],
)
def test_a_module_takes_its_first_name_where_the_running_call_holds_it_so(model, size, rows, block):
    """Its first name where that lies under the running call (the last block, also held as
    `last`, took `last`, outside the blocks that ran it), else the first of the nearest under
    it (the one convolution at two places in the stage took its first name, outside the
    stage); a name it never ran under is refused by explain, saying its first. The oracle:
    FlopCounterMode over the block's subtree."""
    network = model()
    report = archprof.analyze(network, input_size=size)
    assert [(row["layer"], row["call"]) for row in report.rows()] == rows
    macs = _forward_macs(network, torch.rand(1, *size))
    assert report.by_module().set_index("module").loc[block, "macs"] == macs == report.totals.macs
    if model is _OneLayerTwiceInAStage:
        with pytest.raises(ArchprofError, match=r"^'alias' is 'stage' under another name, and never ran under it"):
            report.explain("alias")


class _HoldsAChain(nn.Module):
    """A Linear model holding, uncalled, a chain of Sequentials nested `depth` levels."""

    def __init__(self, depth: int):
        super().__init__()
        self.linear = nn.Linear(4, 4)
        inner = nn.ReLU()
        for _ in range(depth):
            inner = nn.Sequential(inner)
        self.unused = inner

    def forward(self, x):
        return self.linear(x)


@pytest.mark.parametrize("levels", [0.5, 1.0])
def test_modules_nested_deeper_than_torch_can_walk_are_refused_in_one_line(levels):
    """The oracle: torch's `named_modules()`, which recurses once a level."""
    model = _HoldsAChain(int(levels * sys.getrecursionlimit()))
    try:
        walkable = bool(list(model.named_modules()))
    except RecursionError:
        walkable = False
    assert walkable == (levels < 1)
    if walkable:
        assert archprof.analyze(model, input_size=(4,)).totals.param_count == 4 * 4 + 4
    else:
        with pytest.raises(ArchprofError, match="nests its modules too deeply") as raised:
            archprof.analyze(model, input_size=(4,))
        assert "\n" not in str(raised.value)


def test_a_table_the_forward_computes_on_the_cpu_is_computed_there():
    """ConViT builds its relative-position table in its forward, on the CPU (no device
    given), then writes it into a CPU tensor and moves it: the meta trace must compute the
    table for real rather than answer its arithmetic with meta tensors (that made the copy
    fail and the whole model fall back to a real CPU forward, 70 times slower)."""

    class PositionTable(nn.Module):
        def forward(self, x):
            n = x.shape[-1]
            steps = torch.arange(n, dtype=torch.float32)
            offsets = steps.view(1, -1) - steps.view(-1, 1)
            table = torch.zeros(n, n, 2)
            table[:, :, 0] = offsets**2
            return x + table[:, :, 0].to(x.device)

    with warnings.catch_warnings():
        warnings.simplefilter("error", ArchprofWarning)  # not "traced with a real forward"
        report = archprof.analyze(PositionTable(), input_size=(3, 5, 5))
    assert report.traced_on == "meta"
    # The table's arithmetic (5 x 5 sub, pow) and the add of 3 x 5 x 5: pointwise, one each.
    assert report.totals.elementwise_flops == 25 + 25 + 75


@pytest.mark.parametrize(
    "call",
    [
        lambda x: nn.functional.batch_norm(x, torch.zeros(4), torch.ones(4)),  # statistics of 4 channels
        lambda x: nn.functional.batch_norm(x, torch.zeros(3), torch.ones(3), weight=torch.ones(2)),
        lambda x: nn.functional.batch_norm(x, torch.zeros(3), torch.ones(3), bias=torch.ones(5)),
        lambda x: nn.functional.batch_norm(x, None, None),  # no statistics in evaluation
    ],
    ids=["running_mean", "weight", "bias", "no statistics"],
)
def test_a_batch_norm_that_does_not_fit_its_input_is_refused_as_torch_refuses_it(call):
    class Norm(nn.Module):
        def forward(self, x):
            return call(x)

    with pytest.raises(RuntimeError) as real:
        Norm()(torch.randn(1, 3, 4, 4))
    with pytest.raises(ArchprofError) as traced:
        archprof.analyze(Norm(), input_size=(3, 4, 4))
    assert str(real.value) in str(traced.value)


class _MixedDtypes(nn.Module):
    """A convolution of a float16 input with float32 weights: the CPU refuses it."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(4, 3, 3, 3))

    def forward(self, x):
        return torch.nn.functional.conv2d(x.half(), self.weight)


def test_an_operator_on_tensors_of_two_dtypes_is_refused_as_the_cpu_refuses_it():
    with pytest.raises(RuntimeError):  # the oracle: a real forward on the CPU
        _MixedDtypes()(torch.zeros(1, 3, 8, 8))
    refusal = r"aten\.convolution expects its tensors in one dtype, got float16, float32"
    with pytest.raises(ArchprofError, match=refusal):
        archprof.analyze(_MixedDtypes(), input_size=(3, 8, 8))


# Legal calls a forward may make that the operator formulas must not get wrong.
UNUSUAL_CALLS = {
    "a number first": lambda x: torch.sub(1.0, x) * torch.div(2.0, x),
    "a complex number": lambda x: x * 1j,
    "a tensor bound broadcast": lambda x: torch.clamp(x[:, :1], min=x),
    "clamp_min of a broadcast bound": lambda x: torch.clamp_min(x[:, :, :1], x[:, :, :, :1]),
    "a 0-dim tensor reduced over dimension 0": lambda x: x.sum().sum(0),
    "and over -1, kept": lambda x: x.mean().mean(-1, keepdim=True),
    "empty 1-d tensors concatenated": lambda x: torch.cat([x.new_empty(0), x.new_empty(0)]),
    "out= an empty tensor": lambda x: torch.add(x, 1, out=x.new_empty(0)),
    "out= a tensor of the result's size": lambda x: torch.exp(x, out=torch.empty_like(x)),
    "a reduction out=": lambda x: torch.sum(x, 1, out=x.new_empty(0)),
    "a concatenation out=": lambda x: torch.cat([x, x], 1, out=x.new_empty(0)),
    "two results out=": lambda x: torch.max(x, 1, out=(x.new_empty(0), x.new_empty(0, dtype=torch.long)))[1],
}


@pytest.mark.parametrize("name", UNUSUAL_CALLS)
def test_unusual_calls_give_what_a_real_forward_gives(name):
    """The oracle: the same call on the CPU. Shapes and dtypes of the result, and the
    elementwise FLOPs of the ones with one result per output element."""
    call = UNUSUAL_CALLS[name]
    real = call(torch.randn(2, 3, 4, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ArchprofWarning)  # traced on meta, not with a real forward
        report = archprof.analyze(Calls(call), input_size=(3, 4, 4), batch=2)
    [output] = report.graph.outputs
    assert (output.shape, output.dtype) == (tuple(real.shape), real.dtype)


def test_a_result_written_out_is_counted_once_where_it_is_written():
    """`torch.add(x, 1, out=z)`: one addition per element, its cost as without out=, and
    the result in z's memory (tests/test_memory.py measures the peak)."""
    plain = archprof.analyze(Calls(lambda x: torch.add(x, 1)), input_size=(3, 4, 4)).totals
    written = archprof.analyze(Calls(lambda x: torch.add(x, 1, out=torch.empty_like(x))), input_size=(3, 4, 4))
    assert written.totals.elementwise_flops == plain.elementwise_flops == 3 * 4 * 4
    [add] = [op for op in written.graph.ops if op.op == "aten.add"]
    assert "out" not in add.kwargs and [t.shape for t in add.inputs] == [(1, 3, 4, 4)]


class _ReadsItsOutput(nn.Module):
    """A forward that reads a value (`.item()`): traced with a real forward on the CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        return y * 2 if y.sum().item() > 0 else y


def test_a_real_forward_whose_input_does_not_fit_in_memory_says_so():
    with pytest.raises(ArchprofError, match=r"nor on cpu: the input 1x3x200000x200000 float32 on cpu does not fit"):
        archprof.analyze(_ReadsItsOutput(), input_size=(3, 200000, 200000))


class _AttendsAfterReading(nn.Module):
    """Attention after a forward that reads a value: traced on the CPU, in eval, without grad."""

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.attention = attention

    def forward(self, x):
        return self.attention(x) if x.sum().item() > -1e9 else x


class _SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        return self.attention(x, x, x)[0]


@pytest.mark.parametrize("make", [_SelfAttention, lambda: nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)])
def test_attention_traced_on_the_cpu_is_counted_whole(make):
    """On real CPU tensors without grad, attention modules would take PyTorch's fused
    inference path, one operator of no formula. The oracle: FlopCounterMode over a real
    forward with grad (no fused path) and math attention, one MAC per two of its FLOPs."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    attention = make().eval()
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        attention(torch.randn(2, 5, 8))
    report = archprof.analyze(_AttendsAfterReading(attention), input_size=(5, 8), batch=2)
    assert report.traced_on == "cpu" and not report.totals.not_counted
    assert report.totals.macs == counter.get_total_flops() // 2
    assert torch.backends.mha.get_fastpath_enabled()  # as it was


class _SequenceFirstAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(8, 2)  # (length, batch, features); out_proj never called

    def forward(self, x):
        return self.attention(x, x, x)


def test_a_module_calling_no_child_shows_what_it_returned():
    """A container whose row is its own operations shows, where they made it, what it returned:
    MultiheadAttention its output and averaged weights (the last operation's result, the
    weights, alone before). The oracle: the shapes a real forward returns."""
    model = _SequenceFirstAttention()
    output, weights = model(torch.randn(3, 1, 8))
    report = archprof.analyze(model, inputs=[archprof.InputSpec((3, 1, 8), batched=False)])
    [row] = [r for r in report.rows() if r["layer"] == "attention"]
    assert row["output_shape"] == "x".join(map(str, output.shape)) + ", " + "x".join(map(str, weights.shape))
    assert row["activation_bytes"] == output.nbytes + weights.nbytes


# -- lazy layers ---------------------------------------------------------------------------


def _lazy_net() -> nn.Module:
    return nn.Sequential(nn.LazyConv2d(8, 3), nn.LazyBatchNorm2d(), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))


def _initialised_by_torch(make, shape=(1, 3, 16, 16)) -> nn.Module:
    """The oracle: the same model after torch's own first forward, on the CPU."""
    model = make().eval()
    with torch.no_grad():
        model(torch.randn(shape))
    return model


@pytest.mark.parametrize("given", ["factory", "module"])
def test_lazy_layers_take_their_shapes_from_the_input_as_on_a_first_call(given):
    """A lazy layer has no shape until its first call: archprof makes that call itself, on
    meta, where "run one forward pass first" is not up to the user (a factory on the CLI)."""
    oracle = _initialised_by_torch(_lazy_net)
    model = _lazy_net()
    report = archprof.analyze(_lazy_net if given == "factory" else model, input_size=(3, 16, 16))
    assert report.traced_on == "meta"
    assert report.totals.param_count == sum(p.numel() for p in oracle.parameters()) == 224 + 16 + 1568 * 10 + 10
    assert report.totals.macs == 8 * 14 * 14 * 3 * 3 * 3 + 1568 * 10  # the conv's C_out H W C_in K K, then the linear
    assert [row["output_shape"] for row in report.rows()] == ["1x8x14x14"] * 3 + ["1x1568", "1x10"]
    assert [report.module_types[str(i)] for i in (0, 1, 4)] == [type(oracle[i]).__name__ for i in (0, 1, 4)]
    if given == "module":  # the caller's model is left as it was: still lazy, nothing allocated
        assert all(isinstance(p, nn.parameter.UninitializedParameter) for p in (model[0].weight, model[4].weight))
        assert type(model[4]) is nn.LazyLinear


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_a_lazy_parameter_outside_a_lazy_layer_is_refused_in_one_line(device):
    """A parameter left uninitialised in a module that is no lazy layer (so nothing can make
    it) is named, on meta as on the CPU: asking an uninitialised tensor whether it was made
    in inference mode raised torch's ValueError before archprof could say so."""

    class HoldsOne(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.parameter.UninitializedParameter(device=device)
            self.linear = nn.Linear(3, 4, device=device)

        def forward(self, x):
            return self.linear(x)

    with pytest.raises(ArchprofError, match="'scale' is a lazy parameter not yet initialised"):
        archprof.analyze(HoldsOne(), input_size=(3,))


def test_lazy_layers_in_a_training_step_and_in_the_cpu_fallback():
    class ReadsValues(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = _lazy_net()

        def forward(self, x):
            if x.sum().item() > 1e9:  # data-dependent: no meta trace
                x = x * 2
            return self.body(x)

    expected = sum(p.numel() for p in _initialised_by_torch(_lazy_net).parameters())
    assert archprof.analyze(_lazy_net, input_size=(3, 16, 16), training=True).totals.param_count == expected
    with pytest.warns(ArchprofWarning, match="cannot run on the meta device"):
        report = archprof.analyze(ReadsValues, input_size=(3, 16, 16))
    assert (report.traced_on, report.totals.param_count) == ("cpu", expected)


def test_a_lazy_layer_whose_first_call_fails_is_one_error():
    model = nn.Sequential(nn.LazyLinear(4), nn.Linear(5, 2))  # 4 features out, 5 expected next
    with pytest.raises(ArchprofError, match=r"^initialising the lazy layers by a forward on input 1x7 failed: "):
        archprof.analyze(model, input_size=(7,))


def test_a_checkpoint_fits_a_lazy_model_whatever_shapes_its_lazy_layers_will_take(tmp_path):
    """The lazy layers' tensors have no shape to check a checkpoint against (reading theirs
    raised before): names are checked, and torch's load_state_dict gives them the file's."""
    checkpoint = tmp_path / "lazy.pt"
    torch.save(_initialised_by_torch(_lazy_net).state_dict(), checkpoint)
    report = archprof.analyze(_lazy_net, input_size=(3, 16, 16), weights=checkpoint)
    assert report.totals.param_count == 224 + 16 + 1568 * 10 + 10
    torch.save({"0.weight": torch.zeros(8, 3, 3, 3)}, checkpoint)
    with pytest.raises(ArchprofError, match=r"do not fit model '_lazy_net': missing 0\.bias"):
        archprof.analyze(_lazy_net, input_size=(3, 16, 16), weights=checkpoint)


def test_packed_quantized_weights_are_counted_as_parameters():
    """torch.ao's dynamically quantized Linear keeps its weights packed in a TorchScript
    object, no parameter: a real trace (quantized ops have no meta kernel) counts them from
    their `unpack()`, in their own dtype (int8 weights, a float bias), and the quantized
    product's MACs from their shape: those of the float model."""
    float_model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao.quantization's notice
        model = torch.ao.quantization.quantize_dynamic(float_model, {nn.Linear}, dtype=torch.qint8)
    assert sum(p.numel() for p in model.parameters()) == 8 * 3 * 3 * 3 + 8  # what the tables list
    with pytest.warns(ArchprofWarning, match="cannot run on the meta device"):
        report = archprof.analyze(model, input_size=(3, 8, 8))
    assert report.totals.param_count == sum(p.numel() for p in float_model.parameters()) == 224 + 2890
    assert report.totals.param_bytes == 224 * 4 + 2880 * 1 + 10 * 4  # float32 conv, int8 weight, float32 bias
    assert report.totals.trainable_param_count == 224
    assert report.totals.not_counted == {}
    assert report.totals.macs == archprof.analyze(float_model, input_size=(3, 8, 8)).totals.macs == 7776 + 2880


def test_packed_quantized_weights_of_a_torchscript_module_are_counted(tmp_path):
    """A ScriptModule (a TorchScript file's) keeps its attributes in C++, out of `vars()`: the
    weights packed in its dynamically quantized Linear are counted as in the Python module."""
    float_model = nn.Sequential(nn.Linear(72, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao.quantization's notice
        model = torch.ao.quantization.quantize_dynamic(float_model, {nn.Linear}, dtype=torch.qint8)
    path = tmp_path / "dynamic.pt"
    torch.jit.script(model).save(str(path))
    with pytest.warns(ArchprofWarning, match="cannot run on the meta device"):
        report = archprof.analyze(str(path), input_size=(72,))
    assert report.totals.param_count == 72 * 10 + 10
    assert report.totals.param_bytes == 72 * 10 * 1 + 10 * 4  # int8 weight, float32 bias


class _StaticQuantized(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.conv = nn.Conv2d(3, 8, 3)
        self.pool = nn.MaxPool2d(2)
        self.linear = nn.Linear(8 * 3 * 3, 10)
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.linear(self.pool(self.conv(self.quant(x))).flatten(1)))


def _statically_quantized(float_model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        float_model.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
        prepared = torch.ao.quantization.prepare(copy.deepcopy(float_model))
        prepared(torch.randn(2, 3, 8, 8))  # calibration
        return torch.ao.quantization.convert(prepared)


def test_a_statically_quantized_network_counts_as_its_float_one():
    """Quantized convolution, max-pool and linear layers: the float model's parameters (int8
    weight bytes) and MACs; quantizing the input and dequantizing the output scale each
    element (1 FLOP)."""
    float_model = _StaticQuantized().eval()
    quantized = _statically_quantized(float_model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = archprof.analyze(quantized, input_size=(3, 8, 8))
    plain = archprof.analyze(float_model, input_size=(3, 8, 8)).totals
    assert report.totals.not_counted == {}
    assert report.totals.param_count == plain.param_count == (216 + 8) + (720 + 10)
    assert report.totals.param_bytes == (216 + 720) * 1 + (8 + 10) * 4  # int8 weights, float32 biases
    assert report.totals.macs == plain.macs == 8 * 6 * 6 * 27 + 72 * 10
    assert report.totals.elementwise_flops == plain.elementwise_flops + 3 * 8 * 8 + 10  # quantize in, dequantize out


def test_a_quantized_torchscript_models_layers_are_rows_of_their_own(tmp_path):
    """A quantized layer reads its weights packed in a C++ object, not a tensor: its
    operators go to its module call by their TorchScript call stack (traced on the CPU, which
    alone runs them), the rows those of the Python quantized model (its hooks, the oracle),
    the MACs by hand: 8 channels of 6x6 from 3x3x3 windows, a 72 to 10 product. Before, they
    were rows of the model itself."""
    quantized = _statically_quantized(_StaticQuantized().eval())
    path = tmp_path / "quantized.pt"
    torch.jit.save(torch.jit.script(quantized), str(path))
    columns = ("layer", "call", "module_type", "output_shape", "macs", "activation_bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ArchprofWarning)  # quantized operators: on the CPU
        scripted = archprof.analyze(str(path), input_size=(3, 8, 8))
        python = archprof.analyze(quantized, input_size=(3, 8, 8))
    assert scripted.traced_on == "cpu"
    rows = [tuple(row[c] for c in columns) for row in scripted.rows()]
    assert rows == [tuple(row[c] for c in columns) for row in python.rows()]
    macs = {layer: macs for layer, _, _, _, macs, _ in rows}
    assert (macs["conv"], macs["linear"]) == (8 * 6 * 6 * 27, 72 * 10)


# -- inference mode ------------------------------------------------------------------------


class _PartlyInInferenceMode(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x):
        with torch.inference_mode():
            z = self.b(x)
        return self.a(x) + z


def _forward_macs(model: nn.Module, x: torch.Tensor) -> int:
    """The oracle: FlopCounterMode over a real forward, one MAC per two of its FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() // 2


def test_layers_run_in_inference_mode_inside_the_forward_are_counted():
    """Inference mode skips the Autograd keys whose kernels split composite operators
    (aten.linear) into the ones they call: each reaches the trace whole, and is split there."""
    model = _PartlyInInferenceMode()
    report = archprof.analyze(model, input_size=(4,))
    assert not report.totals.not_counted
    assert report.totals.macs == _forward_macs(model, torch.randn(1, 4)) == 32


def test_a_model_analysed_inside_inference_mode_gives_the_figures_it_gives_outside():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(288, 10)).eval()
    outside = archprof.analyze(model, input_size=(3, 8, 8))
    with torch.inference_mode():
        inside = archprof.analyze(model, input_size=(3, 8, 8))
        assert torch.is_inference_mode_enabled()  # the caller's mode, as it was
    assert not inside.totals.not_counted
    assert inside.totals.macs == _forward_macs(model, torch.randn(1, 3, 8, 8)) == 10_656
    assert inside.rows() == outside.rows()
    assert inside.totals.peak_memory_bytes == outside.totals.peak_memory_bytes


# -- a forward that grows the model --------------------------------------------------------


class _HeadMadeOnTheFirstCall(nn.Module):
    """A head and a scale made on the first call, on the CPU (a meta trace cannot run it:
    the CPU fallback) or on the input's device (meta)."""

    def __init__(self, on_the_inputs_device: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.on_the_inputs_device = on_the_inputs_device

    def forward(self, x):
        y = self.conv(x).mean((2, 3))
        device = y.device if self.on_the_inputs_device else None
        if not hasattr(self, "head"):
            self.head = nn.Linear(8, 4, device=device)
            self.scale = nn.Parameter(torch.ones(4, device=device))
        return self.head(y) * self.scale


@pytest.mark.parametrize("on_the_inputs_device", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_a_head_made_on_the_first_call_is_counted_as_after_a_real_first_call(on_the_inputs_device, training):
    """The oracle: the model's parameters after a real forward, and FlopCounterMode's MACs."""
    model = _HeadMadeOnTheFirstCall(on_the_inputs_device)
    report = archprof.analyze(model, input_size=(3, 8, 8), batch=2, training=training)
    assert not hasattr(model, "head") and not hasattr(model, "scale")  # the caller's model as it was
    assert report.traced_on == ("meta" if on_the_inputs_device else "cpu")
    grown = _HeadMadeOnTheFirstCall(on_the_inputs_device)
    x = torch.randn(2, 3, 8, 8)
    grown(x)
    assert report.totals.param_count == sum(p.numel() for p in grown.parameters()) == 224 + 36 + 4
    [head] = [row for row in report.rows() if row["layer"] == "head"]
    assert head["param_count"] == 36 and head["macs"] == 2 * 8 * 4
    assert report.totals.macs == _forward_macs(grown, x)


class _LayerMadeOnEveryCall(nn.Module):
    """A linear layer more on every call, made on the CPU (the CPU fallback) or on the input's device."""

    def __init__(self, on_the_inputs_device: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.layers = 0
        self.on_the_inputs_device = on_the_inputs_device

    def forward(self, x):
        y = self.conv(x).mean((2, 3))
        self.layers += 1
        self.add_module(f"extra{self.layers}", nn.Linear(8, 8, device=y.device if self.on_the_inputs_device else None))
        for i in range(1, self.layers + 1):
            y = getattr(self, f"extra{i}")(y)
        return y


@pytest.mark.parametrize("on_the_inputs_device", [False, True])
def test_a_model_growing_on_every_call_is_counted_as_its_second_call(on_the_inputs_device):
    """As documented: traced again once, at its second call (two linear layers), on the CPU
    fallback too, where the trace's own copy had grown by its first call already and an
    extra forward made the trace its third (three layers)."""
    report = archprof.analyze(_LayerMadeOnEveryCall(on_the_inputs_device), input_size=(3, 8, 8))
    grown = _LayerMadeOnEveryCall(on_the_inputs_device)
    x = torch.randn(1, 3, 8, 8)
    grown(x)
    assert report.totals.macs == _forward_macs(grown, x)


# -- autocast ------------------------------------------------------------------------------


class _Autocast(nn.Module):
    def __init__(self, reads_values: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(288, 10)
        self.reads_values = reads_values  # a meta trace cannot run it: the CPU fallback

    def forward(self, x):
        if self.reads_values and x.sum().item() > 1e30:
            x = x * 2
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.fc(self.conv(x).flatten(1))


def _real_output_bytes(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[torch.dtype, int]]:
    """The oracle: each module's output dtype and bytes in a real CPU forward."""
    outputs = {}
    for name, module in model.named_children():
        module.register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, (o.dtype, o.nbytes)))
    with torch.no_grad():
        model(x)
    return outputs


def _layer_bytes(report) -> dict[str, int]:
    return {row["layer"]: row["activation_bytes"] for row in report.rows() if row["layer"]}


@pytest.mark.parametrize("training", [False, True])
def test_a_cpu_autocast_region_is_traced_by_a_real_cpu_forward(training):
    """Autocast acts on a device's own tensors, not on meta ones: a CPU region is traced by a
    real forward on the CPU, said so, and each layer's output is the bfloat16 a CPU computes
    (on meta it was float32, twice the bytes); in a training analysis too."""
    real = _real_output_bytes(_Autocast(), torch.randn(1, 3, 8, 8))
    with pytest.warns(ArchprofWarning, match=r'real forward on cpu.*torch.autocast\("cpu", dtype=torch.bfloat16\)'):
        report = archprof.analyze(_Autocast(), input_size=(3, 8, 8), training=training)
    assert report.traced_on == "cpu"
    assert real["conv"][0] == real["fc"][0] == torch.bfloat16
    assert _layer_bytes(report) == {layer: nbytes for layer, (_, nbytes) in real.items()}


class _FunctionalAutocast(nn.Module):
    """A region of functional calls only, no module called in it (once unseen: float32, silently)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(16, 8))

    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return F.relu(F.linear(x, self.weight))


class _FloatListAutocast(nn.Module):
    """A bfloat16 model whose average pooling autocast runs in float32 (CPU autocast's float32 list)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 1)
        self.pool = nn.AvgPool3d(2)

    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.pool(self.conv(x))


@pytest.mark.parametrize(
    ("make", "size", "dtype"),
    [
        (_FunctionalAutocast, (8,), None),
        (_FloatListAutocast, (3, 4, 4, 4), torch.bfloat16),
        (lambda: _in_autocast_model(nn.Sequential(nn.Linear(8, 8))), (8,), None),  # a linear layer alone
    ],
    ids=["functional-only", "float32-list", "linear-alone"],
)
def test_cpu_autocast_regions_record_the_dtypes_a_cpu_computes(make, size, dtype):
    model = make()
    x = torch.randn(1, *size, dtype=dtype or torch.float32)
    with torch.no_grad():
        want = (model.to(dtype) if dtype else model)(x).dtype
    with pytest.warns(ArchprofWarning, match="autocast"):
        report = archprof.analyze(make(), input_size=size, dtype=dtype)
    assert report.graph.outputs[0].dtype == want
    assert report.graph.outputs[0].dtype != (dtype or torch.float32)  # the region changed it


def _in_autocast_model(module: nn.Module) -> nn.Module:
    module.forward = lambda x: _in_autocast(module[0], x)
    return module


def _in_autocast(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return module(x)


def test_a_model_run_in_a_cpu_autocast_region_on_bfloat16_inputs_is_analysed_not_refused():
    """Its float32 layers take the bfloat16 input in the region (autocast casts their
    weights): the meta trace refused it as a dtype mismatch."""
    model = _Autocast()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 8, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16
    with pytest.warns(ArchprofWarning, match="autocast"):
        report = archprof.analyze(model, inputs=["3x8x8:bfloat16"], batch=2)
    assert report.graph.outputs[0].dtype == torch.bfloat16


def test_another_devices_autocast_region_is_traced_on_meta_and_said_so():
    """A CUDA region acts on no tensor of a trace on this machine: traced on meta in the
    tensors' dtypes, with a warning (enabled as torch.autocast("cuda") would, without a GPU)."""
    torch.set_autocast_enabled("cuda", True)
    try:
        with pytest.warns(ArchprofWarning, match=r'torch.autocast\("cuda", dtype=torch.float16\).*meta device ignores'):
            report = archprof.analyze(nn.Sequential(nn.Conv2d(3, 8, 3)), input_size=(3, 8, 8))
    finally:
        torch.set_autocast_enabled("cuda", False)
    assert report.traced_on == "meta"


class _CaughtAutocast(nn.Module):
    """Falls back to float32 where its region raises a RuntimeError (its own `try`)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.conv(x)
        except RuntimeError:
            return self.conv(x)


def test_a_cpu_autocast_region_whose_refusal_the_forward_catches_is_run_for_real():
    """The region's refusal on meta (a NotImplementedError, a RuntimeError) was caught by the
    forward's own fallback: traced on meta in float32, without a word."""
    with torch.no_grad():
        want = _CaughtAutocast()(torch.randn(1, 3, 8, 8)).dtype
    with pytest.warns(ArchprofWarning, match="autocast"):
        report = archprof.analyze(_CaughtAutocast(), input_size=(3, 8, 8))
    assert report.traced_on == "cpu"
    assert report.graph.outputs[0].dtype == want == torch.bfloat16


class _OnItsTensorsDevice(nn.Module):
    """An autocast region made for its input's device, as models turn autocast off for a part
    kept in float32 (or on, with `enabled=True`)."""

    def __init__(self, enabled: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.enabled = enabled

    def forward(self, x):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.enabled):
            return self.conv(x)


@pytest.mark.parametrize("enabled", [False, True])
def test_an_autocast_region_made_for_the_inputs_device_is_the_cpus(enabled):
    """On meta, torch.autocast("meta") raised 'unsupported scalarType': the analysis failed
    where a CPU forward runs. Off, the region changes nothing (traced on meta); on, it is a
    CPU region, traced for real."""
    with torch.no_grad():
        want = _OnItsTensorsDevice(enabled)(torch.randn(1, 3, 8, 8)).dtype
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ArchprofWarning)
        report = archprof.analyze(_OnItsTensorsDevice(enabled), input_size=(3, 8, 8))
    assert report.graph.outputs[0].dtype == want
    assert report.traced_on == ("cpu" if enabled else "meta")


@pytest.mark.parametrize("case", ["no autocast", "disabled region"])
def test_no_autocast_region_or_a_disabled_one_is_traced_on_meta_without_a_warning(case):
    model = nn.Sequential(nn.Conv2d(3, 8, 3))
    if case == "disabled region":
        model.forward = lambda x: _disabled_region(model[0], x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = archprof.analyze(model, input_size=(3, 8, 8))
    assert not caught and report.traced_on == "meta"


def _disabled_region(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", enabled=False):
        return module(x)


@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (1, 64, 56, 56), (2, 1, 5, 1), (1, 1, 1, 1, 1), (7, 1)])
def test_recorders_empty_outputs_are_torch_empty_ones(shape):
    """The fast path's outputs (`_empty`, made by empty_strided for speed) are what torch.empty
    makes: sizes, strides, storage size and every contiguity flag the kernels that follow read."""
    from archprof.tracing.meta_outputs import _empty

    def layout(t):
        formats = {4: [torch.channels_last], 5: [torch.channels_last_3d]}.get(t.dim(), [])
        flags = [t.is_contiguous(memory_format=f) for f in formats]
        return t.shape, t.stride(), t.dtype, t.device, t.untyped_storage().nbytes(), t.is_contiguous(), flags

    expected = torch.empty(shape, dtype=torch.float16, device="meta")
    assert layout(_empty(shape, torch.float16)) == layout(expected)


def test_a_trace_imports_no_sympy():
    """torch imports sympy lazily (0.5 s of a CLI call); an analysis need not: torch's
    make_contiguous_strides_for imports it on its first call, the recorder's own strides do not."""
    script = (
        "import sys, types\n"
        "sys.modules['torchvision._meta_registrations'] = types.ModuleType('x')\n"
        "import archprof\n"
        "archprof.analyze('resnet18')\n"
        "print('sympy' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.split()[-1] == "False"


def test_an_ops_workspace_is_added_as_dataclasses_replace_adds_it():
    """`OpNode.with_workspace`, the recorder's quick copy, keeps every other field: each set
    to a value of its own, against `dataclasses.replace` (a field added later and left out
    of the copy would fail here)."""
    import dataclasses

    from archprof.graph import ModuleCall, OpNode, TensorMeta

    x = TensorMeta(0, (1, 2), torch.float32, 0, "input")
    y = TensorMeta(1, (1, 2), torch.float32, 1, "activation")
    op = OpNode(
        7, "aten.add", (x, 2), {"alpha": 3}, (x,), (y,), ModuleCall("a", "A", 1, 2, 3), True, True, "backward", 5, (9,)
    )
    assert op.with_workspace((4, 6)) == dataclasses.replace(op, workspace=(9, 4, 6))
    assert {f.name for f in dataclasses.fields(OpNode)} == {
        "index",
        "op",
        "args",
        "kwargs",
        "inputs",
        "outputs",
        "module",
        "writes_input",
        "is_view",
        "phase",
        "origin",
        "workspace",
    }


@pytest.mark.parametrize(
    ("model", "shape"),
    [(nn.Linear(400, 120), (256,)), (nn.Sequential(nn.Flatten(), nn.Linear(16, 4)), (3, 2, 2))],
)
def test_a_product_of_shapes_that_do_not_fit_says_the_shapes_as_torch_does(model, shape):
    """The error a real CPU forward raises names both operands' shapes: the one the trace
    raises names the same."""
    with pytest.raises(RuntimeError) as real:
        model(torch.zeros(1, *shape))
    shapes = re.search(r"\(\d+x\d+ and \d+x\d+\)", str(real.value)).group(0)
    with pytest.raises(ArchprofError) as traced:
        archprof.analyze(model, input_size=shape)
    assert str(traced.value).endswith(f"mat1 and mat2 shapes cannot be multiplied {shapes}")


class _KeywordCalls(nn.Module):
    """Its block is called with its input by keyword, on a shape the block refuses."""

    def __init__(self):
        super().__init__()
        self.block = _KeywordBlock()

    def forward(self, image):
        return self.block(x=image.flatten(1))


class _KeywordBlock(nn.Module):
    def forward(self, x):
        return x.view(5, -1)  # 12 values


def test_an_error_names_the_shapes_of_keyword_inputs_too():
    """A call given its tensors by keyword was said to fail "on input (no tensor)"."""
    with pytest.raises(ArchprofError, match=r"in module 'block' \(_KeywordBlock\) on input 1x12: "):
        archprof.analyze(_KeywordCalls(), input_size=(3, 4))
    with pytest.raises(ArchprofError, match=r"in the model \(_KeywordCalls\) on input 1x3x4: .*unexpected keyword"):
        archprof.analyze(_KeywordCalls(), inputs={"picture": (3, 4)})


class _ScaledByName(nn.Module):
    """Its forward reads a scale its dict does not hold: a KeyError, whose message is the key alone."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.scales = {}

    def forward(self, x):
        return self.conv(x) * self.scales["scale"]


@pytest.mark.parametrize("training", [False, True])
def test_a_forward_error_names_its_type_where_the_message_alone_would_not_say(training):
    """The error said only "'scale'"; it now says "KeyError: 'scale'", as a factory's failure
    names its type. PyTorch's RuntimeErrors keep their message alone (the class says nothing)."""
    with pytest.raises(ArchprofError, match=r"in the model \(_ScaledByName\) on input 2x3x8x8: KeyError: 'scale'$"):
        archprof.analyze(_ScaledByName(), input_size=(3, 8, 8), batch=2, training=training)
    with pytest.raises(ArchprofError) as raised:
        archprof.analyze(nn.Conv2d(3, 4, 3), input_size=(2, 8, 8))
    message = str(raised.value)
    assert "expects 3 input channels, got 2" in message or "expected input" in message
    assert "RuntimeError" not in message
