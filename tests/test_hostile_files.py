"""Hostile files, a second round: reports, budget files and model files that would hang
archprof, exhaust its memory, run code or cost time out of all proportion to their size.
Each is refused with one line (exit 2) or read within bounds; none runs for long."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import os
import struct
import threading
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import archprof
import archprof.diff
from archprof.budget.files import load_budget_file
from archprof.cli import app
from archprof.errors import ArchprofError, ArchprofWarning
from archprof.load import load_model, load_state_dict
from archprof.measure.ceilings import read_cache
from tests.cli import cli, one_error_line
from tests.fixtures.hostile_archives import rewritten
from tests.fixtures.hostile_torchscript import HOSTILE_TORCHSCRIPT, with_forward_code
from tests.models import RunsCodeAsItLoads

needs_dev_zero = pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero here")


def within(seconds: float, call: Callable[[], Any]) -> Any:
    """`call()`'s result or exception, failing the test if it has not finished in `seconds`
    (the thread is a daemon: a test that fails never hangs the run)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except BaseException as exc:  # handed back to the test
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


# -- files that never end, or never start ----------------------------------------------------


@needs_dev_zero
@pytest.mark.parametrize("suffix", ["csv", "json"])
def test_a_report_that_never_ends_is_refused_after_a_bounded_read(tmp_path, monkeypatch, suffix):
    monkeypatch.setattr(archprof.diff, "REPORT_BYTES", 2**20)  # the read up to the limit is what is tested
    endless = tmp_path / f"old.{suffix}"
    endless.symlink_to("/dev/zero")
    with pytest.raises(ArchprofError, match=r"over 1 MiB, too large for a report"):
        within(10, lambda: archprof.diff.load_side(str(endless)))


def test_a_report_larger_than_any_is_refused_unread(tmp_path):
    huge = tmp_path / "old.csv"
    with open(huge, "wb") as handle:
        handle.truncate(2**40)  # a terabyte, sparse: no disk used
    result = within(30, lambda: cli("diff", huge, huge))
    assert "over 256 MiB, too large for a report" in one_error_line(result)


def test_a_budget_file_larger_than_any_is_refused_unread(tmp_path):
    huge = tmp_path / "archprof.toml"
    with open(huge, "wb") as handle:
        handle.truncate(64 * 2**20)  # sparse
    with pytest.raises(ArchprofError, match=r"over 16 MiB, too large for a budget file"):
        within(10, lambda: load_budget_file(huge))


@pytest.mark.parametrize("suffix", ["csv", "json"])
def test_a_report_fifo_no_one_writes_to_is_an_error_not_a_wait(tmp_path, suffix):
    fifo = tmp_path / f"old.{suffix}"
    os.mkfifo(fifo)
    with pytest.raises(ArchprofError, match="old"):
        within(10, lambda: archprof.diff.load_side(str(fifo)))


def test_a_budget_fifo_no_one_writes_to_is_an_error_not_a_wait(tmp_path):
    fifo = tmp_path / "budget.toml"
    os.mkfifo(fifo)
    result = within(10, lambda: cli("check", "--config", fifo))
    assert "no models to check" in one_error_line(result)


@pytest.mark.skipif(not os.path.isdir("/dev/fd"), reason="no /dev/fd here")
def test_a_budget_read_from_a_pipe_is_waited_for():
    """A pipe with a writer (`--config <(generate)`, which the shell passes as /dev/fd/63) is
    read whole, as a file is, its writer waited for. (A named FIFO whose writer had not opened
    it yet reads as empty: this test raced so under load.)"""
    reading, writing = os.pipe()

    def write() -> None:
        with open(writing, "w") as handle:
            handle.write('[[models]]\nname = "lenet5"\n')
            handle.flush()
            time.sleep(0.2)  # the reader waits for the rest
            handle.write('max-params = "1M"\n')

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        entries = within(10, lambda: load_budget_file(f"/dev/fd/{reading}"))
    finally:
        os.close(reading)
    assert [(entry.model, [limit.text for limit in entry.limits]) for entry in entries] == [("lenet5", ["1M"])]


def test_a_cache_file_no_one_writes_to_reads_as_empty(tmp_path):
    fifo = tmp_path / "ceilings.json"
    os.mkfifo(fifo)
    assert within(10, lambda: read_cache(fifo)) == {}


def test_a_report_that_is_not_utf8_says_where(tmp_path):
    latin = tmp_path / "old.csv"
    latin.write_bytes("layer\ncafé\n".encode("latin-1"))
    with pytest.raises(ArchprofError, match=r"cannot read report .*old.csv: not UTF-8 text \(.* at byte 9\)"):
        archprof.diff.load_side(str(latin))


def test_a_report_that_is_a_directory_is_one_error(tmp_path):
    folder = tmp_path / "old.csv"
    folder.mkdir()
    with pytest.raises(ArchprofError, match="Is a directory"):
        archprof.diff.load_side(str(folder))


# -- work out of all proportion to the file -------------------------------------------------


def test_a_report_naming_a_layer_in_200000_characters_diffs_in_linear_time(tmp_path):
    """The table pads every row to the longest name; trimming that padding took quadratic time
    (a 50,000-character name: 40 s)."""
    name = "x" * 200_000
    wide = nn.Sequential()
    wide.add_module(name, nn.Conv2d(3, 4, 3))
    old, new = tmp_path / "old.csv", tmp_path / "new.csv"
    old.write_text(archprof.analyze(wide, "3x8x8").to_csv(), encoding="utf-8")
    new.write_text(archprof.analyze(nn.Sequential(nn.Conv2d(3, 4, 3)), "3x8x8").to_csv(), encoding="utf-8")
    # With no COLUMNS the table is as wide as its widest row, each padded to it.
    result = within(60, lambda: CliRunner().invoke(app, ["diff", str(old), str(new)], env={"COLUMNS": None}))
    assert result.exit_code == 0, result.output
    assert "x" * 50_000 in result.stdout  # Rich cuts a cell at about 100,000 characters


def test_a_budget_file_of_100000_models_is_read_in_linear_time(tmp_path):
    """Each entry's line was counted from the start of the file: quadratic (40,000 entries: 22 s)."""
    budget = tmp_path / "archprof.toml"
    budget.write_text("".join(f'[[models]]\nname = "m{i}"\nmax-params = "1M"\n' for i in range(100_000)))
    entries = within(60, lambda: load_budget_file(budget))
    assert entries[-1].source == f"{budget}, line {3 * 99_999 + 2}"  # three lines an entry, its name second


# -- TorchScript: an allowlist of what its code calls --------------------------------------


@pytest.mark.parametrize("craft", HOSTILE_TORCHSCRIPT, ids=list(HOSTILE_TORCHSCRIPT))
def test_torchscript_that_writes_files_is_refused_before_it_loads(tmp_path, craft):
    make, says = HOSTILE_TORCHSCRIPT[craft]
    victim = tmp_path / "victim"
    victim.write_bytes(b"clean")
    path = make(tmp_path, victim)
    with pytest.raises(ArchprofError, match=r"^refusing to load .*: its TorchScript 'code/__torch__/") as raised:
        archprof.analyze(str(path), "3x8x8")
    assert says in str(raised.value) and "--trust-pickle" in str(raised.value)
    result = cli("summary", path, "-i", "3x8x8")
    line = one_error_line(result)
    assert result.exit_code == 2 and says in line and "--trust-pickle" in line
    assert victim.read_bytes() == b"clean"


def test_the_hostile_torchscript_writes_when_torch_loads_and_runs_it(tmp_path):
    """The refusals above are of files that really write: loaded and run as torch does."""
    for index, (make, _) in enumerate(HOSTILE_TORCHSCRIPT.values()):
        victim = tmp_path / f"victim{index}"
        victim.write_bytes(b"clean")
        torch.jit.load(str(make(tmp_path, victim)))(torch.ones(1, 3, 8, 8))
        assert victim.read_bytes() != b"clean"


