"""The report's passes, written without the records and builtins they called per row or per
storage, give what those gave: a training row's operators without a formula, forward and
backward together, as the sum of two Counters."""

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from archprof.analysis import _calls_added

_CALLS = st.dictionaries(st.sampled_from(["aten.a", "aten.b", "aten.c", "aten.d"]), st.integers(1, 5))


@given(_CALLS, _CALLS)
def test_calls_added_are_the_sum_of_two_counters_in_its_order(calls, more):
    added = _calls_added(calls, more)
    summed = dict(Counter(calls) + Counter(more))
    assert list(added.items()) == list(summed.items())
    assert added is not calls
