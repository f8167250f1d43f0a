import subprocess
import sys

import pandas as pd
import torch

import archprof
from archprof.report.columns import COLUMNS, SUMMABLE


def test_layers_dataframe_has_the_documented_typed_columns():
    layers = archprof.analyze("resnet18").layers
    assert list(layers.columns) == [c.name for c in COLUMNS]
    for column in COLUMNS:
        assert str(layers[column.name].dtype) == column.dtype, column.name
    assert layers["param_count"].sum() == 11_689_512


def test_rollup_keeps_every_total():
    report = archprof.analyze("densenet121")
    for depth in (0, 1, 2, 3):
        rolled = report.rollup(depth)
        for name in SUMMABLE:
            assert getattr(rolled.totals, name) == getattr(report.totals, name), (depth, name)
    assert len(report.rollup(0)) == 1
    assert report.rollup(1).layers["layer"].tolist() == ["features", "", "classifier"]


class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.aux = torch.nn.Conv2d(8, 4, 1)  # an auxiliary head, not called in eval

    def forward(self, x):
        return self.conv(x).relu()


class _WithAuxHeads(torch.nn.Module):
    """A block holding a head it never calls, and heads of the model's own never called, one
    with a parameter of its own beside its layer's."""

    def __init__(self):
        super().__init__()
        self.block = _Block()
        self.head = torch.nn.Conv2d(8, 8, 3)
        self.aux = torch.nn.Linear(8, 2)
        self.scaled_aux = torch.nn.Module()
        self.scaled_aux.scale = torch.nn.Parameter(torch.ones(2))
        self.scaled_aux.linear = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.block(x))


def test_a_rollup_row_describes_the_calls_that_ran_beside_modules_never_called():
    """A module rolled up with a module below it that was never called is still the module
    that ran: its call, its output; the other adds its parameters. The oracle: a real
    forward's hooks (which modules ran, and what each returned) and `parameters()`."""
    model = _WithAuxHeads().eval()
    returned: dict[str, tuple[int, ...]] = {}

    def watch(path):
        def hook(module, args, output):
            returned.setdefault(path, tuple(output.shape))

        return hook

    handles = [module.register_forward_hook(watch(path)) for path, module in model.named_modules()]
    model(torch.rand(1, 3, 16, 16))
    for handle in handles:
        handle.remove()
    report = archprof.analyze(model, input_size=(3, 16, 16))
    modules = dict(model.named_modules())
    for depth in (0, 1, 2):
        for row in report.rollup(depth).rows():
            path = row["layer"]
            assert (row["call"] >= 0) == (path in returned), (depth, path)
            if path in returned:
                assert row["output_shape"] == "x".join(map(str, returned[path])), (depth, path)
            if depth == row["depth"] and path:  # the module's whole subtree
                assert row["param_count"] == sum(p.numel() for p in modules[path].parameters()), (depth, path)


def test_a_rollup_names_every_row_by_its_module_at_that_depth():
    """A module whose subtree ran one row deeper than the depth is still rolled into its own
    row at the depth (README: every row below depth N rolled into its ancestor): the ReLU
    under the last Sequential was left as it was, '2.0' at depth 2 in a rollup to depth 1."""
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 10)),
        torch.nn.Sequential(torch.nn.ReLU()),
    )
    report = archprof.analyze(model, input_size=(3, 8, 8))
    rows = report.rollup(1).rows()
    assert [(r["layer"], r["module_type"], r["depth"]) for r in rows] == [
        ("0", "Conv2d", 1),
        ("1", "Sequential", 1),
        ("2", "Sequential", 1),
    ]
    assert rows[0]["kernel"] == "3x3"  # a row that stays keeps its window
    assert rows[2]["elementwise_flops"] == 10  # the ReLU's, one per output element


