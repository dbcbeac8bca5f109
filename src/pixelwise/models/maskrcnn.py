"""Mask R-CNN (He, Gkioxari, Dollár & Girshick, "Mask R-CNN", ICCV 2017) on pixelwise's backbones.

The detector is torchvision's :class:`~torchvision.models.detection.MaskRCNN`: its region proposal network, RoIAlign
and box and mask heads are the reference and are not re-implemented here. What pixelwise adds is the body: any
backbone of :func:`pixelwise.backbones.build_backbone` (ResNet-18/34/50/101, MobileNetV2 with the ImageNet weights
of ``../shared/weights``, ...) under a feature pyramid network (Lin et al., "Feature Pyramid Networks for Object
Detection", CVPR 2017) over its stride-4, 8, 16 and 32 stages, plus a max-pooled stride-64 level, as torchvision
builds its ResNet-50 FPN. (torchvision's own MobileNet FPN reads two stride-32 maps and nothing finer, which starves
the mask head of the small objects of microscopy images.)

The costs of the knobs, on a CPU, where each is most of a step:

- ``min_size`` / ``max_size``: with ``min_size`` set, images are resized so that their short side is ``min_size``
  (long side at most ``max_size``) before the backbone; time and memory grow with the pixel count. torchvision's
  800 / 1333 is COCO's protocol. The default here, ``min_size=None``, keeps every image at its own scale: a
  microscope's pixel is its scale, and a model trained on crops then sees whole images at the scale it learned,
  where resizing by the short side would enlarge the crops. Set ``min_size`` for photos whose resolutions differ
  widely.
- ``anchor_sizes``: one anchor size per pyramid level (strides 4 to 64). 16 ... 256 here, half torchvision's
  32 ... 512, since images are not enlarged to 800 pixels and the objects of microscopy are small.
- ``rois_per_image``: RoIs sampled per image to train the box and mask heads (torchvision: 512; 256 here). The
  mask head trains on the positive ones, up to a quarter, and on a CPU it is most of a step once the detector
  finds objects: four 3x3 convolutions of 256 channels on 14x14 are about 1 GFLOP per RoI forward, 3 with the
  backward, so 64 positives per image cost about 400 GFLOP a step of two images.
- ``detections_per_image``: the most instances kept per image at test time (torchvision: 100; 300 here, for the
  hundreds of cells of a microscopy image). The mask head runs on each, at test time about linear in this.
- ``mask_head_channels``: width of the four 3x3 convolutions of the mask head (256 in the paper), which run on
  every RoI at 14x14: halving it quarters their FLOPs.

Class ids: ``num_classes`` counts the object classes; label 0 is the background, so the heads have
``num_classes + 1`` outputs and labels run 1..num_classes.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN as TorchvisionMaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from pixelwise.backbones import Backbone, build_backbone
from pixelwise.models.registry import register_model

__all__ = ["BackboneWithFPN", "MaskRCNN", "freeze_batch_norm", "from_torchvision_state_dict"]

#: torchvision's ResNet keys -> the stages of a pixelwise backbone (stem, (maxpool, layer1), layer2, layer3, layer4).
_RESNET_BODY = {"conv1.": "stages.0.0.", "bn1.": "stages.0.1.", "layer1.": "stages.1.1.", "layer2.": "stages.2.",
                "layer3.": "stages.3.", "layer4.": "stages.4."}


def from_torchvision_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict of torchvision's ``maskrcnn_resnet50_fpn`` (e.g. its COCO weights, loaded from a local file) in
    the key layout of ``build_model("maskrcnn", backbone="resnet50")``: only the backbone's keys are renamed; the
    FPN, RPN and heads keep theirs. Load it with ``model.load_state_dict(..., strict=True)`` (num_classes 90 for
    COCO's, whose heads have 91 outputs)."""
    out = {}
    for key, value in state.items():
        if key.startswith("backbone.body."):
            rest = key[len("backbone.body."):]
            prefix = next((p for p in _RESNET_BODY if rest.startswith(p)), None)
            if prefix is None:
                raise ValueError(f"{key} is not a key of torchvision's ResNet-50 FPN backbone")
            key = "backbone.body." + _RESNET_BODY[prefix] + rest[len(prefix):]
        out[key] = value
    return out


