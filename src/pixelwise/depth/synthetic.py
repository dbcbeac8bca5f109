"""SyntheticDepth: a built-in, deterministic RGB-D dataset (image, metric depth, surface normals) for the depth and
normals task, its demo and its fast tests.

Every scene is a small room seen by a pinhole camera: a ground plane, a back wall and, in half of the scenes, a side
wall, with 1 to 4 boxes and 1 to 3 spheres standing on the floor (some spheres float). Each surface carries a
procedural texture (checker, stripes or noise, two random colours) and is lit by one directional light with
Lambertian shading, cast shadows and an ambient term, so the shading cues the normals as in real images while the
colours say nothing about the depth. Depth and normals are exact: every pixel's ray is intersected analytically
with every object in numpy (vectorised over pixels) and the nearest hit is kept. Like a real depth sensor, some
pixels have no depth (0 = invalid): one to three elliptical "dropout" blobs, and any surface farther than
``max_depth`` (10 m by default) or no surface at all.

Conventions (those of :mod:`pixelwise.depth.geometry`, NYU Depth v2 and OpenCV):

* Camera coordinates: x to the right, y down, z forward. Pixel (row v, column u) has its centre at image
  coordinates (u, v); the intrinsics ``(fx, fy, cx, cy)`` are in pixels, with (0, 0) the centre of the top-left
  pixel. Pixel (v, u) sees the ray through ``((u - cx) / fx, (v - cy) / fy, 1)``.
* Depth is the z coordinate of the pixel's 3-D point (distance along the optical axis, not along the ray), in metres.
* A normal is a unit vector in camera coordinates pointing towards the camera (``n . p < 0`` for its point p); a
  pixel without depth has the zero normal.
"""

from __future__ import annotations

import colorsys
import json
import math
import operator
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from pixelwise.data.synthetic import image_index
from pixelwise.depth.geometry import encode_normals, write_depth_png
from pixelwise.errors import DatasetError

__all__ = ["SyntheticDepth", "default_intrinsics", "render_scene", "write_synthetic_depth"]

_SPLITS: tuple[str, ...] = ("train", "val", "test")
_DEFAULT_NUM_IMAGES: dict[str, int] = {"train": 200, "val": 40, "test": 40}
_MIN_SIDE = 16
_DEFAULT_SIZE: tuple[int, int] = (96, 128)
#: default focal length as a fraction of the image width: NYU Depth v2's Kinect (518.9 px at 640 px), a 64 degree
#: horizontal field of view
_FOCAL_PER_WIDTH = 0.81
_MAX_DEPTH = 10.0
_PATTERNS: tuple[str, ...] = ("checker", "stripes", "noise")
_NOISE_WAVES = 6
# Offset of a shadow ray's origin along the normal, so that a surface does not shadow itself by round-off.
_SHADOW_EPS = 1e-4


# ------------------------------------------------------------------------------------------------ validation


def _check_size(size: Any) -> tuple[int, int]:
    try:
        height, width = (operator.index(v) for v in size)
    except (TypeError, ValueError):
        raise DatasetError(f"size must be (height, width), two ints, got {size!r}") from None
    if height < _MIN_SIDE or width < _MIN_SIDE:
        raise DatasetError(f"size must be at least {_MIN_SIDE}x{_MIN_SIDE} pixels, got {size!r}")
    return height, width


def _check_seed(seed: Any) -> int | tuple[int, ...]:
    is_sequence = isinstance(seed, Sequence) and not isinstance(seed, (str, bytes))
    values = seed if is_sequence else (seed,)
    if len(values) == 0 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 for v in values):
        raise DatasetError(f"seed must be a non-negative int or a non-empty sequence of them, got {seed!r}")
    return tuple(int(v) for v in values) if is_sequence else int(seed)


def _check_intrinsics(intrinsics: Any, size: tuple[int, int]) -> tuple[float, float, float, float]:
    if intrinsics is None:
        return default_intrinsics(size)
    try:
        k = np.asarray(intrinsics, dtype=np.float64)
    except (TypeError, ValueError):
        k = None
    if k is None or k.shape != (4,) or not np.isfinite(k).all() or k[0] <= 0 or k[1] <= 0:
        raise DatasetError(f"intrinsics must be (fx, fy, cx, cy): 4 finite numbers with fx, fy > 0, got {intrinsics!r}")
    return tuple(float(v) for v in k)  # type: ignore[return-value]


