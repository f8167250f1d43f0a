"""Issue 12, in load.py: files are data (an exported program never runs code from the file
without --trust-pickle, however its archive is laid out), user code that exits becomes one
error, names and sizes beyond what the system or torch can hold are refused in a line, and
--weights are checked without allocating what a checkpoint claims. Hostile files are built
in tmp_path from real ones."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import archprof
from archprof.errors import ArchprofError
from archprof.load import InputSpec, load_model, parse_input_size, parse_input_spec
from tests.cli import cli, one_error_line
from tests.fixtures.hostile_archives import HOSTILE_ARCHIVES, declaring_without_data, exported, rewritten

# -- exported programs ---------------------------------------------------------------------


@pytest.mark.parametrize("craft", HOSTILE_ARCHIVES, ids=list(HOSTILE_ARCHIVES))
def test_an_exported_program_never_runs_code_from_the_file(tmp_path, craft):
    make, what = HOSTILE_ARCHIVES[craft]
    marker = tmp_path / "payload_ran"
    path = make(tmp_path, marker)
    with pytest.raises(ArchprofError, match=r"refusing to load .* its ") as raised:
        archprof.analyze(str(path))
    message = str(raised.value)
    assert what in message and "--trust-pickle" in message and "\n" not in message
    result = cli("summary", path)
    assert result.exit_code == 2
    line = one_error_line(result)
    assert what in line and "--trust-pickle" in line
    assert not marker.exists()


def test_the_hostile_archives_are_what_torch_loads(tmp_path):
    """Each crafted pickle payload runs when torch.export.load reads the archive as it is:
    the refusals above are not about files torch would reject anyway."""
    for index, craft in enumerate(HOSTILE_ARCHIVES):
        if "pickle" not in HOSTILE_ARCHIVES[craft][1]:
            continue
        marker = tmp_path / f"ran_{index}"
        path = HOSTILE_ARCHIVES[craft][0](tmp_path, marker)
        with contextlib.suppress(Exception):  # after the payload, torch fails in its own ways
            torch.export.load(str(path))
        assert marker.exists(), craft


def test_an_exported_tensor_declared_without_its_data_is_refused_before_torch_makes_it(tmp_path):
    """An empty entry for a weight declared 1 GiB (float32): torch.export.load fills that
    many zeros, from a file of 10 kB (a 2 GiB one took it 4.5 GB and 45 s)."""
    path = declaring_without_data(tmp_path, 2**28)
    assert path.stat().st_size < 20_000
    lines, peak_kib = _cli_and_its_peak("summary", path)
    says = f"cannot read {path}: its tensor 'conv.weight' declares 268,435,456 elements but its entry"
    assert lines == [f"error: {says} 'data/weights/weight_0' is empty"]
    assert peak_kib < 700 * 1024  # torch and archprof take about 250 MB; the claim is 1024 MB
    with pytest.raises(ArchprofError, match="declares 268,435,456 elements"):
        archprof.analyze(str(path), trust_pickle=True)  # not code: trusting the file does not change it


def test_an_empty_exported_tensor_still_loads(tmp_path):
    class Empty(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("none", torch.zeros(0))
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x) + self.none.sum()

    path = tmp_path / "empty.pt2"
    torch.export.save(torch.export.export(Empty(), (torch.randn(2, 3, 8, 8),)), str(path))
    assert archprof.analyze(str(path)).totals.param_count == 4 * 3 * 3 * 3 + 4


def test_a_clean_exported_program_loads_whatever_the_environment_says(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)
    for path in (exported(tmp_path), exported(tmp_path, dynamic=True)):
        report = archprof.analyze(str(path))
        assert report.totals.param_count == 4 * 3 * 3 * 3 + 4
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


# -- user code that exits ------------------------------------------------------------------


EXITS = {
    "sys.exit(0)": ("import sys\nsys.exit(0)\n", "SystemExit: 0"),
    "sys.exit(3)": ("import sys\nsys.exit(3)\n", "SystemExit: 3"),
    "SystemExit('usage...')": ("raise SystemExit('usage: train.py [-h]')\n", "SystemExit: usage: train.py [-h]"),
    "argparse": (
        "import argparse\nargparse.ArgumentParser().parse_args(['--lr'])\n",
        "SystemExit: 2 (it printed: ",
    ),
}


def test_a_warnings_echo_of_its_source_line_is_not_what_the_code_printed():
    from archprof.load.specs import _printed_lines

    text = (
        "loading weights\n"
        "/x/torch/nn/init.py:412: UserWarning: Initializing zero-element tensors is a no-op\n"
        "  return func(*args, **kwargs)\n"
    )
    assert _printed_lines(text) == [
        "loading weights",
        "/x/torch/nn/init.py:412: UserWarning: Initializing zero-element tensors is a no-op",
    ]


@pytest.mark.parametrize("exit_kind", EXITS, ids=list(EXITS))
def test_a_module_that_exits_while_imported_is_one_error(tmp_path, monkeypatch, exit_kind):
    body, says = EXITS[exit_kind]
    (tmp_path / "exits_on_import.py").write_text(body + "def net():\n    pass\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for spec, failure in (
        ("exits_on_import.py:net", "importing exits_on_import.py for model 'exits_on_import.py:net' failed: "),
        ("exits_on_import:net", "importing 'exits_on_import' for model 'exits_on_import:net' failed: "),
    ):
        with pytest.raises(ArchprofError) as raised:
            archprof.analyze(spec, (3, 8, 8))
        assert str(raised.value).startswith(failure + says)
        sys.modules.pop("exits_on_import", None)
        result = cli("summary", spec, "-i", "3x8x8")
        assert result.exit_code == 2 and one_error_line(result).startswith("error: " + failure + says)
        sys.modules.pop("exits_on_import", None)


def test_a_factory_that_exits_is_one_error_on_meta_on_the_cpu_and_when_rebuilt(tmp_path):
    (tmp_path / "exits.py").write_text(
        "import sys\nimport torch\nfrom torch import nn\n\n"
        "def now(code=3):\n    sys.exit(code)\n\n"
        "def off_meta():\n"  # .item() cannot run on meta: archprof builds it on the CPU, where it exits
        "    torch.zeros(1).item()\n    sys.exit(4)\n\n"
        "def on_rebuild():\n"
        "    if torch.empty(1).device.type != 'meta':\n        raise SystemExit('not twice')\n"
        "    return nn.Conv2d(3, 4, 3)\n"
    )
    spec = f"{tmp_path / 'exits.py'}"
    with pytest.raises(ArchprofError, match=r"^model factory '.*exits.py:now' failed: SystemExit: 3$"):
        load_model(f"{spec}:now")
    with pytest.raises(ArchprofError, match=r"^model factory '.*exits.py:now' failed: SystemExit: 0$"):
        load_model(f"{spec}:now", args={"code": 0})
    with pytest.raises(ArchprofError, match=r"^model factory '.*exits.py:off_meta' failed: SystemExit: 4$"):
        load_model(f"{spec}:off_meta")
    loaded = load_model(f"{spec}:on_rebuild")
    with pytest.raises(ArchprofError, match=r"^model factory '.*exits.py:on_rebuild' failed on cpu: SystemExit: not"):
        loaded.materialize()
    result = cli("summary", f"{spec}:now", "-i", "3x8x8")
    assert result.exit_code == 2 and one_error_line(result).endswith("failed: SystemExit: 3")


def test_what_successful_user_code_prints_on_stderr_still_appears(tmp_path, capsys):
    (tmp_path / "chatty.py").write_text(
        "import sys\nfrom torch import nn\nprint('imported', file=sys.stderr)\n\n"
        "def net():\n    print('built', file=sys.stderr)\n    return nn.Conv2d(3, 4, 3)\n"
    )
    load_model(f"{tmp_path / 'chatty.py'}:net")
    assert capsys.readouterr().err.split() == ["imported", "built"]


# -- a TorchScript file changed between its first look and its read -------------------------


def _torchscript_read_as(monkeypatch, path: Path, replacement: bytes) -> None:
    """`path`'s one read (Path.read_bytes) gives `replacement`: the file as it was changed
    after archprof's first look at its zip directory."""
    real_read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: replacement if self == path else real_read_bytes(self))


