"""Dense-regression metrics: monocular depth (:class:`DepthMetrics`) and surface normals (:class:`NormalMetrics`).

Both stream over a split like :class:`pixelwise.metrics.SegmentationMetrics`: :meth:`update` once per batch,
:meth:`merge` between workers, :meth:`all_reduce` across ``torch.distributed`` ranks, :meth:`compute` at the end.
Fractions (the delta and within-angle scores) are in [0, 1], like the segmentation scores, not percentages.

Depth (Eigen, Puhrsch and Fergus, "Depth Map Prediction from a Single Image using a Multi-Scale Deep Network",
NeurIPS 2014, section 4; the KITTI depth benchmark, Uhrig et al., 3DV 2017, for SILog). With d the prediction and
d* the ground truth at the T valid pixels of one image:

* ``abs_rel``   mean |d - d*| / d*
* ``sq_rel``    mean (d - d*)^2 / d*
* ``rmse``      sqrt(mean (d - d*)^2), metres
* ``rmse_log``  sqrt(mean (ln d - ln d*)^2)
* ``log10``     mean |log10 d - log10 d*|
* ``silog``     100 * sqrt(mean e^2 - (mean e)^2), e = ln d - ln d* (KITTI's definition: the standard deviation of
  the log error, times 100; invariant to a global scale of d)
* ``delta1..3`` fraction of pixels with max(d / d*, d* / d) < 1.25, 1.25^2, 1.25^3

Each metric is computed per image and then averaged over the images of the split, as the KITTI devkit and the
evaluation code of the field's reference implementations (SfMLearner, Monodepth2, BTS, AdaBins) do; that is
what published numbers mean, so it is the one implemented. Pooling all pixels of the split would weight images by
their number of valid pixels (KITTI frames differ by a factor of several) and would give a different RMSE.

Normals (Fouhey, Gupta and Hebert, "Data-Driven 3D Primitives for Single Image Understanding", ICCV 2013; Eigen and
Fergus, ICCV 2015): the angle between predicted and true normal at every valid pixel, pooled over all pixels of
the split (not per image, as those papers do): mean, median, RMSE (reported by later work), and the fractions
below 11.25, 22.5 and 30 degrees.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from pixelwise.depth.geometry import check_depth_pair, check_normal_pair
from pixelwise.errors import ConfigError

__all__ = ["DEPTH_METRIC_NAMES", "DepthMetrics", "NormalMetrics", "eval_crop"]

#: keys of :meth:`DepthMetrics.compute` that are per-image averages, in the order of the state vector
DEPTH_METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "delta1", "delta2", "delta3")

_EIGEN_CROP_480x640 = (45, 471, 41, 601)
_GARG_CROP_FRACTIONS = (0.40810811, 0.99189189, 0.03594771, 0.96405229)


def eval_crop(crop: str, height: int, width: int) -> tuple[int, int, int, int]:
    """The evaluation crop ``(top, bottom, left, right)`` (rows ``top:bottom``, columns ``left:right``) of an
    image of ``height`` x ``width``.

    * ``"eigen"``: NYU Depth v2's crop of Eigen et al. (NeurIPS 2014), rows 45:471 and columns 41:601 of the
      480 x 640 frame (leaving out the border that the registration of depth to the RGB camera does not fill);
      for other sizes scaled proportionally and rounded down (``45 * height // 480``, ...).
    * ``"garg"``: KITTI's crop of Garg et al. ("Unsupervised CNN for Single View Depth Estimation", ECCV 2016),
      rows 0.40810811 H : 0.99189189 H and columns 0.03594771 W : 0.96405229 W, truncated to integers as
      Monodepth2's evaluation does (for 375 x 1242: rows 153:371, columns 44:1197).

    Raises:
        ValueError: (``pixelwise.errors.ConfigError``) an unknown crop name.
    """
    if crop == "eigen":
        t, b, l, r = _EIGEN_CROP_480x640
        return t * height // 480, b * height // 480, l * width // 640, r * width // 640
    if crop == "garg":
        ft, fb, fl, fr = _GARG_CROP_FRACTIONS
        return int(ft * height), int(fb * height), int(fl * width), int(fr * width)
    raise ConfigError(f"crop must be None, 'eigen' (NYU) or 'garg' (KITTI), got {crop!r}")


def _all_reduce_sum(*tensors: torch.Tensor) -> None:
    """Sum ``tensors`` in place over all ``torch.distributed`` ranks; a no-op when not distributed."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    for t in tensors:
        # NCCL only reduces CUDA tensors; a rank that saw no batch still holds its state on the CPU.
        if dist.get_backend() == "nccl" and t.device.type != "cuda":
            on_gpu = t.to(torch.device("cuda", torch.cuda.current_device()))
            dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
            t.copy_(on_gpu)
        else:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)


