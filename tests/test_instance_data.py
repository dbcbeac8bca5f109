"""Instance-segmentation data (pixelwise.data.instances): the COCO loader decodes as pycocotools does, coco128 and
ISBI 2012 give the instances they hold, the synthetic set touches and occludes, the joint transforms keep masks,
boxes and labels aligned, and ``pixelwise datasets check`` names every defect of a COCO JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision import tv_tensors

from conftest import _real
from pixelwise.cli import main
from pixelwise.data import build_dataset, detect_format
from pixelwise.data.check import scan_coco
from pixelwise.data.instances import (
    CocoInstances,
    ConnectedComponentInstances,
    SyntheticInstances,
    _label_numpy,
    coco_mask,
    connected_components,
    instance_collate,
    instance_eval_transforms,
    instance_train_transforms,
    masks_to_boxes,
    write_synthetic_instances,
)
from pixelwise.errors import DatasetError

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools, numpy 2

pycocotools = pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from scipy import ndimage  # noqa: E402


def _tight_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def _check_contract(image, target, k: int, in_channels: int = 3) -> None:
    h, w = image.shape[-2:]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8 and image.shape[0] == in_channels
    r = len(target["labels"])
    assert isinstance(target["boxes"], tv_tensors.BoundingBoxes) and target["boxes"].dtype == torch.float32
    assert target["boxes"].shape == (r, 4) and tuple(target["boxes"].canvas_size) == (h, w)
    assert target["boxes"].format == tv_tensors.BoundingBoxFormat.XYXY
    assert isinstance(target["masks"], tv_tensors.Mask) and target["masks"].dtype == torch.uint8
    assert target["masks"].shape == (r, h, w) and set(target["masks"].unique().tolist()) <= {0, 1}
    assert target["labels"].dtype == torch.int64 and (r == 0 or (target["labels"].min() >= 1
                                                                 and target["labels"].max() <= k))
    assert target["iscrowd"].dtype == torch.int64 and target["iscrowd"].shape == (r,)
    assert target["area"].dtype == torch.float32 and target["area"].shape == (r,)
    assert isinstance(target["image_id"], int)
    for j in range(r):
        m = target["masks"][j].numpy()
        assert m.sum() == target["area"][j] > 0
        assert target["boxes"][j].tolist() == _tight_box(m)


# -- the COCO loader -------------------------------------------------------------------------------------------------
def _save_image(path: Path, h: int, w: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def _coco_tree(root: Path) -> Path:
    """3 images (one without annotations); categories 3 and 7; a polygon, an uncompressed RLE, a compressed RLE,
    a two-part polygon and a crowd region."""
    mask_utils = coco_mask()
    sizes = {1: (20, 24), 2: (16, 18), 5: (12, 12)}
    for i, (h, w) in sizes.items():
        _save_image(root / "images" / "train" / f"im{i}.png", h, w, i)
    blob = np.zeros((20, 24), np.uint8)
    blob[3:9, 10:21] = 1
    blob[9:12, 12:14] = 1
    runs = _runs(blob)  # uncompressed RLE: column-major run lengths, zeros first
    disk = np.zeros((16, 18), np.uint8)
    yy, xx = np.mgrid[:16, :18]
    disk[(yy - 8) ** 2 + (xx - 6) ** 2 <= 16] = 1
    compressed = mask_utils.encode(np.asfortranarray(disk))
    crowd = np.zeros((16, 18), np.uint8)
    crowd[10:15, 10:17] = 1
    data = {
        "images": [{"id": i, "file_name": f"im{i}.png", "height": h, "width": w} for i, (h, w) in sizes.items()],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "iscrowd": 0,
             "segmentation": [[1.5, 1.5, 8.5, 2.0, 5.0, 14.5]], "bbox": [1.5, 1.5, 7.0, 13.0], "area": 40.0},
            {"id": 11, "image_id": 1, "category_id": 7, "iscrowd": 0,
             "segmentation": {"size": [20, 24], "counts": runs}},
            {"id": 12, "image_id": 2, "category_id": 3, "iscrowd": 0,
             "segmentation": {"size": [16, 18], "counts": compressed["counts"].decode()}},
            {"id": 13, "image_id": 2, "category_id": 7, "iscrowd": 1,
             "segmentation": {"size": [16, 18], "counts": [int(c) for c in _runs(crowd)]}},
            {"id": 14, "image_id": 1, "category_id": 7, "iscrowd": 0,
             "segmentation": [[14, 14, 18, 14, 18, 18], [1, 17, 4, 17, 4, 19, 1, 19]]},
        ],
    }
    (root / "instances_train.json").write_text(json.dumps(data))
    return root


def _runs(mask: np.ndarray) -> list[int]:
    flat = mask.ravel(order="F")
    runs, current, n = [], 0, 0
    for v in flat:
        if v != current:
            runs.append(n)
            current, n = v, 0
        n += 1
    runs.append(n)
    return runs


def test_coco_loader_decodes_as_pycocotools_and_maps_category_ids(tmp_path):
    root = _coco_tree(tmp_path / "coco")
    assert detect_format(root) == "coco"
    ds = build_dataset(root, "train")
    assert isinstance(ds, CocoInstances)
    assert ds.classes == ["cat", "dog"] and ds.category_ids == [3, 7] and len(ds.palette) == 2
    assert ds.image_ids == [1, 2, 5] and ds.names == ["im1", "im2", "im5"] and ds.in_channels == 3
    coco = COCO(str(root / "instances_train.json"))
    for i, image_id in enumerate(ds.image_ids):
        image, target = ds[i]
        _check_contract(image, target, 2)
        assert target["image_id"] == image_id
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id)) if not a["iscrowd"]]
        assert len(target["labels"]) == len(anns)
        for j, a in enumerate(anns):
            assert np.array_equal(target["masks"][j].numpy(), coco.annToMask(a))
            assert ds.category_ids[int(target["labels"][j]) - 1] == a["category_id"]
        assert target["iscrowd"].sum() == 0
    # the polygon of 3 points, the uncompressed RLE, the two-part polygon; the image without annotations
    assert ds[0][1]["labels"].tolist() == [1, 2, 2]
    empty = ds[2][1]
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 12, 12) and empty["labels"].shape == (0,)
    # crowd: out of the training target, in the target with keep_crowd, and in the ground truth
    crowd = CocoInstances(root, "train", keep_crowd=True)[1][1]
    assert crowd["iscrowd"].tolist() == [0, 1] and crowd["labels"].tolist() == [1, 2]
    assert np.array_equal(crowd["masks"][1].numpy(), coco.annToMask(coco.anns[13]))
    gt = ds.coco_ground_truth()
    assert [c["id"] for c in gt["categories"]] == [3, 7]
    assert sorted(a["id"] for a in gt["annotations"]) == [10, 11, 12, 13, 14]
    assert next(a for a in gt["annotations"] if a["id"] == 13)["iscrowd"] == 1
    assert all("area" in a and "bbox" in a for a in gt["annotations"])
    again = COCO()
    again.dataset = gt
    again.createIndex()
    for a in gt["annotations"]:
        assert np.array_equal(again.annToMask(a), coco.annToMask(coco.anns[a["id"]]))


def test_coco_loader_needs_pycocotools_and_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    monkeypatch.setitem(sys.modules, "pycocotools.mask", None)
    with pytest.raises(DatasetError, match=r"pip install 'pixelwise\[instance\]'"):
        coco_mask()


def test_coco128_val_loads_every_non_crowd_instance():
    root = _real("coco128_instances")
    ds = build_dataset(root, "val")
    assert len(ds) == 100 and ds.num_classes == 80 and ds.in_channels == 3
    data = json.loads((root / "instances_val.json").read_text())
    coco = COCO()
    coco.dataset = data
    coco.createIndex()
    mask_utils = coco_mask()
    expected = {i: 0 for i in ds.image_ids}
    zero = 0
    for a in data["annotations"]:
        if a["iscrowd"]:
            continue
        if mask_utils.area(coco.annToRLE(a)) == 0:
            zero += 1
            continue
        expected[a["image_id"]] += 1
    total = 0
    for i in range(len(ds)):
        image, target = ds[i]
        assert len(target["labels"]) == expected[ds.image_ids[i]]
        total += len(target["labels"])
        if i < 3:
            _check_contract(image, target, 80)
    assert total == 712 - 5 - zero == 707  # SOURCE.md: 712 instances, 5 crowd; none of zero area
    gt = ds.coco_ground_truth()
    assert len(gt["images"]) == 100 and len(gt["annotations"]) == 712
    assert sum(a["iscrowd"] for a in gt["annotations"]) == 5 and len(gt["categories"]) == 80


# -- connected components --------------------------------------------------------------------------------------------
def test_isbi_cells_are_single_connected_instances():
    root = _real("isbi2012_membrane")
    ds = build_dataset(root, "train[:2]", instances="connected_components", connectivity=4, min_area=10)
    assert isinstance(ds, ConnectedComponentInstances)
    assert ds.classes == ["cell"] and ds.in_channels == 1 and ds.category_ids == [1]
    semantic = build_dataset(root, "train[:2]")
    four = ndimage.generate_binary_structure(2, 1)
    for i in range(len(ds)):
        image, target = ds[i]
        _check_contract(image, target, 1, in_channels=1)
        r = len(target["labels"])
        assert r >= 50, f"image {i}: {r} cells"
        masks = target["masks"].numpy().astype(bool)
        assert masks.sum(axis=0).max() == 1  # disjoint
        for m in masks:
            assert ndimage.label(m, structure=four)[1] == 1 and m.sum() >= 10
        cells = semantic[i][1].numpy() == 1
        assert not (masks.any(axis=0) & ~cells).any()  # instances lie on cell pixels only


@pytest.mark.parametrize("connectivity", [4, 8])
def test_numpy_components_equal_scipy(connectivity):
    rng = np.random.default_rng(connectivity)
    for density in (0.3, 0.5, 0.7):
        fg = rng.random((37, 53)) < density
        expected, n = ndimage.label(fg, structure=ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2))
        got, m = _label_numpy(fg, connectivity)
        assert m == n and np.array_equal(got, expected)
        via, k = connected_components(fg, connectivity)
        assert k == n and np.array_equal(via, expected)


def test_connected_components_ignore_void_and_background_option():
    class Semantic:
        classes = ["bg", "a", "b"]
        ignore_index = 255
        in_channels = 1

        def __len__(self):
            return 1

        def __getitem__(self, i):
            mask = np.zeros((8, 10), np.int64)
            mask[1:4, 1:4] = 1
            mask[1:4, 5:8] = 1
            mask[2, 4] = 255  # void joins nothing
            mask[5:7, 0:10] = 2
            mask[6, 3] = 1  # a one-pixel speck
            return tv_tensors.Image(torch.zeros(1, 8, 10, dtype=torch.uint8)), tv_tensors.Mask(torch.from_numpy(mask))

    ds = ConnectedComponentInstances(Semantic(), connectivity=8, min_area=2)
    target = ds[0][1]
    assert ds.classes == ["a", "b"] and target["labels"].tolist() == [1, 1, 2]
    assert target["boxes"].tolist() == [[1, 1, 4, 4], [5, 1, 8, 4], [0, 5, 10, 7]]
    only_b = ConnectedComponentInstances(Semantic(), classes=["b"], min_area=1)
    assert only_b.classes == ["b"] and only_b[0][1]["area"].tolist() == [19.0]
    with pytest.raises(DatasetError, match="connectivity"):
        ConnectedComponentInstances(Semantic(), connectivity=6)
    with pytest.raises(DatasetError, match="not a class"):
        ConnectedComponentInstances(Semantic(), classes=["c"])
    gt = ds.coco_ground_truth()
    coco = COCO()
    coco.dataset = gt
    coco.createIndex()
    assert all(np.array_equal(coco.annToMask(a), target["masks"][j].numpy()) for j, a in enumerate(gt["annotations"]))


def test_build_dataset_instance_options(tmp_path):
    with pytest.raises(DatasetError, match="instances=connected_components"):
        build_dataset("synthetic", "val", min_area=5)
    with pytest.raises(DatasetError, match="holds instances already"):
        build_dataset("synthetic_instances", "val", instances="connected_components")
    ds = build_dataset("synthetic", "val", instances="connected_components", min_area=20)
    assert ds.classes == ["disk", "square", "triangle", "ring"] and len(ds) == 40
    assert len(ds[0][1]["labels"]) > 0
    syn = build_dataset("synthetic_instances", "val", seed=3, num_images=5, transforms=instance_eval_transforms())
    assert isinstance(syn, SyntheticInstances) and len(syn) == 5 and syn[0][0].dtype == torch.float32
    with pytest.raises(DatasetError, match="do not apply"):
        build_dataset(_coco_tree(tmp_path / "coco"), "train", binary_threshold=128)


# -- synthetic -------------------------------------------------------------------------------------------------------
def test_synthetic_instances_touch_occlude_and_round_trip_through_coco(tmp_path):
    ds = SyntheticInstances("train", num_images=12, image_size=(96, 96), seed=1)
    assert ds.classes == ["disk", "square", "triangle"]
    touching = occluded = 0
    labels = set()
    for i in range(len(ds)):
        image, target = ds[i]
        _check_contract(image, target, 3)
        masks = target["masks"].numpy().astype(bool)
        assert len(masks) >= 2 and masks.sum(axis=0).max() == 1  # several per image; masks never overlap
        labels |= set(target["labels"].tolist())
        grown = [ndimage.binary_dilation(m) for m in masks]
        touching += sum(bool((grown[a] & masks[b]).any()) for a in range(len(masks)) for b in range(a))
        _, visible, _ = ds.render(i)
        _, whole, _ = ds.render(i, occlude=False)
        occluded += int((whole.sum(axis=0) > 1).any())
        for j in range(len(whole)):  # the later shape wins: a mask is its shape less every later shape
            later = whole[j + 1:].any(axis=0) if j + 1 < len(whole) else np.zeros_like(whole[0], dtype=bool)
            assert np.array_equal(visible[j].astype(bool), whole[j].astype(bool) & ~later)
    assert labels == {1, 2, 3} and touching >= 12 and occluded >= 6
    again = SyntheticInstances("train", num_images=12, image_size=(96, 96), seed=1)
    assert torch.equal(ds[5][0], again[5][0]) and torch.equal(ds[5][1]["masks"], again[5][1]["masks"])
    assert not torch.equal(ds[5][0], SyntheticInstances("train", 12, (96, 96), seed=2)[5][0])

    root = write_synthetic_instances(tmp_path / "syn", {"train": 4, "val": 3}, image_size=(96, 96), seed=1)
    assert detect_format(root) == "coco" and scan_coco(root, "train").ok
    read = build_dataset(root, "train")
    assert read.classes == ds.classes and read.category_ids == [1, 2, 3] and len(read) == 4
    for i in range(4):
        (im_a, t_a), (im_b, t_b) = ds[i], read[i]
        assert torch.equal(im_a, im_b)
        for key in ("boxes", "masks", "labels", "iscrowd", "area"):
            assert torch.equal(t_a[key], t_b[key]), key


# -- transforms ------------------------------------------------------------------------------------------------------
def _random_instances(seed: int, h: int, w: int, r: int) -> tuple[tv_tensors.Image, dict]:
    """Disks, thin diagonal bars and blobs; mask j holds the value labels[j] (so a mask shows its label)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    masks = []
    for j in range(r):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        kind = j % 3
        if kind == 0:
            m = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(2, 0.3 * min(h, w)) ** 2
        elif kind == 1:  # a thin diagonal bar: its clamped box is loose after a crop
            m = (np.abs((yy - cy) - (xx - cx)) <= rng.uniform(0.5, 2)) & (np.abs(xx - cx) < rng.uniform(3, w / 2))
        else:
            m = (np.abs(yy - cy) < rng.uniform(1, h / 4)) & (np.abs(xx - cx) < rng.uniform(1, w / 4))
        if not m.any():
            m[int(cy) % h, int(cx) % w] = True
        masks.append(m)
    labels = np.arange(1, r + 1)
    valued = np.stack(masks).astype(np.uint8) * labels[:, None, None].astype(np.uint8)
    target = {
        "boxes": tv_tensors.BoundingBoxes(masks_to_boxes(torch.from_numpy(valued)), format="XYXY", canvas_size=(h, w)),
        "masks": tv_tensors.Mask(torch.from_numpy(valued)),
        "labels": torch.from_numpy(labels),
        "iscrowd": torch.from_numpy(labels % 2),
        "area": torch.from_numpy(np.stack(masks).sum(axis=(1, 2)).astype(np.float32)),
        "image_id": seed,
    }
    image = tv_tensors.Image(torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8)))
    return image, target


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), h=st.integers(24, 72), w=st.integers(24, 72), r=st.integers(1, 7),
       crop=st.integers(16, 64), lo=st.floats(0.3, 1.0), span=st.floats(0.0, 1.5))
