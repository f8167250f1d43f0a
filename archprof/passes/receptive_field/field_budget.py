"""The receptive-field pass's budget of field evaluations (`FIELD_BUDGET`), and the room it
gives a map as deep as the network (`deep_maps`)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from archprof.recursion import recursion_room


class FieldsTooIrregular(Exception):
    """More fields to evaluate in one pass than `FIELD_BUDGET`: maps without a period whose
    padded fields widen layer after layer (a long chain of resamplings by 1.5 and strided
    pools) cost time and memory that grow geometrically with their depth (40 such blocks:
    14 s and 1.3 GB); the pass stops following them, and says so."""


# Fields evaluated (cache misses of `AxisMap.field`) in one pass, at most: HRNet-W18's
# analysis evaluates 3,412, Swin-T's 2,014, a ResNet-50's 146.
FIELD_BUDGET = 1_000_000


TOO_IRREGULAR = f"its fields are too irregular to follow (more than {FIELD_BUDGET:,} to evaluate)"


# What is left of the budget in the pass under way (`deep_maps`); None outside one.
fields_left: list[int | None] = [None]

# One pass at a time in the process (`deep_maps`): the budget is the process's. Passes are
# pure Python: threads would not run them side by side anyway.
_ONE_PASS_AT_A_TIME = threading.RLock()

# Python frames a map may take: one per layer and two per link (Python-to-Python calls use
# no C stack).
_DEEPEST_MAP = 100_000


@contextmanager
def deep_maps() -> Iterator[None]:
    """Room for evaluating a map as deep as the network (`recursion_room`), and the pass's
    budget of fields (`FIELD_BUDGET`), where no outer pass holds one."""
    with _ONE_PASS_AT_A_TIME, recursion_room(_DEEPEST_MAP):
        outermost = fields_left[0] is None
        if outermost:
            fields_left[0] = FIELD_BUDGET
        try:
            yield
        finally:
            if outermost:
                fields_left[0] = None
