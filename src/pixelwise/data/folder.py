"""The folder dataset: the on-disk layout of CamVid, ISBI 2012 and any dataset a user lays out the same way.

Layout (``root`` is the dataset folder)::

    root/classes.txt              one class name a line, in id order (required)
    root/palette.txt              optional: one "R G B" line per class (default: CamVid's colours for CamVid's
                                  classes, else the PASCAL VOC colour map)
    root/images/<split>/<id>.jpg  or .png, .jpeg, .bmp, .tif, .tiff
    root/masks/<split>/<id>.png   single-channel uint8 class ids, 255 = void (ignore_index)
    root/<split>.txt              optional: the ids of the split, one a line (their order is kept)

A split whose ``masks/<split>`` folder is missing (the ISBI 2012 test set) can be predicted on but not evaluated.
A split may be sliced, ``"train[:25]"`` / ``"train[25:]"``, to carve a validation set out of a training list
deterministically (the order is that of ``<split>.txt``, or of the sorted file names).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import io as tvio
from torchvision import tv_tensors

from pixelwise.data.palette import CAMVID_CLASSES, CAMVID_PALETTE, default_palette, read_palette
from pixelwise.errors import DatasetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
_SPLIT_RE = re.compile(r"^(?P<name>[^\[\]]+)(?:\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?$")
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def parse_split(split: str) -> tuple[str, slice]:
    """``"train[:25]"`` -> ``("train", slice(None, 25))``; ``"val"`` -> ``("val", slice(None))``."""
    m = _SPLIT_RE.match(split.strip())
    if not m:
        raise DatasetError(f"bad split {split!r}: write a split name, optionally sliced like 'train[:25]'")
    start = int(m["start"]) if m["start"] else None
    stop = int(m["stop"]) if m["stop"] else None
    return m["name"], slice(start, stop)


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


BINARY_MASK_HINT = (
    "they look like 0/255 binary images, not class ids. Class ids must be 0..{last} with 255 = void: "
    "convert them with `mask // 255` (0 -> 0, 255 -> 1), e.g. "
    "`Image.fromarray((np.array(Image.open(p)) // 255).astype('uint8')).save(p)`."
)


def bad_values_error(path: Path, counts: np.ndarray, num_classes: int, ignore_index: int) -> DatasetError | None:
    """The error for a mask whose value histogram ``counts`` (256,) holds ids >= num_classes other than
    ignore_index, or None. A mask of only 0 and 255 gets the 0/255 binary-image hint."""
    bad = np.flatnonzero(counts[num_classes:]) + num_classes
    bad = [int(v) for v in bad if v != ignore_index]
    if not bad:
        return None
    if bad == [255] and counts[0] + counts[255] == counts.sum():
        return DatasetError(f"mask {path} holds only 0 and 255: " + BINARY_MASK_HINT.format(last=num_classes - 1))
    shown = ", ".join(map(str, bad[:8])) + (", ..." if len(bad) > 8 else "")
    return DatasetError(
        f"mask {path} holds value(s) {shown}, but the dataset has {num_classes} classes "
        f"(ids 0..{num_classes - 1}, {ignore_index} = void). Fix the mask, or add the missing class names to "
        "classes.txt."
    )


@dataclass
class Sample:
    """Paths of one example; ``mask`` is None when the split has no masks."""

    id: str
    image: Path
    mask: Path | None


class SegmentationFolder(Dataset):
    """A split of a dataset in the folder layout described in this module's docstring.

    Args:
        root: the dataset folder.
        split: split name, optionally sliced (``"train[:25]"``).
        transforms: a joint transform called as ``transforms(image, mask)`` (``torchvision.transforms.v2``).
        ignore_index: the void label in the masks (255).
        require_masks: raise if the split has no masks (evaluation and training need them).

    Items are ``(image, mask)``: ``tv_tensors.Image`` uint8 (C, H, W) with C = ``in_channels`` (1 for grayscale
    datasets such as ISBI 2012, else 3), and ``tv_tensors.Mask`` int64 (H, W), or None for a split without masks.

    Raises:
        DatasetError: a missing folder or classes.txt, an empty split, an id without image or mask, an unreadable
            image, a mask of another size than its image, a mask value >= num_classes that is not ignore_index, an
            RGB colour mask. Each message names the file and the fix.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transforms=None,
        ignore_index: int = 255,
        require_masks: bool = False,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.transforms = transforms
        self.ignore_index = ignore_index
        if not self.root.is_dir():
            raise DatasetError(f"dataset folder {self.root} does not exist")
        self.classes = read_class_names(self.root)
        palette_file = self.root / "palette.txt"
        if palette_file.is_file():
            self.palette = read_palette(palette_file)
        elif tuple(self.classes) == CAMVID_CLASSES:  # the colours users know CamVid by
            self.palette = list(CAMVID_PALETTE)
        else:
            self.palette = default_palette(len(self.classes))
        if len(self.palette) < len(self.classes):
            raise DatasetError(f"{palette_file} has {len(self.palette)} colours for {len(self.classes)} classes")
        self.palette = self.palette[: len(self.classes)]

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
        self.has_masks = mask_dir.is_dir() and any(mask_dir.iterdir())
        if require_masks and not self.has_masks:
            raise DatasetError(
                f"split {name!r} of {self.root} has no masks ({mask_dir} is missing or empty): it can be predicted on "
                "(`pixelwise predict`) but not trained on or evaluated"
            )
        images = {p.stem: p for p in sorted(image_dir.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}
        list_file = self.root / f"{name}.txt"
        if list_file.is_file():
            ids = [line.strip() for line in list_file.read_text(encoding="utf-8").splitlines() if line.strip()]
            missing = [i for i in ids if i not in images]
            if missing:
                raise DatasetError(
                    f"{list_file} lists {len(missing)} id(s) with no image in {image_dir}, e.g. {missing[0]!r}: "
                    "add the images or remove the ids from the list"
                )
        else:
            ids = sorted(images)
        ids = ids[part]
        if not ids:
            raise DatasetError(f"split {split!r} of {self.root} is empty: no images in {image_dir}")

        masks = {}
        if self.has_masks:
            masks = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() == ".png"}
            no_mask = [i for i in ids if i not in masks]
            if no_mask:
                raise DatasetError(
                    f"{len(no_mask)} image(s) of split {name!r} have no mask, e.g. {images[no_mask[0]]} "
                    f"(expected {mask_dir / (no_mask[0] + '.png')})"
                )
        self.samples = [Sample(i, images[i], masks.get(i)) for i in ids]
        self.ids = ids
        self.in_channels = 1 if self._image_mode(self.samples[0].image) in _GRAY_MODES else 3

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    @staticmethod
    def _image_mode(path: Path) -> str:
        try:
            with Image.open(path) as im:
                return im.mode
        except (UnidentifiedImageError, OSError) as e:
            raise DatasetError(f"cannot read image {path} ({e}): replace or remove the file") from e

    def load_image(self, index: int) -> tv_tensors.Image:
        """The image, uint8 (C, H, W); C = ``in_channels``. Raises DatasetError naming an unreadable file."""
        return read_image(self.samples[index].image, self.in_channels)

    def load_mask(self, index: int) -> tv_tensors.Mask | None:
        """The mask, int64 (H, W), checked against num_classes; None for a split without masks."""
        path = self.samples[index].mask
        if path is None:
            return None
        return read_mask(path, self.num_classes, self.ignore_index)

    def __getitem__(self, index: int):
        image = self.load_image(index)
        mask = self.load_mask(index)
        if mask is not None and tuple(mask.shape) != tuple(image.shape[-2:]):
            raise _size_mismatch(self.samples[index], tuple(image.shape[-2:]), tuple(mask.shape))
        if self.transforms is not None:
            if mask is None:
                image = self.transforms(image)
            else:
                image, mask = self.transforms(image, mask)
        return image, mask

    def check(self) -> dict:
        """Scan every mask once, before a run spends time: sizes against the image headers, value ranges, and
        0/255 binary masks. Returns ``{"class_pixels": int64 (K,), "image_pixels": int64 (K,)}`` — the pixels of
        each class, and the pixels of the images that contain it (the inputs of median-frequency weights).

        Raises:
            DatasetError: as the class docstring; binary 0/255 masks are reported once for the dataset.
        """
        k = self.num_classes
        class_pixels = np.zeros(k, dtype=np.int64)
        image_pixels = np.zeros(k, dtype=np.int64)
        if not self.has_masks:
            raise DatasetError(f"split {self.split!r} of {self.root} has no masks to check")
        binary = 0
        for s in self.samples:
            try:
                with Image.open(s.image) as im:
                    size = im.size
            except (UnidentifiedImageError, OSError) as e:
                raise DatasetError(f"cannot read image {s.image} ({e}): replace or remove the file") from e
            raw = _read_mask_array(s.mask)
            if raw.shape != (size[1], size[0]):
                raise _size_mismatch(s, (size[1], size[0]), raw.shape)
            counts = np.bincount(raw.ravel(), minlength=256)
            if counts[255] and counts[0] + counts[255] == raw.size:
                binary += 1
            error = bad_values_error(s.mask, counts, k, self.ignore_index)
            if error is not None:
                raise error
            present = counts[:k] > 0
            class_pixels += counts[:k]
            image_pixels[present] += raw.size
        # With ignore_index 255 a 0/255 mask is legal (class 0 and void), but a split in which no mask holds any
        # class above 0 and some hold 255 is almost always binary images that were never converted to class ids.
        if binary and k > 1 and class_pixels[1:].sum() == 0:
            raise DatasetError(
                f"the masks of split {self.split!r} in {self.root / 'masks'} hold only 0 and 255: "
                + BINARY_MASK_HINT.format(last=k - 1)
            )
        return {"class_pixels": class_pixels, "image_pixels": image_pixels}


