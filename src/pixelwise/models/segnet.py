"""SegNet: an encoder-decoder whose decoder upsamples with the encoder's max-pooling indices.

Source: Vijay Badrinarayanan, Alex Kendall, Roberto Cipolla. "SegNet: A Deep Convolutional Encoder-Decoder
Architecture for Image Segmentation". IEEE TPAMI 39(12), 2017. https://arxiv.org/abs/1511.00561

The encoder is the 13 convolutions of VGG-16 (with batch norm), without its fully connected layers. Every 2x2
max-pooling remembers *where* each maximum came from (its "pooling indices" or "switches"). The decoder mirrors the
encoder: at each stage it max-unpools, i.e. puts every value back at the position its maximum came from and zeros
elsewhere, then densifies that sparse map with 3x3 conv -> BN -> ReLU layers. A final 3x3 convolution gives one
logit per class. The upsampling has no weights; object boundaries come back from the stored positions, which cost a
few bits per pooling window instead of U-Net's full skip feature maps.

Decoder widths mirror the encoder's: stage 5 (512, 512, 512), stage 4 (512, 512, 256), stage 3 (256, 256, 128),
stage 2 (128, 64), stage 1 (64, then num_classes). With ``backbone="vgg16_bn"`` and 11 classes (CamVid) the
model has 29,445,643 parameters, the paper's "29.5M".

Pooling rounds odd sizes up (``ceil_mode=True``): an odd side keeps its last row or column in a window of one, and
unpooling to the remembered pre-pool size restores it, so the logits have the input size for any H and W. This is
what the authors' Caffe model did too: Caffe's pooling rounds up, and for 360x480 CamVid images pool4 turns 45 rows
into 23, which the decoder's unpooling layer restores to 45.

Two things to know about pooling indices in practice (both apply to DeconvNet as well):

* The argmax is discontinuous: where two values in a pooling window are nearly equal, float32 rounding decides
  which position the unpooling restores, so runs that differ only in rounding (float64, another convolution
  algorithm, ``torch.compile``) can differ locally by about 1% of the logits' scale. Compare them on inputs
  without near-ties, or with a tolerance on the prediction rather than the logits.
* ``torch.compile``: give ``dynamic=False`` when image sizes vary. A dynamic-shape recompile (what torch.compile
  does by default at the second image size) of the ceil-mode pooling chain ran for over 12 minutes on a CPU
  without finishing in our tests (torch 2.14), while a static compile per size takes well under a minute.

The encoder, :class:`~pixelwise.models.common.VGGEncoderWithIndices`, is shared with DeconvNet
(:mod:`pixelwise.models.deconvnet`), whose encoder is the same.
"""

from __future__ import annotations

import torch
from torch import nn

from pixelwise.backbones import build_backbone
from pixelwise.layers import max_unpool2d
from pixelwise.layers.blocks import conv_bn_relu, he_init_
from pixelwise.models.common import VGGEncoderWithIndices, check_vgg_model_args, mirrored_widths
from pixelwise.models.registry import register_model

__all__ = ["SegNet"]


@register_model(
    "segnet",
    paper=(
        "Badrinarayanan, Kendall, Cipolla. SegNet: A Deep Convolutional Encoder-Decoder Architecture for Image "
        "Segmentation. IEEE TPAMI 2017"
    ),
    description="VGG-16 encoder; decoder upsamples by max-unpooling with the encoder's pooling indices.",
)
class SegNet(nn.Module):
    """SegNet (Badrinarayanan, Kendall, Cipolla, TPAMI 2017): VGG-16 encoder, pooling-index decoder.

    Args:
        num_classes: number of classes; the logits have this many channels.
        in_channels: channels of the input images (3 for RGB, 1 for grey). With pretrained weights and a value
            other than 3 the first convolution's RGB filters are adapted (see :func:`build_backbone`).
        backbone: ``"vgg16_bn"`` (the paper: batch norm after every convolution) or ``"vgg16"`` (no BN in the
            encoder; the decoder keeps its BN).
        backbone_weights: None (random), a torchvision weights name such as ``"IMAGENET1K_V1"``, or the path of a
            local VGG ``state_dict``; the paper initialised the encoder from ImageNet.

    Attributes:
        encoder: :class:`~pixelwise.models.common.VGGEncoderWithIndices`.
        decoder: ``nn.ModuleList`` of 5 ``nn.Sequential`` of (3x3 conv, BN, ReLU) layers, deepest stage first (the
            order ``forward`` runs them); each starts with the unpooling's output.
        classifier: the last 3x3 convolution, 64 -> num_classes, giving the logits (no BN, no ReLU).

    Raises:
        ValueError: ``num_classes`` or ``in_channels`` below 1, or a backbone other than a VGG-16.
        ConfigError: unknown weights name (from :func:`build_backbone`). CheckpointError: a weights file that does
            not fit.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        backbone: str = "vgg16_bn",
        backbone_weights: object = None,
    ) -> None:
        super().__init__()
        check_vgg_model_args(num_classes, in_channels, backbone)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.encoder = VGGEncoderWithIndices(
            build_backbone(backbone, in_channels=in_channels, weights=backbone_weights), in_channels
        )
        plan = mirrored_widths(self.encoder)
        # The shallowest stage's last layer is the classifier itself, hence no conv-BN-ReLU for it.
        plan[-1] = plan[-1][:-1]
        self.decoder = nn.ModuleList(
            nn.Sequential(*[layer for cin, cout in stage for layer in conv_bn_relu(cin, cout)]) for stage in plan
        )
        self.classifier = nn.Conv2d(self.encoder.out_channels[0], num_classes, 3, padding=1)
        he_init_(self.decoder, self.classifier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel class logits.

        Args:
            x: images, (N, in_channels, H, W), floating point (normalised, not uint8), any H and W >= 1.

        Returns:
            Logits (N, num_classes, H, W) with the dtype of ``x``; no softmax applied.

        Raises:
            ValueError: if ``x`` is not 4-D, not floating point, or has the wrong number of channels.

        Note:
            BatchNorm cannot estimate statistics from one value, so training with batch size 1 needs a side longer
            than 16 pixels (stage 5's maps are then larger than 1x1).
        """
        x, switches = self.encoder(x)
        for stage, (indices, size) in zip(self.decoder, reversed(switches)):
            x = stage(max_unpool2d(x, indices, kernel_size=2, stride=2, output_size=size))
        return self.classifier(x)

