"""Exported programs (`torch.export.save`, .pt2) read as data: every unpickling weights-only, code refused."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import re
import types
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from archprof.errors import ArchprofError, exception_chain
from archprof.load.common import (
    REACHING_OUT,
    needs_code,
    quiet,
    shorten,
    spread_too_far,
    unreadable,
    weights_only_reason,
)
from archprof.load.generated_code import generated_code_checked
from archprof.load.inputs import InputSpec
from archprof.load.model import LoadedModel
from archprof.load.shape_expressions import is_sympy_arithmetic
from archprof.load.unpickling import Unbounded, unbounded_in, weights_only_bounded
from archprof.load.zip_archive import checked_archive, folded, refuse_a_zip_bomb_in

# -- exported programs ---------------------------------------------------------------------


def load_exported(path: Path, spec: str, trust_pickle: bool) -> LoadedModel:
    _refuse_sizes_without_data(path, spec)
    refused: list[str] = []
    logged: list[str] = []
    try:
        with quiet() as logged, contextlib.nullcontext() if trust_pickle else _loading_as_data(refused):
            program = torch.export.load(str(path))
    except Exception as exc:
        unbounded = unbounded_in(exc)
        if unbounded is not None:
            raise ArchprofError(f"refusing to load {spec}: {unbounded}") from None
        pickle_reason = None if refused else _code_in_pickle(exc)
        if refused or pickle_reason:
            what = refused[0] if refused else "pickled weights, constants or sample inputs"
            raise _refusal(spec, what, f" ({pickle_reason})" if pickle_reason else "") from None
        if "check the warnings above" in str(exc) and logged:  # the error it logged, which quiet() kept
            raise ArchprofError(f"cannot read {spec}: corrupted or truncated? ({logged[-1]})") from None
        raise unreadable(spec, exc) from None
    if trust_pickle:
        return program_loaded(program, spec, source=path)
    _refuse_code_in_graphs(program, spec)
    try:  # its module tree: FX writes its graphs' code again, names from the file in it
        with generated_code_checked(refused, _why_not_data):
            loaded = program_loaded(program, spec, source=path)
    except ArchprofError:
        if refused:
            raise _refusal(spec, refused[0]) from None
        raise
    if refused:  # refused on one road, `unflatten`'s, and another taken (`module()`)
        raise _refusal(spec, refused[0])
    return loaded


def _refusal(spec: str, what: str, why: str = "") -> ArchprofError:
    """The refusal of a file whose `what` would run code from it: a call its graph makes (what
    `_refuse_code_in_graphs` refuses, and the code FX writes for the graph) when analysed."""
    if what.startswith("graph calls "):
        runs = ", code from the file that would run when analysed"
    elif what.startswith("shape expression "):  # Python to sympify, which computes what it says exactly
        runs = " is more than the arithmetic torch writes: loading would evaluate it as Python, without bound"
    else:
        runs = " would run code from the file when loaded"
    trust = "if you trust it, pass --trust-pickle (Python: trust_pickle=True)"
    return ArchprofError(f"refusing to load {spec}: its {what}{runs}{why}; {trust}")


# What an exported program's graphs may call without its file being trusted: tensor
# operators of torch's own namespaces but those reaching past the model (`REACHING_OUT`),
# control flow running the program's own subgraphs, and the arithmetic of symbolic sizes.
# torch.export.load resolves any callable it reaches from torch, operator or math: an
# importer of any module (a custom autograd function's), or torch.from_file writing a file
# the graph names, ran as the trace ran the graph.
_OPERATOR_NAMESPACES = frozenset({"aten", "prims", "quantized", "quantized_decomposed"})
_CONTROL_FLOW = frozenset(
    {"cond", "map_impl", "while_loop", "scan", "wrap_with_set_grad_enabled", "wrap_with_autocast"}
)
_SIZE_FUNCTIONS = frozenset(
    {"_check", "_check_is_size", "sym_float", "sym_int", "sym_ite", "sym_max", "sym_min", "sym_not", "sym_sum"}
)


def _refuse_code_in_graphs(program: torch.export.ExportedProgram, spec: str) -> None:
    """Refuse a program whose graphs (its own and the subgraphs its control flow runs) call
    anything but `_why_not_data` allows, before any of it runs."""
    for module in program.graph_module.modules():
        graph = getattr(module, "graph", None)
        for node in graph.nodes if isinstance(graph, torch.fx.Graph) else ():
            if node.op in ("call_method", "call_module"):  # torch.export writes neither
                why = f"{node.op} {shorten(str(node.target))}, which an exported program does not hold"
            elif node.op == "call_function":
                why = _why_not_data(node.target) or _callable_argument(node)
            else:
                continue
            if why:
                raise _refusal(spec, f"graph calls {why}")


def _callable_argument(node: torch.fx.Node) -> str | None:
    """A function passed to a node as an argument, not as a node of the graph (the subgraph a
    control-flow operator runs is a `get_attr` node): the file's format allows an operator
    there (`as_operator`), which the generated code then calls, `aten::from_file` as well."""
    found: list[Any] = []

    def note(value: Any) -> Any:
        if callable(value) and not isinstance(value, torch.fx.Node):
            found.append(value)
        return value

    torch.fx.node.map_aggregate((node.args, node.kwargs), note)
    return f"{shorten(str(node.target))} with {shorten(repr(found[0]))} as an argument" if found else None


def _why_not_data(target: Any) -> str | None:
    """Why a graph's call target is not one a program of tensor operators holds (None: it is)."""
    if isinstance(target, torch._ops.OpOverload):
        name = target._schema.name
        if name in REACHING_OUT:
            return f"{name}, which {REACHING_OUT[name]}"
        if target.namespace not in _OPERATOR_NAMESPACES:
            return f"{shorten(name)}, an operator outside torch's own ({', '.join(sorted(_OPERATOR_NAMESPACES))})"
        return None
    if isinstance(target, torch._ops.HigherOrderOperator):
        return None if target.name() in _CONTROL_FLOW else f"the higher-order operator {shorten(target.name())}"
    module, name = getattr(target, "__module__", None), getattr(target, "__name__", "")
    if module in ("_operator", "math") or (module == "torch" and name in _SIZE_FUNCTIONS):
        return None
    return shorten(f"{module}.{name}" if module else repr(target))


