"""Receptive fields through attention within windows, against the gradient oracle: Swin's
shifted windows (the map padded to whole windows, rolled, partitioned, attended within each
window, put back) and Hiera's mask units (tokens unrolled into blocks of blocks, attended
within each unit, pooled, rolled back into a map); SAM2 Hiera's q_pool (each window's
tokens viewed back into the window's map and pooled there), TNT's patches convolved one by
one, and MobileViTv2's 1x1 convolutions over its unfolded patches."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archprof
from tests.field_oracle import positive, unit_gradient_box

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


class ShiftedWindows(nn.Module):
    """A 4x4 patch embedding, then two torchvision Swin attentions over 7x7 windows: the
    first unshifted, the second shifted by 3 (rolled, attended under Swin's -100 mask, which
    leaves every key of a window a weight, rolled back)."""

    def __init__(self, swin):
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 4, stride=4)
        self.plain = swin.ShiftedWindowAttention(8, [7, 7], [0, 0], num_heads=2)
        self.shifted = swin.ShiftedWindowAttention(8, [7, 7], [3, 3], num_heads=2)

    def forward(self, x):
        tokens = self.embed(x).permute(0, 2, 3, 1)  # (N, H, W, C), as Swin holds its maps
        return self.shifted(self.plain(tokens)).permute(0, 3, 1, 2)


def field(report) -> tuple[list[tuple[int, int]], bool]:
    """The shifted attention's field, per axis its first and last pixel (padding included),
    and its covers_input."""
    (row,) = [row for row in report.rows() if row["layer"] == "shifted"]
    boxes = [(s, s + n - 1) for s, n in zip(row["receptive_field_start"], row["receptive_field"], strict=True)]
    return boxes, row["covers_input"]


@pytest.fixture
def rf_sweep(monkeypatch, hub_packages):
    """benchmarks/rf_sweep.py: its oracle's model copy and its max-pooling convention."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports its sibling hub_sweep
    torch.manual_seed(0)
    return importlib.import_module("rf_sweep")


@pytest.fixture
def model(rf_sweep):
    """ShiftedWindows as the sweep's oracle holds it: float64, positive weights scaled by
    their fan-in (unscaled, the scores grow so large that the softmax turns one-hot and
    leaves keys a weight of exactly 0)."""
    from torchvision.models import swin_transformer

    return rf_sweep._oracle_copy(ShiftedWindows(swin_transformer))


def test_padding_a_shifted_window_wraps_round_is_not_counted(model):
    """64 pixels: 16 tokens, padded to 21 (three windows). Unit 0 of the shifted attention is
    unit 18 of the rolled map (a shift of 3), in its third window, 14..20: tokens 17..20 of
    the padded map (padding) and 0..2, which read the first unshifted window, tokens 0..6:
    pixels 0..27. The padding sits past token 15 (pixels 64..83), on the other side of pixels
    no path reaches: the column took 0..83 and said the field covered the input."""
    boxes, covers = field(archprof.analyze(model, input_size=(3, 64, 64)))
    assert boxes == unit_gradient_box(model, (3, 64, 64), (0, 0)) == [(0, 27), (0, 27)]
    assert covers is False


def test_real_units_a_shifted_window_wraps_round_are_read(model):
    """56 pixels: 14 tokens, two whole windows, no padding. Unit 0 of the shifted attention is
    unit 11 of the rolled map, in its window 7..13: tokens 10..13 and 0..2, which read both
    unshifted windows: every pixel, 0..55, the first and last the gradient reaches."""
    boxes, covers = field(archprof.analyze(model, input_size=(3, 56, 56)))
    assert boxes == unit_gradient_box(model, (3, 56, 56), (0, 0)) == [(0, 55), (0, 55)]
    assert covers is True


class HieraStage(nn.Module):
    """A small timm Hiera at 64x64 (16 x 16 tokens of 4 x 4 pixels, unrolled by 2 x 2 three
    times; mask units of 8 x 8 tokens), its map after stage `stage` rolled back (NCHW)."""

    def __init__(self, stage: int):
        super().__init__()
        from timm.models.hiera import Hiera

        self.stage = stage
        self.hiera = Hiera(img_size=(64, 64), embed_dim=8, num_heads=1, stages=(1, 1, 1, 1), num_classes=0)

    def forward(self, x):
        return self.hiera.forward_intermediates(x, indices=[self.stage], intermediates_only=True)[0]


