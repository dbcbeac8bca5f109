"""Tests of pixelwise.metrics: agreement with torchmetrics, a hand-computed example, the absent-class
convention, input validation and the table helper."""

from __future__ import annotations

import math

import pytest
import torch

from pixelwise.metrics import SegmentationMetrics, format_table

VOID = 255


def _random_batch(gen: torch.Generator, k: int, n: int = 2, h: int = 16, w: int = 16, void_frac: float = 0.05):
    target = torch.randint(0, k, (n, h, w), generator=gen)
    # Predictions agree with the target most of the time so that IoUs are not all tiny.
    noise = torch.randint(0, k, (n, h, w), generator=gen)
    keep = torch.rand(n, h, w, generator=gen) < 0.6
    preds = torch.where(keep, target, noise)
    target[torch.rand(n, h, w, generator=gen) < void_frac] = VOID
    return preds, target


def _assert_per_class(ours: list[float], oracle: torch.Tensor, defined: torch.Tensor) -> None:
    """Equal where our value is defined; NaN exactly where `defined` is False."""
    ours_t = torch.tensor(ours, dtype=torch.float64)
    assert torch.equal(~ours_t.isnan(), defined)
    torch.testing.assert_close(ours_t[defined], oracle.double()[defined], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", [2, 5, 11, 21])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_torchmetrics_streaming(k: int, seed: int) -> None:
    tmc = pytest.importorskip("torchmetrics.classification")
    gen = torch.Generator().manual_seed(seed)
    # Small images with K=21 leave some classes out of a batch, which exercises the absent-class paths.
    h = 4 if seed == 2 else 16
    oracles = {
        "cm": tmc.MulticlassConfusionMatrix(num_classes=k, ignore_index=VOID),
        "iou": tmc.MulticlassJaccardIndex(num_classes=k, ignore_index=VOID, average=None),
        "miou": tmc.MulticlassJaccardIndex(num_classes=k, ignore_index=VOID, average="macro"),
        "pa": tmc.MulticlassAccuracy(num_classes=k, ignore_index=VOID, average="micro"),
        "acc": tmc.MulticlassAccuracy(num_classes=k, ignore_index=VOID, average=None),
        "macc": tmc.MulticlassAccuracy(num_classes=k, ignore_index=VOID, average="macro"),
        "f1": tmc.MulticlassF1Score(num_classes=k, ignore_index=VOID, average=None),
        "prec": tmc.MulticlassPrecision(num_classes=k, ignore_index=VOID, average=None),
    }
    streamed = SegmentationMetrics(k, ignore_index=VOID)
    batches = [_random_batch(gen, k, h=h, w=h) for _ in range(3)]
    for preds, target in batches:
        streamed.update(preds, target)
        for oracle in oracles.values():
            oracle.update(preds, target)
    res = streamed.compute()

    # Streaming must equal one update over everything.
    whole = SegmentationMetrics(k, ignore_index=VOID)
    whole.update(torch.cat([p for p, _ in batches]), torch.cat([t for _, t in batches]))
    assert whole.compute()["confusion_matrix"] == res["confusion_matrix"]

    cm = oracles["cm"].compute()
    assert torch.equal(streamed.confusion_matrix, cm.long())
    assert res["confusion_matrix"] == cm.tolist()
    num_valid = sum(int((t != VOID).sum()) for _, t in batches)
    assert res["num_pixels"] == num_valid

    gt_support = cm.sum(1) > 0
    pred_support = cm.sum(0) > 0
    present = gt_support | pred_support

    _assert_per_class(res["IoU"], oracles["iou"].compute(), present)
    _assert_per_class(res["Dice"], oracles["f1"].compute(), present)
    _assert_per_class(res["accuracy"], oracles["acc"].compute(), gt_support)
    _assert_per_class(res["precision"], oracles["prec"].compute(), pred_support)

    # torchmetrics' macro Jaccard excludes exactly the classes absent from both, like ours.
    assert res["mIoU"] == pytest.approx(float(oracles["miou"].compute()), rel=1e-5)
    assert res["pixel_accuracy"] == pytest.approx(float(oracles["pa"].compute()), rel=1e-5)
    # torchmetrics' macro accuracy counts predicted-but-absent classes as 0; ours leaves them out.
    recall = oracles["acc"].compute().double()
    assert res["mean_accuracy"] == pytest.approx(float(recall[gt_support].mean()), rel=1e-5)
    if bool(gt_support.all()):
        assert res["mean_accuracy"] == pytest.approx(float(oracles["macc"].compute()), rel=1e-5)
    dice = oracles["f1"].compute().double()
    assert res["dice"] == pytest.approx(float(dice[present].mean()), rel=1e-5)

    freq = cm.double().sum(1) / cm.sum()
    expected_fw = float((freq * oracles["iou"].compute().double()).sum())
    assert res["fwIoU"] == pytest.approx(expected_fw, rel=1e-5)


def test_hand_computed_example() -> None:
    # (target, pred) pairs: (0,0) (0,0) (0,1) | (1,1) (1,2) (2,2) | (2,0) void (0,0)
    target = torch.tensor([[[0, 0, 0], [1, 1, 2], [2, VOID, 0]]], dtype=torch.uint8)
    preds = torch.tensor([[[0, 0, 1], [1, 2, 2], [0, 1, 0]]])
    m = SegmentationMetrics(3)
    m.update(preds, target)
    res = m.compute()

    assert res["confusion_matrix"] == [[3, 1, 0], [0, 1, 1], [1, 0, 1]]
    assert res["num_pixels"] == 8
    assert res["pixel_accuracy"] == pytest.approx(5 / 8)
    assert res["accuracy"] == pytest.approx([3 / 4, 1 / 2, 1 / 2])
    assert res["mean_accuracy"] == pytest.approx(7 / 12)
    assert res["IoU"] == pytest.approx([3 / 5, 1 / 3, 1 / 3])
    assert res["mIoU"] == pytest.approx(19 / 45)
    # Class 0 has half the pixels, so its higher IoU weighs more than in the plain mean.
    assert res["fwIoU"] == pytest.approx(4 / 8 * 3 / 5 + 2 / 8 * 1 / 3 + 2 / 8 * 1 / 3)
    assert res["fwIoU"] == pytest.approx(7 / 15)
    assert res["Dice"] == pytest.approx([3 / 4, 1 / 2, 1 / 2])
    assert res["dice"] == pytest.approx(7 / 12)
    assert res["precision"] == pytest.approx([3 / 4, 1 / 2, 1 / 2])


def test_absent_classes() -> None:
    # Class 2 is predicted but never in the target; class 3 appears nowhere.
    target = torch.tensor([[0, 0, 1, 1]])
    preds = torch.tensor([[0, 2, 1, 1]])
    m = SegmentationMetrics(4)
    m.update(preds, target)
    res = m.compute()

    assert res["IoU"][:3] == pytest.approx([1 / 2, 1.0, 0.0])
    assert math.isnan(res["IoU"][3])
    assert res["mIoU"] == pytest.approx((1 / 2 + 1.0 + 0.0) / 3)
    assert res["Dice"][:3] == pytest.approx([2 / 3, 1.0, 0.0])
    assert math.isnan(res["Dice"][3])
    assert res["dice"] == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)
    assert res["accuracy"][:2] == pytest.approx([1 / 2, 1.0])
    assert math.isnan(res["accuracy"][2]) and math.isnan(res["accuracy"][3])
    assert res["mean_accuracy"] == pytest.approx(3 / 4)
    assert res["precision"][2] == 0.0 and math.isnan(res["precision"][3])
    assert res["fwIoU"] == pytest.approx(2 / 4 * 1 / 2 + 2 / 4 * 1.0)


