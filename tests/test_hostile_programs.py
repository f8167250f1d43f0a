"""Exported programs (.pt2) whose graphs reach past the model: refused without --trust-pickle,
before any of the graph runs. torch.export.load keeps any callable it can reach from torch,
operator or math, and a trace runs the graph."""

from __future__ import annotations

import contextlib
import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import archprof
from archprof.errors import ArchprofError
from archprof.load import load_model
from tests.cli import cli, one_error_line
from tests.fixtures.hostile_archives import rewritten
from tests.models import RunsCodeAsItLoads

_IMPORTER = "torch.export.custom_ops._call_custom_autograd_function_in_pre_dispatch"


class _Conv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x)


def _writing_program(path: Path, victim: Path) -> Path:
    """A convolution's program whose graph also maps `victim` into a tensor, shared, and fills
    it with b"A": what is written to the tensor is written to the file."""
    program = torch.export.export(_Conv(), (torch.randn(1, 3, 8, 8),))
    graph = program.graph
    conv = next(node for node in graph.nodes if node.op == "call_function")
    fake = conv.meta["val"].fake_mode

    def after(node, target, args, kwargs=None):
        with graph.inserting_after(node):
            made = graph.call_function(target, args, kwargs or {})
        made.meta["val"] = torch.empty(16, dtype=torch.uint8)
        return made

    with fake:
        mapped = after(conv, torch.ops.aten.from_file.default, (str(victim), True, 16), {"dtype": torch.uint8})
        after(mapped, torch.ops.aten.fill_.Scalar, (mapped, 65))
    torch.export.save(program, path)
    return path


def _nodes_edited(source: Path, target: Path, edit: Callable[[list[dict]], None]) -> Path:
    """A copy of the program `source` whose graph's nodes (its `models/model.json`, plain
    JSON) `edit` changes in place, as a hand-made hostile file would."""

    def entry(name: str, data: bytes, root: str) -> list[tuple[str, bytes]]:
        if name == "models/model.json":
            model = json.loads(data)
            edit(model["graph_module"]["graph"]["nodes"])
            data = json.dumps(model).encode()
        return [(root + name, data)]

    return rewritten(source, target, entry)


def test_a_program_whose_graph_writes_a_file_is_refused_before_it_runs(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"original contents, 16+ bytes")
    hostile = _writing_program(tmp_path / "hostile.pt2", victim)
    result = cli("summary", hostile)
    assert result.exit_code == 2
    assert "its graph calls aten::from_file, which reads or writes files" in one_error_line(result)
    assert victim.read_bytes() == b"original contents, 16+ bytes"
    # The oracle: torch loads the program as it is, and running it writes the file.
    torch.export.load(str(hostile)).module()(torch.randn(1, 3, 8, 8))
    assert victim.read_bytes().startswith(b"A" * 16)


def test_a_trusted_program_runs_as_it_is(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"original contents, 16+ bytes")
    archprof.analyze(str(_writing_program(tmp_path / "trusted.pt2", victim)), trust_pickle=True)


def test_a_program_whose_graph_calls_an_importer_is_refused(tmp_path):
    """A node's target rewritten in the archive's JSON to a function of torch's that imports a
    module by name (and calls its class's `apply`): torch.export.load keeps it."""
    source = torch.export.export(_Conv(), (torch.randn(1, 3, 8, 8),))
    torch.export.save(source, tmp_path / "plain.pt2")

    def importing(nodes: list[dict]) -> None:
        next(node for node in nodes if "conv2d" in node["target"])["target"] = _IMPORTER

    hostile = _nodes_edited(tmp_path / "plain.pt2", tmp_path / "importer.pt2", importing)
    loaded = torch.export.load(str(hostile))
    assert any(getattr(n.target, "__name__", "") == _IMPORTER.rpartition(".")[2] for n in loaded.graph.nodes)
    with pytest.raises(ArchprofError, match=r"its graph calls .*custom_ops\._call_custom_autograd"):
        archprof.analyze(str(hostile))


