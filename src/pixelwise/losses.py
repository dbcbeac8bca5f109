"""Pixel-wise losses.

Cross-entropy summed over pixels is the loss of every model in the canon (FCN, SegNet, U-Net, DeepLab): the
negative log-likelihood of each pixel's true class under the per-pixel softmax of the logits, averaged over the
pixels that are not ``ignore_index``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def median_frequency_weights(class_pixels: Sequence[int], image_pixels: Sequence[int]) -> torch.Tensor:
    """Median-frequency class balancing (Eigen & Fergus, ICCV 2015), as SegNet used on CamVid.

    ``freq(c) = class_pixels[c] / image_pixels[c]``, the share of class c in the images where c is present;
    ``weight(c) = median(freq) / freq(c)``. Rare classes get weights above 1, common ones below.

    Args:
        class_pixels: (K,) pixel count of each class over the training masks (void excluded).
        image_pixels: (K,) total pixel count of the training images that contain class c.

    Returns:
        float32 tensor (K,). A class that never occurs gets weight 0 (it cannot be learned; with weight 1 it
        would still be pushed down by every other pixel's softmax).

    Raises:
        ValueError: the two counts differ in length, or no class occurs at all.
    """
    cp = np.asarray(class_pixels, dtype=np.float64)
    ip = np.asarray(image_pixels, dtype=np.float64)
    if cp.shape != ip.shape:
        raise ValueError(f"class_pixels {cp.shape} and image_pixels {ip.shape} differ in length")
    present = cp > 0
    if not present.any():
        raise ValueError("no class occurs in the training masks: cannot compute median-frequency weights")
    freq = np.zeros_like(cp)
    freq[present] = cp[present] / ip[present]
    weights = np.zeros_like(cp)
    weights[present] = np.median(freq[present]) / freq[present]
    return torch.tensor(weights, dtype=torch.float32)


class CrossEntropyLoss(nn.Module):
    """Pixel-wise cross-entropy with ``ignore_index`` and optional class weights.

    Args:
        ignore_index: target value whose pixels contribute nothing (255, void).
        class_weights: optional (K,) float weights; the mean is then weighted, as in ``F.cross_entropy``.

    ``forward(logits, target)``: logits float (N, K, H, W), target int64 (N, H, W) → scalar float. A batch whose
    every pixel is void gives 0 with a gradient of 0 (``F.cross_entropy`` would give NaN and poison the weights).
    """

    def __init__(self, ignore_index: int = 255, class_weights: torch.Tensor | Sequence[float] | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        w = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", w)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match")
        valid = target != self.ignore_index
        if not valid.any():
            return logits.sum() * 0.0
        _check_labels(target[valid], logits.shape[1], self.ignore_index)
        return F.cross_entropy(logits, target, weight=self.class_weights, ignore_index=self.ignore_index)


def _flatten_valid(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, K) logits and (P,) targets of the non-void pixels; raises on a shape mismatch or an out-of-range label."""
    if logits.dim() != 4 or target.dim() != 3 or logits.shape[:1] + logits.shape[2:] != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match: "
                         "expected logits (N, K, H, W) and target (N, H, W)")
    num_classes = logits.shape[1]
    flat_logits = logits.permute(0, 2, 3, 1).reshape(-1, num_classes)
    flat_target = target.reshape(-1)
    keep = flat_target != ignore_index
    flat_logits, flat_target = flat_logits[keep], flat_target[keep]
    _check_labels(flat_target, num_classes, ignore_index)
    return flat_logits, flat_target


def _check_labels(labels: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    """Raise ValueError if the non-void ``labels`` hold a value outside 0..num_classes-1."""
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"target holds labels outside 0..{num_classes - 1} (found {labels.min().item()}.."
            f"{labels.max().item()}) besides ignore_index {ignore_index}: check the masks' class ids"
        )


