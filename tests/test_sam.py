"""Segment Anything (pixelwise.prompt) against Meta's reference code, the ``segment-anything`` wheel.

The same random weights are loaded into both (ours ``strict=True`` from the reference's state dict); the encoder
embedding, the low-resolution logits, the masks and the predicted IoUs must agree to 1e-5 for every kind of prompt,
on a tiny configuration (image_size 128, patch 8: a 16x16 token grid, which windows of 14 cut into four padded
windows, plus one global block) and once on a ViT-B-sized model at 1024. Also: the checkpoint key layout of the
three variants, loading a saved state dict, the errors of a file that is not a SAM checkpoint, and the errors of bad
prompts.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("segment_anything")
from segment_anything import SamPredictor as ReferencePredictor  # noqa: E402
from segment_anything import sam_model_registry  # noqa: E402
from segment_anything.modeling import (  # noqa: E402
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam as ReferenceSam,
    TwoWayTransformer,
)
from segment_anything.modeling.image_encoder import get_rel_pos  # noqa: E402

from pixelwise.errors import CheckpointError, ConfigError  # noqa: E402
from pixelwise.prompt import SamConfig, SamPredictor, build_sam, resize_longest_side  # noqa: E402
from pixelwise.prompt.sam_encoder import relative_position_bias_table  # noqa: E402
from pixelwise.prompt.sam_predictor import scale_coords  # noqa: E402

TINY = SamConfig(encoder_embed_dim=32, encoder_depth=3, encoder_num_heads=2, encoder_global_attn_indexes=(1,),
                 image_size=128, patch_size=8, window_size=14, prompt_embed_dim=32, mask_in_chans=8,
                 decoder_num_heads=4, decoder_mlp_dim=64, iou_head_hidden_dim=32)
ATOL = 1e-5


def reference_sam(config: SamConfig) -> ReferenceSam:
    """Meta's model with the sizes of ``config``, built from the reference's own classes."""
    grid = config.image_size // config.patch_size
    return ReferenceSam(
        image_encoder=ImageEncoderViT(
            img_size=config.image_size, patch_size=config.patch_size, embed_dim=config.encoder_embed_dim,
            depth=config.encoder_depth, num_heads=config.encoder_num_heads, mlp_ratio=4,
            out_chans=config.prompt_embed_dim, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
            use_rel_pos=True, window_size=config.window_size,
            global_attn_indexes=config.encoder_global_attn_indexes),
        prompt_encoder=PromptEncoder(embed_dim=config.prompt_embed_dim, image_embedding_size=(grid, grid),
                                     input_image_size=(config.image_size, config.image_size),
                                     mask_in_chans=config.mask_in_chans),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=config.num_multimask_outputs,
            transformer=TwoWayTransformer(depth=config.decoder_depth, embedding_dim=config.prompt_embed_dim,
                                          mlp_dim=config.decoder_mlp_dim, num_heads=config.decoder_num_heads),
            transformer_dim=config.prompt_embed_dim, iou_head_depth=3,
            iou_head_hidden_dim=config.iou_head_hidden_dim),
    ).eval()


def perturb_(model: nn.Module, std: float) -> nn.Module:
    """Add Gaussian noise to every saved tensor, so that the zero-initialised ones (positional embeddings,
    relative position tables, biases) are exercised too."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.add_(std * torch.randn_like(tensor))
    return model


def assert_same_outputs(ours: tuple, reference: tuple, label: str) -> None:
    masks, iou, low_res = ours
    ref_masks, ref_iou, ref_low_res = reference
    assert masks.dtype == ref_masks.dtype and masks.shape == ref_masks.shape
    assert iou.shape == ref_iou.shape and low_res.shape == ref_low_res.shape
    torch.testing.assert_close(torch.from_numpy(low_res), torch.from_numpy(ref_low_res), atol=ATOL, rtol=0)
    torch.testing.assert_close(torch.from_numpy(iou), torch.from_numpy(ref_iou), atol=ATOL, rtol=0)
    if masks.dtype == bool:
        np.testing.assert_array_equal(masks, ref_masks)
        mask_diff = int((masks != ref_masks).sum())
    else:
        torch.testing.assert_close(torch.from_numpy(masks), torch.from_numpy(ref_masks), atol=ATOL, rtol=0)
        mask_diff = float(np.abs(masks - ref_masks).max())
    print(f"{label}: max |diff| low_res {np.abs(low_res - ref_low_res).max():.2e}, iou "
          f"{np.abs(iou - ref_iou).max():.2e}, masks {mask_diff}")


