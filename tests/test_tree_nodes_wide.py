"""The module tree of a wide model (hundreds of blocks side by side): every block's rows under
its own node, in the order they ran. The oracles: a real forward's hooks (which layers ran,
in what order) and the rows grouped by brute force from their paths."""

import random

import torch
import torch.nn.functional as F
from torch import nn

import archprof
from archprof.render.tree import tree_nodes

BLOCKS = 300


class ResBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))

    def forward(self, x):
        return x + F.relu(self.body(x))  # the block's own rows: the ReLU and the add


class Wide(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.blocks = nn.Sequential(*[ResBlock() for _ in range(BLOCKS)])

    def forward(self, x):
        return self.blocks(self.stem(x)).mean((2, 3))  # the model's own row, last


def brute_force_subtree(paths, module):
    return tuple(i for i, path in enumerate(paths) if path == module or path.startswith(module + "."))


def test_every_block_of_a_wide_model_holds_its_own_rows_in_the_order_they_ran():
    model = Wide().eval()
    ran = []
    hooks = [
        module.register_forward_pre_hook(lambda _m, _i, name=name: ran.append(name))
        for name, module in model.named_modules()
        if not list(module.children())
    ]
    model(torch.randn(1, 3, 8, 8))
    for hook in hooks:
        hook.remove()
    paths = archprof.analyze(model, input_size=(3, 8, 8)).columns["layer"]
    nodes = tree_nodes(paths)

    # Each layer that ran, after every module holding it (once, at its depth), then the model's own row.
    expected, shown = [], set()
    for leaf in ran:
        parts = leaf.split(".")
        for depth in range(1, len(parts) + 1):
            line = (".".join(parts[:depth]), depth - 1)
            if depth == len(parts) or line not in shown:
                expected.append(line)
                shown.add(line)
    expected.append(("", 0))
    assert [(node.path, node.level) for node in nodes] == expected
    assert sum(node.path.startswith("blocks.") and node.level == 1 for node in nodes) == BLOCKS

    containers = {name for name, module in model.named_modules() if name and list(module.children())}
    assert {node.path for node in nodes if node.subtree is not None} == containers
    for node in nodes:
        if node.subtree is None:
            assert paths[node.rows[0]] == node.path and len(node.rows) == 1
        else:
            assert node.subtree == brute_force_subtree(paths, node.path), node.path
            assert node.rows == tuple(i for i in node.subtree if paths[i] == node.path), node.path
    block = next(node for node in nodes if node.path == "blocks.7")
    assert len(block.rows) >= 1  # the residual add is the block's, not a layer's
    assert sorted(i for node in nodes for i in node.rows) == list(range(len(paths)))  # every row once


def test_rows_out_of_order_are_grouped_under_their_block_in_the_order_given():
    """A diff lists both sides' rows merged (`ReportDiff.every_layer`): a block's rows need not
    be together. Each block still gets one node, where its first row is, holding all of them."""
    block_rows = [path for b in range(BLOCKS) for path in (f"{b}.conv", f"{b}.bn", f"{b}")]
    paths = ["stem", *random.Random(0).sample(block_rows, len(block_rows)), ""]
    nodes = tree_nodes(paths)

    first_row = {}
    for i, path in enumerate(paths):
        first_row.setdefault(path.split(".")[0], i)
    top = [node.path for node in nodes if node.level == 0]
    assert top == sorted(first_row, key=first_row.get)
    for position, node in enumerate(nodes):
        if node.level == 0 and node.path not in ("stem", ""):
            assert node.subtree == brute_force_subtree(paths, node.path)
            assert node.rows == (paths.index(node.path),)
            leaves = nodes[position + 1 : position + 3]
            assert [leaf.level for leaf in leaves] == [1, 1]
            assert [leaf.rows[0] for leaf in leaves] == [i for i in node.subtree if paths[i] != node.path]
    assert sorted(i for node in nodes for i in node.rows) == list(range(len(paths)))


def test_a_tree_thousands_of_levels_deep_is_placed_without_recursion():
    """Placed by recursion, one call a level, a path of 990 levels (a report file's) ended
    in a RecursionError traceback: placed from a stack, each level is a container one level
    below the last, holding the rest of the rows. The oracle: the rows grouped by brute
    force from their paths."""
    deepest = ".".join(f"m{level}" for level in range(3_000))
    paths = [deepest, deepest.rsplit(".", 1)[0] + ".other", "head"]
    nodes = tree_nodes(paths)
    containers = [node for node in nodes if node.subtree is not None]
    assert [node.path for node in containers] == [".".join(deepest.split(".")[:n]) for n in range(1, 3_000)]
    assert [node.level for node in nodes] == [*range(3_000), 2_999, 0]
    for node in containers:
        assert node.subtree == brute_force_subtree(paths, node.path)
    assert [(node.path, node.rows) for node in nodes if node.subtree is None] == [
        (deepest, (0,)),
        (paths[1], (1,)),
        ("head", (2,)),
    ]
