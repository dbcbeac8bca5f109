"""LR-ASPP (Lite Reduced Atrous Spatial Pyramid Pooling): Howard, Sandler, Chu, Chen, Chen, Tan, Wang, Zhu,
Pang, Vasudevan, Le, Adam, "Searching for MobileNetV3", ICCV 2019.

The segmentation head the MobileNetV3 paper designed for mobile use. The encoder's last stage is dilated so its
features sit at stride 16; there a cheap two-branch block replaces DeepLab's ASPP: a 1x1 convolution + BN + ReLU
to ``inter_channels``, multiplied channel-wise by a gate computed from the globally pooled features (a 1x1
convolution and a sigmoid, like a squeeze-and-excitation block without its bottleneck). The gated map is upsampled
to the stride-8 low-level features, each of the two maps gets its own 1x1 classifier, and the two score maps are
summed and upsampled bilinearly to the input size::

    stride-8 features ───────────────────────────────────── 1x1 conv ─┐
    stride-16 features ─ 1x1 conv-BN-ReLU ─ (x) ─ up to 1/8 ─ 1x1 conv ─ (+) ─ up to input ─ logits
                     └── global pool ─ 1x1 conv ─ sigmoid ─┘

The same architecture, module for module, as ``torchvision.models.segmentation.lraspp_mobilenet_v3_large``:
the low-level features are the output of the strided block that opens the stride-8 stage (torchvision's choice;
the two blocks that follow it at stride 8 feed only the deeper stages), and every depthwise convolution of the
dilated last stage, the formerly strided one included, uses atrous rate 2.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from pixelwise.backbones import build_backbone
from pixelwise.layers.blocks import conv_bn_relu
from pixelwise.models.registry import register_model

__all__ = ["LRASPP", "LRASPPHead"]


class LRASPPHead(nn.Module):
    """The LR-ASPP head: gated 1x1 features at the high level, plus a linear classifier of the low-level features.

    Args:
        low_channels: channels of the stride-8 features.
        high_channels: channels of the deepest (stride-16) features.
        num_classes: K, channels of the scores.
        inter_channels: width of the high-level branch (128 in the paper).

    Shapes:
        low (N, low_channels, h, w) float, high (N, high_channels, h', w') float -> (N, K, h, w) float scores.
    """

    def __init__(self, low_channels: int, high_channels: int, num_classes: int, inter_channels: int = 128) -> None:
        super().__init__()
        self.features = conv_bn_relu(high_channels, inter_channels, 1)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(high_channels, inter_channels, 1, bias=False),
            nn.Sigmoid(),
        )
        self.classify_low = nn.Conv2d(low_channels, num_classes, 1)
        self.classify_high = nn.Conv2d(inter_channels, num_classes, 1)

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        gated = self.features(high) * self.gate(high)
        gated = F.interpolate(gated, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classify_low(low) + self.classify_high(gated)


@register_model(
    "lraspp",
    paper="Howard, Sandler, Chu, Chen, Chen, Tan, Wang, Zhu, Pang, Vasudevan, Le, Adam. Searching for MobileNetV3. "
    "ICCV 2019",
    description="Lite R-ASPP: dilated MobileNetV3-Large (output stride 16), sigmoid-gated 1x1 head, stride-8 skip",
)
class LRASPP(nn.Module):
    """LR-ASPP: a dilated encoder, the :class:`LRASPPHead` on its stride-8 and deepest features, bilinear upsampling.

    Args:
        num_classes: K, channels of the logits.
        in_channels: channels of the input images.
        backbone: a :func:`pixelwise.backbones.list_backbones` name other than VGG; ``"mobilenet_v3_large"`` is the
            paper's. The low-level features are taken after the first block of the backbone's stride-8 stage.
        backbone_weights: see :func:`pixelwise.backbones.build_backbone`.
        output_stride: stride of the deepest features: 16 in the paper (its last stage dilated), or 8 or 32.
        inter_channels: width of the head's high-level branch (128 in the paper).

    Shapes:
        (N, in_channels, H, W) float -> (N, K, H, W) float logits, for any H, W.

    Raises:
        ValueError: a VGG backbone (its stride-8 stage opens with a convolution at stride 4, not a strided
            block), ``inter_channels`` < 1.
        ConfigError: unknown backbone or weights name, ``output_stride`` not 8, 16 or 32 (from
            :func:`pixelwise.backbones.build_backbone`). CheckpointError: a weights file that does not fit.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        backbone: str = "mobilenet_v3_large",
        backbone_weights: Any = None,
        output_stride: int = 16,
        inter_channels: int = 128,
    ) -> None:
        super().__init__()
        if str(backbone).startswith("vgg"):
            raise ValueError(f"LR-ASPP needs a ResNet or MobileNet backbone, got {backbone!r}")
        if isinstance(inter_channels, bool) or not isinstance(inter_channels, int) or inter_channels < 1:
            raise ValueError(f"inter_channels must be an integer >= 1, got {inter_channels!r}")
        self.backbone = build_backbone(
            backbone, in_channels=in_channels, output_stride=output_stride, weights=backbone_weights
        )
        self.backbone.fc_layers = ()
        low_channels = self.backbone.out_channels[2]  # the stage's later blocks keep the channels of its first
        self.head = LRASPPHead(low_channels, self.backbone.out_channels[-1], num_classes, inter_channels)

    def forward(self, x: Tensor) -> Tensor:
        stem, stride4, stride8, stride16, stride32 = self.backbone.stages
        low = stride8[0](stride4(stem(x)))
        high = low
        for block in stride8[1:]:
            high = block(high)
        high = stride32(stride16(high))
        logits = self.head(low, high)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