def test_trusted_torchscript_that_writes_files_is_analysed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"clean")
    path = HOSTILE_TORCHSCRIPT["torch.from_file in forward"][0](tmp_path, victim)
    report = archprof.analyze(str(path), "3x8x8", trust_pickle=True)
    assert report.totals.param_count == 4 * 3 * 3 * 3 + 4  # the Conv2d(3, 4, 3) the module holds


def test_torchscript_swapped_for_a_hostile_file_after_its_check_is_not_what_loads(tmp_path):
    """The archive checked is the archive built later (a profile builds it again, on the
    device): a file changed between the two is not read."""
    path = tmp_path / "model.pt"
    torch.jit.script(nn.Conv2d(3, 4, 3)).save(str(path))
    loaded = load_model(str(path))
    victim = tmp_path / "victim"
    victim.write_bytes(b"clean")
    HOSTILE_TORCHSCRIPT["torch.from_file in __setstate__"][0](tmp_path, victim).replace(path)
    torch.jit.load(str(tmp_path / "model.pt"), map_location="cpu")  # the swapped file writes when loaded
    assert victim.read_bytes() != b"clean"
    victim.write_bytes(b"clean")
    built = loaded.build(torch.device("cpu"))
    assert sum(p.numel() for p in built.parameters()) == 4 * 3 * 3 * 3 + 4
    assert victim.read_bytes() == b"clean"


