"""The instance task end to end: a Mask R-CNN checkpoint through Predictor, predict, eval, export and serve."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2.functional import to_dtype

from pixelwise import Checkpoint, ModelCard, Predictor
from pixelwise.cli import main
from pixelwise.engine.checkpoint import save_checkpoint
from pixelwise.engine.instance import InstanceResult
from pixelwise.errors import ConfigError
from pixelwise.models import build_model

pytest.importorskip("pycocotools")

CLASSES = ["disk", "square"]
OPTIONS = {"backbone": "resnet18", "min_size": 96, "max_size": 128, "mask_head_channels": 16,
           "rois_per_image": 32, "score_threshold": 0.0}


def _checkpoint(path, category_ids=(3, 7)):
    torch.manual_seed(0)
    model = build_model("maskrcnn", 2, **OPTIONS)
    card = ModelCard("maskrcnn", 2, CLASSES, [[200, 0, 0], [0, 200, 0]], [0.485, 0.456, 0.406],
                     [0.229, 0.224, 0.225], task="instance", model_kwargs=OPTIONS, category_ids=list(category_ids))
    save_checkpoint(Checkpoint(card, model.state_dict()), path)
    return model


def test_instance_result_views_agree_with_each_other():
    masks = torch.zeros(3, 1, 20, 30)
    masks[0, 0, 2:10, 2:10] = 0.9   # score 0.5
    masks[1, 0, 5:15, 5:20] = 0.8   # score 0.9: wins where it overlaps the first
    masks[2, 0, 0:4, 25:30] = 0.3   # below the mask threshold: an empty instance
    out = {"boxes": torch.tensor([[2.0, 2, 10, 10], [5, 5, 20, 15], [25, 0, 30, 4]]),
           "labels": torch.tensor([1, 2, 1]), "scores": torch.tensor([0.5, 0.9, 0.2]), "masks": masks}
    result = InstanceResult.from_outputs([out], CLASSES, [3, 7])
    det = result.detections[0]
    assert det["scores"].tolist() == pytest.approx([0.9, 0.5, 0.2])  # sorted by score
    ids = result.instance_ids(0)
    assert ids.dtype == np.uint16
    assert (ids == 1).sum() == 10 * 15  # the best instance whole
    assert (ids == 2).sum() == 8 * 8 - 5 * 5  # the other, less the overlap
    assert (ids == 3).sum() == 0
    objects = result.objects(0)
    assert [(o["id"], o["class"], o["area"]) for o in objects] == [(1, "square", 150), (2, "disk", 64), (3, "disk", 0)]
    from pycocotools import mask as mask_utils

    rle = dict(objects[0]["rle"], counts=objects[0]["rle"]["counts"].encode())
    assert np.array_equal(mask_utils.decode(rle), det["masks"][0].numpy().astype(np.uint8))
    coco = result.coco_results(0, image_id=42)
    assert [(c["image_id"], c["category_id"]) for c in coco] == [(42, 7), (42, 3), (42, 3)]
    assert coco[0]["bbox"] == pytest.approx([5, 5, 15, 10])
    picture = result.overlay(torch.zeros(3, 20, 30, dtype=torch.uint8), alpha=1.0)
    assert picture.shape == (20, 30, 3) and picture[8, 12].any() and not picture[18, 0].any()


def test_predictor_runs_a_maskrcnn_checkpoint_like_the_model(tmp_path):
    model = _checkpoint(tmp_path / "m.pt").eval()
    predictor = Predictor.from_checkpoint(tmp_path / "m.pt", "cpu")
    assert predictor.task == "instance"
    image = torch.randint(0, 256, (3, 70, 90), dtype=torch.uint8)
    result = predictor(image)
    with torch.no_grad():
        # [0, 1] as torchvision's ToDtype(scale=True) makes it (x * (1 / 255), which can differ from x / 255 by an ulp)
        (expected,) = model([to_dtype(image, torch.float32, scale=True)])
    assert len(expected["scores"]) > 0
    order = expected["scores"].argsort(descending=True)
    torch.testing.assert_close(result.detections[0]["boxes"], expected["boxes"][order])
    assert torch.equal(result.detections[0]["masks"], expected["masks"][order, 0] > 0.5)
    with pytest.raises(ConfigError, match="instance model: it runs on the whole image"):
        Predictor.from_checkpoint(tmp_path / "m.pt", "cpu", mode="slide", crop=(32, 32))


def test_predict_export_and_serve_of_an_instance_checkpoint(tmp_path, capsys):
    _checkpoint(tmp_path / "m.pt")
    images = tmp_path / "images"
    images.mkdir()
    for k, size in enumerate([(60, 80), (50, 40)]):
        Image.fromarray(np.random.default_rng(k).integers(0, 256, (*size, 3), dtype=np.uint8)).save(images / f"{k}.png")
    assert main(["predict", "--checkpoint", str(tmp_path / "m.pt"), str(images), "--out", str(tmp_path / "out"),
                 "--quiet", "--device", "cpu"]) == 0
    for k, size in enumerate([(60, 80), (50, 40)]):
        ids = np.array(Image.open(tmp_path / "out" / f"{k}_instances.png"))
        assert ids.shape == size and ids.dtype == np.uint16
        listed = json.loads((tmp_path / "out" / f"{k}.json").read_text())
        assert (listed["height"], listed["width"]) == size
        assert ids.max() <= len(listed["instances"])
        assert Image.open(tmp_path / "out" / f"{k}_overlay.png").size == size[::-1]
    coco = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert {c["image_id"] for c in coco} <= {1, 2} and {c["category_id"] for c in coco} <= {3, 7}
    assert main(["export", "--checkpoint", str(tmp_path / "m.pt"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "instance model" in capsys.readouterr().err

    # serve: the same instances as predict, the same 16-bit id PNG, and a page that lists the objects
    pytest.importorskip("fastapi")
    import base64
    import io

    from fastapi.testclient import TestClient

    from pixelwise.serve import create_app

    with TestClient(create_app(tmp_path / "m.pt", device="cpu")) as client:
        assert client.get("/api/info").json()["task"] == "instance"
        page = client.get("/").text
        assert 'const TASK = "instance"' in page and "POST api/instances" in page
        data = (images / "0.png").read_bytes()
        r = client.post("/api/instances", files={"file": ("0.png", data, "image/png")})
        assert r.status_code == 200, r.text
        body = r.json()
        listed = json.loads((tmp_path / "out" / "0.json").read_text())["instances"]
        assert [(o["id"], o["class_name"], o["score"], o["area"]) for o in body["instances"]] == [
            (o["id"], o["class"], o["score"], o["area"]) for o in listed]
        assert base64.b64decode(body["instances_png"]) == (tmp_path / "out" / "0_instances.png").read_bytes()
        overlay = np.array(Image.open(io.BytesIO(base64.b64decode(body["overlay_png"]))))
        assert np.array_equal(overlay, np.array(Image.open(tmp_path / "out" / "0_overlay.png")))
        r = client.post("/api/segment", files={"file": ("0.png", data, "image/png")})
        assert r.status_code == 409 and "POST to /api/instances" in r.json()["detail"]


def test_train_eval_predict_through_the_command_line_on_synthetic_instances(tmp_path, capsys):
    from pixelwise.data.instances import write_synthetic_instances

    data = write_synthetic_instances(tmp_path / "shapes", {"train": 4, "val": 2}, image_size=(64, 64))
    assert main(["datasets", "write-synthetic", str(tmp_path / "cli"), "--instances", "--splits", "val",
                 "--num-images", "2"]) == 0  # the same writer, from the command line, at the default size
    reference = write_synthetic_instances(tmp_path / "python", {"val": 2})
    assert (tmp_path / "cli" / "instances_val.json").read_text() == (reference / "instances_val.json").read_text()
    assert len(list((tmp_path / "cli" / "images" / "val").iterdir())) == 2
    run = tmp_path / "run"
    options = [f"model_kwargs.{k}={v}" for k, v in OPTIONS.items() if k != "score_threshold"]
    assert main(["train", "--data", str(data), "--model", "maskrcnn", "--out", str(run), "--steps", "2",
                 "--batch-size", "2", "--crop-size", "64", "64", "--quiet", "--set", *options]) == 0
    printed = capsys.readouterr().out
    assert "best val segm_AP" in printed and "| AP50" in printed
    recorded = __import__("yaml").safe_load((run / "config.yaml").read_text())  # the instance defaults, resolved
    assert (recorded["optimizer"], recorded["lr"], recorded["warmup_steps"]) == ("adamw", 2e-4, 0)
    ckpt = __import__("pixelwise").load_checkpoint(run / "best.pt")
    assert ckpt.card.task == "instance" and ckpt.card.classes == ["disk", "square", "triangle"]
    assert ckpt.card.category_ids == [1, 2, 3] and ckpt.best_score >= 0
    assert main(["eval", "--checkpoint", str(run / "best.pt"), "--data", str(data), "--split", "val", "--json",
                 str(tmp_path / "m.json"), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    for key in ("segm_AP", "segm_AP50", "segm_AP75", "bbox_AP", "bbox_AP50"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["segm_AP"] == pytest.approx(ckpt.metrics["segm_AP"])  # eval = the run's own validation
    assert main(["predict", "--checkpoint", str(run / "best.pt"), str(data / "images" / "val"), "--out",
                 str(tmp_path / "pred"), "--quiet"]) == 0
    assert len(list((tmp_path / "pred").glob("*_instances.png"))) == 2


def test_instance_training_refuses_what_it_cannot_use(tiny_dataset, tmp_path, capsys):
    assert main(["train", "--data", str(tiny_dataset), "--model", "maskrcnn", "--out", str(tmp_path / "a"),
                 "--steps", "1", "--quiet"]) == 2
    assert "data_kwargs.instances=connected_components" in capsys.readouterr().err
    assert main(["train", "--data", "synthetic", "--model", "maskrcnn", "--out", str(tmp_path / "b"), "--steps", "1",
                 "--quiet", "--set", "input_scale=0.5"]) == 2
    assert "input_scale apply to semantic models only" in capsys.readouterr().err


def test_bad_coco_files_stop_training_with_one_line_naming_the_file(tmp_path, capsys):
    from pixelwise.data.instances import write_synthetic_instances

    data = write_synthetic_instances(tmp_path / "shapes", {"train": 2, "val": 2}, image_size=(48, 48))
    path = data / "instances_train.json"
    good = json.loads(path.read_text())
    cases = {
        "not JSON": ('{"images": [', "is not valid JSON"),
        "missing image": (dict(good, annotations=[dict(good["annotations"][0], image_id=999)]), "999"),
        "short polygon": (dict(good, annotations=[dict(good["annotations"][0], segmentation=[[1, 2, 3, 4]])]),
                          "fewer than 3"),
    }
    for name, (content, expected) in cases.items():
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        assert main(["train", "--data", str(data), "--model", "maskrcnn", "--out", str(tmp_path / "run"),
                     "--steps", "1", "--quiet"]) == 2, name
        err = capsys.readouterr().err
        assert str(path) in err and expected in err and "Traceback" not in err, (name, err)
        assert len(err.strip().splitlines()) == 1, name
