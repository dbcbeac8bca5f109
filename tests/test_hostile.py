"""Hostile input: EXIF-rotated photos, CMYK and other color modes, 16-bit files, empty and non-image files,
decompression bombs, unicode and space-containing paths. Each is read correctly or named in a clear error, through
the dataset, the label check and the command line, never as a bare traceback."""

from __future__ import annotations

import json
import multiprocessing
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from pixelwise.cli import main
from pixelwise.data import SegmentationFolder, build_dataset
from pixelwise.data import io as data_io
from pixelwise.data.check import scan
from pixelwise.data.synthetic import write_synthetic_folder
from pixelwise.errors import DatasetError
from _cli import TINY_TRAIN



def _folder(root: Path, classes=("background", "object")) -> Path:
    (root / "images" / "train").mkdir(parents=True)
    (root / "masks" / "train").mkdir(parents=True)
    (root / "classes.txt").write_text("".join(c + "\n" for c in classes))
    return root


@pytest.fixture(params=["torchvision", "pillow"])
def decoder(request, monkeypatch):
    """Run a test with torchvision.io's fast path and with Pillow alone: both must behave the same."""
    if request.param == "pillow":
        monkeypatch.setattr(data_io, "_TV_DECODE_JPEG", None)
    return request.param


# -- EXIF orientation ------------------------------------------------------------------------------------------------
def _exif_jpeg(path: Path, stored: np.ndarray, orientation: int) -> Path:
    exif = Image.Exif()
    exif[data_io.EXIF_ORIENTATION] = orientation
    Image.fromarray(stored).save(path, quality=100, exif=exif.tobytes())
    return path


def _left_half_bright(h: int, w: int) -> np.ndarray:
    """An RGB image, bright where x < w / 2, dark elsewhere: the picture a mask with a left-half object fits."""
    img = np.full((h, w, 3), 30, np.uint8)
    img[:, : w // 2] = 220
    return img


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_rotated_jpeg_is_read_upright_and_stays_aligned_with_its_mask(tmp_path, decoder, orientation):
    root = _folder(tmp_path / "d")
    upright = _left_half_bright(24, 40)  # what the annotator saw: the object on the left half
    # Store the pixels as the camera did: rotated so that applying the EXIF orientation gives `upright` back.
    undo = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.Transpose.ROTATE_180}[orientation]
    stored = np.asarray(Image.fromarray(upright).transpose(undo))
    path = _exif_jpeg(root / "images" / "train" / "photo.jpg", stored, orientation)
    assert np.array_equal(np.asarray(ImageOps.exif_transpose(Image.open(path))).shape, upright.shape)
    mask = np.zeros((24, 40), np.uint8)
    mask[:, :20] = 1
    Image.fromarray(mask).save(root / "masks" / "train" / "photo.png")

    ds = SegmentationFolder(root, "train")
    image, m = ds[0]
    assert image.shape == (3, 24, 40) and m.shape == (24, 40)
    inside, outside = image[0][m == 1].float().mean(), image[0][m == 0].float().mean()
    assert inside > 200 and outside < 50, (inside, outside)  # the object's pixels are under the object's mask
    pillow = torch.from_numpy(np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB")).copy())
    assert torch.equal(image, pillow.permute(2, 0, 1))
    report = scan(ds)
    assert report.ok and report.exif_rotated == [path]


def test_mask_drawn_on_the_stored_pixels_keeps_the_stored_orientation(tmp_path, decoder):
    root = _folder(tmp_path / "d")
    stored = _left_half_bright(24, 40)
    _exif_jpeg(root / "images" / "train" / "scan.jpg", stored, 6)  # upright it would be 40 x 24
    mask = np.zeros((24, 40), np.uint8)
    mask[:, :20] = 1  # made by a script from the stored pixels
    Image.fromarray(mask).save(root / "masks" / "train" / "scan.png")
    image, m = SegmentationFolder(root, "train")[0]
    assert image.shape == (3, 24, 40)
    assert image[0][m == 1].float().mean() > 200 and image[0][m == 0].float().mean() < 50
    assert scan(SegmentationFolder(root, "train")).ok


def test_mask_fitting_neither_orientation_is_named(tmp_path):
    root = _folder(tmp_path / "d")
    _exif_jpeg(root / "images" / "train" / "a.jpg", _left_half_bright(24, 40), 6)
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(root / "masks" / "train" / "a.png")
    with pytest.raises(DatasetError, match=r"a.jpg is 40x24 but its mask .*a.png is 30x30"):
        SegmentationFolder(root, "train")[0]


# -- color modes and bit depths --------------------------------------------------------------------------------------
def test_cmyk_jpeg_and_grayscale_images_in_an_rgb_dataset(tmp_path, decoder):
    root = _folder(tmp_path / "d")
    rgb = np.random.default_rng(0).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "images" / "train" / "a_rgb.png")
    Image.fromarray(rgb).convert("CMYK").save(root / "images" / "train" / "b_cmyk.jpg", quality=95)
    Image.fromarray(rgb[..., 0]).save(root / "images" / "train" / "c_gray.jpg", quality=95)
    Image.fromarray(rgb).convert("RGBA").save(root / "images" / "train" / "d_rgba.png")
    for i in ("a_rgb", "b_cmyk", "c_gray", "d_rgba"):
        Image.fromarray(np.ones((16, 20), np.uint8)).save(root / "masks" / "train" / f"{i}.png")
    ds = SegmentationFolder(root, "train")
    assert ds.in_channels == 3
    for k, s in enumerate(ds.samples):
        image = ds[k][0]
        expected = np.asarray(Image.open(s.image).convert("RGB"))  # Pillow's conversion is the oracle
        assert image.shape == (3, 16, 20) and np.array_equal(image.permute(1, 2, 0).numpy(), expected), s.image