def program_loaded(program: torch.export.ExportedProgram, name: str, source: Path | None = None) -> LoadedModel:
    """An exported program, read from `source` or the caller's own, as a model: its module
    tree (`_exported_module`, made anew: the caller's program is never changed), its inputs
    and batch as exported."""
    module = _exported_module(program)
    own = next((t.dtype for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()), None)
    inputs, batch, static = _exported_inputs(program, name, own)
    batch_range = _batch_range(program) if batch is not None else None

    def build(device: torch.device) -> torch.nn.Module:
        return copy.deepcopy(module).to(device)

    first = inputs[0].shape if inputs and inputs[0].batched else None
    return LoadedModel(
        module,
        name,
        first,
        inputs=inputs,
        batch=batch,
        kind="exported",
        owned=source is not None,  # a file's module is archprof's alone; the caller's shares its tensors
        source=source,
        static_shapes=static,
        batch_range=batch_range,
        build=build,
    )


def _batch_range(program) -> tuple[int, int | None] | None:
    """The batches a program with a dynamic batch takes (its first input's first dimension,
    which every input shares): the range its run-time check lets through, (min, max; None
    where unbounded); None where that dimension is a fixed size."""
    user = set(program.graph_signature.user_inputs)
    nodes = [node for node in program.graph.nodes if node.op == "placeholder" and node.name in user]
    first = nodes[0].meta.get("val") if nodes else None
    size = first.shape[0] if isinstance(first, torch.Tensor) and first.dim() else None
    if not isinstance(size, torch.SymInt):
        return None
    bounds = program.range_constraints.get(size.node.expr)
    if bounds is None:
        return None
    upper = bounds.upper
    # torch.export records 2 as the least of any dynamic size (it specialises 0 and 1) and its
    # run-time check refuses only a batch below a min given above that: batch 1 runs.
    lower = int(bounds.lower)
    return (lower if lower > 2 else 1), (int(upper) if upper.is_Integer else None)  # not int_oo


# A weight or constant stored as raw bytes (not pickled) whose entry is empty is made by
# torch.export.load with torch.zeros of the size its config declares: a 9 KB file declaring a
# 2 GiB weight took torch 4.5 GB and 45 s. torch writes an empty entry only for a tensor of
# no elements.
_PAYLOAD_CONFIG = re.compile(r"^data/(?:weights|constants)/.*_config\.json$")
# Nor more elements than stored bytes allow (`spread_too_far`): unflatten copies a weight out.


