"""The caller's random number generators, as they were: a real run of a model (random
weights, random inputs, dropout in a measured training step) draws from a fork of them;
and how a real run draws its inputs (`real_input`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from archprof.errors import memory_for
from archprof.units import tensor_text

# What an analysis traced with a real forward draws its random weights and inputs from:
# a model whose shapes depend on values (a detector's kept boxes) gets the same figures in
# every run and every worker process (a fresh process's generator starts from a random seed).
REAL_TRACE_SEED = 0


@contextmanager
def random_state_kept(device: torch.device, seed: int | None = None) -> Iterator[None]:
    """`torch.random.fork_rng` for a run on `device`: the CPU's generator, and a GPU's where
    `device` is one (the CPU's alone for any other, meta included), are put back as they
    were when the block ends, so that a script that seeds torch draws the same numbers after
    an archprof run as without it. With `seed`, the block draws from those generators seeded so."""
    gpus = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=gpus):
        if seed is not None:
            torch.random.default_generator.manual_seed(seed)
            for gpu in gpus:
                torch.cuda.default_generators[gpu].manual_seed(seed)
        yield


def real_input(shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An input of a real forward: normal floats; integers (token ids, masks) 0, always valid.
    A real trace and every real run of its analysis (`archprof.measure`) draw their inputs so,
    in the same order, so that a model whose shapes follow its values runs as it was traced."""
    with memory_for(f"the input {tensor_text(shape, dtype)} on {device}"):
        if dtype.is_floating_point or dtype.is_complex:
            return torch.randn(shape, dtype=dtype, device=device)
        return torch.zeros(shape, dtype=dtype, device=device)
