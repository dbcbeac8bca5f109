"""Click models: a semantic encoder-decoder that takes the user's clicks and its previous mask beside the image.

Sofiiuk, Petrov & Konushin, "Reviving Iterative Training with Mask Guidance for Interactive Segmentation"
(ICIP 2022, "RITM") segment the object a user points at with an ordinary segmentation network whose input has three
more channels: the disks of the positive clicks, the disks of the negative clicks
(:func:`pixelwise.prompt.clicks.click_maps`) and the network's previous mask (its probabilities after the last
click; zeros before the first), which lets it correct itself instead of starting over at every click. Its output is
one logit map, the object.

:class:`ClickModel` wraps any semantic model of the registry that way: the base is built with ``num_classes=1`` and
the image's channels, then its first convolution is widened by three input channels. The base's own filters for the
image channels are kept as they are (ImageNet filters of a pretrained encoder stay exactly ImageNet's). The three
new input channels of a pretrained first convolution start at random with the spread of its image filters (RITM's
``conv1s`` branch, a randomly initialised convolution of the click maps added to the first layer's output, does the
same): where there is no click and no previous mask they are zero, so the encoder sees an image as it was trained
to, and at a click the network feels it from the first step. (Starting them at zero, a MobileNetV2 encoder learned
nothing from the clicks in 120 steps: the gradient grows them too slowly at a fine-tuning learning rate.) A base
trained from scratch gets PyTorch's default initialisation for the new channels.

Registered as ``click_<base>`` (task ``"prompt"``) for U-Net, the U-Net decoder on a pretrained encoder, LR-ASPP and
DeepLabv3+; each takes its base's options (``build_model("click_encoder_unet", backbone="mobilenet_v2",
backbone_weights=...)``).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

from pixelwise.models.registry import _get_entry, register_model

__all__ = ["ClickModel", "CLICK_BASES", "PROMPT_CHANNELS"]

#: Input channels a click model takes beside the image: positive disks, negative disks, previous mask.
PROMPT_CHANNELS = 3

#: The semantic models registered as click models, ``click_<name>``.
CLICK_BASES = ("unet", "encoder_unet", "lraspp", "deeplabv3plus")

_RITM = ("Sofiiuk, Petrov, Konushin. Reviving Iterative Training with Mask Guidance for Interactive Segmentation. "
         "ICIP 2022")


def _first_conv(model: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    """(parent, attribute name, conv) of the first ``nn.Conv2d`` registered in ``model`` (depth-first): the layer
    that reads the input in every model of this package (encoders and U-Net register their input layer first)."""
    for qualified, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            parent_name, _, name = qualified.rpartition(".")
            return model.get_submodule(parent_name), name, module
    raise ValueError(f"{type(model).__name__} has no Conv2d to widen for the click channels")


def widen_first_conv(model: nn.Module, image_channels: int, extra: int, match_extra: bool) -> nn.Conv2d:
    """Replace the first convolution of ``model`` (taking ``image_channels`` inputs) by one taking
    ``image_channels + extra``: weights of the image channels and the bias copied, those of the ``extra`` channels
    normal with the image filters' standard deviation (``match_extra``) or PyTorch's default initialisation.
    Returns the new convolution.

    Raises:
        ValueError: the first convolution does not take ``image_channels`` inputs, or is grouped.
    """
    parent, name, conv = _first_conv(model)
    if conv.in_channels != image_channels or conv.groups != 1:
        raise ValueError(f"the first convolution of {type(model).__name__} takes {conv.in_channels} channels in "
                         f"{conv.groups} group(s), not the image's {image_channels}: cannot add the click channels")
    new = nn.Conv2d(image_channels + extra, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode)
    new = new.to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        new.weight[:, :image_channels].copy_(conv.weight)
        if match_extra:  # the click channels as strong as the (pretrained) image channels from the first step
            new.weight[:, image_channels:].normal_(0.0, float(conv.weight.std()))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    setattr(parent, name, new)
    return new


class ClickModel(nn.Module):
    """A semantic segmentation model turned into a click model (RITM, Sofiiuk et al., ICIP 2022).

    Args:
        base: the registered semantic model to wrap, e.g. ``"unet"``, ``"encoder_unet"``.
        num_classes: must be 1 (one logit map: the object).
        in_channels: C, channels of the images (3 RGB, 1 grey); the network takes C + 3.
        **options: the base model's options (``base_channels``, ``backbone``, ``backbone_weights``, ...). With
            ``backbone_weights`` given, the first convolution's click and mask channels start at the spread of its
            pretrained image filters.

    Attributes:
        image_channels: C. base: the wrapped model (its first convolution takes C + 3 channels).

    Shapes:
        ``forward(image (N, C, H, W) float normalised, clicks (N, 2, H, W) float 0/1 (positive, negative disks),
        prev_mask (N, 1, H, W) float in [0, 1]) -> logits (N, 1, H, W) float``, any H, W the base accepts (all of
        the registered ones: any).

    Raises:
        ValueError: ``num_classes`` is not 1, an unknown or non-semantic base, or a base whose first convolution
            does not read the image.
    """

    def __init__(self, base: str, num_classes: int = 1, in_channels: int = 3, **options: Any) -> None:
        super().__init__()
        if num_classes != 1:
            raise ValueError(f"a click model predicts one object, one logit map: num_classes must be 1, got "
                             f"{num_classes}")
        entry = _get_entry(base)
        if entry.task != "semantic":
            raise ValueError(f"{base!r} is a {entry.task} model; a click model wraps a semantic one")
        self.base_name = base
        self.image_channels = in_channels
        self.base = entry.factory(1, in_channels, **options)
        pretrained = options.get("backbone_weights") is not None
        widen_first_conv(self.base, in_channels, PROMPT_CHANNELS, match_extra=pretrained)
        if hasattr(self.base, "in_channels"):  # U-Net checks its input's channels against it
            self.base.in_channels = in_channels + PROMPT_CHANNELS

    def forward(self, image: Tensor, clicks: Tensor, prev_mask: Tensor) -> Tensor:
        if image.dim() != 4 or image.shape[1] != self.image_channels:
            raise ValueError(f"image must be (N, {self.image_channels}, H, W), got {tuple(image.shape)}")
        n, _, h, w = image.shape
        if tuple(clicks.shape) != (n, 2, h, w) or tuple(prev_mask.shape) != (n, 1, h, w):
            raise ValueError(f"clicks must be (N, 2, H, W) = {(n, 2, h, w)} and prev_mask (N, 1, H, W) = "
                             f"{(n, 1, h, w)}, got {tuple(clicks.shape)} and {tuple(prev_mask.shape)}")
        x = torch.cat([image, clicks.to(image.dtype), prev_mask.to(image.dtype)], dim=1)
        return self.base(x)


def _register(base: str) -> None:
    base_factory = _get_entry(base).factory

    def factory(num_classes: int = 1, in_channels: int = 3, **options: Any) -> ClickModel:
        return ClickModel(base, num_classes, in_channels, **options)

    # The base's signature, so build_model checks (and `pixelwise models` shows) the base's own options.
    factory.__signature__ = inspect.signature(base_factory)  # type: ignore[attr-defined]
    factory.__doc__ = (f"{base} with click and previous-mask input channels (RITM); options: those of {base}.\n\n"
                       f"See :class:`ClickModel`.")
    factory.__qualname__ = factory.__name__ = f"click_{base}"
    info = _get_entry(base)
    register_model(f"click_{base}", paper=f"{_RITM}; base: {info.paper}",
                   description=f"click model (RITM) on {base}: image + click disks + previous mask -> object logits",
                   task="prompt")(factory)


for _base in CLICK_BASES:
    _register(_base)