def test_a_torchscript_file_changed_into_a_zip_bomb_after_its_first_look_is_refused(tmp_path, monkeypatch):
    """The copy archprof checks and loads has its zip directory read again: a code member
    of 2 MiB of zeros stored in about 2 KiB is refused before it is inflated, the message
    naming the file given (not archprof's private copy)."""
    path = tmp_path / "model.pt"
    torch.jit.script(torch.nn.Conv2d(3, 4, 3)).save(str(path))
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model/code/__torch__/big.py", bytes(2 * 2**20 + 1))
    _torchscript_read_as(monkeypatch, path, bomb.getvalue())
    with pytest.raises(ArchprofError, match=rf"^cannot read {path}: its member .*big.py' would expand .*zip bomb"):
        load_model(str(path))


def test_a_torchscript_file_changed_into_a_pickle_after_its_first_look_is_refused(tmp_path, monkeypatch):
    """A TorchScript file swapped for a torch.save checkpoint between the look that found it
    TorchScript and its read: what was read is not loaded as TorchScript."""
    path = tmp_path / "model.pt"
    torch.jit.script(torch.nn.Conv2d(3, 4, 3)).save(str(path))
    checkpoint = io.BytesIO()
    torch.save({"weight": torch.zeros(2)}, checkpoint)
    _torchscript_read_as(monkeypatch, path, checkpoint.getvalue())
    line = one_error_line(cli("summary", path, "-i", "3x8x8"))
    assert line == f"error: cannot read {path}: it changed while archprof read it"