def test_16_bit_masks_within_uint8_are_read_and_larger_values_named(tmp_path):
    root = _folder(tmp_path / "d")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / "train" / "a.png")
    ids = np.zeros((8, 8), np.uint16)
    ids[2:5, 2:5] = 1
    ids[0, 0] = 255
    Image.fromarray(ids).save(root / "masks" / "train" / "a.png")  # mode I;16
    assert Image.open(root / "masks" / "train" / "a.png").mode.startswith("I;16")
    assert np.array_equal(SegmentationFolder(root, "train")[0][1].numpy(), ids.astype(np.int64))
    ids[0, 0] = 300
    Image.fromarray(ids).save(root / "masks" / "train" / "a.png")
    with pytest.raises(DatasetError, match=r"a.png is uint16 with values up to 300"):
        SegmentationFolder(root, "train")[0]


# -- broken files ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"", b"this is a text file, not a picture\n", b"\x89PNG\r\n\x1a\n\x00\x00"],
                         ids=["zero-byte", "text", "truncated-png"])
def test_files_that_are_not_images_are_named_by_the_dataset_the_check_and_the_cli(tmp_path, capsys, content):
    root = write_synthetic_folder(tmp_path / "d", {"train": 4, "val": 2}, image_size=(32, 32))
    bad = next((root / "images" / "train").iterdir())
    bad.write_bytes(content)
    ds = build_dataset(root, "train")
    index = ds.ids.index(bad.stem)
    with pytest.raises(DatasetError, match=re.escape(str(bad)) + r".*replace or remove the file"):
        ds[index]
    report = scan(ds)
    assert [p.kind for p in report.problems] == ["unreadable"] and report.problems[0].path == bad
    assert main(["datasets", "check", str(root), "--quiet"]) == 1
    out, err = capsys.readouterr()
    assert "unreadable files: 1" in out and str(bad) in out and "Traceback" not in out + err
    mask = root / "masks" / "train" / f"{bad.stem}.png"
    bad.write_bytes(b""), mask.write_bytes(content)
    assert [p.path for p in scan(build_dataset(root, "train")).problems] == [bad, mask]


