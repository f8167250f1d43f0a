"""What a CPU allocates for a storage an op makes or reads: the tensor's own bytes, but more for an
op whose kernel makes its output like its input or sizes an embedding bag's results otherwise
than their meta kernel, none for a zero tensor or for a CPU operator's workspace."""

from __future__ import annotations

import torch

from archprof.graph import OpNode, TensorMeta


def operator_workspace(*ops: list[OpNode]) -> set[int]:
    """The storages that are some CPU operator's workspace (`OpNode.workspace`), counted as none."""
    return {storage for steps in ops for op in steps for storage in op.workspace}


# Ops whose CPU kernel makes its output like its first input, then resizes it to the result's
# shape, which keeps the storage where the result is smaller: losses that write every element's
# loss into their output, then resize that to the reduced 0-dim result (mse_loss's and
# smooth_l1_loss's structured kernels, binary cross entropy's, soft margin's), and col2im
# (F.fold, and F.unfold's gradient), whose output starts as `empty_like` its column input.
_MADE_LIKE_THE_INPUT = frozenset(
    {"aten.mse_loss", "aten.smooth_l1_loss", "aten.binary_cross_entropy", "aten.soft_margin_loss", "aten.col2im"}
)


# Ops making a tensor whose storage holds no byte: a zero tensor (`_efficientzerotensor`, the
# gradient sgn's formula returns for a real input), whose allocator allocates nothing; an op
# reading it takes a 0-dim zero expanded in its place.
_NO_BYTES_MADE = frozenset({"aten._efficientzerotensor"})


# nn.EmbeddingBag's operators, whose CPU kernel (EmbeddingBag.cpp's _embedding_bag_cpu_impl) sizes
# its four results otherwise than their meta kernel shapes them (`_embedding_bag_bytes`).
_EMBEDDING_BAGS = frozenset({"aten._embedding_bag", "aten._embedding_bag_forward_only"})
_BAG_SUM, _BAG_MAX = 0, 2
# The weights' dtypes the CPU's sum over each bag takes its fast road for (is_fast_path_index_select).
_FAST_BAG_SUMS = frozenset({torch.float32, torch.float16, torch.bfloat16})


def _embedding_bag_bytes(op: OpNode, place: int) -> int:
    """The bytes a CPU allocates for result `place` of an embedding bag (output, offset2bag,
    bag_size, max_indices), each sized as _embedding_bag_cpu_impl sizes it, the indices' dtype
    for the last three:

    - offset2bag: none on the sum's fast road (a weight of float32, float16 or bfloat16, no
      padding index), which never needs it; else made for one index more than there are, then
      shrunk by a resize, which keeps the storage;
    - bag_size: made one per offset, then, but for `_embedding_bag_forward_only`'s sum, shrunk to
      one per bag (one offset fewer with include_last_offset), the storage kept;
    - max_indices: made as bag_size's shape is by then; for max, grown to one index per bag and
      embedding dimension (the meta kernel's shape); else one per bag, where the meta kernel has
      none for a sum.

    The weights' and indices' strides are taken for contiguous (nn.EmbeddingBag's are)."""
    weight, indices, offsets = op.args[:3]
    mode, include_last_offset, padding_idx = (
        op.args[at] if len(op.args) > at else default for at, default in ((4, _BAG_SUM), (7, False), (8, -1))
    )
    if place == 0:
        return op.outputs[0].nbytes
    index_bytes = op.outputs[place].dtype.itemsize
    bags = offsets.shape[0] - bool(include_last_offset)
    if place == 1:
        fast_sum = mode == _BAG_SUM and weight.dtype in _FAST_BAG_SUMS and padding_idx < 0
        return 0 if fast_sum else (indices.shape[0] + 1) * index_bytes
    shrunk = mode != _BAG_SUM or op.op == "aten._embedding_bag"  # make_bag_size_out's requires_grad or mode
    if place == 2:
        return offsets.shape[0] * index_bytes
    if mode == _BAG_MAX:
        return bags * weight.shape[1] * index_bytes
    return (bags if shrunk else offsets.shape[0]) * index_bytes


# The ops whose storages `allocated` sizes otherwise than as their tensors' bytes.
SIZED_OTHERWISE = _NO_BYTES_MADE | _EMBEDDING_BAGS | _MADE_LIKE_THE_INPUT


def zero_tensors(ops: list[OpNode]) -> set[int]:
    """The storages of the zero tensors `ops` make (`_NO_BYTES_MADE`)."""
    return {tensor.storage for op in ops if op.op in _NO_BYTES_MADE for tensor in op.outputs}


def allocated(op: OpNode, tensor: TensorMeta) -> int:
    """The bytes of `tensor`'s storage, made or read by `op`: its own, but the first output of
    an op of `_MADE_LIKE_THE_INPUT`, the larger of its first input's bytes and its own (a
    resize only grows a storage), and none for an op of `_NO_BYTES_MADE`."""
    if op.op in _NO_BYTES_MADE:
        return 0
    if op.op in _EMBEDDING_BAGS and tensor in op.outputs:
        return _embedding_bag_bytes(op, op.outputs.index(tensor))
    if op.op in _MADE_LIKE_THE_INPUT and tensor is op.outputs[0]:
        return max(op.inputs[0].numel * tensor.dtype.itemsize, tensor.nbytes)
    return tensor.nbytes
