"""Bytes moved: per row, the fewest bytes its work must move through memory (the roofline's
denominator)."""

from __future__ import annotations

from collections.abc import Sequence

from archprof.graph import Graph
from archprof.passes.layers import LayerGroup


def bytes_moved(graph: Graph, groups: Sequence[LayerGroup]) -> list[int]:
    """Per row, the fewest bytes its work must move through memory: each tensor it reads
    from outside the row (inputs, weights, buffers, earlier rows' outputs) read once, and
    each tensor it leaves behind (its outputs, and tensors from outside it overwrites in
    place) written once.

    Approximations: tensors made and used inside one row (the intermediates of a multi-op
    row, which eager PyTorch does write and re-read) are not counted; a view read from
    outside counts the smaller of the view and its base; views and op-less rows (Identity,
    Dropout in eval, flatten) move nothing; a weight is counted in every call that reads it.
    """
    base: dict[int, int] = {}  # storage -> bytes of the tensor that made it
    for meta in graph.inputs:
        base.setdefault(meta.storage, meta.nbytes)
    for op in graph.ops:
        for meta in op.inputs:
            if meta.kind != "activation":  # parameters, buffers, inputs, constants own theirs
                base.setdefault(meta.storage, meta.nbytes)
        if not op.is_view and not op.writes_input:
            for meta in op.outputs:
                base.setdefault(meta.storage, meta.nbytes)

    moved = []
    for group in groups:
        made: set[int] = set()
        written: set[int] = set()
        read: dict[int, int] = {}
        for op in group.ops:
            if op.is_view:
                continue
            for meta in op.inputs:
                if meta.storage not in made:
                    size = min(meta.nbytes, base.get(meta.storage, meta.nbytes))
                    read[meta.storage] = max(read.get(meta.storage, 0), size)
            if op.writes_input:
                written.update(meta.storage for meta in op.outputs)
            else:
                made.update(meta.storage for meta in op.outputs)
        outputs = {meta.storage for meta in group.outputs}
        left = (outputs & (made | written)) | (written - made)
        moved.append(sum(read.values()) + sum(base.get(s, 0) for s in left))
    return moved