class _NoGrad(nn.Module):
    """A block under no_grad: export writes it as wrap_with_set_grad_enabled(False, its subgraph)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        with torch.no_grad():
            y = self.conv(x) + 1
        return y * 2


def test_an_operator_passed_as_an_argument_is_refused(tmp_path, capfd):
    """The file's format allows an operator where control flow takes its subgraph
    (`as_operator`), and the generated code calls it: wrap_with_set_grad_enabled handed
    aten::_print printed the file's text (and from_file wrote a file) though every target
    was allowed."""
    torch.export.save(torch.export.export(_NoGrad(), (torch.randn(1, 3, 8, 8),)), tmp_path / "plain.pt2")

    def printing(nodes: list[dict]) -> None:
        node = next(node for node in nodes if "set_grad" in node["target"])
        operator = {"name": "", "arg": {"as_operator": "torch.ops.aten._print.default"}, "kind": 1}
        text = {"name": "", "arg": {"as_string": "FROM THE FILE"}, "kind": 1}
        node["inputs"] = [node["inputs"][0], operator, text]

    hostile = _nodes_edited(tmp_path / "plain.pt2", tmp_path / "argument.pt2", printing)
    with pytest.raises(ArchprofError, match=r"as an argument") as refused:  # read in the code FX writes for it
        archprof.analyze(str(hostile))
    assert "aten._print" in str(refused.value)
    assert "FROM THE FILE" not in capfd.readouterr().out
    assert load_model(str(tmp_path / "plain.pt2")).kind == "exported"  # its subgraph, a node: data


class _Dynamic(nn.Module):
    def forward(self, x):
        n = x.shape[0]
        return x.reshape(n, -1).sum(0) * (n + 1) + torch.sym_max(n, 3)


class _Branching(nn.Module):
    def forward(self, x):
        return torch.cond(x.sum() > 0, lambda t: t + 1, lambda t: t - 1, (x,)) * 2


@pytest.mark.parametrize("build", [_Dynamic, _Branching], ids=["symbolic sizes", "control flow"])
def test_a_program_of_size_arithmetic_or_control_flow_loads_without_trust(tmp_path, build):
    """Size arithmetic (operator.add, torch.sym_max) and torch.cond's subgraphs are data: the
    program loads (a trace does not follow torch.cond yet, a limit of its own)."""
    dynamic = {"x": {0: torch.export.Dim("batch", min=2, max=64)}} if build is _Dynamic else None
    program = torch.export.export(build(), (torch.randn(4, 6),), dynamic_shapes=dynamic)
    torch.export.save(program, tmp_path / "program.pt2")
    assert load_model(str(tmp_path / "program.pt2")).kind == "exported"
    if build is _Dynamic:
        assert archprof.analyze(str(tmp_path / "program.pt2")).rows()[-1]["output_shape"] == "6"


def _name_escaping(source: Path, target: Path, victim: Path, where: str) -> Path:
    """A copy of the program `source` (one torch.cond) where a name that torch.fx writes into
    the code it generates for the graph unescaped ends the line with a carriage return (FX
    indents at newlines only) and opens `victim` for writing, at the code's top level: a
    subgraph's name (written as `getattr(self, "NAME")`), or a keyword argument's (`NAME = ...`)."""
    opens = f"open({str(victim)!r}, 'w')"
    if where == "subgraph":
        name = f'Z")\r{opens}\rdef _swallow(self):\r    return ("Z'
    else:
        name = f"w=0)\r{opens}\rdef _swallow():\r    _z = dict(q"

    def entry(tail: str, data: bytes, root: str) -> list[tuple[str, bytes]]:
        if tail == "models/model.json":
            if where == "subgraph":
                data = data.decode().replace('"true_graph_0"', json.dumps(name)).encode()
            else:
                model = json.loads(data)
                cond = next(n for n in model["graph_module"]["graph"]["nodes"] if n["target"].endswith("cond"))
                cond["inputs"][-1].update(name=name, kind=2)
                data = json.dumps(model).encode()
        return [(root + tail, data)]

    return rewritten(source, target, entry)


@pytest.mark.parametrize("where", ["subgraph", "keyword"])
def test_a_name_that_writes_code_into_the_graphs_generated_source_is_refused(tmp_path, where):
    """torch.export.load writes each graph's code and runs it: the name's statement ran as
    the file loaded, before any check of the graph (the file opened, emptied)."""
    plain = tmp_path / "plain.pt2"
    torch.export.save(torch.export.export(_Branching(), (torch.randn(4, 6),)), plain)
    victim = tmp_path / "victim"
    victim.write_bytes(b"clean")
    hostile = _name_escaping(plain, tmp_path / "hostile.pt2", victim, where)
    says = "graph's code, which torch.fx writes with names from the file, holds statements beside its function"
    with pytest.raises(ArchprofError, match=f"^refusing to load .*: its {says}"):
        archprof.analyze(str(hostile))
    assert says in one_error_line(cli("summary", hostile))
    assert victim.read_bytes() == b"clean"
    with contextlib.suppress(Exception):  # the oracle: torch's own load runs the name's code
        torch.export.load(str(hostile))
    assert victim.read_bytes() == b""


def _stores_a_function(source: Path, target: Path, victim: Path) -> Path:
    """A subgraph name whose lines stay inside the generated function (a carriage return and
    its indentation) and store os.remove where a submodule is looked up, then call it."""
    reach = 'getattr(getattr(torch, "os"), "remove")'
    name = (
        f'training")\r    getattr(self, "_modules")["f"] = {reach}\r'
        f'    _r = getattr(self, "f")({str(victim)!r})\r    _z = ("Z'
    )

    def entry(tail: str, data: bytes, root: str) -> list[tuple[str, bytes]]:
        if tail == "models/model.json":
            data = data.decode().replace('"true_graph_0"', json.dumps(name)).encode()
        return [(root + tail, data)]

    return rewritten(source, target, entry)


def test_code_that_stores_into_the_module_from_a_name_is_refused(tmp_path):
    """Statements inside the function, of allowed calls only, that store into an object: FX
    assigns to names alone. `module()`'s forward ran them (the file removed)."""
    plain = tmp_path / "plain.pt2"
    torch.export.save(torch.export.export(_Branching(), (torch.randn(4, 6),)), plain)
    victim = tmp_path / "victim"
    victim.write_bytes(b"clean")
    hostile = _stores_a_function(plain, tmp_path / "hostile.pt2", victim)
    with pytest.raises(ArchprofError, match="holds a store into an object"):
        archprof.analyze(str(hostile))
    assert victim.exists()
    with contextlib.suppress(Exception):  # the oracle: the module torch builds runs it
        torch.export.load(str(hostile)).module()(torch.ones(4, 6))
    assert not victim.exists()


def test_a_shape_guard_that_writes_code_is_refused_where_module_would_run_it(tmp_path):
    """`module()` writes the program's shape guards into a function's source and runs it
    (plain exec, not FX's): a guard ending its line ran its own statement."""
    from archprof.load.exported import _why_not_data
    from archprof.load.generated_code import generated_code_checked

    victim = tmp_path / "victim"
    victim.write_bytes(b"clean")
    payload = f'1 #\n, "x")\ngetattr(__import__("os"), "remove")({str(victim)!r})\ndef _(*args):\n  torch._assert(1'
    program = torch.export.export(_Conv(), (torch.randn(1, 3, 8, 8),))
    program._guards_code = [payload]
    refused: list[str] = []
    with pytest.raises(ValueError), generated_code_checked(refused, _why_not_data):
        program.module()
    assert refused and refused[0].startswith("shape guard") and victim.exists()
    program.module()  # the oracle: torch's own
    assert not victim.exists()
    program._guards_code = ["L['x'].size()[0] == 1"]
    with generated_code_checked(refused := [], _why_not_data):
        program.module()
    assert not refused


def test_a_function_passed_in_a_call_a_keyword_name_wrote_is_refused(tmp_path):
    """A keyword argument's name that writes a whole call into the line, on one line:
    `wrap_with_set_grad_enabled(False, torch.os.remove, VICTIM)` passes a function to an
    allowed operator, which calls it; a name left empty in the module stack sends archprof
    from `unflatten` (which interprets the graph) to `module()`, whose forward runs the line."""
    plain = tmp_path / "plain.pt2"
    torch.export.save(torch.export.export(_Branching(), (torch.randn(4, 6),)), plain)
    victim = tmp_path / "victim"
    victim.write_bytes(b"clean")
    name = f"w = torch.ops.higher_order.wrap_with_set_grad_enabled(False, torch.os.remove, {str(victim)!r}), q"

    def entry(tail: str, data: bytes, root: str) -> list[tuple[str, bytes]]:
        if tail == "models/model.json":
            model = json.loads(data)
            nodes = model["graph_module"]["graph"]["nodes"]
            next(n for n in nodes if n["target"].endswith("cond"))["inputs"].append(
                {"name": name, "arg": {"as_int": 0}, "kind": 2}
            )
            nodes[-1]["metadata"]["nn_module_stack"] += ";k,a..b,Foo"
            data = json.dumps(model).encode()
        return [(root + tail, data)]

    hostile = rewritten(plain, tmp_path / "hostile.pt2", entry)
    with pytest.raises(ArchprofError, match=r"holds a call inside an argument"):
        archprof.analyze(str(hostile))
    assert victim.exists()
    with contextlib.suppress(Exception):  # the oracle: the module torch builds runs it
        torch.export.load(str(hostile)).module()(torch.ones(4, 6))
    assert not victim.exists()


