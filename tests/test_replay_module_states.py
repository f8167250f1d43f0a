"""archprof.tracing.replay and archprof.tracing.module_states: a block called again under
torch.func.functional_call, and tensors a block lets go of between its calls.

The oracles are the same analysis under a torch-function mode that passes every call through
(`Passing`, from test_replay: no block is watched nor copied, every forward runs), and the
real forward on the CPU: which weight a convolution is handed (a forward pre-hook), which
tensors are still alive once it returns (weak references)."""

from __future__ import annotations

import weakref

import pytest
import torch
import torch.nn.utils.prune as prune
from torch import nn
from torch.func import functional_call

import archprof
from tests.test_replay import Passing, copies  # noqa: F401 (a fixture)


class Block(nn.Module):
    """Convolutions with a dozen operators of the block's own between them: worth copying."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.b1 = nn.BatchNorm2d(channels)
        self.c2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x))) * 0.5 + 1
        y = torch.sigmoid(y) * y
        return x + self.c2(y - y.mean((2, 3), keepdim=True))


def _analysed_both_ways(model: nn.Module):
    """The report with blocks copied, after checking that it is the one every forward run gives."""
    report = archprof.analyze(model, input_size=(3, 16, 16))
    with Passing():
        ran = archprof.analyze(model, input_size=(3, 16, 16))
    assert repr(report.graph) == repr(ran.graph)  # each op's inputs by name and id; what is let go of, when
    assert report.layers.equals(ran.layers)  # param_count, live_bytes, peak_live_bytes per row
    assert report.totals == ran.totals
    return report


def _weights_handed_to_c1(model: nn.Module) -> list[str]:
    """The oracle: the name of the weight blk.c1 is handed at each call of a real forward."""
    handed = []
    names = {id(t): name for name, t in model.named_parameters()}
    handle = model.blk.c1.register_forward_pre_hook(lambda module, args: handed.append(names[id(module.weight)]))
    with torch.no_grad():
        model(torch.randn(1, 3, 16, 16))
    handle.remove()
    return handed


def _weights_read_by_c1(report) -> list[str]:
    """The name of the weight each convolution of blk.c1 reads in the report's graph."""
    return [op.inputs[1].name for op in report.graph.ops if op.op == "aten.convolution" and op.module.path == "blk.c1"]


class SwapsAWeight(nn.Module):
    """Its block called four times, the third with `other`'s weight in place of its first convolution's."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blk = Block()
        self.other = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        x = self.blk(self.blk(self.stem(x)))
        x = functional_call(self.blk, {"c1.weight": self.other.weight}, (x,), strict=False)
        return self.blk(x)


def test_a_block_called_with_a_weight_put_in_its_place_reads_that_weight(copies):  # noqa: F811
    """The call under functional_call was copied from the one before it, and its convolution
    read blk.c1.weight: `other` counted 584 parameters at no call, where it holds 584."""
    model = SwapsAWeight().eval()
    handed = _weights_handed_to_c1(model)
    assert handed == ["blk.c1.weight", "blk.c1.weight", "other.weight", "blk.c1.weight"]

    report = _analysed_both_ways(model)
    read = _weights_read_by_c1(report)
    assert read == handed
    assert copies == [("blk", "blk")]  # the fourth call, from the second: the swap stops copying for one call
    layers = report.layers
    assert layers.query("layer == 'blk.c1' and call == 2").param_count.tolist() == [model.other.weight.numel()]
    # its weight counted where blk.c1 read it
    assert layers.query("layer == 'other' and call == -1").param_count.tolist() == [model.other.bias.numel()]


class Caching(Block):
    """Keeps its latest result, replaced at its next call (a feature cache)."""

    def forward(self, x):
        out = super().forward(x)
        self.last = out * 2
        return out


class CachesThrice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blk = Caching()
        self.head = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        x = self.stem(x)
        for _ in range(3):
            x = self.blk(x)
        return self.head(x)


class Pruned(nn.Module):
    """Two blocks taken in turn, the second's first convolution pruned: prune's pre-hook makes
    its weight again at each call, from weight_orig and weight_mask, and lets go of the last."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = Block()
        self.b = Block()
        prune.l1_unstructured(self.b.c1, "weight", 0.5)

    def forward(self, x):
        x = self.stem(x)
        for block in (self.a, self.b, self.a, self.b, self.a):
            x = block(x)
        return x


