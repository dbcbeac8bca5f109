"""Click models (task "prompt", RITM): the model, the object data, training, the click protocol's validation and
eval, the predictor, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.cli import main
from pixelwise.data.instances import connected_components
from pixelwise.data.objects import ObjectDataset, build_object_dataset, object_train_transforms
from pixelwise.engine.checkpoint import load_checkpoint, score_improves
from pixelwise.engine.config import TrainConfig
from pixelwise.engine.predictor import Predictor
from pixelwise.engine.train import Trainer, train
from pixelwise.errors import ConfigError
from pixelwise.models import build_model, list_models, model_complexity
from pixelwise.prompt.click_predictor import ClickPredictor
from pixelwise.prompt.click_training import evaluate_clicks, spread_indices, summarize_clicks

TINY_MODEL = {"base_channels": 4, "depth": 2}


# -- the model --------------------------------------------------------------------------------------------------------
def test_click_models_are_registered_with_the_prompt_task():
    assert set(list_models(task="prompt")) == {"click_unet", "click_encoder_unet", "click_lraspp",
                                               "click_deeplabv3plus"}
    assert "click_unet" not in list_models(task="semantic")
    cost = model_complexity("click_unet", num_classes=21, size=(64, 64), **TINY_MODEL)  # counted with one output
    assert cost["params"] > 0 and cost["flops"] > 0
    with pytest.raises(ConfigError, match="num_classes must be 1"):
        build_model("click_unet", 3, 3, **TINY_MODEL)
    with pytest.raises(ConfigError, match="unknown option"):
        build_model("click_unet", 1, 3, base_channel=4)  # the base's options are checked


@pytest.mark.parametrize("name, options, channels", [
    ("click_unet", TINY_MODEL, 3),
    ("click_unet", TINY_MODEL, 1),
    ("click_encoder_unet", {"backbone": "resnet18", "decoder_channels": [16, 8, 8, 8, 8]}, 3),
    ("click_lraspp", {"backbone": "mobilenet_v2", "inter_channels": 8}, 3),
])
def test_forward_shapes_at_any_size(name, options, channels):
    model = build_model(name, 1, channels, **options).eval()
    n, h, w = 2, 37, 50
    with torch.no_grad():
        logits = model(torch.randn(n, channels, h, w), torch.zeros(n, 2, h, w), torch.zeros(n, 1, h, w))
    assert logits.shape == (n, 1, h, w) and logits.dtype == torch.float32
    with pytest.raises(ValueError, match="clicks must be"):
        model(torch.randn(n, channels, h, w), torch.zeros(n, 2, h, w + 1), torch.zeros(n, 1, h, w))


def test_pretrained_first_conv_keeps_its_filters_and_the_click_channels_start_at_their_spread(mobilenet_v2_weights):
    options = {"backbone": "mobilenet_v2", "backbone_weights": str(mobilenet_v2_weights),
               "decoder_channels": [16, 8, 8, 8, 8]}
    torch.manual_seed(0)
    click = build_model("click_encoder_unet", 1, 3, **options)
    plain = build_model("encoder_unet", 1, 3, **options)
    first = click.base.backbone.stages[0][0][0]  # MobileNetV2's features[0]: conv-BN-ReLU6
    assert first.in_channels == 6
    reference = plain.backbone.stages[0][0][0].weight
    assert torch.equal(first.weight[:, :3], reference)  # the ImageNet filters, untouched
    # The click channels start random with the ImageNet filters' spread (zeros learned nothing in 120 steps).
    extra = first.weight[:, 3:].detach()
    assert torch.count_nonzero(extra) == extra.numel()
    assert float(extra.std()) == pytest.approx(float(reference.std()), rel=0.15)
    click.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a = click(x, torch.zeros(1, 2, 64, 64), torch.zeros(1, 1, 64, 64))
        b = click(x, torch.ones(1, 2, 64, 64), torch.ones(1, 1, 64, 64))
        # No click and no previous mask: the click channels add nothing, the encoder sees the image alone.
        first.weight[:, 3:] = 0
        c = click(x, torch.zeros(1, 2, 64, 64), torch.zeros(1, 1, 64, 64))
    assert not torch.allclose(a, b)  # the clicks count from the first step
    assert torch.equal(a, c)
    # A base trained from scratch gets initialised click channels, which do change the output.
    scratch = build_model("click_unet", 1, 3, **TINY_MODEL)
    assert torch.count_nonzero(scratch.base.inc.block[0].weight[:, 3:]) > 0


# -- the objects ------------------------------------------------------------------------------------------------------
def test_objects_of_synthetic_instances_are_its_instances_of_the_minimum_area():
    ds = build_object_dataset("synthetic_instances", "val", min_object_area=50, num_images=6)
    expected = []
    for i in range(len(ds.instances)):
        _, target = ds.instances.raw_item(i)
        expected += [(i, j) for j, a in enumerate(target["area"].tolist()) if a >= 50]
    assert ds.objects == expected and len(ds) == len(expected) > 6
    image, mask = ds[0]
    assert image.dtype == torch.uint8 and mask.dtype == torch.int64 and set(mask.unique().tolist()) == {0, 1}
    i, j = ds.objects[0]
    assert torch.equal(mask, ds.instances.raw_item(i)[1]["masks"][j].long())
    assert ds.classes == ["object"] and ds.num_classes == 1


def _tiny_semantic_folder(root, masks):
    """A folder dataset of the given class-id masks (classes background, a, b) with noise images."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for k, mask in enumerate(masks):
            Image.fromarray(rng.integers(0, 255, (*mask.shape, 3), dtype=np.uint8)).save(
                root / "images" / split / f"{k}.png")
            Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / split / f"{k}.png")
    (root / "classes.txt").write_text("background\na\nb\n")
    return root


