"""Pinhole geometry of depth maps: back-projection, surface normals from depth, normal and depth PNG encodings.

Conventions (those of NYU Depth v2 and KITTI, and of OpenCV's camera model):

* A depth map holds the z coordinate of each pixel's 3-D point (distance along the optical axis, not along the
  ray), in metres, as a float tensor of shape (H, W) or (N, H, W). 0 marks a pixel without a measurement.
* Camera coordinates: x to the right, y down, z forward (into the scene). Pixel (row v, column u) has its centre at
  image coordinates (u, v); the intrinsics ``(fx, fy, cx, cy)`` are in pixels, with (0, 0) the centre of the
  top-left pixel (the convention of NYU's and KITTI's calibration files).
* A surface normal is a unit vector in camera coordinates oriented towards the camera (n . p < 0 for the point p it
  belongs to); a pixel without a normal holds the zero vector, and functions that produce normals also return a
  bool validity mask.

Depth PNGs are single-channel uint16 with a declared scale: ``"mm"`` (value = millimetres, the NYU Depth v2
toolbox and the BTS "sync" frames) or ``"kitti"`` (value / 256 = metres, the KITTI depth benchmark, Uhrig et al.
3DV 2017); 0 is invalid in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from pixelwise.errors import ConfigError, DatasetError

__all__ = [
    "DEPTH_PNG_SCALES",
    "backproject",
    "decode_normals",
    "encode_normals",
    "normals_from_depth",
    "read_depth_png",
    "write_depth_png",
]

#: stored uint16 value per metre for each depth-PNG scale
DEPTH_PNG_SCALES: dict[str, float] = {"mm": 1000.0, "kitti": 256.0}

_PILLOW_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def _intrinsics(intrinsics, depth: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(fx, fy, cx, cy)`` as tensors broadcastable against ``depth`` (..., H, W): shape (..., 1, 1)."""
    k = torch.as_tensor(intrinsics, dtype=depth.dtype, device=depth.device)
    if k.shape[-1:] != (4,) or k.dim() > 2 or (k.dim() == 2 and (depth.dim() != 3 or k.shape[0] != depth.shape[0])):
        raise ValueError(
            f"intrinsics must be (fx, fy, cx, cy): a sequence of 4 numbers, or a tensor of shape (4,) or (N, 4) for "
            f"depth of shape (N, H, W); got shape {tuple(k.shape)} for depth of shape {tuple(depth.shape)}"
        )
    if not bool(torch.isfinite(k).all()) or bool((k[..., :2] <= 0).any()):
        raise ValueError(f"intrinsics (fx, fy, cx, cy) must be finite with fx, fy > 0, got {k.tolist()}")
    k = k.reshape(*k.shape[:-1], 4, 1, 1) if k.dim() == 2 else k.reshape(4, 1, 1)
    return k[..., 0, :, :], k[..., 1, :, :], k[..., 2, :, :], k[..., 3, :, :]


def _check_depth(depth: torch.Tensor) -> None:
    if not isinstance(depth, torch.Tensor):
        raise ValueError(f"depth must be a torch tensor, got {type(depth).__name__}")
    if not depth.is_floating_point():
        raise ValueError(
            f"depth must be a floating-point tensor in metres, got dtype {depth.dtype}; convert stored integer depth "
            "with read_depth_png (or divide by its scale: 1000 for millimetres, 256 for KITTI)"
        )
    if depth.dim() not in (2, 3):
        raise ValueError(f"depth must have shape (H, W) or (N, H, W), got {tuple(depth.shape)}")


