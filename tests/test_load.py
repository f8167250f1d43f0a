"""Every model spec form, every input form, the CPU fallback, and every error (one line,
exit 2). TorchScript, exported-program and pickle files are written into tmp_path here."""

import json
import pickle
import re
import struct
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import archprof
from archprof.errors import ArchprofError, ArchprofWarning
from archprof.load import InputSpec, load_model, normalize_inputs, parse_args, parse_input_spec
from tests.cli import cli, one_error_line
from tests.operator_names import OperatorNames

# torch.jit.save and torch.jit.trace warn that they are deprecated: the files are still what users have.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "tiny_models.py"


@pytest.fixture
def tiny(monkeypatch):
    """The fixtures folder importable: `tiny_models:NAME` specs work."""
    monkeypatch.syspath_prepend(str(FIXTURES))
    import tiny_models

    return tiny_models


def table(report, *columns):
    return list(zip(*(report.columns[c] for c in columns), strict=True))


# -- specs ---------------------------------------------------------------------------------


def test_builtin_names_still_load_on_meta(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lenet5").write_text("a file of the same name does not hide the built-in")
    loaded = load_model("lenet5")
    assert loaded.kind == "builtin" and loaded.input_size == (1, 32, 32)
    assert all(p.device.type == "meta" for p in loaded.module.parameters())
    with pytest.raises(ArchprofError, match=r"unknown model 'resnet5'.*closest built-in names: resnet50"):
        load_model("resnet5")


def test_module_and_file_factories_with_arguments(tiny):
    by_module = archprof.analyze("tiny_models:small_cnn", input_size=(3, 16, 16), args={"num_classes": 5})
    by_file = archprof.analyze(f"{TINY}:small_cnn", input_size=(3, 16, 16), args={"num_classes": 5})
    direct = archprof.analyze(tiny.small_cnn(num_classes=5), input_size=(3, 16, 16))
    assert by_module.totals.param_count == by_file.totals.param_count == direct.totals.param_count == 224 + 16 + 45
    assert by_module.model == "tiny_models:small_cnn"
    # A class is a factory too; keyword arguments of every kind.
    report = archprof.analyze("tiny_models:TinyNet", input_size=(3, 8, 8), args={"channels": 6, "scale": 0.5})
    assert report.totals.param_count == (3 * 9 * 6 + 6) + 2 * 6 + (6 * 2 + 2)
    # The factory ran on meta: nothing allocated.
    assert all(p.device.type == "meta" for p in load_model("tiny_models:TinyNet").module.parameters())


def test_a_model_file_imports_from_its_folder_then_the_current_directory(tmp_path, monkeypatch):
    """A file of a project, run from the project's root, imports the project's package (the
    current directory), as `python -m` would; a module of its own folder comes first."""
    project = tmp_path / "project"
    (project / "layers").mkdir(parents=True)
    (project / "layers" / "__init__.py").write_text("WIDTH = 4\n")
    (project / "models").mkdir()
    (project / "models" / "width.py").write_text("EXTRA = 2\n")  # beside the file: found before any other
    (project / "width.py").write_text("EXTRA = 100\n")
    (project / "models" / "net.py").write_text(
        "import torch\nfrom layers import WIDTH\nfrom width import EXTRA\n"
        "def net():\n    return torch.nn.Conv2d(3, WIDTH + EXTRA, 1)\n"
    )
    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(project))])
    for name in ("layers", "width"):  # imported fresh, and let go of afterwards
        monkeypatch.delitem(sys.modules, name, raising=False)
    try:
        report = archprof.analyze("models/net.py:net", input_size=(3, 8, 8))
    finally:
        for name in ("layers", "width"):
            sys.modules.pop(name, None)
    assert report.totals.param_count == 3 * 6 + 6  # WIDTH 4 from the package, EXTRA 2 from the file's folder
    assert str(project) not in sys.path  # put back


def test_a_callable_factory_and_a_module_from_python(tiny):
    assert (
        archprof.analyze(tiny.small_cnn, input_size=(3, 16, 16), args={"width": 4}).totals.param_count
        == 4 * 27 + 4 + 8 + 50
    )
    model = tiny.TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    archprof.analyze(model, input_size=(3, 8, 8))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_arg_values_are_parsed_as_python_values():
    assert parse_args(["a=10", "b=0.5", "c=true", "d=False", "e=none", "f=relu", "g='10'", "h=-3", "i=1e-3"]) == {
        "a": 10,
        "b": 0.5,
        "c": True,
        "d": False,
        "e": None,
        "f": "relu",
        "g": "10",
        "h": -3,
        "i": 0.001,
    }
    for bad in ("novalue", "=3", "1x=2"):
        with pytest.raises(ArchprofError, match="key=value"):
            parse_args([bad])


def test_torchvision_regnets_read_their_width_schedule_and_still_build_on_meta(hub_packages):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ArchprofWarning)  # not "built on the CPU"
        loaded = load_model("torchvision:regnet_y_128gf")  # 645 M parameters: 2.6 GB were it built on the CPU
    assert {t.device.type for t in (*loaded.module.parameters(), *loaded.module.buffers())} == {"meta"}
    # torchvision's published figure for regnet_y_128gf.
    assert sum(p.numel() for p in loaded.module.parameters()) == 644_812_894


def test_torchvision_and_timm_models_are_built_on_meta(hub_packages):
    loaded = load_model("torchvision:resnet18", args={"num_classes": 10})
    assert {p.device.type for p in loaded.module.parameters()} == {"meta"}
    report = archprof.analyze(loaded)
    # torchvision's published 11,689,512 with the 512 x 1000 + 1000 head replaced by 512 x 10 + 10.
    assert report.input_shapes == ((1, 3, 224, 224),)
    assert report.totals.param_count == 11_689_512 - (512 * 1000 + 1000) + (512 * 10 + 10)
    with pytest.raises(ArchprofError, match="torchvision has no model 'resnet81'; closest: resnet18"):
        load_model("torchvision:resnet81")

    # timm's default input comes from the model's pretrained_cfg (240 x 240 for efficientnet_b1).
    assert archprof.analyze("timm:efficientnet_b1").input_shapes == ((1, 3, 240, 240),)
    assert (
        archprof.analyze("timm:mobilenetv3_large_100").totals.param_count == 5_483_032
    )  # as torchvision's mobilenet_v3_large card
    with pytest.raises(ArchprofError, match="timm has no model 'vit'"):
        load_model("timm:vit")


def test_torchvision_segmentation_and_detection_builders_download_no_backbone_weights(hub_packages, monkeypatch):
    # Left to themselves they fetch ImageNet weights for the backbone (weights_backbone defaults
    # to them): a download archprof's random-weight analysis never needs, and offline a failure.
    torchvision, _ = hub_packages

    def download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", download)
    report = archprof.analyze("torchvision:lraspp_mobilenet_v3_large", input_size=(3, 64, 64))
    model = torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None)
    assert report.totals.param_count == sum(p.numel() for p in model.parameters())
    assert report.input_shapes == ((1, 3, 64, 64),)


@pytest.mark.parametrize(
    "name,args,input_size",
    [
        ("r3d_18", {}, (3, 16, 112, 112)),
        ("s3d", {}, (3, 16, 224, 224)),
        ("mvit_v2_s", {}, (3, 16, 224, 224)),
        ("lraspp_mobilenet_v3_large", {}, (3, 520, 520)),
        ("deeplabv3_mobilenet_v3_large", {"aux_loss": True}, (3, 520, 520)),  # its weights come with the aux head
        ("quantized_inception_v3", {}, (3, 299, 299)),  # built unquantized: the float model
    ],
)
def test_torchvision_video_segmentation_and_quantizable_models_default_to_the_input_torchvision_counted(
    hub_packages, name, args, input_size
):
    # torchvision's weights publish each model's parameters and GMACs ("_ops", to 3 decimals) at
    # that input: a 16-frame clip at the crop size, a segmentation image at the resize size,
    # a quantizable classifier's image as its float twin's.
    torchvision, _ = hub_packages
    published = torchvision.models.get_model_weights(name).DEFAULT.meta
    report = archprof.analyze(f"torchvision:{name}", args=args)
    assert report.input_shapes == ((1, *input_size),)
    assert report.totals.param_count == published["num_params"]
    assert round(report.totals.macs / 1e9, 3) == published["_ops"]


def test_a_torchvision_video_model_given_an_image_says_it_takes_a_clip(hub_packages):
    # Not the Conv3d's own complaint about channels (it reads a 3-D sample as an unbatched clip).
    with pytest.raises(
        ArchprofError, match=r"^input 3x224x224 has 3 dimensions; torchvision:r3d_18 takes 4 \(e\.g\. 3x16x112x112\)$"
    ):
        archprof.analyze("torchvision:r3d_18", input_size=(3, 224, 224))


@pytest.mark.parametrize("package", ["torchvision", "timm"])
def test_torchvision_and_timm_when_missing_say_what_to_install(monkeypatch, package):
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if not installed
    with pytest.raises(ArchprofError) as error:
        load_model(f"{package}:resnet50")
    assert (
        str(error.value) == f"'{package}:resnet50' needs {package}, which is not installed here: pip install {package}"
    )
    result = cli("summary", f"{package}:resnet50")
    assert result.exit_code == 2 and f"pip install {package}" in one_error_line(result)


