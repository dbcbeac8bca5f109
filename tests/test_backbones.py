"""Backbones: feature channels and strides as advertised, dilation, in_channels, and both weight paths."""

from __future__ import annotations

import math
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from pixelwise.backbones import build_backbone, list_backbones
from pixelwise.errors import CheckpointError, ConfigError


@pytest.mark.parametrize("name", list_backbones())
@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_features_have_advertised_channels_and_strides(name: str, output_stride: int) -> None:
    torch.manual_seed(0)
    backbone = build_backbone(name, output_stride=output_stride).eval()
    height, width = 96, 128
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, height, width))
    assert len(features) == 5
    assert backbone.strides == tuple(min(s, output_stride) for s in (2, 4, 8, 16, 32))
    for feature, channels, stride in zip(features, backbone.out_channels, backbone.strides):
        assert feature.shape == (1, channels, height // stride, width // stride)
    # A dilated backbone's deepest layers see the same context: rates double where strides stop.
    expected_rate = {32: 1, 16: 2, 8: 4}[output_stride]
    assert backbone.dilations[-1] == expected_rate


def test_odd_sizes_follow_torchvision_rounding() -> None:
    backbone = build_backbone("resnet18").eval()
    with torch.no_grad():
        sizes = [tuple(f.shape[-2:]) for f in backbone(torch.zeros(1, 3, 97, 131))]
    expected = [(math.ceil(97 / s), math.ceil(131 / s)) for s in (2, 4, 8, 16, 32)]
    assert sizes == expected


def test_local_state_dict_gives_torchvision_features(mobilenet_v2_weights: Path) -> None:
    state = torch.load(mobilenet_v2_weights, weights_only=True)
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(state, strict=False)  # the file has no classifier
    reference.eval()
    backbone = build_backbone("mobilenet_v2", weights=mobilenet_v2_weights).eval()
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(backbone(x)[-1], reference.features(x))
    # Dilation changes no weight: the same file loads into an output-stride-8 backbone.
    dilated = build_backbone("mobilenet_v2", weights=str(mobilenet_v2_weights), output_stride=8)
    torch.testing.assert_close(dilated.stages[4][-1][0].weight, reference.features[18][0].weight)


def test_weights_enum_reads_the_torch_hub_cache(monkeypatch, tmp_path: Path, mobilenet_v2_weights: Path) -> None:
    # What a user who downloaded once has: the file under $TORCH_HOME/hub/checkpoints, named as in the URL.
    url = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.url
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    state = torch.load(mobilenet_v2_weights, weights_only=True)
    state["classifier.1.weight"] = torch.zeros(1000, 1280)
    state["classifier.1.bias"] = torch.zeros(1000)
    torch.save(state, cache / Path(url).name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(*args, **kwargs):
        raise AssertionError("the cached file must be used, not downloaded")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    backbone = build_backbone("mobilenet_v2", weights="IMAGENET1K_V1")
    torch.testing.assert_close(backbone.stages[0][0][0].weight, state["features.0.0.weight"])
    same = build_backbone("mobilenet_v2", weights=torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1)
    torch.testing.assert_close(same.stages[0][0][0].weight, state["features.0.0.weight"])


def test_failed_download_says_where_to_put_the_file(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(CheckpointError, match=r"place it at .*hub.checkpoints.resnet18-"):
        build_backbone("resnet18", weights="DEFAULT")


def test_bad_weights_are_named(tmp_path: Path, mobilenet_v2_weights: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        build_backbone("resnet18", weights=tmp_path / "missing.pth")
    # MobileNetV2 weights into a ResNet: the message lists what does not fit.
    with pytest.raises(CheckpointError, match="missing key.*conv1.weight"):
        build_backbone("resnet18", weights=mobilenet_v2_weights)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        build_backbone("resnet18", weights=garbage)
    with pytest.raises(ConfigError, match="IMAGENET1K_V1"):
        build_backbone("resnet18", weights="IMAGENET_OOPS")
    with pytest.raises(ConfigError, match="known backbones"):
        build_backbone("resnet19")
    with pytest.raises(ConfigError, match="output_stride"):
        build_backbone("resnet18", output_stride=4)


def test_one_channel_input_keeps_pretrained_response(mobilenet_v2_weights: Path) -> None:
    rgb = build_backbone("mobilenet_v2", weights=mobilenet_v2_weights).eval()
    grey = build_backbone("mobilenet_v2", weights=mobilenet_v2_weights, in_channels=1).eval()
    x = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        # A grey image seen through summed RGB filters is the RGB network seeing that grey in color.
        torch.testing.assert_close(grey(x)[-1], rgb(x.expand(-1, 3, -1, -1))[-1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["resnet34", "vgg16_bn", "mobilenet_v3_large"])
def test_other_channel_counts(name: str) -> None:
    backbone = build_backbone(name, in_channels=4)
    first = next(m for m in backbone.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 4
    assert backbone(torch.zeros(1, 4, 64, 64))[-1].shape[1] == backbone.out_channels[-1]
