"""Eigenvalues and singular values without the vectors a CPU does not compute: the autograd
kernels `DeviceKernels` registers for `linalg_svdvals`, `linalg_eigvalsh` and `linalg_eigvals`
(`VALUES_ONLY`), and linalg's test of whether autograd records a call (`recorded_by_autograd`).

Modelled (PyTorch 2.x, CPU):

- eigenvalues and singular values: `linalg_svdvals`, `linalg_eigvalsh` and `linalg_eigvals`
  compute the vectors too only where autograd may need them (linalg's
  `_may_require_fw_or_bw_grad`: grad mode on and an input that requires grad, or a tensor
  that looks like a subclass), which under any dispatch mode they always take for granted
  (every tensor looks like a subclass there, grad mode or not): a full SVD or
  eigendecomposition where a CPU computes the values alone. While active, their autograd
  kernels on meta and CPU tensors (AutogradMeta, AutogradCPU) are replaced by ones that run
  the composite's operators, the vectors asked for by that test on the tensor itself:
  `_linalg_svd` with `compute_uv`, `_linalg_eigh` with `compute_v`, `linalg_eig` or else
  `_linalg_eigvals`; a tensor subclass of its own (a Python dispatch key) takes the
  composite. That serves every road to them: `torch.linalg.svdvals`, `eigvalsh` and
  `eigvals` under any name, and the C++ functions that call them (matrix_norm's 2, -2 and
  nuclear norms, `linalg.norm`'s and `torch.norm`'s, `cond`'s 2-norms, `matrix_rank`). (Forward-mode
  AD's tangents, which the test counts too, are not looked at: a trace makes none; an `out=`
  call is another operator, whose composite computes the vectors.)
"""

from __future__ import annotations

import torch

_SVD = torch.ops.aten._linalg_svd.default
_SYMMETRIC_EIGEN = torch.ops.aten._linalg_eigh.default
_EIGEN = torch.ops.aten.linalg_eig.default
_EIGENVALUES = torch.ops.aten._linalg_eigvals.default
_SVDVALS = torch.ops.aten.linalg_svdvals.default
_SYMMETRIC_EIGENVALUES = torch.ops.aten.linalg_eigvalsh.default
_GENERAL_EIGENVALUES = torch.ops.aten.linalg_eigvals.default


def _svdvals(A, *, driver=None):
    """aten.linalg_svdvals: the thin SVD's singular values, U and V^H only for autograd."""
    if _subclass_like(A):
        return _SVDVALS.decompose(A, driver=driver)
    return _SVD(A, False, recorded_by_autograd(A), driver=driver)[1]


def _eigvalsh(A, UPLO="L"):
    """aten.linalg_eigvalsh: the symmetric eigenvalues, the eigenvectors only for autograd."""
    if _subclass_like(A):
        return _SYMMETRIC_EIGENVALUES.decompose(A, UPLO)
    return _SYMMETRIC_EIGEN(A, UPLO, recorded_by_autograd(A))[0]


def _eigvals(A):
    """aten.linalg_eigvals: the eigenvalues alone, or of the whole eigendecomposition for autograd."""
    if _subclass_like(A):
        return _GENERAL_EIGENVALUES.decompose(A)
    return _EIGEN(A)[0] if recorded_by_autograd(A) else _EIGENVALUES(A)


def _subclass_like(A) -> bool:
    """Whether a tensor is one PyTorch takes for a subclass itself (a Python dispatch key of its
    own: a tensor subclass), where the composites compute the vectors on any device."""
    return torch._C._dispatch_keys(A).has(torch._C.DispatchKey.Python)


# The composite operators of values only, whose kernels `DeviceKernels` replaces while active,
# on meta and CPU tensors, below every Python name torch.linalg reaches them by.
VALUES_ONLY = {"linalg_svdvals": _svdvals, "linalg_eigvalsh": _eigvalsh, "linalg_eigvals": _eigvals}


def recorded_by_autograd(*tensors) -> bool:
    """Whether autograd records a call on `tensors`, tested on the tensors themselves (under a
    dispatch mode PyTorch takes every tensor for a subclass that may need gradients): linalg's
    `_may_require_fw_or_bw_grad` outside a mode, forward-mode tangents aside."""
    return torch.is_grad_enabled() and any(tensor.requires_grad for tensor in tensors)
