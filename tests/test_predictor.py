"""The ModelCard in every checkpoint, checkpoints of format 1 (before the card) still loading, and the Predictor:
one pipeline whose output equals the recipe computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pixelwise import Checkpoint, ModelCard, Predictor, load_checkpoint
from pixelwise.cli import main
from pixelwise.data.synthetic import write_synthetic_folder
from pixelwise.engine.checkpoint import CHECKPOINT_VERSION, get_rng_state, save_checkpoint
from pixelwise.engine.inference import InferenceOptions
from pixelwise.errors import CheckpointError
from pixelwise.models import build_model

CLASSES = ["background", "disk", "square", "triangle", "ring"]
PALETTE = [[48, 48, 48], [230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25]]  # the synthetic data's
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
KWARGS = {"base_channels": 4, "depth": 2}


def _card(**kw) -> ModelCard:
    values = dict(model="unet", num_classes=5, classes=CLASSES, palette=PALETTE, mean=MEAN, std=STD,
                  model_kwargs=KWARGS, input_scale=0.5, crop_size=(24, 32))
    values.update(kw)
    return ModelCard(**values)


def _format1_file(path, model: torch.nn.Module) -> None:
    """A checkpoint exactly as pixelwise wrote them before the ModelCard (Trainer.state() at a4dfc7c): the card's
    fields at the top level, version 1."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.save({
        "version": 1, "model": "unet", "model_kwargs": dict(KWARGS), "num_classes": 5, "in_channels": 3,
        "classes": CLASSES, "palette": PALETTE, "ignore_index": 255, "mean": MEAN, "std": STD, "input_scale": 0.5,
        "config": {"model": "unet", "model_kwargs": dict(KWARGS), "crop_size": [24, 32], "epochs": 1, "steps": None},
        "model_state": model.state_dict(), "optimizer_state": optimizer.state_dict(),
        "scheduler_state": {"last_epoch": 3}, "scaler_state": {}, "world_size": 1, "rng_state": get_rng_state(),
        "epoch": 1, "step": 3, "metrics": {"mIoU": 0.25}, "best_miou": 0.25, "elapsed_s": 1.5,
        "epoch_loss": [0.0, 0],
    }, path)


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("unet", num_classes=5, in_channels=3, **KWARGS).eval()


def _by_hand(model, image: torch.Tensor, input_scale: float) -> torch.Tensor:
    """The recipe, written out: [0, 1] -> normalise -> resize by input_scale -> model -> logits back to the
    image's size (bilinear) -> argmax. uint8 (C, H, W) -> int64 (H, W)."""
    x = image.float()[None] / 255
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(round(h * input_scale), round(w * input_scale)), mode="bilinear",
                          align_corners=False, antialias=True)
    with torch.no_grad():
        logits = model(small)
    return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False).argmax(1)[0]


def test_card_round_trips_and_refuses_what_it_cannot_run():
    card = _card()
    assert ModelCard.from_dict(card.to_dict()) == card
    assert card.task == "semantic" and card.format_version == CHECKPOINT_VERSION
    with pytest.raises(CheckpointError, match="unknown model card fields .'colour'."):
        ModelCard.from_dict({**card.to_dict(), "colour": 1}, "x.pt")
    with pytest.raises(CheckpointError, match="5 classes but 4 names"):
        _card(classes=CLASSES[:4])
    with pytest.raises(CheckpointError, match="mean and std need 1 values"):
        _card(in_channels=1)
    with pytest.raises(CheckpointError, match="unknown task 'depth'"):  # a later issue's
        _card(task="depth")
    with pytest.raises(CheckpointError, match="trained for 5 classes .* but val has 2"):
        card.check_dataset(["a", "b"], 3, "val", "x.pt")
    with pytest.raises(CheckpointError, match="expects 3-channel images, val has 1-channel"):
        card.check_dataset(CLASSES, 1, "val", "x.pt")


def test_a_format1_checkpoint_still_loads_predicts_and_resumes(tmp_path):
    model = _model()
    path = tmp_path / "old.pt"
    _format1_file(path, model)
    ckpt = load_checkpoint(path)
    assert ckpt.card == _card(format_version=1)  # crop_size recovered from the old file's config
    assert (ckpt.epoch, ckpt.step, ckpt.best_score, ckpt.epoch_loss) == (1, 3, 0.25, (0.0, 0))
    image = torch.randint(0, 256, (3, 40, 56), dtype=torch.uint8)
    predictor = Predictor.from_checkpoint(path, "cpu")
    assert torch.equal(predictor(image).class_ids[0], _by_hand(model, image, 0.5))
    # Written again, it is a format-2 file with the same card and weights.
    save_checkpoint(ckpt, tmp_path / "new.pt")
    raw = torch.load(tmp_path / "new.pt", weights_only=True)
    assert raw["version"] == CHECKPOINT_VERSION and raw["card"]["crop_size"] == [24, 32] and "classes" not in raw
    again = load_checkpoint(tmp_path / "new.pt")
    assert again.card == _card() and again.step == 3
    for k, v in model.state_dict().items():
        assert torch.equal(again.model_state[k], v), k


