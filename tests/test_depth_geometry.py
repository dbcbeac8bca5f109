"""Tests of pixelwise.depth.geometry: back-projection by hand, normals from depth on analytic surfaces rendered by
ray casting (plane, tilted plane, sphere), the 8-bit normal encoding, depth PNGs (round trips, the real NYU and KITTI
frames of ../shared, and the errors for files that are not depth)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import _real
from PIL import Image

from pixelwise.depth.geometry import (
    backproject,
    decode_normals,
    encode_normals,
    normals_from_depth,
    read_depth_png,
    write_depth_png,
)
from pixelwise.errors import ConfigError, DatasetError

K = (200.0, 210.0, 40.3, 30.7)  # fx, fy, cx, cy in pixels
H, W = 64, 80


def _angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle between unit vectors along dim 0, stable form."""
    return torch.rad2deg(2 * torch.atan2((a - b).norm(dim=0), (a + b).norm(dim=0)))


def _rays(h: int = H, w: int = W, k=K) -> torch.Tensor:
    """(3, h, w) ray directions with z = 1 through every pixel centre."""
    fx, fy, cx, cy = k
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return torch.stack([(u - cx) / fx, (v - cy) / fy, torch.ones_like(u)])


def test_backproject_by_hand() -> None:
    depth = torch.zeros(2, 4)
    depth[1, 3] = 2.0
    pts = backproject(depth, (2.0, 4.0, 1.0, 0.5))
    assert pts.shape == (3, 2, 4)
    # u = 3, v = 1, z = 2: x = (3 - 1) / 2 * 2 = 2, y = (1 - 0.5) / 4 * 2 = 0.25
    assert pts[:, 1, 3].tolist() == [2.0, 0.25, 2.0]
    assert pts[:, 0, 0].tolist() == [0.0, 0.0, 0.0]  # invalid depth -> origin
    # one camera per image of a batch
    batch = torch.stack([depth, depth])
    pts = backproject(batch, torch.tensor([[2.0, 4.0, 1.0, 0.5], [1.0, 1.0, 0.0, 0.0]]))
    assert pts.shape == (2, 3, 2, 4)
    assert pts[1, :, 1, 3].tolist() == [6.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="intrinsics"):
        backproject(depth, (2.0, 4.0, 1.0))
    with pytest.raises(ValueError, match="floating-point"):
        backproject(depth.to(torch.int32), (2.0, 4.0, 1.0, 0.5))


def test_fronto_parallel_plane() -> None:
    depth = torch.full((H, W), 2.5)
    depth[20, 30] = 0.0  # a hole: it and its four neighbours get no normal
    normals, valid = normals_from_depth(depth, K)
    assert normals.shape == (3, H, W) and valid.shape == (H, W) and valid.dtype == torch.bool
    assert int(valid.sum()) == (H - 2) * (W - 2) - 5
    assert not valid[0].any() and not valid[-1].any() and not valid[:, 0].any() and not valid[:, -1].any()
    for v, u in [(20, 30), (19, 30), (21, 30), (20, 29), (20, 31)]:
        assert not valid[v, u] and normals[:, v, u].tolist() == [0.0, 0.0, 0.0]
    assert valid[19, 29]  # a diagonal neighbour is not used
    expected = torch.tensor([0.0, 0.0, -1.0]).reshape(3, 1, 1).expand(3, H, W)
    torch.testing.assert_close(normals[:, valid], expected[:, valid], rtol=0, atol=1e-6)
    assert (normals[:, ~valid] == 0).all()


@pytest.mark.parametrize(("b", "c"), [(0.5, 0.0), (0.4, -0.3), (-1.0, 0.8)])
def test_tilted_plane(b: float, c: float) -> None:
    # the plane z = a + b x + c y, ray cast: on the ray (x, y, z) = z (r_x, r_y, 1), z = a / (1 - b r_x - c r_y)
    a = 2.0
    r = _rays()
    depth = a / (1 - b * r[0] - c * r[1])
    assert (depth > 0).all()
    normals, valid = normals_from_depth(depth, K)
    # z - b x - c y = a has normal (-b, -c, 1); facing the camera (n . p = -a < 0): (b, c, -1) / |.|
    expected = torch.tensor([b, c, -1.0], dtype=torch.float64) / math.sqrt(1 + b * b + c * c)
    err = _angle_deg(normals[:, valid], expected[:, None])
    assert int(valid.sum()) == (H - 2) * (W - 2)
    assert err.max() < 1e-6
    # float32 depth, as a network predicts it
    normals32, _ = normals_from_depth(depth.float(), K)
    assert _angle_deg(normals32[:, valid].double(), expected[:, None]).max() < 0.01


