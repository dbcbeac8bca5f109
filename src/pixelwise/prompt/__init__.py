"""Promptable segmentation: masks of the objects a user points at.

- :mod:`pixelwise.prompt.sam`: Segment Anything (Kirillov et al., "Segment Anything", ICCV 2023), the model,
  its ViT-B / L / H configurations and :func:`build_sam`, which loads Meta's released checkpoints.
- :mod:`pixelwise.prompt.sam_predictor`: :class:`SamPredictor`, one image encoding and many prompts (points, a box,
  an earlier mask).
- :mod:`pixelwise.prompt.clicks`: the click protocol of interactive segmentation (Xu et al., CVPR 2016; Sofiiuk et
  al., "RITM", ICIP 2022): the simulated user :func:`next_click`, :func:`click_maps`, :func:`run_clicks` and the
  NoC@85 / NoC@90 scores of :func:`noc_summary`.
- :mod:`pixelwise.prompt.baselines`: GrabCut and random-walker click models to run it on
  (``pip install 'pixelwise[prompt-baselines]'``).
- :mod:`pixelwise.prompt.click_training`: training click models that pixelwise builds
  (:mod:`pixelwise.models.click`, ``click_unet`` and co., task ``"prompt"``) with RITM's iterative protocol, and
  their evaluation by the click protocol; :mod:`pixelwise.prompt.click_predictor`: :class:`ClickPredictor`, such a
  model behind SamPredictor's ``set_image`` / ``predict`` (what ``Predictor.from_checkpoint`` returns for one).

>>> from pixelwise.prompt import SamPredictor, build_sam
>>> predictor = SamPredictor(build_sam("vit_b", checkpoint="sam_vit_b_01ec64.pth"))  # doctest: +SKIP
"""

from __future__ import annotations

from pixelwise.prompt.sam import SAM_VARIANTS, Sam, SamCheckpointError, SamConfig, build_sam
from pixelwise.prompt.sam_predictor import SamPredictor, resize_longest_side, resize_longest_side_shape
from pixelwise.prompt.clicks import (
    MIOU_AT_CLICKS,
    Click,
    click_maps,
    error_distances,
    iou,
    next_click,
    noc_summary,
    number_of_clicks,
    run_clicks,
)
from pixelwise.prompt.baselines import grabcut_segmenter, random_walker_segmenter

__all__ = [
    "SAM_VARIANTS",
    "Sam",
    "SamCheckpointError",
    "SamConfig",
    "SamPredictor",
    "build_sam",
    "resize_longest_side",
    "resize_longest_side_shape",
    # the click protocol (pixelwise.prompt.clicks) and its classical baselines (pixelwise.prompt.baselines)
    "MIOU_AT_CLICKS",
    "Click",
    "click_maps",
    "error_distances",
    "grabcut_segmenter",
    "iou",
    "next_click",
    "noc_summary",
    "number_of_clicks",
    "random_walker_segmenter",
    "run_clicks",
]
