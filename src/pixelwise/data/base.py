"""The base of every dataset read from image and mask files: the folder layout, VOC, Cityscapes, ADE20K.

A subclass finds its files and calls :meth:`SegmentationDataset._set_samples`; the base reads, maps and checks
masks, keeps image and mask aligned, and scans a split for :mod:`pixelwise.data.check`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from pixelwise.data.check import scan
from pixelwise.data.io import (
    GRAY_MODES,
    DataProblem,
    bad_values_error,
    image_header,
    read_image,
    read_mask_array,
    size_mismatch,
)
from pixelwise.errors import DatasetError


@dataclass
class Sample:
    """Paths of one example; ``mask`` is None when the split has no masks."""

    id: str
    image: Path
    mask: Path | None


class SegmentationDataset(Dataset):
    """A split of image and mask files with its metadata.

    Items are ``(image, mask)``: ``tv_tensors.Image`` uint8 (C, H, W) with C = ``in_channels``, and
    ``tv_tensors.Mask`` int64 (H, W) of class ids in ``0..num_classes-1`` or ``ignore_index`` (void), or None for
    a split without masks. A joint ``transforms(image, mask)`` (``torchvision.transforms.v2``) is applied last.

    Attributes set by subclasses: ``root``, ``split``, ``classes``, ``palette``, ``ignore_index``; optionally
    ``mask_lut`` — int16 (256,), stored mask value -> class id or ``ignore_index``, -1 for values the format does
    not define (Cityscapes' labelIds -> trainIds, ADE20K's zero-label reduction, a binary threshold) — with
    ``lut_hint`` explaining the stored values, and ``color_map`` ``{(R, G, B): id}`` for RGB color masks.

    EXIF: images are turned upright by their EXIF orientation (as annotation tools show them); when the mask
    fits only the stored orientation (it was made from the stored pixels), the stored orientation is used. Masks
    are read as stored. Either way image and mask stay aligned, or the size mismatch is an error.

    Raises:
        DatasetError: naming the file and the fix, for unreadable files, masks that do not fit their image, mask
            values that are not class ids.
    """

    format = "files"
    mask_lut: np.ndarray | None = None
    lut_hint = ""
    color_map: dict | None = None
    transforms = None

    # -- set-up, for subclasses ------------------------------------------------------------------------------------
    def _start(self, root, split: str, transforms, ignore_index: int, void_is_255: str | None = None) -> None:
        """Set ``root``, ``split``, ``transforms`` and ``ignore_index``. A format whose files mark void with 255
        (named by ``void_is_255``) refuses another ignore_index."""
        self.root, self.split, self.transforms, self.ignore_index = Path(root), split, transforms, ignore_index
        if void_is_255 and ignore_index != 255:
            raise DatasetError(f"{void_is_255} marks void with 255; leave ignore_index at 255 (got {ignore_index})")

    def _set_samples(self, ids: list[str], images: dict[str, Path], masks: dict[str, Path] | None,
                     strict: bool = True, mask_dir: Path | None = None, in_channels: int | None = None) -> None:
        """Pair ``ids`` with their image and mask files. ``masks=None``: the split has no masks. Ids without a
        mask raise when ``strict`` (else they are listed in ``missing_masks`` and left out); masks of ids that
        have no image are listed in ``orphan_masks``."""
        if not ids:
            raise DatasetError(f"split {self.split!r} of {self.root} is empty: no images found")
        self.has_masks = masks is not None
        self.missing_masks: list[Path] = []
        self.orphan_masks: list[Path] = sorted(p for i, p in (masks or {}).items() if i not in images)
        if masks is not None:
            no_mask = [i for i in ids if i not in masks]
            if no_mask and strict:
                where = f" (expected {mask_dir / (no_mask[0] + '.png')})" if mask_dir is not None else ""
                raise DatasetError(
                    f"{len(no_mask)} image(s) of split {self.split!r} have no mask, e.g. {images[no_mask[0]]}{where}"
                    ": add the masks, or list only the ids that have one in the split's list file"
                )
            self.missing_masks = [images[i] for i in no_mask]
            ids = [i for i in ids if i in masks]
            if not ids:
                raise DatasetError(f"no image of split {self.split!r} of {self.root} has a mask")
        self.samples = [Sample(i, images[i], masks[i] if masks is not None else None) for i in ids]
        self.ids = ids
        if in_channels is None:
            mode = image_header(self.samples[0].image)[0]
            in_channels = 1 if mode in GRAY_MODES else 3
        self.in_channels = in_channels

    # -- reading ---------------------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def raw_mask(self, path: Path) -> np.ndarray:
        """The mask file's stored values, uint8 (H, W) (a subclass reads other formats, e.g. SBD's .mat)."""
        return read_mask_array(path, self.color_map)

    def mask_array(self, path: Path) -> np.ndarray:
        """Class ids of a mask file, uint8 (H, W), after ``mask_lut``. Raises DataProblem for undefined values."""
        arr = self.raw_mask(path)
        if self.mask_lut is None:
            return arr
        mapped = self.mask_lut[arr]
        if (mapped < 0).any():
            undefined = [int(v) for v in np.unique(arr[mapped < 0])]
            shown = ", ".join(map(str, undefined[:8])) + (", ..." if len(undefined) > 8 else "")
            raise DataProblem(f"mask {path} holds value(s) {shown}, which {self.lut_hint}", "undefined_values",
                              undefined)
        return mapped.astype(np.uint8)

    def load_image(self, index: int, exif: bool = True) -> tv_tensors.Image:
        """The image, uint8 (C, H, W); C = ``in_channels``. Raises DatasetError naming an unreadable file."""
        return read_image(self.samples[index].image, self.in_channels, exif)

    def load_mask(self, index: int) -> tv_tensors.Mask | None:
        """The mask, int64 (H, W), checked against num_classes; None for a split without masks."""
        path = self.samples[index].mask
        if path is None:
            return None
        arr = self.mask_array(path)
        error = bad_values_error(path, np.bincount(arr.ravel(), minlength=256), self.num_classes, self.ignore_index)
        if error is not None:
            raise error
        return tv_tensors.Mask(torch.from_numpy(arr.astype(np.int64)))

    def __getitem__(self, index: int):
        image = self.load_image(index)
        mask = self.load_mask(index)
        if mask is not None and tuple(mask.shape) != tuple(image.shape[-2:]):
            stored = self.load_image(index, exif=False)  # a mask drawn on the stored (not upright) pixels
            if tuple(mask.shape) != tuple(stored.shape[-2:]):
                sample = self.samples[index]
                raise size_mismatch(sample.image, sample.mask, tuple(stored.shape[-2:]), tuple(mask.shape))
            image = stored
        if self.transforms is not None:
            if mask is None:
                image = self.transforms(image)
            else:
                image, mask = self.transforms(image, mask)
        return image, mask

    # -- checks ----------------------------------------------------------------------------------------------------
    def check(self) -> dict:
        """Scan every mask once, before a run spends time: sizes against the image headers, values, 0/255 binary
        and color masks (:func:`pixelwise.data.check.scan`). Returns ``{"class_pixels": int64 (K,),
        "image_pixels": int64 (K,)}`` — the pixels of each class, and the pixels of the images that contain it
        (the inputs of median-frequency weights).

        Raises:
            DatasetError: the first problem found, naming its file and the fix, and how many more there are.
        """
        if not self.has_masks:
            raise DatasetError(f"split {self.split!r} of {self.root} has no masks to check")
        report = scan(self)
        report.raise_first()
        return {"class_pixels": report.class_pixels, "image_pixels": report.image_pixels}


def lut(mapping: dict[int, int], undefined: int = -1) -> np.ndarray:
    """int16 (256,) lookup table from ``{stored value: class id}``; other values map to ``undefined``."""
    table = np.full(256, undefined, dtype=np.int16)
    for k, v in mapping.items():
        table[k] = v
    return table
