"""Cross-entropy with ignore_index and class weights, and median-frequency weights, against values by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

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


# ---- Dice, focal, Lovász-softmax, OHEM: each against a tiny example worked by hand ------------------------------

# One image, 2 classes, 1x4 pixels; the last pixel is void. Softmax of (a, 0) for class 0 is sigmoid(a).
LOGITS = torch.tensor([[[[math.log(3.0), 0.0, math.log(1 / 4), 7.0]], [[0.0, 0.0, 0.0, 0.0]]]])
TARGET = torch.tensor([[[0, 1, 1, 255]]])
# Probabilities of class 0 at the three valid pixels: 3/4, 1/2, 1/5; class 1: 1/4, 1/2, 4/5.
P0 = [0.75, 0.5, 0.2]


def test_dice_by_hand():
    from pixelwise.losses import DiceLoss

    # class 0: target (1, 0, 0); intersection 0.75, cardinality (0.75+0.5+0.2) + 1 = 2.45
    # class 1: target (0, 1, 1); intersection 0.5+0.8 = 1.3, cardinality (0.25+0.5+0.8) + 2 = 3.55
    d0 = (2 * 0.75 + 1) / (2.45 + 1)
    d1 = (2 * 1.3 + 1) / (3.55 + 1)
    assert DiceLoss()(LOGITS, TARGET).item() == pytest.approx(((1 - d0) + (1 - d1)) / 2, abs=1e-6)
    assert DiceLoss(smooth=0)(LOGITS, TARGET).item() == pytest.approx(
        ((1 - 1.5 / 2.45) + (1 - 2.6 / 3.55)) / 2, abs=1e-6)
    weighted = DiceLoss(class_weights=[1.0, 3.0])(LOGITS, TARGET).item()
    assert weighted == pytest.approx((1 * (1 - d0) + 3 * (1 - d1)) / 4, abs=1e-6)


def test_focal_by_hand_and_gamma_zero_is_cross_entropy():
    from pixelwise.losses import FocalLoss

    p_true = [0.75, 0.5, 0.8]
    by_hand = sum(-((1 - p) ** 2) * math.log(p) for p in p_true) / 3
    assert FocalLoss(gamma=2)(LOGITS, TARGET).item() == pytest.approx(by_hand, abs=1e-6)
    w = [2.0, 0.5]
    weighted = (2 * -(0.25**2) * math.log(0.75) + 0.5 * -(0.5**2) * math.log(0.5)
                + 0.5 * -(0.2**2) * math.log(0.8)) / (2 + 0.5 + 0.5)
    assert FocalLoss(gamma=2, class_weights=w)(LOGITS, TARGET).item() == pytest.approx(weighted, abs=1e-6)
    torch.manual_seed(0)
    logits, target = torch.randn(2, 5, 6, 7), torch.randint(0, 5, (2, 6, 7))
    target[0, :2] = 255
    torch.testing.assert_close(FocalLoss(gamma=0, class_weights=[1, 2, 3, 4, 5])(logits, target),
                               CrossEntropyLoss(class_weights=[1, 2, 3, 4, 5])(logits, target))


def test_lovasz_by_hand():
    from pixelwise.losses import LovaszSoftmaxLoss, lovasz_jaccard_gradient

    # Class 0: errors |y - p| = (0.25, 0.5, 0.2), truth (1, 0, 0). Sorted by error: 0.5 (truth 0), 0.25 (1), 0.2 (0).
    # Jaccard loss of marking the first i pixels as errors: J1 = 1 - 1/2 = 0.5, J2 = 1 - 0/2 = 1, J3 = 1 - 0/3 = 1,
    # gradient (0.5, 0.5, 0) -> loss 0.5*0.5 + 0.25*0.5 = 0.375.
    torch.testing.assert_close(lovasz_jaccard_gradient(torch.tensor([0.0, 1.0, 0.0])), torch.tensor([0.5, 0.5, 0.0]))
    # Class 1: errors (0.25, 0.5, 0.2), truth (0, 1, 1). Sorted: 0.5 (1), 0.25 (0), 0.2 (1).
    # J1 = 1 - 1/2 = 0.5, J2 = 1 - 1/3 = 2/3, J3 = 1 - 0/3 = 1 -> gradient (0.5, 1/6, 1/3)
    # loss 0.5*0.5 + 0.25/6 + 0.2/3.
    loss1 = 0.25 + 0.25 / 6 + 0.2 / 3
    assert LovaszSoftmaxLoss()(LOGITS, TARGET).item() == pytest.approx((0.375 + loss1) / 2, abs=1e-6)
    assert LovaszSoftmaxLoss(class_weights=[3.0, 1.0])(LOGITS, TARGET).item() == pytest.approx(
        (3 * 0.375 + loss1) / 4, abs=1e-6)


def test_lovasz_on_one_hot_predictions_is_one_minus_iou():
    # The Lovász extension agrees with the set function at the cube's vertices: a hard prediction's loss is
    # 1 - IoU per class, so the mean over present classes is 1 - mIoU (checked against our metrics).
    from pixelwise.losses import LovaszSoftmaxLoss
    from pixelwise.metrics import SegmentationMetrics

    torch.manual_seed(1)
    target = torch.randint(0, 4, (2, 8, 9))
    target[1, :3] = 255
    prediction = torch.where(torch.rand(2, 8, 9) < 0.6, target.clamp(max=3), torch.randint(0, 4, (2, 8, 9)))
    logits = F.one_hot(prediction, 4).permute(0, 3, 1, 2).float() * 100.0  # softmax is one-hot to float precision
    metrics = SegmentationMetrics(4, ignore_index=255)
    metrics.update(prediction, target)
    miou = metrics.compute()["mIoU"]
    loss = LovaszSoftmaxLoss(classes="all")(logits, target).item()
    assert loss == pytest.approx(1 - miou, abs=1e-5)


def test_ohem_keeps_the_hardest_pixels():
    from pixelwise.losses import OhemCrossEntropyLoss

    nll = [-math.log(0.75), -math.log(0.5), -math.log(0.8)]  # hardest: pixel 1, then 0, then 2
    assert OhemCrossEntropyLoss(keep=1)(LOGITS, TARGET).item() == pytest.approx(nll[1], abs=1e-6)
    assert OhemCrossEntropyLoss(keep=2)(LOGITS, TARGET).item() == pytest.approx((nll[1] + nll[0]) / 2, abs=1e-6)
    assert OhemCrossEntropyLoss(keep=0.34)(LOGITS, TARGET).item() == pytest.approx(nll[1], abs=1e-6)  # 1 of 3
    # threshold 0.78: every pixel whose true-class probability is below it (0.75 and 0.5) is kept as well.
    assert OhemCrossEntropyLoss(keep=1, threshold=0.78)(LOGITS, TARGET).item() == pytest.approx(
        (nll[0] + nll[1]) / 2, abs=1e-6)
    weighted = OhemCrossEntropyLoss(keep=2, class_weights=[3.0, 1.0])(LOGITS, TARGET).item()
    assert weighted == pytest.approx((3 * nll[0] + 1 * nll[1]) / 4, abs=1e-6)
    # Gradient flows only to the kept pixels.
    logits = LOGITS.clone().requires_grad_()
    OhemCrossEntropyLoss(keep=1)(logits, TARGET).backward()
    assert logits.grad[0, :, 0, 1].abs().sum() > 0
    assert logits.grad[0, :, 0, [0, 2, 3]].abs().sum() == 0


@pytest.mark.parametrize("name", ["dice", "focal", "lovasz", "ohem", "cross_entropy+dice"])
def test_new_losses_all_void_errors_and_gradients(name):
    from pixelwise.losses import build_loss

    loss_fn = build_loss(name, ignore_index=255)
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = loss_fn(logits, torch.full((2, 4, 4), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))
    with pytest.raises(ValueError, match="do not match"):
        loss_fn(torch.randn(1, 3, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="outside 0..2"):
        loss_fn(torch.randn(1, 3, 4, 4), torch.full((1, 4, 4), 7))
    # A training signal: a gradient step lowers the loss on random data.
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 5, requires_grad=True)
    target = torch.randint(0, 3, (2, 5, 5))
    before = loss_fn(logits, target)
    before.backward()
    with torch.no_grad():
        after = loss_fn(logits - 0.5 * logits.grad, target)
    assert torch.isfinite(logits.grad).all() and after < before


def test_build_loss_errors():
    from pixelwise.losses import build_loss

    with pytest.raises(ValueError, match="unknown loss 'dicee'.*cross_entropy, dice"):
        build_loss("dicee")
    with pytest.raises(ValueError, match="gamma.*not accepted"):
        build_loss("dice", gamma=2.0)
    with pytest.raises(ValueError, match="keep"):
        build_loss("ohem", keep=1.5)