def test_the_command_line_reads_a_format1_checkpoint(tmp_path):
    _format1_file(tmp_path / "old.pt", _model())
    data = write_synthetic_folder(tmp_path / "tiny", {"test": 2}, image_size=(40, 48))
    assert main(["predict", "--checkpoint", str(tmp_path / "old.pt"), str(data / "images" / "test"), "--out",
                 str(tmp_path / "out"), "--quiet", "--device", "cpu", "--mode", "slide"]) == 0
    assert len(list((tmp_path / "out").glob("*_overlay.png"))) == 2
    assert main(["eval", "--checkpoint", str(tmp_path / "old.pt"), "--data", str(data), "--split", "test",
                 "--quiet", "--device", "cpu"]) == 0


def test_predictor_is_the_recipe_by_hand_with_every_result_view(tmp_path):
    model = _model(1)
    save_checkpoint(Checkpoint(_card(), model.state_dict()), tmp_path / "m.pt")
    predictor = Predictor.from_checkpoint(tmp_path / "m.pt", "cpu")
    assert predictor.task == "semantic" and predictor.classes == CLASSES and predictor.source.endswith("m.pt")
    images = torch.randint(0, 256, (2, 3, 36, 52), dtype=torch.uint8)
    result = predictor(images)
    assert result.scores.shape == (2, 5, 36, 52) and not result.are_probs
    for i in range(2):
        expected = _by_hand(model, images[i], 0.5)
        assert torch.equal(result.class_ids[i], expected)
        assert np.array_equal(result.mask(i), expected.numpy().astype(np.uint8))
        assert np.array_equal(result.color(i), np.asarray(PALETTE, dtype=np.uint8)[expected.numpy()])
    torch.testing.assert_close(result.probs.sum(1), torch.ones(2, 36, 52))
    blended = result.overlay(images[0], alpha=1.0)  # alpha 1: the mask's color alone
    assert np.array_equal(blended, result.color(0))
    # A list of same-size images is one batch; probs=True returns probabilities with the same argmax.
    listed = predictor([images[0], images[1]], probs=True)
    assert listed.are_probs and torch.equal(listed.class_ids, result.class_ids)


def test_slide_without_a_crop_uses_the_training_crop_on_the_card(tmp_path):
    save_checkpoint(Checkpoint(_card(), _model().state_dict()), tmp_path / "m.pt")
    predictor = Predictor.from_checkpoint(tmp_path / "m.pt", "cpu", mode="slide")
    assert predictor.options == InferenceOptions("slide", crop=(24, 32))
    tta = Predictor.from_checkpoint(tmp_path / "m.pt", "cpu", tta=True, scales=[0.5, 1.0])
    assert tta.options == InferenceOptions(scales=(0.5, 1.0), flip=True)
    assert tta(torch.zeros(3, 20, 20, dtype=torch.uint8)).are_probs


def test_every_training_checkpoint_carries_its_card(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_dataset), "--out", str(run), "--steps", "2", "--batch-size", "2",
                 "--crop-size", "32", "32", "--quiet", "--set", "model_kwargs.base_channels=4",
                 "model_kwargs.depth=2", "input_scale=0.75"]) == 0
    for name in ("best.pt", "last.pt"):
        card = load_checkpoint(run / name).card
        assert card == _card(input_scale=0.75, crop_size=(32, 32))
    img = Image.open(next((tiny_dataset / "images" / "test").iterdir()))
    assert Predictor.from_checkpoint(run / "best.pt", "cpu")(torch.from_numpy(np.array(img)).permute(2, 0, 1))


def test_weights_only_checkpoint_refuses_resume_with_a_clear_message(tiny_dataset, tmp_path):
    from pixelwise.engine.config import TrainConfig
    from pixelwise.engine.train import Trainer

    cfg = TrainConfig(data=str(tiny_dataset), model="unet", model_kwargs=dict(KWARGS), steps=2, batch_size=2,
                      crop_size=(32, 32))
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(Checkpoint(_card(), _model().state_dict()), run / "last.pt")
    with pytest.raises(CheckpointError, match="holds weights only"):
        Trainer(cfg, run, resume=True, progress=False)
