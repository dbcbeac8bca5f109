"""The RGB-D folder dataset (image, metric depth, optional surface normals, camera intrinsics) and its joint
transforms.

Layout (``root`` is the dataset folder; :func:`pixelwise.depth.write_synthetic_depth` writes it)::

    root/images/<split>/<id>.png|jpg      RGB, read in stored pixel order (no EXIF rotation: depth is registered
                                          to the stored pixels)
    root/depth/<split>/<id>.png           single-channel uint16, 0 = invalid, scale "mm" (NYU toolboxes: value =
                                          millimetres) or "kitti" (value / 256 = metres)
    root/normals/<split>/<id>.png         optional: 8-bit RGB, round((n + 1) / 2 * 255) of the camera-frame normal
    root/intrinsics.json                  "depth_scale" and the camera intrinsics (see below)
    root/<split>.txt                      optional: the ids of the split, one a line (their order is kept)

``intrinsics.json`` holds ``"depth_scale": "mm" | "kitti"`` (the ``depth_scale=`` argument overrides it; one of the
two must say it, a scale is never guessed) and ``fx, fy, cx, cy`` in pixels ((0, 0) the centre of the top-left
pixel, :mod:`pixelwise.depth.geometry`'s convention) in any of these forms, the most specific winning:

* dataset-wide: ``{"fx": 518.9, "fy": 519.5, "cx": 325.6, "cy": 253.7, "depth_scale": "mm"}``;
* per frame: ``{"frames": {"<id>": {"fx": ..., "fy": ..., "cx": ..., "cy": ...}, ...}}``;
* per split, as ``shared/data/depth_demo_nyu_kitti`` has it: ``{"<split>": [{"id": "<id>", "fx": ..., ...}, ...]}``
  (a list of frames with an ``"id"``, or a mapping id -> frame, or one dict of ``fx, fy, cx, cy`` for the split).

A frame entry may also give ``"width"`` and ``"height"``; the image must then have that size (intrinsics of
another resolution are refused, not rescaled). Without an ``intrinsics.json`` (or one that gives a scale but no
intrinsics) the items' intrinsics are NaN, and ``normals_from_depth=True`` is refused.

Other layouts: ``depth_dir`` / ``normals_dir`` / ``image_dir`` are paths relative to ``root`` in which ``{split}``
is replaced by the split name (defaults ``"depth/{split}"``, ``"normals/{split}"``, ``"images/{split}"``); a path
without ``{split}`` is one flat folder. The shared NYU / KITTI fixture keeps KITTI's full-range depth in the flat
folder ``depth_raw_kitti256/`` and declares no scale, so it is read with::

    DepthFolder(root, "nyu", depth_scale="mm")
    DepthFolder(root, "kitti", depth_scale="kitti", depth_dir="depth_raw_kitti256")

Joint transforms (:func:`depth_train_transforms`, :func:`depth_eval_transforms`) take and return the item dict.
Geometric operations move image, depth, validity and normals together and update the intrinsics exactly:

* horizontal flip: ``u' = W - 1 - u``, so ``cx' = W - 1 - cx``, and the normals' x component changes sign;
* resize by ``s`` (per axis ``sx = W'/W``, ``sy = H'/H``): pixel centres map as ``u' = (u + 0.5) sx - 0.5``
  (bilinear image resampling and nearest-exact depth resampling both use this alignment), so
  ``fx' = sx fx``, ``cx' = sx (cx + 0.5) - 0.5`` (likewise y). Convention for metric depth: a zoomed image with a
  fixed focal length is the image of a camera whose focal length is multiplied by s, so the depth (a metric
  property of the scene) and the normals are kept and the intrinsics are scaled. The alternative used by some
  monocular-depth codebases, ``scale_depth=True``, keeps fx, fy (a fixed camera) and divides the depth by
  ``sqrt(sx sy)``, pretending the scene came closer; the points then move by ``(X, Y, Z) -> (sx X, sy Y, Z) / s``
  (not a rigid motion) and the normals are transformed to match, ``n' ~ (nx / sx, ny / sy, nz)``, so that normals
  recomputed from the output depth and intrinsics still agree with the output normals. Depth, validity and normals
  are resampled with nearest neighbour only: no value is ever interpolated across a depth edge or an invalid pixel;
* crop at (top, left), padding with invalid pixels (depth 0, zero normals, 0 image) where the crop leaves the
  image: ``cx' = cx - left``, ``cy' = cy - top``.

Which convention to train with: keeping the depth (the default) is geometrically exact, right for surface normals
and for models that are told the intrinsics; a model that predicts metric depth from the pixels alone sees the same
object at the same depth with different apparent sizes, so give it a narrow ``scale_range`` or ``scale_depth=True``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from pixelwise.data.folder import files_by_id, read_id_list
from pixelwise.data.io import _PILLOW_ERRORS, parse_split, read_image
from pixelwise.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from pixelwise.depth.geometry import DEPTH_PNG_SCALES, decode_normals, normals_from_depth, read_depth_png
from pixelwise.errors import DatasetError

__all__ = [
    "DepthColorJitter",
    "DepthCompose",
    "DepthFolder",
    "DepthHorizontalFlip",
    "DepthNormalize",
    "DepthRandomCrop",
    "DepthRandomScale",
    "depth_eval_transforms",
    "depth_train_transforms",
]

#: Pillow modes of a single-channel 16/32-bit integer PNG (the only ones that can hold uint16 depth)
_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_K_KEYS = ("fx", "fy", "cx", "cy")
_SCALE_FIX = ('add "depth_scale": "mm" (uint16 millimetres) or "kitti" (value / 256 = metres) to {json}, '
              "or pass depth_scale=")


# ------------------------------------------------------------------------------------------------ reading


def read_depth_file(path: Path, scale: str) -> torch.Tensor:
    """Metres (H, W) float32 of a depth PNG, refusing 8-bit and colour images with the fix in the message."""
    try:
        with Image.open(path) as im:
            mode = im.mode
    except FileNotFoundError as e:
        raise DatasetError(
            f"depth PNG {path} is missing: add it (16-bit single-channel PNG) or remove its image"
        ) from e
    except _PILLOW_ERRORS as e:
        raise DatasetError(f"cannot read depth PNG {path} ({e}): replace or remove the file") from e
    if mode not in _DEPTH_MODES:
        what = f"an 8-bit image (Pillow mode {mode})" if mode in ("1", "L", "P") else f"a {mode} colour image"
        raise DatasetError(
            f"depth PNG {path} is {what}, not depth: save depth as a 16-bit single-channel PNG (e.g. uint16 "
            "millimetres, depth_scale 'mm'; or metres * 256, 'kitti'), not a visualisation or an 8-bit copy"
        )
    return read_depth_png(path, scale)


def read_normals_file(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``(normals float32 (3, H, W), valid bool (H, W))`` of an 8-bit RGB normal PNG."""
    try:
        with Image.open(path) as im:
            mode = im.mode
            arr = np.array(im) if mode == "RGB" else None
    except _PILLOW_ERRORS as e:
        raise DatasetError(f"cannot read normals PNG {path} ({e}): replace or remove the file") from e
    if arr is None:
        raise DatasetError(
            f"normals PNG {path} has Pillow mode {mode}: save normals as 8-bit RGB, round((n + 1) / 2 * 255) of the "
            "camera-frame unit normal (R = x right, G = y down, B = z forward; 128 128 128 = none)"
        )
    return decode_normals(arr)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _check_k(entry: Any, json_path: Path, where: str) -> tuple[list[float], tuple[int, int] | None]:
    """``([fx, fy, cx, cy], (height, width) or None)`` of one intrinsics entry, or a DatasetError naming it."""
    values = [_number(entry.get(k)) for k in _K_KEYS] if isinstance(entry, Mapping) else [None]
    if None in values or values[0] <= 0 or values[1] <= 0:
        raise DatasetError(
            f"{json_path}: intrinsics of {where} are {entry!r}: write finite numbers fx, fy, cx, cy in pixels with "
            "fx, fy > 0 ((0, 0) = centre of the top-left pixel)"
        )
    size = None
    if isinstance(entry, Mapping) and "width" in entry and "height" in entry:
        w, h = entry["width"], entry["height"]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (w, h)):
            raise DatasetError(f"{json_path}: width/height of {where} must be positive ints, got {w!r}, {h!r}")
        size = (h, w)
    return values, size


