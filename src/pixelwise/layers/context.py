"""The context module: a stack of dilated 3x3 convolutions that aggregates multi-scale context on a score map.

Source: Fisher Yu, Vladlen Koltun. "Multi-Scale Context Aggregation by Dilated Convolutions". ICLR 2016.
https://arxiv.org/abs/1511.07122

The module takes C feature maps (in the paper: the C class scores of a segmentation front-end) and returns C maps
of the same size. Its dilations grow exponentially (1, 1, 2, 4, 8, 16, 1), so the receptive field grows
exponentially too, to 67x67, while the resolution and the parameter count stay those of a few 3x3 layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ContextModule", "CONTEXT_VARIANTS"]

# Output width of each 3x3 layer as a multiple of C (the paper's Table 1); the final 1x1 layer always returns C.
CONTEXT_VARIANTS: dict[str, tuple[int, ...]] = {
    "basic": (1, 1, 1, 1, 1, 1, 1),
    "large": (2, 2, 4, 8, 16, 32, 32),
}


def _identity_init_(conv: nn.Conv2d, channels: int, noise_std: float) -> None:
    """Yu & Koltun's identity initialisation of a layer from c_i to c_{i+1} maps, in place.

    ``k^b(t, a) = C / c_{i+1}`` at the centre tap t = 0 when ``floor(a·C / c_i) == floor(b·C / c_{i+1})``, and
    ``ε ~ N(0, noise_std²)`` everywhere else; bias 0. Input map a is thereby copied, scaled by ``C / c_{i+1}``, to
    every output map b that stands for the same one of the module's C "original" maps, so a layer that widens by a
    factor m makes m copies of each map, each 1/m of it, and a layer that narrows again sums them back. For
    c_i = c_{i+1} = C and ``noise_std=0`` this is the plain identity kernel ``1[t=0]·1[a=b]``.
    """
    c_out, c_in, kh, kw = conv.weight.shape
    a = torch.arange(c_in)
    b = torch.arange(c_out)
    same_map = (b[:, None] * channels // c_out) == (a[None, :] * channels // c_in)
    with torch.no_grad():
        if noise_std > 0:
            conv.weight.normal_(0.0, noise_std)
        else:
            conv.weight.zero_()
        centre = conv.weight[:, :, kh // 2, kw // 2]
        centre[same_map] = channels / c_out
        conv.bias.zero_()


class ContextModule(nn.Module):
    """Yu & Koltun's context module (ICLR 2016, Section 3 and Table 1), identity-initialised.

    Layers 1-7 are 3x3 convolutions with the given dilations and padding = dilation (so the size is kept), each
    followed by the "truncation" max(., 0), i.e. a ReLU. Layer 8 is a 1x1 convolution back to C maps with *no*
    truncation after it, as Table 1 lists ("Truncation: No" for layer 8), so the module can output negative scores.

    Widths (Table 1): ``"basic"`` keeps C maps throughout (64·C² + 8·C parameters with 7 dilated layers: 28,392
    for the paper's C = 21); ``"large"`` widens to 2C, 2C, 4C, 8C, 16C, 32C, 32C, then the 1x1 layer returns C.

    Receptive field: with the default dilations (1, 1, 2, 4, 8, 16, 1) each output pixel sees 67x67 input pixels
    (3, 5, 9, 17, 33, 65, 67 after layers 1-7; the 1x1 layer adds nothing).

    Initialisation (the paper's point): the module starts as the identity on non-negative inputs, so it can be put
    on top of a trained front-end without first destroying its predictions. ``"basic"`` layers get the identity
    kernel exactly; ``"large"`` layers get the paper's generalisation to c_i -> c_{i+1} maps (see
    :func:`_identity_init_`) plus N(0, ``init_noise``²) on all other weights to break the symmetry between the
    copies of a map. On an input with negative values the initial module computes ReLU(x), not x: the truncations
    of layers 1-7 are part of the paper's design.

    Args:
        channels: C, the number of input and output maps (the number of classes on a score map).
        variant: ``"basic"`` or ``"large"``.
        dilations: atrous rates of the 3x3 layers, bottom-up; ``"large"`` needs exactly 7 (one per width).
        init_noise: std of the symmetry-breaking noise of ``"large"``. The paper only asks for σ ≪ C/c_{i+1};
            the default 1e-3 is 3% of the smallest identity weight, C/32C = 1/32. 0 gives an exact identity.
            ``"basic"`` has no symmetry to break and ignores it.

    Shapes:
        (N, C, H, W) float -> (N, C, H, W) float, any H, W >= 1.

    Raises:
        ValueError: ``channels`` < 1, unknown ``variant``, an empty ``dilations`` or one below 1, a ``"large"``
            module without 7 dilations, or a negative ``init_noise``.
    """

    def __init__(
        self,
        channels: int,
        variant: str = "basic",
        dilations: Sequence[int] = (1, 1, 2, 4, 8, 16, 1),
        init_noise: float = 1e-3,
    ) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if variant not in CONTEXT_VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(map(repr, CONTEXT_VARIANTS))}, got {variant!r}")
        dilations = tuple(dilations)
        if not dilations or any(d < 1 for d in dilations):
            raise ValueError(f"dilations must be a non-empty sequence of integers >= 1, got {dilations}")
        if init_noise < 0:
            raise ValueError(f"init_noise must be >= 0, got {init_noise}")
        multipliers = CONTEXT_VARIANTS[variant]
        if variant == "basic":
            multipliers, init_noise = (1,) * len(dilations), 0.0
        elif len(dilations) != len(multipliers):
            raise ValueError(f"the 'large' variant has {len(multipliers)} 3x3 layers, got dilations {dilations}")
        self.channels = channels
        self.variant = variant
        self.dilations = dilations

        layers: list[nn.Module] = []
        c_in = channels
        for mult, rate in zip(multipliers, dilations):
            conv = nn.Conv2d(c_in, mult * channels, kernel_size=3, padding=rate, dilation=rate)
            _identity_init_(conv, channels, init_noise)
            layers += [conv, nn.ReLU(inplace=True)]
            c_in = mult * channels
        final = nn.Conv2d(c_in, channels, kernel_size=1)
        _identity_init_(final, channels, init_noise)
        layers.append(final)
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
