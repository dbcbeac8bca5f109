"""``pixelwise datasets check``: one scan reports every label problem with its fix, and the fixes it names
(``--binary-threshold``, ``--color-map``) make the same data usable, in the check and in training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelwise.cli import main
from pixelwise.data import SegmentationFolder, build_dataset
from pixelwise.data.check import scan
from pixelwise.errors import DatasetError
from _cli import TINY_TRAIN



def _save(path: Path, arr: np.ndarray, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kwargs)


def _image(seed: int, h: int = 20, w: int = 24) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _blob(h: int = 20, w: int = 24, value: int = 1) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[5:15, 6:18] = value
    return m


def _folder(root: Path, classes: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("".join(c + "\n" for c in classes))
    return root


def test_check_reports_every_problem_with_its_fix(tmp_path, capsys):
    root = _folder(tmp_path / "messy", ["background", "road", "car"])
    img, msk = root / "images" / "train", root / "masks" / "train"
    _save(img / "good.png", _image(0)), _save(msk / "good.png", _blob(value=2))
    _save(img / "color.png", _image(1)), _save(msk / "color.png", np.stack([_blob() * 200] * 3, -1))
    _save(img / "lossy.png", _image(2)), _save(msk / "lossy.jpg", _blob(value=2) * 100, quality=50)
    _save(img / "seven.png", _image(3)), _save(msk / "seven.png", _blob(value=7))
    _save(img / "small.png", _image(4)), _save(msk / "small.png", _blob(10, 12))
    _save(img / "unmasked.png", _image(5))
    _save(msk / "ghost.png", _blob())
    (img / "empty.jpg").write_bytes(b""), _save(msk / "empty.png", _blob())

    rc = main(["datasets", "check", str(root), "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 1 and "Traceback" not in out + err
    expected = {
        "unreadable files: 1": "empty.jpg",
        "images without a mask: 1": "unmasked.png",
        "masks without an image: 1": "ghost.png",
        "image and mask of different sizes: 1": "small.png",
        "RGB color masks: 1": "--color-map FILE",
        "JPEG masks with in-between values: 1": "Save masks as PNG",
        "values above the class count: 1": "holds value(s) 7",
    }
    for title, detail in expected.items():
        assert title in out and detail in out, (title, out)
    assert "7 problem(s)" in out and "7 problem(s) found" in out
    # the histogram counts the one good mask only
    assert "road" in out and "car" in out and "<- never labelled" in out

    # Training stops before any step, at the first problem, and says how many more there are.
    rc = main(["train", "--data", str(root), "--out", str(tmp_path / "run"), *TINY_TRAIN, "val_split=train"])
    err = capsys.readouterr().err
    assert rc == 2 and "have no mask" in err and "unmasked.png" in err
    (img / "unmasked.png").unlink()
    rc = main(["train", "--data", str(root), "--out", str(tmp_path / "run"), *TINY_TRAIN, "val_split=train"])
    err = capsys.readouterr().err
    assert rc == 2 and "ghost.png has no image" in err and "5 more problem(s)" in err and "datasets check" in err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_binary_threshold_reads_0_255_and_jpeg_masks_in_check_and_training(tmp_path, capsys):
    root = _folder(tmp_path / "binary", ["background", "foreground"])
    for split in ("train", "val"):
        for i in range(2):
            _save(root / "images" / split / f"{i}.png", _image(i))
            _save(root / "masks" / split / f"{i}.png", _blob() * 255)
    _save(root / "images" / "train" / "2.png", _image(2))
    _save(root / "masks" / "train" / "2.jpg", _blob() * 255, quality=40)  # lossy: values spread around 0 and 255

    assert main(["datasets", "check", str(root), "--quiet", "--split", "val"]) == 1
    out = capsys.readouterr().out
    assert "0/255 binary masks: 1" in out and "--binary-threshold 128" in out

    assert main(["datasets", "check", str(root), "--quiet", "--binary-threshold", "128"]) == 0
    out = capsys.readouterr().out
    assert "no problems found" in out
    ds = build_dataset(root, "train", binary_threshold=128)
    stored = np.asarray(Image.open(root / "masks" / "train" / "2.jpg"))
    assert np.array_equal(ds[2][1].numpy(), (stored >= 128).astype(np.int64))
    assert np.array_equal(ds[0][1].numpy(), _blob().astype(np.int64))
    assert scan(ds).class_pixels[1] == 2 * _blob().sum() + (stored >= 128).sum()

    rc = main(["train", "--data", str(root), "--out", str(tmp_path / "run"), *TINY_TRAIN,
               "data_kwargs.binary_threshold=128"])
    assert rc == 0 and (tmp_path / "run" / "last.pt").is_file()


def _rgb_folder(root: Path) -> tuple[Path, Path, np.ndarray]:
    """A folder dataset whose one train mask is an RGB color mask; returns the folder, its color map file (which
    lists every color of the mask) and the class ids the mask stands for, uint8 (H, W)."""
    root = _folder(root, ["background", "road", "car"])
    colors = {(0, 0, 0): 0, (128, 64, 128): 1, (0, 0, 142): 2, (255, 255, 255): 255}
    ids = np.random.default_rng(0).choice([0, 1, 2, 255], size=(20, 24)).astype(np.uint8)
    rgb = np.zeros((20, 24, 3), np.uint8)
    for color, k in colors.items():
        rgb[ids == k] = color
    _save(root / "images" / "train" / "a.png", _image(0))
    _save(root / "masks" / "train" / "a.png", rgb)
    cmap = root / "colors.txt"
    cmap.write_text("# class colors in id order\n0 0 0\n128 64 128\n0,0,142  # car\nvoid 255 255 255\n")
    return root, cmap, ids


def test_color_map_reads_rgb_masks_and_names_unknown_colors(tmp_path, capsys):
    root, cmap, ids = _rgb_folder(tmp_path / "colors")

    assert main(["datasets", "check", str(root), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "RGB color masks: 1" in out and "128 64 128" in out  # the colors found, to write the map from

    ds = SegmentationFolder(root, "train", color_map=cmap)
    assert np.array_equal(ds[0][1].numpy(), ids.astype(np.int64))
    assert main(["datasets", "check", str(root), "--quiet", "--color-map", str(cmap)]) == 0
    capsys.readouterr()

    cmap.write_text("0 0 0\n128 64 128\n0 0 142\n")  # void's color missing
    assert main(["datasets", "check", str(root), "--quiet", "--color-map", str(cmap)]) == 1
    out = capsys.readouterr().out
    assert "1 color(s) that the color map does not list: 255 255 255" in out

    cmap.write_text("0 0 0\n0 0 0\n")
    rc = main(["datasets", "check", str(root), "--quiet", "--color-map", str(cmap)])
    err = capsys.readouterr().err
    assert rc == 2 and "line 2" in err and "listed twice" in err


def test_old_colour_spellings_still_work_with_a_deprecation_warning(tmp_path, capsys):
    """``--colour-map`` and the data option / config key ``colour_map`` (before the US spelling) still read RGB
    masks, and say what to write instead."""
    root, cmap, ids = _rgb_folder(tmp_path / "colors")

    with pytest.warns(FutureWarning, match="--colour-map is deprecated, use --color-map"):
        assert main(["datasets", "check", str(root), "--quiet", "--colour-map", str(cmap)]) == 0
    assert "no problems found" in capsys.readouterr().out
    with pytest.warns(FutureWarning, match="data option colour_map is deprecated, use color_map"):
        assert main(["datasets", "check", str(root), "--quiet", "--data-option", f"colour_map={cmap}"]) == 0
    assert "no problems found" in capsys.readouterr().out

    with pytest.warns(FutureWarning, match="data option colour_map is deprecated, use color_map"):
        ds = build_dataset(root, "train", colour_map=cmap)
    assert ds.color_map == build_dataset(root, "train", color_map=cmap).color_map
    assert np.array_equal(ds[0][1].numpy(), ids.astype(np.int64))
    with pytest.raises(DatasetError, match="colour_map is the deprecated name of color_map: give only color_map"):
        build_dataset(root, "train", colour_map=cmap, color_map=cmap)

    # A YAML config written before the rename trains, with the warning (a second image fills a batch of 2).
    for sub in ("images", "masks"):
        (root / sub / "train" / "b.png").write_bytes((root / sub / "train" / "a.png").read_bytes())
    config = tmp_path / "old.yaml"
    config.write_text(f"data: {root}\nval_split: train\ndata_kwargs: {{colour_map: {cmap}}}\n")
    with pytest.warns(FutureWarning, match="data option colour_map is deprecated, use color_map"):
        rc = main(["train", "--config", str(config), "--out", str(tmp_path / "run"), *TINY_TRAIN])
    assert rc == 0 and (tmp_path / "run" / "last.pt").is_file()


def test_check_on_real_camvid_is_clean(camvid_dir, capsys):
    assert main(["datasets", "check", str(camvid_dir), "--quiet", "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "101 images, 11 classes" in out and "no problems found" in out
