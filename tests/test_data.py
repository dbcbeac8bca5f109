"""Tests of the data layer: the folder dataset on the real CamVid / ISBI 2012 data, the joint transforms, batching,
the seeded sampling, and the errors a user gets for malformed datasets (each must name the file and the fix)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from pixelwise.data import (
    EpochSampler,
    SeededTransformDataset,
    SegmentationFolder,
    build_dataset,
    eval_transforms,
    pad_collate,
    train_transforms,
)
from pixelwise.data.palette import CAMVID_PALETTE
from pixelwise.errors import DatasetError


# -- helpers ---------------------------------------------------------------------------------------------------------
def _save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _write_dataset(root: Path, classes: list[str], splits: dict[str, list[tuple[str, np.ndarray, np.ndarray | None]]]):
    """A folder dataset from ``{split: [(id, image uint8 HxW[x3], mask uint8 HxW or None), ...]}``."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("".join(c + "\n" for c in classes))
    for split, items in splits.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        for id_, image, mask in items:
            _save(root / "images" / split / f"{id_}.png", image)
            if mask is not None:
                _save(root / "masks" / split / f"{id_}.png", mask)
    return root


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _binary_mask(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A 0/255 mask holding both values (a foreground blob on background)."""
    m = np.zeros((h, w), np.uint8)
    r = np.random.default_rng(seed)
    y, x = r.integers(2, h // 2), r.integers(2, w // 2)
    m[y : y + h // 3, x : x + w // 3] = 255
    return m


def _message(excinfo, *roots: Path) -> str:
    """The error message with the (tmp) dataset roots replaced, so digits in pytest's tmp paths cannot match."""
    msg = str(excinfo.value)
    for r in roots:
        msg = msg.replace(str(r), "<root>")
    return msg


# -- real CamVid -----------------------------------------------------------------------------------------------------
def test_camvid_train_split_metadata_and_first_item(camvid_dir):
    ds = SegmentationFolder(camvid_dir, "train")
    assert len(ds) == 367
    classes = [c.strip() for c in (camvid_dir / "classes.txt").read_text().splitlines() if c.strip()]
    assert ds.classes == classes and ds.num_classes == 11
    assert ds.in_channels == 3
    assert ds.has_masks
    assert ds.ignore_index == 255
    # CamVid's own colors, not the VOC map.
    assert tuple(ds.palette[0]) == (128, 128, 128)  # Sky
    assert [tuple(c) for c in ds.palette] == list(CAMVID_PALETTE)

    image, mask = ds[0]
    assert isinstance(image, tv_tensors.Image) and isinstance(mask, tv_tensors.Mask)
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 360, 480)
    assert mask.dtype == torch.int64 and tuple(mask.shape) == (360, 480)
    values = set(torch.unique(mask).tolist())
    assert values <= set(range(11)) | {255}
    assert values & set(range(11)), "the mask holds no class at all"
    # The mask is the file on disk, unchanged.
    first = (camvid_dir / "train.txt").read_text().split()[0]
    on_disk = np.array(Image.open(camvid_dir / "masks" / "train" / f"{first}.png"))
    assert np.array_equal(mask.numpy(), on_disk.astype(np.int64))


def test_camvid_slice_keeps_list_order_and_check_counts_pixels(camvid_dir):
    first5 = [line.strip() for line in (camvid_dir / "train.txt").read_text().splitlines() if line.strip()][:5]
    ds = SegmentationFolder(camvid_dir, "train[:5]")
    assert len(ds) == 5
    assert ds.ids == first5
    assert [s.image.stem for s in ds.samples] == first5

    stats = ds.check()
    class_pixels = np.zeros(11, np.int64)
    image_pixels = np.zeros(11, np.int64)
    non_void = 0
    for id_ in first5:
        m = np.array(Image.open(camvid_dir / "masks" / "train" / f"{id_}.png")).ravel()
        counts = np.bincount(m[m != 255], minlength=11)
        class_pixels += counts
        image_pixels[counts > 0] += m.size
        non_void += int((m != 255).sum())
    assert stats["class_pixels"].dtype == np.int64 and stats["class_pixels"].shape == (11,)
    assert int(stats["class_pixels"].sum()) == non_void
    assert np.array_equal(stats["class_pixels"], class_pixels)
    assert np.array_equal(stats["image_pixels"], image_pixels)


