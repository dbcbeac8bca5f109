"""The click protocol of interactive segmentation (pixelwise.prompt.clicks) and its classical baselines.

Every expected value of the protocol tests is worked out by hand in the comments: the distance transforms (the
distance from each error pixel to the nearest pixel outside its region, the image border counting as outside),
the simulated user's clicks and their tie-breaks, a whole run of a fake model, the NoC scores. The baselines
(GrabCut, random walker) run on synthetic 64x64 images and skip without OpenCV / scikit-image.
"""

from __future__ import annotations

import dataclasses
import sys
from math import sqrt

import numpy as np
import pytest

from pixelwise.prompt import (
    MIOU_AT_CLICKS,
    Click,
    click_maps,
    error_distances,
    iou,
    next_click,
    noc_summary,
    number_of_clicks,
    run_clicks,
)

R2 = sqrt(2.0)


def box(shape, rows, cols):
    """bool mask of ``shape`` that is True on rows[0]..rows[1] x cols[0]..cols[1], both ends included."""
    m = np.zeros(shape, bool)
    m[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1] = True
    return m


# ---------------------------------------------------------------------------------------------- the simulated user

def test_distances_with_a_hole_and_the_border_by_hand():
    # 4x5 image, the object everywhere but the pixel (1, 2); empty prediction, so fn = gt and fp is empty.
    # Distance to the nearest pixel outside fn: the padded border is 1 away from every pixel of rows 0 and 3 and
    # columns 0 and 4; (1, 1), (1, 3) and (2, 2) touch the hole: 1. (2, 1): the hole is at offset (-1, +1),
    # sqrt(2); the border is 2 away (down, left). Same for (2, 3).
    gt = np.ones((4, 5), bool)
    gt[1, 2] = False
    fn_d, fp_d = error_distances(np.zeros_like(gt), gt)
    expected = np.array([
        [1, 1, 1, 1, 1],
        [1, 1, 0, 1, 1],
        [1, R2, 1, R2, 1],
        [1, 1, 1, 1, 1],
    ])
    np.testing.assert_allclose(fn_d, expected, rtol=0, atol=1e-12)
    assert fn_d.dtype == np.float64 and fn_d.shape == (4, 5)
    np.testing.assert_array_equal(fp_d, np.zeros((4, 5)))
    # the maximum sqrt(2) at (2, 1) and (2, 3): raster order takes (2, 1). Without the padding the border would
    # not count as outside and the farthest point from the hole, a corner (3, 0), would be clicked.
    assert next_click(np.zeros_like(gt), gt) == Click(2, 1, True)


def test_first_click_on_a_7x9_rectangle_by_hand():
    # 11x13 image, gt rows 2..8 (7 rows) x columns 2..10 (9 columns), empty prediction. Inside a rectangle the
    # nearest outside pixel is straight across the nearest side: d(y, x) = min(rowterm, colterm) with
    # rowterm = 1 2 3 4 3 2 1 (rows 2..8) and colterm = 1 2 3 4 5 4 3 2 1 (columns 2..10).
    gt = box((11, 13), (2, 8), (2, 10))
    fn_d, fp_d = error_distances(np.zeros_like(gt), gt)
    inside = np.array([
        [1, 1, 1, 1, 1, 1, 1, 1, 1],
        [1, 2, 2, 2, 2, 2, 2, 2, 1],
        [1, 2, 3, 3, 3, 3, 3, 2, 1],
        [1, 2, 3, 4, 4, 4, 3, 2, 1],
        [1, 2, 3, 3, 3, 3, 3, 2, 1],
        [1, 2, 2, 2, 2, 2, 2, 2, 1],
        [1, 1, 1, 1, 1, 1, 1, 1, 1],
    ], float)
    expected = np.zeros((11, 13))
    expected[2:9, 2:11] = inside
    np.testing.assert_array_equal(fn_d, expected)
    assert not fp_d.any()
    # the largest distance, 4, on the middle row 5 at columns 5, 6, 7 (the centre is (5, 6)): the raster-order
    # tie-break takes the first, (5, 5), one pixel left of the centre
    assert next_click(np.zeros_like(gt), gt) == Click(5, 5, True)
    # a 5x5 square (odd sides) has a single deepest point, its centre: rows 3..7, columns 4..8 -> (5, 6), at 3
    square = box((11, 13), (3, 7), (4, 8))
    assert error_distances(np.zeros_like(square), square)[0].max() == 3
    assert next_click(np.zeros_like(square), square) == Click(5, 6, True)


