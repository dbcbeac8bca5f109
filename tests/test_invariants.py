"""Property-based tests (hypothesis) of the invariants users rely on in the metrics and the data transforms.

Metrics: the confusion matrix, and so every metric, depends only on the multiset of (target, prediction) pixel
pairs: it is unchanged by flipping, transposing or rotating prediction and target together, by reordering the
batch and by splitting it over several ``update`` calls; relabelling the classes permutes the per-class values and
leaves the means alone; void pixels never count, whatever is predicted there; and the whole result agrees with an
independent, plain-Python computation that follows the documented absent-class (NaN) convention.

Transforms: ``train_transforms`` keeps image and mask aligned (the image encodes the mask, and the encoding must
survive the random scale, crop, padding and flip), padding only ever adds ``ignore_index`` to the mask, and
``pad_collate`` / ``eval_transforms`` never change the original pixels.

Every test is derandomized (the examples are a function of the test alone) and writes no example database, so CI
runs are reproducible.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torchvision import tv_tensors

from pixelwise.data import eval_transforms, pad_collate, train_transforms
from pixelwise.metrics import SegmentationMetrics

# Reproducible: the same examples on every run, no .hypothesis/ database written into the repository.
_PROFILE = dict(deadline=None, derandomize=True, database=None)

# ignore_index values a user may pass: the usual 255, negative ones (-1, torchvision / PyTorch's -100), one beyond
# int32 (takes the int64 counting path) and, drawn per example, a class index inside [0, K).
_IGNORE_CHOICES = [None, 255, -1, -100, 2**33, "a class"]


# -- strategies ------------------------------------------------------------------------------------------------------
@st.composite
def labelled_batches(draw, max_k: int = 6, max_n: int = 3, min_side: int = 1, max_side: int = 7, ignore=None):
    """(k, ignore_index, preds, target): int64 numpy arrays of shape (N, H, W); targets in [0, K) or void, predictions
    in [0, K). ``ignore`` restricts the ignore_index choices."""
    k = draw(st.integers(1, max_k))
    ignore_index = draw(st.sampled_from(ignore if ignore is not None else _IGNORE_CHOICES))
    if ignore_index == "a class":
        ignore_index = draw(st.integers(0, k - 1))
    shape = (
        draw(st.integers(1, max_n)),
        draw(st.integers(min_side, max_side)),
        draw(st.integers(min_side, max_side)),
    )
    values = list(range(k))
    if ignore_index is not None and ignore_index not in values:
        values.append(ignore_index)
    target = draw(arrays(np.int64, shape, elements=st.sampled_from(values)))
    preds = draw(arrays(np.int64, shape, elements=st.integers(0, k - 1)))
    return k, ignore_index, preds, target


def _logits(preds: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Float scores of shape (N, K, H, W) whose argmax over dim 1 is ``preds``: noise in [0, 1) plus 2 on the class."""
    noise = torch.rand(preds.shape[0], k, *preds.shape[1:], generator=torch.Generator().manual_seed(seed))
    return noise + 2.0 * torch.nn.functional.one_hot(preds, k).movedim(-1, 1)


def _metrics(k: int, ignore_index, *batches) -> dict:
    m = SegmentationMetrics(k, ignore_index=ignore_index)
    for preds, target in batches:
        m.update(preds, target)
    return m.compute()


def _nan_equal(a, b) -> bool:
    """Exact equality of nested results, NaN equal to NaN."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_nan_equal(a[x], b[x]) for x in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_nan_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


def _close(a: float, b: float) -> bool:
    """Equal up to float64 rounding (sums taken in another order), NaN equal to NaN."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)


# -- an independent oracle -------------------------------------------------------------------------------------------
def _oracle_confusion(preds: np.ndarray, target: np.ndarray, k: int, ignore_index) -> list[list[int]]:
    """One pixel at a time: row = ground truth, column = prediction; void pixels are skipped."""
    cm = [[0] * k for _ in range(k)]
    for t, p in zip(target.ravel().tolist(), preds.ravel().tolist()):
        if ignore_index is not None and t == ignore_index:
            continue
        cm[t][p] += 1
    return cm