def test_objects_of_a_semantic_folder_are_its_connected_components(tmp_path):
    m0 = np.zeros((40, 40), np.uint8)
    m0[2:12, 2:12] = 1       # a: 100 px
    m0[20:30, 2:12] = 1      # a: another component, 100 px
    m0[2:12, 20:35] = 2      # b: 150 px
    m0[30:33, 30:33] = 2     # b: 9 px, below the minimum area
    m0[35:40, 0:40] = 255    # void: no object
    m1 = np.zeros((40, 40), np.uint8)
    m1[5:25, 5:25] = 2       # b: 400 px, touching an a-component below
    m1[25:35, 5:25] = 1      # a: 200 px
    root = _tiny_semantic_folder(tmp_path / "sem", [m0, m1])
    ds = build_object_dataset(root, "train", min_object_area=20)
    expected = 0
    for mask in (m0, m1):
        for c in (1, 2):
            labels, n = connected_components(mask == c)
            expected += int((np.bincount(labels.ravel())[1:] >= 20).sum())
    assert len(ds) == expected == 5
    assert sorted(int(ds[k][1].sum()) for k in range(len(ds))) == [100, 100, 150, 200, 400]
    # the explicit option says the same; the minimum area is an option
    assert len(build_object_dataset(root, "train", instances="connected_components", min_object_area=20)) == 5
    assert len(build_object_dataset(root, "train", min_object_area=5)) == 6
    with pytest.raises(Exception, match="min_object_area"):
        build_object_dataset(root, "train", min_object_area=1000)


def test_training_crops_keep_the_object_and_pad_with_ignore(tmp_path):
    ds = build_object_dataset("synthetic_instances", "train", min_object_area=100, num_images=4)
    tf = object_train_transforms((96, 160), (1.0, 1.0), color_jitter=0, min_pixels=100)
    for k in range(len(ds)):
        image, mask = ds.raw_item(k)
        for seed in range(3):
            torch.manual_seed(seed)
            out_image, out_mask = tf(image, mask)
            assert out_image.shape == (3, 96, 160) and out_mask.shape == (96, 160)
            assert int((out_mask == 1).sum()) >= min(100, int(mask.sum()))  # re-drawn until the object is in
            assert bool((out_mask == 255).any())  # 128 px wide images padded to 160: unknown, not background


# -- training, validation, eval, predictor ----------------------------------------------------------------------------
def test_task_defaults_and_options_of_click_models():
    cfg = TrainConfig(model="click_unet", steps=10)
    assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.scale_range, cfg.warmup_steps) == ("adamw", 5e-4, 8,
                                                                                          (0.75, 1.4), 0)
    assert cfg.prompt_kwargs["initial_clicks"] == 3 and cfg.prompt_kwargs["loss"] == "normalized_focal"
    assert TrainConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()
    assert "prompt_kwargs" not in TrainConfig().to_dict()  # other tasks' records are as before
    with pytest.raises(ConfigError, match="prompt_kwargs"):
        TrainConfig(model="unet", prompt_kwargs={"iterations": 2})
    with pytest.raises(ConfigError, match="unknown prompt_kwargs"):
        TrainConfig(model="click_unet", prompt_kwargs={"iteration": 2})
    with pytest.raises(ConfigError, match="loss"):
        TrainConfig(model="click_unet", prompt_kwargs={"loss": "dice"})


