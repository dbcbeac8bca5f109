"""Depth and surface-normal losses against values worked by hand, and their masking, invariances and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from pixelwise.depth.losses import (
    DEPTH_LOSSES,
    DepthLoss,
    angular_normal_loss,
    berhu_loss,
    build_depth_loss,
    cosine_normal_loss,
    gradient_matching_loss,
    l1_depth_loss,
    l2_depth_loss,
    scale_invariant_log_loss,
)

E = math.e
DEPTH_FNS = {
    "l1": l1_depth_loss,
    "l2": l2_depth_loss,
    "silog": scale_invariant_log_loss,
    "silog_sqrt": lambda p, t, v=None: scale_invariant_log_loss(p, t, v, sqrt=True),
    "berhu": berhu_loss,
    "gradient": gradient_matching_loss,
}
NORMAL_FNS = {"cosine": cosine_normal_loss, "angular": angular_normal_loss}


# ---- L1 / L2: the mean over the valid pixels of the whole batch ---------------------------------------------------

# Image 0: errors 0.5, (target 0: invalid), 1, 0 -> 3 valid pixels. Image 1: one valid pixel, error 2.
PRED = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[2.0, 2.0], [2.0, 2.0]]])
TARGET = torch.tensor([[[1.5, 0.0], [2.0, 4.0]], [[0.0, 0.0], [0.0, 4.0]]])


def test_l1_is_the_mean_over_the_batchs_valid_pixels():
    # (0.5 + 1 + 0 + 2) / 4 = 0.875; a per-image mean would be ((0.5 + 1 + 0) / 3 + 2) / 2 = 1.25
    assert l1_depth_loss(PRED, TARGET).item() == pytest.approx(0.875)


def test_l2_is_the_mean_squared_error_over_the_batchs_valid_pixels():
    # (0.25 + 1 + 0 + 4) / 4 = 1.3125
    assert l2_depth_loss(PRED, TARGET).item() == pytest.approx(1.3125)


def test_channel_dimension_and_explicit_mask():
    # (N, 1, H, W) and (N, H, W) mix freely; valid=False on the error-2 pixel leaves (0.5 + 1 + 0) / 3 = 0.5.
    valid = torch.ones(2, 1, 2, 2, dtype=torch.bool)
    valid[1, 0, 1, 1] = False
    assert l1_depth_loss(PRED[:, None], TARGET, valid).item() == pytest.approx(0.5)
    assert l1_depth_loss(PRED, TARGET[:, None], valid[:, 0]).item() == pytest.approx(0.5)


# ---- scale-invariant log loss: per image, then the mean over images ------------------------------------------------

def _silog_batch():
    # Image 0: log errors d = 1, 2, 3 at three valid pixels (pred = target * e^d), pixel (1, 1) invalid.
    #   mean d = 2, mean d^2 = (1 + 4 + 9) / 3 = 14/3.
    # Image 1: d = 0.5 at two valid pixels: mean d = 0.5, mean d^2 = 0.25.
    # Image 2: no valid pixel, left out of the mean.
    target = torch.tensor([
        [[1.0, 2.0], [0.5, 0.0]],
        [[3.0, 0.0], [0.0, 1.0]],
        [[0.0, 0.0], [0.0, 0.0]],
    ], dtype=torch.float64)
    pred = torch.tensor([
        [[1.0 * E, 2.0 * E**2], [0.5 * E**3, 7.0]],
        [[3.0 * E**0.5, 9.0], [9.0, 1.0 * E**0.5]],
        [[4.0, 4.0], [4.0, 4.0]],
    ], dtype=torch.float64)
    return pred, target


@pytest.mark.parametrize("lam, image0, image1", [
    (0.5, 14 / 3 - 0.5 * 4, 0.25 - 0.5 * 0.25),  # 8/3 and 0.125
    (1.0, 14 / 3 - 4, 0.25 - 0.25),  # the variances: 2/3 and 0
    (0.0, 14 / 3, 0.25),  # the mean squared log errors
])
def test_silog_by_hand(lam, image0, image1):
    pred, target = _silog_batch()
    assert scale_invariant_log_loss(pred, target, lam=lam).item() == pytest.approx((image0 + image1) / 2)


def test_silog_sqrt_variant_is_ten_times_the_root_per_image():
    pred, target = _silog_batch()
    # lam = 0.5: 10 sqrt(8/3) and 10 sqrt(0.125)
    expected = (10 * math.sqrt(8 / 3) + 10 * math.sqrt(0.125)) / 2
    assert scale_invariant_log_loss(pred, target, sqrt=True).item() == pytest.approx(expected)


def test_silog_with_lam_1_is_invariant_to_scaling_the_prediction():
    torch.manual_seed(0)
    target = torch.rand(2, 1, 5, 6) * 9 + 1
    target[0, 0, 2, :3] = 0
    pred = torch.rand(2, 1, 5, 6) * 9 + 1
    base = scale_invariant_log_loss(pred, target, lam=1.0)
    for s in (0.1, 3.7, 250.0):
        assert scale_invariant_log_loss(pred * s, target, lam=1.0).item() == pytest.approx(base.item(), rel=1e-4)
    # ... and lam = 0.5 is not
    assert scale_invariant_log_loss(pred * 3.7, target).item() != pytest.approx(
        scale_invariant_log_loss(pred, target).item(), rel=1e-2)


def test_silog_float32_keeps_a_small_variance_under_a_large_log_offset():
    # lam = 1 with d = ln 1e4 (about 9.2) plus noise of 0.01: mean(d^2) - mean(d)^2 would subtract two numbers near
    # 85 to get about 1e-4, losing most digits in float32; the float64 result is the reference.
    torch.manual_seed(7)
    target = torch.rand(1, 8, 8, dtype=torch.float64) * 9 + 1
    pred = target * 1e4 * torch.exp(0.01 * torch.randn(1, 8, 8, dtype=torch.float64))
    exact = scale_invariant_log_loss(pred, target, lam=1.0).item()
    assert 5e-5 < exact < 2e-4
    assert scale_invariant_log_loss(pred.float(), target.float(), lam=1.0).item() == pytest.approx(exact, rel=1e-3)


def test_silog_with_lam_0_is_the_mean_squared_log_error():
    torch.manual_seed(1)
    target = torch.rand(1, 4, 4, dtype=torch.float64) * 5 + 0.5
    target[0, 0, 0] = 0
    pred = torch.rand(1, 4, 4, dtype=torch.float64) * 5 + 0.5
    keep = target > 0
    msle = ((pred[keep].log() - target[keep].log()) ** 2).mean()
    assert scale_invariant_log_loss(pred, target, lam=0.0).item() == pytest.approx(msle.item())


def test_silog_sqrt_of_a_perfect_prediction_is_zero_with_zero_gradient():
    target = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    for pred in (target.clone(), target * 2):  # lam = 1: a scaled prediction is perfect too
        pred.requires_grad_(True)
        loss = scale_invariant_log_loss(pred, target, lam=1.0, sqrt=True)
        loss.backward()
        assert loss.item() == pytest.approx(0.0, abs=1e-3)
        assert torch.isfinite(pred.grad).all()


def test_silog_clamps_non_positive_predictions():
    target = torch.tensor([[[1.0, 2.0]]])
    pred = torch.tensor([[[-1.0, 2.0]]], requires_grad=True)
    loss = scale_invariant_log_loss(pred, target, eps=1e-3)
    loss.backward()
    # The -1 m prediction counts as 1e-3 m: d = ln(1e-3 / 1) = ln 1e-3 and ln(2 / 2) = 0, so
    # mean d^2 - 0.5 mean(d)^2 = (ln 1e-3)^2 / 2 - 0.5 (ln 1e-3 / 2)^2; the clamped pixel gets no gradient.
    ln = math.log(1e-3)
    assert loss.item() == pytest.approx(ln**2 / 2 - 0.5 * (ln / 2) ** 2, rel=1e-5)
    assert pred.grad[0, 0, 0].item() == 0.0


# ---- berHu ---------------------------------------------------------------------------------------------------------

def test_berhu_by_hand_with_c_from_the_batch():
    # Errors x = 0.1, -0.5, 1.0, 2.0 at valid pixels; a 100 m error at an invalid pixel does not set c.
    # c = 0.2 * 2.0 = 0.4; 0.1 <= c -> 0.1; the others: (x^2 + 0.16) / 0.8 -> 0.41 / 0.8 = 0.5125, 1.16 / 0.8 = 1.45,
    # 4.16 / 0.8 = 5.2. Mean: (0.1 + 0.5125 + 1.45 + 5.2) / 4 = 7.2625 / 4 = 1.815625.
    target = torch.tensor([[[1.0, 1.0, 1.0], [1.0, 0.0, 1.0]]])
    pred = torch.tensor([[[1.1, 0.5, 2.0], [3.0, 100.0, 1.0]]])
    # the sixth pixel has x = 0: 0 in the L1 branch, and it counts: (7.2625 + 0) / 5 = 1.4525
    assert berhu_loss(pred, target).item() == pytest.approx(1.4525)
    valid = torch.tensor([[[True, True, True], [True, True, False]]])
    assert berhu_loss(pred, target, valid).item() == pytest.approx(1.815625)


def test_berhu_is_l1_below_c_and_the_quadratic_branch_above():
    torch.manual_seed(2)
    target = torch.rand(2, 1, 4, 4) * 5 + 1
    target[1, 0, 0] = 0
    pred = target + torch.randn(2, 1, 4, 4).clamp(-2, 2)
    pred = torch.where((pred - target).abs() < 0.05, target + 0.05, pred)  # every |x| in [0.05, 2]
    assert berhu_loss(pred, target, c=2.5).item() == pytest.approx(l1_depth_loss(pred, target).item())
    c = 0.01  # below every |x|: mean (x^2 + c^2) / (2c) = (mean x^2 + c^2) / (2c)
    expected = (l2_depth_loss(pred, target).item() + c**2) / (2 * c)
    assert berhu_loss(pred, target, c=c).item() == pytest.approx(expected, rel=1e-5)


def test_berhu_is_continuous_with_slope_1_at_c():
    target = torch.ones(1, 1, 1, dtype=torch.float64)
    values, slopes = [], []
    for x in (0.5 - 1e-9, 0.5, 0.5 + 1e-9):
        pred = (target + x).requires_grad_(True)
        loss = berhu_loss(pred, target, c=0.5)
        loss.backward()
        values.append(loss.item())
        slopes.append(pred.grad.item())
    assert values == pytest.approx([0.5, 0.5, 0.5], abs=1e-8)
    assert slopes == pytest.approx([1.0, 1.0, 1.0], abs=1e-8)


# ---- gradient matching ---------------------------------------------------------------------------------------------

def test_gradient_matching_is_zero_for_a_scaled_prediction():
    torch.manual_seed(3)
    target = torch.rand(2, 1, 9, 11) * 9 + 1
    target[0, 0, 3:5, 2:7] = 0
    assert gradient_matching_loss(target * 3.0, target).item() == pytest.approx(0.0, abs=1e-6)
    assert gradient_matching_loss(target * 3.0 + 0.5, target).item() > 1e-3  # a shift is not a scale in log depth


def test_gradient_matching_penalises_a_shifted_edge():
    # Both rows: target 1 1 2 2, prediction 1 2 2 2 (the edge one column early). R = log pred - log target
    # = 0, ln 2, 0, 0 per row. Scale 0: x-differences ln 2 + ln 2 + 0 per row, 4 ln 2 in all, no y-difference,
    # 8 valid pixels -> ln 2 / 2. Scale 1 keeps row 0, columns 0 and 2: R = 0, 0 -> 0. Scales 2, 3: one pixel, 0.
    target = torch.tensor([[[1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0]]])
    pred = torch.tensor([[[1.0, 2.0, 2.0, 2.0], [1.0, 2.0, 2.0, 2.0]]])
    assert gradient_matching_loss(pred, target).item() == pytest.approx(math.log(2) / 2)
    assert gradient_matching_loss(pred, target, scales=1).item() == pytest.approx(math.log(2) / 2)


def test_gradient_matching_skips_pairs_with_an_invalid_pixel():
    # One row: target 1 0 1 1, prediction 2 5 1 3 -> R = ln 2, (invalid), 0, ln 3.
    # Scale 0: only the pair (2, 3) is valid: |ln 3 - 0| = ln 3, over 3 valid pixels -> ln 3 / 3.
    # Scale 1: columns 0 and 2, both valid: |0 - ln 2| = ln 2, over 2 valid pixels -> ln 2 / 2.
    target = torch.tensor([[[1.0, 0.0, 1.0, 1.0]]])
    pred = torch.tensor([[[2.0, 5.0, 1.0, 3.0]]])
    assert gradient_matching_loss(pred, target, scales=2).item() == pytest.approx(math.log(3) / 3 + math.log(2) / 2)


# ---- normals -------------------------------------------------------------------------------------------------------

def _normals(pred_xyz, target_xyz=(1.0, 0.0, 0.0), dtype=torch.float32):
    pred = torch.tensor(pred_xyz, dtype=dtype).reshape(1, 3, 1, 1).requires_grad_(True)
    return pred, torch.tensor(target_xyz, dtype=dtype).reshape(1, 3, 1, 1)


@pytest.mark.parametrize("pred_xyz, angle, cosine", [
    ((3.0, 0.0, 0.0), 0.0, 0.0),  # same direction, length 3
    ((1.0, math.sqrt(3.0), 0.0), math.pi / 3, 0.5),  # cos 60° = 0.5
    ((0.0, 2.0, 0.0), math.pi / 2, 1.0),
    ((0.0, -0.7, 0.7), math.pi / 2, 1.0),
    ((-0.5, 0.0, 0.0), math.pi, 2.0),
])
def test_normal_losses_at_known_angles(pred_xyz, angle, cosine):
    pred, target = _normals(pred_xyz)
    assert angular_normal_loss(pred, target).item() == pytest.approx(angle, abs=1e-6)
    assert cosine_normal_loss(pred, target).item() == pytest.approx(cosine, abs=1e-6)


def test_angular_loss_is_exact_and_differentiable_at_0_and_180_degrees():
    for pred_xyz, angle in (((2.0, 0.0, 0.0), 0.0), ((-2.0, 0.0, 0.0), math.pi)):
        pred, target = _normals(pred_xyz)
        loss = angular_normal_loss(pred, target)
        loss.backward()
        if angle == 0.0:
            assert loss.item() == 0.0  # |p - n| is exactly 0
        else:
            assert loss.item() == pytest.approx(math.pi, rel=1e-7)  # 2 atan2(2, 0) = pi, to float32 rounding
        assert torch.isfinite(pred.grad).all()
    # just off 0°, the gradient has the angle's unit slope (acos would be infinite there)
    pred, target = _normals((1.0, 1e-4, 0.0))
    loss = angular_normal_loss(pred, target)
    loss.backward()
    assert loss.item() == pytest.approx(1e-4, rel=1e-3)  # acos(cos) in float32 gives 0 here
    assert pred.grad[0, 1, 0, 0].item() == pytest.approx(1.0, rel=1e-3)


def test_normal_losses_pool_pixels_and_skip_zero_targets():
    # Three pixels: 0°, 90°, and a zero target (invalid) -> mean angle pi/4, mean (1 - cos) 0.5.
    pred = torch.tensor([[1.0, 0.0, 5.0], [0.0, 1.0, 5.0], [0.0, 0.0, 5.0]]).reshape(1, 3, 1, 3)
    target = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]).reshape(1, 3, 1, 3)
    assert angular_normal_loss(pred, target).item() == pytest.approx(math.pi / 4)
    assert cosine_normal_loss(pred, target).item() == pytest.approx(0.5)


# ---- invalid pixels never count -------------------------------------------------------------------------------------

def _depth_case():
    torch.manual_seed(4)
    target = torch.rand(2, 1, 6, 7, dtype=torch.float64) * 9 + 1
    target[0, 0, 1:3, 2:5] = 0  # no measurement
    valid = torch.ones(2, 1, 6, 7, dtype=torch.bool)
    valid[1, 0, 4:, :3] = False  # masked out explicitly, the target is valid there
    pred = torch.rand(2, 1, 6, 7, dtype=torch.float64) * 9 + 1
    return pred, target, valid


def _loss_and_grad(fn, pred, target, valid):
    pred = pred.clone().requires_grad_(True)
    loss = fn(pred, target, valid)
    loss.backward()
    return loss.detach(), pred.grad


@pytest.mark.parametrize("name", DEPTH_FNS)
def test_invalid_depth_pixels_change_neither_loss_nor_gradient(name):
    fn = DEPTH_FNS[name]
    pred, target, valid = _depth_case()
    out = ~(valid & (target > 0))
    loss, grad = _loss_and_grad(fn, pred, target, valid)
    assert torch.isfinite(loss) and loss > 0
    assert torch.equal(grad[out], torch.zeros_like(grad[out]))
    assert (grad[~out] != 0).any()

    wild_pred = pred.clone()
    wild_pred[out] = torch.tensor([math.nan, math.inf, -3.0, 1e9, 0.0], dtype=pred.dtype).repeat(30)[: int(out.sum())]
    wild_target = target.clone()
    wild_target[~valid] = 1e6  # explicit mask beats a valid-looking target
    wild_target[0, 0, 1, 2] = math.nan  # non-finite ground truth is invalid as well
    loss2, grad2 = _loss_and_grad(fn, wild_pred, wild_target, valid)
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-12)
    assert torch.equal(grad2[out], torch.zeros_like(grad2[out]))
    torch.testing.assert_close(grad2[~out], grad[~out])


@pytest.mark.parametrize("name", NORMAL_FNS)
def test_invalid_normal_pixels_change_neither_loss_nor_gradient(name):
    fn = NORMAL_FNS[name]
    torch.manual_seed(5)
    target = torch.nn.functional.normalize(torch.randn(2, 3, 4, 5, dtype=torch.float64), dim=1)
    target[0, :, 1, 1:4] = 0
    valid = torch.ones(2, 4, 5, dtype=torch.bool)
    valid[1, 2:, :] = False
    pred = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    out = (~(valid & (target.abs().sum(1) > 0)))[:, None].expand_as(pred)
    loss, grad = _loss_and_grad(fn, pred, target, valid)
    assert torch.equal(grad[out], torch.zeros_like(grad[out]))
    wild = pred.clone()
    wild[out] = math.nan
    loss2, grad2 = _loss_and_grad(fn, wild, target, valid)
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-12)
    assert torch.equal(grad2[out], torch.zeros_like(grad2[out]))


@pytest.mark.parametrize("name", [*DEPTH_FNS, *NORMAL_FNS])
def test_all_invalid_batch_gives_zero_and_a_zero_gradient(name):
    fn = DEPTH_FNS.get(name) or NORMAL_FNS[name]
    channels = 3 if name in NORMAL_FNS else 1
    pred = torch.rand(2, channels, 4, 4, requires_grad=True)
    loss = fn(pred, torch.zeros(2, channels, 4, 4))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(pred.grad, torch.zeros_like(pred))
    # and with valid targets but an all-False mask
    pred.grad = None
    loss = fn(pred, torch.ones(2, channels, 4, 4), torch.zeros(2, 4, 4, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(pred.grad, torch.zeros_like(pred))


# ---- gradcheck in float64 ------------------------------------------------------------------------------------------

def test_gradcheck_silog():
    torch.manual_seed(6)
    target = torch.rand(2, 3, 3, dtype=torch.float64) + 0.5
    target[0, 1, 1] = 0
    pred = (torch.rand(2, 3, 3, dtype=torch.float64) + 0.5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: scale_invariant_log_loss(p, target, lam=0.5), (pred,))
    assert torch.autograd.gradcheck(lambda p: scale_invariant_log_loss(p, target, lam=0.85, sqrt=True), (pred,))


def test_gradcheck_berhu_away_from_the_kink():
    # A fixed c: with the default c = 0.2 max|x| (detached, as in the paper) the finite difference at the pixel
    # of the largest error would also move c, which the analytic gradient deliberately ignores.
    target = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 0.0, 6.0]]], dtype=torch.float64)
    pred = torch.tensor([[[1.1, 2.9, 2.95], [2.0, 1.0, 6.3]]], dtype=torch.float64, requires_grad=True)
    # |x| = 0.1, 0.9, 0.05, 2.0, (invalid), 0.3: every one at least 0.2 from c = 0.5
    assert torch.autograd.gradcheck(lambda p: berhu_loss(p, target, c=0.5), (pred,))


# ---- lookup by name, errors -----------------------------------------------------------------------------------------

def test_build_depth_loss_sums_weighted_terms():
    pred, target, valid = _depth_case()
    loss = build_depth_loss("silog + 0.5*gradient", lam=1.0, scales=2)
    expected = scale_invariant_log_loss(pred, target, valid, lam=1.0) + 0.5 * gradient_matching_loss(
        pred, target, valid, scales=2)
    assert isinstance(loss, DepthLoss)
    assert loss(pred, target, valid).item() == pytest.approx(expected.item())
    assert build_depth_loss("l1+gradient")(pred, target).item() == pytest.approx(
        (l1_depth_loss(pred, target) + gradient_matching_loss(pred, target)).item())
    assert build_depth_loss("angular").is_normal_loss
    assert set(DEPTH_LOSSES) == {"l1", "l2", "silog", "berhu", "gradient", "cosine", "angular"}


def test_build_depth_loss_errors():
    with pytest.raises(ValueError, match=r"unknown depth loss 'silogg'.*known: l1, l2, silog, berhu"):
        build_depth_loss("silogg")
    with pytest.raises(ValueError, match="mixes depth terms and normal terms"):
        build_depth_loss("l1+angular")
    with pytest.raises(ValueError, match="not accepted"):
        build_depth_loss("l1", lam=0.5)
    with pytest.raises(ValueError, match="bad weight"):
        build_depth_loss("x*l1")
    with pytest.raises(ValueError, match="lam must be in"):
        build_depth_loss("silog", lam=2.0)
    with pytest.raises(ValueError, match="c must be > 0"):
        build_depth_loss("berhu", c=0.0)
    with pytest.raises(ValueError, match="scales must be"):
        build_depth_loss("gradient", scales=0)


def test_input_errors():
    with pytest.raises(ValueError, match="do not match"):
        l1_depth_loss(torch.ones(1, 4, 4), torch.ones(1, 4, 5))
    with pytest.raises(ValueError, match="floating-point"):
        l1_depth_loss(torch.ones(1, 4, 4), torch.ones(1, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="bool"):
        l1_depth_loss(torch.ones(1, 4, 4), torch.ones(1, 4, 4), torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        angular_normal_loss(torch.ones(1, 2, 4, 4), torch.ones(1, 2, 4, 4))


def test_half_precision_inputs_are_computed_in_float32():
    pred = torch.full((1, 1, 2, 2), 2.0, dtype=torch.bfloat16)
    target = torch.ones(1, 1, 2, 2, dtype=torch.bfloat16)
    loss = scale_invariant_log_loss(pred, target, lam=0.0)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(math.log(2) ** 2, rel=1e-6)