def _oracle_metrics(cm: list[list[int]]) -> dict:
    """The metrics of the module docstring (FCN paper, section 5) from a confusion matrix, in plain Python, with the
    documented convention: a ratio with denominator 0 is NaN, and NaN classes are left out of the means."""
    nan = math.nan
    k = len(cm)
    tp = [cm[i][i] for i in range(k)]
    gt = [sum(cm[i]) for i in range(k)]
    pred = [sum(cm[j][i] for j in range(k)) for i in range(k)]
    total = sum(gt)

    def div(a, b):
        return a / b if b else nan

    def mean(xs):
        defined = [x for x in xs if not math.isnan(x)]
        return sum(defined) / len(defined) if defined else nan

    iou = [div(tp[i], gt[i] + pred[i] - tp[i]) for i in range(k)]
    acc = [div(tp[i], gt[i]) for i in range(k)]
    dice = [div(2 * tp[i], gt[i] + pred[i]) for i in range(k)]
    return {
        "pixel_accuracy": div(sum(tp), total),
        "mean_accuracy": mean(acc),
        "accuracy": acc,
        "IoU": iou,
        "mIoU": mean(iou),
        "fwIoU": sum(gt[i] / total * iou[i] for i in range(k) if gt[i]) if total else nan,
        "Dice": dice,
        "dice": mean(dice),
        "precision": [div(tp[i], pred[i]) for i in range(k)],
        "num_pixels": total,
        "confusion_matrix": cm,
    }


