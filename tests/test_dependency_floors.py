"""benchmarks/dependency_floors.py pins what pyproject.toml allows at its oldest: the pins it
makes from requirement texts, and that every dependency has a floor to pin."""

import sys
from pathlib import Path

import pytest
import tomllib
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import dependency_floors  # noqa: E402


def test_each_dependency_is_pinned_to_its_lower_bound_torch_left_to_the_caller():
    pinned = dependency_floors.floors(["torch>=2.12", "typer>=0.29", "rich>=13.8,<16"])
    assert pinned == ["typer==0.29", "rich==13.8"]


def test_a_pandas_built_against_numpy_1_gets_numpy_1_beside_it():
    assert dependency_floors.floors(["pandas>=2.0"]) == ["pandas==2.0", "numpy<2"]
    assert dependency_floors.floors(["pandas>=2.2.2"]) == ["pandas==2.2.2"]


def test_a_dependency_without_a_floor_is_refused():
    with pytest.raises(SystemExit, match=r"'rich' in pyproject\.toml has no lower bound"):
        dependency_floors.floors(["rich"])


def test_the_test_extra_takes_the_torchvision_paired_with_the_torch_asked_for():
    extra = ["pytest>=8", "torchvision==0.28.0", "timm>=1.0"]
    paired = dependency_floors.with_paired_torchvision
    assert paired(extra, Version("2.12.1")) == ["pytest>=8", "torchvision==0.27.*", "timm>=1.0"]
    assert paired(extra, Version("2.14.1+cu130")) == ["pytest>=8", "torchvision==0.29.*", "timm>=1.0"]
    assert paired(extra, Version("2.15.0"), torchvision=False) == ["pytest>=8", "timm>=1.0"]  # none for it yet


def test_every_dependency_of_the_project_has_a_floor_to_test():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = dependency_floors.floors(project["dependencies"])
    assert len([pin for pin in pinned if "==" in pin]) == len(project["dependencies"]) - 1  # torch: the caller's
