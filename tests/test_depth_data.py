"""The RGB-D folder dataset (pixelwise.depth.data.DepthFolder) and its joint transforms: reading back what
write_synthetic_depth wrote, the real NYU / KITTI fixture, the geometry of flip, scale and crop (normals and
intrinsics), determinism, and the errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate

from conftest import _real
from pixelwise.depth import (
    DepthFolder,
    SyntheticDepth,
    depth_eval_transforms,
    depth_train_transforms,
    normals_from_depth,
    write_depth_png,
    write_synthetic_depth,
)
from pixelwise.depth.data import DepthHorizontalFlip, DepthRandomCrop, DepthRandomScale
from pixelwise.errors import DatasetError

SIZE = (48, 64)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return write_synthetic_depth(tmp_path_factory.mktemp("depth") / "rgbd", {"train": 3, "val": 2}, size=SIZE)


@pytest.fixture(scope="module")
def real() -> Path:
    return _real("depth_demo_nyu_kitti")


def angles(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Angles in degrees between unit normals (3, H, W) at the pixels of ``mask`` (H, W)."""
    return torch.rad2deg(torch.acos((a * b).sum(0).clamp(-1, 1)))[mask]


def recomputed(item: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """normals_from_depth of an item's depth with its intrinsics, and where they and the item's normals are valid."""
    normals, valid = normals_from_depth(item["depth"][0], item["intrinsics"])
    return normals, valid & item["normals_valid"][0]


# ------------------------------------------------------------------------------------------------ reading


def test_reads_back_synthetic_frames(synth):
    train = DepthFolder(synth, "train")
    assert len(train) == 3 and train.split == "train" and train.depth_scale == "mm"
    assert train.ids == [f"synthetic_train_{i:04d}" for i in range(3)]
    assert "split='train'" in repr(train) and "n=3" in repr(train) and "normals='files'" in repr(train)
    ref = SyntheticDepth("train", 3, SIZE)
    for i in range(3):
        item, want = train[i], ref[i]
        assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, *SIZE)
        assert torch.equal(item["image"], want["image"])
        assert item["depth"].dtype == torch.float32 and item["depth"].shape == (1, *SIZE)
        assert (item["depth"][0] - want["depth"]).abs().max() <= 0.0005 + 1e-6  # rounded to 1 mm
        assert item["valid"].dtype == torch.bool and torch.equal(item["valid"][0], want["valid"])
        assert item["normals"].shape == (3, *SIZE) and item["normals_valid"].shape == (1, *SIZE)
        assert torch.equal(item["normals_valid"][0], want["valid"])
        assert angles(item["normals"], want["normals"], want["valid"]).max() < 1.0
        assert item["intrinsics"].dtype == torch.float32
        assert torch.allclose(item["intrinsics"], want["intrinsics"])
    val = DepthFolder(synth, "val")
    assert len(val) == 2 and val.ids[0] == "synthetic_val_0000"
    assert DepthFolder(synth, "train[1:]").ids == train.ids[1:]
    assert DepthFolder(synth, "train[:2]").ids == train.ids[:2]
    # normals computed from depth: where valid, equal to normals_from_depth of the item itself
    computed = DepthFolder(synth, "train", normals_from_depth=True, require_normals=True)
    item = computed[0]
    n, v = normals_from_depth(item["depth"][0], item["intrinsics"])
    assert torch.equal(item["normals_valid"][0], v) and torch.equal(item["normals"], n)
    # a batch collates
    batch = default_collate([train[0], train[1]])
    assert batch["depth"].shape == (2, 1, *SIZE) and batch["intrinsics"].shape == (2, 4)


