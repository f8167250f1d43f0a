"""A 1-d pooling's window, as its module states it: PyTorch runs `F.max_pool1d` and
`F.avg_pool1d` as 2-d poolings of the input unsqueezed before the length, whose window
(1 x K) is not the layer's."""

import pytest
import torch
from torch import nn

import archprof


def _network():
    return nn.Sequential(
        nn.Conv1d(1, 4, 3),
        nn.MaxPool1d(4),
        nn.AvgPool1d(3, stride=2),
        nn.MaxPool1d(2, stride=1, padding=1, dilation=2),
        nn.Conv1d(4, 4, 5, stride=2),
    )


def _window(module: nn.Module) -> tuple[int, int]:
    """(kernel, stride) of a 1-d convolution or pooling, from the module's own attributes."""
    kernel = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
    stride = module.stride if isinstance(module.stride, int) else module.stride[0]
    return kernel, stride or kernel


@pytest.mark.parametrize("input_size", [(1, 256), (1, 97)])
def test_a_1d_poolings_kernel_column_is_its_modules_kernel_size(input_size):
    model = _network()
    report = archprof.analyze(model, input_size=input_size)
    kernels = dict(zip(report.columns["layer"], report.columns["kernel"], strict=True))
    for name, module in model.named_children():
        assert kernels[name] == str(_window(module)[0]), name


def test_the_network_view_gives_a_1d_poolings_kernel_and_stride_as_its_module_does():
    model = _network()
    text = archprof.analyze(model, input_size=(1, 256)).explain()
    table = text[text.index("receptive field down the network") :].split("\n\n")[0].splitlines()
    rows = {line.split()[1]: line.split() for line in table if line.startswith("  ") and line.split()[0].isdigit()}
    for name, module in model.named_children():
        kernel, stride = _window(module)
        assert rows[name][2:4] == [str(kernel), str(stride)], name


def test_a_2d_pooling_keeps_its_whole_window():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d((1, 4)), nn.AvgPool2d((3, 1)))
    report = archprof.analyze(model, input_size=(1, 16, 16))
    assert report.columns["kernel"] == ["3x3", "1x4", "3x1"]


def test_a_2d_pooling_of_a_map_the_model_unsqueezed_itself_keeps_its_window():
    """A 3x3 average pooling (padding 1) of an N x C x 1 x L map the forward unsqueezed: a 2-d
    window, which divides by 9 where a 1-d pooling of 3 divides by 3 (a real forward says so)."""

    class Pooled(nn.Module):
        def forward(self, x):
            return nn.functional.avg_pool2d(x.unsqueeze(2), kernel_size=3, stride=1, padding=1).squeeze(2)

    x = torch.rand(1, 2, 9) + 1
    assert not torch.allclose(Pooled()(x), nn.functional.avg_pool1d(x, 3, 1, 1))
    report = archprof.analyze(nn.Sequential(Pooled()), input_size=(2, 9))
    assert report.columns["kernel"] == ["3x3"]
