"""TensorSlots.substituted on a call whose tensors fill every slot of a schema whose slots
are its first arguments (`TensorSlots.leading`: relu's, add's, a batch norm's five): taken by a
slice, it gives what the walk over each slot gives."""

import dataclasses

import pytest
import torch

from archprof.structure import TensorSlots

aten = torch.ops.aten
x, y, mean, var = torch.ones(2, 3), torch.ones(2, 3), torch.zeros(3), torch.ones(3)
WRAPPED = {float: lambda number: ("wrapped", number), int: lambda number: ("wrapped", number)}

CALLS = {
    "one slot": (aten.relu.default, (x,), {}),
    "two slots": (aten.add.Tensor, (x, y), {}),
    "a number where a tensor goes": (aten.add.Tensor, (x, 2.0), {}),
    "a keyword besides": (aten.add.Tensor, (x, y), {"alpha": 2}),
    "every slot filled": (aten.native_batch_norm.default, (x, y, y, mean, var, False, 0.1, 1e-5), {}),
    "an optional slot empty": (aten.native_batch_norm.default, (x, None, None, mean, var, False, 0.1, 1e-5), {}),
    "convolution without a bias": (aten.convolution.default, (x, y, None, [1], [0], [1], False, [0], 1), {}),
}


def test_leading_slots_are_told_from_the_schema():
    assert TensorSlots.of(aten.relu.default._schema).leading == 1
    assert TensorSlots.of(aten.native_batch_norm.default._schema).leading == 5
    assert TensorSlots.of(aten.cat.default._schema).leading == -1  # a list
    assert TensorSlots.of(aten.native_layer_norm.default._schema).leading == -1  # a gap: normalized_shape


@pytest.mark.parametrize("name", CALLS)
def test_a_filled_call_is_substituted_as_by_the_walk(name):
    func, args, kwargs = CALLS[name]
    slots = TensorSlots.of(func._schema)
    walked = dataclasses.replace(slots, leading=-1)  # every slot walked
    values = [("seen", id(t)) for t in slots.tensors(args, kwargs)]
    for numbers in (None, WRAPPED):
        assert slots.substituted(args, kwargs, values, numbers) == walked.substituted(args, kwargs, values, numbers)
