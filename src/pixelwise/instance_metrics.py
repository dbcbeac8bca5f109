"""COCO box and mask average precision for instance segmentation (Mask R-CNN's outputs), through pycocotools.

The metric is COCO's detection evaluation (Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014;
https://cocodataset.org/#detection-eval), computed by the reference implementation, pycocotools' ``COCOeval``,
for ``iouType`` ``"bbox"`` (box AP) and ``"segm"`` (mask AP). Nothing of the matching or of the interpolation is
re-implemented here; this module only converts the model's outputs into COCO's results format, feeds them with the
ground truth to ``COCOeval`` and reads its arrays back. In brief, what ``COCOeval`` computes:

* per image and category, detections sorted by score (the ``max_detections`` best per image) are matched greedily
  to the unmatched ground-truth object of highest IoU, if that IoU reaches the threshold; crowd objects
  (``iscrowd=1``) and objects outside the area range are "ignored": matching one costs nothing and gains nothing;
* per category, IoU threshold ``t`` in 0.50:0.05:0.95 and area range, the precision / recall curve of the
  detections of all images pooled by score is made monotone (precision at recall r = the best precision at any
  recall >= r) and read at the 101 recalls 0, 0.01, ..., 1 (0 past the highest recall reached); AP is the mean of
  these 101 values, the "101-point interpolated AP";
* AP is that averaged over the 10 IoU thresholds and over the categories with ground truth (AP50 and AP75: one
  threshold); APs / APm / APl: objects of area < 32², 32²..96², > 96² pixels (the mask area for both box and mask
  AP, as COCO's annotations give it); AR{n}: recall at n detections per image, averaged over thresholds and
  categories.

The conversion is that of torchvision's detection reference (``references/detection/coco_eval.py``): boxes go from
(x1, y1, x2, y2) to COCO's [x, y, w, h], masks are thresholded at 0.5 (``prob > 0.5``) and run-length encoded with
``pycocotools.mask.encode``. One difference, as in detectron2's COCO evaluator: the mask results carry no ``bbox``
field, because ``COCO.loadRes`` would then take the box area as the detection's area, and APs/APm/APl of masks would
size detections by their boxes.

Categories: the model predicts labels 1..K (0 is the background, never output); label ``k`` is the COCO category
``category_ids[k - 1]`` of the dataset, whose ids need not be contiguous. The evaluation covers exactly the
categories of ``category_ids``.

pycocotools is an optional dependency: ``pip install 'pixelwise[instance]'``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import re
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from pixelwise.errors import ConfigError

__all__ = ["InstanceMetrics", "format_instance_table", "to_coco_results"]

IOU_TYPES = ("bbox", "segm")
_AREAS = (("s", "small"), ("m", "medium"), ("l", "large"))


def _pycocotools() -> tuple[Any, Any, Any]:
    """``(pycocotools.mask, COCO, COCOeval)``, imported on first use.

    Raises:
        ValueError: (``pixelwise.errors.ConfigError``) if pycocotools is not installed; the message names the fix.
    """
    try:
        from pycocotools import mask as mask_utils
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as e:
        raise ConfigError(
            f"COCO box and mask AP need pycocotools ({e}): pip install 'pixelwise[instance]' "
            f"(or pip install pycocotools)"
        ) from e
    return mask_utils, COCO, COCOeval


def to_coco_results(
    output: dict[str, torch.Tensor], image_id: int, category_ids: Sequence[int], mask_threshold: float = 0.5
) -> list[dict[str, Any]]:
    """One image's Mask R-CNN output as entries of COCO's results format (what ``COCO.loadRes`` reads).

    As torchvision's detection reference (``references/detection/coco_eval.py``, ``prepare_for_coco_detection`` and
    ``prepare_for_coco_segmentation``) builds them, except that the category id is mapped back to the dataset's.

    Args:
        output: the model's prediction for one image (tensors on any device):

            * ``boxes``: float (R, 4), (x1, y1, x2, y2) in pixels of the original image;
            * ``labels``: integer (R,), in 1..K where K = ``len(category_ids)``;
            * ``scores``: float (R,);
            * ``masks`` (optional): float (R, 1, H, W) or (R, H, W), per-pixel probabilities at the original image
              size (bool masks too). Without it the entries have no ``segmentation`` (box AP only).
        image_id: the COCO id of the image.
        category_ids: the COCO category id of each label: label ``k`` is ``category_ids[k - 1]``.
        mask_threshold: a pixel is in the instance where its probability is > this.

    Returns:
        R dicts (in the output's order) with ``image_id`` (int), ``category_id`` (int), ``bbox`` (4 floats,
        [x, y, w, h] in pixels), ``score`` (float) and, with masks, ``segmentation``: compressed RLE
        ``{"size": [H, W], "counts": str}`` (``counts`` decoded from bytes, so the entries are JSON-serialisable).

    Raises:
        ValueError: if a key is missing, the shapes disagree (the message gives them), or a label is outside 1..K.
        ValueError: (``pixelwise.errors.ConfigError``) if pycocotools is not installed and there are masks.
    """
    for key in ("boxes", "labels", "scores"):
        if key not in output:
            raise ValueError(f"a detection output needs {key!r}; it has {sorted(output)}")
    boxes = output["boxes"].detach().to("cpu", torch.float64)
    labels = output["labels"].detach().cpu()
    scores = output["scores"].detach().cpu()
    n = labels.shape[0] if labels.dim() == 1 else -1
    if boxes.shape != (n, 4) or labels.dim() != 1 or scores.shape != (n,):
        raise ValueError(
            f"expected boxes (R, 4), labels (R,), scores (R,); got boxes {tuple(boxes.shape)}, labels "
            f"{tuple(labels.shape)}, scores {tuple(scores.shape)}"
        )
    if labels.is_floating_point():
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    k = len(category_ids)
    label_list = labels.tolist()
    bad = sorted({lab for lab in label_list if not 1 <= lab <= k})
    if bad:
        raise ValueError(
            f"labels {bad[:10]} are outside 1..{k} (label k is category_ids[k - 1], 0 is the background) for "
            f"{k} category ids"
        )
    x1, y1, x2, y2 = boxes.unbind(1)
    xywh = torch.stack((x1, y1, x2 - x1, y2 - y1), dim=1).tolist()
    score_list = scores.double().tolist()
    image_id = int(image_id)
    results = [
        {"image_id": image_id, "category_id": int(category_ids[lab - 1]), "bbox": box, "score": score}
        for lab, box, score in zip(label_list, xywh, score_list)
    ]

    masks = output.get("masks")
    if masks is not None:
        masks = masks.detach().cpu()
        if masks.dim() == 4 and masks.shape[1] == 1:
            masks = masks[:, 0]
        if masks.dim() != 3 or masks.shape[0] != n:
            raise ValueError(
                f"expected masks (R, 1, H, W) or (R, H, W) with R = {n}, got {tuple(output['masks'].shape)}"
            )
        if n:
            mask_utils = _pycocotools()[0]
            binary = (masks > mask_threshold).permute(1, 2, 0).numpy().astype(np.uint8)  # (H, W, R)
            rles = mask_utils.encode(np.asfortranarray(binary))  # Fortran order: each [:, :, r] column-major
            for entry, rle in zip(results, rles):
                entry["segmentation"] = {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
    return results


class InstanceMetrics:
    """Streaming COCO box AP and mask AP of an instance-segmentation model over a dataset.

    Call :meth:`update` once per batch with the model's outputs and the batch's COCO image ids, then
    :meth:`compute` once at the end. The state is the COCO results of the images seen, so it can be large (one RLE
    per detection); it is what ``COCOeval`` needs.

    Under ``torch.distributed`` each rank updates with its own shard and every rank calls :meth:`compute` (a
    collective: the results are gathered with ``all_gather_object`` first), which returns the metrics of all
    shards on every rank. An image seen twice (``DistributedSampler`` pads the last shard by repeating images)
    counts once, with its first results, as torchvision's reference evaluator does.

    Args:
        ground_truth: the dataset's annotations as a dict in COCO's instances format: ``images`` (``id``,
            ``height``, ``width``), ``annotations`` (``image_id``, ``category_id``, ``bbox``, ``segmentation`` as
            polygons or RLE, ``area``, ``iscrowd``; ``iscrowd`` defaults to 0 and ``area`` to the segmentation's
            when missing) and ``categories`` (with the original ids). Not modified (pycocotools is given copies).
        category_ids: the COCO category id of each model label: label ``k`` (1..K) is ``category_ids[k - 1]``.
            The evaluation covers exactly these categories.
        class_names: one name per label, in the same order, for ``per_class``.
        max_detections: the most detections per image that count (the best scoring), COCO's protocol's 100 by
            default; ``COCOeval``'s ``params.maxDets`` becomes [1, 10, max_detections].
        mask_threshold: a mask pixel is in the instance where its probability is > this (0.5, as torchvision).
        iou_types: which of ``"bbox"`` and ``"segm"`` to evaluate; ``("bbox",)`` for outputs without masks.

    Raises:
        ValueError: (``pixelwise.errors.ConfigError``) if the names and ids differ in number, the ids repeat or are
            not categories of ``ground_truth``, ``max_detections`` < 1, an iou type is unknown, or pycocotools is
            missing.
        ValueError: if ``ground_truth`` lacks ``images``, ``annotations`` or ``categories``.
    """

    def __init__(
        self,
        ground_truth: dict[str, Any],
        category_ids: Sequence[int],
        class_names: Sequence[str],
        max_detections: int = 100,
        mask_threshold: float = 0.5,
        iou_types: Iterable[str] = IOU_TYPES,
    ) -> None:
        _pycocotools()  # fail at construction, not after a whole evaluation pass
        for key in ("images", "annotations", "categories"):
            if key not in ground_truth:
                raise ValueError(f"the ground truth is not in COCO's instances format: it has no {key!r}")
        category_ids = [int(c) for c in category_ids]
        class_names = [str(name) for name in class_names]
        if len(class_names) != len(category_ids):
            raise ConfigError(f"got {len(class_names)} class names for {len(category_ids)} category ids")
        if not category_ids:
            raise ConfigError("category_ids is empty: there is no class to evaluate")
        if len(set(category_ids)) != len(category_ids):
            raise ConfigError(f"category_ids repeat an id: {category_ids}")
        known = {int(c["id"]) for c in ground_truth["categories"]}
        unknown = [c for c in category_ids if c not in known]
        if unknown:
            raise ConfigError(f"category ids {unknown} are not categories of the ground truth (it has {sorted(known)})")
        if isinstance(max_detections, bool) or not isinstance(max_detections, int) or max_detections < 1:
            raise ConfigError(f"max_detections must be an integer >= 1, got {max_detections!r}")
        iou_types = tuple(iou_types)
        if not iou_types or any(t not in IOU_TYPES for t in iou_types):
            raise ConfigError(f"iou_types must be some of {IOU_TYPES}, got {iou_types}")

        self.ground_truth = ground_truth
        self.category_ids = category_ids
        self.class_names = class_names
        self.max_detections = max_detections
        self.mask_threshold = mask_threshold
        self.iou_types = iou_types
        self._image_sizes = {int(im["id"]): (int(im["height"]), int(im["width"])) for im in ground_truth["images"]}
        self._results: dict[int, list[dict[str, Any]]] = {}  # image id -> its results, in the order first seen

    @property
    def max_dets(self) -> list[int]:
        """``COCOeval``'s ``params.maxDets``: [1, 10, max_detections] (sorted and unique, as ``COCOeval`` sorts)."""
        return sorted({1, 10, self.max_detections})

    def reset(self) -> None:
        """Forget every result."""
        self._results.clear()

    def update(self, outputs: Sequence[dict[str, torch.Tensor]], image_ids: Sequence[int]) -> None:
        """Add one batch: the model's outputs (eval mode, one dict per image) and the images' COCO ids.

        Args:
            outputs: per image, the dict of :func:`to_coco_results` (``boxes`` (R, 4) xyxy, ``labels`` (R,) in
                1..K, ``scores`` (R,), ``masks`` (R, 1, H, W) probabilities at the image's size).
            image_ids: the COCO id of each image, as in ``ground_truth["images"]``.

        An image id already seen keeps its first results (see the class docstring).

        Raises:
            ValueError: if the lengths differ, an image id is not in the ground truth, a mask's size is not the
                image's (the message gives both), masks are missing while ``"segm"`` is evaluated, or an output is
                malformed (see :func:`to_coco_results`).
        """
        if len(outputs) != len(image_ids):
            raise ValueError(f"got {len(outputs)} outputs for {len(image_ids)} image ids")
        for output, image_id in zip(outputs, image_ids):
            image_id = int(image_id)
            if image_id not in self._image_sizes:
                raise ValueError(f"image id {image_id} is not an image of the ground truth")
            if image_id in self._results:
                continue
            masks = output.get("masks")
            if "segm" in self.iou_types:
                if masks is None:
                    raise ValueError(
                        f"the output of image {image_id} has no 'masks' but mask AP ('segm') is evaluated; pass "
                        f"iou_types=('bbox',) for box AP alone"
                    )
                if tuple(masks.shape[-2:]) != self._image_sizes[image_id]:
                    raise ValueError(
                        f"the masks of image {image_id} are {tuple(masks.shape[-2:])} (H, W) but the image is "
                        f"{self._image_sizes[image_id]}: masks must be at the original image size"
                    )
            elif masks is not None:
                output = {k: v for k, v in output.items() if k != "masks"}  # no RLE encoding for nothing
            self._results[image_id] = to_coco_results(output, image_id, self.category_ids, self.mask_threshold)

    @property
    def image_ids(self) -> list[int]:
        """The COCO ids of the images seen by this process, in the order first seen."""
        return list(self._results)

    @property
    def results(self) -> list[dict[str, Any]]:
        """Every COCO result of this process so far (the entries of :func:`to_coco_results`), image by image.

        JSON-serialisable: ``json.dump(metrics.results, f)`` writes a results file for the COCO evaluation server
        or ``COCO.loadRes``.
        """
        return [entry for entries in self._results.values() for entry in entries]

    def _gathered(self) -> dict[int, list[dict[str, Any]]]:
        """The results of every rank (this process's alone when not distributed), the first copy of each image."""
        import torch.distributed as dist

        local = list(self._results.items())
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, local)
        else:
            parts = [local]
        merged: dict[int, list[dict[str, Any]]] = {}
        for part in parts:
            for image_id, entries in part:
                merged.setdefault(int(image_id), entries)
        return merged

    def compute(self) -> dict[str, Any]:
        """COCO box and mask AP of every image seen (on all ranks), by pycocotools' ``COCOeval``.

        Only the images seen count (``params.imgIds``), so a partial pass over a dataset is scored on its images.
        ``COCOeval``'s printing is silenced; its summary table is in ``summary``.

        Returns:
            dict of plain Python values, fractions in [0, 1] (NaN where COCO reports -1: nothing to measure, e.g.
            APs when there is no small object), with, for each evaluated type ``t`` in ``bbox``, ``segm``:

            * ``t_AP``: AP averaged over IoU 0.50:0.05:0.95 and the categories, at ``max_detections`` per image;
            * ``t_AP50``, ``t_AP75``: AP at IoU 0.5 and 0.75;
            * ``t_APs``, ``t_APm``, ``t_APl``: AP of small (< 32² pixels), medium and large (> 96²) objects;
            * ``t_AR1``, ``t_AR10``, ``t_AR{max_detections}`` (``t_AR100`` by default): recall at that many
              detections per image, averaged over IoU 0.50:0.05:0.95 and the categories;
            * ``t_ARs``, ``t_ARm``, ``t_ARl``: AR at ``max_detections`` by object size;

            and ``per_class``: {class name: {"bbox_AP", "segm_AP"}}, each class's AP (its precision array averaged
            over IoU thresholds and recalls, -1 entries left out), NaN for a class without ground truth in the
            images seen; ``summary``: ``COCOeval.summarize()``'s table for each type, as text (with the correct
            maxDets; pycocotools' own hard-codes 100 in its first line); ``num_images``; ``num_detections``.

            With images but no detection at all, every AP and AR is 0 (NaN for an area range with no object), the
            evaluation of an empty result set (pycocotools' ``loadRes`` fails on one; it is not called). With no
            image seen, every value is NaN.

        Raises:
            ValueError: (``pixelwise.errors.ConfigError``) if pycocotools is missing.
        """
        per_image = self._gathered()
        image_ids = sorted(per_image)
        detections = [entry for image_id in image_ids for entry in per_image[image_id]]
        metrics: dict[str, Any] = {}
        per_class: dict[str, dict[str, float]] = {name: {} for name in self.class_names}
        summaries = []
        for iou_type in self.iou_types:
            if image_ids:
                coco_eval = self._evaluate(iou_type, image_ids, detections)
                stats, lines = _stats(coco_eval, self.max_detections)
                precision = coco_eval.eval["precision"]  # (T, R, K, A, M), K in params.catIds order (sorted ids)
                area = coco_eval.params.areaRngLbl.index("all")
                m = coco_eval.params.maxDets.index(self.max_detections)
                cat_index = {c: i for i, c in enumerate(coco_eval.params.catIds)}
                class_ap = [_mean_defined(precision[:, :, cat_index[c], area, m]) for c in self.category_ids]
                summaries.append(f"IoU metric: {iou_type}\n" + "\n".join(lines))
            else:
                stats = {key: math.nan for key in _stat_names(self.max_dets)}
                class_ap = [math.nan] * len(self.category_ids)
            metrics.update({f"{iou_type}_{key}": value for key, value in stats.items()})
            for name, ap in zip(self.class_names, class_ap):
                per_class[name][f"{iou_type}_AP"] = ap
        metrics["per_class"] = per_class
        metrics["summary"] = "\n\n".join(summaries)
        metrics["num_images"] = len(image_ids)
        metrics["num_detections"] = len(detections)
        return metrics

    def _evaluate(self, iou_type: str, image_ids: list[int], detections: list[dict[str, Any]]) -> Any:
        """``COCOeval`` of ``iou_type`` after ``evaluate()`` and ``accumulate()``, stdout silenced."""
        mask_utils, COCO, COCOeval = _pycocotools()
        with contextlib.redirect_stdout(io.StringIO()):
            # COCOeval writes into both datasets (polygons to RLE, "ignore" flags; loadRes adds ids and areas).
            gt = COCO()
            gt.dataset = copy.deepcopy(self.ground_truth)
            gt.createIndex()
            for ann in gt.dataset["annotations"]:
                ann.setdefault("iscrowd", 0)
                if "area" not in ann:
                    ann["area"] = float(mask_utils.area(gt.annToRLE(ann)))
            drop = "bbox" if iou_type == "segm" else "segmentation"
            dets = [{k: copy.deepcopy(v) for k, v in d.items() if k != drop} for d in detections]
            if dets:
                dt = gt.loadRes(dets)
            else:  # loadRes reads anns[0]: an empty result set is built by hand
                dt = COCO()
                dt.dataset = {"images": list(gt.dataset["images"]), "annotations": [],
                              "categories": copy.deepcopy(gt.dataset["categories"])}
                dt.createIndex()
            coco_eval = COCOeval(gt, dt, iouType=iou_type)
            coco_eval.params.imgIds = list(image_ids)
            coco_eval.params.catIds = sorted(self.category_ids)
            coco_eval.params.maxDets = self.max_dets
            coco_eval.evaluate()
            coco_eval.accumulate()
        return coco_eval

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(classes={len(self.category_ids)}, iou_types={self.iou_types}, "
            f"max_detections={self.max_detections}, images={len(self._results)})"
        )


