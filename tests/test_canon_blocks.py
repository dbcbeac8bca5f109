"""ASPP, FCN and DeepLab checked against torchvision's own modules and the papers' stated geometry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.segmentation.deeplabv3 import ASPP as TorchvisionASPP

from pixelwise.layers.aspp import ASPP
from pixelwise.models import build_model


def _randomise_batch_norm(module: torch.nn.Module, generator: torch.Generator) -> None:
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator))
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=generator))


def test_aspp_matches_torchvision() -> None:
    g = torch.Generator().manual_seed(0)
    ours = ASPP(32, 16, atrous_rates=(2, 3, 5)).eval()
    _randomise_batch_norm(ours, g)
    theirs = TorchvisionASPP(32, (2, 3, 5), 16).eval()
    with torch.no_grad():
        for our_branch, their_branch in zip(ours.branches[:-1], theirs.convs[:-1]):
            their_branch.load_state_dict(our_branch.state_dict())
        # Our image-pooling branch is a biased conv; torchvision's is conv -> BN. A BN that adds the bias and
        # otherwise does nothing makes the two the same function.
        pool, their_pool = ours.branches[-1], theirs.convs[-1]
        their_pool[1].weight.copy_(pool.conv.weight)
        bn = their_pool[2]
        bn.running_mean.zero_()
        bn.running_var.fill_(1 - bn.eps)
        bn.weight.fill_(1.0)
        bn.bias.copy_(pool.conv.bias)
        theirs.project[0].load_state_dict(ours.project[0][0].state_dict())
        theirs.project[1].load_state_dict(ours.project[0][1].state_dict())
        x = torch.randn(2, 32, 13, 17, generator=g)
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_aspp_image_pooling_trains_at_batch_size_one() -> None:
    aspp = ASPP(8, 4, atrous_rates=(1, 2)).train()
    out = aspp(torch.randn(1, 8, 5, 7))
    out.sum().backward()
    assert out.shape == (1, 4, 5, 7)
    assert all(torch.isfinite(p.grad).all() for p in aspp.parameters())


def test_fcn_fc6_fc7_are_vggs_classifier_convolutionalised(tmp_path) -> None:
    torch.manual_seed(0)
    vgg = torchvision.models.vgg16().eval()
    weights = tmp_path / "vgg16.pth"
    torch.save(vgg.state_dict(), weights)
    fcn = build_model("fcn32s", num_classes=21, backbone_weights=str(weights)).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        pool5 = fcn.backbone(x)[-1]
        torch.testing.assert_close(pool5, vgg.features(x))
        # At 224x224, pool5 is 7x7 and the centre output of the 7x7 fc6 sees all of it, as VGG's fc6 does.
        fc7 = fcn.fc(pool5)[0, :, 3, 3]
        reference = vgg.classifier[:5](torch.flatten(vgg.avgpool(vgg.features(x)), 1))[0]
        torch.testing.assert_close(fc7, reference, rtol=1e-4, atol=1e-4)


def test_fcn_skips_start_silent_and_upsampling_is_bilinear() -> None:
    torch.manual_seed(0)
    fcn8 = build_model("fcn8s", num_classes=3, fc_channels=16).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        features = fcn8.backbone(x)
        # Zero-initialised skip scores (the paper's choice): before training FCN-8s predicts what its stride-32
        # path predicts, upsampled 2x, 2x and 8x by bilinear kernels.
        assert torch.count_nonzero(fcn8.score_pool4(features[3])) == 0
        assert torch.count_nonzero(fcn8.score_pool3(features[2])) == 0
    assert fcn8.upscore2.weight.requires_grad and fcn8.upscore_pool4.weight.requires_grad
    assert not fcn8.upscore_final.weight.requires_grad


def test_deeplab_output_stride_and_rates() -> None:
    seen = {}
    for output_stride, rates in ((16, (6, 12, 18)), (8, (12, 24, 36))):
        model = build_model("deeplabv3", num_classes=4, backbone="resnet18", output_stride=output_stride).eval()
        assert model.aspp.atrous_rates == rates
        model.aspp.register_forward_hook(lambda m, inp, out, os=output_stride: seen.__setitem__(os, inp[0].shape))
        with torch.no_grad():
            assert model(torch.randn(1, 3, 96, 128)).shape == (1, 4, 96, 128)
    assert seen[16][-2:] == (6, 8) and seen[8][-2:] == (12, 16)


def test_deeplabv3plus_decoder_joins_stride_4_features() -> None:
    model = build_model("deeplabv3plus", num_classes=4, backbone="mobilenet_v2").eval()
    seen = {}
    model.decoder.register_forward_hook(lambda m, inp, out: seen.__setitem__("in", inp[0].shape))
    with torch.no_grad():
        model(torch.randn(1, 3, 96, 128))
    assert seen["in"] == (1, 256 + 48, 24, 32)


def test_deeplabv3plus_refine_convs_sets_the_decoder_depth() -> None:
    """The paper's decoder has two 3x3 refinement convolutions (its Table 2); ``refine_convs`` sets how many, so the
    decoder of SMP's DeepLabV3Plus (one) can be built for a like-for-like comparison. Fewer than one is refused."""
    from pixelwise.models import build_model, count_parameters

    kw = dict(backbone="mobilenet_v2", separable=True)
    two, one = build_model("deeplabv3plus", 4, **kw), build_model("deeplabv3plus", 4, refine_convs=1, **kw)
    depthwise = [[m.in_channels for m in model.decoder.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
                 for model in (two, one)]
    assert depthwise == [[304, 256], [304]]
    # one separable refinement of width 256: 256*9 depthwise + 256*256 pointwise weights, 2 BNs of 256
    assert count_parameters(two) - count_parameters(one) == 256 * 9 + 256 * 256 + 2 * 2 * 256
    y = one(torch.randn(1, 3, 97, 131))
    assert y.shape == (1, 4, 97, 131)
    with pytest.raises(ValueError, match="refine_convs"):
        build_model("deeplabv3plus", 4, refine_convs=0, **kw)


def test_separable_aspp_and_decoder_keep_shapes_and_cut_the_work():
    """DeepLabv3+'s atrous separable convolution: depthwise (groups = channels) then pointwise, same output shape,
    far fewer parameters than the full 3x3 convolutions."""
    from pixelwise.layers import ASPP
    from pixelwise.models import build_model, count_parameters

    full, sep = ASPP(64, 32, (2, 4)), ASPP(64, 32, (2, 4), separable=True)
    x = torch.randn(2, 64, 9, 11)
    assert sep(x).shape == full(x).shape == (2, 32, 9, 11)
    depthwise = [m for m in sep.modules() if isinstance(m, torch.nn.Conv2d) and m.groups == 64]
    assert [m.dilation for m in depthwise] == [(2, 2), (4, 4)]
    assert count_parameters(sep.branches[1]) < count_parameters(full.branches[1]) / 4  # 64*9 + 64*32 vs 64*32*9
    kw = dict(backbone="mobilenet_v2")
    a, b = build_model("deeplabv3plus", 5, **kw), build_model("deeplabv3plus", 5, separable=True, **kw)
    y = b(torch.randn(2, 3, 97, 131))
    assert y.shape == (2, 5, 97, 131)
    y.mean().backward()
    assert count_parameters(b) < count_parameters(a) - 2_000_000


def test_separable_conv_without_depthwise_bn_relu_is_xceptions():
    """``depthwise_bn_relu=False``: depthwise -> pointwise -> BN -> ReLU, nothing between the two convolutions
    (Xception, Chollet 2017; SMP's DeepLabV3Plus), against F.conv2d and F.batch_norm with the block's own weights;
    the paper's form keeps BN + ReLU after the depthwise step. In a whole DeepLabv3+, every separable block loses
    exactly its intermediate BN (2 parameters per channel) and the output shape is kept."""
    from pixelwise.layers.blocks import separable_conv_bn_relu
    from pixelwise.models import build_model, count_parameters

    g = torch.Generator().manual_seed(0)
    block = separable_conv_bn_relu(6, 5, 3, dilation=2, depthwise_bn_relu=False).eval()
    with torch.no_grad():
        _randomise_batch_norm(block, g)
    bn = block[2]
    x = torch.randn(2, 6, 9, 11, generator=g)
    ref = F.conv2d(F.conv2d(x, block[0].weight, padding=2, dilation=2, groups=6), block[1].weight)
    ref = F.batch_norm(ref, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=bn.eps)
    torch.testing.assert_close(block(x), ref.clamp_min(0))
    kinds = [[type(m).__name__ for m in b] for b in (separable_conv_bn_relu(6, 5, 3, 2), block)]
    assert kinds == [["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU"],
                     ["Conv2d", "Conv2d", "BatchNorm2d", "ReLU"]]

    kw = dict(backbone="mobilenet_v2", separable=True, refine_convs=1)
    paper, xception = build_model("deeplabv3plus", 4, **kw), build_model("deeplabv3plus", 4, depthwise_bn_relu=False,
                                                                          **kw)
    encoder = set(paper.backbone.modules())
    depthwise = [m.in_channels for m in paper.modules()
                 if isinstance(m, torch.nn.Conv2d) and 1 < m.groups == m.in_channels and m not in encoder]
    assert len(depthwise) == 3 + 1  # ASPP's three atrous branches and the one refinement convolution
    assert count_parameters(paper) - count_parameters(xception) == 2 * sum(depthwise)
    assert xception(torch.randn(1, 3, 97, 131)).shape == (1, 4, 97, 131)


def test_deeplab_can_keep_the_old_rate_on_the_strided_conv():
    """DeepLab's reference code and torchvision: at output stride 8 the first block of ResNet's layer3 keeps rate 1
    on the convolution that lost its stride, the others get 2; layer4: 2, then 4."""
    from pixelwise.models import build_model

    def rates(model):
        stages = model.backbone.stages
        convs = [[m for m in stages[i].modules() if isinstance(m, torch.nn.Conv2d)] for i in (3, 4)]
        return [[m.dilation[0] for m in stage if m.kernel_size == (3, 3)] for stage in convs]

    ref = build_model("deeplabv3", 3, backbone="resnet18", output_stride=8, dilate_strided_conv=False)
    assert rates(ref) == [[1, 2, 2, 2], [2, 4, 4, 4]]
    default = build_model("deeplabv3", 3, backbone="resnet18", output_stride=8)
    assert rates(default) == [[2, 2, 2, 2], [4, 4, 4, 4]]


def test_encoder_unet_decoder_starts_from_unets_initialisation() -> None:
    """U-Net's initialisation (Ronneberger et al. 2015, sec. 3): decoder and logits weights ~ N(0, 2 / fan_in), zero
    biases; ``decoder_init="pytorch"`` keeps PyTorch's default (uniform, variance 1 / (3 fan_in)). The encoder is
    untouched by either choice."""
    torch.manual_seed(0)
    he = build_model("encoder_unet", 11, backbone="resnet18")
    torch.manual_seed(0)
    default = build_model("encoder_unet", 11, backbone="resnet18", decoder_init="pytorch")
    for a, b in zip(he.backbone.state_dict().values(), default.backbone.state_dict().values()):
        assert torch.equal(a, b)
    convs = [m for m in he.blocks.modules() if isinstance(m, torch.nn.Conv2d)] + [he.head]
    old = [m for m in default.blocks.modules() if isinstance(m, torch.nn.Conv2d)] + [default.head]
    for conv, old_conv in zip(convs, old):
        fan_in = conv.weight[0].numel()
        if conv.weight.numel() < 10_000:  # too few draws for a tight estimate of the spread
            continue
        assert abs(conv.weight.std().item() / (2 / fan_in) ** 0.5 - 1) < 0.05
        assert abs(old_conv.weight.std().item() / (1 / (3 * fan_in)) ** 0.5 - 1) < 0.05
    assert torch.count_nonzero(he.head.bias) == 0
    with pytest.raises(ValueError, match="decoder_init"):
        build_model("encoder_unet", 11, backbone="resnet18", decoder_init="xavier")