def default_intrinsics(size: tuple[int, int] = _DEFAULT_SIZE) -> tuple[float, float, float, float]:
    """The default pinhole intrinsics ``(fx, fy, cx, cy)`` in pixels for an image of ``size = (H, W)``.

    ``fx = fy = 0.81 W`` (the field of view of NYU Depth v2's Kinect, 518.9 px at 640 px), and the principal point
    at the image centre, ``cx = (W - 1) / 2``, ``cy = (H - 1) / 2`` ((0, 0) is the centre of the top-left pixel).

    Raises:
        DatasetError (a ValueError): ``size`` is not two ints, each at least 16.
    """
    height, width = _check_size(size)
    focal = _FOCAL_PER_WIDTH * width
    return (focal, focal, (width - 1) / 2.0, (height - 1) / 2.0)


# ------------------------------------------------------------------------------------------------ scene


def _rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation matrix, from a random unit quaternion."""
    w, x, y, z = rng.standard_normal(4)
    n = math.sqrt(w * w + x * x + y * y + z * z) or 1.0
    w, x, y, z = w / n, x / n, y / n, z / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def _unit(rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    v = rng.standard_normal((3,) if n is None else (n, 3))
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _texture(rng: np.random.Generator, frame: np.ndarray) -> dict[str, Any]:
    """A random procedural texture; every kind draws the same numbers, so one object's kind does not shift the next.

    The texture is solid (a function of 3-D position): ``q = (p - anchor) @ frame + shift`` are the coordinates of a
    surface point p in the object's own frame, in metres, and the pattern weight ``w(q)`` in [0, 1] mixes the two
    colours.
    """
    pattern = _PATTERNS[int(rng.integers(len(_PATTERNS)))]
    colors = np.array(
        [colorsys.hsv_to_rgb(rng.uniform(0.0, 1.0), rng.uniform(0.15, 0.9), rng.uniform(0.35, 1.0)) for _ in range(2)]
    )
    return {
        "pattern": pattern,
        "colors": colors,  # (2, 3) RGB in [0, 1]
        "frame": frame,
        "shift": rng.uniform(0.0, 10.0, size=3),
        "period": float(rng.uniform(0.12, 0.6)),  # checker square side, stripe period (m)
        "direction": _unit(rng),  # stripes
        "phase": float(rng.uniform(0.0, 2.0 * math.pi)),  # stripes
        "wave_directions": _unit(rng, _NOISE_WAVES),  # noise: a sum of plane waves
        "wave_lengths": rng.uniform(0.06, 0.8, size=_NOISE_WAVES),
        "wave_phases": rng.uniform(0.0, 2.0 * math.pi, size=_NOISE_WAVES),
    }


def _make_scene(rng: np.random.Generator) -> dict[str, Any]:
    """Draw a random room in camera coordinates. Nothing here depends on the image size or intrinsics."""
    # World frame: camera at the origin, x right, y down (gravity), z forward and horizontal; the floor is y = h.
    height = float(rng.uniform(1.0, 1.6))
    pitch = float(np.deg2rad(rng.uniform(5.0, 20.0)))  # camera looks down by this much
    roll = float(np.deg2rad(rng.uniform(-4.0, 4.0)))
    rot = _rot_z(roll) @ _rot_x(pitch)  # world -> camera: p_cam = rot @ p_world

    wall_distance = float(rng.uniform(4.5, 8.5))
    yaw = float(np.deg2rad(rng.uniform(-25.0, 25.0)))
    back = np.array([math.sin(yaw), 0.0, math.cos(yaw)])  # from the camera towards the back wall
    has_side = bool(rng.random() < 0.5)
    side_sign = 1.0 if rng.random() < 0.5 else -1.0
    side_distance = float(rng.uniform(1.5, 3.0))
    side = side_sign * np.array([math.cos(yaw), 0.0, -math.sin(yaw)])  # towards the side wall, along the floor

    objects: list[dict[str, Any]] = []

    def plane(name: str, normal_world: np.ndarray, point_world: np.ndarray) -> None:
        frame = rot  # texture in world coordinates: its columns are the world axes in camera coordinates
        objects.append(
            {
                "kind": "plane",
                "name": name,
                "normal": rot @ normal_world,
                "point": rot @ point_world,
                "texture": _texture(rng, frame),
            }
        )

    plane("ground", np.array([0.0, -1.0, 0.0]), np.array([0.0, height, 0.0]))
    plane("back wall", -back, wall_distance * back)
    if has_side:
        plane("side wall", -side, side_distance * side)

    # Objects are placed on the floor within the default horizontal field of view, in front of the walls.
    half_fov = math.atan(0.5 / _FOCAL_PER_WIDTH)

    def place(extent: float) -> tuple[float, float]:
        azimuth = float(rng.uniform(-0.8, 0.8)) * half_fov
        direction = np.array([math.sin(azimuth), 0.0, math.cos(azimuth)])
        far = wall_distance / float(direction @ back) - extent - 0.1
        if has_side and float(direction @ side) > 0:
            far = min(far, (side_distance - extent - 0.1) / float(direction @ side))
        distance = float(rng.uniform(1.8, max(min(far, 6.0), 1.9)))  # furniture stands mostly near the camera
        return distance * direction[0], distance * direction[2]

    for i in range(int(rng.integers(1, 5))):
        half = rng.uniform([0.15, 0.15, 0.15], [0.6, 0.5, 0.6])
        aligned = bool(rng.random() < 1.0 / 3.0)  # square to the room, else turned by a random angle
        turn = yaw + (0.0 if aligned else float(rng.uniform(0.0, 0.5 * math.pi)))
        x, z = place(float(math.hypot(half[0], half[2])))
        axes = rot @ _rot_y(turn)  # columns: the box's axes in camera coordinates
        objects.append(
            {
                "kind": "box",
                "name": f"box {i}",
                "center": rot @ np.array([x, height - half[1], z]),
                "half_size": half,
                "axes": axes,
                "texture": _texture(rng, axes),
            }
        )
    for i in range(int(rng.integers(1, 4))):
        radius = float(rng.uniform(0.15, 0.45))
        lift = float(rng.uniform(0.1, 0.8)) if rng.random() < 1.0 / 3.0 else 0.0
        x, z = place(radius)
        objects.append(
            {
                "kind": "sphere",
                "name": f"sphere {i}",
                "center": rot @ np.array([x, height - radius - lift, z]),
                "radius": radius,
                "texture": _texture(rng, _random_rotation(rng)),
            }
        )

    # A directional light from above and from the camera's side of the room, so that the back wall is lit.
    elevation = float(np.deg2rad(rng.uniform(25.0, 70.0)))
    azimuth = float(np.deg2rad(rng.uniform(-60.0, 60.0)))
    light_world = np.array(
        [math.cos(elevation) * math.sin(azimuth), -math.sin(elevation), -math.cos(elevation) * math.cos(azimuth)]
    )
    blobs = [
        (rng.uniform(0.05, 0.95, size=2), rng.uniform(0.015, 0.05, size=2), float(rng.uniform(0.0, math.pi)))
        for _ in range(int(rng.integers(1, 4)))
    ]
    return {
        "camera_height": height,
        "pitch": pitch,
        "roll": roll,
        "rotation": rot,
        "light": rot @ light_world,
        "ambient": float(rng.uniform(0.12, 0.3)),
        "intensity": float(rng.uniform(0.85, 1.15)),
        "noise_sigma": float(rng.uniform(1.0, 4.0)),
        "objects": objects,
        "dropout": blobs,
    }


# ------------------------------------------------------------------------------------------------ ray casting


def _intersect(obj: dict[str, Any], origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Ray parameter t of the first hit with ``t > 0`` (inf for a miss) of rays ``origins + t * dirs`` (N, 3),
    and for a plane or box the outward normal (N, 3) (None for a sphere: the caller derives it from the point)."""
    kind = obj["kind"]
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "plane":
            n = obj["normal"]
            denom = dirs @ n
            t = ((obj["point"] - origins) @ n) / denom
            hit = (denom < 0) & (t > 0)  # only the side facing the camera
            return np.where(hit, t, np.inf), np.broadcast_to(n, dirs.shape)
        if kind == "sphere":
            oc = origins - obj["center"]
            a = np.einsum("ij,ij->i", dirs, dirs)
            b = np.einsum("ij,ij->i", dirs, oc)
            c = np.einsum("ij,ij->i", oc, oc) - obj["radius"] ** 2
            disc = b * b - a * c
            t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
            return np.where((disc >= 0) & (t > 0), t, np.inf), None
        # box: slabs in the box's own frame
        axes, half = obj["axes"], obj["half_size"]
        o = (origins - obj["center"]) @ axes
        d = dirs @ axes
        t1 = (-half - o) / d
        t2 = (half - o) / d
        near = np.minimum(t1, t2)
        t_in = near.max(axis=1)
        t_out = np.maximum(t1, t2).min(axis=1)
        hit = (t_in <= t_out) & (t_in > 0)
        face = near.argmax(axis=1)
        sign = -np.sign(np.take_along_axis(d, face[:, None], axis=1))  # the entry face looks against the ray
        return np.where(hit, t_in, np.inf), axes.T[face] * sign