# -- real ISBI 2012 --------------------------------------------------------------------------------------------------
def test_isbi_slices_are_disjoint_and_cover_train(isbi_dir):
    full = SegmentationFolder(isbi_dir, "train")
    head = SegmentationFolder(isbi_dir, "train[:25]")
    tail = SegmentationFolder(isbi_dir, "train[25:]")
    assert full.in_channels == head.in_channels == 1
    assert full.classes == ["membrane", "cell"]
    assert len(full) == 30 and len(head) == 25 and len(tail) == 5
    assert tail.ids == ["25", "26", "27", "28", "29"]
    assert not set(head.ids) & set(tail.ids)
    assert head.ids + tail.ids == full.ids
    image, mask = tail[0]
    assert image.dtype == torch.uint8 and tuple(image.shape) == (1, 512, 512)
    assert tuple(mask.shape) == (512, 512) and set(torch.unique(mask).tolist()) <= {0, 1, 255}


def test_isbi_test_split_has_no_masks(isbi_dir):
    test = SegmentationFolder(isbi_dir, "test")
    assert len(test) == 30
    assert test.has_masks is False
    image, mask = test[0]
    assert mask is None and tuple(image.shape) == (1, 512, 512)
    with pytest.raises(DatasetError) as ei:
        SegmentationFolder(isbi_dir, "test", require_masks=True)
    msg = str(ei.value)
    assert "'test'" in msg and "no masks" in msg
    assert "predicted on" in msg and "evaluated" in msg
    with pytest.raises(DatasetError, match="no masks"):
        test.check()


# -- joint transforms ------------------------------------------------------------------------------------------------
def _coordinate_sample(h: int, w: int, seed: int = 0):
    """Random per-pixel class ids (with a void patch); the image encodes channel 0 = id * 40, channel 1 = row + 1,
    channel 2 = col + 1, so every output pixel tells where it came from and which class it must carry."""
    r = np.random.default_rng(seed)
    mask = r.integers(0, 5, (h, w))
    mask[:3, :4] = 255
    img = np.stack(
        [
            np.where(mask == 255, 250, mask * 40),
            np.repeat(np.arange(1, h + 1)[:, None], w, 1),
            np.repeat(np.arange(1, w + 1)[None], h, 0),
        ]
    ).astype(np.uint8)
    return tv_tensors.Image(torch.from_numpy(img)), tv_tensors.Mask(torch.from_numpy(mask.astype(np.int64))), mask


def _unnormalised(image: torch.Tensor) -> np.ndarray:
    return (image.as_subclass(torch.Tensor) * 255).round().long().numpy()


def test_train_transforms_flip_and_crop_keep_mask_aligned_exactly():
    h, w = 40, 52
    image, mask, mask_np = _coordinate_sample(h, w)
    tf = train_transforms((24, 32), (1.0, 1.0), mean=(0, 0, 0), std=(1, 1, 1), color_jitter=0)
    flipped = unflipped = 0
    origins = set()
    for seed in range(25):
        torch.manual_seed(seed)
        out_img, out_mask = tf(image, mask)
        assert isinstance(out_mask, tv_tensors.Mask) and out_mask.dtype == torch.int64
        assert out_img.dtype == torch.float32
        assert tuple(out_img.shape) == (3, 24, 32) and tuple(out_mask.shape) == (24, 32)
        v = _unnormalised(out_img)
        rows, cols = v[1] - 1, v[2] - 1
        assert rows.min() >= 0 and cols.min() >= 0, "a crop inside the image must not pad"
        # Every output pixel carries the mask value of the source pixel its image values came from.
        assert np.array_equal(out_mask.numpy(), mask_np[rows, cols])
        nonvoid = out_mask.numpy() != 255
        assert np.array_equal(v[0][nonvoid], out_mask.numpy()[nonvoid] * 40)
        # A crop is a contiguous window, either in order or mirrored left-right.
        assert np.all(np.diff(rows, axis=0) == 1)
        step = np.diff(cols, axis=1)
        assert np.all(step == 1) or np.all(step == -1)
        flipped += int(np.all(step == -1))
        unflipped += int(np.all(step == 1))
        origins.add((int(rows.min()), int(cols.min())))
    assert flipped and unflipped, "25 draws should include flipped and unflipped crops"
    assert len(origins) > 5, "crops should be taken at different places"


