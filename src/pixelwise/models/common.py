"""Helpers shared by the models: input checks, padding, and the VGG-16 pieces that FCN, SegNet, DeconvNet and the
dilated front-end have in common (the pooling-index encoder, the decoder plan that mirrors it, fc6/fc7 as
convolutions)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixelwise.backbones import Backbone
from pixelwise.layers.blocks import he_init_
from pixelwise.layers.convolutionalize import GemmConv2d, linear_to_conv2d

__all__ = [
    "VGG_BACKBONES",
    "VGG_FC6_KERNEL",
    "VGG_FC_CHANNELS",
    "VGGEncoderWithIndices",
    "check_images",
    "check_vgg_model_args",
    "mirrored_widths",
    "pad_to_multiple",
    "vgg_fc_convs",
]

# Only VGG has the plain "convolutions, then a 2x2 pool" stages that a pooling-index decoder can mirror.
VGG_BACKBONES = ("vgg16_bn", "vgg16")
# VGG-16's fc6 reads the 7x7 pool5 map of a 224x224 ImageNet image; 4096 is the width of its fc6 and fc7.
VGG_FC6_KERNEL = 7
VGG_FC_CHANNELS = 4096

# What the encoder remembers about each pooling: the argmax indices and the size of the map before pooling.
Switches = list[tuple[torch.Tensor, torch.Size]]


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Zero-pad the bottom and right of (N, C, H, W) ``x`` so H and W are multiples of ``multiple``.

    Models whose skip connections fuse maps of several strides need every stride to divide the input exactly;
    they pad, run, and crop the logits back to ``[..., :H, :W]``. Zero is the dataset mean after normalisation.
    """
    height, width = x.shape[-2:]
    pad_h = (multiple - height % multiple) % multiple
    pad_w = (multiple - width % multiple) % multiple
    # An exported graph (ONNX, TorchScript, torch.export) must pad whatever size it will see, so the shortcut is
    # taken in eager mode only.
    exporting = torch.jit.is_tracing() or torch.compiler.is_compiling()
    if pad_h == 0 and pad_w == 0 and not exporting:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h))


def check_images(x: Tensor, in_channels: int) -> None:
    """Raise ValueError unless ``x`` is a floating-point (N, in_channels, H, W) batch; the message says the fix."""
    if x.dim() != 4:
        raise ValueError(f"expected a 4-D (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"expected a floating-point tensor, got {x.dtype}: convert the images with x.float()")
    if x.shape[1] != in_channels:
        raise ValueError(
            f"expected {in_channels} input channels, got {x.shape[1]}: build the model with in_channels={x.shape[1]}"
        )


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


def vgg_fc_convs(backbone: Backbone, fc_channels: int, *, init_fresh: bool = False) -> tuple[nn.Conv2d, nn.Conv2d]:
    """VGG's fc6 and fc7 as convolutions over pool5: (7x7, pool5 channels -> ``fc_channels``), (1x1, ``fc_channels``
    -> ``fc_channels``), valid padding, stride 1; callers set fc6's padding and dilation for their use.

    At ``fc_channels=4096`` they are the backbone's own classifier layers convolutionalised
    (:func:`~pixelwise.layers.linear_to_conv2d`, so ImageNet weights carry over); at any other width they are new
    layers with PyTorch's default initialisation, or :func:`~pixelwise.layers.blocks.he_init_`'s (fan_out) with
    ``init_fresh``. A model that keeps the backbone should then drop its ``fc_layers`` (fc6 alone holds ~100M
    weights): ``backbone.fc_layers = ()``.
    """
    pool5_channels = backbone.out_channels[-1]
    fc6: nn.Conv2d
    fc7: nn.Conv2d
    if fc_channels == VGG_FC_CHANNELS and backbone.fc_layers:
        fc6_linear, fc7_linear = backbone.fc_layers
        fc6 = linear_to_conv2d(fc6_linear, pool5_channels, VGG_FC6_KERNEL)
        fc7 = linear_to_conv2d(fc7_linear, VGG_FC_CHANNELS, 1)
    else:
        fc6 = GemmConv2d(pool5_channels, fc_channels, VGG_FC6_KERNEL)
        fc7 = nn.Conv2d(fc_channels, fc_channels, 1)
        if init_fresh:
            he_init_(fc6, fc7)
    return fc6, fc7
