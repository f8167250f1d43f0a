"""`Link.window`: what a window's (K, S, P) says of its units, without asking its reads, is
what its reads say (`units_reading` from every unit of a parent, `covers_parent`), for
every small window, padding (a negative one: a transposed convolution's crop), parent and
output size, and for a union's links (`dims._own_units`)."""

from __future__ import annotations

import itertools

from archprof.passes.receptive_field.dims import _own_units
from archprof.passes.receptive_field.links import Link, covers_parent, same_unit, units_reading
from archprof.passes.receptive_field.maps import AxisMap
from archprof.passes.receptive_field.windows import _window_reads


def _said_alike(windowed: Link, plain: Link, size: int) -> None:
    whole = (0, windowed.parent.size - 1)
    assert units_reading(windowed, size, whole) == units_reading(plain, size, whole)
    assert covers_parent(windowed, size) == covers_parent(plain, size)


def test_a_window_says_what_its_reads_say():
    kernels, strides, paddings, parents, sizes = range(1, 6), range(1, 5), range(-3, 7), range(1, 10), range(10)
    for k, s, p, parent_size, size in itertools.product(kernels, strides, paddings, parents, sizes):
        parent = AxisMap(0, parent_size)
        reads = _window_reads(k, s, p, 1)
        windowed = Link(parent, reads, s, period=1, window=(k, s, p))
        _said_alike(windowed, Link(parent, reads, s, period=1), size)


def test_a_union_link_says_what_its_reads_say():
    for parent_size, size in itertools.product(range(1, 10), range(10)):
        parent = AxisMap(0, parent_size)
        windowed = _own_units(parent, size)
        assert windowed.window == (1, 1, 0)
        _said_alike(windowed, Link(parent, same_unit, 1, period=1, shifts=((0, size - 1, 0),)), size)
