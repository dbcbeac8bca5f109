"""Interactive prediction with Segment Anything (Kirillov et al., "Segment Anything", ICCV 2023).

:class:`SamPredictor` runs the image encoder once per image and then answers any number of prompts (points, a box,
an earlier mask) with the light decoder. The image is resized so that its long side is the encoder's input size
(1024) with Pillow's bilinear filter, as Meta's predictor resizes it (``ResizeLongestSide``), and prompt
coordinates, given in pixels of the original image, are scaled by the same factors.

A click, then the same click refined by the best of its three masks (``image``: uint8 (H, W, 3) RGB)::

    predictor = SamPredictor(build_sam("vit_b", checkpoint="sam_vit_b_01ec64.pth"))
    predictor.set_image(image)
    masks, scores, logits = predictor.predict(point_coords=[[500, 375]], point_labels=[1])
    masks, scores, logits = predictor.predict(point_coords=[[500, 375]], point_labels=[1],
                                              mask_input=logits[scores.argmax()][None], multimask_output=False)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from pixelwise.prompt.sam import Sam

__all__ = ["SamPredictor", "resize_longest_side", "resize_longest_side_shape", "scale_coords"]


def resize_longest_side_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """The (height, width) in pixels of an image of ``height`` x ``width`` scaled so that its long side is
    ``long_side``, each side rounded to the nearest pixel (halves up)."""
    scale = long_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_longest_side(image: np.ndarray, long_side: int) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (h, w, 3) with ``max(h, w) == long_side``, by Pillow's bilinear (antialiased)
    resize, as Meta's predictor resizes (its ``ResizeLongestSide.apply_image``)."""
    size = resize_longest_side_shape(image.shape[0], image.shape[1], long_side)
    if size == image.shape[:2]:
        return image
    resized = Image.fromarray(np.ascontiguousarray(image)).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.array(resized)  # writable, for torch.from_numpy


def scale_coords(coords: np.ndarray, original_size: tuple[int, int], long_side: int) -> np.ndarray:
    """xy pixel coordinates (..., 2) in an image of ``original_size`` (H, W) -> the same points in that image
    resized by :func:`resize_longest_side`, float64."""
    height, width = original_size
    new_height, new_width = resize_longest_side_shape(height, width, long_side)
    scaled = np.array(coords, dtype=np.float64)
    scaled[..., 0] *= new_width / width
    scaled[..., 1] *= new_height / height
    return scaled


