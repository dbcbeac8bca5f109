"""FCN "convolutionalization": a fully-connected layer is a convolution whose kernel covers its whole input.

Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015: VGG-16's
``fc6`` (512·7·7 → 4096) becomes a 7×7 conv and ``fc7``/``fc8`` 1×1 convs, so the classifier slides over inputs
of any size and yields a coarse score map instead of one vector.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def linear_to_conv2d(linear: nn.Linear, in_channels: int, kernel_size: int | tuple[int, int]) -> nn.Conv2d:
    """Turn ``linear`` (over a flattened C×kh×kw input) into an equivalent ``Conv2d(C, out, (kh, kw))``.

    The conv weight is ``linear.weight.view(out, C, kh, kw)`` — the row-major order in which ``flatten`` lays out a
    (C, kh, kw) block — and the bias is copied (absent if the linear layer has none). On a (N, C, kh, kw) input the
    conv returns (N, out, 1, 1) equal to ``linear(x.flatten(1))``; on larger inputs it applies the linear layer at
    every kh×kw window. Same device and dtype as ``linear``; the new parameters are copies, not views.

    Raises:
        ValueError: ``in_channels`` or the kernel size is < 1, or ``linear.in_features != C·kh·kw``.
    """
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    if in_channels < 1 or kh < 1 or kw < 1:
        raise ValueError(f"in_channels and kernel_size must be >= 1, got {in_channels} and {(kh, kw)}")
    if linear.in_features != in_channels * kh * kw:
        raise ValueError(
            f"Linear has in_features={linear.in_features}, but in_channels·kh·kw = "
            f"{in_channels}·{kh}·{kw} = {in_channels * kh * kw}"
        )
    conv = nn.Conv2d(
        in_channels,
        linear.out_features,
        (kh, kw),
        bias=linear.bias is not None,
        device=linear.weight.device,
        dtype=linear.weight.dtype,
    )
    with torch.no_grad():
        conv.weight.copy_(linear.weight.view(linear.out_features, in_channels, kh, kw))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv
