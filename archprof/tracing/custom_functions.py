"""What the training recorder needs to know of a custom autograd Function (one of the user's,
or the one a custom operator's autograd formula makes): the outputs its forward made with grad
off, which get their node only once its `apply` returns (`MadeWithoutGrad`), and the tensors
given to that `apply` (`given_to`), whose gradients its Python backward computes."""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch

from archprof.graph import OpNode, TensorMeta


class MadeWithoutGrad:
    """The outputs of the last forward op made with grad off, as inside a Function's forward,
    and that op: watched, not held, until the next op of the forward or a composite's end asks
    for them (`taken`), by which time `apply` may have given them a node. A tensor that dies
    meanwhile dies as it would."""

    def __init__(self) -> None:
        self._waiting: tuple[list[weakref.ref], int] | None = None

    def note(self, made: list[torch.Tensor], index: int) -> None:
        untagged = [weakref.ref(tensor) for tensor in made if tensor.grad_fn is None]
        self._waiting = (untagged, index) if untagged else None

    def taken(self) -> tuple[list[torch.Tensor | None], int] | None:
        """The tensors noted (None for one that died) and their op; None where none wait."""
        waiting, self._waiting = self._waiting, None
        return None if waiting is None else ([reference() for reference in waiting[0]], waiting[1])


def given_to(node, lookup: Callable[[torch.Tensor], TensorMeta], forward_ops: list[OpNode], origin_key: str):
    """The tensors given to the `apply` of a custom Function whose node is `node`, that autograd
    follows: a leaf's (a parameter) from its AccumulateGrad, another's as the output of the
    forward op whose node made it (`origin_key`: the metadata the recorder tags nodes with)."""
    given = []
    for function, output in node.next_functions:
        if function is None:
            continue
        variable = getattr(function, "variable", None)  # AccumulateGrad's
        if variable is not None:
            given.append(lookup(variable))
            continue
        maker = function.metadata.get(origin_key)
        outputs = forward_ops[maker].outputs if maker is not None and maker < len(forward_ops) else ()
        if output < len(outputs):
            given.append(outputs[output])
    return tuple(given)