def test_a_torchscript_file_that_cannot_be_copied_is_one_error_and_leaves_nothing(tmp_path, monkeypatch):
    """The private copy archprof loads from cannot be written (a full temporary disk): one
    line naming the file and the reason, and the temporary folder is gone again."""
    import tempfile

    path = tmp_path / "model.pt"
    torch.jit.script(torch.nn.Conv2d(3, 4, 3)).save(str(path))
    temporary = tmp_path / "temporary"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))

    def full(self: Path, data: bytes) -> int:
        raise OSError(28, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    line = one_error_line(cli("summary", path, "-i", "3x8x8"))
    assert line.startswith(f"error: cannot copy {path} into {temporary}") and line.endswith(": No space left on device")
    assert list(temporary.iterdir()) == []


# -- names the system cannot look up -------------------------------------------------------

LONG = "m" * 300  # NAME_MAX is 255 bytes on Linux and macOS


@pytest.mark.parametrize(
    "argv",
    [["summary", LONG], ["summary", LONG + ".pt"], ["summary", "lenet5", "--weights", LONG + ".pt"], ["rf", LONG]],
    ids=["a model name", "a .pt name", "a --weights name", "rf"],
)
def test_a_name_too_long_for_the_system_is_one_error(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli(*argv)
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "m" * 20 in line.replace("w", "m") and "too long" in line
    with pytest.raises(ArchprofError, match="too long"):
        archprof.analyze(LONG + ".pt")


@pytest.mark.parametrize("spec", ["mod\udcff:factory", "\udcffmod.py:factory", "/tmp/\udcff/x.py:f", "m\ud800.pt"])
def test_a_spec_with_a_lone_surrogate_is_a_printable_error(spec):
    with pytest.raises(ArchprofError) as raised:
        load_model(spec)
    message = str(raised.value)
    message.encode("utf-8")  # a lone surrogate cannot be encoded: printing it would fail
    assert spec.encode("utf-8", "backslashreplace").decode() in message


def test_an_input_size_with_a_lone_surrogate_is_a_printable_error():
    from archprof.load.inputs import parse_input_size

    with pytest.raises(ArchprofError) as raised:
        parse_input_size("3x\udcff")
    str(raised.value).encode("utf-8")  # printable
    assert r"3x\udcff" in str(raised.value)


# -- shapes past int64 ---------------------------------------------------------------------

INT64_MAX = 9_223_372_036_854_775_807  # torch.iinfo(torch.int64).max, written out


def test_sizes_past_int64_are_refused_where_shapes_are_made():
    assert torch.iinfo(torch.int64).max == INT64_MAX
    for text in ("99999999999999999999999x1x1", "9" * 5000, f"{INT64_MAX // 4 + 1}x1", "65536x65536x65536x65536"):
        with pytest.raises(ArchprofError, match=r"input size .* is too large"):
            parse_input_size(text)
        with pytest.raises(ArchprofError, match=r"too large"):
            parse_input_spec(f"ids={text}:int64" if text.count("x") else text)
    assert parse_input_size(f"{INT64_MAX // 4}") == (INT64_MAX // 4,)  # 4-byte elements: the largest that fits
    assert parse_input_spec(f"{INT64_MAX}:bool").shape == (INT64_MAX,)  # 1-byte elements
    with pytest.raises(ArchprofError, match=r"input shape 2\*\*5000\+x3 is too large"):
        InputSpec((2**5000, 3))
    spec = InputSpec((3, 16384, 16384))
    assert spec.full_shape(100_000) == (100_000, 3, 16384, 16384)  # 3.2e14 bytes: fits
    with pytest.raises(ArchprofError, match=r"input 99999999999999999999x3x16384x16384 \(batch 99999999999999999999"):
        spec.full_shape(99_999_999_999_999_999_999)
    with pytest.raises(ArchprofError, match=r"\(batch 2\*\*"):
        InputSpec((1,)).full_shape(2**200)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--input", "99999999999999999999999x1x1"], "99999999999999999999999x1x1"),
        (["--input", "1x3037000500x3037000500"], "1x3037000500x3037000500"),  # each size fits, the bytes do not
        (["--input", "3x16384x16384", "--batch", "100000"], None),
    ],
)
def test_sizes_past_int64_through_the_cli(extra, says):
    result = cli("summary", "lenet5", *extra)
    if says is None:  # lenet5 takes one channel: the error is about that, not about the size
        assert result.exit_code == 2 and "expects 1 input channels" in one_error_line(result)
    else:
        assert result.exit_code == 2 and says in one_error_line(result) and "too large" in one_error_line(result)


def test_sizes_past_int64_in_the_models_own_float64_are_refused(tmp_path):
    """An input without a dtype of its own takes the model's floating one: float64's 8-byte
    elements pass 2**63 - 1 bytes at half the sizes float32's do."""
    too_large = r"input 1x1152921504606846976x1 float64 is too large"
    with pytest.raises(ArchprofError, match=too_large):
        archprof.analyze(torch.nn.Linear(1, 1, dtype=torch.float64), inputs=(2**60, 1))
    with pytest.raises(ArchprofError, match=r"input 1x1x1073741824x1073741824 float64 is too large"):
        archprof.analyze("lenet5", inputs=(1, 2**30, 2**30), dtype=torch.float64)
    source = tmp_path / "double.py"
    source.write_text("import torch\n\n\ndef net():\n    return torch.nn.Linear(1, 1, dtype=torch.float64)\n")
    result = cli("summary", f"{source}:net", "--input", f"{2**60}x1")
    assert result.exit_code == 2 and "float64 is too large" in one_error_line(result)


def test_a_batch_past_int64_through_the_api():
    too_large = r"input 99999999999999999999x1x32x32 \(batch 99999999999999999999\) is too large"
    with pytest.raises(ArchprofError, match=too_large):
        archprof.analyze("lenet5", batch=99_999_999_999_999_999_999)


# -- --weights that claim more than they hold ----------------------------------------------


def _inflating_checkpoint(path: Path, name: str, numel: int) -> Path:
    """A checkpoint whose tensor `name` (7 floats) is a view of a storage its pickle claims
    holds `numel` floats, over the 12,345 the file has. (Padding the storage with deflated
    zeros to match the claim is a zip bomb, refused before this check:
    tests/test_hostile_files.py.)"""
    import pickletools
    import struct

    small = path.with_suffix(".small")
    torch.save({name: torch.zeros(12345)[:7]}, small)
    with zipfile.ZipFile(small) as source, zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename.endswith("/data.pkl"):
                assert [arg for _, arg, _ in pickletools.genops(data)].count(12345) == 1  # the storage's size
                data = data.replace(b"M" + struct.pack("<H", 12345), b"J" + struct.pack("<i", numel))
            target.writestr(item, data)
    return path


def _cli_and_its_peak(*args) -> tuple[list[str], int]:
    """The archprof command run in a process of its own, which must exit 2: the lines it wrote
    on stderr and its memory's high-water mark (VmHWM, kB; ru_maxrss would carry over, through
    fork and exec, the size of the pytest process that started it, which grows over the suite)."""
    script = (
        "import re, sys\n"
        "from archprof.cli import main\n"
        "try:\n    main()\n"
        "finally:\n"
        "    status = open('/proc/self/status').read()\n"
        "    print(re.search(r'VmHWM:\\s*(\\d+)', status).group(1), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )
    *lines, peak_kib = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    return lines, int(peak_kib)


def test_weights_are_checked_without_reading_what_a_checkpoint_claims(tmp_path):
    path = _inflating_checkpoint(tmp_path / "inflating.pt", "features.0.weight", 2**28)  # 1 GiB of float32
    assert path.stat().st_size < 2 * 2**20
    lines, peak_kib = _cli_and_its_peak("summary", "lenet5", "--weights", path)
    assert len(lines) == 1, lines
    assert (
        lines[0].startswith("error: weights ")
        and "features.0.weight is 7 in the file, 6x1x5x5 in the model" in lines[0]
    )
    assert peak_kib < 700 * 1024  # torch and archprof take about 250 MB; the claim is 1024 MB


def test_sample_inputs_that_are_data_but_not_args_and_kwargs_are_one_error(tmp_path):
    def edit(tail, data, root):
        if tail == "data/sample_inputs/model.pt":
            buffer = io.BytesIO()
            torch.save({"x": torch.zeros(2)}, buffer)
            return [(root + tail, buffer.getvalue())]
        return [(root + tail, data)]

    path = rewritten(exported(tmp_path), tmp_path / "odd_inputs.pt2", edit)
    with pytest.raises(ArchprofError, match=r"odd_inputs.pt2: its sample inputs are a dict, not \(args, kwargs\)"):
        load_model(str(path))
