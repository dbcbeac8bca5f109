"""Tests of pixelwise.depth.metrics: hand-worked values of every depth and normal metric, the invariances a user
relies on (scale-invariant SILog, median scaling, invalid pixels, caps, crops), streaming and merging, and the
numerically stable angle."""

from __future__ import annotations

import math

import pytest
import torch

from pixelwise.depth.metrics import DepthMetrics, NormalMetrics, eval_crop
from pixelwise.errors import ConfigError

LN2, LN_3_4, LN_3_5 = math.log(2.0), math.log(3 / 4), math.log(3 / 5)

# One 2 x 3 image, four valid pixels and two invalid ones (target 0; their predictions 9 and 0.5 must not count):
#   pixel  d    d*   |d-d*|/d*  (d-d*)^2/d*  (d-d*)^2   e = ln d - ln d*   max(d/d*, d*/d)
#   a      2    1    1          1            1          ln 2               2     (fails 1.25, 1.5625, 1.953125)
#   b      2    2    0          0            0          0                  1     (passes all three)
#   c      3    4    1/4        1/4          1          ln 3/4             4/3   (passes 1.5625 and 1.953125)
#   d      3    5    2/5        4/5          4          ln 3/5             5/3   (passes 1.953125 only)
PRED = torch.tensor([[[2.0, 2.0, 3.0], [3.0, 9.0, 0.5]]], dtype=torch.float64)
TARGET = torch.tensor([[[1.0, 2.0, 4.0], [5.0, 0.0, 0.0]]], dtype=torch.float64)
_SUM_E2 = LN2**2 + LN_3_4**2 + LN_3_5**2
_MEAN_E = (LN2 + LN_3_4 + LN_3_5) / 4  # = ln(0.9) / 4
EXPECTED = {
    "abs_rel": (1 + 0 + 0.25 + 0.4) / 4,  # 0.4125
    "sq_rel": (1 + 0 + 0.25 + 0.8) / 4,  # 0.5125
    "rmse": math.sqrt((1 + 0 + 1 + 4) / 4),  # sqrt(1.5) = 1.2247
    "rmse_log": math.sqrt(_SUM_E2 / 4),  # 0.45391
    "log10": (abs(LN2) + abs(LN_3_4) + abs(LN_3_5)) / math.log(10) / 4,  # 0.16195
    "silog": 100 * math.sqrt(_SUM_E2 / 4 - _MEAN_E**2),  # 45.315
    "delta1": 1 / 4,
    "delta2": 2 / 4,
    "delta3": 3 / 4,
}


def _random_depth(gen: torch.Generator, n: int = 3, h: int = 12, w: int = 16, invalid: float = 0.3):
    target = 0.5 + 9.0 * torch.rand(n, h, w, generator=gen, dtype=torch.float64)
    target[torch.rand(n, h, w, generator=gen) < invalid] = 0.0
    pred = target * torch.exp(0.2 * torch.randn(n, h, w, generator=gen, dtype=torch.float64)) + 0.3
    return pred, target


def _close(res: dict, expected: dict, rel: float = 1e-9, abs_: float = 1e-12) -> None:
    for key, value in expected.items():
        assert res[key] == pytest.approx(value, rel=rel, abs=abs_), key


def test_hand_worked_values() -> None:
    m = DepthMetrics(min_depth=None)
    m.update(PRED, TARGET)
    res = m.compute()
    _close(res, EXPECTED)
    assert res["abs_rel"] == pytest.approx(0.4125) and res["silog"] == pytest.approx(45.3150, abs=1e-4)
    assert (res["num_images"], res["num_pixels"], res["num_images_without_valid_pixels"]) == (1, 4, 0)


def test_hand_worked_values_float32_and_channel_dim() -> None:
    m = DepthMetrics()  # min_depth 1e-3: no pixel of the example is affected
    m.update(PRED.float().unsqueeze(1), TARGET.float().unsqueeze(1))
    _close(m.compute(), EXPECTED, rel=1e-6)


