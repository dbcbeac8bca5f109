"""Label checks: scan a dataset split and report every problem at once, each with its fix.

``pixelwise datasets check DIR`` prints :meth:`DatasetReport.format` for each split; training runs the same scan
(:meth:`SegmentationDataset.check`) and stops at the first problem before any time is spent. The report holds the
class histogram, images without masks and masks without images, image/mask size mismatches, and suspicious masks:
0/255 binary images, RGB color masks, JPEG masks with in-between values, values above the class count, values the
dataset's format does not define.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pixelwise.data.io import BINARY_MASK_HINT, DataProblem, bad_values_error, image_header, size_mismatch
from pixelwise.errors import DatasetError

#: Problem kinds, in report order, with a one-line title.
KINDS = {
    "unreadable": "unreadable files",
    "missing_mask": "images without a mask",
    "orphan_mask": "masks without an image",
    "size_mismatch": "image and mask of different sizes",
    "binary_mask": "0/255 binary masks",
    "color_mask": "RGB color masks",
    "jpeg_mask": "JPEG masks with in-between values",
    "bad_values": "values above the class count",
    "undefined_values": "values the format does not define",
}


@dataclass
class Problem:
    kind: str  # a key of KINDS
    path: Path
    message: str  # names the file and the fix


@dataclass
class DatasetReport:
    """What :func:`scan` found in one split. ``class_pixels`` int64 (K,) counts each class's pixels,
    ``image_pixels`` int64 (K,) the pixels of the images containing it; ``void_pixels`` the ``ignore_index``
    pixels; ``exif_rotated`` the images carrying an EXIF orientation other than upright."""

    name: str
    split: str
    classes: list[str]
    num_images: int
    class_pixels: np.ndarray
    image_pixels: np.ndarray
    void_pixels: int = 0
    images_with_class: np.ndarray | None = None
    problems: list[Problem] = field(default_factory=list)
    exif_rotated: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_first(self) -> None:
        """Raise the first problem as a DatasetError (its message names the file and the fix)."""
        if not self.problems:
            return
        more = len(self.problems) - 1
        tail = (f" ({more} more problem(s) in split {self.split!r}: list them all with `pixelwise datasets check`)"
                if more else "")
        raise DatasetError(self.problems[0].message + tail)

    def format(self, max_examples: int = 3) -> str:
        """The report as text: the class histogram, then the problems grouped by kind (a few examples each)."""
        total = int(self.class_pixels.sum()) + self.void_pixels
        lines = [f"{self.name}, split {self.split!r}: {self.num_images} images, {len(self.classes)} classes"]
        if total:
            width = max(len(c) for c in self.classes)
            lines.append(f"  {'id':>3}  {'class':<{width}}  {'pixels %':>8}  {'images':>6}")
            for k, name in enumerate(self.classes):
                share = 100 * self.class_pixels[k] / total
                images = int(self.images_with_class[k]) if self.images_with_class is not None else 0
                flag = "   <- never labelled" if self.class_pixels[k] == 0 else ""
                lines.append(f"  {k:>3}  {name:<{width}}  {share:>8.2f}  {images:>6}{flag}")
            lines.append(f"  void (ignore_index): {100 * self.void_pixels / total:.2f} % of the pixels")
        if self.exif_rotated:
            lines.append(f"  {len(self.exif_rotated)} image(s) carry an EXIF orientation, e.g. {self.exif_rotated[0]}: "
                         "they are read upright, or as stored where only that fits the mask")
        if not self.problems:
            lines.append("  no problems found")
            return "\n".join(lines)
        lines.append(f"  {len(self.problems)} problem(s):")
        for kind, title in KINDS.items():
            found = [p for p in self.problems if p.kind == kind]
            if not found:
                continue
            lines.append(f"  - {title}: {len(found)}")
            for p in found[:max_examples]:
                lines.append(f"      {p.message}")
            if len(found) > max_examples:
                lines.append(f"      ... and {len(found) - max_examples} more")
        return "\n".join(lines)


def scan(dataset, progress: bool = False) -> DatasetReport:
    """Read every mask of ``dataset`` (a :class:`~pixelwise.data.base.SegmentationDataset` with masks) and every
    image header; collect every problem instead of stopping at the first.

    Returns:
        the :class:`DatasetReport`.
    """
    k = dataset.num_classes
    report = DatasetReport(
        name=f"{dataset.root} ({dataset.format})", split=dataset.split, classes=list(dataset.classes),
        num_images=len(dataset), class_pixels=np.zeros(k, np.int64), image_pixels=np.zeros(k, np.int64),
        images_with_class=np.zeros(k, np.int64),
    )
    add = report.problems.append
    for path in getattr(dataset, "missing_masks", []):
        add(Problem("missing_mask", path, f"image {path} has no mask: add it, or leave the image out of the split"))
    for path in getattr(dataset, "orphan_masks", []):
        add(Problem("orphan_mask", path, f"mask {path} has no image: add the image, or remove the mask "
                                         "(a renamed file?)"))
    binary = 0
    samples = dataset.samples
    if progress:
        from tqdm import tqdm

        samples = tqdm(samples, desc=f"checking {dataset.split}", unit="mask")
    for s in samples:
        try:
            _, stored_hw, orientation = image_header(s.image)
        except DataProblem as e:
            add(Problem(e.kind, s.image, str(e)))
            try:  # the mask may be broken too: report both files at once
                dataset.mask_array(s.mask)
            except DataProblem as e:
                add(Problem(e.kind, s.mask, str(e)))
            continue
        if orientation != 1:
            report.exif_rotated.append(s.image)
        try:
            ids = dataset.mask_array(s.mask)
        except DataProblem as e:
            add(Problem(e.kind, s.mask, str(e)))
            continue
        upright_hw = stored_hw[::-1] if orientation >= 5 else stored_hw
        if ids.shape not in (stored_hw, upright_hw):
            add(Problem("size_mismatch", s.mask, str(size_mismatch(s.image, s.mask, stored_hw, ids.shape))))
            continue
        counts = np.bincount(ids.ravel(), minlength=256)
        if counts[255] and counts[0] + counts[255] == ids.size:
            binary += 1
        error = bad_values_error(s.mask, counts, k, dataset.ignore_index)
        if error is not None:
            add(Problem(error.kind, s.mask, str(error)))
            continue
        present = counts[:k] > 0
        report.class_pixels += counts[:k]
        report.image_pixels[present] += ids.size
        report.images_with_class += present
        report.void_pixels += int(counts[dataset.ignore_index]) if dataset.ignore_index < 256 else 0
    # With ignore_index 255 a 0/255 mask is legal (class 0 and void), but a split in which no mask holds any class
    # above 0 and some hold 255 is almost always binary images that were never converted to class ids.
    if binary and k > 1 and report.class_pixels[1:].sum() == 0 and dataset.mask_lut is None:
        where = dataset.samples[0].mask.parent
        add(Problem("binary_mask", where, f"the masks of split {dataset.split!r} in {where} hold only 0 and 255: "
                    + BINARY_MASK_HINT.format(last=k - 1)))
    return report