def test_empty_and_all_void_give_nan() -> None:
    m = SegmentationMetrics(3)
    m.update(torch.tensor([[1, 2]]), torch.tensor([[VOID, VOID]]))
    res = m.compute()
    assert res["num_pixels"] == 0
    for key in ("pixel_accuracy", "mean_accuracy", "mIoU", "fwIoU", "dice"):
        assert math.isnan(res[key]), key
    assert all(math.isnan(v) for v in res["IoU"])


def test_target_out_of_range_raises_naming_value() -> None:
    m = SegmentationMetrics(5)
    target = torch.tensor([[0, 1, 7, VOID]])
    with pytest.raises(ValueError, match=r"7") as info:
        m.update(torch.zeros_like(target), target)
    assert "num_classes=5" in str(info.value)
    assert int(m.confusion_matrix.sum()) == 0  # nothing half-counted


def test_negative_target_raises_without_ignore_index() -> None:
    m = SegmentationMetrics(3, ignore_index=None)
    with pytest.raises(ValueError, match=r"-1"):
        m.update(torch.tensor([0, 1]), torch.tensor([0, -1]))
    with pytest.raises(ValueError, match=r"255"):
        m.update(torch.tensor([0, 1]), torch.tensor([0, VOID]))


def test_values_beyond_int32_are_not_wrapped_into_a_class() -> None:
    """The fast path counts in int32; 2**32 + 1 would wrap to class 1 there. It must be reported, not counted."""
    m = SegmentationMetrics(3)
    with pytest.raises(ValueError, match="4294967297"):
        m.update(torch.tensor([0, 1]), torch.tensor([0, 2**32 + 1]))
    with pytest.raises(ValueError, match="4294967296"):
        m.update(torch.tensor([2**32, 1]), torch.tensor([0, 1]))
    assert int(m.confusion_matrix.sum()) == 0


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.int64])
def test_any_integer_dtype_counts_the_same_and_leaves_the_inputs_alone(dtype) -> None:
    gen = torch.Generator().manual_seed(7)
    preds, target = _random_batch(gen, 11)
    expected = SegmentationMetrics(11)
    expected.update(preds, target)
    p, t = preds.to(dtype), target.to(dtype)
    p0, t0 = p.clone(), t.clone()
    m = SegmentationMetrics(11)
    m.update(p, t)
    assert torch.equal(m.confusion_matrix, expected.confusion_matrix)
    assert torch.equal(p, p0) and torch.equal(t, t0)  # void pixels were not zeroed in the caller's tensors
    # The int64 path gives the same counts (hand check: one bincount over the non-void pixels).
    valid = target != VOID
    oracle = torch.bincount(target[valid] * 11 + preds[valid], minlength=121).reshape(11, 11)
    assert torch.equal(m.confusion_matrix, oracle)


