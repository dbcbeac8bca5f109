"""The small blocks every model is built from, and the one initialisation they share.

- :func:`conv_bn_relu`: convolution ('same' padding) -> batch norm -> ReLU, the unit of U-Net, SegNet, DeepLab, ...
- :func:`deconv_bn_relu`: the same with a transposed convolution (DeconvNet's decoder).
- :func:`separable_conv_bn_relu`: DeepLabv3+'s atrous separable convolution; :func:`atrous_block` picks it or the
  full convolution for a 3x3 atrous layer.
- :func:`he_init_`: He initialisation of every layer under some modules, as torchvision initialises VGG.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

from torch import nn

__all__ = ["atrous_block", "conv_bn_relu", "deconv_bn_relu", "he_init_", "separable_conv_bn_relu"]


def conv_bn_relu(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    dilation: int = 1,
    *,
    batch_norm: bool = True,
    inplace: bool = True,
) -> nn.Sequential:
    """``Conv2d`` ('same' padding) -> ``BatchNorm2d`` -> ``ReLU``.

    The convolution has no bias when batch norm follows (BN subtracts the mean and adds its own shift);
    ``batch_norm=False`` gives conv (with bias) -> ReLU. ``inplace`` is the ReLU's.

    Shapes: (N, in_channels, H, W) float -> (N, out_channels, H, W) float.
    """
    padding = dilation * (kernel_size - 1) // 2
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=not batch_norm)
    norm = [nn.BatchNorm2d(out_channels)] if batch_norm else []
    return nn.Sequential(conv, *norm, nn.ReLU(inplace=inplace))


def deconv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    """``ConvTranspose2d`` (stride 1, padding that keeps the size, no bias) -> ``BatchNorm2d`` -> ``ReLU``.

    Shapes: (N, in_channels, H, W) float -> (N, out_channels, H, W) float.
    """
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def separable_conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1, depthwise_bn_relu: bool = True
) -> nn.Sequential:
    """Atrous separable convolution as DeepLabv3+ uses it (Chen et al., ECCV 2018, sec. 3.1): a depthwise
    ``kernel_size`` convolution at atrous rate ``dilation`` -> BN -> ReLU, then a pointwise 1x1 convolution -> BN ->
    ReLU (the paper adds BN and ReLU after the depthwise step, as MobileNet does, and so does its reference code).
    About ``kernel_size**2`` times fewer multiply-adds than :func:`conv_bn_relu` for wide layers.

    ``depthwise_bn_relu=False`` drops the BN and ReLU between the two steps: depthwise -> pointwise -> BN -> ReLU,
    the separable convolution of Xception (Chollet, CVPR 2017, sec. 4.7, which found no intermediate non-linearity
    better there) and of segmentation_models_pytorch's DeepLabV3Plus.

    Shapes: (N, in_channels, H, W) float -> (N, out_channels, H, W) float.
    """
    padding = dilation * (kernel_size - 1) // 2
    depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, padding=padding, dilation=dilation,
                          groups=in_channels, bias=False)
    between = [nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True)] if depthwise_bn_relu else []
    return nn.Sequential(depthwise, *between, *conv_bn_relu(in_channels, out_channels, 1))


def atrous_block(separable: bool, depthwise_bn_relu: bool = True) -> Callable[..., nn.Sequential]:
    """The block builder for a 3x3 atrous layer: :func:`separable_conv_bn_relu` (with ``depthwise_bn_relu``) when
    ``separable``, else :func:`conv_bn_relu`; both take (in_channels, out_channels, kernel_size, dilation)."""
    if separable:
        return functools.partial(separable_conv_bn_relu, depthwise_bn_relu=depthwise_bn_relu)
    return conv_bn_relu


def he_init_(*modules: nn.Module, mode: Literal["fan_in", "fan_out"] = "fan_out") -> None:
    """In place, He initialisation of every layer under ``modules`` (He, Zhang, Ren, Sun, "Delving Deep into
    Rectifiers", ICCV 2015), the way torchvision initialises VGG:

    - ``Conv2d`` and ``ConvTranspose2d``: weights from N(0, 2 / fan), biases zero. ``mode="fan_out"`` (torchvision's
      VGG, SegNet's and DeconvNet's decoders): fan = out_channels / groups * kernel area; ``mode="fan_in"`` (U-Net,
      Ronneberger et al., MICCAI 2015, sec. 3: standard deviation sqrt(2 / N), N the incoming nodes): fan =
      in_channels / groups * kernel area. Both keep the activations' scale through ReLU layers. A transposed
      convolution's weight is laid out (in, out, kh, kw), so there the fan of the equivalent convolution is the
      other one of PyTorch's two.
    - ``BatchNorm2d``: weight 1, bias 0, running statistics reset (mean 0, variance 1).
    - ``Linear``: weights from N(0, 0.01), biases zero (torchvision's VGG classifier).

    The layers are visited in ``modules()`` order, so a seeded run draws the same numbers as before.
    """
    swapped = {"fan_in": "fan_out", "fan_out": "fan_in"}[mode]
    for root in modules:
        for m in root.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(
                    m.weight, mode=swapped if isinstance(m, nn.ConvTranspose2d) else mode, nonlinearity="relu"
                )
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
                m.reset_running_stats()
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)
