"""Training losses of dense regression: per-pixel depth and surface normals.

Every loss is a plain function ``loss(pred, target, valid=None, ...) -> scalar`` and can be built by name with
:func:`build_depth_loss` (``"l1"``, ``"silog"``, ``"l1+0.5*gradient"``, ...).

Validity. A depth pixel counts when its ground truth is finite and > 0 (0 marks a pixel without a measurement, as in
NYU Depth v2 and KITTI) and, if a ``valid`` mask is given, where it is True. A normal pixel counts when its ground
truth is a finite non-zero vector (and ``valid`` is True there). Pixels that do not count never reach the
arithmetic: they are replaced by harmless values first, so whatever the prediction or the target holds there, NaN
and inf included, changes neither the loss nor the gradient, which is exactly 0 there. A batch without a valid pixel
gives a loss of 0 with a zero gradient, not NaN. No loss reads a tensor back to the host, so none synchronises a
GPU stream.

Reductions (each function's docstring repeats its own):

* :func:`l1_depth_loss`, :func:`l2_depth_loss`, :func:`berhu_loss`, :func:`cosine_normal_loss`,
  :func:`angular_normal_loss`: the mean over the valid pixels of the whole batch (images with more valid pixels
  weigh more, as in the reference implementations' masked means).
* :func:`scale_invariant_log_loss`: per image (the scale invariance is a property of one image), then the mean over
  the images that have a valid pixel.
* :func:`gradient_matching_loss`: at each scale, the sum over the batch's valid pixel pairs divided by the batch's
  valid pixels at that scale; the scales are summed.

Computation is in float32 for half-precision inputs (float64 stays float64) and the result has that dtype.
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch
import torch.nn as nn

from pixelwise.depth.geometry import check_depth_pair, check_normal_pair
from pixelwise.errors import ConfigError

__all__ = [
    "DEPTH_LOSSES",
    "DepthLoss",
    "angular_normal_loss",
    "berhu_loss",
    "build_depth_loss",
    "cosine_normal_loss",
    "gradient_matching_loss",
    "l1_depth_loss",
    "l2_depth_loss",
    "scale_invariant_log_loss",
]


# ---- input checks and masking --------------------------------------------------------------------------------------


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    # logs and squares of depths lose too much in float16 / bfloat16
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def _as_nhw(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() == 4 and x.shape[1] == 1:
        return x[:, 0]
    if x.dim() != 3:
        raise ValueError(f"{name} must have shape (N, H, W) or (N, 1, H, W), got {tuple(x.shape)}")
    return x


def _check_valid_mask(valid: torch.Tensor | None, shape: torch.Size) -> torch.Tensor | None:
    """The optional ``valid`` mask as a bool (N, H, W) tensor, or None."""
    if valid is None:
        return None
    if not isinstance(valid, torch.Tensor) or valid.dtype != torch.bool:
        kind = valid.dtype if isinstance(valid, torch.Tensor) else type(valid).__name__
        raise ValueError(f"valid must be a bool tensor (True = the pixel counts), got {kind}; compare it first, "
                         "e.g. valid = mask > 0")
    if valid.dim() == 4 and valid.shape[1] == 1:
        valid = valid[:, 0]
    if valid.shape != shape:
        raise ValueError(f"valid has shape {tuple(valid.shape)}, expected {tuple(shape)} (N, H, W) or (N, 1, H, W)")
    return valid


def _depth_inputs(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(pred, target, valid)`` as (N, H, W) tensors in the working dtype, with pred = target = 1 wherever ``valid``
    (the combined mask, bool) is False."""
    check_depth_pair(pred, target)
    p, t = _as_nhw(pred, "pred"), _as_nhw(target, "target")
    if p.shape != t.shape:
        raise ValueError(
            f"pred {tuple(pred.shape)} and target {tuple(target.shape)} do not match: resize the prediction to the "
            "ground truth's resolution first (torch.nn.functional.interpolate)"
        )
    dtype = _work_dtype(p)
    p, t = p.to(dtype), t.to(dtype)
    mask = torch.isfinite(t) & (t > 0)
    extra = _check_valid_mask(valid, p.shape)
    if extra is not None:
        mask = mask & extra
    one = torch.ones((), dtype=dtype, device=p.device)
    # torch.where, not multiplication by the mask: 0 * inf is NaN, and where's backward is exactly 0 outside.
    return torch.where(mask, p, one), torch.where(mask, t, one), mask


