"""Class color palettes: the PASCAL VOC color map, the CamVid colors, and palette files.

A palette is a sequence of ``(R, G, B)`` tuples of ints in ``0..255``; entry ``k`` is the color of class id ``k``.
Pixels whose id is the dataset's ``ignore_index`` (void, 255 by default) are drawn in :data:`VOID_COLOR`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pixelwise.errors import DatasetError

__all__ = [
    "CAMVID_CLASSES",
    "CAMVID_PALETTE",
    "VOID_COLOR",
    "default_palette",
    "read_palette",
]

RGB = tuple[int, int, int]

#: Color of void (``ignore_index``) pixels: white, as the VOC devkit's border pixels show it.
VOID_COLOR: RGB = (255, 255, 255)

#: Class names of the SegNet 11-class CamVid labelling, in class-id order.
CAMVID_CLASSES: tuple[str, ...] = (
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
)

#: Colors of the SegNet 11-class CamVid labelling, in the order of :data:`CAMVID_CLASSES`.
CAMVID_PALETTE: tuple[RGB, ...] = (
    (128, 128, 128),  # Sky
    (128, 0, 0),  # Building
    (192, 192, 128),  # Pole
    (128, 64, 128),  # Road
    (60, 40, 222),  # Pavement
    (128, 128, 0),  # Tree
    (192, 128, 128),  # SignSymbol
    (64, 64, 128),  # Fence
    (64, 0, 128),  # Car
    (64, 64, 0),  # Pedestrian
    (0, 128, 192),  # Bicyclist
)


def default_palette(num_classes: int) -> list[RGB]:
    """Return the PASCAL VOC color map for class ids ``0 .. num_classes - 1``.

    This is the VOC devkit's ``labelcolormap``: the bits of the class id are dealt out in turn to R, G and B,
    most significant color bit first, so class 0 is black, 1 is ``(128, 0, 0)``, 2 ``(0, 128, 0)``,
    3 ``(128, 128, 0)``, 4 ``(0, 0, 128)`` and 15 ``(192, 128, 128)``. Colors are distinct for ids below 2**24.

    Raises:
        ValueError: ``num_classes`` is negative or not an int.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise ValueError(f"num_classes must be an int, got {num_classes!r}")
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")
    colors: list[RGB] = []
    for class_id in range(num_classes):
        r = g = b = 0
        c = class_id
        for j in range(8):
            shift = 7 - j
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colors.append((r, g, b))
    return colors


_SEPARATORS = re.compile(r"[\s,]+")


def read_palette(path: str | os.PathLike[str]) -> list[RGB]:
    """Read a palette file: one ``R G B`` line per class id, in order.

    Values are ints in ``0..255`` separated by spaces, tabs or commas. Blank lines and ``#`` comments (whole-line
    or after the color) are skipped; they do not take a class id.

    Raises:
        DatasetError: the file is missing or unreadable, holds no color, or a line is not three ints in
            ``0..255``; the message names the file and the line number.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"palette file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read palette file {path}: {exc}") from None

    colors: list[RGB] = []
    for line_no, raw in enumerate(text.splitlines(), start=1):
        content = raw.split("#", 1)[0].strip()
        if not content:
            continue
        fields = [f for f in _SEPARATORS.split(content) if f]
        problem = None
        values: list[int] = []
        if len(fields) != 3:
            problem = f"expected 3 values 'R G B', found {len(fields)}"
        else:
            for field in fields:
                try:
                    value = int(field)
                except ValueError:
                    problem = f"{field!r} is not an integer"
                    break
                if not 0 <= value <= 255:
                    problem = f"{value} is outside 0..255"
                    break
                values.append(value)
        if problem is not None:
            raise DatasetError(f"{path}, line {line_no}: bad palette line {raw.strip()!r}: {problem}")
        colors.append((values[0], values[1], values[2]))

    if not colors:
        raise DatasetError(f"palette file {path} holds no color (write one 'R G B' line per class)")
    return colors