def test_train_transforms_keep_masks_boxes_and_labels_aligned(seed, h, w, r, crop, lo, span):
    image, target = _random_instances(seed, h, w, r)
    torch.manual_seed(seed)
    out_image, out = instance_train_transforms((crop, crop), (lo, lo + span))(image, target)
    assert out_image.dtype == torch.float32 and out_image.shape == (3, crop, crop)
    assert 0 <= float(out_image.min()) and float(out_image.max()) <= 1
    n = len(out["labels"])
    assert out["masks"].shape == (n, crop, crop) and out["boxes"].shape == (n, 4)
    assert out["iscrowd"].shape == out["area"].shape == (n,) and tuple(out["boxes"].canvas_size) == (crop, crop)
    assert out["image_id"] == seed
    for j in range(n):
        m = out["masks"][j].numpy()
        assert m.any(), "an empty mask survived"
        assert set(np.unique(m[m != 0]).tolist()) == {int(out["labels"][j])}, "a label left its mask"
        assert int(out["iscrowd"][j]) == int(out["labels"][j]) % 2
        assert out["boxes"][j].tolist() == _tight_box(m)
        assert float(out["area"][j]) == float((m != 0).sum())


def test_eval_transforms_and_collate_feed_torchvision_detection():
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    ds = SyntheticInstances("val", num_images=3, image_size=(64, 80), transforms=instance_eval_transforms())
    images, targets = instance_collate([ds[i] for i in range(3)])
    assert isinstance(images, list) and isinstance(targets, list) and len(images) == len(targets) == 3
    assert images[0].dtype == torch.float32 and float(images[0].max()) <= 1
    assert targets[0]["masks"].dtype == torch.uint8
    batch, resized = GeneralizedRCNNTransform(64, 128, [0.5] * 3, [0.25] * 3)(images, targets)
    assert batch.tensors.shape[0] == 3 and resized[0]["masks"].shape[-2:] == batch.image_sizes[0]


