"""Ctrl-C and SIGTERM end a command whose main thread cannot answer them: a TorchScript
forward that loops forever runs in torch's interpreter, where Python's handlers never run,
and the process went on after SIGTERM until killed. A model file's loops answer them: each
iteration counts itself in archprof's Python (`archprof.tracing.script_loops`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from archprof.cli.unanswered_signals import ANSWER_WITHIN

ROOT = Path(__file__).parent.parent

# A ScriptModule a Python file makes: its loops, the user's own code, are not counted.
_SCRIPTED_BY_CODE = """import torch


class LoopsForever(torch.nn.Module):
    def forward(self, x):
        i = 0
        while i >= 0:
            i += 1
        return x + 1


def scripted():
    return torch.jit.script(LoopsForever())
"""


class _LoopsALongWhile(nn.Module):
    def forward(self, x):
        text = ""
        while len(text) >= 0:  # each time round longer: far from the bound on iterations
            text = text + "ab"
        return x + 1


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _signalled(command: list[str], signum: int) -> tuple[int, str]:
    """`archprof` run with `command`, sent `signum` once in the forward; its status and last line."""
    environment = os.environ | {"PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "archprof", *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment
    )
    try:
        # In the loop for a while: the import and the load take under 8 s of CPU time.
        started = time.monotonic()
        while _cpu_seconds(process.pid) < 8 and time.monotonic() - started < 120:
            time.sleep(0.2)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=ANSWER_WITHIN + 20)
    finally:
        process.kill()
    return process.returncode, stderr.decode().strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("signum", "said", "status"), [(signal.SIGTERM, "terminated", 143), (signal.SIGINT, "interrupted (Ctrl-C)", 130)]
)
def test_a_signal_the_model_cannot_answer_ends_the_command(tmp_path, signum, said, status):
    code = tmp_path / "loop_code.py"
    code.write_text(_SCRIPTED_BY_CODE)
    returned, last_line = _signalled(["summary", f"{code}:scripted", "--input", "3x8x8"], signum)
    assert returned == status
    assert last_line == f"{said}: the model's code did not stop (native code?), ended at once"


@pytest.mark.parametrize(
    ("signum", "said", "status"),
    [(signal.SIGTERM, "terminated", -signal.SIGTERM), (signal.SIGINT, "interrupted (Ctrl-C)", 130)],
)
def test_a_model_files_loop_answers_a_signal(tmp_path, signum, said, status):
    """Answered as anywhere else (SIGTERM ends the process by itself, once said), not taken for
    the model's failure: the interpreter hands on what the handler raised as a RuntimeError."""
    path = tmp_path / "loop.pt"
    torch.jit.script(_LoopsALongWhile()).save(str(path))
    assert _signalled(["summary", str(path), "--input", "3x8x8"], signum) == (status, said)