def test_train_transforms_pad_small_images_with_zero_and_void():
    h, w = 20, 30
    image, mask, mask_np = _coordinate_sample(h, w, seed=1)
    tf = train_transforms((40, 50), (1.0, 1.0), mean=(0, 0, 0), std=(1, 1, 1), color_jitter=0)
    for seed in range(10):
        torch.manual_seed(seed)
        out_img, out_mask = tf(image, mask)
        assert tuple(out_img.shape) == (3, 40, 50) and tuple(out_mask.shape) == (40, 50)
        v = _unnormalised(out_img)
        real = v[1] > 0  # rows are encoded from 1: 0 only in padding
        assert real.sum() == h * w, "the whole image must be inside a crop larger than it"
        pad = ~real
        assert np.all(out_mask.numpy()[pad] == 255), "padding must be void in the mask"
        assert np.all(v[:, pad] == 0), "padding must be 0 in the image"
        rows, cols = v[1][real] - 1, v[2][real] - 1
        assert np.array_equal(out_mask.numpy()[real], mask_np[rows, cols])
        # Each source pixel appears exactly once.
        assert len(set(zip(rows.tolist(), cols.tolist()))) == h * w


def test_train_transforms_with_random_scale_keep_blocks_aligned():
    # 16-pixel blocks of class ids: bilinear (image) and nearest (mask) resizing only disagree near block edges,
    # so the check is made where the mask is uniform over a 7x7 neighbourhood.
    block, nb = 16, 5
    r = np.random.default_rng(3)
    ids = r.integers(0, 5, (nb, nb))
    ids[2, 2] = 255
    mask_np = np.kron(ids, np.ones((block, block), np.int64))
    img = np.stack([np.where(mask_np == 255, 250, mask_np * 40)] * 3).astype(np.uint8)
    image = tv_tensors.Image(torch.from_numpy(img))
    mask = tv_tensors.Mask(torch.from_numpy(mask_np))
    tf = train_transforms((48, 56), (0.5, 2.0), mean=(0, 0, 0), std=(1, 1, 1), color_jitter=0)
    checked = 0
    for seed in range(20):
        torch.manual_seed(seed)
        out_img, out_mask = tf(image, mask)
        assert tuple(out_img.shape) == (3, 48, 56) and tuple(out_mask.shape) == (48, 56)
        assert set(torch.unique(out_mask).tolist()) <= set(range(5)) | {255}, "nearest resizing invents no ids"
        m = out_mask.numpy()
        v = _unnormalised(out_img)[0]
        k = 3
        pm = np.pad(m, k, constant_values=-1)
        uniform = np.ones_like(m, dtype=bool)
        for dy in range(-k, k + 1):
            for dx in range(-k, k + 1):
                uniform &= pm[k + dy : k + dy + m.shape[0], k + dx : k + dx + m.shape[1]] == m
        sel = uniform & (m != 255)
        assert np.all(np.abs(v[sel] - m[sel] * 40) <= 2), f"seed {seed}: image and mask are misaligned"
        checked += int(sel.sum())
    assert checked > 10000