@pytest.mark.parametrize(("stage", "units"), [(0, [(0, 0), (3, 12), (15, 15)]), (1, [(0, 0), (2, 6), (7, 7)])])
def test_hiera_mask_units_read_their_unit(rf_sweep, stage, units):
    """Each token reads its mask unit of 8 x 8 tokens (stage 1: 4 x 4 tokens, each the
    maximum of 2 x 2, the same pixels), the tokens of its blocks within blocks gathered
    back; token t of the 7 x 7 patch convolution of stride 4 and padding 3 reads pixels
    4t - 3 .. 4t + 3: the first unit, tokens 0..7, pixels -3..31 (35 from -3, real 0..31);
    the second, tokens 8..15, 29..66 (real 29..63). Residual sums of the unrolled tokens and
    of the attention's were undefined ("it mixes a flattened or split dimension")."""
    from archprof.passes.receptive_field import tensor_fields, unit_box

    model = rf_sweep._oracle_copy(HieraStage(stage))
    report = archprof.analyze(model, input_size=(3, 64, 64))
    last = [row for row in report.rows() if row["receptive_field"] is not None][-1]
    assert (last["receptive_field"], last["receptive_field_start"]) == ((35, 35), (-3, -3))
    fields, spatial = tensor_fields(report.graph)
    output = fields[report.graph.outputs[0].id]
    with rf_sweep.WholeWindows():  # archprof's convention: the 2 x 2 maximum reads its whole window
        for unit in units:
            assert unit_box(output, spatial, unit) == unit_gradient_box(model, (3, 64, 64), unit), unit


