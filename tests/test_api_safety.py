"""Issue 12, the library's entry points: arguments checked at the door, a forward that exits
is an error and not the end of the caller's process, the caller's module left as it was,
and numbers past int64 answered exactly or refused in one line."""

import copy
import io
import json
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import archprof
from archprof.analysis import analysis
from archprof.budget import evaluate, parse_limit
from archprof.cli import app
from archprof.comparison import compare, comparison_json, measure_latency
from archprof.diff import diff
from archprof.errors import ArchprofError, ArchprofWarning
from archprof.fit import fit_batch
from archprof.load import load_model
from archprof.measure.peak_memory import measure_memory
from tests.models import OwnOperationsAroundAChild, ReadsItsValues

runner = CliRunner()
INT64_MAX = 2**63 - 1


def assert_one_line_error(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


# -- 1. batch and dtype, checked at every entry --------------------------------------------------

DTYPE_CHOICES = "dtype must be one of float32, float16, bfloat16, float64"
BAD_BATCHES = ["2", 2.0, True, 0, -3, [2]]
BAD_DTYPES = ["int8", torch.int8, torch.int64, torch.complex64, "float", np.float16, 16]


def _entries():
    """Each public entry point, called on a model name that does not exist: the argument
    check must come first, before any model is loaded."""
    quick = {"peak_flops": "1T", "bandwidth": "1GB/s", "device": "cpu", "warmup": 0, "repeat": 1}
    return {
        "analyze": lambda **kw: archprof.analyze("no-such-model", **kw),
        "profile": lambda **kw: archprof.profile("no-such-model", **quick, **kw),
        "compare": lambda **kw: compare(["no-such-model"], **kw),
    }


@pytest.mark.parametrize("entry", ["analyze", "profile", "compare"])
@pytest.mark.parametrize("batch", BAD_BATCHES, ids=repr)
def test_a_batch_that_is_not_a_whole_number_of_at_least_1_is_refused_at_every_entry(entry, batch):
    with pytest.raises(ArchprofError, match=r"^batch must be"):
        _entries()[entry](batch=batch)


@pytest.mark.parametrize("entry", ["analyze", "profile", "compare"])
@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=repr)
def test_a_dtype_that_is_not_a_floating_model_dtype_is_refused_at_every_entry(entry, dtype):
    with pytest.raises(ArchprofError, match=f"^{DTYPE_CHOICES}"):
        _entries()[entry](dtype=dtype)


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=repr)
def test_fit_batch_refuses_a_bad_dtype_before_any_work(dtype):
    with pytest.raises(ArchprofError, match=f"^{DTYPE_CHOICES}"):
        fit_batch("no-such-model", 10**9, dtype=dtype)


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        (0, "memory budget must be a whole number of bytes"),
        (-1, "memory budget must be a whole number of bytes"),
        (True, "memory budget must be a whole number of bytes"),
        (None, "memory budget must be a whole number of bytes"),
        (2.5, "not a whole number of bytes"),
        ("-1GB", "cannot read the size '-1GB'"),
        ("0GB", "must be more than 0 bytes"),
    ],
)
def test_fit_batch_refuses_a_budget_that_is_not_a_positive_number_of_bytes(budget, message):
    """A size as --fit reads it ("16GB", 2.5e9) is taken (tests/test_memory.py); these are not."""
    with pytest.raises(ArchprofError, match=message):
        fit_batch("lenet5", budget)


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (torch.float16, "float16"),
        ("float16", "float16"),
        ("torch.bfloat16", "bfloat16"),
        (" Float32 ", "float32"),
        (torch.float64, "float64"),
        ("float64", "float64"),
    ],
)
def test_floating_dtypes_and_their_names_are_accepted(dtype, expected):
    report = archprof.analyze("lenet5", dtype=dtype)
    assert report.dtype == expected
    # lenet5's 61,706 parameters, each of the dtype's size.
    size = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}[expected]
    assert report.totals.param_bytes == 61_706 * size


def test_numpy_integers_are_whole_numbers_too():
    report = archprof.analyze("lenet5", batch=np.int64(3))
    assert report.input_shapes == ((3, 1, 32, 32),)
    for size in ((np.int64(1), 32, 32), np.array([1, 32, 32]), torch.Size([1, 32, 32])):
        assert archprof.analyze("lenet5", input_size=size).input_shapes == ((1, 1, 32, 32),)


@pytest.mark.parametrize("flag", ["training", "fold_bn"])
@pytest.mark.parametrize("value", ["false", 0, 1, None], ids=repr)
def test_a_flag_that_is_not_a_bool_is_refused(flag, value):
    with pytest.raises(ArchprofError, match=rf"^{flag} must be True or False, got"):
        archprof.analyze("lenet5", **{flag: value})


