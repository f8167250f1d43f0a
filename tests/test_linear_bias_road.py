"""F.linear's road on meta against a CPU's (archprof.kernels.linear): for inputs of one to four
dimensions, contiguous or transposed, and biases of every shape at::linear takes, the aten
operators a real CPU forward runs (torch.profiler, no dispatch mode: under one PyTorch adds
the bias out of place) and its output's shape, or, where the CPU raises, its error."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archprof
from archprof.errors import ArchprofError

IN_FEATURES, OUT_FEATURES = 8, 6
INPUTS = {1: (8,), 2: (4, 8), 3: (3, 4, 8), 4: (2, 3, 4, 8)}
BIASES = [(6,), (1,), (1, 6), (4, 1), (4, 6), (), (3, 1, 6), (1, 1, 6), None]


class LinearOf(nn.Module):
    """F.linear of the sample alone (the batch of 1 viewed away), transposed first where asked:
    a sample of (..., 8, 4) seen as (..., 4, 8), not contiguous."""

    def __init__(self, sample: tuple[int, ...], transposed: bool, bias_shape: tuple[int, ...] | None) -> None:
        super().__init__()
        self.sample, self.transposed = sample, transposed
        self.weight = nn.Parameter(torch.randn(OUT_FEATURES, IN_FEATURES))
        self.bias = None if bias_shape is None else nn.Parameter(torch.randn(bias_shape))

    def forward(self, x):
        x = x.view(self.sample)
        return F.linear(x.transpose(-1, -2) if self.transposed else x, self.weight, self.bias)


def dispatched(event):
    """The operators a profiled call reached the dispatcher's kernels with: a composite that
    has no kernel of its own on a CPU (CompositeImplicitAutograd: linear, matmul, reshape) is
    the operators it calls."""
    packet = getattr(torch.ops.aten, event.name.removeprefix("aten::"))
    if "default" not in packet.overloads() or not torch._C._dispatch_has_kernel_for_dispatch_key(
        packet.default.name(), "CompositeImplicitAutograd"
    ):
        return [event.name.replace("::", ".")]
    return [name for child in event.cpu_children for name in dispatched(child)]


def cpus_forward(model, x):
    """The aten operators of a real CPU forward in inference and its output's shape, or the
    CPU's error."""
    with torch.no_grad(), torch.profiler.profile() as profile:
        output = model(x)
    top_level = [event for event in profile.events() if event.cpu_parent is None]
    return [name for event in top_level for name in dispatched(event)], tuple(output.shape)


def linear_of(rank: int, transposed: bool, bias_shape: tuple[int, ...] | None):
    """The model of a case, its sample's shape and a batch of one."""
    shape = INPUTS[rank]
    sample = (*shape[:-2], shape[-1], shape[-2]) if transposed else shape
    return LinearOf(sample, transposed, bias_shape), sample, torch.randn(1, *sample)


def bias_id(shape: tuple[int, ...] | None) -> str:
    return "no-bias" if shape is None else f"bias-{'x'.join(map(str, shape)) or '0d'}"


CASES = [
    pytest.param(rank, transposed, bias, id=f"{rank}d-{'transposed' if transposed else 'contiguous'}-{bias_id(bias)}")
    for rank in INPUTS
    for transposed in (False, True)
    if rank > 1 or not transposed
    for bias in BIASES
]


@pytest.mark.parametrize("rank, transposed, bias_shape", CASES)
def test_linear_takes_the_cpus_road_for_every_bias(rank, transposed, bias_shape):
    """One addmm where at::linear makes one (a matrix input, or a contiguous one with a bias that
    squeezes to one dimension: (1, 6) on a 4-d input), a product and the bias added in place
    otherwise ((4, 6) on a 3-d input read an out-of-place add, a copy of the output), and the
    CPU's error where it raises ((1, 1, 6) on a 4-d input ran)."""
    model, sample, x = linear_of(rank, transposed, bias_shape)
    try:
        cpus_ops, cpus_shape = cpus_forward(model, x)
    except RuntimeError as error:
        with pytest.raises(ArchprofError) as raised:
            archprof.analyze(model, input_size=sample)
        assert str(error).split(". ")[0] in str(raised.value)  # its first sentence at least
        return
    report = archprof.analyze(model, input_size=sample)
    assert [op.op for op in report.graph.ops] == cpus_ops
    assert report.graph.outputs[0].shape == cpus_shape


def test_the_cases_reach_every_road_of_linear():
    """By the CPU's own operators: one addmm, a product alone (no bias), a product then the
    bias added in place, and an error."""
    roads = set()
    for case in CASES:
        model, _, x = linear_of(*case.values)
        try:
            ops, _ = cpus_forward(model, x)
        except RuntimeError:
            roads.add("raises")
            continue
        roads.add(" ".join(name for name in ops if name in ("aten.addmm", "aten.mm", "aten.add_")))
    assert roads == {"aten.addmm", "aten.mm", "aten.mm aten.add_", "raises"}
