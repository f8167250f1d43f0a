"""Hostile and careless input, one table: what a user (or an attacker handing them a file)
can give archprof, and what they can rely on in return.

Each CLI case crafts its files in a directory of its own and runs the real `archprof`
process there (exit codes, stderr and files are process-level facts). Every case must end
with its exit status (2 for bad input), at most one line on stderr and no traceback, no
payload run, and no file in its directory created or changed but the ones it names. To add
a case, append a `Case` to CASES: `argv` crafts what the case needs and returns the
arguments."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import archprof
from tests.fixtures.hostile_archives import HOSTILE_ARCHIVES

MARKER = "PAYLOAD_RAN"


class Payload:
    """Pickles to a call that creates MARKER in the current directory when unpickled."""

    def __reduce__(self):
        return (exec, (f"open({MARKER!r}, 'w').close()",))


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# -- crafting ------------------------------------------------------------------------------


def factory_file(directory: Path, body: str, name: str = "user_model.py") -> str:
    """A Python file whose `net` factory runs `body` (indented code) before building."""
    indented = "\n".join("    " + line for line in body.strip().splitlines())
    source = (
        f"import sys\nimport torch\nfrom torch import nn\n\n\ndef net():\n{indented}\n    return nn.Conv2d(3, 4, 3)\n"
    )
    return _write(directory / name, source)


def exiting_forward(directory: Path, statement: str) -> str:
    source = (
        "import argparse\nimport sys\nfrom torch import nn\n\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.conv = nn.Conv2d(3, 4, 3)\n\n"
        f"    def forward(self, x):\n        {statement}\n        return self.conv(x)\n"
    )
    return _write(directory / "exits.py", source) + ":Net"


def pickled_module(directory: Path) -> str:
    """A `.pt` file that would run the payload when unpickled."""
    path = directory / "model.pt"
    torch.save({"model": Payload()}, path)
    return str(path)


def checkpoint_with_payload(directory: Path) -> str:
    path = directory / "weights.pt"
    torch.save({"state_dict": {"weight": torch.zeros(1)}, "extra": Payload()}, path)
    return str(path)


def state_dict_of_conv(directory: Path) -> str:
    path = directory / "conv.pt"
    torch.save(torch.nn.Conv2d(3, 4, 3).state_dict(), path)
    return str(path)


def deeply_nested_model(directory: Path) -> str:
    """A model nested 1,000 modules deep: torch's named_modules() recurses once a level."""
    source = (
        "from torch import nn\n\n\ndef net():\n    inner = nn.ReLU()\n    for _ in range(1000):\n"
        "        inner = nn.Sequential(inner)\n    return nn.Sequential(nn.Conv2d(3, 4, 3), inner)\n"
    )
    return _write(directory / "deep.py", source) + ":net"


def importable_module(directory: Path, name: str) -> str:
    """`name` (dotted: a package too) importable from `directory`, with a factory `net`: its spec."""
    *packages, module = name.split(".")
    for depth in range(1, len(packages) + 1):
        directory.joinpath(*packages[:depth]).mkdir()
        _write(directory.joinpath(*packages[:depth], "__init__.py"), "")
    _write(
        directory.joinpath(*packages, f"{module}.py"),
        "from torch import nn\n\n\ndef net():\n    return nn.Conv2d(3, 4, 3)\n",
    )
    return f"{name}:net"


def budget_file(directory: Path, entry: str) -> str:
    return _write(directory / "archprof.toml", f'[[models]]\nname = "lenet5"\n{entry}\n')


# -- the table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    argv: Callable[[Path], list]  # crafts what the case needs in its directory, returns the arguments
    says: str  # text the error line must hold (case-insensitive)
    exit_code: int = 2
    stdout: str | None = None  # a path stdout is redirected to
    creates: tuple[str, ...] = ()  # files the case may create in its directory
    check: Callable[[Path], None] | None = None  # more to assert about the directory afterwards


def crafted_archive(kind: str) -> Callable[[Path], list]:
    """`summary` of an exported program crafted as HOSTILE_ARCHIVES[kind] says."""
    craft, _ = HOSTILE_ARCHIVES[kind]
    return lambda d: ["summary", craft(d, d / MARKER)]


def formula_named_model(directory: Path) -> str:
    source = (
        "from torch import nn\n\n\ndef net():\n    model = nn.Sequential()\n"
        "    model.add_module('=HYPERLINK(\"http://x\")', nn.Conv2d(3, 4, 3))\n    return model\n"
    )
    return _write(directory / "formula.py", source) + ":net"


def neutralised_csv(directory: Path) -> None:
    """The report names the layer with a leading quote, so a spreadsheet shows it as text."""
    assert "'=HYPERLINK" in (directory / "report.csv").read_text(encoding="utf-8")