def _size_mismatch(sample: Sample, image_hw: tuple[int, int], mask_hw: tuple[int, int]) -> DatasetError:
    return DatasetError(
        f"image {sample.image} is {image_hw[1]}x{image_hw[0]} but its mask {sample.mask} is {mask_hw[1]}x{mask_hw[0]} "
        "(width x height): they must be the same size"
    )


_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _decode_fast(path: Path, png_color_types: tuple[int, ...]) -> torch.Tensor | None:
    """uint8 (C, H, W) straight from libjpeg-turbo / libpng through ``torchvision.io`` for the common files: any
    JPEG, and 8-bit PNGs whose IHDR colour type is in ``png_color_types`` (0 grayscale, 2 RGB). None for anything
    else or anything that fails to decode, so that Pillow handles it (and names the file in its error).

    Same pixels as Pillow (the same libraries underneath; tests/test_data.py checks every CamVid image), about 1.7x
    (JPEG) and 2.4x (PNG mask) faster per core: ``python benchmarks/data_pipeline.py``.
    """
    if _TV_DECODE is None:
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if data[:3] == _JPEG_MAGIC:
        decode = _TV_DECODE[0]
    elif data[:8] == _PNG_MAGIC and len(data) > 25 and data[24] == 8 and data[25] in png_color_types:
        decode = _TV_DECODE[1]
    else:
        return None
    try:
        with warnings.catch_warnings():
            # torchvision 0.29 announces that its decoders will move to TorchCodec; until they are gone (then
            # _TV_DECODE is None and Pillow reads everything) they are the fastest decoders a user already has.
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    except RuntimeError:  # truncated or corrupt: Pillow's path reports it, naming the file
        return None


