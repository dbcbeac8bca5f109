"""Small helpers shared by the encoder-decoder models."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["check_images", "he_init_", "pad_to_multiple"]


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Zero-pad the bottom and right of (N, C, H, W) ``x`` so H and W are multiples of ``multiple``.

    Models whose skip connections fuse maps of several strides need every stride to divide the input exactly;
    they pad, run, and crop the logits back to ``[..., :H, :W]``. Zero is the dataset mean after normalisation.
    """
    height, width = x.shape[-2:]
    pad_h = (multiple - height % multiple) % multiple
    pad_w = (multiple - width % multiple) % multiple
    # An exported graph (ONNX, TorchScript, torch.export) must pad whatever size it will see, so the shortcut is
    # taken in eager mode only.
    exporting = torch.jit.is_tracing() or torch.compiler.is_compiling()
    if pad_h == 0 and pad_w == 0 and not exporting:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h))


def he_init_(modules: Iterable[nn.Module]) -> None:
    """In place: every ``Conv2d`` under ``modules`` gets weights from N(0, 2 / fan_in) and zero biases; every
    ``BatchNorm2d`` weight 1, bias 0.

    fan_in = in_channels / groups * kernel height * kernel width. The variance keeps the activations' scale through
    ReLU layers (He, Zhang, Ren, Sun, "Delving Deep into Rectifiers", ICCV 2015); U-Net prescribes it
    (Ronneberger, Fischer, Brox, MICCAI 2015, sec. 3: standard deviation sqrt(2/N), N the incoming nodes).
    """
    for root in modules:
        for module in root.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


def check_images(x: Tensor, in_channels: int) -> None:
    """Raise ValueError unless ``x`` is a floating-point (N, in_channels, H, W) batch; the message says the fix."""
    if x.dim() != 4:
        raise ValueError(f"expected a 4-D (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"expected a floating-point tensor, got {x.dtype}: convert the images with x.float()")
    if x.shape[1] != in_channels:
        raise ValueError(
            f"expected {in_channels} input channels, got {x.shape[1]}: build the model with in_channels={x.shape[1]}"
        )