def _solid_texture(tex: dict[str, Any], q: np.ndarray) -> np.ndarray:
    """Pattern weight in [0, 1] at texture coordinates q (N, 3)."""
    if tex["pattern"] == "checker":
        cells = np.floor(q / tex["period"]).astype(np.int64).sum(axis=1)
        return (cells % 2).astype(np.float64)
    if tex["pattern"] == "stripes":
        s = np.sin(2.0 * math.pi * (q @ tex["direction"]) / tex["period"] + tex["phase"])
        return np.clip(0.5 + 1.5 * s, 0.0, 1.0)
    waves = np.sin(2.0 * math.pi * (q @ tex["wave_directions"].T) / tex["wave_lengths"] + tex["wave_phases"])
    return np.clip(0.5 + waves.sum(axis=1) / math.sqrt(_NOISE_WAVES), 0.0, 1.0)


def render_scene(
    seed: int | Sequence[int],
    size: tuple[int, int] = _DEFAULT_SIZE,
    intrinsics: Sequence[float] | None = None,
    max_depth: float = _MAX_DEPTH,
) -> dict[str, Any]:
    """Render one random room as an RGB-D frame with exact depth and surface normals.

    The scene (camera pose, walls, objects, textures, light, dropout blobs) is drawn from
    ``numpy.random.default_rng`` seeded with ``seed`` and depends on nothing else: the same seed at another size or
    with other intrinsics shows the same room. The image noise is drawn from a second stream of the same seed. The
    result is bit-identical across calls and processes.

    The camera stands 1.0-1.6 m above the floor, looking down by 5-20 degrees with up to 4 degrees of roll; the back
    wall is 4.5-8.5 m away (turned by up to 25 degrees), so valid depths lie between about 1 and 10 m, as in
    NYU Depth v2. Shading is Lambertian, ``albedo * intensity * (ambient + (1 - ambient) * max(0, n . l))``, with
    the light direction l from above and from the camera's side of the room; boxes and spheres cast shadows (the walls and floor
    do not), then Gaussian pixel noise of 1-4 grey levels is added.

    Args:
        seed: a non-negative int, or a non-empty sequence of them (as ``numpy.random.default_rng`` takes).
        size: ``(H, W)`` in pixels, each at least 16.
        intrinsics: ``(fx, fy, cx, cy)`` in pixels; default :func:`default_intrinsics` of ``size``.
        max_depth: surfaces farther than this (metres, along z) get no depth, like the range limit of a sensor.

    Returns:
        A dict:

        * ``image``: uint8 (H, W, 3), RGB.
        * ``depth``: float32 (H, W), metres: the exact z coordinate (along the optical axis, not the ray length) of
          the nearest surface on each pixel-centre ray; 0 where invalid (a dropout blob, beyond ``max_depth``, or no
          surface).
        * ``normals``: float32 (3, H, W), unit surface normals in camera coordinates (x right, y down, z forward),
          pointing towards the camera (``n . ray < 0``); the zero vector where the depth is invalid.
        * ``valid``: bool (H, W), ``depth > 0``.
        * ``labels``: int16 (H, W), the index in ``scene["objects"]`` of the surface each pixel shows (also where
          the depth is invalid), -1 where the ray hits nothing (impossible with the default intrinsics; possible
          only with a much wider field of view).
        * ``intrinsics``: ``(fx, fy, cx, cy)``, floats, pixels.
        * ``scene``: the scene description, in camera coordinates and metres: ``objects`` is a list of dicts with
          ``kind`` (``"plane"``: ``normal`` facing the camera and ``point``; ``"sphere"``: ``center``, ``radius``;
          ``"box"``: ``center``, ``half_size`` along its ``axes``, a rotation whose columns are the box's axes),
          ``name`` and ``texture``; also ``camera_height``, ``pitch``, ``roll`` (radians), ``rotation`` (world to
          camera, world y pointing down), ``light`` (unit vector towards the light), ``ambient``.

    Raises:
        DatasetError (a ValueError): a bad ``seed``, ``size``, ``intrinsics`` or ``max_depth``.
    """
    seed = _check_seed(seed)
    height, width = _check_size(size)
    fx, fy, cx, cy = _check_intrinsics(intrinsics, (height, width))
    if isinstance(max_depth, bool) or not isinstance(max_depth, (int, float)) or not max_depth > 0:
        raise DatasetError(f"max_depth must be a positive number of metres, got {max_depth!r}")

    scene_ss, noise_ss = np.random.SeedSequence(seed).spawn(2)
    scene = _make_scene(np.random.default_rng(scene_ss))
    noise_rng = np.random.default_rng(noise_ss)
    objects = scene["objects"]

    # One ray per pixel centre, scaled so that its z component is 1: the ray parameter t is then the depth.
    u = (np.arange(width, dtype=np.float64) - cx) / fx
    v = (np.arange(height, dtype=np.float64) - cy) / fy
    dirs = np.stack(np.broadcast_arrays(u[None, :], v[:, None], np.ones((1, 1))), axis=-1).reshape(-1, 3)
    origins = np.zeros((1, 3))
    count = dirs.shape[0]

    depth = np.full(count, np.inf)
    label = np.full(count, -1, dtype=np.int16)
    normal = np.zeros((count, 3))
    for k, obj in enumerate(objects):
        t, n = _intersect(obj, origins, dirs)
        nearer = t < depth
        depth[nearer] = t[nearer]
        label[nearer] = k
        if n is None:  # sphere
            normal[nearer] = (dirs[nearer] * t[nearer, None] - obj["center"]) / obj["radius"]
        else:
            normal[nearer] = n[nearer]
    hit = np.isfinite(depth)
    points = dirs * np.where(hit, depth, 0.0)[:, None]

    # Texture and shading.
    albedo = np.zeros((count, 3))
    for k, obj in enumerate(objects):
        sel = label == k
        if not sel.any():
            continue
        tex = obj["texture"]
        anchor = obj["point"] if obj["kind"] == "plane" else obj["center"]
        w = _solid_texture(tex, (points[sel] - anchor) @ tex["frame"] + tex["shift"])
        c0, c1 = tex["colors"]
        albedo[sel] = c0 + w[:, None] * (c1 - c0)
    light = scene["light"]
    lambert = np.clip(normal @ light, 0.0, None)
    lit = hit & (lambert > 0)
    if lit.any():
        shadow_origins = points[lit] + _SHADOW_EPS * normal[lit]
        shadow_dirs = np.broadcast_to(light, shadow_origins.shape)
        blocked = np.zeros(int(lit.sum()), dtype=bool)
        for obj in objects:
            if obj["kind"] != "plane":
                blocked |= np.isfinite(_intersect(obj, shadow_origins, shadow_dirs)[0])
        lambert[np.flatnonzero(lit)[blocked]] = 0.0
    ambient = scene["ambient"]
    shade = scene["intensity"] * (ambient + (1.0 - ambient) * lambert)
    rgb = np.where(hit[:, None], albedo * shade[:, None] * 255.0, 20.0)
    rgb = rgb + scene["noise_sigma"] * noise_rng.standard_normal((count, 3))
    image = np.rint(np.clip(rgb, 0.0, 255.0)).astype(np.uint8).reshape(height, width, 3)

    # Invalid depth: out of range, no surface, and the dropout blobs (in coordinates relative to the image size).
    valid = hit & (depth <= max_depth)
    rel_u = (np.arange(width) + 0.5) / width
    rel_v = (np.arange(height) + 0.5) / height
    for (bu, bv), (ru, rv), angle in scene["dropout"]:
        du, dv = rel_u[None, :] - bu, rel_v[:, None] - bv
        a, b = math.cos(angle), math.sin(angle)
        blob = ((a * du + b * dv) / ru) ** 2 + ((-b * du + a * dv) / rv) ** 2 <= 1.0
        valid &= ~blob.reshape(-1)

    depth_out = np.where(valid, depth, 0.0).astype(np.float32).reshape(height, width)
    normal = np.where(valid[:, None], normal, 0.0)
    normals_out = np.ascontiguousarray(normal.T.reshape(3, height, width).astype(np.float32))
    return {
        "image": image,
        "depth": depth_out,
        "normals": normals_out,
        "valid": valid.reshape(height, width),
        "labels": label.reshape(height, width),
        "intrinsics": (fx, fy, cx, cy),
        "scene": scene,
    }


