"""Tests of Yu & Koltun's context module and dilated front-end, and of the sliding-window patch classifier.

Small inputs and, except for the one test about converting VGG's 4096-wide fc6/fc7, ``fc_channels=64`` keep them
fast on a CPU.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pixelwise.models.dilated as dilated_module
from pixelwise.errors import ConfigError
from pixelwise.layers import receptive_field
from pixelwise.layers.context import ContextModule
from pixelwise.models.dilated import DilatedFrontEnd
from pixelwise.models.patch_classifier import PatchClassifier
from pixelwise.models.registry import build_model, list_models


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --------------------------------------------------------------------------------------------------- context module


@pytest.mark.parametrize("size", [(20, 23), (5, 7), (1, 1)])
def test_basic_context_is_exact_identity_at_init_for_nonnegative_input(size: tuple[int, int]) -> None:
    # Sizes below the largest dilation (16) included: the zero padding must not leak into the identity.
    x = torch.rand(2, 5, *size)
    y = ContextModule(5)(x)
    assert y.shape == x.shape
    assert torch.equal(y, x)


def test_basic_context_at_init_is_relu_on_signed_input() -> None:
    # Layers 1-7 end in the paper's truncation max(., 0), so a fresh module passes negatives through as zeros.
    x = torch.randn(1, 4, 16, 18)
    torch.testing.assert_close(ContextModule(4)(x), x.clamp(min=0), rtol=0, atol=0)


def test_large_context_is_identity_at_init_without_noise() -> None:
    x = torch.rand(2, 3, 19, 26)
    module = ContextModule(3, "large", init_noise=0)
    assert max(m.out_channels for m in module.modules() if isinstance(m, nn.Conv2d)) == 32 * 3
    torch.testing.assert_close(module(x), x)


def test_large_context_default_noise_is_small_but_breaks_symmetry() -> None:
    x = torch.rand(1, 3, 24, 24)
    noisy = ContextModule(3, "large")
    exact = ContextModule(3, "large", init_noise=0)
    y = noisy(x)
    assert not torch.equal(y, exact(x))
    # Close enough to the identity to be put on a trained front-end without wrecking it.
    assert (y - x).abs().max() < 0.1


def _context_window(module: ContextModule, size: int, centre: int) -> torch.Tensor:
    """Input pixels that influence output pixel (centre, centre), with all weights positive."""
    module = module.double()
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0 / m.weight[0].numel())
                m.bias.zero_()
    x = torch.ones(1, module.channels, size, size, dtype=torch.float64, requires_grad=True)
    module(x)[0, 0, centre, centre].backward()
    return (x.grad.abs().sum(dim=(0, 1)) > 0)


def test_basic_context_receptive_field_is_67x67() -> None:
    module = ContextModule(2)
    size, centre = 81, 40
    seen = _context_window(module, size, centre)
    rows, cols = seen.any(dim=1).nonzero().flatten(), seen.any(dim=0).nonzero().flatten()
    assert (rows.min().item(), rows.max().item()) == (centre - 33, centre + 33)
    assert (cols.min().item(), cols.max().item()) == (centre - 33, centre + 33)
    assert seen.sum().item() == 67 * 67  # the whole square, no holes despite the dilations
    layers = [(m.kernel_size[0], m.stride[0], m.dilation[0]) for m in module.modules() if isinstance(m, nn.Conv2d)]
    assert receptive_field(layers) == 67


def test_context_module_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="variant"):
        ContextModule(3, "huge")
    with pytest.raises(ValueError, match="dilations"):
        ContextModule(3, dilations=(1, 0))
    with pytest.raises(ValueError, match="large"):
        ContextModule(3, "large", dilations=(1, 2, 4))


# ------------------------------------------------------------------------------------------------ dilated front-end


def test_dilated_logits_at_input_size_output_stride_8_and_fc6_dilation_4() -> None:
    model = DilatedFrontEnd(3, in_channels=1, fc_channels=64).eval()
    assert model.fc6.dilation == (4, 4)
    assert model.fc6.kernel_size == (7, 7)
    score_sizes = []
    model.score.register_forward_hook(lambda mod, inp, out: score_sizes.append(tuple(out.shape[-2:])))
    with torch.no_grad():
        logits = model(torch.randn(1, 1, 97, 131))
    assert logits.shape == (1, 3, 97, 131)
    assert torch.isfinite(logits).all()
    assert score_sizes == [(13, 17)]  # ceil(97 / 8), ceil(131 / 8)


def test_dilated_trains_with_batch_size_one() -> None:
    model = build_model("dilated_frontend", 4, fc_channels=64, context="large").train()
    logits = model(torch.randn(1, 3, 33, 47))
    assert logits.shape == (1, 4, 33, 47)
    F.cross_entropy(logits, torch.randint(0, 4, (1, 33, 47))).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.upsample.weight.grad is None  # the paper's upsampling is fixed bilinear


@pytest.fixture(scope="module")
def front_end_pair() -> tuple[DilatedFrontEnd, DilatedFrontEnd]:
    """The same front-end without and with the basic context module (tests copy them before changing them)."""
    torch.manual_seed(0)
    plain = DilatedFrontEnd(5, fc_channels=64, context=None).eval()
    with_context = DilatedFrontEnd(5, fc_channels=64, context="basic").eval()
    missing, unexpected = with_context.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("context.") for k in missing)
    return plain, with_context


def test_fresh_context_module_on_front_end_is_relu_of_its_scores(front_end_pair) -> None:
    plain, with_context = front_end_pair
    scores = []
    hook = plain.score.register_forward_hook(lambda mod, inp, out: scores.append(out))
    x = torch.randn(2, 3, 40, 45)
    with torch.no_grad():
        plain(x)
    hook.remove()
    with torch.no_grad():
        expected = plain.upsample(scores[0].clamp(min=0))[..., :40, :45]
        got = with_context(x)
    assert (scores[0] < 0).any()  # otherwise this test would not tell ReLU from identity
    torch.testing.assert_close(got, expected)


def test_fresh_context_module_leaves_nonnegative_scores_unchanged(front_end_pair) -> None:
    # The paper's use: a front-end whose scores are >= 0 keeps its exact predictions when the module is added.
    plain, with_context = (copy.deepcopy(m) for m in front_end_pair)
    with torch.no_grad():
        for model in (plain, with_context):
            model.score.bias += 1000.0
        x = torch.randn(1, 3, 24, 33)
        torch.testing.assert_close(with_context(x), plain(x))


@pytest.fixture(scope="module")
def vgg_sized_front_end() -> tuple[DilatedFrontEnd, nn.Linear, nn.Linear]:
    """The default model (fc_channels 4096) and the torchvision fc6/fc7 Linear layers it was converted from."""
    built = []
    real_build_backbone = dilated_module.build_backbone

    def spy(*args, **kwargs):
        backbone = real_build_backbone(*args, **kwargs)
        built.append(backbone.fc_layers)
        return backbone

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dilated_module, "build_backbone", spy)
        torch.manual_seed(0)
        model = build_model("dilated_frontend", 11)
    (fc6_linear, fc7_linear), = built
    return model, fc6_linear, fc7_linear


def test_default_fc6_fc7_are_vgg_classifier_layers_convolutionalized(vgg_sized_front_end) -> None:
    model, fc6_linear, fc7_linear = vgg_sized_front_end
    assert (model.fc6.in_channels, model.fc6.out_channels) == (512, 4096)
    # With dilation 4, fc6 reads every 4th cell of a 25x25 conv5 map: the 7x7 pool5 grid the Linear layer read.
    x = torch.randn(1, 512, 25, 25)
    with torch.no_grad():
        conv = F.conv2d(x, model.fc6.weight, model.fc6.bias, dilation=model.fc6.dilation)
        linear = fc6_linear(x[..., ::4, ::4].flatten(1))
        torch.testing.assert_close(conv.flatten(1), linear, rtol=1e-4, atol=1e-4)
        h = torch.randn(3, 4096)
        torch.testing.assert_close(model.fc7(h[..., None, None]).flatten(1), fc7_linear(h), rtol=1e-4, atol=1e-4)


def test_default_front_end_runs_on_small_input(vgg_sized_front_end) -> None:
    model = vgg_sized_front_end[0].eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 17, 23))
    assert logits.shape == (1, 11, 17, 23)
    assert torch.isfinite(logits).all()


def test_bad_context_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="context"):
        build_model("dilated_frontend", 3, context="medium", fc_channels=8)
    with pytest.raises(ConfigError, match="dropout"):
        build_model("dilated_frontend", 3, dropout=1.0, fc_channels=8)


# ------------------------------------------------------------------------------------------------- patch classifier


@pytest.mark.parametrize("in_channels", [1, 3])
def test_patch_logits_at_input_size(in_channels: int) -> None:
    model = PatchClassifier(4, in_channels=in_channels).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, in_channels, 23, 31))
    assert logits.shape == (2, 4, 23, 31)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(("patch_size", "pixel"), [(13, (11, 15)), (13, (0, 30)), (17, (12, 20))])
def test_patch_one_pixel_changes_logits_only_within_its_window(patch_size: int, pixel: tuple[int, int]) -> None:
    model = PatchClassifier(3, in_channels=1, patch_size=patch_size).eval()
    x = torch.randn(1, 1, 23, 31)
    x2 = x.clone()
    i, j = pixel
    x2[0, 0, i, j] += 5.0
    with torch.no_grad():
        changed = (model(x) != model(x2)).any(dim=1)[0]
    r = patch_size // 2
    window = torch.zeros_like(changed)
    window[max(i - r, 0) : i + r + 1, max(j - r, 0) : j + r + 1] = True
    assert not changed[~window].any()
    assert changed[window].any()


def test_patch_logit_is_classifier_on_the_zero_padded_patch() -> None:
    model = PatchClassifier(5, in_channels=3, patch_size=13).eval()
    x = torch.randn(2, 3, 12, 15)
    padded = F.pad(x, (6, 6, 6, 6))
    with torch.no_grad():
        logits = model(x)
        for b, i, j in [(0, 0, 0), (1, 11, 14), (0, 6, 7), (1, 0, 14), (1, 11, 0)]:
            patch = padded[b : b + 1, :, i : i + 13, j : j + 13]
            torch.testing.assert_close(logits[b, :, i, j], model.classifier(patch)[0])


def test_patch_chunking_does_not_change_result() -> None:
    model = PatchClassifier(4, patch_size=13).eval()
    x = torch.randn(2, 3, 11, 13)
    small_chunks = PatchClassifier(4, patch_size=13, chunk_pixels=7).eval()
    small_chunks.load_state_dict(model.state_dict())
    with torch.no_grad():
        # 7 patches per chunk for a batch of 2: 3 pixels per image, chunks straddle row ends.
        torch.testing.assert_close(small_chunks(x), model(x))


def test_patch_classifier_rejects_bad_patch_size() -> None:
    for bad in (16, 3, 4, 9, 15, 19):
        with pytest.raises(ValueError, match="patch_size"):
            PatchClassifier(2, patch_size=bad)
    with pytest.raises(ConfigError, match="patch_size"):
        build_model("patch_classifier", 2, patch_size=8)


@pytest.mark.parametrize(("patch_size", "size"), [(13, (23, 31)), (17, (5, 9)), (21, (30, 17))])
def test_patch_dense_form_equals_sliding_window(patch_size: int, size: tuple[int, int]) -> None:
    # The lecture's step from sliding windows to convolution: one pass of the convolutionalized classifier gives
    # every patch's logits, and the same gradients. float64, so only rounding can differ.
    torch.manual_seed(0)
    model = PatchClassifier(6, in_channels=2, patch_size=patch_size).double().train()
    x = torch.randn(2, 2, *size, dtype=torch.float64)
    target = torch.randint(0, 6, (2, *size))
    grads = []
    for dense in (False, True):
        model.dense = dense
        model.zero_grad()
        logits = model(x)
        assert logits.shape == (2, 6, *size)
        F.cross_entropy(logits, target).backward()
        grads.append((logits.detach(), [p.grad.clone() for p in model.parameters()]))
    (sliding, sliding_grads), (dense_logits, dense_grads) = grads
    torch.testing.assert_close(dense_logits, sliding, rtol=0, atol=1e-12)
    for g_sliding, g_dense in zip(sliding_grads, dense_grads):
        torch.testing.assert_close(g_dense, g_sliding, rtol=0, atol=1e-12)


def test_patch_dense_is_an_option_of_the_registered_model() -> None:
    sliding = build_model("patch_classifier", 3)
    dense = build_model("patch_classifier", 3, dense=True)
    assert dense.dense and not sliding.dense
    dense.load_state_dict(sliding.state_dict())  # same parameters, same keys
    x = torch.randn(1, 3, 20, 24)
    with torch.no_grad():
        torch.testing.assert_close(dense.eval()(x), sliding.eval()(x), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------- registry


def test_models_are_registered_and_build_by_name() -> None:
    assert {"dilated_frontend", "patch_classifier"} <= set(list_models())
    models = [
        build_model("patch_classifier", 3, in_channels=1),
        build_model("dilated_frontend", 3, in_channels=1, fc_channels=16, context="basic"),
    ]
    x = torch.randn(1, 1, 9, 10)
    for model in models:
        with torch.no_grad():
            assert model.eval()(x).shape == (1, 3, 9, 10)