def backproject(depth: torch.Tensor, intrinsics: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """The 3-D point of every pixel, in camera coordinates, by the pinhole model.

    Pixel (v, u) with depth z maps to ``x = (u - cx) / fx * z``, ``y = (v - cy) / fy * z``, ``z`` (Hartley and
    Zisserman, "Multiple View Geometry", 2nd ed., section 6.1). A pixel of depth 0 (invalid) maps to the origin;
    non-finite depths propagate.

    Args:
        depth: float tensor (H, W) or (N, H, W), metres, 0 = invalid.
        intrinsics: ``(fx, fy, cx, cy)`` in pixels: a sequence of 4 numbers or a tensor (4,), or (N, 4) for one
            camera per image of a batch.

    Returns:
        float tensor (3, H, W) or (N, 3, H, W) of (x, y, z) in metres, x right, y down, z forward; the dtype and
        device of ``depth``.

    Raises:
        ValueError: ``depth`` is not a floating-point (H, W) or (N, H, W) tensor; the intrinsics do not have 4
            values per image, are not finite, or have fx or fy <= 0.
    """
    _check_depth(depth)
    fx, fy, cx, cy = _intrinsics(intrinsics, depth)
    h, w = depth.shape[-2:]
    u = torch.arange(w, dtype=depth.dtype, device=depth.device)
    v = torch.arange(h, dtype=depth.dtype, device=depth.device).unsqueeze(-1)
    x = (u - cx) / fx * depth
    y = (v - cy) / fy * depth
    return torch.stack([x, y, depth], dim=-3)


def normals_from_depth(
    depth: torch.Tensor, intrinsics: Sequence[float] | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Surface normals of a depth map: the cross product of central differences of the back-projected points.

    With P the points of :func:`backproject`, the normal at pixel (v, u) is
    ``(P[v, u+1] - P[v, u-1]) x (P[v+1, u] - P[v-1, u])``, flipped if needed so that it faces the camera
    (n . P[v, u] < 0), and scaled to unit length. On a plane this is exact; on a smooth curved surface its error
    is second order in the pixel spacing.

    A normal is valid where the pixel and its four neighbours (left, right, up, down) all have a finite depth > 0
    and the cross product is not zero. Elsewhere -- the image border (first and last row and column), pixels next
    to an invalid depth, and pixels where the depth itself is invalid -- the normal is the zero vector and
    ``valid`` is False: no one-sided difference is substituted. Depth discontinuities between valid pixels (an
    occluding edge) are not detected; normals there mix the two surfaces.

    Eigen and Fergus ("Predicting Depth, Surface Normals and Semantic Labels with a Common Multi-Scale
    Convolutional Architecture", ICCV 2015) obtain NYU ground-truth normals by fitting least-squares planes to
    neighbourhoods of the point cloud, a smoother, slower estimator; the two agree exactly on planes.

    Args:
        depth: float tensor (H, W) or (N, H, W), metres, 0 = invalid.
        intrinsics: ``(fx, fy, cx, cy)`` in pixels, as for :func:`backproject`.

    Returns:
        ``(normals, valid)``: float tensor (3, H, W) or (N, 3, H, W) of unit normals (x right, y down, z forward;
        zero where invalid) in the dtype of ``depth``, and bool tensor (H, W) or (N, H, W).

    Raises:
        ValueError: as :func:`backproject`.
    """
    _check_depth(depth)
    ok = torch.isfinite(depth) & (depth > 0)
    points = backproject(torch.where(ok, depth, torch.zeros_like(depth)), intrinsics)
    normals = torch.zeros_like(points)
    valid = torch.zeros_like(ok)
    h, w = depth.shape[-2:]
    if h < 3 or w < 3:
        return normals, valid

    d_u = points[..., :, 1:-1, 2:] - points[..., :, 1:-1, :-2]
    d_v = points[..., :, 2:, 1:-1] - points[..., :, :-2, 1:-1]
    n = torch.linalg.cross(d_u, d_v, dim=-3)
    centre = points[..., :, 1:-1, 1:-1]
    # x right, y down, z forward is right-handed, so d_u x d_v points away from the camera on a surface seen
    # from the front; the sign test also handles surfaces seen edge-on and mirrored intrinsics.
    n = torch.where((n * centre).sum(dim=-3, keepdim=True) > 0, -n, n)
    norm = torch.linalg.vector_norm(n, dim=-3)
    inner = (
        ok[..., 1:-1, 1:-1] & ok[..., 1:-1, 2:] & ok[..., 1:-1, :-2] & ok[..., 2:, 1:-1] & ok[..., :-2, 1:-1]
        & (norm > 0)
    )
    n = torch.where(inner.unsqueeze(-3), n / norm.clamp_min(torch.finfo(n.dtype).tiny).unsqueeze(-3), 0.0)
    normals[..., :, 1:-1, 1:-1] = n
    valid[..., 1:-1, 1:-1] = inner
    return normals, valid


def check_depth_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    """Check a predicted and a true depth map (metres) for the losses and metrics (their shapes are checked there).

    Raises:
        ValueError: not two floating-point tensors.
    """
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise ValueError(
            f"pred and target must be torch tensors, got {type(pred).__name__} and {type(target).__name__}"
        )
    if not pred.is_floating_point() or not target.is_floating_point():
        raise ValueError(
            f"pred and target must be floating-point depth in metres, got {pred.dtype} and {target.dtype} "
            "(divide stored uint16 depth by its scale, e.g. with pixelwise.depth.read_depth_png)"
        )


def check_normal_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    """Check a predicted and a true normal map for the losses and metrics.

    Raises:
        ValueError: not two floating-point tensors of one (N, 3, H, W) shape.
    """
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise ValueError(
            f"pred and target must be torch tensors, got {type(pred).__name__} and {type(target).__name__}"
        )
    if not pred.is_floating_point() or not target.is_floating_point():
        raise ValueError(f"pred and target must be floating-point normals, got {pred.dtype} and {target.dtype}")
    if pred.shape != target.shape or pred.dim() != 4 or pred.shape[1] != 3:
        raise ValueError(
            f"pred and target must both have shape (N, 3, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}"
        )


def encode_normals(normals: torch.Tensor) -> torch.Tensor:
    """Unit normals (3, H, W) as an 8-bit RGB image (H, W, 3): ``round((n + 1) / 2 * 255)`` per component.

    The channels hold camera-frame x (right), y (down), z (forward) as R, G, B, without axis flips; a normal
    facing the camera straight on, (0, 0, -1), is (128, 128, 0). Non-zero vectors are normalised first. An invalid
    pixel, the zero vector, encodes by the same formula to (128, 128, 128) (127.5 rounds half to even), which
    :func:`decode_normals` reads back as invalid. Quantisation moves a normal by at most about 0.4 degree.

    Args:
        normals: float tensor (3, H, W), any length (zero = invalid).

    Returns:
        uint8 tensor (H, W, 3), on the CPU (``Image.fromarray(encoded.numpy())`` saves it).

    Raises:
        ValueError: not a floating-point (3, H, W) tensor, or a non-finite value.
    """
    if not isinstance(normals, torch.Tensor) or not normals.is_floating_point() or normals.dim() != 3 \
            or normals.shape[0] != 3:
        shape = tuple(normals.shape) if isinstance(normals, torch.Tensor) else type(normals).__name__
        raise ValueError(f"normals must be a floating-point tensor of shape (3, H, W), got {shape}")
    if not bool(torch.isfinite(normals).all()):
        raise ValueError("normals contain NaN or inf; mark invalid pixels with the zero vector")
    n = normals.detach().to("cpu", torch.float64)
    norm = torch.linalg.vector_norm(n, dim=0, keepdim=True)
    n = torch.where(norm > 0, n / norm.clamp_min(1e-300), 0.0)
    return ((n + 1.0) / 2.0 * 255.0).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()


def decode_normals(encoded: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normals from an 8-bit RGB normal image, the inverse of :func:`encode_normals`: ``n = c / 255 * 2 - 1``,
    renormalised to unit length.

    A pixel is invalid when its decoded vector is far from unit length (norm outside [0.5, 1.5]; a valid encoded
    normal has norm 1 +- 0.007): both usual invalid codes, (128, 128, 128) (the zero vector, as written by
    :func:`encode_normals`) and (0, 0, 0) (black), are recognised. Invalid pixels get the zero vector.

    Args:
        encoded: uint8 array or tensor (H, W, 3), e.g. ``np.asarray(Image.open(path).convert("RGB"))``.

    Returns:
        ``(normals, valid)``: float32 tensor (3, H, W) of unit normals (zero where invalid) and bool tensor (H, W).

    Raises:
        ValueError: not a uint8 (H, W, 3) array.
    """
    t = torch.as_tensor(np.asarray(encoded)) if not isinstance(encoded, torch.Tensor) else encoded
    if t.dtype != torch.uint8 or t.dim() != 3 or t.shape[-1] != 3:
        raise ValueError(f"encoded normals must be uint8 of shape (H, W, 3), got {t.dtype} {tuple(t.shape)}")
    v = t.detach().to("cpu", torch.float32).permute(2, 0, 1) / 255.0 * 2.0 - 1.0
    norm = torch.linalg.vector_norm(v, dim=0)
    valid = (norm > 0.5) & (norm < 1.5)
    normals = torch.where(valid, v / norm.clamp_min(1e-12), 0.0).contiguous()
    return normals, valid


def _scale(scale: str) -> float:
    if scale not in DEPTH_PNG_SCALES:
        raise ConfigError(
            f"depth PNG scale must be one of {sorted(DEPTH_PNG_SCALES)} ('mm': uint16 millimetres, NYU; 'kitti': "
            f"uint16 value / 256 = metres, KITTI), got {scale!r}"
        )
    return DEPTH_PNG_SCALES[scale]


def read_depth_png(path: str | Path, scale: str) -> torch.Tensor:
    """Read a uint16 depth PNG as metres.

    Args:
        path: a single-channel 16-bit PNG.
        scale: ``"mm"`` (stored value = millimetres: NYU Depth v2's toolbox and BTS's "sync" frames; at most
            65.535 m) or ``"kitti"`` (stored value / 256 = metres: the KITTI depth benchmark's devkit; at most
            255.996 m).

    Returns:
        float32 tensor (H, W) in metres; 0 = invalid (no measurement).

    Raises:
        ConfigError: ``scale`` is not ``"mm"`` or ``"kitti"``.
        DatasetError: the file is missing or unreadable; it is an 8-bit image (depth needs 16 bits); it has
            colour channels (an RGB or palette PNG is a colourised visualisation, not depth); or no pixel is valid
            (all zero). The message names the file and the fix.
    """
    per_metre = _scale(scale)
    path = Path(path)
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                arr = np.asarray(im)
            else:
                arr = None
    except _PILLOW_ERRORS as e:
        raise DatasetError(f"cannot read depth PNG {path} ({e}): replace or remove the file") from e
    if mode in ("1", "L", "P", "LA", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "HSV", "LAB"):
        if mode in ("1", "L"):
            what = f"an 8-bit (mode {mode}) image"
        else:
            what = f"a colour image (mode {mode})"
        raise DatasetError(
            f"depth PNG {path} is {what}, not single-channel uint16 depth: it looks like a visualisation or a "
            f"quantised copy; use the dataset's raw 16-bit depth PNG (millimetres for NYU, value/256 metres for KITTI)"
        )
    if arr is None or arr.ndim != 2:
        raise DatasetError(f"depth PNG {path} has Pillow mode {mode}: depth PNGs must be single-channel uint16")
    if arr.dtype != np.uint16 and (arr.min() < 0 or arr.max() > 65535):
        raise DatasetError(
            f"depth PNG {path} holds values {arr.min()}..{arr.max()}, outside uint16: depth PNGs must be uint16"
        )
    if not arr.any():
        raise DatasetError(
            f"depth PNG {path} has no valid pixel (every value is 0): replace the file or leave the frame out"
        )
    return torch.from_numpy(arr.astype(np.float32) / np.float32(per_metre))


def write_depth_png(path: str | Path, depth_m: torch.Tensor | np.ndarray, scale: str) -> None:
    """Write metric depth as a uint16 PNG readable by :func:`read_depth_png` with the same ``scale``.

    The stored value is ``round(depth * 1000)`` (``"mm"``) or ``round(depth * 256)`` (``"kitti"``). 0 and NaN
    are written as 0 (invalid). A depth that does not fit -- negative, infinite, above 65.535 m (``"mm"``) or
    255.996 m (``"kitti"``), or positive but rounding to 0 (below 0.5 mm or 1/512 m) -- raises instead of being
    clipped or silently set to invalid: clamp or zero those pixels first if that is what you mean.

    Args:
        path: output file (a ``.png``).
        depth_m: float tensor or array (H, W), metres.
        scale: ``"mm"`` or ``"kitti"``, as for :func:`read_depth_png`.

    Raises:
        ConfigError: ``scale`` is not ``"mm"`` or ``"kitti"``.
        ValueError: ``depth_m`` is not a floating-point (H, W) array, or holds values that do not fit (the message
            gives how many and the range).
    """
    per_metre = _scale(scale)
    d = depth_m.detach().cpu().numpy() if isinstance(depth_m, torch.Tensor) else np.asarray(depth_m)
    if d.ndim != 2 or not np.issubdtype(d.dtype, np.floating):
        raise ValueError(f"depth_m must be a floating-point (H, W) array in metres, got {d.dtype} {d.shape}")
    d = np.nan_to_num(d.astype(np.float64), nan=0.0, posinf=np.inf, neginf=-np.inf)
    code = np.round(d * per_metre)
    bad = ~np.isfinite(code) | (code < 0) | (code > 65535) | ((d > 0) & (code == 0))
    if bad.any():
        limit = 65535 / per_metre
        raise ValueError(
            f"{int(bad.sum())} depth value(s) (from {d[bad].min():g} to {d[bad].max():g} m) do not fit a {scale!r} "
            f"depth PNG, which holds {1 / (2 * per_metre):g}..{limit:g} m and 0 = invalid: clamp them or set them to 0"
            + (" (or use scale 'kitti', up to 255.996 m)" if scale == "mm" else "")
        )
    Image.fromarray(code.astype(np.uint16)).save(Path(path), format="PNG")
