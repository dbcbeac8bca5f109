"""The dilated-ResNet "FCN" of torchvision's segmentation models (``torchvision.models.segmentation.fcn_resnet50``).

Not the FCN-32s/16s/8s of Long, Shelhamer and Darrell (CVPR 2015; see :mod:`pixelwise.models.fcn`), which score
VGG-16's fc7 at stride 32 and recover detail through learned skip connections from pool4 and pool3. Here a ResNet
keeps output stride 8 by atrous convolution instead (its last two stages dilated at rates 2 and 4, as in DeepLab:
Chen et al., TPAMI 2018; Yu & Koltun, ICLR 2016), and one small head scores the deepest features directly::

    image ─ dilated ResNet (1/8) ─ 3x3 conv-BN-ReLU (C/4) ─ dropout 0.1 ─ 1x1 conv ─ bilinear to input ─ logits

This is the dilated-FCN baseline that context modules are measured against (e.g. by EncNet: Zhang et al.,
"Context Encoding for Semantic Segmentation", CVPR 2018), and the same architecture, module for module, as
torchvision's ``fcn_resnet50`` without its auxiliary classifier: the convolution that carried a removed stride keeps
the rate of the stage before it (1, then 2), only the later ones use the new rate (2, then 4).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from pixelwise.backbones import build_backbone
from pixelwise.layers.blocks import conv_bn_relu
from pixelwise.models.registry import register_model

__all__ = ["DilatedResNetFCN", "FCNHead"]

_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")


class FCNHead(nn.Sequential):
    """3x3 convolution to a quarter of the channels, BN, ReLU, dropout, 1x1 convolution to the classes.

    Args:
        in_channels: C, channels of the features (2048 for ResNet-50).
        num_classes: K, channels of the scores.
        dropout: probability of zeroing each activation (not whole channels) before the classifier.

    Shapes:
        (N, C, h, w) float -> (N, K, h, w) float scores.
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.1) -> None:
        hidden = in_channels // 4
        super().__init__(
            *conv_bn_relu(in_channels, hidden, 3, inplace=False),  # torchvision's FCNHead, module for module
            nn.Dropout(dropout),
            nn.Conv2d(hidden, num_classes, 1),
        )


@register_model(
    "fcn_resnet_dilated",
    paper="Long, Shelhamer, Darrell. Fully Convolutional Networks for Semantic Segmentation. CVPR 2015 (as cited "
    "by torchvision; the dilated ResNet follows Chen et al., DeepLab, TPAMI 2018)",
    description="torchvision's dilated-ResNet FCN head, not Long et al.'s skip architecture: ResNet at output "
    "stride 8, 3x3 conv-BN-ReLU-dropout-1x1 head, bilinear upsampling",
)
class DilatedResNetFCN(nn.Module):
    """A dilated ResNet, an :class:`FCNHead` on its deepest features, bilinear upsampling to the input size.

    Args:
        num_classes: K, channels of the logits.
        in_channels: channels of the input images.
        backbone: ``"resnet18"``, ``"resnet34"``, ``"resnet50"`` (torchvision's ``fcn_resnet50``) or ``"resnet101"``.
        backbone_weights: see :func:`pixelwise.backbones.build_backbone`.
        output_stride: 8 (torchvision's: the last two stages dilated) or 16 (only the last).
        dropout: dropout of the head (0.1 in torchvision).

    Shapes:
        (N, in_channels, H, W) float -> (N, K, H, W) float logits, for any H, W.

    Raises:
        ValueError: a backbone that is not a ResNet, ``output_stride`` not 8 or 16, ``dropout`` outside [0, 1].
        ConfigError: unknown weights name (from :func:`pixelwise.backbones.build_backbone`). CheckpointError: a
            weights file that does not fit.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        backbone: str = "resnet50",
        backbone_weights: Any = None,
        output_stride: int = 8,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if backbone not in _RESNETS:
            raise ValueError(f"backbone must be one of {', '.join(_RESNETS)}, got {backbone!r}")
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride!r}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be in [0, 1], got {dropout!r}")
        self.backbone = build_backbone(
            backbone,
            in_channels=in_channels,
            output_stride=output_stride,
            weights=backbone_weights,
            dilate_strided_conv=False,
        )
        self.backbone.fc_layers = ()
        self.head = FCNHead(self.backbone.out_channels[-1], num_classes, dropout)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.head(self.backbone(x)[-1])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

