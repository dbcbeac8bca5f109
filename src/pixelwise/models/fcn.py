"""FCN-32s, FCN-16s and FCN-8s: Long, Shelhamer, Darrell, "Fully Convolutional Networks for Semantic
Segmentation", CVPR 2015.

A classification network made fully convolutional: VGG-16's fully connected fc6 and fc7 become a 7x7 and a 1x1
convolution (the same weights, see :func:`pixelwise.layers.linear_to_conv2d`), a 1x1 "score" convolution gives
class scores at stride 32, and a transposed convolution initialised as bilinear interpolation brings them back to
the input size. FCN-16s and FCN-8s add skip connections: the stride-32 scores are upsampled 2x and summed with
scores read from pool4 (stride 16), and for FCN-8s once more from pool3 (stride 8), before the final upsampling::

    pool3 ──────────────────────────── score_pool3 ─┐
    pool4 ─────────── score_pool4 ─┐                │
    pool5 ─ fc6 ─ fc7 ─ score_fr ─ ×2 ─ (+) ─ ×2 ─ (+) ─ ×8 ─ logits      (FCN-8s)

Any backbone from :mod:`pixelwise.backbones` works; on ResNet or MobileNet the last stage's features are scored
directly (they have no fc6/fc7), as in the paper's discussion of other nets.
"""

from __future__ import annotations

import functools
from typing import Any

from torch import Tensor, nn

from pixelwise.backbones import build_backbone
from pixelwise.layers.upsampling import bilinear_conv_transpose2d
from pixelwise.models.common import VGG_FC6_KERNEL, pad_to_multiple, vgg_fc_convs
from pixelwise.models.registry import register_model

__all__ = ["FCN"]

_PAPER = "Long, Shelhamer, Darrell. Fully Convolutional Networks for Semantic Segmentation. CVPR 2015"


def _zero_score(in_channels: int, num_classes: int) -> nn.Conv2d:
    # The paper zero-initialises the skip scores, so a new skip starts by leaving the coarser net's output unchanged.
    conv = nn.Conv2d(in_channels, num_classes, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class FCN(nn.Module):
    """FCN with skip connections down to stride ``variant`` (32, 16 or 8).

    Args:
        num_classes: K, channels of the logits.
        in_channels: channels of the input images.
        variant: 32 (no skip), 16 (skip from pool4) or 8 (skips from pool4 and pool3).
        backbone: a :func:`pixelwise.backbones.list_backbones` name; ``"vgg16"`` is the paper's.
        backbone_weights: see :func:`pixelwise.backbones.build_backbone`. With VGG ImageNet weights and
            ``fc_channels=4096``, fc6/fc7 are the classifier's own layers convolutionalised.
        fc_channels: width of fc6/fc7 on VGG (4096 in the paper; see :func:`~pixelwise.models.common.vgg_fc_convs`).
        dropout: dropout after fc6 and fc7 (0.5 in the paper).
        learn_final_upsampling: the paper keeps the last upsampling fixed at bilinear (learning it did not help);
            the 2x upsamplings inside FCN-16s/8s are learned from bilinear initialisation either way.

    Differences from the paper: instead of padding conv1_1 by 100 pixels and cropping after every upsampling, the
    input is zero-padded to a multiple of 32 and fc6 pads by 3, so every stride divides the map exactly and the
    skip maps align without crop offsets; the logits are cropped back to the input size.

    Shapes:
        (N, in_channels, H, W) float -> (N, K, H, W) float logits, for any H, W.

    Raises:
        ValueError: ``variant`` not in {32, 16, 8}.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        variant: int = 8,
        backbone: str = "vgg16",
        backbone_weights: Any = None,
        fc_channels: int = 4096,
        dropout: float = 0.5,
        learn_final_upsampling: bool = False,
    ) -> None:
        super().__init__()
        if variant not in (32, 16, 8):
            raise ValueError(f"FCN variant must be 32, 16 or 8, got {variant!r}")
        self.variant = variant
        self.backbone = build_backbone(backbone, in_channels=in_channels, output_stride=32, weights=backbone_weights)
        c3, c4, c5 = self.backbone.out_channels[2:]

        if self.backbone.name.startswith("vgg"):
            fc6, fc7 = vgg_fc_convs(self.backbone, fc_channels)
            fc6.padding = (VGG_FC6_KERNEL // 2,) * 2
            self.fc = nn.Sequential(
                fc6, nn.ReLU(inplace=True), nn.Dropout2d(dropout), fc7, nn.ReLU(inplace=True), nn.Dropout2d(dropout)
            )
            score_channels = fc_channels
            self.backbone.fc_layers = ()  # converted; drop torchvision's copies
        else:
            self.fc = nn.Identity()
            score_channels = c5
        self.score_fr = nn.Conv2d(score_channels, num_classes, 1)

        if variant <= 16:
            self.score_pool4 = _zero_score(c4, num_classes)
            self.upscore2 = bilinear_conv_transpose2d(num_classes, 2, learnable=True)
        if variant == 8:
            self.score_pool3 = _zero_score(c3, num_classes)
            self.upscore_pool4 = bilinear_conv_transpose2d(num_classes, 2, learnable=True)
        self.upscore_final = bilinear_conv_transpose2d(num_classes, variant, learnable=learn_final_upsampling)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        _, _, pool3, pool4, pool5 = self.backbone(pad_to_multiple(x, 32))
        score = self.score_fr(self.fc(pool5))
        if self.variant <= 16:
            score = self.upscore2(score) + self.score_pool4(pool4)
        if self.variant == 8:
            score = self.upscore_pool4(score) + self.score_pool3(pool3)
        return self.upscore_final(score)[..., :height, :width]


# Each variant is FCN with `variant` fixed; its options are the rest of FCN's signature.
_VARIANTS = {
    32: "VGG-16 made fully convolutional, one 32x upsampling, no skips",
    16: "FCN-32s plus a skip connection from pool4 (stride 16)",
    8: "FCN-16s plus a skip connection from pool3 (stride 8)",
}
for _variant, _description in _VARIANTS.items():
    register_model(f"fcn{_variant}s", paper=_PAPER, description=_description)(functools.partial(FCN, variant=_variant))
