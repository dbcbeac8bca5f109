"""The instance task: evaluation of a Mask R-CNN over a split (COCO AP) and what a :class:`Predictor` returns for it.

Instances are Mask R-CNN's detections (He et al., ICCV 2017): per image ``boxes`` (R, 4) xyxy pixels, ``labels``
(R,) int64 in 1..K (0 is the background), ``scores`` (R,) and ``masks`` (R, 1, H, W) probabilities, which
:class:`InstanceResult` thresholds at 0.5 (torchvision's detection reference and pycocotools' evaluation do the
same).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

__all__ = ["InstanceResult", "evaluate_instances", "instance_colors"]

#: Mask probability above which a pixel belongs to an instance.
MASK_THRESHOLD = 0.5


@torch.no_grad()
def evaluate_instances(model: torch.nn.Module, loader, dataset, device: torch.device | str = "cpu",
                       progress: bool = False, amp_dtype: torch.dtype | None = None,
                       max_detections: int = 100) -> dict[str, Any]:
    """COCO box and mask AP of ``model`` over ``loader`` (batches of (list of float (C, H, W) images in [0, 1],
    list of target dicts with ``image_id``)), scored by pycocotools' COCOeval against
    ``dataset.coco_ground_truth()`` (see :class:`pixelwise.instance_metrics.InstanceMetrics`), counting at most
    ``max_detections`` per image (COCO's protocol: 100; an image of more objects than that cannot reach full
    recall). The model is left in eval mode; in a multi-process run each rank passes its shard."""
    from pixelwise.instance_metrics import InstanceMetrics

    model.eval()
    device = torch.device(device)
    metrics = InstanceMetrics(dataset.coco_ground_truth(), list(dataset.category_ids), list(dataset.classes),
                              max_detections=max_detections)
    for images, targets in tqdm(loader, desc="eval", leave=False, disable=not progress):
        images = [image.to(device, non_blocking=True) for image in images]
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs = model(images)
        outputs = [{k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in o.items()} for o in outputs]
        metrics.update(outputs, [int(t["image_id"]) for t in targets])
    return metrics.compute()


def instance_colors(count: int) -> list[tuple[int, int, int]]:
    """``count`` well-separated RGB colors (hues by the golden ratio), the same for the same count."""
    colors = []
    for k in range(count):
        r, g, b = colorsys.hsv_to_rgb((0.11 + 0.618034 * k) % 1.0, 0.75, 0.95)
        colors.append((round(255 * r), round(255 * g), round(255 * b)))
    return colors


@dataclass
class InstanceResult:
    """What a :class:`~pixelwise.engine.predictor.Predictor` returns for a batch of N images (task ``"instance"``).

    Attributes:
        detections: per image, ``{"boxes": float (R, 4) xyxy pixels, "labels": int64 (R,) in 1..K, "scores":
            float (R,) in [0, 1], "masks": bool (R, H, W)}``, sorted by descending score.
        classes: K class names (label k is ``classes[k - 1]``).
        category_ids: the dataset's category id of each label (COCO results use them), or None (then 1..K).
    """

    detections: list[dict[str, torch.Tensor]]
    classes: list[str]
    category_ids: list[int] | None = None

    @classmethod
    def from_outputs(cls, outputs: Sequence[dict[str, torch.Tensor]], classes: list[str],
                     category_ids: list[int] | None = None) -> "InstanceResult":
        detections = []
        for out in outputs:
            order = out["scores"].argsort(descending=True)
            masks = out["masks"][order]
            detections.append({"boxes": out["boxes"][order].float().cpu(), "labels": out["labels"][order].cpu(),
                               "scores": out["scores"][order].float().cpu(),
                               "masks": (masks[:, 0] if masks.dim() == 4 else masks).cpu() > MASK_THRESHOLD})
        return cls(detections, classes, category_ids)

    def instance_ids(self, i: int = 0) -> np.ndarray:
        """uint16 (H, W): 0 for the background, j + 1 for the j-th instance of image ``i`` (by descending score);
        where masks overlap, the higher score wins."""
        masks = self.detections[i]["masks"]
        if len(masks) > 65535:
            raise ValueError(f"{len(masks)} instances do not fit a uint16 instance-id image")
        ids = torch.zeros(masks.shape[-2:], dtype=torch.int32)
        for j in range(len(masks) - 1, -1, -1):  # lowest score first, so the highest is painted last
            ids[masks[j]] = j + 1
        return ids.numpy().astype(np.uint16)

    def objects(self, i: int = 0) -> list[dict[str, Any]]:
        """The instances of image ``i`` as JSON-ready dicts: ``id`` (its value in :meth:`instance_ids`), ``label``,
        ``class``, ``score``, ``box`` [x1, y1, x2, y2] pixels, ``area`` (mask pixels), ``rle`` (COCO compressed
        RLE of the mask, as pycocotools encodes it)."""
        det = self.detections[i]
        coco = self.coco_results(i, 0)
        return [{"id": j + 1, "label": int(det["labels"][j]), "class": self.classes[int(det["labels"][j]) - 1],
                 "score": round(float(det["scores"][j]), 5), "box": [round(float(v), 2) for v in det["boxes"][j]],
                 "area": int(det["masks"][j].sum()), "rle": coco[j]["segmentation"]} for j in range(len(coco))]

    def coco_results(self, i: int, image_id: int) -> list[dict[str, Any]]:
        """Image ``i``'s instances in COCO results format (``image_id``, ``category_id``, ``bbox`` [x, y, w, h],
        ``score``, ``segmentation`` RLE): :func:`pixelwise.instance_metrics.to_coco_results`."""
        from pixelwise.instance_metrics import to_coco_results

        ids = self.category_ids or list(range(1, len(self.classes) + 1))
        return to_coco_results(self.detections[i], image_id, ids)

    def overlay(self, image: torch.Tensor | np.ndarray, i: int = 0, alpha: float = 0.5) -> np.ndarray:
        """uint8 (H, W, 3): image ``i``'s instances over ``image`` (uint8 (C, H, W) or (H, W, C)), one color per
        instance (mask blended with weight ``alpha``, box, and "class score" label), drawn with
        :func:`torchvision.utils.draw_segmentation_masks` and :func:`~torchvision.utils.draw_bounding_boxes`."""
        from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

        picture = torch.as_tensor(np.asarray(image))
        if picture.dim() == 3 and picture.shape[-1] in (1, 3) and picture.shape[0] not in (1, 3):
            picture = picture.permute(2, 0, 1)
        picture = picture.to(torch.uint8)
        if picture.shape[0] == 1:
            picture = picture.expand(3, -1, -1)
        det = self.detections[i]
        if len(det["scores"]):
            colors = instance_colors(len(det["scores"]))
            picture = draw_segmentation_masks(picture, det["masks"], alpha=alpha, colors=colors)
            labels = [f"{self.classes[int(k) - 1]} {float(s):.2f}" for k, s in zip(det["labels"], det["scores"])]
            picture = draw_bounding_boxes(picture, det["boxes"], labels=labels, colors=colors, width=1)
        return picture.permute(1, 2, 0).contiguous().numpy()
