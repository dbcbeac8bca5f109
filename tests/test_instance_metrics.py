"""COCO box and mask AP (pixelwise.instance_metrics) against oracles: the ground truth scored against itself, a case
worked out by hand, torchmetrics' MeanAveragePrecision on random detections, and pycocotools' own summarize()."""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("pycocotools")

from pycocotools import mask as mask_utils  # noqa: E402

from pixelwise.errors import ConfigError  # noqa: E402
from pixelwise.instance_metrics import InstanceMetrics, format_instance_table, to_coco_results  # noqa: E402

# pycocotools.mask.decode (used here to check masks, not by the module) warns under numpy 2
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

IDS = [3, 7]  # non-contiguous COCO category ids: label 1 is category 3, label 2 category 7
NAMES = ["cell", "nucleus"]


def _rect(h: int, w: int, x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    m[y1:y2, x1:x2] = 1
    return m


def _ellipse(h: int, w: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    y, x = np.mgrid[:h, :w]
    return (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1).astype(np.uint8)


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _bbox(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]


def _dataset(images: list[tuple[int, int, int]], objects: list[tuple[int, int, np.ndarray]],
             categories: list[int] = IDS) -> dict:
    """COCO instances dict: ``images`` (id, h, w), ``objects`` (image id, category id, binary mask) as RLE."""
    anns = [{"id": i + 1, "image_id": img, "category_id": cat, "segmentation": _rle(m), "bbox": _bbox(m),
             "area": float(m.sum()), "iscrowd": 0} for i, (img, cat, m) in enumerate(objects)]
    return {"images": [{"id": i, "height": h, "width": w, "file_name": f"{i}.png"} for i, h, w in images],
            "annotations": anns,
            "categories": [{"id": c, "name": f"c{c}", "supercategory": "thing"} for c in categories]}


def _output(boxes, labels, scores, masks) -> dict[str, torch.Tensor]:
    """A Mask R-CNN eval-mode output: boxes (R, 4) xyxy, labels (R,), scores (R,), masks (R, 1, H, W) float."""
    return {"boxes": torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4),
            "labels": torch.as_tensor(labels, dtype=torch.int64),
            "scores": torch.as_tensor(scores, dtype=torch.float32),
            "masks": torch.as_tensor(np.asarray(masks, dtype=np.float32))[:, None]}


def _empty(h: int, w: int) -> dict[str, torch.Tensor]:
    return {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0),
            "masks": torch.zeros(0, 1, h, w)}


# --- the ground truth against itself --------------------------------------------------------------------------


def _self_dataset() -> dict:
    """3 images of different sizes, both categories, objects of all three COCO sizes, one annotation a polygon."""
    objects = [
        (1, 3, _ellipse(120, 160, 40, 40, 25, 15)),
        (1, 7, _rect(120, 160, 40, 5, 150, 115)),  # 110 x 110: large (> 96²)
        (1, 3, _rect(120, 160, 5, 90, 12, 100)),  # 7 x 10: small
        (2, 7, _ellipse(80, 90, 45, 40, 30, 20)),
        (2, 7, _rect(80, 90, 0, 0, 20, 30)),
        (3, 3, _rect(64, 64, 10, 10, 50, 40)),
    ]
    gt = _dataset([(1, 120, 160), (2, 80, 90), (3, 64, 64)], objects)
    # one polygon annotation, as COCO's own files mostly have (a 30 x 20 rectangle in image 3)
    gt["annotations"].append({"id": 99, "image_id": 3, "category_id": 7, "iscrowd": 0, "area": 600.0,
                              "bbox": [30.0, 42.0, 30.0, 20.0], "segmentation": [[30, 42, 60, 42, 60, 62, 30, 62]]})
    return gt