def test_best_checkpoint_is_the_lowest_noc():
    assert score_improves("NoC@85", 5.0, -1.0)  # the first validation
    assert score_improves("NoC@85", 4.0, 5.0) and not score_improves("NoC@85", 6.0, 5.0)
    assert not score_improves("NoC@85", float("nan"), 5.0)
    assert score_improves("mIoU", 0.6, 0.5) and not score_improves("mIoU", 0.4, 0.5)


def _isbi_crop(isbi_dir, root, size=128):
    """One ISBI 2012 training image (its top-left size x size pixels) as both train and val split."""
    for sub in ("images", "masks"):
        for split in ("train", "val"):
            (root / sub / split).mkdir(parents=True)
            Image.open(isbi_dir / sub / "train" / "00.png").crop((0, 0, size, size)).save(root / sub / split / "0.png")
    (root / "classes.txt").write_text((isbi_dir / "classes.txt").read_text())
    return root


def test_training_on_one_image_lowers_its_noc(isbi_dir, tmp_path):
    """Overfit: a small click U-Net trained 80 steps on the cells (connected components) of one ISBI crop needs
    fewer clicks to reach IoU 0.85 on them than the untrained one (measured: 10 -> 6.6 of at most 10 clicks)."""
    data = _isbi_crop(isbi_dir, tmp_path / "isbi1")
    cfg = TrainConfig(data=str(data), model="click_unet", model_kwargs={"base_channels": 8, "depth": 3}, steps=80,
                      batch_size=4, crop_size=(64, 64), lr=5e-3, seed=0, val_every=1000,
                      prompt_kwargs={"val_max_clicks": 10})
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert len(trainer.val_set) >= 10  # the cells of at least 100 pixels
    before = summarize_clicks(evaluate_clicks(trainer.model, trainer.val_set, max_clicks=10), 10)
    metrics = trainer.fit()  # its last validation: the same protocol on the same objects
    assert metrics["objects"] == before["objects"] and metrics["max_clicks"] == 10
    assert metrics["NoC@85"] <= 0.8 * before["NoC@85"], (before, metrics)
    assert metrics["mIoU@5"] > before["mIoU@5"] + 0.3
    assert load_checkpoint(tmp_path / "run" / "best.pt").best_score == metrics["NoC@85"]


def test_capped_objects_are_spread_over_the_split():
    # eval --max-objects and prompt_kwargs.val_max_objects score objects from every image, not the first image's.
    assert spread_indices(10, 3) == [0, 3, 6]
    assert spread_indices(10, 10) == spread_indices(10, 12) == spread_indices(10, None) == list(range(10))
    picked = spread_indices(499, 30)
    assert len(set(picked)) == 30 and picked == sorted(picked) and picked[-1] == 482
    with pytest.raises(ValueError, match=">= 1"):
        spread_indices(10, 0)


TINY_CLICK_TRAIN = ["--model", "click_unet", "--batch-size", "4", "--crop-size", "32", "32", "--quiet",
                    "--set", "model_kwargs.base_channels=4", "model_kwargs.depth=2", "data_kwargs.min_object_area=30",
                    "prompt_kwargs.val_max_objects=3", "prompt_kwargs.val_max_clicks=4"]


