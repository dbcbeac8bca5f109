"""The image encoder of Segment Anything (Kirillov et al., "Segment Anything", ICCV 2023): a plain ViT.

The encoder is a Vision Transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021) adapted to
dense prediction as ViTDet does (Li, Mao, Girshick & He, "Exploring Plain Vision Transformer Backbones for Object
Detection", ECCV 2022): most blocks attend within non-overlapping 14x14 windows of the token grid, and a few blocks
spread evenly through the depth attend globally. Every attention adds decomposed relative positional embeddings
(Li et al., "MViTv2", CVPR 2022): one learned table per axis, so the bias between two tokens is the sum of a
height term and a width term. A neck of 1x1 conv + LayerNorm2d + 3x3 conv + LayerNorm2d maps the last tokens to the
256-channel image embedding the mask decoder reads.

At 1024x1024 input and patch 16 the token grid is 64x64 and the embedding (N, 256, 64, 64), stride 16.

Module and parameter names follow the released checkpoints (``patch_embed.proj``, ``blocks.{i}.attn.rel_pos_h``,
``neck.0`` ...), so that ``sam_vit_b_01ec64.pth`` and its siblings load with ``strict=True``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FeedForward", "ImageEncoderViT", "LayerNorm2d"]


class LayerNorm2d(nn.Module):
    """Layer normalisation over the channels of an (N, C, H, W) map, at every pixel (as in ConvNeXt).

    Args:
        num_channels: C.
        eps: added to the variance (1e-6 in SAM).

    Forward: float (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(1, keepdim=True)
        variance = centred.pow(2).mean(1, keepdim=True)
        x = centred / torch.sqrt(variance + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class FeedForward(nn.Module):
    """The transformer's two-layer perceptron: Linear(dim, hidden) -> activation -> Linear(hidden, dim).

    Forward: float (..., dim) -> (..., dim).
    """

    def __init__(self, dim: int, hidden_dim: int, activation: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden_dim)
        self.lin2 = nn.Linear(hidden_dim, dim)
        self.act = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class PatchEmbedding(nn.Module):
    """Non-overlapping ``patch_size`` x ``patch_size`` patches -> tokens, by one strided convolution.

    Forward: float (N, in_channels, H, W) -> (N, H / patch_size, W / patch_size, embed_dim), channels last.
    """

    def __init__(self, patch_size: int, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


def relative_position_bias_table(table: torch.Tensor, size: int) -> torch.Tensor:
    """The embeddings of all (query, key) offsets along one axis of ``size`` tokens.

    Args:
        table: (L, head_dim) float, one row per offset -(size - 1) .. size - 1 (L = 2 * size - 1); a table learned
            for another size is linearly resampled to that length first.
        size: tokens along the axis (the window size, or the grid's height or width for global attention).

    Returns:
        (size, size, head_dim): entry [i, j] embeds the offset i - j.
    """
    length = 2 * size - 1
    if table.shape[0] != length:
        table = F.interpolate(table.t()[None], size=length, mode="linear")[0].t()
    positions = torch.arange(size, device=table.device)
    return table[positions[:, None] - positions[None, :] + (size - 1)]


class WindowAttention(nn.Module):
    """Multi-head self-attention over a grid of tokens, with decomposed relative positional embeddings.

    The attention logit between query (y, x) and key (y', x') is ``q . k / sqrt(head_dim) + q . Rh[y - y'] +
    q . Rw[x - x']`` (MViTv2): ``rel_pos_h`` and ``rel_pos_w`` hold the per-axis tables, ``2 * size - 1`` rows each.

    Args:
        dim: token channels.
        num_heads: heads; ``dim`` must be a multiple.
        grid_size: (height, width) of the token grid the tables are sized for: the window, or the whole grid.
        qkv_bias: bias on the query/key/value projection.

    Forward: float (B, H, W, dim) -> (B, H, W, dim), B counting windows.
    """

    def __init__(self, dim: int, num_heads: int, grid_size: tuple[int, int], qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        # Zero at initialisation: the model starts from the absolute positional embedding alone.
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * grid_size[0] - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * grid_size[1] - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, dim = x.shape
        tokens = height * width
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, batch * self.num_heads, tokens, -1).unbind(0)  # each (B * heads, HW, head_dim)

        logits = (q * self.scale) @ k.transpose(-2, -1)
        rel_h = relative_position_bias_table(self.rel_pos_h, height)  # (H, H', head_dim)
        rel_w = relative_position_bias_table(self.rel_pos_w, width)  # (W, W', head_dim)
        q_grid = q.reshape(-1, height, width, q.shape[-1])
        bias_h = torch.einsum("byxc,yhc->byxh", q_grid, rel_h)
        bias_w = torch.einsum("byxc,xwc->byxw", q_grid, rel_w)
        logits = logits.view(-1, height, width, height, width) + bias_h[..., :, None] + bias_w[..., None, :]
        attn = logits.view(-1, tokens, tokens).softmax(dim=-1)

        out = (attn @ v).view(batch, self.num_heads, height, width, -1).permute(0, 2, 3, 1, 4)
        return self.proj(out.reshape(batch, height, width, dim))


def partition_windows(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Cut a (B, H, W, C) token grid into (B * nH * nW, window_size, window_size, C) windows, zero-padding the
    bottom and right so that both sides are multiples of ``window_size``. Returns the windows and the padded
    (H, W)."""
    batch, height, width, channels = x.shape
    pad_h = -height % window_size
    pad_w = -width % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    rows, cols = (height + pad_h) // window_size, (width + pad_w) // window_size
    x = x.view(batch, rows, window_size, cols, window_size, channels).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window_size, window_size, channels), (height + pad_h, width + pad_w)


def merge_windows(windows: torch.Tensor, padded_size: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`partition_windows`: windows -> the (B, H, W, C) grid of ``size``, padding dropped."""
    window_size = windows.shape[1]
    rows, cols = padded_size[0] // window_size, padded_size[1] // window_size
    batch = windows.shape[0] // (rows * cols)
    x = windows.view(batch, rows, cols, window_size, window_size, -1).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(batch, padded_size[0], padded_size[1], -1)
    return x[:, : size[0], : size[1]].contiguous()


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)).

    Args:
        dim, num_heads: token channels and heads.
        grid_size: the token grid of the whole image, (H, W); sizes the relative tables of a global block.
        window_size: side of the attention windows; 0 for global attention over the whole grid.
        mlp_ratio: hidden width of the MLP over ``dim``.

    Forward: float (N, H, W, dim) -> (N, H, W, dim).
    """

    def __init__(self, dim: int, num_heads: int, grid_size: tuple[int, int], window_size: int = 0,
                 mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = WindowAttention(dim, num_heads, (window_size, window_size) if window_size else grid_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        if self.window_size:
            size = (y.shape[1], y.shape[2])
            windows, padded = partition_windows(y, self.window_size)
            y = merge_windows(self.attn(windows), padded, size)
        else:
            y = self.attn(y)
        x = x + y
        return x + self.mlp(self.norm2(x))


class ImageEncoderViT(nn.Module):
    """SAM's image encoder: ViT with windowed and global attention blocks and a 256-channel convolutional neck.

    Args:
        image_size: side of the square (padded) input in pixels (1024 for the released models).
        patch_size: side of a patch in pixels (16); the token grid is ``image_size // patch_size`` square.
        embed_dim, depth, num_heads: width, number of blocks and heads of the ViT (ViT-B: 768, 12, 12; ViT-L:
            1024, 24, 16; ViT-H: 1280, 32, 16).
        global_attn_indexes: the blocks that attend over the whole grid (ViT-B: 2, 5, 8, 11); the others attend
            within windows.
        window_size: side of the attention windows in tokens (14).
        out_channels: channels of the image embedding (256).
        mlp_ratio: hidden width of the blocks' MLP over ``embed_dim`` (4).

    Forward: float (N, 3, image_size, image_size), normalised (see :meth:`Sam.preprocess`) -> image embedding
    (N, out_channels, image_size / patch_size, image_size / patch_size).
    """

    def __init__(
        self,
        image_size: int = 1024,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        global_attn_indexes: Sequence[int] = (2, 5, 8, 11),
        window_size: int = 14,
        out_channels: int = 256,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.img_size = image_size
        self.patch_size = patch_size
        grid = image_size // patch_size
        self.patch_embed = PatchEmbedding(patch_size, 3, embed_dim)
        # Absolute positional embedding, channels last like the tokens.
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            EncoderBlock(embed_dim, num_heads, (grid, grid), 0 if i in global_attn_indexes else window_size,
                         mlp_ratio)
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_channels, kernel_size=1, bias=False),
            LayerNorm2d(out_channels),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
