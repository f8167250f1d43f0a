"""The receptive-field walk's shortcuts of its fourth pass give what its general roads
give: each test fails where its shortcut is broken on purpose."""

import torch
from torch import nn

import archprof


class _MaskCarriedFar(nn.Module):
    """Attention along W within each row, its scores masked by -inf, then passed through a
    long chain of ops that each carry the mask on (a scale, a shift) before the softmax."""

    def __init__(self, chain: int):
        super().__init__()
        self.chain = chain
        self.out = nn.Conv2d(3, 1, 1)

    def forward(self, x):
        n, c, h, w = x.shape
        t = x.permute(0, 2, 3, 1).reshape(n * h, w, c)
        i = torch.arange(w, device=x.device)
        band = (i[:, None] - i[None, :]).abs() <= 1  # keys within one position of the query
        scores = (t @ t.transpose(1, 2)).masked_fill(~band, float("-inf"))
        for _ in range(self.chain):
            scores = scores * 1.0 + 0.0
        y = torch.softmax(scores, -1) @ t
        return self.out(y.reshape(n, h, w, c).permute(0, 3, 1, 2))


def test_a_mask_carried_through_a_long_chain_of_ops_is_found_where_the_softmax_asks():
    """`Walk.holds_mask` follows an operand back through the ops that made it, as the
    softmax asks, not as each op is stepped: 1,500 ops that carry the mask on (3,000 frames
    back) still bring it to the softmax, whose field is then undefined (the keys each query
    reads are in the mask's values: `test_attention_masked_by_minus_infinity_is_undefined`).
    Asking only the ops the walk marks as it goes (reading no field) misses it."""
    r = archprof.analyze(_MaskCarriedFar(750), input_size=(3, 3, 8)).rows()[-1]
    assert r["receptive_field"] == "undefined"
    assert "softmax" in r["receptive_field_note"] and "masked" in r["receptive_field_note"]
