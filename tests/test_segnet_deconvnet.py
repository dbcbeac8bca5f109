"""Tests of SegNet and DeconvNet: output sizes, the pooling-index decoder, fc6/fc7 convolutionalization, batch-1
training and registration.

Both models are full VGG-16 networks (29M and 252M parameters), so each is built once per module; the DeconvNet
tests that do not need VGG's 4096-wide fc layers use ``fc_channels=64`` (fc6, fc7 and deconv-fc6 are 222M of its
252M parameters and dominate its CPU time), which runs a 224x224 image in about a second.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pixelwise.models.deconvnet as deconvnet_module
import pixelwise.models.segnet  # noqa: F401  (registers "segnet")
from pixelwise.backbones import build_backbone
from pixelwise.errors import ConfigError
from pixelwise.models.deconvnet import DeconvNet, FallbackBatchNorm2d
from pixelwise.models.registry import build_model, count_parameters, get_model_info, list_models
from pixelwise.models.segnet import SegNet

NUM_CLASSES = 11


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def segnet_rgb() -> SegNet:
    torch.manual_seed(0)
    return SegNet(NUM_CLASSES)


@pytest.fixture(scope="module")
def segnet_grey() -> nn.Module:
    torch.manual_seed(0)
    return build_model("segnet", NUM_CLASSES, 1, backbone="vgg16")


@pytest.fixture(scope="module")
def deconvnet_vgg() -> Iterator[tuple[DeconvNet, tuple[nn.Linear, ...]]]:
    """The paper's DeconvNet, and the VGG classifier Linear layers (fc6, fc7) of the backbone it was built from."""
    torch.manual_seed(0)
    vgg = build_backbone("vgg16_bn")
    built_with = []

    def fake_build_backbone(name: str, **kwargs: object):
        built_with.append(name)
        return vgg

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(deconvnet_module, "build_backbone", fake_build_backbone)
        model = DeconvNet(NUM_CLASSES)
    assert built_with == ["vgg16_bn"]
    yield model, vgg.fc_layers


@pytest.fixture(scope="module")
def deconvnet_small() -> nn.Module:
    torch.manual_seed(0)
    return build_model("deconvnet", NUM_CLASSES, 1, fc_channels=64)


def _selected_mask(indices: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Boolean map of ``like``'s shape, True at the flat per-plane positions listed in ``indices``."""
    mask = torch.zeros(like.shape[:2] + (like.shape[2] * like.shape[3],), dtype=torch.bool)
    mask.scatter_(2, indices.flatten(2), True)
    return mask.view_as(like)


# ----------------------------------------------------------------------------------------------------------- SegNet


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("size", [(97, 131), (64, 64)])
def test_segnet_logits_have_input_size(
    segnet_rgb: SegNet, segnet_grey: nn.Module, in_channels: int, size: tuple[int, int]
) -> None:
    model = (segnet_grey if in_channels == 1 else segnet_rgb).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, in_channels, *size))
    assert logits.shape == (2, NUM_CLASSES, *size)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_segnet_decoder_unpools_with_the_encoders_pooling_indices(segnet_rgb: SegNet) -> None:
    """The decoder's sparse maps have values exactly where the encoder's max-pools found their maxima.

    Nearest or bilinear upsampling, indices from the wrong stage, or pooling that drops the odd last row/column
    (97 x 131 gives odd sizes at every stage) all fail this.
    """
    model = segnet_rgb.eval()
    seen: dict[str, torch.Tensor] = {}

    def keep_output(name: str):
        return lambda module, inputs, output: seen.__setitem__(name, output.detach().clone())

    def keep_input(name: str):
        return lambda module, inputs: seen.__setitem__(name, inputs[0].detach().clone())

    handles = [
        model.encoder.stages[4].register_forward_hook(keep_output("pre_pool5")),
        model.decoder[0].register_forward_pre_hook(keep_input("unpool5")),
        model.encoder.stages[0].register_forward_hook(keep_output("pre_pool1")),
        model.decoder[-1].register_forward_pre_hook(keep_input("unpool1")),
    ]
    try:
        with torch.no_grad():
            model(torch.randn(2, 3, 97, 131))
    finally:
        for handle in handles:
            handle.remove()

    # Stage 5: the decoder unpools pool5's output itself, so every max must be back at its place, zeros elsewhere.
    pre_pool5, unpool5 = seen["pre_pool5"], seen["unpool5"]
    assert unpool5.shape == pre_pool5.shape == (2, 512, 7, 9)
    pooled, indices = F.max_pool2d(pre_pool5, 2, 2, ceil_mode=True, return_indices=True)
    assert indices.shape[-2:] == (4, 5)
    torch.testing.assert_close(unpool5.flatten(2).gather(2, indices.flatten(2)), pooled.flatten(2), rtol=0, atol=0)
    assert (unpool5[~_selected_mask(indices, pre_pool5)] == 0).all()

    # Stage 1: the decoder's own features, scattered to the positions pool1 selected and nowhere else.
    pre_pool1, unpool1 = seen["pre_pool1"], seen["unpool1"]
    assert unpool1.shape == pre_pool1.shape == (2, 64, 97, 131)
    _, indices1 = F.max_pool2d(pre_pool1, 2, 2, ceil_mode=True, return_indices=True)
    selected = _selected_mask(indices1, pre_pool1)
    assert (unpool1[~selected] == 0).all()
    assert (unpool1[selected] != 0).float().mean() > 0.1  # not vacuously sparse
    # ceil_mode keeps the last (odd) row and column: some of their pixels carry values.
    assert unpool1[..., -1, :].count_nonzero() > 0 and unpool1[..., :, -1].count_nonzero() > 0