def _let_go(model: nn.Module) -> tuple[str, list[bool]]:
    """The path of the module whose calls each leave a tensor in it (the cache, the pruned
    weight), and whether each is still alive once the real forward returns (weak references)."""
    if isinstance(model, CachesThrice):
        watched, path, kept = model.blk, "blk", lambda module: module.last
    else:
        watched, path, kept = model.b.c1, "b.c1", lambda module: module.weight
    references = []
    handle = watched.register_forward_hook(lambda module, args, output: references.append(weakref.ref(kept(module))))
    with torch.no_grad():
        model(torch.randn(1, 3, 16, 16))
    handle.remove()
    return path, [reference() is not None for reference in references]


def _made_in_each_call(graph, path: str) -> list[int]:
    """The storage of what each call of the module at `path` kept: the block's cache (its last
    operator), or the pruned weight (the product read by the convolution)."""
    calls = sorted({op.module.index for op in graph.ops if op.module.path == path})
    made = []
    for index in calls:
        if path == "blk":
            made.append([op for op in graph.ops if op.module.index == index][-1].outputs[0].storage)
        else:
            convolution = next(op for op in graph.ops if op.module.index == index and op.op == "aten.convolution")
            made.append(convolution.inputs[1].storage)
    return made


@pytest.mark.parametrize("make", [CachesThrice, Pruned])
def test_tensors_a_block_replaces_at_its_next_call_are_let_go_of(copies, make):  # noqa: F811
    """The replays' states of the block held each to the trace's end (8 KiB more live from
    the first cache on, 2,304 B from the first pruned weight on), where PyTorch frees them."""
    model = make().eval()
    path, alive = _let_go(model)
    assert alive == [False] * (len(alive) - 1) + [True]  # each freed by the next call; the last one kept
    report = _analysed_both_ways(model)
    graph = report.graph
    end = len(graph.ops)
    kept = _made_in_each_call(graph, path)
    assert len(kept) == len(alive)
    assert [graph.released.get(storage, end) < end for storage in kept] == [not still for still in alive]
    if make is Pruned:
        assert copies == [("a", "a")]  # the third call of `a`, from its second; `b`, with a hook, is run


class SwapsBeforeCopying(nn.Module):
    """Its block's second call (the first recorded) under functional_call with the block's own
    c2.weight in c1's place, then a plain call, which a copy of the second would answer."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blk = Block()

    def forward(self, x):
        x = self.blk(self.stem(x))
        x = functional_call(self.blk, {"c1.weight": self.blk.c2.weight}, (x,), strict=False)
        return self.blk(x)


def test_a_call_made_with_a_weight_put_in_its_place_is_not_copied_to_a_plain_one():
    model = SwapsBeforeCopying().eval()
    handed = _weights_handed_to_c1(model)
    assert handed == ["blk.c1.weight", "blk.c2.weight", "blk.c1.weight"]
    report = _analysed_both_ways(model)
    read = _weights_read_by_c1(report)
    assert read == handed


class Rewrapped(nn.Module):
    """Blocks whose first convolution each wraps in a Sequential at its first call: the
    weight the trace named blocks.N.c1.weight is then at blocks.N.c1.0.weight."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.ModuleList(Block() for _ in range(4))

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            if isinstance(block.c1, nn.Conv2d):
                block.c1 = nn.Sequential(block.c1)
            x = block(x)
        return x


def test_a_block_whose_children_moved_since_the_trace_named_them_is_analysed():
    """The copy's check of what the block holds looked each name up where the trace found
    it, and raised KeyError: 'weight' (the forward runs: the real one and the plain path's)."""
    model = Rewrapped().eval()
    with torch.no_grad():
        expected = Rewrapped().eval()(torch.randn(1, 3, 16, 16)).shape
    report = _analysed_both_ways(model)
    assert report.graph.outputs[0].shape == tuple(expected)
