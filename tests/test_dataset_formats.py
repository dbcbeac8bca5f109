"""The official on-disk formats: PASCAL VOC 2012 (+ SBD's train_aug), Cityscapes, ADE20K. Each test writes a small
tree in the dataset's real layout and file formats (palette PNGs, SBD's MATLAB structs, labelIds PNGs), since no
download can run here, and checks the class ids a user gets against values written by hand."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.data import ADE20K, Cityscapes, VOCSegmentation, build_dataset, detect_format, parse_data_spec
from pixelwise.data.cityscapes import CITYSCAPES_LABELS
from pixelwise.data.palette import default_palette
from pixelwise.errors import DatasetError


def _jpeg(path: Path, h: int, w: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=95)
    return path


def _png(path: Path, arr: np.ndarray, palette: list | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr, mode="P" if palette else None)
    if palette:
        im.putpalette([v for c in palette for v in c])
    im.save(path)
    return path


def _ids(seed: int, h: int, w: int, values) -> np.ndarray:
    return np.random.default_rng(seed).choice(np.asarray(values, np.uint8), size=(h, w))


# -- PASCAL VOC 2012 -------------------------------------------------------------------------------------------------
VOC_IDS = {"train": ["2007_000032", "2007_000039"], "val": ["2007_000033"]}


def _write_voc(root: Path) -> dict[str, np.ndarray]:
    voc = root / "VOCdevkit" / "VOC2012"
    masks = {}
    palette = default_palette(256)
    palette[255] = (224, 224, 192)  # the devkit's void color
    for n, i in enumerate(VOC_IDS["train"] + VOC_IDS["val"]):
        _jpeg(voc / "JPEGImages" / f"{i}.jpg", 12, 16, n)
        masks[i] = _ids(n, 12, 16, [0, 1, 15, 20, 255])
        _png(voc / "SegmentationClass" / f"{i}.png", masks[i], palette)
    _jpeg(voc / "JPEGImages" / "2008_000001.jpg", 12, 16, 9)  # a detection-only image: no mask, in no split
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    for split, ids in VOC_IDS.items():
        (lists / f"{split}.txt").write_text("".join(i + "\n" for i in ids))
    (lists / "trainval.txt").write_text("".join(i + "\n" for i in VOC_IDS["train"] + VOC_IDS["val"]))
    return masks


def test_voc_palette_masks_read_as_class_ids_with_void(tmp_path):
    masks = _write_voc(tmp_path)
    assert detect_format(tmp_path) == "voc" and detect_format(tmp_path / "VOCdevkit") == "voc"
    ds = build_dataset(tmp_path, "train")
    assert isinstance(ds, VOCSegmentation) and ds.ids == VOC_IDS["train"]
    assert ds.num_classes == 21 and ds.classes[0] == "background" and ds.classes[20] == "tvmonitor"
    assert ds.palette[15] == (192, 128, 128) and ds.ignore_index == 255
    image, mask = ds[1]
    assert image.shape == (3, 12, 16) and image.dtype == torch.uint8
    assert mask.dtype == torch.int64 and np.array_equal(mask.numpy(), masks["2007_000039"])  # indices, not colors
    assert len(build_dataset(tmp_path / "VOCdevkit" / "VOC2012", "trainval")) == 3
    assert build_dataset(f"voc:{tmp_path}", "val[:1]").ids == ["2007_000033"]
    stats = ds.check()
    assert stats["class_pixels"].sum() == sum((masks[i] != 255).sum() for i in VOC_IDS["train"])


def test_voc_errors_name_the_fix(tmp_path):
    _write_voc(tmp_path)
    with pytest.raises(DatasetError, match="unknown VOC split 'trainaug'.*train_aug"):
        build_dataset(tmp_path, "trainaug")
    with pytest.raises(DatasetError, match="needs the Semantic Boundaries Dataset.*datasets download sbd"):
        build_dataset(tmp_path, "train_aug")
    with pytest.raises(DatasetError, match="holds no PASCAL VOC 2012.*datasets download voc2012"):
        VOCSegmentation(tmp_path / "elsewhere")
    (tmp_path / "VOCdevkit/VOC2012/JPEGImages/2007_000033.jpg").unlink()
    with pytest.raises(DatasetError, match=r"1 id\(s\) of split 'val' have no image.*2007_000033"):
        build_dataset(tmp_path, "val")
    (tmp_path / "VOCdevkit/VOC2012/SegmentationClass/2007_000039.png").unlink()
    with pytest.raises(DatasetError, match="have no mask.*2007_000039"):
        build_dataset(tmp_path, "train")


def _write_sbd(base: Path, masks: dict[str, np.ndarray], train: list[str], val: list[str]) -> Path:
    savemat = pytest.importorskip("scipy.io").savemat
    dataset = base / "benchmark_RELEASE" / "dataset"
    (dataset / "cls").mkdir(parents=True)
    for i, m in masks.items():
        # SBD's structure: GTcls with Segmentation (class ids), Boundaries (cell of sparse maps), CategoriesPresent.
        savemat(dataset / "cls" / f"{i}.mat", {"GTcls": {"Segmentation": m, "Boundaries": np.zeros((1, 20), object),
                                                           "CategoriesPresent": np.unique(m[m > 0]).astype(np.uint8)}})
    (dataset / "train.txt").write_text("".join(i + "\n" for i in train))
    (dataset / "val.txt").write_text("".join(i + "\n" for i in val))
    return dataset


def test_voc_train_aug_joins_sbd_without_voc_val(tmp_path):
    voc_masks = _write_voc(tmp_path)
    sbd_masks = {i: _ids(20 + n, 12, 16, [0, 3, 7]) for n, i in enumerate(["2007_000032", "2007_000033",
                                                                          "2008_000001"])}
    _write_sbd(tmp_path, sbd_masks, train=["2007_000032", "2008_000001"], val=["2007_000033"])
    ds = build_dataset(tmp_path, "train_aug")
    # VOC train and SBD train+val, less VOC val (2007_000033 is in SBD val but must stay out: it is VOC val).
    assert ds.ids == ["2007_000032", "2007_000039", "2008_000001"]
    by_id = {s.id: s for s in ds.samples}
    assert by_id["2007_000032"].mask.suffix == ".png"  # VOC's own mask wins where there is one
    assert np.array_equal(ds[0][1].numpy(), voc_masks["2007_000032"])
    assert by_id["2008_000001"].mask.suffix == ".mat"
    assert np.array_equal(ds[2][1].numpy(), sbd_masks["2008_000001"])  # read from the MATLAB struct
    assert ds.check()["class_pixels"][7] > 0


def test_voc_train_aug_with_sbd_elsewhere_and_a_corrupt_mat(tmp_path):
    _write_voc(tmp_path / "voc")
    sbd = _write_sbd(tmp_path / "sbd", {"2008_000001": _ids(1, 12, 16, [0, 4])}, ["2008_000001"], [])
    ds = build_dataset(tmp_path / "voc", "train_aug", sbd_root=tmp_path / "sbd" / "benchmark_RELEASE")
    assert "2008_000001" in ds.ids
    (sbd / "cls" / "2008_000001.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    with pytest.raises(DatasetError, match=re.escape(str(sbd / "cls" / "2008_000001.mat"))):
        ds[ds.ids.index("2008_000001")]


# -- Cityscapes ------------------------------------------------------------------------------------------------------
def _write_cityscapes(root: Path, label_ids: np.ndarray) -> None:
    for split, city in (("train", "aachen"), ("val", "frankfurt"), ("test", "berlin")):
        stem = f"{city}_000000_000019"
        _jpeg(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", *label_ids.shape)
        gt = root / "gtFine" / split / city
        _png(gt / f"{stem}_gtFine_labelIds.png", label_ids if split != "test" else np.zeros_like(label_ids))
        _png(gt / f"{stem}_gtFine_color.png", np.zeros((*label_ids.shape, 3), np.uint8))  # must not be picked up


def test_cityscapes_label_ids_become_train_ids(tmp_path):
    label_ids = np.arange(34, dtype=np.uint8).repeat(2).reshape(4, 17)  # every one of the 34 labelIds
    _write_cityscapes(tmp_path, label_ids)
    assert detect_format(tmp_path) == "cityscapes"
    ds = build_dataset(tmp_path, "train")
    assert isinstance(ds, Cityscapes) and ds.ids == ["aachen_000000_000019"] and ds.num_classes == 19
    mask = ds[0][1].numpy()
    # The evaluated labels, written out by hand from cityscapesScripts' table: labelId -> trainId.
    expected = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
                27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    for label_id in range(34):
        assert (mask[label_ids == label_id] == expected.get(label_id, 255)).all(), label_id
    assert [name for name, _, _ in CITYSCAPES_LABELS][13] == "car" and ds.palette[0] == (128, 64, 128)
    test = build_dataset(tmp_path, "test")
    assert not test.has_masks and test[0][1] is None
    with pytest.raises(DatasetError, match="test labels are not public"):
        build_dataset(tmp_path, "test", require_masks=True)


def test_cityscapes_values_outside_label_ids_name_the_file(tmp_path):
    bad = np.full((4, 6), 7, np.uint8)
    bad[0, 0] = 40
    _write_cityscapes(tmp_path, bad)
    ds = build_dataset(tmp_path, "val")
    with pytest.raises(DatasetError, match=r"000019_gtFine_labelIds.png holds value\(s\) 40.*labelIds"):
        ds[0]
    with pytest.raises(DatasetError, match="unknown Cityscapes split"):
        Cityscapes(tmp_path, "coarse")


# -- ADE20K ----------------------------------------------------------------------------------------------------------
def _write_ade(root: Path, stored: np.ndarray, object_info: bool = False) -> Path:
    base = root / "ADEChallengeData2016"
    for folder, prefix in (("training", "ADE_train"), ("validation", "ADE_val")):
        _jpeg(base / "images" / folder / f"{prefix}_00000001.jpg", *stored.shape)
        _png(base / "annotations" / folder / f"{prefix}_00000001.png", stored)
    if object_info:
        rows = "".join(f"{k}\t0.01\t10\t1\tname{k};synonym\n" for k in range(1, 151))
        (base / "objectInfo150.txt").write_text("Idx\tRatio\tTrain\tVal\tName\n" + rows)
    return base


def test_ade20k_zero_label_reduction_is_explicit(tmp_path):
    stored = np.array([[0, 1, 2, 150], [75, 0, 1, 149]], np.uint8)
    _write_ade(tmp_path, stored)
    assert detect_format(tmp_path) == "ade20k"
    ds = build_dataset(tmp_path, "train")
    assert isinstance(ds, ADE20K) and ds.num_classes == 150 and ds.classes[0] == "wall" and ds.classes[-1] == "flag"
    assert ds[0][1].numpy().tolist() == [[255, 0, 1, 149], [74, 255, 0, 148]]
    kept = build_dataset(tmp_path, "validation", reduce_zero_label=False)
    assert kept.num_classes == 151 and kept.classes[0] == "other" and kept.classes[1] == "wall"
    assert np.array_equal(kept[0][1].numpy(), stored)


def test_ade20k_reads_object_info_and_rejects_values_above_150(tmp_path):
    stored = np.array([[0, 151], [1, 2]], np.uint8)
    base = _write_ade(tmp_path, stored, object_info=True)
    ds = build_dataset(f"ade20k:{base}", "val")
    assert ds.classes[0] == "name1" and ds.classes[149] == "name150"
    with pytest.raises(DatasetError, match=r"ADE_val_00000001.png holds value\(s\) 151, which ADE20K does not"):
        ds[0]
    report = __import__("pixelwise.data.check", fromlist=["scan"]).scan(ds)
    assert [p.kind for p in report.problems] == ["undefined_values"]


# -- specs and options -----------------------------------------------------------------------------------------------
def test_data_spec_prefix_and_options_that_do_not_apply(tmp_path):
    _write_voc(tmp_path)
    assert parse_data_spec(f"voc:{tmp_path}") == ("voc", tmp_path)
    assert parse_data_spec(str(tmp_path)) == ("voc", tmp_path)
    with pytest.raises(DatasetError, match="binary_threshold do not apply.*format 'voc'.*sbd_root"):
        build_dataset(tmp_path, "train", binary_threshold=128)
    with pytest.raises(DatasetError, match="synthetic dataset takes no options"):
        build_dataset("synthetic", "train", color_map="x.txt")
    with pytest.raises(DatasetError, match="leave ignore_index at 255"):
        build_dataset(tmp_path, "train", ignore_index=0)
