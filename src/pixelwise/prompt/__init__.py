"""Promptable segmentation: masks of the objects a user points at.

- :mod:`pixelwise.prompt.sam`: Segment Anything (Kirillov et al., "Segment Anything", ICCV 2023), the model,
  its ViT-B / L / H configurations and :func:`build_sam`, which loads Meta's released checkpoints.
- :mod:`pixelwise.prompt.sam_predictor`: :class:`SamPredictor`, one image encoding and many prompts (points, a box,
  an earlier mask).

>>> from pixelwise.prompt import SamPredictor, build_sam
>>> predictor = SamPredictor(build_sam("vit_b", checkpoint="sam_vit_b_01ec64.pth"))  # doctest: +SKIP
"""

from __future__ import annotations

from pixelwise.prompt.sam import SAM_VARIANTS, Sam, SamCheckpointError, SamConfig, build_sam
from pixelwise.prompt.sam_predictor import SamPredictor, resize_longest_side, resize_longest_side_shape

__all__ = [
    "SAM_VARIANTS",
    "Sam",
    "SamCheckpointError",
    "SamConfig",
    "SamPredictor",
    "build_sam",
    "resize_longest_side",
    "resize_longest_side_shape",
]