# -- datasets check --------------------------------------------------------------------------------------------------
def _defective_tree(root: Path) -> Path:
    for i in (1, 2):
        _save_image(root / "images" / "train" / f"im{i}.png", 20, 24, i)
    (root / "images" / "broken").mkdir(parents=True)
    (root / "instances_broken.json").write_text('{"images": [}')
    square = [2, 2, 8, 2, 8, 8, 2, 8]
    data = {
        "images": [{"id": 1, "file_name": "im1.png", "height": 20, "width": 24},
                   {"id": 2, "file_name": "im2.png", "height": 20, "width": 24},
                   {"id": 2, "file_name": "im2_again.png", "height": 20, "width": 24},
                   {"id": 3, "file_name": "gone.png", "height": 20, "width": 24}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [square], "bbox": [2, 2, 6, 6]},
            {"id": 2, "image_id": 99, "category_id": 1, "segmentation": [square]},
            {"id": 3, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 5, 5]]},
            {"id": 4, "image_id": 1, "category_id": 42, "segmentation": [square]},
            {"id": 4, "image_id": 2, "category_id": 1, "segmentation": [square]},
            {"id": 6, "image_id": 2, "category_id": 1, "segmentation": [square], "bbox": [20, 2, 10, 6]},
            {"id": 7, "image_id": 1, "category_id": 1, "segmentation": {"size": [10, 10], "counts": [100]}},
            {"id": 8, "image_id": 1, "category_id": 1, "segmentation": []},
        ],
    }
    (root / "instances_train.json").write_text(json.dumps(data))
    return root


