"""Encoders: torchvision classification networks cut into five stages that return feature maps.

Every backbone here is a torchvision model (ResNet-18/34/50/101, VGG-16, VGG-16-BN, MobileNetV2, MobileNetV3-Large)
with its classifier removed and its layers grouped into five stages whose outputs sit at nominal strides
2, 4, 8, 16 and 32 of the input::

    >>> backbone = build_backbone("resnet50", output_stride=16)
    >>> [f.shape[1] for f in backbone(torch.zeros(1, 3, 64, 64))]
    [64, 256, 512, 1024, 2048]
    >>> backbone.out_channels, backbone.strides
    ((64, 256, 512, 1024, 2048), (2, 4, 8, 16, 16))

``output_stride`` 8 or 16 keeps the resolution of the last stages by dilation instead of striding, the "atrous"
trick of DeepLab (Chen et al., TPAMI 2018) and of Yu & Koltun (ICLR 2016): the stage that would have halved the
resolution keeps it and its convolutions get atrous rate 2 (the next one 4), so every kernel still sees the same
context as in the strided network. Weights keep their shapes, so ImageNet weights load into a dilated backbone.
The convolution that carried the removed stride still reads its input at the old resolution, so rate 1 (the previous
stage's rate) would keep its own field of view exactly; ``dilate_strided_conv=False`` does that, as torchvision's
ResNet ``replace_stride_with_dilation`` does, while the default gives it the new rate like the rest of its stage, as
torchvision's dilated MobileNetV3 does.

Weights come from a torchvision weights enum (``"IMAGENET1K_V1"``, ``"DEFAULT"`` or the enum member itself), which
torchvision fetches into ``$TORCH_HOME/hub/checkpoints`` (downloaded once, then read from that cache), or from a local
``state_dict`` file in torchvision's key layout (with or without the classifier).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torchvision
from torch import Tensor, nn

from pixelwise.errors import CheckpointError, ConfigError
from pixelwise.layers.blocks import he_init_

__all__ = ["Backbone", "build_backbone", "list_backbones", "load_backbone_state_dict", "BACKBONES"]

# name -> (torchvision builder name, family). The family decides how the network is cut into stages.
BACKBONES: dict[str, tuple[str, str]] = {
    "resnet18": ("resnet18", "resnet"),
    "resnet34": ("resnet34", "resnet"),
    "resnet50": ("resnet50", "resnet"),
    "resnet101": ("resnet101", "resnet"),
    "vgg16": ("vgg16", "vgg"),
    "vgg16_bn": ("vgg16_bn", "vgg"),
    "mobilenet_v2": ("mobilenet_v2", "mobilenet_v2"),
    "mobilenet_v3_large": ("mobilenet_v3_large", "mobilenet_v3_large"),
}

def list_backbones() -> list[str]:
    """Sorted names accepted by :func:`build_backbone`."""
    return sorted(BACKBONES)


class Backbone(nn.Module):
    """Five stages of a classification network; ``forward`` returns the output of each.

    Attributes:
        stages: ``nn.ModuleList`` of 5 modules, applied in order.
        out_channels: channels of each stage's output.
        strides: input-to-feature stride of each stage's output (after dilation, so never above ``output_stride``).
        dilations: atrous rate the layers *after* each stage must use to keep their field of view (1 unless the
            backbone is dilated); e.g. FCN's fc6 on a VGG-16 at output stride 8 needs rate 4.
        name: the backbone's name, e.g. ``"resnet50"``.
        fc_layers: for VGG only, the torchvision classifier's ``(fc6, fc7)`` ``nn.Linear`` layers (with their
            ImageNet weights when loaded) for FCN-style convolutionalization; kept in a tuple so they are not
            registered as parameters of the backbone. ``()`` for other families. Built on first access (fc6 alone
            is 103M weights, which models that do not convert it should not pay for); assign ``()`` to free them.

    Shapes:
        (N, in_channels, H, W) float -> list of 5 tensors (N, out_channels[i], ~H / strides[i], ~W / strides[i]).
        Sizes are rounded the way each torchvision layer rounds (so a 97-pixel side gives 49, 25, 13, 7, 4 on a
        ResNet); models that fuse stages pad their input first.
    """

    def __init__(
        self,
        name: str,
        stages: list[nn.Module],
        out_channels: tuple[int, ...],
        strides: tuple[int, ...],
        dilations: tuple[int, ...],
        fc_layers: Callable[[], tuple[nn.Linear, ...]] | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.stages = nn.ModuleList(stages)
        self.out_channels = out_channels
        self.strides = strides
        self.dilations = dilations
        self._make_fc_layers = fc_layers
        self._fc_layers: tuple[nn.Linear, ...] | None = None

    @property
    def fc_layers(self) -> tuple[nn.Linear, ...]:
        if self._fc_layers is None:
            self._fc_layers = self._make_fc_layers() if self._make_fc_layers is not None else ()
            self._make_fc_layers = None
        return self._fc_layers

    @fc_layers.setter
    def fc_layers(self, value: tuple[nn.Linear, ...]) -> None:
        self._fc_layers = tuple(value)
        self._make_fc_layers = None

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def _resolve_weights_enum(builder: str, weights: Any) -> Any:
    """A torchvision ``WeightsEnum`` member from a member, its name (``"IMAGENET1K_V1"``) or ``"DEFAULT"``."""
    enum_cls = torchvision.models.get_model_weights(builder)
    if isinstance(weights, enum_cls):
        return weights
    name = str(weights)
    if name.upper() in ("DEFAULT", "IMAGENET"):
        return enum_cls.DEFAULT
    try:
        return enum_cls[name.upper()]
    except KeyError:
        known = ", ".join(["DEFAULT"] + [m.name for m in enum_cls])
        raise ConfigError(
            f"unknown weights {weights!r} for backbone {builder!r}; use one of {known}, "
            "or the path of a local state_dict file"
        ) from None


def _looks_like_path(weights: Any) -> bool:
    if isinstance(weights, Path):
        return True
    if not isinstance(weights, str):
        return False
    return os.sep in weights or "/" in weights or weights.endswith((".pth", ".pt", ".bin")) or Path(weights).exists()


def load_backbone_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a local weights file saved with ``torch.save(model.state_dict())`` (``weights_only=True``).

    A dict nested under ``"state_dict"`` or ``"model"`` (as many training scripts save it) is unwrapped, and a
    ``"module."`` prefix left by DataParallel/DDP is removed.

    Raises:
        CheckpointError: the file is missing, unreadable, or holds no dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"backbone weights file {path} does not exist; pass an existing .pth state_dict file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(f"cannot read backbone weights {path}: {err}") from err
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state_dict (a dict of tensor names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _load_into(model: nn.Module, state: dict[str, Tensor], source: str, head_prefixes: tuple[str, ...]) -> None:
    """Copy ``state`` into a torchvision model; only the classifier (``head_prefixes``) may be missing."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.startswith(head_prefixes)]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in state
        if k in expected and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:3]}")
        if wrong_shape:
            parts.append(f"shape mismatch: {wrong_shape[:3]}")
        raise CheckpointError(
            f"backbone weights {source} do not fit torchvision's {type(model).__name__}: {'; '.join(parts)}. "
            "The file must be a state_dict in torchvision's key layout for this backbone."
        )
    model.load_state_dict(state, strict=False)


