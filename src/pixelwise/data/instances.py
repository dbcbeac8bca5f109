"""Instance-segmentation data for Mask R-CNN: COCO files, instances derived from semantic masks, a synthetic set.

Sample contract (every dataset of this module, and what the transforms below keep):

``dataset[i] -> (image, target)``

* ``image``: ``tv_tensors.Image`` uint8 (C, H, W), C = ``dataset.in_channels`` (1 or 3).
* ``target``: a dict of R instances (R may be 0)

  - ``"boxes"``: ``tv_tensors.BoundingBoxes`` float32 (R, 4), XYXY, ``canvas_size=(H, W)``; the tight box of the
    mask, ``x2 = max column + 1`` and ``y2 = max row + 1`` (computed from the mask, never read from a file);
  - ``"masks"``: ``tv_tensors.Mask`` uint8 (R, H, W) of 0/1;
  - ``"labels"``: int64 (R,) in 1..K (0 is the background, as torchvision's detection models count);
  - ``"iscrowd"``: int64 (R,) (0, or 1 for COCO crowd regions with ``keep_crowd=True``);
  - ``"area"``: float32 (R,), the mask's pixel count;
  - ``"image_id"``: int.

A dataset carries ``classes`` (K names, background excluded, label k is ``classes[k-1]``), ``palette`` (K colors),
``in_channels``, ``category_ids`` (the COCO category id of label k is ``category_ids[k-1]``), ``image_ids`` (one
per item), ``names`` (file stem per item), and ``coco_ground_truth()``: the split's ground truth as a COCO instances
dict (images, annotations with RLE or polygon segmentations, categories under their original ids, crowd regions
kept with ``iscrowd=1``), what ``pycocotools.coco.COCO`` and ``COCOeval`` read. Objects of zero area are dropped
from the targets and from the ground truth (nothing could ever match them). Crowd regions are left out of the
training targets, as torchvision's detection reference does, unless ``keep_crowd=True``.

Datasets:

* :class:`CocoInstances`: the COCO layout, ``root/images/<split>/*`` and ``root/instances_<split>.json``
  (``build_dataset`` detects it). Polygons, uncompressed and compressed RLE are decoded by ``pycocotools.mask``
  exactly as ``COCO.annToMask`` does. Category ids (often non-contiguous, COCO's run 1..90) map to labels 1..K in
  increasing id order.
* :class:`ConnectedComponentInstances`: every connected component of every non-background class of a semantic
  dataset is an instance (``build_dataset(..., instances="connected_components")``); ISBI 2012's cells, say.
* :class:`SyntheticInstances`: disks, squares and triangles that touch and occlude one another, drawn from a seed
  (``build_dataset("synthetic_instances", ...)``); :func:`write_synthetic_instances` writes it in the COCO layout.

Transforms: :func:`instance_train_transforms` (flip, scale jitter, crop, then boxes re-derived from the masks and
empty instances dropped) and :func:`instance_eval_transforms`; :func:`instance_collate` batches items as the
detection models take them, lists of images and of targets.

pycocotools (``pip install 'pixelwise[instance]'``) is needed to read COCO segmentations and to build
``coco_ground_truth()``; it is imported only then. scipy, where installed, labels connected components (else a numpy
implementation gives the same labels).
"""

from __future__ import annotations

import colorsys
import json
import math
import operator
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from pixelwise.data.check import check_coco, read_coco_json
from pixelwise.data.folder import parse_split
from pixelwise.data.io import GRAY_MODES, DataProblem, image_header, read_image
from pixelwise.data.palette import default_palette
from pixelwise.data.transforms import RandomScale
from pixelwise.errors import DatasetError

__all__ = [
    "CocoInstances",
    "ConnectedComponentInstances",
    "SyntheticInstances",
    "connected_components",
    "empty_target",
    "instance_collate",
    "instance_eval_transforms",
    "instance_train_transforms",
    "make_target",
    "masks_to_boxes",
    "write_synthetic_instances",
]

INSTALL_HINT = "pip install 'pixelwise[instance]'"


def coco_mask():
    """``pycocotools.mask``, imported on first use.

    Raises:
        DatasetError: pycocotools is not installed (names the extra that installs it).
    """
    try:
        from pycocotools import mask
    except ImportError as e:
        raise DatasetError(f"COCO instance data (RLE and polygon masks, the COCO ground truth) needs pycocotools: "
                           f"{INSTALL_HINT}") from e
    return mask


