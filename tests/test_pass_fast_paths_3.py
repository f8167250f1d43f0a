"""The report's passes, written without the records and builtins they called per row or per
storage, give what those gave: a training row's operators without a formula, forward and
backward together, as the sum of two Counters; a storage the forward let go of after its last
reader, held to then (by comparisons, not max() and min())."""

from collections import Counter

import torch
from hypothesis import given
from hypothesis import strategies as st

from archprof.analysis import _calls_added
from archprof.graph import ModuleCall, OpNode, TensorMeta
from archprof.passes.liveness import liveness_over

_CALLS = st.dictionaries(st.sampled_from(["aten.a", "aten.b", "aten.c", "aten.d"]), st.integers(1, 5))


@given(_CALLS, _CALLS)
def test_calls_added_are_the_sum_of_two_counters_in_its_order(calls, more):
    added = _calls_added(calls, more)
    summed = dict(Counter(calls) + Counter(more))
    assert list(added.items()) == list(summed.items())
    assert added is not calls


def _chain_with_releases(released):
    """x -> a -> b -> c (4, 8, 16 and 32 bytes), one op each: the live bytes over it with
    `released` (`Graph.released`: storage -> the ops run when the forward let go of it)."""
    call = ModuleCall("", "Chain", 0, 0, 0)
    x = TensorMeta(0, (1,), torch.float32, 0, "input")
    a, b, c = (TensorMeta(n, (2**n,), torch.float32, n, "activation") for n in (1, 2, 3))
    reads = [(x, a), (a, b), (b, c)]
    steps = [OpNode(i, "aten.relu", (t,), {}, (t,), (made,), call, False, False) for i, (t, made) in enumerate(reads)]
    return liveness_over(steps, [x], set(), set(), released=released)


def test_a_storage_let_go_of_late_is_held_to_then_and_no_later_than_the_end():
    # a (8 bytes), read last by the second op, let go of after the end: held to the end, freed
    # after the last op; b (16), let go of before its last reader: freed after that reader.
    live = _chain_with_releases({1: 99, 2: 1})
    assert live.during == [12, 24, 56]
    assert live.after == [8, 24, 0]
    # Let go of right after its last reader: freed there, as with no release noted.
    assert _chain_with_releases({1: 2}).after == _chain_with_releases({}).after == [8, 16, 0]