class BackboneWithFPN(nn.Module):
    """A :class:`~pixelwise.backbones.Backbone` under a feature pyramid network.

    Args:
        backbone: five stages at strides 2, 4, 8, 16, 32.
        stages: which stages feed the pyramid (default the strides 4, 8, 16, 32: stages 1-4).
        out_channels: channels of every pyramid level.

    Forward: float (N, C, H, W) -> ``OrderedDict`` of ``"0"``.. ``str(len(stages) - 1)`` (the stages, fine to
    coarse) and ``"pool"`` (a stride-2 max-pool of the coarsest), each (N, out_channels, ...) -- torchvision's
    ``BackboneWithFPN`` layout, which its RPN and RoIAlign read.
    """

    def __init__(self, backbone: Backbone, stages: Sequence[int] = (1, 2, 3, 4), out_channels: int = 256) -> None:
        super().__init__()
        self.body = backbone
        self.stages = tuple(int(s) for s in stages)
        self.fpn = FeaturePyramidNetwork([backbone.out_channels[s] for s in self.stages], out_channels,
                                         extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels
        self.strides = tuple(backbone.strides[s] for s in self.stages) + (2 * backbone.strides[self.stages[-1]],)

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        x = self.body.stages[0](x)
        features: OrderedDict[str, torch.Tensor] = OrderedDict()
        for i, stage in enumerate(self.body.stages[1 : self.stages[-1] + 1], start=1):
            x = stage(x)
            if i in self.stages:
                features[str(len(features))] = x
        return self.fpn(features)


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``module`` by a :class:`torchvision.ops.misc.FrozenBatchNorm2d` holding
    its statistics and affine parameters (as torchvision's detection models do with a pretrained backbone: batches
    of two images cannot estimate BN statistics). Returns ``module``, changed in place."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                frozen.weight.copy_(child.weight)
                frozen.bias.copy_(child.bias)
                frozen.running_mean.copy_(child.running_mean)
                frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batch_norm(child)
    return module


class _KeepScale(GeneralizedRCNNTransform):
    """torchvision's transform (normalise, batch with padding to a multiple of 32) without the resize."""

    def __init__(self, transform: GeneralizedRCNNTransform) -> None:
        super().__init__(transform.min_size, transform.max_size, transform.image_mean, transform.image_std,
                         size_divisible=transform.size_divisible, fixed_size=transform.fixed_size)

    def resize(self, image, target=None):
        return image, target


@register_model("maskrcnn", task="instance", paper="He et al., \"Mask R-CNN\", ICCV 2017",
                description="Mask R-CNN (torchvision's heads) with an FPN over a pixelwise backbone")
class MaskRCNN(TorchvisionMaskRCNN):
    """Mask R-CNN with a feature pyramid over a pixelwise backbone (see the module docstring for the costs).

    Args:
        num_classes: object classes, background excluded (labels 1..num_classes; 0 is the background).
        in_channels: image channels, 3 (RGB) or 1 (grayscale: the first convolution is adapted).
        backbone: a name of :func:`pixelwise.backbones.list_backbones` other than VGG.
        backbone_weights: None (random), a torchvision weights name, or a local ``state_dict`` file (e.g.
            ``../shared/weights/mobilenet_v2_imagenet_features_tvformat.pth``); nothing is downloaded unless a
            weights name is given.
        frozen_bn: BatchNorm of the backbone as fixed affine layers; None: frozen when ``backbone_weights`` is
            given, as torchvision does.
        trainable_stages: how many of the five backbone stages train, counted from the last; None: 3 with
            ``backbone_weights`` (torchvision's default), 5 without.
        fpn_channels: channels of every pyramid level (256 in the paper).
        min_size, max_size: the short / long side images are resized to, in pixels; ``min_size=None``: no resizing.
        image_mean, image_std: normalisation of [0, 1] images inside the model; None: ImageNet's for RGB, 0.5 / 0.25
            for grayscale.
        anchor_sizes: one anchor size in pixels per pyramid level (five), each at aspect ratios 0.5, 1, 2.
        rois_per_image, detections_per_image, mask_head_channels: see the module docstring.
        score_threshold: detections below this class score are dropped at test time (torchvision: 0.05).

    Forward: torchvision's contract. Train mode: ``model(images, targets) -> dict of losses``; eval mode:
    ``model(images) -> list of {"boxes": (R, 4) xyxy float, "labels": (R,) int64, "scores": (R,), "masks":
    (R, 1, H, W) float probabilities}``, ``images`` a list of float (C, H, W) in [0, 1] of any sizes.

    Raises:
        ValueError: a VGG backbone (no stride-4 stage of a useful width), or an anchor per level missing.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        backbone: str = "resnet50",
        backbone_weights: Any = None,
        frozen_bn: bool | None = None,
        trainable_stages: int | None = None,
        fpn_channels: int = 256,
        min_size: int | None = None,
        max_size: int = 1024,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        anchor_sizes: Sequence[int] = (16, 32, 64, 128, 256),
        rois_per_image: int = 256,
        detections_per_image: int = 300,
        mask_head_channels: int = 256,
        score_threshold: float = 0.05,
    ) -> None:
        if backbone.startswith("vgg"):
            raise ValueError(f"backbone {backbone!r}: Mask R-CNN here takes a ResNet or MobileNet backbone")
        if len(anchor_sizes) != 5:
            raise ValueError(f"anchor_sizes needs one size per pyramid level (5), got {list(anchor_sizes)}")
        pretrained = backbone_weights is not None
        body = build_backbone(backbone, in_channels=in_channels, weights=backbone_weights)
        if frozen_bn if frozen_bn is not None else pretrained:
            freeze_batch_norm(body)
        trainable = trainable_stages if trainable_stages is not None else (3 if pretrained else 5)
        if not 0 <= trainable <= 5:
            raise ValueError(f"trainable_stages must be in 0..5, got {trainable}")
        for stage in body.stages[: 5 - trainable]:
            stage.requires_grad_(False)
        fpn = BackboneWithFPN(body, out_channels=fpn_channels)
        if image_mean is None:
            image_mean = (0.485, 0.456, 0.406) if in_channels == 3 else (0.5,) * in_channels
        if image_std is None:
            image_std = (0.229, 0.224, 0.225) if in_channels == 3 else (0.25,) * in_channels
        representation = 1024  # TwoMLPHead's width, torchvision's default box head
        super().__init__(
            fpn,
            num_classes=None,
            min_size=min_size or 1,
            max_size=max_size,
            image_mean=list(image_mean),
            image_std=list(image_std),
            rpn_anchor_generator=AnchorGenerator(tuple((int(s),) for s in anchor_sizes), ((0.5, 1.0, 2.0),) * 5),
            box_predictor=FastRCNNPredictor(representation, num_classes + 1),
            box_detections_per_img=detections_per_image,
            box_batch_size_per_image=rois_per_image,
            box_score_thresh=score_threshold,
            mask_head=MaskRCNNHeads(fpn_channels, [mask_head_channels] * 4, 1),
            mask_predictor=MaskRCNNPredictor(mask_head_channels, mask_head_channels, num_classes + 1),
        )
        if min_size is None:
            self.transform = _KeepScale(self.transform)
        self.num_classes = num_classes
        self.in_channels = in_channels
