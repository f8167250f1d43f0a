"""The passes' shortcuts of the sixth pass give what their general roads give: each test fails
where its shortcut is broken on purpose."""

from torch import nn

import archprof
from archprof.passes.receptive_field import tensor_fields
from archprof.passes.receptive_field.dims import WHOLE, Field
from archprof.passes.receptive_field.rules import rule_for
from archprof.passes.receptive_field.walk import JOINS_NOTHING_TO_WHOLE


class _Gated(nn.Module):
    """A squeeze-excitation gate, past which every unit reads the whole input, then ops of
    several outputs (a batch norm's statistics, a max pooling's indices) and one in place."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 8, 1), nn.Sigmoid())
        self.norm = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2, return_indices=True)

    def forward(self, x):
        y = self.conv(x)
        y = y * self.gate(y)
        y, indices = self.pool(self.norm(y))
        return y.relu_(), indices


def test_every_output_of_an_op_that_reads_whole_fields_only_reads_the_whole_input():
    """`Walk.step` gives an op whose inputs with a state are all WHOLE (and whose rule joins
    nothing to them) WHOLE for each of its outputs, without its rule: as the rule of the
    general road says, whatever the op does, each of its units reads units that read the
    whole input."""
    for training in (False, True):
        graph = archprof.analyze(_Gated(), input_size=(3, 16, 16), training=training).graph
        fields = tensor_fields(graph)[0]
        assert isinstance(fields[graph.ops[0].outputs[0].id], Field)  # the convolution, before the gate
        whole_ops = []
        for op in graph.ops:
            states = [fields.get(t.id) for t in op.inputs if fields.get(t.id) is not None]
            if states and all(s is WHOLE for s in states) and rule_for(op.op) not in JOINS_NOTHING_TO_WHOLE:
                whole_ops.append(op)
                assert all(fields.get(t.id) is WHOLE for t in op.outputs), op.op
        names = {op.op for op in whole_ops}
        assert {"aten.sigmoid", "aten.max_pool2d_with_indices", "aten.relu_"} <= names, names
        assert any(len(op.outputs) == 3 and "batch_norm" in op.op for op in whole_ops), names