@pytest.mark.parametrize("package", ["torchvision", "timm"])
def test_a_torchvision_built_for_another_torch_says_to_install_the_matching_one(monkeypatch, package):
    """A CUDA torchvision beside a CPU-only torch: its C++ operators fail to register as it
    imports (timm imports it too), which archprof words as what to install."""
    import importlib

    real_import = importlib.import_module

    def import_module(name, *args):
        if name == package:
            raise RuntimeError("operator torchvision::nms does not exist")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", import_module)
    with pytest.raises(ArchprofError) as error:
        load_model(f"{package}:resnet50")
    assert str(error.value) == (
        f"importing {package} for '{package}:resnet50' failed: RuntimeError: operator torchvision::nms does not exist;"
        f" torchvision's compiled operators do not load with torch {torch.__version__}: install the torchvision release"
        " built for it, from the index torch came from"
    )


def _scripted(tmp_path, tiny, how="script"):
    model = tiny.TinyNet().eval()
    scripted = torch.jit.script(model) if how == "script" else torch.jit.trace(model, torch.randn(1, 3, 8, 8))
    path = tmp_path / f"tiny_{how}.pt"
    torch.jit.save(scripted, str(path))
    return model, path


def test_torchscript_file_counts_as_the_python_model(tmp_path, tiny):
    model, path = _scripted(tmp_path, tiny)
    loaded = load_model(str(path))
    assert loaded.kind == "torchscript" and all(p.device.type == "meta" for p in loaded.module.parameters())
    report = archprof.analyze(str(path), input_size=(3, 8, 8), batch=2)
    python = archprof.analyze(model, input_size=(3, 8, 8), batch=2)
    assert report.traced_on == "meta"
    for name in ("param_count", "macs", "flops", "param_bytes", "buffer_bytes"):
        assert getattr(report.totals, name) == getattr(python.totals, name), name
    # No Python hooks in TorchScript: ops that read a module's parameters are that module's
    # row (type from the original class); the rest are the model's own ("").
    rows = table(report, "layer", "module_type", "output_shape", "param_count")
    assert ("conv", "Conv2d", "2x4x6x6", 112) in rows
    assert ("bn", "BatchNorm2d", "2x4x6x6", 8) in rows
    assert ("fc", "Linear", "2x2", 10) in rows
    assert any(layer == "" and module_type == "TinyNet" for layer, module_type, _, _ in rows)
    assert "relu" in {op for layer, ops in table(report, "layer", "operators") if layer == "" for op in ops}


def test_a_frozen_torchscript_file_is_refused_in_one_line(tmp_path, tiny):
    """torch.jit.freeze folds the weights into the code as constants: the module has no
    parameters left (torch's own count), so its report would say 0 and pass any budget."""
    frozen = torch.jit.freeze(torch.jit.script(tiny.TinyNet().eval()))
    assert sum(p.numel() for p in frozen.parameters()) == 0
    path = tmp_path / "frozen.pt"
    torch.jit.save(frozen, str(path))
    result = cli("summary", str(path), "--input", "3x8x8")
    assert result.exit_code == 2 and "frozen TorchScript module" in one_error_line(result)


# The subprocess below: its memory's high-water mark (VmHWM) reset to what it holds now
# (clear_refs 5) before each step, so each peak is that step's own, over what it began with.
_PEAKS_OF_A_TORCHSCRIPT_LOAD = """
import sys, torch
from archprof.load import load_model

def mib(key):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith(key + ":"))

def step(run):
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    start = mib("VmRSS")
    kept = run()
    return kept, mib("VmHWM") - start, mib("VmRSS") - start

loaded, meta_peak, meta_kept = step(lambda: load_model(sys.argv[1]))
built, build_peak, _ = step(lambda: loaded.build(torch.device("cpu")))
print(meta_peak, meta_kept, build_peak)
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="reads Linux's /proc/self/status")
def test_a_torchscript_file_loads_onto_meta_reading_it_about_once(tmp_path):
    """A 64 MiB TorchScript file loaded on meta: torch reads each tensor before it moves it
    there (one file's worth), nothing more; afterwards nothing of the file stays held; and
    building it on the CPU costs its weights, once. The oracle: the process's peak resident
    memory (the kernel's, which sees torch's allocations). Before, the archive was held as
    bytes and handed to torch as a buffer, which torch copied twice: about 4x the file on
    meta, 1x kept for good, and 3x more than the weights to build."""
    import subprocess

    path = tmp_path / "linear.pt"
    torch.jit.save(torch.jit.script(nn.Linear(4096, 4096, bias=False)), str(path))
    file_mib = path.stat().st_size / 2**20
    weights_mib = 4096 * 4096 * 4 / 2**20
    done = subprocess.run(
        [sys.executable, "-c", _PEAKS_OF_A_TORCHSCRIPT_LOAD, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, done.stderr
    meta_peak, meta_kept, build_peak = map(float, done.stdout.split())
    assert meta_peak < 1.5 * file_mib, f"loading on meta peaked at {meta_peak:.0f} MiB"
    assert meta_kept < 0.25 * file_mib, f"{meta_kept:.0f} MiB stayed held after loading on meta"
    assert weights_mib <= build_peak < 1.5 * weights_mib, f"building on the CPU peaked at {build_peak:.0f} MiB"


@pytest.mark.parametrize("freeze", [torch.jit.freeze, torch.jit.optimize_for_inference])
def test_a_frozen_torchscript_module_given_is_refused(tiny, freeze):
    frozen = freeze(torch.jit.script(tiny.TinyNet().eval()))
    assert sum(p.numel() for p in frozen.parameters()) == 0
    for given in (frozen, lambda: frozen):  # a module, and a factory that returns one
        with pytest.raises(ArchprofError, match="frozen TorchScript module"):
            archprof.analyze(given, input_size=(3, 8, 8))


class _Block(nn.Module):
    """A residual block: its ReLU called twice, from two lines; the addition its own."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.act = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()

    def forward(self, x):
        return self.act(x + self.conv2(self.act(self.conv1(x))) * 0.5)


class _Residual(nn.Module):
    """Functional operators of the model's own between its calls, blocks in a ModuleList."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.blocks, self.fc = nn.Conv2d(3, 4, 3), nn.ModuleList([_Block(), _Block()]), nn.Linear(4, 5)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        for block in self.blocks:
            x = block(x)
        return self.fc(x.mean((2, 3))).softmax(-1)


class _CalledInALoop(nn.Module):
    """One module called three times from one line."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        for _ in range(3):
            x = self.conv(x)
        return x


class _Scales(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.conv(x)

    @torch.jit.export
    def doubled(self, x):
        return self.conv(x) * 2


class _CallsAMethod(nn.Module):
    """A submodule's method other than forward is no call its hooks see: its multiplication
    is the caller's operator, its convolution a call of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.scales = _Scales()

    def forward(self, x):
        return self.scales.doubled(x).relu()


def _nested_sequential():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Sequential(nn.Conv2d(8, 8, 3), nn.ReLU()))


def _classifier_with_dropout():
    """A Dropout in eval runs no operator the recorder sees: its call has a row all the same."""
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Dropout(0.5), nn.Linear(4 * 14 * 14, 3))


def _resnet18():
    import torchvision  # imported for real by the test's `hub_packages`

    return torchvision.models.resnet18(num_classes=10)


_ROW_COLUMNS = ("layer", "call", "module_type", "output_shape", "param_count", "macs", "activation_bytes")


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize(
    "make",
    [_nested_sequential, _Residual, _CalledInALoop, _CallsAMethod, _classifier_with_dropout, _resnet18, "small_cnn"],
)
def test_torchscript_rows_are_the_python_models_module_calls(tmp_path, tiny, hub_packages, make, training):
    """A ScriptModule runs no hooks: each operator goes to the innermost module call its
    TorchScript call stack names, so the rows are the Python model's own, row by row (its
    report through the hooks, the oracle), the ReLUs and the residual additions included.
    Before, every operator that read no parameter was a row of the model itself."""
    model = (getattr(tiny, make)() if isinstance(make, str) else make()).eval()
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    size = (3, 16, 16) if make != _resnet18 else (3, 32, 32)
    scripted = archprof.analyze(str(path), input_size=size, batch=2, training=training)
    python = archprof.analyze(model, input_size=size, batch=2, training=training)
    assert scripted.traced_on == python.traced_on == "meta"
    assert table(scripted, *_ROW_COLUMNS) == table(python, *_ROW_COLUMNS)
    assert scripted.totals.param_count == sum(p.numel() for p in model.parameters())
    assert scripted.totals.activation_bytes == python.totals.activation_bytes


def test_torchscript_rows_of_a_model_with_its_own_operators(tmp_path):
    """The rows of `_Residual` written out: the model's own ReLU between the stem and the
    blocks, each block's addition its own row between its ReLU's two calls (MACs by hand: a
    3x3 convolution of 4 to 4 channels over 8x8 is 4*4*9*64)."""
    path = tmp_path / "residual.pt"
    torch.jit.save(torch.jit.script(_Residual().eval()), str(path))
    rows = table(archprof.analyze(str(path), input_size=(3, 10, 10)), "layer", "call", "module_type", "macs")
    block = [("conv1", 0, "Conv2d", 9216), ("act", 0, "ReLU", 0), ("conv2", 0, "Conv2d", 9216)]
    block += [("", 0, "_Block", 0), ("act", 1, "ReLU", 0)]
    assert rows == [
        ("stem", 0, "Conv2d", 3 * 4 * 9 * 64),
        ("", 0, "_Residual", 0),
        *[
            (f"blocks.{i}" + (f".{layer}" if layer else ""), call, kind, macs)
            for i in (0, 1)
            for layer, call, kind, macs in block
        ],
        ("", 0, "_Residual", 0),
        ("fc", 0, "Linear", 20),
        ("", 0, "_Residual", 0),
    ]


def test_torchscript_under_a_profiler_of_the_callers_keeps_its_rows_by_parameters(tmp_path, tiny):
    """With a profiler of the caller's running, archprof leaves it alone and reads no stack:
    an operator goes to the module whose parameters it reads, the others to the model."""
    path = tmp_path / "cnn.pt"
    torch.jit.save(torch.jit.script(tiny.small_cnn().eval()), str(path))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
        scripted = archprof.analyze(str(path), input_size=(3, 16, 16))
    rows = table(scripted, "layer", "module_type")
    assert rows[:3] == [("0", "Conv2d"), ("1", "BatchNorm2d"), ("", "Sequential")]  # ReLU: the model's own op


def test_torchscript_with_a_torch_lacking_the_profiler_api_keeps_its_rows_by_parameters(tmp_path, tiny, monkeypatch):
    """A torch whose private profiler API archprof reads stacks with is missing (it imports
    it guarded): the same rows as under a caller's profiler, no error."""
    from archprof.tracing import script_stacks

    monkeypatch.setattr(script_stacks, "_RecordFunctionFast", None)
    path = tmp_path / "cnn.pt"
    torch.jit.save(torch.jit.script(tiny.small_cnn().eval()), str(path))
    scripted = archprof.analyze(str(path), input_size=(3, 16, 16))
    rows = table(scripted, "layer", "module_type")
    assert rows[:3] == [("0", "Conv2d"), ("1", "BatchNorm2d"), ("", "Sequential")]
    assert scripted.totals.param_count == sum(p.numel() for p in tiny.small_cnn().parameters())


def _rows_of_both(tmp_path, model, training=False, **inputs):
    """The rows of `model` and of its TorchScript file: layer, call, type, MACs, activation bytes."""
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(model.eval()), str(path))
    columns = ("layer", "call", "module_type", "macs", "activation_bytes")
    scripted = archprof.analyze(str(path), batch=2, training=training, **inputs)
    python = archprof.analyze(model, batch=2, training=training, **inputs)
    assert scripted.totals.activation_bytes == python.totals.activation_bytes
    return table(scripted, *columns), table(python, *columns)