def test_intrinsics_per_frame_and_per_split(tmp_path):
    root = write_synthetic_depth(tmp_path / "d", {"train": 2}, size=SIZE)
    frames = {"synthetic_train_0001": {"fx": 40.0, "fy": 41.0, "cx": 30.0, "cy": 22.0}}
    (root / "intrinsics.json").write_text(json.dumps(
        {"depth_scale": "mm", "fx": 50.0, "fy": 50.0, "cx": 31.5, "cy": 23.5, "frames": frames}))
    ds = DepthFolder(root, "train")
    assert ds[0]["intrinsics"].tolist() == [50.0, 50.0, 31.5, 23.5]
    assert ds[1]["intrinsics"].tolist() == [40.0, 41.0, 30.0, 22.0]
    # the shared fixture's form: {split: [{"id", fx, fy, cx, cy, width, height}, ...]}, no dataset-wide values
    listed = [{"id": f"synthetic_train_{i:04d}", "fx": 45.0 + i, "fy": 46.0, "cx": 31.0, "cy": 23.0,
               "width": SIZE[1], "height": SIZE[0]} for i in range(2)]
    (root / "intrinsics.json").write_text(json.dumps({"train": listed}))
    ds = DepthFolder(root, "train", depth_scale="mm", normals_from_depth=True)
    assert ds[1]["intrinsics"].tolist() == [46.0, 46.0, 31.0, 23.0]
    # intrinsics declared for another resolution are refused, naming the image
    listed[0]["width"] = 640
    (root / "intrinsics.json").write_text(json.dumps({"train": listed}))
    with pytest.raises(DatasetError, match="synthetic_train_0000.png is 64x48"):
        DepthFolder(root, "train", depth_scale="mm")[0]
    # a frame without intrinsics in a file that gives them per frame
    (root / "intrinsics.json").write_text(json.dumps({"depth_scale": "mm", "train": listed[1:]}))
    with pytest.raises(DatasetError, match="no intrinsics for frame 'synthetic_train_0000'"):
        DepthFolder(root, "train")
    # no intrinsics at all: NaN, and normals_from_depth is refused
    (root / "intrinsics.json").write_text(json.dumps({"depth_scale": "mm"}))
    assert torch.isnan(DepthFolder(root, "train")[0]["intrinsics"]).all()


def test_real_nyu_and_kitti_frames(real):
    meta = json.loads((real / "intrinsics.json").read_text())
    nyu = DepthFolder(real, "nyu", depth_scale="mm", normals_from_depth=True)
    assert nyu.ids == ["00000", "00050", "00100"]
    lo, hi = [], []
    for i, entry in enumerate(meta["nyu"]):
        item = nyu[i]
        assert item["image"].shape == (3, 480, 640) and item["depth"].shape == (1, 480, 640)
        d = item["depth"][item["valid"]]
        lo.append(float(d.min()))
        hi.append(float(d.max()))
        assert 0.67 <= float(item["valid"].float().mean()) <= 0.76  # SOURCE.md: 67-75 % valid
        assert torch.allclose(item["intrinsics"], torch.tensor([entry[k] for k in ("fx", "fy", "cx", "cy")]))
        assert float(item["normals_valid"].float().mean()) > 0.5
    assert min(lo) == pytest.approx(0.713, abs=0.001) and max(hi) == pytest.approx(8.266, abs=0.001)  # 0.71-8.27 m
    assert min(lo) >= 0.7 and max(hi) <= 8.3

    raw = DepthFolder(real, "kitti", depth_scale="kitti", depth_dir="depth_raw_kitti256")
    mm = DepthFolder(real, "kitti", depth_scale="mm")
    assert raw.ids == ["0000000005", "0000000050", "0000000100"]
    far = 0.0
    for i in range(3):
        item, item_mm = raw[i], mm[i]
        assert item["depth"].shape == (1, 375, 1242)
        d = item["depth"][item["valid"]]
        assert 5.1 <= float(d.min()) and float(d.max()) <= 85.0
        assert 0.17 <= float(item["valid"].float().mean()) <= 0.21  # about 19 % valid (LiDAR)
        far = max(far, float(d.max()))
        # the millimetre copy is the same depth to 1 mm where it holds one (it drops the pixels beyond 65.535 m)
        both = item_mm["valid"] & item["valid"]
        assert (item_mm["depth"][both] - item["depth"][both]).abs().max() <= 0.0025
        assert not (item_mm["valid"] & ~item["valid"]).any()
    assert far > 80  # only the raw 1/256 folder keeps the full range
    # the fixture declares no scale: refused rather than guessed
    with pytest.raises(DatasetError, match="depth scale .* is not declared.*intrinsics.json"):
        DepthFolder(real, "nyu")


