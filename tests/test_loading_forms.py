"""Model and checkpoint forms that torch itself loads, loaded as torch loads them: a state dict
without BatchNorm's `num_batches_tracked` (saved before PyTorch 0.4.1), one holding a module's
extra state, weights for lazy layers, a pickled DataParallel, a trusted pickle whose classes
live in the current directory; and an exported program called without its keyword input, in
one line. The oracle is torch: its strict load_state_dict, its numel counts, the real forward."""

import json
import sys
from collections import OrderedDict

import pytest
import torch
from torch import nn

import archprof
from archprof.errors import ArchprofError
from archprof.load import load_model
from tests.cli import cli, one_error_line


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


class LazyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.LazyConv2d(4, 3)
        self.bn = nn.LazyBatchNorm2d()
        self.fc = nn.LazyLinear(2)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).flatten(1))


class LazyNetBuiltOnTheCpu(LazyNet):
    """Reads its own weights as it is built: archprof builds it on the CPU, not on meta."""

    def __init__(self):
        super().__init__()
        self.pre = nn.Conv2d(3, 3, 1)
        self.gain = float(self.pre.weight.abs().sum() >= 0)

    def forward(self, x):
        return super().forward(self.pre(x) * self.gain)


class WithExtraState(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.scale = 1

    def get_extra_state(self):
        return {"scale": self.scale}

    def set_extra_state(self, state):
        self.scale = state["scale"]

    def forward(self, x):
        return self.fc(x) * self.scale


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(5, 4)

    def forward(self, image, vector, mask=None):
        out = self.conv(image).mean((2, 3)) + self.fc(vector)
        return out if mask is None else out * mask


def _torch_loads(model: nn.Module, path) -> bool:
    """The oracle: whether torch's strict load_state_dict takes the file's state dict."""
    try:
        model.load_state_dict(torch.load(path, weights_only=True), strict=True)
    except RuntimeError:
        return False
    return True


def _archprof_loads(path) -> bool:
    try:
        load_model(Net, weights=path)
    except ArchprofError:
        return False
    return True


def _without_batch_counts(state: dict) -> dict:
    kept = OrderedDict((k, v) for k, v in state.items() if not k.endswith("num_batches_tracked"))
    kept._metadata = state._metadata  # as Module.state_dict saves it: each module's version
    return kept


def _versioned(state: dict, path: str, version: int) -> dict:
    state._metadata = OrderedDict(state._metadata)
    state._metadata[path] = {**state._metadata[path], "version": version}
    return state


# -- checkpoints torch fills in ------------------------------------------------------------


def test_a_checkpoint_without_num_batches_tracked_loads_where_torch_fills_it_in(tmp_path):
    """BatchNorm's `_load_from_state_dict` fills in a missing `num_batches_tracked` where the
    checkpoint's metadata gives the norm no version or one before 2 (checkpoints saved before
    PyTorch 0.4.1, converted ones), and refuses it at version 2: archprof takes what torch takes,
    a DataParallel's checkpoint ('module.' names, metadata) read as its network's."""
    net = Net()
    checkpoints = {
        "no metadata": {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")},
        "version 2": _without_batch_counts(net.state_dict()),
        "version 1": _versioned(_without_batch_counts(net.state_dict()), "bn", 1),
        "DataParallel, version 2": _without_batch_counts(nn.DataParallel(net).state_dict()),
        "DataParallel, version 1": _versioned(_without_batch_counts(nn.DataParallel(net).state_dict()), "module.bn", 1),
    }
    verdicts = {}
    for name, state in checkpoints.items():
        path = tmp_path / f"{name}.pt"
        torch.save(state, path)
        oracle = Net() if "DataParallel" not in name else nn.DataParallel(Net())
        verdicts[name] = (_archprof_loads(path), _torch_loads(oracle, path))
    assert all(ours == torch_says for ours, torch_says in verdicts.values()), verdicts
    assert verdicts["no metadata"][1] and not verdicts["version 2"][1]  # both of torch's answers are met

    # The weights taken are the file's: the model archprof builds for real computes torch's.
    path = tmp_path / "no metadata.pt"
    expected = Net().eval()
    expected.load_state_dict(torch.load(path, weights_only=True))
    image = torch.randn(2, 3, 8, 8)
    built = load_model(Net, weights=path).materialize().eval()
    torch.testing.assert_close(built(image), expected(image))


def test_a_state_dict_with_a_modules_extra_state_loads_as_torch_loads_it(tmp_path):
    """A module's `get_extra_state` is saved under its `_extra_state` key, a value of its own:
    torch's strict load hands it to `set_extra_state`. Only there is a value other than a
    tensor taken, and it is still unpickled weights-only."""
    saved = WithExtraState()
    saved.scale = 3
    path = tmp_path / "extra.pt"
    torch.save(nn.DataParallel(saved).state_dict(), path)
    oracle = WithExtraState()
    nn.DataParallel(oracle).load_state_dict(torch.load(path, weights_only=True), strict=True)

    report = archprof.analyze(WithExtraState, input_size=(4,), weights=path)
    assert report.totals.param_count == sum(p.numel() for p in oracle.parameters())
    built = load_model(WithExtraState, weights=path).materialize()
    vector = torch.randn(1, 4)
    assert built.scale == oracle.scale == 3
    torch.testing.assert_close(built(vector), oracle(vector))

    other = tmp_path / "other.pt"  # a value that is no tensor under another name is no state dict
    torch.save({**saved.state_dict(), "fc.note": {"scale": 3}}, other)
    with pytest.raises(ArchprofError, match="holds no state dict"):
        load_model(WithExtraState, weights=other)


def test_a_checkpoint_holding_no_state_dict_names_its_keys(tmp_path):
    """timm's ModelEmaV2 saves its weights under 'state_dict_ema', where archprof does not look:
    the error names the keys the file holds."""
    path = tmp_path / "ema.pt"
    held = {"state_dict_ema": Net().state_dict(), "epoch": 3}
    torch.save(held, path)
    with pytest.raises(ArchprofError, match="holds no state dict") as raised:
        load_model(Net, weights=path)
    assert all(key in str(raised.value) for key in torch.load(path, weights_only=True))


# -- lazy layers ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", [LazyNet, LazyNetBuiltOnTheCpu])
def test_weights_give_a_lazy_model_their_shapes_as_torch_loads_them(tmp_path, model):
    """torch's load_state_dict gives lazy layers the checkpoint's shapes: the model analysed
    has the checkpoint's parameters, and an input they do not fit fails as the model's real
    forward does (saved at 3x16x16, called at 3x20x20), not with layers grown to fit it; on
    meta, or on the CPU for a model built there."""
    saved = model()
    saved(torch.randn(1, 3, 16, 16))
    path = tmp_path / "lazy.pt"
    torch.save(saved.state_dict(), path)
    oracle = model()
    oracle.load_state_dict(torch.load(path, weights_only=True), strict=True)
    with pytest.raises(Exception, match="in_features"):
        oracle(torch.randn(1, 3, 20, 20))  # torch's own verdict on the input the weights do not fit

    report = archprof.analyze(model, input_size=(3, 16, 16), weights=path)
    assert report.totals.param_count == sum(p.numel() for p in oracle.parameters())
    oracle(torch.randn(1, 3, 16, 16))  # its first call makes each layer the class it becomes
    rows = dict(zip(report.columns["layer"], report.columns["module_type"], strict=True))
    assert {layer: rows[layer] for layer, _ in oracle.named_children()} == {
        layer: type(module).__name__ for layer, module in oracle.named_children()
    }
    with pytest.raises(ArchprofError, match="in_features"):
        archprof.analyze(model, input_size=(3, 20, 20), weights=path)
    result = cli("summary", f"tests.test_loading_forms:{model.__name__}", "--input", "3x20x20", "--weights", path)
    errors = [line for line in result.stderr.splitlines() if not line.startswith("warning: ")]  # built on the CPU
    assert result.exit_code == 2 and len(errors) == 1 and "in_features" in errors[0], result.output


# -- pickled modules -----------------------------------------------------------------------


def test_a_pickled_data_parallel_model_is_analysed_as_the_network_inside(tmp_path):
    """As a DataParallel passed in or returned by a factory: rows named as the network's own
    modules (no 'module.', no DataParallel row), and built for real as that network."""
    path = tmp_path / "parallel.pt"
    torch.save(nn.DataParallel(Net()), path)
    pickled = torch.load(path, weights_only=False)
    report = archprof.analyze(str(path), input_size=(3, 8, 8), trust_pickle=True)
    assert set(report.columns["layer"]) == {name for name, _ in pickled.module.named_modules()}
    assert "DataParallel" not in report.columns["module_type"]

    built = load_model(str(path), trust_pickle=True).materialize().eval()
    image = torch.randn(2, 3, 8, 8)
    assert type(built) is Net
    torch.testing.assert_close(built(image), pickled.module.eval()(image))


_CWD_MODULE = "loading_forms_cwd_net"  # a module only the current directory holds


def test_a_trusted_pickle_finds_its_classes_in_the_current_directory(tmp_path, monkeypatch):
    """The `archprof` script, unlike `python -m archprof`, does not put the current directory on
    sys.path: a trusted pickle's classes are imported from it as a `module:factory` spec's are,
    for the load only. Untrusted, the file is refused as before."""
    (tmp_path / f"{_CWD_MODULE}.py").write_text(
        "import torch\n\nclass Small(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.conv = torch.nn.Conv2d(3, 5, 3)\n\n    def forward(self, x):\n        return self.conv(x)\n"
    )
    monkeypatch.setitem(sys.modules, _CWD_MODULE, None)  # gone again after the test
    monkeypatch.syspath_prepend(str(tmp_path))
    del sys.modules[_CWD_MODULE]
    small = __import__(_CWD_MODULE).Small()
    expected = sum(p.numel() for p in small.parameters())  # torch's count of the model saved
    torch.save(small, tmp_path / "small.pt")
    del sys.modules[_CWD_MODULE]
    # As the console script starts: neither the folder nor '' (the current directory) on sys.path.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    monkeypatch.chdir(tmp_path)

    refused = cli("summary", "small.pt", "--input", "3x8x8")
    assert refused.exit_code == 2 and "--trust-pickle" in one_error_line(refused)
    result = cli("summary", "small.pt", "--trust-pickle", "--input", "3x8x8", "-f", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["totals"]["param_count"] == expected
    assert str(tmp_path) not in sys.path  # importable for the load only


# -- exported programs ---------------------------------------------------------------------


def test_an_exported_program_called_without_its_keyword_input_is_refused_in_one_line(tmp_path):
    """torch's unflattened module prints both input specs (several lines, on stdout) before it
    fails on inputs other than those it was exported with: archprof checks them first, and says
    so in one line, naming the keyword input to give."""
    program = torch.export.export(
        TwoInputs().eval(), (torch.randn(2, 3, 8, 8), torch.randn(2, 5)), {"mask": torch.randn(2, 4)}
    )
    path = tmp_path / "two.pt2"
    torch.export.save(program, path)
    image, vector = torch.randn(2, 3, 8, 8), torch.randn(2, 5)
    with pytest.raises(ValueError, match="mask"):
        program.module()(image, vector)  # torch's own verdict on the call without it

    for extra in ([], ["--input", "4"]):  # left out, or given as a third positional input
        result = cli("summary", path, "--input", "3x8x8", "--input", "5", *extra, "--batch", "2")
        assert result.exit_code == 2 and "--input mask=4" in one_error_line(result)
        assert result.stdout == ""
    with pytest.raises(ArchprofError, match="keyword input mask"):
        archprof.analyze(program, inputs=[(3, 8, 8), (5,)], batch=2)
    given = cli("summary", path, "--input", "3x8x8", "--input", "5", "--input", "mask=4", "--batch", "2")
    assert given.exit_code == 0, given.output