def test_eval_transforms_leave_mask_untouched_and_normalise_image():
    image, mask, _ = _coordinate_sample(17, 23)
    mean, std = (0.2, 0.4, 0.6), (0.5, 0.25, 0.1)
    out_img, out_mask = eval_transforms(mean, std)(image, mask)
    assert out_mask.dtype == torch.int64
    assert torch.equal(out_mask.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor))
    assert out_img.dtype == torch.float32 and tuple(out_img.shape) == (3, 17, 23)
    expected = (image.as_subclass(torch.Tensor).float() / 255 - torch.tensor(mean)[:, None, None]) / torch.tensor(
        std
    )[:, None, None]
    assert torch.allclose(out_img.as_subclass(torch.Tensor), expected, atol=1e-5)
    # Image-only call (a split without masks).
    only = eval_transforms(mean, std)(image)
    assert torch.allclose(only.as_subclass(torch.Tensor), expected, atol=1e-5)


# -- batching and seeded sampling ------------------------------------------------------------------------------------
def test_pad_collate_pads_images_with_zero_and_masks_with_void():
    g = torch.Generator().manual_seed(0)
    im1, im2 = torch.rand(3, 10, 12, generator=g) + 1, torch.rand(3, 14, 9, generator=g) + 1
    m1, m2 = torch.randint(0, 5, (10, 12), generator=g), torch.randint(0, 5, (14, 9), generator=g)
    images, masks = pad_collate(
        [(tv_tensors.Image(im1), tv_tensors.Mask(m1)), (tv_tensors.Image(im2), tv_tensors.Mask(m2))]
    )
    assert tuple(images.shape) == (2, 3, 14, 12) and images.dtype == torch.float32
    assert tuple(masks.shape) == (2, 14, 12) and masks.dtype == torch.int64
    assert torch.equal(images[0, :, :10, :12], im1) and torch.equal(images[1, :, :14, :9], im2)
    assert torch.all(images[0, :, 10:, :] == 0) and torch.all(images[1, :, :, 9:] == 0)
    assert torch.equal(masks[0, :10, :12], m1) and torch.equal(masks[1, :14, :9], m2)
    assert torch.all(masks[0, 10:, :] == 255) and torch.all(masks[1, :, 9:] == 255)
    # Padded pixels are exactly the ones outside each sample.
    assert int((masks == 255).sum()) == 2 * 14 * 12 - 10 * 12 - 14 * 9
    # Another ignore_index is honoured.
    _, masks250 = pad_collate([(im1, m1), (im2, m2)], ignore_index=250)
    assert torch.all(masks250[0, 10:, :] == 250)


def test_pad_collate_without_masks_returns_none():
    images, masks = pad_collate([(torch.ones(1, 5, 6), None), (torch.ones(1, 7, 4), None)])
    assert masks is None
    assert tuple(images.shape) == (2, 1, 7, 6)
    assert torch.all(images[0, :, 5:] == 0) and torch.all(images[1, :, :, 4:] == 0)


def test_epoch_sampler_is_deterministic_per_seed_and_epoch():
    n = 50
    a, b = EpochSampler(n, seed=7), EpochSampler(n, seed=7)
    a.set_epoch(3)
    b.set_epoch(3)
    first, second = list(a), list(b)
    assert first == second == list(a)  # same (seed, epoch): the same order and the same per-sample seeds
    assert len(a) == n
    a.set_epoch(4)
    other_epoch = list(a)
    orders = [[i for i, _ in first], [i for i, _ in other_epoch]]
    for order in orders:
        assert sorted(order) == list(range(n))  # each epoch is a permutation
    assert orders[0] != orders[1]
    assert [s for _, s in first] != [s for _, s in other_epoch]
    assert len({s for _, s in first}) == n  # each position gets its own seed
    c = EpochSampler(n, seed=8)
    c.set_epoch(3)
    assert [i for i, _ in c] != orders[0]
    unshuffled = EpochSampler(n, seed=7, shuffle=False)
    assert [i for i, _ in unshuffled] == list(range(n))