class _FlatPixelLoss(nn.Module):
    """Shared part of the losses below: ``ignore_index``, a ``class_weights`` buffer, the non-void pixels flattened
    to (P, K) logits and (P,) targets, and 0 with a zero gradient for an all-void batch. Subclasses define
    ``_loss(flat_logits, flat_target)``."""

    def __init__(self, ignore_index: int, class_weights: torch.Tensor | Sequence[float] | None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("class_weights", _as_weights(class_weights))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        flat_logits, flat_target = _flatten_valid(logits, target, self.ignore_index)
        if flat_target.numel() == 0:
            return logits.sum() * 0.0
        return self._loss(flat_logits, flat_target)

    def _loss(self, flat_logits: torch.Tensor, flat_target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _as_weights(class_weights: torch.Tensor | Sequence[float] | None) -> torch.Tensor | None:
    return None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)


class DiceLoss(_FlatPixelLoss):
    """Soft Dice loss over the batch, one Dice score per class (Milletari, Navab, Ahmadi, "V-Net", 3DV 2016).

    For class c with softmax probabilities p and one-hot target y over the batch's non-void pixels,
    ``dice_c = (2·Σ p_c·y_c + smooth) / (Σ p_c + Σ y_c + smooth)`` and the loss is the mean of ``1 - dice_c`` over
    the classes, weighted by ``class_weights`` if given.

    Args:
        ignore_index: target value whose pixels enter neither sum.
        class_weights: optional (K,) float weights of the per-class terms (a weighted mean).
        smooth: added to numerator and denominator (1.0); it keeps a class absent from both prediction and target
            at loss 0 rather than 0/0.

    ``forward(logits, target)``: logits float (N, K, H, W), target int64 (N, H, W) → scalar float. An all-void batch
    gives 0 with a zero gradient. Raises ValueError on mismatched shapes or labels outside 0..K-1.
    """

    def __init__(self, ignore_index: int = 255, class_weights: torch.Tensor | Sequence[float] | None = None,
                 smooth: float = 1.0) -> None:
        super().__init__(ignore_index, class_weights)
        self.smooth = float(smooth)

    def _loss(self, flat_logits: torch.Tensor, flat_target: torch.Tensor) -> torch.Tensor:
        probs = flat_logits.float().softmax(1)
        onehot = F.one_hot(flat_target, probs.shape[1]).to(probs.dtype)
        intersection = (probs * onehot).sum(0)
        cardinality = probs.sum(0) + onehot.sum(0)
        dice = (2 * intersection + self.smooth) / (cardinality + self.smooth)
        return _weighted_class_mean(1 - dice, self.class_weights)


def _weighted_class_mean(per_class: torch.Tensor, weights: torch.Tensor | None,
                         present: torch.Tensor | None = None) -> torch.Tensor:
    w = torch.ones_like(per_class) if weights is None else weights.to(per_class)
    if present is not None:
        w = w * present.to(per_class)
    total = w.sum()
    if total == 0:
        return per_class.sum() * 0.0
    return (per_class * w).sum() / total


class FocalLoss(_FlatPixelLoss):
    """Focal loss (Lin, Goyal, Girshick, He, Dollár, ICCV 2017), pixel-wise over K classes.

    Each non-void pixel with true class y and softmax probability p_y contributes ``-w_y (1 - p_y)^gamma log p_y``;
    the loss is their sum divided by ``Σ w_y`` (the weighted mean, as cross-entropy's). ``gamma = 0`` is
    :class:`CrossEntropyLoss`; larger gamma down-weights the pixels the model already gets right.

    Args:
        gamma: focusing parameter >= 0 (2.0, the paper's).
        ignore_index: target value whose pixels contribute nothing.
        class_weights: optional (K,) float weights w (the paper's alpha, per class).

    ``forward(logits, target)``: logits float (N, K, H, W), target int64 (N, H, W) → scalar float. An all-void batch
    gives 0 with a zero gradient. Raises ValueError on a negative gamma, mismatched shapes or labels outside 0..K-1.
    """

    def __init__(self, gamma: float = 2.0, ignore_index: int = 255,
                 class_weights: torch.Tensor | Sequence[float] | None = None) -> None:
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        super().__init__(ignore_index, class_weights)
        self.gamma = float(gamma)

    def _loss(self, flat_logits: torch.Tensor, flat_target: torch.Tensor) -> torch.Tensor:
        log_p = flat_logits.float().log_softmax(1).gather(1, flat_target[:, None])[:, 0]
        per_pixel = -((1 - log_p.exp()) ** self.gamma) * log_p
        w = torch.ones_like(per_pixel) if self.class_weights is None else self.class_weights.to(per_pixel)[flat_target]
        return (per_pixel * w).sum() / w.sum().clamp_min(torch.finfo(per_pixel.dtype).tiny)


def lovasz_jaccard_gradient(sorted_truth: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss at the given error order (Berman et al., Alg. 1).

    Args:
        sorted_truth: (P,) float 0/1, pixel membership of the class, ordered by decreasing error.

    Returns:
        (P,) float: entry i is ``J(first i+1 pixels) - J(first i pixels)``, where J(S) is the Jaccard loss
        ``1 - |truth ∖ S| / |truth ∪ S|`` of marking the pixels in S as errors.
    """
    total = sorted_truth.sum()
    inside = total - sorted_truth.cumsum(0)  # ground-truth pixels not yet counted as errors
    union = total + (1 - sorted_truth).cumsum(0)
    jaccard = 1 - inside / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


class LovaszSoftmaxLoss(_FlatPixelLoss):
    """Lovász-softmax loss (Berman, Rannen Triki, Blaschko, CVPR 2018): a convex surrogate of 1 - IoU per class.

    For class c, the errors ``e_i = |y_ic - p_ic|`` of the batch's non-void pixels are sorted in decreasing order and
    dotted with the gradient of the Lovász extension of the Jaccard loss (:func:`lovasz_jaccard_gradient`). On
    one-hot predictions the term equals ``1 - IoU_c`` exactly. The loss is the mean over the classes present in the
    target (``classes="present"``, the paper's default) or over all classes (``"all"``), weighted by
    ``class_weights`` if given.

    ``forward(logits, target)``: logits float (N, K, H, W), target int64 (N, H, W) → scalar float. An all-void batch
    gives 0 with a zero gradient. Raises ValueError on an unknown ``classes``, mismatched shapes or labels outside
    0..K-1. Sorting makes it cost O(P log P) per class, P the number of pixels.
    """

    def __init__(self, ignore_index: int = 255, class_weights: torch.Tensor | Sequence[float] | None = None,
                 classes: str = "present") -> None:
        if classes not in ("present", "all"):
            raise ValueError(f"classes must be 'present' or 'all', got {classes!r}")
        super().__init__(ignore_index, class_weights)
        self.classes = classes

    def _loss(self, flat_logits: torch.Tensor, flat_target: torch.Tensor) -> torch.Tensor:
        probs = flat_logits.float().softmax(1)
        truth = F.one_hot(flat_target, probs.shape[1]).to(probs.dtype)
        errors = (truth - probs).abs()
        sorted_errors, order = errors.sort(0, descending=True)
        sorted_truth = truth.gather(0, order)
        per_class = torch.stack([
            sorted_errors[:, c] @ lovasz_jaccard_gradient(sorted_truth[:, c]) for c in range(probs.shape[1])
        ])
        present = truth.sum(0) > 0 if self.classes == "present" else None
        return _weighted_class_mean(per_class, self.class_weights, present)


class OhemCrossEntropyLoss(_FlatPixelLoss):
    """Cross-entropy over the hardest pixels only: online hard example mining (Shrivastava, Gupta, Girshick,
    CVPR 2016), per pixel as in Wu, Shen, van den Hengel's online bootstrapping (arXiv 1605.06885, 2016).

    The non-void pixels are ranked by their unweighted cross-entropy; the ``keep`` hardest are kept (a fraction of the
    batch's non-void pixels if ``keep < 1``, else a count), together with every pixel whose loss exceeds
    ``-log(threshold)``, i.e. whose true-class probability is below ``threshold`` (PSPNet's rule; off with None). The
    loss is the (class-weighted) mean over the kept pixels.

    Args:
        keep: fraction in (0, 1) or pixel count >= 1 (0.25).
        threshold: optional probability in (0, 1]; pixels predicted less confidently than this are always kept.
        ignore_index: target value whose pixels are never kept.
        class_weights: optional (K,) float weights, applied after the selection.

    ``forward(logits, target)``: logits float (N, K, H, W), target int64 (N, H, W) → scalar float. An all-void batch
    gives 0 with a zero gradient. Raises ValueError on bad ``keep``/``threshold``, mismatched shapes or labels
    outside 0..K-1.
    """

    def __init__(self, keep: float = 0.25, threshold: float | None = None, ignore_index: int = 255,
                 class_weights: torch.Tensor | Sequence[float] | None = None) -> None:
        if not keep > 0 or (keep >= 1 and keep != int(keep)):
            raise ValueError(f"keep must be a fraction in (0, 1) or a whole pixel count >= 1, got {keep}")
        if threshold is not None and not 0 < threshold <= 1:
            raise ValueError(f"threshold must be a probability in (0, 1], got {threshold}")
        super().__init__(ignore_index, class_weights)
        self.keep, self.threshold = keep, threshold

    def _loss(self, flat_logits: torch.Tensor, flat_target: torch.Tensor) -> torch.Tensor:
        nll = F.cross_entropy(flat_logits.float(), flat_target, reduction="none")
        count = flat_target.numel()
        k = min(count, max(1, round(self.keep * count)) if self.keep < 1 else int(self.keep))
        hardest = torch.zeros(count, dtype=torch.bool, device=nll.device)
        hardest[nll.detach().topk(k).indices] = True
        if self.threshold is not None:
            hardest |= nll.detach() > -math.log(self.threshold)
        w = torch.ones_like(nll) if self.class_weights is None else self.class_weights.to(nll)[flat_target]
        w = w * hardest
        return (nll * w).sum() / w.sum().clamp_min(torch.finfo(nll.dtype).tiny)


LOSSES = {
    "cross_entropy": CrossEntropyLoss,
    "dice": DiceLoss,
    "focal": FocalLoss,
    "lovasz": LovaszSoftmaxLoss,
    "ohem": OhemCrossEntropyLoss,
}


def build_loss(name: str, ignore_index: int = 255, class_weights: torch.Tensor | Sequence[float] | None = None,
               **kwargs) -> nn.Module:
    """The loss registered as ``name`` (one of :data:`LOSSES`), or a sum such as ``"cross_entropy+dice"``.

    Every loss takes ``ignore_index`` and ``class_weights``; ``kwargs`` go to every term of a sum that accepts them
    (e.g. ``gamma`` to focal, ``keep``/``threshold`` to ohem, ``smooth`` to dice, ``classes`` to lovasz).

    Raises:
        ValueError: an unknown name (the message lists the known ones) or a keyword no term accepts.
    """
    import inspect

    names = [n.strip() for n in name.split("+")]
    unknown = [n for n in names if n not in LOSSES]
    if unknown:
        raise ValueError(f"unknown loss {', '.join(map(repr, unknown))}; known: {', '.join(LOSSES)} "
                         "(or a sum such as 'cross_entropy+dice')")
    terms = []
    used: set[str] = set()
    for n in names:
        accepted = set(inspect.signature(LOSSES[n]).parameters)
        mine = {k: v for k, v in kwargs.items() if k in accepted}
        used |= set(mine)
        terms.append(LOSSES[n](ignore_index=ignore_index, class_weights=class_weights, **mine))
    if set(kwargs) - used:
        raise ValueError(f"loss option(s) {', '.join(sorted(set(kwargs) - used))} are not accepted by {name!r}")
    return terms[0] if len(terms) == 1 else SumLoss(terms)


class SumLoss(nn.Module):
    """The sum of several losses, each called with the same ``(logits, target)``."""

    def __init__(self, terms: Sequence[nn.Module]) -> None:
        super().__init__()
        self.terms = nn.ModuleList(terms)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(term(logits, target) for term in self.terms)