class WindowPool(nn.Module):
    """SAM2 Hiera's q_pool without the attention around it: a 4x4 patch embedding (tokens
    of 4 x 4 pixels), the map partitioned into windows of `window` x `window` tokens
    (timm's `window_partition`), each window's tokens flattened, a linear layer, viewed back
    into the window's map and pooled there, flattened again and the windows put back into a
    map (`window_unpartition`)."""

    def __init__(self, window: int, pool: nn.Module):
        super().__init__()
        self.window = window
        self.embed = nn.Conv2d(3, 4, 4, stride=4)
        self.q = nn.Linear(4, 4)
        self.pool = pool

    def forward(self, x):
        from timm.models.hieradet_sam2 import window_partition, window_unpartition

        tokens = self.embed(x).permute(0, 2, 3, 1)  # (N, H, W, C), as SAM2 Hiera holds its maps
        _, h, w, c = tokens.shape
        windows = window_partition(tokens, (self.window, self.window))
        q = self.q(windows.reshape(-1, self.window * self.window, c))  # (N windows, tokens, C)
        q = q.reshape(-1, self.window, self.window, c).permute(0, 3, 1, 2)  # to each window's map, as q_pool does
        q = self.pool(q).permute(0, 2, 3, 1)
        pooled = q.shape[1]
        q = q.reshape(-1, pooled * pooled, c)  # tokens again
        size = (h // self.window * pooled, w // self.window * pooled)
        return window_unpartition(q.view(-1, pooled, pooled, c), (pooled, pooled), size).permute(0, 3, 1, 2)


@pytest.mark.parametrize(
    ("window", "kernel", "pixels", "field"),
    [(8, 2, 64, 8), (6, 3, 48, 12)],
)
def test_a_pooling_inside_windows_reads_the_tokens_it_pools(rf_sweep, window, kernel, pixels, field):
    """A pooling of kernel = stride k inside each window of k x n tokens is a pooling of the
    whole map by k: pooled unit u, unit u mod n of window u div n, reads tokens k u ..
    k u + k - 1, pixels 4 k u .. 4 k u + 4 k - 1 (8 pixels from 8 u for k = 2, 12 from 12 u
    for k = 3), in the second window as in the first. It was undefined ("pooling along a
    flattened or split dimension"), and with it every layer after SAM2 Hiera's first q_pool."""
    from archprof.passes.receptive_field import tensor_fields, unit_box

    model = rf_sweep._oracle_copy(WindowPool(window, nn.MaxPool2d(kernel)))
    size = (3, pixels, pixels)
    report = archprof.analyze(model, input_size=size)
    row = report.rows()[-1]  # the windows put back into a map (the pooling's own row holds windows)
    assert (row["receptive_field"], row["receptive_field_start"], row["effective_stride"]) == (
        (field, field),
        (0, 0),
        (field, field),
    )
    fields, spatial = tensor_fields(report.graph)
    output = fields[report.graph.outputs[0].id]
    last = pixels // field - 1
    with rf_sweep.WholeWindows():  # archprof's convention: a maximum reads its whole window
        for unit in [(0, 0), (1, last - 1), (last // 2 + 1, 1), (last, last)]:
            expected = [(field * u, field * u + field - 1) for u in unit]
            assert unit_box(output, spatial, unit) == unit_gradient_box(model, size, unit) == expected, unit


def test_a_pooling_padded_inside_windows_reads_its_window_alone(rf_sweep):
    """Pooled by 3 with stride 2 and padding 1, each window of 4 tokens gives 2 units: unit r
    of window q reads tokens 4 q + 2 r - 1 .. 4 q + 2 r + 1 that lie in the window, its
    padding nothing (tokens 4 q .. 4 q + 1, then 4 q + 1 .. 4 q + 3: pixels 16 q .. 16 q + 7,
    16 q + 4 .. 16 q + 15). Unit 2, the second window's first, reads tokens 4..5 (pixels
    16..23), where a pooling of the whole map reads 3..5. It was undefined ("its windows do
    not tile the blocks")."""
    from archprof.passes.receptive_field import tensor_fields, unit_box

    model = rf_sweep._oracle_copy(WindowPool(4, nn.MaxPool2d(3, stride=2, padding=1)))
    report = archprof.analyze(model, input_size=(3, 64, 64))
    fields, spatial = tensor_fields(report.graph)
    output = fields[report.graph.outputs[0].id]

    def pixels(u: int) -> tuple[int, int]:
        q, r = divmod(u, 2)
        return (16 * q, 16 * q + 7) if r == 0 else (16 * q + 4, 16 * q + 15)

    with rf_sweep.WholeWindows():  # archprof's convention: a maximum reads its whole window
        for unit in [(0, 0), (2, 0), (3, 4), (7, 6)]:
            expected = [pixels(u) for u in unit]
            assert unit_box(output, spatial, unit) == unit_gradient_box(model, (3, 64, 64), unit) == expected, unit


def test_a_pooling_that_leaves_tokens_of_a_window_unread_stays_undefined(rf_sweep):
    """Pooled by 3, a window of 8 tokens gives 2 units, which read tokens 0..5 of it: tokens 6
    and 7 are read by none, which the window, read whole later (attention within it), would
    claim. Unit 2, the second window's first, reads tokens 8..10 (pixels 32..43), where a
    pooling of the whole map by 3 reads 6..8: the field stays undefined, and says why."""
    model = rf_sweep._oracle_copy(WindowPool(8, nn.MaxPool2d(3)))
    row = archprof.analyze(model, input_size=(3, 64, 64)).rows()[-1]
    assert row["receptive_field"] == "undefined"
    assert "its windows leave units of the blocks of the split dimension it reads unread" in row["receptive_field_note"]
    with rf_sweep.WholeWindows():
        assert unit_gradient_box(model, (3, 64, 64), (2, 0))[0] == (32, 43)


class PatchPointwise(nn.Module):
    """MobileViTv2's unfolding without its attention: a 4x4 patch embedding (tokens of 4 x 4
    pixels), the map unfolded into (N, C, P, N patches) as timm's MobileVitV2Block does (a
    token's position in its 2 x 2 patch, then which patch), a 1x1 convolution there (its
    `qkv_proj`, its MLP), and the patches folded back into the map."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 4, 4, stride=4)
        self.pointwise = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        x = self.embed(x)
        b, c, h, w = x.shape
        x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c, 4, -1)
        x = self.pointwise(x)
        x = x.reshape(b, c, 2, 2, h // 2, w // 2).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(b, c, h, w)


def test_a_pointwise_convolution_over_patches_keeps_each_token(rf_sweep):
    """A 1x1 convolution moves no unit along any dimension, whatever the dimension holds: over
    the unfolded patches (positions in a patch, then patches: both split and flattened), each
    token keeps reading its own 4 x 4 pixels, 4 t .. 4 t + 3, and so does the map folded back.
    It was undefined ("convolution along a flattened or split dimension"), and with it every
    layer of timm's MobileViTv2 after its first unfolding (213 of mobilevitv2_150's 294 rows)."""
    from archprof.passes.receptive_field import tensor_fields, unit_box

    model = rf_sweep._oracle_copy(PatchPointwise())
    report = archprof.analyze(model, input_size=(3, 64, 64))
    row = report.rows()[-1]
    assert (row["receptive_field"], row["receptive_field_start"]) == ((4, 4), (0, 0))
    fields, spatial = tensor_fields(report.graph)
    output = fields[report.graph.outputs[0].id]
    for unit in [(0, 0), (1, 2), (7, 10), (15, 15)]:
        expected = [(4 * u, 4 * u + 3) for u in unit]
        assert unit_box(output, spatial, unit) == unit_gradient_box(model, (3, 64, 64), unit) == expected, unit


class PatchConvolution(nn.Module):
    """TNT's pixel embedding: the image split into patches of 16 x 16 pixels (F.unfold's
    columns viewed back into patches, as timm's PixelEmbed does, or, `unfold` False, a view
    and a permute), each patch convolved alone (7 x 7, stride 4, padding 3: zeros at every
    patch's border), the 4 x 4 units of every patch put back into one map."""

    def __init__(self, unfold: bool):
        super().__init__()
        self.unfold = unfold
        self.conv = nn.Conv2d(3, 4, 7, stride=4, padding=3)

    def forward(self, x):
        b, c, h, w = x.shape
        if self.unfold:
            patches = F.unfold(x, 16, stride=16).transpose(1, 2).reshape(-1, c, 16, 16)
        else:
            patches = x.view(b, c, h // 16, 16, w // 16, 16).permute(0, 2, 4, 1, 3, 5).reshape(-1, c, 16, 16)
        y = self.conv(patches)
        return y.view(b, h // 16, w // 16, 4, 4, 4).permute(0, 3, 1, 4, 2, 5).reshape(b, 4, h // 4, w // 4)


@pytest.mark.parametrize("unfold", [False, True], ids=["view", "unfold"])
def test_a_convolution_inside_patches_reads_its_patch_alone(unfold):
    """Unit r of patch q reads pixels 16 q + 4 r - 3 .. 16 q + 4 r + 3 that lie in its patch,
    16 q .. 16 q + 15: its padding reads zeros, not the next patch's pixels, where a
    convolution of the whole map would (unit 4, the second patch's first, reads pixels
    16..19, not 13..19). It was undefined ("convolution along a flattened or split
    dimension"; F.unfold's im2col had no rule), and with it all 518 rows of timm's
    tnt_s_patch16_224."""
    from archprof.passes.receptive_field import tensor_fields, unit_box

    model = positive(PatchConvolution(unfold))
    report = archprof.analyze(model, input_size=(3, 64, 64))
    fields, spatial = tensor_fields(report.graph)
    output = fields[report.graph.outputs[0].id]

    def pixels(u: int) -> tuple[int, int]:
        q, r = divmod(u, 4)
        return max(16 * q + 4 * r - 3, 16 * q), min(16 * q + 4 * r + 3, 16 * q + 15)

    for unit in [(0, 0), (3, 4), (4, 7), (9, 15)]:
        expected = [pixels(u) for u in unit]
        assert unit_box(output, spatial, unit) == unit_gradient_box(model, (3, 64, 64), unit) == expected, unit


class OverlappingColumns(nn.Module):
    """A 4x4 patch embedding (tokens of 4 x 4 pixels), F.unfold's columns of its map in
    windows of 3 x 3 tokens, stride 2, padding 1 (VOLO's outlook attention unfolds so), the
    columns viewed as a map of windows, every offset of every channel a channel."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 2, 4, stride=4)

    def forward(self, x):
        return F.unfold(self.embed(x), 3, padding=1, stride=2).unflatten(2, (8, 8))


def test_overlapping_columns_read_their_window():
    """Window l of the 16 x 16 tokens, l = (i, j), holds tokens 2 i - 1 .. 2 i + 1 (and so
    along j), pixels 8 i - 4 .. 8 i + 7, clipped to the image: over every channel (each an
    offset in the window), a unit reads its whole window."""
    from archprof.passes.receptive_field import tensor_fields, unit_box

    model = positive(OverlappingColumns())
    report = archprof.analyze(model, input_size=(3, 64, 64))
    fields, spatial = tensor_fields(report.graph)
    output = fields[report.graph.outputs[0].id]
    for unit in [(0, 0), (1, 5), (7, 7)]:
        expected = [(max(8 * u - 4, 0), min(8 * u + 7, 63)) for u in unit]
        assert unit_box(output, spatial, unit) == unit_gradient_box(model, (3, 64, 64), unit) == expected, unit


class OutlookAttention(nn.Module):
    """VOLO's outlook attention over a 4x4 patch embedding (16 x 16 tokens of 4 x 4 pixels):
    F.unfold's columns in windows of 3 x 3 tokens, padding 1, stride `stride`; in each window
    a softmax attention over its 9 offsets, its weights a linear layer of the window's values
    (VOLO's come from a pooled token, which reads no more); F.fold sums the windows back
    into the map."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride
        self.embed = nn.Conv2d(3, 2, 4, stride=4)
        self.attn = nn.Linear(2 * 9, 9 * 9)

    def forward(self, x):
        v = self.embed(x)
        b, c, h, w = v.shape
        columns = F.unfold(v, 3, padding=1, stride=self.stride)  # (N, C 9, L)
        windows = columns.shape[-1]
        attn = self.attn(columns.transpose(1, 2)).reshape(b, windows, 9, 9).softmax(-1)
        values = columns.reshape(b, c, 9, windows).permute(0, 3, 2, 1)  # (N, L, 9, C)
        mixed = (attn @ values).permute(0, 3, 2, 1).reshape(b, c * 9, windows)
        return F.fold(mixed, (h, w), 3, padding=1, stride=self.stride)


def _outlook_tokens(t: int, stride: int) -> tuple[int, int]:
    """The tokens that token t of the folded map reads: those of every window l covering it,
    l S - 1 <= t <= l S + 1, window l holding tokens l S - 1 .. l S + 1, clipped to the map."""
    first, last = -(-(t - 1) // stride), (t + 1) // stride
    return max(first * stride - 1, 0), min(last * stride + 1, 15)


@pytest.mark.parametrize("stride", [1, 2])
def test_a_fold_of_windows_reads_every_window_covering_a_token(rf_sweep, stride):
    """F.fold (col2im) sums, into each token, its offset in every window that covers it: a
    token reads the union of those windows (stride 1: tokens t - 2 .. t + 2; stride 2, token
    3 is in windows 1 and 2, tokens 1..5, token 4 in window 2 alone, tokens 3..5), 4 pixels
    a token. It was undefined ("archprof has no rule for it"), and with it every row of
    timm's volo_d1_224 from its first outlooker on (361)."""
    from archprof.passes.receptive_field import tensor_fields, unit_box

    model = rf_sweep._oracle_copy(OutlookAttention(stride))
    report = archprof.analyze(model, input_size=(3, 64, 64))
    fields, spatial = tensor_fields(report.graph)
    output = fields[report.graph.outputs[0].id]

    def pixels(t: int) -> tuple[int, int]:
        first, last = _outlook_tokens(t, stride)
        return 4 * first, 4 * last + 3

    for unit in [(0, 0), (3, 4), (7, 8), (15, 15)]:
        expected = [pixels(t) for t in unit]
        assert unit_box(output, spatial, unit) == unit_gradient_box(model, (3, 64, 64), unit) == expected, unit


class HeadedOutlook(nn.Module):
    """VOLO's outlook attention as timm writes it, in heads: the columns (N, C 9, L) viewed
    as (N, heads, C / heads, 9, L), each head's window attention over its 9 offsets, and the
    product viewed back as (N, C 9, L) before the fold."""

    def __init__(self, heads: int = 2, channels: int = 4):
        super().__init__()
        self.heads = heads
        self.embed = nn.Conv2d(3, channels, 4, stride=4)
        self.attn = nn.Linear(channels, heads * 81)

    def forward(self, x):
        v = self.embed(x)
        b, c, h, w = v.shape
        values = F.unfold(v, 3, padding=1).reshape(b, self.heads, c // self.heads, 9, h * w).permute(0, 1, 4, 3, 2)
        weights = self.attn(v.flatten(2).transpose(1, 2)).reshape(b, h * w, self.heads, 9, 9).permute(0, 2, 1, 3, 4)
        mixed = (weights.softmax(-1) @ values).permute(0, 1, 4, 3, 2).reshape(b, c * 9, h * w)
        return F.fold(mixed, (h, w), 3, padding=1)


def test_a_fold_of_offsets_mixed_in_heads_is_exact(rf_sweep):
    """Split into heads, the columns' channels read alike again where the heads and the
    channels in a head come before the offsets (`Inner`); the attention mixes the offsets, and
    the fold reads the windows covering each token, tokens t - 2 .. t + 2, exactly: it was
    marked an upper bound (timm's volo_d1_224: 66 rows), as if the offsets read apart."""
    from archprof.passes.receptive_field import tensor_fields, unit_box

    model = rf_sweep._oracle_copy(HeadedOutlook())
    report = archprof.analyze(model, input_size=(3, 64, 64))
    assert report.rows()[-1]["receptive_field_note"] == ""
    fields, spatial = tensor_fields(report.graph)
    output = fields[report.graph.outputs[0].id]
    for unit in [(0, 0), (3, 4), (15, 15)]:
        expected = [(max(4 * t - 8, 0), min(4 * t + 11, 63)) for t in unit]
        assert unit_box(output, spatial, unit) == unit_gradient_box(model, (3, 64, 64), unit) == expected, unit


class UnfoldFold(nn.Module):
    """A 4x4 patch embedding unfolded into windows of 3 x 3 tokens (padding 1) and folded
    straight back: every offset returns to the token it was taken from."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 2, 4, stride=4)

    def forward(self, x):
        return F.fold(F.unfold(self.embed(x), 3, padding=1), (16, 16), 3, padding=1)


def test_a_fold_of_unmixed_offsets_is_an_upper_bound():
    """Unmixed, each offset reads its own token (the unfold's offsets read different fields),
    and the fold puts it back: a token reads its own 4 pixels, the oracle says. archprof gives
    each offset the union over its window, so the fold the windows covering the token (tokens
    t - 2 .. t + 2): marked an upper bound, holding the oracle's box."""
    from archprof.passes.receptive_field import tensor_fields, unit_box

    model = positive(UnfoldFold())
    report = archprof.analyze(model, input_size=(3, 64, 64))
    assert report.rows()[-1]["receptive_field_note"].startswith("an upper bound")
    fields, spatial = tensor_fields(report.graph)
    output = fields[report.graph.outputs[0].id]
    for unit in [(0, 0), (3, 4), (15, 15)]:
        assert unit_gradient_box(model, (3, 64, 64), unit) == [(4 * t, 4 * t + 3) for t in unit]
        assert unit_box(output, spatial, unit) == [(max(4 * t - 8, 0), min(4 * t + 11, 63)) for t in unit], unit


class TiledFold(nn.Module):
    """The image cut into patches of 16 x 16 pixels by F.unfold and folded straight back."""

    def forward(self, x):
        return F.fold(F.unfold(x, 16, stride=16), (64, 64), 16, stride=16)


def test_a_fold_of_offsets_along_the_map_is_undefined():
    """Tiling windows' offsets are the positions inside the patches (`Within`), each along the
    map: the fold would have to place each one, which the rule does not follow: undefined,
    saying why, never a guess."""
    row = archprof.analyze(TiledFold(), input_size=(3, 64, 64)).rows()[-1]
    assert row["receptive_field"] == "undefined"
    assert "it folds offsets that lie along a spatial dimension" in row["receptive_field_note"]


class GridAttention(nn.Module):
    """MaxViT's grid attention without its block attention: a 4x4 patch embedding (16 x 16
    tokens of 4 x 4 pixels), timm's `grid_partition` into a 2 x 2 grid (window r holds the
    tokens at position r of each 8 x 8 block, the grid's rows and columns its own dimensions),
    a linear layer per token (`qkv`), then (`attend`) attention over each window's 4 tokens
    (`fused`: in one kernel, the CPU's flash attention) and `grid_reverse` back into the map
    (NCHW)."""

    def __init__(self, attend: bool, fused: bool = False):
        super().__init__()
        self.attend, self.fused = attend, fused
        self.embed = nn.Conv2d(3, 4, 4, stride=4)
        self.qkv = nn.Linear(4, 4)

    def forward(self, x):
        from timm.models.maxxvit import grid_partition, grid_reverse

        tokens = self.embed(x).permute(0, 2, 3, 1)
        windows = self.qkv(grid_partition(tokens, [2, 2]))  # (64 windows, 2, 2, C)
        if not self.attend:
            return windows
        flat = windows.reshape(-1, 4, 4)
        if self.fused:
            attended = F.scaled_dot_product_attention(flat[:, None], flat[:, None], flat[:, None])[:, 0]
        else:
            attended = torch.softmax(flat @ flat.transpose(1, 2), -1) @ flat
        return grid_reverse(attended.reshape(-1, 2, 2, 4), [2, 2], [16, 16]).permute(0, 3, 1, 2)


def test_a_token_of_a_grid_window_reads_its_own_pixels(rf_sweep):
    """Unit 0 of the grid windows (window 0, grid row 0, column 0) is token (0, 0): pixels
    0..3 along each axis, as the oracle's gradient says. The row said 0..31, the whole first
    block of 8 tokens that the grid's dimension steps over."""
    model = rf_sweep._oracle_copy(GridAttention(attend=False))
    row = archprof.analyze(model, input_size=(3, 64, 64)).rows()[-1]
    assert (row["receptive_field"], row["receptive_field_start"]) == ((4, 4), (0, 0))
    x = (torch.rand(1, 3, 64, 64, dtype=torch.float64) + 0.5).requires_grad_()
    model(x)[0, 0, 0].sum().backward()
    reached = x.grad[0].abs().sum(0) > 0
    assert [tuple(torch.nonzero(reached.any(dim=1 - a)).flatten()[[0, -1]].tolist()) for a in (0, 1)] == [(0, 3)] * 2


@pytest.mark.parametrize("fused", [False, True], ids=["bmm-softmax-bmm", "fused"])
def test_attention_over_a_grid_window_reads_its_position_in_every_block(rf_sweep, fused):
    """Attention over a grid window mixes the blocks at one position inside them: token
    (i, j) reads the tokens at its position in every 8 x 8 block, (i mod 8 + 8 a, j mod 8 +
    8 b), pixels 4 (i mod 8) .. 4 (i mod 8) + 35 along each axis, as the oracle's gradient
    says unit by unit. Mixing the blocks whole said the whole input (0..63), wrong; then it
    was undefined ("a strided set of units"). The stride between neighbouring units is not
    even (back by 8 tokens at each block's end): undefined, saying why. Fused (timm's
    MaxxViT-v2), the queries keep the grid apart where the keys mix it: alike, they read the
    same strided set (it was undefined again: "it mixes a flattened or split dimension")."""
    from archprof.passes.receptive_field import tensor_fields, unit_box

    model = rf_sweep._oracle_copy(GridAttention(attend=True, fused=fused))
    report = archprof.analyze(model, input_size=(3, 64, 64))
    row = report.rows()[-1]
    assert (row["receptive_field"], row["receptive_field_start"]) == ((36, 36), (0, 0))
    assert row["effective_stride"] == "undefined" and "grid" in row["receptive_field_note"]
    fields, spatial = tensor_fields(report.graph)
    output = fields[report.graph.outputs[0].id]
    for unit in [(0, 0), (3, 9), (8, 15), (15, 7)]:
        expected = [(4 * (u % 8), 4 * (u % 8) + 35) for u in unit]
        assert unit_box(output, spatial, unit) == unit_gradient_box(model, (3, 64, 64), unit) == expected, unit


class PooledKeys(nn.Module):
    """MViTv2's pooling attention: 16 x 16 tokens of 4 x 4 pixels; the keys and values pooled
    by a 3 x 3 convolution of stride `stride`, padding 1; each token attends over them, added
    to itself, and the tokens are read back as a map."""

    def __init__(self, stride: int):
        super().__init__()
        self.embed = nn.Conv2d(2, 4, 4, stride=4)
        self.pool = nn.Conv2d(4, 4, 3, stride=stride, padding=1, groups=4)

    def forward(self, x):
        y = self.embed(x)
        n, c, h, w = y.shape
        tokens = y.flatten(2).transpose(1, 2)
        keys = self.pool(y).flatten(2).transpose(1, 2)
        attended = tokens + torch.softmax(tokens @ keys.transpose(1, 2), -1) @ keys
        return attended.transpose(1, 2).reshape(n, c, h, w)


@pytest.mark.parametrize("stride", [4, 2])
def test_attention_over_pooled_keys_reads_what_the_keys_reach(rf_sweep, stride):
    """Keys pooled 4 tokens apart by 3 x 3 windows read tokens -1..13 of 16: each token reads
    pixels 0..55 and its own, as the gradient says unit by unit, where archprof said the whole
    input (timm's mvitv2 at 64 x 64). Keys 2 apart reach every token: the whole input. The
    sweep's oracle copy: its weights scaled by their fan-in, so that the softmax does not turn
    one-hot."""
    from archprof.passes.receptive_field import tensor_fields, unit_box

    model = rf_sweep._oracle_copy(PooledKeys(stride))
    report = archprof.analyze(model, input_size=(2, 64, 64))
    last = report.rows()[-1]
    fields, spatial = tensor_fields(report.graph)
    output = fields[report.graph.outputs[0].id]
    if stride == 2:
        assert last["receptive_field"] == "input"
        assert unit_gradient_box(model, (2, 64, 64), (0, 0)) == [(0, 63), (0, 63)]
        return
    assert (last["receptive_field"], last["receptive_field_start"], last["covers_input"]) == ((60, 60), (-4, -4), False)
    for unit in [(0, 0), (5, 15), (15, 2)]:
        expected = [(0, max(55, 4 * u + 3)) for u in unit]
        assert unit_box(output, spatial, unit) == unit_gradient_box(model, (2, 64, 64), unit) == expected, unit


class MobileViTPatches(nn.Module):
    """MobileViT's (v1) transformer layout: a 4x4 patch embedding and a 3x3 convolution (each
    token reads its neighbours), the map unfolded into 2 x 2 patches as timm's MobileVitBlock
    does ((B C nh, ph, nw, pw): channels and the rows' patches in one dimension, transposed,
    viewed as (B, C, N, P), transposed to (B P, N, C)), a linear layer per token, then
    (`attend`) attention over the N patches at each position, folded back into the map."""

    def __init__(self, attend: bool):
        super().__init__()
        self.attend = attend
        self.embed, self.local = nn.Conv2d(3, 4, 4, stride=4), nn.Conv2d(4, 4, 3, padding=1)
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        x = self.local(self.embed(x))
        b, c, h, w = x.shape
        nh, nw = h // 2, w // 2
        x = x.reshape(b * c * nh, 2, nw, 2).transpose(1, 2)
        x = self.linear(x.reshape(b, c, nh * nw, 4).transpose(1, 3).reshape(b * 4, nh * nw, c))
        if self.attend:
            x = torch.softmax(x @ x.transpose(1, 2), -1) @ x
        x = x.contiguous().view(b, 4, nh * nw, c).transpose(1, 3).reshape(b * c * nh, nw, 2, 2)
        return x.transpose(1, 2).reshape(b, c, h, w)


def test_patches_unfolded_across_the_channels_keep_each_token():
    """The view (B C nh, ph, nw, pw) joins the channels with the blocks of the rows and
    splits each row's position in its patch apart: split where the patch begins inside the
    rows, each token stays where it was through the unfolding, the linear layer and the fold
    back: token (i, j) reads tokens i - 1 .. i + 1 of the embedding, pixels 4 i - 4 ..
    4 i + 7, clipped. It was undefined ("it regroups dimensions across their borders"), and
    with it 278 of timm's mobilevit_xxs's 378 rows."""
    from archprof.passes.receptive_field import tensor_fields, unit_box

    model = positive(MobileViTPatches(attend=False))
    report = archprof.analyze(model, input_size=(3, 64, 64))
    fields, spatial = tensor_fields(report.graph)
    output = fields[report.graph.outputs[0].id]
    for unit in [(0, 0), (1, 2), (8, 9), (15, 15)]:
        expected = [(max(4 * u - 4, 0), min(4 * u + 7, 63)) for u in unit]
        assert unit_box(output, spatial, unit) == unit_gradient_box(model, (3, 64, 64), unit) == expected, unit


def test_attention_over_patches_whose_positions_span_the_map_reads_the_whole_input(rf_sweep):
    """Attention over the patches at one position reads that position in every patch: tokens
    r, r + 2, ..., which, each reading its neighbours, span all 16 tokens at both positions,
    pixels 0..63: the whole input, as reading the patches whole says (where they do not span
    it, a grid attention, the field is undefined). The sweep's oracle copy: its weights scaled
    by their fan-in, so that the softmax does not turn one-hot."""
    model = rf_sweep._oracle_copy(MobileViTPatches(attend=True))
    row = archprof.analyze(model, input_size=(3, 64, 64)).rows()[-1]
    assert row["receptive_field"] == "input"
    for unit in [(0, 0), (7, 8)]:
        assert unit_gradient_box(model, (3, 64, 64), unit) == [(0, 63), (0, 63)], unit