# ------------------------------------------------------------------------------------------------ transforms


def test_hflip_mirrors_normals_and_principal_point(synth):
    for ds in (DepthFolder(synth, "train"), DepthFolder(synth, "train", normals_from_depth=True)):
        item = ds[1]
        out = DepthHorizontalFlip(p=1.0)(item)
        w = SIZE[1]
        assert torch.equal(out["image"], item["image"].flip(-1))
        assert torch.equal(out["depth"], item["depth"].flip(-1))
        assert torch.equal(out["valid"], item["valid"].flip(-1))
        assert torch.equal(out["normals_valid"], item["normals_valid"].flip(-1))
        want = item["normals"].flip(-1).clone()
        want[0] = -want[0]
        assert torch.equal(out["normals"], want)
        k = item["intrinsics"].tolist()
        assert out["intrinsics"].tolist() == pytest.approx([k[0], k[1], w - 1 - k[2], k[3]])
        # geometry: the normals of the flipped depth seen by the flipped camera are the transformed normals
        n, both = recomputed(out)
        assert both.float().mean() > 0.5
        if ds.normals_from_depth:
            assert torch.allclose(n[:, both], out["normals"][:, both], atol=1e-5)
        else:  # exact ray-cast normals; away from occluding edges, central differences agree
            assert angles(n, out["normals"], both).median() < 1.0
    assert DepthHorizontalFlip(p=0.0)(item) is item


@pytest.mark.parametrize("s", [0.5, 2.0])
def test_scale_keeps_depth_values_and_scales_intrinsics(synth, s):
    item = DepthFolder(synth, "train", normals_from_depth=True)[0]
    size = (round(SIZE[0] * s), round(SIZE[1] * s))
    out = DepthRandomScale((s, s))(item)
    assert out["image"].shape == (3, *size) and out["depth"].shape == (1, *size)
    assert out["normals"].shape == (3, *size) and out["normals_valid"].shape == (1, *size)
    # nearest only: every valid output depth (and every normal) is a value of the input
    assert torch.equal(out["valid"], out["depth"] > 0)
    assert torch.isin(out["depth"][out["valid"]], item["depth"][item["valid"]]).all()
    assert torch.isin(out["normals"][0], item["normals"][0]).all()
    fx, fy, cx, cy = item["intrinsics"].tolist()
    assert out["intrinsics"].tolist() == pytest.approx([fx * s, fy * s, (cx + 0.5) * s - 0.5, (cy + 0.5) * s - 0.5])
    # normals from the scaled depth with the scaled intrinsics are the normals before scaling
    n, both = recomputed(out)
    assert both.sum() > 200
    assert angles(n, out["normals"], both).median() < 1.0
    # without the focal scaling they would not be
    n_wrong, v_wrong = normals_from_depth(out["depth"][0], item["intrinsics"])
    assert angles(n_wrong, out["normals"], v_wrong & out["normals_valid"][0]).median() > 3.0

    # the alternative convention: depth / s, focal length kept, normals squashed to match
    alt = DepthRandomScale((s, s), scale_depth=True)(item)
    assert torch.isin(alt["depth"][alt["valid"]] * s, item["depth"][item["valid"]]).all()
    assert alt["intrinsics"].tolist() == pytest.approx([fx, fy, (cx + 0.5) * s - 0.5, (cy + 0.5) * s - 0.5])
    n, both = recomputed(alt)
    assert angles(n, alt["normals"], both).median() < 1.0


