"""Datasets, joint transforms and palettes.

``build_dataset(spec, split)`` opens the built-in synthetic dataset (``spec == "synthetic"``) or a dataset on disk:
a folder in the layout of :mod:`pixelwise.data.folder` (CamVid and ISBI 2012 under ``../shared/data`` are two),
PASCAL VOC 2012 (+ SBD's ``train_aug``), Cityscapes or ADE20K in their official layouts. The format is detected
from the files, or named with a prefix: ``"voc:/data/VOCdevkit"``, ``"cityscapes:..."``, ``"ade20k:..."``,
``"folder:..."``. Every dataset carries ``classes``, ``palette``, ``ignore_index``, ``in_channels`` and ``ids``.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import numpy as np

from pixelwise.data.ade20k import ADE20K, find_ade20k
from pixelwise.data.base import SegmentationDataset
from pixelwise.data.cityscapes import Cityscapes
from pixelwise.data.folder import SegmentationFolder, parse_split
from pixelwise.data.io import read_image, read_mask
from pixelwise.data.palette import default_palette
from pixelwise.data.synthetic import SyntheticShapes
from pixelwise.data.voc import VOCSegmentation, find_voc2012
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


#: The on-disk formats ``build_dataset`` reads, by the prefix that names them in a data spec.
FORMATS = {"folder": SegmentationFolder, "voc": VOCSegmentation, "cityscapes": Cityscapes, "ade20k": ADE20K}

#: Data options under an old name: ``{old: new}``. ``build_dataset`` still takes the old name (a ``data_kwargs``
#: key of a config written before the rename), with a FutureWarning.
DEPRECATED_OPTIONS = {"colour_map": "color_map"}


def _renamed_options(options: dict) -> dict:
    """``options`` with each deprecated name of :data:`DEPRECATED_OPTIONS` replaced by its new name, and a
    FutureWarning for each.

    Raises:
        DatasetError: an option given under both its old and its new name.
    """
    renamed = dict(options)
    for old, new in DEPRECATED_OPTIONS.items():
        if old not in renamed:
            continue
        if new in renamed:
            raise DatasetError(f"data option {old} is the deprecated name of {new}: give only {new}")
        warnings.warn(f"data option {old} is deprecated, use {new} (training: `--set data_kwargs.{new}=...`)",
                      FutureWarning, stacklevel=3)
        renamed[new] = renamed.pop(old)
    return renamed


def detect_format(root: str | Path) -> str:
    """The format of the dataset in ``root``: ``"cityscapes"`` (leftImg8bit/ and gtFine/), ``"voc"`` (a VOC2012
    folder with JPEGImages/), ``"ade20k"`` (images/training/ or annotations/, no classes.txt), else ``"folder"``."""
    root = Path(root)
    if (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir():
        return "cityscapes"
    if find_voc2012(root) is not None:
        return "voc"
    if not (root / "classes.txt").is_file() and find_ade20k(root) is not None:
        return "ade20k"
    return "folder"


def parse_data_spec(spec: str | Path) -> tuple[str, Path]:
    """``"voc:/data/VOCdevkit"`` -> ``("voc", Path("/data/VOCdevkit"))``; a bare path gets its detected format."""
    text = str(spec)
    prefix, sep, rest = text.partition(":")
    if sep and prefix in FORMATS:
        return prefix, Path(rest)
    return detect_format(text), Path(text)


def build_dataset(
    spec: str | Path,
    split: str,
    transforms=None,
    require_masks: bool = False,
    seed: int = 0,
    ignore_index: int = 255,
    **options,
):
    """Open split ``split`` of a dataset: ``"synthetic"``, or a folder path, optionally prefixed by its format
    (see :data:`FORMATS`). ``options`` go to the format's class (``binary_threshold``, ``color_map`` for folders;
    ``sbd_root`` for VOC; ``reduce_zero_label`` for ADE20K); in a training config they are ``data_kwargs``. The old
    names of :data:`DEPRECATED_OPTIONS` (``colour_map``) still work, with a FutureWarning.

    Raises:
        DatasetError: an option the format does not take, and see each format's class.
    """
    options = _renamed_options(options)
    if str(spec) == "synthetic":
        name, part = parse_split(split)
        if options:
            raise DatasetError(f"the synthetic dataset takes no options (got {', '.join(options)})")
        ds = SyntheticShapes(name, seed=seed)
        if ignore_index != ds.ignore_index:
            raise DatasetError(f"the synthetic dataset marks void with {ds.ignore_index}; leave ignore_index at that")
        if part != slice(None):
            raise DatasetError("the synthetic dataset's splits cannot be sliced; use train, val or test")
        return _WithTransforms(ds, transforms) if transforms is not None else ds
    fmt, root = parse_data_spec(spec)
    cls = FORMATS[fmt]
    accepted = set(inspect.signature(cls).parameters) - {"root", "split", "transforms", "ignore_index",
                                                         "require_masks"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise DatasetError(
            f"data option(s) {', '.join(unknown)} do not apply to {root} (format {fmt!r}); it takes: "
            f"{', '.join(sorted(accepted)) or 'none'}"
        )
    return cls(root, split, transforms=transforms, ignore_index=ignore_index, require_masks=require_masks, **options)


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
    if isinstance(dataset, SegmentationDataset):
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
    "ADE20K",
    "BUILTIN_DATASETS",
    "FORMATS",
    "Cityscapes",
    "SegmentationDataset",
    "VOCSegmentation",
    "detect_format",
    "parse_data_spec",
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
