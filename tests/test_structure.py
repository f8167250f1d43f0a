"""TensorSlots, the recorder's reader of an operator's arguments, against a plain walk over
every argument: the same tensors, in the same order, and `substituted` replacing those only."""

import pytest
import torch

from archprof.structure import TensorSlots

aten = torch.ops.aten
x, y, out = torch.ones(2, 3), torch.ones(2, 3), torch.empty(2, 3)
index = torch.zeros(2, dtype=torch.long)


def every_tensor(args, kwargs):
    """The tensors among all arguments, lists opened: what any walk over them finds."""
    found = []
    for value in (*args, *kwargs.values()):
        items = value if isinstance(value, (list, tuple)) else [value]
        found += [item for item in items if isinstance(item, torch.Tensor)]
    return found


CALLS = {
    "keyword out": (aten.add.out, (x, y), {"alpha": 2, "out": out}),
    "optional absent": (aten.convolution.default, (x, y, None, [1], [0], [1], False, [0], 1), {}),
    "list": (aten.cat.default, ([x, y], 0), {}),
    "list of optionals": (aten.index.Tensor, (x, [None, index]), {}),
    "scalars only besides": (aten.native_batch_norm.default, (x, y, None, out, None, False, 0.1, 1e-5), {}),
}


@pytest.mark.parametrize("name", CALLS)
def test_slots_find_every_tensor_in_order_and_substitute_only_those(name):
    func, args, kwargs = CALLS[name]
    slots = TensorSlots.of(func._schema)
    expected = every_tensor(args, kwargs)
    assert [id(t) for t in slots.tensors(args, kwargs)] == [id(t) for t in expected]

    mapped_args, mapped_kwargs = slots.substituted(args, kwargs, [("seen", id(t)) for t in expected])
    assert every_tensor(mapped_args, mapped_kwargs) == []  # every tensor was mapped
    values = (*mapped_args, *mapped_kwargs.values())
    marks = [v for value in values for v in (value if isinstance(value, list) else [value])]
    assert [m[1] for m in marks if isinstance(m, tuple) and m[:1] == ("seen",)] == [id(t) for t in expected]
    # Everything else is left as it was, lists keeping their type.
    for before, after in zip((*args, *kwargs.values()), (*mapped_args, *mapped_kwargs.values()), strict=True):
        if not isinstance(before, torch.Tensor) and not isinstance(before, list):
            assert after == before
        if isinstance(before, list):
            assert type(after) is list and len(after) == len(before)


def test_substituted_wraps_a_number_only_where_one_tensor_goes():
    """`aten.add.Tensor(x, 2.0)`: the parser wrapped 2.0 in a tensor; a float elsewhere
    (`alpha`, a convolution's list of strides) is an argument of its own."""
    numbers = {float: lambda number: ("wrapped", number)}
    slots = TensorSlots.of(aten.add.Tensor._schema)
    assert slots.substituted((x, 2.0), {"alpha": 3.0}, ["x"], numbers) == (("x", ("wrapped", 2.0)), {"alpha": 3.0})
    convolution = TensorSlots.of(aten.convolution.default._schema)
    args = (x, y, None, [1], [0], [1], False, [0], 1)
    assert convolution.substituted(args, {}, ["x", "y"], numbers) == (("x", "y", *args[2:]), {})
