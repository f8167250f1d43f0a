"""`archprof.count_operator`: a custom operator of the user's own (torch.library), which the
catalogue does not know, counted by the formulas given for it, in the API and in the CLI (a
model file that counts it as it defines it, which the CLI imports, as `compare`'s workers do).

The oracle for the counts: the lecture's matrix product, m·k·n MACs, and FlopCounterMode on
the operator's own computation run for real (its `a @ b`), to which the custom operator is
one opaque call."""

import math
import textwrap

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from torch.utils.flop_counter import FlopCounterMode

import archprof
from archprof.errors import ArchprofError
from archprof.explain import explain
from archprof.operators import GIVEN_FORMULAS, find_operator, operator_named
from tests.cli import cli, one_error_line


@torch.library.custom_op("archprof_tests::scaled_mm", mutates_args=())
def scaled_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a @ b) * 2


@scaled_mm.register_fake
def _(a, b):
    return a.new_empty((a.shape[0], b.shape[1]))


NAME = "archprof_tests.scaled_mm"


class Head(nn.Module):
    """A (48, 10) weight's product by a custom operator, then a ReLU."""

    def __init__(self, product=scaled_mm):
        super().__init__()
        self.product = product
        self.w = nn.Parameter(torch.randn(48, 10))

    def forward(self, x):
        return self.product(x.flatten(1), self.w).relu()


@pytest.fixture(autouse=True)
def uncounted():
    """Each test starts, and leaves, with this file's operators unknown to archprof."""
    yield
    for name in [name for name in GIVEN_FORMULAS if name.startswith("archprof_tests.")]:
        del GIVEN_FORMULAS[name]
    find_operator.cache_clear()
    operator_named.cache_clear()


def _matmul_macs(a, b, *, out):
    return a[0] * a[1] * b[1]


def test_an_operator_archprof_does_not_know_is_not_counted_until_formulas_are_given():
    before = archprof.analyze(Head(), input_size=(3, 4, 4)).totals
    assert before.not_counted == {NAME: 1}
    assert before.macs == 0

    archprof.count_operator(torch.ops.archprof_tests.scaled_mm, macs=_matmul_macs)
    after = archprof.analyze(Head(), input_size=(3, 4, 4)).totals
    assert after.not_counted == {}
    with FlopCounterMode(display=False) as counter:
        torch.randn(1, 48) @ torch.randn(48, 10)  # what the operator computes
    assert after.macs == 1 * 48 * 10 == counter.get_total_flops() // 2
    assert after.elementwise_flops == before.elementwise_flops == 10  # the ReLU's, one per element


@pytest.mark.parametrize(
    "operator", [scaled_mm, torch.ops.archprof_tests.scaled_mm.default, "archprof_tests::scaled_mm"]
)
def test_the_operator_is_named_by_its_function_an_overload_or_its_name(operator):
    archprof.count_operator(operator, macs=7, elementwise_flops=lambda a, b, *, out: 2 * out[0] * out[1])
    totals = archprof.analyze(Head(), input_size=(3, 4, 4)).totals
    assert totals.macs == 7
    assert totals.elementwise_flops == 2 * 10 + 10  # the formula's, and the ReLU's


def test_counting_it_again_replaces_its_formulas():
    archprof.count_operator(scaled_mm, macs=1)
    archprof.count_operator(scaled_mm, macs=_matmul_macs)
    assert archprof.analyze(Head(), input_size=(3, 4, 4)).totals.macs == 480


@pytest.mark.parametrize(
    ("operator", "said"),
    [
        ("aten::convolution", "archprof counts aten.convolution already"),
        (torch.ops.aten.relu, "archprof counts aten.relu already"),
        ("archprof_tests::missing", "no operator 'archprof_tests::missing' is registered with torch"),
        ("scaled_mm", "count_operator takes an operator"),
        (3, "count_operator takes an operator"),
    ],
)
def test_an_operator_archprof_counts_or_torch_does_not_know_is_refused(operator, said):
    with pytest.raises(ArchprofError, match=said.replace("(", r"\(").replace(".", r"\.")):
        archprof.count_operator(operator, macs=1)


@pytest.mark.parametrize("count", [-1, 2.5, True, "3", None])
def test_a_count_that_is_not_a_whole_number_is_refused_when_given(count):
    with pytest.raises(ArchprofError, match="give a whole number or a function"):
        archprof.count_operator(scaled_mm, macs=count)