def test_per_image_averaging() -> None:
    # image 1: one valid pixel, error 1 m -> rmse 1; image 2: three valid pixels, error 3 m each -> rmse 3.
    # The per-image mean is (1 + 3) / 2 = 2; pooling pixels would give sqrt((1 + 27) / 4) = 2.6458.
    target = torch.tensor([[[10.0, 0.0], [0.0, 0.0]], [[10.0, 10.0], [10.0, 0.0]]])
    pred = torch.tensor([[[11.0, 5.0], [5.0, 5.0]], [[13.0, 13.0], [13.0, 5.0]]])
    m = DepthMetrics()
    m.update(pred, target)
    res = m.compute()
    assert res["rmse"] == pytest.approx(2.0)
    assert res["abs_rel"] == pytest.approx((0.1 + 0.3) / 2)
    assert (res["num_images"], res["num_pixels"]) == (2, 4)


def test_image_without_valid_pixels_is_counted_apart() -> None:
    m = DepthMetrics(min_depth=None)
    m.update(PRED, TARGET)
    m.update(torch.full((2, 2, 3), 4.0), torch.zeros(2, 2, 3))
    res = m.compute()
    _close(res, EXPECTED)
    assert (res["num_images"], res["num_images_without_valid_pixels"]) == (1, 2)
    empty = DepthMetrics()
    empty.update(torch.ones(1, 2, 2), torch.zeros(1, 2, 2))
    assert math.isnan(empty.compute()["rmse"]) and empty.compute()["num_images"] == 0


def test_silog_is_scale_invariant_and_others_are_not() -> None:
    pred, target = _random_depth(torch.Generator().manual_seed(0))
    base, scaled = DepthMetrics(min_depth=None), DepthMetrics(min_depth=None)
    base.update(pred, target)
    scaled.update(3.7 * pred, target)
    a, b = base.compute(), scaled.compute()
    assert b["silog"] == pytest.approx(a["silog"], rel=1e-9)
    assert b["abs_rel"] > a["abs_rel"] + 1.0  # the scale does change the scale-dependent metrics
    assert b["rmse_log"] > a["rmse_log"] + 0.5


def test_median_scaling_makes_a_scaled_prediction_perfect() -> None:
    _, target = _random_depth(torch.Generator().manual_seed(1))
    pred = 0.37 * target + (target == 0) * 5.0  # a scale-ambiguous but otherwise exact prediction
    plain, scaled = DepthMetrics(), DepthMetrics(median_scaling=True)
    plain.update(pred, target)
    scaled.update(pred, target)
    assert plain.compute()["abs_rel"] == pytest.approx(0.63)
    res = scaled.compute()
    for key in ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog"):
        assert res[key] == pytest.approx(0.0, abs=1e-9), key
    assert res["delta1"] == 1.0


def test_median_scaling_uses_the_per_image_medians() -> None:
    # target medians 2 and 20 (even counts: numpy's mean of the middle two), prediction medians 1 and 4
    target = torch.tensor([[[1.0, 2.0, 2.0, 3.0]], [[10.0, 20.0, 20.0, 0.0]]])
    pred = torch.tensor([[[0.5, 1.0, 1.0, 1.5]], [[2.0, 4.0, 4.0, 100.0]]])
    m = DepthMetrics(median_scaling=True)
    m.update(pred, target)
    assert m.compute()["abs_rel"] == pytest.approx(0.0, abs=1e-12)  # x2 and x5, not one ratio for the batch
    # pred [1, 1, 3, 3] against target [1, 1, 3, 3] scaled by median 2 / median(1, 3) = 2/2 -> perfect;
    # against [1, 1, 1, 5] (median 1): pred * 1/2 = [0.5, 0.5, 1.5, 1.5], abs_rel = (0.5 + 0.5 + 0.5 + 0.7) / 4
    m2 = DepthMetrics(median_scaling=True)
    m2.update(torch.tensor([[[1.0, 1.0, 3.0, 3.0]]]), torch.tensor([[[1.0, 1.0, 1.0, 5.0]]]))
    assert m2.compute()["abs_rel"] == pytest.approx((0.5 + 0.5 + 0.5 + 0.7) / 4)