# -- targets ---------------------------------------------------------------------------------------------------------
def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes of (R, H, W) masks (nonzero = inside), float32 (R, 4): ``x1`` = first column, ``x2`` = last
    column + 1 (same for rows), so a box's width is the mask's extent in pixels. An empty mask gets (0, 0, 0, 0).
    (``torchvision.ops.masks_to_boxes`` gives ``x2`` = last column, a box one pixel short.)"""
    r, h, w = masks.shape
    if r == 0:
        return torch.zeros((0, 4), dtype=torch.float32)
    m = masks if masks.dtype in (torch.bool, torch.uint8) else masks != 0
    rows, cols = m.any(dim=2).bool(), m.any(dim=1).bool()  # (R, H), (R, W)
    nonempty = rows.any(dim=1)
    ys = torch.arange(h, device=masks.device)
    xs = torch.arange(w, device=masks.device)
    y1 = torch.where(rows, ys, h).amin(dim=1)
    y2 = torch.where(rows, ys, -1).amax(dim=1) + 1
    x1 = torch.where(cols, xs, w).amin(dim=1)
    x2 = torch.where(cols, xs, -1).amax(dim=1) + 1
    boxes = torch.stack([x1, y1, x2, y2], dim=1).to(torch.float32)
    boxes[~nonempty] = 0
    return boxes


def _pixel_counts(masks: torch.Tensor) -> torch.Tensor:
    """float32 (R,): the nonzero pixels of each (R, H, W) mask (numpy's count: 10x torch's on one core)."""
    if len(masks) == 0:
        return torch.zeros(0, dtype=torch.float32)
    flat = masks.reshape(len(masks), -1).cpu().numpy()
    return torch.from_numpy(np.count_nonzero(flat, axis=1).astype(np.float32))


def empty_target(height: int, width: int, image_id: int = 0) -> dict:
    """The target of an image without instances: boxes (0, 4), masks (0, H, W), labels / iscrowd / area (0,)."""
    return make_target(np.zeros((0, height, width), np.uint8), np.zeros(0, np.int64), image_id)


def make_target(masks: np.ndarray | torch.Tensor, labels, image_id: int, iscrowd=None, min_area: int = 1) -> dict:
    """The target dict of the sample contract from masks (R, H, W) (nonzero = inside) and labels (R,): boxes and
    area from the masks; instances below ``min_area`` pixels (zero-area ones at least) are dropped."""
    masks = torch.as_tensor(np.asarray(masks) if not isinstance(masks, torch.Tensor) else masks)
    if masks.dtype != torch.uint8 or (len(masks) and int(masks.max()) > 1):
        masks = (masks != 0).to(torch.uint8)
    labels = torch.as_tensor(np.asarray(labels, dtype=np.int64)).reshape(-1)
    iscrowd = (torch.zeros_like(labels) if iscrowd is None
               else torch.as_tensor(np.asarray(iscrowd, dtype=np.int64)).reshape(-1))
    area = _pixel_counts(masks)
    keep = area >= max(1, min_area)
    if not bool(keep.all()):
        masks, labels, iscrowd, area = masks[keep], labels[keep], iscrowd[keep], area[keep]
    h, w = masks.shape[-2:]
    return {
        "boxes": tv_tensors.BoundingBoxes(masks_to_boxes(masks), format="XYXY", canvas_size=(int(h), int(w))),
        "masks": tv_tensors.Mask(masks),
        "labels": labels,
        "iscrowd": iscrowd,
        "area": area.to(torch.float32),
        "image_id": int(image_id),
    }


def _rle_annotations(target: dict, category_ids: Sequence[int], first_id: int) -> list[dict]:
    """COCO annotations (compressed RLE, counts as str) of a target's instances, ids from ``first_id``."""
    mask_utils = coco_mask()
    masks = target["masks"].numpy()
    out = []
    for j in range(len(masks)):
        rle = mask_utils.encode(np.asfortranarray(masks[j]))
        x1, y1, x2, y2 = (float(v) for v in target["boxes"][j])
        out.append({
            "id": first_id + j, "image_id": int(target["image_id"]),
            "category_id": int(category_ids[int(target["labels"][j]) - 1]),
            "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "area": float(target["area"][j]), "bbox": [x1, y1, x2 - x1, y2 - y1],
            "iscrowd": int(target["iscrowd"][j]),
        })
    return out


def _ground_truth_from_targets(dataset, description: str) -> dict:
    """``coco_ground_truth()`` of a dataset whose targets are the truth (derived or synthetic instances)."""
    images, annotations = [], []
    for i in range(len(dataset)):
        image, target = dataset.raw_item(i)
        h, w = image.shape[-2:]
        images.append({"id": int(target["image_id"]), "file_name": dataset.names[i], "height": int(h),
                       "width": int(w)})
        annotations += _rle_annotations(target, dataset.category_ids, len(annotations) + 1)
    categories = [{"id": int(c), "name": n} for c, n in zip(dataset.category_ids, dataset.classes)]
    return {"info": {"description": description}, "images": images, "annotations": annotations,
            "categories": categories}