def _refuse_sizes_without_data(path: Path, spec: str) -> None:
    with checked_archive(path, spec) as archive:
        # Named as torch looks them up, case ignored (`checked_archive` refused two names it would take for one).
        members = [(folded(member.filename.split("/", 1)[-1]), member) for member in archive.infolist()]
        sizes = {tail: member.file_size for tail, member in members}
        for tail, member in members:
            if not _PAYLOAD_CONFIG.match(tail):
                continue
            folder = tail.rsplit("/", 1)[0]
            for name, payload in _payloads(archive, member, spec):
                record = folded(f"{folder}/{payload.get('path_name')}")
                declared, stored = _declared_elements(payload), sizes.get(record)
                if stored == 0 and declared != 0:
                    shown = "a size that is not a number" if declared is None else f"{declared:,} elements"
                    raise ArchprofError(
                        f"cannot read {spec}: its tensor {shorten(name)} declares {shown} but its entry"
                        f" {shorten(record)} is empty"
                    )
                if stored and declared and spread_too_far(declared, stored):
                    raise ArchprofError(
                        f"cannot read {spec}: its tensor {shorten(name)} declares {declared:,} elements over"
                        f" {stored:,} bytes (strides of 0, which torch copies out in full as it builds the module)"
                    )


def _payloads(archive: zipfile.ZipFile, config: zipfile.ZipInfo, spec: str) -> list[tuple[str, dict]]:
    """The raw-bytes payloads a weights or constants config lists: (name, its entry)."""
    try:
        entries = [(str(name), payload) for name, payload in json.loads(archive.read(config))["config"].items()]
    except Exception as exc:  # not JSON, not the layout torch writes: torch would fail on it too
        raise unreadable(spec, exc) from None
    return [(name, p) for name, p in entries if isinstance(p, dict) and not p.get("use_pickle")]


def _declared_elements(payload: dict) -> int | None:
    """How many elements a payload's tensor_meta declares; None where a size is not an int."""
    try:
        dims = [size["as_int"] for size in payload["tensor_meta"]["sizes"]]
    except (KeyError, TypeError):
        return None
    return math.prod(dims) if all(isinstance(d, int) and d >= 0 for d in dims) else None


class _Refused(Exception):
    """Raised inside torch.export.load where loading would run code from the file."""


@contextlib.contextmanager
def _loading_as_data(refused: list[str]) -> Iterator[None]:
    """While torch.export.load runs: every torch.load it makes is weights-only, whichever
    member of the archive it reads (TORCH_FORCE_WEIGHTS_ONLY_LOAD overrides its explicit
    weights_only=False), and each other way it has of running code from the file refuses,
    noting what in `refused` (torch may replace the exception on its way out): unpickling an
    opaque Python object (pickle.loads) or a TorchScript object, loading compiled
    AOTInductor code, importing a module a tree spec names, a shape expression that is more
    than sympy arithmetic (sympify evaluates it as Python), and graph code that FX writes
    other than for a graph of allowed calls (names from the file in it: `generated_code`)."""
    from unittest import mock

    import sympy
    import torch._export.serde.serialize as serde
    import torch.utils._pytree as pytree
    from torch.export.pt2_archive import _package

    def refuser(what: str) -> Callable[..., Any]:
        def refuse(*args, **kwargs):
            refused.append(what)
            raise _Refused(what)

        return refuse

    def sympify(expression, *args, **kwargs):
        if isinstance(expression, str) and not is_sympy_arithmetic(expression, kwargs.get("locals") or {}):
            refuser(f"shape expression {shorten(expression)}")()
        return sympy.sympify(expression, *args, **kwargs)

    with contextlib.ExitStack() as stack:
        stack.enter_context(_environment(TORCH_FORCE_WEIGHTS_ONLY_LOAD="1", TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=None))
        refusing_pickle = types.SimpleNamespace(loads=refuser("pickled Python object (an opaque constant)"))
        stack.enter_context(mock.patch.object(_package, "pickle", refusing_pickle))
        stack.enter_context(mock.patch.object(torch._C, "_pickle_load_obj", refuser("TorchScript object constant")))
        stack.enter_context(mock.patch.object(_package, "_load_aoti", refuser("compiled AOTInductor code")))
        # A tree spec's enum or defaultdict names a module that pytree imports (`this` printed,
        # `venv.__main__` made a virtual environment): its only use of importlib.
        importing = types.SimpleNamespace(import_module=refuser("tree spec that imports a module by name"))
        stack.enter_context(mock.patch.object(pytree, "importlib", importing))
        guarded_sympy = types.SimpleNamespace(**{**vars(sympy), "sympify": sympify})
        stack.enter_context(mock.patch.object(serde, "sympy", guarded_sympy))
        stack.enter_context(generated_code_checked(refused, _why_not_data))
        stack.enter_context(weights_only_bounded())
        plain_load = torch.load

        def load_checked(data, *args, **kwargs):
            try:
                refuse_a_zip_bomb_in(data, "an archive in the program")
            except ArchprofError as bomb:  # as a refusal of what it builds: torch replaces the exception
                raise Unbounded(str(bomb)) from None
            return plain_load(data, *args, **kwargs)

        stack.enter_context(mock.patch.object(torch, "load", load_checked))
        yield


