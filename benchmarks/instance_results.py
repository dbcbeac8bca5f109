"""Train (unless the run exists), evaluate and tabulate the instance-segmentation results of docs/instance.md.

    python benchmarks/instance_results.py [--no-train]

Each row trains with ``pixelwise train`` (a recipe of configs/, or the plain command with the instance defaults;
an unfinished run is resumed), then scores its ``best.pt`` with ``pixelwise eval --json`` on the held-out split:
COCO AP at COCO's 100 detections per image and, for images of more objects than that, at 300. For COCO's 80
classes on coco128, a second table groups the classes by how many training instances they have. Writes
benchmarks/results/instance_results.md and the docs section between the ``instance_results`` markers.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _publish import publish  # noqa: E402
from _timing import machine  # noqa: E402
from results_table import PIXELWISE, ROOT, finished_run, run  # noqa: E402

ISBI = "../shared/data/isbi2012_membrane"
COCO128 = "../shared/data/coco128_instances"
MOBILENET = ["model_kwargs.backbone=mobilenet_v2",
             "model_kwargs.backbone_weights=../shared/weights/mobilenet_v2_imagenet_features_tvformat.pth"]
ISBI_CELLS = ["--data-option", "instances=connected_components", "connectivity=4", "min_area=10", "classes=[cell]"]
ISBI_DEFAULTS = ["--data", ISBI, "--model", "maskrcnn", "--steps", "200", "--set",
                 "data_kwargs.instances=connected_components", "data_kwargs.min_area=10", "data_kwargs.classes=[cell]",
                 *MOBILENET, "train_split=train[:25]", "val_split=train[25:]"]
COCO128_DEFAULTS = ["--data", COCO128, "--model", "maskrcnn", "--steps", "200", "--set", *MOBILENET, "val_every=2"]

# (name, train arguments, data, split, reader options, what the split is and how it was trained)
RUNS = [
    ("maskrcnn_isbi", ["--config", "configs/maskrcnn_isbi.yaml"], ISBI, "train[25:]", ISBI_CELLS,
     "ISBI 2012 cells, train[25:] (5 held-out 512x512 images, {objects} cells; trained on train[:25]), the recipe"),
    ("maskrcnn_isbi_defaults", ISBI_DEFAULTS, ISBI, "train[25:]", ISBI_CELLS,
     "the same, trained with the instance defaults"),
    ("maskrcnn_coco128", COCO128_DEFAULTS, COCO128, "val", [],
     "coco128 val (100 photos, {objects} instances of 80 classes; trained on the 100 train photos), the defaults"),
]


def _defined(value) -> bool:
    """An AP that COCOeval could compute: not None (JSON null) nor NaN (a class without ground truth)."""
    return value is not None and not math.isnan(value)


def _class_groups(metrics: dict, data: str) -> list[str]:
    """COCO AP of the classes grouped by their count of training instances: what 100 images teach."""
    names = {c["id"]: c["name"] for c in json.loads((ROOT / data / "instances_train.json").read_text())["categories"]}
    annotations = json.loads((ROOT / data / "instances_train.json").read_text())["annotations"]
    counts = Counter(names[a["category_id"]] for a in annotations if not a.get("iscrowd"))
    groups = [("100 or more", 100, 10**9), ("20 to 99", 20, 99), ("5 to 19", 5, 19), ("1 to 4", 1, 4), ("none", 0, 0)]
    rows = ["| training instances of a class | classes | of them in val | their mean mask AP % | mean box AP % |",
            "|---|---:|---:|---:|---:|"]
    for label, lo, hi in groups:
        members = [n for n in names.values() if lo <= counts.get(n, 0) <= hi]
        scored = [metrics["per_class"][n] for n in members if _defined(metrics["per_class"].get(n, {}).get("segm_AP"))]
        mean = {t: f"{100 * statistics.mean(c[f'{t}_AP'] for c in scored):.1f}" if scored else "-"
                for t in ("segm", "bbox")}
        rows.append(f"| {label} | {len(members)} | {len(scored)} | {mean['segm']} | {mean['bbox']} |")
    return rows


def _ground_truth(data: str, split: str, options: list[str]) -> dict:
    from pixelwise.data import build_dataset
    from pixelwise.engine.config import apply_overrides

    return build_dataset(str(ROOT / data), split, **apply_overrides({}, options[1:])).coco_ground_truth()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-train", action="store_true", help="tabulate existing runs only")
    args = ap.parse_args()
    rows, groups = [], []
    for name, train_args, data, split, options, what in RUNS:
        out = f"runs/{name}"
        train_cmd = ["pixelwise", "train", *train_args, "--out", out]
        if not finished_run(name, out, train_cmd, args.no_train):
            continue
        scores = {}
        eval_cmd = ["pixelwise", "eval", "--checkpoint", f"{out}/best.pt", "--data", data, "--split", split, *options]
        for dets in (100, 300):
            json_path = f"{out}/eval_{dets}.json"
            run([*PIXELWISE, *eval_cmd[1:], "--max-detections", str(dets), "--json", json_path, "--quiet"])
            scores[dets] = json.loads((ROOT / json_path).read_text())
        log = [json.loads(line) for line in (ROOT / out / "log.jsonl").read_text().splitlines()]
        val = [r for r in log if r["type"] == "val"]
        best = max(val, key=lambda r: r["segm_AP"])
        m, m300 = scores[100], scores[300]
        if name == "maskrcnn_coco128":
            groups = _class_groups(m, data)
        objects = sum(not a.get("iscrowd") for a in _ground_truth(data, split, options)["annotations"])
        rows.append(
            f"| {what.format(objects=objects)} | {100 * m['segm_AP']:.1f} | {100 * m['segm_AP50']:.1f} | {100 * m['segm_AP75']:.1f} | "
            f"{100 * m['bbox_AP']:.1f} | {100 * m['segm_AR100']:.1f} | {100 * m300['segm_AP']:.1f} / "
            f"{100 * m300['segm_AR300']:.1f} | {val[-1]['step']} (best at {best['step']}) | "
            f"{val[-1]['elapsed_s'] / 60:.0f} min | `{shlex.join(train_cmd)}` then `{shlex.join(eval_cmd)}` (add "
            "`--max-detections 300`) |"
        )
    table = "\n".join([
        "| reported on | mask AP % | AP50 | AP75 | box AP % | mask AR100 | mask AP / AR at 300 detections | steps | "
        "train wall time | commands |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        *rows,
        "",
        f"Generated by `python benchmarks/instance_results.py`; COCO AP by pycocotools (IoU 0.50:0.95), on {machine()}, "
        "2-core shared VM with other jobs running.",
    ]) + "\n"
    if groups:
        table += ("\nWhat coco128's 100 training photos teach: the classes of its val split grouped by how many "
                  "training instances each has, with their mean AP (a class without val instances has no AP).\n\n"
                  + "\n".join(groups) + "\n")
    publish("instance_results", table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