class _InstanceDataset(Dataset):
    """Shared plumbing: ``raw_item(i)`` gives ``(image, target)`` before ``transforms(image, target)``."""

    transforms = None

    @property
    def num_classes(self) -> int:
        """K, the object classes (background excluded)."""
        return len(self.classes)

    def raw_item(self, index: int) -> tuple[tv_tensors.Image, dict]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int):
        image, target = self.raw_item(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


# -- COCO ------------------------------------------------------------------------------------------------------------
def find_coco(root: str | Path) -> bool:
    """Whether ``root`` is in the COCO layout: an ``instances_<split>.json`` beside ``images/<split>/``."""
    root = Path(root)
    if not (root / "images").is_dir():
        return False
    return any((root / "images" / p.name[len("instances_"):-len(".json")]).is_dir()
               for p in root.glob("instances_*.json"))


def coco_splits(root: str | Path) -> list[str]:
    """The splits of a COCO-layout folder: the ``<split>`` of each ``instances_<split>.json``."""
    return sorted(p.name[len("instances_"):-len(".json")] for p in Path(root).glob("instances_*.json"))


class CocoInstances(_InstanceDataset):
    """A split of an instance-segmentation dataset in the COCO layout::

        root/instances_<split>.json     COCO instances format: images, annotations, categories
        root/images/<split>/<file_name> the images the JSON lists (by file name)

    Items follow the module's sample contract. Item order: increasing image id. ``image_id`` is the COCO image id.
    Annotations are decoded as ``pycocotools.coco.COCO.annToMask`` does (polygons merged into one mask; uncompressed
    RLE through ``frPyObjects``; compressed RLE as is); boxes come from the masks; objects of zero area are dropped;
    images without annotations give empty targets. Crowd regions (``iscrowd=1``) are left out of the targets unless
    ``keep_crowd``; ``coco_ground_truth()`` keeps them.

    Args:
        root: the dataset folder.
        split: split name, optionally sliced (``"val[:10]"``).
        transforms: a joint transform called as ``transforms(image, target)`` (see :func:`instance_train_transforms`).
        in_channels: 1 or 3; None: 1 when the first images (up to 16) are all grayscale, else 3.
        keep_crowd: keep crowd regions in the targets (with ``iscrowd=1``).
        strict: raise for any problem of the JSON (:func:`pixelwise.data.check.check_coco`); False leaves the bad
            images and annotations out and lists the problems in ``problems`` (what ``datasets info`` uses).

    Raises:
        DatasetError: a missing folder or JSON; JSON that does not parse; malformed entries, duplicate ids, missing
            images, annotations of an unknown image or category, degenerate segmentations (strict); an image of
            another size than the JSON says, or unreadable (when read); pycocotools not installed. Each message
            names the file and the fix. (Boxes outside the image are only reported by ``pixelwise datasets check``:
            the loader never reads them.)
    """

    format = "coco"
    has_masks = True

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transforms=None,
        in_channels: int | None = None,
        keep_crowd: bool = False,
        strict: bool = True,
    ) -> None:
        self.root, self.split, self.transforms, self.keep_crowd = Path(root), split, transforms, bool(keep_crowd)
        name, part = parse_split(split)
        self.json_path = self.root / f"instances_{name}.json"
        self.image_dir = self.root / "images" / name
        if not self.json_path.is_file():
            found = coco_splits(self.root)
            raise DatasetError(f"split {name!r} not found: {self.json_path} is missing (COCO splits here: "
                               f"{', '.join(found) or 'none'}; expected instances_<split>.json beside images/<split>/)")
        if not self.image_dir.is_dir():
            raise DatasetError(f"{self.image_dir} is not a folder: the COCO layout keeps the images of split "
                               f"{name!r} in images/{name}/")
        data, problem = read_coco_json(self.json_path)
        if problem is not None:
            raise DatasetError(problem.message)
        check = check_coco(data, self.json_path, self.image_dir)
        # Boxes are recomputed from the masks and unlisted files are not read: neither stops the loader.
        self.problems = [p for p in check.problems if p.kind not in ("bad_box", "orphan_image")]
        if strict and self.problems:
            more = len(self.problems) - 1
            raise DatasetError(self.problems[0].message + (
                f" ({more} more problem(s): list them all with `pixelwise datasets check {self.root}`)" if more else ""))
        categories = sorted({c["id"]: c for c in data["categories"]
                             if isinstance(c, dict) and isinstance(c.get("id"), int)}.values(), key=lambda c: c["id"])
        self.categories = [dict(c) for c in categories]
        self.category_ids = [int(c["id"]) for c in categories]
        self.classes = [str(c.get("name", c["id"])) for c in categories]
        self.palette = default_palette(len(self.classes) + 1)[1:]
        self._label_of = {cid: k + 1 for k, cid in enumerate(self.category_ids)}
        images = {}
        for im in data["images"]:
            if isinstance(im, dict) and isinstance(im.get("id"), int) and im["id"] not in check.bad_images \
                    and im["id"] not in images:
                images[im["id"]] = im
        self.annotations: dict[int, list[dict]] = {i: [] for i in images}
        for n, a in enumerate(data["annotations"]):
            if n not in check.bad_annotations and a["image_id"] in images:
                self.annotations[a["image_id"]].append(a)
        ordered = sorted(images)[part]
        if not ordered:
            raise DatasetError(f"split {split!r} of {self.root} is empty: {self.json_path} lists no image")
        self.images = [images[i] for i in ordered]
        self.image_ids = [int(i) for i in ordered]
        self.names = [Path(im["file_name"]).stem for im in self.images]
        self.ids = self.names
        self.paths = [self.image_dir / Path(im["file_name"]).name for im in self.images]
        if in_channels is None:
            modes = [image_header(p)[0] for p in self.paths[:16]]
            in_channels = 1 if all(m in GRAY_MODES for m in modes) else 3
        if in_channels not in (1, 3):
            raise DatasetError(f"in_channels must be 1 or 3, got {in_channels!r}")
        self.in_channels = int(in_channels)
        self.ignore_index = 255  # no void in instance targets; kept for code that reads it off any dataset

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return f"CocoInstances({str(self.root)!r}, {self.split!r}, {len(self)} images, {self.num_classes} classes)"

    def annotation_rle(self, annotation: dict, height: int, width: int) -> dict:
        """The RLE of one annotation, as ``pycocotools.coco.COCO.annToRLE`` makes it."""
        mask_utils = coco_mask()
        segm = annotation["segmentation"]
        try:
            if isinstance(segm, list):
                return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
            if isinstance(segm["counts"], list):
                return mask_utils.frPyObjects(segm, height, width)
            return segm
        except Exception as e:  # pycocotools raises TypeError, ValueError, Exception for malformed input
            raise DatasetError(f"{self.json_path}: annotation id {annotation.get('id')} cannot be decoded "
                               f"({type(e).__name__}: {e}): fix or remove it") from e

    def load_image(self, index: int) -> tv_tensors.Image:
        """The image, uint8 (C, H, W), upright by EXIF unless only the stored orientation fits the JSON's size.

        Raises:
            DatasetError: unreadable file, or of another size than the JSON's width and height.
        """
        path, im = self.paths[index], self.images[index]
        image = read_image(path, self.in_channels)
        if tuple(image.shape[-2:]) != (im["height"], im["width"]):
            image = read_image(path, self.in_channels, exif=False)
            if tuple(image.shape[-2:]) != (im["height"], im["width"]):
                raise DataProblem(f"image {path} is {image.shape[-1]}x{image.shape[-2]} but {self.json_path} gives "
                                  f"its size as {im['width']}x{im['height']} (width x height): fix the JSON's width "
                                  "and height, or the file", "size_mismatch")
        return image

    def raw_item(self, index: int) -> tuple[tv_tensors.Image, dict]:
        image = self.load_image(index)
        im = self.images[index]
        h, w = im["height"], im["width"]
        anns = [a for a in self.annotations[im["id"]] if self.keep_crowd or not a.get("iscrowd", 0)]
        if not anns:
            return image, empty_target(h, w, im["id"])
        mask_utils = coco_mask()
        rles = [self.annotation_rle(a, h, w) for a in anns]
        with warnings.catch_warnings():  # pycocotools 2.0.x under numpy 2: a DeprecationWarning of its own
            warnings.simplefilter("ignore", DeprecationWarning)
            masks = mask_utils.decode(rles)  # (H, W, R) uint8, Fortran order
        masks = np.ascontiguousarray(masks.transpose(2, 0, 1))
        labels = [self._label_of[a["category_id"]] for a in anns]
        iscrowd = [int(bool(a.get("iscrowd", 0))) for a in anns]
        return image, make_target(masks, labels, im["id"], iscrowd)

    def coco_ground_truth(self) -> dict:
        """The split's ground truth in the COCO instances format, for ``pycocotools.coco.COCO``: the items' images
        (id, file_name, height, width), their annotations as in the file (polygons or RLE, crowd regions kept,
        ``area`` and ``bbox`` filled in from the mask where the file has none; zero-area objects left out) and every
        category under its original id."""
        mask_utils = coco_mask()
        images, annotations = [], []
        for im in self.images:
            h, w = im["height"], im["width"]
            images.append({"id": im["id"], "file_name": im["file_name"], "height": h, "width": w})
            for a in self.annotations[im["id"]]:
                rle = self.annotation_rle(a, h, w)
                area = float(mask_utils.area(rle))
                if area == 0:
                    continue
                out = {k: v for k, v in a.items()}
                out["iscrowd"] = int(bool(a.get("iscrowd", 0)))
                out.setdefault("area", area)
                if "bbox" not in out:
                    out["bbox"] = [float(v) for v in mask_utils.toBbox(rle)]
                annotations.append(out)
        return {"info": {"description": f"{self.json_path} ({self.split})"}, "images": images,
                "annotations": annotations, "categories": [dict(c) for c in self.categories]}