CASES = [
    # Code from data files
    *(Case(f"an exported program with {kind}", crafted_archive(kind), "trust-pickle") for kind in HOSTILE_ARCHIVES),
    Case("pickled module in a .pt", lambda d: ["summary", pickled_module(d)], "trust-pickle"),
    Case(
        "payload in a --weights checkpoint",
        lambda d: ["summary", "lenet5", "--weights", checkpoint_with_payload(d)],
        "trust-pickle",
    ),
    # User code that exits
    Case(
        "sys.exit(0) while importing",
        lambda d: ["summary", _write(d / "m.py", "import sys\nsys.exit(0)\n") + ":f"],
        "SystemExit",
    ),
    Case(
        "SystemExit(3) in a factory",
        lambda d: ["summary", factory_file(d, "raise SystemExit(3)") + ":net", "-i", "3x8x8"],
        "SystemExit",
    ),
    Case(
        "argparse in a factory",
        lambda d: [
            "summary",
            factory_file(d, "import argparse\nargparse.ArgumentParser().parse_args(['--x'])") + ":net",
            "-i",
            "3x8x8",
        ],
        "SystemExit",
    ),
    Case(
        "sys.exit(0) in forward", lambda d: ["summary", exiting_forward(d, "sys.exit(0)"), "-i", "3x8x8"], "SystemExit"
    ),
    Case(
        "sys.exit(0) in forward under check",
        lambda d: ["check", exiting_forward(d, "sys.exit(0)"), "--input", "3x8x8", "--max-params", "1M"],
        "SystemExit",
    ),
    # Numbers that overflow
    Case("a batch beyond int64", lambda d: ["summary", "lenet5", "--batch", "99999999999999999999"], "batch"),
    Case(
        "an input beyond int64",
        lambda d: ["summary", "lenet5", "--input", "99999999999999999999999x1x1"],
        "99999999999999999999999",
    ),
    Case("a --fit beyond any batch", lambda d: ["memory", "lenet5", "--fit", "99999999999999999999TB"], "fit"),
    Case(
        "compare at an input past int64",
        lambda d: ["compare", "vgg16", "resnet18", "--input", "3x16384x16384", "--batch", "100000"],
        "",
        exit_code=0,  # exact answers past int64, not a refusal
    ),
    # Models too large to walk
    Case(
        "a model nested past the recursion limit",
        lambda d: ["summary", deeply_nested_model(d), "-i", "3x8x8"],
        "nests its modules too deeply",
    ),
    # Names the file system refuses
    Case("a 300-character model name", lambda d: ["summary", "m" * 300], "m" * 20),
    Case("a 300-character .pt name", lambda d: ["summary", "m" * 300 + ".pt"], "m" * 20),
    Case("a 300-character --weights name", lambda d: ["summary", "lenet5", "--weights", "w" * 300 + ".pt"], "w" * 20),
    Case("a 300-character name to rf", lambda d: ["rf", "m" * 300], "m" * 20),
    Case("a module name with a lone surrogate", lambda d: ["summary", os.fsencode("\udcffmod.py:factory")], "mod.py"),
    # Output
    Case("stdout on a full disk", lambda d: ["summary", "lenet5", "-f", "csv"], "standard output", stdout="/dev/full"),
    Case(
        "-o naming the --weights file",
        lambda d: [
            "summary",
            factory_file(d, "pass") + ":net",
            "-i",
            "3x8x8",
            "--weights",
            state_dict_of_conv(d),
            "-f",
            "csv",
            "-o",
            str(d / "conv.pt"),
        ],
        "conv.pt",
    ),
    Case(
        "-o naming the source of module:factory",
        lambda d: ["summary", importable_module(d, "mymod"), "-i", "3x8x8", "-f", "csv", "-o", "mymod.py"],
        "would overwrite the model file",
    ),
    Case(
        "-o naming the source of package.module:factory",
        lambda d: ["explain", importable_module(d, "pkg.mm"), "-i", "3x8x8", "-f", "markdown", "-o", "pkg/mm.py"],
        "would overwrite the model file",
    ),
    Case(
        "--plot naming the source of module:factory",
        lambda d: ["profile", importable_module(d, "mymod"), "-i", "3x8x8", "--plot", "mymod.py"],
        "would overwrite the model file",
    ),
    Case(
        "--junit naming the source of module:factory",
        lambda d: ["check", importable_module(d, "mymod"), "-i", "3x8x8", "--max-params", "1M", "--junit", "mymod.py"],
        "would overwrite the model file",
    ),
    # Text that leaves archprof
    Case(
        "a module named like a spreadsheet formula",
        lambda d: ["summary", formula_named_model(d), "-i", "3x8x8", "-o", str(d / "report.csv")],
        "",
        exit_code=0,
        creates=("report.csv",),
        check=neutralised_csv,
    ),
    # Budget files
    Case(
        "one limit spelled two ways",
        lambda d: ["check", "--config", budget_file(d, 'max-params = "1M"\nmax_params = "2M"')],
        "max_params",
    ),
]


