"""Whole-image inference and evaluation."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from pixelwise.engine.checkpoint import load_checkpoint
from pixelwise.metrics import SegmentationMetrics
from pixelwise.models import build_model


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.no_grad()
def infer_logits(
    model: nn.Module, images: torch.Tensor, input_scale: float = 1.0, out_size: Sequence[int] | None = None
) -> torch.Tensor:
    """Logits for a batch of normalised images.

    Args:
        images: float (N, C, H, W), normalised.
        input_scale: the model sees the images resized by this factor (bilinear, antialiased when shrinking).
        out_size: (H', W') of the returned logits; default (H, W). Logits are resized bilinearly, before any argmax,
            so labels are compared at their own resolution.

    Returns:
        float (N, K, H', W') logits.
    """
    size = tuple(images.shape[-2:]) if out_size is None else tuple(out_size)
    x = images
    if input_scale != 1.0:
        h, w = images.shape[-2:]
        scaled = (max(1, round(h * input_scale)), max(1, round(w * input_scale)))
        x = F.interpolate(images, size=scaled, mode="bilinear", align_corners=False, antialias=input_scale < 1)
    logits = model(x)
    if tuple(logits.shape[-2:]) != size:
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return logits


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
) -> dict[str, Any]:
    """Run ``model`` over ``loader`` (batches of ``(images (N,C,H,W) float, masks (N,H,W) int64)``) and return
    :meth:`SegmentationMetrics.compute` of the whole split. The model is left in eval mode.

    ``amp_dtype`` (``torch.bfloat16`` or ``torch.float16``) runs the model under autocast; ``channels_last`` hands
    it NHWC batches. In a multi-process run each rank passes its shard and the confusion matrices are summed."""
    model.eval()
    device = torch.device(device)
    metrics = SegmentationMetrics(num_classes, ignore_index=ignore_index)
    for images, masks in tqdm(loader, desc="eval", leave=False, disable=not progress):
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        masks = masks.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = infer_logits(model, images, input_scale, out_size=masks.shape[-2:])
        metrics.update(logits.argmax(1), masks)
    metrics.all_reduce()
    return metrics.compute()


def model_from_checkpoint(path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Build the model a checkpoint describes, load its weights, move it to ``device`` in eval mode.

    Returns ``(model, state)``; ``state`` holds the classes, palette, normalisation and ``input_scale``.
    Raises CheckpointError (see :func:`load_checkpoint`)."""
    state = load_checkpoint(path)
    model = build_model(
        state["model"], num_classes=state["num_classes"], in_channels=state["in_channels"], **state["model_kwargs"]
    )
    model.load_state_dict(state["model_state"])
    return model.to(device).eval(), state
