"""The trace's module calls read what they need from each module's attribute dict, not through
Python's lookup (which nn.Module's `__getattr__` makes slow), and take the full road where the
dict does not hold it. The oracles: the same trace under a torch-function mode that passes
every call through (`Passing`: no shortcut is taken, the module's forward runs), and
PyTorch's own error for an attribute the module lacks."""

import pytest
from torch import nn
from torch.overrides import TorchFunctionMode

from archprof.errors import ArchprofError
from archprof.tracing.trace import trace


class Passing(TorchFunctionMode):
    """Every torch call goes through, unchanged: the forward runs as without archprof."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def _traced(model: nn.Module, shape) -> str:
    return repr(trace(model, [shape]))


# A module whose attribute its shortcut reads is not in its `__dict__` but on its class, where
# Python's lookup (and the forward's `self.<name>`) finds it: (class, make, attribute, value, input shape).
ON_THE_CLASS = [
    (nn.ReLU, nn.ReLU, "inplace", False, (2, 3, 4, 4)),
    (nn.Conv2d, lambda: nn.Conv2d(4, 4, 3), "groups", 1, (1, 4, 6, 6)),
    (nn.Conv2d, lambda: nn.Conv2d(4, 4, 3), "padding_mode", "zeros", (1, 4, 6, 6)),
    (nn.BatchNorm2d, lambda: nn.BatchNorm2d(4), "eps", 1e-3, (2, 4, 3, 3)),
    (nn.Hardtanh, lambda: nn.Hardtanh(-2.0, 2.0), "max_val", 2.0, (2, 3)),
]


@pytest.mark.parametrize(
    ("cls", "make", "name", "value", "shape"),
    ON_THE_CLASS,
    ids=[f"{case[0].__name__}.{case[2]}" for case in ON_THE_CLASS],
)
def test_an_attribute_the_module_does_not_hold_itself_runs_its_forward(cls, make, name, value, shape, monkeypatch):
    monkeypatch.setattr(cls, name, value, raising=False)
    layer = make()
    del layer.__dict__[name]
    model = nn.Sequential(layer, nn.Flatten()).to("meta").eval()
    with Passing():
        expected = _traced(model, shape)
    assert _traced(model, shape) == expected


def test_an_attribute_the_module_lacks_is_pytorchs_own_error():
    relu = nn.ReLU()
    del relu.inplace
    with pytest.raises(ArchprofError, match="'ReLU' object has no attribute 'inplace'"):
        trace(nn.Sequential(relu).eval(), [(2, 3)])


class _NeverInitialised(nn.Module):
    def __init__(self):  # no super().__init__(): none of nn.Module's tables
        self.scale = 2

    def forward(self, x):
        return x * self.scale


def test_a_module_whose_init_never_ran_is_refused_as_pythons_lookup_refuses_it():
    """The walk reads each module's tables from its `__dict__`; without them, the attribute's
    own AttributeError, as `named_modules()` would raise it."""
    model = nn.Sequential(nn.ReLU())
    model._modules["broken"] = _NeverInitialised()
    with pytest.raises(AttributeError, match="'_NeverInitialised' object has no attribute '_parameters'"):
        trace(model, [(2, 3)])