# -- connected components --------------------------------------------------------------------------------------------
def _label_numpy(foreground: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    """``scipy.ndimage.label`` in numpy: hook each pixel to its smallest neighbour's root, then pointer jumping,
    until nothing changes. Components are numbered 1..n in raster order of their first pixel, as scipy does."""
    h, w = foreground.shape
    idx = np.arange(h * w, dtype=np.int64).reshape(h, w)
    pairs = [(foreground[:, :-1] & foreground[:, 1:], idx[:, :-1], idx[:, 1:]),
             (foreground[:-1, :] & foreground[1:, :], idx[:-1, :], idx[1:, :])]
    if connectivity == 8:
        pairs += [(foreground[:-1, :-1] & foreground[1:, 1:], idx[:-1, :-1], idx[1:, 1:]),
                  (foreground[:-1, 1:] & foreground[1:, :-1], idx[:-1, 1:], idx[1:, :-1])]
    p = np.concatenate([a[m] for m, a, _ in pairs])
    q = np.concatenate([b[m] for m, _, b in pairs])
    parent = np.arange(h * w, dtype=np.int64)
    while True:
        lp, lq = parent[p], parent[q]
        low = np.minimum(lp, lq)
        new = parent.copy()
        np.minimum.at(new, lp, low)
        np.minimum.at(new, lq, low)
        while True:
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, parent):
            break
        parent = new
    labels = np.zeros(h * w, dtype=np.int32)
    roots = parent[foreground.ravel()]
    unique, inverse = np.unique(roots, return_inverse=True)
    labels[foreground.ravel()] = inverse.astype(np.int32) + 1
    return labels.reshape(h, w), len(unique)