def test_torchscript_that_cannot_be_read_after_its_first_look_is_one_error(tmp_path, monkeypatch):
    """A file removed or locked between archprof's look at its zip directory and its read."""
    path = tmp_path / "model.pt"
    torch.jit.script(nn.Conv2d(3, 4, 3)).save(str(path))

    def locked(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", locked)
    line = one_error_line(cli("summary", path, "-i", "3x8x8"))
    assert line == f"error: cannot read {path}: Permission denied"


def _code_entry(scripted: type) -> str:
    """The archive entry TorchScript saves the code of a class defined in Python in."""
    return repr(f"code/__torch__/{scripted.__module__.replace('.', '/')}.py")


class _RunsWhenLoaded(nn.Module):
    """Its __setstate__ calls nothing but tensor operators, and raises: torch.jit.load runs it."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.ones(4, 3, 3, 3)

    def forward(self, x):
        return torch.conv2d(x, self.weight)

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, bool]:
        return (self.weight, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
        self.weight, self.training = state
        if bool(self.weight.sum() > 0):
            raise RuntimeError("ran while loading")


def test_a_straight_line_setstate_runs_while_loading_and_its_failure_is_one_error(tmp_path):
    """Tensor operators and a raise, no loop, no call: accepted, so torch.jit.load runs it."""
    path = tmp_path / "setstate.pt"
    torch.jit.script(_RunsWhenLoaded()).save(str(path))
    with pytest.raises(Exception, match="ran while loading"):
        torch.jit.load(str(path))
    result = cli("summary", path, "-i", "3x8x8")
    assert result.exit_code == 2 and "ran while loading" in one_error_line(result)
    assert "--trust-pickle" not in result.stderr


class _Holds(nn.Module):
    def forward(self, x):
        return x + 1


@pytest.mark.parametrize(
    ("lines", "effect", "says"),
    [
        (['print("written by the model")'], "prints", "calls print, which writes to the terminal"),
        (["torch.manual_seed(7)"], "seeds", "calls torch.manual_seed, which changes the process's random state"),
        (["_p = print", '_p("written by the model")'], "prints", "uses print, which writes to the terminal"),
    ],
    ids=["print", "manual_seed", "print held in a variable"],
)
def test_torchscript_that_reaches_past_the_model_otherwise_is_refused(tmp_path, capfd, lines, effect, says):
    path = with_forward_code(_Holds(), tmp_path / "reaches.pt", *lines)
    torch.manual_seed(0)
    torch.jit.load(str(path))(torch.ones(1))  # the oracle: what torch does with the file
    assert "written by the model" in capfd.readouterr().out if effect == "prints" else torch.initial_seed() == 7
    torch.manual_seed(0)
    result = cli("summary", path, "-i", "3")
    assert result.exit_code == 2 and says in one_error_line(result) and "written by" not in result.output
    assert torch.initial_seed() == 0


@pytest.mark.parametrize(
    ("lines", "says"),
    [
        (["_p = ops.image.write_file"], "calls 'ops.image.write_file', an operator outside torch's own"),
        (
            ["_p = __torch__.torch.classes.dist_c10d.ProcessGroup"],
            "uses '__torch__.torch.classes.dist_c10d.ProcessGroup', a class outside torch's own (quantized, rnn)",
        ),
        (["_p = torch.not_an_operator(x)"], "calls 'torch.not_an_operator', which is not one of torch's operators"),
        (["_p = open(x)"], "calls 'open', which is neither TorchScript's builtin nor its own code"),
        (["_p = torch.autograd.save(x)"], "uses 'torch.autograd.save', which names no one operator"),
    ],
    ids=["another namespace", "another C++ class", "an unknown operator", "an unknown builtin", "a longer name"],
)
def test_torchscript_naming_anything_outside_the_allowlist_is_refused(tmp_path, lines, says):
    path = with_forward_code(_Holds(), tmp_path / "outside.pt", *lines)
    line = one_error_line(cli("summary", path, "-i", "3"))
    assert f"{_code_entry(_Holds)} {says}" in line and "--trust-pickle" in line


@pytest.mark.parametrize(
    ("prefix", "rest"),
    [
        ("__torch__.torch", "classes.profiling._ScriptProfile"),
        ("__torch__.torch.classes", "profiling._ScriptProfile"),
        ("__torch__.torch.classes.profiling", "_ScriptProfile"),
    ],
)
def test_torchscript_reaching_a_class_through_a_prefix_bound_to_a_name_is_refused(tmp_path, prefix, rest):
    """`_c = __torch__.torch`, then `_c.classes.NS.Class()`: every C++ class torch registers,
    outside the allowed namespaces (c10d's Work, whose wait() hung archprof; nnapi's
    Compilation, whose run() crashed it with SIGSEGV), where the same class named in full is
    refused. The oracle: torch compiles and runs the file, reaching the class through the name."""
    lines = [f"_c = {prefix}", f"_p = _c.{rest}()", "_p.enable()"]
    path = with_forward_code(_Holds(), tmp_path / "prefix.pt", *lines)
    assert torch.jit.load(str(path))(torch.ones(1)).tolist() == [2.0]
    line = one_error_line(cli("summary", path, "-i", "3"))
    assert f"{_code_entry(_Holds)} uses '{prefix}', which names no one class" in line and "--trust-pickle" in line


@pytest.mark.parametrize(
    ("global_name", "says"),
    [
        (b"posix\nsystem", "'posix.system', which is neither torch's nor its own code"),
        (b"__torch__.torch.classes.dist_c10d\nProcessGroup", "'__torch__.torch.classes.dist_c10d.ProcessGroup'"),
    ],
    ids=["os.system", "another C++ class"],
)
def test_a_torchscript_pickle_naming_anything_outside_the_allowlist_is_refused(tmp_path, global_name, says):
    """Read by its opcodes, never unpickled: the module's class in data.pkl renamed."""
    plain, path = tmp_path / "plain.pt", tmp_path / "global.pt"
    torch.jit.script(_Holds()).save(str(plain))
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.endswith("/data.pkl"):
                own_class = f"c__torch__.{_Holds.__module__}\n_Holds\n".encode()
                assert data.count(own_class) == 1
                data = data.replace(own_class, b"c" + global_name + b"\n")
            target.writestr(item, data)
    line = one_error_line(cli("summary", path, "-i", "3"))
    assert "its TorchScript 'data.pkl' pickles " + says in line and "--trust-pickle" in line


def _scripted_and_traced(model: nn.Module, example: torch.Tensor, directory: Path) -> list[Path]:
    paths = [directory / f"{type(model).__name__}_script.pt", directory / f"{type(model).__name__}_trace.pt"]
    torch.jit.script(model).save(str(paths[0]))
    torch.jit.trace(model, example, check_trace=False).save(str(paths[1]))
    return paths


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_scripted_and_traced_torchvision_models_load_without_trust(tmp_path, hub_packages):
    """The allowlist refuses nothing torch writes for ordinary networks: each file is analysed
    and counts the parameters its Python model holds."""
    torchvision, _ = hub_packages
    small = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    for model, size in ((small.eval(), (3, 8, 8)), (torchvision.models.resnet18().eval(), (3, 32, 32))):
        expected = sum(p.numel() for p in model.parameters())
        for path in _scripted_and_traced(model, torch.randn(1, *size), tmp_path):
            assert archprof.analyze(str(path), size).totals.param_count == expected, path.name
    # Scripted code that warns (torch.warn), checked, not run.
    from archprof.load.torchscript import refuse_unsafe_torchscript

    path = tmp_path / "googlenet.pt"
    torch.jit.script(torchvision.models.googlenet(aux_logits=False, init_weights=False).eval()).save(str(path))
    assert b"torch.warn(" in _code_of(path)
    refuse_unsafe_torchscript(path, "googlenet")


def _quantized(kind: str) -> tuple[nn.Module, nn.Module, tuple[int, ...]]:
    """A float network, torch.ao's quantization of it (static: a convolution and a linear
    layer calibrated on one batch; dynamic: two linear layers), and its input size."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        if kind == "dynamic":
            float_model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
            quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(float_model), {nn.Linear}, torch.qint8)
            return float_model, quantized, (4,)
        float_model = _QuantizedConv().eval()
        prepared = torch.ao.quantization.prepare(copy.deepcopy(float_model))
        prepared(torch.randn(2, 3, 8, 8))  # calibration
        return float_model, torch.ao.quantization.convert(prepared), (3, 8, 8)


def _saved_quantized(kind: str, save: str, directory: Path) -> tuple[Path, nn.Module, nn.Module, tuple[int, ...]]:
    float_model, quantized, size = _quantized(kind)
    path = directory / f"{kind}_{save}.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on quantized tensors
        saved = torch.jit.script(quantized) if save == "script" else torch.jit.trace(quantized, torch.randn(1, *size))
    saved.save(str(path))
    return path, float_model, quantized, size


@pytest.mark.parametrize("save", ["script", "trace"])
@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_quantized_torchscript_loads_without_trust_and_reports_as_in_memory(tmp_path, kind, save):
    """torch.ao's static quantized convolution repacks its weights in a `__setstate__` that
    torch.jit.load runs: straight-line code, accepted. The report is the in-memory model's,
    the weights packed in torch's C++ classes counted as the float model's parameters; only the
    row the peak falls in differs (a TorchScript module's quantized op reads no tensor of its
    layer's, so it is the model's own row)."""
    path, float_model, quantized, size = _saved_quantized(kind, save, tmp_path)
    assert (b"def __setstate__" in _code_of(path)) == (kind == "static")  # what is checked, where it is
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ArchprofWarning)  # quantized layers: a real trace, not on meta
        from_file = archprof.analyze(str(path), size).totals
        in_memory = archprof.analyze(quantized, size).totals
    assert from_file.param_count == sum(p.numel() for p in float_model.parameters())
    assert dataclasses.replace(from_file, peak_layer="") == dataclasses.replace(in_memory, peak_layer="")
    result = cli("summary", path, "-i", "x".join(map(str, size)))
    assert result.exit_code == 0, result.output


def _setstate_edited(source: Path, target: Path, lines: list[str], elsewhere=None) -> Path:
    """`source`, a scripted static quantized network, with `lines` of TorchScript written into
    its Conv2d's `__setstate__`, and `elsewhere(code)` applied to the rest of that code entry."""

    def edit(tail, data, root):
        if tail.endswith("/quantized/modules/conv.py"):
            anchor = "    self.padding_mode = (state)[9]\n"
            code = data.decode()
            assert code.count(anchor) == 1
            code = code.replace(anchor, anchor + "".join(f"    {line}\n" for line in lines))
            data = (elsewhere or (lambda text: text))(code).encode()
        return [(root + tail, data)]

    return rewritten(source, target, edit)


_RAISES = 'ops.prim.RaiseException("ran while loading", "builtins.RuntimeError")'
_CONV = "__torch__.torch.ao.nn.quantized.modules.conv"
_SETSTATE = "defines Conv2d.__setstate__, which runs while the file loads, and "


def _feeds_the_weight(name: str):
    """The code edit that makes the repacked weight depend on `name`: TorchScript drops what
    nothing uses."""
    return lambda code: code.replace("set_weight_bias((state)[10]", f"set_weight_bias(torch.add((state)[10], {name})")


def _fanning_out_methods(depth: int) -> str:
    """Methods _m0 to _m{depth - 1} of the quantized Conv2d, straight-line, each calling the
    next twice, the last raising: 2**depth - 1 calls from a few lines."""
    methods = []
    for index in range(depth):
        body = f"    self._m{index + 1}()\n" * 2 if index < depth - 1 else f"    {_RAISES}\n"
        methods.append(f"  def _m{index}(self: {_CONV}.Conv2d) -> None:\n{body}    return None\n")
    return "".join(methods)


# Each: the lines written into Conv2d.__setstate__, the edit of the rest of its code entry,
# what the refusal says. Written with `victim`, the file the first and last write to; the others
# raise "ran while loading" when torch.jit.load runs them.
HOSTILE_SETSTATES = {
    "a file operator": lambda victim: (
        [f"_v = torch.from_file({json.dumps(str(victim))}, True, 5, dtype=0)", "_w = torch.fill_(_v, 80)"],
        _feeds_the_weight("torch.select(_w, 0, 0), alpha=0"),
        "calls torch.from_file, which reads or writes files",
    ),
    "a loop": lambda victim: (
        ["for _i in range(2):", f"  {_RAISES}"],
        None,
        _SETSTATE + "loops (line ",
    ),
    "an unchecked function": lambda victim: (
        [f"_r = {_CONV}._reverse_repeat_padding([1, 2])"],
        lambda code: code.replace("  N = torch.len(padding)\n", f"  N = torch.len(padding)\n  {_RAISES}\n"),
        _SETSTATE + f"calls '{_CONV}._reverse_rep...', which is not a method of its own class (line ",
    ),
    "its own method, which loops": lambda victim: (
        [],
        lambda code: code.replace(
            "    padding_mode = self.padding_mode\n    if torch.eq(",
            f"    for _i in range(2):\n      {_RAISES}\n    padding_mode = self.padding_mode\n    if torch.eq(",
        ),
        _SETSTATE + "calls 'self.set_weight_bias', which loops (line ",
    ),
    "a dunder TorchScript calls unnamed, which loops": lambda victim: (
        ["_n = len(self)"],
        lambda code: code.replace(
            "  def __getstate__",
            f"  def __len__(self: {_CONV}.Conv2d) -> int:\n    for _i in range(2):\n      {_RAISES}\n    return 1\n"
            "  def __getstate__",
        ),
        "defines Conv2d.__len__, which TorchScript may call unnamed while the file loads, and loops (line ",
    ),
    "its own methods, each calling the next twice": lambda victim: (
        ["self._m0()"],
        lambda code: code.replace("  def __getstate__", _fanning_out_methods(11) + "  def __getstate__"),
        # 2**11 - 1 from _m0, and its own set_weight_bias
        _SETSTATE + "makes 2,048 calls of its methods in all (each calling others more than once), more than the 1,000",
    ),
    "an operator outside torch's namespaces": lambda victim: (
        [f"_t = ops.archprof_hostile.touch({json.dumps(str(victim))}, (state)[10])"],
        _feeds_the_weight("_t, alpha=0"),
        "calls 'ops.archprof_hostile.touch', an operator outside torch's own (aten, prim, quantized)",
    ),
}


@pytest.mark.parametrize("variant", HOSTILE_SETSTATES, ids=list(HOSTILE_SETSTATES))
def test_a_quantized_setstate_doing_more_is_refused_before_it_loads(tmp_path, variant):
    """A real static quantized archive whose Conv2d.__setstate__ is edited: torch.jit.load
    runs each (writes the victim or raises); archprof refuses it in one line, exit 2, and
    nothing runs."""
    victim = tmp_path / "victim"
    lines, elsewhere, says = HOSTILE_SETSTATES[variant](victim)
    clean, *_ = _saved_quantized("static", "script", tmp_path)
    path = _setstate_edited(clean, tmp_path / "hostile.pt", lines, elsewhere)
    victim.write_bytes(b"clean")
    try:
        torch.jit.load(str(path))
        raised = ""
    except Exception as exc:  # the payloads that do not write raise
        raised = str(exc)
    assert victim.read_bytes() != b"clean" or "ran while loading" in raised, "the oracle: torch runs it"
    victim.write_bytes(b"clean")
    result = cli("summary", path, "-i", "3x8x8")
    line = one_error_line(result)
    assert result.exit_code == 2 and f"'code/__torch__/torch/ao/nn/quantized/modules/conv.py' {says}" in line
    assert "--trust-pickle" in line and "ran while loading" not in result.output
    assert victim.read_bytes() == b"clean"


@pytest.mark.parametrize("shape", ["fan", "chain"])
def test_load_time_methods_are_checked_once_each_and_a_chain_past_the_stack_is_one_error(tmp_path, shape):
    """A class restoring itself whose 40 methods each call the next twice (2**40 paths, which
    a walk of every path would take years to check), or whose 1,500 methods call the next
    once (deeper than Python's stack): refused in one line at once."""
    count = 40 if shape == "fan" else 1500
    calls = 2 if shape == "fan" else 1
    lines = ["class Restores(object):", "  def __setstate__(self, state: int) -> None:", "    self.m0()"]
    for index in range(count):
        body = f"    self.m{index + 1}()\n" * calls if index < count - 1 else "    pass\n"
        lines.append(f"  def m{index}(self) -> None:\n{body.rstrip()}")
    clean = tmp_path / "clean.pt"
    torch.jit.script(nn.Sequential(nn.ReLU())).save(str(clean))
    path = rewritten(
        clean,
        tmp_path / "restores.pt",
        lambda tail, data, root: (
            [(root + tail, data)]
            + ([(root + "code/__torch__/restores.py", "\n".join(lines).encode())] if tail == "data.pkl" else [])
        ),
    )
    start = time.perf_counter()
    result = cli("summary", path, "-i", "3")
    line = one_error_line(result)
    assert result.exit_code == 2 and time.perf_counter() - start < 30
    says = "more than the 1,000 archprof lets run" if shape == "fan" else "nested too deeply for archprof to follow"
    assert "defines Restores.__setstate__, which runs while the file loads, and" in line and says in line


@torch.jit.script
class _Scale:
    """A scripted class, not a module, that restores itself: its `__setstate__` runs when
    torch.jit.load unpickles the module holding it."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def __getstate__(self) -> float:
        return self.factor

    def __setstate__(self, state: float) -> None:
        self.factor = state


class _HoldsAScale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = _Scale(2.0)

    def forward(self, x):
        return x * self.scale.factor


def test_a_scripted_class_that_restores_itself_passes_the_same_test(tmp_path):
    plain, looping = tmp_path / "plain.pt", tmp_path / "looping.pt"
    torch.jit.script(_HoldsAScale()).save(str(plain))
    assert archprof.analyze(str(plain), (3,)).totals.elementwise_flops == 3  # x * factor
    anchor = "    self.factor = state\n"

    def edit(tail, data, root):
        if tail.endswith(".py") and anchor.encode() in data:
            data = data.replace(anchor.encode(), f"{anchor}    for _i in range(2):\n      {_RAISES}\n".encode())
        return [(root + tail, data)]

    rewritten(plain, looping, edit)
    with pytest.raises(Exception, match="ran while loading"):
        torch.jit.load(str(looping))
    line = one_error_line(cli("summary", looping, "-i", "3"))
    assert "defines _Scale.__setstate__, which runs while the file loads, and loops (line " in line


class _QuantizedConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.quant, self.conv = torch.ao.quantization.QuantStub(), nn.Conv2d(3, 4, 3)
        self.linear, self.dequant = nn.Linear(4, 5), torch.ao.quantization.DeQuantStub()
        self.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")  # an engine of x86 CPUs

    def forward(self, x):
        return self.dequant(self.linear(self.conv(self.quant(x)).mean((2, 3))))


def _code_of(path: Path) -> bytes:
    with zipfile.ZipFile(path) as archive:
        return b"".join(archive.read(name) for name in archive.namelist() if name.endswith(".py"))


# -- zip bombs ---------------------------------------------------------------------------------


def zip_bomb(directory: Path, member: str, size: int = 64 * 2**20) -> Path:
    """A torch.save checkpoint of {"weight": zeros(2)} whose `member` (data.pkl: the
    pickle, data/0: the tensor's bytes) is deflated and padded with `size` zero bytes:
    a file of size / 1000 that torch inflates whole."""
    plain = directory / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    bomb = directory / f"bomb_{member.replace('/', '_')}.pt"
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(bomb, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith(f"/{member}"):
                deflated = zipfile.ZipInfo(info.filename)
                deflated.compress_type = zipfile.ZIP_DEFLATED
                with target.open(deflated, "w", force_zip64=True) as handle:
                    handle.write(data)
                    for _ in range(size // 2**20):
                        handle.write(bytes(2**20))
            else:
                target.writestr(info, data)
    return bomb


@pytest.mark.parametrize("member", ["data.pkl", "data/0"])
def test_a_zip_bomb_is_refused_before_torch_inflates_it(tmp_path, member):
    bomb = zip_bomb(tmp_path, member)
    assert bomb.stat().st_size < 2**20  # 64 MiB inside
    says = rf"member '.*{member}' would expand from [\d,]+ to 67,10\d,\d+ bytes \(a zip bomb\?\)"
    with pytest.raises(ArchprofError, match=says):
        archprof.analyze(str(bomb))
    factory = tmp_path / "net.py"
    factory.write_text("from torch import nn\n\n\nclass Net(nn.Module):\n    pass\n")
    line = one_error_line(cli("summary", f"{factory}:Net", "-i", "2", "--weights", bomb))
    assert "a zip bomb?" in line


def test_the_pickle_bomb_is_what_torch_loads(tmp_path):
    """torch reads the crafted file as the checkpoint it holds, inflating the whole pickle
    (a padded data/0 it inflates too, then finds longer than the tensor)."""
    loaded = torch.load(zip_bomb(tmp_path, "data.pkl", size=2**20), weights_only=True)
    assert torch.equal(loaded["weight"], torch.zeros(2))


def test_a_checkpoint_compressed_as_weights_compress_loads(tmp_path):
    """A checkpoint zipped again with deflate (random weights shrink little) is no bomb."""
    model = nn.Linear(512, 512)
    plain, deflated = tmp_path / "plain.pt", tmp_path / "deflated.pt"
    torch.save(model.state_dict(), plain)
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info))
    state = load_state_dict(deflated, device="meta")  # names and shapes: the check --weights makes first
    assert {name: tensor.shape for name, tensor in state.items()} == {
        name: tensor.shape for name, tensor in model.state_dict().items()
    }


# -- errors quoting a megabyte ---------------------------------------------------------------


def test_an_error_quoting_a_megabyte_value_is_one_readable_line(tmp_path):
    budget = tmp_path / "archprof.toml"
    budget.write_text('[[models]]\nname = "lenet5"\nmax-params = "' + "7" * 1_000_000 + '"\n')
    line = one_error_line(cli("check", "--config", budget))
    assert len(line) < 1100
    assert line.startswith(f"error: {budget}, line 3: max-params: ")  # where, whole
    assert "characters left out" in line and line.endswith("7" * 100 + "' is too large")


def test_a_report_cell_of_100000_digits_is_quoted_short(tmp_path):
    report = tmp_path / "old.csv"
    lines = archprof.analyze("lenet5").to_csv().splitlines(keepends=True)
    report.write_text(lines[0] + lines[1].replace(",156,", "," + "9" * 100_000 + ",", 1) + "".join(lines[2:]))
    with pytest.raises(ArchprofError) as raised:
        archprof.diff.load_side(str(report))
    assert str(raised.value) == f"{report}, line 2: param_count is '{'9' * 57}...', larger than any model's figure"


# -- reports that say one thing twice -------------------------------------------------------


def test_a_csv_report_with_a_column_twice_is_refused(tmp_path):
    lines = archprof.analyze("lenet5").to_csv().splitlines()
    report = tmp_path / "old.csv"
    report.write_text("\n".join([lines[0] + ",macs", *(line + ",0" for line in lines[1:])]) + "\n")
    with pytest.raises(ArchprofError, match=r"old.csv, line 1: column 'macs' appears twice"):
        archprof.diff.load_side(str(report))


def test_a_json_report_with_a_key_twice_is_refused(tmp_path):
    text = archprof.analyze("lenet5").to_json()
    report = tmp_path / "old.json"
    report.write_text(text.replace('"macs": 117600,', '"macs": 117600, "macs": 0,', 1))
    assert report.read_text() != text
    with pytest.raises(ArchprofError, match=r"old.json is not valid JSON: key 'macs' appears twice in an object"):
        archprof.diff.load_side(str(report))


def test_a_gigabyte_of_zeros_is_refused_at_once_and_not_told_to_load_without_weights_only(tmp_path):
    """torch reads zeros as an empty legacy .tar checkpoint, and advises weights_only=False;
    `tarfile.is_tarfile`, which tried every compressed reader on it, took 70 s on a sparse
    gigabyte (a 100 GB file two hours). No uncompressed tar header ("ustar" at byte 257) opens
    it: a file no PyTorch writer makes."""
    zeros = tmp_path / "zeros.pt"
    with open(zeros, "wb") as handle:
        handle.truncate(2**30)  # sparse
    line = one_error_line(within(30, lambda: cli("summary", zeros)))
    assert line.startswith(f"error: cannot read {zeros}: not a file PyTorch writes")
    assert "weights_only" not in line


def test_a_checkpoint_sharing_one_dict_under_every_key_is_read_in_linear_time(tmp_path):
    """18 levels of the 6 keys a checkpoint's state dict is looked for under, each holding the
    next level's one dict (a pickle shares it): 1.8 KB whose 6**18 paths the search walked
    until killed. Each dict is looked into once; the file itself is refused as it loads (its
    containers shared past the unpickling bound)."""
    from archprof.load.files import state_dict_in

    keys = ("state_dict", "model_state_dict", "model", "module", "net", "weights")
    nested: dict = {"x": 1}
    for _ in range(18):
        nested = {key: nested for key in keys}
    assert within(30, lambda: state_dict_in(nested)) is None
    torch.save(nested, tmp_path / "fanout.pt")
    assert (tmp_path / "fanout.pt").stat().st_size < 4096
    with pytest.raises(ArchprofError, match="hands out one container again and again"):
        within(30, lambda: load_state_dict(tmp_path / "fanout.pt"))


def test_a_state_dict_met_too_deep_first_is_found_where_it_is_shallower():
    """A dict first met past the depth the search looks into is looked into again where it lies
    shallower: the state dict under "model" was missed once it had been seen 16 levels down."""
    from archprof.load.files import state_dict_in

    weights = {"weight": torch.zeros(2)}
    shared = {"model": weights}  # 16 levels down under "state_dict", and 1 under "model"
    deep = shared
    for _ in range(15):
        deep = {"module": deep}
    assert state_dict_in({"state_dict": deep, "model": shared}) == weights


def test_torchscript_with_a_member_that_fails_its_checksum_is_one_error(tmp_path):
    path = tmp_path / "model.pt"
    torch.jit.script(nn.Conv2d(3, 4, 3)).save(str(path))
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        member = archive.getinfo("model/data.pkl")  # stored: its bytes are in the file as they are
    name_length, extra_length = struct.unpack_from("<HH", data, member.header_offset + 26)  # local header
    data[member.header_offset + 30 + name_length + extra_length] ^= 0xFF  # the CRC no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(ArchprofError, match=r"cannot read .*model.pt: corrupted or truncated\? \(Bad CRC-32"):
        archprof.analyze(str(path), "3x8x8")


@pytest.mark.parametrize(("depth", "says"), [(900, "holds"), (1500, "a pickle that nests objects more than 1000 deep")])
def test_a_checkpoint_nesting_dicts_past_the_stack_is_one_error(tmp_path, depth, says):
    """{'state_dict': {'state_dict': ...}} 900 and 1,500 deep, which torch's weights-only
    reader loads: archprof looks for the weights 16 dicts deep, not down to a RecursionError,
    and refuses a pickle nesting past MOST_PICKLE_DEPTH before torch reads it."""
    key = b"state_dict"
    nested = b"\x80\x02}" + (b"X" + struct.pack("<I", len(key)) + key + b"}") * depth + b"s" * depth + b"."
    path = _rewritten_checkpoint(tmp_path, nested)
    assert isinstance(torch.load(str(path), weights_only=True), dict)
    for args in (("summary", "lenet5", "--weights", path), ("summary", path)):
        result = cli(*args)
        assert result.exit_code == 2 and f"{path}{':' if depth > 1000 else ''} {says}" in one_error_line(result)


def _rewritten_checkpoint(directory: Path, pickled: bytes) -> Path:
    """A torch.save archive whose data.pkl is `pickled`."""
    path = directory / "checkpoint.pt"
    torch.save({}, str(path))
    return rewritten(
        path,
        directory / "rewritten.pt",
        lambda tail, data, root: [(root + tail, pickled if tail == "data.pkl" else data)],
    )


def test_many_members_that_each_expand_within_the_limit_are_a_zip_bomb_together(tmp_path):
    """A TorchScript archive with ten code members of nearly 1 MiB of `1,1,1,...` each, about
    1 KB deflated: each passes the per-member rule (any ratio up to 1 MiB), and the checker
    parsed them all, 44 s and 2.5 GB for a 15 KB file."""
    plain, bomb = tmp_path / "plain.pt", tmp_path / "bomb.pt"
    torch.jit.save(torch.jit.script(nn.Linear(4, 4)), plain)
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(bomb, "w") as target:
        root = source.namelist()[0].split("/")[0]
        for info in source.infolist():
            target.writestr(info, source.read(info))
        for index in range(10):
            code = f"class Junk{index}:\n  def f(self):\n    return [" + "1," * (2**19 - 64) + "]\n"
            target.writestr(f"{root}/code/__torch__/junk{index}.py", code, compress_type=zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 64 * 2**10
    says = r"its members would expand from [\d,]+ to [\d,]+ bytes in all \(a zip bomb\?\)"
    with pytest.raises(ArchprofError, match=says):
        archprof.analyze(str(bomb), input_size=(4,))
    assert "a zip bomb?" in one_error_line(cli("summary", bomb, "--input", "4"))


@pytest.mark.parametrize("size", [2**63, 2**64 - 1])
def test_a_safetensors_header_with_a_size_past_int64_is_one_error_line(tmp_path, size):
    """safetensors takes the header (a size of 0 beside it: no bytes to hold); building its
    meta tensor raised a TypeError with a traceback, exit 1."""
    pytest.importorskip("safetensors")
    weights = tmp_path / "huge.safetensors"
    header = json.dumps({"weight": {"dtype": "F32", "shape": [0, size], "data_offsets": [0, 0]}}).encode()
    weights.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(ArchprofError, match=f"^cannot read {weights}"):
        archprof.analyze("lenet5", weights=weights)
    assert one_error_line(cli("summary", "lenet5", "--weights", weights)).startswith(f"error: cannot read {weights}")


class _Loops(nn.Module):
    def forward(self, x):
        for _ in range(1_000_000_000):
            x = x + 1.0
        return x


class _LoopsAWhile(nn.Module):
    def forward(self, x):
        for _ in range(60):
            x = x + 1.0
        return x


def test_a_model_files_loop_is_bounded_by_the_operators_it_runs(tmp_path, monkeypatch):
    """A 5 KB TorchScript file whose forward loops 10**9 times ran for hours, every operator
    recorded (0.9 GB at 10**5). A model file's forward may run MOST_FILE_OPS operators (here
    50); a Python factory's, the user's own code, is not bounded. The oracle: the loop is in
    the file torch runs (its code holds the 10**9)."""
    import archprof.analysis

    path = tmp_path / "loops.pt"
    torch.jit.script(_Loops()).save(str(path))
    assert "1000000000" in torch.jit.load(str(path)).code
    monkeypatch.setattr(archprof.analysis, "MOST_FILE_OPS", 50)
    result = cli("summary", path, "-i", "3")
    assert result.exit_code == 2
    assert "the forward runs more than 50 operators, more than any network's" in one_error_line(result)
    factory = tmp_path / "loops_a_while.py"
    factory.write_text(
        "import torch\n\nclass Net(torch.nn.Module):\n    def forward(self, x):\n"
        "        for _ in range(60):\n            x = x + 1.0\n        return x\n"
    )
    assert len(archprof.analyze(f"{factory}:Net", input_size=(3,)).graph.ops) == 60
    scripted = tmp_path / "loops_a_while.pt"
    torch.jit.script(_LoopsAWhile()).save(str(scripted))
    assert cli("summary", scripted, "-i", "3").exit_code == 2


def _count_to(n: int) -> int:
    total, i = 0, 0
    while i < n:
        total += i
        i += 1
    return total


class _CountsInAFunction(nn.Module):
    """A loop of numbers, in a function the forward calls: no operator runs in it."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x):
        return x + _count_to(self.n)


class _CountsInASubmodule(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.inner = _CountsInAFunction(n)

    def forward(self, x):
        for _ in range(3):  # a loop with operators, around the submodule's loop of numbers
            x = self.inner(x) * 2.0
        return x


class _CountsInAFork(_CountsInAFunction):
    def forward(self, x):
        return x + torch.jit.wait(torch.jit.fork(_count_to, self.n))  # run on another thread


@pytest.mark.parametrize("holder", [_CountsInAFunction, _CountsInASubmodule, _CountsInAFork])
def test_a_model_files_loop_of_numbers_is_bounded_by_its_iterations(tmp_path, monkeypatch, holder):
    """A loop of plain numbers (`while i < 10**10: i += 1`) runs in TorchScript's interpreter
    without one operator: the bound on operators never met it, and it ran for hours. Every
    loop of a file's forward, in the functions, submodules and forks it calls too, may run twice
    MOST_FILE_OPS iterations in all (here 2 x 50); a shorter one runs as before, its report
    the one of the same module run eagerly (the oracle: the file holds the loop's 10**10, and
    the eager module's trace, not bounded, records the same operators)."""
    import archprof.analysis

    monkeypatch.setattr(archprof.analysis, "MOST_FILE_OPS", 50)
    endless = tmp_path / "endless.pt"
    torch.jit.script(holder(10**10)).save(str(endless))
    assert [m.n for m in torch.jit.load(str(endless)).modules() if hasattr(m, "n")] == [10**10]
    result = cli("summary", endless, "-i", "3")
    assert result.exit_code == 2
    assert one_error_line(result) == (
        "error: the forward runs more than 100 loop iterations, more than any network's: a loop that does not end?"
    )
    short = tmp_path / "short.pt"
    torch.jit.script(holder(30)).save(str(short))
    graph = archprof.analyze(str(short), input_size=(3,)).graph
    eager = archprof.analyze(holder(30), input_size=(3,)).graph
    assert [op.op for op in graph.ops] == [op.op for op in eager.ops]
    assert [op.module.path for op in graph.ops] == [op.module.path for op in eager.ops]


def _nested(levels: int) -> nn.Module:
    """`levels` modules, each the child of the one before (the last a ReLU's holder)."""
    module: nn.Module = nn.ReLU()
    for _ in range(levels):
        holder = _Holder()
        holder.child = module
        module = holder
    return module


class _Holder(nn.Module):
    def forward(self, x):
        return self.child(x)


def _chained(tmp_path, methods: int) -> nn.Module:
    """A module whose forward calls m0, which calls m1, ... (a file of their code, imported)."""
    lines = [
        "import torch",
        "",
        "class Chain(torch.nn.Module):",
        "    def forward(self, x):",
        "        return self.m0(x)",
    ]
    for index in range(methods):
        call = f"self.m{index + 1}(x) + 1" if index + 1 < methods else "x + 1"
        lines += [f"    def m{index}(self, x):", f"        return {call}"]
    (tmp_path / "chain_code.py").write_text("\n".join(lines) + "\n")
    spec = importlib.util.spec_from_file_location("chain_code", tmp_path / "chain_code.py")
    code = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(code)
    return code.Chain()


@pytest.mark.parametrize("kind", ["nested", "chained"])
def test_torchscript_nesting_modules_or_chaining_methods_past_a_bound_is_refused(tmp_path, kind):
    """torch.jit.load crashed with SIGSEGV on 20,000 modules nested one in the next and on a
    chain of 3,000 methods (archprof exited by the signal, without a word), took 37 s on 1,000
    nested, and a chain of 1,000 ran archprof's attribution for minutes: past MOST_DEPTH (128)
    levels such a file is refused; 100 load as before. The oracle: torch loads and runs each."""
    build = _nested if kind == "nested" else lambda levels: _chained(tmp_path, levels)
    for levels, refused in ((100, False), (140, True)):
        path = tmp_path / f"{kind}{levels}.pt"
        torch.jit.script(build(levels)).save(str(path))
        torch.jit.load(str(path))(torch.ones(1))
        result = cli("summary", path, "-i", "3")
        if refused:
            said = "nests modules 141 deep" if kind == "nested" else "chains 141 calls of the methods of class 'Chain'"
            assert result.exit_code == 2 and f"{said}, more than 128" in one_error_line(result)
        else:
            assert result.exit_code == 0, result.output


class _MakesOnTheCpu(nn.Module):
    def forward(self, x):
        return x + torch.ones([100, 100], device=torch.device("cpu")).sum()


@pytest.mark.parametrize("form", ["torchscript", "exported"])
def test_a_model_files_tensor_made_on_the_cpu_is_bounded(tmp_path, monkeypatch, form):
    """A 5 KB file whose forward makes `torch.ones([40000, 40000], device=cpu)` took 6.4 GB: a
    trace on meta runs a CPU operator for real (and a TorchScript one then fell back to a real
    forward, which allocated it again). A model file's operators may make at most
    MOST_FILE_CPU_BYTES there in all (here 1,000 bytes, of 40,000); a Python factory's are not
    bounded.
    The oracle: torch runs the file, making the 100 x 100 tensor on the CPU."""
    import archprof.tracing.recorder

    path = tmp_path / ("cpu.pt" if form == "torchscript" else "cpu.pt2")
    if form == "torchscript":
        torch.jit.script(_MakesOnTheCpu()).save(str(path))
        assert torch.jit.load(str(path))(torch.zeros(3)).tolist() == [10_000.0] * 3
    else:
        torch.export.save(torch.export.export(_MakesOnTheCpu(), (torch.zeros(1, 3),)), path)
        assert torch.export.load(path).module()(torch.zeros(1, 3)).tolist() == [[10_000.0] * 3]
    monkeypatch.setattr(archprof.tracing.recorder, "MOST_FILE_CPU_BYTES", 1_000)
    result = cli("summary", path, "-i", "3")
    assert result.exit_code == 2
    assert one_error_line(result) == (
        "error: the forward makes 40.00 kB of tensors on the CPU (by aten.ones), which an analysis allocates for"
        " real: more than the 1.00 kB a model file may"
    )
    assert archprof.analyze(_MakesOnTheCpu(), input_size=(3,)).totals.param_count == 0  # a module of the user's


class _MakesTwiceOnTheCpu(nn.Module):
    def forward(self, x):
        return x + torch.ones([50, 100], device=torch.device("cpu")).sum() + torch.ones([50, 100]).sum()


def test_a_model_files_tensors_made_on_the_cpu_are_bounded_together(tmp_path, monkeypatch):
    """Bounded per operator, six operators of 1 GiB each would take 6 GiB: the bound holds
    for all a forward makes on the CPU (here 30,000 bytes; two tensors of 20,000 pass it
    together, neither alone; the second with the default device, the CPU)."""
    import archprof.tracing.recorder

    path = tmp_path / "twice.pt"
    torch.jit.script(_MakesTwiceOnTheCpu()).save(str(path))
    assert torch.jit.load(str(path))(torch.zeros(1)).tolist() == [10_000.0]
    monkeypatch.setattr(archprof.tracing.recorder, "MOST_FILE_CPU_BYTES", 30_000)
    result = cli("summary", path, "-i", "1")
    assert result.exit_code == 2
    assert "the forward makes 40.00 kB of tensors on the CPU (by aten.ones)" in one_error_line(result)
    monkeypatch.setattr(archprof.tracing.recorder, "MOST_FILE_CPU_BYTES", 50_000)  # and their sums
    assert cli("summary", path, "-i", "1").exit_code == 0


class _ViewsAndWritesOnTheCpu(nn.Module):
    def forward(self, x):
        made = torch.ones([100, 100])
        for _ in range(5):
            made = made.view([10_000]).view([100, 100])[:, :]
            made.mul_(2.0)
        return x + made.sum()


class _GrowsOnTheCpu(nn.Module):
    def forward(self, x):
        made = torch.ones([10])
        made.resize_([100, 100])
        return x + made.shape[0]


def test_a_model_files_views_and_in_place_writes_on_the_cpu_make_nothing_new(tmp_path, monkeypatch):
    """The CPU bound counts what a forward allocates: a view of a CPU tensor, or an in-place
    write into one, makes no new tensor (five of each here beside one of 40,000 bytes, which
    alone passes the bound of 50,000); a `resize_` makes what it grows the tensor by (39,960
    bytes here, past a bound of 30,000 with the 40 it grows from).
    The oracle: torch runs the files, which compute 32 x 10,000 and 100 + x."""
    import archprof.tracing.recorder

    viewed, grown = tmp_path / "views.pt", tmp_path / "grows.pt"
    torch.jit.script(_ViewsAndWritesOnTheCpu()).save(str(viewed))
    torch.jit.script(_GrowsOnTheCpu()).save(str(grown))
    assert torch.jit.load(str(viewed))(torch.zeros(1)).tolist() == [320_000.0]
    assert torch.jit.load(str(grown))(torch.zeros(1)).tolist() == [100.0]
    monkeypatch.setattr(archprof.tracing.recorder, "MOST_FILE_CPU_BYTES", 50_000)
    assert cli("summary", viewed, "-i", "1").exit_code == 0
    monkeypatch.setattr(archprof.tracing.recorder, "MOST_FILE_CPU_BYTES", 30_000)
    result = cli("summary", grown, "-i", "1")
    assert result.exit_code == 2
    assert "the forward makes 40.00 kB of tensors on the CPU (by aten.resize_)" in one_error_line(result)


def _calls_a_chain(tmp_path, functions: int, module: str = "function_chain") -> nn.Module:
    """A module whose forward calls the free function f0, which calls f1, ... (a file of
    their code, imported as `module`: TorchScript keeps what it compiled by qualified name,
    so a chain of another length needs a module of its own name)."""
    lines = ["import torch", ""]
    for index in range(functions):
        call = f"f{index + 1}(x) + 1" if index + 1 < functions else "x + 1"
        lines += [f"def f{index}(x: torch.Tensor) -> torch.Tensor:", f"    return {call}", ""]
    lines += ["class Calls(torch.nn.Module):", "    def forward(self, x):", "        return f0(x)"]
    (tmp_path / f"{module}.py").write_text("\n".join(lines) + "\n")
    spec = importlib.util.spec_from_file_location(module, tmp_path / f"{module}.py")
    code = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(code)
    return code.Calls()


def test_torchscript_chaining_free_functions_past_a_bound_is_refused(tmp_path):
    """torch.jit.load crashed with SIGSEGV (archprof exited by the signal, without a word) on
    a 92 KB file whose forward calls a chain of 1,500 free functions, each the next: the
    archive's classes and functions naming each other past MOST_DEPTH (128) are refused; 100
    load as before. The oracle: torch loads and runs each, 140 deep too."""
    for functions, refused in ((100, False), (140, True)):
        path = tmp_path / f"functions{functions}.pt"
        torch.jit.script(_calls_a_chain(tmp_path, functions, f"function_chain_{functions}")).save(str(path))
        assert torch.jit.load(str(path))(torch.zeros(1)).tolist() == [float(functions)]
        result = cli("summary", path, "-i", "3")
        if refused:
            assert result.exit_code == 2
            assert "chains 141 of its classes and functions, each naming the next, more than 128" in one_error_line(
                result
            )
        else:
            assert result.exit_code == 0, result.output


def _summary_of_constants(tmp_path, constants: bytes):
    """`archprof summary` of a scripted module whose constants.pkl is `constants`, which torch
    loads (the oracle: a file torch reads, checked here)."""
    path = _with_constants(tmp_path, constants)
    torch.jit.load(str(path))
    return cli("summary", path, "-i", "3")


def _with_constants(tmp_path, constants: bytes):
    """A scripted module's file, its constants.pkl `constants`."""
    plain, path = tmp_path / "plain.pt", tmp_path / "constants.pt"
    torch.jit.script(_Holds()).save(str(plain))

    def edit(tail, data, root):
        return [(root + tail, constants if tail == "constants.pkl" else data)]

    return rewritten(plain, path, edit)


@pytest.mark.parametrize(("levels", "refused"), [(999, False), (1000, True)])
def test_a_torchscript_pickle_nesting_past_a_bound_is_refused(tmp_path, levels, refused):
    """torch.jit.load crashed with SIGSEGV on a 302 KB file whose constants.pkl is a tuple
    nested 300,000 deep (one byte an opcode): a TorchScript pickle nesting objects past
    MOST_PICKLE_DEPTH (1,000) is refused, read by its opcodes; one at the bound loads. The
    oracle: torch loads both (the pickle's depth is the tuples' count, the empty one's too)."""
    result = _summary_of_constants(tmp_path, b"\x80\x02)" + b"\x85" * levels + b".")  # (), in `levels` one-tuples
    if refused:
        assert result.exit_code == 2
        assert "its TorchScript 'constants.pkl' nests objects more than 1000 deep" in one_error_line(result)
    else:
        assert result.exit_code == 0, result.output


def test_a_torchscript_pickle_nesting_past_a_bound_beside_what_it_returns_is_refused(tmp_path):
    """A tuple nested 300,000 deep left on constants.pkl's stack under the tuple it returns
    (or popped) crashed torch's loader (SIGSEGV) as it let go of it: only what a pickle
    returns was measured. Every object it builds is now: here 2,000 deep, left behind. The
    oracle: torch builds both tuples, then says what it found on its stack."""
    path = _with_constants(tmp_path, b"\x80\x02N" + b"\x85" * 2000 + b").")
    with pytest.raises(RuntimeError, match="expected 1 element on the stack, but found 2"):
        torch.jit.load(str(path))
    result = cli("summary", path, "-i", "3")
    assert result.exit_code == 2
    assert "its TorchScript 'constants.pkl' nests objects more than 1000 deep" in one_error_line(result)


def _held_over_and_over(levels: int) -> bytes:
    """A pickle of a tuple holding a list of 10 lists, each the same list of 10 lists, ...
    `levels` deep, the last of ten zeros: each list made once, then held 9 times more by memo
    references (TorchScript's unpickler reads no POP), 10 ** levels values in a few bytes a level."""

    def made(level: int) -> bytes:
        if level == 0:
            return b"](" + b"K\x00" * 10 + b"e"
        inner = bytes([level - 1])
        return b"](" + made(level - 1) + b"q" + inner + (b"h" + inner) * 9 + b"e"

    return b"\x80\x02" + made(levels - 1) + b"\x85."


@pytest.mark.parametrize(("levels", "refused"), [(5, False), (6, True)])
def test_a_torchscript_pickle_holding_one_list_over_and_over_is_refused(tmp_path, levels, refused):
    """A 9 KB data.pkl whose list of tensors is held 500 times by each of 500 lists held by
    one became 125,000,000 tensors once its forward returned it (54 s, 3.3 GB): a pickle whose
    objects hold more than MOST_REACHED (1,000,000) values past its opcodes, each value
    counted as often as it is held, is refused, read by its opcodes. Here lists of 10, 5
    levels (111,112 values, the tuple's too, from 68 opcodes: loaded) and 6 (1,111,112
    from 81: refused). The oracle: torch loads both."""
    result = _summary_of_constants(tmp_path, _held_over_and_over(levels))
    if refused:
        assert result.exit_code == 2
        assert "its TorchScript 'constants.pkl' hands out one container again and again (t = (t, t)): its objects" in (
            one_error_line(result)
        )
    else:
        assert result.exit_code == 0, result.output


class _MakesOnTheCpuAsItLoads(RunsCodeAsItLoads):
    """Makes a 100 x 100 tensor as it loads."""

    @torch.jit.export
    def __setstate__(self, state: tuple[float, bool]) -> None:
        self.training = state[1]
        self.made = float(torch.ones([100, 100]).sum())


def test_what_a_torchscript_file_makes_on_the_cpu_as_it_loads_is_bounded(tmp_path, monkeypatch):
    """A 2 KB file whose straight-line `__setstate__` ran `torch.ones(699000000)` took 2.8 GB as
    it loaded, outside the bound on the forward: what its code makes on the CPU while it
    loads is bounded by MOST_FILE_CPU_BYTES too, besides the file's own size (here 1,000
    bytes besides it: the 40,000 of a 100 x 100 float32 tensor refused, in one line; the
    default bound lets it load). The oracle: torch loads the file and runs the code."""
    import archprof.load.files

    path = tmp_path / "loads.pt"
    torch.jit.script(_MakesOnTheCpuAsItLoads()).save(str(path))
    assert torch.jit.load(str(path))(torch.zeros(1)).tolist() == [10_000.0]
    assert cli("summary", path, "-i", "1").exit_code == 0
    monkeypatch.setattr(archprof.load.files, "MOST_FILE_CPU_BYTES", 1_000)
    result = cli("summary", path, "-i", "1")
    assert result.exit_code == 2
    assert one_error_line(result) == (
        f"error: refusing to load {path}: its TorchScript code makes 40.00 kB of tensors on the CPU while the file"
        " loads (by aten.ones), more than a model file may (1.00 kB besides its own size)"
    )


def _pickled(value, depth_room: int = 10_000) -> bytes:
    """`value` pickled by Python's pickler, protocol 2 (GLOBAL, memo indices in order, as torch's)."""
    import pickle
    import sys

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, depth_room))
    try:
        return pickle.dumps(value, protocol=2)
    finally:
        sys.setrecursionlimit(limit)


