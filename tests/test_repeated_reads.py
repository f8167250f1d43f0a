"""The elements a CPU kernel reads over and over (`repeated_reads`), for the kernels a model
file's forward can call but no test file runs long enough to time: the fused ones at least the
multiply-adds the same computation takes through the operators it fuses, as PyTorch's
FlopCounterMode counts them (two flops each) on that unfused road; each product at least
FlopCounterMode's count of it, each pooling at least its output's windows, each linear-algebra
function at least the cube of its matrix's side."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from archprof.repeated_reads import repeated_reads
from archprof.structure import tensors_in

ROOT = Path(__file__).resolve().parent.parent

aten = torch.ops.aten


def _multiply_adds(module: nn.Module, *inputs: torch.Tensor) -> int:
    """The module's multiply-adds on the unfused road (training mode: no fast path)."""
    module.train()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(*inputs)
    return counter.get_total_flops() // 2


def test_the_fused_multi_head_attention_reads_at_least_its_multiply_adds():
    attention = nn.MultiheadAttention(32, 4, batch_first=True, dropout=0.0)
    query, key = torch.ones(2, 10, 32), torch.ones(2, 7, 32)
    args = (
        query, key, key, 32, 4, attention.in_proj_weight, attention.in_proj_bias,
        attention.out_proj.weight, attention.out_proj.bias,
    )  # fmt: skip
    fused = aten._native_multi_head_attention.default
    assert repeated_reads(fused, list(tensors_in(args)), args) >= _multiply_adds(attention, query, key, key)


def test_the_fused_encoder_layer_reads_at_least_its_multiply_adds():
    layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.0, batch_first=True)
    source = torch.ones(2, 10, 32)
    attention = layer.self_attn
    args = (
        source, 32, 4, attention.in_proj_weight, attention.in_proj_bias, attention.out_proj.weight,
        attention.out_proj.bias, False, False, 1e-5, layer.norm1.weight, layer.norm1.bias, layer.norm2.weight,
        layer.norm2.bias, layer.linear1.weight, layer.linear1.bias, layer.linear2.weight, layer.linear2.bias,
    )  # fmt: skip
    fused = aten._transformer_encoder_layer_fwd.default
    assert repeated_reads(fused, list(tensors_in(args)), args) >= _multiply_adds(layer, source)


def test_a_time_convolution_reads_at_least_its_multiply_adds():
    """conv_tbc's (time, batch, in) by (kernel, in, out), against conv1d's count of the same."""
    data, weight = torch.ones(20, 3, 8), torch.ones(5, 8, 6)
    args = (data, weight, torch.zeros(6), 0)
    convolution = nn.Conv1d(8, 6, 5, bias=False)
    count = repeated_reads(aten.conv_tbc.default, [data, weight, args[2]], args)
    assert count >= _multiply_adds(convolution, data.permute(1, 2, 0))


