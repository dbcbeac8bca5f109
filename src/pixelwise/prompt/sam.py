"""Segment Anything (Kirillov, Mintun, Ravi, Mao, Rolland, Gustafson, Xiao, Whitehead, Berg, Lo, Dollár & Girshick,
"Segment Anything", ICCV 2023): the model, its configurations and the builder that loads Meta's checkpoints.

SAM splits promptable segmentation into a heavy image encoder, run once per image (a ViT, see
:mod:`pixelwise.prompt.sam_encoder`), and a light prompt encoder + mask decoder, run once per prompt in
milliseconds (:mod:`pixelwise.prompt.sam_decoder`). :class:`~pixelwise.prompt.sam_predictor.SamPredictor` is the
interactive interface: set an image, then ask for masks from points, a box and an earlier mask.

>>> from pixelwise.prompt import build_sam
>>> sam = build_sam("vit_b", checkpoint="sam_vit_b_01ec64.pth")  # doctest: +SKIP

The three released encoders:

======= ========= ===== ===== ======================= ==========================
variant embed_dim depth heads global attention blocks checkpoint
======= ========= ===== ===== ======================= ==========================
vit_b   768       12    12    2, 5, 8, 11             ``sam_vit_b_01ec64.pth``
vit_l   1024      24    16    5, 11, 17, 23           ``sam_vit_l_0b3195.pth``
vit_h   1280      32    16    7, 15, 23, 31           ``sam_vit_h_4b8939.pth``
======= ========= ===== ===== ======================= ==========================

All take 1024 x 1024 inputs (patch 16, window 14) and share the decoder: 256 channels, a two-way transformer of
depth 2 with 8 heads and an MLP of 2048, four mask tokens. The state dict's keys are those of Meta's release
(``image_encoder.blocks.0.attn.rel_pos_h``, ``prompt_encoder.pe_layer.positional_encoding_gaussian_matrix``,
``mask_decoder.output_hypernetworks_mlps.0.layers.0.weight`` ...), so the official files load with
``strict=True``.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.errors import CheckpointError, ConfigError
from pixelwise.prompt.sam_decoder import MaskDecoder, PromptEncoder, TwoWayTransformer
from pixelwise.prompt.sam_encoder import ImageEncoderViT

__all__ = ["SAM_VARIANTS", "Sam", "SamCheckpointError", "SamConfig", "build_sam"]


class SamCheckpointError(CheckpointError, ConfigError):
    """A file given as a SAM checkpoint is missing, unreadable, or not the state dict of the requested variant.

    Both a :class:`~pixelwise.errors.CheckpointError` and a :class:`~pixelwise.errors.ConfigError` (the checkpoint
    is part of the model's configuration), so either ``except`` catches it.
    """


@dataclass(frozen=True)
class SamConfig:
    """The sizes of a SAM model. The defaults are ViT-B's; :data:`SAM_VARIANTS` holds the three released ones.

    Attributes:
        encoder_embed_dim, encoder_depth, encoder_num_heads: width, blocks and heads of the ViT image encoder.
        encoder_global_attn_indexes: blocks with global attention; the others attend within windows.
        image_size: side of the square encoder input in pixels; the long side of every image is resized to it.
        patch_size: ViT patch side in pixels; the image embedding is ``image_size // patch_size`` square.
        window_size: side of the attention windows in tokens.
        prompt_embed_dim: channels of the image embedding, prompt tokens and decoder.
        mask_in_chans: hidden channels of the mask-prompt downscaling.
        decoder_depth, decoder_num_heads, decoder_mlp_dim: the two-way transformer.
        iou_head_hidden_dim: width of the IoU prediction MLP.
        num_multimask_outputs: masks returned for an ambiguous prompt.
        pixel_mean, pixel_std: per-channel RGB normalisation of 0-255 images.

    Raises:
        ConfigError: sizes that do not fit together (an image not a multiple of the patch, a width not a multiple
            of the heads, a global block index past the depth ...).
    """

    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    iou_head_hidden_dim: int = 256
    num_multimask_outputs: int = 3
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoder_global_attn_indexes", tuple(int(i) for i in self.encoder_global_attn_indexes))
        problems = []
        if self.image_size <= 0 or self.patch_size <= 0 or self.image_size % self.patch_size:
            problems.append(f"image_size {self.image_size} must be a positive multiple of patch_size "
                            f"{self.patch_size}")
        if self.encoder_embed_dim % self.encoder_num_heads:
            problems.append(f"encoder_embed_dim {self.encoder_embed_dim} must be a multiple of encoder_num_heads "
                            f"{self.encoder_num_heads}")
        bad = [i for i in self.encoder_global_attn_indexes if not 0 <= i < self.encoder_depth]
        if bad:
            problems.append(f"encoder_global_attn_indexes {bad} are not blocks of a depth-{self.encoder_depth} "
                            "encoder")
        if self.window_size < 0:
            problems.append(f"window_size must be >= 0 (0: global attention everywhere), got {self.window_size}")
        if self.prompt_embed_dim % 8 or (self.prompt_embed_dim // 2) % self.decoder_num_heads:
            problems.append(f"prompt_embed_dim {self.prompt_embed_dim} must be a multiple of 8 and its half a "
                            f"multiple of decoder_num_heads {self.decoder_num_heads}")
        if self.mask_in_chans % 4 or self.mask_in_chans <= 0:
            problems.append(f"mask_in_chans must be a positive multiple of 4, got {self.mask_in_chans}")
        if problems:
            raise ConfigError("SamConfig: " + "; ".join(problems))

    @property
    def image_embedding_size(self) -> int:
        """Side of the image embedding in tokens (64 for the released models)."""
        return self.image_size // self.patch_size


#: The configurations of Meta's three released models.
SAM_VARIANTS: dict[str, SamConfig] = {
    "vit_b": SamConfig(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": SamConfig(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": SamConfig(1280, 32, 16, (7, 15, 23, 31)),
}


class Sam(nn.Module):
    """Segment Anything: image encoder, prompt encoder and mask decoder, with the pixel normalisation.

    Args:
        config: the sizes (:class:`SamConfig`); default ViT-B.

    Attributes:
        image_encoder, prompt_encoder, mask_decoder: the three parts (names as in Meta's checkpoints).
        pixel_mean, pixel_std: float (3, 1, 1) buffers, not saved in the state dict (as in Meta's release).
        mask_threshold: logits above it are in the mask (0.0).

    Forward (one prompt per image; for many prompts on one image use
    :class:`~pixelwise.prompt.sam_predictor.SamPredictor`):
        images: float or uint8 (N, 3, h, w) RGB in 0-255, already resized so that the long side is ``image_size``
            (see :func:`~pixelwise.prompt.sam_predictor.resize_longest_side`); padded here.
        point_coords: float (N, P, 2) xy in pixels of the resized image; point_labels: int (N, P) in {0, 1}.
        boxes: float (N, 4) xyxy in pixels of the resized image.
        mask_inputs: float (N, 1, 4e, 4e) low-resolution logits, e = ``image_size // patch_size``.
        multimask_output: three masks per prompt (True) or one (False).
        Returns low-resolution mask logits (N, 3 or 1, 4e, 4e) and predicted IoUs (N, 3 or 1), float32.
    """

    mask_threshold: float = 0.0

    def __init__(self, config: SamConfig | None = None) -> None:
        super().__init__()
        config = config or SamConfig()
        self.config = config
        grid = config.image_embedding_size
        self.image_encoder = ImageEncoderViT(
            image_size=config.image_size,
            patch_size=config.patch_size,
            embed_dim=config.encoder_embed_dim,
            depth=config.encoder_depth,
            num_heads=config.encoder_num_heads,
            global_attn_indexes=config.encoder_global_attn_indexes,
            window_size=config.window_size,
            out_channels=config.prompt_embed_dim,
        )
        self.prompt_encoder = PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=config.mask_in_chans,
        )
        self.mask_decoder = MaskDecoder(
            transformer_dim=config.prompt_embed_dim,
            transformer=TwoWayTransformer(depth=config.decoder_depth, embed_dim=config.prompt_embed_dim,
                                          num_heads=config.decoder_num_heads, mlp_dim=config.decoder_mlp_dim),
            num_multimask_outputs=config.num_multimask_outputs,
            iou_head_depth=3,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        )
        self.reset_pixel_statistics()

    def reset_pixel_statistics(self) -> None:
        """(Re)create the ``pixel_mean`` / ``pixel_std`` buffers from the config. They are not in the state dict,
        so a model materialised from the meta device by ``load_state_dict(..., assign=True)`` needs them again."""
        device = self.prompt_encoder.no_mask_embed.weight.device
        device = torch.device("cpu") if device.type == "meta" else device
        self.register_buffer("pixel_mean", torch.tensor(self.config.pixel_mean, device=device).view(3, 1, 1),
                             persistent=False)
        self.register_buffer("pixel_std", torch.tensor(self.config.pixel_std, device=device).view(3, 1, 1),
                             persistent=False)

    @property
    def image_size(self) -> int:
        """Side of the square encoder input in pixels (1024 for the released models)."""
        return self.image_encoder.img_size

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise RGB 0-255 images (N, 3, h, w), h, w <= image_size, and zero-pad them at the bottom and right
        to (N, 3, image_size, image_size), float32."""
        x = (images.float() - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        if h > self.image_size or w > self.image_size:
            raise ValueError(f"images of {h}x{w} are larger than the encoder's {self.image_size}x{self.image_size}"
                             ": resize the long side to image_size first (resize_longest_side)")
        return F.pad(x, (0, self.image_size - w, 0, self.image_size - h))

    def postprocess_masks(self, masks: torch.Tensor, input_size: tuple[int, int],
                          original_size: tuple[int, int]) -> torch.Tensor:
        """Low-resolution mask logits (N, C, 4e, 4e) -> logits at the original image size (N, C, H, W).

        The logits are upsampled bilinearly to the padded encoder input (image_size square), the padding is cut
        to ``input_size`` (the resized image, (h, w) in pixels), and the rest resized to ``original_size``
        ((H, W) in pixels).
        """
        masks = F.interpolate(masks, (self.image_size, self.image_size), mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)

    def forward(
        self,
        images: torch.Tensor,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_inputs: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        embeddings = self.image_encoder(self.preprocess(images))
        points = (point_coords, point_labels) if point_coords is not None else None
        sparse, dense = self.prompt_encoder(points, boxes, mask_inputs)
        return self.mask_decoder(embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output)


def _read_state_dict(path: Path, config: SamConfig, name: str) -> dict[str, torch.Tensor]:
    """The checked state dict of ``path`` for a SAM of ``config`` (called ``name`` in messages)."""
    with torch.device("meta"):
        expected = {k: v.shape for k, v in Sam(config).state_dict().items()}
    official = f", e.g. the official sam_{name}_*.pth" if name in SAM_VARIANTS else ""
    what = f"the state dict of SAM {name} ({len(expected)} tensors{official})"
    if not path.is_file():
        raise SamCheckpointError(f"{path} does not exist: expected {what}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for a foreign file; all mean the same to the user
        if not zipfile.is_zipfile(path):
            reason = "it is not a file written by torch.save"
        elif isinstance(exc, pickle.UnpicklingError):
            reason = "it holds Python objects that torch.load(weights_only=True) refuses to unpickle"
        else:
            reason = f"torch.load failed: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc!r}"
        raise SamCheckpointError(f"{path} cannot be read as a checkpoint ({reason}): expected {what}") from exc
    if not isinstance(loaded, dict):
        raise SamCheckpointError(f"{path} holds a {type(loaded).__name__}, not a state dict: expected {what}")
    others = [repr(k) for k, v in loaded.items() if not isinstance(v, torch.Tensor)]
    if others:
        raise SamCheckpointError(f"{path} holds a dict whose entries {', '.join(others[:3])}"
                                 f"{' ...' if len(others) > 3 else ''} are not tensors: expected {what}")
    missing = sorted(expected.keys() - loaded.keys())
    unexpected = sorted(loaded.keys() - expected.keys(), key=str)
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"it lacks {len(missing)} of them (e.g. {missing[0]!r})")
        if unexpected:
            problems.append(f"it has {len(unexpected)} other keys (e.g. {unexpected[0]!r})")
        match = [v for v, c in SAM_VARIANTS.items() if v != name and _keys_of(c) == set(loaded)]
        hint = f"; its keys are those of SAM {match[0]}: build_sam({match[0]!r}, checkpoint=...)" if match else ""
        raise SamCheckpointError(f"{path} is not {what}: {' and '.join(problems)}{hint}")
    wrong = [(k, tuple(loaded[k].shape), tuple(s)) for k, s in expected.items() if loaded[k].shape != s]
    if wrong:
        key, got, want = wrong[0]
        raise SamCheckpointError(f"{path} has SAM's keys but not the sizes of {name}: {len(wrong)} tensors differ, "
                                 f"e.g. {key!r} is {got} where {name} has {want}")
    return loaded


def _keys_of(config: SamConfig) -> set[str]:
    with torch.device("meta"):
        return set(Sam(config).state_dict())


def build_sam(variant: str | SamConfig = "vit_b", checkpoint: str | os.PathLike | None = None,
              **overrides: Any) -> Sam:
    """A Segment Anything model (Kirillov et al., ICCV 2023), randomly initialised or loaded from Meta's weights.

    Args:
        variant: ``"vit_b"``, ``"vit_l"`` or ``"vit_h"`` (:data:`SAM_VARIANTS`), or a :class:`SamConfig`.
        checkpoint: a state dict file in Meta's layout (``sam_vit_b_01ec64.pth`` for ``vit_b``, ...), read with
            ``torch.load(weights_only=True)`` and loaded with ``strict=True``; nothing is downloaded. The model is
            built on the meta device and takes the file's tensors, so the random initialisation is skipped.
        overrides: :class:`SamConfig` fields replacing the variant's (e.g. ``image_size=512`` for a small test
            model: ``build_sam("vit_b", encoder_depth=2, encoder_global_attn_indexes=(1,), image_size=128)``).

    Returns:
        The model in eval mode, float32, on the CPU when loaded from a file.

    Raises:
        ConfigError: an unknown variant or override, or sizes that do not fit together.
        SamCheckpointError (a ConfigError and a CheckpointError): ``checkpoint`` missing, not a torch file, not a
            dict of tensors, or not the state dict of this variant (missing or unexpected keys, other shapes).
    """
    if isinstance(variant, SamConfig):
        config, name = variant, "custom"
    elif variant in SAM_VARIANTS:
        config, name = SAM_VARIANTS[variant], variant
    else:
        raise ConfigError(f"unknown SAM variant {variant!r}: choose one of {', '.join(SAM_VARIANTS)} or pass a "
                          "SamConfig")
    if overrides:
        fields = {f.name for f in dataclasses.fields(SamConfig)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ConfigError(f"unknown SamConfig field(s) {unknown}: the fields are {sorted(fields)}")
        config, name = dataclasses.replace(config, **overrides), f"{name} (with {overrides})"
    if checkpoint is None:
        return Sam(config).eval()

    state_dict = _read_state_dict(Path(checkpoint), config, name)
    with torch.device("meta"):
        model = Sam(config)
    model.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True, assign=True)
    model.reset_pixel_statistics()
    return model.eval()
