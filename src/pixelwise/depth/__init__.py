"""Dense regression: per-pixel depth and surface normals.

:mod:`pixelwise.depth.geometry` holds the pinhole geometry (back-projection, normals from depth) and the file
encodings (uint16 depth PNGs in millimetres or KITTI's 1/256 m, 8-bit normal images);
:mod:`pixelwise.depth.metrics` the benchmark metrics, :class:`DepthMetrics` (AbsRel, RMSE, SILog, delta < 1.25^k,
per image then averaged) and :class:`NormalMetrics` (mean / median angle, within 11.25 / 22.5 / 30 degrees), also
importable from :mod:`pixelwise.metrics`; :mod:`pixelwise.depth.losses` the training losses (L1 / L2, Eigen's
scale-invariant log loss, berHu, gradient matching, cosine and angular normal losses, :func:`build_depth_loss`);
:mod:`pixelwise.depth.synthetic` the built-in dataset, ray-cast rooms with exact depth and normals.
"""

from pixelwise.depth.data import DepthFolder, depth_eval_transforms, depth_train_transforms
from pixelwise.depth.geometry import (
    DEPTH_PNG_SCALES,
    backproject,
    decode_normals,
    encode_normals,
    normals_from_depth,
    read_depth_png,
    write_depth_png,
)
from pixelwise.depth.losses import DEPTH_LOSSES, DepthLoss, build_depth_loss
from pixelwise.depth.metrics import DepthMetrics, NormalMetrics, eval_crop
from pixelwise.depth.synthetic import SyntheticDepth, render_scene, write_synthetic_depth

__all__ = [
    "DEPTH_LOSSES",
    "DEPTH_PNG_SCALES",
    "DepthFolder",
    "DepthLoss",
    "DepthMetrics",
    "NormalMetrics",
    "SyntheticDepth",
    "backproject",
    "build_depth_loss",
    "decode_normals",
    "depth_eval_transforms",
    "depth_train_transforms",
    "encode_normals",
    "eval_crop",
    "normals_from_depth",
    "read_depth_png",
    "render_scene",
    "write_depth_png",
    "write_synthetic_depth",
]