@pytest.mark.parametrize("value", ["false", "no", 0, 1, None], ids=repr)
def test_trust_pickle_that_is_not_a_bool_is_refused_at_every_entry_before_the_file_is_read(value, tmp_path):
    # "false" is true: a pickled module would run its code, as with trust_pickle=True.
    path = tmp_path / "whole.pt"
    torch.save(nn.Sequential(nn.Linear(4, 2)), path)
    spec, options = str(path), {"input_size": (4,), "trust_pickle": value}
    for call in (
        lambda: archprof.analyze(spec, **options),
        lambda: compare([spec], **options),
        lambda: diff(spec, spec, **options),
        lambda: fit_batch(spec, 10**6, **options),
        lambda: load_model(spec, trust_pickle=value),
    ):
        with pytest.raises(ArchprofError, match=r"^trust_pickle must be True or False, got"):
            call()


@pytest.mark.parametrize("value", ["false", 0, None], ids=repr)
def test_an_input_spec_whose_batched_is_not_a_bool_is_refused(value):
    with pytest.raises(ArchprofError, match=r"^batched must be True or False, got"):
        archprof.InputSpec((3, 8, 8), batched=value)


def test_fit_batch_takes_the_model_options_analyze_takes(tmp_path):
    from archprof.load import ModelOptions

    weights = tmp_path / "lenet5.pt"
    torch.save(load_model("lenet5").materialize().state_dict(), weights)
    assert fit_batch("lenet5", 10**7, weights=weights).batch == fit_batch("lenet5", 10**7).batch
    assert fit_batch("lenet5", 10**7, **ModelOptions().keywords()).batch == fit_batch("lenet5", 10**7).batch
    with pytest.raises(ArchprofError, match="finds the batch itself"):
        fit_batch("lenet5", 10**7, batch=4)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: archprof.analyze("lenet5", args=[1, 2]), "args must map keyword names to values"),
        (lambda: compare(["lenet5"], jobs="2"), "jobs must be a whole number"),
        (lambda: compare(["lenet5"], jobs=True), "jobs must be a whole number"),
        (lambda: archprof.profile("lenet5", device="cpu", repeat="3"), "repeat must be a whole number"),
        (lambda: diff(42, "lenet5"), r"cannot analyse 42 \(of type int\)"),
        (lambda: compare(["no-such-model"], profile="false"), "profile must be True or False"),
        (lambda: compare(["no-such-model"], profile=True, runs="2"), "runs must be a whole number"),
        (lambda: compare(["no-such-model"], profile=True, runs=0), "runs must be at least 1, got 0"),
        (lambda: compare(["lenet5", "lenet5"], progress=3), "progress must be a function"),
        (lambda: archprof.profile("no-such-model", device="cpu", progress=3), "progress must be a function"),
        (lambda: _lenet5_report().explain("features.0", width="80"), "width must be a whole number, got '80'"),
        (lambda: _lenet5_report().explain("features.0", width=0), "width must be at least 1, got 0"),
        (lambda: _lenet5_report().explain("features.0", markdown="yes"), "markdown must be True or False"),
        (lambda: parse_limit("max-param", "10M"), r"unknown limit 'max-param' \(did you mean 'max-params'\?\)"),
        (
            lambda: evaluate(_lenet5_report(), [parse_limit("max-training-memory", "1GB")]),
            r"training step peak is not available: the report is of inference; analyse a training step",
        ),
        (lambda: archprof.analyze("lenet5", optimizer="adam"), r"optimizer 'adam' applies to a training step"),
        (lambda: fit_batch("lenet5", 10**8, optimizer="adam"), r"optimizer 'adam' applies to a training step"),
        (
            lambda: archprof.analyze("lenet5", input_size=torch.zeros(1, 32, 32)),
            r"got a tensor of shape 1x32x32: give a shape \(an example input's without the batch: x\.shape",
        ),
    ],
    ids=[
        "args a list",
        "jobs a string",
        "jobs a bool",
        "repeat a string",
        "diff of a number",
        "compare's profile a string",
        "compare's runs a string",
        "compare's runs 0",
        "compare's progress a number",
        "profile's progress a number",
        "explain's width a string",
        "explain's width 0",
        "explain's markdown a string",
        "a limit misspelt",
        "a training limit on an inference report",
        "an optimizer without training",
        "fit_batch's optimizer without training",
        "an example input as input_size",
    ],
)
def test_an_argument_of_the_wrong_type_is_one_error_not_a_python_one(call, message):
    with pytest.raises(ArchprofError, match=message):
        call()


def _lenet5_report():
    return archprof.analyze("lenet5")


def test_a_limits_name_takes_underscores_as_a_budget_file_does():
    assert parse_limit("max_params", "10M") == parse_limit("max-params", "10M")


def test_explain_lays_a_narrow_width_out_as_a_table_is():
    """Under 30 columns every line was cut to a character or two; the CLI lays it out for 30."""
    report = _lenet5_report()
    assert report.explain("features.0", width=5) == report.explain("features.0", width=30)