def test_invalid_pixels_never_count() -> None:
    pred, target = _random_depth(torch.Generator().manual_seed(2))
    other = pred.clone()
    invalid = target == 0
    other[invalid] = torch.linspace(-5, 500, int(invalid.sum()), dtype=torch.float64)
    other[invalid.nonzero()[0].unbind()] = math.nan  # even NaN predictions there are not looked at
    a, b = DepthMetrics(max_depth=10.0), DepthMetrics(max_depth=10.0)
    a.update(pred, target)
    b.update(other, target)
    assert a.compute() == b.compute()
    assert a.compute()["num_pixels"] == int((~invalid).sum())


def test_caps_drop_ground_truth_and_clamp_predictions() -> None:
    # ground truth 0.5 (below min_depth 1) and 50 (above max_depth 10) are invalid; 2 and 5 count.
    target = torch.tensor([[[0.5, 2.0, 5.0, 50.0]]])
    pred = torch.tensor([[[7.0, 0.1, 100.0, 3.0]]])
    m = DepthMetrics(min_depth=1.0, max_depth=10.0)
    m.update(pred, target)
    res = m.compute()
    assert res["num_pixels"] == 2
    # clamped predictions: 0.1 -> 1 against 2 (|1-2|/2 = 0.5), 100 -> 10 against 5 (|10-5|/5 = 1)
    assert res["abs_rel"] == pytest.approx((0.5 + 1.0) / 2)
    assert res["rmse"] == pytest.approx(math.sqrt((1 + 25) / 2))
    # ground truth exactly at a cap is outside (strict bounds, as the reference evaluation code)
    edge = DepthMetrics(min_depth=1.0, max_depth=10.0)
    edge.update(torch.ones(1, 1, 3), torch.tensor([[[1.0, 10.0, 3.0]]]))
    assert edge.compute()["num_pixels"] == 1


def test_without_caps_a_nonpositive_prediction_raises() -> None:
    m = DepthMetrics(min_depth=None)
    with pytest.raises(ValueError, match="not finite and > 0"):
        m.update(torch.tensor([[[0.0, 1.0]]]), torch.tensor([[[1.0, 1.0]]]))
    with pytest.raises(ValueError, match="not finite and > 0"):
        DepthMetrics().update(torch.tensor([[[math.nan, 1.0]]]), torch.tensor([[[1.0, 1.0]]]))
    # with the default min_depth a zero prediction is clamped to 1 mm, as the benchmarks do
    ok = DepthMetrics()
    ok.update(torch.tensor([[[0.0]]], dtype=torch.float64), torch.tensor([[[1.0]]], dtype=torch.float64))
    assert ok.compute()["abs_rel"] == pytest.approx(0.999)


def test_crop_boxes() -> None:
    assert eval_crop("eigen", 480, 640) == (45, 471, 41, 601)
    assert eval_crop("eigen", 240, 320) == (22, 235, 20, 300)  # 45/2 = 22.5 -> 22, 471/2 = 235.5 -> 235
    # 0.40810811 * 375 = 153.04, 0.99189189 * 375 = 371.96, 0.03594771 * 1242 = 44.65, 0.96405229 * 1242 = 1197.35
    assert eval_crop("garg", 375, 1242) == (153, 371, 44, 1197)
    with pytest.raises(ConfigError):
        DepthMetrics(crop="nyu")


@pytest.mark.parametrize(("crop", "h", "w"), [("eigen", 480, 640), ("garg", 375, 1242)])
def test_crop_selects_the_rows_and_columns(crop: str, h: int, w: int) -> None:
    top, bottom, left, right = eval_crop(crop, h, w)
    target = torch.ones(1, h, w)
    pred = torch.full((1, h, w), 2.0)  # every pixel off by 100 %, outside the crop
    pred[:, top:bottom, left:right] = 1.0  # exact inside
    m = DepthMetrics(crop=crop)
    m.update(pred, target)
    res = m.compute()
    assert res["num_pixels"] == (bottom - top) * (right - left)
    assert res["abs_rel"] == 0.0
    # each edge row / column of the box is inside it
    for rows, cols in [(top, slice(None)), (bottom - 1, slice(None)), (slice(None), left), (slice(None), right - 1)]:
        edge = pred.clone()
        edge[0, rows, cols] = 2.0
        e = DepthMetrics(crop=crop)
        e.update(edge, target)
        assert e.compute()["abs_rel"] > 0.0