def _mean_defined(values: np.ndarray) -> float:
    """Mean of the entries > -1 (COCO's -1 marks "undefined"); NaN when there is none."""
    defined = values[values > -1]
    return float(np.mean(defined)) if defined.size else math.nan


def _stat_names(max_dets: list[int]) -> list[str]:
    return (["AP", "AP50", "AP75"] + [f"AP{s}" for s, _ in _AREAS] + [f"AR{m}" for m in max_dets]
            + [f"AR{s}" for s, _ in _AREAS])


def _stats(coco_eval: Any, max_detections: int) -> tuple[dict[str, float], list[str]]:
    """The headline numbers of an accumulated ``COCOeval`` and the lines ``summarize()`` prints for them.

    ``COCOeval.summarize`` (``_summarizeDets``) computes the same means, but its first line asks for maxDets=100
    whatever ``params.maxDets`` is (-1 for any other ``max_detections``); this reads the arrays at
    ``max_detections`` throughout and prints in its format (-1.000 where undefined).
    """
    p = coco_eval.params
    precision, recall = coco_eval.eval["precision"], coco_eval.eval["recall"]  # (T,R,K,A,M), (T,K,A,M)

    def one(ap: bool, iou: float | None, area: str, max_det: int) -> tuple[float, str]:
        a = p.areaRngLbl.index(area)
        m = p.maxDets.index(max_det)
        t = slice(None) if iou is None else np.flatnonzero(np.isclose(p.iouThrs, iou))
        values = precision[t, :, :, a, m] if ap else recall[t, :, a, m]
        value = _mean_defined(values)
        iou_text = f"{p.iouThrs[0]:0.2f}:{p.iouThrs[-1]:0.2f}" if iou is None else f"{iou:0.2f}"
        title, kind = ("Average Precision", "(AP)") if ap else ("Average Recall", "(AR)")
        line = (f" {title:<18} {kind} @[ IoU={iou_text:<9} | area={area:>6s} | maxDets={max_det:>3d} ] = "
                f"{-1.0 if math.isnan(value) else value:0.3f}")
        return value, line

    spec = [("AP", True, None, "all", max_detections), ("AP50", True, 0.5, "all", max_detections),
            ("AP75", True, 0.75, "all", max_detections)]
    spec += [(f"AP{s}", True, None, area, max_detections) for s, area in _AREAS]
    spec += [(f"AR{m}", False, None, "all", m) for m in p.maxDets]
    spec += [(f"AR{s}", False, None, area, max_detections) for s, area in _AREAS]
    stats, lines = {}, []
    for name, ap, iou, area, max_det in spec:
        stats[name], line = one(ap, iou, area, max_det)
        lines.append(line)
    return stats, lines


