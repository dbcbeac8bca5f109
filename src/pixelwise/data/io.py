"""Reading images and class-id masks from disk, with errors that name the file.

Images decode to ``tv_tensors.Image`` uint8 (C, H, W), masks to uint8 (H, W) class ids (255 = void). JPEGs go
through ``torchvision.io`` (libjpeg-turbo, about 2.4x Pillow's speed per core: ``python benchmarks/data_pipeline.py``);
every other file (PNG, TIFF, BMP, corrupt JPEGs) goes through Pillow, which gives the same pixels. PNGs never reach
torchvision: its ``decode_png`` (0.29) kills the process with a segmentation fault on any libpng error (a corrupt or
short IDAT stream, a bad filter byte), where Pillow raises; for PNG the two are within 30 % of each other anyway.

Hostile files: a truncated, corrupt, zero-byte or non-image file raises :class:`DatasetError` naming it; an image
of more than twice ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (Pillow's decompression-bomb limit, 2 x 89.5 M by default)
is refused before it is decoded, by either decoder. JPEGs with an EXIF orientation tag are turned upright as a
viewer (and an annotation tool) shows them, unless ``exif=False``.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision import io as tvio
from torchvision import tv_tensors

from pixelwise.errors import DatasetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
#: Pillow modes read as one-channel images.
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
EXIF_ORIENTATION = 0x0112
_PILLOW_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)

BINARY_MASK_HINT = (
    "they look like 0/255 binary images, not class ids. Class ids must be 0..{last} with 255 = void: "
    "read them with binary_threshold=128 (`--binary-threshold 128`; training: "
    "`--set data_kwargs.binary_threshold=128`), or convert the files with `mask // 255` (0 -> 0, 255 -> 1)."
)


class DataProblem(DatasetError):
    """A mask that cannot be used as it is; ``kind`` names the problem for :mod:`pixelwise.data.check`'s report
    (``"color_mask"``, ``"bad_values"``, ``"binary_mask"``, ``"jpeg_mask"``, ``"undefined_values"``,
    ``"unreadable"``), ``values`` holds the offending mask values or colors."""

    def __init__(self, message: str, kind: str = "unreadable", values=()) -> None:
        # kind has a default so that PyTorch can rebuild the error from its message alone when a DataLoader worker
        # raises it (else it turns it into a RuntimeError)
        super().__init__(message)
        self.kind = kind
        self.values = list(values)


def unreadable(path: Path, error: Exception, what: str = "image") -> DataProblem:
    if isinstance(error, Image.DecompressionBombError):
        return DataProblem(
            f"{what} {path} is refused as a possible decompression bomb ({error}). If you trust the file, raise "
            "the limit: `PIL.Image.MAX_IMAGE_PIXELS = None` (or a larger pixel count) before loading", "unreadable"
        )
    return DataProblem(f"cannot read {what} {path} ({error}): replace or remove the file", "unreadable")


def bad_values_error(path: Path, counts: np.ndarray, num_classes: int, ignore_index: int) -> DataProblem | None:
    """The error for a mask whose value histogram ``counts`` (256,) holds ids >= num_classes other than
    ignore_index, or None. A mask of only 0 and 255 gets the 0/255 binary-image hint; a JPEG mask the lossy-file
    hint."""
    bad = np.flatnonzero(counts[num_classes:]) + num_classes
    bad = [int(v) for v in bad if v != ignore_index]
    if not bad:
        return None
    if bad == [255] and counts[0] + counts[255] == counts.sum():
        return DataProblem(
            f"mask {path} holds only 0 and 255: " + BINARY_MASK_HINT.format(last=num_classes - 1), "binary_mask", bad
        )
    shown = ", ".join(map(str, bad[:8])) + (", ..." if len(bad) > 8 else "")
    if Path(path).suffix.lower() in (".jpg", ".jpeg"):
        return DataProblem(
            f"mask {path} is a JPEG and holds value(s) {shown} besides the class ids: lossy compression blurs the "
            "edges between classes into in-between values. Save masks as PNG; a binary JPEG mask can be read with "
            "binary_threshold=128 (`--binary-threshold 128`)", "jpeg_mask", bad
        )
    return DataProblem(
        f"mask {path} holds value(s) {shown}, but the dataset has {num_classes} classes "
        f"(ids 0..{num_classes - 1}, {ignore_index} = void). Fix the mask, or add the missing class names to "
        "classes.txt.", "bad_values", bad
    )


def size_mismatch(image: Path, mask: Path, image_hw: tuple[int, int], mask_hw: tuple[int, int]) -> DataProblem:
    """The error for an image and its mask of different sizes (``image_hw`` and ``mask_hw`` are (H, W))."""
    return DataProblem(
        f"image {image} is {image_hw[1]}x{image_hw[0]} but its mask {mask} is {mask_hw[1]}x{mask_hw[0]} "
        "(width x height): they must be the same size", "size_mismatch"
    )


_JPEG_MAGIC = b"\xff\xd8\xff"


def _decode_fast(path: Path, exif: bool = True) -> torch.Tensor | None:
    """uint8 (C, H, W) of a JPEG straight from libjpeg-turbo through ``torchvision.io``; None for anything else or
    anything that fails to decode, so that Pillow handles it (and names the file in its error).

    Same pixels as Pillow (the same library underneath; tests/test_data.py checks every CamVid image).

    Raises:
        DatasetError: the image is over Pillow's decompression-bomb limit (checked from the header, before
            decoding: torchvision has no limit of its own).
    """
    if _TV_DECODE_JPEG is None:
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if data[:3] != _JPEG_MAGIC:
        return None
    try:
        with Image.open(io.BytesIO(data)):  # the header only: Pillow's own bomb check runs here
            pass
    except _PILLOW_ERRORS as e:
        if isinstance(e, Image.DecompressionBombError):
            raise unreadable(path, e) from e
        return None
    try:
        with warnings.catch_warnings():
            # torchvision 0.29 announces that its decoders will move to TorchCodec; until they are gone (then
            # _TV_DECODE_JPEG is None and Pillow reads everything) they are the fastest decoders a user already has.
            warnings.simplefilter("ignore", DeprecationWarning)
            return _TV_DECODE_JPEG(torch.frombuffer(bytearray(data), dtype=torch.uint8), apply_exif_orientation=exif)
    except RuntimeError:  # truncated or corrupt: Pillow's path reports it, naming the file
        return None


_TV_DECODE_JPEG = getattr(tvio, "decode_jpeg", None)


def read_image(path: Path, channels: int = 3, exif: bool = True) -> tv_tensors.Image:
    """Decode an image file to uint8 (channels, H, W), converting the color mode (grayscale, RGB, palette, RGBA,
    CMYK) to ``channels`` = 1 (grayscale) or 3 (RGB). 16-bit images are scaled to 8 bits. ``exif=True`` applies
    the file's EXIF orientation (a phone photo stored sideways comes out upright); ``exif=False`` returns the
    stored pixel order.

    Raises:
        DatasetError: the file is missing, empty, truncated, not an image, or over the decompression-bomb limit
            (names the file and the fix).
    """
    fast = _decode_fast(Path(path), exif)
    if fast is not None and fast.shape[0] == channels:
        return tv_tensors.Image(fast)
    return _read_image_pillow(path, channels, exif)


def _read_image_pillow(path: Path, channels: int, exif: bool = True) -> tv_tensors.Image:
    try:
        with Image.open(path) as im:
            if exif:
                im = ImageOps.exif_transpose(im)
            if im.mode.startswith("I;16") or im.mode in ("I", "F"):
                arr = np.asarray(im, dtype=np.float64)
                arr = np.clip(arr / (257.0 if arr.max() > 255 else 1.0), 0, 255).round().astype(np.uint8)
                im8 = Image.fromarray(arr)
            else:
                im8 = im
            arr = np.asarray(im8.convert("L" if channels == 1 else "RGB"))
    except _PILLOW_ERRORS as e:
        raise unreadable(path, e) from e
    tensor = torch.from_numpy(arr.copy())
    tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()
    return tv_tensors.Image(tensor)


def image_header(path: Path) -> tuple[str, tuple[int, int], int]:
    """``(mode, (height, width), exif_orientation)`` of an image file, from its header (nothing is decoded). The
    size is the stored one; orientations 5-8 swap height and width when applied.

    Raises:
        DatasetError: the file cannot be opened as an image (names it).
    """
    try:
        with Image.open(path) as im:
            orientation = im.getexif().get(EXIF_ORIENTATION, 1) if im.format in ("JPEG", "TIFF", "PNG") else 1
            return im.mode, (im.size[1], im.size[0]), int(orientation or 1)
    except _PILLOW_ERRORS as e:
        raise unreadable(path, e) from e


def read_mask_array(path: Path, color_map: dict[tuple[int, int, int], int] | None = None) -> np.ndarray:
    """The stored values of a mask file, uint8 (H, W), read with Pillow (palette PNGs as their indices; 16-bit
    values above 255 refused). With ``color_map`` ``{(R, G, B): class id}`` an RGB color mask is turned into ids.

    Raises:
        DataProblem: unreadable file; an RGB mask without a color map (kind ``"color_mask"``, the colors found
            in ``values``); a color absent from the color map; values above 255.
    """
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("RGB", "RGBA", "CMYK", "YCbCr") or (color_map is not None and mode == "P"):
                rgb = np.array(im.convert("RGB"))
            else:
                arr = np.array(im)
                rgb = None
    except _PILLOW_ERRORS as e:
        raise unreadable(path, e, "mask") from e
    if rgb is not None:
        return _colors_to_ids(path, rgb, color_map, mode)
    if arr.ndim != 2:
        raise DataProblem(f"mask {path} has shape {arr.shape}: masks must be single-channel (H, W) class ids",
                          "unreadable")
    if arr.dtype != np.uint8:
        if arr.min() < 0 or arr.max() > 255:
            raise DataProblem(
                f"mask {path} is {arr.dtype} with values up to {arr.max()}: masks must be uint8 class ids (0..254, "
                "255 = void)", "bad_values", [int(arr.max())]
            )
        arr = arr.astype(np.uint8)
    return arr


def _colors_to_ids(path: Path, rgb: np.ndarray, color_map: dict | None, mode: str) -> np.ndarray:
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    found, inverse, counts = np.unique(codes.ravel(), return_inverse=True, return_counts=True)
    colors = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in found.tolist()]
    by_count = [colors[i] for i in np.argsort(-counts)]
    if color_map is None:
        shown = ", ".join(" ".join(map(str, c)) for c in by_count[:6]) + (", ..." if len(by_count) > 6 else "")
        raise DataProblem(
            f"mask {path} is an {mode} color image ({len(colors)} colors, most frequent: {shown}): masks must be "
            "single-channel class ids (uint8 PNG, mode L or P). Read color masks with a color map: "
            "`--color-map FILE` (training: `--set data_kwargs.color_map=FILE`), FILE holding one 'R G B' "
            "line per class id and optionally a line 'void R G B'", "color_mask", by_count
        )
    unknown = [c for c in by_count if c not in color_map]
    if unknown:
        shown = ", ".join(" ".join(map(str, c)) for c in unknown[:6]) + (", ..." if len(unknown) > 6 else "")
        hint = (" (a JPEG color mask: lossy compression invents colors; save masks as PNG)"
                if Path(path).suffix.lower() in (".jpg", ".jpeg") else "")
        raise DataProblem(
            f"mask {path} holds {len(unknown)} color(s) that the color map does not list: {shown}{hint}. Add them "
            "to the color map file (one 'R G B' line per class id, 'void R G B' for void)", "color_mask", unknown
        )
    lut = np.array([color_map[c] for c in colors], dtype=np.uint8)
    return lut[inverse].reshape(codes.shape)


def read_color_map(path: str | Path, ignore_index: int = 255) -> dict[tuple[int, int, int], int]:
    """Read a color map file: one ``R G B`` line per class id, in order, plus optional ``void R G B`` lines whose
    colors become ``ignore_index``. Blank lines and ``#`` comments are skipped.

    Raises:
        DatasetError: missing file, a malformed line, or a color listed twice (names the file and line).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read color map {path} ({e}): write one 'R G B' line per class id") from e
    mapping: dict[tuple[int, int, int], int] = {}
    next_id = 0
    for n, raw in enumerate(lines, start=1):
        fields = raw.split("#", 1)[0].replace(",", " ").split()
        if not fields:
            continue
        void = fields[0].lower() == "void"
        values = fields[1:] if void else fields
        if len(values) != 3 or not all(v.isdigit() and int(v) <= 255 for v in values):
            raise DatasetError(f"{path}, line {n}: bad color map line {raw.strip()!r}: expected 'R G B' (0..255) "
                               "or 'void R G B'")
        color = (int(values[0]), int(values[1]), int(values[2]))
        if color in mapping:
            raise DatasetError(f"{path}, line {n}: color {color} is listed twice")
        mapping[color] = ignore_index if void else next_id
        next_id += 0 if void else 1
    if next_id == 0:
        raise DatasetError(f"color map {path} lists no class color: write one 'R G B' line per class id")
    return mapping


def read_mask(path: Path, num_classes: int, ignore_index: int = 255) -> tv_tensors.Mask:
    """Read a class-id mask to int64 (H, W) and check its values.

    Raises:
        DatasetError: unreadable file, color mask, or ids >= num_classes other than ignore_index; a mask of only
            0 and 255 with a class count below 255 is called out as a probable 0/255 binary image.
    """
    arr = read_mask_array(path)
    error = bad_values_error(path, np.bincount(arr.ravel(), minlength=256), num_classes, ignore_index)
    if error is not None:
        raise error
    return tv_tensors.Mask(torch.from_numpy(arr.astype(np.int64)))


_SPLIT_RE = re.compile(r"^(?P<name>[^\[\]]+)(?:\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?$")


def parse_split(split: str) -> tuple[str, slice]:
    """``"train[:25]"`` -> ``("train", slice(None, 25))``; ``"val"`` -> ``("val", slice(None))``."""
    m = _SPLIT_RE.match(split.strip())
    if not m:
        raise DatasetError(f"bad split {split!r}: write a split name, optionally sliced like 'train[:25]'")
    start = int(m["start"]) if m["start"] else None
    stop = int(m["stop"]) if m["stop"] else None
    return m["name"], slice(start, stop)
