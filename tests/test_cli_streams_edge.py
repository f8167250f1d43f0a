"""The CLI's streams at their edges: a Ctrl-C that the model's code swallows (as torch's C init
does with one raised inside its own import of numpy) still ends the command as Ctrl-C does; a
standard output whose encoding lacks archprof's glyphs (ASCII, Latin-1) gets the report, not a
traceback; a dumb terminal's tables fit its width, as any terminal's do."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archprof.cli import app

ROOT = Path(__file__).parent.parent


def archprof(*args, cwd=None, **env) -> subprocess.CompletedProcess:
    """`python -m archprof ARGS` in a process of its own, its output as bytes."""
    environment = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | {"PYTHONPATH": str(ROOT), **env}
    command = [sys.executable, "-m", "archprof", *args]
    return subprocess.run(command, capture_output=True, env=environment, cwd=cwd, timeout=300)


# -- Ctrl-C swallowed ------------------------------------------------------------------------

# Each factory gets SIGINT from its own process and swallows the KeyboardInterrupt Python raises
# for it, as torch's C init does; `raise_signal` delivers it before the call returns.
SWALLOWING_MODELS = """
import signal

import torch


def swallow_ctrl_c():
    try:
        signal.raise_signal(signal.SIGINT)
    except KeyboardInterrupt:
        pass


def in_constructor():
    swallow_ctrl_c()
    return torch.nn.Linear(4, 2)


