"""Cross-entropy with ignore_index and class weights, and median-frequency weights, against values by hand."""

from __future__ import annotations

import math

import pytest
import torch

from pixelwise.losses import CrossEntropyLoss, median_frequency_weights


def test_cross_entropy_is_mean_nll_over_non_void_pixels():
    # 1 image, 2 classes, 1x3 pixels; the middle pixel is void.
    logits = torch.tensor([[[[2.0, 0.0, 1.0]], [[0.0, 5.0, 1.0]]]])
    target = torch.tensor([[[0, 255, 1]]])
    by_hand = (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(0.5)) / 2
    assert CrossEntropyLoss()(logits, target).item() == pytest.approx(by_hand, abs=1e-6)


def test_class_weights_weight_the_mean():
    logits = torch.tensor([[[[2.0, 1.0]], [[0.0, 1.0]]]])
    target = torch.tensor([[[0, 1]]])
    nll0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    nll1 = -math.log(0.5)
    w = [1.0, 3.0]
    loss = CrossEntropyLoss(class_weights=w)(logits, target).item()
    assert loss == pytest.approx((1 * nll0 + 3 * nll1) / (1 + 3), abs=1e-6)


def test_all_void_batch_gives_zero_loss_and_zero_gradient():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = CrossEntropyLoss()(logits, torch.full((2, 4, 4), 255))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="do not match"):
        CrossEntropyLoss()(torch.randn(1, 3, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long))


def test_median_frequency_weights_by_hand():
    # Class 0 fills 60 of the 100 pixels of the images it is in, class 1 20 of 100, class 2 10 of 50, class 3 none.
    class_pixels = [60, 20, 10, 0]
    image_pixels = [100, 100, 50, 0]
    freq = [0.6, 0.2, 0.2]
    median = 0.2
    w = median_frequency_weights(class_pixels, image_pixels)
    assert w.tolist() == pytest.approx([median / freq[0], median / freq[1], median / freq[2], 0.0])


def test_median_frequency_weights_errors():
    with pytest.raises(ValueError, match="length"):
        median_frequency_weights([1, 2], [3])
    with pytest.raises(ValueError, match="no class"):
        median_frequency_weights([0, 0], [0, 0])


def test_median_frequency_on_camvid_favours_rare_classes(camvid_dir):
    from pixelwise.data import SegmentationFolder

    ds = SegmentationFolder(camvid_dir, "train")
    stats = ds.check()
    w = median_frequency_weights(stats["class_pixels"], stats["image_pixels"])
    names = ds.classes
    # SegNet's published CamVid weights rank Road lowest and Bicyclist / SignSymbol / Pedestrian / Pole highest.
    assert names[int(w.argmin())] == "Road"
    top4 = {names[i] for i in w.argsort(descending=True)[:4].tolist()}
    assert top4 == {"Bicyclist", "SignSymbol", "Pedestrian", "Pole"}
    assert float(w[names.index("Pavement")]) == pytest.approx(1.0, abs=0.15)
