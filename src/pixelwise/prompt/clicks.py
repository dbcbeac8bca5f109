"""The click protocol of interactive segmentation: a simulated user, click encodings, and the NoC metrics.

A user points at an object with clicks, each *positive* (on the object) or *negative* (on the background); after
each click a model returns a mask. Xu, Price, Cohen, Yang & Huang ("Deep Interactive Object Selection", CVPR 2016)
introduced the simulated user that places every click automatically, and the number of clicks (NoC) needed to
reach a given IoU; Sofiiuk, Petrov & Konushin ("Reviving Iterative Training with Mask Guidance for Interactive
Segmentation", ICIP 2022, "RITM") fixed the version the field reports (GrabCut, Berkeley, DAVIS, SBD, COCO-LVIS):

1. start from an empty prediction;
2. the next click goes to the point farthest from the boundary of the larger error region: false negatives give a
   positive click, false positives a negative one (:func:`next_click`);
3. the model predicts from all clicks so far, and the IoU with the ground truth is recorded (:func:`run_clicks`);
4. repeat up to 20 clicks; NoC@85 / NoC@90 is the mean, over objects, of the first click count whose IoU reaches
   0.85 / 0.90, an object that never does counting 20; NoF ("number of failures") counts those objects
   (:func:`number_of_clicks`, :func:`noc_summary`).

>>> import numpy as np
>>> gt = np.zeros((8, 8), bool); gt[2:7, 1:6] = True
>>> next_click(np.zeros_like(gt), gt)
Click(y=4, x=3, positive=True)
>>> ious = run_clicks(lambda clicks: gt.copy(), gt)
>>> ious, number_of_clicks(ious, 0.9)
([1.0], 1)

Masks are numpy bool arrays ``(H, W)`` and coordinates are integer pixels ``(y, x)``, row first. The distance
transform is SciPy's exact Euclidean one (``scipy.ndimage.distance_transform_edt``); SciPy is imported only by
:func:`next_click` / :func:`error_distances` (``pip install 'pixelwise[prompt]'``).

Classical click models to run the protocol on (GrabCut, random walker) are in :mod:`pixelwise.prompt.baselines`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Click",
    "MIOU_AT_CLICKS",
    "click_maps",
    "error_distances",
    "iou",
    "next_click",
    "noc_summary",
    "number_of_clicks",
    "run_clicks",
]

#: The click counts at which :func:`noc_summary` reports the mean IoU (``mIoU@k``).
MIOU_AT_CLICKS: tuple[int, ...] = (1, 3, 5, 10, 20)


@dataclass(frozen=True)
class Click:
    """One click of a user.

    Attributes:
        y, x: the clicked pixel, row and column, in pixels from the top-left corner (0-based).
        positive: True for a click on the object (foreground), False for one on the background.
    """

    y: int
    x: int
    positive: bool


def _as_mask(a: object, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``a`` as a bool (H, W) array: bool arrays pass; integer or float arrays only if every value is 0 or 1."""
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) mask, got shape {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape} but the ground truth has shape {shape}: give masks of the "
                         f"same size")
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind in "iuf" and np.isin(arr, (0, 1)).all():
        return arr.astype(bool)
    raise ValueError(f"{name} must be a bool mask (or 0/1 values), got dtype {arr.dtype} with values other than "
                     f"0 and 1: threshold it first (e.g. probabilities > 0.5, or a 0/255 mask > 127)")


def _error_regions(pred: object, gt: object, ignore: object | None) -> tuple[np.ndarray, np.ndarray]:
    gt_ = _as_mask(gt, "gt")
    pred_ = _as_mask(pred, "pred", gt_.shape)
    fn = gt_ & ~pred_
    fp = pred_ & ~gt_
    if ignore is not None:
        keep = ~_as_mask(ignore, "ignore", gt_.shape)
        fn &= keep
        fp &= keep
    return fn, fp