def _snapshot(directory: Path) -> dict[str, tuple[str, int]]:
    return {
        str(path.relative_to(directory)): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mode)
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stderr: str
    before: dict
    after: dict
    payload_ran: bool  # MARKER exists in the case's directory (a file or a folder)


def _run(case: Case, directory: Path, argv: list) -> Outcome:
    before = _snapshot(directory)
    stdout = open(case.stdout, "w") if case.stdout else subprocess.DEVNULL  # noqa: SIM115
    try:
        done = subprocess.run(
            [os.fsencode(sys.executable), b"-m", b"archprof", *(os.fsencode(a) for a in argv)],
            cwd=directory,
            stdout=stdout,
            stderr=subprocess.PIPE,
            timeout=300,
            env={**os.environ, "COLUMNS": "160", "PYTHONPATH": str(Path(__file__).parent.parent)},
        )
    finally:
        if case.stdout:
            stdout.close()
    if case.check is not None and done.returncode == case.exit_code:
        case.check(directory)
    stderr = done.stderr.decode("utf-8", "backslashreplace")
    return Outcome(done.returncode, stderr, before, _snapshot(directory), (directory / MARKER).exists())


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, Outcome]:
    """Every case: its files crafted here, one after another (torch.export is not
    thread-safe), then its process run, two at a time."""
    root = tmp_path_factory.mktemp("hostile")
    prepared = []
    for index, case in enumerate(CASES):
        directory = root / f"case{index}"
        directory.mkdir()
        prepared.append((case, directory, case.argv(directory)))
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {case.id: pool.submit(_run, case, directory, argv) for case, directory, argv in prepared}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_cli_input(case: Case, outcomes):
    outcome = outcomes[case.id]
    lines = outcome.stderr.strip().splitlines()
    assert outcome.returncode == case.exit_code, outcome.stderr
    assert "Traceback" not in outcome.stderr and "Exception ignored" not in outcome.stderr, outcome.stderr
    assert len(lines) <= 1, outcome.stderr
    if case.exit_code == 2:
        assert lines and lines[0].startswith("error: "), outcome.stderr
        assert case.says.lower() in lines[0].lower(), lines[0]
    assert not outcome.payload_ran, "the payload ran"
    created = set(outcome.after) - set(outcome.before)
    assert created <= set(case.creates), f"files created: {sorted(created - set(case.creates))}"
    changed = {name for name in outcome.before if outcome.after.get(name) != outcome.before[name]}
    assert not changed, f"files changed or removed: {sorted(changed)}"


# -- the API -------------------------------------------------------------------------------

API_CASES = [
    *(
        (
            f"an exported program with {kind}",
            lambda d, craft=craft: archprof.analyze(str(craft(d, d / MARKER))),
            "trust",
        )
        for kind, (craft, _) in HOSTILE_ARCHIVES.items()
    ),
    ("a pickled module", lambda d: archprof.analyze(pickled_module(d)), "trust"),
    ('trust_pickle="false"', lambda d: archprof.analyze(pickled_module(d), trust_pickle="false"), "trust_pickle"),
    (
        "trust_pickle=1 with weights",
        lambda d: archprof.analyze("lenet5", weights=checkpoint_with_payload(d), trust_pickle=1),
        "trust_pickle",
    ),
    (
        "SystemExit in a factory",
        lambda d: archprof.analyze(factory_file(d, "sys.exit(3)") + ":net", (3, 8, 8)),
        "SystemExit",
    ),
    ("SystemExit in forward", lambda d: archprof.analyze(exiting_forward(d, "sys.exit(0)"), (3, 8, 8)), "SystemExit"),
    ("batch=True", lambda d: archprof.analyze("lenet5", batch=True), "batch"),
    ("batch=2.0", lambda d: archprof.analyze("lenet5", batch=2.0), "batch"),
    ("dtype=torch.int8", lambda d: archprof.analyze("lenet5", dtype=torch.int8), "dtype"),
    ("rollup(-1)", lambda d: archprof.analyze("lenet5").rollup(-1), "depth"),
]


@pytest.mark.parametrize(("call", "says"), [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_hostile_api_input(call, says, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(archprof.ArchprofError, match=says):
        call(tmp_path)
    assert not (tmp_path / MARKER).exists(), "the payload ran"
