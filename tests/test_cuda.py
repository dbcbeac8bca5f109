"""What only a GPU can check: the training loop on CUDA at fp32 (against the same run on the CPU), fp16 with its
gradient scaler (trains, saves the scaler, resumes), and bf16. Skipped where there is no CUDA device, as in CI;
benchmarks/device_check.sh runs them on a lent GPU."""

from __future__ import annotations

import pytest
import torch

from test_scale import config as cpu_config
from test_scale import losses, val

from pixelwise.engine.checkpoint import load_checkpoint
from pixelwise.engine.config import TrainConfig
from pixelwise.engine.train import Trainer, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def config(data, **kw) -> TrainConfig:
    """test_scale.py's config (no BatchNorm, whole-image crops: the CPU and the GPU see the same batches and compute
    the same function, so their losses differ only by float rounding), on CUDA unless ``device`` says otherwise."""
    return cpu_config(data, **{"device": "cuda", **kw})


@pytest.fixture
def no_tf32():
    """fp32 on the GPU in full fp32: cuDNN's convolutions otherwise round their inputs to TF32 (10 mantissa bits).
    Set and restored by hand: torch.backends.cuda.matmul's attributes cannot be undone by monkeypatch."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_fp32_training_on_cuda_matches_the_cpu(tiny_dataset, tmp_path, no_tf32):
    cpu, gpu = tmp_path / "cpu", tmp_path / "cuda"
    train(config(tiny_dataset, device="cpu"), cpu, progress=False)
    t = Trainer(config(tiny_dataset), gpu, progress=False)
    assert next(t.model.parameters()).device.type == "cuda"
    t.fit()
    assert len(losses(gpu)) == 4  # 8 images / batch 4 x 2 epochs
    assert losses(gpu) == pytest.approx(losses(cpu), rel=1e-4)
    assert val(gpu)["mIoU"] == pytest.approx(val(cpu)["mIoU"], abs=1e-4)


@pytest.mark.parametrize("precision, dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_mixed_precision_trains_on_cuda(tiny_dataset, tmp_path, precision, dtype):
    cfg = config(tiny_dataset, batch_size=2, epochs=3, precision=precision,
                 model_kwargs={"base_channels": 8, "depth": 2})
    t = Trainer(cfg, tmp_path / "run", progress=False)
    seen = []
    handle = t.model.inc.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    metrics = t.fit()
    handle.remove()
    assert seen[0] == dtype  # the convolutions ran in the reduced precision
    assert all(p.dtype == torch.float32 for p in t.model.parameters())  # the weights stay fp32
    values = losses(tmp_path / "run")
    assert all(v == v for v in values) and sum(values[-4:]) < sum(values[:4])
    assert metrics["pixel_accuracy"] > 0.5
    scaler = load_checkpoint(tmp_path / "run" / "last.pt").scaler_state
    if precision == "fp16":  # the loss scale is saved, so a resumed run goes on with it
        assert scaler["scale"] > 0
    else:  # bf16 has fp32's exponent range and needs no scaler
        assert not scaler


def test_fp16_resume_goes_on_with_the_saved_loss_scale(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    full, split = tmp_path / "full", tmp_path / "split"
    cfg = dict(epochs=3, precision="fp16")
    train(config(tiny_dataset, **cfg), full, progress=False)
    train(config(tiny_dataset, **cfg), split, progress=False, stop_after_epoch=1)
    train(config(tiny_dataset, **cfg), split, resume=True, progress=False)
    assert len(losses(split)) == 6
    assert losses(split) == pytest.approx(losses(full), rel=1e-5)
    a, b = (load_checkpoint(run / "last.pt").scaler_state for run in (full, split))
    assert a["scale"] == b["scale"] and a["_growth_tracker"] == b["_growth_tracker"]