def _split_frames(value: Any, json_path: Path, split: str) -> dict[str, Any] | None:
    """The per-frame entries of a split's value: a list of frames with "id", a mapping id -> frame, or None when
    the value is one dict of intrinsics for the whole split."""
    if isinstance(value, list):
        frames = {}
        for n, entry in enumerate(value):
            if not isinstance(entry, Mapping) or "id" not in entry:
                raise DatasetError(
                    f"{json_path}: entry {n} of {split!r} has no \"id\": a split's list holds one "
                    "{\"id\", \"fx\", \"fy\", \"cx\", \"cy\"} object per frame"
                )
            frames[str(entry["id"])] = entry
        return frames
    if isinstance(value, Mapping) and not any(k in value for k in _K_KEYS):
        return {str(k): v for k, v in value.items()}
    return None


def read_intrinsics_json(path: Path, split: str, ids: Sequence[str]):
    """``(depth_scale or None, K float32 (N, 4) or None, sizes list of (H, W) or None per id)`` from ``path``.

    The intrinsics are None when the file gives none at all; a file that gives some must give them for every id.

    Raises:
        DatasetError: unparsable JSON, a malformed entry, an id without intrinsics (names the file and the id).
    """
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"cannot read {path} ({e}): write a JSON object with depth_scale and fx, fy, cx, cy") from e
    if not isinstance(meta, Mapping):
        raise DatasetError(f"{path} holds a {type(meta).__name__}: write a JSON object with depth_scale and fx, fy, "
                           "cx, cy")
    scale = meta.get("depth_scale")
    global_k = meta if any(k in meta for k in _K_KEYS) else None
    frames = meta.get("frames")
    if frames is not None:
        frames = _split_frames(frames, path, "frames")
        if frames is None:
            raise DatasetError(f"{path}: \"frames\" must map each id to its fx, fy, cx, cy (or list frames with "
                               "\"id\")")
    split_value = meta.get(split) if split not in ("frames", "depth_scale", *_K_KEYS) else None
    split_frames = _split_frames(split_value, path, split) if split_value is not None else None
    split_k = split_value if split_value is not None and split_frames is None else None
    if global_k is None and frames is None and split_value is None:
        return scale, None, None
    ks, sizes = [], []
    for i in ids:
        if frames is not None and i in frames:
            entry, where = frames[i], f"frame {i!r} (\"frames\")"
        elif split_frames is not None and i in split_frames:
            entry, where = split_frames[i], f"frame {i!r} of split {split!r}"
        elif split_k is not None:
            entry, where = split_k, f"split {split!r}"
        elif global_k is not None:
            entry, where = global_k, "the dataset (top-level fx, fy, cx, cy)"
        else:
            raise DatasetError(
                f"{path} gives no intrinsics for frame {i!r} of split {split!r}: add it (under \"frames\" or the "
                "split's list) or write dataset-wide fx, fy, cx, cy"
            )
        k, size = _check_k(entry, path, where)
        ks.append(k)
        sizes.append(size)
    return scale, torch.tensor(ks, dtype=torch.float32).reshape(-1, 4), sizes