@pytest.fixture(scope="module")
def tiny_models() -> tuple[ReferenceSam, nn.Module]:
    torch.manual_seed(0)
    reference = perturb_(reference_sam(TINY), std=0.1)
    ours = build_sam(TINY)
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


IMAGE_SHAPES = {"small_37x61": (37, 61), "tall_150x90": (150, 90)}


@pytest.fixture(scope="module")
def tiny_predictors(tiny_models) -> dict[str, tuple[ReferencePredictor, SamPredictor, np.ndarray]]:
    reference, ours = tiny_models
    rng = np.random.default_rng(0)
    out = {}
    for name, shape in IMAGE_SHAPES.items():
        image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        ref_predictor, predictor = ReferencePredictor(reference), SamPredictor(ours)
        ref_predictor.set_image(image)  # numpy path: the wheel's apply_image_torch reads the wrong dims
        predictor.set_image(image)
        out[name] = (ref_predictor, predictor, image)
    return out


def prompt(kind: str, shape: tuple[int, int]) -> dict:
    h, w = shape
    points = dict(point_coords=np.array([[0.3 * w, 0.4 * h], [0.7 * w, 0.65 * h]]), point_labels=np.array([1, 0]))
    box = dict(box=np.array([0.1 * w, 0.2 * h, 0.8 * w, 0.9 * h]))
    return {"points": points, "box": box, "points_box": {**points, **box}}[kind]


@pytest.mark.parametrize("image", list(IMAGE_SHAPES))
def test_image_embedding_matches_reference(tiny_predictors, image):
    ref_predictor, predictor, _ = tiny_predictors[image]
    assert predictor.input_size == ref_predictor.input_size
    assert predictor.original_size == tuple(ref_predictor.original_size)
    torch.testing.assert_close(predictor.get_image_embedding(), ref_predictor.features, atol=ATOL, rtol=0)
    print(f"{image}: embedding max |diff| {(predictor.features - ref_predictor.features).abs().max():.2e}")


@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single"])
@pytest.mark.parametrize("kind", ["points", "box", "points_box"])
@pytest.mark.parametrize("image", list(IMAGE_SHAPES))
def test_prompts_match_reference(tiny_predictors, image, kind, multimask):
    ref_predictor, predictor, _ = tiny_predictors[image]
    kwargs = prompt(kind, IMAGE_SHAPES[image])
    ours = predictor.predict(**kwargs, multimask_output=multimask)
    reference = ref_predictor.predict(**kwargs, multimask_output=multimask)
    assert ours[0].shape == ((3 if multimask else 1), *IMAGE_SHAPES[image])
    assert_same_outputs(ours, reference, f"{image} {kind} multimask={multimask}")


@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single"])
@pytest.mark.parametrize("image", list(IMAGE_SHAPES))
def test_mask_input_refinement_matches_reference(tiny_predictors, image, multimask):
    """The best mask's low-resolution logits fed back with the points, and alone."""
    ref_predictor, predictor, _ = tiny_predictors[image]
    points = prompt("points", IMAGE_SHAPES[image])
    _, scores, logits = ref_predictor.predict(**points)
    mask_input = logits[np.argmax(scores)][None]
    for label, kwargs in [("points + mask", points), ("mask only", {})]:
        ours = predictor.predict(**kwargs, mask_input=mask_input, multimask_output=multimask)
        reference = ref_predictor.predict(**kwargs, mask_input=mask_input, multimask_output=multimask)
        assert_same_outputs(ours, reference, f"{image} {label} multimask={multimask}")


def test_logits_and_tensor_image_match_reference(tiny_models, tiny_predictors):
    """``return_logits`` gives the full-size logits; a (3, H, W) uint8 tensor is the same image as (H, W, 3)."""
    ref_predictor, _, image = tiny_predictors["small_37x61"]
    predictor = SamPredictor(tiny_models[1])
    predictor.set_image(torch.from_numpy(image).permute(2, 0, 1))
    kwargs = prompt("points_box", IMAGE_SHAPES["small_37x61"])
    ours = predictor.predict(**kwargs, return_logits=True)
    assert ours[0].dtype == np.float32
    assert_same_outputs(ours, ref_predictor.predict(**kwargs, return_logits=True), "tensor image, logits")