def _as_predictions(gt: dict) -> tuple[list[dict], list[int]]:
    """Every ground-truth object as a detection of score 1: its box and its decoded mask."""
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    outputs, image_ids = [], []
    for image_id, (h, w) in sizes.items():
        anns = [a for a in gt["annotations"] if a["image_id"] == image_id]
        masks = []
        for a in anns:
            seg = a["segmentation"]
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w)) if isinstance(seg, list) else \
                {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
            masks.append(mask_utils.decode(rle))
        boxes = [[x, y, x + bw, y + bh] for x, y, bw, bh in (a["bbox"] for a in anns)]
        labels = [IDS.index(a["category_id"]) + 1 for a in anns]
        outputs.append(_output(boxes, labels, [1.0] * len(anns), masks))
        image_ids.append(image_id)
    return outputs, image_ids


def test_ground_truth_against_itself_is_perfect():
    gt = _self_dataset()
    before = json.dumps(gt, sort_keys=True)
    metrics = InstanceMetrics(gt, IDS, NAMES)
    outputs, image_ids = _as_predictions(gt)
    metrics.update(outputs[:2], image_ids[:2])
    metrics.update(outputs[2:], image_ids[2:])
    m = metrics.compute()
    for t in ("segm", "bbox"):
        for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR10", "AR100", "ARs", "ARm", "ARl"):
            assert m[f"{t}_{key}"] == pytest.approx(1.0, abs=1e-12), (t, key)
        assert m["per_class"] == {n: {"bbox_AP": pytest.approx(1.0), "segm_AP": pytest.approx(1.0)} for n in NAMES}
    assert m["num_images"] == 3 and m["num_detections"] == 7
    assert json.dumps(gt, sort_keys=True) == before  # COCOeval rewrites its datasets: it was given copies


# --- a case worked out by hand ---------------------------------------------------------------------------------


def _hand_case() -> tuple[dict, dict]:
    """One 100 x 100 image, one class (id 5), 2 ground-truth squares, 3 detections; masks are the boxes' pixels, so
    box IoU and mask IoU are the same numbers:

    * GT A = x 0..20, y 0..20 and GT B = x 50..70, y 50..70 (400 pixels each; both "small", < 32²);
    * d1, score 0.9: exactly A, IoU 1;
    * d2, score 0.8: x 80..100, y 0..10, overlapping nothing: a false positive at every threshold;
    * d3, score 0.7: x 50..71, y 50..63 over B: intersection 20 x 13 = 260, union 400 + 273 - 260 = 413,
      IoU 260 / 413 = 0.6295, a match at the IoU thresholds 0.50, 0.55, 0.60 and not at 0.65 .. 0.95.
    """
    gt = _dataset([(1, 100, 100)], [(1, 5, _rect(100, 100, 0, 0, 20, 20)), (1, 5, _rect(100, 100, 50, 50, 70, 70))],
                  categories=[5])
    boxes = [[0, 0, 20, 20], [80, 0, 100, 10], [50, 50, 71, 63]]
    out = _output(boxes, [1, 1, 1], [0.9, 0.8, 0.7], [_rect(100, 100, *b) for b in boxes])
    return gt, out


def test_hand_worked_average_precision():
    # At a threshold t <= 0.60 (d3 matches B), by score: d1 TP, d2 FP, d3 TP, 2 objects:
    #   recall 1/2, 1/2, 1; precision 1, 1/2, 2/3; made monotone from the right: 1, 2/3, 2/3.
    #   COCO reads it at the 101 recalls 0, 0.01, .., 1: the 51 recalls <= 0.5 get 1, the 50 above get 2/3:
    #   AP = (51 + 50 * 2/3) / 101 = 253 / 303 = 0.834983...  (that is AP50)
    # At t >= 0.65 (d3 is a false positive): recall 1/2, 1/2, 1/2; precision 1, 1/2, 1/3; recall 0.5 is the most
    #   reached, so the 51 recalls <= 0.5 get 1 and the 50 above get 0: AP = 51 / 101 = 0.504950...  (AP75)
    # AP over the 10 thresholds 0.50:0.05:0.95: (3 * 253/303 + 7 * 51/101) / 10 = (759 + 1071) / 3030 = 61 / 101.
    # AR (recall at the last detection): 1 at the 3 low thresholds, 1/2 at the 7 others: (3 + 3.5) / 10 = 0.65;
    #   with 1 detection per image only d1 counts: 1/2 everywhere, AR1 = 0.5.
    gt, out = _hand_case()
    metrics = InstanceMetrics(gt, [5], ["square"])
    metrics.update([out], [1])
    m = metrics.compute()
    for t in ("segm", "bbox"):
        assert m[f"{t}_AP50"] == pytest.approx(253 / 303, abs=1e-6)
        assert m[f"{t}_AP75"] == pytest.approx(51 / 101, abs=1e-6)
        assert m[f"{t}_AP"] == pytest.approx(61 / 101, abs=1e-6)
        assert m[f"{t}_APs"] == pytest.approx(61 / 101, abs=1e-6)  # both objects are small
        assert math.isnan(m[f"{t}_APm"]) and math.isnan(m[f"{t}_APl"])  # COCO's -1: no medium or large object
        assert m[f"{t}_AR100"] == pytest.approx(0.65, abs=1e-6)
        assert m[f"{t}_AR10"] == pytest.approx(0.65, abs=1e-6)
        assert m[f"{t}_AR1"] == pytest.approx(0.5, abs=1e-6)
        assert m["per_class"]["square"][f"{t}_AP"] == pytest.approx(61 / 101, abs=1e-6)

    # max_detections=2 keeps d1 and d2 only: d3 never counts, AP is 51/101 at every threshold and AR2 = 0.5.
    metrics = InstanceMetrics(gt, [5], ["square"], max_detections=2)
    metrics.update([out], [1])
    m = metrics.compute()
    assert m["segm_AP"] == pytest.approx(51 / 101, abs=1e-6) and m["bbox_AP50"] == pytest.approx(51 / 101, abs=1e-6)
    assert m["segm_AR2"] == pytest.approx(0.5) and "segm_AR100" not in m
    assert "maxDets=  2 ] = 0.505" in m["summary"]


def test_summary_and_stats_are_cocoevals_own():
    """With COCO's maxDets the numbers and the table are exactly COCOeval.summarize()'s."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, out = _random_case(seed=3)
    metrics = InstanceMetrics(gt, IDS + [9], NAMES + ["third"])
    metrics.update(out["outputs"], out["image_ids"])
    m = metrics.compute()
    names = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    for t in ("bbox", "segm"):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            coco = COCO()
            coco.dataset = json.loads(json.dumps(gt))
            coco.createIndex()
            drop = "bbox" if t == "segm" else "segmentation"
            dets = [{k: v for k, v in d.items() if k != drop} for d in json.loads(json.dumps(metrics.results))]
            ev = COCOeval(coco, coco.loadRes(dets), t)
            ev.evaluate()
            ev.accumulate()
            start = len(printed.getvalue())
            ev.summarize()
        for name, value in zip(names, ev.stats):
            ours = m[f"{t}_{name}"]
            assert (math.isnan(ours) and value == -1) or ours == pytest.approx(value, abs=1e-12), (t, name)
        assert f"IoU metric: {t}\n" + printed.getvalue()[start:].rstrip("\n") in m["summary"]


# --- torchmetrics' MeanAveragePrecision ------------------------------------------------------------------------


def _random_case(seed: int, n_images: int = 5) -> tuple[dict, dict]:
    """Random images with 1-5 objects of categories 3, 7, 9 (ellipses and rectangles), and detections: each object
    found with probability 0.8 by a jittered box and a shifted, resized mask (sometimes with the wrong label), plus
    random false positives; scores uniform. Box corners are multiples of 1/4, exact in float32."""
    rng = np.random.default_rng(seed)
    ids = IDS + [9]
    images, objects, outputs, image_ids = [], [], [], []
    for image_id in range(1, n_images + 1):
        h, w = int(rng.integers(48, 97)), int(rng.integers(48, 97))
        images.append((image_id, h, w))
        boxes, labels, masks = [], [], []
        for _ in range(int(rng.integers(1, 6))):
            cat = int(rng.choice(ids))
            cx, cy = rng.uniform(8, w - 8), rng.uniform(8, h - 8)
            rx, ry = rng.uniform(3, 20), rng.uniform(3, 20)
            mask = (_ellipse(h, w, cx, cy, rx, ry) if rng.random() < 0.5 else
                    _rect(h, w, int(max(cx - rx, 0)), int(max(cy - ry, 0)), int(cx + rx) + 1, int(cy + ry) + 1))
            if mask.sum() == 0:
                continue
            objects.append((image_id, cat, mask))
            if rng.random() < 0.8:
                x, y, bw, bh = _bbox(mask)
                jitter = np.round(rng.normal(0, 2.0, 4) * 4) / 4
                boxes.append([x + jitter[0], y + jitter[1], x + bw + jitter[2], y + bh + jitter[3]])
                dx, dy = rng.normal(0, 1.5, 2)
                masks.append(_ellipse(h, w, cx + dx, cy + dy, rx * rng.uniform(0.8, 1.2), ry * rng.uniform(0.8, 1.2)))
                labels.append(ids.index(cat) + 1 if rng.random() < 0.85 else int(rng.integers(1, 4)))
        for _ in range(int(rng.integers(0, 4))):  # false positives
            x1, y1 = np.round(rng.uniform(0, w - 10) * 4) / 4, np.round(rng.uniform(0, h - 10) * 4) / 4
            x2, y2 = x1 + np.round(rng.uniform(4, 30) * 4) / 4, y1 + np.round(rng.uniform(4, 30) * 4) / 4
            boxes.append([x1, y1, min(x2, w), min(y2, h)])
            masks.append(_rect(h, w, int(x1), int(y1), int(x2), int(y2)))
            labels.append(int(rng.integers(1, 4)))
        scores = rng.uniform(0.05, 1.0, len(labels))
        if labels:
            outputs.append(_output(boxes, labels, scores, masks))
        else:
            outputs.append(_empty(h, w))
        image_ids.append(image_id)
    gt = _dataset(images, objects, categories=ids)
    return gt, {"outputs": outputs, "image_ids": image_ids}


@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_torchmetrics(seed):
    from torchmetrics.detection import MeanAveragePrecision

    gt, case = _random_case(seed)
    ids = IDS + [9]
    metrics = InstanceMetrics(gt, ids, ["a", "b", "c"])
    metrics.update(case["outputs"], case["image_ids"])
    m = metrics.compute()
    assert 0.2 < m["segm_AP50"] < 0.99 and 0.1 < m["bbox_AP"] < 0.9  # a case that tests something

    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    for iou_type in ("bbox", "segm"):
        # backend="pycocotools": torchmetrics' default, and faster_coco_eval is not installed here. The thresholds
        # are COCOeval's own: torchmetrics' defaults come from a float32 torch.linspace (0.550000011920929, ...),
        # which decides differently from COCO's float64 ones when an IoU is exactly 0.55 (or a recall exactly
        # 0.29, ...), as the IoUs and recalls of these small integer boxes can be.
        tm = MeanAveragePrecision(iou_type=iou_type, backend="pycocotools", class_metrics=True,
                                  iou_thresholds=np.linspace(0.5, 0.95, 10).tolist(),
                                  rec_thresholds=np.linspace(0.0, 1.0, 101).tolist())
        for output, image_id in zip(case["outputs"], case["image_ids"]):
            anns = [a for a in gt["annotations"] if a["image_id"] == image_id]
            h, w = sizes[image_id]
            pred = {"boxes": output["boxes"], "scores": output["scores"],
                    "labels": torch.tensor([ids[k - 1] for k in output["labels"].tolist()], dtype=torch.int64)}
            target = {"boxes": torch.tensor([[x, y, x + bw, y + bh] for x, y, bw, bh in (a["bbox"] for a in anns)]),
                      "labels": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)}
            if iou_type == "segm":
                pred["masks"] = output["masks"][:, 0] > 0.5
                target["masks"] = torch.from_numpy(np.stack([
                    mask_utils.decode({"size": [h, w], "counts": a["segmentation"]["counts"].encode()}) for a in anns
                ])).bool()
            tm.update([pred], [target])
        with contextlib.redirect_stdout(io.StringIO()):
            ref = tm.compute()
        for ours, theirs in (("AP", "map"), ("AP50", "map_50"), ("AP75", "map_75"), ("AR100", "mar_100"),
                             ("AR1", "mar_1"), ("AR10", "mar_10")):
            assert m[f"{iou_type}_{ours}"] == pytest.approx(float(ref[theirs]), abs=1e-6), (iou_type, ours)
        per_class = dict(zip(ref["classes"].tolist(), ref["map_per_class"].tolist()))
        for cat, name in zip(ids, ["a", "b", "c"]):
            assert m["per_class"][name][f"{iou_type}_AP"] == pytest.approx(per_class[cat], abs=1e-6), (iou_type, name)


# --- the results format ----------------------------------------------------------------------------------------


def test_results_map_labels_back_to_non_contiguous_category_ids():
    h, w = 30, 40
    masks = np.stack([_rect(h, w, 2, 3, 12, 9), _rect(h, w, 20, 5, 30, 25)]).astype(np.float32) * 0.9
    out = _output([[2, 3, 12.5, 9], [20, 5, 30, 25]], [2, 1], [0.75, 0.5], masks)
    results = to_coco_results(out, 17, IDS)
    assert [r["category_id"] for r in results] == [7, 3]
    assert [r["image_id"] for r in results] == [17, 17]
    assert results[0]["bbox"] == pytest.approx([2, 3, 10.5, 6])
    assert results[1]["score"] == pytest.approx(0.5)
    assert json.loads(json.dumps(results)) == results  # JSON-serialisable: counts is str
    assert isinstance(results[0]["segmentation"]["counts"], str)
    decoded = mask_utils.decode({"size": results[0]["segmentation"]["size"],
                                 "counts": results[0]["segmentation"]["counts"].encode()})
    np.testing.assert_array_equal(decoded, masks[0] > 0.5)

    # through InstanceMetrics: results carry the dataset's ids, and each id is scored as its own class
    gt = _dataset([(17, h, w)], [(17, 7, _rect(h, w, 2, 3, 12, 9)), (17, 3, _rect(h, w, 20, 5, 30, 25))])
    metrics = InstanceMetrics(gt, IDS, NAMES)
    metrics.update([out], [17])
    assert {r["category_id"] for r in metrics.results} == {3, 7}
    m = metrics.compute()
    assert m["segm_AP"] == pytest.approx(1.0) and m["per_class"]["nucleus"]["segm_AP"] == pytest.approx(1.0)
    swapped = InstanceMetrics(gt, [7, 3], NAMES)  # the wrong mapping finds nothing
    swapped.update([out], [17])
    assert swapped.compute()["segm_AP"] == 0.0

    with pytest.raises(ValueError, match="outside 1..2"):
        to_coco_results(_output([[0, 0, 1, 1]], [3], [0.5], np.zeros((1, h, w))), 17, IDS)


def test_threshold_is_strict_as_torchvision():
    out = _output([[0, 0, 2, 1]], [1], [1.0], np.array([[[0.5, 0.6]]]))
    rle = to_coco_results(out, 1, [1])[0]["segmentation"]
    assert mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).tolist() == [[0, 1]]


# --- degenerate cases ------------------------------------------------------------------------------------------


def test_no_predictions_give_zeros():
    gt = _self_dataset()
    metrics = InstanceMetrics(gt, IDS, NAMES)
    metrics.update([_empty(im["height"], im["width"]) for im in gt["images"]], [im["id"] for im in gt["images"]])
    assert metrics.results == []
    m = metrics.compute()
    for t in ("segm", "bbox"):
        for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"):
            assert m[f"{t}_{key}"] == 0.0, (t, key)
    assert m["per_class"] == {n: {"segm_AP": 0.0, "bbox_AP": 0.0} for n in NAMES}
    assert m["num_detections"] == 0
    cells = [c.strip() for line in format_instance_table(m).splitlines() if line.startswith("| ")
             for c in line.split("|")[2:-1]]
    assert cells[2:] and set(cells) == {"mask %", "box %", "0.00"}  # all defined, all 0


def test_nothing_seen_and_classes_without_ground_truth_are_nan():
    gt, out = _hand_case()
    gt["categories"].append({"id": 6, "name": "absent"})
    metrics = InstanceMetrics(gt, [5, 6], ["square", "absent"])
    m = metrics.compute()
    assert m["num_images"] == 0 and math.isnan(m["segm_AP"]) and math.isnan(m["per_class"]["square"]["bbox_AP"])
    metrics.update([out], [1])
    m = metrics.compute()
    assert math.isnan(m["per_class"]["absent"]["segm_AP"])
    assert m["segm_AP"] == pytest.approx(61 / 101)  # the class without ground truth is left out of the mean


def test_repeated_image_counts_once():
    gt, out = _hand_case()
    metrics = InstanceMetrics(gt, [5], ["square"])
    metrics.update([out], [1])
    metrics.update([_empty(100, 100)], [1])  # e.g. a DistributedSampler's padding: the first results are kept
    assert len(metrics.results) == 3
    assert metrics.compute()["segm_AP"] == pytest.approx(61 / 101)


def test_box_only_evaluation_and_errors():
    gt, out = _hand_case()
    boxes_only = {k: v for k, v in out.items() if k != "masks"}
    metrics = InstanceMetrics(gt, [5], ["square"], iou_types=("bbox",))
    metrics.update([boxes_only], [1])
    m = metrics.compute()
    assert m["bbox_AP"] == pytest.approx(61 / 101) and "segm_AP" not in m
    assert "box %" in format_instance_table(m) and "mask %" not in format_instance_table(m)

    metrics = InstanceMetrics(gt, [5], ["square"])
    with pytest.raises(ValueError, match="no 'masks'"):
        metrics.update([boxes_only], [1])
    with pytest.raises(ValueError, match="not an image of the ground truth"):
        metrics.update([out], [2])
    small = dict(out, masks=out["masks"][..., :50])
    with pytest.raises(ValueError, match=r"\(100, 50\).*\(100, 100\)"):
        metrics.update([small], [1])
    with pytest.raises(ConfigError, match="not categories of the ground truth"):
        InstanceMetrics(gt, [4], ["x"])
    with pytest.raises(ConfigError, match="class names"):
        InstanceMetrics(gt, [5], ["x", "y"])
    with pytest.raises(ConfigError, match="max_detections"):
        InstanceMetrics(gt, [5], ["x"], max_detections=0)


def test_format_instance_table():
    gt, out = _hand_case()
    metrics = InstanceMetrics(gt, [5], ["square"])
    metrics.update([out], [1])
    table = format_instance_table(metrics.compute())
    lines = table.splitlines()
    assert lines[0].split("|")[1:4] == [" metric ", "  mask % ", "   box % "]
    assert "| AP50   |   83.50 |   83.50 |" in lines
    assert "| APm    |       - |       - |" in lines
    assert "| AR100  |   65.00 |   65.00 |" in lines
    assert "| square |   60.40 |   60.40 |" in lines


def test_missing_pycocotools_names_the_extra(monkeypatch):
    gt, _ = _hand_case()
    for name in ("pycocotools", "pycocotools.mask", "pycocotools.coco", "pycocotools.cocoeval"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ConfigError, match=r"pip install 'pixelwise\[instance\]'"):
        InstanceMetrics(gt, [5], ["square"])


# --- torch.distributed -----------------------------------------------------------------------------------------


def _distributed_worker(rank: int, world: int, init: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        gt, case = _random_case(seed=0)
        metrics = InstanceMetrics(gt, IDS + [9], ["a", "b", "c"])
        # rank r takes images r, r + 2, ...; rank 1 also repeats image 1, as a DistributedSampler pads a shard
        idx = list(range(rank, len(case["image_ids"]), world)) + ([0] if rank == 1 else [])
        metrics.update([case["outputs"][i] for i in idx], [case["image_ids"][i] for i in idx])
        m = metrics.compute()
        Path(out_dir, f"{rank}.json").write_text(json.dumps({k: v for k, v in m.items() if k != "per_class"}))
    finally:
        dist.destroy_process_group()


def test_compute_gathers_every_rank(tmp_path):
    import torch.multiprocessing as mp

    gt, case = _random_case(seed=0)
    whole = InstanceMetrics(gt, IDS + [9], ["a", "b", "c"])
    whole.update(case["outputs"], case["image_ids"])
    expected = whole.compute()
    mp.spawn(_distributed_worker, args=(2, f"file://{tmp_path / 'store'}", str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = json.loads((tmp_path / f"{rank}.json").read_text())
        assert got["num_images"] == 5 and got["num_detections"] == expected["num_detections"]
        for key in ("segm_AP", "segm_AP50", "bbox_AP", "bbox_AR100"):
            assert got[key] == pytest.approx(expected[key], abs=1e-12), (rank, key)


def test_synthetic_instances_ground_truth_against_its_targets():
    """pixelwise.data.instances' coco_ground_truth() (image ids from 0, RLE, labels 1..K) is read as it is written:
    the dataset's own targets as detections score 1.0."""
    from pixelwise.data.instances import SyntheticInstances

    data = SyntheticInstances("val", num_images=4, image_size=(64, 80))
    metrics = InstanceMetrics(data.coco_ground_truth(), data.category_ids, data.classes)
    for i in range(len(data)):
        _, target = data.raw_item(i)
        out = {"boxes": target["boxes"].as_subclass(torch.Tensor).float(), "labels": target["labels"],
               "scores": torch.ones(len(target["labels"])), "masks": target["masks"].float()[:, None]}
        metrics.update([out], [target["image_id"]])
    m = metrics.compute()
    assert m["num_images"] == 4 and m["num_detections"] > 4
    assert m["segm_AP"] == pytest.approx(1.0) and m["bbox_AP"] == pytest.approx(1.0)