# -- metrics ---------------------------------------------------------------------------------------------------------
@settings(max_examples=150, **_PROFILE)
@given(
    batch=labelled_batches(min_side=0),
    dtype=st.sampled_from([torch.int64, torch.int32, torch.uint8]),
    as_logits=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_metrics_agree_with_a_plain_python_oracle(batch, dtype, as_logits, seed):
    k, ignore_index, preds_np, target_np = batch
    fits = {torch.int32: (-(2**31), 2**31 - 1), torch.uint8: (0, 255)}.get(dtype)
    if fits is not None and ignore_index is not None and not fits[0] <= ignore_index <= fits[1]:
        dtype = torch.int64  # the ignore_index cannot be stored in this dtype: not a meaningful input
    target = torch.from_numpy(target_np).to(dtype)
    preds = torch.from_numpy(preds_np)
    res = _metrics(k, ignore_index, (_logits(preds, k, seed) if as_logits else preds, target))

    expected = _oracle_metrics(_oracle_confusion(preds_np, target_np, k, ignore_index))
    assert res.keys() == expected.keys()
    assert res["confusion_matrix"] == expected["confusion_matrix"]
    assert res["num_pixels"] == expected["num_pixels"]
    for key in ("IoU", "accuracy", "Dice", "precision"):
        assert len(res[key]) == k
        assert all(_close(a, b) for a, b in zip(res[key], expected[key])), (key, res[key], expected[key])
    for key in ("pixel_accuracy", "mean_accuracy", "mIoU", "fwIoU", "dice"):
        assert _close(res[key], expected[key]), (key, res[key], expected[key])
        # Fractions in [0, 1] (up to float64 rounding: fwIoU is a sum of K products and can reach 1 + 2**-52).
        assert math.isnan(res[key]) or 0.0 <= res[key] <= 1.0 + 1e-12, key
    if ignore_index is not None and 0 <= ignore_index < k:
        # Documented: an ignore_index inside [0, K) is a class that never has ground-truth pixels.
        assert sum(res["confusion_matrix"][ignore_index]) == 0 and math.isnan(res["accuracy"][ignore_index])


@settings(max_examples=60, **_PROFILE)
@given(batch=labelled_batches())
def test_perfect_prediction_scores_one_and_nan_only_for_absent_classes(batch):
    k, ignore_index, _, target_np = batch
    target = torch.from_numpy(target_np)
    preds = target.clone()
    void = target == ignore_index if ignore_index is not None else torch.zeros_like(target, dtype=torch.bool)
    preds[void] = 0  # anything in [0, K) at void pixels
    res = _metrics(k, ignore_index, (preds, target))
    present = {int(c) for c in target[~void].unique()}
    for key in ("IoU", "accuracy", "Dice", "precision"):
        assert [c for c, v in enumerate(res[key]) if not math.isnan(v)] == sorted(present), key
        assert all(res[key][c] == 1.0 for c in present), key
    for key in ("pixel_accuracy", "mean_accuracy", "mIoU", "fwIoU", "dice"):
        # fwIoU is a weighted sum of ones: 1 up to rounding (1/6 + 4/6 + 1/6 gives 0.9999999999999999).
        assert _close(res[key], 1.0) if present else math.isnan(res[key]), (key, res[key])


_GEOMETRIC = {
    "hflip": lambda x: x.flip(-1),
    "vflip": lambda x: x.flip(-2),
    "transpose": lambda x: x.transpose(-2, -1),  # a non-contiguous view
    "rot90": lambda x: x.rot90(1, (-2, -1)),
    "rot180": lambda x: x.rot90(2, (-2, -1)),
    "rot270": lambda x: x.rot90(3, (-2, -1)),
}


@settings(max_examples=100, **_PROFILE)
@given(
    batch=labelled_batches(),
    ops=st.lists(st.sampled_from(sorted(_GEOMETRIC)), min_size=1, max_size=3),
    batch_order=st.randoms(use_true_random=False),
    as_logits=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_metrics_are_invariant_to_joint_flips_rotations_and_batch_order(batch, ops, batch_order, as_logits, seed):
    k, ignore_index, preds_np, target_np = batch
    target = torch.from_numpy(target_np)
    preds = torch.from_numpy(preds_np)
    if as_logits:
        preds = _logits(preds, k, seed)  # (N, K, H, W): the same spatial dims last, batch first
    before = _metrics(k, ignore_index, (preds, target))

    order = list(range(target.shape[0]))
    batch_order.shuffle(order)
    moved_p, moved_t = preds[order], target[order]
    for op in ops:
        moved_p, moved_t = _GEOMETRIC[op](moved_p), _GEOMETRIC[op](moved_t)
    after = _metrics(k, ignore_index, (moved_p, moved_t))
    assert _nan_equal(after, before), (ops, order)


@settings(max_examples=100, **_PROFILE)
@given(batch=labelled_batches(max_n=5), data=st.data())
def test_splitting_a_batch_over_updates_or_accumulators_changes_nothing(batch, data):
    k, ignore_index, preds_np, target_np = batch
    preds, target = torch.from_numpy(preds_np), torch.from_numpy(target_np)
    whole = _metrics(k, ignore_index, (preds, target))

    # Cut along the batch, the rows or the columns, at hypothesis-chosen points (empty pieces included).
    dim = data.draw(st.integers(0, 2), label="dim")
    size = target.shape[dim]
    cuts = sorted(data.draw(st.lists(st.integers(0, size), max_size=4), label="cuts"))
    bounds = [0, *cuts, size]
    pieces = [
        (preds.narrow(dim, a, b - a), target.narrow(dim, a, b - a)) for a, b in zip(bounds, bounds[1:])
    ]
    assert _nan_equal(_metrics(k, ignore_index, *pieces), whole)

    # The same pieces counted by separate accumulators (data-loader workers, shards) and merged.
    merged = SegmentationMetrics(k, ignore_index=ignore_index)
    for piece in pieces:
        part = SegmentationMetrics(k, ignore_index=ignore_index)
        part.update(*piece)
        merged.merge(part)
    assert _nan_equal(merged.compute(), whole)


@settings(max_examples=100, **_PROFILE)
@given(batch=labelled_batches(ignore=[None, 255, -1, 2**33]), data=st.data())
def test_relabelling_classes_permutes_per_class_values_and_keeps_the_means(batch, data):
    k, ignore_index, preds_np, target_np = batch
    perm = data.draw(st.permutations(range(k)), label="perm")  # class c becomes perm[c]
    lut = np.array(perm)
    void = target_np == ignore_index if ignore_index is not None else np.zeros(target_np.shape, bool)
    new_target = np.where(void, target_np, lut[np.where(void, 0, target_np)])
    new_preds = lut[preds_np]

    old = _metrics(k, ignore_index, (torch.from_numpy(preds_np), torch.from_numpy(target_np)))
    new = _metrics(k, ignore_index, (torch.from_numpy(new_preds), torch.from_numpy(new_target)))

    for i in range(k):
        for j in range(k):
            assert new["confusion_matrix"][perm[i]][perm[j]] == old["confusion_matrix"][i][j]
    for key in ("IoU", "accuracy", "Dice", "precision"):
        # Per-class values are computed from the same integers: permuted exactly.
        assert _nan_equal([new[key][perm[c]] for c in range(k)], old[key]), key
    assert new["num_pixels"] == old["num_pixels"]
    for key in ("pixel_accuracy", "mean_accuracy", "mIoU", "fwIoU", "dice"):
        assert _close(new[key], old[key]), (key, new[key], old[key])


@settings(max_examples=100, **_PROFILE)
@given(
    batch=labelled_batches(ignore=[255, -1, -100, 2**33, "a class"]),
    junk=st.lists(st.integers(-(2**62), 2**62), min_size=1, max_size=8),
    data=st.data(),
)
def test_void_pixels_never_change_any_metric_whatever_is_predicted_there(batch, junk, data):
    """The docstring: void pixels are counted neither as ground truth nor as prediction, and predictions there are
    not looked at, so even values outside [0, K) (or beyond int32) must neither count nor raise."""
    k, ignore_index, preds_np, target_np = batch
    extra_void = data.draw(arrays(np.bool_, target_np.shape), label="extra void")
    target_np = np.where(extra_void, ignore_index, target_np)  # more void than the strategy's 1 in K + 1
    preds, target = torch.from_numpy(preds_np), torch.from_numpy(target_np)
    before = _metrics(k, ignore_index, (preds, target))

    void = target == ignore_index
    event(f"void pixels: {'some' if bool(void.any()) else 'none'}")
    junk_preds = preds.clone()
    junk_preds[void] = torch.tensor(junk)[torch.arange(int(void.sum())) % len(junk)]
    # And a whole extra batch of void pixels, with junk predictions too.
    extra_n = data.draw(st.integers(1, 3), label="void batch size")
    extra_t = torch.full((extra_n, *target.shape[1:]), ignore_index, dtype=torch.int64)
    extra_p = torch.tensor(junk)[torch.arange(extra_t.numel()) % len(junk)].reshape(extra_t.shape)
    after = _metrics(k, ignore_index, (junk_preds, target), (extra_p, extra_t))
    assert _nan_equal(after, before)
    assert torch.equal(target, torch.from_numpy(target_np)), "update must not write into the caller's target"


# -- transforms ------------------------------------------------------------------------------------------------------
VOID = 255


def _as_uint(image: torch.Tensor) -> np.ndarray:
    """Undo ToDtype(scale=True) with mean 0, std 1: back to the 0..255 integers."""
    return (image.as_subclass(torch.Tensor) * 255).round().long().numpy()


def _uniform_neighbourhood(m: np.ndarray, radius: int) -> np.ndarray:
    """True where the (2 radius + 1)^2 window around a pixel lies inside ``m`` and holds one value."""
    pm = np.pad(m, radius, constant_values=-1)
    h, w = m.shape
    same = np.ones_like(m, dtype=bool)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            same &= pm[radius + dy : radius + dy + h, radius + dx : radius + dx + w] == m
    return same


def _is_rectangle(region: np.ndarray) -> bool:
    rows, cols = region.any(1), region.any(0)
    rect = np.outer(rows, cols)
    contiguous = all(np.ptp(np.flatnonzero(x)) + 1 == x.sum() if x.any() else True for x in (rows, cols))
    return bool(np.array_equal(rect, region) and contiguous)


@st.composite
def block_masks(draw):
    """A mask of constant blocks (each at least 8 pixels on a side) of class ids in [0, 5) and void."""
    nb_h, nb_w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    bh, bw = draw(st.integers(8, 24)), draw(st.integers(8, 24))
    ids = draw(arrays(np.int64, (nb_h, nb_w), elements=st.sampled_from([0, 1, 2, 3, 4, VOID])))
    return np.kron(ids, np.ones((bh, bw), np.int64))


@settings(max_examples=100, **_PROFILE)
@given(
    mask_np=block_masks(),
    channels=st.sampled_from([1, 3]),
    crop=st.tuples(st.integers(8, 48), st.integers(8, 48)),
    scales=st.tuples(st.floats(0.5, 2.0), st.floats(0.5, 2.0)).map(sorted),
    hflip=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_train_transforms_keep_image_and_mask_aligned_under_random_scale(mask_np, channels, crop, scales, hflip, seed):
    """The image encodes the mask (class c -> 40 c + 20, void -> 250, never 0), so wherever the output mask is one
    class over a 7x7 window (beyond the reach of bilinear blending for scales in [0.5, 2] and blocks of >= 8 pixels)
    the output image must still encode that class; and padding (image 0) must be void in the mask."""
    code = np.where(mask_np == VOID, 250, mask_np * 40 + 20)
    image = tv_tensors.Image(torch.from_numpy(np.stack([code] * channels).astype(np.uint8)))
    mask = tv_tensors.Mask(torch.from_numpy(mask_np.copy()))
    tf = train_transforms(
        crop, scales, mean=(0.0,) * channels, std=(1.0,) * channels, ignore_index=VOID, hflip=hflip, color_jitter=0
    )
    torch.manual_seed(seed)
    out_img, out_mask = tf(image, mask)

    assert isinstance(out_mask, tv_tensors.Mask) and out_mask.dtype == torch.int64
    assert tuple(out_img.shape) == (channels, *crop) and tuple(out_mask.shape) == tuple(crop)
    m, v = out_mask.numpy(), _as_uint(out_img)
    assert np.all(v == v[0]), "the channels were transformed alike"
    v = v[0]
    assert set(np.unique(m).tolist()) <= set(np.unique(mask_np).tolist()) | {VOID}, "nearest resizing invents no ids"

    pad = v == 0
    assert np.all(v[~pad] >= 19), "real pixels encode >= 20; only padding is 0"
    assert np.all(m[pad] == VOID), "padding must be void in the mask"
    assert _is_rectangle(~pad), "the (scaled) image is one rectangle inside the crop"

    checked = _uniform_neighbourhood(m, 3) & (m != VOID)
    assert np.all(np.abs(v[checked] - (m[checked] * 40 + 20)) <= 2), "image and mask are misaligned"
    event(f"aligned pixels checked: {'some' if checked.any() else 'none'}")


def _coordinate_image(mask_np: np.ndarray) -> tv_tensors.Image:
    """Channel 0 encodes the mask (id * 40, void 250), channels 1 and 2 the source row and column, counted from 1 so
    that 0 only appears in padding."""
    h, w = mask_np.shape
    rows, cols = np.mgrid[1 : h + 1, 1 : w + 1]
    return tv_tensors.Image(torch.from_numpy(np.stack([np.where(mask_np == VOID, 250, mask_np * 40), rows, cols])
                                             .astype(np.uint8)))


@settings(max_examples=80, **_PROFILE)
@given(
    mask_np=st.tuples(st.integers(1, 40), st.integers(1, 40)).flatmap(
        lambda hw: arrays(np.int64, hw, elements=st.sampled_from([0, 1, 2, 3, 4, 5, VOID]))
    ),
    crop=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    ignore_index=st.sampled_from([255, 250, 7]),
    hflip=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_train_crop_pad_and_flip_move_every_pixel_with_its_label(mask_np, crop, ignore_index, hflip, seed):
    """Without rescaling each output pixel can be traced back to its source pixel exactly: the crop window is a
    contiguous (possibly mirrored) block of the image, every pixel keeps its own mask value, no source pixel appears
    twice, and every padded pixel is 0 in the image and ``ignore_index`` in the mask."""
    h, w = mask_np.shape
    image = _coordinate_image(mask_np)
    mask = tv_tensors.Mask(torch.from_numpy(mask_np.copy()))
    tf = train_transforms(
        crop, (1.0, 1.0), mean=(0, 0, 0), std=(1, 1, 1), ignore_index=ignore_index, hflip=hflip, color_jitter=0
    )
    torch.manual_seed(seed)
    out_img, out_mask = tf(image, mask)

    assert tuple(out_img.shape) == (3, *crop) and tuple(out_mask.shape) == tuple(crop)
    m, v = out_mask.numpy(), _as_uint(out_img)
    real = v[1] > 0
    pad = ~real
    assert np.all(m[pad] == ignore_index), "padding adds ignore_index, and only that, to the mask"
    assert np.all(v[:, pad] == 0), "padding is 0 in the image"
    assert _is_rectangle(real)
    assert int(real.sum()) == min(h, crop[0]) * min(w, crop[1]), "a dimension smaller than the crop is kept whole"

    rows, cols = v[1] - 1, v[2] - 1
    src = list(zip(rows[real].tolist(), cols[real].tolist()))
    assert len(set(src)) == len(src), "no source pixel is used twice"
    assert np.array_equal(m[real], mask_np[rows[real], cols[real]]), "a pixel carries its own mask value"
    assert np.array_equal(v[0][real], np.where(m[real] == VOID, 250, m[real] * 40))

    # One contiguous window: rows in order, columns in order or (only with hflip) all mirrored.
    r_idx, c_idx = np.flatnonzero(real.any(1)), np.flatnonzero(real.any(0))
    window_rows = rows[np.ix_(r_idx, c_idx)]
    window_cols = cols[np.ix_(r_idx, c_idx)]
    assert np.all(np.diff(window_rows, axis=0) == 1) and np.all(np.diff(window_rows, axis=1) == 0)
    step = np.diff(window_cols, axis=1)
    assert np.all(np.diff(window_cols, axis=0) == 0)
    assert np.all(step == 1) or (hflip and np.all(step == -1))


@settings(max_examples=80, **_PROFILE)
@given(
    sizes=st.lists(st.tuples(st.integers(1, 9), st.integers(1, 9)), min_size=1, max_size=4),
    channels=st.integers(1, 3),
    image_dtype=st.sampled_from([torch.float32, torch.uint8]),
    mask_dtype=st.sampled_from([torch.int64, torch.uint8, None]),
    ignore_index=st.sampled_from([255, 250, -1]),
    wrap=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_pad_collate_keeps_original_pixels_and_pads_masks_only_with_ignore_index(
    sizes, channels, image_dtype, mask_dtype, ignore_index, wrap, seed
):
    if mask_dtype == torch.uint8 and ignore_index < 0:
        mask_dtype = torch.int64
    g = torch.Generator().manual_seed(seed)
    batch = []
    for h, w in sizes:
        if image_dtype == torch.uint8:
            im = torch.randint(0, 256, (channels, h, w), generator=g, dtype=torch.uint8)
        else:
            im = torch.randn(channels, h, w, generator=g)
        if mask_dtype is None:
            m = None
        else:
            m = torch.randint(0, 6, (h, w), generator=g)
            m[torch.rand(h, w, generator=g) < 0.2] = ignore_index  # some void already in the input
            m = m.to(mask_dtype)
        if wrap:
            im, m = tv_tensors.Image(im), (tv_tensors.Mask(m) if m is not None else None)
        batch.append((im, m))
    originals = [(im.clone(), None if m is None else m.clone()) for im, m in batch]

    images, masks = pad_collate(batch, ignore_index=ignore_index)
    n, big_h, big_w = len(sizes), max(h for h, _ in sizes), max(w for _, w in sizes)
    assert type(images) is torch.Tensor and images.dtype == image_dtype
    assert tuple(images.shape) == (n, channels, big_h, big_w)
    for i, ((h, w), (im, m)) in enumerate(zip(sizes, originals)):
        assert torch.equal(batch[i][0].as_subclass(torch.Tensor), im), "the inputs are left alone"
        assert torch.equal(images[i, :, :h, :w], im), "the original pixels are unchanged, at the top left"
        outside = torch.ones(big_h, big_w, dtype=torch.bool)
        outside[:h, :w] = False
        assert torch.all(images[i][:, outside] == 0), "images are padded with 0"
        if m is not None:
            assert torch.equal(masks[i, :h, :w], m.long())
            assert torch.all(masks[i][outside] == ignore_index), "masks are padded with ignore_index"
    if mask_dtype is None:
        assert masks is None
    else:
        assert masks.dtype == torch.int64 and tuple(masks.shape) == (n, big_h, big_w)
        original_void = sum(int((m == ignore_index).sum()) for _, m in originals)
        padded = n * big_h * big_w - sum(h * w for h, w in sizes)
        assert int((masks == ignore_index).sum()) == original_void + padded, "padding adds only ignore_index"


@settings(max_examples=40, **_PROFILE)
@given(
    mask_np=st.tuples(st.integers(1, 12), st.integers(1, 12)).flatmap(
        lambda hw: arrays(np.int64, hw, elements=st.sampled_from([0, 1, 2, VOID]))
    ),
    channels=st.sampled_from([1, 3]),
    stats=st.tuples(st.floats(-1.0, 1.0), st.floats(0.05, 2.0)),
    seed=st.integers(0, 2**16),
)
def test_eval_transforms_never_touch_the_mask_and_only_normalise_the_image(mask_np, channels, stats, seed):
    h, w = mask_np.shape
    raw = torch.randint(0, 256, (channels, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    mean, std = (stats[0],) * channels, (stats[1],) * channels
    mask = tv_tensors.Mask(torch.from_numpy(mask_np.copy()))  # a copy: a transform writing into it must show
    out_img, out_mask = eval_transforms(mean, std)(tv_tensors.Image(raw), mask)
    assert np.array_equal(out_mask.numpy(), mask_np) and out_mask.dtype == torch.int64
    expected = (raw.double() / 255 - stats[0]) / stats[1]
    torch.testing.assert_close(out_img.as_subclass(torch.Tensor).double(), expected, rtol=1e-5, atol=1e-5)
