"""One inference pipeline for every consumer: ``predict``, ``eval``, ``serve``, ``export`` and the report.

    from pixelwise import Predictor

    predictor = Predictor.from_checkpoint("runs/unet_camvid/best.pt", mode="slide", tta=True)
    image = predictor.read("street.png")          # uint8 (C, H, W) in the checkpoint's channel mode
    result = predictor(image)                      # SemanticResult
    result.class_ids[0]                            # int64 (H, W)
    result.color()                                 # uint8 (H, W, 3)

A :class:`Predictor` holds a model in eval mode and its :class:`~pixelwise.engine.checkpoint.ModelCard`, and owns
the recipe: normalise with the card's mean and std -> resize by its ``input_scale`` -> the model (whole image or
sliding window, with optional multi-scale + flip test-time augmentation) -> resize the scores back to the image ->
argmax. Each task returns its own result type; for ``task == "semantic"`` that is :class:`SemanticResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
import torch.nn as nn
from torchvision.transforms import v2

from pixelwise.data.io import read_image
from pixelwise.data.transforms import eval_transforms
from pixelwise.engine.checkpoint import ModelCard, load_checkpoint
from pixelwise.engine.instance import InstanceResult, evaluate_instances
from pixelwise.errors import ConfigError
from pixelwise.engine.inference import TTA_SCALES, InferenceOptions, class_scores, evaluate, resolve_device
from pixelwise.viz import DEFAULT_ALPHA, colorize, overlay

if TYPE_CHECKING:
    from pixelwise.prompt.click_predictor import ClickPredictor

__all__ = ["Predictor", "SemanticResult", "inference_options"]


def inference_options(
    mode: str = "whole",
    crop: Sequence[int] | None = None,
    stride: Sequence[int] | None = None,
    tta: bool = False,
    scales: Sequence[float] | None = None,
    card: ModelCard | None = None,
) -> InferenceOptions:
    """:class:`InferenceOptions` from the command line's words: ``tta=True`` averages flips and the
    :data:`~pixelwise.engine.inference.TTA_SCALES` (or ``scales``); a slide without ``crop`` uses the training crop
    in ``card``.

    Raises:
        ConfigError: see :class:`InferenceOptions`.
    """
    if mode == "slide" and crop is None and card is not None:
        crop = card.crop_size
    scales = scales or (TTA_SCALES if tta else (1.0,))
    return InferenceOptions(mode, crop=tuple(crop) if crop else None, stride=tuple(stride) if stride else None,
                            scales=tuple(scales), flip=tta)


@dataclass
class SemanticResult:
    """What a :class:`Predictor` returns for a batch of N images of one size (task ``"semantic"``).

    Attributes:
        scores: float (N, K, H, W) at the images' size: logits, or, with test-time augmentation (or when asked
            for), softmax probabilities averaged over the augmented runs. ``scores.argmax(1)`` is the prediction.
        are_probs: whether ``scores`` already are probabilities.
        classes: K class names; palette: K ``(r, g, b)`` colors.
    """

    scores: torch.Tensor
    are_probs: bool
    classes: list[str]
    palette: list[tuple[int, int, int]]
    _ids: torch.Tensor | None = field(default=None, repr=False)

    @property
    def class_ids(self) -> torch.Tensor:
        """int64 (N, H, W) class ids: the argmax over K."""
        if self._ids is None:
            self._ids = self.scores.argmax(1)
        return self._ids

    @property
    def probs(self) -> torch.Tensor:
        """float32 (N, K, H, W) class probabilities, summing to 1 over K."""
        return self.scores.float() if self.are_probs else self.scores.float().softmax(1)

    def mask(self, i: int = 0) -> np.ndarray:
        """uint8 (H, W) class ids of image ``i`` (K <= 256), as the class-id PNGs store them."""
        return self.class_ids[i].to(torch.uint8).cpu().numpy()

    def color(self, i: int = 0) -> np.ndarray:
        """uint8 (H, W, 3): each pixel of image ``i`` in its class's color."""
        return colorize(self.mask(i), self.palette)

    def overlay(self, image: torch.Tensor | np.ndarray, i: int = 0, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
        """uint8 (H, W, 3): the color mask of image ``i`` blended over ``image`` (uint8 (C, H, W) or (H, W, C)) with
        weight ``alpha`` in [0, 1]."""
        return overlay(image, self.mask(i), self.palette, alpha=alpha)


class Predictor:
    """A model in eval mode with its :class:`ModelCard` and inference options.

    Args:
        model: the card's architecture with trained weights.
        card: how the model was trained (normalisation, ``input_scale``, classes, palette).
        device: where the model runs (``"auto"`` picks CUDA when available).
        options: whole image (default) or sliding window, and test-time augmentation.
        source: where the model came from (the checkpoint's path), for messages.

    Use :meth:`from_checkpoint` to build one from a ``pixelwise train`` checkpoint.
    """

    def __init__(self, model: nn.Module, card: ModelCard, device: str | torch.device = "auto",
                 options: InferenceOptions | None = None, source: str | Path | None = None) -> None:
        if card.task == "instance" and options is not None and options != InferenceOptions():
            raise ConfigError(f"{card.model} is an instance model: it runs on the whole image (no sliding windows or "
                              "test-time augmentation; it resizes images itself, model_kwargs.min_size)")
        self.card = card
        self.source = str(source) if source is not None else None
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.options = options or InferenceOptions()
        # An instance model normalises inside itself: it takes images in [0, 1].
        self.transform = (eval_transforms(card.mean, card.std) if card.task == "semantic"
                          else v2.ToDtype(torch.float32, scale=True))

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "auto",
        mode: str = "whole",
        crop: Sequence[int] | None = None,
        stride: Sequence[int] | None = None,
        tta: bool = False,
        scales: Sequence[float] | None = None,
    ) -> "Predictor | ClickPredictor":
        """Build the checkpoint's model with its weights.

        Args:
            path: a ``pixelwise train`` checkpoint (``best.pt``, ``last.pt``), of any format this pixelwise reads.
            mode: ``"whole"`` or ``"slide"`` (windows of ``crop`` (H, W) pixels every ``stride``; ``crop`` defaults
                to the training crop on the card).
            tta: average the softmax over left-right flips and the scales ``scales`` (default
                :data:`~pixelwise.engine.inference.TTA_SCALES`).

        Returns:
            A :class:`Predictor`; for a click model (task ``"prompt"``) a
            :class:`~pixelwise.prompt.click_predictor.ClickPredictor`, with SamPredictor's ``set_image`` /
            ``predict`` interface.

        Raises:
            CheckpointError: the checkpoint cannot be read or built. ConfigError: bad inference options.
        """
        checkpoint = load_checkpoint(path)
        if checkpoint.card.task == "prompt":
            from pixelwise.prompt.click_predictor import ClickPredictor

            if (mode, crop, stride, tta, scales) != ("whole", None, None, False, None):
                raise ConfigError(f"{checkpoint.card.model} is a click model: it runs on the whole image (no sliding "
                                  "windows or test-time augmentation)")
            return ClickPredictor(checkpoint.build_model(), checkpoint.card, device, source=path)
        options = inference_options(mode, crop, stride, tta, scales, checkpoint.card)
        return cls(checkpoint.build_model(), checkpoint.card, device, options, source=path)

    @property
    def task(self) -> str:
        return self.card.task

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    @property
    def palette(self) -> list[tuple[int, int, int]]:
        return self.card.palette_tuples

    def read(self, path: str | Path) -> torch.Tensor:
        """An image file as uint8 (C, H, W) in the card's channel mode (EXIF orientation applied). Raises
        DatasetError naming the file when it cannot be read."""
        return read_image(path, self.card.in_channels)

    def preprocess(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """uint8 (C, H, W), (N, C, H, W) or a list of same-size (C, H, W) images -> float32 (N, C, H, W) normalised
        with the card's mean and std, on the predictor's device."""
        if isinstance(images, torch.Tensor) and images.dim() == 3:
            images = images.unsqueeze(0)
        return torch.stack([self.transform(image) for image in images]).to(self.device)

    @torch.no_grad()
    def scores(self, x: torch.Tensor, out_size: Sequence[int] | None = None, probs: bool = False,
               options: InferenceOptions | None = None) -> torch.Tensor:
        """Per-class scores of normalised images: float (N, C, H, W) -> float (N, K, H', W') at ``out_size``
        (default (H, W)): logits, or averaged probabilities under test-time augmentation or with ``probs=True``.
        ``options`` overrides the predictor's own for this call."""
        return class_scores(self.model, x, self.card.input_scale, out_size, options or self.options, probs=probs)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor | Sequence[torch.Tensor],
                 probs: bool = False) -> SemanticResult | InstanceResult:
        """Segment uint8 images (C, H, W), (N, C, H, W) or a list of same-size (C, H, W) (an instance model also
        takes a list of images of different sizes).

        Returns:
            semantic: :class:`SemanticResult` at the images' size; ``probs=True`` asks for probabilities in
            ``scores``. instance: :class:`~pixelwise.engine.instance.InstanceResult`.
        """
        if self.card.task == "instance":
            if isinstance(images, torch.Tensor) and images.dim() == 3:
                images = [images]
            outputs = self.model([self.transform(image).to(self.device) for image in images])
            return InstanceResult.from_outputs(outputs, self.classes, self.card.category_ids)
        scores = self.scores(self.preprocess(images), probs=probs)
        are_probs = probs or self.options.augmented
        return SemanticResult(scores, are_probs, self.classes, self.palette)

    def evaluate(self, loader, progress: bool = False, amp_dtype: torch.dtype | None = None,
                 channels_last: bool = False, dataset=None, max_detections: int = 100) -> dict[str, Any]:
        """:func:`pixelwise.engine.inference.evaluate` with the card's classes, ignore_index and input_scale and
        the predictor's options; ``loader`` yields (normalised images, masks) (see :attr:`transform`). For an
        instance model, :func:`~pixelwise.engine.instance.evaluate_instances` against ``dataset``'s COCO ground
        truth, at most ``max_detections`` per image."""
        if self.card.task == "instance":
            return evaluate_instances(self.model, loader, dataset, self.device, progress, amp_dtype, max_detections)
        return evaluate(self.model, loader, self.card.num_classes, self.card.ignore_index, self.card.input_scale,
                        self.device, progress=progress, amp_dtype=amp_dtype, channels_last=channels_last,
                        test_time=self.options)