def _png_chunks(idat: bytes, color_type: int) -> bytes:
    """A 64x64 8-bit PNG with a valid header and valid CRCs around the IDAT stream ``idat``."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 64, 64, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_png_with_corrupt_image_data_is_an_error_not_a_crash(tmp_path):
    # torchvision 0.29's decode_png dies with SIGSEGV on every libpng error; the reader must never hand it a PNG.
    # In a subprocess, so that a regression fails this test instead of killing the test run.
    streams = {"not-zlib": b"garbage" * 30, "short": zlib.compress(b"\0" * 10),
               "bad-filter": zlib.compress(b"\x09" * (64 * 193))}
    paths = []
    for name, idat in streams.items():
        for color_type, use in ((2, "image"), (0, "mask")):
            path = tmp_path / f"{name}-{use}.png"
            path.write_bytes(_png_chunks(idat, color_type))
            paths.append((str(path), use))
    script = (
        "import sys, json\n"
        "from pixelwise.data.io import read_image, read_mask_array\n"
        "from pixelwise.errors import DatasetError\n"
        "for path, use in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        read_image(path) if use == 'image' else read_mask_array(path)\n"
        "        print('read', path)\n"
        "    except DatasetError as e:\n"
        "        print('error', path, '|', e)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, json.dumps(paths)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"the reader crashed (exit {done.returncode}): {done.stderr[-2000:]}"
    lines = done.stdout.splitlines()
    assert len(lines) == len(paths)
    for line, (path, _) in zip(lines, paths):
        assert line.startswith(f"error {path} |") and path in line.split("|", 1)[1], line


# -- decompression bombs ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".jpg", ".png", ".bmp"])
def test_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch, decoder, suffix):
    path = tmp_path / f"bomb{suffix}"
    Image.fromarray(np.zeros((50, 60, 3), np.uint8)).save(path)  # tiny on disk, 3000 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # so that 3000 pixels count as a bomb (> 2 x limit)
    with pytest.raises(DatasetError, match=re.escape(str(path)) + r".*decompression bomb.*MAX_IMAGE_PIXELS"):
        data_io.read_image(path)
    with pytest.raises(DatasetError, match="decompression bomb"):
        data_io.image_header(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # 3000 <= 2 x 2000: Pillow's warning zone, still read
    with pytest.warns(Image.DecompressionBombWarning):
        assert data_io.read_image(path).shape == (3, 50, 60)


def test_decompression_bomb_through_predict_is_one_error_line(tmp_path, monkeypatch, capsys):
    data = write_synthetic_folder(tmp_path / "d", {"train": 4, "val": 2}, image_size=(32, 32))
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "run"), *TINY_TRAIN]) == 0
    bomb = tmp_path / "bomb.png"
    Image.fromarray(np.zeros((50, 60, 3), np.uint8)).save(bomb)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    capsys.readouterr()
    rc = main(["predict", "--checkpoint", str(tmp_path / "run" / "best.pt"), str(bomb), "--out",
               str(tmp_path / "pred"), "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 2 and err.startswith("error: image ") and "bomb.png" in err and "Traceback" not in out + err


# -- paths -----------------------------------------------------------------------------------------------------------
def test_unicode_and_space_paths_through_train_eval_predict_and_check(tmp_path, capsys):
    root = write_synthetic_folder(tmp_path / "données d'été" / "jeu 1", {"train": 4, "val": 2},
                                  image_size=(32, 32))
    for split in ("train", "val"):
        for image in sorted((root / "images" / split).iterdir()):
            new_id = f"été {image.stem} ñ"
            image.rename(image.with_name(new_id + image.suffix))
            mask = root / "masks" / split / f"{image.stem}.png"
            mask.rename(mask.with_name(new_id + ".png"))
    for list_file in root.glob("*.txt"):
        if list_file.name != "classes.txt":
            list_file.unlink()
    ds = build_dataset(root, "train")
    assert all(i.startswith("été ") for i in ds.ids) and ds[0][0].shape[0] == 3
    run = tmp_path / "курс run"
    assert main(["train", "--data", str(root), "--out", str(run), *TINY_TRAIN]) == 0
    assert main(["eval", "--checkpoint", str(run / "best.pt"), "--data", str(root), "--split", "val", "--quiet"]) == 0
    out_dir = tmp_path / "prédictions 1"
    assert main(["predict", "--checkpoint", str(run / "best.pt"), str(root / "images" / "val"), "--out",
                 str(out_dir), "--quiet"]) == 0
    assert any(p.name.startswith("été ") for p in out_dir.rglob("*.png"))
    assert main(["datasets", "check", str(root), "--quiet"]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_image_truncated_after_its_header_fails_in_a_worker_as_one_error_line(tmp_path, capsys):
    """The up-front scan reads image headers only; a JPEG cut after its header fails when a DataLoader worker
    decodes it, and PyTorch wraps that error with the worker's traceback: the user still gets one line."""
    root = write_synthetic_folder(tmp_path / "d", {"train": 4, "val": 2}, image_size=(32, 32))
    victim = sorted((root / "images" / "train").iterdir())[0]
    jpeg = victim.with_suffix(".jpg")
    Image.open(victim).convert("RGB").save(jpeg, quality=95)
    victim.unlink()
    jpeg.write_bytes(jpeg.read_bytes()[:-300])  # the entropy-coded data loses its end
    assert scan(build_dataset(root, "train")).ok  # the header is intact
    one_worker = [*TINY_TRAIN[:8], "--workers", "1", *TINY_TRAIN[10:]]
    rc = main(["train", "--data", str(root), "--out", str(tmp_path / "run"), *one_worker])
    out, err = capsys.readouterr()
    assert rc == 2 and "Traceback" not in out + err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot read image {jpeg}"), err
    # The worker ignores SIGTERM (the main process stops a run); a worker left alive after the error would hang the
    # interpreter's exit in multiprocessing's join, so the trainer must have stopped it.
    assert multiprocessing.active_children() == []
