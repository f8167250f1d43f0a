"""The example scripts the README shows run as it says, in a fresh process (`examples/`)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "examples" / script), *args]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "ARCHPROF_CACHE_DIR": str(cwd / "cache")}
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def test_profile_model_writes_its_csv_and_its_roofline_chart(tmp_path):
    """It imported a plotting function that had been renamed: an ImportError once its CSV was written."""
    pytest.importorskip("matplotlib")
    result = _run("profile_model.py", "lenet5", "1x32x32", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Slowest layers" in result.stdout and "Cross-check:" in result.stdout
    assert (tmp_path / "lenet5_profile.csv").stat().st_size > 0
    assert (tmp_path / "lenet5_roofline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_architectures_prints_its_table_and_writes_its_chart(tmp_path):
    pytest.importorskip("matplotlib")
    result = _run("compare_architectures.py", str(tmp_path / "chart.png"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Architectures at 1x3x224x224" in result.stdout
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
