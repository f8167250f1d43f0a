"""`explain` works each figure out truly: the terms it adds make its result, the arithmetic it
shows gives the number PyTorch computes, and a formula is a rule of the operator, not a
factorisation that happens to fit. Oracles: a real forward's sizes, Python's double-precision
arithmetic (PyTorch's for a scale factor), a module's own parameters, and the fused
attention's gradient counted by hand."""

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

import archprof
from archprof.explain import explain


class UnusedProjection(nn.Module):
    """An attention whose `out_proj` is never called as a module: its parameters are read by
    the attention's own row, which counts them."""

    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(12, 3, batch_first=True)

    def forward(self, x):
        return self.mha(x, x, x)[0]


def test_a_module_never_called_whose_parameters_another_row_counts_adds_none_of_them():
    """It showed `parameters = 144 (mha.out_proj.weight) + 12 (mha.out_proj.bias) = 0`."""
    model = UnusedProjection()
    report = archprof.analyze(model, input_size=(6, 12))
    text = explain(report, "mha.out_proj (not called)")
    assert "parameters = 0\n" in text
    row = report.columns["layer"].index("mha")
    for name in ("mha.out_proj.weight", "mha.out_proj.bias"):
        assert f"{name}: counted on row {row + 1} (mha), the first to use it" in text
    assert report.columns["param_count"][row] == sum(p.numel() for p in model.parameters())


def test_a_scale_factors_output_size_is_worked_out_in_the_double_precision_pytorch_takes_it_in():
    """`floor(100 · 1.15) = 114` read wrong: 100 · 1.15 is 114.99999999999999 in a double."""
    model = nn.Upsample(scale_factor=1.15, mode="nearest")
    text = explain(archprof.analyze(model, input_size=(3, 100, 100)), "(model)")
    real = model(torch.zeros(1, 3, 100, 100)).shape[-1]
    (product,) = set(
        re.findall(r"H_out = floor\(H_in · scale_h\) = floor\(100 · 1\.15\) = floor\(([0-9.]+)\) = (\d+)", text)
    )
    assert float(product[0]) == 100 * 1.15 and math.floor(float(product[0])) == int(product[1]) == real


class Attention(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width
        self.project = nn.Linear(3, 2 * width)

    def forward(self, x):
        q = self.project(x).view(1, 6, 2, self.width).transpose(1, 2)
        return F.scaled_dot_product_attention(q, q, q)


def test_the_fused_attentions_gradient_is_worked_out_per_score_whatever_the_head_width():
    """Its elementwise FLOPs read `9 per input element · numel(in)` at a head width of 4 and
    `12 per input element` at 3: 432 both times, 6 per score, which divided each input."""
    for width in (3, 4):
        text = explain(archprof.analyze(Attention(width), input_size=(6, 3), training=True), "#2")
        scores = 1 * 2 * 6 * 6  # batch · heads · queries · keys
        assert f"scores = B · Hq · L · S = 1 · 2 · 6 · 6 = {scores}" in text
        macs = scores * (3 * width + 2 * width)  # Q K^T again, dP, dV, dQ, dK
        assert f"= {scores} · (3 · {width} + 2 · {width}) = {macs:,}" in text
        assert f"= 6 · {scores} = {6 * scores}" in text
        assert "per input element" not in text.split("flash_attention_for_cpu_backward")[1].split("\n\n")[0]
        assert " @ " not in next(line for line in text.splitlines() if "flash_attention_for_cpu_backward:" in line)
