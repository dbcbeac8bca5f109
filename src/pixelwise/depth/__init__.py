"""Dense regression: per-pixel depth and surface normals.

:mod:`pixelwise.depth.geometry` holds the pinhole geometry (back-projection, normals from depth) and the file
encodings (uint16 depth PNGs in millimetres or KITTI's 1/256 m, 8-bit normal images);
:mod:`pixelwise.depth.metrics` the benchmark metrics, :class:`DepthMetrics` (AbsRel, RMSE, SILog, delta < 1.25^k,
per image then averaged) and :class:`NormalMetrics` (mean / median angle, within 11.25 / 22.5 / 30 degrees). The
metrics are also importable from :mod:`pixelwise.metrics`.
"""

from pixelwise.depth.geometry import (
    DEPTH_PNG_SCALES,
    backproject,
    decode_normals,
    encode_normals,
    normals_from_depth,
    read_depth_png,
    write_depth_png,
)
from pixelwise.depth.metrics import DepthMetrics, NormalMetrics, eval_crop

__all__ = [
    "DEPTH_PNG_SCALES",
    "DepthMetrics",
    "NormalMetrics",
    "backproject",
    "decode_normals",
    "encode_normals",
    "eval_crop",
    "normals_from_depth",
    "read_depth_png",
    "write_depth_png",
]