def test_border_counts_as_outside():
    # 6x7 image, the object is the band of rows 0..2 over all 7 columns: it touches the top, left and right borders.
    # rowterm over rows 0..2 = 1 2 1 (the padding above row 0, row 3 below), colterm = 1 2 3 4 3 2 1, so rows 0 and
    # 2 are all 1 and row 1 is 1 2 2 2 2 2 1. The click goes to (1, 1), not to the border row (without the
    # padding, row 0 would be 3 from row 3 and the click would be the corner (0, 0)).
    gt = box((6, 7), (0, 2), (0, 6))
    fn_d, _ = error_distances(np.zeros_like(gt), gt)
    np.testing.assert_array_equal(fn_d[:3], [[1] * 7, [1, 2, 2, 2, 2, 2, 1], [1] * 7])
    assert not fn_d[3:].any()
    click = next_click(np.zeros_like(gt), gt)
    assert click == Click(1, 1, True)
    assert click.y != 0


def test_negative_click_at_the_deeper_false_positive_blob():
    # 10x14 image, gt rows 1..5 x columns 1..5. The prediction misses gt's columns 4..5 (a 5x2 strip, 10 pixels,
    # every one next to a non-error pixel: distance 1) and adds a 3x3 blob at rows 6..8 x columns 9..11 (9 pixels,
    # its centre (7, 10) at distance 2, its ring at 1). The blob has fewer pixels but a deeper interior: 2 > 1,
    # a negative click at its centre.
    gt = box((10, 14), (1, 5), (1, 5))
    blob = box((10, 14), (6, 8), (9, 11))
    pred = box((10, 14), (1, 5), (1, 3)) | blob
    fn_d, fp_d = error_distances(pred, gt)
    np.testing.assert_array_equal(fn_d[1:6, 4:6], np.ones((5, 2)))
    assert fn_d.sum() == 10
    np.testing.assert_array_equal(fp_d[6:9, 9:12], [[1, 1, 1], [1, 2, 1], [1, 1, 1]])
    assert fp_d.sum() == 10  # 8 ring pixels at 1 and the centre at 2
    assert next_click(pred, gt) == Click(7, 10, False)


def test_tie_between_false_negatives_and_false_positives_is_positive():
    # 11x11 image. fp: a 3x3 block at rows 1..3 x columns 1..3 (centre (2, 2) at 2), first in raster order;
    # fn: a 3x3 block at rows 7..9 x columns 7..9 (centre (8, 8) at 2). 2 == 2: the tie goes to fn, positive.
    gt = box((11, 11), (7, 9), (7, 9))
    pred = box((11, 11), (1, 3), (1, 3))
    fn_d, fp_d = error_distances(pred, gt)
    assert fn_d.max() == fp_d.max() == 2
    assert next_click(pred, gt) == Click(8, 8, True)
    # a 5x5 fp block at rows 0..4 x columns 0..4 (it touches the border: rowterm = colterm = 1 2 3 2 1) is deeper,
    # 3 at (2, 2): now the click is negative
    pred = box((11, 11), (0, 4), (0, 4))
    assert next_click(pred, gt) == Click(2, 2, False)


