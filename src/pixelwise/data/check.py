"""Label checks: scan a dataset split and report every problem at once, each with its fix.

``pixelwise datasets check DIR`` prints :meth:`DatasetReport.format` for each split; training runs the same scan
(:meth:`SegmentationDataset.check`) and stops at the first problem before any time is spent. The report holds the
class histogram, images without masks and masks without images, image/mask size mismatches, and suspicious masks:
0/255 binary images, RGB color masks, JPEG masks with in-between values, values above the class count, values the
dataset's format does not define.

COCO instance data (``instances_<split>.json`` beside ``images/<split>/``) is checked by :func:`scan_coco`: JSON that
does not parse or lacks the ``images`` / ``annotations`` / ``categories`` lists, malformed entries, duplicate image,
annotation or category ids, listed images missing on disk (or unreadable, or of another size than the JSON says),
annotations pointing at an unknown image or category id, empty or degenerate segmentations (polygons of fewer than 3
points, RLEs of another size than their image), and boxes outside their image. Its report counts instances per class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pixelwise.data.io import (
    BINARY_MASK_HINT,
    DataProblem,
    bad_values_error,
    image_header,
    parse_split,
    size_mismatch,
)
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
    # COCO instance annotations (scan_coco)
    "not_json": "annotation files that are not COCO JSON",
    "bad_entry": "malformed image, annotation or category entries",
    "duplicate_id": "duplicate ids",
    "missing_image": "listed images missing on disk",
    "orphan_image": "image files the JSON does not list",
    "unknown_image": "annotations of an unknown image id",
    "unknown_category": "annotations of an unknown category id",
    "bad_segmentation": "empty or degenerate segmentations",
    "bad_box": "boxes outside their image",
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
    #: "pixels" (semantic masks) or "instances" (COCO: ``class_pixels`` then counts the non-crowd instances)
    unit: str = "pixels"

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
        if total and self.unit == "instances":
            width = max(len(c) for c in self.classes)
            lines.append(f"  {total} instances (crowd regions not counted); label, class, instances, images:")
            lines.append(f"  {'id':>3}  {'class':<{width}}  {'instances':>9}  {'images':>6}")
            for k, name in enumerate(self.classes):
                images = int(self.images_with_class[k]) if self.images_with_class is not None else 0
                flag = "   <- no instance" if self.class_pixels[k] == 0 else ""
                lines.append(f"  {k + 1:>3}  {name:<{width}}  {int(self.class_pixels[k]):>9}  {images:>6}{flag}")
        elif total:
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


# -- COCO instance annotations ---------------------------------------------------------------------------------------
@dataclass
class CocoCheck:
    """What :func:`check_coco` found in one COCO JSON: ``problems`` (each names the file and the fix), and the
    entries they concern, which a lenient reader leaves out: ``bad_images`` (image ids), ``bad_annotations``
    (indices into ``annotations``). ``data`` is the parsed JSON (None when it does not parse)."""

    data: dict | None
    problems: list[Problem] = field(default_factory=list)
    bad_images: set = field(default_factory=set)
    bad_annotations: set = field(default_factory=set)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_coco_json(path: Path) -> tuple[dict | None, Problem | None]:
    """``(data, None)`` for a COCO instances JSON with ``images``, ``annotations`` and ``categories`` lists, else
    ``(None, problem)`` (kind ``"not_json"``: the file does not parse, or is JSON of another shape)."""
    import json

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        return None, Problem("not_json", path, f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column "
                                               f"{e.colno}): fix the file, or export it again from the annotation tool")
    except (OSError, UnicodeDecodeError) as e:
        return None, Problem("not_json", path, f"cannot read {path} as JSON text ({e}): replace it with the COCO "
                                               "instances JSON of the split")
    if not isinstance(data, dict):
        return None, Problem("not_json", path, f"{path} holds a JSON {type(data).__name__}, not a COCO instances "
                                               "object: it needs the lists images, annotations and categories")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        return None, Problem("not_json", path, f"{path} has no list {', '.join(missing)}: a COCO instances JSON "
                                               "needs the lists images, annotations and categories")
    return data, None


def _segmentation_problem(segm, height: int, width: int) -> str | None:
    """Why ``segm`` (polygons or RLE) cannot be decoded on a ``height`` x ``width`` image, or None."""
    if isinstance(segm, list):
        if not segm:
            return "its segmentation is empty (no polygon)"
        for n, poly in enumerate(segm):
            if not isinstance(poly, list) or not all(_is_number(v) for v in poly):
                return f"polygon {n} is not a list of x, y numbers"
            if len(poly) % 2:
                return f"polygon {n} has an odd number ({len(poly)}) of coordinates"
            if len(poly) < 6:
                return f"polygon {n} has {len(poly) // 2} point(s), fewer than 3"
        return None
    if isinstance(segm, dict):
        size, counts = segm.get("size"), segm.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size)):
            return f"its RLE has no [height, width] size (got {size!r})"
        if list(size) != [height, width]:
            return f"its RLE is {size[0]}x{size[1]} (height x width) but the image is {height}x{width}"
        if isinstance(counts, list):
            if not all(_is_int(v) and v >= 0 for v in counts):
                return "its uncompressed RLE's counts are not all non-negative ints"
            if sum(counts) != height * width:
                return f"its uncompressed RLE's counts sum to {sum(counts)}, not {height}x{width} = {height * width}"
            return None
        if isinstance(counts, str) and counts:
            return None
        return "its RLE has no counts"
    return f"its segmentation is a {type(segm).__name__} (expected a list of polygons or an RLE dict)"


def check_coco(data: dict, json_path: Path, image_dir: Path) -> CocoCheck:
    """Check a parsed COCO instances JSON (:func:`read_coco_json`) against the image folder ``image_dir``: every
    problem at once, each naming ``json_path`` (or the image) and the fix. Reads no image (only ``stat`` calls)."""
    check = CocoCheck(data)
    add = check.problems.append
    where = json_path

    categories = {}
    for n, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or not _is_int(c.get("id")):
            add(Problem("bad_entry", where, f"{where}: categories[{n}] has no integer id: write "
                                            '{"id": <int>, "name": <str>} for every category'))
            continue
        if c["id"] in categories:
            add(Problem("duplicate_id", where, f"{where}: category id {c['id']} is listed twice ({categories[c['id']]!r}"
                                               f" and {c.get('name')!r}): give every category a unique id"))
            continue
        categories[c["id"]] = c.get("name")

    images: dict[int, dict] = {}
    for n, im in enumerate(data["images"]):
        if not (isinstance(im, dict) and _is_int(im.get("id")) and isinstance(im.get("file_name"), str)
                and _is_int(im.get("width")) and _is_int(im.get("height")) and im["width"] > 0 and im["height"] > 0):
            add(Problem("bad_entry", where, f"{where}: images[{n}] needs an integer id, a file_name and positive "
                                            f"integer width and height (got {str(im)[:120]}): fix the entry"))
            if isinstance(im, dict) and _is_int(im.get("id")):
                check.bad_images.add(im["id"])
            continue
        if im["id"] in images:
            add(Problem("duplicate_id", where, f"{where}: image id {im['id']} is listed twice ("
                                               f"{images[im['id']]['file_name']} and {im['file_name']}): give every "
                                               "image a unique id"))
            check.bad_images.add(im["id"])
            continue
        images[im["id"]] = im
        path = image_dir / Path(im["file_name"]).name
        if not path.is_file():
            add(Problem("missing_image", path, f"image {path} (id {im['id']}) is listed in {where} but missing: add "
                                               "the file, or remove the image and its annotations from the JSON"))
            check.bad_images.add(im["id"])
    if image_dir.is_dir():
        from pixelwise.data.io import IMAGE_EXTENSIONS

        listed = {Path(im["file_name"]).name for im in images.values()}
        for p in sorted(image_dir.iterdir()):
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.name not in listed:
                add(Problem("orphan_image", p, f"image {p} is not listed in {where}: add it to the JSON's images, "
                                               "or remove the file (it is not loaded)"))

    seen_annotations: dict[int, int] = {}
    for n, a in enumerate(data["annotations"]):
        if not (isinstance(a, dict) and _is_int(a.get("id")) and _is_int(a.get("image_id"))
                and _is_int(a.get("category_id")) and "segmentation" in a):
            add(Problem("bad_entry", where, f"{where}: annotations[{n}] needs integer id, image_id and category_id "
                                            f"and a segmentation (got {str(a)[:120]}): fix the entry"))
            check.bad_annotations.add(n)
            continue
        aid = a["id"]
        if aid in seen_annotations:
            add(Problem("duplicate_id", where, f"{where}: annotation id {aid} is used twice (annotations[{seen_annotations[aid]}] "
                                               f"and [{n}]): give every annotation a unique id (pycocotools' COCO() "
                                               "keeps only the last)"))
            check.bad_annotations.add(n)
        else:
            seen_annotations[aid] = n
        im = images.get(a["image_id"])
        if im is None:
            if a["image_id"] not in check.bad_images:
                add(Problem("unknown_image", where, f"{where}: annotation id {aid} points at image id {a['image_id']}, "
                                                    "which the JSON's images do not list: fix its image_id, or "
                                                    "remove the annotation"))
            check.bad_annotations.add(n)
            continue
        if a["category_id"] not in categories:
            add(Problem("unknown_category", where, f"{where}: annotation id {aid} has category id {a['category_id']}, "
                                                   f"which the JSON's categories do not list (ids: "
                                                   f"{', '.join(map(str, sorted(categories))) or 'none'}): fix the "
                                                   "category_id, or add the category"))
            check.bad_annotations.add(n)
        if a.get("iscrowd", 0) not in (0, 1, True, False):
            add(Problem("bad_entry", where, f"{where}: annotation id {aid} has iscrowd {a.get('iscrowd')!r}: write 0 "
                                            "or 1"))
            check.bad_annotations.add(n)
        why = _segmentation_problem(a["segmentation"], im["height"], im["width"])
        if why is not None:
            add(Problem("bad_segmentation", where, f"{where}: annotation id {aid} (image {im['file_name']}): {why}; "
                                                   "fix or remove the annotation (polygons are [x1, y1, x2, y2, x3, "
                                                   "y3, ...] with at least 3 points)"))
            check.bad_annotations.add(n)
        box = a.get("bbox")
        if box is not None:
            eps = 1e-2
            if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
                add(Problem("bad_box", where, f"{where}: annotation id {aid} has bbox {box!r}: write [x, y, width, "
                                              "height]"))
            elif (box[2] < 0 or box[3] < 0 or box[0] < -eps or box[1] < -eps or box[0] + box[2] > im["width"] + eps
                  or box[1] + box[3] > im["height"] + eps):
                add(Problem("bad_box", where, f"{where}: annotation id {aid} has bbox [x, y, w, h] = {box}, outside "
                                              f"its image {im['file_name']} ({im['width']}x{im['height']}): fix the "
                                              "box to lie within the image (the loader takes boxes from the masks, "
                                              "but COCOeval's box metrics read this one)"))
    return check


def scan_coco(root: Path, split: str, progress: bool = False) -> DatasetReport:
    """Check split ``split`` of the COCO layout in ``root`` (``instances_<split>.json``, ``images/<split>/``):
    the JSON (:func:`check_coco`) and every listed image's header (unreadable, or another size than the JSON says).
    Never raises for a problem of the data: every one is in the report, with the file and the fix."""

    root = Path(root)
    name = parse_split(split)[0]
    json_path = root / f"instances_{name}.json"
    image_dir = root / "images" / name
    report = DatasetReport(name=f"{root} (coco)", split=split, classes=[], num_images=0,
                           class_pixels=np.zeros(0, np.int64), image_pixels=np.zeros(0, np.int64),
                           images_with_class=np.zeros(0, np.int64), unit="instances")
    if not json_path.is_file():
        report.problems.append(Problem("not_json", json_path, f"{json_path} is missing: split {name!r} of the COCO "
                                                              "layout needs instances_<split>.json beside images/"))
        return report
    data, problem = read_coco_json(json_path)
    if problem is not None:
        report.problems.append(problem)
        return report
    check = check_coco(data, json_path, image_dir)
    report.problems.extend(check.problems)
    cats = sorted({c["id"]: c.get("name") for c in data["categories"] if isinstance(c, dict) and _is_int(c.get("id"))}
                  .items())
    index = {cid: k for k, (cid, _) in enumerate(cats)}
    report.classes = [str(n) for _, n in cats]
    report.class_pixels = np.zeros(len(cats), np.int64)
    report.images_with_class = np.zeros(len(cats), np.int64)
    report.image_pixels = np.zeros(len(cats), np.int64)
    images = [im for im in data["images"] if isinstance(im, dict) and _is_int(im.get("id"))
              and im["id"] not in check.bad_images]
    report.num_images = len(images)
    present: dict[int, set] = {}
    for n, a in enumerate(data["annotations"]):
        if n in check.bad_annotations or a.get("iscrowd", 0) or a["image_id"] in check.bad_images:
            continue
        report.class_pixels[index[a["category_id"]]] += 1
        present.setdefault(index[a["category_id"]], set()).add(a["image_id"])
    for k, ids in present.items():
        report.images_with_class[k] = len(ids)
    if progress:
        from tqdm import tqdm

        images = tqdm(images, desc=f"checking {name}", unit="image")
    for im in images:
        path = image_dir / Path(im["file_name"]).name
        try:
            _, stored_hw, orientation = image_header(path)
        except DataProblem as e:
            report.problems.append(Problem(e.kind, path, str(e)))
            continue
        if orientation != 1:
            report.exif_rotated.append(path)
        upright_hw = stored_hw[::-1] if orientation >= 5 else stored_hw
        if (im["height"], im["width"]) not in (stored_hw, upright_hw):
            report.problems.append(Problem(
                "size_mismatch", path, f"image {path} is {stored_hw[1]}x{stored_hw[0]} but {json_path} gives its "
                f"size as {im['width']}x{im['height']} (width x height): fix the JSON's width and height, or the file"))
    return report