def test_the_packages_modules_are_reached_from_a_plain_import_as_the_readme_writes_them():
    """`archprof.diff.diff`, `archprof.fit.fit_batch` after `import archprof` alone raised
    AttributeError; the lazy names are listed for tab completion; torch is not imported."""
    code = (
        "import sys, archprof\n"
        "assert 'torch' not in sys.modules and {'analyze', 'ArchprofWarning'} <= set(dir(archprof))\n"
        "print(archprof.diff.diff.__name__, archprof.fit.fit_batch.__name__, archprof.load.ModelOptions.__name__)\n"
        "assert not hasattr(archprof, 'no_such_module')\n"
        # Resolved once: the package holds each name it has imported, which later reads find directly.
        "analyze = archprof.analyze\n"
        "assert vars(archprof)['analyze'] is analyze is archprof.api.analyze and 'compare' not in vars(archprof)"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["diff", "fit_batch", "ModelOptions"]


def test_diff_takes_a_module_as_it_takes_a_spec():
    net = nn.Sequential(nn.Conv2d(1, 6, 5))
    changes = {t.metric: (t.old, t.new) for t in diff(net, "lenet5", input_size=(1, 32, 32)).totals}
    assert changes["param_count"] == (6 * 25 + 6, sum(p.numel() for p in load_model("lenet5").module.parameters()))


def test_a_report_written_to_what_is_not_a_file_name_is_one_error():
    report = archprof.analyze("lenet5")
    for write in (report.to_csv, report.to_json, report.to_markdown):
        with pytest.raises(ArchprofError, match="path must be a file name"):
            write(123)


def test_the_layers_frame_is_the_callers_to_change():
    report = archprof.analyze("lenet5")
    layers = report.layers
    layers["macs"] = 0
    layers["mine"] = 1
    lenet5_macs = 6 * 28 * 28 * 25 + 16 * 10 * 10 * 6 * 25 + 400 * 120 + 120 * 84 + 84 * 10  # by hand
    assert report.layers["macs"].sum() == report.totals.macs == lenet5_macs
    assert "mine" not in report.layers


def test_compare_and_fit_batch_accept_a_dtype_name():
    frame = compare(["lenet5"], dtype="torch.float16")
    assert frame["dtype"].iloc[0] == "float16"
    assert frame["param_bytes"].iloc[0] == 61_706 * 2
    assert fit_batch("lenet5", 10**7, dtype="float16").report.dtype == "float16"


@pytest.mark.parametrize("empty", [(), []], ids=["tuple", "list"])
def test_an_empty_input_size_is_shown_as_the_empty_shape(empty):
    with pytest.raises(ArchprofError, match=r"^input \(\) has 0 dimensions; lenet5 takes 3 \(e\.g\. 1x32x32\)$"):
        archprof.analyze("lenet5", input_size=empty)


def test_an_input_with_its_batch_in_front_is_told_to_leave_the_batch_out():
    """The shape the report's header shows (1x3x224x224) given as --input: one dimension too
    many, the batch; a size two too many is not taken for one."""
    with pytest.raises(ArchprofError, match=r"takes 3 \(e\.g\. 3x224x224\): leave the batch out \(--batch sets it"):
        archprof.analyze("resnet18", input_size=(1, 3, 224, 224))
    with pytest.raises(ArchprofError, match=r"takes 3 \(e\.g\. 3x224x224\)$"):
        archprof.analyze("resnet18", input_size=(1, 1, 3, 224, 224))
    done = CliRunner().invoke(app, ["summary", "resnet18", "--input", "1x3x224x224"])
    assert done.exit_code == 2 and "leave the batch out" in done.output


# -- 2. a forward that exits -----------------------------------------------------------------


class Exits(nn.Linear):
    """sys.exit(3) in forward: on the meta device too, or only on real data."""

    def __init__(self, on_meta: bool = True, code=3) -> None:
        super().__init__(4, 4)
        self.on_meta = on_meta
        self.code = code

    def forward(self, x):
        if self.on_meta or not x.is_meta:
            sys.exit(self.code)
        return super().forward(x)


class Wraps(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


class ReadsValuesThenExits(nn.Module):
    """Needs the CPU fallback (.item()), then exits there."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if self.fc(x).sum().item() > -1e30:
            raise SystemExit("bye")
        return x


class Stop(BaseException):
    pass


class RaisesBase(nn.Linear):
    def __init__(self, kind: type[BaseException]) -> None:
        super().__init__(4, 4)
        self.kind = kind

    def forward(self, x):
        raise self.kind("stopped")


def test_system_exit_in_the_meta_trace_is_an_error_naming_it():
    with pytest.raises(ArchprofError, match=r"^the forward of Exits raised SystemExit: 3$"):
        archprof.analyze(Exits(), input_size=(4,))
    # Inside a submodule: which one is said.
    inner = r"^the forward of Wraps raised SystemExit: 3, in module 'inner' \(Exits\)$"
    with pytest.raises(ArchprofError, match=inner):
        archprof.analyze(Wraps(Exits()), input_size=(4,))
    with pytest.raises(ArchprofError, match=r"^the forward of Exits raised SystemExit$"):
        archprof.analyze(Exits(code=None), input_size=(4,))
    with pytest.raises(ArchprofError, match=r"^the forward of Exits raised SystemExit: 3$"):
        archprof.analyze(Exits(), input_size=(4,), training=True)


def test_system_exit_in_the_cpu_fallback_is_an_error_naming_it():
    with pytest.raises(ArchprofError, match=r"nor on cpu: the forward of ReadsValuesThenExits raised SystemExit: bye$"):
        archprof.analyze(ReadsValuesThenExits(), input_size=(4,))


def test_any_base_exception_but_keyboard_interrupt_becomes_an_error():
    with pytest.raises(ArchprofError, match=r"^the forward of RaisesBase raised Stop: stopped$"):
        archprof.analyze(RaisesBase(Stop), input_size=(4,))
    with pytest.raises(KeyboardInterrupt):  # the user asked to stop: let it through
        archprof.analyze(RaisesBase(KeyboardInterrupt), input_size=(4,))


def test_system_exit_in_profiles_timed_runs_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHPROF_CACHE_DIR", str(tmp_path))
    with pytest.raises(ArchprofError, match=r"^the forward of Exits raised SystemExit: 3$"):
        archprof.profile(
            Exits(on_meta=False), input_size=(4,), device="cpu", warmup=1, repeat=1, peak_flops="1T", bandwidth="1GB/s"
        )


def test_system_exit_while_compare_times_a_model_is_an_error():
    model = Exits(on_meta=False)
    analysed = analysis(load_model(model), (4,), None, None)
    with pytest.raises(ArchprofError, match=r"^the forward of Exits raised SystemExit: 3$"):
        measure_latency(analysed, runs=1)
    with pytest.raises(ArchprofError, match=r"^the forward of Exits raised SystemExit: 3$"):
        compare([model], input_size=(4,), profile=True, runs=1)


EXITING_MODELS = """
import sys
import torch


class Exits(torch.nn.Linear):
    def forward(self, x):
        sys.exit(3)


def exits():
    return Exits(4, 4)
"""


def test_cli_prints_a_forward_that_exits_as_one_line_and_exits_2(tmp_path):
    (tmp_path / "exiting.py").write_text(EXITING_MODELS)
    result = runner.invoke(app, ["summary", f"{tmp_path / 'exiting.py'}:exits", "--input", "4"])
    assert_one_line_error(result, "the forward of Exits raised SystemExit: 3")


def test_the_real_process_exits_2_not_3(tmp_path):
    (tmp_path / "exiting.py").write_text(EXITING_MODELS)
    done = subprocess.run(
        [sys.executable, "-m", "archprof", "summary", f"{tmp_path / 'exiting.py'}:exits", "--input", "4"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == "error: the forward of Exits raised SystemExit: 3"


# -- 3. the caller's module is never changed -------------------------------------------------


class Stateful(nn.Module):
    """A forward that writes its own buffers (a call counter, a running mean of its input)
    and plain attributes (a counter, a list), with a submodule under two names and, with
    `reads_values`, needs the CPU fallback (.item())."""

    def __init__(self, reads_values: bool) -> None:
        super().__init__()
        self.reads_values = reads_values
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)
        # The head reached under a second name too: torch.func.functional_call swaps its
        # tensors out twice and back once, leaving a stand-in unless the trace puts them back.
        self.head_again = self.head
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))
        self.register_buffer("input_mean", torch.zeros(3))
        self.forward_calls = 0
        self.shapes = []

    def forward(self, x):
        self.forward_calls += 1
        self.shapes.append(tuple(x.shape))
        self.calls += 1
        self.input_mean.mul_(0.9).add_(0.1 * x.mean((0, 2, 3)))
        y = self.bn(self.conv(x)).mean((2, 3))
        if self.reads_values and y.abs().sum().item() < 0:
            y = -y
        return self.head(y)


def _caller_module(reads_values: bool) -> nn.Module:
    model = Stateful(reads_values)
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    model.conv.bias.requires_grad_(False)  # a frozen parameter
    model.train()
    model.bn.eval()  # a mixed mode
    model.register_forward_hook(lambda module, args, output: None)
    model.conv.register_forward_pre_hook(lambda module, args: None)
    model.head.register_full_backward_hook(lambda module, grad_in, grad_out: None)
    return model


HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks_with_kwargs",
)


_MODULE_OWN = frozenset(vars(nn.Module()))


def _snapshot(model: nn.Module) -> dict:
    return {
        "attributes": [
            (name, {k: copy.copy(v) for k, v in vars(m).items() if k not in _MODULE_OWN}, list(m._modules.items()))
            for name, m in model.named_modules()
        ],
        # The caller's seeded generator: a real run's random weights and inputs come from a fork of it.
        "random": torch.random.get_rng_state(),
        "values": {name: t.detach().clone() for name, t in model.state_dict(keep_vars=True).items()},
        "identity": [(name, id(t)) for name, t in (*model.named_parameters(), *model.named_buffers())],
        "training": [(name, m.training) for name, m in model.named_modules()],
        "requires_grad": [(name, p.requires_grad) for name, p in model.named_parameters()],
        "hooks": [(name, hook, dict(getattr(m, hook))) for name, m in model.named_modules() for hook in HOOK_DICTS],
        "no_grads": [(name, p.grad is None) for name, p in model.named_parameters()],
    }


def _assert_unchanged(model: nn.Module, before: dict) -> None:
    after = _snapshot(model)
    assert after["values"].keys() == before["values"].keys()
    for name, value in before["values"].items():
        assert torch.equal(after["values"][name], value), name
    for key in ("identity", "training", "requires_grad", "hooks", "no_grads", "attributes"):
        assert after[key] == before[key], key
    assert torch.equal(after["random"], before["random"])


def test_the_snapshot_sees_what_a_forward_changes():
    # The forward really writes its buffers: a snapshot taken around it must tell.
    model = _caller_module(reads_values=True)
    before = _snapshot(model)
    with torch.no_grad():
        model.eval()(torch.randn(2, 3, 8, 8))
    with pytest.raises(AssertionError):
        _assert_unchanged(model, before)


def _analyze(model, **kw):
    return archprof.analyze(model, input_size=(3, 8, 8), batch=2, **kw)


def _profile(model, tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHPROF_CACHE_DIR", str(tmp_path))
    return archprof.profile(
        model, input_size=(3, 8, 8), device="cpu", warmup=1, repeat=2, peak_flops="1T", bandwidth="1GB/s"
    )


PATHS = {
    "analyze": lambda m, tmp_path, mp: _analyze(m),
    "analyze training": lambda m, tmp_path, mp: _analyze(m, training=True, optimizer="adam"),
    "profile": _profile,
    "fit_batch": lambda m, tmp_path, mp: fit_batch(m, 10**6, input_size=(3, 8, 8)),
    "fit_batch training": lambda m, tmp_path, mp: fit_batch(m, 10**6, input_size=(3, 8, 8), training=True),
    "compare": lambda m, tmp_path, mp: compare([m], input_size=(3, 8, 8), profile=True, runs=1),
    "memory measure": lambda m, tmp_path, mp: measure_memory(analysis(load_model(m), (3, 8, 8), 2, None)),
}


@pytest.mark.parametrize("reads_values", [False, True], ids=["meta", "cpu fallback"])
@pytest.mark.parametrize("path", list(PATHS))
def test_the_callers_module_is_unchanged_on_every_path(path, reads_values, tmp_path, monkeypatch):
    model = _caller_module(reads_values)
    before = _snapshot(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        PATHS[path](model, tmp_path, monkeypatch)
    fell_back = any(
        issubclass(w.category, ArchprofWarning) and "cannot run on the meta device" in str(w.message) for w in caught
    )
    assert fell_back == reads_values  # the path taken is the one the test is named for
    _assert_unchanged(model, before)


def test_the_fallback_really_ran_a_real_forward():
    # What makes the fallback rows above worth having: the report was traced on the CPU.
    with pytest.warns(ArchprofWarning):
        report = _analyze(_caller_module(reads_values=True))
    assert report.traced_on == "cpu"
    assert _analyze(_caller_module(reads_values=False)).traced_on == "meta"


# -- 4. numbers past int64 -------------------------------------------------------------------


def test_fit_batch_refuses_a_budget_beyond_what_int64_bytes_can_analyse():
    refusal = r"^cannot fit a batch to .*: the budget is larger than any batch that can be analysed needs"
    with pytest.raises(ArchprofError, match=refusal):
        fit_batch(nn.Linear(4, 4, bias=False), 2**80, input_size=(4,))


def test_fit_batch_near_int64_is_exact():
    # Inference peak of a bias-free Linear(4, 4) on float32: its 16 weights (64 B) plus the
    # input and the output, live together while the product runs (16 B + 16 B a sample).
    budget = 2**62
    found = fit_batch(nn.Linear(4, 4, bias=False), budget, input_size=(4,))
    expected = (budget - 64) // 32
    assert found.batch == expected
    assert found.bytes_at_batch == 64 + 32 * expected <= budget < found.bytes_at_next == 64 + 32 * (expected + 1)


def test_cli_memory_fit_with_a_giant_budget_is_one_line():
    result = runner.invoke(app, ["memory", "resnet18", "--fit", "99999999999999999999TB"])
    assert_one_line_error(result, "the budget is larger than any batch that can be analysed needs")


def _vgg16_macs(side: int) -> int:
    """VGG-16's MACs per sample (3x3 convolutions with padding 1, 2x2 pooling, then the three
    linear layers after the 7x7 average pool)."""
    widths = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    macs, channels = 0, 3
    for width in widths:
        if width == "M":
            side //= 2
        else:
            macs += side * side * channels * width * 9
            channels = width
    return macs + 25088 * 4096 + 4096 * 4096 + 4096 * 1000


def test_the_vgg16_formula_gives_the_published_count():
    assert _vgg16_macs(224) == 15_470_264_320  # torchvision's 15.47 GMACs


def test_compare_keeps_counts_past_int64_exact():
    conv = nn.Conv2d(256, 256, 3, padding=1, bias=False)
    frame = compare([conv], input_size=(256, 16384, 16384), batch=100_000)
    macs = 100_000 * 256 * 16384 * 16384 * 256 * 9  # each output element: 256 x 3 x 3 MACs
    assert macs > INT64_MAX
    assert frame["macs"].iloc[0] == macs and frame["flops"].iloc[0] == 2 * macs
    assert frame["param_count"].dtype == "int64"  # columns that fit stay int64
    document = json.loads(comparison_json(frame))
    assert document["models"][0]["macs"] == macs


def test_cli_compare_at_a_giant_input_gives_exact_counts():
    result = runner.invoke(
        app, ["compare", "vgg16", "resnet18", "--input", "3x16384x16384", "--batch", "100000", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    vgg16 = json.loads(result.stdout)["models"][0]
    assert vgg16["macs"] == 100_000 * _vgg16_macs(16384)
    assert vgg16["flops"] == 2 * 100_000 * _vgg16_macs(16384) > INT64_MAX
    table = runner.invoke(app, ["compare", "vgg16", "resnet18", "--input", "3x16384x16384", "--batch", "100000"])
    assert table.exit_code == 0 and "Traceback" not in table.output


class _Unprintable:
    """A caller's object whose repr and str raise, as a half-built object's may."""

    def __repr__(self):
        raise RuntimeError("repr of a half-built object")

    __str__ = __repr__


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: archprof.analyze("lenet5", input_size=_Unprintable()), "input_size must be a shape"),
        (lambda: archprof.analyze("lenet5", batch=_Unprintable()), "batch must be a whole number"),
        (lambda: archprof.analyze("lenet5", dtype=_Unprintable()), "dtype must be one of"),
        (lambda: archprof.analyze("lenet5", trust_pickle=_Unprintable()), "trust_pickle must be True or False"),
        (lambda: archprof.analyze("lenet5").to_csv(_Unprintable()), "path must be a file name"),
        (lambda: archprof.analyze("lenet5").explain(_Unprintable()), "layer must be a layer's name or a row number"),
        (lambda: compare(["lenet5"], progress=_Unprintable()), "progress must be a function"),
        (lambda: fit_batch("lenet5", _Unprintable()), "the memory budget must be a whole number of bytes"),
        (lambda: archprof.profile("lenet5", device=_Unprintable()), "device must be cpu, cuda or cuda:N"),
    ],
    ids=[
        "input_size",
        "batch",
        "dtype",
        "trust_pickle",
        "to_csv's path",
        "explain's layer",
        "progress",
        "budget",
        "device",
    ],
)
def test_a_value_whose_repr_raises_is_quoted_as_python_quotes_it(call, message):
    """archprof's message, the value as a traceback shows it, where the object's RuntimeError
    took the message's place."""
    with pytest.raises(ArchprofError, match=f"{message}.*got <unprintable _Unprintable object>"):
        call()


def test_a_model_whose_repr_raises_is_quoted_as_python_quotes_it():
    with pytest.raises(
        ArchprofError, match=r"cannot analyse <unprintable _Unprintable object> \(of type _Unprintable\)"
    ):
        archprof.analyze(_Unprintable())


@pytest.mark.parametrize(
    "call",
    [
        lambda: archprof.analyze(ReadsItsValues(), input_size=(3, 8, 8)),
        lambda: compare([ReadsItsValues, "alexnet"], input_size=(3, 64, 64), jobs=1),
        lambda: fit_batch(ReadsItsValues(), 2**20, input_size=(3, 8, 8)),
    ],
    ids=["analyze", "compare", "fit_batch"],
)
def test_a_warning_names_the_callers_line_whatever_road_led_to_it(call):
    """The CPU-fallback warning was attributed to a line inside archprof (analysis.py, or a
    deeper frame through compare and fit_batch): now to the first frame outside the package."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    fallbacks = [w for w in caught if issubclass(w.category, ArchprofWarning) and "real forward" in str(w.message)]
    assert fallbacks  # one per analysis: fit_batch makes several
    assert {w.filename for w in fallbacks} == {__file__}


def test_a_shape_and_dtype_pair_is_one_input_at_the_top_as_in_a_list():
    """`inputs=((77,), torch.int64)` was refused ("cannot read inputs[1] = torch.int64")."""
    alone = archprof.analyze(nn.Embedding(100, 8), inputs=((77,), torch.int64))
    listed = archprof.analyze(nn.Embedding(100, 8), inputs=[((77,), torch.int64)])
    assert alone.input_shapes == listed.input_shapes == ((1, 77),)
    assert alone.input_dtypes == ("int64",)


def test_a_report_of_no_rows_renders_its_headings_and_totals():
    """A Report built with empty columns (no layer at all): its table and Markdown lay out the
    headings over no rows, where the widths' max() over an empty column raised TypeError."""
    from rich.console import Console

    from archprof.report import Report
    from archprof.report.columns import COLUMNS

    report = Report(model="x", input_shapes=((1, 3, 8, 8),), dtype="float32", columns={c.name: [] for c in COLUMNS})
    markdown = report.to_markdown()
    assert "| Layer | Type |" in markdown and "| Total parameters | 0 |" in markdown
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(report.table())
    assert "Total parameters" in console.export_text()


def test_an_empty_list_of_inputs_is_no_input_as_an_empty_dict_is():
    """`inputs=[]` was read as one input of shape () (a tensor of one element, with the batch):
    a Linear(1, 4) was analysed where no input was given."""
    import pytest
    from torch import nn

    class TakesNothing(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(3))

        def forward(self):
            return self.weight * 2

    for empty in ([], (), {}):
        assert archprof.analyze(TakesNothing(), inputs=empty).input_shapes == ()
    with pytest.raises(archprof.ArchprofError, match="missing 1 required positional argument"):
        archprof.analyze(nn.Linear(1, 4), inputs=[])
    assert archprof.analyze(nn.Linear(1, 4), inputs=[()]).input_shapes == ((1,),)  # one 0-d sample, batched


def test_input_size_given_the_clis_typed_text_points_to_inputs():
    """The CLI's --input '12:int64' takes a dtype; input_size= takes a shape alone, and said
    only "malformed input size", where inputs= takes the same text."""
    import pytest
    from torch import nn

    with pytest.raises(archprof.ArchprofError, match=r"give a dtype or a name with inputs= \(inputs=\['12:int64'\]\)"):
        archprof.analyze(nn.Embedding(100, 4), input_size="12:int64")
    assert archprof.analyze(nn.Embedding(100, 4), inputs=["12:int64"]).input_shapes == ((1, 12),)


@pytest.mark.parametrize(
    "call",
    [
        lambda: archprof.analyze("lenet5", batch=list(range(10**5))),
        lambda: archprof.analyze("lenet5", dtype=list(range(10**5))),
        lambda: archprof.analyze("lenet5", input_size=set(range(10**4))),
        lambda: archprof.analyze("lenet5", training=archprof.analyze("lenet5")),  # a Report's repr has 3 lines
        lambda: archprof.analyze("lenet5", training=__import__("pandas").DataFrame({"a": range(5)})),
    ],
    ids=["a long list as batch", "as dtype", "a large set as input_size", "a report as training", "a DataFrame"],
)
def test_an_error_quoting_what_was_given_is_one_short_line(call):
    """`errors.shown` gave the whole repr: 7.9 MB for a list of a million numbers, six lines
    for a DataFrame."""
    with pytest.raises(ArchprofError) as raised:
        call()
    message = str(raised.value)
    assert len(message.splitlines()) == 1 and len(message) < 300, message


def test_a_training_step_is_the_same_under_the_callers_anomaly_mode():
    """Anomaly mode checks every backward node's output for NaNs: lenet5's backward gained 24
    `_is_any_true` calls (elementwise FLOPs 7x) and its peak moved."""
    plain = archprof.analyze("lenet5", training=True)
    with torch.autograd.set_detect_anomaly(True):
        under_anomaly_mode = archprof.analyze("lenet5", training=True)
        assert torch.is_anomaly_enabled()  # the caller's mode, put back
    assert under_anomaly_mode.rows() == plain.rows()
    assert under_anomaly_mode.totals == plain.totals


def test_a_compare_column_whose_sum_passes_int64_holds_python_ints():
    """Each of two 2**62-MAC models fits in int64, their sum does not: `macs.sum()` read -2**63."""
    with torch.device("meta"):
        big = nn.Linear(2**20, 2**20, bias=False)
    frame = compare({"a": big, "b": big}, input_size=(2**20,), batch=2**22)
    assert frame["macs"].tolist() == [2**62, 2**62]
    assert frame["macs"].dtype == object and frame["macs"].sum() == 2**63


@pytest.mark.parametrize(
    "report_given, limits",
    [("lenet5", "max-params"), (None, "one limit"), (None, "a string"), (None, None)],
)
def test_evaluate_refuses_what_is_not_a_report_and_a_list_of_limits(report_given, limits):
    report = archprof.analyze("lenet5") if report_given is None else report_given
    limit = parse_limit("max-params", "30M")
    given = {"max-params": [limit], "one limit": limit, "a string": ["max-params 30M"], None: None}[limits]
    with pytest.raises(ArchprofError, match=r"^evaluate takes "):
        evaluate(report, given)


def test_numpy_whole_numbers_make_a_shape_in_inputs_as_in_input_size():
    shape = (np.int64(3), 8, np.int32(8))
    expected = archprof.analyze(nn.Conv2d(3, 4, 3), input_size=shape).input_shapes
    assert expected == ((1, 3, 8, 8),)
    for inputs in (shape, [shape], {"input": shape}, [(shape, torch.float32)]):
        assert archprof.analyze(nn.Conv2d(3, 4, 3), inputs=inputs).input_shapes == expected


@pytest.mark.parametrize("indices", [[], [99], [-1], "0", 3])
def test_merged_row_refuses_indices_that_are_not_rows(indices):
    report = archprof.analyze("lenet5")
    with pytest.raises(ArchprofError, match="row"):
        report.merged_row("features", indices)


def test_a_rollup_deeper_than_every_module_leaves_the_rows_as_they_are():
    """The model's own operations before and after a child's call are two rows of one call:
    rolled up to depth 10 they were merged into one, placed before the child's second call."""

    class OwnOpsAroundAChild(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            x = self.conv(x) + 1
            return self.conv(x) * 2

    report = archprof.analyze(OwnOpsAroundAChild(), input_size=(3, 8, 8))
    assert report.columns["layer"] == ["conv", "", "conv", ""]
    assert report.rollup(10).rows() == report.rows()
    whole = report.rollup(0)
    assert len(whole) == 1 and whole.row(0)["elementwise_flops"] == report.totals.elementwise_flops


def test_fit_batch_refuses_a_binary_flag_that_is_not_a_bool():
    with pytest.raises(ArchprofError, match=r"^binary must be True or False, got 'x' \(str\)$"):
        fit_batch("lenet5", "1GB", binary="x")


def test_a_numpy_bool_given_as_a_flag_is_named_as_numpys():
    """It was refused as "got np.True_ (bool)", naming the type as Python's own bool. NumPy 2
    names its type `bool` (then said with its module, numpy.bool) and shows np.True_; NumPy 1
    names it `bool_` and shows True."""
    kind = type(np.True_).__name__
    named = "numpy.bool" if kind == "bool" else kind
    with pytest.raises(ArchprofError, match=rf"got {re.escape(repr(np.True_))} \({re.escape(named)}\)$"):
        archprof.analyze("lenet5", training=np.True_)


def test_a_rollup_keeps_one_row_per_call_where_the_child_between_its_own_rows_joins_another():
    """Block `a` called twice: its second call's own rows (x * 2, then + 1) lie around its
    convolution's second call, which rolls up into a's first call. They split into two rows
    named 'a (call 2)' while a rollup deeper than every module was mended; one row each call."""

    class Top(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = OwnOperationsAroundAChild(), OwnOperationsAroundAChild()

        def forward(self, x):
            return self.b(self.a(x)) + self.a(x)

    report = archprof.analyze(Top(), input_size=(3, 6, 6))
    rolled = report.rollup(1)
    assert list(zip(rolled.columns["layer"], rolled.columns["call"], strict=True)) == [
        ("a", 0),
        ("b", 0),
        ("a", 1),
        ("", 0),
    ]
    assert rolled.totals.elementwise_flops == report.totals.elementwise_flops
    assert report.rollup(10).rows() == report.rows()


def test_an_error_quotes_a_string_as_it_was_given():
    """One line, a multi-line repr's whitespace collapsed, but not a string's own spaces."""
    with pytest.raises(ArchprofError, match=r"got 'x  y'"):
        archprof.analyze("lenet5", dtype="x  y")


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("own_module", [False, True])
def test_a_dropped_report_is_freed_at_once_not_left_to_the_collector(training, own_module):
    """Each tensor the trace watched held the recorder through its callback, which held the
    watches: about a thousand objects per ResNet-18 analysis (the recorder and its tables)
    lived on in a reference cycle until the collector's next pass, which then ran inside the
    caller's next call."""
    import gc

    # A module of the caller's own (its tensors on the CPU: stand-ins on meta), or a built-in.
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()) if own_module else "resnet18"
    archprof.analyze(model, input_size=(3, 64, 64), training=training)  # imports and caches warm
    gc.collect()
    gc.disable()
    try:
        report = archprof.analyze(model, input_size=(3, 64, 64), training=training)
        del report
        assert gc.collect() == 0
    finally:
        gc.enable()


STASHED: list = []


class _StashesInBackward(torch.autograd.Function):
    """A Python backward that keeps a temporary (a debugging hook, a cache)."""

    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, gradient):
        kept = gradient * 2
        STASHED.append(kept)
        return kept + 1


class _StashingNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return _StashesInBackward.apply(self.conv(x))


def test_a_tensor_a_python_backward_kept_dies_quietly_after_the_trace(monkeypatch):
    """Once the trace stopped watching, a tensor a Python backward had stashed still ran the
    recorder's callback when it died, into a table it had emptied: "Exception ignored in ...
    KeyError" on stderr, in the caller's code."""
    raised = []
    monkeypatch.setattr(sys, "unraisablehook", raised.append)
    STASHED.clear()
    archprof.analyze(_StashingNet(), input_size=(3, 8, 8), training=True)
    assert len(STASHED) == 1
    STASHED.clear()
    assert raised == []


def test_a_notebooks_slips_get_the_same_answer_or_a_one_line_error():
    """Found by a review in a notebook: `merged_row(1, [0])` raised AttributeError ('int' has
    no 'count'); `to_csv('')` said "cannot write .: it is a directory"; fit_batch refused a
    numpy integer budget, which batch= and row numbers take; `explain('')`, the name
    `Report.layers` gives the model's own row, named no layer."""
    import numpy

    report = archprof.analyze("resnet18")
    with pytest.raises(ArchprofError, match=r"^merged_row takes the module's path as a string \('layer1'\), got 1$"):
        report.merged_row(1, [0])
    for write in (report.to_csv, report.to_json, report.to_markdown):
        with pytest.raises(ArchprofError, match=r"^path is empty: give a file name"):
            write("")
    assert fit_batch("lenet5", numpy.int64(10**9)).batch == fit_batch("lenet5", 10**9).batch
    assert "" in set(report.layers["layer"])
    assert report.explain("") == report.explain("(model)")
    for layer in report.layers["layer"]:  # each name .layers gives, explained
        report.explain(layer)


def test_a_reason_of_a_number_thousands_of_digits_long_is_cut_to_a_line_a_person_reads():
    """A hostile exported program's range constraint of 4,000 digits came back in the error,
    a line of 8,000 characters: such a number is cut to its first digits and how many."""
    from archprof.errors import short_reason

    huge, kept = "1" + "0" * 4000, "9" * 40
    said = short_reason(RuntimeError(f"4 not in VR[{huge}, {kept}]"))
    assert said == f"4 not in VR[10000000…(4,001 digits), {kept}]"
