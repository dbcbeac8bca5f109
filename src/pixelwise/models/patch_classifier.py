"""The naive baseline: label every pixel by classifying the patch around it, one patch at a time.

The lecture notes' "first (naive) idea: classify pixels using sliding windows" (CS231n 2024, Lecture 11), after the
patch-based scene labellers of Farabet, Couprie, Najman & LeCun ("Learning Hierarchical Features for Scene
Labeling", TPAMI 2013), Pinheiro & Collobert ("Recurrent Convolutional Neural Networks for Scene Labeling", ICML
2014) and Ciresan, Giusti, Gambardella & Schmidhuber ("Deep Neural Networks Segment Neuronal Membranes in Electron
Microscopy Images", NIPS 2012). The classifier here is a deliberately small CNN; the point is the scheme.

Why it is slow: neighbouring patches overlap in all but one row or column, yet each is classified on its own, so
the first convolution is recomputed for every input pixel about ``patch_size²`` times (once per patch that contains
it), and likewise for the layers above. Why it is weak: each pixel's label is decided from its patch alone, so no
decision can use context beyond ``patch_size // 2`` pixels or agree with its neighbours' decisions. FCN (Long,
Shelhamer & Darrell, CVPR 2015) removes the first problem by convolutionalization: the same network run once over
the whole image computes every patch's features in one pass, sharing the overlaps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.models.common import check_images
from pixelwise.models.registry import register_model

__all__ = ["PatchClassifier", "patch_classifier"]


class PatchClassifier(nn.Module):
    """Sliding-window segmentation: a small CNN classifies the ``patch_size``² patch centred on each pixel.

    The image is zero-padded by ``r = patch_size // 2`` so that border pixels get a full patch; every pixel's patch
    is cut out with ``F.unfold`` and the batch of patches (N·H·W, C, p, p) goes through :attr:`classifier`, giving
    (N·H·W, K) scores that are laid back out as (N, K, H, W). The output at (i, j) therefore depends only on the
    input pixels within ``r`` of (i, j). Patches are extracted and classified ``chunk_pixels`` at a time so that
    memory does not grow with the image (all patches of a 360x480 RGB image at p = 17 would take 600 MB).

    Classifier (for p = 17): conv 3x3 (C -> 32) + ReLU, max-pool 2, conv 3x3 (32 -> 64) + ReLU, max-pool 2,
    flatten (64·4·4), linear -> 128 + ReLU, linear 128 -> K. The convolutions are padded, so the flattened size is
    ``64 · ((p // 2) // 2)²``.

    Args:
        num_classes: K, number of classes.
        in_channels: C, channels of the input images.
        patch_size: side p of the square patch, odd (so it has a centre pixel) and at least 5 (so two poolings
            leave at least one cell).
        chunk_pixels: how many patches to classify at once (at least 1); only memory and speed depend on it.

    Attributes:
        num_classes, in_channels, patch_size, chunk_pixels: as given.
        classifier: the patch classifier, (M, C, p, p) -> (M, K).

    Raises:
        ValueError: ``num_classes``, ``in_channels`` or ``chunk_pixels`` below 1, or ``patch_size`` even or below 5.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, patch_size: int = 17, chunk_pixels: int = 16384) -> None:
        super().__init__()
        for arg, value in (("num_classes", num_classes), ("in_channels", in_channels), ("chunk_pixels", chunk_pixels)):
            if value < 1:
                raise ValueError(f"{arg} must be >= 1, got {value}")
        if patch_size < 5 or patch_size % 2 == 0:
            raise ValueError(f"patch_size must be odd and >= 5, got {patch_size}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.chunk_pixels = chunk_pixels

        pooled = (patch_size // 2) // 2
        self.classifier = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * pooled * pooled, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel class logits.

        Args:
            x: images, (N, in_channels, H, W), floating point, any H and W >= 1.

        Returns:
            Logits (N, num_classes, H, W) with the dtype of ``x``; no softmax applied.

        Raises:
            ValueError: if ``x`` is not 4-D, not floating point, or has the wrong number of channels.
        """
        check_images(x, self.in_channels)
        n, c, height, width = x.shape
        p, r = self.patch_size, self.patch_size // 2
        # Zeros beyond the border, as a 'same'-padded convolution would see them.
        padded = F.pad(x, (r, r, r, r))
        num_pixels = height * width
        # A chunk holds `chunk` pixels of every image in the batch.
        chunk = max(1, self.chunk_pixels // n)

        scores = []
        for start in range(0, num_pixels, chunk):
            stop = min(start + chunk, num_pixels)
            # Unfold only the image rows this chunk's pixels lie on (plus the r-pixel margins above and below).
            first_row, last_row = start // width, (stop - 1) // width
            rows = padded[:, :, first_row : last_row + 1 + 2 * r]
            patches = F.unfold(rows, kernel_size=p)  # (N, C·p·p, pixels on those rows), row-major
            offset = first_row * width
            patches = patches[:, :, start - offset : stop - offset]
            patches = patches.transpose(1, 2).reshape(-1, c, p, p)  # (N·L, C, p, p)
            scores.append(self.classifier(patches).view(n, stop - start, self.num_classes))

        logits = torch.cat(scores, dim=1)  # (N, H·W, K)
        return logits.transpose(1, 2).reshape(n, self.num_classes, height, width)


@register_model(
    "patch_classifier",
    paper="Farabet, Couprie, Najman, LeCun. Learning Hierarchical Features for Scene Labeling. TPAMI 2013 "
    "(sliding-window baseline of the lecture notes)",
    description="Naive baseline: a small CNN classifies the patch around each pixel, every patch on its own.",
)
def patch_classifier(
    num_classes: int,
    in_channels: int = 3,
    patch_size: int = 17,
    chunk_pixels: int = 16384,
) -> PatchClassifier:
    """Factory for :class:`PatchClassifier`; see there for the arguments."""
    return PatchClassifier(num_classes, in_channels, patch_size=patch_size, chunk_pixels=chunk_pixels)
