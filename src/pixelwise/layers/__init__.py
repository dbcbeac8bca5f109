"""Building blocks the lecture notes work through by hand: upsampling, convolutionalization, receptive fields."""

from __future__ import annotations

from pixelwise.layers.aspp import ASPP
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
    "bilinear_conv_transpose2d",
    "bilinear_kernel",
    "conv_matrix_1d",
    "conv_transpose_via_matrix",
    "fractionally_strided_conv2d",
    "linear_to_conv2d",
    "max_unpool2d",
    "receptive_field",
    "stacked_3x3",
    "unpool_bed_of_nails",
    "unpool_nearest",
]
