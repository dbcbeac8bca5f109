"""Semantic-segmentation metrics, accumulated over a dataset from one confusion matrix.

:class:`SegmentationMetrics` counts, for every pixel that is not void, the pair (ground-truth class, predicted
class) in a K x K int64 confusion matrix ``n`` (row ``i`` = ground truth, column ``j`` = prediction, so
``n[i, j]`` is the number of pixels of class ``i`` predicted as class ``j``). Every metric is a function of that
matrix alone, which is why the state can be streamed batch by batch, merged between workers and summed across
``torch.distributed`` ranks without approximation.

With ``t_i = sum_j n[i, j]`` (pixels of class ``i`` in the ground truth), TP_i = ``n[i, i]``,
FN_i = ``t_i - n[i, i]`` and FP_i = ``sum_j n[j, i] - n[i, i]``, the metrics are those of Long, Shelhamer and
Darrell, "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015, section 5:

* pixel accuracy            ``sum_i n[i, i] / sum_i t_i``
* mean accuracy             mean over classes of ``n[i, i] / t_i`` (per-class recall)
* mean IoU (mIoU)           mean over classes of ``TP_i / (TP_i + FP_i + FN_i)``
* frequency-weighted IoU    ``sum_i (t_i / sum_k t_k) * IoU_i``

and in addition the Dice coefficient ``2 TP_i / (2 TP_i + FP_i + FN_i)`` (identical to the per-class F1 score)
and the per-class precision ``TP_i / (TP_i + FP_i)``. All metrics are fractions in [0, 1], not percentages;
:func:`format_table` renders them as percentages.

Absent classes. The paper's means divide by the number of classes, which is undefined (0/0) for a class that
never occurs. The convention here, the one most benchmark code uses:

* a class absent from both the ground truth and the prediction (TP + FP + FN == 0) has IoU and Dice NaN and is
  left out of mIoU and mean Dice;
* a class absent from the ground truth but predicted somewhere has IoU 0 and Dice 0, and does count in the
  means: predicting a class that is not there is an error;
* per-class accuracy (recall) is NaN for a class with no ground-truth pixels, predicted or not, and is left out
  of mean accuracy. (torchmetrics' ``MulticlassAccuracy(average="macro")`` differs here: it counts a class that
  is predicted but absent from the target as accuracy 0.)
"""

from __future__ import annotations

import math
from typing import Any

import torch

from pixelwise.errors import ConfigError, DatasetError

__all__ = ["DepthMetrics", "NormalMetrics", "SegmentationMetrics", "format_table", "json_safe"]


_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


