"""The rows of a report as a tree: each module before the modules and layers it holds.

A container (a module with sub-modules in the report) gets one row placed before its
children: its own operations merged (a ResNet block's residual add) and its subtree merged
as `Report.merged_row` merges it (the subtotals). Leaves keep the order they ran in; the
model's own operations stay at the top level, in that order too."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from archprof.text import layer_label, visible_text


@dataclass(frozen=True)
class TreeRow:
    label: str  # the layer's name as tables show it
    level: int  # 0 for the top-level modules
    row: dict[str, Any]  # a leaf's row; a container's subtree merged
    # The report's rows shown here: a leaf's, a container's own (a diff's listed layers, `compare.diff_tree`).
    indices: tuple[int, ...]
    output: int  # the report's row whose output and field it shows: a leaf's, its subtree's last that ran
    own: dict[str, Any] | None = None  # a container's own rows merged ({}: none); None for a leaf
    # A diff's container (`compare.diff_tree`): its module, and its subtree's status.
    module: str = ""
    status: str = ""

    @property
    def is_container(self) -> bool:
        return self.own is not None


@dataclass(frozen=True)
class TreeNode:
    """A line of the module tree of a sequence of rows, each named by its layer's path."""

    path: str  # a leaf row's layer, or a container's module
    level: int  # 0 for the top-level modules
    rows: tuple[int, ...]  # a leaf's row; a container's own rows (maybe none)
    subtree: tuple[int, ...] | None = None  # a container's every row, its own and below; None for a leaf


def tree_nodes(paths: Sequence[str]) -> list[TreeNode]:
    """The rows named by `paths` (in the order they ran) as the module tree, containers first
    (see the module): every row in one node, a container's own rows in its node. Placed from
    a stack, not by recursion: a model nested hundreds of levels deep has as many."""
    containers = {path[:end] for path in set(paths) for end in _dots(path)}
    nodes: list[TreeNode] = []
    # Each level's items still to place (a leaf's row, or a container's module and rows), with the level.
    pending = [(0, iter(_placed(paths, containers, range(len(paths)), "")))]
    while pending:
        level, items = pending[-1]
        item = next(items, None)
        if item is None:
            pending.pop()
        elif isinstance(item, int):
            nodes.append(TreeNode(paths[item], level, (item,)))
        else:
            module, subtree = item
            own = tuple(i for i in subtree if paths[i] == module)
            nodes.append(TreeNode(module, level, own, tuple(subtree)))
            pending.append((level + 1, iter(_placed(paths, containers, subtree, module))))
    return nodes


def _placed(
    paths: Sequence[str], containers: set[str], indices: Sequence[int], parent: str
) -> list[int | tuple[str, list[int]]]:
    """The rows `indices` below `parent` sorted, in one pass, into leaves (a row) and the
    subtrees of the containers right below it (the container, its rows), in the order they
    first ran; the container's own rows stay in its node."""
    order: list[int | tuple[str, list[int]]] = []
    subtrees: dict[str, list[int]] = {}
    for index in indices:
        path = paths[index]
        if path == parent and parent:
            continue  # the container's own row: in its node
        child = _child(parent, path)
        if child not in containers:
            order.append(index)
        elif child in subtrees:
            subtrees[child].append(index)
        else:
            subtrees[child] = [index]
            order.append((child, subtrees[child]))
    return order


def _dots(path: str) -> Iterator[int]:
    """Where each '.' of `path` is."""
    end = path.find(".")
    while end >= 0:
        yield end
        end = path.find(".", end + 1)


def tree_rows(report) -> list[TreeRow]:
    """Every row of `report` (an archprof Report) once, containers first (see the module)."""
    shown: list[TreeRow] = []
    for node in tree_nodes(report.columns["layer"]):
        if node.subtree is None:
            index = node.rows[0]
            row = report.row(index)
            shown.append(TreeRow(layer_label(visible_text(node.path), row["call"]), node.level, row, node.rows, index))
        else:
            own = report.merged_row(node.path, node.rows) if node.rows else {}
            merged = report.merged_row(node.path, node.subtree)
            output = report.output_row(node.subtree)
            # Named "(not called)" as a leaf is where nothing under it ran (an unused head; the
            # layers of a block a fused kernel runs whole).
            idle = -1 if all(report.columns["call"][i] < 0 for i in node.subtree) else 0
            shown.append(
                TreeRow(layer_label(visible_text(node.path), idle), node.level, merged, node.rows, output, own)
            )
    return shown


def idle(row: dict) -> bool:
    """Whether a row (or a module's subtree, merged) ran no operation and holds no parameter
    or buffer: an `nn.Identity`, a Dropout in evaluation, a placeholder; its output is its input."""
    return not row["operators"] and not row["param_count"] and not row["buffer_bytes"]


def without_idle(nodes: list[TreeRow], hide_idle: bool | None) -> tuple[list[TreeRow], str | None]:
    """The rows a table draws, and the line under it (None: nothing to say), as the command's
    `--hide-idle` asks: True, the rows that are not `idle` (a module whose subtree is, with
    it), and how many it left out; False, every row, and how many are idle, where they are a
    tenth of the rows or more (timm's models call an nn.Identity in a third of theirs), and
    how to leave them out; None (the API's table, a page: no option to name), every row."""
    if hide_idle is None:
        return nodes, None
    flags = [idle(node.row) for node in nodes]
    types = Counter(node.row["module_type"] for node, flag in zip(nodes, flags, strict=True) if flag)
    idle_count = sum(flags)
    if not idle_count:
        return nodes, None
    named = ", ".join(visible_text(name) for name, _ in types.most_common(3)) + (", ..." if len(types) > 3 else "")
    counted = f"{idle_count} of {len(nodes)} rows that ran no operation and hold no parameters ({named})"
    if hide_idle:
        return [node for node, flag in zip(nodes, flags, strict=True) if not flag], f"Left out: {counted}."
    return nodes, (f"{counted}: --hide-idle leaves them out." if idle_count * 10 >= len(nodes) else None)


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
    end = path.find(".", len(parent) + 1 if parent else 0)
    return path if end < 0 else path[:end]