def test_sphere() -> None:
    centre, radius = torch.tensor([0.05, -0.03, 2.0], dtype=torch.float64), 0.25  # about 25 px radius on screen
    r = _rays()
    # |t r - C|^2 = R^2, nearer root: t = (r.C - sqrt((r.C)^2 - |r|^2 (|C|^2 - R^2))) / |r|^2
    rc = (r * centre[:, None, None]).sum(0)
    rr = (r * r).sum(0)
    disc = rc**2 - rr * (centre.dot(centre) - radius**2)
    hit = disc > 0
    depth = torch.where(hit, (rc - disc.clamp(min=0).sqrt()) / rr, 0.0)  # t is z since r_z = 1
    assert 0.2 < hit.double().mean() < 0.6 and not hit[0].any() and not hit[:, 0].any()
    expected = (r * depth - centre[:, None, None]) / radius  # outward normal, which faces the camera

    normals, valid = normals_from_depth(depth, K)
    assert not (valid & ~hit).any()
    # away from the silhouette (3 px), where the surface is seen edge-on and depth is not smooth at pixel scale
    near_edge = F.max_pool2d((~hit).double()[None, None], 7, stride=1, padding=3)[0, 0] > 0
    inner = valid & ~near_edge
    assert int(inner.sum()) > 1000
    err = _angle_deg(normals[:, inner], expected[:, inner])
    assert err.mean() < 0.1 and err.max() < 1.0
    # every normal faces the camera
    points = backproject(depth, K)
    assert ((normals * points).sum(0)[valid] < 0).all()
    # batched: the same normals per image, with per-image intrinsics
    nb, vb = normals_from_depth(torch.stack([depth, depth]), torch.tensor([K, K]))
    torch.testing.assert_close(nb[1], normals)
    assert torch.equal(vb[0], valid)


def test_normal_encoding_round_trip() -> None:
    gen = torch.Generator().manual_seed(0)
    n = F.normalize(torch.randn(3, 32, 40, generator=gen), dim=0)
    n[:, 0, :5] = 0.0  # invalid pixels
    enc = encode_normals(n)
    assert enc.dtype == torch.uint8 and enc.shape == (32, 40, 3)
    assert enc[0, :5].tolist() == [[128, 128, 128]] * 5
    dec, valid = decode_normals(enc.numpy())
    assert dec.shape == (3, 32, 40) and valid.shape == (32, 40)
    assert not valid[0, :5].any() and (dec[:, 0, :5] == 0).all()
    assert valid.sum() == 32 * 40 - 5
    err = _angle_deg(dec[:, valid].double(), n[:, valid].double())
    assert err.max() < 0.5
    torch.testing.assert_close(dec[:, valid].norm(dim=0), torch.ones(int(valid.sum())))
    # a camera-facing normal, and black as the other usual invalid code
    assert encode_normals(torch.tensor([0.0, 0.0, -1.0]).reshape(3, 1, 1))[0, 0].tolist() == [128, 128, 0]
    black = np.zeros((1, 2, 3), dtype=np.uint8)
    black[0, 1] = (128, 128, 0)
    dec, valid = decode_normals(black)
    assert valid.tolist() == [[False, True]]
    assert dec[:, 0, 1].tolist() == pytest.approx([0.0039, 0.0039, -1.0], abs=1e-3)
    with pytest.raises(ValueError, match="uint8"):
        decode_normals(np.zeros((2, 2, 3), dtype=np.float32))


@pytest.mark.parametrize(("scale", "step"), [("mm", 1e-3), ("kitti", 1 / 256)])
def test_depth_png_round_trip(tmp_path: Path, scale: str, step: float) -> None:
    gen = torch.Generator().manual_seed(1)
    depth = 0.3 + 60.0 * torch.rand(30, 50, generator=gen, dtype=torch.float64)
    depth[torch.rand(30, 50, generator=gen) < 0.3] = 0.0
    path = tmp_path / "d.png"
    write_depth_png(path, depth, scale)
    with Image.open(path) as im:
        assert im.mode == "I;16"
    back = read_depth_png(path, scale)
    assert back.dtype == torch.float32 and back.shape == (30, 50)
    assert torch.equal(back == 0, depth == 0)  # invalid pixels stay 0, and no valid pixel became 0
    assert (back.double() - depth).abs().max() <= step / 2 + 1e-6
    # writing what was read gives the same file contents
    write_depth_png(tmp_path / "again.png", back, scale)
    assert torch.equal(read_depth_png(tmp_path / "again.png", scale), back)