class _ListDataset:
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_seeded_transform_dataset_is_reproducible_and_leaves_global_rng_alone():
    image, mask, _ = _coordinate_sample(40, 40)
    base = _ListDataset([(image, mask)])
    ds = SeededTransformDataset(base, train_transforms((24, 24), (0.5, 2.0), color_jitter=0.3))
    assert len(ds) == 1
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    i1, m1 = ds[(0, 99)]
    after = torch.get_rng_state()
    i2, m2 = ds[(0, 99)]
    assert torch.equal(after, state), "a seeded item must not advance the global torch RNG"
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(i1, i2) and torch.equal(m1, m2)
    i3, m3 = ds[(0, 100)]
    assert not (torch.equal(i1, i3) and torch.equal(m1, m3)), "another seed should give another augmentation"


# -- build_dataset -----------------------------------------------------------------------------------------------------
def test_build_dataset_synthetic_and_its_slices():
    ds = build_dataset("synthetic", "train")
    assert len(ds) == 200 and ds.num_classes == 5 and len(ds.classes) == 5
    with pytest.raises(DatasetError, match="cannot be sliced"):
        build_dataset("synthetic", "train[:5]")
    with pytest.raises(DatasetError, match="unknown split"):
        build_dataset("synthetic", "training")


def test_build_dataset_folder_and_list_order(tiny_dataset):
    ds = build_dataset(tiny_dataset, "val")
    assert isinstance(ds, SegmentationFolder) and len(ds) == 4 and ds.num_classes == 5
    # The order of <split>.txt is kept, and slicing follows it.
    ids = (tiny_dataset / "val.txt").read_text().split()
    (tiny_dataset / "val.txt").write_text("\n".join(reversed(ids)) + "\n")
    assert SegmentationFolder(tiny_dataset, "val").ids == ids[::-1]
    assert SegmentationFolder(tiny_dataset, "val[-2:]").ids == ids[::-1][-2:]
    # Without a list file the ids are the sorted file names.
    (tiny_dataset / "val.txt").unlink()
    assert SegmentationFolder(tiny_dataset, "val").ids == sorted(ids)
    with pytest.raises(DatasetError, match="bad split"):
        SegmentationFolder(tiny_dataset, "val[1]")


# -- bad input: mask values ------------------------------------------------------------------------------------------
def test_mask_value_out_of_range_names_file_and_value(tiny_dataset):
    ds = SegmentationFolder(tiny_dataset, "train")
    idx = 2
    path = tiny_dataset / "masks" / "train" / f"{ds.ids[idx]}.png"
    arr = np.array(Image.open(path))
    arr[5, 5] = 7
    Image.fromarray(arr).save(path)
    ds[idx - 1]  # the other items still load
    with pytest.raises(DatasetError) as ei:
        ds[idx]
    assert str(path) in str(ei.value)
    msg = _message(ei, tiny_dataset)
    assert re.search(r"\b7\b", msg) and "5 classes" in msg and "classes.txt" in msg
    with pytest.raises(DatasetError) as ei:
        SegmentationFolder(tiny_dataset, "train").check()
    assert str(path) in str(ei.value)
    assert re.search(r"\b7\b", _message(ei, tiny_dataset))


def _binary_dataset(root: Path, n: int = 3) -> Path:
    items = [(f"im{i}", _rgb(16, 20, i), _binary_mask(16, 20, i)) for i in range(n)]
    return _write_dataset(root, ["background", "foreground"], {"train": items, "val": items[:1]})


def test_binary_0_255_masks_are_called_out_by_check(tmp_path):
    root = _binary_dataset(tmp_path / "bin")
    ds = SegmentationFolder(root, "train")
    # Per item, 0/255 is legal with ignore_index 255 (class 0 and void) ...
    _, mask = ds[0]
    assert set(torch.unique(mask).tolist()) == {0, 255}
    # ... but across the whole split it is an unconverted binary image.
    with pytest.raises(DatasetError) as ei:
        ds.check()
    msg = str(ei.value)
    assert "0/255" in msg or "binary" in msg
    assert "mask // 255" in msg
    assert str(root / "masks") in msg