def _masked_mean(per_pixel: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``per_pixel`` over the True pixels of ``mask`` (already 0 elsewhere); 0 if there are none."""
    return per_pixel.sum() / mask.sum().clamp_min(1).to(per_pixel.dtype)


def _log_depth(pred: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.log(pred.clamp_min(eps)) - torch.log(target)


def _check_eps(eps: float) -> None:
    if not eps > 0:
        raise ConfigError(f"eps must be > 0, got {eps!r}")


# ---- depth ---------------------------------------------------------------------------------------------------------


def l1_depth_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute depth error, ``mean |z_i - ẑ_i|`` over the valid pixels of the batch.

    The plain per-pixel regression loss with the predicted depth ẑ_i and the true depth z_i of pixel i.

    Args:
        pred: float tensor (N, 1, H, W) or (N, H, W), predicted depth in metres.
        target: float tensor of the same N, H, W (either form), true depth in metres; 0, negative, NaN or inf
            mark pixels without ground truth, which never count.
        valid: optional bool tensor (N, H, W) or (N, 1, H, W); only pixels where it is True (and the target is
            valid) count.

    Returns:
        scalar tensor, metres: the mean over all valid pixels of the batch; 0 (with a zero gradient) if there are
        none.

    Raises:
        ValueError: non-float or non-tensor inputs, shapes that do not match, a ``valid`` that is not bool or has
            another shape.
    """
    p, t, mask = _depth_inputs(pred, target, valid)
    return _masked_mean((p - t).abs() * mask, mask)


def l2_depth_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared depth error, ``mean (z_i - ẑ_i)^2`` over the valid pixels of the batch (the squared L2 norm of
    the per-pixel error, i.e. the MSE; its square root is the RMSE metric).

    Laina et al. (3DV 2016) compare it with :func:`berhu_loss`; Eigen et al. (NeurIPS 2014) with their
    scale-invariant loss.

    Args:
        pred: float tensor (N, 1, H, W) or (N, H, W), predicted depth in metres.
        target: float tensor of the same N, H, W, true depth in metres; 0 / negative / non-finite = invalid.
        valid: optional bool tensor (N, H, W) or (N, 1, H, W) of pixels that may count.

    Returns:
        scalar tensor, square metres: the mean over all valid pixels of the batch; 0 if there are none.

    Raises:
        ValueError: as :func:`l1_depth_loss`.
    """
    p, t, mask = _depth_inputs(pred, target, valid)
    return _masked_mean((p - t).square() * mask, mask)


def scale_invariant_log_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    lam: float = 0.5,
    sqrt: bool = False,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Scale-invariant log loss (Eigen, Puhrsch and Fergus, "Depth Map Prediction from a Single Image using a
    Multi-Scale Deep Network", NeurIPS 2014).

    For one image with the log errors ``d_i = log ẑ_i - log z_i`` at its n valid pixels::

        L = (1/n) Σ d_i^2 - lam (1/n^2) (Σ d_i)^2 = mean(d^2) - lam mean(d)^2

    ``lam = 0`` is the mean squared log error, ``lam = 1`` its variance, which does not change when the prediction
    is multiplied by any constant (fully scale invariant); the paper trains with ``lam = 0.5``. With ``sqrt=True``
    the loss is ``10 sqrt(mean(d^2) - lam mean(d)^2)``, the variant of BTS (Lee et al., arXiv 1907.10326, 2019) and
    AdaBins (Bhat, Alhashim and Wonka, CVPR 2021), which both use ``lam = 0.85`` and the factor 10 (pass
    ``lam=0.85`` to match them); it is 0 with a zero gradient where the bracket is 0, where the square root has
    none. Those two pool the pixels of the whole batch into one image; here the loss is per image, as in the paper.

    Reduction: the loss of each image with at least one valid pixel, then the mean over those images (an image
    without a valid pixel is left out; a batch without any gives 0).

    Args:
        pred: float tensor (N, 1, H, W) or (N, H, W), predicted depth in metres. It must be positive: the depth
            head is expected to end in a positive activation (softplus, exp, a scaled sigmoid); values below ``eps``
            are clamped to ``eps`` and get no gradient from this loss.
        target: float tensor of the same N, H, W, true depth in metres; 0 / negative / non-finite = invalid.
        valid: optional bool tensor (N, H, W) or (N, 1, H, W) of pixels that may count.
        lam: λ in [0, 1].
        sqrt: take the square root of each image's loss and multiply it by 10.
        eps: lower clamp of the prediction, metres (> 0).

    Returns:
        scalar tensor (squared log-depth units; ×10 log units with ``sqrt``).

    Raises:
        ValueError: ``lam`` outside [0, 1], ``eps`` <= 0 (``pixelwise.errors.ConfigError``), or bad inputs as
            :func:`l1_depth_loss`.
    """
    if not 0 <= lam <= 1:
        raise ConfigError(f"lam must be in [0, 1] (0.5 in Eigen et al., 1 fully scale invariant), got {lam!r}")
    _check_eps(eps)
    p, t, mask = _depth_inputs(pred, target, valid)
    d = _log_depth(p, t, eps) * mask  # 0 at invalid pixels, where p = t = 1 already
    n = mask.flatten(1).sum(1)
    count = n.clamp_min(1).to(d.dtype)
    mean_d = d.flatten(1).sum(1) / count
    # mean(d^2) - lam mean(d)^2 = var(d) + (1 - lam) mean(d)^2; the variance about the mean does not cancel
    # catastrophically in float32 when the log errors share a large offset, and the sum is never below 0.
    centred = (d - mean_d[:, None, None]) * mask
    variance = centred.square().flatten(1).sum(1) / count
    per_image = variance + (1 - lam) * mean_d.square()
    if sqrt:
        # sqrt has no finite gradient at 0 (a perfect prediction, or any constant d with lam = 1)
        positive = per_image > 0
        per_image = 10.0 * torch.where(positive, torch.where(positive, per_image, 1.0).sqrt(), 0.0)
    has = n > 0
    return (per_image * has).sum() / has.sum().clamp_min(1).to(per_image.dtype)


def berhu_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    c: float | None = None,
) -> torch.Tensor:
    """Reverse Huber (berHu) loss (Laina, Rupprecht, Belagiannis, Tombari and Navab, "Deeper Depth Prediction with
    Fully Convolutional Residual Networks", 3DV 2016).

    With ``x = ẑ - z`` at each valid pixel::

        B(x) = |x|                    if |x| <= c
               (x^2 + c^2) / (2 c)    otherwise

    L1 for small errors, L2 (shifted to meet L1 continuously, with the same slope 1 at |x| = c) for large ones.
    By default ``c = 0.2 · max |x|`` over the valid pixels of the whole batch, detached (the paper's choice), so
    the pixels within 20% of the largest error are in the L1 branch.

    Reduction: the mean of B over the valid pixels of the batch; 0 if there are none.

    Args:
        pred: float tensor (N, 1, H, W) or (N, H, W), predicted depth in metres.
        target: float tensor of the same N, H, W, true depth in metres; 0 / negative / non-finite = invalid.
        valid: optional bool tensor (N, H, W) or (N, 1, H, W) of pixels that may count.
        c: fixed threshold in metres (> 0) instead of the batch's 0.2 · max |x|.

    Returns:
        scalar tensor, metres.

    Raises:
        ValueError: ``c`` <= 0 (``pixelwise.errors.ConfigError``), or bad inputs as :func:`l1_depth_loss`.
    """
    if c is not None and not c > 0:
        raise ConfigError(f"c must be > 0 metres or None (0.2 * the batch's largest error), got {c!r}")
    p, t, mask = _depth_inputs(pred, target, valid)
    x = (p - t) * mask
    ax = x.abs()
    if c is None:
        # A perfect batch has max |x| = 0; the clamp keeps x / c finite (every pixel is then in the L1 branch).
        c_t = (0.2 * ax.detach().max()).clamp_min(torch.finfo(x.dtype).tiny) if x.numel() else x.new_ones(())
    else:
        c_t = torch.as_tensor(c, dtype=x.dtype, device=x.device)
    # (x^2 + c^2) / (2c) written as ((x / c) x + c) / 2: x / c stays small where the branch is used, so no
    # overflow even for a tiny c.
    quadratic = ((x / c_t) * x + c_t) / 2
    return _masked_mean(torch.where(ax <= c_t, ax, quadratic) * mask, mask)