def test_depth_png_write_refuses_what_does_not_fit(tmp_path: Path) -> None:
    far = torch.tensor([[0.0, 70.0], [1.0, 2.0]])
    with pytest.raises(ValueError, match="1 depth value"):
        write_depth_png(tmp_path / "mm.png", far, "mm")  # 70 m > 65.535 m
    assert not (tmp_path / "mm.png").exists()
    write_depth_png(tmp_path / "kitti.png", far, "kitti")  # KITTI's scale holds up to 255.996 m
    assert read_depth_png(tmp_path / "kitti.png", "kitti")[0, 1].item() == 70.0
    with pytest.raises(ValueError, match="do not fit"):
        write_depth_png(tmp_path / "neg.png", torch.tensor([[-1.0, 1.0]]), "mm")
    with pytest.raises(ValueError, match="do not fit"):
        write_depth_png(tmp_path / "tiny.png", torch.tensor([[0.0002, 1.0]]), "mm")  # would round to invalid 0
    write_depth_png(tmp_path / "nan.png", torch.tensor([[math.nan, 1.0]]), "mm")  # NaN = no measurement = 0
    assert read_depth_png(tmp_path / "nan.png", "mm").tolist() == [[0.0, 1.0]]
    with pytest.raises(ConfigError):
        write_depth_png(tmp_path / "x.png", far, "cm")


def test_depth_png_errors_name_the_file(tmp_path: Path) -> None:
    cases = {
        "eight_bit.png": (Image.fromarray(np.full((4, 4), 100, dtype=np.uint8)), "8-bit"),
        "rgb.png": (Image.fromarray(np.full((4, 4, 3), 100, dtype=np.uint8)), "colour image"),
        "zeros.png": (Image.fromarray(np.zeros((4, 4), dtype=np.uint16)), "no valid pixel"),
    }
    for name, (image, what) in cases.items():
        path = tmp_path / name
        image.save(path)
        with pytest.raises(DatasetError, match=what) as info:
            read_depth_png(path, "mm")
        message = str(info.value)
        assert str(path) in message and "\n" not in message
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    for name in ("broken.png", "missing.png"):
        with pytest.raises(DatasetError, match="cannot read depth PNG") as info:
            read_depth_png(tmp_path / name, "kitti")
        assert str(tmp_path / name) in str(info.value)
    with pytest.raises(ConfigError, match="'mm'"):
        read_depth_png(tmp_path / "zeros.png", "metres")


@pytest.fixture(scope="module")
def depth_demo() -> Path:
    return _real("depth_demo_nyu_kitti")


def test_real_nyu_depth_in_millimetres(depth_demo: Path) -> None:
    frames = [read_depth_png(p, "mm") for p in sorted((depth_demo / "depth" / "nyu").glob("*.png"))]
    assert len(frames) == 3 and all(f.shape == (480, 640) for f in frames)
    valid = [f[f > 0] for f in frames]
    # SOURCE.md: 0.71-8.27 m, 67-75 % valid
    assert min(v.min().item() for v in valid) == pytest.approx(0.713, abs=1e-6)
    assert max(v.max().item() for v in valid) == pytest.approx(8.266, abs=1e-6)
    for f in frames:
        assert 0.66 < (f > 0).double().mean() < 0.76
    # read with KITTI's scale the same frame would claim 8266 / 256 = 32.3 m indoors: the scale matters
    assert read_depth_png(depth_demo / "depth" / "nyu" / "00050.png", "kitti").max().item() == pytest.approx(
        8266 / 256)
    # normals of a real frame with its intrinsics: unit length where valid, facing the camera
    k = json.loads((depth_demo / "intrinsics.json").read_text())["nyu"][0]
    normals, ok = normals_from_depth(frames[0], (k["fx"], k["fy"], k["cx"], k["cy"]))
    assert ok.double().mean() > 0.5
    torch.testing.assert_close(normals[:, ok].norm(dim=0), torch.ones(int(ok.sum())))
    points = backproject(frames[0], (k["fx"], k["fy"], k["cx"], k["cy"]))
    assert ((normals * points).sum(0)[ok] < 0).all()


def test_real_kitti_depth_in_256ths(depth_demo: Path) -> None:
    meta = {f["id"]: f for f in json.loads((depth_demo / "intrinsics.json").read_text())["kitti"]}
    paths = sorted((depth_demo / "depth_raw_kitti256").glob("*.png"))
    assert len(paths) == 3
    for path in paths:
        d = read_depth_png(path, "kitti")
        assert d.shape == (375, 1242)
        v = d[d > 0]
        assert 0.17 < v.numel() / d.numel() < 0.21  # semi-dense LiDAR, 18-20 % valid
        assert v.min().item() == pytest.approx(meta[path.stem]["depth_min_m"], abs=2e-3)
        assert v.max().item() == pytest.approx(meta[path.stem]["depth_max_m"], abs=2e-3)
        assert 5.0 < v.min().item() and v.max().item() < 85.0
    assert max(read_depth_png(p, "kitti").max().item() for p in paths) > 84.8  # SOURCE.md: up to 84.9 m