class _Reached(TorchDispatchMode):
    """Each operator a call reaches, with its tensors and positional arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append((func, list(tensors_in(args)), args))
        return func(*args, **(kwargs or {}))


def _counted(call) -> tuple[list[int], list[str], object]:
    """`call()` on the CPU, without gradients: each operator it reaches counted as
    `repeated_reads` counts it (0 for one reading each operand once), their names, and what
    the call returned."""
    reached = _Reached()
    with reached, torch.no_grad():
        result = call()
    counts = [repeated_reads(func, tensors, args) or 0 for func, tensors, args in reached.calls]
    return counts, [str(func) for func, _, _ in reached.calls], result


_SIDE = 6
_MATRIX = torch.eye(_SIDE) * 2 + torch.ones(_SIDE, _SIDE)  # symmetric, positive definite
_RIGHT = torch.ones(_SIDE, 2)
_MATRIX_CALLS = {
    "cholesky": lambda: torch.linalg.cholesky(_MATRIX),
    # torch.cholesky, where torch still has it (2.14 removed the function and its operator).
    **({"cholesky, deprecated": lambda: torch.cholesky(_MATRIX)} if hasattr(torch.ops.aten, "cholesky") else {}),
    "inv": lambda: torch.linalg.inv(_MATRIX),
    "pinv": lambda: torch.linalg.pinv(_MATRIX),
    "svd": lambda: torch.linalg.svd(_MATRIX),
    "eigh": lambda: torch.linalg.eigh(_MATRIX),
    "eig": lambda: torch.linalg.eig(_MATRIX),
    "qr": lambda: torch.linalg.qr(_MATRIX),
    "lu_factor": lambda: torch.linalg.lu_factor(_MATRIX),
    "ldl_factor": lambda: torch.linalg.ldl_factor(_MATRIX),
    "solve": lambda: torch.linalg.solve(_MATRIX, _RIGHT),
    "lstsq": lambda: torch.linalg.lstsq(_MATRIX, _RIGHT),
    "solve_triangular": lambda: torch.linalg.solve_triangular(_MATRIX, _RIGHT, upper=True),
    "det": lambda: torch.linalg.det(_MATRIX),
    "slogdet": lambda: torch.linalg.slogdet(_MATRIX),
    "matrix_exp": lambda: torch.linalg.matrix_exp(_MATRIX),
}


@pytest.mark.filterwarnings("ignore:torch.cholesky is deprecated")
@pytest.mark.parametrize("name", _MATRIX_CALLS)
def test_each_linear_algebra_function_reaches_an_operator_counted_at_its_cube(name):
    """A decomposition, inverse or solve of an n x n matrix takes about n^3 steps, run inside one
    CPU kernel: the operator a call reaches (under a dispatch mode, the oracle) counts at least that."""
    counts, operators, _ = _counted(_MATRIX_CALLS[name])
    assert max(counts) >= _SIDE**3, operators


_IMAGE, _CLIP = torch.ones(2, 3, 12, 12), torch.ones(1, 3, 6, 8, 8)
_ROWS, _BATCHES = torch.ones(16, 24), torch.ones(4, 16, 24)
_TOKENS = torch.ones(1, 2, 32, 8)
_PRODUCT_CALLS = {
    "conv2d": lambda: F.conv2d(_IMAGE, torch.ones(5, 3, 3, 3), padding=1),
    "conv2d, strided and dilated": lambda: F.conv2d(_IMAGE, torch.ones(5, 3, 3, 3), stride=2, dilation=2),
    "conv2d, grouped": lambda: F.conv2d(_IMAGE.repeat(1, 2, 1, 1), torch.ones(6, 3, 3, 3), groups=2),
    "conv1d": lambda: F.conv1d(_ROWS.unsqueeze(0), torch.ones(4, 16, 5)),
    "conv3d": lambda: F.conv3d(_CLIP, torch.ones(4, 3, 3, 3, 3)),
    "conv_transpose2d": lambda: F.conv_transpose2d(_IMAGE, torch.ones(3, 5, 4, 4), stride=2),
    "linear": lambda: F.linear(_ROWS, torch.ones(7, 24)),
    "matmul": lambda: _BATCHES @ torch.ones(24, 9),
    "bmm": lambda: torch.bmm(_BATCHES, torch.ones(4, 24, 9)),
    "baddbmm": lambda: torch.baddbmm(torch.zeros(4, 16, 9), _BATCHES, torch.ones(4, 24, 9)),
    "einsum": lambda: torch.einsum("bij,bjk->bik", _BATCHES, torch.ones(4, 24, 9)),
}


@pytest.mark.parametrize("name", _PRODUCT_CALLS)
def test_each_product_reaches_operators_counted_at_least_at_its_multiply_adds(name):
    """The oracle: FlopCounterMode's count of the same call (two flops a multiply-add), against
    the operators it reaches on a CPU, each counted as `repeated_reads` counts it."""
    with FlopCounterMode(display=False) as counter:
        counts, _, _ = _counted(_PRODUCT_CALLS[name])
    assert counter.get_total_flops() > 0 and sum(counts) >= counter.get_total_flops() // 2


def test_cpu_flash_attention_reads_at_least_the_multiply_adds_of_its_math_road():
    """FlopCounterMode counts nothing of the CPU's flash attention kernel: its oracle is the
    same attention on the math road (products FlopCounterMode counts)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        F.scaled_dot_product_attention(_TOKENS, _TOKENS, _TOKENS)
    counts, operators, _ = _counted(lambda: F.scaled_dot_product_attention(_TOKENS, _TOKENS, _TOKENS))
    assert operators == ["aten._scaled_dot_product_flash_attention_for_cpu.default"]
    assert counter.get_total_flops() > 0 and counts[0] >= counter.get_total_flops() // 2


_POOLS = {
    "max_pool1d": (lambda: F.max_pool1d(_ROWS.unsqueeze(0), 5, 1), 5),
    "avg_pool1d": (lambda: F.avg_pool1d(_ROWS.unsqueeze(0), 5, 2), 5),
    "max_pool2d": (lambda: F.max_pool2d(_IMAGE, 3, 1, padding=1), 3 * 3),
    "avg_pool2d": (lambda: F.avg_pool2d(_IMAGE, (2, 4), 1), 2 * 4),
    "lp_pool2d": (lambda: F.lp_pool2d(_IMAGE, 2, 3, 1), 3 * 3),
    "fractional_max_pool2d": (lambda: F.fractional_max_pool2d(_IMAGE, 3, output_size=5), 3 * 3),
    "max_pool3d": (lambda: F.max_pool3d(_CLIP, 3, 1), 3 * 3 * 3),
    "avg_pool3d": (lambda: F.avg_pool3d(_CLIP, 2, 1), 2 * 2 * 2),
}


@pytest.mark.parametrize("name", _POOLS)
def test_each_pooling_reaches_operators_counted_at_least_at_its_windows_elements(name):
    """The oracle: each output element of the call, as torch computes it, reads a window of
    the kernel's size."""
    call, window = _POOLS[name]
    counts, _, output = _counted(call)
    assert sum(counts) >= output.numel() * window


_WITHOUT_CHOLESKY = """
import torch
namespace = type(torch.ops.aten)
found = namespace.__getattr__
def without_cholesky(self, name):
    if name == "cholesky":
        raise AttributeError(name)
    return found(self, name)
vars(torch.ops.aten).pop("cholesky", None)
namespace.__getattr__ = without_cholesky
import archprof.repeated_reads as reads
print(sorted(str(op) for op in reads._MATRIX_FUNCTIONS if "cholesky" in str(op)))
"""


def test_archprof_imports_under_a_torch_without_aten_cholesky():
    """torch 2.14 dropped aten.cholesky (torch.cholesky's operator): looking it up at import made
    every archprof command a traceback. Here it is taken away, in a fresh process."""
    done = subprocess.run([sys.executable, "-c", _WITHOUT_CHOLESKY], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['aten._cholesky_solve_helper', 'aten.cholesky_inverse', 'aten.linalg_cholesky_ex']"
