"""nn.LSTM, nn.GRU and nn.RNN on a packed sequence, traced as a CPU runs them (RNN.cpp's
PackedLayer): every packed row's input projected in one product, then the cell on each step's
rows, where the meta device's road projects each step apart; and an LSTM whose steps all have
as many rows (sequences all as long) as oneDNN's, which RNN.cpp's packed lstm takes there as
for a padded batch. The oracles are a real CPU forward under a dispatch mode (the operators'
names and the shapes of their outputs), torch's FlopCounterMode and torch.profiler's
allocations."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

import archprof
from archprof.passes.training_memory import training_timeline
from tests.memory_oracle import profiled_peaks, profiled_training_peaks
from tests.operator_names import OperatorNames


class PackedLayer(nn.Module):
    """A recurrent layer on a padded batch packed by `lengths`, from an initial state (a
    parameter) or from none; returns the packed output's rows and the last state."""

    def __init__(self, layer, lengths, enforce_sorted=True, initial_state=False) -> None:
        super().__init__()
        self.layer, self.lengths, self.enforce_sorted = layer, lengths, enforce_sorted
        self.h0 = self.c0 = None
        if initial_state:
            cells = layer.num_layers * (2 if layer.bidirectional else 1)
            hidden = getattr(layer, "proj_size", 0) or layer.hidden_size
            self.h0 = nn.Parameter(torch.randn(cells, len(lengths), hidden))
            if isinstance(layer, nn.LSTM):
                self.c0 = nn.Parameter(torch.randn(cells, len(lengths), layer.hidden_size))

    def pack(self, x):
        lengths = torch.tensor(self.lengths)
        return pack_padded_sequence(x, lengths, batch_first=self.layer.batch_first, enforce_sorted=self.enforce_sorted)

    def initial_state(self):
        return (self.h0, self.c0) if self.c0 is not None else self.h0

    def forward(self, x):
        output, last = self.layer(self.pack(x), self.initial_state())
        return output.data, last


# (layer, lengths, enforce_sorted, initial state); 8 input features, the padded batch as long as the longest.
CASES = {
    "LSTM": (lambda: nn.LSTM(8, 6), [4, 2, 2], True, False),
    "GRU": (lambda: nn.GRU(8, 6), [4, 2, 2], True, False),
    "RNN tanh": (lambda: nn.RNN(8, 6), [4, 2, 2], True, False),
    "RNN relu, initial state": (lambda: nn.RNN(8, 6, nonlinearity="relu"), [3, 3, 1], True, True),
    "LSTM, two layers, both directions, batch first, initial state": (
        lambda: nn.LSTM(8, 6, num_layers=2, bidirectional=True, batch_first=True),
        [5, 3, 3, 1],
        True,
        True,
    ),
    "LSTM with a projection, both directions, initial state": (
        lambda: nn.LSTM(8, 6, proj_size=3, bidirectional=True),
        [4, 2, 1],
        True,
        True,
    ),
    "LSTM with a projection, two layers, unsorted": (
        lambda: nn.LSTM(8, 6, proj_size=4, num_layers=2, dropout=0.5),
        [3, 5, 1, 3],
        False,
        False,
    ),
    "GRU, two layers, both directions, no bias, unsorted, initial state": (
        lambda: nn.GRU(8, 6, num_layers=2, bidirectional=True, bias=False),
        [2, 4, 4],
        False,
        True,
    ),
    "GRU, batch first, dropout": (
        lambda: nn.GRU(8, 6, num_layers=2, batch_first=True, dropout=0.5),
        [4, 1],
        True,
        False,
    ),
    "RNN tanh, two layers, both directions, batch first, unsorted": (
        lambda: nn.RNN(8, 6, num_layers=2, bidirectional=True, batch_first=True),
        [1, 4, 2],
        False,
        False,
    ),
    "RNN relu, both directions, one length": (
        lambda: nn.RNN(8, 6, nonlinearity="relu", bidirectional=True),
        [3, 3, 3],
        True,
        True,
    ),
    # Sequences all as long: oneDNN takes no GRU, RNN or LSTM with a projection, packed or not.
    "GRU, one length": (lambda: nn.GRU(8, 6), [3, 3], True, False),
    "GRU, one sequence, two layers, both directions": (
        lambda: nn.GRU(8, 6, num_layers=2, bidirectional=True),
        [4],
        True,
        True,
    ),
    "RNN tanh, one sequence": (lambda: nn.RNN(8, 6), [5], True, False),
    "LSTM with a projection, one length, initial state": (lambda: nn.LSTM(8, 6, proj_size=3), [3, 3], True, True),
    "LSTM with a projection, one sequence, both directions": (
        lambda: nn.LSTM(8, 6, proj_size=4, bidirectional=True),
        [5],
        True,
        False,
    ),
}

# An LSTM whose sequences are all as long: a CPU runs oneDNN's LSTM on the packed rows viewed
# as (steps, batch, features), as on a padded batch (RNN.cpp's packed lstm).
ONEDNN_CASES = {
    "LSTM, one sequence": (lambda: nn.LSTM(8, 6), [5], True, False),
    "LSTM, one length": (lambda: nn.LSTM(8, 6), [3, 3], True, False),
    "LSTM, one length, initial state": (lambda: nn.LSTM(8, 6), [4, 4, 4], True, True),
    "LSTM, one sequence, initial state, no bias": (lambda: nn.LSTM(8, 6, bias=False), [5], True, True),
    "LSTM, both directions, one length": (lambda: nn.LSTM(8, 6, bidirectional=True), [3, 3], True, False),
    "LSTM, two layers, both directions, batch first, unsorted, initial state": (
        lambda: nn.LSTM(8, 6, num_layers=2, bidirectional=True, batch_first=True),
        [4, 4, 4],
        False,
        True,
    ),
    "LSTM, two layers, dropout, one sequence": (lambda: nn.LSTM(8, 6, num_layers=2, dropout=0.5), [5], True, False),
}


