"""What a user gets back for a near miss: a missing factory file said to be missing, a limit
written as a TOML float shown as the whole number it is, the batch put into the shape or a
tensor given for a shape answered with the call that works, the budget file's form and the
comparison's memory columns in the help, and `rf --unit` without --layer."""

import importlib.util
import re
import textwrap

import pytest
import torch
from torch import nn

import archprof
from archprof import InputSpec
from archprof.budget.files import load_budget_file
from archprof.errors import ArchprofError
from tests.cli import cli, one_error_line

# -- a missing Python file -----------------------------------------------------------------


def test_a_missing_python_file_is_said_to_be_missing_as_a_missing_model_file_is(tmp_path, monkeypatch):
    """`summary resnet18.py` where no such file is: told to name a factory in it, which it
    cannot; the answer is the one a missing .pt gets, the name its own."""
    monkeypatch.chdir(tmp_path)
    missing_pt = one_error_line(cli("summary", "nothere.pt"))
    result = cli("summary", "resnet18.py")
    assert result.exit_code == 2
    assert one_error_line(result) == missing_pt.replace("nothere.pt", "resnet18.py")
    with pytest.raises(ArchprofError) as raised:
        archprof.analyze("resnet18.py")
    assert f"error: {raised.value}" == one_error_line(result)
    (tmp_path / "resnet18.py").write_text("class Net:\n    pass\n")  # there: name its factory
    assert "name the factory in it, e.g. resnet18.py:Net" in one_error_line(cli("summary", "resnet18.py"))


# -- a limit written as a float ------------------------------------------------------------


def _budget(tmp_path, name: str, limits: str):
    path = tmp_path / name
    path.write_text(f'[[models]]\nname = "lenet5"\n{limits}\n')
    return path


def test_a_whole_limit_written_as_a_float_is_shown_as_the_same_limit_written_as_an_int(tmp_path):
    """`max-params = 5e5` showed as `max-params 500000.0` in the table and the JUnit XML: it
    is the limit `max-params = 500000`, and shows as that does, over and within its limit."""
    written = {"float": "max-params = 5e4\nmax-macs = 2.5e6", "int": "max-params = 50000\nmax-macs = 2500000"}
    tables, reports = {}, {}
    for form, limits in written.items():
        junit = tmp_path / f"{form}.xml"
        result = cli("check", "--config", _budget(tmp_path, f"{form}.toml", limits), "--junit", junit)
        assert result.exit_code == 1, result.output  # lenet5's 61,706 parameters exceed 50,000
        tables[form], reports[form] = result.stdout, junit.read_text()
    assert tables["float"] == tables["int"]
    assert reports["float"] == reports["int"]
    assert "max-params 50000 " in tables["int"]


def test_a_large_whole_float_limit_is_the_number_written_not_the_floats_nearest(tmp_path):
    """1e23 as a float is 99999999999999991611392; the limit written is 10**23."""
    (entry,) = load_budget_file(_budget(tmp_path, "b.toml", "max-peak-memory = 1e23"))
    (limit,) = entry.limits
    assert limit.threshold == 10**23 and limit.text == str(10**23)


@pytest.mark.parametrize(("limits", "what"), [("max-params = 0.5", "count"), ("max-peak-memory = 1.5", "size")])
def test_a_fraction_where_a_whole_number_is_expected_is_one_error_line(tmp_path, limits, what):
    result = cli("check", "--config", _budget(tmp_path, "b.toml", limits))
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "b.toml, line 3: " in line and f"{limits.split()[0]}: the {what} '{limits.split()[-1]}'" in line
    assert "not a whole number" in line


# -- the batch put into the shape ----------------------------------------------------------


def _convolution():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())


@pytest.mark.parametrize("batch", [2, 5])
def test_a_shape_with_any_batch_in_front_is_answered_with_the_shape_and_that_batch(batch):
    """input_size=(2, 3, 32, 32) failed with no hint where (1, 3, 32, 32) got one; the call
    it names works, and runs the model on what torch runs it on for that batch."""
    model = _convolution()
    with pytest.raises(ArchprofError) as raised:
        archprof.analyze(model, input_size=(batch, 3, 32, 32))
    assert str(raised.value).endswith(f"did you mean --input 3x32x32 --batch {batch}?")
    real = model(torch.randn(batch, 3, 32, 32))  # torch's own: this is a batch it runs
    report = archprof.analyze(model, input_size=(3, 32, 32), batch=batch)
    assert report.rows()[-1]["output_shape"] == "x".join(map(str, real.shape))


def test_a_batch_of_one_in_front_keeps_its_hint_without_a_batch():
    with pytest.raises(ArchprofError) as raised:
        archprof.analyze(_convolution(), input_size=(1, 3, 32, 32))
    assert str(raised.value).endswith("did you mean --input 3x32x32?")


class _OneSampleOnly(nn.Module):
    """A network whose forward runs a batch of 1 only (its view takes one sample's 4x6x6)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x).view(1, 4 * 6 * 6)


def test_no_batch_is_named_where_the_model_cannot_run_that_batch():
    model = _OneSampleOnly()
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 3, 8, 8))  # torch's own: no batch of 2
    with pytest.raises(ArchprofError) as raised:
        archprof.analyze(model, input_size=(2, 3, 8, 8))
    assert "--batch" not in str(raised.value)


# -- a tensor given for a shape ------------------------------------------------------------


_SEEN = []  # each forward's inputs, (shape, dtype) each: archprof traces a copy of the module


class _Recording(nn.Module):
    """Records the shape and dtype of every input its forward gets, in `_SEEN`."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x, *rest, **named):
        _SEEN.append([(tuple(t.shape), t.dtype) for t in (x, *rest, *named.values())])
        return self.conv(x)


_ANSWER = re.compile(r"is a tensor: archprof reads shapes, not values: give inputs=(.+?)(?: with batch=(\d+))?$")


@pytest.mark.parametrize(
    "given",
    [
        lambda: [torch.randn(2, 3, 32, 32)],
        lambda: torch.randn(2, 3, 32, 32),
        lambda: [torch.randn(1, 3, 16, 16)],
        lambda: [torch.randn(4, 3, 8, 8), torch.zeros(4, 7, dtype=torch.int64), torch.ones(4, 7, dtype=torch.bool)],
        lambda: {"x": torch.randn(3, 3, 8, 8), "ids": torch.zeros(3, 5, dtype=torch.int64)},
        lambda: [torch.randn(2, 3, 8, 8), torch.randn(6, 2)],  # no one batch: each taken whole
    ],
)
def test_a_tensor_for_an_input_is_answered_with_the_shapes_that_give_it(given):
    """inputs=[torch.randn(2, 3, 32, 32)] printed the tensor's values; the answer names the
    call in shapes, without a value, and that call hands the forward what the tensors are."""
    tensors = given()
    with pytest.raises(ArchprofError) as raised:
        archprof.analyze(_Recording(), inputs=tensors)
    message = str(raised.value)
    assert "\n" not in message and "tensor(" not in message
    answer = _ANSWER.search(message)
    assert answer, message
    inputs = eval(answer.group(1), {"torch": torch, "InputSpec": InputSpec})
    batch = int(answer.group(2) or 1)
    archprof.analyze(_Recording(), inputs=inputs, batch=batch)
    values = tensors.values() if isinstance(tensors, dict) else tensors if isinstance(tensors, list) else [tensors]
    assert _SEEN[-1] == [(tuple(t.shape), t.dtype) for t in values]


# -- the help pages ------------------------------------------------------------------------


def test_the_budget_file_example_of_check_help_is_a_budget_file_check_reads(tmp_path):
    """`check -h` said of --config only "Budget file": its example, copied into a file,
    is checked (the limit's verdict, not a bad-input exit)."""
    page = cli("check", "-h").stdout
    (example,) = [line.strip() for line in page.splitlines() if line.strip().startswith("models = ")]
    path = tmp_path / "budget.toml"
    path.write_text(example + "\n")
    result = cli("check", "--config", path)
    assert result.exit_code == 0, result.output
    assert "max-params 30M" in result.stdout
    assert "[[models]]" in page and "[[tool.archprof.models]]" in page  # the tables' form too


def test_compare_help_defines_activations_and_peak_memory_as_the_figures_are():
    """The help says Activations is every layer's output bytes summed, in-place ones too,
    not a peak, and Peak memory the inference peak with the parameters: a real forward's
    outputs and parameters give both."""
    page = " ".join(cli("compare", "-h").stdout.split())
    assert "Activations is the sum of every layer's output bytes (a layer working in place included)" in page
    assert "included), not a peak;" in page
    assert "Peak memory is the inference peak: parameters, buffers and the most activations live at once" in page
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(inplace=True), nn.Conv2d(8, 4, 3))
    outputs = []
    hooks = [layer.register_forward_hook(lambda module, args, out: outputs.append(out.nbytes)) for layer in model]
    model(torch.randn(1, 3, 16, 16))
    for hook in hooks:
        hook.remove()
    frame = archprof.compare({"net": model}, input_size=(3, 16, 16))
    assert frame["activation_bytes"][0] == sum(outputs)  # the in-place ReLU's output counted
    parameters = sum(p.nbytes for p in model.parameters())
    assert frame["peak_memory_bytes"][0] >= parameters + max(outputs)