@pytest.mark.parametrize("training", [False, True])
def test_torchscript_of_a_module_called_twice_in_a_row_gives_its_two_calls(tmp_path, training):
    """Both calls read the same weight: one call each, not one row of twice the MACs."""
    conv, linear = nn.Conv2d(4, 4, 3, padding=1), nn.Linear(8, 8)
    scripted, python = _rows_of_both(tmp_path, nn.Sequential(conv, conv), training, input_size=(4, 8, 8))
    assert scripted == python == [("0", 0, "Conv2d", 18432, 2048), ("0", 1, "Conv2d", 18432, 2048)]
    scripted, python = _rows_of_both(tmp_path, nn.Sequential(linear, linear), training, input_size=(8,))
    assert scripted == python == [("0", 0, "Linear", 128, 64), ("0", 1, "Linear", 128, 64)]


def test_a_torchscript_batch_norm_in_training_is_one_call(tmp_path):
    """In training it counts its batch (num_batches_tracked.add_) before it normalises: one
    call, not that count's 8 bytes as a call of its own."""
    bn = nn.BatchNorm2d(4)
    scripted, python = _rows_of_both(tmp_path, nn.Sequential(nn.Conv2d(3, 4, 3), bn), True, input_size=(3, 8, 8))
    assert scripted == python == [("0", 0, "Conv2d", 7776, 1152), ("1", 0, "BatchNorm2d", 0, 1152)]
    scripted, python = _rows_of_both(tmp_path, nn.Sequential(nn.Conv2d(3, 4, 3), bn, bn), True, input_size=(3, 8, 8))
    assert scripted == python
    assert [row[:3] for row in scripted][1:] == [("1", 0, "BatchNorm2d"), ("1", 1, "BatchNorm2d")]


def test_torchscript_of_tied_weights_gives_each_holder_its_call(tmp_path):
    """A Linear head sharing an Embedding's table: the lookup is the Embedding's, the product
    (through the transposed table, and the linear layer's reshapes) the Linear's."""
    embedding, head = nn.Embedding(50, 8), nn.Linear(8, 50, bias=False)
    head.weight = embedding.weight
    scripted, python = _rows_of_both(tmp_path, nn.Sequential(embedding, head), inputs=["5:int64"])
    assert scripted == python == [("0", 0, "Embedding", 0, 320), ("1", 0, "Linear", 4000, 2000)]


@pytest.mark.parametrize("training", [False, True])
def test_a_torchscript_modules_copy_on_meta_is_saved_without_its_weights(monkeypatch, training):
    """The copy traced on meta (saved and loaded again, for its call stacks) needs no weights'
    values: the archive written holds none (a 512x512 table tied to a head: under its 1 MiB,
    where writing and reading back real weights took four times their size), yet its rows,
    its parameters counted once and its trainable ones are the Python model's (the oracle),
    and the caller's module holds its own real tensors again afterwards."""
    embedding, head = nn.Embedding(512, 512), nn.Linear(512, 512, bias=False)
    head.weight = embedding.weight
    model = nn.Sequential(embedding, head).eval()
    scripted = torch.jit.script(model)
    held = list(scripted.parameters())
    archives = []

    def save(module, buffer, *args, **kwargs):
        real_save(module, buffer, *args, **kwargs)
        archives.append(buffer.tell())

    real_save = torch.jit.save
    monkeypatch.setattr(torch.jit, "save", save)
    report = archprof.analyze(scripted, inputs=["5:int64"], training=training)
    python = archprof.analyze(model, inputs=["5:int64"], training=training)
    assert report.traced_on == "meta"
    assert archives and max(archives) < 512 * 512 * 4
    columns = ("layer", "call", "module_type", "macs", "activation_bytes")
    assert table(report, *columns) == table(python, *columns)
    assert report.totals.param_count == report.totals.trainable_param_count == 512 * 512
    assert all(now is before and not now.is_meta for now, before in zip(scripted.parameters(), held, strict=True))


class _SkipBlock(nn.Module):
    """A block whose forward, with no branch or loop, calls a module that runs no operator
    (`nn.Identity`) between its operators, and one after its last, each on a line of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.skip, self.act, self.tail = (
            nn.Conv2d(4, 4, 3, padding=1),
            nn.Identity(),
            nn.ReLU(),
            nn.Identity(),
        )

    def forward(self, x):
        y = self.conv(x)
        y = self.skip(y)
        y = self.act(y) + x
        return self.tail(y)


class _NestedSkips(_SkipBlock):
    """`_SkipBlock` written with its calls nested, as timm's blocks write
    `x + self.drop_path(self.ls(self.attn(x)))`: each line makes several calls, two of
    them silent ones in the order they run (not the order they are written in)."""

    def forward(self, x):
        y = self.tail(self.skip(self.conv(x)))
        return self.tail(self.act(self.skip(y)) + x)


class _SkipsInABranch(nn.Module):
    """An Identity called in the taken branch of an `if` on an attribute (TorchScript keeps
    the branch), between two operators of that branch's, as torchvision's MBConv calls its
    StochasticDepth; another in the branch not taken."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.skip, self.other, self.residual = (
            nn.Conv2d(4, 4, 3, padding=1),
            nn.Identity(),
            nn.Identity(),
            True,
        )

    def forward(self, x):
        y = self.conv(x)
        if self.residual:
            y = y * 2
            y = self.skip(y)
            y = y + x
        else:
            y = self.other(y)
        return y.relu()


class _SkipsIfLarge(nn.Module):
    """An Identity called under a branch not taken: Python's hooks see no call of it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.skip = nn.Conv2d(4, 4, 3, padding=1), nn.Identity()

    def forward(self, x):
        x = self.conv(x)
        if x.shape[-1] > 100:
            x = self.skip(x)
        return x.relu()


class _SkipsIfAsked(nn.Module):
    """An Identity alone in a branch on a bool attribute, as timm's blocks call their
    `drop_path` (`if self.has_skip:`), another in the other branch: no operator shows
    which branch ran, the attribute does."""

    gamma: torch.Tensor | None

    def __init__(self, asked: bool = True) -> None:
        super().__init__()
        self.conv, self.skip, self.other = nn.Conv2d(4, 4, 3, padding=1), nn.Identity(), nn.Identity()
        self.asked = asked
        self.gamma = torch.ones(1) if asked else None

    def forward(self, x):
        x = self.conv(x)
        x = self.skip(x) if self.asked else self.other(x)  # TorchScript's code: an `if` statement
        return x.relu()


class _SkipsInEval(_SkipsIfAsked):
    """`if not self.training:`, which TorchScript writes `torch.__not__(training)`."""

    def forward(self, x):
        x = self.conv(x)
        if not self.training:
            x = self.skip(x)
        return x.relu()


class _SkipsIfScaled(_SkipsIfAsked):
    """`if self.gamma is not None:` (an optional tensor), `torch.__isnot__(gamma, None)`."""

    def forward(self, x):
        x = self.conv(x)
        if self.gamma is not None:
            x = self.skip(x)
        return x.relu()


class _SkipsAroundALoop(nn.Module):
    """A forward with a loop of its own, which calls the Identities before and after it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.skip, self.tail = nn.Conv2d(4, 4, 3, padding=1), nn.Identity(), nn.Identity()

    def forward(self, x):
        x = self.skip(x)
        for _ in range(2):
            x = self.conv(x)
        return self.tail(x.relu())


