"""Interactive prediction with a click model that pixelwise trained (task ``"prompt"``), with the interface of
:class:`~pixelwise.prompt.sam_predictor.SamPredictor`, so a command or a web page drives SAM and a click model alike::

    predictor = Predictor.from_checkpoint("runs/click/best.pt")      # a ClickPredictor for a prompt checkpoint
    predictor.set_image(image)                                        # uint8 (H, W, 3) or (C, H, W)
    masks, scores, logits = predictor.predict(point_coords=[[120, 80]], point_labels=[1])
    masks, scores, logits = predictor.predict(point_coords=[[120, 80], [40, 60]], point_labels=[1, 0],
                                              mask_input=logits)      # the previous mask: RITM's mask guidance

A click model (Sofiiuk et al., RITM, ICIP 2022; :mod:`pixelwise.models.click`) sees the whole image at its own
resolution; each point becomes a disk of :data:`~pixelwise.prompt.click_training.CLICK_RADIUS` pixels, and
``mask_input``, the logits of an earlier call, its previous mask (their sigmoid).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pixelwise.data.io import read_image
from pixelwise.data.transforms import eval_transforms
from pixelwise.prompt.click_training import CLICK_RADIUS, MASK_THRESHOLD
from pixelwise.prompt.clicks import Click, click_maps

__all__ = ["ClickPredictor"]


class ClickPredictor:
    """A click model in eval mode with its :class:`~pixelwise.engine.checkpoint.ModelCard`.

    Args:
        model: a :class:`~pixelwise.models.click.ClickModel` with trained weights.
        card: its card (task ``"prompt"``: normalisation, channels).
        device: where the model runs (``"auto"``: CUDA when available).
        source: where the model came from (the checkpoint's path), for messages.

    Attributes:
        original_size: (H, W) of the image set, in pixels; None before :meth:`set_image`.
    """

    def __init__(self, model: nn.Module, card, device: str | torch.device = "auto",
                 source: str | Path | None = None) -> None:
        from pixelwise.engine.inference import resolve_device

        self.card = card
        self.source = str(source) if source is not None else None
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.transform = eval_transforms(card.mean, card.std)
        self.reset_image()

    @property
    def task(self) -> str:
        return self.card.task

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    def read(self, path: str | Path) -> torch.Tensor:
        """An image file as uint8 (C, H, W) in the card's channel mode. Raises DatasetError naming the file."""
        return read_image(path, self.card.in_channels)

    @property
    def is_image_set(self) -> bool:
        return self.image is not None

    def reset_image(self) -> None:
        """Forget the image."""
        self.image: torch.Tensor | None = None
        self.original_size: tuple[int, int] | None = None

    def set_image(self, image: np.ndarray | torch.Tensor) -> None:
        """Take ``image`` for the following :meth:`predict` calls.

        Args:
            image: uint8, a numpy array (H, W, C) or (H, W) or a tensor (C, H, W), C the card's ``in_channels``.

        Raises:
            ValueError: not uint8, of another channel count or layout, or empty.
        """
        channels = self.card.in_channels
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim not in (2, 3):
                raise ValueError(f"a numpy image must be uint8 (H, W, {channels}), got {image.dtype} {image.shape}")
            tensor = torch.from_numpy(np.ascontiguousarray(image[..., None] if image.ndim == 2 else image))
            tensor = tensor.permute(2, 0, 1)
        elif isinstance(image, torch.Tensor):
            if image.dtype != torch.uint8 or image.ndim not in (2, 3):
                raise ValueError(f"a tensor image must be uint8 ({channels}, H, W), got {image.dtype} "
                                 f"{tuple(image.shape)}")
            tensor = image[None] if image.ndim == 2 else image
        else:
            raise ValueError(f"the image must be a uint8 numpy array (H, W, C) or tensor (C, H, W), got "
                             f"{type(image).__name__}")
        if tensor.shape[0] != channels:
            raise ValueError(f"the model takes {channels}-channel images, got {tensor.shape[0]} channels "
                             f"(shape {tuple(image.shape)})")
        if tensor.shape[1] == 0 or tensor.shape[2] == 0:
            raise ValueError(f"the image is empty ({tensor.shape[1]}x{tensor.shape[2]} pixels)")
        self.image = self.transform(tensor.as_subclass(torch.Tensor)).to(self.device)
        self.original_size = (int(tensor.shape[1]), int(tensor.shape[2]))

    @torch.no_grad()
    def predict(self, point_coords: Any = None, point_labels: Any = None, box: Any = None, mask_input: Any = None,
                multimask_output: bool = False, return_logits: bool = False
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The object's mask from points, as :meth:`SamPredictor.predict <pixelwise.prompt.sam_predictor.
        SamPredictor.predict>`.

        Args:
            point_coords: (N, 2) xy pixel coordinates in the image, 0 <= x < W, 0 <= y < H (rounded to pixels).
            point_labels: (N,) 1 for a click on the object, 0 for one on the background.
            box: not supported by a click model (ValueError when given).
            mask_input: (1, H, W) float logits of an earlier call (its ``logits``), the previous mask; None: none.
            multimask_output: ignored: a click model returns one mask.
            return_logits: return the logits instead of the thresholded mask as ``masks``.

        Returns:
            masks: (1, H, W) bool (float32 logits with ``return_logits``).
            scores: (1,) float32, the mean probability of the mask's pixels (0 for an empty mask), a confidence.
            logits: (1, H, W) float32, to feed back as ``mask_input``.

        Raises:
            ValueError: no image set; a box; no points; points and labels of different counts, labels other than
                0 and 1, or a point outside the image; a ``mask_input`` of another shape.
        """
        if self.image is None or self.original_size is None:
            raise ValueError("no image is set: call set_image(image) before predict()")
        if box is not None:
            raise ValueError("a click model takes points only, not a box: give point_coords and point_labels")
        height, width = self.original_size
        if point_coords is None or point_labels is None:
            raise ValueError("a click model needs point_coords and point_labels (one label per point)")
        coords = np.asarray(point_coords, dtype=np.float64)
        labels = np.asarray(point_labels)
        if coords.ndim != 2 or coords.shape[1] != 2 or coords.shape[0] == 0:
            raise ValueError(f"point_coords must be (N, 2) xy pixel coordinates with N >= 1, got shape {coords.shape}")
        if labels.shape != (coords.shape[0],) or not np.isin(labels, (0, 1)).all():
            raise ValueError(f"point_labels must hold one label, 1 or 0, per point: {coords.shape[0]} points, got "
                             f"{labels.tolist()}")
        if not np.isfinite(coords).all():
            raise ValueError(f"point_coords has coordinates that are not finite: {coords.tolist()}")
        clicks = []
        for (x, y), label in zip(coords, labels):
            if not (0 <= x < width and 0 <= y < height):
                raise ValueError(f"point (x={x:g}, y={y:g}) is outside the {width}x{height} image: points need "
                                 f"0 <= x < {width} and 0 <= y < {height}")
            clicks.append(Click(min(int(round(y)), height - 1), min(int(round(x)), width - 1), bool(label == 1)))
        if mask_input is None:
            prev = self.image.new_zeros((1, 1, height, width))
        else:
            prev_logits = torch.as_tensor(np.asarray(mask_input.cpu() if isinstance(mask_input, torch.Tensor)
                                                     else mask_input, dtype=np.float32))
            if tuple(prev_logits.shape) != (1, height, width):
                raise ValueError(f"mask_input must be the logits of an earlier predict, shape (1, {height}, {width}), "
                                 f"got {tuple(prev_logits.shape)}")
            prev = torch.sigmoid(prev_logits)[None].to(self.device)
        maps = torch.from_numpy(click_maps(clicks, (height, width), CLICK_RADIUS))[None].to(self.device)
        logits = self.model(self.image[None], maps, prev)[0].float()  # (1, H, W)
        prob = torch.sigmoid(logits)
        mask = prob > MASK_THRESHOLD
        score = prob[mask].mean() if bool(mask.any()) else prob.new_zeros(())
        masks = logits if return_logits else mask
        return (masks.cpu().numpy(), score.reshape(1).cpu().numpy().astype(np.float32),
                logits.cpu().numpy().astype(np.float32))
