"""Files that hide what torch does with them from archprof's checks: a TorchScript flatbuffer
that is also a zip archive."""

from __future__ import annotations

import zipfile

import pytest
import torch

import archprof
from archprof.errors import ArchprofError
from tests.cli import cli, one_error_line
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
