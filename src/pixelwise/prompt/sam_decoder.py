"""The prompt encoder and mask decoder of Segment Anything (Kirillov et al., "Segment Anything", ICCV 2023).

Prompts become tokens. A point or a box corner is encoded by its position -- random Fourier features (Tancik et al.,
"Fourier Features Let Networks Learn High Frequency Functions in Low Dimensional Domains", NeurIPS 2020) -- plus a
learned embedding of its kind: background point (label 0), foreground point (1), top-left (2) and bottom-right (3)
box corner; label -1 is the "not a point" token that pads a point prompt without a box. A mask prompt, the
low-resolution logits of an earlier prediction, is downscaled 4x by convolutions and added to the image embedding;
without one a learned ``no_mask_embed`` is added everywhere instead.

The mask decoder is a two-way transformer of depth 2: the output tokens (one IoU token, four mask tokens) and the
prompt tokens attend to themselves, to the image embedding, and the image embedding attends back to them. The
embedding is then upscaled 4x by transposed convolutions; each mask token, through its own three-layer hypernetwork
MLP, gives the weights of a dot product with every upscaled pixel: one mask of logits per token. The IoU head
predicts the quality of each mask. Mask token 0 is the single-mask output; tokens 1-3 the three masks of an
ambiguous prompt (whole, part, subpart).

Module and parameter names follow the released checkpoints (``pe_layer.positional_encoding_gaussian_matrix``,
``output_hypernetworks_mlps.{i}.layers.{j}`` ...).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pixelwise.prompt.sam_encoder import FeedForward, LayerNorm2d

__all__ = ["MLP", "MaskDecoder", "PromptEncoder", "RandomFourierEncoding", "TwoWayTransformer"]


class RandomFourierEncoding(nn.Module):
    """Positional encoding of 2-D points by random spatial frequencies (Tancik et al., NeurIPS 2020).

    A point (x, y) in [0, 1]^2 is mapped to ``p = 2 * (x, y) - 1``, then to ``[sin(2 pi p G), cos(2 pi p G)]`` with
    ``G`` a fixed (2, num_features) Gaussian matrix (the buffer ``positional_encoding_gaussian_matrix``, saved in the
    checkpoint).

    Args:
        num_features: frequencies; the encoding has ``2 * num_features`` channels.
        scale: standard deviation of the frequencies.
    """

    def __init__(self, num_features: int = 64, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn(2, num_features))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """float (..., 2) xy in [0, 1] -> (..., 2 * num_features)."""
        projected = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        projected = (2 * math.pi) * projected
        return torch.cat([torch.sin(projected), torch.cos(projected)], dim=-1)

    def grid(self, size: tuple[int, int]) -> torch.Tensor:
        """The encoding of the centres of an (h, w) grid of cells: float (2 * num_features, h, w)."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        y = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        x = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        centres = torch.stack([x[None, :].expand(h, w), y[:, None].expand(h, w)], dim=-1)
        return self.encode(centres).permute(2, 0, 1)

    def forward(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """float (B, N, 2) xy in pixels of an image of (H, W) = ``image_size`` -> (B, N, 2 * num_features)."""
        normalised = torch.stack([coords[..., 0] / image_size[1], coords[..., 1] / image_size[0]], dim=-1)
        return self.encode(normalised.float())


class PromptEncoder(nn.Module):
    """Points, boxes and a mask -> sparse prompt tokens and a dense prompt embedding.

    Args:
        embed_dim: channels of the prompt tokens and of the image embedding (256).
        image_embedding_size: (h, w) of the image embedding (64, 64 for SAM).
        input_image_size: (H, W) of the padded encoder input in pixels (1024, 1024); point coordinates are in
            this frame.
        mask_in_chans: hidden channels of the mask downscaling (16).

    Forward (``points``, ``boxes``, ``masks``; any may be None):
        points: (coords float (B, N, 2) xy in input pixels, labels int (B, N) in {-1, 0, 1, 2, 3}).
        boxes: float (B, 4) xyxy in input pixels.
        masks: float (B, 1, 4h, 4w) mask logits (256 x 256 for SAM).
        Returns sparse tokens (B, N', embed_dim), N' = N (+ 1 padding token when no box) + 2 per box, and the dense
        embedding (B, embed_dim, h, w). B is taken from the first prompt given (1 when none).

    Raises:
        ValueError: a point label outside -1..3.
    """

    def __init__(self, embed_dim: int, image_embedding_size: tuple[int, int], input_image_size: tuple[int, int],
                 mask_in_chans: int = 16) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = tuple(input_image_size)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.pe_layer = RandomFourierEncoding(embed_dim // 2)
        # Background point, foreground point, top-left corner, bottom-right corner.
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """The positional encoding of every cell of the image embedding: float (1, embed_dim, h, w)."""
        return self.pe_layer.grid(self.image_embedding_size)[None]

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """Point tokens (B, N (+1 with ``pad``), embed_dim); see the class docstring for the shapes."""
        if labels.numel() and (int(labels.min()) < -1 or int(labels.max()) > 3):
            raise ValueError(f"point labels must be -1 (padding), 0 (background), 1 (foreground), 2 or 3 (box "
                             f"corners); got values in {int(labels.min())}..{int(labels.max())}")
        coords = coords + 0.5  # a pixel's coordinate names its top-left corner; encode its centre
        if pad:
            coords = torch.cat([coords, coords.new_zeros(coords.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), -1)], dim=1)
        tokens = self.pe_layer(coords, self.input_image_size)
        kinds = torch.cat([e.weight for e in self.point_embeddings])  # (4, embed_dim)
        tokens = tokens + kinds[labels.clamp(min=0).long()]
        return torch.where((labels == -1)[..., None], self.not_a_point_embed.weight, tokens)

    def embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """Box tokens, two corners per box: float (B, 4) xyxy -> (B, 2, embed_dim)."""
        corners = (boxes + 0.5).reshape(-1, 2, 2)
        tokens = self.pe_layer(corners, self.input_image_size)
        return tokens + torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        given = next((p for p in (points[0] if points is not None else None, boxes, masks) if p is not None), None)
        batch = given.shape[0] if given is not None else 1
        device = self.no_mask_embed.weight.device
        sparse = [torch.empty(batch, 0, self.embed_dim, device=device)]
        if points is not None:
            # A prompt without a box ends with a "not a point" token, as in training.
            sparse.append(self.embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            sparse.append(self.embed_boxes(boxes))
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, *self.image_embedding_size)
        return torch.cat(sparse, dim=1), dense


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them: (..., input_dim) -> (..., output_dim)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)


