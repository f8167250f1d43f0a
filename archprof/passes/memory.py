"""Memory per row: what is live after the row ran, the peak while it ran, and what autograd
saves for the backward pass (the size of the gradients of the row's parameters is
`passes.params`').
What is live when is worked out in `liveness`; a training step's peak in `training_memory`.

The graph holds the kernels a CPU runs (`archprof.kernels`), not the meta device's
decompositions: fused attention saves its output and a log-sum-exp, not the L x L
attention matrix; oneDNN's LSTM also saves the workspace it returns while autograd records.
Saved activations then equal saved-tensor hooks on a CPU forward: an attention block at
L = 1024 1,314,816 bytes (the math decomposition: 5,242,880), torchvision's vit_b_16
118,160,680 (+31% before), timm's mobilevit_xxs 58,722,112 (+16% before), nn.LSTM(32, 48)
on a 10 x 32 sequence 57,216 (14,720 before)."""

from __future__ import annotations

from archprof.graph import Graph, value_record
from archprof.passes.layers import LayerGroup
from archprof.passes.liveness import Liveness, liveness, model_state_storages


def memory_columns(graph: Graph, groups: list[LayerGroup]) -> dict[str, list[int]]:
    """`live_bytes`, `peak_live_bytes` and `saved_activation_bytes` per row."""
    live = liveness(graph)
    live_after, peak_during = [], []
    state = live.start
    during = live.during
    for group in groups:
        ops = group.ops
        if ops:
            state = live.after[ops[-1].index]
            live_after.append(state)
            # A row's ops are consecutive ops of the graph (`group_layers`), indexed by their place;
            # most rows run one, whose peak needs no slice.
            first, last = ops[0].index, ops[-1].index
            peak_during.append(during[last] if first == last else max(during[first : last + 1]))
        else:  # a call that ran no op, or a module never called: the state at that point
            live_after.append(state)
            peak_during.append(state)
    return {
        "live_bytes": live_after,
        "peak_live_bytes": peak_during,
        "saved_activation_bytes": _saved_per_row(graph, groups, live),
    }


def saved_activations(graph: Graph, live: Liveness | None = None) -> dict[int, int]:
    """Storage -> bytes of every activation autograd saved, each storage once however many
    views of it were saved. Parameters and buffers (and views of them, such as the
    transposed weight a linear layer saves) are left out: they are counted as parameters."""
    if not graph.saved:  # inference: nothing saved, and no need to walk the ops for the model's state
        return {}
    live = live or liveness(graph)
    state = model_state_storages(graph)
    sizes = live.storage_bytes
    # A saved tensor's nbytes only where its storage has no size, not as get()'s default: that
    # is computed for every tensor saved, a property's call each.
    return {
        t.storage: sizes[t.storage] if t.storage in sizes else t.nbytes  # noqa: SIM401
        for t in graph.saved
        if t.storage not in state
    }


@value_record  # one per saved storage: not frozen, whose __init__ sets each field through object.__setattr__
class SavedStorage:
    """An activation storage autograd saved, as `saved_activation_bytes` counts it."""

    nbytes: int
    op: int  # the forward op that made it (a network input: the first that read it); -1: none
    row: int  # the row it is charged to: that op's


def saved_rows(graph: Graph, groups: list[LayerGroup], live: Liveness | None = None) -> dict[int, SavedStorage]:
    """Storage -> `SavedStorage` of every activation autograd saved (`saved_activations`),
    charged as `_saved_charges` charges it."""
    return {storage: SavedStorage(*charge) for storage, charge in _saved_charges(graph, groups, live).items()}


def _saved_charges(
    graph: Graph, groups: list[LayerGroup], live: Liveness | None = None
) -> dict[int, tuple[int, int, int]]:
    """Storage -> (bytes, op, row) of every activation autograd saved, `SavedStorage`'s fields
    (tuples: the column sums them, without a record's __init__ per storage). A saved storage
    is charged to the row whose op made it (a network input: the row that first read it).
    Autograd saves an op's inputs before the op runs and its outputs after, so "the op
    running when it was saved" would be ambiguous; the maker is not."""
    live = live or liveness(graph)
    activations = saved_activations(graph, live)
    if not activations:  # inference: no op to look the rows of up
        return {}
    row_of_op = {op.index: row for row, group in enumerate(groups) for op in group.ops}
    charges = {}
    for storage, nbytes in activations.items():
        op = live.first_op.get(storage, -1)
        charges[storage] = (nbytes, op, row_of_op.get(op, 0))
    return charges


def _saved_per_row(graph: Graph, groups: list[LayerGroup], live: Liveness) -> list[int]:
    column = [0] * len(groups)
    for nbytes, _, row in _saved_charges(graph, groups, live).values():
        column[row] += nbytes
    return column