def test_segnet_trains_with_batch_size_one(segnet_grey: nn.Module) -> None:
    model = segnet_grey.train()
    model.zero_grad(set_to_none=True)
    logits = model(torch.randn(1, 1, 33, 47))
    assert logits.shape == (1, NUM_CLASSES, 33, 47)
    F.cross_entropy(logits, torch.randint(0, NUM_CLASSES, (1, 33, 47))).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # The unpooling passes gradients through to the encoder's first convolution.
    assert model.encoder.stages[0][0].weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_segnet_has_the_papers_parameter_count(segnet_rgb: SegNet) -> None:
    # Badrinarayanan et al. report 29.5M parameters for the VGG-16 SegNet on CamVid (11 classes).
    assert count_parameters(segnet_rgb) == 29_445_643


# -------------------------------------------------------------------------------------------------------- DeconvNet


def test_deconvnet_fc6_and_fc7_compute_exactly_vggs_linear_layers(deconvnet_vgg) -> None:
    model, (linear6, linear7) = deconvnet_vgg
    pool5, hidden = torch.randn(2, 512, 7, 7), torch.randn(2, 4096)
    with torch.no_grad():
        # Outputs are O(1) sums of 25,088 float32 products, added in a different order by conv and matmul.
        torch.testing.assert_close(model.fc6[0](pool5).flatten(1), linear6(pool5.flatten(1)), rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(model.fc7[0](hidden[..., None, None]).flatten(1), linear7(hidden))


def test_deconvnet_has_the_papers_parameter_count(deconvnet_vgg) -> None:
    # Noh et al. report 252M parameters, most of them in fc6, fc7 and deconv-fc6.
    assert count_parameters(deconvnet_vgg[0]) == 251_800_715


def test_deconvnet_at_224_has_a_1x1_fc6_and_full_size_logits(deconvnet_small: nn.Module) -> None:
    model = deconvnet_small.eval()
    shapes: dict[str, torch.Size] = {}
    handles = [
        model.fc6.register_forward_hook(lambda m, i, o: shapes.__setitem__("fc6", o.shape)),
        model.deconv_fc6_bn.register_forward_hook(lambda m, i, o: shapes.__setitem__("deconv_fc6", o.shape)),
    ]
    try:
        with torch.no_grad():
            logits = model(torch.randn(1, 1, 224, 224))
    finally:
        for handle in handles:
            handle.remove()
    assert shapes["fc6"] == (1, 64, 1, 1)
    assert shapes["deconv_fc6"] == (1, 512, 7, 7)  # back to pool5's size
    assert logits.shape == (1, NUM_CLASSES, 224, 224)
    assert torch.isfinite(logits).all()


def test_deconvnet_fc6_slides_over_a_pool5_larger_than_7(deconvnet_small: nn.Module) -> None:
    model = deconvnet_small.eval()
    shapes: list[torch.Size] = []
    handle = model.fc6.register_forward_hook(lambda m, i, o: shapes.append(o.shape))
    try:
        with torch.no_grad():
            # pool5 is 9x2: fc6 slides over the height (3 windows), the width is padded to one window.
            logits = model(torch.randn(1, 1, 257, 33))
    finally:
        handle.remove()
    assert shapes == [(1, 64, 3, 1)]
    assert logits.shape == (1, NUM_CLASSES, 257, 33)


def test_deconvnet_trains_with_batch_size_one(deconvnet_small: nn.Module) -> None:
    # pool5 is 4x5, padded to 7x7 for fc6 and cropped back after deconv-fc6. fc6 and fc7 see 1x1 maps: one value
    # per channel, which plain BatchNorm refuses in train mode.
    model = deconvnet_small.train()
    model.zero_grad(set_to_none=True)
    logits = model(torch.randn(1, 1, 97, 131))
    assert logits.shape == (1, NUM_CLASSES, 97, 131)
    F.cross_entropy(logits, torch.randint(0, NUM_CLASSES, (1, 97, 131))).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.fc6[0].weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_fallback_batchnorm_with_one_value_matches_eval_mode_and_is_plain_bn_otherwise() -> None:
    bn, plain = FallbackBatchNorm2d(4), nn.BatchNorm2d(4)
    with torch.no_grad():
        for layer in (bn, plain):
            layer.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
            layer.running_var.copy_(torch.tensor([4.0, 0.25, 1.0, 9.0]))
    one = torch.randn(1, 4, 1, 1)
    torch.testing.assert_close(bn.train()(one), plain.eval()(one))
    torch.testing.assert_close(bn.running_mean, plain.running_mean)  # a single value does not move the statistics

    batch = torch.randn(3, 4, 2, 2)
    torch.testing.assert_close(bn.train()(batch), plain.train()(batch))
    torch.testing.assert_close(bn.running_var, plain.running_var)


# ----------------------------------------------------------------------------------------------------- registration


def test_both_models_are_registered_with_their_papers(segnet_grey: nn.Module, deconvnet_small: nn.Module) -> None:
    assert {"segnet", "deconvnet"} <= set(list_models())
    assert isinstance(segnet_grey, SegNet) and isinstance(deconvnet_small, DeconvNet)
    assert segnet_grey.encoder.in_channels == 1 and deconvnet_small.fc7[0].out_channels == 64
    assert "Badrinarayanan" in get_model_info("segnet")["paper"]
    assert "Noh" in get_model_info("deconvnet")["paper"]


@pytest.mark.parametrize("name", ["segnet", "deconvnet"])
def test_non_vgg_backbone_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match="backbone must be one of vgg16_bn, vgg16.*'resnet50'"):
        build_model(name, NUM_CLASSES, backbone="resnet50")


def test_bad_fc_channels_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="fc_channels must be an integer >= 1"):
        build_model("deconvnet", NUM_CLASSES, fc_channels=0)
