"""The caller's random number generators, as they were: a real run of a model (random
weights, random inputs, dropout in a measured training step) draws from a fork of them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def random_state_kept(device: torch.device) -> Iterator[None]:
    """`torch.random.fork_rng` for a run on `device`: the CPU's generator, and a GPU's where
    `device` is one (the CPU's alone for any other, meta included), are put back as they
    were when the block ends, so that a script that seeds torch draws the same numbers after
    an archprof run as without it."""
    gpus = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=gpus):
        yield
