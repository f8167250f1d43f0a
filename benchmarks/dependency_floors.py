"""The test suite run against the oldest release of each dependency that pyproject.toml allows.

    python benchmarks/dependency_floors.py [--torch VERSION] [--no-torchvision] [--keep DIR] [--report PATH]
                                           [-- PYTEST_ARGS ...]

pip leaves a package a user already has where it meets archprof's requirement: with
`typer>=0.12` it kept typer 0.28, under which `--format csv` printed the table (a custom
parser's value was dropped). So each floor must be a release archprof works with. This makes a
fresh virtual environment with every dependency pinned to its floor (`typer>=0.29` installs
typer 0.29.0), torch at the version this environment has (or `--torch`, with the torchvision
release paired with it for the test extra, or none with `--no-torchvision`: the tests that need
it then cannot run), archprof from this checkout, and runs the README's
test command there (or the pytest arguments after `--`). Writes
reports/dependency_floors.md: the versions installed, the command, and what failed. It needs the
package registry; a torch the registry serves as a CUDA build pulls its CUDA libraries (several GB).
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.version import Version
from worktree import ROOT, machine_text

REPORT = ROOT / "reports" / "dependency_floors.md"

# What an old release needs beside it that its own metadata does not say: pandas before 2.2.2
# was built against NumPy 1 and does not import beside NumPy 2.
_BESIDE = {"pandas": ("2.2.2", "numpy<2")}
# The packages whose versions the report lists.
_LISTED = ("torch", "torchvision", "typer", "rich", "pandas", "numpy", "pydantic", "pytest")


def floors(dependencies: list[str]) -> list[str]:
    """Each dependency pinned to its lower bound (`typer>=0.29` -> `typer==0.29`), torch left out
    (the caller pins it); a dependency without one is refused, as it has no floor to test."""
    pinned = []
    for text in dependencies:
        requirement = Requirement(text)
        if requirement.name == "torch":
            continue
        lower = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        if not lower:
            raise SystemExit(f"{text!r} in pyproject.toml has no lower bound (>=) to test")
        pinned.append(f"{requirement.name}=={lower[0]}")
        beside = _BESIDE.get(requirement.name)
        if beside is not None and Version(lower[0]) < Version(beside[0]):
            pinned.append(beside[1])
    return pinned


def with_paired_torchvision(extra: list[str], torch_version: Version, torchvision: bool = True) -> list[str]:
    """The test extra, its torchvision the release paired with `torch_version` (torch 2.N:
    torchvision 0.(N + 15)); without `torchvision`, left out (a torch it has no release for yet)."""
    paired = [f"torchvision==0.{torch_version.minor + 15}.*"] if torchvision else []
    return [pin for text in extra for pin in (paired if Requirement(text).name == "torchvision" else [text])]


def installed_torch() -> Version:
    import torch

    return Version(Version(torch.__version__).base_version)  # 2.13.0+cpu: 2.13.0, which pip resolves here


def run(command: list[str]) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torch", type=Version, help="torch version to test with (default: this environment's)")
    parser.add_argument(
        "--no-torchvision",
        action="store_true",
        help="leave torchvision out of the test extra, for a torch it has no release for yet",
    )
    parser.add_argument("--keep", type=Path, help="make the environment here and keep it (default: a temporary one)")
    parser.add_argument("--report", type=Path, default=REPORT)
    parser.add_argument("pytest_args", nargs="*", help="after --: what pytest runs (default: the whole suite)")
    args = parser.parse_args()

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_version = args.torch or installed_torch()
    requirements = [
        f"torch=={torch_version}",
        *floors(project["dependencies"]),
        *with_paired_torchvision(project["optional-dependencies"]["test"], torch_version, not args.no_torchvision),
    ]
    with tempfile.TemporaryDirectory() as scratch:
        environment = args.keep or Path(scratch) / "venv"
        python = environment / "bin" / "python"
        if not python.exists():
            run([sys.executable, "-m", "venv", str(environment)])
        run([str(python), "-m", "pip", "install", "--quiet", *requirements])
        run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "-e", str(ROOT)])
        versions = _versions(python)
        pytest = [str(python), "-m", "pytest", *args.pytest_args]
        started = time.perf_counter()
        env = {**os.environ, "HYPOTHESIS_PROFILE": "ci"}
        returncode, output = _shown_and_kept(pytest, env)
        seconds = time.perf_counter() - started
    summary = next((line.strip("= ") for line in reversed(output.splitlines()) if " in " in line), "no summary")
    failed = [
        line.split(" - ")[0].split(" ", 1)[1] for line in output.splitlines() if line.startswith(("FAILED ", "ERROR "))
    ]
    _write(args.report, requirements, versions, sys.argv[1:], args.pytest_args, summary, failed, seconds)
    print(f"wrote {args.report}")
    sys.exit(returncode)


def _shown_and_kept(command: list[str], env: dict) -> tuple[int, str]:
    """Run `command` in the checkout, its output shown as it comes (the suite's progress) and kept."""
    kept = []
    with subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        for line in process.stdout:
            print(line, end="", flush=True)
            kept.append(line)
    return process.returncode, "".join(kept)


def _versions(python: Path) -> dict[str, str]:
    frozen = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True)
    found = dict(line.split("==", 1) for line in frozen.stdout.splitlines() if "==" in line)
    return {name: found[name] for name in _LISTED if name in found}


def _write(path: Path, requirements, versions, argv, pytest_args, summary: str, failed, seconds: float) -> None:
    lines = [
        "# archprof against its dependencies' floors",
        "",
        f"- Date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}",
        f"- Command: `{' '.join(['python', 'benchmarks/dependency_floors.py', *argv])}`",
        f"- Pinned: `{' '.join(requirements)}`",
        f"- Installed: {', '.join(f'{name} {version}' for name, version in versions.items())}",
        f"- {machine_text()}",
        f"- `{' '.join(['python', '-m', 'pytest', *pytest_args])}` in {seconds:.0f} s: **{summary}**",
        "",
    ]
    if failed:
        lines += ["Failed:", "", *[f"- `{name}`" for name in failed], ""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