def connected_components(foreground: np.ndarray, connectivity: int = 4) -> tuple[np.ndarray, int]:
    """Label the connected components of a boolean (H, W) array: ``(labels int32 (H, W), n)``, 0 outside, 1..n
    inside, numbered in raster order of their first pixel. ``connectivity`` 4 (edge neighbours) or 8 (also
    corners). Uses ``scipy.ndimage.label`` where installed, else :func:`_label_numpy` (same labels).

    Raises:
        ValueError: ``connectivity`` is not 4 or 8.
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    foreground = np.asarray(foreground, dtype=bool)
    try:
        from scipy import ndimage
    except ImportError:
        return _label_numpy(foreground, connectivity)
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    labels, n = ndimage.label(foreground, structure=structure)
    return labels.astype(np.int32), int(n)


class ConnectedComponentInstances(_InstanceDataset):
    """Instances of a semantic dataset: each connected component of each instance class is one instance.

    Args:
        semantic_dataset: items ``(image, mask)`` (mask int64 (H, W) of class ids, ``ignore_index`` void), with
            ``classes`` and optionally ``palette``, ``ignore_index``, ``in_channels``, ``ids``; give it without
            transforms (apply the instance transforms here).
        connectivity: 4 or 8, the pixel neighbourhood of a component.
        min_area: components of fewer pixels are dropped (specks of an annotation).
        classes: the semantic classes (names or ids) that are instances; default every class but ``background``.
            Label k is the k-th of them in increasing id order.
        background: the semantic class id (or name) of the background (default 0); ignored when ``classes`` is
            given.
        transforms: a joint transform ``transforms(image, target)``.

    Void pixels (``ignore_index``) belong to no instance and separate components. ``category_ids`` are the labels
    1..K (the semantic ids need not be valid COCO category ids: class 0 may be an instance class), ``image_ids`` the
    item indices, ``names`` the semantic dataset's ids.

    Raises:
        DatasetError: a bad connectivity, min_area, class or background; no instance class left.
    """

    format = "connected_components"

    def __init__(self, semantic_dataset, connectivity: int = 4, min_area: int = 1, classes=None, background=0,
                 transforms=None) -> None:
        self.base = semantic_dataset
        self.transforms = transforms
        if connectivity not in (4, 8) or isinstance(connectivity, bool):
            raise DatasetError(f"connectivity must be 4 or 8 (pixel neighbours of a component), got {connectivity!r}")
        if isinstance(min_area, bool) or not isinstance(min_area, int) or min_area < 1:
            raise DatasetError(f"min_area must be a positive int (pixels), got {min_area!r}")
        self.connectivity, self.min_area = connectivity, min_area
        names = list(semantic_dataset.classes)

        def class_id(c) -> int:
            if isinstance(c, str) and c in names:
                return names.index(c)
            if isinstance(c, int) and not isinstance(c, bool) and 0 <= c < len(names):
                return c
            raise DatasetError(f"class {c!r} is not a class of the semantic dataset ({', '.join(names)}): name a "
                               "class, or give its id")

        if classes is None:
            bg = class_id(background)
            self.class_ids = [k for k in range(len(names)) if k != bg]
        else:
            self.class_ids = sorted({class_id(c) for c in ([classes] if isinstance(classes, (str, int)) else classes)})
        if not self.class_ids:
            raise DatasetError("no instance class left: name the classes whose components are instances (classes=...)")
        self.classes = [names[k] for k in self.class_ids]
        palette = list(getattr(semantic_dataset, "palette", None) or default_palette(len(names)))
        self.palette = [tuple(palette[k]) for k in self.class_ids]
        self.category_ids = list(range(1, len(self.class_ids) + 1))
        self.ignore_index = getattr(semantic_dataset, "ignore_index", 255)
        self.in_channels = getattr(semantic_dataset, "in_channels", 3)
        self.names = list(getattr(semantic_dataset, "ids", [f"{i:05d}" for i in range(len(semantic_dataset))]))
        self.ids = self.names
        self.image_ids = list(range(len(semantic_dataset)))
        self.split = getattr(semantic_dataset, "split", None)
        self.root = getattr(semantic_dataset, "root", None)

    def __len__(self) -> int:
        return len(self.base)

    def __repr__(self) -> str:
        return (f"ConnectedComponentInstances({self.base!r}, connectivity={self.connectivity}, "
                f"min_area={self.min_area}, classes={self.classes})")

    def instances_of(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(masks uint8 (R, H, W), labels int64 (R,))`` of a class-id mask (H, W): per instance class in label
        order, its components in raster order, those of at least ``min_area`` pixels."""
        masks, labels = [], []
        for label, k in enumerate(self.class_ids, start=1):
            components, n = connected_components(mask == k, self.connectivity)
            if n == 0:
                continue
            sizes = np.bincount(components.ravel(), minlength=n + 1)
            for c in np.flatnonzero(sizes[1:] >= self.min_area) + 1:
                masks.append(components == c)
                labels.append(label)
        h, w = mask.shape
        stacked = np.stack(masks).astype(np.uint8) if masks else np.zeros((0, h, w), np.uint8)
        return stacked, np.asarray(labels, dtype=np.int64)

    def raw_item(self, index: int) -> tuple[tv_tensors.Image, dict]:
        image, mask = self.base[index]
        if mask is None:
            raise DatasetError(f"split {self.split!r} of {self.root} has no masks: instances are derived from masks")
        masks, labels = self.instances_of(np.asarray(mask))
        return tv_tensors.Image(image), make_target(masks, labels, self.image_ids[index])

    def coco_ground_truth(self) -> dict:
        """The split's instances as COCO ground truth (compressed RLE; category ids = labels; no crowd)."""
        return _ground_truth_from_targets(self, f"connected components of {self.root} ({self.split})")