def _nested_lists(levels: int) -> list:
    """A list in a list ... `levels` deep, an empty one innermost."""
    outer: list = []
    for _ in range(levels - 1):
        outer = [outer]
    return outer


def _linked_after_memoized(lists: int) -> bytes:
    """A pickle of a tuple of the first of `lists` lists, each memoized empty, then appended
    to the one before it through memo references: `lists` deep, built as no pickler would."""
    import struct

    def memo(op: bytes, index: int) -> bytes:
        return op + struct.pack("<I", index)

    made = b"\x80\x02" + b"".join(b"]" + memo(b"r", i) + b"0" for i in range(lists))
    made += b"".join(memo(b"j", i) + memo(b"j", i + 1) + b"a0" for i in range(lists - 1))
    return made + memo(b"j", 0) + b"\x85."


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("itself", "builds an object that holds itself"),
        ("deep", "nests objects more than 1000 deep"),
        ("held", "hands out one container again and again"),
    ],
)
def test_a_pickles_objects_are_measured_as_they_end_up_however_they_were_built(value, says):
    """Memo entries were measured as they were when stored: a list stored empty, then
    appended to itself (torch's loader crashed on the file, SIGSEGV), or filled later with
    lists 100,000 deep or with memo references 10 ** 9 values strong (3.5 GB), passed. The
    objects a pickle builds are measured once it is read. The oracle: Python's own pickler,
    which writes a list holding itself and one list held 10 times at each of 8 levels by
    memo references; and lists memoized empty and linked later (`_linked_after_memoized`)."""
    from archprof.load.script_pickles import pickle_problem

    if value == "itself":
        itself: list = []
        itself.append(itself)
        pickled = _pickled((itself,))
    elif value == "deep":
        pickled = _linked_after_memoized(1_000)
    else:
        held: list = [0] * 10
        for _ in range(7):
            held = [held] * 10
        pickled = _pickled((held,))
    problem = pickle_problem(pickled)
    assert problem is not None and problem.startswith(says)
    assert pickle_problem(_linked_after_memoized(999)) is None  # 1,000 deep with its tuple: at the bound
    assert pickle_problem(_pickled((_nested_lists(998), [[0] * 10] * 10))) is None


