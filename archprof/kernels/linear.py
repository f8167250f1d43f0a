"""A linear layer as a real CPU run computes it (`cpu_linear`), for `DeviceKernels` and the
recurrent layers' projections.

Modelled (PyTorch 2.13 to 2.15, CPU, Linear.cpp):

- linear layers: an input of two dimensions with a bias is one addmm; one of any other
  number is flattened into rows for one addmm where it is contiguous and its bias has one
  dimension or squeezes to one (`_flattened_by_linear`). Anywhere else the composite
  multiplies (matmul) and then adds the bias in place, but out of place for a tensor that
  looks like a subclass, as every tensor does under a dispatch mode: a copy of the output
  that a real run never makes. Such a call on meta is run as the real one runs; any other
  keeps the composite road, the same there as anywhere.
- a bias that does not fit: addmm expands the bias, as it was given, to the product's rows
  and columns, and the in-place add cannot grow the output; a CPU raises where the bias
  does not expand to that shape ((1, 1, 6) flattened to 12 rows, (4, 6) added to a vector).
  The meta kernels word it otherwise, or broadcast addmm's bias to three dimensions and go
  on: the CPU's operator raises its own error first, on stand-ins (`_raise_the_cpus_error`).
- the one addmm in an inference trace on meta: its operators (the rows viewed, the weight
  transposed, the addmm, the output viewed back) handed to the trace's recorder one by one
  as Linear.cpp calls them (`_addmm_answered`), where the composite would send each down
  through the C++ dispatcher and back up into the recorder: the same operators, a sixth
  less of the layer's trace (130 against 155 us a layer on 196 rows of 64 features; a
  ConvNeXt block's two linear layers make 8 of its 16 operators). The product is viewed
  back with `view` up to PyTorch 2.14 and `_unsafe_view` from 2.15: the operator this
  PyTorch's Linear.cpp calls, asked of it once (`_view_back`, the same on a CPU as on meta).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import _disable_current_modes

from archprof.dispatch_mode import DispatchMode
from archprof.kernels.one_cpu_operator import COMPOSITE

_ADDMM, _T, _VIEW = torch.ops.aten.addmm.default, torch.ops.aten.t.default, torch.ops.aten.view.default
_LINEAR = torch.ops.aten.linear.default


def cpu_linear(input, weight, bias=None, answer: Callable[[Any, tuple], Any] | None = None):
    """at::linear as a real CPU run computes it: where it neither takes a matrix nor flattens
    the input into one addmm, a product and the bias added in place (out of place under a
    dispatch mode, for tensors that look like subclasses there). `answer`: what records an
    operator on `input` in the trace without the dispatcher (`Recorder.answering`), if any."""
    if bias is None or input.dim() == 0 or weight.dim() == 0:
        return torch._C._nn.linear(input, weight, bias)
    if input.dim() == 2 or _flattened_by_linear(input, bias):
        if weight.dim() == 2:  # any other addmm refuses first
            rows_by_columns = (math.prod(input.shape[:-1]), weight.shape[0])
            _raise_the_cpus_error(bias, rows_by_columns, lambda bias: bias.expand(rows_by_columns))  # addmm's
            if answer is not None and bias.dim() == 1 and _plain_on_meta(weight) and _plain_on_meta(bias):
                return _addmm_answered(input, weight, bias, answer)
        return torch._C._nn.linear(input, weight, bias)
    if bias.dim() != 1:
        bias.squeeze()  # Linear.cpp's test of the bias's shape: a view a CPU makes, recorded as it makes it
    output = torch.matmul(input, weight.t())
    _raise_the_cpus_error(bias, output.shape, lambda bias: torch.empty(output.shape, dtype=output.dtype).add_(bias))
    return output.add_(bias)


def _addmm_answered(input, weight, bias, answer: Callable[[Any, tuple], Any]):
    """Linear.cpp's one addmm, each operator handed to `answer` as the dispatcher hands it to
    the trace: `addmm(bias, input, weight.t())` for a matrix; else `_flatten_nd_linear`, the
    input viewed as rows first and the product viewed back to the input's leading sizes.
    Each intermediate lives as long as there: the transposed weight until the addmm returns,
    the rows and the product until the call does."""
    if input.dim() == 2:
        return answer(_ADDMM, (bias, input, answer(_T, (weight,))))
    *leading, features = input.shape
    rows = answer(_VIEW, (input, [math.prod(leading), features]))
    product = answer(_ADDMM, (bias, rows, answer(_T, (weight,))))
    return answer(_view_back(), (product, [*leading, product.shape[1]]))


class _LastOperator(DispatchMode):
    """Keeps the last operator the dispatcher hands it."""

    last = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.last = func
        return func(*args, **(kwargs or {}))


@functools.cache
def _view_back():
    """The operator this PyTorch's Linear.cpp views a flattened addmm's product back to the
    input's leading sizes with (`view`, `_unsafe_view` from 2.15): its one addmm run on a CPU
    (on meta its decomposition's first call imports torch._dynamo, 1.6 s), on tensors of one
    element, outside the trace's modes. Its C++ composite called directly: where autograd's
    keys are skipped (an inference trace's forward), `aten.linear` would reach the mode whole."""
    with _disable_current_modes(), _LastOperator() as watch:
        _LINEAR._op_dk(COMPOSITE, *(torch.zeros(shape) for shape in ((1, 1, 1), (1, 1), (1,))))
    return watch.last


def _plain_on_meta(tensor) -> bool:
    """A meta tensor that the dispatcher hands a mode as it is: no subclass's own dispatch
    to go through, which a call straight to the recorder would skip."""
    return type(tensor) in (torch.Tensor, torch.nn.Parameter) and tensor.is_meta


def _flattened_by_linear(input, bias) -> bool:
    """Whether Linear.cpp flattens an input of other than two dimensions into one matrix
    product with the bias (addmm): a contiguous input, with a bias of one dimension or that
    squeezes to one (all its sizes but one are 1)."""
    return input.is_contiguous() and (bias.dim() == 1 or sum(size != 1 for size in bias.shape) == 1)


def _raise_the_cpus_error(bias, shape, cpus_operation) -> None:
    """Where `bias` does not expand to `shape`, the error a CPU raises: `cpus_operation` run
    on a CPU stand-in of the bias, of no bytes (its strides 0). The add's stand-in output is
    allocated, as the CPU's is, and never written."""
    sizes = zip(reversed(bias.shape), reversed(shape), strict=False)  # from the last, as broadcasting pairs them
    if bias.dim() > len(shape) or any(have not in (1, want) for have, want in sizes):
        cpus_operation(torch.empty_strided(bias.shape, (0,) * bias.dim(), dtype=bias.dtype))
