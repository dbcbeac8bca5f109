"""SyntheticShapes: a built-in, deterministic segmentation dataset for the demo and for fast tests.

Every image shows 2 to 6 filled shapes (disks, squares, triangles, rings) on a textured background. The images are
drawn on the fly from a seed, so the dataset needs no download and no disk space, and a small network learns it in
a few minutes on a CPU.
"""

from __future__ import annotations

import colorsys
import math
import operator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from pixelwise.errors import DatasetError

__all__ = ["SyntheticShapes", "write_synthetic_folder"]

_SPLITS: tuple[str, ...] = ("train", "val", "test")
_DEFAULT_NUM_IMAGES: dict[str, int] = {"train": 200, "val": 40, "test": 40}

_CLASSES: tuple[str, ...] = ("background", "disk", "square", "triangle", "ring")
_PALETTE: tuple[tuple[int, int, int], ...] = (
    (48, 48, 48),  # background: dark grey
    (230, 25, 75),  # disk: red
    (60, 180, 75),  # square: green
    (0, 130, 200),  # triangle: blue
    (255, 225, 25),  # ring: yellow
)
# Centre of the hue (0..1) that each shape class' fill color is drawn around: the same hues as the palette.
_HUE_BIAS: dict[int, float] = {1: 0.97, 2: 0.36, 3: 0.57, 4: 0.15}
_HUE_JITTER = 0.06

_DISK, _SQUARE, _TRIANGLE, _RING = 1, 2, 3, 4
_MIN_SIDE = 16



def image_index(index: object, n: int, split: str) -> int:
    """``index`` of a synthetic split of ``n`` images as a non-negative int (negative indices count from the end).

    Raises:
        TypeError: ``index`` is not an int. IndexError: it is outside ``-n .. n - 1``.
    """
    try:
        index = operator.index(index)
    except TypeError:
        raise TypeError(f"dataset index must be an int, got {type(index).__name__}") from None
    if not -n <= index < n:
        raise IndexError(f"index {index} out of range for {split} split of {n} synthetic images")
    return index + n if index < 0 else index

