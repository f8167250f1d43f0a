"""The caller's torch as it was around `archprof.kernels.DeviceKernels`: every kernel it registers on
the process's dispatcher, and every Python name it routes, is PyTorch's own again after a trace,
one its forward ended with an exception, and an entry that failed. The oracle is PyTorch's own
account of each operator's dispatch table (`torch._C._dispatch_dump_table`, which names where each
key's kernel was registered) and the objects the names held before."""

import pytest
import torch
from torch import nn

import archprof
from archprof import kernels
from archprof.errors import ArchprofError
from archprof.kernels import DeviceKernels
from tests.models import Calls

_ROUTED_NAMES = [(owner, name) for owner, name, _, _ in kernels._ROUTED] + list(kernels._USERS_COPIES)
_VF_NAMES = ("lstm", "gru", "rnn_tanh", "rnn_relu")


def _operators() -> list[str]:
    """The aten operators DeviceKernels registers kernels for, overload and all ("aten::ctc_loss.IntList")."""
    return sorted({f"aten::{name}" for name, _, _ in kernels._DISPATCHER_KERNELS})


def _torch_as_it_is() -> dict:
    """What DeviceKernels changes while active: the dispatch tables of the operators it registers
    kernels for, the Python names it routes (and whether each is the owner's own attribute), and
    torch._VF's own attributes for the recurrent layers."""
    return {
        "tables": {operator: torch._C._dispatch_dump_table(operator) for operator in _operators()},
        "names": {(owner, name): (getattr(owner, name), name in vars(owner)) for owner, name in _ROUTED_NAMES},
        "vf": {name: vars(torch._VF).get(name) for name in _VF_NAMES},
    }


def _stands_in(operator: str, key: str) -> bool:
    """Whether archprof's kernel stands in for `operator`'s kernel of `key` now."""
    return f"{key}: registered at {kernels.__file__}" in torch._C._dispatch_dump_table(operator)


def test_every_kernel_stands_in_while_active_and_is_pytorchs_again_after():
    """Each (operator, key) registered names archprof's kernels in the operator's table while
    active (so the comparison after can fail), and each table reads as before afterwards."""
    before = _torch_as_it_is()
    with DeviceKernels():
        for name, key, _ in kernels._DISPATCHER_KERNELS:
            assert _stands_in(f"aten::{name}", key.name), (name, key)
        assert _torch_as_it_is() != before
    assert _torch_as_it_is() == before


class _Raises(nn.Module):
    def forward(self, x):
        raise ValueError("the forward's own error")


def test_a_forward_that_raises_leaves_torch_as_it_was():
    """An analysis whose forward raises after an operator ran under the trace: the caller's
    torch as before it, tables and names alike."""
    before = _torch_as_it_is()
    model = nn.Sequential(nn.Conv2d(3, 4, 3), Calls(lambda x: torch.nn.functional.layer_norm(x, (6,))), _Raises())
    with pytest.raises(ArchprofError, match="the forward's own error"):
        archprof.analyze(model, input_size=(3, 8, 8))
    assert _torch_as_it_is() == before


def test_an_analysis_leaves_torch_as_it_was_and_gives_the_same_report_again():
    before = _torch_as_it_is()
    first = archprof.analyze("lenet5")
    assert _torch_as_it_is() == before
    assert archprof.analyze("lenet5").totals == first.totals


def test_a_registration_that_fails_on_entry_changes_nothing(monkeypatch):
    """A kernel the dispatcher refuses (here a key it does not know; in life, an operator a later
    torch renamed): the entry raises, every kernel registered before it is gone again and no
    Python name is routed."""
    before = _torch_as_it_is()
    refused = ("l1_loss", "NoSuchKey", kernels._DISPATCHER_KERNELS[0][2])
    monkeypatch.setattr(kernels, "_DISPATCHER_KERNELS", (*kernels._DISPATCHER_KERNELS, refused))
    with pytest.raises(RuntimeError, match="NoSuchKey"):
        DeviceKernels().__enter__()
    assert _torch_as_it_is() == before


def test_an_inference_trace_on_meta_registers_no_autograd_kernel():
    """Its forward runs below autograd's keys, where no autograd kernel is reached: only the
    kernels of keys below them stand in while it runs (a zero tensor's add); a training step's
    forward, which autograd records, has every one."""
    seen = []

    def look(x):
        seen.append((_stands_in("aten::layer_norm", "AutogradMeta"), _stands_in("aten::add.Tensor", "ZeroTensor")))
        return x

    model = nn.Sequential(nn.Linear(4, 4), Calls(look))
    archprof.analyze(model, input_size=(4,))
    archprof.analyze(model, input_size=(4,), training=True)
    assert seen == [(False, True), (True, True)]


class _GradientInItsForward(nn.Module):
    """A forward that asks autograd for the gradient of a linear layer's summed output by its input."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        with torch.enable_grad():
            x = x.detach().requires_grad_()
            (gradient,) = torch.autograd.grad(self.fc(x).sum(), x)
        return gradient


def test_a_forward_that_asks_autograd_for_a_gradient_is_traced_with_autograd():
    """Below autograd's keys no graph is recorded and the gradient cannot be taken: the forward
    is traced again as eager PyTorch runs it. Its MACs by the formula: the layer's 1x8 by 8x8
    product, and the gradient's, the summed output's ones (1x8) by the weight (8x8)."""
    report = archprof.analyze(_GradientInItsForward(), input_size=(8,))
    assert report.totals.macs == 8 * 8 + 8 * 8


class _ChoosesByGradient(nn.Module):
    """A forward that turns grad mode on and reads whether its linear layer's output requires
    grad (it does, eagerly: the weight does), doubling it if so."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        with torch.enable_grad():
            y = self.fc(x)
        return y * 2 if y.requires_grad else y


def test_a_forward_that_turns_grad_mode_on_is_traced_with_autograd():
    """Below autograd's keys its output would require no grad and the doubling not run: a
    forward that runs an operator in grad mode is traced again above them, as eager PyTorch
    runs it (the oracle: the same forward on the CPU, under no_grad as the trace's)."""
    model = _ChoosesByGradient()
    with torch.no_grad():
        assert torch.equal(model(torch.ones(1, 8)), 2 * model.fc(torch.ones(1, 8)))
    report = archprof.analyze(model, input_size=(8,))
    assert [op.op for op in report.graph.ops][-1] == "aten.mul"


def test_the_linear_layers_view_back_is_found_below_autograd_too():
    """`kernels.linear._view_back`, asked first inside a forward run below autograd's keys,
    where `aten.linear` reaches a dispatch mode whole: the operator its composite views the
    product back with, as asked outside."""
    from archprof.kernels.linear import _view_back

    _view_back.cache_clear()
    outside = _view_back()
    _view_back.cache_clear()
    with torch._C._AutoDispatchBelowAutograd():
        below = _view_back()
    assert below == outside and below.__name__ in ("view.default", "_unsafe_view.default")
