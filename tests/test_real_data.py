"""Real data: U-Net learns CamVid in a few minutes and overfits one CamVid image (the seeds' sanity check).

These read ../shared/data and take minutes on 2 CPU cores; they are marked slow (`make test` runs them)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pixelwise.data import SegmentationFolder
from pixelwise.engine.config import TrainConfig
from pixelwise.engine.train import train

pytestmark = pytest.mark.slow


def chance_baselines(dataset: SegmentationFolder) -> tuple[float, float]:
    """Two floors from the class frequencies p_c of ``dataset``: the expected mIoU of a predictor that draws each
    pixel's class uniformly at random (class c's expected IoU is (p_c / K) / (p_c + 1/K - p_c / K)), and the pixel
    accuracy of one that always answers the most frequent class (max p_c)."""
    stats = dataset.check()
    p = stats["class_pixels"] / stats["class_pixels"].sum()
    k = len(p)
    return float(np.mean((p / k) / (p + 1 / k - p / k))), float(p.max())


def test_unet_learns_camvid_in_a_few_minutes(camvid_dir, tmp_path):
    cfg = TrainConfig(
        data=str(camvid_dir), model="unet", model_kwargs={"base_channels": 16, "depth": 4},
        steps=300, batch_size=8, eval_batch_size=8, input_scale=0.25, crop_size=(96, 128), scale_range=(0.75, 1.5),
        optimizer="adamw", lr=0.003, val_every=100, seed=0,
    )
    metrics = train(cfg, tmp_path / "run", progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r["type"] == "train"]
    first, last = np.mean(losses[:20]), np.mean(losses[-20:])
    chance, majority = chance_baselines(SegmentationFolder(camvid_dir, "val"))
    print(f"CamVid val after 300 steps: mIoU {metrics['mIoU']:.4f} (chance {chance:.4f}), pixel accuracy "
          f"{metrics['pixel_accuracy']:.4f} (majority class {majority:.4f}), loss {first:.3f} -> {last:.3f}")
    # Measured: mIoU 0.24 (7x chance), pixel accuracy 0.66, loss 1.84 -> 0.66; the bounds leave room for other CPUs.
    assert last < 0.5 * first
    assert metrics["mIoU"] > 4 * chance
    assert metrics["pixel_accuracy"] > 1.5 * majority


def test_unet_overfits_one_camvid_image(camvid_dir, tmp_path):
    # The seeds' sanity check: a model that cannot memorise a single example has a bug.
    cfg = TrainConfig(
        data=str(camvid_dir), model="unet", model_kwargs={"base_channels": 16, "depth": 4},
        train_split="train[:1]", val_split="train[:1]", steps=300, batch_size=1, eval_batch_size=1,
        input_scale=0.5, crop_size=(180, 240), scale_range=(1.0, 1.0), hflip=False, color_jitter=0.0,
        optimizer="adamw", lr=0.003, weight_decay=0.0, val_every=1000, seed=0,
    )
    metrics = train(cfg, tmp_path / "run", progress=False)
    print(f"one CamVid image after 300 steps: pixel accuracy {metrics['pixel_accuracy']:.4f}")
    assert metrics["pixel_accuracy"] >= 0.95