def _case(name):
    build, lengths, enforce_sorted, initial_state = {**CASES, **ONEDNN_CASES}[name]
    torch.manual_seed(0)
    model = PackedLayer(build(), lengths, enforce_sorted, initial_state)
    steps, batch = max(lengths), len(lengths)
    x = torch.randn((batch, steps, 8) if model.layer.batch_first else (steps, batch, 8))
    return model, x


def _report(model, x, training=False):
    report = archprof.analyze(model, input_size=tuple(x.shape[1:]), batch=x.shape[0], training=training)
    assert report.traced_on == "meta"
    return report


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("name", CASES)
def test_a_packed_layer_records_the_operators_a_cpu_runs(name, training):
    """The layer's own operators (its call's, the packing before it aside: on meta it copies
    its sorted indices to the input's device, which a CPU has them on), names, output shapes
    and order, against the layer's real forward; in training linear's bias is added out of
    place under a mode (tensors look like subclasses there), in place in a real run, as
    archprof records it, and autograd's detaches are its own."""
    model, x = _case(name)
    report = _report(model, x, training)
    model.train(training)
    packed = model.pack(x)
    with torch.set_grad_enabled(training), OperatorNames() as real:
        model.layer(packed, model.initial_state())

    def comparable(ops):
        return [(op.replace("aten.add_", "aten.add"), shapes) for op, shapes in ops if op != "aten.detach"]

    traced = [
        (op.op, tuple(tuple(t.shape) for t in op.outputs)) for op in report.graph.ops if op.module.path == "layer"
    ]
    if not training:
        assert traced == real.ops
    assert comparable(traced) == comparable(real.ops)
    first_product = next(shapes for op, shapes in real.ops if op in ("aten.addmm", "aten.mm"))
    assert first_product[0][0] == sum(model.lengths)  # the CPU's: one product over every packed row


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("name", ONEDNN_CASES)
def test_a_packed_lstm_of_one_length_records_onednns_operators(name, training):
    """Sequences all as long: the layer's operators, names, output shapes and order, against
    its real forward, which runs oneDNN's mkldnn_rnn_layer on (steps, batch, features), one a
    layer and direction. Without autograd the CPU's layer returns no workspace, the meta
    kernel an empty one; autograd's detaches are its own."""
    model, x = _case(name)
    report = _report(model, x, training)
    model.train(training)
    packed = model.pack(x)
    with torch.set_grad_enabled(training), OperatorNames() as real:
        model.layer(packed, model.initial_state())

    def comparable(ops):
        return [(op, tuple(s for s in shapes if s != (0,))) for op, shapes in ops if op != "aten.detach"]

    traced = [
        (op.op, tuple(tuple(t.shape) for t in op.outputs)) for op in report.graph.ops if op.module.path == "layer"
    ]
    assert comparable(traced) == comparable(real.ops)
    layers = [shapes for op, shapes in real.ops if op == "aten.mkldnn_rnn_layer"]
    directions = 2 if model.layer.bidirectional else 1
    assert len(layers) == model.layer.num_layers * directions
    assert layers[0][0] == (max(model.lengths), len(model.lengths), 6)


@pytest.mark.parametrize("name", CASES)
def test_a_packed_layers_outputs_and_macs_are_the_cpus(name):
    model, x = _case(name)
    report = _report(model, x)
    with torch.no_grad(), FlopCounterMode(display=False) as flops:
        outputs = model.eval()(x)
    assert [tuple(t.shape) for t in report.graph.outputs] == [tuple(t.shape) for t in tree_leaves(outputs)]
    assert report.totals.macs == flops.get_total_flops() // 2


@pytest.mark.parametrize("name", ONEDNN_CASES)
def test_a_packed_lstm_of_one_lengths_outputs_and_macs_are_the_cpus(name):
    """Its outputs' shapes, and its MACs those of the cell loop a CPU runs with oneDNN off
    (FlopCounterMode counts none for oneDNN's layer)."""
    model, x = _case(name)
    report = _report(model, x)
    with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False), FlopCounterMode(display=False) as flops:
        outputs = model.eval()(x)
    assert [tuple(t.shape) for t in report.graph.outputs] == [tuple(t.shape) for t in tree_leaves(outputs)]
    assert report.totals.macs == flops.get_total_flops() // 2


@pytest.mark.parametrize("name", [*CASES, *ONEDNN_CASES])
def test_a_packed_layers_peaks_are_the_cpus(name):
    """Inference and a training step, against torch.profiler's allocations that outlive the
    operator making them (the layer is one operator on a CPU, aten::lstm, gru, rnn_tanh or
    rnn_relu: what it lets go of inside is its workspace), the input added."""
    model, x = _case(name)
    _, lasting = profiled_peaks(model, x)
    assert _report(model, x).totals.peak_activation_bytes == lasting + x.nbytes
    _, lasting = profiled_training_peaks(model, x)
    assert training_timeline(_report(model, x, training=True).graph).peak_bytes == lasting + x.nbytes