@pytest.mark.parametrize(
    ("formula", "said"),
    [
        (lambda a, b, *, out: -1, "returned -1, not a whole number"),
        (lambda a, b, *, out: 1.5, "returned 1.5, not a whole number"),
        (lambda a, *, out: 1, r"failed on \(\(1, 48\), \(48, 10\), out=\(1, 10\)\): TypeError"),
    ],
)
def test_a_formula_that_fails_or_gives_no_count_is_an_error_naming_the_operator(formula, said):
    archprof.count_operator(scaled_mm, macs=formula)
    with pytest.raises(ArchprofError, match=f"the macs formula given for {NAME} {said}"):
        archprof.analyze(Head(), input_size=(3, 4, 4))


def test_explain_works_the_count_out_with_the_formula_named():
    archprof.count_operator(scaled_mm, macs=_matmul_macs)
    text = explain(archprof.analyze(Head(), input_size=(3, 4, 4)), "(model)")
    assert "archprof_tests.scaled_mm: counted by formulas given to archprof.count_operator" in text
    assert "MACs = _matmul_macs(1x48, 48x10, out=1x10) = 480" in text


# A model file that defines its operator and counts it by a formula that fails.
_MODEL_FILE = """
    import torch
    from torch import nn

    import archprof


    @torch.library.custom_op("archprof_file::scaled_mm", mutates_args=())
    def scaled_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a @ b) * 2


    @scaled_mm.register_fake
    def _(a, b):
        return a.new_empty((a.shape[0], b.shape[1]))


    archprof.count_operator(scaled_mm, macs=lambda a, b, *, out: {macs})


    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(48, 10))

        def forward(self, x):
            return scaled_mm(x.flatten(1), self.w)


    def head():
        return Head()
"""


def _model_file(tmp_path, macs: str):
    path = tmp_path / "custom_head.py"
    path.write_text(textwrap.dedent(_MODEL_FILE.format(macs=macs)))
    return f"{path}:head"


def test_the_readmes_model_file_that_counts_its_operator_is_counted_by_summary_and_compare():
    """tests/fixtures/custom_operator.py: a 3x3 convolution to 4 channels at 8x8, then its
    operator's (1, 256) @ (256, 10) product, scaled."""
    model = "tests/fixtures/custom_operator.py:scaled_head"
    summary = cli("summary", model, "--input", "3x8x8", "-f", "json")
    assert summary.exit_code == 0, summary.output
    with FlopCounterMode(display=False) as counter:
        torch.randn(1, 256) @ torch.randn(256, 10)  # what the operator computes
    product = counter.get_total_flops() // 2
    convolution = 4 * 8 * 8 * 3 * 3 * 3  # out channels · 8x8 · in channels · 3x3
    assert f'"macs": {convolution + product}' in summary.stdout
    assert '"not_counted": {}' in summary.stdout
    compared = cli("compare", model, "resnet18", "--input", "3x8x8", "-f", "csv")
    assert compared.exit_code == 0, compared.output
    header, row, _ = compared.stdout.splitlines()
    assert row.split(",")[header.split(",").index("macs")] == str(convolution + product)


def test_a_formula_that_fails_in_the_cli_is_one_error_line_and_exit_2(tmp_path):
    result = cli("summary", _model_file(tmp_path, "a[5]"), "--input", "3x4x4")
    assert result.exit_code == 2
    assert "the macs formula given for archprof_file.scaled_mm failed on" in one_error_line(result)


# -- what a formula is given, and what it may return -----------------------------------------


@torch.library.custom_op("archprof_tests::weighted_sum", mutates_args=())
def weighted_sum(xs: list[torch.Tensor], bias: torch.Tensor | None, alpha: float, n: int) -> torch.Tensor:
    return sum(xs) * alpha


@weighted_sum.register_fake
def _(xs, bias, alpha, n):
    return torch.empty_like(xs[0])


class Sums(nn.Module):
    def forward(self, x):
        return weighted_sum([x, x, x], None, 0.5, 4)


def test_a_formula_gets_lists_none_and_numbers_as_called_and_explain_shows_that_call():
    def flops(xs, bias, alpha, n, *, out):
        assert (bias, alpha, n) == (None, 0.5, 4)
        return n * len(xs) * math.prod(out)

    archprof.count_operator(weighted_sum, elementwise_flops=flops)
    report = archprof.analyze(Sums(), input_size=(3, 4, 4))
    assert report.totals.elementwise_flops == 4 * 3 * 48
    text = explain(report, "(model)")
    assert "elementwise FLOPs = flops([1x3x4x4, 1x3x4x4, 1x3x4x4], None, 0.5, 4, out=1x3x4x4) = 576" in text


