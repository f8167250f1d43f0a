"""What `Walk.merge` gathers of the fields it merges (`Gathered`): each output dimension's
entries, the maps read whole or kept at one unit, and whether a path with units that read
no pixel along one axis joins its map along another to that axis's union
(`Gathered.idle_along_one_axis`). A merge whose fields begin with those of the merge before
it resumes from what that one gathered (`gathered`): a DenseNet block's concatenations, each
of every layer's output so far, then gather each layer's field, ask its entries what their
merge needs to know, and ask its maps whether every unit reads, once, not once per later
concatenation."""

from __future__ import annotations

from collections.abc import Callable

from archprof.passes.receptive_field.dims import Entries, Field, Parts
from archprof.passes.receptive_field.maps import AxisMap

Shaped = tuple[Field, tuple[int, ...]]  # a merged field, with its input's shape


class Gathered:
    """Of `fields` merged into an output of `len(along)` dimensions: per output dimension
    the entries of each field along it, with its input's size there (aligned on the last
    dimensions, as NumPy broadcasts), and what `merge_entries` asks of them (`dims.Entries`;
    None where no field has one there); the maps read whole (`whole`) and kept at one unit
    (`loose`, in order); whether an entry holds paths side by side (`parted`); per input
    axis, the maps the fields have as dimensions of their own (`maps`)."""

    __slots__ = ("_asked", "_idling", "along", "fields", "loose", "maps", "parted", "whole")

    def __init__(self, ndim: int) -> None:
        self.fields: list[Shaped] = []
        self.along: list[Entries | None] = [None] * ndim  # made at a dimension's first entry
        self.whole: set[AxisMap] = set()
        self.loose: dict[AxisMap, None] = {}
        self.parted = False
        self.maps: dict[int, set[AxisMap]] = {}
        # Fields whose maps were asked whether every unit reads (`idle_along_one_axis`), and
        # of those, each with such a map: the axes of those maps, and of all its maps.
        self._asked = 0
        self._idling: list[tuple[set[int], set[int]]] = []

    def add(self, field: Field, shape: tuple[int, ...]) -> None:
        along, offset = self.along, len(self.along) - len(shape)
        for k, entry in enumerate(field.dims):
            if entry is not None and k + offset >= 0:
                entries = along[k + offset]
                if entries is None:
                    entries = along[k + offset] = Entries()
                entries.add(entry, shape[k])
                self.parted = self.parted or type(entry) is Parts
            if type(entry) is AxisMap:
                self.maps.setdefault(entry.axis, set()).add(entry)
        if field.whole:
            self.whole |= field.whole
        if field.loose:
            self.loose.update(dict.fromkeys(field.loose))
        self.fields.append((field, shape))

    def idle_along_one_axis(self, every_unit_reads: Callable[[AxisMap], bool]) -> bool:
        """Whether the fields, per input axis a union of their maps, may give a unit more than
        it reads: a path with units that read no pixel along one axis (a constant padding, a
        strided transposed convolution's empty rows; `every_unit_reads`) reads nothing at all
        there, but its map along another axis, where the paths' maps differ, still joins that
        axis's union (a map and a copy shifted along both axes and padded back, added:
        NASNet's padded and cropped pooling). The fields asked before (by the merge this one
        resumes) are not asked again: those with such a map are kept, as the maps along the
        other axes may differ now."""
        maps = self.maps
        if len(maps) < 2:
            return False
        for along in maps.values():  # plain loops here: every merge of several fields comes here
            if len(along) != 1:
                break
        else:
            return False
        for idle, axes in self._idling:
            if _joins_other_axis(idle, axes, maps):
                return True
        while self._asked < len(self.fields):
            own, axes = [], set()
            for entry in self.fields[self._asked][0].dims:
                if type(entry) is AxisMap:
                    own.append(entry)
                    axes.add(entry.axis)
            idle: set[int] = set()
            for axis_map in own:
                if not every_unit_reads(axis_map):
                    idle.add(axis_map.axis)
                    if _joins_other_axis({axis_map.axis}, axes, maps):
                        return True
            if idle:
                self._idling.append((idle, axes))
            self._asked += 1
        return False


def _joins_other_axis(idle: set[int], axes: set[int], maps: dict[int, set[AxisMap]]) -> bool:
    """Whether a field with maps along `axes`, of which those along `idle` have units that read
    nothing, has a map along another axis where the merged fields' maps differ."""
    return any(other != axis and len(maps[other]) > 1 for axis in idle for other in axes)


def gathered(last: Gathered | None, fields: list[Shaped], ndim: int) -> Gathered:
    """What `fields` hold along an output of `ndim` dimensions: `last` (what the merge before
    gathered) taken on, the fields past its own added to it, where its fields begin these;
    else gathered anew. `last` is the caller's to give up (`Walk.merge` keeps the latest
    only): taken on, not copied, as a copy costs what the fields so far hold (a DenseNet
    block's concatenations, each of every layer's output so far)."""
    count = len(last.fields) if last is not None else 0
    if count and count <= len(fields) and len(last.along) == ndim and fields[:count] == last.fields:  # type: ignore[union-attr]
        paths = last
    else:
        paths, count = Gathered(ndim), 0
    for field, shape in fields[count:]:
        paths.add(field, shape)
    return paths