def test_binary_masks_with_another_ignore_index_fail_per_item(tmp_path):
    root = _binary_dataset(tmp_path / "bin")
    ds = SegmentationFolder(root, "train", ignore_index=250)
    with pytest.raises(DatasetError) as ei:
        ds[1]
    msg = str(ei.value)
    assert str(root / "masks" / "train" / "im1.png") in msg
    assert "mask // 255" in msg and ("0/255" in msg or "binary" in msg or "0 and 255" in msg)
    with pytest.raises(DatasetError) as ei:
        ds.check()
    assert "255" in _message(ei, root) and str(root / "masks" / "train") in str(ei.value)


def test_a_mix_of_class_ids_and_void_is_not_called_binary(tmp_path):
    items = []
    for i in range(2):
        m = _binary_mask(16, 20, i)
        m[0, :5] = 1  # a real class id besides 0 and void
        items.append((f"im{i}", _rgb(16, 20, i), m))
    root = _write_dataset(tmp_path / "ok", ["background", "foreground"], {"train": items})
    stats = SegmentationFolder(root, "train").check()
    assert stats["class_pixels"][1] == 10


def test_binary_masks_are_called_out_even_when_one_image_has_no_foreground(tmp_path):
    root = _binary_dataset(tmp_path / "bin", n=3)
    _save(root / "masks" / "train" / "im2.png", np.zeros((16, 20), np.uint8))
    with pytest.raises(DatasetError, match="mask // 255"):
        SegmentationFolder(root, "train").check()


# -- bad input: sizes, unreadable files, color masks -----------------------------------------------------------------
def test_image_and_mask_of_different_sizes(tiny_dataset):
    ds = SegmentationFolder(tiny_dataset, "train")
    idx = 3
    mask_path = ds.samples[idx].mask
    image_path = ds.samples[idx].image
    arr = np.array(Image.open(mask_path))
    Image.fromarray(arr[:40]).save(mask_path)  # 48 wide, 40 high
    for raise_it in (lambda: ds[idx], lambda: SegmentationFolder(tiny_dataset, "train").check()):
        with pytest.raises(DatasetError) as ei:
            raise_it()
        msg = str(ei.value)
        assert str(image_path) in msg and str(mask_path) in msg
        msg = _message(ei, tiny_dataset)
        assert "48x48" in msg and "48x40" in msg


def test_unreadable_image_is_named(tiny_dataset):
    ds = SegmentationFolder(tiny_dataset, "train")
    bad = ds.samples[4].image
    bad.write_bytes(b"not an image")
    with pytest.raises(DatasetError) as ei:
        ds[4]
    assert str(bad) in str(ei.value) and "cannot read" in str(ei.value)
    with pytest.raises(DatasetError) as ei:
        SegmentationFolder(tiny_dataset, "train").check()
    assert str(bad) in str(ei.value)


def test_unreadable_first_image_fails_when_opening_the_split(tiny_dataset):
    first = tiny_dataset / "images" / "train" / f"{(tiny_dataset / 'train.txt').read_text().split()[0]}.png"
    first.write_bytes(b"not an image")
    with pytest.raises(DatasetError) as ei:
        SegmentationFolder(tiny_dataset, "train")
    assert str(first) in str(ei.value)


def test_truncated_image_is_named(tiny_dataset):
    ds = SegmentationFolder(tiny_dataset, "val")
    bad = ds.samples[1].image
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(DatasetError) as ei:
        ds[1]
    assert str(bad) in str(ei.value)


def test_unreadable_mask_is_named(tiny_dataset):
    ds = SegmentationFolder(tiny_dataset, "val")
    bad = ds.samples[2].mask
    bad.write_bytes(b"not an image")
    with pytest.raises(DatasetError) as ei:
        ds[2]
    assert str(bad) in str(ei.value)