def _inside_distance(region: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance from each pixel of ``region`` to the nearest pixel outside it, the image border
    counting as outside (one pixel of False padded around it); 0 outside the region."""
    try:
        from scipy.ndimage import distance_transform_edt
    except ImportError as e:
        raise ImportError("the click protocol's distance transform needs SciPy: pip install 'pixelwise[prompt]' "
                          "(or pip install scipy)") from e
    if not region.any():
        return np.zeros(region.shape, np.float64)
    return distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]


def error_distances(pred: object, gt: object, ignore: object | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The distance maps the simulated user of :func:`next_click` clicks on.

    For the false negatives ``fn = gt & ~pred`` and the false positives ``fp = pred & ~gt`` (pixels where ``ignore``
    is True are in neither), the Euclidean distance from each pixel of the region to the nearest pixel outside it,
    where the image border counts as outside: both masks are padded by one pixel of False before the transform
    and cropped back after it (Sofiiuk et al., "Reviving Iterative Training with Mask Guidance for Interactive
    Segmentation", ICIP 2022), so a region pixel on the image border is at distance 1 like any pixel on the
    region's edge. The transform is SciPy's exact one, not OpenCV's 3x3 / 5x5 approximations.

    Args:
        pred: the current prediction, bool (H, W) (0/1 integers accepted).
        gt: the ground-truth object, bool (H, W).
        ignore: optional bool (H, W); True marks pixels that are neither error (e.g. void boundaries).

    Returns:
        ``(fn_distance, fp_distance)``, float64 (H, W), in pixels: >= 1 inside the region, 0 elsewhere.

    Raises:
        ValueError: a mask that is not 2-D, not of ``gt``'s shape, or not bool / 0-1 valued.
        ImportError: SciPy is not installed.
    """
    fn, fp = _error_regions(pred, gt, ignore)
    return _inside_distance(fn), _inside_distance(fp)


def next_click(pred: object, gt: object, ignore: object | None = None) -> Click | None:
    """The protocol's simulated user: where the next click goes, given the current prediction.

    The click goes to the point of largest :func:`error_distances` distance of the error region (false negatives
    or false positives) whose largest distance is larger: a positive click if that is the false-negative region,
    a negative one otherwise. Ties between the regions go to the false negatives (a positive click); ties inside a
    region go to the first point in raster order (smallest y, then smallest x). The first click on an empty
    prediction is thus the interior-most point of the object. Xu et al. ("Deep Interactive Object Selection",
    CVPR 2016) proposed the rule; this is the deterministic version of Sofiiuk et al. (RITM, ICIP 2022), whose
    code breaks the fn/fp tie the other way (``fn_max_dist > fp_max_dist``) and never clicks a pixel twice. Here
    a pixel that a model keeps wrong after a click on it may be clicked again.

    Args:
        pred: the current prediction, bool (H, W) (0/1 integers accepted).
        gt: the ground-truth object, bool (H, W).
        ignore: optional bool (H, W); True marks pixels that are neither error and are never clicked.

    Returns:
        The :class:`Click` (plain ``int`` coordinates), or None when there is no error outside ``ignore``.

    Raises:
        ValueError: a mask that is not 2-D, not of ``gt``'s shape, or not bool / 0-1 valued.
        ImportError: SciPy is not installed.
    """
    fn_dist, fp_dist = error_distances(pred, gt, ignore)
    fn_max, fp_max = fn_dist.max(initial=0.0), fp_dist.max(initial=0.0)
    if fn_max == 0 and fp_max == 0:
        return None
    positive = bool(fn_max >= fp_max)
    dist = fn_dist if positive else fp_dist
    # argmax returns the first maximum of the C-ordered (row-major) array: the raster-order tie-break
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return Click(int(y), int(x), positive)


def _disk_offsets(radius: int) -> tuple[np.ndarray, np.ndarray]:
    r = int(radius)
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    inside = dy * dy + dx * dx <= r * r
    return dy[inside], dx[inside]


def _paint_disk(canvas: np.ndarray, y: int, x: int, radius: int, value: object) -> None:
    """Set the pixels (yy, xx) of ``canvas`` with (yy - y)^2 + (xx - x)^2 <= radius^2 to ``value``, clipped."""
    dy, dx = _disk_offsets(radius)
    yy, xx = dy + y, dx + x
    ok = (yy >= 0) & (yy < canvas.shape[0]) & (xx >= 0) & (xx < canvas.shape[1])
    canvas[yy[ok], xx[ok]] = value


def _check_clicks(clicks: Sequence[Click], shape: tuple[int, int]) -> None:
    for c in clicks:
        if not isinstance(c, Click):
            raise TypeError(f"clicks must be Click objects, got {type(c).__name__}: use Click(y, x, positive)")
        if not (0 <= c.y < shape[0] and 0 <= c.x < shape[1]):
            raise ValueError(f"{c} lies outside the image of shape (H, W) = {tuple(shape)}")


def click_maps(clicks: Sequence[Click], shape: tuple[int, int], radius: int = 5) -> np.ndarray:
    """Disk encodings of the clicks, the input a click model takes beside the image.

    Channel 0 marks the positive clicks, channel 1 the negative ones: 1 at every pixel (y, x) with
    ``(y - cy)^2 + (x - cx)^2 <= radius^2`` for some click (cy, cx) of that sign, 0 elsewhere (disks clipped at
    the image border). The disk encoding is RITM's (Sofiiuk et al., ICIP 2022); Xu et al. (CVPR 2016) used
    truncated distance maps instead.

    Args:
        clicks: the clicks, in any order.
        shape: ``(H, W)`` of the image, in pixels.
        radius: disk radius in pixels (0: the clicked pixel alone).

    Returns:
        float32 ``(2, H, W)`` of 0 and 1.

    Raises:
        ValueError: a negative radius, a shape that is not two positive sizes, or a click outside the image.
        TypeError: an element of ``clicks`` that is not a :class:`Click`.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be (H, W) with H, W >= 1, got {shape}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0 pixels, got {radius}")
    _check_clicks(clicks, shape)
    maps = np.zeros((2, *shape), np.float32)
    for c in clicks:
        _paint_disk(maps[0 if c.positive else 1], c.y, c.x, radius, 1.0)
    return maps


def iou(pred: object, gt: object, ignore: object | None = None) -> float:
    """Intersection over union of two bool masks, the per-object score of the click protocol.

    Pixels where ``ignore`` is True count in neither the intersection nor the union. Two empty masks (after
    ``ignore``) agree perfectly: 1.0.

    Args:
        pred, gt: bool (H, W) masks of the same shape (0/1 integers accepted).
        ignore: optional bool (H, W) of pixels to leave out.

    Returns:
        IoU in [0, 1], a Python float.

    Raises:
        ValueError: a mask that is not 2-D, not of ``gt``'s shape, or not bool / 0-1 valued.
    """
    gt_ = _as_mask(gt, "gt")
    pred_ = _as_mask(pred, "pred", gt_.shape)
    inter, union = pred_ & gt_, pred_ | gt_
    if ignore is not None:
        keep = ~_as_mask(ignore, "ignore", gt_.shape)
        inter &= keep
        union &= keep
    n_union = int(union.sum())
    return 1.0 if n_union == 0 else int(inter.sum()) / n_union


def run_clicks(segment: Callable[[list[Click]], object], gt: object, max_clicks: int = 20,
               ignore: object | None = None) -> list[float]:
    """The click protocol for one object (Xu et al., CVPR 2016; Sofiiuk et al., ICIP 2022).

    Starting from an all-False prediction, up to ``max_clicks`` times: the simulated user clicks
    (:func:`next_click`), stopping early when nothing is left to correct; the model predicts from all clicks so
    far, ``pred = segment(clicks)``; and the IoU with ``gt`` is recorded. A model that uses its previous mask
    (RITM's mask guidance) keeps it itself, between calls.

    Args:
        segment: the model, called with the list of :class:`Click` so far (a fresh list each call, oldest
            first) and returning a bool (H, W) mask of the object (0/1 integers accepted).
        gt: the ground-truth object, bool (H, W), with at least one pixel outside ``ignore``.
        max_clicks: the most clicks, 20 in the field's reports.
        ignore: optional bool (H, W) of pixels that are never clicked and never scored.

    Returns:
        The IoU after each click, one float per click made (fewer than ``max_clicks`` only when the prediction
        became exact, in which case the last is 1.0).

    Raises:
        ValueError: ``max_clicks`` < 1, a ``gt`` with no pixel outside ``ignore`` (nothing to click), or a mask
            from ``segment`` that is not bool / 0-1 valued or not of ``gt``'s shape.
    """
    if max_clicks < 1:
        raise ValueError(f"max_clicks must be >= 1, got {max_clicks}")
    gt_ = _as_mask(gt, "gt")
    ignore_ = None if ignore is None else _as_mask(ignore, "ignore", gt_.shape)
    pred = np.zeros_like(gt_)
    clicks: list[Click] = []
    ious: list[float] = []
    for _ in range(max_clicks):
        click = next_click(pred, gt_, ignore_)
        if click is None:
            if not clicks:
                raise ValueError("gt has no object pixel outside ignore: the click protocol needs an object to "
                                 "click on")
            break
        clicks.append(click)
        pred = _as_mask(segment(list(clicks)), f"the mask segment() returned after {len(clicks)} click(s)",
                        gt_.shape)
        ious.append(iou(pred, gt_, ignore_))
    return ious


def number_of_clicks(ious: Sequence[float], threshold: float, max_clicks: int = 20) -> int:
    """NoC: the first click count whose IoU reaches ``threshold`` (Xu et al., CVPR 2016).

    Args:
        ious: the IoU after each click (as :func:`run_clicks` returns them); values past ``max_clicks`` are not
            looked at.
        threshold: the IoU to reach, e.g. 0.85 or 0.90 (reached when ``iou >= threshold``).
        max_clicks: the click budget.

    Returns:
        The 1-based click count, or ``max_clicks`` when the threshold is never reached within the budget (the
        field's convention, which counts a failure as the whole budget).

    Raises:
        ValueError: an empty ``ious`` or ``max_clicks`` < 1.
    """
    if max_clicks < 1:
        raise ValueError(f"max_clicks must be >= 1, got {max_clicks}")
    if len(ious) == 0:
        raise ValueError("ious is empty: give the IoU after each click (run_clicks' result)")
    for k, value in enumerate(ious[:max_clicks], start=1):
        if value >= threshold:
            return k
    return max_clicks


def _threshold_name(threshold: float) -> str:
    return f"{round(threshold * 100, 6):g}"


def noc_summary(per_object_ious: Sequence[Sequence[float]], thresholds: Sequence[float] = (0.85, 0.90),
                max_clicks: int = 20) -> dict[str, float | int]:
    """The click protocol's scores over a set of objects (Sofiiuk et al., ICIP 2022, tables of NoC@85 / NoC@90).

    Keys (for the default thresholds; ``NoC@t`` / ``NoF@t`` for each ``t`` in ``thresholds``, named by its
    percentage):

    - ``NoC@85``, ``NoC@90``: mean over objects of :func:`number_of_clicks`, a never-reaching object counting
      ``max_clicks``;
    - ``NoF@85``, ``NoF@90``: the number of objects that never reach the threshold within ``max_clicks`` clicks
      (RITM's code counts ``NoC == max_clicks``, which also takes in an object that reaches it exactly at the last
      click; this one does not);
    - ``objects``: the number of objects;
    - ``mIoU@k`` for k in :data:`MIOU_AT_CLICKS` up to ``max_clicks``: mean over objects of the IoU after k
      clicks, an object whose run stopped before k clicks keeping its last IoU.

    Args:
        per_object_ious: for each object, the IoU after each click (:func:`run_clicks`).
        thresholds: IoU thresholds in (0, 1].
        max_clicks: the click budget the runs had.

    Returns:
        dict of floats (NoC, mIoU) and ints (NoF, objects).

    Raises:
        ValueError: no objects, an object with no IoU, or ``max_clicks`` < 1.
    """
    if len(per_object_ious) == 0:
        raise ValueError("per_object_ious is empty: give one IoU list per object")
    if max_clicks < 1:
        raise ValueError(f"max_clicks must be >= 1, got {max_clicks}")
    for i, ious in enumerate(per_object_ious):
        if len(ious) == 0:
            raise ValueError(f"object {i} has no IoU: give the IoU after each click (run_clicks' result)")
    out: dict[str, float | int] = {}
    for t in thresholds:
        name = _threshold_name(t)
        nocs = [number_of_clicks(ious, t, max_clicks) for ious in per_object_ious]
        out[f"NoC@{name}"] = float(np.mean(nocs))
        out[f"NoF@{name}"] = sum(1 for ious in per_object_ious if not any(v >= t for v in ious[:max_clicks]))
    out["objects"] = len(per_object_ious)
    for k in MIOU_AT_CLICKS:
        if k <= max_clicks:
            out[f"mIoU@{k}"] = float(np.mean([ious[min(k, len(ious)) - 1] for ious in per_object_ious]))
    return out