def test_cli_train_eval_json_and_the_card(tiny_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_dataset), "--out", str(run), "--steps", "3", *TINY_CLICK_TRAIN]) == 0
    out = capsys.readouterr().out
    assert "NoC@85" in out and "lower is better" in out and "train objects" in out
    ck = load_checkpoint(run / "best.pt")
    assert ck.card.task == "prompt" and ck.card.classes == ["object"] and ck.card.num_classes == 1
    assert ck.metrics["objects"] == 3 and 1 <= ck.best_score <= 4
    m = tmp_path / "m.json"
    assert main(["eval", "--checkpoint", str(run / "best.pt"), "--data", str(tiny_dataset), "--split", "val",
                 "--json", str(m), "--max-objects", "2", "--max-clicks", "3", "--data-option",
                 "min_object_area=30", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "NoC@90" in printed and "mIoU@3" in printed
    result = json.loads(m.read_text())
    for key in ("NoC@85", "NoC@90", "NoF@85", "NoF@90", "mIoU@1", "mIoU@3"):
        assert key in result
    assert result["objects"] == 2 and result["max_clicks"] == 3 and 1 <= result["NoC@85"] <= 3
    assert main(["eval", "--checkpoint", str(run / "best.pt"), "--data", str(tiny_dataset), "--tta",
                 "--quiet"]) == 2  # no test-time augmentation for a click model: a clear error
    assert "click model" in capsys.readouterr().err
    image = next((tiny_dataset / "images" / "val").iterdir())
    assert main(["predict", "--checkpoint", str(run / "best.pt"), str(image), "--out", str(tmp_path / "p"),
                 "--quiet"]) == 2  # it needs clicks: the message says how to give them
    assert "set_image" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(run / "best.pt"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "click model" in capsys.readouterr().err


def test_predictor_has_the_sam_predictor_interface(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_dataset), "--out", str(run), "--steps", "1", *TINY_CLICK_TRAIN]) == 0
    predictor = Predictor.from_checkpoint(run / "best.pt", device="cpu")
    assert isinstance(predictor, ClickPredictor) and predictor.task == "prompt"
    image = np.random.default_rng(0).integers(0, 255, (30, 41, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="set_image"):
        predictor.predict(point_coords=[[3, 4]], point_labels=[1])
    predictor.set_image(image)
    masks, scores, logits = predictor.predict(point_coords=np.array([[10.0, 20.0]]), point_labels=np.array([1]))
    assert masks.shape == (1, 30, 41) and masks.dtype == bool
    assert scores.shape == (1,) and scores.dtype == np.float32 and 0 <= scores[0] <= 1
    assert logits.shape == (1, 30, 41) and logits.dtype == np.float32
    assert np.array_equal(masks, logits > 0)
    # the previous mask feeds back; the same as the model on the same inputs
    masks2, _, logits2 = predictor.predict(point_coords=[[10, 20], [40, 0]], point_labels=[1, 0], mask_input=logits)
    from pixelwise.prompt.clicks import Click, click_maps

    maps = torch.from_numpy(click_maps([Click(20, 10, True), Click(0, 40, False)], (30, 41), 5))[None]
    x = predictor.transform(torch.from_numpy(image).permute(2, 0, 1))[None]
    with torch.no_grad():
        direct = predictor.model(x, maps, torch.sigmoid(torch.from_numpy(logits))[None])
    assert torch.allclose(torch.from_numpy(logits2), direct[0], atol=1e-5)
    # a tensor (C, H, W) image works the same
    predictor.set_image(torch.from_numpy(image).permute(2, 0, 1).contiguous())
    assert np.array_equal(predictor.predict(point_coords=[[10, 20]], point_labels=[1])[2], logits)
    for kwargs, message in (({"point_coords": [[41, 0]], "point_labels": [1]}, "outside"),
                            ({"point_coords": [[1, 1]], "point_labels": [2]}, "point_labels"),
                            ({"point_coords": [[1, 1]], "point_labels": [1], "box": [0, 0, 5, 5]}, "box"),
                            ({"point_coords": [[1, 1]], "point_labels": [1], "mask_input": np.zeros((1, 8, 8))},
                             "mask_input")):
        with pytest.raises(ValueError, match=message):
            predictor.predict(**kwargs)
    with pytest.raises(ValueError, match="3-channel"):
        predictor.set_image(image[..., :1])


def _click_config(data, **kw) -> TrainConfig:
    values = dict(data=str(data), model="click_unet", model_kwargs=dict(TINY_MODEL), epochs=3, batch_size=4,
                  crop_size=(32, 32), lr=5e-3, seed=3, data_kwargs={"min_object_area": 30},
                  prompt_kwargs={"val_max_objects": 2, "val_max_clicks": 3})
    values.update(kw)
    return TrainConfig(**values)


def test_resume_logs_the_same_losses_as_an_uninterrupted_run(tiny_dataset, tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    train(_click_config(tiny_dataset), full, progress=False)
    train(_click_config(tiny_dataset), split, progress=False, stop_after_epoch=1)
    train(_click_config(tiny_dataset), split, resume=True, progress=False)

    def records(run, kind):
        return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["type"] == kind]

    a = [(r["step"], r["loss"]) for r in records(full, "train")]
    b = [(r["step"], r["loss"]) for r in records(split, "train")]
    assert len(a) >= 6 and a == b  # the same objects, crops and clicks, step for step
    assert [r["NoC@85"] for r in records(full, "val")] == [r["NoC@85"] for r in records(split, "val")]
    sa, sb = load_checkpoint(full / "last.pt"), load_checkpoint(split / "last.pt")
    for k in sa.model_state:
        assert torch.equal(sa.model_state[k], sb.model_state[k]), k