def test_ignore_pixels_are_neither_error():
    # 9x14 image, gt rows 1..5 x columns 1..5 (centre (3, 3) at 3); the prediction is only a 7x7 blob at rows
    # 1..7 x columns 6..12 (rowterm = colterm = 1 2 3 4 3 2 1: its centre (4, 9) at 4 > 3, a negative click).
    gt = box((9, 14), (1, 5), (1, 5))
    blob = box((9, 14), (1, 7), (6, 12))
    assert next_click(blob, gt) == Click(4, 9, False)
    # ignoring the blob and gt's centre (3, 3): fp is empty and fn is the square with a hole in the middle;
    # (2, 2) is sqrt(2) from the hole (offset (1, 1)) and 2 from the outside, likewise (2, 4), (4, 2), (4, 4);
    # the hole's 4-neighbours are 1 from it; the outer ring is 1 from the outside.
    ignore = blob.copy()
    ignore[3, 3] = True
    fn_d, fp_d = error_distances(blob, gt, ignore)
    np.testing.assert_allclose(fn_d[1:6, 1:6], [
        [1, 1, 1, 1, 1],
        [1, R2, 1, R2, 1],
        [1, 1, 0, 1, 1],
        [1, R2, 1, R2, 1],
        [1, 1, 1, 1, 1],
    ], rtol=0, atol=1e-12)
    assert fn_d.sum() == pytest.approx(16 + 4 + 4 * R2)  # ring, the hole's neighbours, the diagonals: no more
    assert not fp_d.any()
    assert next_click(blob, gt, ignore) == Click(2, 2, True)
    # a prediction wrong only inside ignore: nothing to click
    assert next_click(gt | blob, gt, blob) is None


def test_no_error_no_click():
    gt = box((6, 6), (1, 3), (2, 4))
    assert next_click(gt.copy(), gt) is None
    assert next_click(np.zeros((6, 6), bool), np.zeros((6, 6), bool)) is None
    # 0/1 integer masks are masks too
    assert next_click(gt.astype(np.uint8), gt.astype(np.int64)) is None


def test_next_click_errors():
    gt = box((6, 6), (1, 3), (2, 4))
    with pytest.raises(ValueError, match="same size"):
        next_click(np.zeros((6, 7), bool), gt)
    with pytest.raises(ValueError, match="threshold"):
        next_click(np.full((6, 6), 0.7), gt)
    with pytest.raises(ValueError, match="2-D"):
        next_click(np.zeros((1, 6, 6), bool), gt)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Click(1, 2, True).y = 3


# -------------------------------------------------------------------------------------------------- click encoding

