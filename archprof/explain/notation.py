"""The notation every operator's formulas share: the names of the spatial dimensions (H, W),
a window's symbols along one of them (K_h, S_h, P_h, D_h), a shape's element count written as
a product, and an operator's argument read by position or by keyword."""

from __future__ import annotations

from collections.abc import Sequence


def window_symbols(names: Sequence[str], d: int) -> tuple[str, str, str, str]:
    """The kernel, stride, padding and dilation along spatial dimension `d` of `names`:
    K_h, S_h, P_h, D_h; where D names the depth (a 3-d window), the dilation is dil_d."""
    tag = names[d].lower()
    dilation = "dil" if "D" in names else "D"
    return f"K_{tag}", f"S_{tag}", f"P_{tag}", f"{dilation}_{tag}"


def product_text(shape: Sequence[int]) -> str:
    return "·".join(map(str, shape)) if shape else "1"
