"""Building blocks the lecture notes work through by hand: upsampling, convolutionalization, receptive fields; and
the conv-BN-ReLU blocks and initialisation the models share (:mod:`pixelwise.layers.blocks`)."""

from __future__ import annotations

from pixelwise.layers.aspp import ASPP
from pixelwise.layers.blocks import atrous_block, conv_bn_relu, deconv_bn_relu, he_init_, separable_conv_bn_relu
from pixelwise.layers.context import ContextModule
from pixelwise.layers.convolutionalize import GemmConv2d, linear_to_conv2d
from pixelwise.layers.receptive_field import receptive_field, stacked_3x3
from pixelwise.layers.upsampling import (
    bilinear_conv_transpose2d,
    bilinear_kernel,
    conv_matrix_1d,
    conv_transpose_via_matrix,
    fractionally_strided_conv2d,
    max_unpool2d,
    unpool_bed_of_nails,
    unpool_nearest,
)

__all__ = [
    "ASPP",
    "ContextModule",
    "GemmConv2d",
    "atrous_block",
    "bilinear_conv_transpose2d",
    "bilinear_kernel",
    "conv_bn_relu",
    "conv_matrix_1d",
    "conv_transpose_via_matrix",
    "deconv_bn_relu",
    "fractionally_strided_conv2d",
    "he_init_",
    "linear_to_conv2d",
    "max_unpool2d",
    "receptive_field",
    "separable_conv_bn_relu",
    "stacked_3x3",
    "unpool_bed_of_nails",
    "unpool_nearest",
]