def test_forward_batches_one_prompt_per_image(tiny_models, tiny_predictors):
    """``Sam.forward`` on two resized images with a point each gives the predictor's logits of each."""
    _, ours = tiny_models
    names = list(IMAGE_SHAPES)
    images, coords, expected = [], [], []
    for name in names:
        image = tiny_predictors[name][2][:37, :61]  # one size for the batch
        predictor = SamPredictor(ours)
        predictor.set_image(image)
        point = np.array([[20.0, 10.0]])
        expected.append(predictor.predict(point_coords=point, point_labels=[1])[2])
        images.append(torch.from_numpy(resize_longest_side(image, TINY.image_size)).permute(2, 0, 1))
        coords.append(torch.from_numpy(scale_coords(point, image.shape[:2], TINY.image_size)).float())
    with torch.no_grad():
        low_res, iou = ours(torch.stack(images), torch.stack(coords), torch.ones(2, 1, dtype=torch.int64))
    assert low_res.shape == (2, 3, 64, 64) and iou.shape == (2, 3)
    torch.testing.assert_close(low_res, torch.from_numpy(np.stack(expected)), atol=ATOL, rtol=0)


@pytest.mark.parametrize("size,table_length", [(14, 27), (16, 31), (16, 27)])
def test_relative_position_table_matches_reference(size, table_length):
    table = torch.randn(table_length, 8)
    torch.testing.assert_close(relative_position_bias_table(table, size), get_rel_pos(size, size, table))


def test_vit_b_sized_model_matches_reference(tmp_path):
    """The real ViT-B configuration at 1024 (random weights saved as a file and loaded by build_sam): the image
    embedding of one image and one prompt's outputs."""
    torch.manual_seed(0)
    reference = perturb_(sam_model_registry["vit_b"](), std=0.02)
    path = tmp_path / "sam_vit_b_random.pth"
    torch.save(reference.state_dict(), path)
    ours = build_sam("vit_b", checkpoint=path)
    image = np.random.default_rng(1).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    ref_predictor, predictor = ReferencePredictor(reference), SamPredictor(ours)
    ref_predictor.set_image(image)
    predictor.set_image(image)
    assert predictor.features.shape == (1, 256, 64, 64)
    torch.testing.assert_close(predictor.features, ref_predictor.features, atol=ATOL, rtol=0)
    print(f"vit_b embedding max |diff| {(predictor.features - ref_predictor.features).abs().max():.2e}")
    kwargs = dict(point_coords=np.array([[30.0, 20.0]]), point_labels=np.array([1]), box=np.array([10, 5, 60, 40]))
    ours_out = predictor.predict(**kwargs)
    assert ours_out[2].shape == (3, 256, 256)
    assert_same_outputs(ours_out, ref_predictor.predict(**kwargs), "vit_b points + box")


# --- checkpoints ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["vit_b", "vit_l", "vit_h"])
def test_state_dict_keys_are_the_official_layout(variant):
    with torch.device("meta"):
        ours = build_sam(variant).state_dict()
        reference = sam_model_registry[variant]().state_dict()
    assert set(ours) == set(reference)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in reference.items()}


def test_build_sam_loads_a_saved_reference_state_dict(tiny_models, tiny_predictors, tmp_path):
    reference, _ = tiny_models
    path = tmp_path / "tiny_sam.pth"
    torch.save(reference.state_dict(), path)
    loaded = build_sam(TINY, checkpoint=path)
    assert not loaded.training
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    torch.testing.assert_close(loaded.pixel_mean.flatten(), torch.tensor(TINY.pixel_mean))
    ref_predictor, _, image = tiny_predictors["tall_150x90"]
    predictor = SamPredictor(loaded)
    predictor.set_image(image)
    kwargs = prompt("points", IMAGE_SHAPES["tall_150x90"])
    assert_same_outputs(predictor.predict(**kwargs), ref_predictor.predict(**kwargs), "loaded from file")