class _CalledTwice(torch.nn.Module):
    """One convolution called before and after a pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.pool = torch.nn.MaxPool2d(2)

    def forward(self, x):
        return self.conv(self.pool(self.conv(x)))


def test_a_rollup_keeps_each_call_of_a_module_at_its_depth_or_above():
    """The oracle: each call's input and output shapes, from hooks on a real forward."""
    model = _CalledTwice()
    seen = []
    model.conv.register_forward_hook(lambda m, args, out: seen.append((args[0].shape, out.shape)))
    model(torch.zeros(1, 8, 32, 32))
    expected = [(call, "x".join(map(str, i)), "x".join(map(str, o))) for call, (i, o) in enumerate(seen)]
    report = archprof.analyze(model, input_size=(8, 32, 32))  # runs the hook too (on meta tensors)
    for depth in (1, 5):
        rows = [r for r in report.rollup(depth).rows() if r["layer"] == "conv"]
        assert [(r["call"], r["input_shape"], r["output_shape"]) for r in rows] == expected
    resnet = archprof.analyze("resnet18")
    deepest = max(resnet.columns["depth"])
    assert resnet.rollup(deepest).rows() == resnet.rows()  # every row is at that depth or above: none merged


def test_a_rollup_keeps_the_whole_models_figures():
    training = archprof.analyze("resnet18", training=True)
    peak = training.totals
    for depth in (0, 1, 2):
        rolled = training.rollup(depth).totals
        assert rolled.training_peak_bytes == peak.training_peak_bytes
        assert rolled.training_peak_layer == ".".join(peak.training_peak_layer.split(".")[:depth])
    folded = archprof.analyze("resnet18", fold_bn=True)
    assert folded.rollup(1).batch_norm_folding == folded.batch_norm_folding


def test_a_merged_subtree_holds_the_sums_by_module_finds():
    """Every container row of the tree (`Report.merged_row` over its subtree) against
    `by_module`, which sums by module path on its own."""
    from archprof.render.tree import tree_rows

    report = archprof.analyze("resnet50")
    modules = report.by_module().set_index("module")
    containers = [node for node in tree_rows(report) if node.is_container]
    assert len(containers) == 4 + 16 + 4  # the stages, their bottlenecks, the first block's downsample in each
    for node in containers:
        for name in SUMMABLE:
            assert node.row[name] == modules.loc[node.label, name], (node.label, name)
    rolled = report.rollup(2)
    assert rolled.columns["macs"][rolled.columns["layer"].index("layer3.5")] == modules.loc["layer3.5", "macs"]


def test_csv_round_trips_through_pandas(tmp_path):
    report = archprof.analyze("mobilenet_v2")
    path = tmp_path / "mobilenet_v2.csv"
    report.to_csv(path)
    loaded = pd.read_csv(path, keep_default_na=False)
    assert loaded["macs"].sum() == report.totals.macs == 300_774_272
    assert loaded["activation_bytes"].sum() == report.totals.activation_bytes
    assert loaded["output_shape"].iloc[-1] == "1x1000"


def test_importing_archprof_loads_neither_pandas_nor_rich():
    code = "import sys, archprof; repr(archprof.analyze('lenet5'))"  # the notebook repr too
    code += "; print('pandas' in sys.modules, 'rich' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.split() == ["False", "False"]


def test_readme_documents_every_column():
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    table = readme.split("## Columns of `Report.layers`")[1].split("\n## ")[0]
    for column in COLUMNS:
        assert f"`{column.name}`" in table, column.name


def test_input_shape_and_kernel_of_each_layer_are_what_a_real_forward_shows():
    from archprof.zoo import MODELS

    model = MODELS["resnet18"].build().eval()
    seen: dict[str, str] = {}

    def record(name):
        def hook(module, args):  # returns None: the call's arguments stay as they are
            seen.setdefault(name, "x".join(map(str, args[0].shape)))

        return hook

    hooks = [
        module.register_forward_pre_hook(record(name))
        for name, module in model.named_modules()
        if name and not list(module.children())
    ]
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    for hook in hooks:
        hook.remove()
    report = archprof.analyze(model, input_size=(3, 64, 64), batch=2)
    rows = {row["layer"]: row for row in report.rows() if row["layer"] in seen}
    assert rows and {layer: row["input_shape"] for layer, row in rows.items()} == {k: seen[k] for k in rows}
    for layer, row in rows.items():
        module = model.get_submodule(layer)
        size = getattr(module, "kernel_size", None)
        expected = "x".join(map(str, (size, size) if isinstance(size, int) else size)) if size is not None else ""
        assert row["kernel"] == expected, layer


