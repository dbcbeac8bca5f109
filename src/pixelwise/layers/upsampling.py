"""Learnable and fixed upsampling: transposed convolution, its two equivalent views, and unpooling.

Transposed convolution three ways, as the lecture notes present it (Dumoulin & Visin, "A guide to
convolution arithmetic for deep learning", arXiv:1603.07285, 2016):

* ``F.conv_transpose2d`` — each input pixel scales the kernel, copies are summed at stride ``s`` in the output;
* :func:`fractionally_strided_conv2d` — zeros between input pixels, then an ordinary stride-1 convolution;
* :func:`conv_matrix_1d` — convolution is a matrix ``X``; its transpose ``X.T`` is the transposed convolution.

With the bilinear kernel of :func:`bilinear_kernel` the transposed convolution *is* bilinear interpolation
(FCN: Long, Shelhamer & Darrell, CVPR 2015). Unpooling (nearest, bed of nails, max-unpooling as in SegNet:
Badrinarayanan, Kendall & Cipolla, TPAMI 2017) is the parameter-free alternative.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


def bilinear_kernel(kernel_size: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """FCN's bilinear upsampling filter (Long, Shelhamer & Darrell, CVPR 2015; Caffe's ``upsample_filt``).

    ``factor = (k + 1) // 2``; ``center = factor - 1`` for odd k, ``factor - 0.5`` for even k;
    ``w[i, j] = (1 - |i - center| / factor) * (1 - |j - center| / factor)``.
    k=3 gives ``[[.25, .5, .25], [.5, 1, .5], [.25, .5, .25]]``; k=4 the outer product of ``[.25, .75, .75, .25]``.

    Returns:
        Tensor (k, k) of ``dtype``.

    Raises:
        ValueError: ``kernel_size`` < 1.
    """
    if kernel_size < 1:
        raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    # Build in float64 so the ramp is exact before the final cast.
    ramp = 1 - (torch.arange(kernel_size, dtype=torch.float64) - center).abs() / factor
    return torch.outer(ramp, ramp).to(dtype)


def bilinear_conv_transpose2d(channels: int, scale_factor: int, learnable: bool = True) -> nn.ConvTranspose2d:
    """A ``ConvTranspose2d`` initialised to bilinear upsampling by ``scale_factor`` (FCN, CVPR 2015).

    FCN convention: kernel ``2s - s % 2``, stride ``s``, padding ``s // 2``, so an (N, C, H, W) input becomes
    exactly (N, C, s·H, s·W). The weight (C, C, k, k) is diagonal — ``weight[c, c]`` is :func:`bilinear_kernel`,
    other entries zero — so each channel is upsampled on its own; no bias. Away from the borders the output equals
    ``F.interpolate(mode="bilinear", align_corners=False)``; at the borders it fades towards the implicit zero padding.

    Args:
        channels: C, the number of input and output channels.
        scale_factor: integer upsampling factor s.
        learnable: whether the weight receives gradients (FCN learned it; fixed is plain bilinear upsampling).

    Raises:
        ValueError: ``channels`` < 1 or ``scale_factor`` < 1.
    """
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    if scale_factor < 1:
        raise ValueError(f"scale_factor must be >= 1, got {scale_factor}")
    s = scale_factor
    k = 2 * s - s % 2
    layer = nn.ConvTranspose2d(channels, channels, k, stride=s, padding=s // 2, bias=False)
    with torch.no_grad():
        layer.weight.zero_()
        kernel = bilinear_kernel(k, dtype=layer.weight.dtype)
        for c in range(channels):
            layer.weight[c, c] = kernel
    layer.weight.requires_grad_(learnable)
    return layer


def fractionally_strided_conv2d(x: Tensor, weight: Tensor, stride: int, padding: int = 0) -> Tensor:
    """Transposed convolution computed as a "stride 1/s" convolution (Dumoulin & Visin, 2016).

    Insert ``stride - 1`` zeros between neighbouring input pixels, pad by ``k - 1 - padding`` on each side and run
    a stride-1 ``F.conv2d`` with the kernel flipped spatially and its in/out channels swapped. The result equals
    ``F.conv_transpose2d(x, weight, stride=stride, padding=padding)``.

    Args:
        x: float (N, C_in, H, W).
        weight: float (C_in, C_out, kh, kw), laid out as for ``F.conv_transpose2d``.
        stride: s >= 1.
        padding: p >= 0, the transposed convolution's padding.

    Returns:
        Tensor (N, C_out, (H-1)·s - 2p + kh, (W-1)·s - 2p + kw), dtype of ``x``.

    Raises:
        ValueError: wrong ranks, mismatched channel counts, ``stride`` < 1 or ``padding`` < 0.
    """
    if x.dim() != 4 or weight.dim() != 4:
        raise ValueError(
            f"expected x (N, C, H, W) and weight (C_in, C_out, kh, kw), got {tuple(x.shape)} and {tuple(weight.shape)}"
        )
    if x.shape[1] != weight.shape[0]:
        raise ValueError(f"x has {x.shape[1]} channels but weight expects C_in={weight.shape[0]}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    n, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    dilated = x.new_zeros(n, c, (h - 1) * stride + 1, (w - 1) * stride + 1)
    dilated[..., ::stride, ::stride] = x
    # padding > k - 1 makes these negative, which F.pad treats as cropping — exactly what conv_transpose does.
    ph, pw = kh - 1 - padding, kw - 1 - padding
    dilated = F.pad(dilated, (pw, pw, ph, ph))
    # Scatter (kernel copies pasted at each input pixel) read as a gather means the kernel is seen mirrored.
    return F.conv2d(dilated, weight.flip(-2, -1).transpose(0, 1))


def conv_matrix_1d(kernel: Tensor, input_length: int, stride: int = 1, padding: int = 0) -> Tensor:
    """The matrix X of a 1-D convolution: ``X @ a == F.conv1d(a, kernel, stride=stride, padding=padding)``.

    Cross-correlation, as PyTorch computes it; zero padding is folded into X, so X acts on the unpadded input
    (lecture notes, "Convolution as matrix multiplication (1D example)"). Row o holds the kernel starting at
    column ``o·stride - padding``; columns that fall into the padding are dropped.

    Args:
        kernel: (k,) float.
        input_length: L, the length of ``a``.

    Returns:
        Tensor (out_len, L) with ``out_len = (L + 2·padding - k) // stride + 1``, dtype of ``kernel``.

    Raises:
        ValueError: kernel not 1-D, ``stride`` < 1, ``padding`` < 0, or no output position fits.
    """
    if kernel.dim() != 1:
        raise ValueError(f"kernel must be 1-D (k,), got shape {tuple(kernel.shape)}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    k = kernel.shape[0]
    out_len = (input_length + 2 * padding - k) // stride + 1
    if input_length < 1 or out_len < 1:
        raise ValueError(f"kernel of size {k} does not fit input_length={input_length} with padding={padding}")
    X = kernel.new_zeros(out_len, input_length)
    for o in range(out_len):
        for t in range(k):
            j = o * stride - padding + t
            if 0 <= j < input_length:
                X[o, j] = kernel[t]
    return X


def conv_transpose_via_matrix(
    y: Tensor, kernel: Tensor, output_length: int, stride: int = 1, padding: int = 0
) -> Tensor:
    """Transposed 1-D convolution as ``X.T @ y``, X being :func:`conv_matrix_1d` for inputs of ``output_length``.

    Equals ``F.conv_transpose1d(y, kernel, stride, padding, output_padding=op)`` with
    ``op = output_length - ((len(y) - 1)·stride - 2·padding + k)``: the transpose recovers the length the forward
    convolution started from, which a bare ``conv_transpose1d`` can only guess (several lengths map to len(y)).

    Args:
        y: (out_len,) float, ``out_len`` the forward convolution's output length.

    Returns:
        Tensor (output_length,).

    Raises:
        ValueError: as :func:`conv_matrix_1d`, or ``y`` does not have that matrix's row count.
    """
    X = conv_matrix_1d(kernel, output_length, stride, padding)
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape ({X.shape[0]},) for output_length={output_length}, got {tuple(y.shape)}")
    return X.T @ y


def _check_unpool_args(x: Tensor, scale: int) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected x of shape (N, C, H, W), got {tuple(x.shape)}")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")


def unpool_nearest(x: Tensor, scale: int = 2) -> Tensor:
    """Nearest-neighbour unpooling: each value fills a ``scale × scale`` block (lecture notes, CS231n 2024 L11).

    Args:
        x: float (N, C, H, W).

    Returns:
        Tensor (N, C, scale·H, scale·W), dtype of ``x``.

    Raises:
        ValueError: ``x`` is not 4-D or ``scale`` < 1.
    """
    _check_unpool_args(x, scale)
    return x.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)


def unpool_bed_of_nails(x: Tensor, scale: int = 2) -> Tensor:
    """"Bed of nails" unpooling: each value at the top-left of its ``scale × scale`` block, zeros elsewhere
    (lecture notes, CS231n 2024 L11).

    Args:
        x: float (N, C, H, W).

    Returns:
        Tensor (N, C, scale·H, scale·W), dtype of ``x``.

    Raises:
        ValueError: ``x`` is not 4-D or ``scale`` < 1.
    """
    _check_unpool_args(x, scale)
    n, c, h, w = x.shape
    out = x.new_zeros(n, c, h * scale, w * scale)
    out[..., ::scale, ::scale] = x
    return out


def max_unpool2d(
    x: Tensor,
    indices: Tensor,
    kernel_size: int = 2,
    stride: int = 2,
    output_size: list[int] | tuple[int, ...] | None = None,
) -> Tensor:
    """Max-unpooling: each value returns to the position its max-pool took it from, zeros elsewhere.

    SegNet's decoder (Badrinarayanan, Kendall & Cipolla, TPAMI 2017): the encoder's
    ``nn.MaxPool2d(kernel_size, stride, return_indices=True)`` remembers where each max came from, so the decoder
    restores boundaries without learning anything. Thin wrapper of ``F.max_unpool2d``.

    Args:
        x: float (N, C, h, w), the pooled map (or a decoder map of the same shape).
        indices: int64 (N, C, h, w), the flat per-plane argmax indices from the matching max-pool.
        output_size: the pre-pooling (H, W) (or full shape); needed when H or W was odd.

    Returns:
        Tensor (N, C, H, W), by default H = (h-1)·stride + kernel_size.

    Raises:
        ValueError: ``x`` and ``indices`` differ in shape, or ``x`` is not 4-D.
    """
    if x.dim() != 4 or x.shape != indices.shape:
        raise ValueError(
            f"x and indices must share a (N, C, h, w) shape, got {tuple(x.shape)} and {tuple(indices.shape)}"
        )
    return F.max_unpool2d(x, indices, kernel_size, stride=stride, output_size=output_size)
