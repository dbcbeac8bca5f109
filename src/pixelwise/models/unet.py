"""U-Net: an encoder-decoder with skip connections by concatenation.

Source: Olaf Ronneberger, Philipp Fischer, Thomas Brox. "U-Net: Convolutional Networks for Biomedical Image
Segmentation". MICCAI 2015. https://arxiv.org/abs/1505.04597

The contracting path (encoder) repeats "two 3x3 convolutions, then 2x2 max pooling", doubling the channels at every
step: 64, 128, 256, 512, 1024 in the paper. The expansive path (decoder) repeats "2x2 up-convolution that halves the
channels, concatenate the encoder feature map of the same resolution, two 3x3 convolutions". A 1x1 convolution maps
the last feature map to one score (logit) per class.

Two deliberate differences from the paper, both as in most modern re-implementations:

* 3x3 convolutions use padding=1 ("same"), so the output has the size of the input and the skip connections need
  no cropping. The paper used unpadded convolutions, giving a 388x388 output for a 572x572 input, and tiled large
  images with an overlap to make up for it.
* Each convolution is followed by batch normalisation (Ioffe & Szegedy, 2015, published after U-Net), which makes
  training stable without the paper's careful initialisation. ``batch_norm=False`` gives the paper's conv->ReLU.
"""

from __future__ import annotations

import torch
from torch import nn

from pixelwise.layers.blocks import conv_bn_relu
from pixelwise.models.common import check_images, pad_to_multiple
from pixelwise.models.registry import register_model

__all__ = ["DoubleConv", "Down", "Up", "UNet"]


class DoubleConv(nn.Module):
    """(3x3 conv -> BatchNorm -> ReLU) x 2: the unit of work at every level of the U.

    The convolutions use padding=1, so the spatial size is kept (the paper used unpadded convolutions that shrink
    each side by 2 pixels); batch norm is our addition for stable training.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        mid_ch: channels between the two convolutions; defaults to ``out_ch``.
        batch_norm: if False, conv -> ReLU as in the paper.

    Shapes:
        (N, in_ch, H, W) float -> (N, out_ch, H, W) float.
    """

    def __init__(self, in_ch: int, out_ch: int, mid_ch: int | None = None, batch_norm: bool = True) -> None:
        super().__init__()
        mid_ch = mid_ch or out_ch
        # One flat Sequential (block.0 conv, block.1 BN, ...): the state_dict keys of every saved U-Net.
        self.block = nn.Sequential(
            *conv_bn_relu(in_ch, mid_ch, batch_norm=batch_norm), *conv_bn_relu(mid_ch, out_ch, batch_norm=batch_norm)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Down(nn.Module):
    """One step down the contracting path: 2x2 max pooling (halves H and W), then :class:`DoubleConv`.

    Shapes:
        (N, in_ch, H, W) float -> (N, out_ch, H // 2, W // 2) float.
    """

    def __init__(self, in_ch: int, out_ch: int, batch_norm: bool = True) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.conv = DoubleConv(in_ch, out_ch, batch_norm=batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x))