def _pct(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100.0 * value:.2f}"


def format_instance_table(metrics: dict[str, Any]) -> str:
    """Render :meth:`InstanceMetrics.compute`'s output as a Markdown table, readable as plain text.

    A table of the headline numbers (rows AP, AP50, AP75, APs, APm, APl, AR{max}; one column per evaluated type,
    mask first), then one row per class with its mask and box AP. Percentages with two decimals; an undefined
    value (NaN, or None after :func:`pixelwise.metrics.json_safe`) is shown as ``-``.

    Args:
        metrics: dict returned by :meth:`InstanceMetrics.compute`.

    Raises:
        ValueError: if ``metrics`` holds neither box nor mask AP.
    """
    types = [t for t in ("segm", "bbox") if f"{t}_AP" in metrics]
    if not types:
        raise ValueError("metrics has no 'segm_AP' or 'bbox_AP': pass the dict of InstanceMetrics.compute()")
    titles = {"segm": "mask %", "bbox": "box %"}
    at = [int(m.group(1)) for k in metrics if (m := re.fullmatch(rf"{types[0]}_AR(\d+)", k))]
    rows_keys = ["AP", "AP50", "AP75", "APs", "APm", "APl"] + ([f"AR{max(at)}"] if at else [])

    def table(first: str, labels: list[str], cells: list[list[str]]) -> list[str]:
        width = max([len(first), *(len(label) for label in labels)])
        out = [f"| {first:<{width}} | " + " | ".join(f"{titles[t]:>7}" for t in types) + " |",
               f"|{'-' * (width + 2)}|" + "|".join(f"{'-' * 8}:" for _ in types) + "|"]
        for label, row in zip(labels, cells):
            out.append(f"| {label:<{width}} | " + " | ".join(f"{c:>7}" for c in row) + " |")
        return out

    lines = table("metric", rows_keys, [[_pct(metrics.get(f"{t}_{k}")) for t in types] for k in rows_keys])
    per_class = metrics.get("per_class") or {}
    if per_class:
        names = list(per_class)
        lines.append("")
        lines += table("class", names, [[_pct(per_class[n].get(f"{t}_AP")) for t in types] for n in names])
    return "\n".join(lines)