def test_a_count_of_numpys_integers_is_a_whole_number():
    archprof.count_operator(scaled_mm, macs=np.int64(5), elementwise_flops=lambda a, b, *, out: np.prod(out))
    totals = archprof.analyze(Head(), input_size=(3, 4, 4)).totals
    assert (totals.macs, totals.elementwise_flops) == (5, 10 + 10)


def test_an_overload_of_an_operator_with_several_is_refused_for_the_operator_itself():
    library = torch.library.Library("archprof_overloads", "DEF")
    library.define("scale(Tensor x) -> Tensor")
    library.define("scale.by(Tensor x, Tensor s) -> Tensor")
    with pytest.raises(ArchprofError, match=r"has overloads default, by, and its formulas count them all"):
        archprof.count_operator(torch.ops.archprof_overloads.scale.by, macs=1)


# -- a training step whose backward writes the gradients into tensors it is given ------------


@torch.library.custom_op("archprof_tests::mm", mutates_args=())
def plain_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a @ b


@plain_mm.register_fake
def _(a, b):
    return a.new_empty((a.shape[0], b.shape[1]))


@torch.library.custom_op("archprof_tests::mm_gradients_into", mutates_args=("grad_a", "grad_b"))
def mm_gradients_into(
    grad: torch.Tensor, a: torch.Tensor, b: torch.Tensor, grad_a: torch.Tensor, grad_b: torch.Tensor
) -> None:
    grad_a.copy_(grad @ b.t())
    grad_b.copy_(a.t() @ grad)


@mm_gradients_into.register_fake
def _(grad, a, b, grad_a, grad_b):
    return None


def _saved(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _mm_backward(ctx, grad):
    a, b = ctx.saved_tensors
    grad_a, grad_b = torch.empty_like(a), torch.empty_like(b)
    mm_gradients_into(grad, a, b, grad_a, grad_b)
    return grad_a, grad_b


plain_mm.register_autograd(_mm_backward, setup_context=_saved)


def test_a_counted_backward_operator_that_returns_nothing_counts_as_an_input_gradient():
    archprof.count_operator(plain_mm, macs=_matmul_macs)
    archprof.count_operator(mm_gradients_into, macs=lambda grad, a, b, grad_a, grad_b, *, out: 2 * a[0] * a[1] * b[1])
    totals = archprof.analyze(Head(plain_mm), input_size=(3, 4, 4), training=True).totals
    assert totals.macs == 480
    assert totals.backward_input_macs == 2 * 480  # its one figure, which no result splits
    assert totals.not_counted == {}


# -- recomputed under non-reentrant checkpointing ---------------------------------------------


@torch.library.custom_op("archprof_tests::checkpointed_mm", mutates_args=())
def checkpointed_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a @ b


@checkpointed_mm.register_fake
def _(a, b):
    return a.new_empty((a.shape[0], b.shape[1]))


def _checkpointed_mm_backward(ctx, grad):
    a, b = ctx.saved_tensors
    return grad @ b.t(), a.t() @ grad


checkpointed_mm.register_autograd(_checkpointed_mm_backward, setup_context=_saved)


class CheckpointedHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.w = nn.Parameter(torch.randn(48, 10))

    def forward(self, x):
        y = self.conv(x).flatten(1)
        return checkpoint(lambda t: checkpointed_mm(t, self.w).relu(), y, use_reentrant=False)


def test_a_counted_operator_run_again_by_a_checkpoint_is_recomputed_not_a_gradient():
    """Its recomputation runs inside the autograd.Function that its autograd formula makes,
    where grad is off, as it is in the backward pass."""
    archprof.count_operator(checkpointed_mm, macs=_matmul_macs)
    totals = archprof.analyze(CheckpointedHead(), input_size=(3, 4, 4), training=True).totals
    convolution, product = 3 * 16 * 3 * 3 * 3, 1 * 48 * 10  # out channels · 4x4 · in channels · 3x3; m·k·n
    assert totals.macs == convolution + product
    assert totals.recomputed_macs == product  # the block's forward, once more
    assert totals.backward_input_macs == product  # grad @ w.T; the convolution's input needs none
    assert totals.backward_weight_macs == convolution + product  # each weight's: its forward's MACs
