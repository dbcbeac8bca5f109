"""FCN "convolutionalization": a fully-connected layer is a convolution whose kernel covers its whole input.

Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015: VGG-16's
``fc6`` (512·7·7 → 4096) becomes a 7×7 conv and ``fc7``/``fc8`` 1×1 convs, so the classifier slides over inputs
of any size and yields a coarse score map instead of one vector.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


class GemmConv2d(nn.Conv2d):
    """``nn.Conv2d`` that, when training on the CPU, runs as im2col + one matrix multiplication.

    The same module as ``nn.Conv2d`` in every other respect (arguments, parameters, state_dict keys, initialisation,
    results to float rounding); the lectures' "convolution as matrix multiplication" made the compute path. The
    im2col path is taken when the input is a 4-D CPU tensor, autograd will need a gradient, ``groups == 1``,
    padding is numeric and ``padding_mode == "zeros"``; otherwise ``nn.Conv2d.forward`` runs (so CUDA, inference and
    export use the backend's convolution).

    Why: a convolutionalized VGG-16 fc6 (7x7, 512 -> 4096 channels, a 103M-element weight) hits a slow path in
    oneDNN's backward on small maps. Measured with torch 2.14.1 on 2 AMD EPYC cores, batch 8: on FCN's 4x5 pool5
    (160x120 images) the backward takes 38.6 s with ``nn.Conv2d`` and 0.6 s here; dilated by 4 on the 15x20 map of
    Yu & Koltun's front-end it did not finish in 5 minutes, and takes 7.4 s here. 512 -> 2048 channels and 3x3
    kernels do not show the slow path. The cost is memory: autograd keeps the (C·kh·kw) x (N·H_out·W_out) column
    matrix, 4 bytes per element in float32 (0.24 GB for that dilated fc6).

    The matrix product reads the weight in its own memory order: NCHW as a (C_out, C·kh·kw) view, or, after
    ``model.to(memory_format=torch.channels_last)``, as a (C_out, kh·kw·C) view, with the (much smaller) column matrix
    reordered to match. Flattening a channels_last weight instead would copy all of it on every step (fc6: 411 MB),
    and its gradient would be copied back into the weight's layout.

    Input (N, C_in, H, W) floating point; output (N, C_out, H_out, W_out) with ``nn.Conv2d``'s sizes and dtype.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self._gemm_applies(x):
            return super().forward(x)
        n, _, height, width = x.shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        h_out = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        w_out = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        if h_out < 1 or w_out < 1:
            return super().forward(x)  # nn.Conv2d raises its own error for a kernel larger than the padded input
        cols = F.unfold(x, (kh, kw), dilation=(dh, dw), padding=(ph, pw), stride=(sh, sw))  # N, C·kh·kw, L
        weight = self.weight
        if not weight.is_contiguous() and weight.is_contiguous(memory_format=torch.channels_last):
            # Memory order (C_out, kh, kw, C): a view as (C_out, kh·kw·C); the columns go to that order instead.
            weight = weight.permute(0, 2, 3, 1)
            cols = cols.unflatten(1, (-1, kh * kw)).transpose(1, 2)  # N, kh·kw, C, L
        # One (C_out, K) @ (K, N·L) product: the weight gradient is then a single (C_out, K) matrix, where a
        # batched matmul would materialise one per image before summing.
        cols = cols.movedim(0, -2).reshape(weight[0].numel(), -1)
        out = weight.flatten(1) @ cols
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)[:, None]
        return out.view(-1, n, h_out, w_out).transpose(0, 1).contiguous()

    def _gemm_applies(self, x: Tensor) -> bool:
        return (
            x.dim() == 4
            and x.device.type == "cpu"
            and torch.is_grad_enabled()
            and (x.requires_grad or self.weight.requires_grad)
            and self.groups == 1
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
        )


def linear_to_conv2d(linear: nn.Linear, in_channels: int, kernel_size: int | tuple[int, int]) -> GemmConv2d:
    """Turn ``linear`` (over a flattened C×kh×kw input) into an equivalent ``Conv2d(C, out, (kh, kw))``.

    The result is a :class:`GemmConv2d`, an ``nn.Conv2d`` subclass that trains fast on the CPU with the huge weights
    such layers have.

    The conv weight is ``linear.weight.view(out, C, kh, kw)`` — the row-major order in which ``flatten`` lays out a
    (C, kh, kw) block — and the bias is copied (absent if the linear layer has none). On a (N, C, kh, kw) input the
    conv returns (N, out, 1, 1) equal to ``linear(x.flatten(1))``; on larger inputs it applies the linear layer at
    every kh×kw window. Same device and dtype as ``linear``; the new parameters are copies, not views.

    Raises:
        ValueError: ``in_channels`` or the kernel size is < 1, or ``linear.in_features != C·kh·kw``.
    """
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    if in_channels < 1 or kh < 1 or kw < 1:
        raise ValueError(f"in_channels and kernel_size must be >= 1, got {in_channels} and {(kh, kw)}")
    if linear.in_features != in_channels * kh * kw:
        raise ValueError(
            f"Linear has in_features={linear.in_features}, but in_channels·kh·kw = "
            f"{in_channels}·{kh}·{kw} = {in_channels * kh * kw}"
        )
    conv = GemmConv2d(
        in_channels,
        linear.out_features,
        (kh, kw),
        bias=linear.bias is not None,
        device=linear.weight.device,
        dtype=linear.weight.dtype,
    )
    with torch.no_grad():
        conv.weight.copy_(linear.weight.view(linear.out_features, in_channels, kh, kw))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv
