"""The command line, run in-process: bad input gives one ``error: ...`` line naming the file and exit status 2, never a
traceback; and the working paths (predict, eval --json, models, datasets info) write what they promise."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelwise.cli import main
from pixelwise.data.synthetic import write_synthetic_folder
from _cli import TINY_TRAIN



def _tiny(root: Path) -> Path:
    return write_synthetic_folder(root, {"train": 8, "val": 4, "test": 4}, image_size=(48, 48))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny dataset (5 classes, 48x48) and a checkpoint trained on it for one step: (data, checkpoint)."""
    base = tmp_path_factory.mktemp("cli")
    data = _tiny(base / "tiny")
    run = base / "run"
    assert main(["train", "--data", str(data), "--out", str(run), *TINY_TRAIN]) == 0
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()
    return data, run / "best.pt"


def _fails(capsys, argv: list[str]) -> str:
    """Run the CLI expecting a user error; return the stderr text after 'error: '."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert rc == 2, f"exit status {rc}, stderr: {err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0][len("error: "):]


def _two_class_dataset(root: Path) -> Path:
    r = np.random.default_rng(0)
    (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("background\nforeground\n")
    for split in ("train", "val"):
        for i in range(2):
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            (root / "masks" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(r.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(root / "images" / split / f"{i}.png")
            m = np.zeros((24, 24), np.uint8)
            m[4:12, 6:18] = 1
            Image.fromarray(m).save(root / "masks" / split / f"{i}.png")
    return root


# -- train -----------------------------------------------------------------------------------------------------------
def test_train_bad_mask_value_is_reported_before_training(tiny_dataset, tmp_path, capsys):
    mask = sorted((tiny_dataset / "masks" / "train").iterdir())[5]
    arr = np.array(Image.open(mask))
    arr[10, 10] = 7
    Image.fromarray(arr).save(mask)
    run = tmp_path / "run"
    msg = _fails(capsys, ["train", "--data", tiny_dataset, "--out", run, *TINY_TRAIN])
    assert str(mask) in msg
    assert re.search(r"\b7\b", msg.replace(str(mask), ""))
    # The up-front scan stops the run before any step: nothing was trained or saved.
    assert not (run / "last.pt").exists() and not (run / "best.pt").exists()


def test_train_missing_data_folder(tmp_path, capsys):
    msg = _fails(capsys, ["train", "--data", "/nonexistent/dataset", "--out", tmp_path / "run", *TINY_TRAIN])
    assert "/nonexistent/dataset" in msg and "does not exist" in msg


def test_train_unknown_config_key(tiny_dataset, tmp_path, capsys):
    msg = _fails(capsys, ["train", "--data", tiny_dataset, "--out", tmp_path / "run", *TINY_TRAIN,
                          "nonsense_key=1"])
    assert "nonsense_key" in msg and "unknown" in msg


def test_train_set_without_equals(tiny_dataset, tmp_path, capsys):
    msg = _fails(capsys, ["train", "--data", tiny_dataset, "--out", tmp_path / "run", "--steps", "1", "--set", "lr"])
    assert "'lr'" in msg and "key=value" in msg


def test_train_bad_config_value_and_missing_config(tiny_dataset, tmp_path, capsys):
    msg = _fails(capsys, ["train", "--data", tiny_dataset, "--out", tmp_path / "run", *TINY_TRAIN,
                          "optimizer=adam"])
    assert "optimizer" in msg and "'adam'" in msg
    missing = tmp_path / "nope.yaml"
    msg = _fails(capsys, ["train", "--config", missing, "--out", tmp_path / "run"])
    assert str(missing) in msg and "does not exist" in msg


def test_train_batch_larger_than_dataset(tiny_dataset, tmp_path, capsys):
    argv = ["train", "--data", tiny_dataset, "--out", tmp_path / "run", *TINY_TRAIN]
    argv[argv.index("--batch-size") + 1] = "20"
    msg = _fails(capsys, argv)
    assert "20" in msg and "--batch-size 8" in msg


# -- eval ------------------------------------------------------------------------------------------------------------
def test_eval_checkpoint_for_other_classes(trained, tmp_path, capsys):
    _, ckpt = trained
    other = _two_class_dataset(tmp_path / "two")
    msg = _fails(capsys, ["eval", "--checkpoint", ckpt, "--data", other, "--split", "val", "--quiet"])
    assert str(ckpt) in msg and str(other) in msg
    assert "5 classes" in msg and re.search(r"has 2\b", msg)


def test_eval_unreadable_checkpoint(trained, tmp_path, capsys):
    data, _ = trained
    junk = tmp_path / "junk.pt"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    msg = _fails(capsys, ["eval", "--checkpoint", junk, "--data", data, "--quiet"])
    assert "cannot read checkpoint" in msg and str(junk) in msg
    missing = tmp_path / "missing.pt"
    msg = _fails(capsys, ["eval", "--checkpoint", missing, "--data", data, "--quiet"])
    assert str(missing) in msg and "does not exist" in msg


def test_eval_truncated_checkpoint(trained, tmp_path, capsys):
    data, ckpt = trained
    cut = tmp_path / "cut.pt"
    cut.write_bytes(ckpt.read_bytes()[:5000])
    msg = _fails(capsys, ["eval", "--checkpoint", cut, "--data", data, "--quiet"])
    assert "cannot read checkpoint" in msg and str(cut) in msg


def test_eval_empty_checkpoint_file(trained, tmp_path, capsys):
    data, _ = trained
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    msg = _fails(capsys, ["eval", "--checkpoint", empty, "--data", data, "--quiet"])
    assert "cannot read checkpoint" in msg and str(empty) in msg


def test_eval_small_text_file_as_checkpoint(trained, tmp_path, capsys):
    data, _ = trained
    text = tmp_path / "notes.pt"
    text.write_bytes(b"hello")
    msg = _fails(capsys, ["eval", "--checkpoint", text, "--data", data, "--quiet"])
    assert "cannot read checkpoint" in msg and str(text) in msg


def test_eval_split_without_masks(trained, isbi_dir, capsys):
    _, ckpt = trained
    msg = _fails(capsys, ["eval", "--checkpoint", ckpt, "--data", isbi_dir, "--split", "test", "--quiet"])
    assert "'test'" in msg and "no masks" in msg
    assert "predicted on" in msg and "evaluated" in msg


def test_eval_missing_split(trained, capsys):
    data, ckpt = trained
    msg = _fails(capsys, ["eval", "--checkpoint", ckpt, "--data", data, "--split", "validation", "--quiet"])
    assert "'validation'" in msg and "test, train, val" in msg


def test_eval_writes_json_metrics(trained, tmp_path, capsys):
    data, ckpt = trained
    out = tmp_path / "sub" / "metrics.json"
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(data), "--split", "val", "--json", str(out),
                 "--quiet"]) == 0
    stdout = capsys.readouterr().out
    assert "mIoU" in stdout and str(out) in stdout

    def no_nan(name):
        raise AssertionError(f"{name} is not valid JSON")

    m = json.loads(out.read_text(), parse_constant=no_nan)
    for key in ("mIoU", "pixel_accuracy", "mean_accuracy", "fwIoU", "dice"):
        assert m[key] is None or 0.0 <= m[key] <= 1.0, key
    classes = ["background", "disk", "square", "triangle", "ring"]
    assert m["classes"] == classes
    assert m["split"] == "val"
    for key in ("IoU", "accuracy"):
        assert len(m[key]) == 5 and all(v is None or 0.0 <= v <= 1.0 for v in m[key]), key
    defined = [v for v in m["IoU"] if v is not None]
    assert m["mIoU"] == pytest.approx(sum(defined) / len(defined))
    # Metrics are counted at the masks' own resolution, void excluded: the confusion matrix's rows are the masks.
    gt = np.zeros(5, np.int64)
    for p in sorted((data / "masks" / "val").iterdir()):
        a = np.array(Image.open(p)).ravel()
        gt += np.bincount(a[a != 255], minlength=5)[:5]
    assert np.array_equal(np.array(m["confusion_matrix"]).sum(axis=1), gt)
    assert m["num_pixels"] == int(gt.sum())


# -- predict ---------------------------------------------------------------------------------------------------------
def test_predict_missing_input(trained, tmp_path, capsys):
    _, ckpt = trained
    missing = tmp_path / "no_such_image.png"
    msg = _fails(capsys, ["predict", "--checkpoint", ckpt, missing, "--out", tmp_path / "pred", "--quiet"])
    assert str(missing) in msg and "does not exist" in msg


def test_predict_corrupt_image(trained, tmp_path, capsys):
    _, ckpt = trained
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    msg = _fails(capsys, ["predict", "--checkpoint", ckpt, bad, "--out", tmp_path / "pred", "--quiet"])
    assert str(bad) in msg and "cannot read" in msg


def test_predict_folder_without_images(trained, tmp_path, capsys):
    _, ckpt = trained
    empty = tmp_path / "nothing_here"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images")
    msg = _fails(capsys, ["predict", "--checkpoint", ckpt, empty, "--out", tmp_path / "pred", "--quiet"])
    assert str(empty) in msg and "no images" in msg


def test_predict_missing_checkpoint(trained, tmp_path, capsys):
    data, _ = trained
    missing = tmp_path / "missing.pt"
    msg = _fails(capsys, ["predict", "--checkpoint", missing, data / "images" / "test", "--out", tmp_path / "p",
                          "--quiet"])
    assert str(missing) in msg and "does not exist" in msg


def test_predict_writes_class_ids_colors_and_overlays(trained, tmp_path, capsys):
    data, ckpt = trained
    out = tmp_path / "pred"
    inputs = sorted((data / "images" / "test").iterdir())
    assert len(inputs) == 4
    assert main(["predict", "--checkpoint", str(ckpt), str(data / "images" / "test"), "--out", str(out),
                 "--quiet"]) == 0
    assert "wrote 4" in capsys.readouterr().out
    palette = [tuple(int(v) for v in line.split()) for line in (data / "palette.txt").read_text().splitlines()]
    expected_files = set()
    for f in inputs:
        expected_files |= {f"{f.stem}.png", f"{f.stem}_color.png", f"{f.stem}_overlay.png"}
        with Image.open(f) as src:
            size = src.size
        ids_im = Image.open(out / f"{f.stem}.png")
        assert ids_im.mode == "P" and ids_im.size == size
        ids = np.array(ids_im)
        assert ids.min() >= 0 and ids.max() <= 4
        color = Image.open(out / f"{f.stem}_color.png")
        assert color.mode == "RGB" and color.size == size
        # The color mask paints each predicted id in the dataset's palette.
        assert np.array_equal(np.array(color), np.array(palette, np.uint8)[ids])
        overlay = Image.open(out / f"{f.stem}_overlay.png")
        assert overlay.size == size
    assert {p.name for p in out.iterdir()} == expected_files


# -- models, datasets ------------------------------------------------------------------------------------------------
def test_models_lists_unet(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\| unet \|", out, re.M)


def test_datasets_info_lists_splits(tiny_dataset, capsys):
    (tiny_dataset / "masks" / "test").rename(tiny_dataset / "masks_test_hidden")
    assert main(["datasets", "info", str(tiny_dataset)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^train: 8 images, with masks, 3 channel", out, re.M)
    assert re.search(r"^val: 4 images, with masks", out, re.M)
    assert re.search(r"^test: 4 images, WITHOUT masks", out, re.M)
    assert "background, disk, square, triangle, ring" in out


def test_datasets_info_on_a_folder_without_splits(tmp_path, capsys):
    (tmp_path / "classes.txt").write_text("a\nb\n")
    msg = _fails(capsys, ["datasets", "info", tmp_path])
    assert str(tmp_path) in msg and "images/<split>" in msg


def test_train_honours_a_configured_ignore_index(tiny_dataset, tmp_path, capsys):
    for split in ("train", "val"):
        for p in (tiny_dataset / "masks" / split).iterdir():
            a = np.array(Image.open(p))
            a[a == 255] = 250
            Image.fromarray(a).save(p)
    rc = main(["train", "--data", str(tiny_dataset), "--out", str(tmp_path / "run"), *TINY_TRAIN, "ignore_index=250"])
    err = capsys.readouterr().err
    assert rc == 0, err