@pytest.mark.parametrize("how", ["enum", "defaultdict"])
def test_a_tree_spec_that_names_a_module_to_import_is_refused(tmp_path, monkeypatch, how):
    """The input spec's context may hold an enum (`{"__enum__": true, "fqn": "MODULE:name"}`)
    or a defaultdict's factory, which pytree imports by name as torch.export.load reads the
    spec: importing runs the module (`this` printed, `venv.__main__` made a virtual
    environment in the current directory)."""
    module = f"archprof_imported_{how}"
    marker = tmp_path / "imported"
    (tmp_path / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').close()\nx = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plain = tmp_path / "plain.pt2"
    torch.export.save(torch.export.export(_Conv(), (torch.randn(1, 3, 8, 8),)), plain)

    def entry(tail: str, data: bytes, root: str) -> list[tuple[str, bytes]]:
        if tail == "models/model.json":
            model = json.loads(data)
            signature = model["graph_module"]["module_call_graph"][0]["signature"]
            spec = json.loads(signature["in_spec"])
            if how == "enum":
                spec[1]["children_spec"][1]["context"] = json.dumps(
                    [{"__enum__": True, "fqn": f"{module}:x", "name": 0}]
                )
            else:
                factory = {"default_factory_module": module, "default_factory_name": "x", "dict_context": []}
                spec[1]["children_spec"][1] = {
                    "type": "collections.defaultdict",
                    "context": factory,
                    "children_spec": [],
                }
            signature["in_spec"] = json.dumps(spec)
            data = json.dumps(model).encode()
        return [(root + tail, data)]

    hostile = rewritten(plain, tmp_path / "hostile.pt2", entry)
    with pytest.raises(ArchprofError, match="its tree spec that imports a module by name"):
        archprof.analyze(str(hostile))
    assert not marker.exists()
    with contextlib.suppress(Exception):  # the oracle: torch's own load imports it
        torch.export.load(str(hostile))
    assert marker.exists()


def test_a_global_taken_into_a_variable_by_a_keyword_name_is_refused(tmp_path):
    """A keyword's name that closes the call (`**{})`) and follows it, on the same line, with
    statements of allowed parts: `m = torch; f = m.os.remove` and an operator that calls what
    it is given; a name left empty in the module stack sends archprof to `module()`."""
    torch.export.save(torch.export.export(_NoGrad(), (torch.randn(1, 3, 8, 8),)), tmp_path / "plain.pt2")
    victim = tmp_path / "victim"
    victim.write_bytes(b"clean")
    calls = "torch.ops.higher_order.wrap_with_set_grad_enabled(False"
    name = (
        f"**{{}}); m = torch; f = m.os.remove; r = {calls}, f, {str(victim)!r}); g = m.nn.Identity; _z = {calls}, g, q"
    )

    def entry(tail: str, data: bytes, root: str) -> list[tuple[str, bytes]]:
        if tail == "models/model.json":
            model = json.loads(data)
            nodes = model["graph_module"]["graph"]["nodes"]
            node = next(n for n in nodes if "set_grad" in n["target"])
            node["inputs"].append({"name": name, "arg": {"as_int": 0}, "kind": 2})
            nodes[-1]["metadata"]["nn_module_stack"] += ";k,a..b,Foo"
            data = json.dumps(model).encode()
        return [(root + tail, data)]

    hostile = rewritten(tmp_path / "plain.pt2", tmp_path / "hostile.pt2", entry)
    with pytest.raises(ArchprofError, match="holds a variable set to 'torch'"):
        archprof.analyze(str(hostile))
    assert victim.exists()
    with contextlib.suppress(Exception):  # the oracle: the module torch builds runs it
        torch.export.load(str(hostile)).module()(torch.ones(1, 3, 8, 8))
    assert not victim.exists()


class _AddsUnderNoGrad(nn.Module):
    """x + 1 under no_grad, then a convolution: the subgraph takes the input alone."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        with torch.no_grad():
            y = x + 1
        return self.conv(y)


def test_the_modules_own_name_reassigned_by_a_keyword_name_is_refused(tmp_path):
    """A keyword's name on a control-flow node inside a subgraph that closes the call with `)`
    and goes on, its lines kept in the function by carriage returns: `self = torch.os.sys.modules['os']`,
    then `self.mkdir(...)`, which read as a call of the module's own submodule. The subgraph's
    code runs even where unflatten interprets the top graph."""
    torch.export.save(torch.export.export(_AddsUnderNoGrad(), (torch.randn(1, 3, 8, 8),)), tmp_path / "plain.pt2")
    marker = tmp_path / "ran"
    name = f")\r    self = torch.os.sys.modules['os']\r    _r = self.mkdir({str(marker)!r})\r    _z = slice(q"

    def entry(tail: str, data: bytes, root: str) -> list[tuple[str, bytes]]:
        if tail == "models/model.json":
            model = json.loads(data)
            outer = next(n for n in model["graph_module"]["graph"]["nodes"] if "set_grad" in n["target"])
            subgraph = next(i for i in outer["inputs"] if "as_graph" in i["arg"])["arg"]["as_graph"]["graph"]
            inner = copy.deepcopy(outer)
            next(i for i in inner["inputs"] if "as_graph" in i["arg"])["arg"]["as_graph"]["name"] = "submod_9"
            inner["inputs"].append({"name": name, "arg": {"as_int": 0}, "kind": 2})
            inner["outputs"], inner["name"] = [{"as_tensor": {"name": "inner_out"}}], "inner"
            subgraph["nodes"].insert(0, inner)
            subgraph["nodes"][1]["inputs"][0]["arg"] = {"as_tensor": {"name": "inner_out"}}  # read: kept
            subgraph["tensor_values"]["inner_out"] = subgraph["tensor_values"]["x"]
            data = json.dumps(model).encode()
        return [(root + tail, data)]

    hostile = rewritten(tmp_path / "plain.pt2", tmp_path / "hostile.pt2", entry)
    with pytest.raises(ArchprofError, match="holds a store to the name 'self'"):
        archprof.analyze(str(hostile))
    assert not marker.exists()
    with contextlib.suppress(Exception):  # the oracle: torch runs the subgraph's code
        program = torch.export.load(str(hostile))
        program.graph_module.submod_1(torch.ones(1, 3, 8, 8))
    assert marker.exists()


def test_an_argument_named_as_a_global_is_refused(tmp_path):
    """A subgraph's input renamed `torch` in the file: torch writes `def forward(self, torch)`,
    and the argument stands where the checks read the global (FX names its arguments apart
    from its globals and builtins, as it names its variables)."""
    torch.export.save(torch.export.export(_AddsUnderNoGrad(), (torch.randn(1, 3, 8, 8),)), tmp_path / "plain.pt2")

    def entry(tail: str, data: bytes, root: str) -> list[tuple[str, bytes]]:
        if tail == "models/model.json":
            model = json.loads(data)
            outer = next(n for n in model["graph_module"]["graph"]["nodes"] if "set_grad" in n["target"])
            subgraph = next(i for i in outer["inputs"] if "as_graph" in i["arg"])["arg"]["as_graph"]["graph"]
            old = subgraph["inputs"][0]["as_tensor"]["name"]
            renamed = json.loads(json.dumps(subgraph).replace(json.dumps(old), json.dumps("torch")))
            subgraph.clear()
            subgraph.update(renamed)
            data = json.dumps(model).encode()
        return [(root + tail, data)]

    hostile = rewritten(tmp_path / "plain.pt2", tmp_path / "hostile.pt2", entry)
    assert "def forward(self, torch)" in torch.export.load(str(hostile)).graph_module.submod_1.code  # the oracle
    with pytest.raises(ArchprofError, match="holds an argument named 'torch', as a global"):
        archprof.analyze(str(hostile))


class _Nonzero(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        return y.sum() + torch.nonzero(y).sum()


def test_a_program_that_cannot_run_on_meta_nor_be_copied_is_one_line_and_exit_2(tmp_path):
    """An exported program with a data-dependent size (nonzero's): its meta trace gives way to a
    CPU one, whose copy of the model (copy.deepcopy) raised on the graph's symbolic sizes: a
    traceback and exit 1. The oracle: torch runs the program."""
    program = torch.export.export(_Nonzero(), (torch.randn(1, 3, 16, 16),))
    path = tmp_path / "nonzero.pt2"
    torch.export.save(program, path)
    loaded = torch.export.load(path)
    loaded.module()(torch.randn(1, 3, 16, 16))
    result = cli("summary", path, "-i", "3x16x16")
    assert result.exit_code == 2
    assert "cannot run on the meta device" in one_error_line(result)
    assert "cannot copy the model to run it on the CPU: Cannot call numel() on tensor with symbolic sizes" in (
        one_error_line(result)
    )


# Forwards making CPU tensors whose sizes their values decide, which no meta call sizes: each
# of a class of its own (TorchScript keeps what it compiled by qualified name).
class _RepeatsByValue(nn.Module):
    def forward(self, x):
        repeated = torch.repeat_interleave(torch.ones([1], dtype=torch.uint8), torch.tensor([10_000]))
        return x + repeated.sum()


class _NonzeroByValue(nn.Module):
    def forward(self, x):
        return x + torch.ones([1]).expand([100, 100]).nonzero().sum()


class _BincountByValue(nn.Module):
    def forward(self, x):
        return x + torch.bincount(torch.tensor([20_000])).sum()


class _MaskedSelectByValue(nn.Module):
    def forward(self, x):
        selected = torch.masked_select(torch.ones([1]).expand([100, 100]), torch.ones([1], dtype=torch.bool))
        return x + selected.sum()


class _MaskIndexByValue(nn.Module):
    def forward(self, x):
        return x + torch.ones([1]).expand([100, 100])[torch.ones([1], dtype=torch.bool).expand([100, 100])].sum()


class _UniqueByValue(nn.Module):
    def forward(self, x):
        return x + torch.unique(torch.arange(10_000, dtype=torch.int16)).sum()


def _stored(*tensors: torch.Tensor) -> int:
    return sum(tensor.untyped_storage().nbytes() for tensor in tensors)


# Each forward above, the operator its refusal names, and, run by torch: what the forward
# makes before it (its inputs' storage) and what it makes (the indices `repeat_interleave(x,
# repeats)` takes x's elements by; each mask's true elements, broadcast).
_VALUE_SIZED_FORWARDS = {
    "repeat_interleave": (
        _RepeatsByValue,
        "aten.repeat_interleave",
        lambda: (
            _stored(torch.ones([1], dtype=torch.uint8), torch.tensor([0])),
            torch.repeat_interleave(torch.tensor([10_000])),
        ),
    ),
    "nonzero": (
        _NonzeroByValue,
        "aten.nonzero",
        lambda: (_stored(torch.ones([1])), torch.ones([1]).expand([100, 100]).nonzero()),
    ),
    "bincount": (
        _BincountByValue,
        "aten.bincount",
        lambda: (_stored(torch.tensor([0])), torch.bincount(torch.tensor([20_000]))),
    ),
    "masked_select": (
        _MaskedSelectByValue,
        "aten.masked_select",
        lambda: (
            _stored(torch.ones([1]), torch.ones([1], dtype=torch.bool)),
            torch.masked_select(torch.ones([1]).expand([100, 100]), torch.ones([1], dtype=torch.bool)),
        ),
    ),
    "mask_index": (
        _MaskIndexByValue,
        "aten.index",
        lambda: (
            _stored(torch.ones([1]), torch.ones([1], dtype=torch.bool)),
            torch.ones([1]).expand([100, 100])[torch.ones([1], dtype=torch.bool).expand([100, 100])],
        ),
    ),
    "unique": (
        _UniqueByValue,
        "aten._unique2",
        lambda: (
            _stored(torch.arange(10_000, dtype=torch.int16)),
            torch.unique(torch.arange(10_000, dtype=torch.int16)),
        ),
    ),
}


@pytest.mark.parametrize("name", list(_VALUE_SIZED_FORWARDS))
def test_a_model_files_tensor_sized_by_its_values_is_bounded(tmp_path, monkeypatch, name):
    """`torch.repeat_interleave(x, repeats)`, `nonzero`, `bincount` each made 2.6 GB on the CPU
    from a tiny file's forward: meta cannot size what values decide, and they ran unbounded.
    Sized from those values before they run (a sum, a count, a largest value), each is refused
    past MOST_FILE_CPU_BYTES like any other operator: here a bound of what the forward makes
    before it and half what it makes (a few tens of kB). The oracle: torch runs the file, and
    the operator, whose output gives the bound."""
    import archprof.tracing.recorder

    module, operator, made_by_torch = _VALUE_SIZED_FORWARDS[name]
    path = tmp_path / f"{name}.pt"
    torch.jit.script(module()).save(str(path))
    torch.jit.load(str(path))(torch.zeros(3))
    before, made = made_by_torch()
    monkeypatch.setattr(archprof.tracing.recorder, "MOST_FILE_CPU_BYTES", before + made.nbytes // 2)
    result = cli("summary", path, "-i", "3")
    assert result.exit_code == 2
    assert f"of tensors on the CPU (by {operator}), which an analysis allocates for real" in one_error_line(result)
    monkeypatch.undo()
    assert cli("summary", path, "-i", "3").exit_code == 0, "within the default bound"


class _RepeatsPastAnyMemory(nn.Module):
    def forward(self, x):
        repeated = torch.repeat_interleave(torch.ones([1], dtype=torch.uint8), torch.tensor([1 << 40]))
        return x + repeated.sum()


class _BinsPastAnyMemory(nn.Module):
    def forward(self, x):
        return x + torch.bincount(torch.tensor([1 << 40])).sum()


@pytest.mark.parametrize(
    ("module", "operator"), [(_RepeatsPastAnyMemory, "repeat_interleave"), (_BinsPastAnyMemory, "bincount")]
)
def test_a_model_file_asking_for_terabytes_by_value_is_refused_before_it_allocates(tmp_path, module, operator):
    """At the default bound (1 GiB): a file whose forward repeats an element 2**40 times, or
    counts a value of 2**40, asks for 8 TiB of int64, refused as sized, before torch tries
    (which no machine holds: torch's own call fails to allocate it, the oracle)."""
    path = tmp_path / f"{operator}_past_memory.pt"
    torch.jit.script(module()).save(str(path))
    with pytest.raises(RuntimeError, match="allocate"):
        torch.jit.load(str(path))(torch.zeros(3))
    result = cli("summary", path, "-i", "3")
    assert result.exit_code == 2
    assert one_error_line(result).startswith(
        f"error: the forward makes 8.80 TB of tensors on the CPU (by aten.{operator}), which an analysis"
    )


class _CountsAsItLoads(RunsCodeAsItLoads):
    """Counts the nonzero elements of a broadcast 100 x 100 tensor as it loads."""

    @torch.jit.export
    def __setstate__(self, state: tuple[float, bool]) -> None:
        self.training = state[1]
        self.made = float(torch.ones([1]).expand([100, 100]).nonzero().sum())


def test_what_a_torchscript_file_sizes_by_value_as_it_loads_is_bounded(tmp_path, monkeypatch):
    """The bound on what a TorchScript file's code makes on the CPU as it loads sizes a
    value-sized tensor too: `nonzero` of 10,000 elements, 160,000 bytes of indices (torch's),
    past a bound of 1,000 bytes besides the file's size; the default bound lets it load.
    The oracle: torch loads the file and runs the code."""
    import archprof.load.files

    path = tmp_path / "counts.pt"
    torch.jit.script(_CountsAsItLoads()).save(str(path))
    assert torch.jit.load(str(path))(torch.zeros(1)).tolist() == [
        float(torch.ones([1]).expand([100, 100]).nonzero().sum())
    ]
    assert torch.ones([1]).expand([100, 100]).nonzero().nbytes == 160_000
    assert cli("summary", path, "-i", "1").exit_code == 0
    monkeypatch.setattr(archprof.load.files, "MOST_FILE_CPU_BYTES", 1_000)
    result = cli("summary", path, "-i", "1")
    assert result.exit_code == 2
    assert "its TorchScript code makes 160.0" in one_error_line(result)
    assert "while the file loads (by aten.nonzero)" in one_error_line(result)


class _IndexesByValue(nn.Module):
    """A forward that builds a small index on the CPU from values, as a model might: repeated,
    counted, its nonzero elements and unique values taken, and reads the input by it."""

    def forward(self, x):
        index = torch.repeat_interleave(torch.arange(3), torch.tensor([2, 1, 1]))
        picked = torch.nonzero(index > 0).numel() + torch.masked_select(index, index > 1).numel()
        counted = torch.bincount(index).sum() + torch.unique(index).numel() + index[index > 0].numel()
        return x[:, index.to(x.device)] * counted + picked


def test_small_value_sized_tensors_in_a_model_files_forward_still_analyse(tmp_path):
    """Sized by their values, small ones pass as before. The oracle: torch runs the file."""
    path = tmp_path / "indexes.pt"
    torch.jit.script(_IndexesByValue()).save(str(path))
    assert torch.jit.load(str(path))(torch.arange(3.0).view(1, 3)).tolist() == [[3.0, 3.0, 12.0, 21.0]]
    result = cli("summary", path, "-i", "3")
    assert result.exit_code == 0, result.output
    assert archprof.analyze(str(path), input_size=(3,)).totals.param_count == 0


_MASK = torch.tensor([[True, False, True], [False, False, True]])
_ATEN = torch.ops.aten
# Calls on small CPU tensors whose output sizes their values decide, and whether the bytes
# sized for them are exactly what torch makes (else at least: besides what a call makes
# inside, unique's inverse indices and counts are sized whether asked for or not).
_CALLS_SIZED_BY_VALUES = [
    (_ATEN.repeat_interleave.Tensor, (torch.tensor([3, 0, 2]),), {}, False),
    (_ATEN.repeat_interleave.Tensor, (torch.tensor([3, 0, 2], dtype=torch.int32),), {}, False),
    (_ATEN.nonzero.default, (_MASK,), {}, True),
    (_ATEN.nonzero.default, (torch.tensor([0.0, 2.0, -1.0]),), {}, True),
    (_ATEN.nonzero.default, (torch.ones(2, 1, 3, dtype=torch.int8),), {}, True),
    (_ATEN.bincount.default, (torch.tensor([1, 4, 4]),), {}, True),
    (_ATEN.bincount.default, (torch.tensor([1, 4, 4]),), {"minlength": 9}, True),
    (_ATEN.bincount.default, (torch.tensor([], dtype=torch.long),), {"minlength": 3}, True),
    (_ATEN.bincount.default, (torch.tensor([1, 4], dtype=torch.uint8), torch.tensor([0.5, 2.0])), {}, True),
    (_ATEN.bincount.default, (torch.tensor([1, 4]), torch.tensor([0.5, 2.0], dtype=torch.float64)), {}, True),
    (_ATEN.bincount.default, (torch.tensor([1, 4]), torch.tensor([0.5, 2.0], dtype=torch.float16)), {}, True),
    (_ATEN.bincount.default, (torch.tensor([1, 4]), torch.tensor([3, 2])), {}, True),
    (_ATEN.masked_select.default, (torch.arange(6.0).view(2, 3), _MASK), {}, False),
    (_ATEN.masked_select.default, (torch.arange(6.0).view(2, 1, 3), _MASK[0]), {}, False),
    (_ATEN.index.Tensor, (torch.arange(6.0).view(2, 3), [_MASK]), {}, False),
    (_ATEN.index.Tensor, (torch.arange(12.0).view(2, 2, 3), [None, _MASK.to(torch.uint8)]), {}, False),
    (_ATEN._unique2.default, (torch.tensor([3, 1, 4, 2]), True, True, True), {}, True),
    (_ATEN._unique2.default, (torch.tensor([3.0, 1.0]),), {}, False),
    (_ATEN._unique.default, (torch.tensor([3, 1, 3]), True, True), {}, False),
    (_ATEN.unique_dim.default, (torch.arange(6).view(2, 3), 1, True, True, True), {}, True),
    (_ATEN.unique_consecutive.default, (torch.tensor([1, 1, 2]), True, True), {}, False),
    (_ATEN.unique_dim_consecutive.default, (torch.arange(6).view(2, 3), 0), {}, True),
]


@pytest.mark.parametrize(("func", "args", "kwargs", "exact"), _CALLS_SIZED_BY_VALUES)
def test_a_call_sized_by_its_values_is_sized_at_least_as_torch_makes_it(func, args, kwargs, exact):
    """Each overload's output, its size and dtype, as torch makes it on the CPU (the oracle),
    sized from the call's values before it runs, without meta's answer (it has none)."""
    from archprof.cpu_allocation import cpu_bytes
    from archprof.structure import map_op_args, tensors_in

    with pytest.raises(Exception):  # noqa: B017 - meta sizes none of these (a kernel's own error)
        func(*map_op_args(lambda tensor: tensor.to("meta"), torch.Tensor, args, kwargs)[0], **kwargs)
    made = sum(tensor.nbytes for tensor in tensors_in(func(*args, **kwargs)))
    sized = cpu_bytes(func, False, False, args, kwargs, tensors_in([args, kwargs]))
    assert sized == made if exact else made <= sized <= 4 * made + 200


def test_repeats_whose_sum_int64_would_wrap_are_sized_past_any_bound():
    """Four repeats of 2**62 sum to 2**64, which int64 wraps to 0 (torch's own count does):
    sized as 4 x 2**62 indices."""
    from archprof.cpu_allocation import cpu_bytes

    repeats = torch.tensor([1 << 62] * 4)
    assert int(repeats.sum()) == 0  # the oracle: int64 wraps
    assert cpu_bytes(_ATEN.repeat_interleave.Tensor, False, False, (repeats,), {}, [repeats]) >= 4 * (1 << 62) * 8


_BROADCAST = [
    torch.tensor([0.0, 2.0, -1.0]).expand(4, 3),
    torch.tensor([[0], [3]]).expand(2, 5),
    torch.tensor([True, False]).view(2, 1, 1).expand(2, 3, 4),
    torch.ones(1, dtype=torch.int8).expand(0, 3),
    torch.arange(6).view(2, 3)[:, None].expand(2, 4, 3),
]


_BROADCAST_ROWS = [
    torch.tensor([3]).expand(5),
    torch.tensor([0]).expand(4),
    torch.tensor([2, 5])[None].expand(3, 2)[:, 1],
]


@pytest.mark.parametrize("tensor", _BROADCAST, ids=range(len(_BROADCAST)))
def test_a_broadcast_tensors_nonzero_elements_are_counted_as_torch_counts_them(tensor):
    """Read once a value its storage holds (its stride-0 dimensions at index 0, the count
    times their sizes), a broadcast tensor's nonzero elements are sized as torch's nonzero
    makes their indices (the oracle)."""
    from archprof.cpu_allocation import cpu_bytes
    from archprof.structure import tensors_in

    made = torch.nonzero(tensor).nbytes
    assert cpu_bytes(_ATEN.nonzero.default, False, False, (tensor,), {}, tensors_in([tensor])) == made


@pytest.mark.parametrize("row", _BROADCAST_ROWS, ids=range(len(_BROADCAST_ROWS)))
def test_a_broadcast_rows_sum_and_largest_value_are_torchs(row):
    """A broadcast row's sum (repeat_interleave's count of indices) and largest value
    (bincount's bins) read from its one stored value: torch's own (the oracle), besides the
    cumulative sums and the contiguous copy their kernels make of it."""
    from archprof.cpu_allocation import cpu_bytes

    repeated = torch.repeat_interleave(row).nbytes + 2 * row.numel() * 8
    assert cpu_bytes(_ATEN.repeat_interleave.Tensor, False, False, (row,), {}, [row]) == repeated
    counted = torch.bincount(row).nbytes + row.numel() * 8
    assert cpu_bytes(_ATEN.bincount.default, False, False, (row,), {}, [row]) == counted


def test_a_terabyte_broadcast_mask_is_counted_from_its_one_element():
    """`nonzero` of one true element broadcast to 2**42 is sized as 2**42 indices without
    counting 2**42 elements (nearly an hour of CPU)."""
    from archprof.cpu_allocation import cpu_bytes

    mask = torch.ones([1], dtype=torch.bool).expand([2**42])
    assert cpu_bytes(_ATEN.nonzero.default, False, False, (mask,), {}, [mask]) == 2**42 * 8


class _TopKOfARow(nn.Module):
    def forward(self, x):
        return x + torch.topk(torch.ones([1]).expand([10_000]), 1)[0].sum()


class _KthValueOfARow(nn.Module):
    def forward(self, x):
        return x + torch.kthvalue(torch.ones([1]).expand([10_000]), 1)[0]


class _ModeOfARow(nn.Module):
    def forward(self, x):
        return x + torch.mode(torch.ones([1]).expand([10_000]))[0]


class _MedianOfARow(nn.Module):
    def forward(self, x):
        return x + torch.median(torch.ones([1]).expand([10_000]))


class _SortOfARow(nn.Module):
    def forward(self, x):
        return x + torch.sort(torch.arange(10_000.0))[0].sum()


class _HistcOfManyBins(nn.Module):
    def forward(self, x):
        return x + torch.histc(torch.ones([1]), bins=10_000).sum()


class _HistogramOfManyBins(nn.Module):
    def forward(self, x):
        return x + torch.histogram(torch.ones([1]), bins=10_000)[0].sum()


class _SearchOfARow(nn.Module):
    def forward(self, x):
        return x + torch.searchsorted(torch.arange(10.0), torch.ones([1]).expand([10_000])).sum()


# Forwards whose CPU operator makes more inside than it returns, the operator, the bytes of
# what the call returns (its outputs on meta: sort's 10,000 values and long indices), and a
# bound above those and below what the kernel makes besides, measured against torch's peak
# memory (a (value, index) pair an element of the row for topk and mode, a copy and long
# indices for kthvalue, a copy for median, half a pair for sort's buffer, a histogram a
# thread and one more for histc, a contiguous copy of the values searched).
_MAKES_INSIDE = [
    (_TopKOfARow, "topk", 12, 10_000),
    (_KthValueOfARow, "kthvalue", 12, 10_000),
    (_ModeOfARow, "mode", 12, 10_000),
    (_MedianOfARow, "median", 4, 10_000),
    (_SortOfARow, "sort", 160_000, 200_000),
    (_HistcOfManyBins, "histc", 40_000, 60_000),
    (_SearchOfARow, "searchsorted", 80_000, 100_000),
]


@pytest.mark.parametrize(("module", "operator", "returned", "bound"), _MAKES_INSIDE, ids=[m[1] for m in _MAKES_INSIDE])
def test_what_a_cpu_kernel_makes_besides_its_outputs_is_bounded(
    tmp_path, monkeypatch, module, operator, returned, bound
):
    """`torch.topk(torch.ones([1]).expand([300000000]), 1)` returned 12 bytes and made 4.97 GB
    (a 300-million-element vector of pairs); histc of 268 million bins 4.48 GB, a histogram a
    thread. Here each call's outputs (sized on meta, as torch returns them: the oracle) are
    within the bound, and what its kernel makes besides is not: refused, naming it."""
    import archprof.tracing.recorder

    path = tmp_path / f"inside_{operator}.pt"
    torch.jit.script(module()).save(str(path))
    torch.jit.load(str(path))(torch.zeros(3))
    assert returned < bound
    monkeypatch.setattr(archprof.tracing.recorder, "MOST_FILE_CPU_BYTES", bound)
    result = cli("summary", path, "-i", "3")
    assert result.exit_code == 2
    assert f"of tensors on the CPU (by aten.{operator}), which an analysis allocates for real" in one_error_line(result)
    monkeypatch.undo()
    assert cli("summary", path, "-i", "3").exit_code == 0, "within the default bound"


def test_a_histogram_which_meta_cannot_size_is_sized_from_its_bins(tmp_path, monkeypatch):
    """histogram has no meta kernel: its 10,000 bins and 10,001 edges (torch's, the oracle)
    and a histogram a thread, sized from its bins, past a bound of 10,000 bytes."""
    import archprof.tracing.recorder

    path = tmp_path / "histogram.pt"
    torch.jit.script(_HistogramOfManyBins()).save(str(path))
    torch.jit.load(str(path))(torch.zeros(3))
    assert sum(t.nbytes for t in torch.histogram(torch.ones([1]), bins=10_000)) == 80_004
    monkeypatch.setattr(archprof.tracing.recorder, "MOST_FILE_CPU_BYTES", 10_000)
    result = cli("summary", path, "-i", "3")
    assert result.exit_code == 2
    assert "the forward makes 1" in one_error_line(result)
    assert "of tensors on the CPU (by aten.histogram)" in one_error_line(result)


class _TopKAsItLoads(RunsCodeAsItLoads):
    """Takes the largest of 100,000 broadcast elements as it loads."""

    @torch.jit.export
    def __setstate__(self, state: tuple[float, bool]) -> None:
        self.training = state[1]
        self.made = float(torch.topk(torch.ones([1]).expand([100_000]), 1)[0].sum())


def test_what_a_cpu_kernel_makes_as_a_torchscript_file_loads_is_bounded(tmp_path, monkeypatch):
    """topk's 1.6 MB of pairs, past 1,000 bytes besides the file's size, as the file loads;
    its 12 bytes of outputs within. The oracle: torch loads the file and runs the code."""
    import archprof.load.files

    path = tmp_path / "topk_loads.pt"
    torch.jit.script(_TopKAsItLoads()).save(str(path))
    assert torch.jit.load(str(path))(torch.zeros(1)).tolist() == [1.0]
    assert path.stat().st_size + 1_000 < 1_600_000
    monkeypatch.setattr(archprof.load.files, "MOST_FILE_CPU_BYTES", 1_000)
    result = cli("summary", path, "-i", "1")
    assert result.exit_code == 2
    assert "its TorchScript code makes 1.6" in one_error_line(result)
    assert "while the file loads (by aten.topk)" in one_error_line(result)


class _SumsABroadcastRow(nn.Module):
    def forward(self, x):
        return x + torch.ones([1]).expand([2_000]).sum()


class _SumsTrillions(nn.Module):
    def forward(self, x):
        return x + torch.ones([1]).expand([4398046511104]).sum()


class _CountsTrillions(nn.Module):
    def forward(self, x):
        return x + torch.ones([1]).expand([4398046511104]).nonzero().sum()


def test_the_elements_a_model_files_cpu_operators_read_are_bounded(tmp_path, monkeypatch):
    """A sum of one element broadcast to 2**42 took nearly an hour of CPU, allocating
    nothing: the elements a model file's CPU operators read (as broadcast) are bounded by
    MOST_FILE_CPU_ELEMENTS (here 1,000: a sum of 2,000 refused, naming it); a module of the
    user's is not bounded. The oracle: torch runs the file, summing the 2,000 ones."""
    import archprof.tracing.recorder

    path = tmp_path / "sums.pt"
    torch.jit.script(_SumsABroadcastRow()).save(str(path))
    assert torch.jit.load(str(path))(torch.zeros(3)).tolist() == [2_000.0] * 3
    assert cli("summary", path, "-i", "3").exit_code == 0
    monkeypatch.setattr(archprof.tracing.recorder, "MOST_FILE_CPU_ELEMENTS", 1_000)
    result = cli("summary", path, "-i", "3")
    assert result.exit_code == 2
    assert one_error_line(result) == (
        "error: the forward reads 2,000 elements of CPU tensors (by aten.sum), which an analysis computes for real:"
        " more than the 1,000 elements a model file may"
    )
    assert archprof.analyze(_SumsABroadcastRow(), input_size=(3,)).totals.param_count == 0  # a module of the user's


@pytest.mark.parametrize(("module", "operator"), [(_SumsTrillions, "sum"), (_CountsTrillions, "nonzero")])
def test_a_model_file_reducing_trillions_of_broadcast_elements_is_refused_before_it_runs(tmp_path, module, operator):
    """At the default bound: a sum, and nonzero's count that sizes its result, of 2**42
    broadcast elements (an hour of CPU each), refused before either reads one."""
    path = tmp_path / f"{operator}_trillions.pt"
    torch.jit.script(module()).save(str(path))
    result = cli("summary", path, "-i", "3")
    assert result.exit_code == 2
    assert one_error_line(result).startswith(
        f"error: the forward reads 4,398,046,511,104 elements of CPU tensors (by aten.{operator}), which an analysis"
    )


class _SumsAsItLoads(RunsCodeAsItLoads):
    """Sums 2**42 broadcast elements as it loads."""

    @torch.jit.export
    def __setstate__(self, state: tuple[float, bool]) -> None:
        self.training = state[1]
        self.made = float(torch.ones([1]).expand([4398046511104]).sum())


def test_the_elements_a_torchscript_files_code_reads_as_it_loads_are_bounded(tmp_path):
    """The sum of 2**42 broadcast elements in `__setstate__`, refused as the file loads, in
    one line naming it."""
    path = tmp_path / "sums_loads.pt"
    torch.jit.script(_SumsAsItLoads()).save(str(path))
    result = cli("summary", path, "-i", "1")
    assert result.exit_code == 2
    assert one_error_line(result) == (
        f"error: refusing to load {path}: its TorchScript code reads 4,398,046,511,104 elements of CPU tensors while"
        " the file loads (by aten.sum), more than a model file may (134,217,728 elements besides its own size)"
    )


class _SortsAndSearchesALittle(nn.Module):
    """A forward taking small sorts, order statistics, histograms and searches of CPU tensors."""

    def forward(self, x):
        row = torch.arange(8.0).flip(0)
        picked = torch.topk(row, 2)[0].sum() + torch.kthvalue(row, 3)[0] + torch.mode(row)[0]
        picked = picked + torch.median(row) + torch.sort(row)[0][0] + torch.argsort(row)[0]
        counted = torch.histc(row, bins=4).sum() + torch.histogram(row, bins=4)[0].sum()
        found = torch.searchsorted(row.flip(0), torch.tensor([2.5])).sum() + torch.bucketize(row, row.flip(0)).sum()
        return x + picked + counted + found


def test_small_sorts_histograms_and_searches_in_a_model_files_forward_still_analyse(tmp_path):
    """Sized with what their kernels make inside, small ones pass the default bounds. The
    oracle: torch runs the file."""
    path = tmp_path / "sorts.pt"
    torch.jit.script(_SortsAndSearchesALittle()).save(str(path))
    expected = _SortsAndSearchesALittle()(torch.zeros(1)).tolist()
    assert torch.jit.load(str(path))(torch.zeros(1)).tolist() == expected
    result = cli("summary", path, "-i", "1")
    assert result.exit_code == 0, result.output


class _MedianOfABroadcastRow(nn.Module):
    def forward(self, x):
        return x + torch.nanmedian(torch.ones([1]).expand([20_000_000]), 0)[0]


@pytest.mark.parametrize("median", [torch.ops.aten.median.dim, torch.ops.aten.nanmedian.dim])
def test_a_median_along_a_broadcast_row_runs_on_a_copy_of_it(median):
    """torch's CPU median and nanmedian along a dim read past a broadcast row's memory: 20
    million ones broadcast from one answered 0.0 or 2.8e-45, and a model file of two lines
    made archprof crash (SIGSEGV). They run on a contiguous copy: the median of ones is 1,
    as torch answers for the same row contiguous (the oracle)."""
    from archprof.cpu_allocation import called_safely

    row = torch.ones([1]).expand([20_000_000])
    assert median(row.contiguous(), 0)[0].item() == 1.0
    assert called_safely(median, (row, 0), {})[0].item() == 1.0


def test_a_model_file_taking_the_median_of_a_broadcast_row_is_analysed(tmp_path):
    """The two-line file that crashed archprof (exit 139), analysed in a process of its own."""
    path = tmp_path / "median.pt"
    torch.jit.script(_MedianOfABroadcastRow()).save(str(path))
    completed = subprocess.run(
        [sys.executable, "-m", "archprof", "summary", str(path), "-i", "3", "-f", "csv"], capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr


class _ConvolvesBroadcastMaps(nn.Module):
    def forward(self, x):
        image = torch.ones([1, 1, 1, 1]).expand([1, 1, 4096, 4096])
        kernel = torch.ones([1, 1, 1, 1]).expand([1, 1, 2048, 2048])
        return x + torch.nn.functional.conv2d(image, kernel).sum()


class _MultipliesBroadcastMatrices(nn.Module):
    def forward(self, x):
        matrix = torch.ones([1, 1]).expand([8000, 8000])
        return x + (matrix @ matrix).sum()


class _DecomposesABroadcastMatrix(nn.Module):
    def forward(self, x):
        return x + torch.linalg.svdvals(torch.ones([1, 1]).expand([1024, 1024]) + 0.0).sum()


class _ExponentiatesABroadcastMatrix(nn.Module):
    def forward(self, x):
        return x + torch.linalg.matrix_exp(torch.ones([1, 1]).expand([128, 128]) + 0.0).sum()


class _PoolsABroadcastMapByALargeWindow(nn.Module):
    def forward(self, x):
        return x + torch.nn.functional.avg_pool2d(torch.ones([1, 1, 1, 1]).expand([1, 1, 256, 256]), 96, 1).sum()


class _AttendsOverManyTokens(nn.Module):
    def forward(self, x):
        tokens = torch.ones([1, 1, 4096, 64])  # whole: a CPU attends over broadcast ones by matrix products
        return x + torch.nn.functional.scaled_dot_product_attention(tokens, tokens, tokens).sum()


class _PairsBroadcastPoints(nn.Module):
    def forward(self, x):
        return x + torch.pdist(torch.ones([1, 1]).expand([8192, 16])).sum()


class _RecursOverABroadcastSequence(nn.Module):
    def forward(self, x):
        steps = torch.ones([1, 1, 1]).expand([200, 1, 4])
        state = [torch.zeros([1, 1, 1024]), torch.zeros([1, 1, 1024])]
        weights = [torch.ones([4096, 4]), torch.ones([4096, 1024]), torch.zeros([4096]), torch.zeros([4096])]
        return x + torch.lstm(steps, state, weights, True, 1, 0.0, False, False, False)[0].sum()


class _BilinearOfBroadcastRows(nn.Module):
    def forward(self, x):
        rows = torch.ones([1, 1]).expand([4096, 64])
        return x + torch.nn.functional.bilinear(rows, rows, torch.ones([64, 64, 64])).sum()


class _ConvolvesALittle(nn.Module):
    def forward(self, x):
        return x + torch.nn.functional.conv2d(torch.ones([1, 2, 8, 8]), torch.ones([3, 2, 3, 3])).sum()


@pytest.mark.parametrize(
    ("module", "reads", "operator"),
    [
        # 4096 x 4096 positions, each against 2048 x 2048 weights: 2**24 * 2**22.
        (_ConvolvesBroadcastMaps, 2**24 * 2**22, "aten.convolution"),
        # 8000 x 8000 elements, each once per column of the right matrix: 8000**3.
        (_MultipliesBroadcastMatrices, 8000**3, "aten.mm"),
        # The matrix made whole by the addition (1024 x 1024 read), then decomposed: each
        # element once per row, 1024**3.
        (_DecomposesABroadcastMatrix, 1024**2 + 1024**3, "aten._linalg_svd"),
        # The same for the exponential of a 128 x 128 matrix, once more per squaring float32's
        # exponent range allows (128), and 16 products besides.
        (_ExponentiatesABroadcastMatrix, 128**2 + 128**3 * (128 + 16), "aten.linalg_matrix_exp"),
        # 256 x 256 positions, each once per offset of a 96 x 96 window.
        (_PoolsABroadcastMapByALargeWindow, 256**2 * 96**2, "aten.avg_pool2d"),
        # Queries, keys and values of 4096 x 64 (1 MiB each) in CPU flash attention: each query
        # element once per key, each value element once per query.
        (_AttendsOverManyTokens, 2 * 4096 * 64 * 4096, "aten._scaled_dot_product_flash_attention_for_cpu"),
        # 8192 points of 16 coordinates, made whole (read once), then each against every point.
        (_PairsBroadcastPoints, 8192 * 16 + 8192 * 16 * 8192, "aten._pdist_forward"),
        # 200 steps made whole (read once), then oneDNN's LSTM layer: at each step both weights,
        # 4096 x 4 and 4096 x 1024, read whole.
        (_RecursOverABroadcastSequence, 200 * 4 + 200 * (4096 * 4 + 4096 * 1024), "aten.mkldnn_rnn_layer"),
        # 4096 rows of 64 against a 64 x 64 x 64 weight: the product of the three, broadcast to
        # rows x outputs x 64 x 64, formed in two products.
        (_BilinearOfBroadcastRows, 2 * 4096 * 64 * 64 * 64, "aten._trilinear"),
    ],
)
def test_an_operator_reading_its_operands_over_and_over_is_refused_by_what_it_reads(tmp_path, module, reads, operator):
    """A convolution of a 4096 x 4096 map by a 2048 x 2048 kernel, both broadcast from one
    element, read 21 million elements and computed for hours (past SIGTERM): an operator whose
    kernel reads its operands many times over (a product, a pooling window, a decomposition,
    attention, pairwise distances, a bilinear product, an LSTM layer) counts them as often as
    it reads them, at least what it computes (hand-counted above), and is refused past the
    elements bound before it runs, named in the refusal."""
    path = tmp_path / f"{module.__name__}.pt"
    torch.jit.script(module()).save(str(path))
    result = cli("summary", path, "-i", "3")
    assert result.exit_code == 2
    expected = f"error: the forward reads {reads:,} elements of CPU tensors (by {operator})"
    assert one_error_line(result).startswith(expected)


def test_a_small_product_in_a_model_files_forward_is_analysed(tmp_path):
    """A 3 x 2 x 3 x 3 convolution of a 2 x 8 x 8 map of ones made in the forward, 64 positions
    against 54 weights, within the bound: analysed. The oracle: torch runs the file, each of
    the 3 x 6 x 6 outputs 18."""
    path = tmp_path / "small_product.pt"
    torch.jit.script(_ConvolvesALittle()).save(str(path))
    assert torch.jit.load(str(path))(torch.zeros(3)).tolist() == [3 * 36 * 18.0] * 3
    assert cli("summary", path, "-i", "3").exit_code == 0


class _DecomposesPoolsAttendsAndPairsALittle(nn.Module):
    def forward(self, x):
        singular = torch.linalg.svdvals(torch.eye(8) * 2.0).sum()  # eight values of 2
        pooled = torch.nn.functional.avg_pool2d(torch.ones([1, 1, 8, 8]), 3, 1).sum()  # 6 x 6 means of 1
        tokens = torch.ones([1, 1, 16, 4])
        attended = torch.nn.functional.scaled_dot_product_attention(tokens, tokens, tokens).sum()  # 16 x 4 ones
        distances = torch.pdist(torch.eye(4)).sum()  # 6 pairs, each sqrt(2) apart
        return x + singular + pooled + attended + distances


def test_small_decompositions_poolings_attention_and_distances_in_a_model_files_forward_are_analysed(tmp_path):
    """Each well within the bound: analysed. The oracle: torch runs the file, its sums as
    counted beside each."""
    path = tmp_path / "small.pt"
    torch.jit.script(_DecomposesPoolsAttendsAndPairsALittle()).save(str(path))
    expected = 16.0 + 36.0 + 64.0 + 6 * 2**0.5
    assert torch.jit.load(str(path))(torch.zeros(1)).item() == pytest.approx(expected)
    assert cli("summary", path, "-i", "1").exit_code == 0
