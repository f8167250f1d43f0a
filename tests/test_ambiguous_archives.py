"""An archive that Python's zipfile and torch's reader would read differently is refused
before torch reads it (`archprof.load.zip_archive`): what archprof checks is what torch runs.
Each craft is first shown to do what it does to torch as it is (its hidden code runs, or
zipfile takes it for no archive where torch reads it)."""

from __future__ import annotations

import contextlib
import re
import zipfile

import pytest
import torch

import archprof
from archprof.errors import ArchprofError
from archprof.load.zip_archive import checked_archive
from tests.cli import cli, one_error_line
from tests.fixtures.ambiguous_archives import AMBIGUOUS_ARCHIVES, scripted
from tests.fixtures.hostile_archives import declaring_without_data

_CRAFTS = list(AMBIGUOUS_ARCHIVES)


@pytest.mark.parametrize("craft", [craft for craft in _CRAFTS if AMBIGUOUS_ARCHIVES[craft][2] is not None])
def test_torch_runs_what_the_archive_hides(tmp_path, craft):
    make, _, run = AMBIGUOUS_ARCHIVES[craft]
    marker = tmp_path / "ran"
    path = make(tmp_path, marker)
    with contextlib.suppress(Exception):  # after the payload, torch may fail in its own ways
        run(path)
    assert marker.exists()


def test_zipfile_takes_a_checkpoint_with_bytes_after_its_end_for_no_archive_and_torch_reads_it(tmp_path):
    path = AMBIGUOUS_ARCHIVES["bytes after the end record"][0](tmp_path, tmp_path / "unused")
    assert not zipfile.is_zipfile(path)
    assert torch.equal(torch.load(str(path), weights_only=True)["weight"], torch.zeros(2))


@pytest.mark.parametrize("craft", _CRAFTS)
def test_an_ambiguous_archive_is_refused_in_one_line_whatever_the_trust(tmp_path, craft):
    make, says, _ = AMBIGUOUS_ARCHIVES[craft]
    marker = tmp_path / "ran"
    path = make(tmp_path, marker)
    result = cli("summary", path, "--input", "3x8x8")
    assert result.exit_code == 2
    assert says in one_error_line(result)
    with pytest.raises(ArchprofError, match=re.escape(says)):
        archprof.analyze(str(path), (3, 8, 8))
    if "torch.save" not in says:  # code refused for what it calls runs if trusted; a layout never loads
        with pytest.raises(ArchprofError, match=re.escape(says)):
            archprof.analyze(str(path), (3, 8, 8), trust_pickle=True)
    assert not marker.exists()


def test_an_ambiguous_checkpoint_is_refused_as_weights_too(tmp_path):
    path = AMBIGUOUS_ARCHIVES["bytes after the end record"][0](tmp_path, tmp_path / "unused")
    result = cli("summary", "lenet5", "--weights", path)
    assert result.exit_code == 2
    assert "corrupted or truncated" in one_error_line(result)


def test_a_clean_archive_still_loads(tmp_path):
    path = scripted(tmp_path)
    assert archprof.analyze(str(path), (3, 8, 8)).totals.param_count == 4 * 3 * 3 * 3 + 4


def test_an_exported_tensor_whose_empty_entry_is_named_in_capitals_is_refused(tmp_path):
    """torch finds `data/weights/WEIGHT_0` for `data/weights/weight_0`, and fills it with the
    zeros its config declares."""
    path = declaring_without_data(tmp_path, 2**20, entry="data/weights/WEIGHT_0")
    with pytest.raises(ArchprofError, match="declares 1,048,576 elements but its entry"):
        archprof.analyze(str(path))


def test_an_archive_whose_end_record_is_zip64_is_read(tmp_path):
    """Over 65,535 members, the counts and the directory's offset are in the zip64 end record
    (as over 4 GiB): read from there, not taken for a disagreement."""
    path = tmp_path / "many.pt"
    with zipfile.ZipFile(path, "w") as archive:
        for index in range(70_000):
            archive.writestr(f"many/extra/{index}", b"")
    with open(path, "rb") as stream:
        assert stream.read()[-22:][10:12] == b"\xff\xff"  # the end record's own count: see zip64
    with checked_archive(path, "many.pt") as archive:
        assert len(archive.infolist()) == 70_000
