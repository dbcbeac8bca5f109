"""Pixel-wise losses.

Cross-entropy summed over pixels is the loss of every model in the canon (FCN, SegNet, U-Net, DeepLab): the
negative log-likelihood of each pixel's true class under the per-pixel softmax of the logits, averaged over the
pixels that are not ``ignore_index``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def median_frequency_weights(class_pixels: Sequence[int], image_pixels: Sequence[int]) -> torch.Tensor:
    """Median-frequency class balancing (Eigen & Fergus, ICCV 2015), as SegNet used on CamVid.

    ``freq(c) = class_pixels[c] / image_pixels[c]``, the share of class c in the images where c is present;
    ``weight(c) = median(freq) / freq(c)``. Rare classes get weights above 1, common ones below.

    Args:
        class_pixels: (K,) pixel count of each class over the training masks (void excluded).
        image_pixels: (K,) total pixel count of the training images that contain class c.

    Returns:
        float32 tensor (K,). A class that never occurs gets weight 0 (it cannot be learned; with weight 1 it
        would still be pushed down by every other pixel's softmax).

    Raises:
        ValueError: the two counts differ in length, or no class occurs at all.
    """
    cp = np.asarray(class_pixels, dtype=np.float64)
    ip = np.asarray(image_pixels, dtype=np.float64)
    if cp.shape != ip.shape:
        raise ValueError(f"class_pixels {cp.shape} and image_pixels {ip.shape} differ in length")
    present = cp > 0
    if not present.any():
        raise ValueError("no class occurs in the training masks: cannot compute median-frequency weights")
    freq = np.zeros_like(cp)
    freq[present] = cp[present] / ip[present]
    weights = np.zeros_like(cp)
    weights[present] = np.median(freq[present]) / freq[present]
    return torch.tensor(weights, dtype=torch.float32)


class CrossEntropyLoss(nn.Module):
    """Pixel-wise cross-entropy with ``ignore_index`` and optional class weights.

    Args:
        ignore_index: target value whose pixels contribute nothing (255, void).
        class_weights: optional (K,) float weights; the mean is then weighted, as in ``F.cross_entropy``.

    ``forward(logits, target)``: logits float (N, K, H, W), target int64 (N, H, W) → scalar float. A batch whose
    every pixel is void gives 0 with a gradient of 0 (``F.cross_entropy`` would give NaN and poison the weights).
    """

    def __init__(self, ignore_index: int = 255, class_weights: torch.Tensor | Sequence[float] | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        w = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", w)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match")
        if not (target != self.ignore_index).any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits, target, weight=self.class_weights, ignore_index=self.ignore_index)
