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

:class:`VGGEncoderWithIndices` is shared with DeconvNet (:mod:`pixelwise.models.deconvnet`), whose encoder is the
same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.backbones import Backbone, build_backbone
from pixelwise.layers import max_unpool2d
from pixelwise.models.common import check_images
from pixelwise.models.registry import register_model

__all__ = [
    "VGG_BACKBONES",
    "VGGEncoderWithIndices",
    "check_vgg_model_args",
    "init_decoder",
    "mirrored_widths",
    "SegNet",
    "segnet",
]

# Only VGG has the plain "convolutions, then a 2x2 pool" stages that a pooling-index decoder can mirror.
VGG_BACKBONES = ("vgg16_bn", "vgg16")

# What the encoder remembers about each pooling: the argmax indices and the size of the map before pooling.
Switches = list[tuple[torch.Tensor, torch.Size]]


class VGGEncoderWithIndices(nn.Module):
    """VGG's five convolution stages, each followed by 2x2 max-pooling that returns its indices.

    Args:
        backbone: a VGG :class:`~pixelwise.backbones.Backbone` at output stride 32; its stages are
            "(conv [BN] ReLU) x n, max-pool". The convolutions are reused (with any weights loaded), the pools are
            replaced by ``F.max_pool2d(..., return_indices=True, ceil_mode=True)``.
        in_channels: channels the backbone was built for; checked on every input.

    Attributes:
        stages: ``nn.ModuleList`` of 5 ``nn.Sequential`` holding each stage's convolutions (no pool).
        out_channels: channels of each stage, ``(64, 128, 256, 512, 512)`` for VGG-16.
        convs_per_stage: number of convolutions in each stage, ``(2, 2, 3, 3, 3)`` for VGG-16.

    Shapes:
        ``forward(x)``: x float (N, in_channels, H, W) -> ``(pooled, switches)``: pooled (N, 512, h5, w5) with
        h5 = ceil(H / 32) (each pooling rounds up), and ``switches``, shallowest stage first, a list of 5
        ``(indices, size)``: indices int64 of the pooled map's shape (flat positions in each pre-pool H x W plane),
        size the pre-pool (H_i, W_i), which the unpooling needs to restore odd sizes.

    Raises:
        ValueError: in ``__init__`` if a stage does not end with a max-pool (not a VGG at output stride 32); in
            ``forward`` if ``x`` is not 4-D, not floating point, or has the wrong number of channels.
    """

    def __init__(self, backbone: Backbone, in_channels: int) -> None:
        super().__init__()
        for i, stage in enumerate(backbone.stages):
            if not isinstance(stage[-1], nn.MaxPool2d):
                raise ValueError(f"stage {i + 1} of backbone {backbone.name!r} does not end with a max-pool")
        self.in_channels = in_channels
        self.stages = nn.ModuleList(nn.Sequential(*stage[:-1]) for stage in backbone.stages)
        self.out_channels: tuple[int, ...] = tuple(backbone.out_channels)
        self.convs_per_stage = tuple(sum(isinstance(m, nn.Conv2d) for m in s) for s in self.stages)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Switches]:
        check_images(x, self.in_channels)
        switches: Switches = []
        for stage in self.stages:
            x = stage(x)
            size = x.shape[-2:]
            # ceil_mode: an odd side gets a last window of one row/column instead of losing it, so unpooling
            # to `size` gives every pixel back its value.
            x, indices = F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True, return_indices=True)
            switches.append((indices, size))
        return x, switches


def mirrored_widths(encoder: VGGEncoderWithIndices) -> list[list[tuple[int, int]]]:
    """(in, out) channels of the decoder layers that mirror ``encoder``, deepest stage first.

    A decoder stage has as many layers as its encoder stage; all keep the stage's width except the last, which
    narrows to the width of the stage above (the first stage stays at its own width). For VGG-16:
    ``[[(512, 512)] * 3, [(512, 512), (512, 512), (512, 256)], [(256, 256), (256, 256), (256, 128)],
    [(128, 128), (128, 64)], [(64, 64), (64, 64)]]``.
    """
    widths = encoder.out_channels
    plan = []
    for i in reversed(range(len(widths))):
        target = widths[max(i - 1, 0)]
        n = encoder.convs_per_stage[i]
        plan.append([(widths[i], widths[i])] * (n - 1) + [(widths[i], target)])
    return plan


def init_decoder(module: nn.Module) -> None:
    """He initialisation of every (transposed) convolution in ``module``, as torchvision initialises VGG.

    Kaiming normal with ``mode="fan_out"``, ReLU gain, zero biases; BatchNorm weight 1 and bias 0. For a
    ``ConvTranspose2d`` the weight is laid out (in, out, kh, kw), so PyTorch's fan computation swaps the roles:
    ``mode="fan_in"`` there is out * kh * kw, the fan-out of the equivalent convolution.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            mode = "fan_in" if isinstance(m, nn.ConvTranspose2d) else "fan_out"
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _conv_bn_relu(in_ch: int, out_ch: int) -> list[nn.Module]:
    # No bias: the BatchNorm right after subtracts the mean and adds its own shift.
    return [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]


def check_vgg_model_args(num_classes: int, in_channels: int, backbone: str) -> None:
    """Raise ValueError unless both counts are integers >= 1 and ``backbone`` is one of :data:`VGG_BACKBONES`."""
    for arg, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be an integer >= 1, got {value!r}")
    if backbone not in VGG_BACKBONES:
        raise ValueError(
            f"backbone must be one of {', '.join(VGG_BACKBONES)} (a VGG, whose pooling stages the decoder mirrors), "
            f"got {backbone!r}"
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
        encoder: :class:`VGGEncoderWithIndices`.
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
            nn.Sequential(*[layer for cin, cout in stage for layer in _conv_bn_relu(cin, cout)]) for stage in plan
        )
        self.classifier = nn.Conv2d(self.encoder.out_channels[0], num_classes, 3, padding=1)
        init_decoder(self.decoder)
        init_decoder(self.classifier)

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


@register_model(
    "segnet",
    paper=(
        "Badrinarayanan, Kendall, Cipolla. SegNet: A Deep Convolutional Encoder-Decoder Architecture for Image "
        "Segmentation. IEEE TPAMI 2017"
    ),
    description="VGG-16 encoder; decoder upsamples by max-unpooling with the encoder's pooling indices.",
)
def segnet(
    num_classes: int,
    in_channels: int = 3,
    backbone: str = "vgg16_bn",
    backbone_weights: object = None,
) -> SegNet:
    """Factory for :class:`SegNet`; see there for the arguments."""
    return SegNet(num_classes, in_channels, backbone=backbone, backbone_weights=backbone_weights)
