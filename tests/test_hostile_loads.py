"""Files that hide what torch does with them from archprof's checks (a TorchScript flatbuffer
that is also a zip archive), and small files that torch's loaders make large: a bytearray
made from its size, containers shared over and over, a power of powers in a shape."""

from __future__ import annotations

import contextlib
import io
import pickle
import tarfile
import zipfile

import pytest
import sympy
import torch
import torch.utils._pytree as pytree

import archprof
from archprof.errors import ArchprofError
from archprof.load import load_model
from tests.cli import cli, one_error_line
from tests.fixtures.hostile_archives import (
    bytearray_pickle,
    expanded_weight,
    legacy_checkpoint_declaring,
    script_with_a_spread_parameter,
    shape_strings_that_run,
    shared_tuples,
    spread_weight,
    tar_with_a_pax_header_of_digits,
    torch_save_archive,
    with_output_size,
    with_sample_inputs,
)
from tests.fixtures.hostile_flatbuffer import flatbuffer_in_a_zip


@pytest.fixture
def polyglot(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"clean")
    return flatbuffer_in_a_zip(tmp_path, victim), victim


def test_the_polyglot_is_a_zip_to_python_and_runs_its_code_in_torch(polyglot):
    """The refusals below are of a file that really writes when torch loads and runs it."""
    path, victim = polyglot
    assert zipfile.ZipFile(path).namelist() == ["archive/constants.pkl", "archive/version"]
    torch.jit.load(str(path))(torch.ones(1, 3))
    assert victim.read_bytes() != b"clean"


def test_a_flatbuffer_in_a_zip_is_refused_before_it_loads(polyglot):
    path, victim = polyglot
    with pytest.raises(ArchprofError, match=r"^cannot read .*model\.pt: it is marked as a TorchScript flatbuffer"):
        archprof.analyze(str(path), "3")
    result = cli("summary", path, "-i", "3")
    assert result.exit_code == 2 and "flatbuffer" in one_error_line(result)
    assert victim.read_bytes() == b"clean"


def test_a_flatbuffer_in_a_zip_given_as_weights_is_refused(polyglot):
    path, victim = polyglot
    result = cli("summary", "lenet5", "--weights", path)
    assert result.exit_code == 2 and "flatbuffer" in one_error_line(result)
    assert victim.read_bytes() == b"clean"


# -- small files torch makes large ---------------------------------------------------------


def test_torch_makes_a_bytearray_of_the_size_a_pickle_names(tmp_path):
    """The oracle: weights-only loading allocates what the pickle asks for."""
    path = torch_save_archive(tmp_path / "small.pt", bytearray_pickle(10_000_000))
    assert path.stat().st_size < 1_000
    assert [len(b) for b in torch.load(str(path), weights_only=True)] == [10_000_000]


@pytest.mark.parametrize("given_as", ["model", "weights"])
def test_a_bytearray_made_from_its_size_is_refused(tmp_path, given_as):
    path = torch_save_archive(tmp_path / "bytes.pt", bytearray_pickle(10**12))
    args = ("summary", path, "-i", "3") if given_as == "model" else ("summary", "lenet5", "--weights", path)
    result = cli(*args)
    line = one_error_line(result)
    assert result.exit_code == 2 and "bytearray of 1,000,000,000,000 bytes made from its size" in line


def test_a_bytearray_in_an_exported_programs_sample_inputs_is_refused(tmp_path):
    path = with_sample_inputs(
        tmp_path, torch_save_archive(tmp_path / "inputs.pt", bytearray_pickle(10**12)).read_bytes()
    )
    with pytest.raises(ArchprofError, match=r"^refusing to load .*: a pickled bytearray of 1,000,000,000,000 bytes"):
        archprof.analyze(str(path))


