"""Training and evaluating click models (task ``"prompt"``) with the click protocol.

Training follows Sofiiuk, Petrov & Konushin, "Reviving Iterative Training with Mask Guidance for Interactive
Segmentation" (ICIP 2022, "RITM"), simplified. For every object of a batch (:func:`prepare_clicks`):

1. initial clicks: 1..K (``initial_clicks``, K = 3 by default), drawn per object: the first is the simulated
   user's (:func:`pixelwise.prompt.clicks.next_click` on an empty prediction: the object's interior-most point) or,
   half the time, a random object pixel (interior pixels likelier, weighted by their distance to the border); the
   others random positive pixels of the object or negative pixels of the background within 40 pixels of it, half
   and half (RITM's multi-point sampler, which also draws its first clicks at random);
2. without gradient and with the model in eval mode, 0..M iterations (``iterations``, M = 3, one draw per batch):
   run the model on the clicks so far and its previous probabilities, and add the simulated user's click on its
   error (RITM's iterative training, which teaches the model to correct its own masks);
3. the training forward, with gradient, on the final clicks and previous mask (zeros if no iteration ran).

The loss (:func:`click_loss`) is RITM's normalized focal loss (``loss="normalized_focal"``, alpha 0.5, gamma 2) or
binary cross-entropy (``"bce"``) of the object's logits, pixels of ``ignore_index`` left out, each object's loss
averaged over its pixels and the batch's over its objects.

Evaluation (:func:`evaluate_clicks`) is the protocol of :func:`pixelwise.prompt.clicks.run_clicks`: up to 20 clicks
per object, the model's previous-mask input its own last probabilities, scored by
:func:`~pixelwise.prompt.clicks.noc_summary` (``NoC@85``, ``NoC@90``, ``NoF@85``, ``NoF@90``, ``mIoU@k``).

Clicks are disks of radius :data:`CLICK_RADIUS` pixels (RITM's), in training, evaluation and
:class:`~pixelwise.prompt.click_predictor.ClickPredictor` alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from pixelwise.prompt.clicks import Click, click_maps, error_distances, next_click, noc_summary, run_clicks

__all__ = ["CLICK_RADIUS", "PROMPT_DEFAULTS", "click_loss", "evaluate_clicks", "format_noc_table",
           "initial_clicks", "normalized_focal_loss", "prepare_clicks", "run_object", "spread_indices",
           "summarize_clicks"]

#: Disk radius of a click, in pixels (RITM's).
CLICK_RADIUS = 5
#: A pixel belongs to the object when its probability is above this.
MASK_THRESHOLD = 0.5
#: The options of the prompt task (``TrainConfig.prompt_kwargs``) and their defaults.
PROMPT_DEFAULTS: dict[str, Any] = {
    "initial_clicks": 3,  # K: 1..K clicks before the iterations
    "iterations": 3,  # M: 0..M iterations of the simulated user on the model's errors, without gradient
    "loss": "normalized_focal",  # or "bce"
    "val_max_clicks": 20,  # the protocol's click budget in validation
    "val_max_objects": None,  # validate on the first N objects of the val split (None: all)
}
#: Negative initial clicks fall within this many pixels of the object.
NEGATIVE_BAND = 40


def _sample(weights: np.ndarray, rng: np.random.Generator) -> tuple[int, int] | None:
    total = float(weights.sum())
    if total <= 0:
        return None
    k = int(rng.choice(weights.size, p=(weights / total).ravel()))
    y, x = np.unravel_index(k, weights.shape)
    return int(y), int(x)


def initial_clicks(gt: np.ndarray, ignore: np.ndarray | None, count: int, rng: np.random.Generator) -> list[Click]:
    """``count`` clicks on an object before any prediction (step 1 of the module docstring).

    Args:
        gt: bool (H, W), the object. ignore: bool (H, W) of pixels never clicked, or None.
        count: how many clicks (>= 1); fewer come back when there is no pixel to put them on.
        rng: the random generator.

    Returns:
        The clicks, the first positive. None of them on an ``ignore`` pixel. Empty if ``gt`` is empty.
    """
    from scipy.ndimage import distance_transform_edt

    if not gt.any():
        return []
    inside, _ = error_distances(np.zeros_like(gt), gt, ignore)
    clicks = []
    first = next_click(np.zeros_like(gt), gt, ignore) if rng.random() < 0.5 else None
    if first is None:
        y, x = _sample(inside, rng)
        first = Click(y, x, True)
    clicks.append(first)
    if count > 1:
        outside = distance_transform_edt(~gt)
        band = (outside > CLICK_RADIUS) & (outside <= NEGATIVE_BAND)
        if ignore is not None:
            band &= ~ignore
    for _ in range(count - 1):
        point = _sample(inside, rng) if rng.random() < 0.5 else _sample(band.astype(np.float64), rng)
        positive = bool(point is not None and gt[point])
        if point is not None:
            clicks.append(Click(point[0], point[1], positive))
    return clicks


def _maps(clicks: Sequence[Sequence[Click]], shape: tuple[int, int], device) -> Tensor:
    return torch.from_numpy(np.stack([click_maps(c, shape, CLICK_RADIUS) for c in clicks])).to(device)


def prepare_clicks(model: nn.Module, images: Tensor, masks: Tensor, ignore_index: int, rng: np.random.Generator,
                   initial: int = 3, iterations: int = 3, amp_dtype: torch.dtype | None = None
                   ) -> tuple[Tensor, Tensor]:
    """Steps 1 and 2 of the module docstring for a batch: the click maps and previous masks of its training forward.

    Args:
        model: the click model (run in eval mode without gradient; left in train mode).
        images: float (N, C, H, W) normalised. masks: int64 (N, H, W): 1 object, 0 background, ``ignore_index``.
        rng: draws the clicks' count and places, and the number of iterations (0..``iterations``, one per batch).
        initial: K, the most initial clicks per object (each object draws 1..K).

    Returns:
        ``(clicks float (N, 2, H, W), prev_mask float (N, 1, H, W))`` on ``images``' device.
    """
    n, _, h, w = images.shape
    truth = masks.cpu().numpy()
    gts = [t == 1 for t in truth]
    ignores = [t == ignore_index if (t == ignore_index).any() else None for t in truth]
    clicks = [initial_clicks(g, i, int(rng.integers(1, initial + 1)), rng) for g, i in zip(gts, ignores)]
    prev = images.new_zeros((n, 1, h, w))
    rounds = int(rng.integers(0, iterations + 1))
    if rounds:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for _ in range(rounds):
                with torch.autocast(images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits = model(images, _maps(clicks, (h, w), images.device), prev)
                prev = torch.sigmoid(logits.float())
                preds = (prev[:, 0] > MASK_THRESHOLD).cpu().numpy()
                for k in range(n):
                    click = next_click(preds[k], gts[k], ignores[k]) if gts[k].any() else None
                    if click is not None:
                        clicks[k] = clicks[k] + [click]
        model.train(was_training)
    return _maps(clicks, (h, w), images.device), prev


def normalized_focal_loss(logits: Tensor, target: Tensor, valid: Tensor, alpha: float = 0.5, gamma: float = 2.0,
                          eps: float = 1e-8) -> Tensor:
    """RITM's normalized focal loss (Sofiiuk et al., ICIP 2022; Sofiiuk, Barinova, Konushin, "AdaptIS", ICCV 2019):
    the focal loss ``-alpha_t (1 - p_t)^gamma log p_t`` with the focal weights ``(1 - p_t)^gamma`` of each object
    rescaled to sum to its number of valid pixels, so that the loss does not fade as the mask gets good.

    Args:
        logits: float (N, 1, H, W). target: bool or 0/1 (N, 1, H, W). valid: bool (N, 1, H, W), pixels scored.

    Returns:
        The mean over objects of each object's mean over its valid pixels (a scalar).
    """
    target = target.float()
    valid = valid.float()
    prob = torch.sigmoid(logits)
    pt = torch.where(valid > 0, 1 - (target - prob).abs(), torch.ones_like(prob))
    alpha_t = torch.where(target > 0.5, alpha * valid, (1 - alpha) * valid)
    beta = (1 - pt) ** gamma
    count = valid.sum(dim=(-1, -2), keepdim=True)
    beta = beta * (count / (beta.sum(dim=(-1, -2), keepdim=True) + eps)).detach()
    loss = -alpha_t * beta * torch.log(pt.clamp(min=eps, max=1.0))
    return (loss.sum(dim=(1, 2, 3)) / (count.flatten() + eps)).mean()


def click_loss(name: str, logits: Tensor, masks: Tensor, ignore_index: int) -> Tensor:
    """The loss ``name`` ("normalized_focal" or "bce") of logits float (N, 1, H, W) against masks int64 (N, H, W)
    (1 object, 0 background, ``ignore_index`` left out): mean over objects of each object's pixel mean.

    Raises:
        ValueError: an unknown ``name``.
    """
    target = (masks == 1).unsqueeze(1)
    valid = (masks != ignore_index).unsqueeze(1)
    if name == "normalized_focal":
        return normalized_focal_loss(logits.float(), target, valid)
    if name == "bce":
        per_pixel = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none") * valid
        return (per_pixel.sum(dim=(1, 2, 3)) / valid.sum(dim=(1, 2, 3)).clamp(min=1)).mean()
    raise ValueError(f"unknown click loss {name!r}: use 'normalized_focal' or 'bce'")


@torch.no_grad()
def run_object(model: nn.Module, image: Tensor, gt: np.ndarray, ignore: np.ndarray | None = None,
               max_clicks: int = 20, amp_dtype: torch.dtype | None = None) -> list[float]:
    """The click protocol (:func:`~pixelwise.prompt.clicks.run_clicks`) for one object: after each click the model
    runs on all clicks so far and its own last probabilities (zeros before the first click).

    Args:
        model: a click model in eval mode. image: float (C, H, W) normalised, on the model's device.
        gt: bool (H, W) the object. ignore: bool (H, W) never clicked nor scored, or None.

    Returns:
        The IoU after each click.
    """
    h, w = gt.shape
    prev = image.new_zeros((1, 1, h, w))  # the model's probabilities after the last click

    def segment(clicks: list[Click]) -> np.ndarray:
        nonlocal prev
        maps = torch.from_numpy(click_maps(clicks, (h, w), CLICK_RADIUS))[None].to(image.device)
        with torch.autocast(image.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(image[None], maps, prev)
        prev = torch.sigmoid(logits.float())
        return (prev[0, 0] > MASK_THRESHOLD).cpu().numpy()

    return run_clicks(segment, gt, max_clicks=max_clicks, ignore=ignore)


def spread_indices(count: int, limit: int | None) -> list[int]:
    """``limit`` of the indices ``0..count-1`` spread evenly over them (``floor(i * count / limit)``, in order), or all
    of them when ``limit`` is None or at least ``count``: the objects scored when a split's are capped, drawn from all
    of its images rather than the first image's.

    Raises:
        ValueError: ``limit`` < 1.
    """
    if limit is None or limit >= count:
        return list(range(count))
    if limit < 1:
        raise ValueError(f"the number of objects must be >= 1, got {limit}")
    return [i * count // limit for i in range(limit)]


@torch.no_grad()
def evaluate_clicks(model: nn.Module, dataset, device: torch.device | str = "cpu", max_clicks: int = 20,
                    max_objects: int | None = None, indices: Sequence[int] | None = None, progress: bool = False,
                    amp_dtype: torch.dtype | None = None) -> list[list[float]]:
    """The IoU after each click (:func:`run_object`) of each object of ``dataset`` (items ``(image float (C, H, W)
    normalised, mask int64 (H, W))``, :class:`pixelwise.data.objects.ObjectDataset` with
    :func:`~pixelwise.data.objects.object_eval_transforms`): ``max_objects`` objects spread evenly over the split
    (:func:`spread_indices`; None: all), or those of ``indices`` (a process's shard). The model is left in eval
    mode.

    Returns:
        One IoU list per object, in dataset order; :func:`summarize_clicks` scores them.
    """
    model.eval()
    device = torch.device(device)
    ignore_index = getattr(dataset, "ignore_index", 255)
    if indices is None:
        indices = spread_indices(len(dataset), max_objects)
    out = []
    for i in tqdm(indices, desc="clicks", leave=False, disable=not progress):
        image, mask = dataset[i]
        truth = np.asarray(mask)
        ignore = truth == ignore_index
        out.append(run_object(model, image.as_subclass(torch.Tensor).to(device), truth == 1,
                              ignore if ignore.any() else None, max_clicks, amp_dtype))
    return out


def summarize_clicks(per_object_ious: Sequence[Sequence[float]], max_clicks: int = 20) -> dict[str, Any]:
    """:func:`~pixelwise.prompt.clicks.noc_summary` at IoU 0.85 and 0.90 plus ``max_clicks``: ``NoC@85``,
    ``NoC@90`` (mean clicks to reach the IoU, lower is better), ``NoF@85``, ``NoF@90`` (objects that never reach
    it), ``mIoU@k``, ``objects``."""
    return {**noc_summary(per_object_ious, (0.85, 0.90), max_clicks), "max_clicks": int(max_clicks)}


def format_noc_table(metrics: dict[str, Any]) -> str:
    """The click protocol's scores as a two-column text table."""
    rows = [("objects", f"{metrics['objects']}"), ("max clicks", f"{metrics.get('max_clicks', 20)}")]
    for t in ("85", "90"):
        rows += [(f"NoC@{t} (lower is better)", f"{metrics[f'NoC@{t}']:.2f}"),
                 (f"NoF@{t} (never reached)", f"{metrics[f'NoF@{t}']}")]
    rows += [(key, f"{100 * value:.2f}") for key, value in metrics.items() if key.startswith("mIoU@")]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value:>8}" for name, value in rows)