def gradient_matching_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    scales: int = 4,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Multi-scale scale-invariant gradient-matching loss on log depth (Li and Snavely, "MegaDepth: Learning
    Single-View Depth Prediction from Internet Photos", CVPR 2018; the same term as Ranftl et al., "Towards
    Robust Monocular Depth Estimation: Mixing Datasets for Zero-shot Cross-dataset Transfer", TPAMI 2020,
    who apply it to scale-and-shift-aligned disparity instead).

    With the log-depth difference ``R = log ẑ - log z`` and, at scale k = 0 .. ``scales`` - 1, the maps subsampled
    by keeping every 2^k-th row and column (``R[:, ::2**k, ::2**k]``, and the mask likewise, as MegaDepth and
    MiDaS do; no averaging, so an invalid pixel never leaks into a valid one)::

        L = Σ_k (Σ |∂x R^k| + Σ |∂y R^k|) / n_k

    where ∂x, ∂y are differences of horizontally / vertically adjacent pixels, each sum runs over the pairs whose
    two pixels are both valid, and n_k is the number of valid pixels of the batch at scale k (the papers' n and M).
    Multiplying the prediction by a constant adds a constant to R and leaves the loss unchanged; it penalises
    edges and slopes of the prediction that the ground truth does not have.

    Reduction: at each scale pooled over the batch (sum over all images' pairs / all images' valid pixels, MiDaS's
    batch-based reduction), then summed over the scales; a scale without a valid pixel adds 0.

    Args:
        pred: float tensor (N, 1, H, W) or (N, H, W), predicted depth in metres, positive (values below ``eps``
            are clamped to ``eps`` and get no gradient; see :func:`scale_invariant_log_loss`).
        target: float tensor of the same N, H, W, true depth in metres; 0 / negative / non-finite = invalid.
        valid: optional bool tensor (N, H, W) or (N, 1, H, W) of pixels that may count.
        scales: number of scales (>= 1; 4 in both papers).
        eps: lower clamp of the prediction, metres (> 0).

    Returns:
        scalar tensor, log-depth units per pixel.

    Raises:
        ValueError: ``scales`` < 1 or ``eps`` <= 0 (``pixelwise.errors.ConfigError``), or bad inputs as
            :func:`l1_depth_loss`.
    """
    if isinstance(scales, bool) or not isinstance(scales, int) or scales < 1:
        raise ConfigError(f"scales must be an integer >= 1, got {scales!r}")
    _check_eps(eps)
    p, t, mask = _depth_inputs(pred, target, valid)
    r = _log_depth(p, t, eps) * mask
    total = r.new_zeros(())
    for k in range(scales):
        step = 2**k
        rk, mk = r[:, ::step, ::step], mask[:, ::step, ::step]
        pairs_x = mk[:, :, 1:] & mk[:, :, :-1]
        pairs_y = mk[:, 1:, :] & mk[:, :-1, :]
        grad_x = (rk[:, :, 1:] - rk[:, :, :-1]).abs() * pairs_x
        grad_y = (rk[:, 1:, :] - rk[:, :-1, :]).abs() * pairs_y
        total = total + (grad_x.sum() + grad_y.sum()) / mk.sum().clamp_min(1).to(r.dtype)
    return total


# ---- surface normals ----------------------------------------------------------------------------------------------


def _normal_inputs(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit ``(pred, target)`` (N, 3, H, W) in the working dtype, both (1, 0, 0) where the combined bool (N, H, W)
    mask is False, and that mask."""
    check_normal_pair(pred, target)
    _check_eps(eps)
    dtype = _work_dtype(pred)
    p, g = pred.to(dtype), target.to(dtype)
    g_norm = torch.linalg.vector_norm(g, dim=1)
    mask = torch.isfinite(g).all(1) & (g_norm > 0)
    extra = _check_valid_mask(valid, mask.shape)
    if extra is not None:
        mask = mask & extra
    m = mask[:, None]
    safe = torch.zeros(3, 1, 1, dtype=dtype, device=p.device)
    safe[0] = 1.0
    p = torch.where(m, p, safe)
    g = torch.where(m, g, safe)
    # The target is normalised too (decoded 8-bit normals are only unit to rounding); it is > 0 where valid.
    p = p / torch.linalg.vector_norm(p, dim=1, keepdim=True).clamp_min(eps)
    g = g / torch.where(mask, g_norm, 1.0)[:, None]
    return p, g, mask


def cosine_normal_loss(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None, eps: float = 1e-6
) -> torch.Tensor:
    """Cosine loss of surface normals, ``mean (1 - p̂ · n)``, p̂ the normalised prediction and n the true normal
    (the dot-product loss of Eigen and Fergus, "Predicting Depth, Surface Normals and Semantic Labels with a Common
    Multi-Scale Convolutional Architecture", ICCV 2015, shifted by 1 so a perfect prediction gives 0).

    It ranges over [0, 2]: 0 at 0°, 1 at 90°, 2 at 180°. Its gradient vanishes as the angle goes to 0 (1 - cos θ ≈
    θ²/2), which :func:`angular_normal_loss` avoids.

    Reduction: the mean over the valid pixels of the batch; 0 if there are none.

    Args:
        pred: float tensor (N, 3, H, W), predicted normals of any length (divided by max(|pred|, eps) here; a
            vector much shorter than ``eps`` is treated as near zero, and the gradient is capped near 1 / eps).
        target: float tensor (N, 3, H, W), true unit normals (normalised here too); the zero vector, or a
            non-finite one, marks a pixel without ground truth.
        valid: optional bool tensor (N, H, W) or (N, 1, H, W) of pixels that may count.
        eps: lower clamp of the prediction's length (> 0).

    Returns:
        scalar tensor, dimensionless.

    Raises:
        ValueError: not floating-point tensors of one (N, 3, H, W) shape, a ``valid`` that is not bool or has
            another shape, ``eps`` <= 0.
    """
    p, g, mask = _normal_inputs(pred, target, valid, eps)
    return _masked_mean((1 - (p * g).sum(1)) * mask, mask)


def angular_normal_loss(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None, eps: float = 1e-6
) -> torch.Tensor:
    """Mean angle between predicted and true surface normals, in radians.

    The angle is ``2 atan2(|p̂ - n|, |p̂ + n|)`` for the normalised prediction p̂ and the unit true normal n, which
    is accurate at every angle (W. Kahan, "How Futile are Mindless Assessments of Roundoff in Floating-Point
    Computation?", 2006) where ``acos(p̂ · n)`` rounds to 0 near 0° and has an infinite derivative at 0° and 180°;
    here the gradient is finite everywhere and 0 exactly at 0° and 180° (the angle's minimum and maximum). The same
    formula as :meth:`pixelwise.depth.NormalMetrics.angles`, so training minimises the benchmark's mean angle.

    Reduction: the mean over the valid pixels of the batch; 0 if there are none.

    Args:
        pred: float tensor (N, 3, H, W), predicted normals of any length (divided by max(|pred|, eps) here).
        target: float tensor (N, 3, H, W), true unit normals (normalised here too); the zero vector, or a
            non-finite one, marks a pixel without ground truth.
        valid: optional bool tensor (N, H, W) or (N, 1, H, W) of pixels that may count.
        eps: lower clamp of the prediction's length (> 0).

    Returns:
        scalar tensor, radians in [0, π].

    Raises:
        ValueError: as :func:`cosine_normal_loss`.
    """
    p, g, mask = _normal_inputs(pred, target, valid, eps)
    # linalg.vector_norm's backward is 0 at the zero vector (0° and 180° here), not NaN.
    angle = 2 * torch.atan2(torch.linalg.vector_norm(p - g, dim=1), torch.linalg.vector_norm(p + g, dim=1))
    return _masked_mean(angle * mask, mask)


# ---- lookup by name ------------------------------------------------------------------------------------------------

#: the losses :func:`build_depth_loss` knows, by name
DEPTH_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "l1": l1_depth_loss,
    "l2": l2_depth_loss,
    "silog": scale_invariant_log_loss,
    "berhu": berhu_loss,
    "gradient": gradient_matching_loss,
    "cosine": cosine_normal_loss,
    "angular": angular_normal_loss,
}
_NORMAL_LOSSES = ("cosine", "angular")