_TV_DECODE = (getattr(tvio, "decode_jpeg", None), getattr(tvio, "decode_png", None))
_TV_DECODE = None if None in _TV_DECODE else _TV_DECODE


def read_image(path: Path, channels: int = 3) -> tv_tensors.Image:
    """Decode an image file to uint8 (channels, H, W), converting the colour mode (grayscale, RGB, palette, RGBA,
    CMYK) to ``channels`` = 1 (grayscale) or 3 (RGB). 16-bit images are scaled to 8 bits. JPEGs and 8-bit
    grayscale/RGB PNGs that already have ``channels`` channels are decoded by ``torchvision.io``; every other file,
    and every conversion, goes through Pillow.

    Raises:
        DatasetError: the file is missing, truncated or not an image (names the file).
    """
    fast = _decode_fast(Path(path), (0, 2))
    if fast is not None and fast.shape[0] == channels:
        return tv_tensors.Image(fast)
    return _read_image_pillow(path, channels)


def _read_image_pillow(path: Path, channels: int) -> tv_tensors.Image:
    try:
        with Image.open(path) as im:
            if im.mode.startswith("I;16") or im.mode in ("I", "F"):
                arr = np.asarray(im, dtype=np.float64)
                arr = np.clip(arr / (257.0 if arr.max() > 255 else 1.0), 0, 255).round().astype(np.uint8)
                im8 = Image.fromarray(arr)
            else:
                im8 = im
            arr = np.asarray(im8.convert("L" if channels == 1 else "RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"cannot read image {path} ({e}): replace or remove the file") from e
    tensor = torch.from_numpy(arr.copy())
    tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()
    return tv_tensors.Image(tensor)


def _read_mask_array(path: Path) -> np.ndarray:
    fast = _decode_fast(Path(path), (0,))  # 8-bit single-channel PNG: the usual mask; palette PNGs go to Pillow
    if fast is not None and fast.shape[0] == 1:
        return fast[0].numpy()
    return _read_mask_array_pillow(path)


def _read_mask_array_pillow(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("RGB", "RGBA"):
                raise DatasetError(
                    f"mask {path} is an {mode} colour image: masks must be single-channel class ids "
                    "(uint8 PNG, mode L or P). Convert the colours to ids with the dataset's colour map first"
                )
            arr = np.array(im)
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetError(f"cannot read mask {path} ({e}): replace or remove the file") from e
    if arr.ndim != 2:
        raise DatasetError(f"mask {path} has shape {arr.shape}: masks must be single-channel (H, W) class ids")
    if arr.dtype != np.uint8:
        if arr.min() < 0 or arr.max() > 255:
            raise DatasetError(
                f"mask {path} is {arr.dtype} with values up to {arr.max()}: masks must be uint8 class ids (0..254, "
                "255 = void)"
            )
        arr = arr.astype(np.uint8)
    return arr


def read_mask(path: Path, num_classes: int, ignore_index: int = 255) -> tv_tensors.Mask:
    """Read a class-id mask to int64 (H, W) and check its values.

    Raises:
        DatasetError: unreadable file, colour mask, or ids >= num_classes other than ignore_index; a mask of only
            0 and 255 with a class count below 255 is called out as a probable 0/255 binary image.
    """
    arr = _read_mask_array(path)
    error = bad_values_error(path, np.bincount(arr.ravel(), minlength=256), num_classes, ignore_index)
    if error is not None:
        raise error
    return tv_tensors.Mask(torch.from_numpy(arr.astype(np.int64)))
