"""The training loop: logs, checkpoints, exact resume, poly schedule, config overrides."""

from __future__ import annotations

import json

import pytest
import torch

from pixelwise.engine.checkpoint import Checkpoint, ModelCard, load_checkpoint, save_checkpoint
from pixelwise.engine.config import TrainConfig, apply_overrides
from pixelwise.engine.train import Trainer, poly_lr_lambda, train
from pixelwise.errors import CheckpointError, ConfigError


def tiny_config(data, **kw) -> TrainConfig:
    values = dict(
        data=str(data), model="unet", model_kwargs={"base_channels": 4, "depth": 2}, epochs=3, batch_size=2,
        eval_batch_size=2, crop_size=(32, 32), optimizer="sgd", lr=0.05, seed=3,
    )
    values.update(kw)
    return TrainConfig(**values)


def read_log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def train_losses(run):
    return [(r["step"], r["loss"]) for r in read_log(run) if r["type"] == "train"]


def test_resume_logs_the_same_losses_as_an_uninterrupted_run(tiny_dataset, tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    train(tiny_config(tiny_dataset), full, progress=False)
    train(tiny_config(tiny_dataset), split, progress=False, stop_after_epoch=1)
    first = load_checkpoint(split / "last.pt")
    assert first.epoch == 1 and first.elapsed_s > 0
    train(tiny_config(tiny_dataset), split, resume=True, progress=False)
    # The time of the first part counts: elapsed_s goes on from the checkpoint instead of restarting at 0.
    later = [r["elapsed_s"] for r in read_log(split) if r["type"] == "val"]
    assert later[0] <= first.elapsed_s < later[1] < later[2]
    a, b = train_losses(full), train_losses(split)
    assert len(a) == 12  # 8 images / batch 2 = 4 steps x 3 epochs
    assert a == b  # bit-for-bit: same order, same augmentation, same optimizer and scheduler state
    va = [r["mIoU"] for r in read_log(full) if r["type"] == "val"]
    vb = [r["mIoU"] for r in read_log(split) if r["type"] == "val"]
    assert va == vb and len(va) == 3
    sa, sb = load_checkpoint(full / "last.pt"), load_checkpoint(split / "last.pt")
    for k in sa.model_state:
        assert torch.equal(sa.model_state[k], sb.model_state[k]), k


def test_resume_drops_log_lines_past_the_checkpoint(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(tiny_dataset), run, progress=False, stop_after_epoch=1)
    with open(run / "log.jsonl", "a") as f:  # what a run killed mid-epoch 2 leaves behind
        f.write(json.dumps({"type": "train", "epoch": 2, "step": 5, "loss": 9.9, "lr": 0.1}) + "\n")
    train(tiny_config(tiny_dataset), run, resume=True, progress=False)
    steps = [s for s, _ in train_losses(run)]
    assert steps == list(range(1, 13))
    assert 9.9 not in [loss for _, loss in train_losses(run)]


def test_checkpoint_holds_what_predict_and_resume_need(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    metrics = train(tiny_config(tiny_dataset, epochs=1), run, progress=False)
    assert {"mIoU", "pixel_accuracy", "IoU"} <= set(metrics)
    for name in ("last.pt", "best.pt"):
        state = torch.load(run / name, weights_only=True)  # loads without unpickling code
        card = state["card"]
        assert card["classes"] == ["background", "disk", "square", "triangle", "ring"]
        assert len(card["palette"]) == 5 and card["num_classes"] == 5 and card["in_channels"] == 3
        assert card["task"] == "semantic" and card["crop_size"] == [32, 32] and card["ignore_index"] == 255
        for key in ("model_state", "optimizer_state", "scheduler_state", "rng_state", "config", "epoch", "step"):
            assert key in state
        assert state["config"]["model_kwargs"] == {"base_channels": 4, "depth": 2}
        assert card["model_kwargs"] == {"base_channels": 4, "depth": 2}
    assert (run / "config.yaml").is_file()
    val = [r for r in read_log(run) if r["type"] == "val"]
    assert val[-1]["mIoU"] == pytest.approx(metrics["mIoU"])


def test_resume_refuses_a_run_of_another_model(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(tiny_dataset, epochs=1), run, progress=False)
    with pytest.raises(CheckpointError, match="model"):
        Trainer(tiny_config(tiny_dataset, model_kwargs={"base_channels": 8, "depth": 2}), run, resume=True)
    with pytest.raises(CheckpointError, match="does not exist"):
        Trainer(tiny_config(tiny_dataset), tmp_path / "never", resume=True)


def test_atomic_save_keeps_the_previous_checkpoint_when_a_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    card = ModelCard("unet", 1, ["thing"], [[1, 2, 3]], [0.5] * 3, [0.25] * 3)
    save_checkpoint(Checkpoint(card, {"w": torch.ones(2)}), path)

    def broken_save(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(Checkpoint(card, {"w": torch.zeros(2)}), path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path).model_state["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_poly_schedule_values():
    f = poly_lr_lambda(100, 0.9)
    assert f(0) == 1.0
    assert f(50) == pytest.approx(0.5**0.9)
    assert f(100) == 0.0


def test_lr_follows_poly_schedule_in_the_log(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(tiny_dataset, epochs=None, steps=6, lr=0.1), run, progress=False)
    lrs = [r["lr"] for r in read_log(run) if r["type"] == "train"]
    assert lrs == pytest.approx([0.1 * (1 - s / 6) ** 0.9 for s in range(6)])
    # Each step's time and the part of it spent waiting for data, for finding a starving loader.
    for r in read_log(run):
        if r["type"] == "train":
            assert 0 <= r["data_s"] <= r["step_s"] and r["step_s"] > 0


def test_training_lowers_the_loss_on_synthetic_data(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(tiny_dataset, epochs=None, steps=60, optimizer="adamw", lr=0.01, val_every=100,
                      model_kwargs={"base_channels": 8, "depth": 2})
    train(cfg, run, progress=False)
    losses = [loss for _, loss in train_losses(run)]
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10


def test_task_defaults_fill_only_what_is_not_given():
    semantic = TrainConfig()
    assert (semantic.optimizer, semantic.lr, semantic.batch_size, semantic.eval_batch_size) == ("sgd", 0.01, 8, 4)
    assert semantic.scale_range == (0.5, 2.0) and semantic.warmup_steps == 0
    instance = TrainConfig(model="maskrcnn", steps=300)
    assert (instance.optimizer, instance.lr, instance.batch_size, instance.eval_batch_size) == ("adamw", 2e-4, 2, 2)
    assert instance.scale_range == (0.75, 1.25) and instance.warmup_steps == 30  # a tenth of the run
    assert TrainConfig(model="maskrcnn", steps=5000).warmup_steps == 50  # at most 50
    assert TrainConfig(model="maskrcnn").warmup_steps is None  # epochs: set by the trainer, once it knows the length
    given = TrainConfig(model="maskrcnn", steps=300, optimizer="sgd", lr=0.02, batch_size=4, warmup_steps=0,
                        scale_range=(0.5, 2.0))
    assert (given.optimizer, given.lr, given.batch_size, given.warmup_steps) == ("sgd", 0.02, 4, 0)
    assert given.scale_range == (0.5, 2.0) and given.eval_batch_size == 2
    # the resolved values are what the run records, so a resumed run does not depend on the defaults of its day
    assert TrainConfig.from_dict(instance.to_dict()).to_dict() == instance.to_dict()
    with pytest.raises(ConfigError, match="maskrcn"):
        TrainConfig(model="maskrcn")


def test_config_overrides_and_errors(tmp_path):
    values = apply_overrides({"lr": 0.1}, ["lr=0.5", "crop_size=[64, 96]", "model_kwargs.base_channels=32"])
    cfg = TrainConfig.from_dict({**values, "epochs": 2})
    assert cfg.lr == 0.5 and cfg.crop_size == (64, 96) and cfg.model_kwargs == {"base_channels": 32}
    with pytest.raises(ConfigError, match="nonsense"):
        TrainConfig.from_dict({"nonsense": 1})
    with pytest.raises(ConfigError, match="either epochs or steps"):
        TrainConfig(epochs=1, steps=1)
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["lr"])
    with pytest.raises(ConfigError, match="optimizer"):
        TrainConfig(optimizer="lbfgs")


def test_batch_larger_than_dataset_is_a_clear_error(tiny_dataset, tmp_path):
    with pytest.raises(ConfigError, match="--batch-size 8"):
        Trainer(tiny_config(tiny_dataset, batch_size=16), tmp_path / "run")


def test_median_frequency_weights_reach_the_loss(tiny_dataset, tmp_path):
    t = Trainer(tiny_config(tiny_dataset, class_weights="median-frequency"), tmp_path / "run", progress=False)
    w = t.criterion.class_weights
    assert w is not None and w.shape == (5,) and torch.all(w >= 0)
    assert not torch.allclose(w, torch.ones(5))


@pytest.mark.parametrize("loss, kwargs", [("focal", {"gamma": 1.0}), ("cross_entropy+lovasz", {}),
                                          ("ohem", {"keep": 0.5})])
def test_training_with_another_loss_lowers_it(tiny_dataset, tmp_path, loss, kwargs):
    from pixelwise.losses import FocalLoss, OhemCrossEntropyLoss, SumLoss

    run = tmp_path / "run"
    cfg = tiny_config(tiny_dataset, epochs=None, steps=40, optimizer="adamw", lr=0.01, val_every=100, loss=loss,
                      loss_kwargs=kwargs, class_weights="median-frequency",
                      model_kwargs={"base_channels": 8, "depth": 2})
    trainer = Trainer(cfg, run, progress=False)
    expected = {"focal": FocalLoss, "ohem": OhemCrossEntropyLoss}.get(loss, SumLoss)
    assert isinstance(trainer.criterion, expected)
    trainer.fit()
    losses = [value for _, value in train_losses(run)]
    assert sum(losses[-8:]) / 8 < 0.8 * sum(losses[:8]) / 8


def test_bad_loss_config_is_a_clear_error(tiny_dataset, tmp_path):
    with pytest.raises(ConfigError, match="loss must be one of cross_entropy, dice"):
        TrainConfig(loss="bce")
    with pytest.raises(ConfigError, match="gamma.*not accepted"):
        Trainer(tiny_config(tiny_dataset, loss="dice", loss_kwargs={"gamma": 2}), tmp_path / "run")