def test_scale_pixel_centres_map_exactly(synth):
    """At s = 2 output pixels 2u and 2u+1 both hold input pixel u, whose centre lies at 2u + 0.5: their
    back-projected points average to the input's point with cx' = 2 (cx + 0.5) - 0.5 (not 2 cx)."""
    from pixelwise.depth import backproject

    item = SyntheticDepth("val", 1, SIZE)[0]  # (H, W) depth, no normals_valid: the transforms accept it too
    out = DepthRandomScale((2, 2)).resize(item, (2 * SIZE[0], 2 * SIZE[1]))
    p = backproject(item["depth"], item["intrinsics"])
    q = backproject(out["depth"], out["intrinsics"])
    q = q.reshape(3, SIZE[0], 2, SIZE[1], 2).mean(dim=(2, 4))
    assert torch.allclose(p, q, atol=1e-5)


def test_random_scale_is_nearest_at_any_factor(synth):
    item = DepthFolder(synth, "train")[2]
    torch.manual_seed(3)
    for _ in range(4):
        out = DepthRandomScale((0.6, 1.7))(item)
        h, w = out["depth"].shape[-2:]
        k0, k = item["intrinsics"], out["intrinsics"]
        assert k[0] == pytest.approx(k0[0] * w / SIZE[1]) and k[1] == pytest.approx(k0[1] * h / SIZE[0])
        assert torch.isin(out["depth"][out["valid"]], item["depth"][item["valid"]]).all()
        assert torch.equal(out["valid"], out["depth"] > 0)
        norms = torch.linalg.vector_norm(out["normals"], dim=0)
        assert torch.allclose(norms[out["normals_valid"][0]], torch.ones(()), atol=1e-5)


def test_crop_shifts_principal_point_and_pads_invalid(synth):
    item = DepthFolder(synth, "val")[0]
    k = item["intrinsics"].tolist()
    out = DepthRandomCrop((32, 40)).crop(item, 5, 11)
    assert torch.equal(out["depth"], item["depth"][:, 5:37, 11:51])
    assert torch.equal(out["normals"], item["normals"][:, 5:37, 11:51])
    assert torch.equal(out["image"], item["image"][:, 5:37, 11:51])
    assert out["intrinsics"].tolist() == pytest.approx([k[0], k[1], k[2] - 11, k[3] - 5])
    # random crops: the window is where the principal point says it is
    torch.manual_seed(0)
    for _ in range(3):
        out = DepthRandomCrop((32, 40))(item)
        left, top = round(float(k[2] - out["intrinsics"][2])), round(float(k[3] - out["intrinsics"][3]))
        assert torch.equal(out["depth"], item["depth"][:, top:top + 32, left:left + 40])
    # larger than the image: padded with invalid pixels at a random offset
    torch.manual_seed(1)
    out = DepthRandomCrop((60, 80))(item)
    left, top = -round(float(k[2] - out["intrinsics"][2])), -round(float(k[3] - out["intrinsics"][3]))
    assert 0 <= top <= 12 and 0 <= left <= 16
    inside = torch.zeros(60, 80, dtype=torch.bool)
    inside[top:top + SIZE[0], left:left + SIZE[1]] = True
    assert torch.equal(out["depth"][0, top:top + SIZE[0], left:left + SIZE[1]], item["depth"][0])
    assert not out["valid"][0][~inside].any() and not out["normals_valid"][0][~inside].any()
    assert (out["depth"][0][~inside] == 0).all() and (out["normals"][:, ~inside] == 0).all()


def test_train_and_eval_pipelines(synth):
    ds = DepthFolder(synth, "train")
    tf = depth_train_transforms((32, 32), scale_range=(0.75, 1.5), hflip=True, mean=(0.5,) * 3, std=(0.25,) * 3)
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append([tf(ds[i]) for i in range(3)])
    for a, b in zip(*runs):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    torch.manual_seed(8)
    other = tf(ds[0])
    assert not torch.equal(other["depth"], runs[0][0]["depth"]) or not torch.equal(other["image"], runs[0][0]["image"])
    out = runs[0][0]
    assert out["image"].dtype == torch.float32 and out["image"].shape == (3, 32, 32)
    assert out["depth"].shape == out["valid"].shape == out["normals_valid"].shape == (1, 32, 32)
    assert torch.equal(out["valid"], out["depth"] > 0)
    assert torch.isin(out["depth"][out["valid"]], ds[0]["depth"][ds[0]["valid"]]).all()
    # through the dataset's transforms argument, and the eval pipeline only normalises the image
    assert DepthFolder(synth, "train", transforms=tf)[0]["image"].shape == (3, 32, 32)
    item = ds[1]
    ev = depth_eval_transforms(mean=(0.5,) * 3, std=(0.25,) * 3)(item)
    assert torch.allclose(ev["image"], (item["image"].float() / 255 - 0.5) / 0.25, atol=1e-5)
    for key in ("depth", "valid", "normals", "normals_valid", "intrinsics"):
        assert torch.equal(ev[key], item[key])