# -- synthetic -------------------------------------------------------------------------------------------------------
_SYN_SPLITS = ("train", "val", "test")
_SYN_DEFAULT_NUM_IMAGES = {"train": 200, "val": 40, "test": 40}
_SYN_CLASSES = ("disk", "square", "triangle")
_SYN_PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200))  # the colors of SyntheticShapes' classes
_SYN_HUE = (0.97, 0.36, 0.57)


class SyntheticInstances(_InstanceDataset):
    """Disks, squares and triangles (labels 1, 2, 3) that touch and occlude one another, on a textured background,
    drawn from a seed: the built-in instance set of the demo and the tests.

    Each image holds 3 to 8 shapes. About half of the shapes after the first are placed against an earlier one, at
    a centre distance of 0.6 to 1.05 times the sum of their radii: touching, or overlapping it. A shape drawn later
    occludes the earlier ones: its pixels are removed from their masks, so masks never overlap; a shape occluded
    entirely is no instance. Same-class neighbours differ in brightness. Items follow the module's contract;
    ``image_id`` is the index.

    Determinism: item ``i`` is a pure function of ``(seed, split, i, image_size)``, drawn from
    ``numpy.random.default_rng([seed, 1000 + split_index, i])``.

    Raises:
        DatasetError: an unknown split, a bad ``num_images``, ``image_size`` (each side at least 32) or ``seed``.
    """

    format = "synthetic_instances"
    in_channels = 3
    ignore_index = 255

    def __init__(self, split: str = "train", num_images: int | None = None, image_size: tuple[int, int] = (128, 128),
                 seed: int = 0, transforms=None) -> None:
        if split not in _SYN_SPLITS:
            raise DatasetError(f"unknown split {split!r} of the synthetic instances; valid: {', '.join(_SYN_SPLITS)}")
        num_images = _SYN_DEFAULT_NUM_IMAGES[split] if num_images is None else num_images
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise DatasetError(f"num_images must be a positive int, got {num_images!r}")
        try:
            h, w = (operator.index(v) for v in image_size)
        except (TypeError, ValueError):
            raise DatasetError(f"image_size must be (height, width), two ints, got {image_size!r}") from None
        if h < 32 or w < 32:
            raise DatasetError(f"image_size must be at least 32x32 pixels, got {image_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise DatasetError(f"seed must be a non-negative int, got {seed!r}")
        self.split, self.num_images, self.image_size, self.seed = split, num_images, (h, w), seed
        self.split_index = _SYN_SPLITS.index(split)
        self.transforms = transforms
        self.classes = list(_SYN_CLASSES)
        self.palette = list(_SYN_PALETTE)
        self.category_ids = [1, 2, 3]
        self.names = [f"synthetic_instances_{split}_{i:04d}" for i in range(num_images)]
        self.ids = self.names
        self.image_ids = list(range(num_images))
        self.root = None
        self._yy, self._xx = np.mgrid[0:h, 0:w].astype(np.float32)

    def __len__(self) -> int:
        return self.num_images

    def __repr__(self) -> str:
        return (f"SyntheticInstances(split={self.split!r}, num_images={self.num_images}, "
                f"image_size={self.image_size}, seed={self.seed})")

    def render(self, index: int, occlude: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(image uint8 (H, W, 3), masks uint8 (R, H, W), labels int64 (R,))`` of item ``index``, in drawing
        order, before the zero-area filter (an entirely occluded shape has an empty mask here). ``occlude=False``:
        each shape's whole mask, as if nothing covered it (the masks then overlap).

        Raises:
            IndexError: ``index`` out of range.
        """
        index = operator.index(index)
        if not -self.num_images <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} synthetic instance images")
        index %= self.num_images
        rng = np.random.default_rng([self.seed, 1000 + self.split_index, index])
        h, w = self.image_size
        side = min(h, w)
        yy, xx = self._yy, self._xx
        # background: a gradient between two muted colors plus pixel noise
        c0, c1 = rng.uniform(40, 150, 3), rng.uniform(40, 150, 3)
        angle = rng.uniform(0, 2 * math.pi)
        t = (math.cos(angle) * xx + math.sin(angle) * yy) / max(h, w)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        image = (c0 + t[..., None] * (c1 - c0)).astype(np.float32)
        image += np.float32(rng.uniform(3, 12)) * rng.standard_normal((h, w, 3), dtype=np.float32)

        owner = np.full((h, w), -1, dtype=np.int64)
        shapes: list[tuple[float, float, float]] = []
        labels, whole = [], []
        for j in range(int(rng.integers(3, 9))):
            cls = int(rng.integers(1, 4))
            radius = float(rng.uniform(0.08, 0.16) * side)
            theta, rotation = rng.uniform(0, 2 * math.pi, size=2)
            near, pick, closeness = rng.uniform(), rng.uniform(), rng.uniform(0.6, 1.05)
            cy, cx = rng.uniform(0, h - 1), rng.uniform(0, w - 1)
            if shapes and near < 0.5:  # against an earlier shape: touching or overlapping it
                py, px, pr = shapes[int(pick * len(shapes))]
                d = closeness * (pr + radius)
                cy, cx = py + d * math.sin(theta), px + d * math.cos(theta)
            dy, dx = yy - np.float32(cy), xx - np.float32(cx)
            if cls == 1:
                inside = dx * dx + dy * dy <= radius * radius
            elif cls == 2:
                half = 0.8 * radius
                c, s = np.float32(math.cos(rotation)), np.float32(math.sin(rotation))
                inside = (np.abs(c * dx + s * dy) <= half) & (np.abs(c * dy - s * dx) <= half)
            else:
                corners = [(1.15 * radius * math.cos(a), 1.15 * radius * math.sin(a))
                           for a in rotation + np.arange(3) * (2 * math.pi / 3)]
                inside = np.ones((h, w), dtype=bool)
                for k in range(3):
                    (ax, ay), (bx, by) = corners[k], corners[(k + 1) % 3]
                    inside &= (bx - ax) * (dy - ay) - (by - ay) * (dx - ax) >= 0
            hue = (_SYN_HUE[cls - 1] + rng.uniform(-0.05, 0.05)) % 1.0
            color = np.asarray(colorsys.hsv_to_rgb(hue, rng.uniform(0.5, 1.0), rng.uniform(0.45, 1.0)), np.float32)
            noise = np.float32(rng.uniform(2, 10))
            count = int(inside.sum())
            image[inside] = color * 255 + noise * rng.standard_normal((count, 3), dtype=np.float32)
            owner[inside] = j
            whole.append(inside)
            shapes.append((cy, cx, radius))
            labels.append(cls)
        if occlude:
            masks = (owner[None] == np.arange(len(labels))[:, None, None]).astype(np.uint8)
        else:
            masks = np.stack(whole).astype(np.uint8)
        return np.rint(np.clip(image, 0, 255)).astype(np.uint8), masks, np.asarray(labels, dtype=np.int64)

    def raw_item(self, index: int) -> tuple[tv_tensors.Image, dict]:
        image, masks, labels = self.render(index)
        image_t = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))))
        return image_t, make_target(masks, labels, self.image_ids[index % self.num_images])

    def coco_ground_truth(self) -> dict:
        """The split's instances as COCO ground truth (compressed RLE; categories 1 disk, 2 square, 3 triangle)."""
        return _ground_truth_from_targets(self, f"synthetic instances ({self.split}, seed {self.seed})")


def write_synthetic_instances(root: str | Path, splits: dict[str, int | None] | Sequence[str] = ("train", "val"),
                              image_size: tuple[int, int] = (128, 128), seed: int = 0) -> Path:
    """Write :class:`SyntheticInstances` in the COCO layout: ``root/images/<split>/<name>.png`` and
    ``root/instances_<split>.json`` (compressed RLE, categories 1 disk, 2 square, 3 triangle; image ids the item
    indices). ``splits``: names, or ``{name: image count}`` (None: the split's default). Returns ``root``.
    :class:`CocoInstances` reads it back to the same items.

    Raises:
        DatasetError: pycocotools is not installed; and see :class:`SyntheticInstances`.
    """
    root = Path(root)
    counts = dict(splits) if isinstance(splits, dict) else {s: None for s in splits}
    for split, n in counts.items():
        ds = SyntheticInstances(split, num_images=n, image_size=image_size, seed=seed)
        folder = root / "images" / split
        folder.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(len(ds)):
            image, target = ds.raw_item(i)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{ds.names[i]}.png")
            images.append({"id": i, "file_name": f"{ds.names[i]}.png", "height": ds.image_size[0],
                           "width": ds.image_size[1]})
            annotations += _rle_annotations(target, ds.category_ids, len(annotations) + 1)
        data = {"info": {"description": f"pixelwise synthetic instances, split {split}, seed {seed}"},
                "images": images, "annotations": annotations,
                "categories": [{"id": c, "name": n, "supercategory": "shape"}
                               for c, n in zip(ds.category_ids, ds.classes)]}
        (root / f"instances_{split}.json").write_text(json.dumps(data))
    return root


# -- transforms and batching -----------------------------------------------------------------------------------------
class MasksToBoxes(v2.Transform):
    """Recompute ``boxes`` (tight XYXY, :func:`masks_to_boxes`) and ``area`` of a target dict from its ``masks``,
    after geometric transforms: a crop or a nearest-neighbour resize changes a mask in ways its box cannot follow
    (torchvision clamps the old box to the crop, which is loose around an object cut diagonally, and keeps a box
    whose thin mask vanished when downscaled). An empty mask gets a (0, 0, 0, 0) box, which
    ``v2.SanitizeBoundingBoxes`` then drops with its mask, label, iscrowd and area."""

    def forward(self, *inputs: Any) -> Any:
        image, target = inputs if len(inputs) > 1 else inputs[0]
        target = dict(target)
        masks = target["masks"]
        h, w = masks.shape[-2:]
        target["boxes"] = tv_tensors.BoundingBoxes(masks_to_boxes(masks), format="XYXY", canvas_size=(int(h), int(w)))
        if "area" in target:
            target["area"] = _pixel_counts(masks)
        return image, target


def _per_instance(inputs) -> tuple[torch.Tensor, ...]:
    """The per-instance tensors besides boxes and masks that SanitizeBoundingBoxes must filter with them."""
    target = inputs[1]
    return tuple(target[k] for k in ("labels", "iscrowd", "area") if k in target)


def instance_train_transforms(crop_size: Sequence[int] | None = None, scale_range: Sequence[float] = (0.5, 2.0),
                              hflip: bool = True) -> v2.Compose:
    """Training augmentation of ``(image, target)`` (the module's contract): horizontal flip, a random scale
    (relative to the image, :class:`pixelwise.data.transforms.RandomScale`: image bilinear, masks nearest), a random
    crop to ``crop_size`` (H, W) (padded with 0 where the image is smaller; None: no crop), then boxes and areas
    re-derived from the masks (:class:`MasksToBoxes`) and ``v2.SanitizeBoundingBoxes`` dropping every instance left
    without pixels together with its mask, label, iscrowd and area; finally the image to float32 in [0, 1]
    (``ToDtype(scale=True)``; masks stay uint8). Output: what torchvision's detection models train on."""
    ops: list[v2.Transform] = []
    if hflip:
        ops.append(v2.RandomHorizontalFlip())
    if scale_range is not None and tuple(scale_range) != (1, 1):
        ops.append(RandomScale(scale_range))
    if crop_size is not None:
        ops.append(v2.RandomCrop(tuple(int(s) for s in crop_size), pad_if_needed=True, fill=0))
    ops += [MasksToBoxes(), v2.SanitizeBoundingBoxes(min_size=1, labels_getter=_per_instance),
            v2.ToDtype(torch.float32, scale=True)]
    return v2.Compose(ops)


def instance_eval_transforms() -> v2.Compose:
    """Evaluation: the image to float32 in [0, 1]; the target untouched (the detection models resize internally
    and map their outputs back to the image's size)."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True)])


def instance_collate(batch) -> tuple[list, list]:
    """``[(image, target), ...]`` -> ``(list of images, list of targets)``, as torchvision's detection models take
    a batch (images of different sizes are not stacked)."""
    return [b[0] for b in batch], [b[1] for b in batch]