def _folder(root: Path, template: str, split: str) -> Path:
    return root / template.replace("{split}", split)


class DepthFolder(Dataset):
    """A split of an RGB-D dataset in the layout of this module's docstring.

    Args:
        root: the dataset folder.
        split: split name, optionally sliced (``"train[:10]"``, as :class:`pixelwise.data.SegmentationFolder`).
        transforms: a joint transform called with the item dict and returning it (:func:`depth_train_transforms`,
            :func:`depth_eval_transforms`).
        depth_scale: ``"mm"`` or ``"kitti"``; overrides intrinsics.json's ``"depth_scale"``.
        require_normals: raise if the split has no normals (neither files nor ``normals_from_depth``).
        normals_from_depth: compute the normals from the depth and the intrinsics
            (:func:`pixelwise.depth.normals_from_depth`, before the transforms) instead of reading normal files
            (files, if any, are then not read).
        depth_dir, normals_dir, image_dir: folders relative to ``root``, ``{split}`` replaced by the split name.

    Items are dicts: ``image`` (``tv_tensors.Image`` uint8 (3, H, W); float after normalisation), ``depth``
    float32 (1, H, W) metres (0 = invalid), ``valid`` bool (1, H, W) (``depth > 0``), ``normals`` float32
    (3, H, W) unit normals (x right, y down, z forward, facing the camera; zero where unknown), ``normals_valid``
    bool (1, H, W) (all False when the split has no normals), ``intrinsics`` float32 (4,) ``(fx, fy, cx, cy)``
    after the transforms (NaN when the dataset declares none).

    Raises:
        DatasetError: at construction: a missing folder, an empty split, an unknown or undeclared depth scale, an
            image without a depth PNG (or without a normals PNG when the split has normals), a bad intrinsics.json,
            or one missing when ``normals_from_depth`` is asked; when an item is read: a depth PNG that is 8-bit or
            colour, of another size than its image, or without any valid pixel, a bad normals PNG, an image whose
            size differs from the width/height declared with its intrinsics. Each message names the file and the
            fix.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transforms=None,
        depth_scale: str | None = None,
        require_normals: bool = False,
        normals_from_depth: bool = False,
        depth_dir: str = "depth/{split}",
        normals_dir: str = "normals/{split}",
        image_dir: str = "images/{split}",
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.transforms = transforms
        self.normals_from_depth = bool(normals_from_depth)
        if not self.root.is_dir():
            raise DatasetError(f"dataset folder {self.root} does not exist")
        name, part = parse_split(split)
        images_path = _folder(self.root, image_dir, name)
        if not images_path.is_dir():
            raise DatasetError(f"split {name!r} not found: {images_path} is not a folder (expected "
                               f"{image_dir.replace('{split}', '<split>')}/<id>.png|jpg)")
        images = files_by_id(images_path)
        list_file = self.root / f"{name}.txt"
        ids = read_id_list(list_file, images, images_path) if list_file.is_file() else sorted(images)
        self.ids: list[str] = ids[part]
        if not self.ids:
            raise DatasetError(f"split {split!r} of {self.root} is empty: no images in {images_path}")
        self.image_paths = [images[i] for i in self.ids]

        depth_path = _folder(self.root, depth_dir, name)
        if not depth_path.is_dir():
            raise DatasetError(f"depth folder {depth_path} of split {name!r} does not exist: write depth/<split>/"
                               "<id>.png (uint16) beside images/<split>/, or point depth_dir= at the depth folder")
        self.depth_paths = [depth_path / f"{i}.png" for i in self.ids]
        self._require_all(self.depth_paths, "depth", "a 16-bit single-channel depth PNG")

        json_path = self.root / "intrinsics.json"
        declared_scale, k, sizes = (read_intrinsics_json(json_path, name, self.ids) if json_path.is_file()
                                    else (None, None, None))
        scale = depth_scale if depth_scale is not None else declared_scale
        if scale is None:
            raise DatasetError(f"the depth scale of {self.root} is not declared: " + _SCALE_FIX.format(json=json_path))
        if scale not in DEPTH_PNG_SCALES:
            source = "depth_scale argument" if depth_scale is not None else f"\"depth_scale\" in {json_path}"
            raise DatasetError(f"unknown {source} {scale!r} for {self.root}: use 'mm' (uint16 millimetres, NYU "
                               "toolboxes) or 'kitti' (value / 256 = metres, KITTI)")
        self.depth_scale: str = scale
        if self.normals_from_depth and k is None:
            state = "gives no fx, fy, cx, cy" if json_path.is_file() else "is missing"
            raise DatasetError(f"{json_path} {state}, and normals_from_depth needs the camera intrinsics: write "
                               "{\"fx\": ..., \"fy\": ..., \"cx\": ..., \"cy\": ...} in pixels (or per frame)")
        self.intrinsics = k if k is not None else torch.full((len(self.ids), 4), float("nan"))
        self._sizes = sizes

        normals_path = _folder(self.root, normals_dir, name)
        has_files = normals_path.is_dir() and any(normals_path.iterdir())
        self.normals_paths: list[Path] | None = None
        if has_files and not self.normals_from_depth:
            self.normals_paths = [normals_path / f"{i}.png" for i in self.ids]
            self._require_all(self.normals_paths, "normals", "an 8-bit RGB normals PNG")
        if require_normals and self.normals_paths is None and not self.normals_from_depth:
            raise DatasetError(f"split {name!r} of {self.root} has no normals ({normals_path} is missing or empty): "
                               "add normals/<split>/<id>.png or pass normals_from_depth=True")

    def _require_all(self, paths: list[Path], what: str, fix: str) -> None:
        missing = [(p, im) for p, im in zip(paths, self.image_paths) if not p.is_file()]
        if missing:
            path, image = missing[0]
            others = sorted(q.name for q in path.parent.glob(f"{path.stem}.*"))
            hint = f" (found {', '.join(others)}: {what} must be a .png)" if others else ""
            raise DatasetError(
                f"{len(missing)} image(s) have no {what} file, e.g. {path} for {image}{hint}: add {fix} per image, "
                f"or list the ids to use in {self.root / (parse_split(self.split)[0] + '.txt')}"
            )

    @property
    def has_normals(self) -> bool:
        return self.normals_paths is not None or self.normals_from_depth

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int) -> dict[str, torch.Tensor]:
        """Item ``index`` before the transforms."""
        image_path, depth_path = self.image_paths[index], self.depth_paths[index]
        image = read_image(image_path, 3, exif=False)
        h, w = image.shape[-2:]
        depth = read_depth_file(depth_path, self.depth_scale)
        if tuple(depth.shape) != (h, w):
            raise DatasetError(
                f"depth {depth_path} is {depth.shape[1]}x{depth.shape[0]} but its image {image_path} is {w}x{h} "
                "(width x height): save the depth at the image's resolution (resample depth with nearest neighbour)"
            )
        size = self._sizes[index] if self._sizes is not None else None
        if size is not None and size != (h, w):
            raise DatasetError(
                f"{self.root / 'intrinsics.json'} gives the intrinsics of frame {self.ids[index]!r} for "
                f"{size[1]}x{size[0]} but {image_path} is {w}x{h}: write the intrinsics of the stored images"
            )
        k = self.intrinsics[index].clone()
        if self.normals_from_depth:
            normals, normals_valid = normals_from_depth(depth, k)
        elif self.normals_paths is not None:
            normals, normals_valid = read_normals_file(self.normals_paths[index])
            if tuple(normals.shape[-2:]) != (h, w):
                raise DatasetError(
                    f"normals {self.normals_paths[index]} are {normals.shape[-1]}x{normals.shape[-2]} but the image "
                    f"{image_path} is {w}x{h}: save the normals at the image's resolution"
                )
        else:
            normals, normals_valid = torch.zeros(3, h, w), torch.zeros(h, w, dtype=torch.bool)
        return {
            "image": image,
            "depth": depth.unsqueeze(0),
            "valid": (depth > 0).unsqueeze(0),
            "normals": normals.float(),
            "normals_valid": normals_valid.unsqueeze(0),
            "intrinsics": k,
        }

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.load(index)
        return self.transforms(item) if self.transforms is not None else item

    def __repr__(self) -> str:
        normals = "from depth" if self.normals_from_depth else ("files" if self.normals_paths else "none")
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, n={len(self)}, "
                f"depth_scale={self.depth_scale!r}, normals={normals!r})")


# ------------------------------------------------------------------------------------------------ transforms
# Every transform takes the item dict and returns a new one. Keys other than these are passed through; "normals"
# and "normals_valid" are optional, and "depth" / "valid" may be (H, W) or (1, H, W) (SyntheticDepth's items).

_PIXEL_KEYS = ("image", "depth", "valid", "normals", "normals_valid")


def _plain(t: torch.Tensor) -> torch.Tensor:
    return t.as_subclass(torch.Tensor) if isinstance(t, torch.Tensor) else t


def _with_image(out: dict, image: torch.Tensor) -> dict:
    out["image"] = tv_tensors.Image(_plain(image))
    return out


def _nearest(t: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize of (..., H, W) with pixel centres aligned (``nearest-exact``, the alignment of
    bilinear resizing), keeping the dtype (bool included)."""
    lead = t.shape[:-2]
    x = t.reshape(1, -1, *t.shape[-2:])
    x = F.interpolate(x.to(torch.float32) if t.dtype == torch.bool or not t.is_floating_point() else x,
                      size=list(size), mode="nearest-exact")
    return x.to(t.dtype).reshape(*lead, *size)