class SegmentationMetrics:
    """Streaming semantic-segmentation metrics over ``num_classes`` classes, with void pixels skipped.

    Call :meth:`update` once per batch, then :meth:`compute` once at the end (after :meth:`all_reduce` when
    evaluating under ``torch.distributed``). The state is the confusion matrix only.

    Args:
        num_classes: number of classes K (>= 1). Class indices are 0 .. K-1.
        ignore_index: target value marking void pixels, which are not counted at all (neither as ground truth nor
            as prediction). ``None`` counts every pixel. It may lie inside [0, K); that class then never has
            ground-truth pixels.
        device: device the confusion matrix starts on. It follows the predictions' device on the first
            :meth:`update`, so passing it is only needed to control where :meth:`all_reduce` runs before any
            update.

    Attributes:
        confusion_matrix: int64 tensor of shape (K, K); ``confusion_matrix[i, j]`` is the number of counted pixels
            whose ground truth is class ``i`` and whose prediction is class ``j``.

    Absent-class convention: a class absent from both target and prediction has IoU, Dice and precision NaN and
    is excluded from the means; a class absent from the target but predicted has IoU 0 and Dice 0 and counts
    against the means; per-class accuracy is NaN for a class without target pixels and is excluded from mean
    accuracy.

    Raises:
        ValueError: (``pixelwise.errors.ConfigError``) if ``num_classes`` < 1.
    """

    def __init__(
        self, num_classes: int, ignore_index: int | None = 255, device: torch.device | str | None = None
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion_matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        """Set every count back to zero, keeping the matrix's device."""
        self.confusion_matrix.zero_()

    @torch.no_grad()
    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch to the confusion matrix.

        Args:
            preds: either class indices, an integer tensor with the same shape as ``target`` (typically
                (N, H, W)), or raw scores, a floating-point tensor of shape (N, K, H, W) (more generally
                ``target.shape`` with K inserted at dim 1), reduced with ``argmax`` over dim 1. Logits,
                probabilities or log-probabilities give the same argmax.
            target: integer tensor (uint8, int32, int64, ...) of ground-truth class indices, typically
                (N, H, W); any shape is accepted as long as ``preds`` matches it. Values must be in [0, K) or
                equal to ``ignore_index``. Must be on the same device as ``preds``.

        Raises:
            ValueError: if the shapes do not match (the message gives both), if ``target`` is not an integer
                tensor, if the tensors are on different devices, if a class-index ``preds`` is floating point,
                or if a logits ``preds`` does not have K channels.
            ValueError: (``pixelwise.errors.DatasetError``) if ``target`` holds a value outside [0, K) that is
                not ``ignore_index``; the message names the values and K.
            ValueError: if a prediction at a counted (non-void) pixel is outside [0, K). Predictions at void
                pixels are not looked at.
        """
        if not isinstance(preds, torch.Tensor) or not isinstance(target, torch.Tensor):
            raise ValueError(
                f"preds and target must be torch tensors, got {type(preds).__name__} and {type(target).__name__}"
            )
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise ValueError(f"target must be an integer tensor of class indices, got dtype {target.dtype}")
        if preds.device != target.device:
            raise ValueError(f"preds is on {preds.device} but target is on {target.device}; put both on one device")

        if preds.is_floating_point():
            if preds.dim() != target.dim() + 1 or preds.dim() < 2:
                raise ValueError(
                    f"floating-point preds are taken as scores of shape (N, K, ...) matching target (N, ...); got "
                    f"preds of shape {tuple(preds.shape)} and target of shape {tuple(target.shape)}. "
                    f"Pass class indices as an integer tensor."
                )
            if preds.shape[1] != self.num_classes:
                raise ValueError(
                    f"preds has {preds.shape[1]} channels at dim 1 but num_classes is {self.num_classes} "
                    f"(preds shape {tuple(preds.shape)})"
                )
            preds = preds.argmax(dim=1)
        elif preds.is_complex() or preds.dtype == torch.bool:
            raise ValueError(f"preds must be integer class indices or floating-point scores, got dtype {preds.dtype}")

        if preds.shape != target.shape:
            raise ValueError(
                f"preds and target shapes differ: preds {tuple(preds.shape)} vs target {tuple(target.shape)}"
            )

        target = target.reshape(-1)
        preds = preds.reshape(-1)
        k = self.num_classes
        if target.numel() == 0:
            return
        ignore = self.ignore_index
        if k * k >= _INT32_MAX or (ignore is not None and not _INT32_MIN <= ignore <= _INT32_MAX):
            counts = self._counts_int64(preds, target)
        else:
            # int32 arithmetic and one bincount over the whole tensor, void pixels sent to an extra bin: no boolean
            # compaction and half the memory traffic of int64 (about 4x faster than indexing out the void pixels).
            t, p = target.to(torch.int32), preds.to(torch.int32)
            if t.data_ptr() == target.data_ptr():
                t = t.clone()  # the in-place ops below must not write into the caller's tensor
            if p.data_ptr() == preds.data_ptr():
                p = p.clone()
            void = t == ignore if ignore is not None else None
            if void is not None:
                t.masked_fill_(void, 0)
                p.masked_fill_(void, 0)
            # One host sync for every range check: the extremes of the raw tensors (does the int32 cast keep
            # them?) and of the counted pixels (are they in [0, K)?).
            extremes = torch.cat([
                torch.stack([*torch.aminmax(target), *torch.aminmax(preds)]).long(),
                torch.stack([*torch.aminmax(t), *torch.aminmax(p)]).long(),
            ]).tolist()
            fits = all(_INT32_MIN <= v <= _INT32_MAX for v in extremes[:4])
            t_lo, t_hi, p_lo, p_hi = extremes[4:]
            if not fits or t_lo < 0 or t_hi >= k or p_lo < 0 or p_hi >= k:
                counts = self._counts_int64(preds, target)  # exact for any int64 values; raises naming bad ones
            else:
                index = t.mul_(k).add_(p)
                if void is not None:
                    index.masked_fill_(void, k * k)
                counts = torch.bincount(index, minlength=k * k + 1)[: k * k].reshape(k, k)
        if self.confusion_matrix.device != counts.device:
            self.confusion_matrix = self.confusion_matrix.to(counts.device)
        self.confusion_matrix += counts

    def _counts_int64(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The confusion matrix of flat ``preds`` and ``target`` in int64, with the range checks that name bad
        values. The path for values beyond int32 and for errors."""
        # int64 before any arithmetic: uint8 masks would wrap around in target * K.
        target = target.long()
        preds = preds.long()
        k = self.num_classes

        if self.ignore_index is not None:
            valid = target != self.ignore_index
            target = target[valid]
            preds = preds[valid]

        # Checked with one reduction each rather than per value: the error path may be slow, the common path
        # must not be (on CUDA each check is a host sync).
        bad_target = (target < 0) | (target >= k)
        if bool(bad_target.any()):
            values = torch.unique(target[bad_target]).tolist()
            shown = ", ".join(str(v) for v in values[:10]) + (", ..." if len(values) > 10 else "")
            void = f" and not ignore_index={self.ignore_index}" if self.ignore_index is not None else ""
            raise DatasetError(
                f"target contains value(s) {shown}, which are outside [0, {k}) for num_classes={k}{void}. "
                f"Check the mask encoding (palette or RGB masks must be mapped to class indices) or set "
                f"num_classes / ignore_index to match the dataset."
            )
        bad_pred = (preds < 0) | (preds >= k)
        if bool(bad_pred.any()):
            values = torch.unique(preds[bad_pred]).tolist()
            shown = ", ".join(str(v) for v in values[:10]) + (", ..." if len(values) > 10 else "")
            raise ValueError(f"preds contains value(s) {shown}, outside [0, {k}) for num_classes={k}")

        return torch.bincount(target * k + preds, minlength=k * k).reshape(k, k)

    def merge(self, other: SegmentationMetrics) -> None:
        """Add another accumulator's counts to this one (e.g. from a data-loader worker or another shard).

        Raises:
            ValueError: if ``other`` has a different ``num_classes`` or ``ignore_index``.
        """
        if other.num_classes != self.num_classes or other.ignore_index != self.ignore_index:
            raise ValueError(
                f"cannot merge metrics with num_classes={other.num_classes}, ignore_index={other.ignore_index} "
                f"into metrics with num_classes={self.num_classes}, ignore_index={self.ignore_index}"
            )
        self.confusion_matrix += other.confusion_matrix.to(self.confusion_matrix.device)

    def all_reduce(self) -> None:
        """Sum the confusion matrix over all ``torch.distributed`` ranks, in place; a no-op when not distributed.

        Every rank must call it (it is a collective). Call it once, right before :meth:`compute`: a second call
        would add the already-summed counts again.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        cm = self.confusion_matrix
        # NCCL only reduces CUDA tensors; a rank that saw no batch still holds its matrix on the CPU.
        if dist.get_backend() == "nccl" and cm.device.type != "cuda":
            on_gpu = cm.to(torch.device("cuda", torch.cuda.current_device()))
            dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
            cm.copy_(on_gpu)
        else:
            dist.all_reduce(cm, op=dist.ReduceOp.SUM)

    def compute(self) -> dict[str, Any]:
        """Return the metrics of everything counted so far.

        All values are plain Python objects (JSON-serialisable except for NaN). Scores are fractions in [0, 1].

        Returns:
            dict with keys

            * ``pixel_accuracy`` (float): correctly predicted pixels / counted pixels; NaN if none was counted.
            * ``mean_accuracy`` (float): mean of ``accuracy`` over classes where it is defined.
            * ``accuracy`` (list of K floats): per-class recall TP / (TP + FN); NaN for a class with no target
              pixels.
            * ``IoU`` (list of K floats): TP / (TP + FP + FN); NaN for a class absent from both target and
              prediction, 0 for a class predicted but absent from the target.
            * ``mIoU`` (float): mean of ``IoU`` over classes where it is defined.
            * ``fwIoU`` (float): sum over classes of (target pixels of the class / counted pixels) x IoU; NaN if
              no pixel was counted.
            * ``Dice`` (list of K floats): 2 TP / (2 TP + FP + FN), the per-class F1 score; NaN where IoU is.
            * ``dice`` (float): mean of ``Dice`` over classes where it is defined.
            * ``precision`` (list of K floats): TP / (TP + FP); NaN for a class never predicted.
            * ``num_pixels`` (int): number of counted (non-void) pixels.
            * ``confusion_matrix`` (list of K lists of K ints): rows ground truth, columns prediction.

            A mean over no defined class is NaN.
        """
        cm = self.confusion_matrix.detach().to("cpu", torch.float64)
        tp = cm.diagonal()
        gt = cm.sum(dim=1)  # TP + FN
        pred = cm.sum(dim=0)  # TP + FP
        union = gt + pred - tp  # TP + FP + FN
        total = cm.sum()

        def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
            return torch.where(den > 0, num / den.clamp(min=1), torch.full_like(num, math.nan))

        iou = ratio(tp, union)
        acc = ratio(tp, gt)
        dice = ratio(2 * tp, gt + pred)
        precision = ratio(tp, pred)

        if total > 0:
            pixel_accuracy = float(tp.sum() / total)
            # A class with undefined IoU has no target pixels, so its weight is 0 anyway.
            fw_iou = float((gt * iou.nan_to_num(0.0)).sum() / total)  # one division: exactly 1 when perfect
        else:
            pixel_accuracy = fw_iou = math.nan

        return {
            "pixel_accuracy": pixel_accuracy,
            "mean_accuracy": _nanmean(acc),
            "accuracy": acc.tolist(),
            "IoU": iou.tolist(),
            "mIoU": _nanmean(iou),
            "fwIoU": fw_iou,
            "Dice": dice.tolist(),
            "dice": _nanmean(dice),
            "precision": precision.tolist(),
            "num_pixels": int(self.confusion_matrix.sum().item()),
            "confusion_matrix": self.confusion_matrix.cpu().tolist(),
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"device={self.confusion_matrix.device})"
        )


def json_safe(x: Any) -> Any:
    """``x`` (nested dicts, lists, tuples) with every float NaN replaced by None, for JSON (which has no NaN)."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def _nanmean(x: torch.Tensor) -> float:
    defined = x[~x.isnan()]
    return float(defined.mean()) if defined.numel() else math.nan


def _pct(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{100.0 * value:.2f}"


def format_table(results: dict[str, Any], class_names: list[str] | None = None) -> str:
    """Render the output of :meth:`SegmentationMetrics.compute` as a Markdown table, readable as plain text.

    One row per class (name, IoU %, accuracy %), then the summary lines mIoU, pixel accuracy, mean accuracy,
    fwIoU and mean Dice. Values are percentages with two decimals; an undefined value (NaN) is shown as ``-``.

    Args:
        results: dict returned by :meth:`SegmentationMetrics.compute`.
        class_names: one name per class; class indices are used when omitted.

    Raises:
        ValueError: if ``class_names`` does not have one name per class.
    """
    iou = results["IoU"]
    acc = results["accuracy"]
    if class_names is None:
        class_names = [str(i) for i in range(len(iou))]
    elif len(class_names) != len(iou):
        raise ValueError(f"got {len(class_names)} class names for {len(iou)} classes")

    name_width = max([len("class"), *(len(str(n)) for n in class_names)])
    rows = [
        f"| {'class':<{name_width}} | {'IoU %':>7} | {'acc %':>7} |",
        f"|{'-' * (name_width + 2)}|{'-' * 8}:|{'-' * 8}:|",
    ]
    for name, class_iou, class_acc in zip(class_names, iou, acc):
        rows.append(f"| {str(name):<{name_width}} | {_pct(class_iou):>7} | {_pct(class_acc):>7} |")

    summary = [
        ("mIoU", results["mIoU"]),
        ("pixel accuracy", results["pixel_accuracy"]),
        ("mean accuracy", results["mean_accuracy"]),
        ("fwIoU", results["fwIoU"]),
        ("mean Dice", results["dice"]),
    ]
    label_width = max(len(label) for label, _ in summary)
    rows.append("")
    for label, value in summary:
        text = _pct(value)
        rows.append(f"{label + ':':<{label_width + 1}} {text:>6}{'' if text == '-' else ' %'}")
    return "\n".join(rows)


from pixelwise.depth.metrics import DepthMetrics, NormalMetrics  # noqa: E402
