"""The recurrent layers as a CPU runs them, for `DeviceKernels`: oneDNN's LSTM where RNN.cpp
takes it (and the size of its workspace, for the operator catalogue), RNN.cpp's own layers
for every other LSTM, GRU and RNN.

Modelled (PyTorch 2.x, CPU):

- recurrent layers: `nn.LSTM` runs `mkldnn_rnn_layer` per layer and direction where
  RNN.cpp's `use_mkldnn` takes it (oneDNN enabled; float32, bfloat16 where the processor
  has oneDNN's bfloat16 instructions, float16 likewise and only without autograd; no
  projection); its workspace is sized by `onednn_lstm_workspace_bytes`. Every other LSTM,
  and GRU and plain RNN layers (`torch._VF.gru`, `rnn_tanh`, `rnn_relu`), run RNN.cpp's own
  layers, which on a CPU project the whole sequence's input in one product and then run
  the cell per step on the hidden state alone; on meta they project each step apart, so
  they are run here as the CPU runs them (`cpu_lstm`, `_cpu_one_hidden_rnn`).
- packed sequences: an LSTM on a packed sequence whose steps all have as many rows (its
  sequences all as long, or one sequence) runs oneDNN where the padded one would: RNN.cpp
  views the packed rows as (steps, batch, features), runs its padded lstm on them and views
  the output as rows again (`onednn_packed_lstm`). Every other LSTM, and every GRU and RNN
  layer, on a packed sequence runs RNN.cpp's PackedLayer, which on a CPU projects every
  packed row's input in one product, then runs the cell on each step's rows, the hidden
  state narrowed as sequences end (grown again, backward); on meta it projects each step
  apart, so these run here as the CPU runs them too (`cpu_packed_lstm`,
  `_cpu_packed_one_hidden_rnn`).
"""

from __future__ import annotations

import functools

import torch
from torch.utils._python_dispatch import _disable_current_modes

from archprof.kernels.linear import cpu_linear
from archprof.kernels.one_cpu_operator import noted_as_one_cpu_operator

LSTM = "lstm"
ONEDNN_LSTM = "oneDNN LSTM (aten.mkldnn_rnn_layer)"
CELL_LOOP = "cell loop (addmm per step)"

_ONEDNN_LSTM_MODE = 2  # ideep::rnn_kind::LSTM


def is_lstm_on_input(args) -> bool:
    """torch.lstm's form for padded input, (input, (h0, c0), params, ...); not the packed one."""
    return len(args) == 9 and isinstance(args[1], (list, tuple))


def is_packed_lstm(args) -> bool:
    """torch.lstm's form for a packed sequence, (data, batch_sizes, (h0, c0), params, ...)."""
    return len(args) == 9 and isinstance(args[1], torch.Tensor) and isinstance(args[2], (list, tuple))


def has_packed_steps(batch_sizes) -> bool:
    """Whether the batch sizes are values on the CPU, where pack_padded_sequence leaves them,
    and name a step at least: RNN.cpp reads them there."""
    return batch_sizes.device.type == "cpu" and batch_sizes.numel() > 0


def one_batch_size(batch_sizes) -> bool:
    """Whether every step of a packed sequence has as many rows: RNN.cpp's packed lstm then
    takes its padded lstm (and oneDNN, where that one would). Read as values (`tolist`), not
    by operators the trace would record."""
    return len(set(batch_sizes.tolist())) == 1


def onednn_lstm_kernel(input, hx) -> bool:
    """Whether a CPU runs this LSTM with oneDNN: RNN.cpp's use_mkldnn (float32; bfloat16
    where the processor has oneDNN's bfloat16 instructions; float16 likewise, and only
    without autograd) and no projection (hidden and cell states of one size)."""
    h0, c0 = hx
    return (
        torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and _onednn_takes_dtype(input.dtype)
        and input.numel() != 0
        and h0.size(-1) == c0.size(-1)
    )