def test_negative_ignore_index() -> None:
    m = SegmentationMetrics(3, ignore_index=-100)
    m.update(torch.tensor([0, 2, 1]), torch.tensor([0, -100, 1]))
    assert m.confusion_matrix.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]


def test_pred_out_of_range_raises() -> None:
    m = SegmentationMetrics(3)
    with pytest.raises(ValueError, match=r"\b3\b"):
        m.update(torch.tensor([[0, 3]]), torch.tensor([[0, 1]]))


def test_shape_mismatch_raises_with_both_shapes() -> None:
    m = SegmentationMetrics(3)
    with pytest.raises(ValueError, match=r"\(2, 4, 4\).*\(2, 4, 5\)"):
        m.update(torch.zeros(2, 4, 4, dtype=torch.long), torch.zeros(2, 4, 5, dtype=torch.long))


def test_invalid_num_classes_raises() -> None:
    with pytest.raises(ValueError):
        SegmentationMetrics(0)


def test_logits_equal_argmax() -> None:
    gen = torch.Generator().manual_seed(3)
    k = 5
    logits = torch.randn(2, k, 8, 8, generator=gen)
    _, target = _random_batch(gen, k, n=2, h=8, w=8)
    from_logits = SegmentationMetrics(k)
    from_logits.update(logits, target)
    from_labels = SegmentationMetrics(k)
    from_labels.update(logits.argmax(dim=1), target)
    assert torch.equal(from_logits.confusion_matrix, from_labels.confusion_matrix)
    assert int(from_logits.confusion_matrix.sum()) == int((target != VOID).sum())

    with pytest.raises(ValueError, match="channels"):
        from_logits.update(torch.randn(2, k + 1, 8, 8), target)


def test_reset_clears() -> None:
    m = SegmentationMetrics(3)
    m.update(torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1, 1]]))
    assert int(m.confusion_matrix.sum()) == 3
    m.reset()
    assert int(m.confusion_matrix.sum()) == 0
    m.update(torch.tensor([[2]]), torch.tensor([[2]]))
    assert m.compute()["confusion_matrix"] == [[0, 0, 0], [0, 0, 0], [0, 0, 1]]


def test_merge_and_all_reduce_without_distributed() -> None:
    a, b = SegmentationMetrics(3), SegmentationMetrics(3)
    a.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    b.update(torch.tensor([2, 2]), torch.tensor([2, 1]))
    a.merge(b)
    assert a.compute()["confusion_matrix"] == [[1, 1, 0], [0, 0, 1], [0, 0, 1]]
    a.all_reduce()  # not initialised: must leave the counts alone
    assert int(a.confusion_matrix.sum()) == 4
    with pytest.raises(ValueError):
        a.merge(SegmentationMetrics(4))


def test_format_table() -> None:
    target = torch.tensor([[[0, 0, 0], [1, 1, 2], [2, VOID, 0]]])
    preds = torch.tensor([[[0, 0, 1], [1, 2, 2], [0, 1, 0]]])
    m = SegmentationMetrics(4)  # class 3 absent everywhere -> shown as '-'
    m.update(preds, target)
    table = format_table(m.compute(), ["road", "sidewalk", "building", "sky"])
    for name in ("road", "sidewalk", "building", "sky"):
        assert name in table
    assert f"{100 * 19 / 45:.2f}" in table  # mIoU 42.22
    assert "60.00" in table  # road IoU
    sky_row = next(line for line in table.splitlines() if "sky" in line)
    assert "-" in sky_row and "nan" not in table.lower()
    with pytest.raises(ValueError):
        format_table(m.compute(), ["road"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    gen = torch.Generator().manual_seed(4)
    preds, target = _random_batch(gen, 7)
    cpu = SegmentationMetrics(7)
    cpu.update(preds, target)
    gpu = SegmentationMetrics(7)
    gpu.update(preds.cuda(), target.cuda())
    assert gpu.confusion_matrix.device.type == "cuda"
    assert torch.equal(gpu.confusion_matrix.cpu(), cpu.confusion_matrix)
    assert gpu.compute()["mIoU"] == pytest.approx(cpu.compute()["mIoU"])