# ------------------------------------------------------------------------------------------------ errors


def _raises(match_file: Path, fn, *pattern: str) -> str:
    with pytest.raises(DatasetError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message and str(match_file) in message, message
    for p in pattern:
        assert p in message, message
    return message


def test_errors_name_the_file_and_the_fix(tmp_path):
    root = write_synthetic_depth(tmp_path / "bad", {"train": 2}, size=SIZE)
    depth = root / "depth" / "train" / "synthetic_train_0000.png"
    good = depth.read_bytes()

    Image.fromarray(np.full(SIZE, 40, np.uint8)).save(depth)  # an 8-bit copy
    _raises(depth, lambda: DepthFolder(root, "train")[0], "8-bit", "16-bit single-channel PNG")
    Image.fromarray(np.full((*SIZE, 3), 40, np.uint8)).save(depth)  # a colourised visualisation
    _raises(depth, lambda: DepthFolder(root, "train")[0], "RGB", "16-bit single-channel PNG")
    write_depth_png(depth, np.full((SIZE[0], SIZE[1] - 1), 2.0, np.float32), "mm")
    _raises(depth, lambda: DepthFolder(root, "train")[0], "63x48", "64x48", "resolution")
    write_depth_png(depth, np.zeros(SIZE, np.float32), "mm")
    _raises(depth, lambda: DepthFolder(root, "train")[0], "no valid pixel")
    depth.unlink()
    _raises(depth, lambda: DepthFolder(root, "train"), "no depth file", "synthetic_train_0000.png")
    depth.write_bytes(good)
    assert DepthFolder(root, "train")[0]["valid"].any()

    normals = root / "normals" / "train" / "synthetic_train_0001.png"
    normals.rename(normals.with_suffix(".bak"))
    _raises(normals, lambda: DepthFolder(root, "train"), "no normals file")
    assert DepthFolder(root, "train", normals_from_depth=True)[1]["normals_valid"].any()  # files not read
    normals.with_suffix(".bak").rename(normals)

    meta = root / "intrinsics.json"
    _raises(root, lambda: DepthFolder(root, "train", depth_scale="cm"), "'cm'", "'mm'", "'kitti'")
    saved = meta.read_text()
    meta.write_text(json.dumps({**json.loads(saved), "depth_scale": "metres"}))
    _raises(meta, lambda: DepthFolder(root, "train"), "'metres'", "'kitti'")
    meta.write_text(json.dumps({**json.loads(saved), "fx": -1}))
    _raises(meta, lambda: DepthFolder(root, "train"), "fx, fy > 0")
    meta.write_text("{not json")
    _raises(meta, lambda: DepthFolder(root, "train", depth_scale="mm"), "cannot read")
    meta.unlink()
    _raises(meta, lambda: DepthFolder(root, "train"), "not declared", "depth_scale")
    assert torch.isnan(DepthFolder(root, "train", depth_scale="mm")[0]["intrinsics"]).all()
    _raises(meta, lambda: DepthFolder(root, "train", depth_scale="mm", normals_from_depth=True),
            "is missing", "normals_from_depth", "fx")
    meta.write_text(json.dumps({"depth_scale": "mm"}))
    _raises(meta, lambda: DepthFolder(root, "train", normals_from_depth=True), "gives no fx")
    _raises(root, lambda: DepthFolder(root, "test"), "not found")
    (root / "normals" / "train").rename(root / "no_normals")
    _raises(root, lambda: DepthFolder(root, "train", require_normals=True), "normals_from_depth=True")