def _canvas(t: torch.Tensor, top: int, left: int, h: int, w: int) -> torch.Tensor:
    """Rows top..top+h and columns left..left+w of ``t`` (..., H, W); outside the image: zeros (= invalid)."""
    out = t.new_zeros(*t.shape[:-2], h, w)
    H, W = t.shape[-2:]
    y0, y1 = max(top, 0), min(top + h, H)
    x0, x1 = max(left, 0), min(left + w, W)
    if y1 > y0 and x1 > x0:
        out[..., y0 - top:y1 - top, x0 - left:x1 - left] = t[..., y0:y1, x0:x1]
    return out


class DepthCompose:
    """Apply joint transforms in order."""

    def __init__(self, transforms: Sequence) -> None:
        self.transforms = list(transforms)

    def __call__(self, item: dict) -> dict:
        for t in self.transforms:
            item = t(item)
        return item

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transforms})"


class DepthRandomScale:
    """Resize the item by a factor drawn uniformly from ``scale_range``: image bilinear (antialiased), depth,
    validity and normals nearest-exact. Default: depth kept, intrinsics scaled (``fx' = sx fx``,
    ``cx' = sx (cx + 0.5) - 0.5``); ``scale_depth=True``: depth divided by ``sqrt(sx sy)``, fx, fy kept, normals
    transformed as ``n' ~ (nx / sx, ny / sy, nz)``. See the module docstring."""

    def __init__(self, scale_range: Sequence[float], scale_depth: bool = False) -> None:
        lo, hi = float(scale_range[0]), float(scale_range[1])
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        self.scale_range = (lo, hi)
        self.scale_depth = bool(scale_depth)

    def __call__(self, item: dict) -> dict:
        s = float(torch.empty(()).uniform_(*self.scale_range))
        h, w = item["depth"].shape[-2:]
        size = (max(1, round(h * s)), max(1, round(w * s)))
        return self.resize(item, size)

    def resize(self, item: dict, size: Sequence[int]) -> dict:
        """``item`` resized to ``size = (H', W')`` (the deterministic part)."""
        h, w = item["depth"].shape[-2:]
        sy, sx = size[0] / h, size[1] / w
        out = dict(item)
        image = TF.resize(_plain(item["image"]), list(size), interpolation=v2.InterpolationMode.BILINEAR,
                          antialias=True)
        _with_image(out, image)
        for key in ("depth", "valid", "normals", "normals_valid"):
            if key in item:
                out[key] = _nearest(_plain(item[key]), size)
        k = _plain(item["intrinsics"]).clone()
        k[2] = sx * (k[2] + 0.5) - 0.5
        k[3] = sy * (k[3] + 0.5) - 0.5
        if self.scale_depth:
            out["depth"] = out["depth"] / math.sqrt(sx * sy)
            if "normals" in out:
                n = out["normals"] * torch.tensor([1 / sx, 1 / sy, 1.0]).reshape(3, 1, 1)
                out["normals"] = n / torch.linalg.vector_norm(n, dim=-3, keepdim=True).clamp_min(1e-12)
        else:
            k[0] = k[0] * sx
            k[1] = k[1] * sy
        out["intrinsics"] = k
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scale_range={self.scale_range}, scale_depth={self.scale_depth})"


