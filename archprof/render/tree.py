"""The rows of a report as a tree: each module before the modules and layers it holds.

A container (a module with sub-modules in the report) gets one row placed before its
children: its own operations merged (a ResNet block's residual add) and its subtree merged
as `Report.merged_row` merges it (the subtotals). Leaves keep the order they ran in; the
model's own operations stay at the top level, in that order too."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from archprof.text import layer_label, visible_text


@dataclass(frozen=True)
class TreeRow:
    label: str  # the layer's name as tables show it
    level: int  # 0 for the top-level modules
    row: dict[str, Any]  # a leaf's row; a container's subtree merged
    indices: tuple[int, ...]  # the report's rows shown here: a leaf's, a container's own
    output: int  # the report's row whose output and field it shows: a leaf's, its subtree's last that ran
    own: dict[str, Any] | None = None  # a container's own rows merged ({}: none); None for a leaf

    @property
    def is_container(self) -> bool:
        return self.own is not None


def tree_rows(report) -> list[TreeRow]:
    """Every row of `report` (an archprof Report) once, containers first (see the module)."""
    paths = report.columns["layer"]
    containers = {".".join(path.split(".")[:level]) for path in paths for level in range(1, path.count(".") + 1)}
    shown: list[TreeRow] = []

    def place(indices: list[int], parent: str, level: int) -> None:
        placed: set[str] = set()
        for index in indices:
            path = paths[index]
            if path == parent and parent:
                continue  # the container's own row: merged into its row
            child = _child(parent, path)
            if child not in containers:
                row = report.row(index)
                shown.append(TreeRow(layer_label(visible_text(path), row["call"]), level, row, (index,), index))
            elif child not in placed:
                placed.add(child)
                subtree = [i for i in indices if paths[i] == child or paths[i].startswith(child + ".")]
                own = tuple(i for i in subtree if paths[i] == child)
                own_merged = report.merged_row(child, own) if own else {}
                merged = report.merged_row(child, subtree)
                shown.append(TreeRow(visible_text(child), level, merged, own, report.output_row(subtree), own_merged))
                place(subtree, child, level + 1)

    place(list(range(len(paths))), "", 0)
    return shown


def top_level_rules(nodes: list[TreeRow]) -> list[bool]:
    """Per row of `nodes`, whether a rule goes above it: around each top-level module that
    has sub-modules, so that a network's stages stand apart."""
    rules = []
    previous = None
    for node in nodes:
        rules.append(previous is not None and node.level == 0 and (node.is_container or previous.is_container))
        if node.level == 0:
            previous = node
    return rules


def _child(parent: str, path: str) -> str:
    """The module right below `parent` on the way to `path` ('' stays '': the model's own rows)."""
    if not path:
        return ""
    depth = parent.count(".") + 2 if parent else 1
    return ".".join(path.split(".")[:depth])