def _bad_files(tmp_path: Path, tiny_state: dict) -> dict[str, tuple[Path, str, dict]]:
    linear = tmp_path / "linear.pth"
    torch.save(nn.Linear(2, 2).state_dict(), linear)
    a_list = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], a_list)
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    training = tmp_path / "training.pth"
    torch.save({"model": tiny_state, "epoch": 3}, training)
    tiny = tmp_path / "tiny.pth"
    torch.save(tiny_state, tiny)
    with torch.device("meta"):
        vit_h = build_sam("vit_h").state_dict()
    vit_h_file = tmp_path / "vit_h_keys.pth"
    torch.save(vit_h, vit_h_file)  # meta tensors: the keys and shapes of ViT-H without its 2.5 GB
    return {
        "other model": (linear, "lacks 314", {}),
        "not a dict": (a_list, "holds a list", {}),
        "not a torch file": (text, "not a file written by torch.save", {}),
        "training checkpoint": (training, "'model', 'epoch'", {}),
        "missing file": (tmp_path / "absent.pth", "does not exist", {}),
        "tiny as vit_b": (tiny, "SAM vit_b", {}),
        "vit_h as vit_b": (vit_h_file, "build_sam('vit_h'", {}),
        "other sizes": (tiny, "not the sizes", {"encoder_embed_dim": 64}),
    }


def test_a_file_that_is_not_a_sam_checkpoint_is_a_clear_config_error(tiny_models, tmp_path):
    for case, (path, expected, overrides) in _bad_files(tmp_path, tiny_models[0].state_dict()).items():
        variant = TINY if overrides else "vit_b"
        with pytest.raises(ConfigError) as info:
            build_sam(variant, checkpoint=path, **overrides)
        message = str(info.value)
        assert isinstance(info.value, CheckpointError), case
        assert str(path) in message and expected in message, (case, message)
        assert "\n" not in message, case  # one sentence


def test_build_sam_rejects_unknown_variants_and_fields():
    with pytest.raises(ConfigError, match="vit_b, vit_l, vit_h"):
        build_sam("vit_x")
    with pytest.raises(ConfigError, match="encoder_dpeth"):
        build_sam("vit_b", encoder_dpeth=2)
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        SamConfig(image_size=1000)
    with pytest.raises(ConfigError, match=r"\[12\] are not blocks"):
        SamConfig(encoder_global_attn_indexes=(2, 12))


# --- bad input to the predictor ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def predictor(tiny_predictors) -> SamPredictor:
    return tiny_predictors["small_37x61"][1]  # a 37x61 image is set


def test_predict_before_set_image_is_a_value_error(tiny_models):
    with pytest.raises(ValueError, match="set_image"):
        SamPredictor(tiny_models[1]).predict(point_coords=[[1, 1]], point_labels=[1])
    with pytest.raises(ValueError, match="set_image"):
        SamPredictor(tiny_models[1]).get_image_embedding()


@pytest.mark.parametrize("kwargs,match", [
    ({}, "prompt is empty"),
    ({"point_coords": np.zeros((0, 2)), "point_labels": np.zeros(0)}, "prompt is empty"),
    ({"point_coords": [[61, 10]], "point_labels": [1]}, r"outside the 61x37 image"),
    ({"point_coords": [[10, -0.5]], "point_labels": [1]}, r"outside the 61x37 image"),
    ({"point_coords": [[10, np.nan]], "point_labels": [1]}, "not finite"),
    ({"point_coords": [[10, 10], [20, 20]], "point_labels": [1]}, "2 points but point_labels of shape"),
    ({"point_coords": [[10, 10]]}, "without point_labels"),
    ({"point_labels": [1]}, "without point_coords"),
    ({"point_coords": [10, 10], "point_labels": [1]}, r"\(N, 2\)"),
    ({"point_coords": [[10, 10]], "point_labels": [2]}, "1 \\(foreground\\) or 0"),
    ({"box": [30, 5, 10, 20]}, "x1 <= x2"),
    ({"box": [0, 0, 62, 20]}, "outside the 61x37 image"),
    ({"box": [0, 0, 10]}, r"shape \(4,\)"),
    ({"box": [0, 0, 10, 10], "mask_input": np.zeros((1, 256, 256))}, r"\(1, 64, 64\)"),
])
def test_bad_prompts_are_value_errors(predictor, kwargs, match):
    with pytest.raises(ValueError, match=match):
        predictor.predict(**kwargs)


@pytest.mark.parametrize("image,match", [
    (np.zeros((20, 30, 3), dtype=np.float32), "uint8"),
    (np.zeros((20, 30), dtype=np.uint8), r"\(H, W, 3\)"),
    (torch.zeros(20, 30, 3, dtype=torch.uint8), r"\(3, H, W\)"),
    (np.zeros((0, 30, 3), dtype=np.uint8), "empty"),
    ([[0, 1]], "numpy array"),
])
def test_bad_images_are_value_errors(tiny_models, image, match):
    with pytest.raises(ValueError, match=match):
        SamPredictor(tiny_models[1]).set_image(image)
