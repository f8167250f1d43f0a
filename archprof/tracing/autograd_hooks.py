"""The hooks the training recorder sets on autograd nodes: which gradient formulas are
running (`RunningFormulas`), gradients run on the road a CPU takes (`CpuRoads`: prod's on an
input with no zeros, matrix_exp's), and an object that dies with its node (`HeldByTheNode`). They hold
no recorder: the nodes keep their hooks."""

from __future__ import annotations

import torch

from archprof.graph import EngineNotes, OpNode, TensorMeta

# The key of the metadata of a node whose gradient formula the recorder brackets with hooks
# (`RunningFormulas.bracket`).
_BRACKETED = "archprof_bracketed"
# The node the engine starts a backward pass of several roots from: it passes their gradients on
# as they are, so that every op run with it running is the engine's (an add of two seeds where
# they meet: a model returning one tensor twice).
_GRAPH_ROOT = "torch::autograd::GraphRoot"


class RunningFormulas:
    """The autograd nodes whose gradient formula is running, innermost last (a reentrant
    checkpoint's formula runs a backward pass of its own), known through hooks on each node
    (`bracket`); and the gradients each returned, noted into `results`
    (`EngineNotes.formula_results`) through `metas` (the recorder's: id(tensor) -> its latest
    TensorMeta), and when each node let go of the gradients that came in (`EngineNotes.received`),
    by the number of `backward_ops` recorded then. It holds no recorder: the hooks stay on the
    nodes, which the traced tensors hold, and through a recorder they would hold every tensor it kept."""

    def __init__(self, metas: dict[int, TensorMeta], engine: EngineNotes, backward_ops: list[OpNode]) -> None:
        self.nodes: list = []
        self._metas = metas
        self._results = engine.formula_results
        self._received = engine.received
        self._backward_ops = backward_ops

    def bracket(self, node) -> None:
        """Hook `node`: the engine calls its pre hooks just before its formula and its post hooks
        just after, then adds each gradient the formula returned to one already waiting for the
        same input (a tensor read twice), with the node still running
        (`torch._C._current_autograd_node`). A node tagged while it runs (one a reentrant
        checkpoint's recomputation made last, whose backward pass starts with it) has passed its
        pre hooks: its formula is running."""
        node.metadata[_BRACKETED] = True
        if node is torch._C._current_autograd_node():
            self.nodes.append(node)
        node.register_prehook(self._starts)
        node.register_hook(self._ends)

    def _starts(self, _incoming: tuple) -> None:
        self.nodes.append(torch._C._current_autograd_node())

    def _ends(self, gradients: tuple, incoming: tuple) -> None:
        self.nodes.pop()
        made = (self._metas.get(id(tensor)) for tensor in gradients if tensor is not None)
        self._results.update(meta.id for meta in made if meta is not None)
        came_in = (self._metas.get(id(tensor)) for tensor in incoming if tensor is not None)
        steps_run = len(self._backward_ops)
        self._received.update((meta.storage, steps_run) for meta in came_in if meta is not None)

    def engines_op(self, node) -> bool:
        """Whether an op the backward pass runs with `node` running is the engine's own, run after
        the node's formula returned: an add of two gradients of one tensor. Every op the node
        that starts a pass of several roots runs is (it returns their gradients as they are)."""
        if node is None:  # the seeds, made before the backward pass
            return False
        if node.name() == _GRAPH_ROOT:
            return True
        return _BRACKETED in node.metadata and not (self.nodes and self.nodes[-1] is node)


class CpuRoads:
    """Gradient formulas that take another road on a CPU than under the trace's dispatch mode,
    where every tensor looks like a subclass (`CPU_ROADS`): the node's own formula runs
    unrecorded (`running`), between hooks on the node, and the post hook runs the CPU's road
    in its place, recorded, and returns its gradient instead. It holds no recorder (the nodes
    keep their hooks)."""

    def __init__(self) -> None:
        self.running = False

    def reroute(self, node) -> None:
        node.register_prehook(self._starts)
        node.register_hook(self._ends)

    def _starts(self, _incoming: tuple) -> None:
        self.running = True

    def _ends(self, gradients: tuple, incoming: tuple) -> tuple:
        self.running = False
        node = torch._C._current_autograd_node()
        gradient = CPU_ROADS[node.name()](node, incoming[0])
        return (gradient.to(gradients[0].dtype),)  # the engine's cast to the input's dtype, where it differs


def _prod_gradient_without_zeros(node, grad: torch.Tensor) -> torch.Tensor:
    """prod_backward's road where the input has no zeros (archprof assumes none, as random
    inputs have none; with zeros, or for a subclass, it takes exclusive running products from
    both ends), for its node and incoming gradient, on `self.to(grad.scalar_type())`
    (derivatives.yaml: a copy where prod was given another dtype): the zeros counted (along a
    dim: `zero_mask = (input == 0)`, summed along it, then whole, read back with `.item()`,
    which meta cannot; whole: `(input == 0).nonzero()`, whose empty result holds no bytes), then
    `grad * (result / input)`."""
    input, result = node._saved_self.to(grad.dtype), node._saved_result
    if input.dim() == 0:
        return grad
    if node.name() == "ProdBackward1":
        # torch hands a negative dim back as its unsigned 64-bit twin
        dim = node._saved_dim if node._saved_dim < 2**63 else node._saved_dim - 2**64
        if not node._saved_keepdim:
            grad, result = grad.unsqueeze(dim), result.unsqueeze(dim)
        zero_mask = torch.eq(input, 0)
        zero_mask.sum(dim, True).sum()
    else:
        torch.eq(input, 0)  # the mask `nonzero` reads, made and freed
    return grad * (result / input)


def _matrix_exp_gradient(node, grad: torch.Tensor) -> torch.Tensor:
    """linalg_matrix_exp_differential(self, grad, adjoint=true) as a CPU runs it: the block
    matrix [[A, G], [0, A]] (A = self^H, G = grad^H) written into zeros by three copies, its
    exponential, and that's upper right block (a view of it). For a subclass it concatenates
    the blocks instead (`cat` of `cat`s and a `zeros_like`): five n x n matrices more."""
    a, g = node._saved_self.mH, grad.mH
    n = a.shape[-1]
    blocks = torch.zeros((*a.shape[:-2], 2 * n, 2 * n), dtype=a.dtype, device=a.device)
    blocks.narrow(-2, 0, n).narrow(-1, 0, n).copy_(a)
    blocks.narrow(-2, n, n).narrow(-1, n, n).copy_(a)
    blocks.narrow(-2, 0, n).narrow(-1, n, n).copy_(g)
    return torch.linalg.matrix_exp(blocks).narrow(-2, 0, n).narrow(-1, n, n)


# The nodes `CpuRoads` runs the CPU's road for -> that road (the node, its incoming gradient -> its gradient).
CPU_ROADS = {
    "ProdBackward0": _prod_gradient_without_zeros,
    "ProdBackward1": _prod_gradient_without_zeros,
    "LinalgMatrixExpBackward0": _matrix_exp_gradient,
}


class HeldByTheNode:
    """An object an autograd node alone holds, in its metadata: it dies with the node."""
