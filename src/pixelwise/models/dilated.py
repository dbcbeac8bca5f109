"""Yu & Koltun's dilated VGG-16 "front-end", optionally followed by their context module.

Source: Fisher Yu, Vladlen Koltun. "Multi-Scale Context Aggregation by Dilated Convolutions". ICLR 2016.
https://arxiv.org/abs/1511.07122

The front-end is VGG-16 turned into a dense predictor without losing resolution: pool4 and pool5 are removed and
the layers after them are dilated instead (conv5 by 2, fc6 by 4), so every kernel sees the same context it saw in
the classification network while the score map stays at 1/8 of the input resolution instead of FCN's 1/32. fc6
and fc7 become convolutions (7x7 and 1x1, as in FCN) and a 1x1 layer gives one score per class. The context module
(:class:`pixelwise.layers.context.ContextModule`) then refines that score map with exponentially dilated 3x3
convolutions, and the scores are upsampled x8 bilinearly.

Differences from the paper, for the toolkit's any-size contract:

* All convolutions use 'same' zero padding (fc6: 12 = 4·3). The paper removed the padding of intermediate maps and
  instead reflection-padded the input by a wide margin, which ties the output size to the crop size.
* The input is zero-padded at the bottom and right to a multiple of 8 and the upsampled logits cropped back.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.backbones import build_backbone
from pixelwise.layers.context import CONTEXT_VARIANTS, ContextModule
from pixelwise.layers.upsampling import bilinear_conv_transpose2d
from pixelwise.models.common import VGG_FC6_KERNEL, VGG_FC_CHANNELS, check_images, pad_to_multiple, vgg_fc_convs
from pixelwise.models.registry import register_model

__all__ = ["DilatedFrontEnd"]


@register_model(
    "dilated_frontend",
    paper="Yu, Koltun. Multi-Scale Context Aggregation by Dilated Convolutions. ICLR 2016",
    description="VGG-16 front-end dilated to output stride 8, context module on the scores, bilinear x8 upsampling.",
)
class DilatedFrontEnd(nn.Module):
    """Dilated VGG-16 front-end + optional context module (Yu & Koltun, ICLR 2016).

    Layout: VGG-16 conv1-conv5 at output stride 8 (conv5 dilated by 2) -> fc6 (7x7, dilation 4, ReLU, dropout) ->
    fc7 (1x1, ReLU, dropout) -> 1x1 score layer (the paper's "final") -> context module -> fixed bilinear x8
    upsampling. With the default ``fc_channels=4096`` fc6 and fc7 are VGG-16's own classifier layers,
    convolutionalized, so ImageNet weights carry over to them too; a narrower width gives freshly initialised
    layers (useful for small experiments).

    Args:
        num_classes: number of classes; the logits have this many channels.
        in_channels: channels of the input images (the first VGG convolution is adapted for values other than 3).
        backbone_weights: passed to :func:`pixelwise.backbones.build_backbone` as ``weights`` (None, a torchvision
            weights name such as ``"IMAGENET1K_V1"``, or the path of a local VGG-16 ``state_dict``).
        context: ``"basic"`` or ``"large"`` (the paper's two context modules, on the ``num_classes`` score maps),
            or None for the front-end alone.
        fc_channels: width of fc6 and fc7 (VGG-16: 4096).
        dropout: dropout probability after fc6 and fc7 (the paper: 0.5).

    Attributes:
        num_classes, in_channels: as given.
        output_stride: 8, the stride of the score map.

    Raises:
        ValueError: ``num_classes``, ``in_channels`` or ``fc_channels`` below 1, an unknown ``context``, or
            ``dropout`` outside [0, 1).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        backbone_weights: Any = None,
        context: str | None = "basic",
        fc_channels: int = VGG_FC_CHANNELS,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        for arg, value in (("num_classes", num_classes), ("in_channels", in_channels), ("fc_channels", fc_channels)):
            if value < 1:
                raise ValueError(f"{arg} must be >= 1, got {value}")
        if context is not None and context not in CONTEXT_VARIANTS:
            accepted = ", ".join(map(repr, CONTEXT_VARIANTS))
            raise ValueError(f"context must be one of {accepted} or None, got {context!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.num_classes = num_classes
        self.in_channels = in_channels

        self.backbone = build_backbone("vgg16", in_channels=in_channels, output_stride=8, weights=backbone_weights)
        self.output_stride = self.backbone.strides[-1]
        # pool4 and pool5 are gone, so fc6's 7x7 taps must be 4 pixels apart to cover the 7x7 pool5 cells they
        # covered in the classification network.
        rate = self.backbone.dilations[-1]
        self.fc6, self.fc7 = vgg_fc_convs(self.backbone, fc_channels)
        # Dilating a converted layer keeps its weights: only the spacing of the taps changes.
        self.fc6.dilation = (rate, rate)
        self.fc6.padding = (rate * (VGG_FC6_KERNEL // 2),) * 2
        # The Linear copies are no longer needed; fc6's alone holds ~100M parameters.
        self.backbone.fc_layers = ()
        self.drop6 = nn.Dropout(dropout)
        self.drop7 = nn.Dropout(dropout)
        self.score = nn.Conv2d(fc_channels, num_classes, kernel_size=1)
        self.context = ContextModule(num_classes, context) if context is not None else nn.Identity()
        # Fixed, not learned: the paper upsamples its 1/8 score map bilinearly.
        self.upsample = bilinear_conv_transpose2d(num_classes, self.output_stride, learnable=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel class logits.

        Args:
            x: images, (N, in_channels, H, W), floating point, any H and W >= 1.

        Returns:
            Logits (N, num_classes, H, W) with the dtype of ``x``; no softmax applied.

        Raises:
            ValueError: if ``x`` is not 4-D, not floating point, or has the wrong number of channels.
        """
        check_images(x, self.in_channels)
        height, width = x.shape[-2:]
        # On a multiple of 8 the three pools divide exactly, so x8 upsampling returns to the padded size.
        x = pad_to_multiple(x, self.output_stride)

        x = self.backbone(x)[-1]
        x = self.drop6(F.relu(self.fc6(x)))
        x = self.drop7(F.relu(self.fc7(x)))
        scores = self.context(self.score(x))
        return self.upsample(scores)[..., :height, :width]

