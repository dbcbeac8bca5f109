"""The folder dataset: the on-disk layout of CamVid, ISBI 2012 and any dataset a user lays out the same way.

Layout (``root`` is the dataset folder)::

    root/classes.txt              one class name a line, in id order (required)
    root/palette.txt              optional: one "R G B" line per class (default: CamVid's colors for CamVid's
                                  classes, else the PASCAL VOC color map)
    root/images/<split>/<id>.jpg  or .png, .jpeg, .bmp, .tif, .tiff
    root/masks/<split>/<id>.png   single-channel uint8 class ids, 255 = void (ignore_index)
    root/<split>.txt              optional: the ids of the split, one a line (their order is kept)

A split whose ``masks/<split>`` folder is missing (the ISBI 2012 test set) can be predicted on but not evaluated.
A split may be sliced, ``"train[:25]"`` / ``"train[25:]"``, to carve a validation set out of a training list
deterministically (the order is that of ``<split>.txt``, or of the sorted file names).

Masks that are not class ids are read with an option rather than converted by hand: ``binary_threshold=T`` for
0/255 (or JPEG) binary masks (stored value >= T is class 1, else 0), ``color_map=FILE`` for RGB color masks.
"""

from __future__ import annotations

from pathlib import Path

from pixelwise.data.base import Sample, SegmentationDataset, lut
from pixelwise.data.io import (  # noqa: F401 (re-exported)
    IMAGE_EXTENSIONS,
    parse_split,
    read_color_map,
    read_image,
    read_mask,
)
from pixelwise.data.palette import CAMVID_CLASSES, CAMVID_PALETTE, default_palette, read_palette
from pixelwise.errors import DatasetError

def read_class_names(root: Path) -> list[str]:
    path = root / "classes.txt"
    if not path.is_file():
        raise DatasetError(
            f"{path} is missing: a dataset folder needs classes.txt with one class name a line, in id order"
        )
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise DatasetError(f"{path} is empty: write one class name a line, in id order")
    return names


def read_id_list(path: Path, images: dict[str, Path], image_dir: Path) -> list[str]:
    """The ids of a split list file, in order; every id must have an image."""
    ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    missing = [i for i in ids if i not in images]
    if missing:
        raise DatasetError(
            f"{path} lists {len(missing)} id(s) with no image in {image_dir}, e.g. {missing[0]!r}: "
            "add the images or remove the ids from the list"
        )
    return ids


def files_by_id(folder: Path, extensions=IMAGE_EXTENSIONS) -> dict[str, Path]:
    """``{stem: path}`` of the files in ``folder`` with one of ``extensions``; a PNG wins over other formats."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in extensions and (p.stem not in found or p.suffix.lower() == ".png"):
            found[p.stem] = p
    return found


class SegmentationFolder(SegmentationDataset):
    """A split of a dataset in the folder layout described in this module's docstring.

    Args:
        root: the dataset folder.
        split: split name, optionally sliced (``"train[:25]"``).
        transforms: a joint transform called as ``transforms(image, mask)`` (``torchvision.transforms.v2``).
        ignore_index: the void label in the masks (255).
        require_masks: raise if the split has no masks (evaluation and training need them).
        binary_threshold: read binary masks (0/255 PNGs, JPEGs): stored value >= threshold is class 1, else 0.
            Needs 2 classes.
        color_map: a color map file (:func:`pixelwise.data.io.read_color_map`) to read RGB color masks.
        strict: raise for an image without a mask (False: list it in ``missing_masks`` and leave it out; what
            ``pixelwise datasets check`` uses to report every problem at once).
        exif: turn images upright by their EXIF orientation (see :class:`SegmentationDataset`).

    Items are ``(image, mask)``: ``tv_tensors.Image`` uint8 (C, H, W) with C = ``in_channels`` (1 for grayscale
    datasets such as ISBI 2012, else 3), and ``tv_tensors.Mask`` int64 (H, W), or None for a split without masks.

    Raises:
        DatasetError: a missing folder or classes.txt, an empty split, an id without image or mask, an unreadable
            image, a mask of another size than its image, a mask value >= num_classes that is not ignore_index, an
            RGB color mask. Each message names the file and the fix.
    """

    format = "folder"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transforms=None,
        ignore_index: int = 255,
        require_masks: bool = False,
        binary_threshold: int | None = None,
        color_map: str | Path | None = None,
        strict: bool = True,
    ) -> None:
        self._start(root, split, transforms, ignore_index)
        if not self.root.is_dir():
            raise DatasetError(f"dataset folder {self.root} does not exist")
        self.classes = read_class_names(self.root)
        palette_file = self.root / "palette.txt"
        if palette_file.is_file():
            self.palette = read_palette(palette_file)
        elif tuple(self.classes) == CAMVID_CLASSES:  # the colors users know CamVid by
            self.palette = list(CAMVID_PALETTE)
        else:
            self.palette = default_palette(len(self.classes))
        if len(self.palette) < len(self.classes):
            raise DatasetError(f"{palette_file} has {len(self.palette)} colors for {len(self.classes)} classes")
        self.palette = self.palette[: len(self.classes)]
        if binary_threshold is not None:
            if not 0 < int(binary_threshold) < 256 or len(self.classes) != 2:
                raise DatasetError(
                    f"binary_threshold={binary_threshold}: needs a threshold in 1..255 and a dataset of 2 classes "
                    f"({self.root / 'classes.txt'} lists {len(self.classes)})"
                )
            self.mask_lut = lut({v: int(v >= int(binary_threshold)) for v in range(256)})
        if color_map is not None:
            self.color_map = read_color_map(color_map, ignore_index)

        name, part = parse_split(split)
        image_dir = self.root / "images" / name
        if not image_dir.is_dir():
            found = sorted(p.name for p in (self.root / "images").iterdir() if p.is_dir()) if (
                self.root / "images"
            ).is_dir() else []
            raise DatasetError(
                f"split {name!r} not found: {image_dir} is not a folder (splits here: {', '.join(found) or 'none'}; "
                "expected images/<split>/<id>.jpg|png)"
            )
        mask_dir = self.root / "masks" / name
        has_masks = mask_dir.is_dir() and any(mask_dir.iterdir())
        if require_masks and not has_masks:
            raise DatasetError(
                f"split {name!r} of {self.root} has no masks ({mask_dir} is missing or empty): it can be predicted on "
                "(`pixelwise predict`) but not trained on or evaluated"
            )
        images = files_by_id(image_dir)
        list_file = self.root / f"{name}.txt"
        ids = read_id_list(list_file, images, image_dir) if list_file.is_file() else sorted(images)
        ids = ids[part]
        if not ids:
            raise DatasetError(f"split {split!r} of {self.root} is empty: no images in {image_dir}")
        self._set_samples(ids, images, files_by_id(mask_dir) if has_masks else None, strict, mask_dir)


__all__ = ["Sample", "SegmentationFolder", "parse_split", "read_class_names"]
