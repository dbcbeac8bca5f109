"""Tests of palettes (pixelwise.data.palette) and mask visualisation (pixelwise.viz)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.data.palette import CAMVID_PALETTE, VOID_COLOR, default_palette, read_palette
from pixelwise.errors import DatasetError
from pixelwise.viz import colorize, legend, overlay, save_class_png

PALETTE = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (10, 20, 30)]


# ------------------------------------------------------------------------------------------------ palettes


def test_default_palette_matches_voc_colors():
    pal = default_palette(21)
    assert len(pal) == 21
    assert pal[0] == (0, 0, 0)
    assert pal[1] == (128, 0, 0)
    assert pal[2] == (0, 128, 0)
    assert pal[3] == (128, 128, 0)
    assert pal[4] == (0, 0, 128)
    assert pal[15] == (192, 128, 128)
    assert len(set(pal)) == 21
    assert len(set(default_palette(256))) == 256
    assert default_palette(0) == []


def test_default_palette_rejects_negative():
    with pytest.raises(ValueError):
        default_palette(-1)


def test_void_color_and_camvid_palette():
    assert VOID_COLOR == (255, 255, 255)
    assert len(CAMVID_PALETTE) == 11
    assert CAMVID_PALETTE[0] == (128, 128, 128)  # Sky
    assert CAMVID_PALETTE[4] == (60, 40, 222)  # Pavement
    assert CAMVID_PALETTE[10] == (0, 128, 192)  # Bicyclist


def test_read_palette(tmp_path):
    path = tmp_path / "colors.txt"
    path.write_text("# my classes\n0 0 0\n\n255 10 3  # road\n  7\t8 9\n", encoding="utf-8")
    assert read_palette(path) == [(0, 0, 0), (255, 10, 3), (7, 8, 9)]


@pytest.mark.parametrize("bad", ["1 2", "1 2 3 4", "1 2 x", "1 2 256", "-1 0 0"])
def test_read_palette_bad_line_names_file_and_line(tmp_path, bad):
    path = tmp_path / "pal.txt"
    path.write_text(f"# header\n0 0 0\n{bad}\n", encoding="utf-8")
    with pytest.raises(DatasetError) as info:
        read_palette(path)
    message = str(info.value)
    assert "pal.txt" in message
    assert "line 3" in message


def test_read_palette_missing_or_empty_file(tmp_path):
    with pytest.raises(DatasetError, match="nope.txt"):
        read_palette(tmp_path / "nope.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="empty.txt"):
        read_palette(empty)


# ------------------------------------------------------------------------------------------------ colorize


def test_colorize_exact_pixels_and_void():
    mask = np.array([[0, 1], [3, 255]], dtype=np.int64)
    out = colorize(mask, PALETTE)
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert tuple(out[0, 0]) == (0, 0, 0)
    assert tuple(out[0, 1]) == (128, 0, 0)
    assert tuple(out[1, 0]) == (10, 20, 30)
    assert tuple(out[1, 1]) == VOID_COLOR


def test_colorize_accepts_torch_tensor():
    mask = torch.tensor([[2, 255], [1, 0]])
    expected = colorize(mask.numpy(), PALETTE)
    assert np.array_equal(colorize(mask, PALETTE), expected)
    assert tuple(expected[0, 0]) == (0, 128, 0)


def test_colorize_custom_ignore_index():
    mask = np.array([[0, 9]], dtype=np.uint8)
    out = colorize(mask, PALETTE, ignore_index=9)
    assert tuple(out[0, 1]) == VOID_COLOR


def test_colorize_unknown_id_names_value():
    mask = np.array([[0, 7]], dtype=np.int64)
    with pytest.raises(ValueError, match="7"):
        colorize(mask, PALETTE)
    with pytest.raises(ValueError, match="255"):
        colorize(np.array([[255]]), PALETTE, ignore_index=None)


# ------------------------------------------------------------------------------------------------ overlay


def test_overlay_alpha_blend_exact():
    image = np.full((2, 3, 3), 100, dtype=np.uint8)
    image[0, 0] = (200, 50, 0)
    mask = np.array([[1, 0, 255], [2, 3, 0]], dtype=np.int64)
    out = overlay(image, mask, PALETTE, alpha=0.25)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    # 0.75 * (200, 50, 0) + 0.25 * (128, 0, 0) = (182, 37.5, 0) -> halves round up
    assert tuple(out[0, 0]) == (182, 38, 0)
    # 0.75 * 100 + 0.25 * (10, 20, 30) = (77.5, 80, 82.5)
    assert tuple(out[1, 1]) == (78, 80, 83)
    # void shows the image unchanged
    assert tuple(out[0, 2]) == (100, 100, 100)


def test_overlay_alpha_extremes():
    image = np.full((1, 2, 3), 40, dtype=np.uint8)
    mask = np.array([[1, 2]])
    assert np.array_equal(overlay(image, mask, PALETTE, alpha=0.0), image)
    assert np.array_equal(overlay(image, mask, PALETTE, alpha=1.0), colorize(mask, PALETTE))
    with pytest.raises(ValueError):
        overlay(image, mask, PALETTE, alpha=1.5)


def test_overlay_grayscale_and_torch_images():
    gray = np.array([[10, 20]], dtype=np.uint8)
    mask = np.array([[0, 255]])
    out = overlay(gray, mask, PALETTE, alpha=0.5)
    assert out.shape == (1, 2, 3)
    assert tuple(out[0, 0]) == (5, 5, 5)
    assert tuple(out[0, 1]) == (20, 20, 20)

    chw = torch.tensor([[[10, 20]], [[30, 40]], [[50, 60]]], dtype=torch.uint8)  # (3, 1, 2)
    out = overlay(chw, torch.tensor([[1, 255]]), PALETTE, alpha=0.5)
    assert tuple(out[0, 0]) == (69, 15, 25)  # (10+128)/2, 30/2, 50/2
    assert tuple(out[0, 1]) == (20, 40, 60)

    one_channel = torch.tensor([[[10, 20]]], dtype=torch.uint8)  # (1, 1, 2)
    mask = np.array([[0, 255]])
    assert np.array_equal(overlay(one_channel, mask, PALETTE), overlay(gray, mask, PALETTE))


def test_overlay_size_mismatch_names_both_sizes():
    image = np.zeros((4, 5, 3), dtype=np.uint8)
    mask = np.zeros((4, 6), dtype=np.int64)
    with pytest.raises(ValueError) as info:
        overlay(image, mask, PALETTE)
    assert "4x5" in str(info.value) and "4x6" in str(info.value)


# ------------------------------------------------------------------------------------------------ PNG, legend


def test_save_class_png_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 4, size=(7, 9))
    mask[0, :3] = 255
    path = save_class_png(mask, tmp_path / "mask.png", PALETTE)
    with Image.open(path) as image:
        assert image.mode == "P"
        ids = np.array(image)
        colors = np.array(image.convert("RGB"))
        palette = image.getpalette()
    assert ids.dtype == np.uint8
    assert np.array_equal(ids, mask)
    assert np.array_equal(colors, colorize(mask, PALETTE))
    assert palette[3 * 255 : 3 * 256] == list(VOID_COLOR)
    assert palette[3 * 4 : 3 * 10] == [0] * 18


def test_save_class_png_accepts_tensor_and_rejects_large_ids(tmp_path):
    path = save_class_png(torch.tensor([[0, 1], [2, 3]]), str(tmp_path / "t.png"), PALETTE)
    assert np.array_equal(np.array(Image.open(path)), [[0, 1], [2, 3]])
    with pytest.raises(ValueError, match="300"):
        save_class_png(np.array([[0, 300]]), tmp_path / "bad.png", PALETTE)


def test_legend():
    assert legend(["bg", "road"], [(0, 0, 0), (128, 64, 255)]) == [("bg", "#000000"), ("road", "#8040ff")]
    with pytest.raises(ValueError):
        legend(["a", "b"], [(0, 0, 0)])
