"""Atrous Spatial Pyramid Pooling (DeepLabv3: Chen, Papandreou, Schroff, Adam, "Rethinking Atrous Convolution for
Semantic Image Segmentation", arXiv 1706.05587, 2017)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixelwise.layers.blocks import atrous_block, conv_bn_relu

__all__ = ["ASPP", "ImagePooling"]


class ImagePooling(nn.Module):
    """ASPP's image-level branch: global average pool -> 1x1 conv -> ReLU -> broadcast back to H x W.

    The paper puts batch norm after the 1x1 convolution. Over a 1x1 map a batch of one has a single value per
    channel, where training-mode batch norm is undefined (PyTorch raises), so this branch uses a biased
    convolution instead; the projection after the concatenation is batch-normalised as usual.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.relu(self.conv(F.adaptive_avg_pool2d(x, 1)))
        # Every position gets the same image-level vector; expand avoids an interpolation over a 1x1 map.
        return pooled.expand(-1, -1, x.shape[-2], x.shape[-1])


class ASPP(nn.Module):
    """Parallel atrous convolutions at several rates plus image pooling, concatenated and projected.

    Branches: one 1x1 convolution, one 3x3 convolution per atrous rate, and (optionally) image pooling, each
    with ``out_channels`` outputs; their concatenation goes through a 1x1 conv -> BN -> ReLU -> dropout.
    DeepLabv3 uses rates (6, 12, 18) at output stride 16 and doubles them at output stride 8.

    Args:
        in_channels: channels of the encoder's last feature map.
        out_channels: channels of every branch and of the output (256 in the paper).
        atrous_rates: one 3x3 branch per rate; rates >= 1.
        image_pooling: include the image-level branch (works at batch size 1, see :class:`ImagePooling`).
        dropout: dropout probability after the projection (0.1 in the paper's code; 0 disables).
        separable: the 3x3 atrous branches as depthwise-separable convolutions (DeepLabv3+'s "atrous separable
            convolution", :func:`~pixelwise.layers.blocks.separable_conv_bn_relu`) instead of full ones.
        depthwise_bn_relu: with ``separable``, BN and ReLU between the depthwise and pointwise steps (the paper's
            design, the default); False builds Xception's separable convolution (see the same function).

    Shapes:
        (N, in_channels, H, W) float -> (N, out_channels, H, W) float.

    Raises:
        ValueError: a rate < 1, or no branch at all.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 256,
        atrous_rates: Sequence[int] = (6, 12, 18),
        image_pooling: bool = True,
        dropout: float = 0.1,
        separable: bool = False,
        depthwise_bn_relu: bool = True,
    ) -> None:
        super().__init__()
        rates = [int(r) for r in atrous_rates]
        if any(r < 1 for r in rates):
            raise ValueError(f"atrous rates must be >= 1, got {list(atrous_rates)}")
        self.atrous_rates = tuple(rates)
        branches: list[nn.Module] = [conv_bn_relu(in_channels, out_channels, kernel_size=1)]
        atrous = atrous_block(separable, depthwise_bn_relu)
        branches += [atrous(in_channels, out_channels, kernel_size=3, dilation=r) for r in rates]
        if image_pooling:
            branches.append(ImagePooling(in_channels, out_channels))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(
            conv_bn_relu(len(branches) * out_channels, out_channels, kernel_size=1),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))