def test_a_scalar_output_shows_as_an_empty_shape_not_an_empty_cell():
    """A forward ending in a sum (a loss) returns a 0-d tensor: its row says (), as a tuple
    of no dimensions, where an empty cell would read as "no output"."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    summed = type("Summed", (torch.nn.Module,), {"forward": lambda self, x: model(x).sum()})()
    summed.model = model
    assert summed(torch.randn(1, 3, 8, 8)).dim() == 0  # the real forward: a scalar
    report = archprof.analyze(summed, input_size=(3, 8, 8))
    last = report.rows()[-1]
    assert (last["layer"], last["output_shape"]) == ("", "()")
    assert report.to_csv().splitlines()[-1].split(",")[5] == "()"
    assert report.layers["output_shape"].iloc[-1] == "()"


def test_a_row_handed_out_is_the_callers_own_to_change():
    """rows(), row() and layers shared the report's count dicts: a count added to one was in
    the report's JSON, CSV, totals and roll-ups after."""
    from tests.models import Uncounted

    report = archprof.analyze(Uncounted(), input_size=(6,))
    json_before, csv_before = report.to_json(), report.to_csv()
    totals_before = dict(report.totals.not_counted)
    assert totals_before == {"archprof_tests.uncosted": 1}
    counted = next(i for i, row in enumerate(report.rows()) if row["not_counted"])
    report.rows()[counted]["not_counted"]["aten.fake"] = 7
    report.row(counted)["not_counted"]["aten.fake"] = 7
    report.layers["not_counted"][counted]["aten.fake"] = 7
    report.totals.not_counted["aten.fake"] = 7
    assert (report.to_json(), report.to_csv()) == (json_before, csv_before)
    assert report.totals.not_counted == report.rollup(0).totals.not_counted == totals_before


def test_a_row_that_does_not_exist_is_a_one_line_error():
    import numpy as np
    import pytest

    from archprof.errors import ArchprofError

    report = archprof.analyze("lenet5")
    last = len(report) - 1
    assert report.row(np.int64(last)) == report.rows()[last]
    for index in (len(report), -1, True, 1.0, "0"):
        with pytest.raises(ArchprofError, match=rf"does not exist: lenet5's report has rows 0 to {last}$"):
            report.row(index)


def test_a_rolled_up_head_reads_the_input_its_first_operator_reads():
    """mobilenet_v2's classifier is Sequential(Dropout, Linear): in evaluation the Dropout runs
    no operator and reads nothing, and the rolled-up head (and its line in the summary's tree)
    showed no input, where its Linear reads the pooled features. The oracle: the input a real
    forward hands the head."""
    from torch import nn

    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Sequential(nn.Dropout(), nn.Linear(8, 10))
    )
    seen = []
    model[3].register_forward_hook(lambda module, args, output: seen.append("x".join(map(str, args[0].shape))))
    model.eval()(torch.randn(1, 3, 16, 16))
    report = archprof.analyze(model, input_size=(3, 16, 16))
    head = next(row for row in report.rollup(depth=1).rows() if row["layer"] == "3")
    assert head["input_shape"] == seen[0] == "1x8"


def test_a_row_that_runs_no_operator_shows_the_input_it_passes_on():
    """A Dropout in evaluation returns its input as it came, running no operator: its row
    showed no input shape ('-' beside an output of 1x4096 in vgg16's classifier). The oracle:
    the input a real forward hands each Dropout, and nn.Identity."""
    from torch import nn

    model = nn.Sequential(nn.Flatten(), nn.Dropout(), nn.Linear(48, 6), nn.Identity(), nn.Dropout()).eval()
    seen = {}

    def note(name):
        def hook(module, args, output):  # returns None: the output stays the module's
            seen[name] = "x".join(map(str, args[0].shape))

        return hook

    for name, module in model.named_children():
        module.register_forward_hook(note(name))
    model(torch.randn(1, 3, 4, 4))
    rows = {row["layer"]: row["input_shape"] for row in archprof.analyze(model, input_size=(3, 4, 4)).rows()}
    assert [rows[name] for name in ("1", "3", "4")] == [seen["1"], seen["3"], seen["4"]] == ["1x48", "1x6", "1x6"]
