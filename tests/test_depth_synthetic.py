"""Tests of the built-in synthetic RGB-D generator (pixelwise.depth.synthetic).

The geometry is checked against intersections, back-projections and finite differences computed here, from the
scene description and the intrinsics alone, not with the module's own ray caster.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from pixelwise.depth.synthetic import SyntheticDepth, default_intrinsics, render_scene, write_synthetic_depth

SIZE = (96, 128)
SEEDS = (0, 1, 2, 3, 4, 5)


@pytest.fixture(scope="module")
def frames():
    return {seed: render_scene(seed, SIZE) for seed in SEEDS}


def rays(intrinsics, size):
    """(H, W, 3) ray directions through the pixel centres, scaled to z = 1."""
    fx, fy, cx, cy = intrinsics
    h, w = size
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], axis=-1)


def backprojected(depth, intrinsics):
    return rays(intrinsics, depth.shape) * depth.astype(np.float64)[..., None]


def fd_normals(depth, intrinsics):
    """Normals (H, W, 3) from central differences of the back-projected points, facing the camera; the border
    row and column are NaN."""
    p = backprojected(depth, intrinsics)
    n = np.full(p.shape, np.nan)
    du = p[1:-1, 2:] - p[1:-1, :-2]
    dv = p[2:, 1:-1] - p[:-2, 1:-1]
    c = np.cross(du, dv)
    with np.errstate(invalid="ignore"):
        c /= np.linalg.norm(c, axis=-1, keepdims=True)
    flip = np.sum(c * p[1:-1, 1:-1], axis=-1) > 0
    c[flip] *= -1
    n[1:-1, 1:-1] = c
    return n


def angle_deg(a, b):
    with np.errstate(invalid="ignore"):
        cos = np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def test_arrays_have_the_documented_shapes_dtypes_and_ranges(frames):
    f = frames[0]
    h, w = SIZE
    assert f["image"].dtype == np.uint8 and f["image"].shape == (h, w, 3)
    assert f["depth"].dtype == np.float32 and f["depth"].shape == (h, w)
    assert f["normals"].dtype == np.float32 and f["normals"].shape == (3, h, w)
    assert f["valid"].dtype == bool and f["labels"].shape == (h, w)
    assert f["intrinsics"] == default_intrinsics(SIZE) == (0.81 * w, 0.81 * w, (w - 1) / 2, (h - 1) / 2)
    for f in frames.values():
        np.testing.assert_array_equal(f["valid"], f["depth"] > 0)
        d = f["depth"][f["valid"]]
        assert 0.5 < d.min() and d.max() <= 10.0  # an indoor range, like NYU Depth v2
        assert d.max() - d.min() > 2.0
        assert (f["labels"] >= 0).all()  # the default field of view always sees a surface
        assert np.all(f["normals"][:, ~f["valid"]] == 0)
        assert f["image"].std() > 10  # textured, not blank


def test_every_frame_has_a_few_invalid_pixels(frames):
    for f in frames.values():
        invalid = ~f["valid"]
        assert 0 < invalid.sum() < 0.1 * invalid.size
        assert np.all(f["depth"][invalid] == 0)
    near = render_scene(3, SIZE, max_depth=3.0)
    assert near["depth"].max() <= 3.0
    assert (~near["valid"]).sum() > (~frames[3]["valid"]).sum()
    # Out of range only removes depth: the image and the surviving depths are the same.
    np.testing.assert_array_equal(near["image"], frames[3]["image"])
    np.testing.assert_array_equal(near["depth"][near["valid"]], frames[3]["depth"][near["valid"]])


def test_same_seed_is_bit_identical_and_other_seeds_differ(frames):
    again = render_scene(2, SIZE)
    for key in ("image", "depth", "normals", "valid", "labels"):
        assert np.array_equal(again[key], frames[2][key]), key
    for a, b in ((0, 1), (1, 2), (2, 3)):
        assert not np.array_equal(frames[a]["depth"], frames[b]["depth"])
        assert not np.array_equal(frames[a]["image"], frames[b]["image"])
    # The room depends on the seed only: another size renders the same objects.
    small = render_scene(2, (32, 48))
    names = [o["name"] for o in small["scene"]["objects"]]
    assert names == [o["name"] for o in frames[2]["scene"]["objects"]]
    for o, p in zip(small["scene"]["objects"], frames[2]["scene"]["objects"]):
        for key in ("normal", "point", "center", "radius", "half_size", "axes"):
            if key in o:
                np.testing.assert_array_equal(o[key], p[key])


def test_depth_is_the_exact_ray_intersection_with_planes_and_spheres(frames):
    checked_sphere = 0
    for f in frames.values():
        r = rays(f["intrinsics"], SIZE)
        valid, labels, depth = f["valid"], f["labels"], f["depth"].astype(np.float64)
        normals = f["normals"].transpose(1, 2, 0)
        for k, obj in enumerate(f["scene"]["objects"]):
            if obj["kind"] == "plane":
                n, p0 = obj["normal"], obj["point"]
                denom = r @ n
                with np.errstate(divide="ignore", invalid="ignore"):
                    t = np.where(denom < 0, (p0 @ n) / denom, np.inf)
                expected_normal = np.broadcast_to(n, r.shape)
            elif obj["kind"] == "sphere":
                c, rad = obj["center"], obj["radius"]
                a = np.sum(r * r, axis=-1)
                b = r @ c
                disc = b * b - a * (c @ c - rad * rad)
                with np.errstate(invalid="ignore"):
                    t = np.where(disc >= 0, (b - np.sqrt(disc)) / a, np.inf)
                expected_normal = (r * t[..., None] - c) / rad
            else:
                continue
            shows = valid & (labels == k)
            if obj["name"] in ("ground", "back wall"):
                assert shows.sum() > 0, obj["name"]
            # Where the pixel shows the object, its depth is the analytic intersection and its normal the surface's.
            assert np.abs(depth[shows] - t[shows]).max(initial=0.0) < 1e-4
            assert np.abs(normals[shows] - expected_normal[shows]).max(initial=0.0) < 1e-4
            # Nothing is seen behind an object the ray hits: the nearest hit is kept.
            assert np.all(depth[valid] <= t[valid] + 1e-4)
            checked_sphere += obj["kind"] == "sphere" and shows.sum() > 20
        # A pixel chosen here: the bottom-centre pixel sees the floor, z = camera height / (ray . down).
        down = -f["scene"]["objects"][0]["normal"]
        v, u = SIZE[0] - 1, SIZE[1] // 2
        if valid[v, u] and labels[v, u] == 0:
            assert abs(depth[v, u] - f["scene"]["camera_height"] / (r[v, u] @ down)) < 1e-4
    assert checked_sphere >= len(frames)


def test_ground_plane_lies_at_camera_height_below_the_camera(frames):
    for f in frames.values():
        ground = f["scene"]["objects"][0]
        assert ground["name"] == "ground"
        assert abs(np.linalg.norm(ground["normal"]) - 1) < 1e-12
        assert abs(-(ground["point"] @ ground["normal"]) - f["scene"]["camera_height"]) < 1e-9
        assert ground["normal"][1] < -0.9  # facing up: y points down in camera coordinates
        # Every floor pixel, back-projected, lies on that plane.
        p = backprojected(f["depth"], f["intrinsics"])[f["valid"] & (f["labels"] == 0)]
        assert len(p) > 100
        assert np.abs((p - ground["point"]) @ ground["normal"]).max() < 1e-4


def test_normals_are_unit_and_face_the_camera(frames):
    for f in frames.values():
        n = f["normals"].transpose(1, 2, 0)[f["valid"]].astype(np.float64)
        assert np.abs(np.linalg.norm(n, axis=-1) - 1).max() < 1e-5
        r = rays(f["intrinsics"], SIZE)[f["valid"]]
        assert np.all(np.sum(n * r, axis=-1) < 0)
        assert (n[:, 2] < 0).mean() > 0.5


def test_normals_agree_with_finite_differences_of_the_depth(frames):
    all_angles, plane_angles = [], []
    for f in frames.values():
        fd = fd_normals(f["depth"], f["intrinsics"])
        rendered = f["normals"].transpose(1, 2, 0).astype(np.float64)
        valid, labels = f["valid"], f["labels"]
        # Away from edges: the pixel and its 8 neighbours are valid and show one object, and the 4 neighbours'
        # normals are within 10 degrees of the centre's (so not across a box edge).
        ok = np.zeros(SIZE, dtype=bool)
        inner = np.ones((SIZE[0] - 2, SIZE[1] - 2), dtype=bool)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                sl = (slice(1 + dy, SIZE[0] - 1 + dy), slice(1 + dx, SIZE[1] - 1 + dx))
                inner &= valid[sl] & (labels[sl] == labels[1:-1, 1:-1])
                if abs(dy) + abs(dx) == 1:
                    inner &= angle_deg(rendered[sl], rendered[1:-1, 1:-1]) < 10
        ok[1:-1, 1:-1] = inner
        assert ok.mean() > 0.5
        angles = angle_deg(fd[ok], rendered[ok])
        all_angles.append(angles)
        kinds = np.array([o["kind"] for o in f["scene"]["objects"]])
        plane_angles.append(angles[kinds[labels[ok]] != "sphere"])
    all_angles = np.concatenate(all_angles)
    assert np.median(all_angles) < 1.0
    assert np.percentile(all_angles, 99) < 2.0
    # On planar surfaces (floor, walls, box faces) finite differences are exact up to the float32 depth.
    assert np.concatenate(plane_angles).max() < 0.05


def test_shading_follows_the_normals():
    # With the texture averaged out, surfaces facing the light are brighter: on each scene's floor and back wall
    # the mean brightness is ordered like the Lambertian term n . l (shadows and textures aside).
    brighter = 0
    for seed in range(8):
        f = render_scene(seed, SIZE)
        light = f["scene"]["light"]
        objs = f["scene"]["objects"]
        lum = f["image"].astype(np.float64).mean(axis=-1)
        albedo = {k: objs[k]["texture"]["colors"].mean() for k in (0, 1)}
        cos = {k: max(float(objs[k]["normal"] @ light), 0.0) for k in (0, 1)}
        ratio = {k: lum[f["labels"] == k].mean() / albedo[k] for k in (0, 1)}
        brighter += (ratio[0] > ratio[1]) == (cos[0] > cos[1])
    assert brighter >= 6


def test_bad_arguments_raise_value_error(tmp_path):
    for size in ((8, 64), (64,), "96x128", (96.5, 128)):
        with pytest.raises(ValueError, match="size"):
            render_scene(0, size)
    for seed in (-1, 1.5, "0", True, ()):
        with pytest.raises(ValueError, match="seed"):
            render_scene(seed, SIZE)
    for k in ((0.0, 100.0, 60.0, 40.0), (100.0, 100.0, 60.0), (np.nan, 1.0, 1.0, 1.0)):
        with pytest.raises(ValueError, match="intrinsics"):
            render_scene(0, SIZE, intrinsics=k)
    root = tmp_path / "out"
    for counts in ({}, {"train": 0}, {"train": -3}, {"train": 2.0}, {"train": True}, {"bogus": 2}, [("train", 2)]):
        with pytest.raises(ValueError, match="counts|split"):
            write_synthetic_depth(root, counts, size=(16, 16))
    with pytest.raises(ValueError, match="size"):
        write_synthetic_depth(root, {"train": 1}, size=(4, 4))
    assert not root.exists()  # nothing is written for bad arguments


def test_dataset_items_are_the_rendered_scenes():
    ds = SyntheticDepth("val", num_images=3, image_size=(32, 48), seed=2)
    assert len(ds) == 3 and ds.ids[1] == "synthetic_val_0001"
    item = ds[1]
    assert isinstance(item["image"], tv_tensors.Image) and item["image"].dtype == torch.uint8
    assert tuple(item["image"].shape) == (3, 32, 48)
    assert item["depth"].dtype == torch.float32 and tuple(item["depth"].shape) == (32, 48)
    assert item["normals"].dtype == torch.float32 and tuple(item["normals"].shape) == (3, 32, 48)
    assert item["valid"].dtype == torch.bool
    f = render_scene((2, 1, 1), (32, 48))
    np.testing.assert_array_equal(item["image"].permute(1, 2, 0).numpy(), f["image"])
    np.testing.assert_array_equal(item["depth"].numpy(), f["depth"])
    np.testing.assert_array_equal(item["normals"].numpy(), f["normals"])
    assert item["intrinsics"].tolist() == pytest.approx(list(f["intrinsics"]))
    np.testing.assert_array_equal(ds[-1]["depth"].numpy(), ds[2]["depth"].numpy())
    assert not torch.equal(ds[0]["depth"], ds[1]["depth"])
    assert not torch.equal(SyntheticDepth("train", 3, (32, 48), seed=2)[1]["depth"], item["depth"])
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(ValueError, match="split"):
        SyntheticDepth("bogus")


def test_written_folder_round_trips(tmp_path):
    size = (40, 56)
    root = write_synthetic_depth(tmp_path / "rgbd", {"train": 2, "val": 1}, size=size, seed=5)
    meta = json.loads((root / "intrinsics.json").read_text())
    fx, fy, cx, cy = default_intrinsics(size)
    assert meta == {"fx": fx, "fy": fy, "cx": cx, "cy": cy, "depth_scale": "mm"}
    for split, n in (("train", 2), ("val", 1)):
        ds = SyntheticDepth(split, n, size, seed=5)
        for folder in ("images", "depth", "normals"):
            assert sorted(p.name for p in (root / folder / split).iterdir()) == [f"{i}.png" for i in ds.ids]
        for i, name in enumerate(ds.ids):
            f = ds.render(i)
            with Image.open(root / "images" / split / f"{name}.png") as im:
                np.testing.assert_array_equal(np.asarray(im.convert("RGB")), f["image"])

            with Image.open(root / "depth" / split / f"{name}.png") as im:
                assert im.mode.startswith("I;16")
                mm = np.asarray(im)
            assert mm.dtype == np.uint16 and mm.shape == size
            np.testing.assert_array_equal(mm == 0, ~f["valid"])
            assert (~f["valid"]).any()
            assert np.abs(mm[f["valid"]] / 1000.0 - f["depth"][f["valid"]]).max() <= 0.0005 + 1e-6

            with Image.open(root / "normals" / split / f"{name}.png") as im:
                assert im.mode == "RGB"
                code = np.asarray(im).astype(np.float64)
            decoded = code / 255.0 * 2.0 - 1.0
            rendered = f["normals"].transpose(1, 2, 0)
            assert angle_deg(decoded[f["valid"]], rendered[f["valid"]]).max() < 1.0
            assert np.all(code[~f["valid"]] == 128)
