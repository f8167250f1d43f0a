"""Ctrl-C and SIGTERM end a command whose main thread cannot answer them: a TorchScript
forward that loops forever runs in torch's interpreter, where Python's handlers never run,
and the process went on after SIGTERM until killed."""

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


class _LoopsForever(nn.Module):
    def forward(self, x):
        i = 0
        while i >= 0:
            i += 1
        return x + 1


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.mark.parametrize(
    ("signum", "said", "status"), [(signal.SIGTERM, "terminated", 143), (signal.SIGINT, "interrupted (Ctrl-C)", 130)]
)
def test_a_signal_the_model_cannot_answer_ends_the_command(tmp_path, signum, said, status):
    path = tmp_path / "loop.pt"
    torch.jit.script(_LoopsForever()).save(str(path))
    environment = os.environ | {"PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "archprof", "summary", str(path), "--input", "3x8x8"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment)
    try:
        # In the loop for a while: the import and the load take under 8 s of CPU time.
        started = time.monotonic()
        while _cpu_seconds(process.pid) < 8 and time.monotonic() - started < 120:
            time.sleep(0.2)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=ANSWER_WITHIN + 20)
    finally:
        process.kill()
    assert process.returncode == status
    assert (
        stderr.decode().strip().splitlines()[-1]
        == f"{said}: the model's code did not stop (native code?), ended at once"
    )