def test_rgb_color_mask_is_rejected(tiny_dataset):
    ds = SegmentationFolder(tiny_dataset, "train")
    path = ds.samples[1].mask
    arr = np.array(Image.open(path))
    Image.fromarray(np.stack([arr] * 3, axis=-1)).save(path)
    for raise_it in (lambda: ds[1], lambda: SegmentationFolder(tiny_dataset, "train").check()):
        with pytest.raises(DatasetError) as ei:
            raise_it()
        msg = str(ei.value)
        assert str(path) in msg and "color" in msg


# -- bad input: layout -----------------------------------------------------------------------------------------------
def test_empty_split(tiny_dataset):
    (tiny_dataset / "images" / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty") as ei:
        SegmentationFolder(tiny_dataset, "empty")
    assert str(tiny_dataset / "images" / "empty") in str(ei.value)
    # A slice that selects nothing is empty too.
    with pytest.raises(DatasetError, match="empty"):
        SegmentationFolder(tiny_dataset, "val[10:]")


def test_missing_dataset_folder(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as ei:
        SegmentationFolder(missing, "train")
    assert str(missing) in str(ei.value) and "does not exist" in str(ei.value)


def test_missing_split_lists_the_existing_ones(tiny_dataset):
    with pytest.raises(DatasetError) as ei:
        SegmentationFolder(tiny_dataset, "training")
    msg = str(ei.value)
    assert "'training'" in msg and str(tiny_dataset / "images" / "training") in msg
    assert "test, train, val" in msg


def test_missing_classes_txt(tiny_dataset):
    (tiny_dataset / "classes.txt").unlink()
    with pytest.raises(DatasetError) as ei:
        SegmentationFolder(tiny_dataset, "train")
    assert str(tiny_dataset / "classes.txt") in str(ei.value) and "one class name a line" in str(ei.value)


def test_listed_id_without_image(tiny_dataset):
    with open(tiny_dataset / "train.txt", "a") as f:
        f.write("ghost_0042\n")
    with pytest.raises(DatasetError) as ei:
        SegmentationFolder(tiny_dataset, "train")
    msg = str(ei.value)
    assert str(tiny_dataset / "train.txt") in msg and "'ghost_0042'" in msg


def test_image_without_mask(tiny_dataset):
    ds = SegmentationFolder(tiny_dataset, "val")
    lost = ds.samples[3]
    lost.mask.unlink()
    with pytest.raises(DatasetError) as ei:
        SegmentationFolder(tiny_dataset, "val")
    msg = str(ei.value)
    assert str(lost.image) in msg and str(lost.mask) in msg and "no mask" in msg


def test_split_without_masks_folder_can_be_read_but_not_required(tiny_dataset):
    shutil.rmtree(tiny_dataset / "masks" / "test")
    ds = SegmentationFolder(tiny_dataset, "test")
    assert not ds.has_masks and len(ds) == 4
    image, mask = ds[0]
    assert mask is None and tuple(image.shape) == (3, 48, 48)
    with pytest.raises(DatasetError, match="predicted on"):
        SegmentationFolder(tiny_dataset, "test", require_masks=True)


@pytest.mark.parametrize("ext", [".tif", ".bmp"])
def test_tif_and_bmp_images_are_read(tmp_path, ext):
    root = tmp_path / "tif"
    image = _rgb(16, 20, 0)
    mask = np.zeros((16, 20), np.uint8)
    mask[4:8, 4:8] = 1
    _save(root / "images" / "train" / f"a{ext}", image)
    _save(root / "masks" / "train" / "a.png", mask)
    (root / "classes.txt").write_text("background\nthing\n")
    ds = SegmentationFolder(root, "train")  # the layout accepts .tif/.tiff/.bmp images besides .jpg/.png
    assert ds.check()["class_pixels"].tolist() == [16 * 20 - 16, 16]
    img, m = ds[0]
    assert np.array_equal(img.permute(1, 2, 0).numpy(), image)
    assert np.array_equal(m.numpy(), mask)


def test_16_bit_grayscale_images_are_scaled_to_8_bits(tmp_path):
    root = tmp_path / "g16"
    image = (np.arange(16 * 20, dtype=np.uint16).reshape(16, 20) * 200).astype(np.uint16)
    _save(root / "images" / "train" / "a.png", image)
    _save(root / "masks" / "train" / "a.png", np.zeros((16, 20), np.uint8))
    (root / "classes.txt").write_text("background\nthing\n")
    ds = SegmentationFolder(root, "train")
    assert ds.in_channels == 1
    img, _ = ds[0]
    assert img.dtype == torch.uint8 and tuple(img.shape) == (1, 16, 20)
    assert np.abs(img[0].numpy().astype(int) - np.round(image / 257.0).astype(int)).max() <= 1


# -- decoding: torchvision.io for JPEGs, Pillow for the rest --------------------------------------------------------
def test_torchvision_decoding_gives_pillows_pixels_on_camvid_val_and_isbi(camvid_dir, isbi_dir):
    from pixelwise.data import io as data_io

    checked = {"jpeg": 0, "other": 0}
    for root, split in ((camvid_dir, "val"), (isbi_dir, "train")):
        ds = SegmentationFolder(root, split)
        for s in ds.samples:
            fast = data_io.read_image(s.image, ds.in_channels)
            slow = data_io._read_image_pillow(s.image, ds.in_channels)
            assert fast.dtype == slow.dtype == torch.uint8 and torch.equal(fast, slow), s.image
            # The comparison only means something where the fast path was taken: every JPEG, nothing else.
            is_jpeg = s.image.suffix.lower() in (".jpg", ".jpeg")
            assert (data_io._decode_fast(s.image) is not None) == is_jpeg, s.image
            checked["jpeg" if is_jpeg else "other"] += 1
    assert checked["jpeg"] == 101 and checked["other"] == len(ds)


@pytest.mark.parametrize("mode", ["RGBA", "P", "LA", "I;16"])
def test_files_torchvision_does_not_take_go_through_pillow(tmp_path, mode):
    from pixelwise.data import io as data_io

    rgb = _rgb(6, 7, 3)
    im = Image.fromarray(rgb)
    im = im.convert(mode) if mode != "I;16" else Image.fromarray((rgb[..., 0].astype(np.uint16) * 257))
    path = tmp_path / "a.png"
    im.save(path)
    assert data_io._decode_fast(path) is None
    channels = 1 if mode in ("LA", "I;16") else 3
    assert torch.equal(data_io.read_image(path, channels), data_io._read_image_pillow(path, channels))


def test_palette_mask_is_read_as_indices_not_colors(tmp_path):
    from pixelwise.data import io as data_io

    ids = np.array([[0, 1, 2], [2, 1, 255]], np.uint8)
    im = Image.fromarray(ids, mode="P")
    im.putpalette([v for i in range(256) for v in (i * 7 % 256, 200, 10)])
    im.save(tmp_path / "m.png")
    assert np.array_equal(data_io.read_mask_array(tmp_path / "m.png"), ids)


def test_gray_model_on_rgb_jpeg_converts_like_pillow(tmp_path):
    from pixelwise.data import io as data_io

    path = tmp_path / "a.jpg"
    Image.fromarray(_rgb(16, 16, 1)).save(path, quality=95)
    gray = data_io.read_image(path, 1)  # torchvision decodes 3 channels, so this falls back to Pillow's L conversion
    assert gray.shape == (1, 16, 16) and torch.equal(gray, data_io._read_image_pillow(path, 1))


def test_truncated_jpeg_is_named_even_though_torchvision_reads_it_first(tmp_path):
    from pixelwise.data import io as data_io

    path = tmp_path / "cut.jpg"
    Image.fromarray(_rgb(64, 64, 2)).save(path, quality=90)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DatasetError, match=re.escape(str(path))):
        data_io.read_image(path)
