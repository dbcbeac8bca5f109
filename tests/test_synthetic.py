"""Tests of the built-in synthetic dataset (pixelwise.data.synthetic.SyntheticShapes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from pixelwise.data.synthetic import SyntheticShapes
from pixelwise.errors import DatasetError


def test_item_types_shapes_and_dtypes():
    ds = SyntheticShapes("train", num_images=3)
    image, mask = ds[0]
    assert isinstance(image, tv_tensors.Image)
    assert isinstance(mask, tv_tensors.Mask)
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 128, 128)
    assert mask.dtype == torch.int64 and tuple(mask.shape) == (128, 128)
    assert len(ds) == 3
    assert ds.ids == ["synthetic_train_0000", "synthetic_train_0001", "synthetic_train_0002"]


def test_attributes_and_default_lengths():
    ds = SyntheticShapes()
    assert ds.classes == ["background", "disk", "square", "triangle", "ring"]
    assert ds.num_classes == 5
    assert ds.ignore_index == 255
    assert ds.in_channels == 3
    assert len(ds.palette) == 5 and len(set(ds.palette)) == 5
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in ds.palette)
    assert (len(SyntheticShapes("train")), len(SyntheticShapes("val")), len(SyntheticShapes("test"))) == (200, 40, 40)
    assert len(ds.ids) == len(set(ds.ids)) == 200


def test_same_seed_gives_identical_tensors_in_any_order():
    a = SyntheticShapes("train", num_images=5, seed=3)
    b = SyntheticShapes("train", num_images=10, seed=3)  # the length does not change the images
    for i in (4, 0, 2):
        (ia, ma), (ib, mb) = a[i], b[i]
        assert torch.equal(ia, ib) and torch.equal(ma, mb)
    # Repeated access gives the same item again.
    assert torch.equal(a[1][0], a[1][0])


def test_different_seeds_splits_and_indices_differ():
    base = SyntheticShapes("train", num_images=2, seed=0)
    other_seed = SyntheticShapes("train", num_images=2, seed=1)
    val = SyntheticShapes("val", num_images=2, seed=0)
    test = SyntheticShapes("test", num_images=2, seed=0)
    image = base[0][0]
    assert not torch.equal(image, other_seed[0][0])
    assert not torch.equal(image, val[0][0])
    assert not torch.equal(val[0][0], test[0][0])
    assert not torch.equal(image, base[1][0])


def test_every_class_appears_in_first_50_training_images_and_void_is_present():
    ds = SyntheticShapes("train", num_images=50)
    seen: set[int] = set()
    void_pixels = 0
    for i in range(50):
        mask = ds[i][1].numpy()
        values = set(np.unique(mask).tolist())
        assert values <= {0, 1, 2, 3, 4, 255}
        seen |= values
        void_pixels += int((mask == 255).sum())
    assert seen == {0, 1, 2, 3, 4, 255}
    assert void_pixels > 0


def test_void_band_surrounds_shapes():
    # Shape pixels never touch background pixels directly inside the image: a void band lies between them.
    ds = SyntheticShapes("val", num_images=5)
    for i in range(5):
        mask = ds[i][1].numpy()
        for a, b in ((mask[1:, :], mask[:-1, :]), (mask[:, 1:], mask[:, :-1])):
            touching = ((a == 0) & (b != 0) & (b != 255)) | ((b == 0) & (a != 0) & (a != 255))
            assert not touching.any()


def test_non_square_image_size():
    ds = SyntheticShapes("test", num_images=4, image_size=(96, 160), seed=7)
    for i in range(4):
        image, mask = ds[i]
        assert tuple(image.shape) == (3, 96, 160)
        assert tuple(mask.shape) == (96, 160)
        assert set(np.unique(mask.numpy()).tolist()) <= {0, 1, 2, 3, 4, 255}
    assert (mask.numpy() != 0).any()


def test_image_is_textured_not_flat():
    image = SyntheticShapes(num_images=1)[0][0].numpy()
    assert image.std() > 5


def test_render_matches_getitem():
    ds = SyntheticShapes(num_images=2)
    array, mask = ds.render(1)
    image, mask_t = ds[1]
    assert array.dtype == np.uint8 and array.shape == (128, 128, 3)
    assert np.array_equal(array.transpose(2, 0, 1), image.numpy())
    assert np.array_equal(mask, mask_t.numpy())


def test_index_errors():
    ds = SyntheticShapes("val", num_images=3)
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(IndexError):
        ds[-4]
    assert torch.equal(ds[-1][1], ds[2][1])


def test_unknown_split_lists_valid_ones():
    with pytest.raises(DatasetError, match="train, val, test"):
        SyntheticShapes("validation")


@pytest.mark.parametrize(
    "kwargs",
    [{"num_images": 0}, {"image_size": (8, 128)}, {"image_size": (128,)}, {"seed": -1}],
)
def test_bad_arguments(kwargs):
    with pytest.raises(DatasetError):
        SyntheticShapes(**kwargs)


def test_works_with_dataloader():
    ds = SyntheticShapes(num_images=4, image_size=(32, 48))
    images, masks = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert tuple(images.shape) == (4, 3, 32, 48) and images.dtype == torch.uint8
    assert tuple(masks.shape) == (4, 32, 48) and masks.dtype == torch.int64