class Attention(nn.Module):
    """Multi-head attention whose queries, keys and values are projected to ``embed_dim / downsample_rate``
    channels (2 for the cross-attentions of SAM's decoder, which run over the 4096 image tokens).

    Forward: q (B, Nq, embed_dim), k and v (B, Nk, embed_dim) -> (B, Nq, embed_dim).
    """

    def __init__(self, embed_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        inner = embed_dim // downsample_rate
        if inner % num_heads:
            raise ValueError(f"attention of {inner} channels cannot be split into {num_heads} heads")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embed_dim, inner)
        self.k_proj = nn.Linear(embed_dim, inner)
        self.v_proj = nn.Linear(embed_dim, inner)
        self.out_proj = nn.Linear(inner, embed_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], x.shape[1], self.num_heads, -1).transpose(1, 2)  # (B, heads, N, head_dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        attn = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        out = attn.softmax(dim=-1) @ v
        return self.out_proj(out.transpose(1, 2).flatten(2))


class TwoWayAttentionBlock(nn.Module):
    """One layer of the two-way transformer, each step followed by a residual and a LayerNorm:
    (1) self-attention of the tokens, (2) tokens -> image cross-attention, (3) MLP on the tokens, (4) image ->
    tokens cross-attention. Positional encodings are added to queries and keys at every attention, except to the
    self-attention of the first layer, whose tokens are their own positional encoding (and which has no residual).
    """

    def __init__(self, embed_dim: int, num_heads: int, mlp_dim: int, downsample_rate: int = 2,
                 skip_first_layer_pe: bool = False) -> None:
        super().__init__()
        self.skip_first_layer_pe = skip_first_layer_pe
        self.self_attn = Attention(embed_dim, num_heads)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.cross_attn_token_to_image = Attention(embed_dim, num_heads, downsample_rate)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.mlp = FeedForward(embed_dim, mlp_dim, activation=nn.ReLU)
        self.norm3 = nn.LayerNorm(embed_dim)
        self.norm4 = nn.LayerNorm(embed_dim)
        self.cross_attn_image_to_token = Attention(embed_dim, num_heads, downsample_rate)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor,
                key_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))

        queries = self.norm3(queries + self.mlp(queries))

        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """The decoder's transformer: ``depth`` two-way blocks, then a final tokens -> image attention and LayerNorm.

    Args:
        depth: blocks (2).
        embed_dim: channels (256).
        num_heads: heads of every attention (8).
        mlp_dim: hidden width of the tokens' MLP (2048).

    Forward: image embedding (B, embed_dim, h, w), its positional encoding (B, embed_dim, h, w), tokens
    (B, N, embed_dim) -> (tokens (B, N, embed_dim), image tokens (B, h * w, embed_dim)).
    """

    def __init__(self, depth: int, embed_dim: int, num_heads: int, mlp_dim: int, downsample_rate: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embed_dim, num_heads, mlp_dim, downsample_rate, skip_first_layer_pe=i == 0)
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embed_dim, num_heads, downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embed_dim)

    def forward(self, image_embedding: torch.Tensor, image_pe: torch.Tensor,
                point_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        attn = self.final_attn_token_to_image(queries + point_embedding, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn), keys


class MaskDecoder(nn.Module):
    """Image embedding + prompt embeddings -> mask logits at 4x the embedding's resolution, and their IoU.

    Args:
        transformer_dim: channels of the image embedding and of the tokens (256).
        transformer: the :class:`TwoWayTransformer`.
        num_multimask_outputs: masks of an ambiguous prompt (3); one more token gives the single-mask output.
        iou_head_depth, iou_head_hidden_dim: layers and width of the IoU prediction MLP (3, 256).

    Forward:
        image_embeddings: float (1 or B, C, h, w); one embedding is shared by all B prompts.
        image_pe: float (1, C, h, w), :meth:`PromptEncoder.get_dense_pe`.
        sparse_prompt_embeddings: (B, N, C); dense_prompt_embeddings: (B, C, h, w).
        multimask_output: True: the three masks of tokens 1-3; False: the single mask of token 0.
        Returns mask logits (B, 3 or 1, 4h, 4w) and predicted IoUs (B, 3 or 1).

    Raises:
        ValueError: image embeddings whose batch is neither 1 nor the prompts' B.
    """

    def __init__(self, transformer_dim: int, transformer: nn.Module, num_multimask_outputs: int = 3,
                 iou_head_depth: int = 3, iou_head_hidden_dim: int = 256) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse_prompt_embeddings: torch.Tensor,
                dense_prompt_embeddings: torch.Tensor, multimask_output: bool) -> tuple[torch.Tensor, torch.Tensor]:
        masks, iou_pred = self.predict_masks(image_embeddings, image_pe, sparse_prompt_embeddings,
                                             dense_prompt_embeddings)
        selected = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, selected], iou_pred[:, selected]

    def predict_masks(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                      sparse_prompt_embeddings: torch.Tensor,
                      dense_prompt_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits (B, num_mask_tokens, 4h, 4w) and IoUs (B, num_mask_tokens) of every mask token."""
        batch = sparse_prompt_embeddings.shape[0]
        if image_embeddings.shape[0] not in (1, batch):
            raise ValueError(f"{image_embeddings.shape[0]} image embeddings for {batch} prompts: give one embedding "
                             "for all prompts or one per prompt")
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight])
        tokens = torch.cat([output_tokens.expand(batch, -1, -1), sparse_prompt_embeddings], dim=1)
        src = image_embeddings.expand(batch, -1, -1, -1) + dense_prompt_embeddings
        pos = image_pe.expand(batch, -1, -1, -1)
        _, channels, h, w = src.shape

        hs, src = self.transformer(src, pos, tokens)
        iou_token_out = hs[:, 0]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens]

        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(batch, channels, h, w))
        weights = torch.stack([mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
                              dim=1)  # (B, num_mask_tokens, C / 8)
        _, c, uh, uw = upscaled.shape
        masks = (weights @ upscaled.reshape(batch, c, uh * uw)).reshape(batch, -1, uh, uw)
        return masks, self.iou_prediction_head(iou_token_out)