def test_streaming_equals_one_update_and_merge() -> None:
    gen = torch.Generator().manual_seed(3)
    batches = [_random_depth(gen, n=n) for n in (2, 3)]
    for kwargs in ({}, {"median_scaling": True, "max_depth": 8.0}, {"crop": "eigen"}):
        streamed, whole = DepthMetrics(**kwargs), DepthMetrics(**kwargs)
        for pred, target in batches:
            streamed.update(pred, target)
        whole.update(torch.cat([p for p, _ in batches]), torch.cat([t for _, t in batches]))
        a, b = streamed.compute(), whole.compute()
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-12), key

        first, second = DepthMetrics(**kwargs), DepthMetrics(**kwargs)
        first.update(*batches[0])
        second.update(*batches[1])
        first.merge(second)
        assert first.compute() == pytest.approx(a, rel=1e-12)
        first.reset()
        assert first.compute()["num_images"] == 0 and math.isnan(first.compute()["abs_rel"])
    with pytest.raises(ValueError, match="cannot merge"):
        DepthMetrics().merge(DepthMetrics(crop="garg"))


def test_depth_input_errors() -> None:
    m = DepthMetrics()
    with pytest.raises(ValueError, match="shapes differ"):
        m.update(torch.ones(1, 4, 4), torch.ones(1, 4, 5))
    with pytest.raises(ValueError, match="floating-point"):
        m.update(torch.ones(1, 4, 4), torch.ones(1, 4, 4, dtype=torch.int32))
    with pytest.raises(ConfigError):
        DepthMetrics(min_depth=1.0, max_depth=0.5)


# ---------------------------------------------------------------------------------------------- normals


def _unit(deg: float) -> list[float]:
    """The unit vector at ``deg`` degrees from (0, 0, 1), tilted towards +x."""
    r = math.radians(deg)
    return [math.sin(r), 0.0, math.cos(r)]


def _normals(vectors: list[list[float]], dtype=torch.float64) -> torch.Tensor:
    """(1, 3, 1, len(vectors)) from a list of 3-vectors."""
    return torch.tensor(vectors, dtype=dtype).T.reshape(1, 3, 1, len(vectors))


def test_normal_hand_worked_angles() -> None:
    # angles 0, 10, 20, 25, 45, 90, 180 degrees against (0, 0, 1); 45 and 180 given unnormalised
    pred = _normals([[0, 0, 1], _unit(10), _unit(20), _unit(25), [2.0, 0.0, 2.0], [0, 1, 0], [0, 0, -3.0]])
    target = _normals([[0, 0, 1]] * 7)
    m = NormalMetrics()
    m.update(pred, target)
    res = m.compute()
    assert res["num_pixels"] == 7
    assert res["mean"] == pytest.approx(370 / 7)  # (0 + 10 + 20 + 25 + 45 + 90 + 180) / 7 = 52.857
    assert res["median"] == pytest.approx(25.0, abs=1e-3)  # the 4th of 7
    assert res["rmse"] == pytest.approx(math.sqrt((100 + 400 + 625 + 2025 + 8100 + 32400) / 7))  # 78.97
    assert res["within_11.25"] == pytest.approx(2 / 7)  # 0, 10
    assert res["within_22.5"] == pytest.approx(3 / 7)  # + 20
    assert res["within_30"] == pytest.approx(4 / 7)  # + 25
    # the per-pixel angles themselves
    torch.testing.assert_close(
        NormalMetrics.angles(pred, target).flatten(),
        torch.tensor([0.0, 10, 20, 25, 45, 90, 180], dtype=torch.float64), rtol=0, atol=1e-9,
    )