class DepthRandomCrop:
    """Crop a random ``size = (h, w)`` window; along a side shorter than the crop the image lands at a random
    offset in a padded canvas (depth 0, invalid, zero normals, image 0). ``cx -= left``, ``cy -= top``."""

    def __init__(self, size: Sequence[int]) -> None:
        self.size = (int(size[0]), int(size[1]))
        if min(self.size) < 1:
            raise ValueError(f"crop size must be positive, got {size}")

    @staticmethod
    def _offset(length: int, crop: int) -> int:
        if length >= crop:
            return int(torch.randint(0, length - crop + 1, ()))
        return -int(torch.randint(0, crop - length + 1, ()))

    def __call__(self, item: dict) -> dict:
        h, w = item["depth"].shape[-2:]
        return self.crop(item, self._offset(h, self.size[0]), self._offset(w, self.size[1]))

    def crop(self, item: dict, top: int, left: int) -> dict:
        """The window of ``self.size`` at (top, left) (negative or past the edge: padded)."""
        out = dict(item)
        for key in _PIXEL_KEYS:
            if key in item:
                out[key] = _canvas(_plain(item[key]), top, left, *self.size)
        _with_image(out, out["image"])
        k = _plain(item["intrinsics"]).clone()
        k[2] -= left
        k[3] -= top
        out["intrinsics"] = k
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