# ------------------------------------------------------------------------------------------------ dataset


class SyntheticDepth(Dataset):
    """Random rooms as RGB-D frames with exact depth and normals (:func:`render_scene`), generated from a seed.

    Item ``i`` is a dict:

    * ``image``: :class:`torchvision.tv_tensors.Image`, ``torch.uint8``, shape ``(3, H, W)``, RGB.
    * ``depth``: ``torch.float32`` ``(H, W)``, metres along the optical axis, 0 = invalid.
    * ``normals``: ``torch.float32`` ``(3, H, W)``, unit normals in camera coordinates (x right, y down, z forward)
      facing the camera; zero where the depth is invalid.
    * ``valid``: ``torch.bool`` ``(H, W)``, ``depth > 0``.
    * ``intrinsics``: ``torch.float32`` ``(4,)``, ``(fx, fy, cx, cy)`` in pixels, the same for every item.

    Determinism: item ``i`` is ``render_scene((seed, split_index, i), image_size, intrinsics)`` with split_index 0,
    1, 2 for train, val, test; it is rendered in :meth:`__getitem__` and nothing is cached, so any process, worker
    or order of access gets identical tensors. ``num_images`` only sets the length.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        num_images: length; default 200 for train, 40 for val and test.
        image_size: ``(H, W)`` in pixels, each at least 16.
        seed: non-negative int.
        intrinsics: ``(fx, fy, cx, cy)``; default :func:`default_intrinsics` of ``image_size``.

    Raises:
        DatasetError (a ValueError): unknown split, or a bad ``num_images``, ``image_size``, ``seed`` or
            ``intrinsics``.
    """

    in_channels: int = 3
    depth_scale: str = "mm"

    def __init__(
        self,
        split: str = "train",
        num_images: int | None = None,
        image_size: tuple[int, int] = _DEFAULT_SIZE,
        seed: int = 0,
        intrinsics: Sequence[float] | None = None,
    ) -> None:
        if split not in _SPLITS:
            raise DatasetError(f"unknown split {split!r} for the synthetic dataset; valid splits: {', '.join(_SPLITS)}")
        if num_images is None:
            num_images = _DEFAULT_NUM_IMAGES[split]
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise DatasetError(f"num_images must be a positive int, got {num_images!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise DatasetError(f"seed must be a non-negative int, got {seed!r}")
        self.image_size = _check_size(image_size)
        self.intrinsics = _check_intrinsics(intrinsics, self.image_size)
        self.split = split
        self.split_index = _SPLITS.index(split)
        self.num_images = num_images
        self.seed = seed
        self.ids: list[str] = [f"synthetic_{split}_{i:04d}" for i in range(num_images)]

    def __len__(self) -> int:
        return self.num_images

    def render(self, index: int) -> dict[str, Any]:
        """:func:`render_scene` of item ``index`` (numpy arrays, channel-last image; negative indices count from
        the end).

        Raises:
            IndexError: ``index`` is outside ``-len(self) .. len(self) - 1``.
        """
        index = image_index(index, self.num_images, self.split)
        return render_scene((self.seed, self.split_index, index), self.image_size, self.intrinsics)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        frame = self.render(index)
        image = torch.from_numpy(np.ascontiguousarray(frame["image"].transpose(2, 0, 1)))
        return {
            "image": tv_tensors.Image(image),
            "depth": torch.from_numpy(frame["depth"]),
            "normals": torch.from_numpy(frame["normals"]),
            "valid": torch.from_numpy(frame["valid"]),
            "intrinsics": torch.tensor(frame["intrinsics"], dtype=torch.float32),
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, num_images={self.num_images}, "
            f"image_size={self.image_size}, seed={self.seed})"
        )


def write_synthetic_depth(
    root: str | Path,
    counts: Mapping[str, int] | None = None,
    size: tuple[int, int] = _DEFAULT_SIZE,
    seed: int = 0,
    intrinsics: Sequence[float] | None = None,
) -> Path:
    """Write :class:`SyntheticDepth` frames to ``root`` in the depth folder layout (NYU Depth v2's encodings).

    Layout, for each split and id ``synthetic_<split>_<i:04d>``:

    * ``images/<split>/<id>.png``: RGB, uint8.
    * ``depth/<split>/<id>.png``: single-channel uint16 (Pillow mode ``I;16``), millimetres, ``round(depth * 1000)``;
      0 = invalid (dropout blobs and surfaces beyond 10 m).
    * ``normals/<split>/<id>.png``: RGB uint8, ``round((n + 1) / 2 * 255)`` of the camera-frame normal (R = x right,
      G = y down, B = z forward); (128, 128, 128), the zero vector, where the depth is invalid.
    * ``<split>.txt``: the split's ids, one a line.
    * ``intrinsics.json``: ``{"fx", "fy", "cx", "cy"}`` in pixels (shared by every frame) and ``"depth_scale": "mm"``.

    Args:
        root: output folder (created; existing files of the same names are overwritten).
        counts: split name (``"train"``, ``"val"``, ``"test"``) to number of frames, e.g. ``{"train": 200,
            "val": 40}`` (the default).
        size: ``(H, W)`` in pixels, each at least 16.
        seed: non-negative int; frame i of a split is item i of ``SyntheticDepth(split, size, seed)``.
        intrinsics: ``(fx, fy, cx, cy)``; default :func:`default_intrinsics` of ``size``.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        DatasetError (a ValueError): ``counts`` is empty, names an unknown split or has a count that is not a
            positive int; or a bad ``size``, ``seed`` or ``intrinsics``. Nothing is written then.
    """
    if counts is None:
        counts = {"train": _DEFAULT_NUM_IMAGES["train"], "val": _DEFAULT_NUM_IMAGES["val"]}
    if not isinstance(counts, Mapping) or not counts:
        raise DatasetError(f"counts must be a non-empty mapping of split name to frame count, got {counts!r}")
    for split, n in counts.items():
        if split not in _SPLITS:
            raise DatasetError(f"unknown split {split!r} in counts; valid splits: {', '.join(_SPLITS)}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise DatasetError(f"counts[{split!r}] must be a positive int, got {n!r}")
    datasets = [SyntheticDepth(split, n, size, seed, intrinsics) for split, n in counts.items()]

    root = Path(root)
    for ds in datasets:
        for folder in ("images", "depth", "normals"):
            (root / folder / ds.split).mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(ds.ids):
            frame = ds.render(i)
            Image.fromarray(frame["image"]).save(root / "images" / ds.split / f"{name}.png", format="PNG")
            write_depth_png(root / "depth" / ds.split / f"{name}.png", frame["depth"], "mm")
            normals = encode_normals(torch.from_numpy(frame["normals"])).numpy()
            Image.fromarray(normals).save(root / "normals" / ds.split / f"{name}.png", format="PNG")
        (root / f"{ds.split}.txt").write_text("".join(i + "\n" for i in ds.ids))
    fx, fy, cx, cy = datasets[0].intrinsics
    meta = {"fx": fx, "fy": fy, "cx": cx, "cy": cy, "depth_scale": "mm"}
    (root / "intrinsics.json").write_text(json.dumps(meta, indent=2) + "\n")
    return root