class _ModuleListLoop(nn.Module):
    """`for layer in self.layers: x = layer(x)`: TorchScript unrolls it, one line a layer."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Conv2d(4, 4, 3, padding=1), nn.Identity(), nn.ReLU(), nn.Identity()])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.Sequential(nn.Conv2d(4, 4, 3), nn.Identity(), nn.ReLU(), nn.Identity(), nn.Identity()),
        lambda: nn.Sequential(nn.Identity(), nn.Conv2d(4, 4, 3)),  # before every op: the model's input
        lambda: nn.Sequential(_SkipBlock(), nn.Identity(), _SkipBlock()),
        _SkipsInABranch,
        _NestedSkips,
        _SkipsIfLarge,
        lambda: nn.Sequential(_SkipsIfAsked(True), _SkipsIfAsked(False), _SkipsIfAsked(True)),  # one class
        lambda: nn.Sequential(_SkipsInEval(True), _SkipsIfScaled(True), _SkipsIfScaled(False)),
        _SkipsAroundALoop,
        _ModuleListLoop,
    ],
)
def test_torchscript_calls_that_run_no_operator_have_their_rows(tmp_path, make, training):
    """No stack shows a call of a module that runs no operator (nn.Identity): outside a
    loop, its statement surely ran between those of the ops before and after it (in a
    branch an op of which ran, or whose condition reads only bool attributes of the module,
    each instance its own), and it returns what the op before it made, as Python's hooks
    see (the oracle). Before, the Identity rows were missing (also those in a branch on an
    attribute, and those before or after a loop of the forward's); one under a branch not
    taken stays absent, as in Python."""
    scripted, python = _rows_of_both(tmp_path, make(), training, input_size=(4, 6, 6))
    assert scripted == python


class _SkipsIfWide(_SkipsIfAsked):
    """An Identity alone in a branch on the data's size: the value is read at run time."""

    def forward(self, x):
        x = self.conv(x)
        if x.shape[-1] > 2:
            x = self.skip(x)
        return x.relu()


class _SkipsInALoop(_SkipsIfAsked):
    """An Identity in a loop of the forward's own, not a ModuleList's (which is unrolled)."""

    def forward(self, x):
        for _ in range(2):
            x = self.conv(x)
            x = self.skip(x)
        return x.relu()


class _SkipsAndToggles(_SkipsIfAsked):
    """A branch on an attribute its forward assigns: as read after the forward, it says the
    other branch."""

    def forward(self, x):
        x = self.conv(x)
        x = self.skip(x) if self.asked else self.other(x)
        self.asked = not self.asked
        return x.relu()


@pytest.mark.parametrize(
    ("make", "found"),
    [
        (_SkipsIfWide, []),
        (_SkipsInALoop, []),
        (_SkipsAndToggles, []),
        (lambda: nn.Sequential(_SkipsAroundALoop(), _SkipsIfWide()), ["0.skip", "0.tail"]),
    ],
)
def test_torchscript_calls_that_run_no_operator_where_the_code_cannot_say_have_no_row(tmp_path, make, found):
    """Where no stack and no attribute says whether (or how often) an Identity ran (a
    branch on the data; a loop of the forward's own, which its events' frames do not tell
    one round from the next in; an attribute the forward assigns), it has no row, rather
    than a guessed one: the rows are the Python model's (the oracle) less its Identity
    calls but those `found`."""
    model, path = make().eval(), tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    columns = ("layer", "call", "module_type", "macs", "activation_bytes")
    scripted = table(archprof.analyze(str(path), input_size=(4, 6, 6)), *columns)
    python = table(archprof.analyze(model, input_size=(4, 6, 6)), *columns)
    assert scripted == [row for row in python if row[2] != "Identity" or row[0] in found]


def test_torchscript_of_torchvisions_quantized_resnet_has_its_identity_rows(tmp_path, hub_packages):
    """torch.ao's fusion leaves each folded batch norm and ReLU an nn.Identity, and its
    FloatFunctional's observer one: every one of them is a row, as in the Python model's report."""
    import torchvision  # imported for real by the test's `hub_packages`

    model = torchvision.models.quantization.resnet18(quantize=False).eval()
    model.fuse_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        model.qconfig = torch.ao.quantization.get_default_qconfig()
        prepared = torch.ao.quantization.prepare(model)
        prepared(torch.randn(1, 3, 32, 32))
        quantized = torch.ao.quantization.convert(prepared)
    path = tmp_path / "quantized.pt"
    torch.jit.save(torch.jit.script(quantized), str(path))
    columns = ("layer", "call", "module_type", "output_shape", "activation_bytes")
    scripted = table(archprof.analyze(str(path), input_size=(3, 32, 32)), *columns)
    python = table(archprof.analyze(quantized, input_size=(3, 32, 32)), *columns)
    identities = [path for path, module in quantized.named_modules() if isinstance(module, nn.Identity)]
    assert sorted(row[0] for row in python if row[2] == "Identity") == sorted(identities)
    assert scripted == python


def test_torchscript_traced_module_and_training(tmp_path, tiny):
    model, path = _scripted(tmp_path, tiny, how="trace")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ArchprofWarning)  # a traced constant may send it to the CPU
        report = archprof.analyze(str(path), input_size=(3, 8, 8))
        training = archprof.analyze(str(path), input_size=(3, 8, 8), training=True)
    assert report.totals.macs == archprof.analyze(model, input_size=(3, 8, 8)).totals.macs
    assert training.totals.training_memory_bytes > 0


def test_a_traced_modules_number_read_back_before_its_forward_is_a_model_row_of_zeros(tmp_path, tiny):
    """torch.jit.trace keeps TinyNet's `* self.scale` as a float64 tensor constant, which
    TorchScript's optimizer reads back as a number (aten._local_scalar_dense, the op a real
    CPU forward of the traced module runs first under a dispatch mode) before the forward's
    first operator: a real op of the model's own that costs nothing, so a first model row of
    zeros ahead of the Python model's rows (the oracle), documented rather than hidden."""
    model, path = _scripted(tmp_path, tiny, how="trace")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ArchprofWarning)  # the constant sends it to the CPU
        scripted = archprof.analyze(str(path), input_size=(3, 8, 8))
    python = archprof.analyze(model, input_size=(3, 8, 8))
    columns = ("layer", "call", "module_type", "macs", "flops", "activation_bytes")
    assert table(scripted, *columns) == [("", 0, "TinyNet", 0, 0, 0), *table(python, *columns)]
    x, loaded = torch.randn(1, 3, 8, 8), torch.jit.load(str(path))
    with OperatorNames() as ran:  # its first call, as archprof's: later ones run an optimized plan
        loaded(x)
    assert ran.ops[:2] == [("aten._local_scalar_dense", ()), ("aten._convolution", ((1, 4, 6, 6),))]
    assert scripted.graph.ops[0].op == "aten._local_scalar_dense" and scripted.graph.ops[0].outputs == ()


class _ReadsAValue(torch.nn.Module):
    """A forward that reads a value (a branch on a sum), which no meta tensor has."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 2)

    def forward(self, x):
        y = self.conv(x)
        if bool(y.sum() > -1e30):
            y = y * 2
        return self.fc(y.mean((2, 3)))


class _PicksByAConstant(torch.nn.Module):
    """torch.jit.trace keeps the index tensor as a constant, which needs its data."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 4)

    def forward(self, x):
        return self.fc(x.flatten(2).mean(2)[:, torch.tensor([0, 2, 1])])


@pytest.mark.parametrize(
    ("make", "how"), [(_ReadsAValue, "script"), (_ReadsAValue, "trace"), (_PicksByAConstant, "trace")]
)
def test_a_torchscript_file_that_needs_data_is_traced_on_the_cpu(tmp_path, make, how):
    """As the Python model is (README): the interpreter hands the meta device's refusal on as
    a bare RuntimeError, which read as the model's own failure, without a reason."""
    model, x = make().eval(), torch.randn(2, 3, 8, 8)
    scripted = torch.jit.script(model) if how == "script" else torch.jit.trace(model, x, check_trace=False)
    path = tmp_path / f"{how}.pt"
    torch.jit.save(scripted, str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ArchprofWarning)
        report = archprof.analyze(str(path), input_size=(3, 8, 8), batch=2)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    assert report.traced_on == "cpu"
    assert report.totals.param_count == sum(p.numel() for p in model.parameters())
    assert report.totals.macs == counter.get_total_flops() // 2


