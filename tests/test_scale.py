"""Scale: torchrun with 2 gloo processes, gradient accumulation, mixed precision, channels_last, clipping, warmup."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from pixelwise.data import EpochSampler
from pixelwise.engine.checkpoint import load_checkpoint
from pixelwise.engine.config import TrainConfig
from pixelwise.engine.train import Trainer, poly_lr_lambda, train
from pixelwise.errors import CheckpointError, ConfigError

# No BatchNorm: its batch statistics depend on how a batch is split, which is what these tests vary. Crops of the
# whole 48x48 image at scale 1, so no pixel is padding and every sample keeps its size.
NO_BN = {"base_channels": 4, "depth": 2, "batch_norm": False}


def config(data, **kw) -> TrainConfig:
    values = dict(
        data=str(data), model="unet", model_kwargs=NO_BN, epochs=2, batch_size=4, eval_batch_size=2,
        crop_size=(48, 48), scale_range=(1.0, 1.0), optimizer="sgd", lr=0.05, seed=5,
    )
    values.update(kw)
    return TrainConfig(**values)


def log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def losses(run):
    return [r["loss"] for r in log(run) if r["type"] == "train"]


def val(run):
    return [r for r in log(run) if r["type"] == "val"][-1]


def test_sharded_sampler_splits_each_global_batch_exactly():
    whole = list(EpochSampler(10, seed=1))
    shards = [list(EpochSampler(10, seed=1, num_replicas=3, rank=r)) for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    # Position p of the permutation goes to rank p % 3, with its augmentation seed: batch b of the three ranks
    # together is batch b of the single process (batch size x 3).
    for b in range(3):
        assert sorted(s[b] for s in shards) == sorted(whole[3 * b: 3 * b + 3])
    with pytest.raises(ValueError, match="rank"):
        EpochSampler(10, num_replicas=2, rank=2)


def test_gradient_accumulation_matches_the_whole_batch(tiny_dataset, tmp_path):
    """Batch 4 in one piece and batch 2 accumulated twice: same losses and weights, up to float rounding, even
    though the micro-batches hold different numbers of labelled pixels (the synthetic masks have void bands)."""
    whole, accum = tmp_path / "whole", tmp_path / "accum"
    m1 = train(config(tiny_dataset), whole, progress=False)
    m2 = train(config(tiny_dataset, batch_size=2, grad_accum_steps=2), accum, progress=False)
    a, b = losses(whole), losses(accum)
    assert len(a) == len(b) == 4  # 8 images / 4 per step x 2 epochs
    assert b == pytest.approx(a, rel=1e-5)
    sa, sb = load_checkpoint(whole / "last.pt").model_state, load_checkpoint(accum / "last.pt").model_state
    for k in sa:
        torch.testing.assert_close(sb[k], sa[k], rtol=1e-4, atol=1e-5)
    assert m2["mIoU"] == pytest.approx(m1["mIoU"], abs=1e-3)


def test_accumulation_that_needs_more_images_than_the_dataset_is_a_clear_error(tiny_dataset, tmp_path):
    with pytest.raises(ConfigError, match="16 images"):
        Trainer(config(tiny_dataset, batch_size=4, grad_accum_steps=4), tmp_path / "run")


def _torchrun(nproc: int, data, out, *sets: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "-m", "pixelwise", "train", "--data", str(data), "--model", "unet", "--epochs", "2", "--out", str(out),
        "--quiet", "--set", "model_kwargs={base_channels: 4, depth: 2, batch_norm: false}", "crop_size=[48,48]",
        "scale_range=[1.0,1.0]", "lr=0.05", "seed=5", "eval_batch_size=2", *sets,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_two_gloo_processes_reach_the_metrics_of_one_with_the_same_global_batch(tiny_dataset, tmp_path):
    """torchrun, 2 CPU processes x batch 2 against 1 process x batch 4 (the same 4 images per step, the same
    augmentation). Tolerance: losses within 1e-5 relative, weights within 1e-4, val mIoU within 1e-3 — float
    rounding of the differently ordered sums, nothing else."""
    one, two = tmp_path / "one", tmp_path / "two"
    train(config(tiny_dataset), one, progress=False)
    proc = _torchrun(2, tiny_dataset, two, "batch_size=2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "x 2 processes" in proc.stdout and proc.stdout.count("validation (val)") == 1  # rank 0 alone prints
    assert losses(two) == pytest.approx(losses(one), rel=1e-5)
    assert len(losses(two)) == 4
    vo, vt = val(one), val(two)
    assert vt["mIoU"] == pytest.approx(vo["mIoU"], abs=1e-3)
    assert vt["pixel_accuracy"] == pytest.approx(vo["pixel_accuracy"], abs=1e-3)
    # The validation shards were summed, not one shard reported: pixel counts over the whole split agree.
    state = load_checkpoint(two / "last.pt")
    assert state.world_size == 2
    for k, v in load_checkpoint(one / "last.pt").model_state.items():
        torch.testing.assert_close(state.model_state[k], v, rtol=1e-4, atol=1e-5)
    # A checkpoint of 2 processes resumes with 2 processes only: the global batch and the sample order depend on it.
    with pytest.raises(CheckpointError, match="nproc_per_node 2"):
        Trainer(config(tiny_dataset, batch_size=2, epochs=3), two, resume=True, progress=False)


def test_warmup_then_poly_schedule_values():
    f = poly_lr_lambda(10, power=0.9, warmup_steps=4, warmup_factor=0.1)
    assert [f(s) for s in range(5)] == pytest.approx([0.1, 0.325, 0.55, 0.775, 1.0])
    assert f(7) == pytest.approx((1 - 3 / 6) ** 0.9)
    assert f(10) == 0.0
    plain = poly_lr_lambda(10, power=0.9)
    assert [plain(s) for s in range(11)] == [(1 - s / 10) ** 0.9 for s in range(11)]


def test_warmup_reaches_the_log(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    train(config(tiny_dataset, batch_size=2, epochs=1, lr=0.1, warmup_steps=2, warmup_factor=0.5), run,
          progress=False)
    lrs = [r["lr"] for r in log(run) if r["type"] == "train"]
    assert lrs == pytest.approx([0.05, 0.075, 0.1, 0.1 * 0.5 ** 0.9])


def test_warmup_longer_than_the_run_is_a_clear_error(tiny_dataset, tmp_path):
    with pytest.raises(ConfigError, match="warmup_steps"):
        Trainer(config(tiny_dataset, epochs=1, warmup_steps=2), tmp_path / "run")  # 2 steps in all
    with pytest.raises(ConfigError, match="warmup_steps"):
        TrainConfig(steps=5, warmup_steps=5)


def test_clipping_bounds_the_first_update_and_logs_the_norm(tiny_dataset, tmp_path):
    """Plain SGD (no weight decay) with a global-norm clip c: the first update is lr * (clipped gradient), whose
    norm is exactly lr * c when the raw norm exceeds c."""
    cfg = config(tiny_dataset, epochs=None, steps=1, lr=0.1, momentum=0.0, weight_decay=0.0, clip_grad_norm=1e-3)
    t = Trainer(cfg, tmp_path / "run", progress=False)
    before = torch.cat([p.detach().flatten().clone() for p in t.model.parameters()])
    t.fit()
    after = torch.cat([p.detach().flatten() for p in t.model.parameters()])
    record = [r for r in log(tmp_path / "run") if r["type"] == "train"][0]
    assert record["grad_norm"] > 1e-3  # the raw norm, before clipping
    assert float((after - before).norm()) == pytest.approx(0.1 * 1e-3, rel=1e-3)


def test_bf16_autocast_trains_on_the_cpu(tiny_dataset, tmp_path):
    cfg = config(tiny_dataset, batch_size=2, epochs=3, precision="bf16", model_kwargs={"base_channels": 8, "depth": 2})
    t = Trainer(cfg, tmp_path / "run", progress=False)
    seen = []
    handle = t.model.inc.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    metrics = t.fit()
    handle.remove()
    assert seen[0] == torch.bfloat16  # the convolutions ran in bf16
    assert all(p.dtype == torch.float32 for p in t.model.parameters())  # the weights stay fp32
    values = losses(tmp_path / "run")
    assert all(v == v for v in values) and sum(values[-4:]) < sum(values[:4])
    assert metrics["pixel_accuracy"] > 0.5


def test_fp16_on_the_cpu_is_a_clear_error(tiny_dataset, tmp_path):
    with pytest.raises(ConfigError, match="bf16"):
        Trainer(config(tiny_dataset, precision="fp16", device="cpu"), tmp_path / "run")
    with pytest.raises(ConfigError, match="precision"):
        TrainConfig(precision="fp8")


def test_channels_last_trains_like_nchw(tiny_dataset, tmp_path):
    a, b = tmp_path / "nchw", tmp_path / "nhwc"
    train(config(tiny_dataset, epochs=1), a, progress=False)
    t = Trainer(config(tiny_dataset, epochs=1, channels_last=True), b, progress=False)
    conv = next(m for m in t.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    t.fit()
    assert losses(b) == pytest.approx(losses(a), rel=1e-4)


@pytest.mark.compile
def test_compiled_training_matches_eager(tiny_dataset, tmp_path):
    a, b = tmp_path / "eager", tmp_path / "compiled"
    train(config(tiny_dataset, epochs=1), a, progress=False)
    train(config(tiny_dataset, epochs=1, compile=True), b, progress=False)
    assert losses(b) == pytest.approx(losses(a), rel=1e-3)
    # Checkpoints of a compiled run hold the plain module's keys (no "_orig_mod." prefix).
    assert set(load_checkpoint(b / "last.pt").model_state) == set(load_checkpoint(a / "last.pt").model_state)


@pytest.mark.compile
def test_compiled_training_under_two_gloo_processes_matches_eager(tiny_dataset, tmp_path):
    """torch.compile of the DDP-wrapped model (Dynamo's DDPOptimizer splits the graph at gradient-bucket
    boundaries so that all-reduce still overlaps backward): the same losses and weights as the eager 2-process run.
    Tolerance as for compiled against eager in one process."""
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    for out, sets in ((eager, ()), (compiled, ("compile=true",))):
        proc = _torchrun(2, tiny_dataset, out, "batch_size=2", *sets)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(losses(compiled)) == 4
    assert losses(compiled) == pytest.approx(losses(eager), rel=1e-3)
    weights = load_checkpoint(compiled / "last.pt").model_state
    assert set(weights) == set(load_checkpoint(eager / "last.pt").model_state)  # no "_orig_mod." / "module."
    for k, v in load_checkpoint(eager / "last.pt").model_state.items():
        torch.testing.assert_close(weights[k], v, rtol=1e-3, atol=1e-4)