class Up(nn.Module):
    """One step up the expansive path: upsample x2, concatenate the skip connection, then :class:`DoubleConv`.

    ``in_ch`` is the channel count after concatenation, which the :class:`DoubleConv` sees.

    * ``bilinear=False`` (the paper): a 2x2 transposed convolution ("up-convolution") maps the ``in_ch`` channels
      coming from below to ``in_ch // 2``; the skip brings the other ``in_ch // 2``.
    * ``bilinear=True``: bilinear upsampling has no weights and cannot change the channel count, so the level below
      must already deliver ``in_ch // 2`` channels (this is why :class:`UNet` halves its bottleneck and decoder
      widths in this mode). It saves parameters and avoids the checkerboard artefacts transposed convolutions can
      produce.

    Args:
        in_ch: channels after concatenating the skip connection (twice the skip's channels).
        out_ch: output channels.
        bilinear: upsampling method, see above.
        batch_norm: passed to :class:`DoubleConv`.

    Shapes:
        ``forward(x, skip)``: x (N, in_ch, H, W) for ``bilinear=False`` or (N, in_ch // 2, H, W) for
        ``bilinear=True``; skip (N, in_ch // 2, 2H, 2W); result (N, out_ch, 2H, 2W). All float.

    Raises:
        ValueError: in ``forward``, if the upsampled ``x`` and ``skip`` differ in height or width.
    """

    def __init__(self, in_ch: int, out_ch: int, bilinear: bool = False, batch_norm: bool = True) -> None:
        super().__init__()
        self.up: nn.Module
        if bilinear:
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            # The first conv gives the width the transposed-conv variant would output here; the second halves it
            # again so that the next bilinear step receives the halved channels it needs.
            self.conv = DoubleConv(in_ch, out_ch, mid_ch=in_ch // 2, batch_norm=batch_norm)
        else:
            self.up = nn.ConvTranspose2d(in_ch, in_ch // 2, kernel_size=2, stride=2)
            self.conv = DoubleConv(in_ch, out_ch, batch_norm=batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        if x.shape[-2:] != skip.shape[-2:]:
            raise ValueError(
                f"upsampled size {tuple(x.shape[-2:])} != skip size {tuple(skip.shape[-2:])}: "
                "the input's height and width must be multiples of 2**depth (UNet.forward pads them for you)"
            )
        # Concatenation (not addition) keeps the encoder's fine detail as separate channels for the convs to use.
        return self.conv(torch.cat([skip, x], dim=1))


@register_model(
    "unet",
    paper="Ronneberger, Fischer, Brox. U-Net: Convolutional Networks for Biomedical Image Segmentation. MICCAI 2015",
    description="Encoder-decoder with skip connections by concatenation; 'same' padding and batch norm.",
)
class UNet(nn.Module):
    """U-Net (Ronneberger, Fischer, Brox, MICCAI 2015) with 'same' padding and optional batch norm.

    With the defaults this is the paper's layout: 4 down-sampling steps with widths 64, 128, 256, 512, 1024, and
    up-convolutions on the way back (31,037,698 parameters for 3 input channels and 2 classes).

    Args:
        num_classes: number of classes; the logits have this many channels.
        in_channels: channels of the input images (3 for RGB, 1 for grey).
        base_channels: width of the first level; level ``i`` has ``base_channels * 2**i`` channels.
        depth: number of down-sampling steps (the paper: 4). The input is padded internally to a multiple of
            ``2**depth``, available as :attr:`output_stride`.
        bilinear: upsample with bilinear interpolation instead of transposed convolutions; the bottleneck and
            decoder are then half as wide (see :class:`Up`).
        batch_norm: add BatchNorm after every 3x3 convolution.

    Attributes:
        num_classes, in_channels: as given.
        output_stride: ``2**depth``, the total down-sampling factor at the bottleneck.

    Raises:
        ValueError: if any of ``num_classes``, ``in_channels``, ``base_channels``, ``depth`` is below 1.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        base_channels: int = 64,
        depth: int = 4,
        bilinear: bool = False,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        for arg, value in (
            ("num_classes", num_classes),
            ("in_channels", in_channels),
            ("base_channels", base_channels),
            ("depth", depth),
        ):
            if value < 1:
                raise ValueError(f"{arg} must be >= 1, got {value}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.output_stride = 2**depth

        widths = [base_channels * 2**level for level in range(depth + 1)]
        # Bilinear upsampling keeps the channel count, so everything arriving from below must already be halved.
        factor = 2 if bilinear else 1

        self.inc = DoubleConv(in_channels, widths[0], batch_norm=batch_norm)
        self.downs = nn.ModuleList(
            Down(widths[level - 1], widths[level] // (factor if level == depth else 1), batch_norm=batch_norm)
            for level in range(1, depth + 1)
        )
        # Built deepest first, the order forward() uses them in.
        self.ups = nn.ModuleList(
            Up(widths[level], widths[level - 1] // (factor if level > 1 else 1), bilinear, batch_norm=batch_norm)
            for level in range(depth, 0, -1)
        )
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel class logits.

        Args:
            x: images, (N, in_channels, H, W), floating point (normalised, not uint8), any H and W >= 1.

        Returns:
            Logits (N, num_classes, H, W) with the dtype of ``x``; no softmax applied.

        Raises:
            ValueError: if ``x`` is not 4-D, not floating point, or has the wrong number of channels.
        """
        check_images(x, self.in_channels)

        height, width = x.shape[-2:]
        # Every pooling halves the size and every up-step doubles it, so only multiples of 2**depth come back to
        # the same size and line up with their skips. Zeros rather than reflection: reflect needs the padding to be
        # smaller than the image, and zeros are what the 'same' convolutions assume beyond the border anyway.
        x = pad_to_multiple(x, self.output_stride)

        x = self.inc(x)
        skips: list[torch.Tensor] = []
        for down in self.downs:
            skips.append(x)
            x = down(x)
        for up in self.ups:
            x = up(x, skips.pop())
        logits = self.head(x)
        return logits[..., :height, :width]