class _NormsAndReadsAValue(_ReadsAValue):
    """`_ReadsAValue` with a batch norm, whose statistics a training step writes."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.bn(self.conv(x))
        if bool(y.sum() > -1e30):
            y = y * 2
        return self.fc(y.mean((2, 3)))


@pytest.mark.parametrize("training", [False, True])
def test_a_torchscript_file_traced_on_the_cpu_holds_its_weights_once(tmp_path, monkeypatch, training):
    """The copy a real trace runs (saved and loaded again, for its call stacks) runs on the
    weights of the module archprof loaded, not a second set of them: each of its parameters'
    and buffers' storages is one of that module's (data_ptr, the oracle). Before, the copy
    held its own, twice the weights in memory during the forward."""
    import archprof.tracing.trace as trace_module

    model = _NormsAndReadsAValue()
    path = tmp_path / "reads.pt"
    torch.jit.save(torch.jit.script(model.eval()), str(path))
    copies = []

    def saved_and_loaded(module, device, **options):
        copied, code = real_saved_and_loaded(module, device, **options)
        copies.append((module, copied))
        return copied, code

    real_saved_and_loaded = trace_module.saved_and_loaded
    monkeypatch.setattr(trace_module, "saved_and_loaded", saved_and_loaded)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ArchprofWarning)
        report = archprof.analyze(str(path), input_size=(3, 8, 8), batch=2, training=training)
    assert report.traced_on == "cpu"
    python = archprof.analyze(model, input_size=(3, 8, 8), batch=2, training=training)
    columns = ("layer", "call", "macs", "activation_bytes")
    assert table(report, *columns) == table(python, *columns)
    original, copied = copies[-1]
    storages = {t.untyped_storage().data_ptr() for t in (*original.parameters(), *original.buffers())}
    assert {t.untyped_storage().data_ptr() for t in (*copied.parameters(), *copied.buffers())} <= storages
    assert len(list(copied.parameters())) == 6 and len(list(copied.buffers())) == 3


def test_a_torchscript_forward_that_fails_says_why(tmp_path):
    path = tmp_path / "cnn.pt"
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())), str(path))
    result = cli("summary", str(path), "--input", "5x16x16")
    assert result.exit_code == 2
    assert one_error_line(result).endswith("the weight 8x3x3x3 (groups=1) expects 3 input channels, got 5")


def test_an_exported_program_in_memory_is_analysed_as_its_file_is(tmp_path, tiny):
    """It is callable, and was taken for a factory: "model factory 'ExportedProgram' failed"."""
    model = tiny.TinyNet().eval()
    program = torch.export.export(model, (torch.randn(2, 3, 8, 8),))
    weights_before = {name: tensor.clone() for name, tensor in program.state_dict.items()}
    path = tmp_path / "tiny.pt2"
    torch.export.save(program, str(path))
    in_memory, from_file = archprof.analyze(program), archprof.analyze(str(path))
    assert in_memory.input_shapes == from_file.input_shapes == ((2, 3, 8, 8),)
    assert table(in_memory, "layer", "module_type", "macs") == table(from_file, "layer", "module_type", "macs")
    assert in_memory.totals.param_count == sum(p.numel() for p in model.parameters())
    assert all(torch.equal(weights_before[name], tensor) for name, tensor in program.state_dict.items())
    with pytest.raises(ArchprofError, match=re.escape("an exported program you pass ('ExportedProgram') takes none")):
        archprof.analyze(program, args={"num_classes": 3})


def test_hub_arguments_that_download_pretrained_weights_are_refused(hub_packages):
    """The README promises nothing is downloaded: torchvision's weights= fetched 45 MB (and,
    offline, failed after a wait), timm's pretrained=True the same from its hub."""
    for spec, args in (
        ("torchvision:resnet18", {"weights": "IMAGENET1K_V1"}),
        ("torchvision:fcn_resnet50", {"weights_backbone": "IMAGENET1K_V1"}),
        ("timm:resnet18", {"pretrained": True}),
    ):
        asked = next(iter(args))
        with pytest.raises(ArchprofError, match=f"^{asked}= would download {spec}'s pretrained weights"):
            load_model(spec, args=args)
    # Left at their "none" values they download nothing, as by default.
    assert load_model("torchvision:resnet18", args={"weights": None}).kind == "hub"
    assert load_model("timm:resnet18", args={"pretrained": False}).kind == "hub"


def test_exported_program_with_its_example_inputs(tmp_path, tiny):
    model = tiny.TinyNet().eval()
    path = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(2, 3, 8, 8),)), str(path))
    report = archprof.analyze(str(path))  # input and batch from the program
    python = archprof.analyze(model, input_size=(3, 8, 8), batch=2)
    assert report.input_shapes == ((2, 3, 8, 8),) and report.traced_on == "meta"
    assert report.totals.macs == python.totals.macs and report.totals.param_count == python.totals.param_count
    assert table(report, "layer", "module_type")[:2] == [("conv", "Conv2d"), ("bn", "BatchNorm2d")]
    assert report.totals.not_counted == {}
    with pytest.raises(ArchprofError, match=r"exported for input 1 of shape 2x3x8x8.*cannot be analysed at 1x3x8x8"):
        archprof.analyze(str(path), batch=1)
    # Another dtype casts the input in the model's own dtype with the parameters, as for a module.
    half = archprof.analyze(str(path), dtype="float16")
    assert half.input_dtypes == ("float16",) and half.totals.param_bytes == python.totals.param_bytes // 2
    assert (
        half.totals.activation_bytes
        == archprof.analyze(model, (3, 8, 8), batch=2, dtype="float16").totals.activation_bytes
    )


