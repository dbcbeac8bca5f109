"""Tests of the U-Net model and the model registry. Small widths (base_channels 8) keep them fast on a CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.errors import ConfigError
from pixelwise.models import UNet, build_model, get_model_info, list_models, register_model
from pixelwise.models.registry import count_parameters

SIZES = [(97, 131), (33, 17), (17, 23), (32, 48)]  # odd, odd, small and odd, multiples of 16


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ----------------------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("depth", [2, 3, 4, 5])
@pytest.mark.parametrize("bilinear", [False, True])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_logits_have_input_size(depth: int, bilinear: bool, in_channels: int) -> None:
    model = UNet(num_classes=3, in_channels=in_channels, base_channels=8, depth=depth, bilinear=bilinear).eval()
    assert model.output_stride == 2**depth
    with torch.no_grad():
        for h, w in SIZES:
            logits = model(torch.randn(2, in_channels, h, w))
            assert logits.shape == (2, 3, h, w)
            assert logits.dtype == torch.float32
            assert torch.isfinite(logits).all()


def test_wrong_channel_count_raises_with_hint() -> None:
    model = UNet(num_classes=2, in_channels=3, base_channels=8, depth=2)
    with pytest.raises(ValueError, match="expected 3 input channels, got 1: build the model with in_channels=1"):
        model(torch.randn(1, 1, 16, 16))


def test_bad_input_rank_or_dtype_raises() -> None:
    model = UNet(num_classes=2, in_channels=3, base_channels=8, depth=2)
    with pytest.raises(ValueError, match="4-D"):
        model(torch.randn(3, 16, 16))
    with pytest.raises(ValueError, match="floating-point"):
        model(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))


@pytest.mark.parametrize("kwargs", [{"num_classes": 0}, {"depth": 0}, {"base_channels": 0}, {"in_channels": 0}])
def test_bad_constructor_arguments_raise(kwargs: dict) -> None:
    args = {"num_classes": 2, "in_channels": 3, "base_channels": 8, "depth": 2} | kwargs
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        UNet(**args)


# ----------------------------------------------------------------------------------------------- parameter counts


def _double_conv(cin: int, cout: int, mid: int | None = None) -> int:
    """Parameters of (3x3 conv, no bias -> BN) x 2. BN has a weight and a bias per channel; its running
    statistics are buffers, not parameters."""
    mid = mid or cout
    return (3 * 3 * cin * mid + 2 * mid) + (3 * 3 * mid * cout + 2 * cout)


def _up_conv(cin: int) -> int:
    """Parameters of ConvTranspose2d(cin, cin // 2, kernel 2, stride 2): weights plus bias."""
    return 2 * 2 * cin * (cin // 2) + cin // 2


def test_parameter_count_of_the_classic_configuration() -> None:
    encoder = (
        _double_conv(3, 64)  # input block
        + _double_conv(64, 128)  # down 1
        + _double_conv(128, 256)  # down 2
        + _double_conv(256, 512)  # down 3
        + _double_conv(512, 1024)  # down 4, the bottleneck
    )
    decoder = (
        _up_conv(1024) + _double_conv(512 + 512, 512)  # up 1: skip 512 + upsampled 512
        + _up_conv(512) + _double_conv(256 + 256, 256)
        + _up_conv(256) + _double_conv(128 + 128, 128)
        + _up_conv(128) + _double_conv(64 + 64, 64)
    )
    head = 64 * 2 + 2  # 1x1 conv to 2 classes, with bias
    expected = encoder + decoder + head
    # Same layout as milesial/Pytorch-UNet's UNet(n_channels=3, n_classes=2, bilinear=False).
    assert expected == 31_037_698

    model = UNet(num_classes=2, in_channels=3, base_channels=64, depth=4, bilinear=False, batch_norm=True)
    assert count_parameters(model) == expected
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())


def test_parameter_count_bilinear_halves_bottleneck_and_decoder() -> None:
    # Bilinear upsampling has no weights, so the bottleneck gives 512 channels (not 1024) and every decoder block
    # outputs half its level's width, except the last; the first conv of each decoder block keeps the full width.
    expected = (
        _double_conv(3, 64)
        + _double_conv(64, 128)
        + _double_conv(128, 256)
        + _double_conv(256, 512)
        + _double_conv(512, 512)  # bottleneck, halved
        + _double_conv(512 + 512, 256, mid=512)
        + _double_conv(256 + 256, 128, mid=256)
        + _double_conv(128 + 128, 64, mid=128)
        + _double_conv(64 + 64, 64, mid=64)
        + 64 * 2 + 2
    )
    model = UNet(num_classes=2, in_channels=3, base_channels=64, depth=4, bilinear=True)
    assert count_parameters(model) == expected == 17_263_042  # milesial's bilinear=True count


def test_without_batch_norm_convs_have_biases_and_no_bn() -> None:
    model = UNet(num_classes=2, in_channels=3, base_channels=8, depth=2, batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(m.bias is not None for m in model.modules() if isinstance(m, nn.Conv2d))
    with_bn = UNet(num_classes=2, in_channels=3, base_channels=8, depth=2, batch_norm=True)
    convs3x3 = [m for m in with_bn.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert convs3x3 and all(m.bias is None for m in convs3x3)


# ------------------------------------------------------------------------------------------- padding and cropping


@pytest.mark.parametrize("bilinear", [False, True])
def test_internal_padding_equals_manual_zero_padding(bilinear: bool) -> None:
    model = UNet(num_classes=3, in_channels=3, base_channels=8, depth=4, bilinear=bilinear).eval()
    h, w = 33, 17
    x = torch.randn(2, 3, h, w)
    padded = torch.zeros(2, 3, 48, 32)  # next multiples of 16, zeros on the right and bottom
    padded[:, :, :h, :w] = x
    with torch.no_grad():
        out = model(x)
        reference = model(padded)[:, :, :h, :w]
        # Padding on the wrong side would give a different (but same-shaped) answer; make sure the test can tell.
        wrong_side = model(F.pad(x, (32 - w, 0, 48 - h, 0)))[:, :, 48 - h :, 32 - w :]
    assert out.shape == reference.shape == (2, 3, h, w)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)
    assert not torch.allclose(out, wrong_side, atol=1e-3)


def test_eval_mode_is_deterministic() -> None:
    model = UNet(num_classes=2, in_channels=3, base_channels=8, depth=3).eval()
    x = torch.randn(2, 3, 40, 24)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


# ----------------------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("bilinear", [False, True])
def test_gradients_reach_first_conv_and_are_finite(bilinear: bool) -> None:
    model = UNet(num_classes=4, in_channels=3, base_channels=8, depth=3, bilinear=bilinear).train()
    x = torch.randn(1, 3, 37, 29)  # batch of one in train mode: BN normalises over the 37x29 pixels
    target = torch.randint(0, 4, (1, 37, 29))
    loss = F.cross_entropy(model(x), target)
    loss.backward()

    assert torch.isfinite(loss)
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == 3
    assert first_conv.weight.grad is not None
    assert first_conv.weight.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


# ----------------------------------------------------------------------------------------------------- registry


def test_build_model_passes_options() -> None:
    model = build_model("unet", num_classes=5, in_channels=1, base_channels=8, depth=2, bilinear=True)
    assert isinstance(model, UNet)
    assert (model.num_classes, model.in_channels, model.output_stride) == (5, 1, 4)
    assert model(torch.randn(1, 1, 9, 11)).shape == (1, 5, 9, 11)


def test_unknown_model_name_lists_known_models() -> None:
    with pytest.raises(ConfigError, match="unknown model 'unet3000'.*unet"):
        build_model("unet3000", num_classes=2)
    with pytest.raises(ConfigError, match="unet"):
        get_model_info("nope")


def test_unknown_option_is_named_with_the_accepted_ones() -> None:
    with pytest.raises(ConfigError, match="'base_chanels'") as info:
        build_model("unet", num_classes=2, base_chanels=8)
    for accepted in ("base_channels", "depth", "bilinear", "batch_norm"):
        assert accepted in str(info.value)


@pytest.mark.parametrize("num_classes", [0, -1, True, 2.0])
def test_bad_num_classes_is_a_config_error(num_classes: object) -> None:
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("unet", num_classes=num_classes, base_channels=8)  # type: ignore[arg-type]


def test_value_rejected_by_the_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="depth"):
        build_model("unet", num_classes=2, base_channels=8, depth=0)


def test_list_models_and_info() -> None:
    assert "unet" in list_models()
    assert "unet" in list_models("u*")
    assert "unet" not in list_models("x*")
    assert list_models() == sorted(list_models())
    info = get_model_info("unet")
    assert info["name"] == "unet"
    assert "Ronneberger" in info["paper"] and "MICCAI 2015" in info["paper"]


def test_registering_a_duplicate_name_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):

        @register_model("unet", paper="-")
        def another_unet(num_classes: int, in_channels: int = 3) -> nn.Module:
            return nn.Identity()

    assert build_model("unet", num_classes=2, base_channels=8, depth=2).__class__ is UNet
