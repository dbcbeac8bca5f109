"""Receptive field of a stack of convolutions (lecture notes; Araujo, Norris & Sim, Distill 2019).

A layer with kernel k and dilation d widens the field by ``(k - 1)·d`` of *its input's* pixels; every stride
below it multiplies the size of such a pixel in the original image, hence
``r = 1 + Σ_l (k_l - 1)·d_l·Π_{m<l} s_m``.
"""

from __future__ import annotations


def receptive_field(layers: list[tuple[int, int, int]]) -> int:
    """Receptive field, in input pixels along one axis, of layers given bottom-up as (kernel, stride, dilation).

    Pooling layers count too: a 2×2/2 max-pool is (2, 2, 1). An empty stack sees 1 pixel.

    Raises:
        ValueError: a layer is not a triple, or has kernel, stride or dilation < 1.
    """
    r, jump = 1, 1
    for i, layer in enumerate(layers):
        if len(layer) != 3:
            raise ValueError(f"layer {i} must be (kernel_size, stride, dilation), got {layer!r}")
        k, s, d = layer
        if k < 1 or s < 1 or d < 1:
            raise ValueError(f"layer {i}: kernel_size, stride and dilation must be >= 1, got {layer!r}")
        r += (k - 1) * d * jump
        jump *= s
    return r


def stacked_3x3(n: int) -> int:
    """Receptive field of ``n`` stacked 3×3 stride-1 convs: ``2n + 1`` (VGG's argument; lecture notes).

    Raises:
        ValueError: ``n`` < 0.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return receptive_field([(3, 1, 1)] * n)
