"""Datasets, joint transforms and palettes.

``build_dataset(spec, split)`` opens the built-in synthetic dataset (``spec == "synthetic"``) or a dataset on disk:
a folder in the layout of :mod:`pixelwise.data.folder` (CamVid and ISBI 2012 under ``../shared/data`` are two),
PASCAL VOC 2012 (+ SBD's ``train_aug``), Cityscapes or ADE20K in their official layouts. The format is detected
from the files, or named with a prefix: ``"voc:/data/VOCdevkit"``, ``"cityscapes:..."``, ``"ade20k:..."``,
``"folder:..."``. Every dataset carries ``classes``, ``palette``, ``ignore_index``, ``in_channels`` and ``ids``.

Instance segmentation (:mod:`pixelwise.data.instances`, the sample contract of Mask R-CNN): a folder in the COCO
layout (``instances_<split>.json`` beside ``images/<split>/``, or the prefix ``"coco:"``) opens as
:class:`CocoInstances`; ``"synthetic_instances"`` is the built-in instance set; any semantic dataset gives instances
by connected components with the option ``instances="connected_components"`` (plus ``connectivity``, ``min_area``,
``classes``, ``background``).
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
from pixelwise.data.instances import (
    CocoInstances,
    ConnectedComponentInstances,
    SyntheticInstances,
    find_coco,
    instance_collate,
    instance_eval_transforms,
    instance_train_transforms,
    write_synthetic_instances,
)
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
    "synthetic_instances": "instance segmentation: disks, squares and triangles that touch and occlude one another, "
    "generated from a seed; 200 train / 40 val / 40 test at 128x128",
}


#: The on-disk formats ``build_dataset`` reads, by the prefix that names them in a data spec.
FORMATS = {"folder": SegmentationFolder, "voc": VOCSegmentation, "cityscapes": Cityscapes, "ade20k": ADE20K,
           "coco": CocoInstances}

#: The options of ``build_dataset(..., instances="connected_components")``, with their defaults.
INSTANCE_OPTIONS = {"connectivity": 4, "min_area": 1, "classes": None, "background": 0}

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
    folder with JPEGImages/), ``"coco"`` (an instances_<split>.json beside images/<split>/, no classes.txt),
    ``"ade20k"`` (images/training/ or annotations/, no classes.txt), else ``"folder"``."""
    root = Path(root)
    if (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir():
        return "cityscapes"
    if find_voc2012(root) is not None:
        return "voc"
    if not (root / "classes.txt").is_file() and find_coco(root):
        return "coco"
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

    Instance datasets (:mod:`pixelwise.data.instances`; items ``(image, target)``): ``"synthetic_instances"``
    (options ``num_images``, ``image_size``), a COCO-layout folder (options ``in_channels``, ``keep_crowd``,
    ``strict``; ``ignore_index`` and ``require_masks`` do not apply), and ``instances="connected_components"`` on any
    semantic dataset, with ``connectivity`` (4 or 8), ``min_area``, ``classes`` and ``background``
    (:class:`ConnectedComponentInstances`; ``transforms`` then apply to ``(image, target)``).

    Raises:
        DatasetError: an option the format does not take, and see each format's class.
    """
    options = _renamed_options(options)
    instances = options.pop("instances", None)
    if instances is not None:
        if instances != "connected_components":
            raise DatasetError(f"data option instances={instances!r}: the one way to derive instances from "
                               "semantic masks is instances=connected_components")
        if str(spec) == "synthetic_instances" or (str(spec) != "synthetic" and parse_data_spec(spec)[0] == "coco"):
            raise DatasetError(f"{spec} holds instances already: drop the option instances=connected_components")
        cc = {k: options.pop(k) for k in INSTANCE_OPTIONS if k in options}
        semantic = build_dataset(spec, split, None, True, seed, ignore_index, **options)
        return ConnectedComponentInstances(semantic, transforms=transforms, **cc)
    given = sorted(set(options) & set(INSTANCE_OPTIONS) - {"classes"})
    if given:
        raise DatasetError(f"data option(s) {', '.join(given)} apply to instances derived from semantic masks: add "
                           "instances=connected_components (training: `--set data_kwargs.instances=connected_components`)")
    if str(spec) == "synthetic_instances":
        name, part = parse_split(split)
        unknown = sorted(set(options) - {"num_images", "image_size"})
        if unknown:
            raise DatasetError(f"data option(s) {', '.join(unknown)} do not apply to synthetic_instances; it takes: "
                               "image_size, num_images")
        if part != slice(None):
            raise DatasetError("the synthetic instances' splits cannot be sliced; use train, val or test")
        return SyntheticInstances(name, seed=seed, transforms=transforms, **options)
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
    if fmt == "coco":
        unknown = sorted(set(options) - {"in_channels", "keep_crowd", "strict"})
        if unknown:
            raise DatasetError(f"data option(s) {', '.join(unknown)} do not apply to {root} (format 'coco'); it "
                               "takes: in_channels, keep_crowd, strict")
        return CocoInstances(root, split, transforms=transforms, **options)
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
    "CocoInstances",
    "ConnectedComponentInstances",
    "INSTANCE_OPTIONS",
    "SyntheticInstances",
    "instance_collate",
    "instance_eval_transforms",
    "instance_train_transforms",
    "write_synthetic_instances",
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