class InForward(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        swallow_ctrl_c()
        return self.fc(x)


def in_forward():
    return InForward()


def then_fails():
    # As a half-imported numpy fails next: "cannot load module more than once per process".
    swallow_ctrl_c()
    raise ImportError("cannot load module more than once per process")
"""


@pytest.mark.parametrize("factory", ["in_constructor", "in_forward", "then_fails"])
@pytest.mark.parametrize("command", ["summary", "memory"])
def test_a_swallowed_ctrl_c_ends_the_command_as_ctrl_c(tmp_path, factory, command):
    """README, Exit codes: "`130`: interrupted by Ctrl-C, said in one line on stderr"; never a traceback."""
    (tmp_path / "swallowing.py").write_text(SWALLOWING_MODELS)
    done = archprof(command, f"swallowing.py:{factory}", "--input", "4", cwd=tmp_path)
    assert done.returncode == 130, done.stderr.decode()
    assert done.stderr.decode().splitlines()[-1] == "interrupted (Ctrl-C)"
    assert b"Traceback" not in done.stderr


RAISING_MODEL = """
import signal

import torch


def net():
    signal.raise_signal(signal.SIGINT)
    return torch.nn.Linear(4, 2)
"""


def test_a_ctrl_c_raised_as_python_raises_it_ends_the_command_as_before(tmp_path):
    """Not swallowed: the command stops where the KeyboardInterrupt was raised, one line, 130."""
    (tmp_path / "raising.py").write_text(RAISING_MODEL)
    done = archprof("summary", "raising.py:net", "--input", "4", cwd=tmp_path)
    assert (done.returncode, done.stderr, done.stdout) == (130, b"interrupted (Ctrl-C)\n", b"")


def test_the_callers_sigint_handler_is_back_after_a_command():
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    result = CliRunner().invoke(app, ["summary", "lenet5", "-f", "csv"])
    assert result.exit_code == 0, result.output
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_command_outside_the_main_thread_runs_with_the_callers_handler():
    """signal.signal raises ValueError outside the main thread: the command runs as before."""
    results = []
    thread = threading.Thread(
        target=lambda: results.append(CliRunner().invoke(app, ["summary", "lenet5", "-f", "csv"]))
    )
    thread.start()
    thread.join()
    assert results[0].exit_code == 0, results[0].output
    assert results[0].stdout.startswith("layer,")


# -- an encoding without archprof's glyphs ---------------------------------------------------

GLYPH_COMMANDS = {
    "summary": ["summary", "lenet5"],  # the · of the title
    "markdown": ["summary", "lenet5", "-f", "markdown"],
    "memory": ["memory", "lenet5"],  # ◀ peak
    "diff": ["diff", "lenet5", "alexnet"],  # lenet5 → alexnet
    "compare": ["compare", "lenet5", "alexnet"],
}


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
@pytest.mark.parametrize("command", GLYPH_COMMANDS)
def test_a_standard_output_without_the_glyphs_gets_the_report(encoding, command):
    done = archprof(*GLYPH_COMMANDS[command], PYTHONIOENCODING=encoding, COLUMNS="200")
    assert (done.returncode, b"Traceback" in done.stderr) == (0, False), done.stderr.decode()
    report = done.stdout.decode(encoding)
    assert "lenet5" in report
    # A table's lines, each box's, as wide as its top line: what stands in for a glyph
    # takes its one cell, so the columns still line up.
    boxes = re.findall(r"^\+-.*\+\n(?:[|+].*\n)+", report, flags=re.MULTILINE)
    assert boxes or command == "markdown"
    for box in boxes:
        assert len({len(line) for line in box.splitlines()}) == 1, box


def test_a_c_locale_without_utf8_mode_gets_the_report():
    done = archprof("memory", "lenet5", LC_ALL="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0", PYTHONIOENCODING="")
    assert (done.returncode, b"Traceback" in done.stderr) == (0, False), done.stderr.decode()
    assert done.stdout.isascii() and b"lenet5" in done.stdout


CYRILLIC_MODEL = """
from collections import OrderedDict

import torch


def net():
    return torch.nn.Sequential(OrderedDict([("свёртка", torch.nn.Linear(4, 2))]))
"""


def test_a_name_the_encoding_lacks_is_written_as_its_escape(tmp_path):
    """Not a glyph of archprof's: a layer's name in Cyrillic shows as its escape, as `say` writes it."""
    (tmp_path / "named.py").write_text(CYRILLIC_MODEL)
    done = archprof("summary", "named.py:net", "--input", "4", cwd=tmp_path, PYTHONIOENCODING="ascii", COLUMNS="200")
    assert done.returncode == 0, done.stderr.decode()
    assert "свёртка".encode("ascii", "backslashreplace") in done.stdout


GLYPH_NAMED_MODEL = """
from collections import OrderedDict

import torch


def net():
    return torch.nn.Sequential(OrderedDict([("a·b", torch.nn.Linear(4, 4)), ("a-b", torch.nn.Linear(4, 2))]))
"""


@pytest.mark.parametrize("format", ["csv", "markdown"])
def test_data_on_an_ascii_output_keeps_every_name_apart(tmp_path, format):
    """CSV and Markdown are data: a layer named with a character archprof also draws (·) is
    written as its escape there, not as the ASCII stand-in that would make it another's name."""
    (tmp_path / "named.py").write_text(GLYPH_NAMED_MODEL)
    done = archprof("summary", "named.py:net", "--input", "4", "-f", format, cwd=tmp_path, PYTHONIOENCODING="ascii")
    assert done.returncode == 0, done.stderr.decode()
    for name in ("a·b", "a-b"):
        assert name.encode("ascii", "backslashreplace") in done.stdout


# -- a dumb terminal -------------------------------------------------------------------------


def widest_line_on_a_terminal(columns: int, **env) -> int:
    """The widest line `archprof summary lenet5` writes to a pseudo-terminal `columns` wide."""
    environment = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | {"PYTHONPATH": str(ROOT), **env}
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    command = [sys.executable, "-m", "archprof", "summary", "lenet5"]
    process = subprocess.Popen(command, stdin=terminal, stdout=terminal, stderr=terminal, env=environment)
    os.close(terminal)
    written = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the process has gone, and the terminal with it
            break
        if not chunk:
            break
        written += chunk
    os.close(controller)
    assert process.wait(timeout=300) == 0, written.decode()
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", written.decode())
    return max(len(line) for line in re.split(r"[\r\n]", text))


@pytest.mark.parametrize("term", ["xterm", "dumb"])
def test_a_table_fits_the_terminal_whatever_its_term(term):
    """README: "On a terminal a table fits its width"; Rich takes any dumb terminal for 80 columns."""
    assert widest_line_on_a_terminal(40, TERM=term) <= 40


def test_columns_sets_a_dumb_terminals_width_as_any_terminals():
    """README: with COLUMNS set a table "fits that width, as on a terminal"."""
    assert widest_line_on_a_terminal(120, TERM="dumb", COLUMNS="40") <= 40
