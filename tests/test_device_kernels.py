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


def test_every_kernel_stands_in_while_active_and_is_pytorchs_again_after():
    """Each (operator, key) registered names archprof's kernels in the operator's table while
    active (so the comparison after can fail), and each table reads as before afterwards."""
    before = _torch_as_it_is()
    with DeviceKernels():
        for name, key, _ in kernels._DISPATCHER_KERNELS:
            table = torch._C._dispatch_dump_table(f"aten::{name}")
            assert f"{key.name}: registered at {kernels.__file__}" in table, (name, key)
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