class DepthHorizontalFlip:
    """Mirror left-right with probability ``p``: the normals' x component is negated and ``cx' = W - 1 - cx``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = float(p)

    def __call__(self, item: dict) -> dict:
        return self.flip(item) if float(torch.rand(())) < self.p else item

    @staticmethod
    def flip(item: dict) -> dict:
        out = dict(item)
        for key in _PIXEL_KEYS:
            if key in item:
                out[key] = _plain(item[key]).flip(-1)
        _with_image(out, out["image"])
        if "normals" in out:
            out["normals"] = out["normals"] * torch.tensor([-1.0, 1.0, 1.0]).reshape(3, 1, 1)
        k = _plain(item["intrinsics"]).clone()
        k[2] = item["depth"].shape[-1] - 1 - k[2]
        out["intrinsics"] = k
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class DepthColorJitter:
    """Brightness, contrast and saturation jitter (``torchvision.transforms.v2.ColorJitter``) of the image only."""

    def __init__(self, strength: float = 0.2) -> None:
        self.jitter = v2.ColorJitter(brightness=strength, contrast=strength, saturation=strength)

    def __call__(self, item: dict) -> dict:
        return _with_image(dict(item), self.jitter(tv_tensors.Image(_plain(item["image"]))))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.jitter})"


class DepthNormalize:
    """The image to float32 in [0, 1] (from uint8), then ``(x - mean) / std`` per channel."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean, self.std = list(mean), list(std)

    def __call__(self, item: dict) -> dict:
        image = TF.to_dtype(_plain(item["image"]), torch.float32, scale=True)
        return _with_image(dict(item), TF.normalize(image, self.mean, self.std))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean}, std={self.std})"


