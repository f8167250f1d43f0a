"""Models in the forms PyTorch's own tools make of them: a ScriptModule that only a real
forward can run (archprof's CPU fallback copies it), and a torch.jit.trace'd module, whose
convolutions reach the trace as aten._convolution. The oracles: torch's own backward through
the ScriptModule (the gradients it writes), and the eager model's kernel sizes."""

from __future__ import annotations

import warnings

import torch
from torch import nn

import archprof


class ReadsAValue(nn.Module):
    """Its forward reads a value (a data-dependent branch): no meta trace, a real CPU forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.head = nn.Conv2d(8, 8, 3)

    def forward(self, x):
        y = self.conv(x)
        if bool(y.sum() > -1e9):
            y = self.head(y)
        return y


def test_a_scriptmodule_copied_for_a_real_training_step_gets_its_gradients():
    scripted = torch.jit.script(ReadsAValue())
    scripted(torch.randn(1, 3, 16, 16)).sum().backward()
    written = sum(p.grad.nbytes for p in scripted.parameters() if p.grad is not None)
    assert written == sum(p.nbytes for p in scripted.parameters())
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        report = archprof.analyze(torch.jit.script(ReadsAValue()), input_size=(3, 16, 16), training=True)
    assert report.traced_on == "cpu"
    assert report.totals.gradient_bytes == written
    assert not [w for w in shown if "not a leaf" in str(w.message)]  # the copy's parameters are leaves


def test_a_traced_modules_convolutions_name_their_kernels():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, (5, 1))).eval()
    traced = torch.jit.trace(model, torch.randn(1, 3, 32, 32))
    report = archprof.analyze(traced, input_size=(3, 32, 32))
    kernels = dict(zip(report.layers.layer, report.layers.kernel, strict=True))
    for name in ("0", "2"):
        assert kernels[name] == "x".join(map(str, model[int(name)].kernel_size))


def test_a_quantized_linear_layers_packed_weights_are_its_rows():
    """torch.ao keeps a quantized Linear's weights in a holder module that the layer reads
    and never calls: they are the layer's parameters, as the float model's rows have them."""
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).eval()
    quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    holders = [m for m in quantized.modules() if type(m).__name__ == "LinearPackedParams"]
    called = []
    for holder in holders:
        holder.register_forward_hook(lambda *_: called.append(1))
    quantized(torch.randn(1, 64))
    assert holders and not called  # read by their layer, never called
    float_rows = archprof.analyze(model, input_size=(64,)).layers
    rows = archprof.analyze(quantized, input_size=(64,)).layers
    assert list(zip(rows.layer, rows.param_count, strict=True)) == list(
        zip(float_rows.layer, float_rows.param_count, strict=True)
    )
    assert (rows.call >= 0).all()  # no row kept for a module never called


def test_a_quantized_embeddings_packed_weight_is_counted_whole():
    """A quantized embedding's packed object unpacks to its weight alone, not a (weight,
    bias) pair: all of its rows are its parameters, as the float embedding's."""
    embedding = torch.ao.nn.quantized.Embedding(10, 4)
    model = nn.Sequential(embedding)
    assert embedding.weight().numel() == 40
    report = archprof.analyze(model, inputs=["3:int64"])
    assert report.totals.param_count == embedding.weight().numel()
