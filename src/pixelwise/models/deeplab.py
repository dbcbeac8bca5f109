"""DeepLabv3 and DeepLabv3+.

- DeepLabv3: Chen, Papandreou, Schroff, Adam, "Rethinking Atrous Convolution for Semantic Image Segmentation",
  arXiv 1706.05587, 2017. An encoder kept at output stride 16 or 8 by atrous convolution, ASPP on its last
  feature map, a 1x1 classifier, and bilinear upsampling of the logits to the input size.
- DeepLabv3+: Chen, Zhu, Papandreou, Schroff, Adam, "Encoder-Decoder with Atrous Separable Convolution for
  Semantic Image Segmentation", ECCV 2018. DeepLabv3's ASPP output upsampled 4x and concatenated with the encoder's
  stride-4 ("low-level") features, reduced to 48 channels, then two 3x3 convolutions refine object boundaries.

Both take any backbone of :mod:`pixelwise.backbones` (ResNet-101 and Xception in the papers; ResNet-50 here by
default, MobileNetV2 for the CPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixelwise.backbones import build_backbone
from pixelwise.layers.aspp import ASPP
from pixelwise.layers.blocks import atrous_block, conv_bn_relu
from pixelwise.models.registry import register_model

__all__ = ["DeepLabV3", "DeepLabV3Plus"]


def _default_rates(output_stride: int, atrous_rates: Sequence[int] | None) -> tuple[int, ...]:
    if output_stride not in (8, 16):
        raise ValueError(f"DeepLab's output_stride must be 8 or 16, got {output_stride!r}")
    if atrous_rates is not None:
        return tuple(int(r) for r in atrous_rates)
    # The paper's rates at output stride 16; at stride 8 the same field of view needs twice the rate.
    return (6, 12, 18) if output_stride == 16 else (12, 24, 36)


@register_model(
    "deeplabv3",
    paper="Chen, Papandreou, Schroff, Adam. Rethinking Atrous Convolution for Semantic Image Segmentation. "
    "arXiv 1706.05587, 2017",
    description="Atrous encoder (output stride 8/16), ASPP with image pooling, bilinear upsampling",
)
class DeepLabV3(nn.Module):
    """DeepLabv3: atrous backbone -> ASPP -> 3x3 conv -> 1x1 classifier -> bilinear upsampling.

    Args:
        num_classes: K, channels of the logits.
        in_channels: channels of the input images.
        backbone: a :func:`pixelwise.backbones.list_backbones` name.
        backbone_weights: see :func:`pixelwise.backbones.build_backbone`.
        output_stride: 16 or 8; the encoder's last stages are dilated to keep this resolution.
        atrous_rates: ASPP's rates; default (6, 12, 18) at output stride 16, (12, 24, 36) at 8.
        aspp_channels: width of ASPP and of the head (256 in the paper).
        dilate_strided_conv: see :func:`pixelwise.backbones.build_backbone`; ``False`` keeps the previous atrous
            rate on the convolution whose stride was removed (DeepLab's reference code and torchvision's
            ``deeplabv3_resnet50``, whose architecture ``output_stride=8, atrous_rates=(12, 24, 36),
            dilate_strided_conv=False`` then matches).

    Shapes:
        (N, in_channels, H, W) float -> (N, K, H, W) float logits, for any H, W.

    Raises:
        ValueError: ``output_stride`` not 8 or 16, an atrous rate < 1.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        backbone: str = "resnet50",
        backbone_weights: Any = None,
        output_stride: int = 16,
        atrous_rates: Sequence[int] | None = None,
        aspp_channels: int = 256,
        dilate_strided_conv: bool = True,
    ) -> None:
        super().__init__()
        rates = _default_rates(output_stride, atrous_rates)
        self.backbone = build_backbone(
            backbone, in_channels=in_channels, output_stride=output_stride, weights=backbone_weights,
            dilate_strided_conv=dilate_strided_conv,
        )
        self.backbone.fc_layers = ()
        self.aspp = ASPP(self.backbone.out_channels[-1], aspp_channels, rates)
        self.head = nn.Sequential(
            conv_bn_relu(aspp_channels, aspp_channels, 3), nn.Conv2d(aspp_channels, num_classes, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        features = self.backbone(x)[-1]
        logits = self.head(self.aspp(features))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


@register_model(
    "deeplabv3plus",
    paper="Chen, Zhu, Papandreou, Schroff, Adam. Encoder-Decoder with Atrous Separable Convolution for Semantic "
    "Image Segmentation. ECCV 2018",
    description="DeepLabv3 plus a decoder with a stride-4 low-level skip connection",
)
class DeepLabV3Plus(nn.Module):
    """DeepLabv3+: DeepLabv3's encoder and ASPP, plus a decoder fed by the stride-4 features.

    Args:
        num_classes, in_channels, backbone, backbone_weights, output_stride, atrous_rates, aspp_channels:
            as for :class:`DeepLabV3`.
        low_level_channels: the stride-4 features are reduced to this many channels (48 in the paper, so they do
            not outweigh the 256 semantic channels).
        decoder_channels: width of the 3x3 refinement convolutions (256 in the paper).
        refine_convs: how many 3x3 refinement convolutions follow the concatenation; the paper's decoder ablation
            (Table 2) picks two of width 256. segmentation_models_pytorch's DeepLabV3Plus has one.
        separable: ASPP's atrous branches and the refinement convolutions as atrous separable convolutions
            (depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU), the paper's design; about 5x fewer
            FLOPs in the head. Off by default, as in the paper's ResNet-101 experiments.
        depthwise_bn_relu: with ``separable``, keep the BN and ReLU after each depthwise step (the paper's design and
            reference code, the default); False builds Xception's separable convolution (depthwise -> pointwise ->
            BN -> ReLU, Chollet, CVPR 2017), as segmentation_models_pytorch's DeepLabV3Plus does.
        dilate_strided_conv: as for :class:`DeepLabV3`.

    The paper's ASPP and decoder use depthwise-separable convolutions with its Xception backbone
    (``separable=True``); by default we use plain 3x3 convolutions, as the paper's ResNet-101 experiments do.

    Shapes:
        (N, in_channels, H, W) float -> (N, K, H, W) float logits, for any H, W.

    Raises:
        ValueError: ``output_stride`` not 8 or 16, an atrous rate < 1, ``refine_convs`` < 1.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        backbone: str = "resnet50",
        backbone_weights: Any = None,
        output_stride: int = 16,
        atrous_rates: Sequence[int] | None = None,
        aspp_channels: int = 256,
        low_level_channels: int = 48,
        decoder_channels: int = 256,
        separable: bool = False,
        dilate_strided_conv: bool = True,
        refine_convs: int = 2,
        depthwise_bn_relu: bool = True,
    ) -> None:
        super().__init__()
        rates = _default_rates(output_stride, atrous_rates)
        if int(refine_convs) < 1:
            raise ValueError(f"refine_convs must be >= 1 (the paper uses 2), got {refine_convs!r}")
        self.backbone = build_backbone(
            backbone, in_channels=in_channels, output_stride=output_stride, weights=backbone_weights,
            dilate_strided_conv=dilate_strided_conv,
        )
        self.backbone.fc_layers = ()
        self.aspp = ASPP(self.backbone.out_channels[-1], aspp_channels, rates, separable=separable,
                         depthwise_bn_relu=depthwise_bn_relu)
        self.reduce_low_level = conv_bn_relu(self.backbone.out_channels[1], low_level_channels, 1)
        refine = atrous_block(separable, depthwise_bn_relu)
        widths = [aspp_channels + low_level_channels] + [decoder_channels] * int(refine_convs)
        self.decoder = nn.Sequential(
            *(refine(c_in, c_out, 3) for c_in, c_out in zip(widths, widths[1:])),
            nn.Conv2d(decoder_channels, num_classes, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        features = self.backbone(x)
        low_level = self.reduce_low_level(features[1])
        semantic = F.interpolate(self.aspp(features[-1]), size=low_level.shape[-2:], mode="bilinear",
                                 align_corners=False)
        logits = self.decoder(torch.cat([semantic, low_level], dim=1))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

