"""Turn class-id masks into pictures: color masks, overlays on the image, palette PNGs and legends.

A mask is a 2-D integer ``numpy.ndarray`` or ``torch.Tensor`` of class ids, ``(H, W)``; pixels equal to
``ignore_index`` (255 by default) are void and drawn in :data:`pixelwise.data.palette.VOID_COLOR`. A palette is a
sequence of ``(R, G, B)`` ints in ``0..255`` (or an ``(N, 3)`` array), entry ``k`` being the color of class ``k``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pixelwise.data.palette import VOID_COLOR

__all__ = ["colorize", "legend", "overlay", "save_class_png"]

_VOID_ID = 255


def _palette_array(palette: Any) -> np.ndarray:
    """Validate a palette and return it as a uint8 ``(N, 3)`` array."""
    try:
        arr = np.asarray(palette)
    except (TypeError, ValueError):
        raise ValueError("palette must be a sequence of (R, G, B) colors") from None
    if arr.size == 0:
        return np.zeros((0, 3), dtype=np.uint8)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"palette must be a sequence of (R, G, B) colors, got an array of shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"palette colors must be ints in 0..255, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() > 255:
        raise ValueError("palette colors must be ints in 0..255")
    return arr.astype(np.uint8)


def _mask_array(mask: Any) -> np.ndarray:
    """Return a 2-D integer numpy view/copy of ``mask`` (numpy array or torch tensor)."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {tuple(arr.shape)}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.int64)
    elif not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"mask must hold integer class ids, got dtype {arr.dtype}")
    return arr


def colorize(
    mask: np.ndarray | torch.Tensor, palette: Sequence[Sequence[int]], ignore_index: int | None = 255
) -> np.ndarray:
    """Color a class-id mask: ``uint8 (H, W, 3)`` with ``palette[k]`` wherever ``mask == k``.

    Args:
        mask: integer ``(H, W)`` numpy array or torch tensor of class ids.
        palette: one ``(R, G, B)`` per class id.
        ignore_index: void id, drawn in ``VOID_COLOR`` (white); ``None`` for no void id.

    Raises:
        ValueError: ``mask`` is not 2-D integer, the palette is malformed, or a pixel holds an id that has no
            palette entry and is not ``ignore_index`` (the message names the id).
    """
    arr = _mask_array(mask)
    lut = _palette_array(palette)
    n = len(lut)
    void = (arr == ignore_index) if ignore_index is not None else np.zeros(arr.shape, dtype=bool)
    bad = ~void & ((arr < 0) | (arr >= n))
    if bad.any():
        values = np.unique(arr[bad])
        shown = ", ".join(str(int(v)) for v in values[:10]) + (", ..." if len(values) > 10 else "")
        raise ValueError(
            f"mask holds class id {int(values[0])} but the palette has {n} colors (ids 0..{n - 1}); "
            f"ids without a color: {shown}"
        )
    lut = np.concatenate([lut, np.asarray([VOID_COLOR], dtype=np.uint8)], axis=0)
    index = arr.astype(np.intp, copy=True)
    index[void] = n
    return lut[index]