class DepthLoss(nn.Module):
    """A weighted sum of the losses of :data:`DEPTH_LOSSES`, named by a string such as ``"silog"``,
    ``"l1+gradient"`` or ``"silog+0.5*gradient"`` (MegaDepth weighs its gradient term by 0.5).

    ``forward(pred, target, valid=None)`` calls every term with the same arguments and returns
    ``Σ weight · term``. Depth terms and normal terms cannot be mixed in one sum (their predictions differ).

    Args:
        name: ``"+"``-separated terms, each ``name`` or ``weight*name`` with a float weight.
        **kwargs: options passed to every term whose function accepts them (``lam``, ``sqrt`` and ``eps`` to
            silog, ``c`` to berhu, ``scales`` and ``eps`` to gradient, ``eps`` to the normal losses).

    Raises:
        ValueError: (``pixelwise.errors.ConfigError``) an unknown name (the message lists the known ones), a
            weight that is not a finite number, depth and normal terms in one sum, an option that no term accepts,
            or an option value a term rejects (checked here, not at the first step).
    """

    def __init__(self, name: str, **kwargs) -> None:
        super().__init__()
        self.name = name
        self.terms: list[tuple[float, str, Callable[..., torch.Tensor], dict]] = []
        used: set[str] = set()
        for part in name.split("+"):
            weight, term = _parse_term(part, name)
            fn = DEPTH_LOSSES[term]
            accepted = set(inspect.signature(fn).parameters) - {"pred", "target", "valid"}
            mine = {k: v for k, v in kwargs.items() if k in accepted}
            used |= set(mine)
            self.terms.append((weight, term, fn, mine))
        kinds = {term in _NORMAL_LOSSES for _, term, _, _ in self.terms}
        if len(kinds) > 1:
            raise ConfigError(f"depth loss {name!r} mixes depth terms and normal terms ({', '.join(_NORMAL_LOSSES)}); "
                              "build one loss for each head and add them")
        unused = set(kwargs) - used
        if unused:
            raise ConfigError(f"loss option(s) {', '.join(sorted(unused))} are not accepted by {name!r}")
        # Run every term once on a tiny tensor, so a bad option (lam=2, c=0) fails when the loss is built.
        channels = 3 if self.is_normal_loss else 1
        dummy = torch.ones(1, channels, 2, 2)
        for _, _, fn, options in self.terms:
            fn(dummy, dummy, **options)

    @property
    def is_normal_loss(self) -> bool:
        """True for a loss of surface normals (pred and target (N, 3, H, W)), False for one of depth."""
        return self.terms[0][1] in _NORMAL_LOSSES

    def forward(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        total = None
        for weight, _, fn, options in self.terms:
            value = fn(pred, target, valid, **options)
            value = value if weight == 1.0 else weight * value
            total = value if total is None else total + value
        return total

    def extra_repr(self) -> str:
        options = {k: v for *_, o in self.terms for k, v in o.items()}
        return ", ".join([repr(self.name)] + [f"{k}={v!r}" for k, v in options.items()])


def _parse_term(part: str, name: str) -> tuple[float, str]:
    part = part.strip()
    weight = 1.0
    if "*" in part:
        w, _, part = (s.strip() for s in part.partition("*"))
        try:
            weight = float(w)
        except ValueError:
            weight = float("nan")
        if not (weight == weight and abs(weight) != float("inf")):
            raise ConfigError(f"bad weight {w!r} in depth loss {name!r}: write terms as 'name' or '0.5*name'")
    if part not in DEPTH_LOSSES:
        raise ConfigError(f"unknown depth loss {part!r} in {name!r}; known: {', '.join(DEPTH_LOSSES)} "
                          "(or a weighted sum such as 'silog+0.5*gradient')")
    return weight, part


def build_depth_loss(name: str, **kwargs) -> DepthLoss:
    """The loss named ``name``: one of :data:`DEPTH_LOSSES` (``l1``, ``l2``, ``silog``, ``berhu``, ``gradient``,
    ``cosine``, ``angular``) or a weighted sum such as ``"l1+gradient"`` or ``"silog+0.5*gradient"``; see
    :class:`DepthLoss`.

    Returns:
        a :class:`DepthLoss` module, ``loss(pred, target, valid=None) -> scalar``.

    Raises:
        ValueError: (``pixelwise.errors.ConfigError``) as :class:`DepthLoss`.
    """
    return DepthLoss(name, **kwargs)
