"""Sliding-window inference and multi-scale + flip test-time augmentation, in the library and on the command line.

Oracles: a pixel-wise model (1x1 convolutions) sees each pixel alone, so any tiling of the image must give exactly
its whole-image logits; TTA results are recomputed by hand from single passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from pixelwise.cli import main
from pixelwise.data.synthetic import write_synthetic_folder
from pixelwise.engine.inference import InferenceOptions, infer_logits, predict_probs, slide_logits
from pixelwise.errors import ConfigError
from _cli import TINY_TRAIN


def _pixelwise_model(k: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, k, 1)).eval()


@pytest.mark.parametrize("size, crop, stride", [((37, 53), (16, 24), (10, 17)), ((20, 20), (32, 32), (8, 8)),
                                                 ((31, 64), (31, 16), (31, 16)), ((25, 40), (7, 9), (7, 9))])
def test_sliding_windows_of_a_pixelwise_model_equal_the_whole_image(size, crop, stride):
    model = _pixelwise_model()
    x = torch.randn(2, 3, *size)
    whole = model(x)
    slid = slide_logits(model, x, crop, stride)
    assert slid.shape == whole.shape
    torch.testing.assert_close(slid, whole, rtol=1e-5, atol=1e-6)


class _Ones(nn.Module):
    """Logits of 1 everywhere, and a record of the windows it was run on."""

    def __init__(self) -> None:
        super().__init__()
        self.windows: list[tuple[int, int]] = []

    def forward(self, x):
        self.windows.append(tuple(x.shape[-2:]))
        return x.new_ones(x.shape[0], 2, *x.shape[-2:])


def test_overlapping_windows_are_averaged_and_cover_every_pixel():
    model = _Ones()
    out = slide_logits(model, torch.zeros(1, 3, 50, 70), crop=(20, 30), stride=(15, 25))
    assert torch.equal(out, torch.ones(1, 2, 50, 70))  # a sum of windows divided by the count covering each pixel
    # rows start at 0, 15, then 30 (= 50 - 20, shifted to end at the border); columns at 0, 25, 40 (= 70 - 30)
    assert len(model.windows) == 9 and set(model.windows) == {(20, 30)}


def test_slide_through_infer_logits_with_input_scale_and_a_real_conv_net():
    from pixelwise.models import build_model

    torch.manual_seed(0)
    model = build_model("unet", num_classes=3, base_channels=4, depth=2).eval()
    x = torch.randn(1, 3, 40, 56)
    whole = infer_logits(model, x, input_scale=0.5, out_size=(40, 56))
    # one window as large as the scaled image is the whole image
    one = infer_logits(model, x, 0.5, (40, 56), InferenceOptions("slide", crop=(20, 28), stride=(20, 28)))
    torch.testing.assert_close(one, whole)
    tiled = infer_logits(model, x, 0.5, (40, 56), InferenceOptions("slide", crop=(12, 16)))
    assert tiled.shape == whole.shape and not torch.allclose(tiled, whole)  # borders of tiles differ: a real tiling


def test_flip_and_scale_tta_average_softmax_of_single_passes():
    torch.manual_seed(0)
    model = nn.Conv2d(3, 5, 3, padding=1).eval()  # not mirror-symmetric: the flip pass really differs
    x = torch.randn(2, 3, 24, 32)
    plain = predict_probs(model, x)
    torch.testing.assert_close(plain, model(x).softmax(1))
    torch.testing.assert_close(plain.sum(1), torch.ones(2, 24, 32))

    flipped = predict_probs(model, x, test_time=InferenceOptions(flip=True))
    by_hand = (model(x).softmax(1) + model(x.flip(-1)).softmax(1).flip(-1)) / 2
    torch.testing.assert_close(flipped, by_hand)
    assert not torch.allclose(flipped, plain)

    scaled = predict_probs(model, x, test_time=InferenceOptions(scales=(0.5, 1.5), flip=True))
    passes = []
    for s in (0.5, 1.5):
        for flip in (False, True):
            xi = x.flip(-1) if flip else x
            xi = F.interpolate(xi, scale_factor=s, mode="bilinear", align_corners=False, antialias=s < 1)
            p = F.interpolate(model(xi), size=(24, 32), mode="bilinear", align_corners=False).softmax(1)
            passes.append(p.flip(-1) if flip else p)
    torch.testing.assert_close(scaled, sum(passes) / 4)


def test_test_time_options_are_checked():
    with pytest.raises(ConfigError, match="needs a crop"):
        InferenceOptions("slide")
    with pytest.raises(ConfigError, match="'whole' or 'slide'"):
        InferenceOptions("tiles")
    with pytest.raises(ConfigError, match="scales must be positive"):
        InferenceOptions(scales=(1.0, 0.0))
    assert InferenceOptions("slide", crop=(512, 512)).stride == (342, 342)
    assert InferenceOptions("slide", crop=(90, 120), scales=(0.5, 1), flip=True).describe() == \
        "slide 90x120 every 60x80, scales 0.5/1, flip"




@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("tta")
    data = write_synthetic_folder(base / "d", {"train": 4, "val": 3}, image_size=(48, 64))
    assert main(["train", "--data", str(data), "--out", str(base / "run"), *TINY_TRAIN]) == 0
    return data, base / "run" / "best.pt"


def test_predict_slide_tta_globs_batches_and_probabilities(trained, tmp_path, capsys):
    data, ckpt = trained
    pattern = str(data / "images" / "val" / "*.png")
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(ckpt), pattern, "--out", str(out), "--mode", "slide", "--tta",
                 "--scales", "0.75", "1", "--batch-size", "2", "--probs", "--quiet"]) == 0
    stdout = capsys.readouterr().out
    assert "slide 32x32 every 22x22, scales 0.75/1, flip" in stdout  # the training crop from the checkpoint
    stems = sorted(p.stem for p in (data / "images" / "val").glob("*.png"))
    for stem in stems:
        ids = np.asarray(Image.open(out / f"{stem}.png"))
        probs = np.load(out / f"{stem}_probs.npy")
        assert probs.dtype == np.float16 and probs.shape == (5, 48, 64)
        np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=2e-3)
        agree = (probs.astype(np.float32).argmax(0) == ids).mean()
        assert agree > 0.999  # float16 rounding may flip a near-tie
        assert (out / f"{stem}_overlay.png").is_file()

    # batching changes nothing
    single = tmp_path / "single"
    assert main(["predict", "--checkpoint", str(ckpt), pattern, "--out", str(single), "--mode", "slide", "--tta",
                 "--scales", "0.75", "1", "--quiet"]) == 0
    for stem in stems:
        same = np.asarray(Image.open(single / f"{stem}.png")) == np.asarray(Image.open(out / f"{stem}.png"))
        assert same.all()
    assert main(["predict", "--checkpoint", str(ckpt), str(tmp_path / "nothing" / "*.jpg"), "--out", str(out)]) == 2
    assert "matches no image file" in capsys.readouterr().err


def test_eval_with_slide_and_tta_reports_its_mode(trained, tmp_path, capsys):
    data, ckpt = trained
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(data), "--split", "val", "--quiet", "--tta",
                 "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "whole image, scales 0.5/0.75/1/1.25/1.5/1.75, flip" in out
    import json

    assert json.loads((tmp_path / "m.json").read_text())["inference"].endswith("flip")
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(data), "--split", "val", "--quiet", "--mode",
                 "slide", "--crop", "24", "24"]) == 0
    assert "slide 24x24 every 16x16" in capsys.readouterr().out
