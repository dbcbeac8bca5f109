"""The naive baseline: label every pixel by classifying the patch around it, one patch at a time.

The lecture notes' "first (naive) idea: classify pixels using sliding windows" (CS231n 2024, Lecture 11), after the
patch-based scene labellers of Farabet, Couprie, Najman & LeCun ("Learning Hierarchical Features for Scene
Labeling", TPAMI 2013), Pinheiro & Collobert ("Recurrent Convolutional Neural Networks for Scene Labeling", ICML
2014) and Ciresan, Giusti, Gambardella & Schmidhuber ("Deep Neural Networks Segment Neuronal Membranes in Electron
Microscopy Images", NIPS 2012). The classifier here is a deliberately small CNN; the point is the scheme.

Why it is slow: neighbouring patches overlap in all but one row or column, yet each is classified on its own, so
every convolution is recomputed for each input pixel once per patch that contains it. Why it is weak: each pixel's
label is decided from its patch alone, so no decision can use context beyond ``patch_size // 2`` pixels or agree
with its neighbours' decisions.

The remedy for the first problem is the lecture's next slide, "convolution": run the same network once over the whole
image. Because the classifier's convolutions are unpadded and its poolings tile the patch exactly, the dense form
(``dense=True``) computes every patch's logits in one pass and gives the same numbers as the sliding window, up to
float rounding: each stride-2 layer becomes stride 1 and the layers after it are dilated by 2 (Giusti, Ciresan,
Masci, Gambardella & Schmidhuber, "Fast Image Scanning with Deep Max-Pooling Convolutional Neural Networks", ICIP
2013; the "filter rarefaction" of FCN, Long, Shelhamer & Darrell, CVPR 2015, and the atrous trick of DeepLab), and
the fully connected layers become dilated convolutions (FCN's convolutionalization).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.models.common import check_images
from pixelwise.models.registry import register_model

__all__ = ["PatchClassifier"]


@register_model(
    "patch_classifier",
    paper="Farabet, Couprie, Najman, LeCun. Learning Hierarchical Features for Scene Labeling. TPAMI 2013 "
    "(sliding-window baseline of the lecture notes)",
    description="Naive baseline: a small CNN classifies the patch around each pixel, every patch on its own "
    "(dense=True: the same network convolutionalized, one pass).",
)
class PatchClassifier(nn.Module):
    """Sliding-window segmentation: a small CNN classifies the ``patch_size``² patch centred on each pixel.

    The image is zero-padded by ``r = patch_size // 2`` so that border pixels get a full patch. Sliding form (the
    default): every pixel's patch is cut out with ``F.unfold`` and the batch of patches (N·H·W, C, p, p) goes
    through :attr:`classifier`, giving (N·H·W, K) scores laid back out as (N, K, H, W); patches are classified
    ``chunk_pixels`` at a time so that memory does not grow with the image (all patches of a 360x480 RGB image at
    p = 17 would take 600 MB). Dense form (``dense=True``, same parameters): one pass of the convolutionalized
    classifier over the padded image, equal to the sliding form up to float rounding and about 13x fewer FLOPs at
    p = 17. Either way the output at (i, j) depends only on the input pixels within ``r`` of (i, j), and on all of
    them.

    Classifier for a patch of side p: conv 3x3 (C -> 32, unpadded) + ReLU, max-pool 3x3 stride 2, conv 3x3
    (32 -> 64, unpadded) + ReLU, max-pool 3x3 stride 2, flatten (64·s·s with s = (p - 9) / 4), linear -> 128 + ReLU,
    linear 128 -> K. With p = 4k + 1 each layer's windows tile its input with nothing left over (p = 17: 17 -> 15 ->
    7 -> 5 -> 2), which is what makes the dense form exact.

    Args:
        num_classes: K, number of classes.
        in_channels: C, channels of the input images.
        patch_size: side p of the square patch: 13, 17, 21, ... (p = 4k + 1 with k >= 3), odd so that it has a
            centre pixel.
        chunk_pixels: sliding form only: how many patches to classify at once (at least 1); only memory and speed
            depend on it.
        dense: compute the logits with the convolutionalized classifier in one pass instead of patch by patch.
            May be switched at any time; the parameters and state_dict are the same.

    Attributes:
        num_classes, in_channels, patch_size, chunk_pixels, dense: as given.
        classifier: the patch classifier, (M, C, p, p) -> (M, K).

    Raises:
        ValueError: ``num_classes``, ``in_channels`` or ``chunk_pixels`` below 1, or ``patch_size`` not 4k + 1 with
            k >= 3.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        patch_size: int = 17,
        chunk_pixels: int = 16384,
        dense: bool = False,
    ) -> None:
        super().__init__()
        for arg, value in (("num_classes", num_classes), ("in_channels", in_channels), ("chunk_pixels", chunk_pixels)):
            if value < 1:
                raise ValueError(f"{arg} must be >= 1, got {value}")
        if patch_size < 13 or patch_size % 4 != 1:
            raise ValueError(
                f"patch_size must be 13, 17, 21, ... (4k + 1, k >= 3) so that the classifier's poolings tile the "
                f"patch exactly, got {patch_size}"
            )
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.chunk_pixels = chunk_pixels
        self.dense = dense

        self._cells = (patch_size - 9) // 4  # side of the second pooling's output
        self.classifier = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2),
            nn.Conv2d(32, 64, kernel_size=3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2),
            nn.Flatten(),
            nn.Linear(64 * self._cells**2, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel class logits, by the dense form if :attr:`dense` is set, else patch by patch.

        Args:
            x: images, (N, in_channels, H, W), floating point, any H and W >= 1.

        Returns:
            Logits (N, num_classes, H, W) with the dtype of ``x``; no softmax applied.

        Raises:
            ValueError: if ``x`` is not 4-D, not floating point, or has the wrong number of channels.
        """
        check_images(x, self.in_channels)
        return self.forward_dense(x) if self.dense else self.forward_sliding(x)

    def forward_sliding(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, K, H, W) of ``x`` (N, C, H, W), classifying the patch around each pixel on its own."""
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

    def forward_dense(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, K, H, W) of ``x`` (N, C, H, W), every patch at once with the convolutionalized classifier.

        Patch (i, j) of the padded image starts at (i, j); a layer that the patch classifier applies with stride 2
        is applied here with stride 1, so the features of every patch offset are kept, and the layers after it take
        every second position, i.e. are dilated by 2 (by 4 after both poolings). The linear layers become a
        s x s convolution dilated by 4 and a 1x1 convolution.
        """
        conv1, conv2, fc1, fc2 = (self.classifier[i] for i in (0, 3, 7, 9))
        r, s = self.patch_size // 2, self._cells
        y = F.pad(x, (r, r, r, r))
        y = F.relu(F.conv2d(y, conv1.weight, conv1.bias))
        y = F.max_pool2d(y, 3, stride=1)
        y = F.relu(F.conv2d(y, conv2.weight, conv2.bias, dilation=2))
        y = F.max_pool2d(y, 3, stride=1, dilation=2)
        y = F.relu(F.conv2d(y, fc1.weight.view(-1, conv2.out_channels, s, s), fc1.bias, dilation=4))
        return F.conv2d(y, fc2.weight[:, :, None, None], fc2.bias)