def _image_array(image: Any) -> np.ndarray:
    """Return ``image`` as a uint8 ``(H, W, 3)`` numpy array."""
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.ndim == 3:
            if t.shape[0] not in (1, 3):
                raise ValueError(f"a tensor image must be (C, H, W) with C = 1 or 3, got shape {tuple(t.shape)}")
            t = t.permute(1, 2, 0)
        elif t.ndim != 2:
            raise ValueError(f"a tensor image must be (C, H, W) or (H, W), got shape {tuple(t.shape)}")
        arr = t.numpy()
    else:
        arr = np.asarray(image)
        if arr.ndim == 3 and arr.shape[2] not in (1, 3):
            raise ValueError(f"a numpy image must be (H, W, 3) or (H, W), got shape {arr.shape}")
        if arr.ndim not in (2, 3):
            raise ValueError(f"a numpy image must be (H, W, 3) or (H, W), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return arr


#: Weight of the mask's color in an overlay, everywhere one is drawn (predict, serve, the Predictor's results).
DEFAULT_ALPHA = 0.5


def overlay(
    image: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor,
    palette: Sequence[Sequence[int]],
    alpha: float = DEFAULT_ALPHA,
    ignore_index: int | None = 255,
) -> np.ndarray:
    """Blend the color mask over the image: ``uint8 (H, W, 3)``.

    Each pixel is ``round((1 - alpha) * image + alpha * palette[mask])``, rounding halves up; void pixels
    (``mask == ignore_index``) show the image unchanged.

    Args:
        image: uint8 numpy ``(H, W, 3)`` or ``(H, W)`` (grayscale), or uint8 torch ``(C, H, W)`` with C = 1 or 3
            (a ``tv_tensors.Image`` works) or ``(H, W)``.
        mask: integer ``(H, W)`` class ids, as for :func:`colorize`.
        palette: one ``(R, G, B)`` per class id.
        alpha: weight of the mask color, in ``[0, 1]``.
        ignore_index: void id; ``None`` for no void id.

    Raises:
        ValueError: image and mask sizes differ (both are named), bad image shape or dtype, ``alpha`` outside
            ``[0, 1]``, or any error of :func:`colorize`.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    img = _image_array(image)
    arr = _mask_array(mask)
    if img.shape[:2] != arr.shape:
        raise ValueError(
            f"image size {img.shape[0]}x{img.shape[1]} (HxW) differs from mask size {arr.shape[0]}x{arr.shape[1]}"
        )
    colors = colorize(arr, palette, ignore_index=ignore_index)
    blended = np.floor((1.0 - alpha) * img.astype(np.float64) + alpha * colors.astype(np.float64) + 0.5)
    out = np.clip(blended, 0, 255).astype(np.uint8)
    if ignore_index is not None:
        void = arr == ignore_index
        out[void] = img[void]
    return out


def save_class_png(
    mask: np.ndarray | torch.Tensor, path: str | os.PathLike[str], palette: Sequence[Sequence[int]]
) -> Path:
    """Write ``mask`` as a palette-mode ('P') PNG whose pixel values are the class ids.

    ``np.array(Image.open(path))`` reads the ids back unchanged, and image viewers show the classes in color:
    palette entry ``k`` is ``palette[k]``, entries past the classes are black and entry 255 is ``VOID_COLOR``.
    Ids without a palette entry are still written (they display black).

    Returns:
        The path written, as a :class:`pathlib.Path`.

    Raises:
        ValueError: ``mask`` is not 2-D integer, holds an id outside ``0..255``, or the palette has more than 255
            colors (index 255 is void).
    """
    arr = _mask_array(mask)
    lut = _palette_array(palette)
    if len(lut) > _VOID_ID:
        raise ValueError(f"a PNG palette holds at most {_VOID_ID} classes (index 255 is void), got {len(lut)}")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        bad = int(arr.max()) if arr.max() > 255 else int(arr.min())
        raise ValueError(f"class id {bad} cannot be stored in an 8-bit palette PNG (ids must be in 0..255)")
    full = np.zeros((256, 3), dtype=np.uint8)
    full[: len(lut)] = lut
    full[_VOID_ID] = VOID_COLOR
    image = Image.fromarray(np.ascontiguousarray(arr.astype(np.uint8)))  # mode 'L'
    image.putpalette(full.reshape(-1).tolist())  # turns it into mode 'P' without touching the pixel values
    path = Path(path)
    image.save(path, format="PNG")
    return path


def legend(class_names: Sequence[str], palette: Sequence[Sequence[int]]) -> list[tuple[str, str]]:
    """Pair each class name with its color as ``'#rrggbb'``: ``[(name, '#rrggbb'), ...]`` in class-id order.

    Raises:
        ValueError: the palette has fewer colors than there are class names.
    """
    lut = _palette_array(palette)
    names = list(class_names)
    if len(lut) < len(names):
        raise ValueError(f"{len(names)} class names but only {len(lut)} palette colors")
    return [(str(name), "#{:02x}{:02x}{:02x}".format(*(int(c) for c in lut[k]))) for k, name in enumerate(names)]