def test_normal_median_even_count_and_thresholds() -> None:
    # angles 11.2, 11.3, 60, 90: the median of an even count is the mean of the middle two, (11.3 + 60) / 2
    m = NormalMetrics()
    m.update(_normals([_unit(11.2), _unit(11.3), _unit(60), _unit(90)]), _normals([[0, 0, 1]] * 4))
    res = m.compute()
    assert res["median"] == pytest.approx(35.65, abs=1e-3)
    assert (res["within_11.25"], res["within_22.5"], res["within_30"]) == (0.25, 0.5, 0.5)


def test_normal_angle_is_stable_near_0_and_180_degrees() -> None:
    tiny = 1e-4  # radians
    g = _normals([[0, 0, 1], [0, 0, 1]], dtype=torch.float32)
    p = _normals([[math.sin(tiny), 0, math.cos(tiny)], [-math.sin(tiny), 0, -math.cos(tiny)]], dtype=torch.float32)
    # the naive formula loses these angles entirely in float32
    naive = torch.rad2deg(torch.acos((p * g).sum(dim=1).clamp(-1, 1))).flatten()
    assert naive.tolist() == [0.0, 180.0]
    angles = NormalMetrics.angles(p, g).flatten()
    assert angles[0].item() == pytest.approx(math.degrees(tiny), rel=1e-5)  # 0.0057296
    assert angles[1].item() == pytest.approx(180 - math.degrees(tiny), abs=2e-5)  # float32 spacing at 180: 1.5e-5
    for i, expected in ((0, math.degrees(tiny)), (1, 180 - math.degrees(tiny))):
        m = NormalMetrics()  # computes in float64 from the float32 inputs
        m.update(p[..., i : i + 1], g[..., i : i + 1])
        assert m.compute()["mean"] == pytest.approx(expected, rel=1e-6)


def test_normal_invalid_pixels_are_ignored() -> None:
    target = _normals([[0, 0, 1], [0, 0, 0], [0, 0, 1], [0, 0, 1]])
    pred = _normals([_unit(40), [math.nan, 0, 0], _unit(80), _unit(5)])
    valid = torch.tensor([[[True, True, False, True]]])
    m = NormalMetrics()
    m.update(pred, target, valid)  # the NaN sits on a zero target: not counted, no error
    res = m.compute()
    assert res["num_pixels"] == 2
    assert res["mean"] == pytest.approx((40 + 5) / 2)
    with pytest.raises(ValueError, match="NaN or inf"):
        NormalMetrics().update(pred, _normals([[0, 0, 1]] * 4))


def test_normal_streaming_and_merge() -> None:
    gen = torch.Generator().manual_seed(4)
    batches = []
    for n in (2, 1):
        p, g = torch.randn(n, 3, 6, 7, generator=gen), torch.randn(n, 3, 6, 7, generator=gen)
        g[:, :, 0] = 0.0  # an invalid row
        batches.append((p, g))
    streamed, whole, other = NormalMetrics(), NormalMetrics(), NormalMetrics()
    for p, g in batches:
        streamed.update(p, g)
    whole.update(torch.cat([p for p, _ in batches]), torch.cat([g for _, g in batches]))
    assert streamed.compute() == pytest.approx(whole.compute(), rel=1e-12)
    assert whole.compute()["num_pixels"] == 3 * 5 * 7
    part = NormalMetrics()
    part.update(*batches[0])
    other.update(*batches[1])
    part.merge(other)
    assert part.compute() == pytest.approx(whole.compute(), rel=1e-12)
    part.reset()
    assert part.compute()["num_pixels"] == 0 and math.isnan(part.compute()["median"])


def test_reexported_from_pixelwise_metrics() -> None:
    import pixelwise.metrics as pm

    assert pm.DepthMetrics is DepthMetrics and pm.NormalMetrics is NormalMetrics
    assert {"DepthMetrics", "NormalMetrics"} <= set(pm.__all__)
