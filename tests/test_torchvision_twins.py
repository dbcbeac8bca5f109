"""Our LR-ASPP and dilated-ResNet FCN against their torchvision twins: torchvision's weights, mapped key by key onto
our modules, must give the same logits. That checks every layer's wiring, stride, dilation, padding and rounding at
once, which no shape test can.

The mappings are written out here, not derived from module order, so a renamed or reordered layer on either side
fails loudly; both must cover every key of both state_dicts.
"""

from __future__ import annotations

import re

import pytest
import torch
import torchvision
from torch import nn

from pixelwise.backbones import build_backbone
from pixelwise.errors import ConfigError
from pixelwise.models import build_model, count_parameters

NUM_CLASSES = 11
INPUTS = [(1, 3, 97, 131), (2, 3, 64, 64)]

# Where our MobileNetV3-Large backbone cuts torchvision's `features` into stages: stage i holds
# features[CUTS[i]:CUTS[i + 1]].
MOBILENET_V3_CUTS = (0, 2, 4, 7, 13, 17)
LRASPP_HEAD = {
    "classifier.cbr.0.": "head.features.0.",
    "classifier.cbr.1.": "head.features.1.",
    "classifier.scale.1.": "head.gate.1.",
    "classifier.low_classifier.": "head.classify_low.",
    "classifier.high_classifier.": "head.classify_high.",
}
# torchvision's ResNet as our five stages: stem (conv1, bn1, relu), (maxpool, layer1), layer2, layer3, layer4.
RESNET_BACKBONE = {
    "backbone.conv1.": "backbone.stages.0.0.",
    "backbone.bn1.": "backbone.stages.0.1.",
    "backbone.layer1.": "backbone.stages.1.1.",
    "backbone.layer2.": "backbone.stages.2.",
    "backbone.layer3.": "backbone.stages.3.",
    "backbone.layer4.": "backbone.stages.4.",
}
FCN_HEAD = {"classifier.0.": "head.0.", "classifier.1.": "head.1.", "classifier.4.": "head.4."}


def _replace_prefix(key: str, table: dict[str, str]) -> str | None:
    for theirs, ours in table.items():
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    return None


def lraspp_key(key: str) -> str:
    """torchvision ``lraspp_mobilenet_v3_large`` key -> our ``lraspp`` key."""
    match = re.fullmatch(r"backbone\.(\d+)\.(.+)", key)
    if match:
        index, rest = int(match[1]), match[2]
        stage = next(i for i in range(5) if MOBILENET_V3_CUTS[i] <= index < MOBILENET_V3_CUTS[i + 1])
        return f"backbone.stages.{stage}.{index - MOBILENET_V3_CUTS[stage]}.{rest}"
    mapped = _replace_prefix(key, LRASPP_HEAD)
    if mapped is None:
        raise KeyError(f"no mapping for torchvision key {key!r}")
    return mapped


def fcn_key(key: str) -> str:
    """torchvision ``fcn_resnet50`` key -> our ``fcn_resnet_dilated`` key."""
    mapped = _replace_prefix(key, {**RESNET_BACKBONE, **FCN_HEAD})
    if mapped is None:
        raise KeyError(f"no mapping for torchvision key {key!r}")
    return mapped


def _randomise_batch_norms(model: nn.Module) -> None:
    # Fresh BN layers are the identity in eval mode, which would hide a BN mapped onto the wrong layer.
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                shape = m.running_mean.shape
                m.running_mean.copy_(0.1 * torch.randn(shape, generator=generator))
                m.running_var.copy_(0.5 + torch.rand(shape, generator=generator))
                m.weight.copy_(0.5 + torch.rand(shape, generator=generator))
                m.bias.copy_(0.1 * torch.randn(shape, generator=generator))


def _twin_state(theirs: nn.Module, ours: nn.Module, key_map) -> dict[str, torch.Tensor]:
    """torchvision's state_dict under our keys; asserts the mapping is one-to-one and covers both sides."""
    their_state = theirs.state_dict()
    mapped = {key_map(k): v for k, v in their_state.items()}
    assert len(mapped) == len(their_state), "two torchvision keys map onto the same key of ours"
    our_keys = set(ours.state_dict())
    assert not our_keys - set(mapped), f"our keys no torchvision key maps to: {sorted(our_keys - set(mapped))[:5]}"
    assert not set(mapped) - our_keys, f"mapped keys we do not have: {sorted(set(mapped) - our_keys)[:5]}"
    return mapped


def _torchvision_lraspp() -> nn.Module:
    return torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES
    )


def _torchvision_fcn() -> nn.Module:
    return torchvision.models.segmentation.fcn_resnet50(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES, aux_loss=False
    )


@pytest.mark.parametrize(
    ("name", "make_twin", "key_map"),
    [("lraspp", _torchvision_lraspp, lraspp_key), ("fcn_resnet_dilated", _torchvision_fcn, fcn_key)],
)
def test_same_logits_as_torchvision(name: str, make_twin, key_map) -> None:
    torch.manual_seed(0)
    theirs = make_twin()
    _randomise_batch_norms(theirs)
    ours = build_model(name, NUM_CLASSES)
    assert count_parameters(ours) == count_parameters(theirs)
    ours.load_state_dict(_twin_state(theirs, ours, key_map), strict=True)
    theirs.eval()
    ours.eval()
    generator = torch.Generator().manual_seed(0)
    for shape in INPUTS:
        x = torch.randn(shape, generator=generator)
        with torch.no_grad():
            expected = theirs(x)["out"]
            actual = ours(x)
        assert actual.shape == (shape[0], NUM_CLASSES, *shape[-2:])
        torch.testing.assert_close(actual, expected)


def test_strided_conv_rate_is_an_opt_in() -> None:
    # The default keeps what the other models were built with; False is torchvision's ResNet dilation.
    default = build_backbone("resnet18", output_stride=8)
    exact = build_backbone("resnet18", output_stride=8, dilate_strided_conv=False)
    assert [default.stages[i][0].conv1.dilation for i in (3, 4)] == [(2, 2), (4, 4)]
    assert [exact.stages[i][0].conv1.dilation for i in (3, 4)] == [(1, 1), (2, 2)]
    assert [exact.stages[i][1].conv1.dilation for i in (3, 4)] == [(2, 2), (4, 4)]
    assert all(m.stride == (1, 1) for i in (3, 4) for m in exact.stages[i].modules() if isinstance(m, nn.Conv2d))
    with pytest.raises(ConfigError, match="dilate_strided_conv"):
        build_backbone("resnet18", dilate_strided_conv="no")


@pytest.mark.parametrize(
    ("name", "options"),
    [("lraspp", {"backbone": "mobilenet_v2"}), ("lraspp", {"backbone": "resnet18"}),
     ("fcn_resnet_dilated", {"backbone": "resnet34", "output_stride": 16})],
)
def test_other_backbones(name: str, options: dict) -> None:
    model = build_model(name, NUM_CLASSES, **options).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 45, 38)).shape == (1, NUM_CLASSES, 45, 38)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [("lraspp", {"backbone": "vgg16"}, "ResNet or MobileNet"),
     ("fcn_resnet_dilated", {"backbone": "mobilenet_v3_large"}, "resnet18"),
     ("fcn_resnet_dilated", {"output_stride": 32}, "output_stride")],
)
def test_bad_options_are_config_errors(name: str, options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_model(name, NUM_CLASSES, **options)
