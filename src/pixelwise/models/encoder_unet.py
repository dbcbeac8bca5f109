"""U-Net's decoder on a pretrained classification encoder.

Ronneberger, Fischer, Brox (MICCAI 2015) built both halves of the U from scratch; practice since has been to take
the contracting path from an ImageNet classifier (ResNet, VGG, MobileNet from :mod:`pixelwise.backbones`) and keep
U-Net's expanding path: at each stride from 32 down, upsample 2x, concatenate the encoder's feature map of that
stride (the skip connection), and apply two 3x3 conv-BN-ReLU. A last block at stride 1 has no skip (no encoder
stage runs at full resolution) and a 3x3 convolution gives the logits.

The decoder and the logits layer start from U-Net's initialisation (Ronneberger et al., sec. 3): weights drawn from a
Gaussian of standard deviation sqrt(2 / N), N the fan-in (He, Zhang, Ren, Sun, ICCV 2015), biases zero. PyTorch's
default (uniform, a sixth of that variance) trains worse at a short budget; benchmarks/equal_budget.py measures
both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixelwise.backbones import build_backbone
from pixelwise.layers.blocks import conv_bn_relu, he_init_
from pixelwise.models.common import pad_to_multiple
from pixelwise.models.registry import register_model

__all__ = ["EncoderUNet", "DecoderBlock"]


class DecoderBlock(nn.Module):
    """2x nearest upsampling -> concatenate the skip (if any) -> (3x3 conv -> BN -> ReLU) x 2.

    Shapes:
        x (N, in_channels, h, w), skip (N, skip_channels, 2h, 2w) or None -> (N, out_channels, 2h, 2w).
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            conv_bn_relu(in_channels + skip_channels, out_channels, 3), conv_bn_relu(out_channels, out_channels, 3)
        )

    def forward(self, x: Tensor, skip: Tensor | None) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.convs(x)


@register_model(
    "encoder_unet",
    paper="Ronneberger, Fischer, Brox. U-Net: Convolutional Networks for Biomedical Image Segmentation. MICCAI 2015 "
    "(decoder), on a torchvision ImageNet encoder",
    description="U-Net decoder with skip connections on a ResNet/VGG/MobileNet encoder",
)
class EncoderUNet(nn.Module):
    """U-Net decoder with skip connections from a torchvision encoder's stride 16, 8, 4 and 2 features.

    Args:
        num_classes: K, channels of the logits.
        in_channels: channels of the input images.
        backbone: a :func:`pixelwise.backbones.list_backbones` name.
        backbone_weights: see :func:`pixelwise.backbones.build_backbone`.
        decoder_channels: output channels of the five decoder blocks, from stride 16 up to stride 1.
        decoder_init: ``"he"`` (default): the decoder's and the logits layer's convolution weights drawn from
            N(0, 2 / fan_in), biases zero, batch norm at weight 1, bias 0; ``"pytorch"``: PyTorch's default
            initialisation, kept for comparison. The encoder keeps torchvision's initialisation or its weights.

    The input is zero-padded to a multiple of 32 so every skip has exactly twice the size of the map it joins;
    the logits are cropped back to the input size.

    Shapes:
        (N, in_channels, H, W) float -> (N, K, H, W) float logits, for any H, W.

    Raises:
        ValueError: ``decoder_channels`` does not have 5 positive entries, ``decoder_init`` is not "he" or "pytorch".
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        backbone: str = "resnet34",
        backbone_weights: Any = None,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        decoder_init: str = "he",
    ) -> None:
        super().__init__()
        widths = [int(c) for c in decoder_channels]
        if len(widths) != 5 or min(widths) < 1:
            raise ValueError(f"decoder_channels must be 5 positive widths, got {list(decoder_channels)}")
        if decoder_init not in ("he", "pytorch"):
            raise ValueError(f"decoder_init must be 'he' or 'pytorch', got {decoder_init!r}")
        self.backbone = build_backbone(backbone, in_channels=in_channels, output_stride=32, weights=backbone_weights)
        self.backbone.fc_layers = ()
        enc = self.backbone.out_channels
        skips = [enc[3], enc[2], enc[1], enc[0], 0]
        inputs = [enc[4]] + widths[:-1]
        self.blocks = nn.ModuleList(DecoderBlock(i, s, o) for i, s, o in zip(inputs, skips, widths))
        self.head = nn.Conv2d(widths[-1], num_classes, 3, padding=1)
        if decoder_init == "he":
            he_init_(self.blocks, self.head, mode="fan_in")

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        features = self.backbone(pad_to_multiple(x, 32))
        y = features[4]
        for block, skip in zip(self.blocks, [features[3], features[2], features[1], features[0], None]):
            y = block(y, skip)
        return self.head(y)[..., :height, :width]

