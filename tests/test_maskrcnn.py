"""Mask R-CNN on pixelwise's backbones: with torchvision's ResNet-50 FPN settings and the same weights it is
torchvision's maskrcnn_resnet50_fpn to the bit, in training (losses) and at test time (boxes, scores, masks)."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection import maskrcnn_resnet50_fpn

from pixelwise.errors import ConfigError
from pixelwise.models import build_model, get_model_info, list_models
from pixelwise.models.maskrcnn import freeze_batch_norm, from_torchvision_state_dict

def _pair(num_classes: int = 2):
    torch.manual_seed(0)
    # torchvision's every default but the image size (800 / 1333), which only costs time here
    reference = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes + 1,
                                      min_size=256, max_size=320)
    ours = build_model("maskrcnn", num_classes, backbone="resnet50", min_size=256, max_size=320,
                       anchor_sizes=(32, 64, 128, 256, 512), detections_per_image=100, rois_per_image=512)
    missing, unexpected = ours.load_state_dict(from_torchvision_state_dict(reference.state_dict()), strict=True)
    assert not missing and not unexpected
    return ours, reference


def _targets(h: int, w: int) -> list[dict[str, torch.Tensor]]:
    masks = torch.zeros(2, h, w, dtype=torch.uint8)
    masks[0, 10:60, 20:90] = 1
    masks[1, 70:120, 40:100] = 1
    boxes = torch.tensor([[20.0, 10.0, 90.0, 60.0], [40.0, 70.0, 100.0, 120.0]])
    return [{"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks}]


def test_same_weights_same_losses_and_detections_as_torchvision():
    ours, reference = _pair()
    assert len(ours.state_dict()) == len(reference.state_dict())
    images = [torch.rand(3, 130, 150), torch.rand(3, 96, 120)]
    targets = _targets(130, 150) + [{k: v[:1].clone() if k != "masks" else v[:1, :96, :120].clone()
                                     for k, v in _targets(130, 150)[0].items()}]
    ours.train()
    reference.train()
    torch.manual_seed(1)
    a = ours(images, targets)
    torch.manual_seed(1)
    b = reference(images, targets)
    assert set(a) == set(b) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ours.eval()
    reference.eval()
    with torch.no_grad():
        out_a, out_b = ours(images), reference(images)
    assert sum(len(o["boxes"]) for o in out_a) > 0  # three classes with random weights: scores above 0.05
    for da, db in zip(out_a, out_b):
        assert da.keys() == db.keys() == {"boxes", "labels", "scores", "masks"}
        for key in da:
            assert torch.equal(da[key], db[key]), key


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v2"])
def test_small_backbones_keep_stride_4_features_and_train_on_grayscale(backbone):
    torch.manual_seed(0)
    model = build_model("maskrcnn", 1, in_channels=1, backbone=backbone, min_size=128, max_size=160,
                        mask_head_channels=64, rois_per_image=64)
    assert model.backbone.strides == (4, 8, 16, 32, 64)
    assert model.roi_heads.mask_head[0][0].out_channels == 64
    images = [torch.rand(1, 128, 150)]
    losses = model(images, [{k: v[:1] for k, v in _targets(128, 150)[0].items()}])
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total)
    assert next(model.backbone.body.stages[0].parameters()).grad is not None  # no weights: every stage trains
    model.eval()
    with torch.no_grad():
        (out,) = model(images)
    assert out["masks"].shape[1:] == (1, 128, 150)


def test_pretrained_backbone_freezes_batch_norm_and_the_first_stages(mobilenet_v2_weights):
    model = build_model("maskrcnn", 3, backbone="mobilenet_v2", backbone_weights=str(mobilenet_v2_weights))
    body = model.backbone.body
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())
    trainable = [any(p.requires_grad for p in stage.parameters()) for stage in body.stages]
    assert trainable == [False, False, True, True, True]  # torchvision's default: the last three stages train
    features = torch.load(mobilenet_v2_weights, weights_only=True)
    torch.testing.assert_close(body.stages[0][0][0].weight, features["features.0.0.weight"])


def test_freeze_batch_norm_keeps_the_outputs():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    net(torch.randn(8, 3, 10, 10))  # running statistics that are not the initial ones
    net.eval()
    x = torch.randn(2, 3, 10, 10)
    before = net(x)
    torch.testing.assert_close(freeze_batch_norm(net)(x), before)


def test_registered_as_an_instance_model_with_its_options_checked():
    assert "maskrcnn" in list_models(task="instance") and "maskrcnn" not in list_models(task="semantic")
    assert get_model_info("maskrcnn")["task"] == "instance"
    with pytest.raises(ConfigError, match="unknown option.*'detections'"):
        build_model("maskrcnn", 2, detections=5)
    with pytest.raises(ConfigError, match="ResNet or MobileNet"):
        build_model("maskrcnn", 2, backbone="vgg16")


def test_min_size_none_keeps_each_image_at_its_own_scale():
    torch.manual_seed(0)
    model = build_model("maskrcnn", 1, backbone="resnet18", min_size=None, rois_per_image=32).eval()
    images = [torch.rand(3, 70, 90), torch.rand(3, 200, 150)]
    batch, _ = model.transform(images)
    assert batch.image_sizes == [(70, 90), (200, 150)]  # not resized; only padded to a multiple of 32
    assert tuple(batch.tensors.shape[-2:]) == (224, 160)
    with torch.no_grad():
        outputs = model(images)
    assert [tuple(o["masks"].shape[-2:]) for o in outputs] == [(70, 90), (200, 150)]
