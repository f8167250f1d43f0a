"""The trace's set-up answers the common case at C speed or once per class, and takes the full
road in the rare one: the walk's type names (a label archprof.load gives, a ScriptModule's
original class), its check of the children's names, the forwards' restore. The oracles: the
full road itself (`type_name` asked of each module) and torch's own `add_module`."""

import pytest
import torch
from torch import nn

from archprof.errors import ArchprofError
from archprof.tracing.model_state import Attributes
from archprof.tracing.module_calls import attach_hooks
from archprof.tracing.module_tree import type_name, walked
from archprof.tracing.recorder import Recorder
from archprof.tracing.trace import trace


class _Labelled(nn.Module):
    def __init__(self, label):
        super().__init__()
        self._archprof_type = label
        self.conv = nn.Conv2d(3, 3, 1)


def _model() -> nn.Module:
    scripted = torch.jit.script(nn.Sequential(nn.ReLU()))  # a RecursiveScriptModule of original class Sequential
    return nn.Sequential(nn.Conv2d(3, 3, 1), _Labelled("Exported"), _Labelled(3), scripted, _Labelled("Other"))


def test_the_walks_type_names_are_type_name_asked_of_each_module():
    tree = walked(_model())
    assert tree.types == {path: type_name(module) for path, module in tree.modules}
    # The rare cases, each a name its class's would not give.
    assert [tree.types[path] for path in ("1", "2", "3", "4")] == ["Exported", "_Labelled", "Sequential", "Other"]


class _Named(nn.Module):
    def __init__(self, name, child):
        super().__init__()
        self._modules[name] = child


@pytest.mark.parametrize("name", ["a.b", "", 3, b"b"], ids=["dotted", "empty", "a number", "bytes"])
def test_a_child_named_as_add_module_refuses_is_refused_by_the_walk(name):
    with pytest.raises((KeyError, TypeError)):
        nn.Module().add_module(name, nn.ReLU())
    with pytest.raises(ArchprofError, match="submodule named"):
        walked(_Named(name, nn.ReLU()))


def test_a_dotted_name_without_a_child_is_walked_as_named_modules_walks_it():
    """A None child is no module: named_modules() skips it, whatever its name."""
    model = _Named("a.b", None)
    model.add_module("c", nn.ReLU())
    assert [path for path, _ in walked(model).modules] == [path for path, _ in model.named_modules()]


def test_removing_the_recorded_forwards_leaves_each_module_its_own_forward():
    own = nn.ReLU()
    own.forward = lambda x: x + 1  # an instance attribute of the user's
    model = nn.Sequential(nn.Conv2d(3, 3, 1), own)
    tree = walked(model)
    handles = attach_hooks(
        tree.modules, tree.attributes, tree.types, tree.paths, Recorder(), shortcuts=True, replays=None
    )
    assert all("forward" in module.__dict__ for path, module in tree.modules if path)
    for handle in handles:
        handle.remove()
    assert "forward" not in model[0].__dict__
    assert model[1].forward(torch.zeros(1)).item() == 1


_WRITTEN = []  # outside the module: the trace puts its attributes back


class _NotesItsFlags(nn.ReLU):
    """A module whose class has a `__setattr__` of its own: its flag is written through it."""

    def __setattr__(self, name, value):
        if name == "training":
            _WRITTEN.append(value)
        super().__setattr__(name, value)


class _FlipsAMode(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm2d(3)

    def forward(self, x):
        self.norm.train()  # put back after the trace
        return self.norm(x)


def test_the_modes_are_set_and_put_back_each_through_its_classs_own_setattr_where_it_has_one():
    noting, flipping = _NotesItsFlags(), _FlipsAMode()
    model = nn.Sequential(nn.Conv2d(3, 3, 1), noting, flipping).train()
    _WRITTEN.clear()
    trace(model, [(1, 3, 4, 4)])  # in evaluation mode, every flag written directly but `noting`'s
    assert _WRITTEN == [False, True]
    assert all(module.training for module in model.modules())
    model.eval()
    trace(model, [(1, 3, 4, 4)])  # the forward's own train() on the norm, put back
    assert not any(module.training for module in model.modules())


def test_the_attributes_noted_are_each_modules_but_a_scriptmodules_and_a_torch_nn_modules_contents():
    model = _model()
    model[1].seen = [1, 2]  # a list of its own: its contents kept apart
    model[0].cache = [3]  # a torch.nn class's: not
    tree = walked(model)
    attributes = Attributes.of(tree.modules, tree.attributes)
    held = [id(state) for state, _ in attributes.held]
    assert held == [id(vars(module)) for module in model.modules() if not isinstance(module, torch.jit.ScriptModule)]
    [(container, contents)] = attributes.contents
    assert container is model[1].seen and contents == [1, 2] and contents is not container