def _adapt_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of ``conv`` taking ``in_channels`` inputs.

    Pretrained RGB filters are reused: for one channel their sum over R, G, B (a grey image gives the response
    the RGB filter gives to the same grey in color); otherwise the RGB filters repeated over the new channels
    and scaled by 3 / in_channels so the activation scale stays that of ImageNet training.
    """
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        w = conv.weight
        if in_channels == 1:
            new.weight.copy_(w.sum(dim=1, keepdim=True))
        else:
            idx = torch.arange(in_channels) % w.shape[1]
            new.weight.copy_(w[:, idx] * (w.shape[1] / in_channels))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _dilate(module: nn.Module, rate: int, strided_rate: int | None = None) -> None:
    """Remove the striding of ``module`` and give its k>1 convolutions atrous rate ``rate`` (padding kept 'same').

    With ``strided_rate`` given, the convolutions that were strided get that rate instead of ``rate``.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            conv_rate = strided_rate if strided_rate is not None and m.stride != (1, 1) else rate
            m.stride = (1, 1)
            if m.kernel_size != (1, 1):
                m.dilation = (conv_rate, conv_rate)
                m.padding = tuple(conv_rate * (k - 1) // 2 for k in m.kernel_size)


def _replace_first_conv(stem: nn.Module, in_channels: int) -> bool:
    """Swap the first ``Conv2d`` under ``stem`` (depth-first: the network's input layer) for one taking
    ``in_channels`` inputs (:func:`_adapt_first_conv`); False if there is none."""
    for name, child in stem.named_children():
        if isinstance(child, nn.Conv2d):
            setattr(stem, name, _adapt_first_conv(child, in_channels))
            return True
        if _replace_first_conv(child, in_channels):
            return True
    return False


# ------------------------------------------------------------------------------------------- one builder a family
# Each cuts a torchvision classification network into its five stages, ending at nominal strides 2, 4, 8, 16, 32.


def _resnet_stages(model: nn.Module) -> list[nn.Module]:
    """Stem (conv1, bn1, relu), (maxpool, layer1), layer2, layer3, layer4."""
    stem = nn.Sequential(model.conv1, model.bn1, model.relu)
    return [stem, nn.Sequential(model.maxpool, model.layer1), model.layer2, model.layer3, model.layer4]


def _vgg_stages(model: nn.Module) -> list[nn.Module]:
    """VGG's ``features`` split after each max-pool: stage i = (conv [bn] relu) x n, pool_i."""
    stages: list[nn.Module] = []
    current: list[nn.Module] = []
    for layer in model.features:
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            stages.append(nn.Sequential(*current))
            current = []
    return stages


def _mobilenet_stages(model: nn.Module, cuts: tuple[int, ...]) -> list[nn.Module]:
    """MobileNet's ``features[cuts[i]:cuts[i + 1]]`` as stage i."""
    return [nn.Sequential(*model.features[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]


def _vgg_fc_layers(model: nn.Module) -> Callable[[], tuple[nn.Linear, ...]]:
    """fc6 and fc7 of VGG's classifier, materialised (and initialised as torchvision does) on first call."""
    classifier = model.classifier

    def fc_layers() -> tuple[nn.Linear, ...]:
        if classifier[0].weight.is_meta:
            classifier.to_empty(device=torch.get_default_device())
            he_init_(classifier)
        return (classifier[0], classifier[3])

    return fc_layers


@dataclass(frozen=True)
class _Family:
    """How :func:`build_backbone` treats one family of torchvision classifiers.

    Attributes:
        head: the classifier's attribute (``"fc"``, ``"classifier"``); a weights file may lack its keys.
        stages: the family's builder, model -> its five stages.
        strides_in_pools: the stages stride in their closing max-pool (VGG), which a dilated backbone removes; else
            in their first convolutions, which a dilated backbone sets to stride 1.
        fc_layers: for VGG, the classifier's fc6 and fc7 on demand; the classifier stays on the meta device (no
            memory, no initialisation) until then, since only FCN-style models use its 120M weights.
    """

    head: str
    stages: Callable[[nn.Module], list[nn.Module]]
    strides_in_pools: bool = False
    fc_layers: Callable[[nn.Module], Callable[[], tuple[nn.Linear, ...]]] | None = None


_FAMILIES: dict[str, _Family] = {
    "resnet": _Family("fc", _resnet_stages),
    "vgg": _Family("classifier", _vgg_stages, strides_in_pools=True, fc_layers=_vgg_fc_layers),
    "mobilenet_v2": _Family("classifier", functools.partial(_mobilenet_stages, cuts=(0, 2, 4, 7, 14, 19))),
    "mobilenet_v3_large": _Family("classifier", functools.partial(_mobilenet_stages, cuts=(0, 2, 4, 7, 13, 17))),
}


def _check_options(name: str, in_channels: Any, output_stride: Any, dilate_strided_conv: Any) -> None:
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; known backbones: {', '.join(list_backbones())}")
    if output_stride not in (8, 16, 32):
        raise ConfigError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ConfigError(f"in_channels must be an integer >= 1, got {in_channels!r}")
    if not isinstance(dilate_strided_conv, bool):
        raise ConfigError(f"dilate_strided_conv must be True or False, got {dilate_strided_conv!r}")


def _construct(builder: str, family: _Family) -> nn.Module:
    """torchvision's network with its own random initialisation; a lazy head (VGG) is left on the meta device."""
    if family.fc_layers is None:
        return torchvision.models.get_model(builder, weights=None)
    with torch.device("meta"):
        model = torchvision.models.get_model(builder, weights=None)
    for name, child in model.named_children():
        if name != family.head:
            child.to_empty(device=torch.get_default_device())
            he_init_(child)
    return model


def _load_weights(model: nn.Module, builder: str, family: _Family, weights: Any) -> None:
    """Load ``weights`` (a local file or a torchvision weights name/enum member) into ``model``."""
    if _looks_like_path(weights):
        state = load_backbone_state_dict(weights)
        source = str(weights)
    else:
        enum = _resolve_weights_enum(builder, weights)
        source = f"{builder} {enum.name} ({enum.url})"
        try:
            state = enum.get_state_dict(progress=True, check_hash=True)
        except Exception as err:  # noqa: BLE001 - network and hash errors come in many types
            cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
            raise CheckpointError(
                f"cannot fetch {source}: {err}. Without network access, download {enum.url} elsewhere and "
                f"place it at {cache}, or pass the path of a local state_dict file as the weights"
            ) from err
    prefix = family.head + "."
    if family.fc_layers is not None and any(k.startswith(prefix) for k in state):
        getattr(model, family.head).to_empty(device=torch.get_default_device())
    _load_into(model, state, source, (prefix,))


def _set_output_stride(
    stages: list[nn.Module], output_stride: int, dilate_strided_conv: bool, strides_in_pools: bool
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Dilate the stages past ``output_stride`` in place; the strides and atrous rates of the five outputs."""
    strides, dilations = [], []
    stride, rate = 1, 1
    for stage in stages:
        if strides_in_pools:
            # VGG's convolutions come before the stage's pool, so they run at the previous stage's rate;
            # a removed pool raises the rate for whatever follows.
            if rate > 1:
                _dilate(stage, rate)
            if stride * 2 > output_stride:
                stage[-1] = nn.Identity()
                rate *= 2
            else:
                stride *= 2
        elif stride * 2 > output_stride:
            rate *= 2
            _dilate(stage, rate, None if dilate_strided_conv else rate // 2)
        else:
            stride *= 2
        strides.append(stride)
        dilations.append(rate)
    return tuple(strides), tuple(dilations)


def build_backbone(
    name: str,
    *,
    in_channels: int = 3,
    output_stride: int = 32,
    weights: Any = None,
    dilate_strided_conv: bool = True,
) -> Backbone:
    """Build a torchvision classification network as a 5-stage :class:`Backbone`.

    Args:
        name: one of :func:`list_backbones` (``resnet18/34/50/101``, ``vgg16``, ``vgg16_bn``, ``mobilenet_v2``,
            ``mobilenet_v3_large``).
        in_channels: channels of the input images. For a value other than 3 the first convolution is rebuilt;
            pretrained RGB filters are summed (1 channel) or repeated and rescaled (others).
        output_stride: 32 (the classification network as is), 16 or 8: the last one or two stages keep their
            input resolution and use atrous convolution instead (Chen et al., "Rethinking Atrous Convolution",
            2017; Yu & Koltun, ICLR 2016). For VGG the max-pools are removed, as in Yu & Koltun's front-end.
        weights: None (random initialisation, torchvision's), a torchvision weights name (``"IMAGENET1K_V1"``,
            ``"DEFAULT"``) or enum member, fetched through torchvision's cache (``$TORCH_HOME/hub/checkpoints``;
            downloaded the first time), or the path of a local ``state_dict`` file in torchvision's key layout.
            Classifier weights may be absent from a file.
        dilate_strided_conv: in a dilated ResNet or MobileNet stage, whether the convolution whose stride is
            removed also gets the stage's new atrous rate (True, like the stage's other convolutions; torchvision's
            dilated MobileNetV3) or keeps the previous stage's rate (False; torchvision's ResNet
            ``replace_stride_with_dilation``). No effect on VGG, whose strides are in its pools.

    Returns:
        The backbone, in train mode, float32, on the CPU.

    Raises:
        ConfigError: unknown ``name`` or weights name, ``output_stride`` not in {8, 16, 32}, ``in_channels`` < 1,
            ``dilate_strided_conv`` not a bool.
        CheckpointError: a weights file that is missing, unreadable or does not fit the network (the message lists
            missing, unexpected and mis-shaped keys); a download that fails (the message says where to put the file).
    """
    _check_options(name, in_channels, output_stride, dilate_strided_conv)
    builder, family_name = BACKBONES[name]
    family = _FAMILIES[family_name]
    model = _construct(builder, family)
    if weights is not None:
        _load_weights(model, builder, family, weights)

    stages = family.stages(model)
    out_channels = tuple(_last_channels(s) for s in stages)
    if in_channels != 3:
        _replace_first_conv(stages[0], in_channels)
    strides, dilations = _set_output_stride(stages, output_stride, dilate_strided_conv, family.strides_in_pools)
    fc_layers = family.fc_layers(model) if family.fc_layers is not None else None
    return Backbone(name, stages, out_channels, strides, dilations, fc_layers)


def _last_channels(module: nn.Module) -> int:
    """Output channels of a stage: those of its last convolution or batch norm."""
    channels = None
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            channels = m.out_channels
        elif isinstance(m, nn.BatchNorm2d):
            channels = m.num_features
    if channels is None:
        raise ValueError(f"no convolution in {type(module).__name__}")
    return channels