def test_a_pickles_memo_index_out_of_order_is_refused():
    """TorchScript's unpickler sizes its memo table by the index it is given: a 12-byte
    constants.pkl memoizing its tuple at index 2**32 - 16 asked for 68 GB, at 150,000,000
    took 2.6 GB. torch (as Python's pickler) numbers them 0, 1, 2, ...: any other is refused."""
    import struct

    from archprof.load.script_pickles import pickle_problem

    at = b"\x80\x02)r" + struct.pack("<I", 150_000_000) + b"\x85."
    assert pickle_problem(at).startswith("memoizes a value at index 150,000,000, past the 0 it has")
    assert pickle_problem(b"\x80\x02)q\x00\x85.") is None  # index 0, the first


def test_torchscript_code_files_named_in_another_case_are_followed_as_torch_finds_them(tmp_path):
    """torch finds a code file whatever the case of its name: a chain of 1,500 free functions
    whose file was renamed '.PY' passed the chain check (its functions named under another
    module than the code calling them) and crashed torch's loader. Here 140, renamed, refused
    as the file unrenamed is. The oracle: torch loads and runs the renamed file."""
    plain, renamed = tmp_path / "functions.pt", tmp_path / "renamed.pt"
    torch.jit.script(_calls_a_chain(tmp_path, 140, "renamed_chain")).save(str(plain))

    def edit(tail, data, root):
        return [(root + (tail[: -len(".py")] + ".PY" if tail.endswith("renamed_chain.py") else tail), data)]

    rewritten(plain, renamed, edit)
    assert torch.jit.load(str(renamed))(torch.zeros(1)).tolist() == [140.0]
    result = cli("summary", renamed, "-i", "3")
    assert result.exit_code == 2
    assert "renamed_chain.PY' chains 141 of its classes and functions" in one_error_line(result)
