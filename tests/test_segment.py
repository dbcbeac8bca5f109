"""``pixelwise segment`` (a click model's checkpoint and a tiny SAM state dict), its bad inputs, and the prompt API
of ``pixelwise serve`` through FastAPI's test client: each click's mask is ClickPredictor's for the same clicks with
the previous mask fed back, undo, saving into a folder dataset that ``pixelwise datasets check`` accepts, the 4xx."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.cli import main
from pixelwise.engine.checkpoint import Checkpoint, ModelCard, save_checkpoint
from pixelwise.engine.predictor import Predictor
from pixelwise.prompt import SamPredictor, build_sam
from pixelwise.prompt.segment import sam_config_from_state_dict

#: A SAM small enough to run in milliseconds: what the shapes of its state dict must give back.
TINY_SAM = dict(encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=(1,),
                image_size=64, window_size=2, prompt_embed_dim=32, mask_in_chans=8, decoder_mlp_dim=64,
                iou_head_hidden_dim=32)


def write_click_checkpoint(path: Path, task: str = "prompt") -> Path:
    """An untrained tiny click model (or, ``task="semantic"``, a tiny U-Net) saved as pixelwise saves one."""
    torch.manual_seed(0)
    prompt = task == "prompt"
    card = ModelCard(model="click_unet" if prompt else "unet", num_classes=1 if prompt else 2,
                     classes=["object"] if prompt else ["background", "cell"],
                     palette=[[255, 255, 255]] if prompt else [[0, 0, 0], [255, 255, 255]],
                     mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], task=task,
                     model_kwargs={"base_channels": 4, "depth": 2})
    save_checkpoint(Checkpoint(card=card, model_state=card.build_model().state_dict()), path)
    return path


def write_image(path: Path, size: tuple[int, int] = (40, 60)) -> Path:
    """A dark image with a bright square (the object to click on), ``size`` (H, W)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (*size, 3), dtype=np.uint8)
    image[10:30, 15:40] = rng.integers(180, 255, (20, 25, 3), dtype=np.uint8)
    Image.fromarray(image).save(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("segment")
    torch.manual_seed(0)
    torch.save(build_sam("vit_b", **TINY_SAM).state_dict(), root / "sam_tiny.pth")
    return {"click": write_click_checkpoint(root / "click.pt"), "sam": root / "sam_tiny.pth",
            "semantic": write_click_checkpoint(root / "unet.pt", task="semantic"),
            "image": write_image(root / "cells.png")}


def _png(path_or_bytes) -> np.ndarray:
    with Image.open(io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes) as im:
        return np.array(im)


def _image(files) -> np.ndarray:
    return _png(files["image"])


# -- pixelwise segment ------------------------------------------------------------------------------------------------
def test_segment_with_a_click_model_writes_its_mask_overlay_and_json(files, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["segment", str(files["image"]), "--checkpoint", str(files["click"]), "--point", "20,15",
                 "--point", "5,35,0", "--out", str(out), "--device", "cpu"]) == 0
    assert "cells_mask.png" in capsys.readouterr().out
    predictor = Predictor.from_checkpoint(files["click"], device="cpu")
    predictor.set_image(_image(files))
    masks, scores, _ = predictor.predict(point_coords=[[20, 15], [5, 35]], point_labels=[1, 0])
    mask = _png(out / "cells_mask.png")
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    assert np.array_equal(mask == 255, masks[0])
    summary = json.loads((out / "cells.json").read_text())
    assert summary["points"] == [{"x": 20, "y": 15, "label": 1}, {"x": 5, "y": 35, "label": 0}]
    assert summary["box"] is None and summary["model"] == "click_unet"
    assert (summary["width"], summary["height"]) == (60, 40)
    assert summary["masks"] == [{"file": "cells_mask.png", "score": pytest.approx(float(scores[0]), abs=1e-6),
                                 "area": int(masks[0].sum()),
                                 "area_fraction": pytest.approx(masks[0].mean(), abs=1e-6)}]
    overlay = _png(out / "cells_overlay.png")
    assert overlay.shape == (40, 60, 3)
    assert tuple(overlay[15, 20]) == (0, 200, 0) and tuple(overlay[35, 5]) == (230, 20, 20)  # the clicks' dots


def test_the_sam_config_is_read_off_the_state_dict_shapes(files):
    from pixelwise.prompt import SAM_VARIANTS, SamConfig

    state = torch.load(files["sam"], weights_only=True)
    assert sam_config_from_state_dict(state) == SamConfig(**TINY_SAM)
    with torch.device("meta"):
        for variant, config in SAM_VARIANTS.items():
            assert sam_config_from_state_dict(build_sam(variant).state_dict()) == config, variant


def test_segment_with_sam_box_and_multimask(files, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["segment", str(files["image"]), "--checkpoint", str(files["sam"]), "--point", "20,15",
                 "--box", "10,5,45,35", "--multimask", "--out", str(out), "--device", "cpu"]) == 0
    assert "SAM (ViT width 32" in capsys.readouterr().out
    torch.manual_seed(0)
    predictor = SamPredictor(build_sam("vit_b", checkpoint=files["sam"], **TINY_SAM))
    predictor.set_image(_image(files))
    masks, ious, _ = predictor.predict(point_coords=[[20, 15]], point_labels=[1], box=[10, 5, 45, 35])
    summary = json.loads((out / "cells.json").read_text())
    assert summary["box"] == [10, 5, 45, 35] and summary["score"] == "predicted IoU"
    assert [m["file"] for m in summary["masks"]] == [f"cells_mask_{k}.png" for k in range(3)]
    assert [m["score"] for m in summary["masks"]] == pytest.approx(ious.tolist(), abs=1e-5)
    assert summary["best"] == int(np.argmax(ious))
    for k in range(3):
        assert np.array_equal(_png(out / f"cells_mask_{k}.png") == 255, masks[k])
    assert tuple(_png(out / "cells_overlay.png")[5, 25]) == (255, 200, 0)  # the box's top edge
    # the variant named: the tiny file is not vit_b, and the message says so
    assert main(["segment", str(files["image"]), "--checkpoint", str(files["sam"]), "--sam-variant", "vit_b",
                 "--point", "20,15", "--out", str(out)]) == 2
    assert "not the state dict of SAM vit_b" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--point", "60,10"], "point 1 (x=60, y=10) is outside the 60x40 image"),
    ([], "no prompt: give at least one --point"),
    (["--point", "20;15"], "--point '20;15' is not x,y or x,y,label"),
    (["--point", "20,15,2"], "--point '20,15,2' is not x,y or x,y,label"),
    (["--point", "20,15", "--box", "1,2,3"], "--box '1,2,3' is not x1,y1,x2,y2"),
    (["--point", "20,15", "--box", "1,1,30,30"], "click_unet is a click model: it takes clicks only, not a box"),
    (["--point", "20,15", "--multimask"], "leave out --multimask"),
    (["--point", "20,15", "--checkpoint", "image"], "is neither a pixelwise checkpoint nor a SAM state dict"),
    (["--point", "20,15", "--checkpoint", "semantic"], "holds a semantic model (unet), which segments whole images "
                                                       "without prompts: use `pixelwise predict --checkpoint"),
    (["--point", "20,15", "--checkpoint", "missing"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_status_2(files, tmp_path, capsys, args, message):
    checkpoint = str(files["click"])
    if "--checkpoint" in args:
        i = args.index("--checkpoint")
        checkpoint = str(files.get(args[i + 1], tmp_path / "missing.pt"))
        args = args[:i] + args[i + 2:]
    assert main(["segment", str(files["image"]), "--checkpoint", checkpoint, *args, "--out",
                 str(tmp_path / "out"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err
    assert not (tmp_path / "out").exists()


# -- pixelwise serve with a click model or SAM ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(files, tmp_path_factory):
    from fastapi.testclient import TestClient

    from pixelwise.serve import create_app

    save_to = tmp_path_factory.mktemp("saved") / "dataset"
    with TestClient(create_app(files["click"], device="cpu", save_to=save_to)) as c:
        c.save_to = save_to
        yield c


def _upload(client, files) -> str:
    response = client.post("/api/prompt/image", files={"file": ("cells.png", files["image"].read_bytes())})
    assert response.status_code == 200, response.text
    assert response.json()["width"] == 60 and response.json()["height"] == 40
    return response.json()["image_id"]


def _predict(client, image_id, points, labels, path="/api/prompt/predict", **extra):
    return client.post(path, json={"image_id": image_id, "points": points, "labels": labels, **extra})


def test_each_click_gives_the_click_predictors_mask_with_the_previous_mask_fed_back(client, files):
    image_id = _upload(client, files)
    predictor = Predictor.from_checkpoint(files["click"], device="cpu")
    predictor.set_image(_image(files))
    clicks, labels, logits = [[20, 15], [5, 35], [50, 5]], [1, 0, 0], None
    for n in range(1, 4):
        masks, scores, logits = predictor.predict(clicks[:n], labels[:n], mask_input=logits)
        body = _predict(client, image_id, clicks[:n], labels[:n]).json()
        assert np.array_equal(_png(base64.b64decode(body["mask_png"])) == 255, masks[0]), n
        assert body["score"] == pytest.approx(float(scores[0]), abs=1e-6) and body["area"] == int(masks[0].sum())
        assert body["clicks"] == n and not body["cached"]
        assert _png(base64.b64decode(body["overlay_png"])).shape == (40, 60, 3)
    # undo: the two first clicks again give their mask, from the server's history
    undone = _predict(client, image_id, clicks[:2], labels[:2]).json()
    assert undone["cached"]
    # then another third click: refined from the second click's mask, as the predictor does it
    _, _, second = predictor.predict(clicks[:1], labels[:1])
    masks, _, second = predictor.predict(clicks[:2], labels[:2], mask_input=second)
    assert np.array_equal(_png(base64.b64decode(undone["mask_png"])) == 255, masks[0])
    masks, _, _ = predictor.predict([*clicks[:2], [40, 20]], [1, 0, 1], mask_input=second)
    body = _predict(client, image_id, [*clicks[:2], [40, 20]], [1, 0, 1]).json()
    assert np.array_equal(_png(base64.b64decode(body["mask_png"])) == 255, masks[0]) and not body["cached"]


def test_save_adds_objects_to_a_folder_dataset_that_check_accepts(client, files, capsys):
    image_id = _upload(client, files)
    first = _predict(client, image_id, [[20, 15]], [1]).json()
    second = _predict(client, image_id, [[50, 35]], [1]).json()
    a = _predict(client, image_id, [[20, 15]], [1], path="/api/prompt/save", class_name=" cell ")
    b = _predict(client, image_id, [[50, 35]], [1], path="/api/prompt/save", class_name="background debris")
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    root = client.save_to
    assert a.json()["class_id"] == 1 and b.json()["class_id"] == 2 and a.json()["id"] == b.json()["id"] == "cells"
    assert Path(b.json()["mask"]) == root / "masks" / "train" / "cells.png"
    assert (root / "classes.txt").read_text() == "background\ncell\nbackground debris\n"
    expected = np.zeros((40, 60), np.uint8)
    expected[_png(base64.b64decode(first["mask_png"])) == 255] = 1
    expected[_png(base64.b64decode(second["mask_png"])) == 255] = 2  # the later object over the earlier one
    assert np.array_equal(_png(root / "masks" / "train" / "cells.png"), expected)
    assert np.array_equal(_png(root / "images" / "train" / "cells.png"), _image(files))
    # the same file uploaded again is another image of the dataset
    again = _predict(client, _upload(client, files), [[20, 15]], [1], path="/api/prompt/save", class_name="cell")
    assert again.json()["id"] == "cells_2" and again.json()["class_id"] == 1
    capsys.readouterr()
    assert main(["datasets", "check", str(root), "--quiet"]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_prompt_api_errors_are_4xx_with_a_message(client, files, tmp_path):
    from fastapi.testclient import TestClient

    from pixelwise.serve import create_app

    image_id = _upload(client, files)
    cases = [
        (_predict(client, "nope", [[1, 1]], [1]), 404, "unknown image id 'nope'"),
        (_predict(client, image_id, [[60, 1]], [1]), 400, "outside the 60x40 image"),
        (_predict(client, image_id, [], []), 400, "the prompt is empty"),
        (_predict(client, image_id, [[1, 1]], [1, 0]), 400, "one label per point"),
        (_predict(client, image_id, [[1, 1]], [1], box=[0, 0, 5, 5]), 400, "takes clicks only, not a box"),
        (_predict(client, image_id, [[1, 1]], [1], path="/api/prompt/save", class_name="a/b"), 400,
         "no path separator"),
        (_predict(client, image_id, [[1, 1]], [1], path="/api/prompt/save", class_name="cell", split="../x"), 400,
         "split name '../x' cannot be used"),
        (client.post("/api/prompt/image", files={"file": ("notes.txt", b"not an image")}), 415, "not an image"),
    ]
    with TestClient(create_app(files["click"], device="cpu")) as unsaved:
        cases.append((_predict(unsaved, _upload(unsaved, files), [[1, 1]], [1], path="/api/prompt/save",
                               class_name="cell"), 409, "--save-to DIR"))
    for response, status, message in cases:
        assert response.status_code == status and message in response.json()["detail"], response.text


def test_serve_a_sam_checkpoint_with_a_box(files):
    from fastapi.testclient import TestClient

    from pixelwise.serve import create_app

    with TestClient(create_app(files["sam"], device="cpu")) as client:
        info = client.get("/api/info").json()
        assert info["task"] == "prompt" and info["prompt"]["takes_box"] and info["model"].startswith("SAM")
        image_id = _upload(client, files)
        body = _predict(client, image_id, [], [], box=[10, 5, 45, 35]).json()
        assert body["clicks"] == 0 and 0 <= body["area"] <= 2400
        assert "api/prompt/predict" in client.get("/").text


def test_serve_options_that_do_not_fit_the_model(files, tmp_path, capsys):
    assert main(["serve", "--checkpoint", str(files["semantic"]), "--save-to", str(tmp_path / "d"),
                 "--device", "cpu", "--port", "0"]) == 2
    assert "--save-to is for click models and SAM" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", str(files["sam"]), "--tta", "--device", "cpu", "--port", "0"]) == 2
    assert "SAM runs on the whole image" in capsys.readouterr().err