class SamPredictor:
    """Masks of one image from prompts, with the image embedding computed once by :meth:`set_image`.

    Args:
        model: a :class:`~pixelwise.prompt.sam.Sam` (e.g. from :func:`~pixelwise.prompt.sam.build_sam`); it runs on
            its own device, in eval mode.

    Attributes:
        original_size: (H, W) of the image set, in pixels; None before :meth:`set_image`.
        input_size: (h, w) of that image resized for the encoder.
        features: its image embedding, float (1, C, e, e).
    """

    def __init__(self, model: Sam) -> None:
        self.model = model.eval()
        self.reset_image()

    @property
    def is_image_set(self) -> bool:
        return self.features is not None

    def reset_image(self) -> None:
        """Forget the image and its embedding."""
        self.features: torch.Tensor | None = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None

    @torch.no_grad()
    def set_image(self, image: np.ndarray | torch.Tensor) -> None:
        """Encode ``image`` for the following :meth:`predict` calls.

        Args:
            image: RGB, uint8 0-255: a numpy array (H, W, 3) or a tensor (3, H, W) (e.g. a
                ``tv_tensors.Image``). It is resized so that its long side is the model's ``image_size`` (1024),
                normalised and zero-padded to a square, and the image encoder runs once.

        Raises:
            ValueError: not a uint8 RGB image of one of these layouts, or an empty one.
        """
        if isinstance(image, torch.Tensor):
            if image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
                raise ValueError(f"a tensor image must be uint8 (3, H, W) RGB, got {image.dtype} "
                                 f"{tuple(image.shape)}")
            image = image.permute(1, 2, 0).cpu().numpy()
        elif isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"a numpy image must be uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")
        else:
            raise ValueError(f"the image must be a uint8 numpy array (H, W, 3) or tensor (3, H, W), got "
                             f"{type(image).__name__}")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"the image is empty ({image.shape[0]}x{image.shape[1]} pixels)")

        self.reset_image()
        resized = resize_longest_side(image, self.model.image_size)
        batch = torch.tensor(resized, device=self.model.device).permute(2, 0, 1)[None]
        self.features = self.model.image_encoder(self.model.preprocess(batch))
        self.original_size = (int(image.shape[0]), int(image.shape[1]))
        self.input_size = (int(resized.shape[0]), int(resized.shape[1]))

    def get_image_embedding(self) -> torch.Tensor:
        """The embedding of the image set: float (1, C, e, e) (C = 256, e = 64 for the released models).

        Raises:
            ValueError: no image set yet.
        """
        if self.features is None:
            raise ValueError("no image is set: call SamPredictor.set_image(image) first")
        return self.features

    @torch.no_grad()
    def predict(
        self,
        point_coords: Any = None,
        point_labels: Any = None,
        box: Any = None,
        mask_input: Any = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks of the image set by :meth:`set_image` for one prompt, as Meta's ``SamPredictor.predict``.

        Args:
            point_coords: (N, 2) xy of points in pixels of the original image, 0 <= x < W, 0 <= y < H.
            point_labels: (N,) 1 for a foreground point, 0 for a background point.
            box: (4,) xyxy in pixels of the original image, 0 <= x1 <= x2 <= W, 0 <= y1 <= y2 <= H; encoded as its
                two corners.
            mask_input: (1, 4e, 4e) float low-resolution logits (1, 256, 256 for the released models), usually the
                ``low_res_logits`` of an earlier call, to refine.
            multimask_output: True: three masks (whole, part, subpart), best for an ambiguous single click; False:
                one mask, best for several points or a box.
            return_logits: return the masks' logits instead of thresholding them at ``model.mask_threshold`` (0).

        Returns:
            masks: (C, H, W) bool (float32 logits with ``return_logits``), C = 3 or 1, at the original size.
            iou_predictions: (C,) float32, the model's estimate of each mask's IoU.
            low_res_logits: (C, 4e, 4e) float32 logits (256 x 256), to feed back as ``mask_input``.

        Raises:
            ValueError: no image set; no prompt at all; points without labels or of another count; labels other
                than 0 and 1; a point or box outside the image, not finite, or a box with x2 < x1 or y2 < y1; a
                ``mask_input`` of another shape.
        """
        if self.features is None or self.original_size is None or self.input_size is None:
            raise ValueError("no image is set: call SamPredictor.set_image(image) before predict()")
        height, width = self.original_size
        long_side = self.model.image_size
        device = self.model.device

        coords, labels = self._check_points(point_coords, point_labels)
        boxes = self._check_box(box)
        if coords is None and boxes is None and mask_input is None:
            raise ValueError("the prompt is empty: give point_coords with point_labels, a box, or a mask_input")
        points = None
        if coords is not None:
            scaled = scale_coords(coords, (height, width), long_side)
            points = (torch.as_tensor(scaled, dtype=torch.float32, device=device)[None],
                      torch.as_tensor(labels, dtype=torch.int64, device=device)[None])
        box_tensor = None
        if boxes is not None:
            scaled = scale_coords(boxes.reshape(2, 2), (height, width), long_side).reshape(1, 4)
            box_tensor = torch.as_tensor(scaled, dtype=torch.float32, device=device)
        mask_tensor = None
        if mask_input is not None:
            mask_tensor = torch.as_tensor(self._check_mask(mask_input), dtype=torch.float32, device=device)[None]

        sparse, dense = self.model.prompt_encoder(points, box_tensor, mask_tensor)
        low_res, iou = self.model.mask_decoder(self.features, self.model.prompt_encoder.get_dense_pe(), sparse,
                                               dense, multimask_output)
        masks = self.model.postprocess_masks(low_res, self.input_size, self.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks[0].cpu().numpy(), iou[0].float().cpu().numpy(), low_res[0].float().cpu().numpy()

    def _check_points(self, point_coords: Any, point_labels: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
        if point_coords is None and point_labels is None:
            return None, None
        if point_coords is None or point_labels is None:
            given, missing = ("point_coords", "point_labels") if point_labels is None else ("point_labels",
                                                                                           "point_coords")
            raise ValueError(f"{given} was given without {missing}: give both, one label per point")
        coords = np.asarray(point_coords, dtype=np.float64)
        labels = np.asarray(point_labels)
        if coords.ndim != 2 or coords.shape[1] != 2:
            raise ValueError(f"point_coords must be (N, 2) xy pixel coordinates, got shape {coords.shape}")
        if labels.ndim != 1 or labels.shape[0] != coords.shape[0]:
            raise ValueError(f"point_labels must hold one label per point: {coords.shape[0]} points but "
                             f"point_labels of shape {labels.shape}")
        if coords.shape[0] == 0:
            return None, None
        if not np.isfinite(coords).all():
            raise ValueError(f"point_coords has coordinates that are not finite: {coords.tolist()}")
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"point_labels must be 1 (foreground) or 0 (background), got "
                             f"{sorted(set(labels.tolist()))}")
        height, width = self.original_size  # type: ignore[misc]
        inside = (coords[:, 0] >= 0) & (coords[:, 0] < width) & (coords[:, 1] >= 0) & (coords[:, 1] < height)
        if not inside.all():
            i = int(np.flatnonzero(~inside)[0])
            raise ValueError(f"point {i} at (x={coords[i, 0]:g}, y={coords[i, 1]:g}) is outside the "
                             f"{width}x{height} image: points need 0 <= x < {width} and 0 <= y < {height}, "
                             "in pixels of the image given to set_image")
        return coords, labels.astype(np.int64)

    def _check_box(self, box: Any) -> np.ndarray | None:
        if box is None:
            return None
        boxes = np.asarray(box, dtype=np.float64)
        if boxes.shape not in ((4,), (1, 4)):
            raise ValueError(f"box must be one xyxy box of shape (4,), got shape {boxes.shape}")
        x1, y1, x2, y2 = boxes.reshape(4)
        height, width = self.original_size  # type: ignore[misc]
        if not np.isfinite(boxes).all():
            raise ValueError(f"box {boxes.reshape(4).tolist()} has coordinates that are not finite")
        if x2 < x1 or y2 < y1:
            raise ValueError(f"box {boxes.reshape(4).tolist()} is not xyxy: it needs x1 <= x2 and y1 <= y2")
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            raise ValueError(f"box {boxes.reshape(4).tolist()} is outside the {width}x{height} image: it needs "
                             f"0 <= x1 <= x2 <= {width} and 0 <= y1 <= y2 <= {height}")
        return boxes.reshape(4)

    def _check_mask(self, mask_input: Any) -> np.ndarray:
        mask = np.asarray(mask_input.cpu() if isinstance(mask_input, torch.Tensor) else mask_input,
                          dtype=np.float32)
        expected = (1, *self.model.prompt_encoder.mask_input_size)
        if mask.shape != expected:
            raise ValueError(f"mask_input must be low-resolution logits of shape {expected} (a low_res_logits[i]"
                             f"[None] of an earlier predict), got shape {mask.shape}")
        if not np.isfinite(mask).all():
            raise ValueError("mask_input has values that are not finite")
        return mask
