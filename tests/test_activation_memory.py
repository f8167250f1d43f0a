"""Activation memory counts what each row's own operations made: a placeholder module that
returns its input (nn.Identity, a Dropout in evaluation) holds none, and one network counts
the same however many such modules its code calls."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

import archprof
from archprof.units import human_bytes

README = Path(archprof.__file__).parent.parent / "README.md"


def _plain() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 4, 3), nn.Flatten(), nn.Linear(36, 5)
    )


def _with_placeholders() -> nn.Module:
    """`_plain`'s layers and parameters, with modules that return their input between them."""
    plain = _plain()
    layers = list(plain)
    return nn.Sequential(
        nn.Identity(), layers[0], nn.Identity(), layers[1], nn.Dropout(0.5), *layers[2:5], nn.Dropout(0.1), layers[5]
    ).eval()


def _made_by_the_modules(model: nn.Module, shape: tuple[int, ...]) -> int:
    """The oracle: a real CPU forward, each leaf module's output that is not the object it was
    handed (what the module made) counted in bytes, each tensor once."""
    made: dict[int, torch.Tensor] = {}

    def hook(module, args, output):
        if output is not args[0]:
            made[id(output)] = output

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model(torch.randn(1, *shape))
    finally:
        for handle in handles:
            handle.remove()
    return sum(t.nelement() * t.element_size() for t in made.values())


def test_the_total_is_what_the_real_forward_s_modules_made():
    for make in (_plain, _with_placeholders):
        model = make().eval()
        report = archprof.analyze(model, (3, 12, 12))
        assert report.totals.activation_bytes == _made_by_the_modules(model, (3, 12, 12)), make.__name__


def test_a_placeholder_changes_no_activation_figure():
    plain = archprof.analyze(_plain().eval(), (3, 12, 12))
    placed = archprof.analyze(_with_placeholders(), (3, 12, 12))
    assert placed.totals.activation_bytes == plain.totals.activation_bytes
    rows = list(zip(placed.columns["module_type"], placed.columns["activation_bytes"], strict=True))
    placeholders = [size for kind, size in rows if kind in ("Identity", "Dropout")]
    assert len(placeholders) == 4 and not any(placeholders)
    kept = [(kind, size) for kind, size in rows if kind not in ("Identity", "Dropout")]
    assert kept == list(zip(plain.columns["module_type"], plain.columns["activation_bytes"], strict=True))


def test_a_row_that_returns_what_it_made_twice_counts_it_once():
    class Twice(nn.Module):
        def forward(self, x):
            y = x * 2
            return y, y

    report = archprof.analyze(Twice(), (4, 5))
    assert report.totals.activation_bytes == 1 * 4 * 5 * 4


def test_a_placeholder_s_explanation_says_its_bytes_are_another_row_s():
    report = archprof.analyze(_with_placeholders(), (3, 12, 12))
    text = report.explain("#3")  # the Identity between the convolution and the ReLU
    assert "(Identity)" in text.splitlines()[0]
    assert re.search(r"activation bytes = 0$", text, re.MULTILINE)
    assert "its output being a tensor it was handed" in text
    made = report.explain("#2")  # the convolution: its own output, worked out
    assert re.search(r"activation bytes = numel · bytes per element = 1·8·10·10 · 4 = 3,200", made)


@pytest.mark.parametrize(("name", "identities"), [("efficientnet_b0", 90), ("resnet50", 32)])
def test_the_same_network_from_two_libraries_holds_the_same_activations(hub_packages, name, identities):
    """timm's forwards call an nn.Identity wherever a block has no attention, no drop path or no
    downsampling; torchvision's call none (efficientnet_b0's StochasticDepth and Dropout, in
    evaluation, return their input too). Their parameters and MACs agree, and so do their
    activations; the README's figure is theirs."""
    torchvision, timm = hub_packages
    with torch.device("meta"):
        ours = archprof.analyze(getattr(torchvision.models, name)(), (3, 224, 224))
        theirs = archprof.analyze(timm.create_model(name), (3, 224, 224))
    assert theirs.columns["module_type"].count("Identity") == identities
    assert "Identity" not in ours.columns["module_type"]
    assert (theirs.totals.param_count, theirs.totals.macs) == (ours.totals.param_count, ours.totals.macs)
    assert theirs.totals.activation_bytes == ours.totals.activation_bytes
    if name == "efficientnet_b0":
        readme = " ".join(README.read_text(encoding="utf-8").split())
        assert f"both {human_bytes(ours.totals.activation_bytes)}, as their parameters and MACs are equal" in readme