def _onednn_takes_dtype(dtype: torch.dtype) -> bool:
    if dtype == torch.bfloat16:
        return _processor_supports(torch.ops.mkldnn._is_mkldnn_bf16_supported)
    if dtype == torch.float16:
        return not torch.is_grad_enabled() and _processor_supports(torch.ops.mkldnn._is_mkldnn_fp16_supported)
    return dtype == torch.float32


@functools.cache
def _processor_supports(check) -> bool:
    """One of oneDNN's processor checks, asked once, outside the trace's dispatch mode (where
    the operator would be recorded)."""
    with _disable_current_modes():
        return bool(check())


def onednn_lstm(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
    """mkldnn/RNN.cpp's mkldnn_rnn, op for op: a contiguous time-major input, one
    mkldnn_rnn_layer per layer and direction, directions concatenated, dropout between
    layers in training, the final states stacked."""
    h0, c0 = hx
    directions = 2 if bidirectional else 1
    hidden_size = h0.size(2)
    weights = _cell_weights(params, has_biases, projected=False)
    layer_input = (input.transpose(0, 1) if batch_first else input).contiguous()
    h0, c0 = h0.contiguous(), c0.contiguous()
    last_h, last_c = [], []
    for layer in range(num_layers):
        outputs = []
        for direction in range(directions):
            index = layer * directions + direction
            w_ih, w_hh, bias_ih, bias_hh, _ = weights[index]
            layer_h0, layer_c0 = h0[index], c0[index]  # selected before any zero bias is made, as by mkldnn_rnn
            if not has_biases:  # RNN.cpp passes zeros the shapes of the weights as biases
                bias_hh = torch.zeros(w_hh.shape, dtype=w_hh.dtype, device=w_hh.device)
                bias_ih = torch.zeros(w_ih.shape, dtype=w_ih.dtype, device=w_ih.device)
            output, hy, cy, _ = torch.ops.aten.mkldnn_rnn_layer(
                layer_input, w_ih, w_hh, bias_ih, bias_hh, layer_h0, layer_c0, direction > 0, [],
                _ONEDNN_LSTM_MODE, hidden_size, num_layers, has_biases, bidirectional, batch_first, train,
            )  # fmt: skip
            outputs.append(output)
            last_h.append(hy)
            last_c.append(cy)
        layer_input = outputs[0] if directions == 1 else torch.cat(outputs, -1)
        if dropout != 0 and train and layer < num_layers - 1:
            layer_input = torch.dropout(layer_input, dropout, True)
    output = layer_input.transpose(0, 1) if batch_first else layer_input
    return output, torch.stack(last_h, 0), torch.stack(last_c, 0)


def onednn_packed_lstm(data, batch_sizes, hx, params, has_biases, num_layers, dropout, train, bidirectional):
    """RNN.cpp's packed lstm where every step has as many rows and oneDNN takes it: the packed
    rows viewed as (steps, batch, features), `onednn_lstm` on them, its output viewed as rows."""
    steps, batch = batch_sizes.numel(), batch_sizes.tolist()[0]
    input = data.reshape(steps, batch, data.size(-1))
    output, last_h, last_c = onednn_lstm(
        input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first=False
    )
    return output.reshape(steps * batch, output.size(-1)), last_h, last_c


# --- RNN.cpp's own layers, as a CPU runs them ---------------------------------------------------
# On a CPU, FullLayer and FullBidirectionalLayer project the whole sequence's input at once
# (one product over steps x batch rows, `if (input.device().is_cpu())`), then run the cell
# per step on the hidden product alone; anywhere else, the meta device included, each step
# projects its own input. The functions below take the CPU's branch on meta tensors, issuing
# its aten ops in its order, in place where it writes in place.


def _routed_one_hidden_rnn(name: str, cell, *args, **kwargs):
    """torch._VF.gru, rnn_tanh and rnn_relu while DeviceKernels is active."""
    if not kwargs and args[0].device.type == "meta":
        if _is_one_hidden_rnn_on_input(args) and has_steps(args[0], batch_first=args[8]):
            with noted_as_one_cpu_operator():  # one operator on a CPU (aten::gru, ...), as `DeviceKernels._lstm` says
                return _cpu_one_hidden_rnn(cell, *args)
        if _is_packed_one_hidden_rnn(args) and has_packed_steps(args[1]):
            with noted_as_one_cpu_operator():
                return _cpu_packed_one_hidden_rnn(cell, *args)
    return getattr(torch._C._VariableFunctions, name)(*args, **kwargs)


def _is_one_hidden_rnn_on_input(args) -> bool:
    """The form for padded input, (input, hx, params, ...); not the packed one."""
    return len(args) == 9 and isinstance(args[2], (list, tuple))


def _is_packed_one_hidden_rnn(args) -> bool:
    """The form for a packed sequence, (data, batch_sizes, hx, params, ...)."""
    return len(args) == 9 and isinstance(args[1], torch.Tensor) and isinstance(args[3], (list, tuple))


def has_steps(input, batch_first: bool) -> bool:
    return input.size(1 if batch_first else 0) > 0


def _cpu_one_hidden_rnn(cell, input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
    """RNN.cpp's ONE_HIDDEN_RNN (gru, rnn_tanh, rnn_relu) on a CPU."""
    time_major = input.transpose(0, 1) if batch_first else input
    output, last = _one_hidden_layers(
        _FULL_LAYERS, cell, time_major, hx, params, has_biases, num_layers, dropout, train, bidirectional
    )
    if batch_first:
        output.transpose_(0, 1)
    return output, last


def _cpu_packed_one_hidden_rnn(
    cell, data, batch_sizes, hx, params, has_biases, num_layers, dropout, train, bidirectional
):
    """RNN.cpp's ONE_HIDDEN_RNN on a packed sequence, on a CPU: the packed output's rows and the last hidden state."""
    layers = _packed_layers(batch_sizes.tolist())
    return _one_hidden_layers(layers, cell, data, hx, params, has_biases, num_layers, dropout, train, bidirectional)


def _one_hidden_layers(layers, cell, input, hx, params, has_biases, num_layers, dropout, train, bidirectional):
    """_rnn_impl_with_concat: the layer stack, its final hidden states stacked."""
    weights = _cell_weights(params, has_biases, projected=False)
    output, last = _cpu_layer_stack(
        layers, cell, input, hx.unbind(0), weights, num_layers, dropout, train, bidirectional
    )
    return output, torch.stack(last, 0)


def cpu_lstm(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
    """RNN.cpp's lstm where it takes neither cuDNN nor oneDNN, on a CPU."""
    time_major = input.transpose(0, 1) if batch_first else input
    output, last_h, last_c = _lstm_layers(
        _FULL_LAYERS, time_major, hx, params, has_biases, num_layers, dropout, train, bidirectional
    )
    return (output.transpose(0, 1) if batch_first else output), last_h, last_c


def cpu_packed_lstm(data, batch_sizes, hx, params, has_biases, num_layers, dropout, train, bidirectional):
    """RNN.cpp's lstm on a packed sequence, on a CPU: the packed output's rows and the last hidden and cell states."""
    layers = _packed_layers(batch_sizes.tolist())
    return _lstm_layers(layers, data, hx, params, has_biases, num_layers, dropout, train, bidirectional)


def _lstm_layers(layers, input, hx, params, has_biases, num_layers, dropout, train, bidirectional):
    """_lstm_impl: the layer stack on (hidden, cell) pairs, the final states stacked."""
    h0, c0 = hx
    weights = _cell_weights(params, has_biases, projected=h0.size(2) != c0.size(2))
    hiddens = list(zip(h0.unbind(0), c0.unbind(0), strict=True))
    output, last = _cpu_layer_stack(
        layers, _lstm_cell, input, hiddens, weights, num_layers, dropout, train, bidirectional
    )
    last_h, last_c = zip(*last, strict=True)
    last_c = torch.stack(last_c, 0)  # make_tuple's arguments, evaluated last first
    last_h = torch.stack(last_h, 0)
    return output, last_h, last_c


def _cell_weights(params, has_biases: bool, projected: bool) -> list[tuple]:
    """RNN.cpp's gather_params: per layer and direction, (w_ih, w_hh, b_ih, b_hh, w_hr),
    None for the biases and projection a layer does not have."""
    per_cell = 2 + 2 * has_biases + projected
    cells = [params[start : start + per_cell] for start in range(0, len(params), per_cell)]
    return [
        (w[0], w[1], w[2] if has_biases else None, w[3] if has_biases else None, w[-1] if projected else None)
        for w in cells
    ]


def _cpu_layer_stack(layers, cell, input, hiddens, weights, num_layers, dropout, train, bidirectional):
    """apply_layer_stack: each layer's output the next one's input, dropout between them in
    training; returns the last output and every cell's final hidden state. `layers`: the
    one-direction layer and the bidirectional one."""
    layer, bidirectional_layer = layers
    layer_input, last = input, []
    for index in range(num_layers):
        if bidirectional:
            cells = slice(2 * index, 2 * index + 2)
            layer_input, hidden = bidirectional_layer(cell, layer_input, hiddens[cells], weights[cells])
            last.extend(hidden)
        else:
            layer_input, hidden = layer(cell, layer_input, hiddens[index], weights[index])
            last.append(hidden)
        if dropout != 0 and train and index < num_layers - 1:
            layer_input = torch.dropout(layer_input, dropout, True)
    return layer_input, last


def _full_layer(cell, input, hidden, weights):
    """FullLayer on a CPU: the input projected for every step at once, then the cell step by
    step, the outputs stacked."""
    steps = _projected_steps(input, weights)
    outputs, hidden = _cell_loop(cell, steps, hidden, weights)
    return torch.stack(outputs, 0), hidden


def _full_bidirectional_layer(cell, input, hiddens, weights):
    """FullBidirectionalLayer on a CPU: a FullLayer forward, then one backward from the last
    step, the two outputs concatenated. Its locals hold the forward's step outputs and the
    backward's projection to the end, and the forward's projection until the backward's is
    made: so are they held here, for an inference's peak."""
    forward_steps = _projected_steps(input, weights[0])
    forward_outputs, forward_hidden = _cell_loop(cell, forward_steps, hiddens[0], weights[0])
    forward_output = torch.stack(forward_outputs, 0)
    backward_steps = _projected_steps(input, weights[1])
    del forward_steps  # C++'s step_inputs, given the backward's steps
    backward_outputs, backward_hidden = _cell_loop(cell, backward_steps[::-1], hiddens[1], weights[1])
    backward_output = torch.stack(backward_outputs[::-1], 0)
    output = torch.cat([forward_output, backward_output], forward_output.dim() - 1)
    return output, (forward_hidden, backward_hidden)


_FULL_LAYERS = (_full_layer, _full_bidirectional_layer)


# --- RNN.cpp's packed layers, as a CPU runs them ------------------------------------------------
# A packed sequence's data holds its steps' rows one after another, batch_sizes[t] rows for
# step t, the longest sequences first. On a CPU, PackedLayer and ReversedPackedLayer project
# every row's input at once (`if (input.data.device().is_cpu())`), then run the cell on each
# step's rows; anywhere else each step projects its own. Below, the CPU's branch on meta
# tensors, its aten ops in its order, the batch sizes read as the CPU reads them.


def _packed_layers(batch_sizes: list[int]):
    """PackedLayer and PackedBidirectionalLayer over these batch sizes, for `_cpu_layer_stack`."""
    return (
        functools.partial(_packed_layer, batch_sizes),
        functools.partial(_packed_bidirectional_layer, batch_sizes),
    )


def _packed_layer(batch_sizes, cell, data, hidden, weights):
    """PackedLayer on a CPU: the cell on each step's rows in turn, the hidden state narrowed to
    them as sequences end (the ended rows' states kept); the step outputs concatenated, and
    the final states of every sequence, in batch order."""
    projected = _projection(data, weights)
    outputs, ended = [], []
    offset, last_batch = 0, batch_sizes[0]
    for batch in batch_sizes:
        step = projected.narrow(0, offset, batch)
        offset += batch
        if batch < last_batch:
            ended.append(_hidden_slice(hidden, batch, last_batch))
            hidden = _hidden_slice(hidden, 0, batch)
        last_batch = batch
        hidden = cell(step, hidden, weights)
        outputs.append(_as_output(hidden))
    ended.append(hidden)
    return torch.cat(outputs, 0), _hidden_concat(ended[::-1])


def _reversed_packed_layer(batch_sizes, cell, data, initial, weights):
    """ReversedPackedLayer on a CPU: from the last step to the first, the hidden state starting
    with the rows of the last step and grown by the initial states of the sequences that join;
    the step outputs concatenated in the packed order."""
    projected = _projection(data, weights)
    outputs = []
    offset, last_batch = data.size(0), batch_sizes[-1]
    hidden = _hidden_slice(initial, 0, last_batch)
    for batch in reversed(batch_sizes):
        if batch > last_batch:
            hidden = _hidden_concat([hidden, _hidden_slice(initial, last_batch, batch)])
        step = projected.narrow(0, offset - batch, batch)
        offset -= batch
        last_batch = batch
        hidden = cell(step, hidden, weights)
        outputs.append(_as_output(hidden))
    return torch.cat(outputs[::-1], 0), hidden


def _packed_bidirectional_layer(batch_sizes, cell, data, hiddens, weights):
    """PackedBidirectionalLayer: a PackedLayer, then a ReversedPackedLayer, their outputs concatenated."""
    forward_output, forward_hidden = _packed_layer(batch_sizes, cell, data, hiddens[0], weights[0])
    backward_output, backward_hidden = _reversed_packed_layer(batch_sizes, cell, data, hiddens[1], weights[1])
    return torch.cat([forward_output, backward_output], -1), (forward_hidden, backward_hidden)


def _hidden_slice(hidden, start: int, end: int):
    """hidden_slice: rows start to end of a hidden state (an LSTM's cell state narrowed first,
    make_tuple's arguments evaluated last first)."""
    if isinstance(hidden, tuple):
        cell_state = hidden[1].narrow(0, start, end - start)
        return hidden[0].narrow(0, start, end - start), cell_state
    return hidden.narrow(0, start, end - start)


def _hidden_concat(hiddens):
    """hidden_concat: hidden states concatenated by rows (an LSTM's cell states first, likewise)."""
    if isinstance(hiddens[0], tuple):
        cell_state = torch.cat([c for _, c in hiddens], 0)
        return torch.cat([h for h, _ in hiddens], 0), cell_state
    return torch.cat(hiddens, 0)


def _as_output(hidden):
    """hidden_as_output: a step's output, an LSTM's hidden state (not its cell state)."""
    return hidden[0] if isinstance(hidden, tuple) else hidden


def _projected_steps(input, weights):
    """The input's projection for every step at once (one product over steps x batch rows), one view a step."""
    return _projection(input, weights).unbind(0)


def _projection(input, weights):
    """linear_ih: the input projected by the cell's input weights."""
    w_ih, _, b_ih, _, _ = weights
    return cpu_linear(input, w_ih, b_ih)


def _cell_loop(cell, steps, hidden, weights):
    """The cell over the projected steps in turn: each step's output and the last hidden state."""
    outputs = []
    for step in steps:
        hidden = cell(step, hidden, weights)
        outputs.append(_as_output(hidden))
    return outputs, hidden


def _lstm_cell(step, hidden, weights):
    """LSTMCell on a CPU, its input already projected."""
    hx, cx = hidden
    _, w_hh, _, b_hh, w_hr = weights
    gates = cpu_linear(hx, w_hh, b_hh).add_(step)
    in_gate, forget_gate, cell_gate, out_gate = gates.unsafe_chunk(4, 1)
    in_gate = in_gate.sigmoid_()
    forget_gate = forget_gate.sigmoid_()
    cell_gate = cell_gate.tanh_()
    out_gate = out_gate.sigmoid_()
    cy = (forget_gate * cx).add_(in_gate * cell_gate)
    hy = out_gate * cy.tanh()
    if w_hr is not None:
        hy = torch.matmul(hy, w_hr.t())
    return hy, cy


def _gru_cell(step, hidden, weights):
    """GRUCell on a CPU, its input already projected."""
    _, w_hh, _, b_hh, _ = weights
    input_gates = step.unsafe_chunk(3, 1)
    hidden_gates = cpu_linear(hidden, w_hh, b_hh).unsafe_chunk(3, 1)
    reset_gate = hidden_gates[0].add_(input_gates[0]).sigmoid_()
    update_gate = hidden_gates[1].add_(input_gates[1]).sigmoid_()
    new_gate = input_gates[2].add(hidden_gates[2].mul_(reset_gate)).tanh_()
    return (hidden - new_gate).mul_(update_gate).add_(new_gate)


def _tanh_cell(step, hidden, weights):
    """SimpleCell<tanh_f> on a CPU, its input already projected."""
    _, w_hh, _, b_hh, _ = weights
    return torch.tanh(cpu_linear(hidden, w_hh, b_hh).add_(step))


def _relu_cell(step, hidden, weights):
    """SimpleCell<relu_f> on a CPU, its input already projected."""
    _, w_hh, _, b_hh, _ = weights
    return torch.relu(cpu_linear(hidden, w_hh, b_hh).add_(step))


ONE_HIDDEN_CELLS = {"gru": _gru_cell, "rnn_tanh": _tanh_cell, "rnn_relu": _relu_cell}
# What `DeviceKernels` sets as torch._VF's gru, rnn_tanh and rnn_relu while active.
ONE_HIDDEN_ROUTES = {
    name: functools.partial(_routed_one_hidden_rnn, name, cell) for name, cell in ONE_HIDDEN_CELLS.items()
}


def onednn_lstm_workspace_bytes(
    steps: int, batch: int, input_size: int, hidden_size: int, dtype: torch.dtype = torch.float32
) -> int:
    """Bytes of the workspace oneDNN's LSTM returns for one layer and direction (oneDNN's
    rnn_utils set_workspace_sizes / set_offsets): gates, hidden states, the layer states and
    the cell states in the data type; two regions the size of the layer states and the cell
    states' gradient in float32, oneDNN's accumulation type; each region starting on a 4 KiB
    page. Measured on the CPU kernel over a grid of sizes, in float32 and bfloat16
    (tests/test_memory_kernels.py)."""
    size, accumulated = dtype.itemsize, torch.float32.itemsize
    states = 2 * (steps + 1) * batch
    widest = max(input_size, hidden_size)
    regions = (
        steps * batch * _good_leading_dimension(4 * hidden_size, size) * size,  # gates
        steps * batch * _good_leading_dimension(hidden_size, size) * size,  # hidden states
        states * _good_leading_dimension(widest, size) * size,  # layer states
        *[states * _good_leading_dimension(widest, accumulated) * accumulated] * 2,
        states * hidden_size * size,  # cell states
        states * hidden_size * accumulated,  # their gradient
    )
    offset = 0
    for region in regions:
        offset = _round_up(offset, _PAGE) + region
    return _round_up(offset, _PAGE)


_PAGE = 4096


def _good_leading_dimension(dim: int, size: int) -> int:
    """oneDNN's get_good_ld for elements of `size` bytes: a multiple of 64 bytes, never of
    256 elements (4K aliasing)."""
    multiple = 64 // size
    ld = _round_up(dim, multiple)
    return ld + multiple if ld % 256 == 0 else ld


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def onednn_lstm_layer_shapes(
    input, w0, w1, w2, w3, hx, cx, reverse, batch_sizes, mode, hidden_size, *rest, dtype: torch.dtype
):
    """Output shapes of aten.mkldnn_rnn_layer (time-major input, as mkldnn_rnn passes it,
    of `dtype`): output, last hidden and cell states, and the uint8 workspace its meta
    kernel leaves empty. The CPU kernel returns a workspace only while autograd records
    (grad enabled, whatever its `train` flag); without, its scratch buffers live inside the
    call and are not counted, like every kernel's."""
    steps, batch, input_size = input
    workspace = (
        onednn_lstm_workspace_bytes(steps, batch, input_size, hidden_size, dtype) if torch.is_grad_enabled() else 0
    )
    return [(steps, batch, hidden_size), hx, cx, ((workspace,), torch.uint8)]