def test_datasets_check_names_every_coco_defect(tmp_path, capsys):
    root = _defective_tree(tmp_path / "bad")
    assert main(["datasets", "check", str(root), "--quiet"]) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    text = out.out
    json_path = root / "instances_train.json"
    expected = {
        "not JSON": f"{root / 'instances_broken.json'} is not valid JSON",
        "missing image": f"image {root / 'images' / 'train' / 'gone.png'} (id 3) is listed in {json_path} but missing",
        "unknown image id": "annotation id 2 points at image id 99, which the JSON's images do not list",
        "polygon < 3 points": "annotation id 3 (image im1.png): polygon 0 has 2 point(s), fewer than 3; fix or remove",
        "unknown category": "annotation id 4 has category id 42, which the JSON's categories do not list (ids: 1)",
        "duplicate annotation id": "annotation id 4 is used twice",
        "duplicate image id": "image id 2 is listed twice (im2.png and im2_again.png)",
        "RLE of another size": "annotation id 7 (image im1.png): its RLE is 10x10 (height x width) but the image is "
                               "20x24",
        "empty segmentation": "annotation id 8 (image im1.png): its segmentation is empty (no polygon)",
        "box outside": "annotation id 6 has bbox [x, y, w, h] = [20, 2, 10, 6], outside its image im2.png (24x20)",
    }
    for what, line in expected.items():
        assert line in text, what
    for line in text.splitlines():  # each problem on one line naming the file and a fix
        if "annotation id" in line or "is listed" in line or "not valid JSON" in line:
            assert str(root) in line and ":" in line
    # the strict loader stops at the first problem, naming the file; lenient leaves the bad entries out
    with pytest.raises(DatasetError, match=r"instances_train\.json.*more problem"):
        CocoInstances(root, "train")
    with pytest.raises(DatasetError, match="not valid JSON"):
        CocoInstances(root, "broken")
    lenient = build_dataset(root, "train", strict=False)
    assert lenient.image_ids == [1] and lenient[0][1]["labels"].tolist() == [1]
    assert len(lenient.problems) == 8  # all but the box outside the image


def test_a_crop_needs_boxes_from_the_masks():
    """Why MasksToBoxes: torchvision clamps a box to the crop, which is loose around a diagonal bar cut by it."""
    from torchvision.transforms import v2

    mask = np.zeros((1, 40, 40), np.uint8)
    for i in range(40):
        mask[0, i, i] = 1
    target = {"boxes": tv_tensors.BoundingBoxes([[0, 0, 40, 40]], format="XYXY", canvas_size=(40, 40)),
              "masks": tv_tensors.Mask(torch.from_numpy(mask)), "labels": torch.tensor([1])}
    image = tv_tensors.Image(torch.zeros(3, 40, 40, dtype=torch.uint8))
    _, clamped = v2.Compose([v2.Pad([0, 0, 20, 0]), v2.CenterCrop(40)])(image, target)  # shifts the bar left
    tight = _tight_box(clamped["masks"][0].numpy())
    assert clamped["boxes"][0].tolist() != tight
    torch.manual_seed(0)
    _, derived = instance_train_transforms((20, 20), (1.0, 1.0), hflip=False)(image, target)
    for j in range(len(derived["labels"])):
        assert derived["boxes"][j].tolist() == _tight_box(derived["masks"][j].numpy())
