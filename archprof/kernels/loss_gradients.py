"""Meta kernels for the loss gradients PyTorch has none for (`META_KERNELS`), which
`DeviceKernels` registers while active.

Modelled (PyTorch 2.x, CPU):

- the gradients of the CTC, multi-class and multi-label margin losses, which have no meta
  kernel (a training step through them failed): meta kernels, while active, making each a new
  contiguous tensor like the loss's input, as their CPU kernels do.
"""

from __future__ import annotations

import torch


def _laid_out_as(position: int):
    """A meta kernel whose result is a new contiguous tensor like its argument at `position`."""

    def kernel(*args, **kwargs):
        return torch.empty_like(args[position], memory_format=torch.contiguous_format)

    return kernel


# Meta kernels for operators PyTorch has none for, while `DeviceKernels` is active: the gradients
# of the CTC, multi-class and multi-label margin losses, each a new contiguous tensor like the
# loss's input, as their CPU kernels make it (`full_like(log_probs, -inf)`, an empty tensor
# resized to the input's sizes). Without, a training step through these losses failed.
META_KERNELS = {
    "_ctc_loss_backward": _laid_out_as(1),
    "_ctc_loss_backward.Tensor": _laid_out_as(1),
    "multi_margin_loss_backward": _laid_out_as(1),
    "multilabel_margin_loss_backward": _laid_out_as(1),
}