def _pickled(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def test_shared_tuples_are_a_small_pickle_and_a_long_walk():
    """The oracle: 16 levels pickle to under 2 KB, and pytree, which torch.export.load walks
    a program's sample inputs with, finds 65,536 leaves."""
    pickled = _pickled(shared_tuples(16))
    assert len(pickled) < 2_000
    assert len(pytree.tree_leaves(torch.load(io.BytesIO(pickled), weights_only=True))) == 2**16


def test_sample_inputs_that_share_containers_over_and_over_are_refused(tmp_path):
    path = with_sample_inputs(tmp_path, _pickled(((shared_tuples(40),), {})))
    result = cli("summary", path)
    assert result.exit_code == 2 and "hands out one container again and again" in one_error_line(result)


def test_a_dict_keyed_by_shared_tuples_is_refused_before_torch_hashes_it(tmp_path):
    """{t: 0}, t 40 levels of (t, t): 563 bytes that torch's unpickler hashed for hours (as
    it set the key), before any walk of what it built."""
    body = pickle.dumps(shared_tuples(40), protocol=2)[2:-1]
    path = torch_save_archive(tmp_path / "keyed.pt", b"\x80\x02}" + body + b"K\x00s.")
    assert path.stat().st_size < 1_000
    result = cli("summary", "lenet5", "--weights", path)
    assert result.exit_code == 2 and "hands out one container again and again" in one_error_line(result)


def test_a_container_filled_after_it_was_handed_out_is_refused(tmp_path):
    """A list that holds itself: whatever holds it would be counted too small."""
    cyclic: list = []
    cyclic.append(cyclic)
    path = torch_save_archive(tmp_path / "cycle.pt", pickle.dumps({"w": cyclic}, protocol=2))
    result = cli("summary", "lenet5", "--weights", path)
    assert result.exit_code == 2 and "a pickle that builds an object that holds itself" in one_error_line(result)


def test_bytes_in_a_codec_other_than_pickles_own_are_refused(tmp_path):
    """_codecs.encode(..., 'hex') doubles its input: 40 of them, 874 bytes, asked for 1 TiB."""

    def text(value: str) -> bytes:
        return b"X" + len(value.encode()).to_bytes(4, "little") + value.encode()

    levels = 40
    pickled = b"\x80\x02c_codecs\nencode\nq\x00" + b"h\x00" * levels + text("a") + text("latin1") + b"\x86R"
    pickled += (text("hex") + b"\x86R") * levels + b"."
    result = cli("summary", "lenet5", "--weights", torch_save_archive(tmp_path / "hex.pt", pickled))
    assert result.exit_code == 2 and "pickled bytes encoded as 'hex'" in one_error_line(result)


def _long(value: int) -> bytes:
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


# bytearray(torch.LongTensor([N])): the size through the tensor's __index__; set(ByteTensor(N)):
# N elements allocated, then one 0-d tensor made for each.
_SIZED_BY_A_TENSOR = {
    "bytearray": b"\x80\x02cbuiltins\nbytearray\nctorch\nLongTensor\n]" + _long(10**12) + b"a\x85R\x85R.",
    "set": b"\x80\x02cbuiltins\nset\nctorch\nByteTensor\n" + _long(10**12) + b"\x85R\x85R.",
}


def test_torch_makes_what_a_tensor_constructor_in_a_pickle_asks(tmp_path):
    """The oracle: weights-only loading calls torch.ByteTensor with the pickle's size."""
    pickled = b"\x80\x02cbuiltins\nset\nctorch\nByteTensor\n" + _long(1000) + b"\x85R\x85R."
    assert len(torch.load(str(torch_save_archive(tmp_path / "set.pt", pickled)), weights_only=True)) >= 1


@pytest.mark.parametrize("made", list(_SIZED_BY_A_TENSOR))
def test_a_tensor_constructor_called_in_a_pickle_is_refused(tmp_path, made):
    path = torch_save_archive(tmp_path / f"{made}.pt", _SIZED_BY_A_TENSOR[made])
    assert path.stat().st_size < 1_000
    result = cli("summary", "lenet5", "--weights", path)
    assert result.exit_code == 2 and "a pickle that calls torch." in one_error_line(result)


def test_a_set_of_anything_but_items_is_refused(tmp_path):
    """set, Counter, OrderedDict and torch.Size only of what the pickle spells out."""
    from archprof.load.unpickling import Unbounded, weights_only_bounded

    pickled = b"\x80\x02cbuiltins\nset\nX\x03\x00\x00\x00abc\x85R."  # set("abc"): of a string
    path = torch_save_archive(tmp_path / "set.pt", pickled)
    with weights_only_bounded(), pytest.raises(Unbounded, match="a pickled set made from str"):
        torch.load(str(path), weights_only=True)


def _lenet5_state() -> dict[str, torch.Tensor]:
    """A state dict for the built-in lenet5, of zeros."""
    return {name: torch.zeros(value.shape) for name, value in load_model("lenet5").module.state_dict().items()}


def test_a_large_list_of_its_own_items_is_not_refused(tmp_path):
    """A bound on sharing, not on size: a checkpoint with 1.5 million numbers of its own loads."""
    state = _lenet5_state()
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": state, "losses": [float(i) for i in range(1_500_000)]}, str(path))
    assert cli("summary", "lenet5", "--weights", path).exit_code == 0


def test_sympy_computes_powers_exactly():
    """The oracle: a shape expression's powers are computed, digit by digit."""
    assert sympy.sympify("2**2**20").p.bit_length() == 2**20 + 1


@pytest.mark.parametrize(
    "power", ["10**10**10", "Pow(Integer(10), Pow(Integer(10), Integer(10)))", "10**Integer('9999999999')"]
)
def test_a_shape_expression_with_powers_of_powers_is_refused(tmp_path, power):
    path = with_output_size(tmp_path, f"Symbol('s77', positive=True, integer=True) + 0*{power}")
    result = cli("summary", path)
    assert result.exit_code == 2 and "shape expression" in one_error_line(result)


def test_a_shape_expression_with_a_small_power_loads(tmp_path):
    path = with_output_size(tmp_path, "Symbol('s77', positive=True, integer=True) + 0*2**3")
    assert archprof.analyze(str(path)).totals.param_count == 3 * 4 * 9 + 4


def test_torch_copies_a_weight_of_stride_0_out_in_full(tmp_path):
    """The oracle: 4 bytes stored, 4 MB once torch builds the module."""
    path = spread_weight(tmp_path, 1_000_000)
    with zipfile.ZipFile(path) as archive:
        assert [m.file_size for m in archive.infolist() if m.filename.endswith("weights/weight_0")] == [4]
    module = torch.export.unflatten(torch.export.load(str(path)))
    assert module.p.untyped_storage().nbytes() == 4_000_000


def test_a_weight_declared_far_past_its_bytes_is_refused(tmp_path):
    path = spread_weight(tmp_path, 2_000_000_000)
    result = cli("summary", path)
    assert result.exit_code == 2 and "declares 2,000,000,000 elements over 4 bytes" in one_error_line(result)


def test_a_weight_torch_stores_expanded_loads(tmp_path):
    """torch.export.save writes an expanded weight as its few elements, strides of 0."""
    assert archprof.analyze(str(expanded_weight(tmp_path, 1000)), "1").totals.param_count == 1000


def test_shape_strings_that_build_python_run_it_when_torch_loads_them(tmp_path):
    """The oracle: torch.export.load runs the text the strings make."""
    marker = tmp_path / "ran"
    path = shape_strings_that_run(tmp_path, marker)
    with contextlib.suppress(Exception):
        torch.export.load(str(path))
    assert marker.read_text() == "ran"


def test_shape_strings_that_build_python_are_refused(tmp_path):
    marker = tmp_path / "ran"
    result = cli("summary", shape_strings_that_run(tmp_path, marker))
    assert result.exit_code == 2 and "shape expression" in one_error_line(result)
    assert not marker.exists()


@pytest.mark.parametrize(
    "unbounded",
    ["0*(10^10^10)", "0*Float(pi, 1000000000)", "0*Symbol('a'*45)", "0*floor(1e20000000000)", "Abs('s' + '1')"],
)
def test_a_shape_expression_without_bound_is_refused(tmp_path, unbounded):
    """sympify reads ^ as a power; a Float's precision, a float's size and strings are bounded."""
    path = with_output_size(tmp_path, f"Symbol('s77', positive=True, integer=True) + {unbounded}")
    result = cli("summary", path)
    assert result.exit_code == 2 and "is more than the arithmetic torch writes" in one_error_line(result)


def test_a_legacy_tar_checkpoint_is_refused_before_tarfile_reads_it(tmp_path):
    """torch.load parses a file as a tar archive before it refuses it weights-only; a pax
    header of digits took tarfile quadratic time (301 KB: 80 s)."""
    path = tar_with_a_pax_header_of_digits(tmp_path / "old.pt", 20_000)
    header = tarfile.TarInfo.frombuf(path.read_bytes()[:512], "utf-8", "surrogateescape")
    assert header.type == tarfile.XHDTYPE and header.size == 20_000  # a pax header, as tarfile reads it
    result = cli("summary", "lenet5", "--weights", path)
    assert result.exit_code == 2 and "a legacy .tar checkpoint (PyTorch before 0.4)" in one_error_line(result)


def _after_the_header(path) -> int:
    """Where a legacy checkpoint's pickle of its object starts: after those of its magic
    number, its protocol and its system's description."""
    with open(path, "rb") as stream:
        for _ in range(3):
            pickle.load(stream)
        return stream.tell()


def test_torch_allocates_a_legacy_storage_at_the_size_its_pickle_declares(tmp_path):
    """The oracle: torch.load asks the allocator for the 4 TiB the pickle declares, before it
    reads the storage's data (which says 100 elements) and refuses the file."""
    path = legacy_checkpoint_declaring(tmp_path / "legacy.pt", _lenet5_state(), 2**40)
    with pytest.raises(RuntimeError, match="DefaultCPUAllocator"):
        torch.load(path, weights_only=True)


@pytest.mark.parametrize("elements", [1_200_000_000, 2**40])
def test_a_legacy_checkpoint_declaring_more_than_the_file_holds_is_refused_before_torch_allocates(tmp_path, elements):
    path = legacy_checkpoint_declaring(tmp_path / "legacy.pt", _lenet5_state(), elements)
    result = cli("summary", "lenet5", "--weights", path)
    line = one_error_line(result)
    # Refused at the first storage, the one declared larger than the whole file: float32, 4 bytes an element.
    assert result.exit_code == 2 and f"storages declare {elements * 4:,} bytes" in line
    assert f"more than the {path.stat().st_size - _after_the_header(path):,} bytes that follow its pickle" in line


def test_a_legacy_checkpoint_as_torch_saves_it_still_loads(tmp_path):
    state = _lenet5_state()
    path = tmp_path / "legacy.pt"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    result = cli("summary", "lenet5", "--weights", path, "-f", "csv")
    assert result.exit_code == 0, result.output


def test_torchscript_keeps_a_parameter_of_stride_0_as_declared(tmp_path):
    """The oracle: torch.jit.load keeps the view, 10 million elements over 28 bytes."""
    parameter = torch.jit.load(str(script_with_a_spread_parameter(tmp_path / "spread.pt", 10**7))).unused
    assert parameter.numel() == 10**7 and parameter.untyped_storage().nbytes() == 28


def test_a_torchscript_parameter_declared_far_past_its_bytes_is_refused(tmp_path):
    """A cast to --dtype copied it out in full: 4.8 GB from a 4.3 KB file at 2.3 billion."""
    path = script_with_a_spread_parameter(tmp_path / "spread.pt", 10**7)
    result = cli("summary", path, "--input", "3x8x8", "--dtype", "float16")
    assert result.exit_code == 2 and "declares 10,000,000 elements over 28 bytes" in one_error_line(result)


def _dropped(built: bytes) -> bytes:
    """A protocol-2 pickle that builds `built` (opcodes leaving one object on the stack) and
    returns an empty dict built above it: what it builds off to the side, torch builds too."""
    return b"\x80\x02" + built + b"}."


def _keyed_by(key: bytes) -> bytes:
    """Opcodes building {key: None}, `key` the opcodes of one object."""
    return b"}" + key + b"Ns"


@pytest.mark.parametrize(
    ("built", "says"),
    [
        # {t: None}, t = (t, t) 22 deep: 4 million values, which torch's unpickler hashes (at 60, for hours).
        (_keyed_by(pickle.dumps(shared_tuples(22), protocol=2)[2:-1]), "hands out one container again and again"),
        # {u: None}, u a tuple in a tuple ... 2,000 deep, which hashing recurses through (at 300,000: SIGSEGV).
        (_keyed_by(b"N" + b"\x85" * 2000), "nests objects more than 1000 deep"),
    ],
)
def test_what_a_pickle_builds_and_drops_is_bounded_as_what_it_returns(tmp_path, built, says):
    """Only what a pickle returns was measured: a dictionary keyed by a tuple shared over and
    over, or nested thousands deep, built, hashed and left behind, passed; at 60 levels torch's
    unpickler hashed it for hours, past a SIGTERM, and at 300,000 crashed (SIGSEGV). Every
    object it builds is measured now. The oracle: torch loads the small ones, an empty dict."""
    pickled = _dropped(built)
    assert torch.load(io.BytesIO(_zipped(tmp_path, pickled)), weights_only=True) == {}
    result = cli("summary", "lenet5", "--weights", torch_save_archive(tmp_path / "dropped.pt", pickled))
    assert result.exit_code == 2 and f"a pickle that {says}" in one_error_line(result)


def _zipped(tmp_path, pickled: bytes) -> bytes:
    return torch_save_archive(tmp_path / "oracle.pt", pickled).read_bytes()


def test_what_a_pickle_builds_before_an_opcode_the_reading_cannot_follow_is_bounded(tmp_path):
    """A pickle the reading ahead cannot follow was left to torch whole: {t: None}, t shared
    22 deep, then a BUILD onto an empty tuple, which torch refuses only after it hashed the
    key. What was built up to there is measured, and refused."""
    key = pickle.dumps(shared_tuples(22), protocol=2)[2:-1]
    pickled = b"\x80\x02" + _keyed_by(key) + b")Nb."
    with pytest.raises(pickle.UnpicklingError):  # the oracle: torch builds the dict, then refuses the BUILD
        torch.load(io.BytesIO(_zipped(tmp_path, pickled)), weights_only=True)
    result = cli("summary", "lenet5", "--weights", torch_save_archive(tmp_path / "unfollowed.pt", pickled))
    assert result.exit_code == 2 and "a pickle that hands out one container again and again" in one_error_line(result)


class _HandsATensorClassOn:
    """Pickled as `_rebuild_from_type_v2(torch.LongTensor, torch.Tensor, (4,), {})`, which
    torch's weights-only unpickler allows and which calls torch.LongTensor(4)."""

    def __reduce__(self):
        return (torch._tensor._rebuild_from_type_v2, (torch.LongTensor, torch.Tensor, (4,), {}))


def test_a_tensor_class_handed_to_rebuild_from_type_is_refused(tmp_path):
    """`_rebuild_from_type_v2(func, type, args, state)` calls `func(*args)`: handed
    torch.LongTensor and (2**36,), it asked for 512 GB. The oracle: torch makes the tensor."""
    path = tmp_path / "handed.pt"
    torch.save({"features.0.weight": _HandsATensorClassOn()}, path)
    assert torch.load(path, weights_only=True)["features.0.weight"].shape == (4,)
    result = cli("summary", "lenet5", "--weights", path)
    assert result.exit_code == 2
    assert "a pickle that calls torch.LongTensor itself, which allocates what the file asks" in one_error_line(result)


class _ExpandedToADevice:
    """Pickled as torch.save's rebuild of a tensor on a device (`.to(dtype, device)` of a CPU
    tensor): one element broadcast to 1 x 3 x 1024 x 1024, copied out in float64."""

    def __reduce__(self):
        data = torch.ones(1, 1, 1, 1).expand(1, 3, 1024, 1024)
        return (torch._utils._rebuild_device_tensor_from_cpu_tensor, (data, torch.float64, "cpu", False))


def test_a_tensor_rebuilt_on_a_device_from_far_fewer_bytes_is_refused(tmp_path):
    """An 8 KB program's sample input, one element broadcast to 400 million and rebuilt by
    `.to(torch.float64)`, made 3.5 GB as it loaded. A tensor declared over far more elements
    than its storage holds is refused before its rebuild copies it out (here 3,145,728 over 4
    bytes). The oracle: torch rebuilds it, 25 MB."""
    buffer = io.BytesIO()
    torch.save(((_ExpandedToADevice(),), {}), buffer)
    buffer.seek(0)
    ((rebuilt,), _) = torch.load(buffer, weights_only=True)
    assert rebuilt.nbytes == 3 * 1024 * 1024 * 8 and rebuilt.untyped_storage().nbytes() == rebuilt.nbytes
    result = cli("summary", with_sample_inputs(tmp_path, buffer.getvalue()))
    assert result.exit_code == 2
    assert "a pickled tensor of 3,145,728 elements over 4 bytes stored" in one_error_line(result)


def _zeros_deflated(path, elements: int) -> bytes:
    """A torch.save archive of `elements` float32 zeros, its data member deflated (a few
    kilobytes for millions of zeros)."""
    torch.save(torch.zeros(elements), path)
    source, inner = zipfile.ZipFile(path), io.BytesIO()
    with zipfile.ZipFile(inner, "w") as target:
        for member in source.infolist():
            packing = zipfile.ZIP_DEFLATED if member.filename.endswith("/data/0") else zipfile.ZIP_STORED
            target.writestr(member.filename, source.read(member), compress_type=packing)
    return inner.getvalue()


def test_a_zip_bomb_inside_a_programs_archive_is_refused(tmp_path):
    """The archives an exported program holds (its sample inputs, weights, constants) are
    handed to torch.load from memory, unchecked: a 3.9 MB program inflated 4 GB of zeros.
    Each is checked as the program's own archive is: here 5,000,000 zeros, 20 MB from a few
    kilobytes. The oracle: torch reads the inner archive back, all zeros."""
    inner = _zeros_deflated(tmp_path / "zeros.pt", 5_000_000)
    assert len(inner) < 100_000
    assert torch.load(io.BytesIO(inner), weights_only=True).count_nonzero() == 0
    result = cli("summary", with_sample_inputs(tmp_path, inner))
    assert result.exit_code == 2
    members = zipfile.ZipFile(io.BytesIO(inner)).infolist()
    (data,) = [member for member in members if member.filename.endswith("/data/0")]
    assert one_error_line(result).endswith(
        f"cannot read an archive in the program: its member '{data.filename}' would expand from"
        f" {data.compress_size:,} to 20,000,000 bytes (a zip bomb?)"
    )