def _work_dtype(device: torch.device) -> torch.dtype:
    # float64 keeps the per-image sums exact enough for any image size; MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def _median(x: torch.Tensor) -> torch.Tensor:
    """numpy's median of a 1-D tensor (the mean of the two middle values for an even count); torch.median returns
    the lower one."""
    s = x.sort().values
    n = s.numel()
    return (s[(n - 1) // 2] + s[n // 2]) / 2


class DepthMetrics:
    """Streaming monocular-depth metrics, averaged per image over a split (the KITTI / Eigen benchmark protocol).

    For every image of a batch: the valid pixels are those whose ground truth is finite and > 0, inside
    (``min_depth``, ``max_depth``) (strict bounds, as the reference code) and inside the evaluation ``crop``. If
    ``median_scaling``, the prediction is multiplied by median(ground truth) / median(prediction) over those pixels
    (Zhou et al., "Unsupervised Learning of Depth and Ego-Motion from Video", CVPR 2017, for scale-ambiguous
    self-supervised models). The prediction is then clamped into [``min_depth``, ``max_depth``] (the bounds that
    are set), and the metrics of the module docstring are computed over the valid pixels. :meth:`compute` returns
    their mean over the images. An image without a valid pixel is left out of the means and counted in
    ``num_images_without_valid_pixels``.

    The state is one float64 vector of the per-image metric sums and three counts, so streaming, :meth:`merge` and
    :meth:`all_reduce` are exact: two updates give the same result as one update of their concatenation.

    Args:
        min_depth: ground truth at or below it is invalid and predictions are clamped up to it, metres. The
            field's value is 1e-3 (NYU and KITTI alike); ``None`` only drops ground truth <= 0 and clamps nothing
            (then a prediction <= 0 at a valid pixel raises, its log being undefined).
        max_depth: ground truth at or above it is invalid and predictions are clamped down to it, metres: 10 for
            NYU Depth v2, 80 for KITTI (Eigen split; 50 for the Garg cap). ``None``: no cap.
        crop: ``None``, ``"eigen"`` (NYU) or ``"garg"`` (KITTI); see :func:`eval_crop`.
        median_scaling: rescale each prediction to the ground truth's median first.
        device: device the state starts on; it follows the predictions' device on the first :meth:`update`.

    Raises:
        ValueError: (``pixelwise.errors.ConfigError``) a negative ``min_depth``, ``max_depth`` <= ``min_depth``,
            or an unknown ``crop``.
    """

    def __init__(
        self,
        min_depth: float | None = 1e-3,
        max_depth: float | None = None,
        crop: str | None = None,
        median_scaling: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        if min_depth is not None and not min_depth >= 0:
            raise ConfigError(f"min_depth must be >= 0 metres or None, got {min_depth!r}")
        if max_depth is not None and not max_depth > (min_depth or 0):
            raise ConfigError(f"max_depth must be > min_depth ({min_depth}) or None, got {max_depth!r}")
        if crop is not None:
            eval_crop(crop, 480, 640)  # raises on an unknown name
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.crop = crop
        self.median_scaling = median_scaling
        #: sums over images of each metric of DEPTH_METRIC_NAMES, float64
        self.sums = torch.zeros(len(DEPTH_METRIC_NAMES), dtype=torch.float64, device=device)
        #: (images counted, valid pixels counted, images without a valid pixel), int64
        self.counts = torch.zeros(3, dtype=torch.int64, device=device)

    def reset(self) -> None:
        """Set the state back to zero, keeping its device."""
        self.sums.zero_()
        self.counts.zero_()

    def _valid_mask(self, target: torch.Tensor) -> torch.Tensor:
        valid = torch.isfinite(target) & (target > (self.min_depth or 0.0))
        if self.max_depth is not None:
            valid &= target < self.max_depth
        if self.crop is not None:
            top, bottom, left, right = eval_crop(self.crop, *target.shape[-2:])
            inside = torch.zeros_like(valid)
            inside[..., top:bottom, left:right] = True
            valid &= inside
        return valid

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add the images of one batch.

        Args:
            pred: float tensor (N, H, W) or (N, 1, H, W), predicted depth in metres, at the resolution of
                ``target`` (resize it first: the benchmarks evaluate at the ground truth's resolution).
            target: float tensor of the same shape, ground-truth depth in metres; 0 (or any value <= 0, NaN or
                inf) marks a pixel without ground truth. Same device as ``pred``.

        Raises:
            ValueError: not floating-point tensors, shapes that differ or are not (N, H, W) / (N, 1, H, W),
                different devices; a prediction that is NaN (or, without the matching cap, inf or <= 0) at a
                valid pixel; with ``median_scaling``, an image whose median prediction is not > 0.
        """
        check_depth_pair(pred, target)
        if pred.shape != target.shape:
            raise ValueError(
                f"pred and target shapes differ: pred {tuple(pred.shape)} vs target {tuple(target.shape)} "
                "(resize the prediction to the ground truth's resolution)"
            )
        if pred.device != target.device:
            raise ValueError(f"pred is on {pred.device} but target is on {target.device}; put both on one device")
        if pred.dim() == 4 and pred.shape[1] == 1:
            pred, target = pred[:, 0], target[:, 0]
        if pred.dim() != 3:
            raise ValueError(f"depth must have shape (N, H, W) or (N, 1, H, W), got {tuple(pred.shape)}")
        if pred.shape[0] == 0:
            return

        dtype = _work_dtype(pred.device)
        valid = self._valid_mask(target).flatten(1)
        d = pred.detach().to(dtype).flatten(1)
        g = target.detach().to(dtype).flatten(1)
        if self.median_scaling:
            d = d.clone()
            for i in range(d.shape[0]):
                m = valid[i]
                if not bool(m.any()):
                    continue
                med = _median(d[i][m])
                if not bool(med > 0):
                    raise ValueError(
                        f"median scaling: image {i} of the batch has median prediction {float(med):g} over its valid "
                        "pixels; it must be > 0"
                    )
                d[i] *= _median(g[i][m]) / med
        if self.min_depth is not None or self.max_depth is not None:
            d = d.clamp(min=self.min_depth, max=self.max_depth)
        bad = valid & ~(torch.isfinite(d) & (d > 0))
        if bool(bad.any()):
            values = torch.unique(d[bad])[:5].tolist()
            raise ValueError(
                f"{int(bad.sum())} prediction(s) at valid pixels are not finite and > 0 (e.g. {values}) after "
                f"clamping to [min_depth={self.min_depth}, max_depth={self.max_depth}]: depth metrics take logs; "
                "check the model's output or set min_depth / max_depth"
            )

        # Invalid pixels get d = d* = 1, so every term there is finite and then masked to 0.
        one = torch.ones((), dtype=dtype, device=d.device)
        d = torch.where(valid, d, one)
        g = torch.where(valid, g, one)
        w = valid.to(dtype)
        n = valid.sum(dim=1)
        has = n > 0
        t = n.clamp(min=1).to(dtype)

        def mean(x: torch.Tensor) -> torch.Tensor:
            return (x * w).sum(dim=1) / t

        diff = d - g
        log_err = torch.log(d) - torch.log(g)
        ratio = torch.maximum(d / g, g / d)
        mean_log = mean(log_err)
        per_image = torch.stack([
            mean(diff.abs() / g),
            mean(diff.square() / g),
            mean(diff.square()).sqrt(),
            mean(log_err.square()).sqrt(),
            mean((torch.log10(d) - torch.log10(g)).abs()),
            # rounding can make the variance a hair negative when the log error is constant
            100.0 * (mean(log_err.square()) - mean_log.square()).clamp(min=0).sqrt(),
            mean((ratio < 1.25).to(dtype)),
            mean((ratio < 1.25**2).to(dtype)),
            mean((ratio < 1.25**3).to(dtype)),
        ], dim=1)
        sums = (per_image * has.unsqueeze(1).to(dtype)).sum(dim=0).to(torch.float64)
        counts = torch.stack([has.sum(), n.sum(), (~has).sum()]).to(torch.int64)
        if self.sums.device != sums.device:
            self.sums = self.sums.to(sums.device)
            self.counts = self.counts.to(sums.device)
        self.sums += sums
        self.counts += counts

    def merge(self, other: DepthMetrics) -> None:
        """Add another accumulator's state to this one (a data-loader worker, another shard).

        Raises:
            ValueError: if ``other`` has different options (``min_depth``, ``max_depth``, ``crop``,
                ``median_scaling``).
        """
        mine = (self.min_depth, self.max_depth, self.crop, self.median_scaling)
        theirs = (other.min_depth, other.max_depth, other.crop, other.median_scaling)
        if mine != theirs:
            raise ValueError(
                f"cannot merge DepthMetrics with (min_depth, max_depth, crop, median_scaling) = {theirs} into one "
                f"with {mine}"
            )
        self.sums += other.sums.to(self.sums.device)
        self.counts += other.counts.to(self.counts.device)

    def all_reduce(self) -> None:
        """Sum the state over all ``torch.distributed`` ranks, in place; a no-op when not distributed.

        Every rank must call it (it is a collective), once, right before :meth:`compute`.
        """
        _all_reduce_sum(self.sums, self.counts)

    def compute(self) -> dict[str, Any]:
        """Return the metrics of everything counted so far, as plain Python numbers.

        Returns:
            dict with ``abs_rel``, ``sq_rel``, ``rmse`` (metres), ``rmse_log``, ``log10``, ``silog`` (100 x the
            standard deviation of the natural-log error), ``delta1``, ``delta2``, ``delta3`` (fractions in [0, 1]),
            each the mean over images of the per-image value, NaN when no image was counted; ``num_images``
            (images with at least one valid pixel), ``num_pixels`` (valid pixels over all of them) and
            ``num_images_without_valid_pixels`` (images left out).
        """
        num_images, num_pixels, num_empty = (int(v) for v in self.counts.tolist())
        sums = self.sums.detach().cpu().tolist()
        out: dict[str, Any] = {
            name: (s / num_images if num_images else math.nan) for name, s in zip(DEPTH_METRIC_NAMES, sums)
        }
        out["num_images"] = num_images
        out["num_pixels"] = num_pixels
        out["num_images_without_valid_pixels"] = num_empty
        return out

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(min_depth={self.min_depth}, max_depth={self.max_depth}, crop={self.crop!r}, "
            f"median_scaling={self.median_scaling}, device={self.sums.device})"
        )


class NormalMetrics:
    """Streaming surface-normal metrics over all valid pixels of a split (pooled, not per image).

    The angular error at a pixel is ``2 * atan2(|p - g|, |p + g|)`` for unit vectors p (prediction) and g (ground
    truth), in degrees: accurate to rounding at every angle, where ``acos(p . g)`` returns 0 below about
    0.014 degree in float32 (1e-6 degree in float64) because the dot product rounds to 1, and 180 as far from
    180 degrees (the formula W. Kahan recommends in "How Futile are Mindless Assessments of Roundoff in
    Floating-Point Computation?", 2006). Inputs are promoted to float64 (float32 on MPS) first.

    The mean, the RMSE and the within-threshold fractions are exact (float64 and int64 sums). The median comes from
    a histogram of 180,000 bins of 0.001 degree (1.4 MB, mergeable and reducible like the rest of the state):
    the value reported is the centre of the bin holding the median (for an even count, the mean of the two middle
    ranks' bin centres), so within 0.0005 degree of the exact median. Keeping every angle instead would take
    0.8 GB in float32 for NYU's 654 test images at 480 x 640.

    Args:
        device: device the state starts on; it follows the predictions' device on the first :meth:`update`.
    """

    #: width of a median-histogram bin, degrees
    BIN_WIDTH_DEG = 1e-3
    NUM_BINS = 180_000
    THRESHOLDS_DEG = (11.25, 22.5, 30.0)

    def __init__(self, device: torch.device | str | None = None) -> None:
        #: angle histogram for the median, int64 (NUM_BINS,)
        self.histogram = torch.zeros(self.NUM_BINS, dtype=torch.int64, device=device)
        #: (sum of angles, sum of squared angles), degrees, float64
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)
        #: (valid pixels, pixels under 11.25, 22.5, 30 degrees), int64
        self.counts = torch.zeros(1 + len(self.THRESHOLDS_DEG), dtype=torch.int64, device=device)

    def reset(self) -> None:
        """Set the state back to zero, keeping its device."""
        self.histogram.zero_()
        self.sums.zero_()
        self.counts.zero_()

    @staticmethod
    def angles(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Angle in degrees between the vectors along dim -3 of ``pred`` and ``target`` (..., 3, H, W) -> (..., H, W),
        each normalised first; a zero vector stays zero and makes a 90-degree angle with any unit vector."""
        p = torch.nn.functional.normalize(pred, dim=-3)
        g = torch.nn.functional.normalize(target, dim=-3)
        diff = torch.linalg.vector_norm(p - g, dim=-3)
        summ = torch.linalg.vector_norm(p + g, dim=-3)
        return torch.rad2deg(2.0 * torch.atan2(diff, summ))

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """Add one batch.

        Args:
            pred: float tensor (N, 3, H, W), predicted normals, any length (normalised here; a zero vector counts
                as 90 degrees off).
            target: float tensor (N, 3, H, W), ground-truth normals (normalised here); the zero vector marks a
                pixel without ground truth. Same device as ``pred``.
            valid: optional bool tensor (N, H, W); only pixels where it is True (and the target is not zero) count.

        Raises:
            ValueError: not floating-point tensors of the same (N, 3, H, W) shape on one device, a ``valid`` of
                another shape, or a non-finite prediction or target at a counted pixel.
        """
        check_normal_pair(pred, target)
        if pred.device != target.device:
            raise ValueError(f"pred is on {pred.device} but target is on {target.device}; put both on one device")
        dtype = _work_dtype(pred.device)
        p = pred.detach().to(dtype)
        g = target.detach().to(dtype)
        mask = (g != 0).any(dim=1)
        if valid is not None:
            if valid.shape != mask.shape:
                raise ValueError(f"valid must have shape {tuple(mask.shape)} (N, H, W), got {tuple(valid.shape)}")
            mask &= valid.to(device=mask.device, dtype=torch.bool)
        finite = torch.isfinite(p).all(dim=1) & torch.isfinite(g).all(dim=1)
        if bool((mask & ~finite).any()):
            raise ValueError(f"{int((mask & ~finite).sum())} counted pixel(s) have a NaN or inf normal")

        a = self.angles(p, g)[mask]
        bins = (a / self.BIN_WIDTH_DEG).floor().long().clamp_(0, self.NUM_BINS - 1)
        hist = torch.bincount(bins, minlength=self.NUM_BINS)
        sums = torch.stack([a.sum(), a.square().sum()]).to(torch.float64)
        counts = torch.stack([torch.tensor(a.numel(), device=a.device)]
                             + [(a < t).sum() for t in self.THRESHOLDS_DEG]).to(torch.int64)
        if self.histogram.device != hist.device:
            self.histogram = self.histogram.to(hist.device)
            self.sums = self.sums.to(hist.device)
            self.counts = self.counts.to(hist.device)
        self.histogram += hist
        self.sums += sums
        self.counts += counts

    def merge(self, other: NormalMetrics) -> None:
        """Add another accumulator's state to this one."""
        self.histogram += other.histogram.to(self.histogram.device)
        self.sums += other.sums.to(self.sums.device)
        self.counts += other.counts.to(self.counts.device)

    def all_reduce(self) -> None:
        """Sum the state over all ``torch.distributed`` ranks, in place; a no-op when not distributed.

        Every rank must call it (it is a collective), once, right before :meth:`compute`.
        """
        _all_reduce_sum(self.histogram, self.sums, self.counts)

    def _median(self) -> float:
        n = int(self.counts[0])
        cumulative = self.histogram.cumsum(0)
        # 1-based ranks of the middle value(s): n // 2 + 1 for odd n; n // 2 and n // 2 + 1 for even n
        ranks = torch.tensor([(n + 1) // 2, n // 2 + 1], device=cumulative.device)
        bins = torch.searchsorted(cumulative, ranks).double()
        return float(((bins + 0.5) * self.BIN_WIDTH_DEG).mean())

    def compute(self) -> dict[str, Any]:
        """Return the metrics of everything counted so far, as plain Python numbers.

        Returns:
            dict with ``mean``, ``median`` (within 0.0005 degree), ``rmse`` (sqrt of the mean squared angle), all
            in degrees; ``within_11.25``, ``within_22.5``, ``within_30``: fractions in [0, 1] of pixels whose angle
            is strictly below the threshold; ``num_pixels``. NaN scores when no pixel was counted.
        """
        n, *below = (int(v) for v in self.counts.tolist())
        if n == 0:
            scores = dict.fromkeys(["mean", "median", "rmse", "within_11.25", "within_22.5", "within_30"], math.nan)
            return {**scores, "num_pixels": 0}
        total, total_sq = self.sums.tolist()
        return {
            "mean": total / n,
            "median": self._median(),
            "rmse": math.sqrt(total_sq / n),
            "within_11.25": below[0] / n,
            "within_22.5": below[1] / n,
            "within_30": below[2] / n,
            "num_pixels": n,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.histogram.device})"
