"""Datasets, joint transforms and palettes.

``build_dataset(spec, split)`` opens either the built-in synthetic dataset (``spec == "synthetic"``) or a dataset
folder in the layout of :mod:`pixelwise.data.folder` (CamVid and ISBI 2012 under ``../shared/data`` are two).
Every dataset carries ``classes``, ``palette``, ``ignore_index``, ``in_channels`` and ``ids``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pixelwise.data.folder import SegmentationFolder, parse_split, read_image, read_mask
from pixelwise.data.palette import default_palette
from pixelwise.data.synthetic import SyntheticShapes
from pixelwise.data.transforms import (
    EpochSampler,
    SeededTransformDataset,
    default_normalization,
    eval_transforms,
    pad_collate,
    train_transforms,
)
from pixelwise.errors import DatasetError

BUILTIN_DATASETS = {
    "synthetic": "shapes (disk, square, triangle, ring) on textured backgrounds, generated from a seed; "
    "200 train / 40 val / 40 test at 128x128",
}


def build_dataset(
    spec: str | Path,
    split: str,
    transforms=None,
    require_masks: bool = False,
    seed: int = 0,
    ignore_index: int = 255,
):
    """Open split ``split`` of a dataset: ``"synthetic"`` or a folder path.

    Raises:
        DatasetError: see :class:`SegmentationFolder` and :class:`SyntheticShapes`.
    """
    if str(spec) == "synthetic":
        name, part = parse_split(split)
        ds = SyntheticShapes(name, seed=seed)
        if ignore_index != ds.ignore_index:
            raise DatasetError(f"the synthetic dataset marks void with {ds.ignore_index}; leave ignore_index at that")
        if part != slice(None):
            raise DatasetError("the synthetic dataset's splits cannot be sliced; use train, val or test")
        return _WithTransforms(ds, transforms) if transforms is not None else ds
    return SegmentationFolder(
        spec, split, transforms=transforms, ignore_index=ignore_index, require_masks=require_masks
    )


class _WithTransforms:
    """Wraps a dataset that returns ``(image, mask)`` with a joint transform, keeping its metadata visible."""

    def __init__(self, base, transforms) -> None:
        self.base = base
        self.transforms = transforms

    def __getattr__(self, name):
        if name == "base":  # not set yet while unpickling in a DataLoader worker: avoid infinite recursion
            raise AttributeError(name)
        return getattr(self.base, name)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index):
        image, mask = self.base[index]
        return self.transforms(image, mask)


def class_statistics(dataset) -> dict:
    """Per-class pixel counts over a split's masks: ``{"class_pixels": (K,), "image_pixels": (K,)}`` (int64);
    ``image_pixels[c]`` sums the sizes of the masks that contain class c. Folder datasets also check every mask.
    """
    if isinstance(dataset, SegmentationFolder):
        return dataset.check()
    k = dataset.num_classes
    class_pixels = np.zeros(k, dtype=np.int64)
    image_pixels = np.zeros(k, dtype=np.int64)
    for i in range(len(dataset)):
        mask = np.asarray(dataset[i][1]).ravel()
        counts = np.bincount(mask[mask != dataset.ignore_index], minlength=k)[:k]
        class_pixels += counts
        image_pixels[counts > 0] += mask.size
    return {"class_pixels": class_pixels, "image_pixels": image_pixels}


__all__ = [
    "BUILTIN_DATASETS",
    "EpochSampler",
    "SeededTransformDataset",
    "SegmentationFolder",
    "SyntheticShapes",
    "build_dataset",
    "class_statistics",
    "default_normalization",
    "default_palette",
    "eval_transforms",
    "pad_collate",
    "read_image",
    "read_mask",
    "train_transforms",
]
