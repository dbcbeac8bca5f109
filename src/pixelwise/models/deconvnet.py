"""DeconvNet: a VGG-16 encoder, its fully connected layers, and a mirrored unpooling + deconvolution decoder.

Source: Hyeonwoo Noh, Seunghoon Hong, Bohyung Han. "Learning Deconvolution Network for Semantic Segmentation".
ICCV 2015. https://arxiv.org/abs/1505.04366

The encoder is VGG-16's 13 convolutions, each 2x2 max-pooling remembering its indices (the same encoder as SegNet,
:class:`~pixelwise.models.common.VGGEncoderWithIndices`), followed by VGG's classifier turned into convolutions:
fc6 a 7x7 valid convolution 512 -> 4096, which on a 224x224 input sees all of pool5's 7x7 map and gives a 1x1 map,
and fc7 a 1x1 convolution 4096 -> 4096. Built from a VGG backbone, fc6 and fc7 are its ``nn.Linear`` layers
convolutionalized (:func:`~pixelwise.layers.linear_to_conv2d`), so ImageNet weights carry over.

The decoder is the mirror image: "deconv-fc6", a 7x7 valid transposed convolution 4096 -> 512, spreads the 1x1
code back over 7x7; then, for each stage from the deepest, unpooling with the encoder's indices (the positions of
the maxima: where things are) followed by 3x3 transposed convolutions (the learned "deconvolutions": what shapes
to draw there), widths (512, 512, 512), (512, 512, 256), (256, 256, 128), (128, 64), (64, 64). A 1x1 convolution
gives the logits. Every convolution and transposed convolution except the last is followed by BN and ReLU, as in
the paper. With 11 classes the model has 251,800,715 parameters (the paper: 252M), 222M of them in fc6, fc7 and
deconv-fc6.

Inputs of any size, not only the paper's 224x224 proposals:

* pool5 larger than 7x7 (inputs above 224): fc6 slides over pool5 like FCN's convolutionalized fc6, giving
  (h5 - 6) x (w5 - 6), and the valid 7x7 transposed convolution brings that back to exactly h5 x w5.
* pool5 smaller than 7 in a dimension (inputs of 192 or less): pool5 is zero-padded at the bottom/right up to 7,
  so fc6 still sees one full 7x7 window (zeros are "no activation" after ReLU), and deconv-fc6's 7x7 output is
  cropped back to pool5's size before unpooling.

Pooling rounds odd sizes up and unpooling restores them (see :mod:`pixelwise.models.segnet`), so the logits have
the input's size. Deviation from the paper: the BatchNorm after fc6, fc7 and deconv-fc6 normalises with its running
statistics instead of the batch's when a training batch has one value per channel (batch size 1 on fc6's and fc7's
1x1 maps), since a variance cannot be estimated from one value and PyTorch refuses it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.backbones import build_backbone
from pixelwise.layers import max_unpool2d
from pixelwise.layers.blocks import deconv_bn_relu, he_init_
from pixelwise.models.common import (
    VGG_FC6_KERNEL,
    VGG_FC_CHANNELS,
    VGGEncoderWithIndices,
    check_vgg_model_args,
    mirrored_widths,
    vgg_fc_convs,
)
from pixelwise.models.registry import register_model

__all__ = ["FallbackBatchNorm2d", "DeconvNet"]


class FallbackBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that, in training, uses its running statistics when the batch has one value per channel.

    A (1, C, 1, 1) batch (batch size 1 on fc6's 1x1 map) has no variance to normalise by, and ``nn.BatchNorm2d``
    raises "Expected more than 1 value per channel when training". This layer then normalises as in evaluation,
    with the running mean and variance, and leaves them unchanged; the learned scale and shift still train. Any
    larger batch is ordinary batch norm. The test is on the shape only, so ``torch.compile`` handles it with a guard.

    Shapes:
        (N, C, H, W) float -> (N, C, H, W) float.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


@register_model(
    "deconvnet",
    paper="Noh, Hong, Han. Learning Deconvolution Network for Semantic Segmentation. ICCV 2015",
    description="VGG-16 with fc6/fc7 as convolutions; mirrored decoder of unpooling and 3x3 transposed convolutions.",
)
class DeconvNet(nn.Module):
    """DeconvNet (Noh, Hong, Han, ICCV 2015): VGG-16 + fc6/fc7 encoder, unpooling + deconvolution decoder.

    Args:
        num_classes: number of classes; the logits have this many channels.
        in_channels: channels of the input images (3 for RGB, 1 for grey).
        backbone: ``"vgg16_bn"`` (the paper: BN after every layer) or ``"vgg16"`` (no BN in the 13 encoder
            convolutions; fc6, fc7 and the decoder keep theirs).
        backbone_weights: None (random), a torchvision weights name such as ``"IMAGENET1K_V1"``, or the path of a
            local VGG ``state_dict``; with ``fc_channels=4096`` the classifier's fc6 and fc7 weights are used too
            (random if the file has no classifier). The paper initialised from ImageNet.
        fc_channels: width of fc6 and fc7 (4096 in the paper). Any other value gives freshly initialised fc6/fc7
            (VGG's weights do not fit) and shrinks the model: fc6, fc7 and deconv-fc6 hold 222M of the 252M
            parameters at 4096.

    Attributes:
        encoder: :class:`~pixelwise.models.common.VGGEncoderWithIndices`.
        fc6: ``nn.Sequential(Conv2d(512, fc_channels, 7), FallbackBatchNorm2d, ReLU)``; 1x1 output at 224x224.
        fc7: ``nn.Sequential(Conv2d(fc_channels, fc_channels, 1), FallbackBatchNorm2d, ReLU)``.
        deconv_fc6: ``ConvTranspose2d(fc_channels, 512, 7)``, followed (after cropping) by ``deconv_fc6_bn``
            (``FallbackBatchNorm2d`` and ReLU).
        decoder: ``nn.ModuleList`` of 5 ``nn.Sequential`` of (3x3 ConvTranspose2d, BN, ReLU), deepest first; each
            starts with the unpooling's output.
        classifier: 1x1 convolution 64 -> num_classes giving the logits.

    Raises:
        ValueError: ``num_classes``, ``in_channels`` or ``fc_channels`` below 1, or a backbone other than a VGG-16.
        ConfigError: unknown weights name (from :func:`build_backbone`). CheckpointError: a weights file that does
            not fit.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        backbone: str = "vgg16_bn",
        backbone_weights: object = None,
        fc_channels: int = VGG_FC_CHANNELS,
    ) -> None:
        super().__init__()
        check_vgg_model_args(num_classes, in_channels, backbone)
        if isinstance(fc_channels, bool) or not isinstance(fc_channels, int) or fc_channels < 1:
            raise ValueError(f"fc_channels must be an integer >= 1, got {fc_channels!r}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        vgg = build_backbone(backbone, in_channels=in_channels, weights=backbone_weights)
        self.encoder = VGGEncoderWithIndices(vgg, in_channels)
        pool5_ch = self.encoder.out_channels[-1]

        fc6_conv, fc7_conv = vgg_fc_convs(vgg, fc_channels, init_fresh=True)
        self.fc6 = nn.Sequential(fc6_conv, FallbackBatchNorm2d(fc_channels), nn.ReLU(inplace=True))
        self.fc7 = nn.Sequential(fc7_conv, FallbackBatchNorm2d(fc_channels), nn.ReLU(inplace=True))

        self.deconv_fc6 = nn.ConvTranspose2d(fc_channels, pool5_ch, VGG_FC6_KERNEL, bias=False)
        # Fallback BN here too: after cropping, a pool5 of 1x1 (inputs of 32x32 or less) leaves one value.
        self.deconv_fc6_bn = nn.Sequential(FallbackBatchNorm2d(pool5_ch), nn.ReLU(inplace=True))
        self.decoder = nn.ModuleList(
            nn.Sequential(*[layer for cin, cout in stage for layer in deconv_bn_relu(cin, cout)])
            for stage in mirrored_widths(self.encoder)
        )
        self.classifier = nn.Conv2d(self.encoder.out_channels[0], num_classes, 1)
        he_init_(self.deconv_fc6, self.decoder, self.classifier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel class logits.

        Args:
            x: images, (N, in_channels, H, W), floating point (normalised, not uint8), any H and W >= 1.

        Returns:
            Logits (N, num_classes, H, W) with the dtype of ``x``; no softmax applied.

        Raises:
            ValueError: if ``x`` is not 4-D, not floating point, or has the wrong number of channels.

        Note:
            Training with batch size 1 needs a side longer than 16 pixels: the encoder's own BatchNorm layers
            (torchvision's) cannot normalise stage 5's maps when they are 1x1.
        """
        x, switches = self.encoder(x)
        h5, w5 = x.shape[-2:]
        # Below 7x7, pad so fc6 has one full window; deconv-fc6 then returns 7x7 and the crop undoes the padding.
        # At 7x7 or more the valid 7x7 transposed convolution returns exactly h5 x w5 and the crop does nothing.
        x = F.pad(x, (0, max(0, VGG_FC6_KERNEL - w5), 0, max(0, VGG_FC6_KERNEL - h5)))
        x = self.fc7(self.fc6(x))
        x = self.deconv_fc6_bn(self.deconv_fc6(x)[..., :h5, :w5])
        for stage, (indices, size) in zip(self.decoder, reversed(switches)):
            x = stage(max_unpool2d(x, indices, kernel_size=2, stride=2, output_size=size))
        return self.classifier(x)