class SyntheticShapes(Dataset):
    """Shapes of four classes on textured backgrounds, generated deterministically from a seed.

    Classes (:attr:`classes`, ids in order): ``0 background``, ``1 disk``, ``2 square`` (rotated), ``3 triangle``
    (rotated, roughly equilateral), ``4 ring`` (annulus).

    Item ``i`` is ``(image, mask)``:

    * ``image``: :class:`torchvision.tv_tensors.Image`, ``torch.uint8``, shape ``(3, H, W)``, RGB.
    * ``mask``: :class:`torchvision.tv_tensors.Mask`, ``torch.int64``, shape ``(H, W)``; each pixel holds the class id
      of the shape drawn there (0 for background) or :attr:`ignore_index` (255, void) on the one-pixel band just
      inside each visible shape outline, where a real annotator could not tell the classes apart.

    ``(H, W)`` is ``image_size``. Each image has a background mixing a random color gradient, sinusoidal stripes of
    random orientation and frequency, and pixel noise, and 2 to 6 shapes of random class, size, position and
    rotation. Shapes may overlap and may be cut by the image border; a shape drawn later covers earlier ones. The fill
    color of a shape is random with a hue biased towards its class' palette color, plus per-shape shading and noise.

    Determinism: image ``i`` of a split is a pure function of ``(seed, split, i, image_size)``; it is generated in
    :meth:`__getitem__` from ``numpy.random.default_rng([seed, split_index, i])`` and nothing is cached, so the same
    arguments give identical tensors in any process, worker or order of access, and the splits (and seeds) give
    different images. ``num_images`` only sets the length: image ``i`` does not depend on it.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        num_images: length of the dataset; default 200 for train, 40 for val and test.
        image_size: ``(height, width)`` in pixels, each at least 16.
        seed: non-negative int.

    Raises:
        DatasetError: unknown split, or a bad ``num_images``, ``image_size`` or ``seed``.
    """

    ignore_index: int = 255
    in_channels: int = 3

    def __init__(
        self,
        split: str = "train",
        num_images: int | None = None,
        image_size: tuple[int, int] = (128, 128),
        seed: int = 0,
    ) -> None:
        if split not in _SPLITS:
            raise DatasetError(f"unknown split {split!r} for the synthetic dataset; valid splits: {', '.join(_SPLITS)}")
        if num_images is None:
            num_images = _DEFAULT_NUM_IMAGES[split]
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise DatasetError(f"num_images must be a positive int, got {num_images!r}")
        try:
            height, width = (operator.index(v) for v in image_size)
        except (TypeError, ValueError):
            raise DatasetError(f"image_size must be (height, width), two ints, got {image_size!r}") from None
        if height < _MIN_SIDE or width < _MIN_SIDE:
            raise DatasetError(f"image_size must be at least {_MIN_SIDE}x{_MIN_SIDE} pixels, got {image_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise DatasetError(f"seed must be a non-negative int, got {seed!r}")

        self.split = split
        self.split_index = _SPLITS.index(split)
        self.num_images = num_images
        self.image_size = (height, width)
        self.seed = seed
        self.classes: list[str] = list(_CLASSES)
        self.palette: list[tuple[int, int, int]] = list(_PALETTE)
        self.ids: list[str] = [f"synthetic_{split}_{i:04d}" for i in range(num_images)]
        # Pixel-centre coordinate grids, shared by every image of this size (memory only).
        self._yy, self._xx = np.mgrid[0:height, 0:width].astype(np.float32)

    @property
    def num_classes(self) -> int:
        """Number of classes, background included (5)."""
        return len(self.classes)

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        """Return ``(image, mask)`` of image ``index`` (negative indices count from the end).

        Raises:
            IndexError: ``index`` is outside ``-len(self) .. len(self) - 1``.
        """
        image, mask = self.render(index)
        image_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return tv_tensors.Image(image_t), tv_tensors.Mask(torch.from_numpy(mask))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, num_images={self.num_images}, "
            f"image_size={self.image_size}, seed={self.seed})"
        )

    # ------------------------------------------------------------------------------------------------ drawing

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw image ``index`` as numpy arrays: image ``uint8 (H, W, 3)`` and mask ``int64 (H, W)``.

        Same content as :meth:`__getitem__`, in the channel-last layout that Pillow and matplotlib use.
        """
        index = image_index(index, self.num_images, self.split)
        rng = np.random.default_rng([self.seed, self.split_index, index])
        height, width = self.image_size

        image = self._background(rng)
        mask = np.zeros((height, width), dtype=np.int64)
        for _ in range(int(rng.integers(2, 7))):
            self._draw_shape(rng, image, mask)
        np.clip(image, 0.0, 255.0, out=image)
        return np.rint(image).astype(np.uint8), mask

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        """Float32 (H, W, 3) background: color gradient + stripes + pixel noise, weights random per image."""
        height, width = self.image_size
        yy, xx = self._yy, self._xx
        scale = float(max(height, width))

        # Smooth gradient between two muted colors along a random direction.
        grey = rng.uniform(50.0, 170.0, size=2)
        c0 = (grey[0] + rng.uniform(-35.0, 35.0, size=3)).astype(np.float32)
        c1 = (grey[1] + rng.uniform(-35.0, 35.0, size=3)).astype(np.float32)
        angle = rng.uniform(0.0, 2.0 * math.pi)
        t = (math.cos(angle) * xx + math.sin(angle) * yy) / scale
        t -= t.min()
        t /= max(float(t.max()), 1e-6)
        image = c0 + t[..., None] * (c1 - c0)

        # Sinusoidal stripes of random orientation, frequency, phase, strength and tint.
        angle = rng.uniform(0.0, math.pi)
        period = rng.uniform(4.0, 24.0)
        phase = rng.uniform(0.0, 2.0 * math.pi)
        amplitude = rng.uniform(0.0, 40.0)
        tint = rng.uniform(0.6, 1.0, size=3).astype(np.float32)
        stripes = np.sin((math.cos(angle) * xx + math.sin(angle) * yy) * np.float32(2.0 * math.pi / period) + phase)
        image += (np.float32(amplitude) * stripes)[..., None] * tint

        # Pixel noise.
        sigma = np.float32(rng.uniform(2.0, 16.0))
        image += sigma * rng.standard_normal((height, width, 3), dtype=np.float32)
        return image

    def _draw_shape(self, rng: np.random.Generator, image: np.ndarray, mask: np.ndarray) -> None:
        """Paint one random shape into ``image`` (float32 H, W, 3) and ``mask`` (int64 H, W) in place."""
        height, width = self.image_size
        side = min(height, width)
        cls = int(rng.integers(1, 5))
        radius = rng.uniform(0.08, 0.22) * side
        cy = rng.uniform(0.0, height - 1.0)
        cx = rng.uniform(0.0, width - 1.0)
        angle = rng.uniform(0.0, 2.0 * math.pi)
        # Drawn whether used or not, so every shape takes the same number of draws of each kind.
        jitter = rng.uniform(-0.25, 0.25, size=3)
        inner_ratio = rng.uniform(0.4, 0.7)

        if cls == _SQUARE:
            half = 0.85 * radius
            extent = half * math.sqrt(2.0)
        elif cls == _TRIANGLE:
            radius *= 1.2
            extent = radius
        else:
            extent = radius

        # Bounding box with one pixel of margin, clipped to the image.
        y0 = max(0, int(math.floor(cy - extent)) - 1)
        y1 = min(height, int(math.ceil(cy + extent)) + 2)
        x0 = max(0, int(math.floor(cx - extent)) - 1)
        x1 = min(width, int(math.ceil(cx + extent)) + 2)
        dy = self._yy[y0:y1, x0:x1] - np.float32(cy)
        dx = self._xx[y0:y1, x0:x1] - np.float32(cx)

        if cls == _DISK:
            inside = dx * dx + dy * dy <= radius * radius
        elif cls == _RING:
            inner = min(inner_ratio * radius, radius - 3.0)
            d2 = dx * dx + dy * dy
            inside = (d2 <= radius * radius) & (d2 >= inner * inner)
        elif cls == _SQUARE:
            cos_a, sin_a = np.float32(math.cos(angle)), np.float32(math.sin(angle))
            u = cos_a * dx + sin_a * dy
            v = cos_a * dy - sin_a * dx
            inside = (np.abs(u) <= half) & (np.abs(v) <= half)
        else:  # triangle: vertices on the circumcircle at angles increasing by about 120 degrees
            corners = [
                (radius * math.cos(a), radius * math.sin(a))
                for a in angle + np.arange(3) * (2.0 * math.pi / 3.0) + jitter
            ]
            inside = np.ones(dx.shape, dtype=bool)
            for k in range(3):
                (ax, ay), (bx, by) = corners[k], corners[(k + 1) % 3]
                # Angles increase, so the interior lies on the positive side of each directed edge.
                inside &= (bx - ax) * (dy - ay) - (by - ay) * (dx - ax) >= 0

        if not inside.any():
            return

        # One-pixel band just inside the outline (4-neighbourhood); the image border is not an outline.
        padded = np.pad(inside, 1, mode="edge")
        interior = (
            inside & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        )
        boundary = inside & ~interior

        # Fill color: hue biased to the class, random saturation and value, plus shading and noise.
        hue = (_HUE_BIAS[cls] + rng.uniform(-_HUE_JITTER, _HUE_JITTER)) % 1.0
        rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.6, 1.0))
        color = np.asarray(rgb, dtype=np.float32) * np.float32(255.0)
        shade_angle = rng.uniform(0.0, 2.0 * math.pi)
        shade = rng.uniform(0.0, 35.0) / max(extent, 1.0)
        noise_sigma = np.float32(rng.uniform(2.0, 12.0))
        count = int(inside.sum())
        shading = (math.cos(shade_angle) * dx[inside] + math.sin(shade_angle) * dy[inside]) * np.float32(shade)
        fill = color + shading[:, None] + noise_sigma * rng.standard_normal((count, 3), dtype=np.float32)

        region = image[y0:y1, x0:x1]
        region[inside] = fill
        labels = mask[y0:y1, x0:x1]
        labels[inside] = cls
        labels[boundary] = self.ignore_index


def write_synthetic_folder(
    root: str | Path, splits: dict[str, int | None], image_size: tuple[int, int] = (128, 128), seed: int = 0
) -> Path:
    """Write the synthetic dataset to ``root`` in the folder layout (``images/<split>/<id>.png``,
    ``masks/<split>/<id>.png``, ``classes.txt``, ``palette.txt``, ``<split>.txt``), so it can be browsed, predicted
    on, or used to try the folder loader. ``splits`` maps split name to image count (None: the split's default)."""
    root = Path(root)
    ds = None
    for split, n in splits.items():
        ds = SyntheticShapes(split, num_images=n, image_size=image_size, seed=seed)
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "masks" / split).mkdir(parents=True, exist_ok=True)
        for i in range(len(ds)):
            image, mask = ds.render(i)
            Image.fromarray(image).save(root / "images" / split / f"{ds.ids[i]}.png")
            Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / split / f"{ds.ids[i]}.png")
        (root / f"{split}.txt").write_text("".join(i + "\n" for i in ds.ids))
    if ds is not None:
        (root / "classes.txt").write_text("".join(c + "\n" for c in ds.classes))
        (root / "palette.txt").write_text("".join(" ".join(map(str, c)) + "\n" for c in ds.palette))
    return root
