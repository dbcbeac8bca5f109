"""Inference (whole image, sliding window, multi-scale + flip test-time augmentation) and evaluation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from pixelwise.errors import ConfigError
from pixelwise.metrics import SegmentationMetrics


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


#: The scales of multi-scale test-time augmentation with ``--tta`` (DeepLab's and MMSegmentation's set).
TTA_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


@dataclass(frozen=True)
class InferenceOptions:
    """How images become predictions at test time.

    ``mode="whole"`` runs the model once on the whole image. ``mode="slide"`` runs it on windows of ``crop``
    (H, W) pixels every ``stride`` (H, W) pixels, the last row and column of windows shifted to end at the border,
    and averages the logits of the windows that overlap at each pixel (MMSegmentation's ``slide_inference``); an
    image smaller than the crop is padded with zeros (the normalised mean color) and the padding cropped off.
    Sizes are in the pixels the model sees, after the checkpoint's ``input_scale``.

    ``scales`` and ``flip`` are test-time augmentation: the image is also run at each scale (bilinear) and
    mirrored left-right, and the softmax probabilities are averaged (Chen et al., "DeepLab", TPAMI 2018; Zhao et
    al., "PSPNet", CVPR 2017).

    Raises:
        ConfigError: an unknown mode, a slide without crop, a non-positive crop, stride or scale.
    """

    mode: str = "whole"
    crop: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("whole", "slide"):
            raise ConfigError(f"inference mode must be 'whole' or 'slide', got {self.mode!r}")
        if self.mode == "slide":
            if self.crop is None or len(self.crop) != 2 or min(self.crop) < 1:
                raise ConfigError(f"slide inference needs a crop of two positive sizes H W, got {self.crop!r}")
            stride = self.stride or tuple(max(1, math.ceil(c * 2 / 3)) for c in self.crop)
            if len(stride) != 2 or min(stride) < 1:
                raise ConfigError(f"slide stride must be two positive sizes H W, got {self.stride!r}")
            object.__setattr__(self, "crop", (int(self.crop[0]), int(self.crop[1])))
            object.__setattr__(self, "stride", (int(stride[0]), int(stride[1])))
        if not self.scales or min(self.scales) <= 0:
            raise ConfigError(f"test-time scales must be positive, got {self.scales!r}")
        object.__setattr__(self, "scales", tuple(float(x) for x in self.scales))

    @property
    def augmented(self) -> bool:
        return self.flip or self.scales != (1.0,)

    def describe(self) -> str:
        """E.g. ``"slide 512x512 / 341x341, scales 0.5-1.75, flip"``."""
        text = "whole image" if self.mode == "whole" else (
            f"slide {self.crop[0]}x{self.crop[1]} every {self.stride[0]}x{self.stride[1]}")
        if self.scales != (1.0,):
            text += ", scales " + "/".join(f"{x:g}" for x in self.scales)
        return text + (", flip" if self.flip else "")


def _window_starts(size: int, crop: int, stride: int) -> list[int]:
    if size <= crop:
        return [0]
    return sorted(set(range(0, size - crop, stride)) | {size - crop})


@torch.no_grad()
def slide_logits(model: nn.Module, images: torch.Tensor, crop: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    """Sliding-window logits (see :class:`InferenceOptions`): float (N, C, H, W) normalised images -> float
    (N, K, H, W)."""
    n, _, h, w = images.shape
    ch, cw = crop
    x = F.pad(images, (0, max(cw - w, 0), 0, max(ch - h, 0)))
    height, width = x.shape[-2:]
    total, count = None, x.new_zeros(1, 1, height, width)
    for top in _window_starts(height, ch, stride[0]):
        for left in _window_starts(width, cw, stride[1]):
            out = model(x[..., top : top + ch, left : left + cw])
            if tuple(out.shape[-2:]) != (ch, cw):
                out = F.interpolate(out, size=(ch, cw), mode="bilinear", align_corners=False)
            if total is None:
                total = out.new_zeros(n, out.shape[1], height, width)
            total[..., top : top + ch, left : left + cw] += out
            count[..., top : top + ch, left : left + cw] += 1
    return (total / count)[..., :h, :w]


@torch.no_grad()
def infer_logits(
    model: nn.Module,
    images: torch.Tensor,
    input_scale: float = 1.0,
    out_size: Sequence[int] | None = None,
    test_time: InferenceOptions | None = None,
) -> torch.Tensor:
    """Logits for a batch of normalised images, in ``test_time.mode`` (scales and flip are ignored here: see
    :func:`predict_probs`).

    Args:
        images: float (N, C, H, W), normalised.
        input_scale: the model sees the images resized by this factor (bilinear, antialiased when shrinking).
        out_size: (H', W') of the returned logits; default (H, W). Logits are resized bilinearly, before any argmax,
            so labels are compared at their own resolution.
        test_time: whole image (default) or sliding window.

    Returns:
        float (N, K, H', W') logits.
    """
    size = tuple(images.shape[-2:]) if out_size is None else tuple(out_size)
    x = images
    if input_scale != 1.0:
        h, w = images.shape[-2:]
        scaled = (max(1, round(h * input_scale)), max(1, round(w * input_scale)))
        x = F.interpolate(images, size=scaled, mode="bilinear", align_corners=False, antialias=input_scale < 1)
    if test_time is not None and test_time.mode == "slide":
        logits = slide_logits(model, x, test_time.crop, test_time.stride)
    else:
        logits = model(x)
    if tuple(logits.shape[-2:]) != size:
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return logits


@torch.no_grad()
def predict_probs(
    model: nn.Module,
    images: torch.Tensor,
    input_scale: float = 1.0,
    out_size: Sequence[int] | None = None,
    test_time: InferenceOptions | None = None,
) -> torch.Tensor:
    """Class probabilities: the softmax of :func:`infer_logits`, averaged over ``test_time.scales`` (each
    multiplying ``input_scale``) and, with ``test_time.flip``, over the left-right mirrored image (mirrored back).

    Args:
        images: float (N, C, H, W), normalised.

    Returns:
        float (N, K, H', W') probabilities summing to 1 over K, at ``out_size`` (default (H, W)).
    """
    test_time = test_time or InferenceOptions()
    size = tuple(images.shape[-2:]) if out_size is None else tuple(out_size)
    total, runs = None, 0
    for scale in test_time.scales:
        for flip in (False, True) if test_time.flip else (False,):
            x = images.flip(-1) if flip else images
            probs = infer_logits(model, x, input_scale * scale, size, test_time).float().softmax(1)
            probs = probs.flip(-1) if flip else probs
            total = probs if total is None else total + probs
            runs += 1
    return total / runs


def class_scores(
    model: nn.Module,
    images: torch.Tensor,
    input_scale: float = 1.0,
    out_size: Sequence[int] | None = None,
    test_time: InferenceOptions | None = None,
    probs: bool = False,
) -> torch.Tensor:
    """Per-class scores whose argmax over dim 1 is the prediction: the logits of :func:`infer_logits`, or, with
    test-time augmentation (or ``probs=True``), the averaged softmax probabilities of :func:`predict_probs`.

    Args:
        images: float (N, C, H, W), normalised.

    Returns:
        float (N, K, H', W'), at ``out_size`` (default (H, W)).
    """
    if probs or (test_time is not None and test_time.augmented):
        return predict_probs(model, images, input_scale, out_size, test_time)
    return infer_logits(model, images, input_scale, out_size, test_time)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    num_classes: int,
    ignore_index: int = 255,
    input_scale: float = 1.0,
    device: torch.device | str = "cpu",
    progress: bool = False,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    test_time: InferenceOptions | None = None,
) -> dict[str, Any]:
    """Run ``model`` over ``loader`` (batches of ``(images (N,C,H,W) float, masks (N,H,W) int64)``) and return
    :meth:`SegmentationMetrics.compute` of the whole split. The model is left in eval mode.

    ``amp_dtype`` (``torch.bfloat16`` or ``torch.float16``) runs the model under autocast; ``channels_last`` hands
    it NHWC batches; ``test_time`` sets sliding-window inference and test-time augmentation. In a multi-process
    run each rank passes its shard and the confusion matrices are summed."""
    model.eval()
    device = torch.device(device)
    metrics = SegmentationMetrics(num_classes, ignore_index=ignore_index)
    for images, masks in tqdm(loader, desc="eval", leave=False, disable=not progress):
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        masks = masks.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            scores = class_scores(model, images, input_scale, masks.shape[-2:], test_time)
        metrics.update(scores.argmax(1), masks)
    metrics.all_reduce()
    return metrics.compute()