@contextlib.contextmanager
def _environment(**values: str | None) -> Iterator[None]:
    """Set (a string) or unset (None) environment variables for the duration."""

    def assign(name: str, value: str | None) -> None:
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

    before = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            assign(name, value)
        yield
    finally:
        for name, value in before.items():
            assign(name, value)


def _code_in_pickle(exc: BaseException) -> str | None:
    """Why a weights-only unpickling refused, where this exception's chain holds one."""
    import pickle

    refusal = next((e for e in exception_chain(exc) if isinstance(e, pickle.UnpicklingError) and needs_code(e)), None)
    return weights_only_reason(refusal) if refusal is not None else None


def _exported_module(program) -> torch.nn.Module:
    """The exported program as a module tree: `torch.export.unflatten` gives one submodule
    per original module (hooks then attribute operators as for a Python model), each
    labelled with its original class; else the flat `program.module()`."""
    types: dict[str, str] = {}
    for node in program.graph.nodes:
        for path, kind in (node.meta.get("nn_module_stack") or {}).values():
            name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
            types.setdefault(path, name.rpartition(".")[2])
    try:
        with quiet():
            module = torch.export.unflatten(program)
    except Exception:
        try:
            with quiet():
                module = program.module()
        except Exception as exc:  # a graph torch's code generation cannot write (a trusted file's)
            raise unreadable("the exported program", exc) from None
        module._archprof_attribution = "parameters"
        module._archprof_type = types.get("", "ExportedProgram")
        return module
    for path, submodule in module.named_modules():
        submodule._archprof_type = types.get(path, type(submodule).__name__)
    return module


def _exported_inputs(program, spec: str, own_dtype: torch.dtype | None):
    """Default inputs from the program's example inputs (or its input placeholders): per
    input, one sample's shape and dtype (keyword inputs by name; none for an input in the
    model's own floating dtype, `own_dtype`, which follows the analysis's dtype as the
    parameters do), the batch (the shared first dimension, when there is one) and which
    dimensions the program was specialised to."""
    from torch.utils import _pytree as pytree

    signature = program.graph_signature
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    values = [placeholders[name].meta.get("val") for name in signature.user_inputs if name in placeholders]
    examples = getattr(program, "example_inputs", None)
    if examples is not None:
        if not (isinstance(examples, tuple) and len(examples) == 2 and isinstance(examples[1], Mapping)):
            kind = type(examples).__name__
            raise ArchprofError(f"cannot read {spec}: its sample inputs are a {kind}, not (args, kwargs)")
        args, kwargs = examples
    else:
        args, kwargs = pytree.tree_unflatten(values, program.call_spec.in_spec)
    named = [(None, a) for a in args] + list(kwargs.items())
    if not all(isinstance(v, torch.Tensor) for _, v in named) or len(named) != len(values):
        raise ArchprofError(f"{spec} takes inputs other than tensors: archprof analyses tensor inputs only")
    shapes = [tuple(_concrete(d) for d in v.shape) for _, v in named]
    static = tuple(
        tuple(d if isinstance(d, int) else None for d in getattr(value, "shape", ()))
        for value in values
        if value is not None
    )
    leading = {shape[0] for shape in shapes if shape}
    batched = len(leading) == 1 and all(shapes)
    inputs = tuple(
        InputSpec(shape[1:] if batched else shape, None if v.dtype == own_dtype else v.dtype, name, batched)
        for (name, v), shape in zip(named, shapes, strict=True)
    )
    return inputs, (leading.pop() if batched else None), (static if len(static) == len(inputs) else None)


def _concrete(size) -> int:
    if isinstance(size, int):
        return size
    hint = getattr(getattr(size, "node", None), "hint", None)
    return int(hint) if hint is not None else 2
