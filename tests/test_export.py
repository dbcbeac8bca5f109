"""``pixelwise export``: ONNX and TorchScript files with dynamic sizes, checked against PyTorch on real CamVid images
of two sizes (one not a multiple of the model's output stride)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from pixelwise.cli import main
from pixelwise.data.io import read_image
from pixelwise.engine.export import deploy_model, onnx_parity
from pixelwise.engine.inference import infer_logits
from pixelwise.errors import ConfigError

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def checkpoint(camvid_checkpoint):
    """A U-Net trained 2 steps on CamVid at half resolution: real weights and a real input_scale to export."""
    return camvid_checkpoint


def _camvid_images(camvid_dir) -> list[torch.Tensor]:
    path = sorted((camvid_dir / "images" / "val").iterdir())[0]
    full = read_image(path).float().unsqueeze(0)  # 3 x 360 x 480
    return [full, full[..., 13:262, 7:340].contiguous()]  # and 249 x 333: odd, not a multiple of 8


def test_onnx_matches_pytorch_on_real_images_of_two_sizes(checkpoint, camvid_dir, tmp_path, capsys):
    out = tmp_path / "unet.onnx"
    images = _camvid_images(camvid_dir)
    check = sorted((camvid_dir / "images" / "val").iterdir())[:1]
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--size", "96", "128",
                 "--check", *map(str, check)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"\(480x360\): onnxruntime vs PyTorch max \|logit diff\| \d\.\d\de-0\d, argmax agreement", printed)

    deploy, card = deploy_model(checkpoint)
    for x in images:
        parity = onnx_parity(out, deploy, x)
        print(f"ONNX {tuple(x.shape[-2:])}: max |logit diff| {parity['max_abs_diff']:.2e}, "
              f"argmax agreement {100 * parity['argmax_agreement']:.4f} %")
        assert parity["max_abs_diff"] < 1e-3 and parity["argmax_agreement"] >= 0.999
    # The deployed graph is the pipeline `pixelwise predict` runs (up to the antialiasing of the input shrink).
    with torch.no_grad():
        x = images[0]
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (card.mean, card.std))
        normalised = (x / 255 - mean) / std
        ours = deploy(x).argmax(1)
        pipeline = infer_logits(deploy.model, normalised, card.input_scale).argmax(1)
    assert (ours == pipeline).float().mean() > 0.95


def test_torchscript_export_takes_other_sizes_and_batches(checkpoint, camvid_dir, tmp_path):
    out = tmp_path / "unet.pt"
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "torchscript", "--out", str(out)]) == 0
    loaded = torch.jit.load(str(out))
    deploy, _ = deploy_model(checkpoint)
    small = _camvid_images(camvid_dir)[1]
    batch = torch.cat([small, small.flip(-1)])
    with torch.no_grad():
        got, expected = loaded(batch), deploy(batch)
    assert got.shape == (2, 11, 249, 333)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert np.array_equal(got.argmax(1).numpy(), expected.argmax(1).numpy())


def test_export_errors(checkpoint, tmp_path, capsys):
    from pixelwise.engine.export import export_model

    with pytest.raises(ConfigError, match="'onnx' or 'torchscript'"):
        export_model(checkpoint, tmp_path / "m.tflite", "tflite")
    assert main(["export", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "missing.pt" in capsys.readouterr().err