# -- rf --unit without --layer -------------------------------------------------------------

_NET = textwrap.dedent(
    """
    import torch.nn as nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 2, 3)
            self.pool = nn.AvgPool2d(2)
            self.conv2 = nn.Conv2d(2, 2, 3)
            self.head = nn.Linear(18, 4)

        def forward(self, x):
            return self.head(self.conv2(self.pool(self.conv1(x))).flatten(1))


    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(12, 2)

        def forward(self, x):
            return self.fc(x.flatten(1))
    """
)


def test_rf_unit_without_layer_is_the_last_feature_maps_unit(tmp_path):
    """`rf --unit 1,2` alone was an error; it now gives the unit of the last feature map's
    layer (the last module whose real output is a map), the box autograd finds for it."""
    (tmp_path / "nets.py").write_text(_NET)
    # Loaded under a name of its own: other tests import modules named "nets" from their own folders.
    spec = importlib.util.spec_from_file_location("rf_unit_nets", tmp_path / "nets.py")
    nets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nets)
    Net = nets.Net

    model, maps = Net(), []
    for name, module in model.named_children():
        module.register_forward_hook(lambda m, args, out, name=name: maps.append(name) if out.dim() == 4 else None)
    image = torch.randn(1, 1, 12, 12, requires_grad=True)
    model(image)
    last_map = maps[-1]  # conv2
    out = getattr(model, last_map)(model.pool(model.conv1(image)))
    out[0, :, 1, 2].sum().backward()
    rows, cols = image.grad[0, 0].abs().sum(1).nonzero(), image.grad[0, 0].abs().sum(0).nonzero()
    box = f"input pixels {rows.min()}..{rows.max()} x {cols.min()}..{cols.max()} (of 12x12)"

    result = cli("rf", f"{tmp_path / 'nets.py'}:Net", "--input", "1x12x12", "--unit", "1,2")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"layer {last_map}, unit 1,2 reads {box}"
    assert "without it, of the last feature map's layer" in " ".join(cli("rf", "-h").stdout.split())


def test_rf_unit_without_layer_on_a_model_with_no_map_and_layer_without_unit_are_one_line(tmp_path):
    (tmp_path / "nets.py").write_text(_NET)
    result = cli("rf", f"{tmp_path / 'nets.py'}:Flat", "--input", "3x4", "--unit", "1,1")
    assert result.exit_code == 2
    assert "has no layer with a spatial receptive field" in one_error_line(result)
    result = cli("rf", "lenet5", "--layer", "features.5")
    assert result.exit_code == 2
    assert "add --unit" in one_error_line(result)


class _ListForward(nn.Module):
    """A forward taking a list of tensors (torchinfo#46): one input, not a tensor."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, xs):
        return self.conv(xs[0]) + self.conv(xs[1])


def test_shapes_nested_in_one_input_are_answered_with_the_wrapper_that_takes_them_one_by_one():
    with pytest.raises(
        ArchprofError, match=r"analyse a wrapper whose forward\(self, \*xs\) calls the model on list\(xs\)"
    ):
        archprof.analyze(_ListForward(), inputs=[[(3, 8, 8), (3, 8, 8)]])

    class Wrapped(nn.Module):  # as the hint says
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, *xs):
            return self.model(list(xs))

    model = _ListForward()
    report = archprof.analyze(Wrapped(model), inputs=[(3, 8, 8), (3, 8, 8)])
    real = model([torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)])
    assert report.graph.outputs[0].shape == tuple(real.shape)
    assert report.totals.macs == 2 * 4 * 6 * 6 * 3 * 3 * 3  # two calls: out channels · 6x6 · in channels · 3x3


class _TwoMaps(nn.Module):
    def forward(self, a, b):
        return a + b


def test_several_shapes_as_input_size_are_answered_with_the_inputs_that_take_them():
    with pytest.raises(ArchprofError, match=r"give them as inputs=\[\(3, 8, 8\), \(3, 8, 8\)\]"):
        archprof.analyze(_TwoMaps(), input_size=((3, 8, 8), (3, 8, 8)))
    report = archprof.analyze(_TwoMaps(), inputs=[(3, 8, 8), (3, 8, 8)])  # as the error says
    real = _TwoMaps()(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    assert report.graph.outputs[0].shape == tuple(real.shape)