class _TwoKeywords(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wide, self.narrow = nn.Linear(7, 4), nn.Linear(3, 4)

    def forward(self, wide, narrow):
        return self.wide(wide) + self.narrow(narrow)


def test_an_exported_program_takes_its_keyword_inputs_in_any_order(tmp_path):
    """As the Python module does (the oracle): a keyword input is matched by its name."""
    model = _TwoKeywords().eval()
    program = torch.export.export(model, (), {"wide": torch.randn(2, 7), "narrow": torch.randn(2, 3)})
    torch.export.save(program, str(tmp_path / "two.pt2"))
    python = archprof.analyze(model, inputs={"narrow": "3", "wide": "7"}, batch=2).totals.macs
    assert (
        archprof.analyze(str(tmp_path / "two.pt2"), inputs={"narrow": "3", "wide": "7"}, batch=2).totals.macs == python
    )


class _TwoSizes(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(10, 4), nn.Linear(7, 4)

    def forward(self, a, b):
        return self.first(a).sum() + self.second(b).sum()


def test_a_batch_no_input_takes_is_refused(tmp_path):
    """Inputs of an exported program that share no first size are each taken whole: a batch
    asked for would have been ignored, the figures those of the program's own shapes."""
    program = torch.export.export(_TwoSizes().eval(), (torch.randn(2, 10), torch.randn(5, 7)))
    torch.export.save(program, str(tmp_path / "sizes.pt2"))
    assert archprof.analyze(str(tmp_path / "sizes.pt2")).input_shapes == ((2, 10), (5, 7))
    with pytest.raises(ArchprofError, match="batch 4 applies to no input of"):
        archprof.analyze(str(tmp_path / "sizes.pt2"), batch=4)


def test_exported_program_with_two_inputs_dynamic_batch_and_keywords(tmp_path, tiny):
    batch = torch.export.Dim("batch")
    two = tmp_path / "two.pt2"
    example = (torch.randn(2, 3, 8, 8), torch.randn(2, 10))
    torch.export.save(torch.export.export(tiny.TwoInputs(), example, dynamic_shapes=({0: batch}, {0: batch})), str(two))
    report = archprof.analyze(str(two), batch=5)
    assert report.input_shapes == ((5, 3, 8, 8), (5, 10))
    assert report.totals.macs == archprof.analyze(tiny.TwoInputs(), inputs=[(3, 8, 8), (10,)], batch=5).totals.macs

    tokens = tmp_path / "tokens.pt2"
    ids, mask = torch.zeros(2, 7, dtype=torch.long), torch.ones(2, 7, dtype=torch.bool)
    torch.export.save(torch.export.export(tiny.TokenModel(), (ids,), {"mask": mask}), str(tokens))
    loaded = load_model(str(tokens))
    assert loaded.inputs == (InputSpec((7,), torch.int64), InputSpec((7,), torch.bool, "mask"))
    assert archprof.analyze(loaded).dtype == "float32"


# -- inputs --------------------------------------------------------------------------------


def test_input_forms():
    assert normalize_inputs((3, 8, 8)) == (InputSpec((3, 8, 8)),)
    assert normalize_inputs("77:int64") == (InputSpec((77,), torch.int64),)
    assert normalize_inputs([(3, 8, 8), "10"]) == (InputSpec((3, 8, 8)), InputSpec((10,)))
    assert normalize_inputs({"ids": ((7,), torch.int64), "mask": "7:bool"}) == (
        InputSpec((7,), torch.int64, "ids"),
        InputSpec((7,), torch.bool, "mask"),
    )
    # Keyword inputs go after the positional ones.
    assert normalize_inputs([InputSpec((4,), name="b"), (2,)]) == (InputSpec((2,)), InputSpec((4,), name="b"))
    assert parse_input_spec("mask=77:bool") == InputSpec((77,), torch.bool, "mask")
    assert str(parse_input_spec(" mask = 3x4 : float16 ")) == "mask=3x4:float16"
    for bad, message in (
        ("3x", "malformed input"),
        ("77:int65", "unknown input dtype 'int65'"),
        ("77:", "nothing after ':'"),
        ("1x=3", "malformed input"),
    ):
        with pytest.raises(ArchprofError, match=message):
            parse_input_spec(bad)
    with pytest.raises(ArchprofError, match="given twice"):
        normalize_inputs([InputSpec((1,), name="a"), InputSpec((2,), name="a")])
    with pytest.raises(ArchprofError, match="cannot read inputs"):
        normalize_inputs(3)
    for shape in (5, None, 2.0):
        with pytest.raises(ArchprofError, match=rf"input shape must be a sequence of sizes.*, got {shape}"):
            InputSpec(shape)


def test_input_size_as_the_cli_writes_it():
    as_text = archprof.analyze("edge_conv", input_size="1x36x36", batch=2)
    as_tuple = archprof.analyze("edge_conv", input_size=(1, 36, 36), batch=2)
    assert as_text.input_shapes == ((2, 1, 36, 36),)
    assert as_text.totals == as_tuple.totals
    for bad, message in ((36, "must be a shape such as"), ("1x0x36", "at least 1"), ("36 by 36", "malformed input")):
        with pytest.raises(ArchprofError, match=message):
            archprof.analyze("edge_conv", input_size=bad)


def test_two_inputs_and_keyword_inputs(tiny):
    report = archprof.analyze(tiny.TwoInputs(), inputs=[(3, 8, 8), (10,)], batch=2)
    assert report.input_shapes == ((2, 3, 8, 8), (2, 10))
    assert report.totals.macs == 2 * (4 * 27 * 36 + 10 * 4 + 8 * 2)
    by_keyword = archprof.analyze(tiny.TwoInputs(), inputs={"image": (3, 8, 8), "features": (10,)}, batch=2)
    assert by_keyword.totals.macs == report.totals.macs
    with pytest.raises(ArchprofError, match="not both"):
        archprof.analyze(tiny.TwoInputs(), input_size=(3, 8, 8), inputs=[(10,)])


def test_token_ids_through_an_embedding_are_a_free_lookup(tiny):
    report = archprof.analyze("tiny_models:token_model", inputs=["77:int64"], args={"vocab": 50}, batch=4)
    assert report.input_shapes == ((4, 77),) and report.dtype == "float32"
    rows = dict(table(report, "layer", "macs"))
    assert rows["embed"] == 0 and rows["fc"] == 4 * 16 * 3
    assert report.totals.param_count == 50 * 16 + 16 * 3 + 3
    assert report.totals.not_counted == {}
    with_mask = archprof.analyze(tiny.TokenModel(), inputs={"ids": "77:int64", "mask": "77:bool"})
    assert with_mask.input_shapes == ((1, 77), (1, 77))


def test_cli_repeated_inputs_dtypes_and_args(tiny, tmp_path):
    result = cli("summary", f"{TINY}:TwoInputs", "--input", "3x8x8", "--input", "10", "--batch", "2", "-f", "csv")
    assert result.exit_code == 0, result.output
    result = cli(
        "summary", f"{TINY}:token_model", "-i", "ids=9:int64", "-i", "mask=9:bool", "--arg", "dim=8", "-f", "json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["totals"]["input_shapes"] == [[1, 9], [1, 9]]
    result = cli("summary", f"{TINY}:small_cnn", "-i", "3x16x16", "--arg", "num_classes=3", "--arg", "batch_norm=false")
    assert result.exit_code == 0 and "BatchNorm2d" not in result.stdout


# -- the CPU fallback ----------------------------------------------------------------------


def test_data_dependent_forward_falls_back_to_a_real_cpu_forward(tiny):
    fell_back = r"real forward on cpu instead.*cannot run on the meta device \(Tensor.item\(\)"
    with pytest.warns(ArchprofWarning, match=fell_back):
        report = archprof.analyze("tiny_models:data_dependent", input_size=(4,), batch=3)
    assert report.traced_on == "cpu" and report.to_json().count('"traced_on": "cpu"') == 1
    assert report.rollup(0).traced_on == "cpu"
    rows = dict(table(report, "layer", "macs"))
    assert rows["fc"] == rows["other"] == 3 * 16 and report.totals.param_count == 40
    assert report.input_shapes == ((3, 4),)
    assert archprof.analyze("lenet5").traced_on == "meta"


def test_fallback_runs_a_callers_module_without_changing_it(tiny):
    model = tiny.DataDependent()
    bn_model = nn.Sequential(nn.BatchNorm1d(4), tiny.DataDependent())
    for module in (model, bn_model):
        before = {k: v.clone() for k, v in module.state_dict().items()}
        for training in (True, False):
            with pytest.warns(ArchprofWarning, match="its own weights"):
                archprof.analyze(module, input_size=(4,), batch=2, training=training)
        assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
        assert module.training
    # Shapes from real tensors: the same rows as on meta for a model that runs on both.
    with pytest.warns(ArchprofWarning, match="torch.nonzero"):
        masked = archprof.analyze(tiny.MaskedMean(), input_size=(4,), batch=3)
    assert masked.traced_on == "cpu" and dict(table(masked, "layer", "output_shape"))["fc"] == "3x4"


def test_fallback_equals_the_meta_trace_where_both_run(tiny):
    from archprof.analysis import build_report
    from archprof.tracing.trace import trace

    model = tiny.TinyNet().eval()
    meta = archprof.analyze(model, input_size=(3, 8, 8), batch=2)
    real = build_report(trace(model, [(2, 3, 8, 8)], real=True), meta.model)
    # Live bytes aside: in eval, the CPU batch-norm kernel returns empty saved statistics
    # where the meta kernel returns one value per channel (32 bytes here, transient).
    transient = {"live_bytes", "peak_live_bytes"}
    assert {k: v for k, v in real.columns.items() if k not in transient} == {
        k: v for k, v in meta.columns.items() if k not in transient
    }


def test_fallback_that_cannot_run_on_the_cpu_either_is_one_error(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ArchprofWarning)  # no warning before the error
        with pytest.raises(ArchprofError) as error:
            archprof.analyze("tiny_models:impossible", input_size=(4,))
    assert "cannot run on the meta device" in str(error.value) and "this model needs CUDA" in str(error.value)
    result = cli("summary", f"{TINY}:impossible", "--input", "4")
    assert result.exit_code == 2 and "nor on cpu" in one_error_line(result)


def test_cli_prints_the_fallback_warning_once_on_stderr():
    result = cli("summary", f"{TINY}:data_dependent", "--input", "4", "--format", "csv")
    assert result.exit_code == 0, result.output
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "real forward on cpu" in warned[0]
    assert "warning" not in result.stdout


def test_a_factory_that_reads_values_it_computes_gets_its_weights_on_meta(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ArchprofWarning)  # nothing to say: the weights are on meta
        loaded = load_model("tiny_models:built_with_data")
        report = archprof.analyze(loaded, input_size=(4,))
    assert all(p.is_meta for p in loaded.module.parameters())
    assert report.totals.param_count == (4 * 4 + 4) + (4 * 8 + 8) and report.traced_on == "meta"


def test_a_factory_that_reads_its_own_weights_is_built_on_the_cpu(tiny):
    torch.manual_seed(0)
    expected = torch.rand(3)  # what a seeded script draws next
    torch.manual_seed(0)
    with pytest.warns(ArchprofWarning, match="cannot be built on the meta device"):
        report = archprof.analyze("tiny_models:reads_its_weights", input_size=(4,))
    assert report.totals.param_count == (4 * 4 + 4) + (4 * 8 + 8) and report.traced_on == "meta"
    assert torch.equal(torch.rand(3), expected)  # its random weights came from a fork of the generator


# -- weights and pickles -------------------------------------------------------------------


class _Payload:
    """Unpickling this calls _touch: a stand-in for code a malicious file would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (_touch, (self.marker,))


def _touch(path):
    Path(path).write_text("ran")


def test_weights_are_loaded_checked_and_exposed(tmp_path, tiny):
    weights = tmp_path / "small.pt"
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in tiny.small_cnn(num_classes=5).state_dict().items()}}, weights
    )
    loaded = load_model("tiny_models:small_cnn", args={"num_classes": 5}, weights=weights)
    assert set(loaded.state_dict) == set(tiny.small_cnn(num_classes=5).state_dict())
    real = loaded.materialize()
    assert all(torch.equal(real.state_dict()[k], v) for k, v in loaded.state_dict.items())
    report = archprof.analyze("tiny_models:small_cnn", input_size=(3, 16, 16), args={"num_classes": 5}, weights=weights)
    assert report.totals.param_count == 224 + 16 + 45
    with pytest.raises(ArchprofError, match=r"do not fit model.*0.weight is 8x3x3x3 in the file, 4x3x3x3"):
        load_model("tiny_models:small_cnn", args={"num_classes": 5, "width": 4}, weights=weights)
    result = cli("summary", "lenet5", "--weights", weights)
    assert result.exit_code == 2 and "do not fit model 'lenet5': missing" in one_error_line(result)


def test_weights_that_fit_but_do_not_load_say_which_tensor_and_why(tmp_path, tiny):
    """torch's load_state_dict error starts with a line that only says it failed: the reason
    is on the lines after it, one per tensor."""
    state = tiny.small_cnn(num_classes=5).state_dict()
    sparse, no_data = tmp_path / "sparse.pt", tmp_path / "meta.pt"
    torch.save({**state, "5.weight": state["5.weight"].to_sparse()}, sparse)
    torch.save({name: tensor.to("meta") for name, tensor in state.items()}, no_data)
    for weights, reason in ((sparse, "5.weight: copy_.. between dense and sparse"), (no_data, "0.weight: Cannot copy")):
        loaded = load_model("tiny_models:small_cnn", args={"num_classes": 5}, weights=weights)
        with pytest.raises(ArchprofError, match=rf"loading the weights into 'tiny_models:small_cnn' failed: {reason}"):
            loaded.materialize()


def test_sparse_weights_are_read_on_meta_where_torch_checks_their_indices(tmp_path, tiny):
    """torch.load checks the indices of each sparse tensor it rebuilds (weights-only from
    PyTorch 2.14, or wherever the check is switched on, as here): on meta there are none to
    check, and the analysis reads the file; the real load checks them."""
    state = tiny.small_cnn(num_classes=5).state_dict()
    weights = tmp_path / "sparse.pt"
    torch.save({**state, "5.weight": state["5.weight"].to_sparse()}, weights)
    with torch.sparse.check_sparse_tensor_invariants():
        loaded = load_model("tiny_models:small_cnn", args={"num_classes": 5}, weights=weights)
        assert loaded.state_dict["5.weight"].layout == torch.sparse_coo
        with pytest.raises(ArchprofError, match=r"5\.weight: copy_.. between dense and sparse"):
            loaded.materialize()


def test_safetensors_weights_are_read_from_their_header_and_checked(tmp_path, tiny):
    """The analysis reads names, shapes and dtypes (on meta: no data); the real model gets the values."""
    safetensors_torch = pytest.importorskip("safetensors.torch")
    weights = tmp_path / "small.safetensors"
    original = tiny.small_cnn(num_classes=5).state_dict()
    safetensors_torch.save_file(original, weights)
    loaded = load_model("tiny_models:small_cnn", args={"num_classes": 5}, weights=weights)
    assert {k: (tuple(v.shape), v.dtype) for k, v in loaded.state_dict.items()} == {
        k: (tuple(v.shape), v.dtype) for k, v in original.items()
    }
    real = loaded.materialize()
    assert all(torch.equal(real.state_dict()[k], v) for k, v in original.items())
    with pytest.raises(ArchprofError, match=r"do not fit model.*0.weight is 8x3x3x3 in the file, 4x3x3x3"):
        load_model("tiny_models:small_cnn", args={"num_classes": 5, "width": 4}, weights=weights)
    result = cli(
        "summary", "tiny_models:small_cnn", "--weights", weights, "--input", "3x16x16", "--arg", "num_classes=5"
    )
    assert result.exit_code == 0, result.output


def test_a_pickle_that_needs_code_is_refused_unless_trusted(tmp_path, tiny):
    marker = tmp_path / "ran.txt"
    evil = tmp_path / "evil.pt"
    torch.save({"weight": _Payload(marker)}, evil)
    for spec, kwargs in ((str(evil), {}), ("tiny_models:small_cnn", {"weights": evil})):
        with pytest.raises(ArchprofError, match=r"refusing to unpickle .*evil.pt.*run code.*--trust-pickle"):
            load_model(spec, **kwargs)
    assert not marker.exists()
    result = cli("summary", "tiny_models:small_cnn", "--weights", evil, "--input", "3x16x16")
    assert result.exit_code == 2 and "trust_pickle=True" in one_error_line(result)

    whole = tmp_path / "whole.pt"
    torch.save(tiny.small_cnn(), whole)
    with pytest.raises(ArchprofError, match="refusing to unpickle"):
        load_model(str(whole))
    report = archprof.analyze(str(whole), input_size=(3, 16, 16), trust_pickle=True)
    assert report.totals.param_count == 224 + 16 + 90
    state = tmp_path / "state.pt"
    torch.save(tiny.small_cnn().state_dict(), state)
    with pytest.raises(ArchprofError, match=r"holds weights .* not a model: .*--weights"):
        load_model(str(state))


def test_an_exported_program_whose_pickles_need_code_is_refused(tmp_path, tiny):
    path, tampered = tmp_path / "tiny.pt2", tmp_path / "tampered.pt2"
    torch.export.save(torch.export.export(tiny.TinyNet(), (torch.randn(2, 3, 8, 8),)), str(path))
    marker = tmp_path / "ran.txt"
    payload = tmp_path / "payload.pt"
    torch.save((_Payload(marker), {}), payload)
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(tampered, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            target.writestr(item, payload.read_bytes() if "sample_inputs" in item.filename else data)
    with pytest.raises(ArchprofError, match=r"refusing to load .*sample inputs would run code.*--trust-pickle"):
        load_model(str(tampered))
    assert not marker.exists()


# -- errors --------------------------------------------------------------------------------


def _truncated(tmp_path, tiny):
    _, scripted = _scripted(tmp_path, tiny)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(scripted.read_bytes()[: scripted.stat().st_size // 2])
    return cut


@pytest.mark.parametrize(
    ("spec", "extra", "message"),
    [
        ("missing.pt", [], "file missing.pt does not exist"),
        ("models/missing.py:net", [], "file models/missing.py does not exist"),
        ("folder.py:net", [], "folder.py is not a file (model 'folder.py:net')"),
        ("model.onnx", [], "cannot load 'model.onnx' (suffix '.onnx')"),
        ("weights.safetensors", [], "holds weights, not an architecture"),
        (f"{TINY}", [], "is a Python file: name the factory in it"),
        (f"{TINY}:nope", [], "has no 'nope'"),
        (f"{TINY}:broken", ["-i", "4"], "model factory '"),
        (f"{TINY}:NOT_A_FACTORY", ["-i", "4"], "is a int, not a factory"),
        (f"{TINY}:returns_int", ["-i", "4"], "returned int, not a torch.nn.Module"),
        (f"{TINY}:small_cnn", ["-i", "3x16x16", "--arg", "depth=3"], "unexpected keyword argument 'depth'"),
        # the CLI's option first, as every hint that names both is worded (it led with the Python keyword)
        (f"{TINY}:small_cnn", [], "has no default input size: give one, e.g. --input 3x224x224 (Python: input_size="),
        ("no_such_module_xyz:net", [], "cannot import 'no_such_module_xyz'"),
        ("lenet5", ["--arg", "x"], "malformed --arg 'x'"),
        ("lenet5", ["--input", "3x"], "malformed input size '3x'"),
        ("lenet5", ["--input", "1x32x32:int65"], "unknown input dtype"),
        ("lenet5", ["--weights", "nothere.pt"], "weights file nothere.pt does not exist"),
        ("garbage.pt", [], "cannot read garbage.pt: not a file PyTorch writes (torch.save, torch.jit.save"),
        ("cut.pt", [], "corrupted or truncated"),
        ("cut.pt2", [], "corrupted or truncated"),
        ("empty.pt", [], "cannot read empty.pt: the file is empty"),
    ],
)
def test_every_bad_spec_is_one_line_and_exit_2(tmp_path, monkeypatch, tiny, spec, extra, message):
    (tmp_path / "garbage.pt").write_bytes(b"not a model" * 10)
    (tmp_path / "empty.pt").write_bytes(b"")
    _truncated(tmp_path, tiny)
    full = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(tiny.TinyNet(), (torch.randn(2, 3, 8, 8),)), str(full))
    (tmp_path / "cut.pt2").write_bytes(full.read_bytes()[:-200])
    (tmp_path / "weights.safetensors").write_bytes(b"")
    (tmp_path / "folder.py").mkdir()
    monkeypatch.chdir(tmp_path)
    result = cli("summary", spec, *extra)
    assert result.exit_code == 2, result.output
    assert message in one_error_line(result)


def _damaged_zip_headers(tmp_path, tiny) -> dict[str, Path]:
    """A TorchScript archive with one field of its zip directory changed: the version needed
    to extract (23.5, which zipfile does not read), the number of disks (2, which it refuses)."""
    _, scripted = _scripted(tmp_path, tiny)
    data = scripted.read_bytes()
    version = bytearray(data)
    version[version.find(b"PK\x01\x02") + 6] = 235
    disks = bytearray(data)
    struct.pack_into("<I", disks, disks.rfind(b"PK\x06\x07") + 16, 2)
    files = {"version": tmp_path / "version.pt", "disks": tmp_path / "disks.pt"}
    files["version"].write_bytes(bytes(version))
    files["disks"].write_bytes(bytes(disks))
    return files


@pytest.mark.parametrize("damage", ["version", "disks"])
@pytest.mark.parametrize("use", ["model", "weights", "diff"])
def test_a_zip_with_a_directory_zipfile_cannot_read_is_one_line_and_exit_2(tmp_path, monkeypatch, tiny, damage, use):
    """zipfile raised NotImplementedError ("zip file version 23.5") and, from is_zipfile's own
    read, BadZipFile ("zipfiles that span multiple disks"): tracebacks, exit 1."""
    path = _damaged_zip_headers(tmp_path, tiny)[damage]
    monkeypatch.chdir(tmp_path)
    args = {"model": ["summary", path.name], "weights": ["summary", "lenet5", "--weights", path.name]}
    args["diff"] = ["diff", path.name, "lenet5"]
    result = cli(*args[use])
    assert result.exit_code == 2, result.output
    reason = {"version": "zip file version 23.5", "disks": "zipfiles that span multiple disks are not supported"}
    assert f"cannot read {path.name}: corrupted or truncated ({reason[damage]})" in one_error_line(result)


def test_an_exported_program_torch_cannot_deserialise_is_named_by_the_error_torch_logged(tmp_path, tiny, capfd):
    """torch.export.load logs the error as a traceback and raises "Please check the warnings
    above": the error line is the reason given, and the log, silenced, is not written."""
    path = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(tiny.TinyNet(), (torch.randn(2, 3, 8, 8),)), str(path))
    data = bytearray(path.read_bytes())
    struct.pack_into("<H", data, data.find(b"PK\x01\x02") + 8, 1)  # the first member's flags: encrypted
    path.write_bytes(bytes(data))
    with pytest.raises(ArchprofError) as error:
        load_model(str(path))
    expected = f"cannot read {path}: corrupted or truncated? (RuntimeError: PytorchStreamReader"
    assert str(error.value).startswith(expected)
    assert "warnings above" not in str(error.value)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("option", [[], ["lenet5", "--weights"]])
def test_a_file_torch_cannot_unpickle_is_named_by_the_unpicklers_reason(tmp_path, monkeypatch, option):
    """torch.load(weights_only=True) words its refusal of a garbage file as advice to load it
    with weights_only=False (which would run the file's code); the error gives the
    unpickler's own reason instead, the one torch puts after "WeightsUnpickler error"."""
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x02" + b"not a model" * 10)  # a pickle's protocol opcode, then garbage
    with pytest.raises(pickle.UnpicklingError) as refused:
        torch.load(garbage, weights_only=True)
    reason = str(refused.value).split("WeightsUnpickler error:")[1].strip().splitlines()[0]
    monkeypatch.chdir(tmp_path)
    result = cli("summary", *option, "garbage.pt") if option else cli("summary", "garbage.pt")
    assert result.exit_code == 2, result.output
    line = one_error_line(result)
    assert line == f"error: cannot read garbage.pt: corrupted or truncated? ({reason})"
    assert "weights_only" not in line


@pytest.mark.parametrize("protocol", [4, 5])  # 3's opcodes it reads: its refusal names the import (exec)
@pytest.mark.parametrize("option", [[], ["lenet5", "--weights"]])
def test_a_pickle_of_a_protocol_torch_cannot_read_safely_says_so_and_runs_nothing(
    tmp_path, monkeypatch, option, protocol
):
    """pickle.dump's default (4, 5): torch's weights-only reader stopped at its first opcode
    ("corrupted or truncated? (Unsupported operand 149)"); a hostile one still runs nothing."""
    written = tmp_path / "written"
    hostile = f"open({str(written)!r}, 'w').write('ran')"
    (tmp_path / "plain.pt").write_bytes(pickle.dumps({"a": _Runs(hostile)}, protocol=protocol))
    monkeypatch.chdir(tmp_path)
    result = cli("summary", *option, "plain.pt") if option else cli("summary", "plain.pt")
    assert result.exit_code == 2, result.output
    assert one_error_line(result) == (
        f"error: cannot read plain.pt: a pickle of protocol {protocol}, which torch's weights-only reader does not"
        " read (torch.save writes a zip archive, its legacy format a protocol-2 pickle)"
    )
    assert not written.exists()


class _Runs:
    """Unpickled, runs `code` (exec): what a hostile pickle does."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


@pytest.mark.parametrize("option", [[], ["lenet5", "--weights"]])
@pytest.mark.parametrize("name", ["notes.pt", "notes.pt2", "notes.pth"])
def test_a_text_file_named_as_a_checkpoint_is_said_not_to_be_one(tmp_path, monkeypatch, option, name):
    """torch.load's legacy reader takes a text file's first letter for a key ("KeyError: 101"
    of "echo hello > model.pt"): the error says what the file is not, instead."""
    (tmp_path / name).write_text("hello\n")
    with pytest.raises(KeyError):  # torch's own words for it
        torch.load(tmp_path / name, weights_only=True)
    monkeypatch.chdir(tmp_path)
    result = cli("summary", *option, name)
    assert result.exit_code == 2, result.output
    assert one_error_line(result) == (
        f"error: cannot read {name}: not a file PyTorch writes (torch.save, torch.jit.save and torch.export.save"
        " write a zip archive, older torch.save a pickle)"
    )


def test_load_errors_from_python_are_archprof_errors(tiny):
    with pytest.raises(ArchprofError, match=r"model factory 'tiny_models:broken' failed: ValueError: no weights here"):
        load_model("tiny_models:broken")
    with pytest.raises(ArchprofError, match="args and weights apply when a model is loaded"):
        archprof.analyze(load_model("lenet5"), args={"a": 1})
    with pytest.raises(ArchprofError, match="--arg/args apply to a factory"):
        load_model(nn.Linear(2, 2), args={"a": 1})
    with pytest.raises(ArchprofError, match=r"cannot analyse 3 \(of type int\)"):
        load_model(3)


def test_initialisers_on_meta_are_skipped_and_other_updates_still_checked(hub_packages):
    """On meta, initialisers' fills and their in-place arithmetic by numbers (timm's
    trunc_normal_: uniform_, erfinv_, mul_, add_, clamp_) are skipped: they never touch the
    meta kernels (a counting dispatch mode sees none). An update by another tensor still
    runs, and is refused where the shapes do not fit, as on any device."""
    from timm.layers import trunc_normal_

    from archprof.meta import on_meta

    with on_meta():
        weight = torch.empty(64, 32)
        with OperatorNames() as count:
            trunc_normal_(weight, std=0.02)
            weight.mul_(2.0).add_(1.0).clamp_(min=-1.0, max=1.0)
        assert count.names == [] and weight.shape == (64, 32) and weight.is_meta
        with pytest.raises(RuntimeError):
            weight.mul_(torch.empty(3, 3))


def test_torch_initialisers_hand_meta_tensors_straight_back_while_building():
    """While a model is built on meta, torch.nn.init's functions return a meta tensor before
    doing anything: no torch call reaches a mode (not even `no_grad`'s, nor reading
    `is_meta`). A CPU tensor is still initialised, and the functions are torch's own again
    afterwards."""
    from archprof.meta import on_meta, weights_on_meta

    class Count(torch.overrides.TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.seen.append(func)
            return func(*args, **(kwargs or {}))

    originals = {name: getattr(nn.init, name) for name in ("zeros_", "kaiming_uniform_", "trunc_normal_")}
    for building in (on_meta, weights_on_meta):
        with building():
            weight = torch.empty(8, 4, device="meta")
            with Count() as count:
                assert nn.init.kaiming_uniform_(weight, a=5**0.5) is weight
                assert nn.init.zeros_(tensor=weight) is weight
                assert nn.init.trunc_normal_(weight, std=0.02) is weight
            assert count.seen == []
            real = torch.nn.init.ones_(torch.zeros(3, device="cpu"))
            assert real.tolist() == [1.0, 1.0, 1.0]
        assert {name: getattr(nn.init, name) for name in originals} == originals


def _conv_bn_relu() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())


WRAPPERS = {
    "DataParallel": nn.DataParallel,
    "torch.compile": torch.compile,
    "compiled DataParallel": lambda inner: torch.compile(nn.DataParallel(inner)),
}


@pytest.mark.parametrize("given", ["module", "factory"])
@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_a_wrapped_model_is_analysed_as_the_network_inside(given, wrapper):
    """A model wrapped for training on several devices (nn.DataParallel) or by torch.compile
    is the network it holds: the stateless call of the trace refuses DataParallel, a call of
    the compiled one would compile, and its rows would all be named "module...." or
    "_orig_mod....". The oracle: the same network given unwrapped."""
    inner = _conv_bn_relu()
    wrapped = WRAPPERS[wrapper](inner)
    report = archprof.analyze(wrapped if given == "module" else (lambda: wrapped), input_size=(3, 16, 16))
    plain = archprof.analyze(inner, input_size=(3, 16, 16))
    assert report.totals.param_count == sum(p.numel() for p in wrapped.parameters()) == 240
    assert report.rows() == plain.rows()


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_a_checkpoint_saved_from_a_wrapped_model_fits_the_network(wrapper, tmp_path):
    wrapped = WRAPPERS[wrapper](_conv_bn_relu())
    torch.save(wrapped.state_dict(), tmp_path / "wrapped.pt")
    assert any(name.startswith(("module.", "_orig_mod.")) for name in wrapped.state_dict())  # as saved
    report = archprof.analyze(_conv_bn_relu, input_size=(3, 16, 16), weights=tmp_path / "wrapped.pt")
    assert report.totals.param_count == 240


class _HoldsAModule(nn.Module):
    """A model whose one child is called `module`: its own names start with 'module.'."""

    def __init__(self) -> None:
        super().__init__()
        self.module = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.module(x)


def test_a_checkpoint_named_as_the_model_is_read_as_it_is(tmp_path):
    """Its 'module.' is the model's own, not DataParallel's: torch's own load_state_dict (the
    oracle) takes the file as it is, and so does --weights."""
    model = _HoldsAModule()
    torch.save(model.state_dict(), tmp_path / "own.pt")
    _HoldsAModule().load_state_dict(torch.load(tmp_path / "own.pt"))
    report = archprof.analyze(_HoldsAModule, input_size=(3, 8, 8), weights=tmp_path / "own.pt")
    assert report.totals.param_count == sum(p.numel() for p in model.parameters())


def test_a_torchscript_submodule_is_traced_and_left_as_it_was():
    """A scripted layer inside a Python model: its parameter table is TorchScript's own (no
    clear()), which the trace must still put back as it found it."""
    conv = torch.jit.script(nn.Conv2d(3, 8, 3))
    model = nn.Sequential(conv, nn.ReLU())
    held = dict(model.state_dict(keep_vars=True))
    report = archprof.analyze(model, input_size=(3, 16, 16))
    assert report.traced_on == "meta"
    assert report.totals.param_count == 8 * 3 * 3 * 3 + 8
    assert report.totals.macs == 8 * 14 * 14 * 3 * 3 * 3  # C_out H_out W_out C_in K K
    after = model.state_dict(keep_vars=True)
    assert after.keys() == held.keys() and all(after[name] is tensor for name, tensor in held.items())
    assert all(not t.is_meta for t in after.values())


def test_a_path_object_is_a_model_file_everywhere(tmp_path, monkeypatch):
    """A pathlib.Path was refused ('cannot analyse PosixPath(...)') by analyze, compare and
    diff, whose docstrings take paths; it names a file, never a built-in model."""
    from pathlib import Path

    from archprof.diff import diff

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(model.eval()), str(path))
    report = archprof.analyze(path, input_size=(3, 8, 8))
    assert report.totals.param_count == sum(p.numel() for p in model.parameters())
    assert report.model == str(path)
    frame = archprof.compare([path, str(path)], input_size=(3, 8, 8))
    assert list(frame["param_count"]) == [4 * 3 * 9 + 4] * 2
    csv_path = tmp_path / "net.csv"
    csv_path.write_text(report.to_csv())
    same = diff(csv_path, path, input_size=(3, 8, 8))  # a CSV report against a model file
    assert same.layers == [] and all(t.change == 0 for t in same.totals)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ArchprofError, match="cannot load 'vgg16' \\(no suffix\\)"):
        archprof.analyze(Path("vgg16"))


def test_an_empty_weights_file_is_said_to_hold_an_empty_dict(tmp_path, monkeypatch):
    torch.save({}, tmp_path / "empty_state.pt")
    monkeypatch.chdir(tmp_path)
    result = cli("summary", "lenet5", "--weights", "empty_state.pt")
    assert result.exit_code == 2
    assert one_error_line(result) == "error: empty_state.pt holds no state dict (name -> tensor) but an empty dict"


def test_a_dtypes_name_alone_among_the_inputs_says_where_a_dtype_goes():
    """inputs=((77,), "int64") is two inputs, the second the text 'int64': the error said only
    'malformed input size'; now it says where a dtype goes. A torch.dtype in the pair works."""
    with pytest.raises(ArchprofError, match=r"a dtype goes after its shape, '77:int64', or as a torch.dtype in a pair"):
        archprof.analyze("tests/fixtures/tiny_models.py:token_model", inputs=((77,), "int64"))
    report = archprof.analyze("tests/fixtures/tiny_models.py:token_model", inputs=((77,), torch.int64))
    assert report.input_dtypes == ("int64",)
