"""``pixelwise eval --report DIR``: a self-contained HTML page whose numbers agree with ``evaluate`` in both columns,
whose per-image scores agree with evaluating that image alone, and whose best/worst grids are ranked by them."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.cli import main
from pixelwise.data import build_dataset, eval_transforms
from pixelwise.engine.inference import InferenceOptions, evaluate
from pixelwise.engine.predictor import Predictor
from pixelwise.engine.report import error_map, rank_images, tta_options

pytest.importorskip("matplotlib")

SPLIT = "val[:3]"


@pytest.fixture(scope="module")
def report(camvid_checkpoint, camvid_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert main(["eval", "--checkpoint", str(camvid_checkpoint), "--data", str(camvid_dir), "--split", SPLIT,
                 "--report", str(out / "html"), "--report-images", "1", "--json", str(out / "eval.json"),
                 "--quiet", "--scales", "0.75", "1", "--tta"]) == 0
    page = (out / "html" / "index.html").read_text(encoding="utf-8")
    return page, json.loads((out / "html" / "metrics.json").read_text()), json.loads((out / "eval.json").read_text())


def _loader(camvid_checkpoint, camvid_dir, split=SPLIT):
    predictor = Predictor.from_checkpoint(camvid_checkpoint, "cpu")
    card = predictor.card
    ds = build_dataset(str(camvid_dir), split, transforms=eval_transforms(card.mean, card.std))
    return predictor.model, card, torch.utils.data.DataLoader(ds, batch_size=1)


def test_page_is_self_contained_with_every_section(report):
    page, _, _ = report
    for heading in ("Metrics", "Per-class IoU", "Confusion matrix", "Training curves", "Best and worst images"):
        assert f"<h2>{heading}" in page
    # Nothing is fetched: every image is inline, no script or stylesheet comes from elsewhere.
    assert not re.search(r'(src|href)="(?!data:)', page)
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', page)
    assert [alt for alt, _ in images] == ["per-class IoU", "confusion matrix", "training curves", "best images",
                                          "worst images"]
    for _, data in images:
        picture = Image.open(io.BytesIO(base64.b64decode(data)))
        picture.load()
        assert picture.width > 200 and picture.height > 100
    assert page.count('class="sw"') == 11  # the legend: one swatch per CamVid class


def test_both_columns_equal_evaluate_with_the_same_options(report, camvid_checkpoint, camvid_dir):
    page, record, printed = report
    model, card, loader = _loader(camvid_checkpoint, camvid_dir)
    args = (card.num_classes, card.ignore_index, card.input_scale)
    single = evaluate(model, loader, *args, test_time=InferenceOptions())
    tta = evaluate(model, loader, *args, test_time=InferenceOptions(scales=(0.75, 1.0), flip=True))
    for ours, reference in ((record["metrics"]["single scale"], single), (record["metrics"]["TTA"], tta)):
        assert ours["confusion_matrix"] == reference["confusion_matrix"]
        assert ours["mIoU"] == pytest.approx(reference["mIoU"], abs=1e-12)
    # --tta was asked for, so the printed/--json metrics are the TTA column; the page shows both, with the delta.
    assert printed["mIoU"] == pytest.approx(tta["mIoU"], abs=1e-12)
    assert printed["inference"] == "whole image, scales 0.75/1, flip"
    delta = f"{100 * (tta['mIoU'] - single['mIoU']):+.2f}"
    assert re.search(rf"<th>mIoU</th><td>{100 * single['mIoU']:.2f}</td><td>{100 * tta['mIoU']:.2f}</td>"
                     rf"<td>{re.escape(delta)}</td>", page)


def test_per_image_scores_equal_each_image_evaluated_alone_and_rank_the_grids(report, camvid_checkpoint, camvid_dir):
    _, record, _ = report
    assert [s["index"] for s in record["images"]] == [0, 1, 2]
    for s in record["images"]:
        model, card, loader = _loader(camvid_checkpoint, camvid_dir, f"val[{s['index']}:{s['index'] + 1}]")
        alone = evaluate(model, loader, card.num_classes, card.ignore_index, card.input_scale)
        assert s["mIoU"] == pytest.approx(alone["mIoU"], abs=1e-12)
        assert s["pixel_accuracy"] == pytest.approx(alone["pixel_accuracy"], abs=1e-12)
    by_score = sorted(record["images"], key=lambda s: s["mIoU"])
    assert record["best"] == [by_score[-1]["index"]] and record["worst"] == [by_score[0]["index"]]


def test_training_curves_come_from_the_run_folder_or_the_page_says_why_not(camvid_checkpoint, camvid_dir, tmp_path):
    lone = tmp_path / "elsewhere" / "model.pt"
    lone.parent.mkdir()
    shutil.copy(camvid_checkpoint, lone)
    assert main(["eval", "--checkpoint", str(lone), "--data", str(camvid_dir), "--split", "val[:1]", "--report",
                 str(tmp_path / "r"), "--quiet"]) == 0
    page = (tmp_path / "r" / "index.html").read_text(encoding="utf-8")
    assert "No training log" in page and str(lone.parent / "log.jsonl") in page
    assert 'alt="training curves"' not in page
    # Without --tta the TTA column is the standard one: flip and scales 0.5-1.75.
    record = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert record["options"] == {"single scale": "whole image", "TTA": "whole image, scales "
                                 "0.5/0.75/1/1.25/1.5/1.75, flip"}


def test_tta_options_keep_the_mode_and_default_to_the_standard_augmentation():
    slide = InferenceOptions("slide", crop=(64, 64), stride=(32, 32))
    single, tta = tta_options(slide)
    assert single == slide and tta.mode == "slide" and tta.flip and tta.scales[0] == 0.5
    asked = InferenceOptions(scales=(1.0, 1.5))
    single, tta = tta_options(asked)
    assert single == InferenceOptions() and tta == asked


def test_ranking_skips_unlabelled_images_and_never_shows_one_image_twice():
    scores = [{"index": i, "mIoU": v} for i, v in enumerate([0.5, math.nan, 0.9, 0.1, 0.7])]
    best, worst = rank_images(scores, 2)
    assert [s["index"] for s in best] == [2, 4] and [s["index"] for s in worst] == [3, 0]
    best, worst = rank_images(scores, 3)  # 4 scored images: the worst list gets what the best did not take
    assert [s["index"] for s in best] == [2, 4, 0] and [s["index"] for s in worst] == [3]


def test_error_map_colors():
    mask = np.array([[0, 1], [255, 2]])
    pred = np.array([[0, 2], [1, 2]])
    out = error_map(pred, mask, 255)
    assert out[0, 0].tolist() == [40, 40, 40]  # right
    assert out[0, 1].tolist() == [230, 30, 30]  # wrong
    assert out[1, 0].tolist() == [255, 255, 255]  # void, whatever the prediction
    assert out[1, 1].tolist() == [40, 40, 40]