def test_click_maps_radius_1_and_2_exact_pixels():
    # radius 1: (y - 2)^2 + (x - 2)^2 <= 1 is the centre and its four neighbours
    maps = click_maps([Click(2, 2, True)], (5, 5), radius=1)
    assert maps.dtype == np.float32 and maps.shape == (2, 5, 5)
    np.testing.assert_array_equal(maps[0], [
        [0, 0, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 1, 1, 1, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 0, 0, 0],
    ])
    assert not maps[1].any()
    # radius 2 around a negative click at (1, 1) of a 5x6 image: offsets with dy^2 + dx^2 <= 4 are dy = 0:
    # dx = -2..2; dy = +-1: dx = -1..1; dy = +-2: dx = 0 (13 pixels); rows -1 and column -1 fall off the image,
    # leaving 11
    maps = click_maps([Click(1, 1, False)], (5, 6), radius=2)
    assert not maps[0].any()
    np.testing.assert_array_equal(maps[1], [
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [0, 1, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
    ])
    assert maps[1].sum() == 11
    # overlapping disks stay 1; radius 0 is the pixel alone; both channels at once
    maps = click_maps([Click(0, 0, True), Click(0, 1, True), Click(3, 4, False)], (4, 5), radius=0)
    assert maps[0].sum() == 2 and maps[0, 0, 0] == maps[0, 0, 1] == 1
    assert maps[1].sum() == 1 and maps[1, 3, 4] == 1
    assert click_maps([Click(1, 1, True), Click(1, 2, True)], (3, 4), radius=1).max() == 1


def test_click_maps_errors():
    with pytest.raises(ValueError, match="outside the image"):
        click_maps([Click(5, 0, True)], (5, 5))
    with pytest.raises(ValueError, match="radius"):
        click_maps([], (5, 5), radius=-1)
    with pytest.raises(TypeError, match="Click"):
        click_maps([(1, 1, True)], (5, 5))


# ------------------------------------------------------------------------------------------------------------ IoU

def test_iou_by_hand():
    gt = np.zeros((3, 3), bool)
    gt[0, :] = True  # 3 pixels
    pred = np.zeros((3, 3), bool)
    pred[0, 0] = pred[1, 0] = True  # 2 pixels, 1 shared: 1 / (3 + 2 - 1)
    assert iou(pred, gt) == 0.25
    ignore = np.zeros((3, 3), bool)
    ignore[1, 0] = True  # the false positive leaves: 1 / 3
    assert iou(pred, gt, ignore) == pytest.approx(1 / 3)
    ignore[0, 0] = True  # the shared pixel leaves both: 0 / 2 ((0, 1), (0, 2))
    assert iou(pred, gt, ignore) == 0.0
    assert iou(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 1.0
    assert iou(pred, pred) == 1.0
    assert iou(~gt & ~pred, gt) == 0.0


# ---------------------------------------------------------------------------------------------------- the protocol

def disk_model(shape, pos_radius=3, neg_radius=0):
    """Fake click model: disks of ``pos_radius`` around the positive clicks minus the negatively clicked pixels."""
    calls = []

    def segment(clicks):
        calls.append(clicks)
        pos = click_maps(clicks, shape, radius=pos_radius)[0] > 0
        neg = click_maps(clicks, shape, radius=neg_radius)[1] > 0
        return pos & ~neg

    return segment, calls


def test_run_clicks_full_sequence_by_hand():
    # 9x10 image, gt = the 5x5 square rows 2..6 x columns 2..6 (25 pixels, centre (4, 4) at distance 3).
    # Click 1: (4, 4) positive. The radius-3 disk holds every offset with dy^2 + dx^2 <= 9: the whole 5x5 square
    #   ((2, 2) gives 8) plus (+-3, 0) and (0, +-3), four single false positives (1, 4), (4, 1), (4, 7), (7, 4):
    #   IoU 25 / 29.
    # Clicks 2-5: no false negative; each false positive is isolated (distance 1), raster order takes (1, 4),
    #   then (4, 1), (4, 7), (7, 4), each a negative click that removes its pixel: 25/28, 25/27, 25/26, 25/25.
    # Then nothing is wrong: the run stops after 5 clicks.
    shape = (9, 10)
    gt = box(shape, (2, 6), (2, 6))
    segment, calls = disk_model(shape)
    ious = run_clicks(segment, gt)
    assert ious == [25 / 29, 25 / 28, 25 / 27, 25 / 26, 1.0]
    assert calls[-1] == [Click(4, 4, True), Click(1, 4, False), Click(4, 1, False), Click(4, 7, False),
                         Click(7, 4, False)]
    # the model gets every click so far, oldest first, in a fresh list each time
    assert [len(c) for c in calls] == [1, 2, 3, 4, 5]
    assert all(calls[i] == calls[-1][:i + 1] for i in range(5))
    # the budget cuts the run
    segment, _ = disk_model(shape)
    assert run_clicks(segment, gt, max_clicks=3) == [25 / 29, 25 / 28, 25 / 27]
    # ignoring (7, 4): click 1 scores 25 / 28 (3 false positives count), the run ends after 4 clicks, the last
    # false positive being ignored
    ignore = np.zeros(shape, bool)
    ignore[7, 4] = True
    segment, calls = disk_model(shape)
    assert run_clicks(segment, gt, ignore=ignore) == [25 / 28, 25 / 27, 25 / 26, 1.0]
    assert len(calls) == 4


def test_run_clicks_model_that_never_learns():
    # a model that always returns nothing: the same click (4, 4) positive every time, IoU 0 until the budget
    shape = (9, 10)
    gt = box(shape, (2, 6), (2, 6))
    calls = []

    def segment(clicks):
        calls.append(clicks)
        return np.zeros(shape, bool)

    ious = run_clicks(segment, gt, max_clicks=4)
    assert ious == [0.0] * 4
    assert calls[-1] == [Click(4, 4, True)] * 4
    assert number_of_clicks(ious, 0.85, max_clicks=4) == 4


def test_run_clicks_errors():
    shape = (9, 10)
    gt = box(shape, (2, 6), (2, 6))
    with pytest.raises(ValueError, match="no object pixel"):
        run_clicks(lambda clicks: np.zeros(shape, bool), np.zeros(shape, bool))
    with pytest.raises(ValueError, match="no object pixel"):
        run_clicks(lambda clicks: np.zeros(shape, bool), gt, ignore=gt)
    with pytest.raises(ValueError, match=r"segment\(\) returned after 1 click"):
        run_clicks(lambda clicks: np.zeros((9, 9), bool), gt)
    with pytest.raises(ValueError, match="max_clicks"):
        run_clicks(lambda clicks: gt, gt, max_clicks=0)


# --------------------------------------------------------------------------------------------------------- scores

def test_number_of_clicks_by_hand():
    assert number_of_clicks([0.5, 0.86, 0.92], 0.85) == 2
    assert number_of_clicks([0.5, 0.86, 0.92], 0.90) == 3
    assert number_of_clicks([0.85], 0.85) == 1  # reached means >=
    assert number_of_clicks([0.1] * 20, 0.85) == 20  # never: the budget
    assert number_of_clicks([0.1, 0.2], 0.85, max_clicks=20) == 20  # a short list that never reaches it
    assert number_of_clicks([0.1, 0.1, 0.95], 0.85, max_clicks=2) == 2  # past the budget does not count
    with pytest.raises(ValueError, match="empty"):
        number_of_clicks([], 0.85)


def test_noc_summary_by_hand():
    a = [0.5, 0.86, 0.92]  # NoC@85 = 2, NoC@90 = 3; stopped after 3 clicks
    b = [1.0]  # exact after one click: 1, 1
    c = [0.2, 0.4, 0.6, 0.8] + [0.84] * 16  # 20 clicks, never 0.85: 20, 20, a failure at both
    d = [0.3] * 19 + [0.87]  # reaches 0.85 at the 20th click (no failure), never 0.90 (a failure)
    s = noc_summary([a, b, c, d])
    assert s["NoC@85"] == pytest.approx((2 + 1 + 20 + 20) / 4)  # 10.75
    assert s["NoC@90"] == pytest.approx((3 + 1 + 20 + 20) / 4)  # 11.0
    assert s["NoF@85"] == 1 and s["NoF@90"] == 2
    assert s["objects"] == 4
    # mIoU@k: a and b keep their last IoU once they stopped
    assert s["mIoU@1"] == pytest.approx((0.5 + 1.0 + 0.2 + 0.3) / 4)  # 0.5
    assert s["mIoU@3"] == pytest.approx((0.92 + 1.0 + 0.6 + 0.3) / 4)  # 0.705
    assert s["mIoU@5"] == pytest.approx((0.92 + 1.0 + 0.84 + 0.3) / 4)  # 0.765
    assert s["mIoU@10"] == pytest.approx((0.92 + 1.0 + 0.84 + 0.3) / 4)
    assert s["mIoU@20"] == pytest.approx((0.92 + 1.0 + 0.84 + 0.87) / 4)  # 0.9075
    assert set(s) == {"NoC@85", "NoC@90", "NoF@85", "NoF@90", "objects"} | {f"mIoU@{k}" for k in MIOU_AT_CLICKS}
    assert isinstance(s["NoF@85"], int) and isinstance(s["objects"], int)
    # a budget of 5 clicks: c and d fail both thresholds (d's 0.87 comes too late), a and b do not;
    # no mIoU past the budget; a threshold of 0.5 is named NoC@50 (a: 1, b: 1, c: 3 (0.6), d: 5)
    s = noc_summary([a, b, c, d], thresholds=(0.5, 0.85), max_clicks=5)
    assert s["NoC@85"] == pytest.approx((2 + 1 + 5 + 5) / 4) and s["NoF@85"] == 2
    assert s["NoC@50"] == pytest.approx((1 + 1 + 3 + 5) / 4) and s["NoF@50"] == 1
    assert "mIoU@10" not in s and "mIoU@5" in s
    with pytest.raises(ValueError, match="empty"):
        noc_summary([])
    with pytest.raises(ValueError, match="object 1 has no IoU"):
        noc_summary([a, []])


# ------------------------------------------------------------------------------------------------------ baselines

def disk_image(seed=0, distractor=False):
    """64x64 RGB: a bright (190) disk of radius 14 at (28, 24) on a dark (60) background, Gaussian noise of
    sigma 30; optionally a second bright disk (radius 8 at (40, 50)) that is not the object."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    gt = (yy - 28) ** 2 + (xx - 24) ** 2 <= 14 ** 2
    other = (yy - 40) ** 2 + (xx - 50) ** 2 <= 8 ** 2
    bright = gt | other if distractor else gt
    image = np.where(bright, 190.0, 60.0)[..., None] + rng.normal(0, 30, (64, 64, 3))
    return np.clip(image, 0, 255).astype(np.uint8), gt, other


@pytest.mark.parametrize("factory_name", ["grabcut_segmenter", "random_walker_segmenter"])
def test_baseline_one_click_segments_the_disk(factory_name):
    pytest.importorskip("cv2" if factory_name == "grabcut_segmenter" else "skimage")
    from pixelwise.prompt import baselines

    image, gt, _ = disk_image()
    segment = getattr(baselines, factory_name)(image)
    pred = segment([Click(28, 24, True)])
    assert pred.dtype == bool and pred.shape == (64, 64)
    # the click's own radius-5 disk would score 81 / 613 = 0.13
    assert iou(pred, gt) > 0.8
    assert not segment([Click(10, 10, False)]).any()  # no positive click: nothing


def test_grabcut_needs_a_negative_click_for_a_look_alike():
    pytest.importorskip("cv2")
    from pixelwise.prompt import grabcut_segmenter

    image, gt, other = disk_image(distractor=True)
    model = grabcut_segmenter(image)
    calls = []

    def segment(clicks):
        calls.append(clicks)
        return model(clicks)

    ious = run_clicks(segment, gt)
    # same colour model: the first cut takes the look-alike disk too; the user's second click is negative, inside
    # it, and fixes that
    assert ious[0] < 0.85
    clicks = calls[-1]
    assert clicks[0] == Click(28, 24, True)
    assert not clicks[1].positive and other[clicks[1].y, clicks[1].x]
    assert number_of_clicks(ious, 0.9) == 2 and ious[1] > 0.95


def test_grabcut_without_a_sample_of_both_sides_does_not_raise():
    pytest.importorskip("cv2")
    from pixelwise.prompt import grabcut_segmenter

    image, _, _ = disk_image()
    assert not grabcut_segmenter(image)([]).any()
    assert grabcut_segmenter(image, radius=100)([Click(30, 30, True)]).all()  # the disk covers the image
    with pytest.raises(ValueError, match="uint8"):
        grabcut_segmenter(image.astype(np.float32))


def test_random_walker_border_seeds_exclude_a_look_alike():
    pytest.importorskip("skimage")
    from pixelwise.prompt import random_walker_segmenter

    image, gt, other = disk_image(distractor=True)
    pred = random_walker_segmenter(image)([Click(28, 24, True)])
    assert iou(pred, gt) > 0.95 and not (pred & other).any()
    # a negative click replaces the border seeds: with one inside the look-alike it stays out too
    pred = random_walker_segmenter(image)([Click(28, 24, True), Click(40, 50, False)])
    assert iou(pred, gt) > 0.9 and not pred[40, 50]


@pytest.mark.parametrize("factory_name,modules", [
    ("grabcut_segmenter", ["cv2"]),
    ("random_walker_segmenter", ["skimage", "skimage.segmentation"]),
])
def test_baseline_missing_package_names_the_extra(monkeypatch, factory_name, modules):
    from pixelwise.prompt import baselines

    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ImportError, match=r"pip install 'pixelwise\[prompt-baselines\]'"):
        getattr(baselines, factory_name)(image)