def depth_train_transforms(
    crop_size: Sequence[int],
    scale_range: Sequence[float] = (1.0, 1.5),
    hflip: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    color_jitter: float = 0.2,
    scale_depth: bool = False,
) -> DepthCompose:
    """Training augmentation of RGB-D items: random scale (``scale_range``; ``(1, 1)`` for none), random crop to
    ``crop_size = (h, w)`` (padded with invalid pixels), horizontal flip (p = 0.5), colour jitter of the image
    (0: none), then the image to float32 normalised by ``mean`` / ``std``. Deterministic under
    ``torch.manual_seed`` (every draw comes from torch's global generator). ``scale_depth``: see
    :class:`DepthRandomScale`."""
    ops: list = []
    if tuple(scale_range) != (1, 1):
        ops.append(DepthRandomScale(scale_range, scale_depth))
    ops.append(DepthRandomCrop(crop_size))
    if hflip:
        ops.append(DepthHorizontalFlip())
    if color_jitter:
        ops.append(DepthColorJitter(color_jitter))
    ops.append(DepthNormalize(mean, std))
    return DepthCompose(ops)


def depth_eval_transforms(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> DepthCompose:
    """Evaluation: the image to float32 normalised by ``mean`` / ``std``; depth, normals and intrinsics untouched."""
    return DepthCompose([DepthNormalize(mean, std)])
