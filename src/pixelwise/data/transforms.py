"""Joint image + mask transforms on ``torchvision.transforms.v2`` and the batching that pads mixed sizes.

Geometric transforms move the image (``tv_tensors.Image``) and the mask (``tv_tensors.Mask``) together: masks are
resized with nearest-neighbour interpolation (torchvision does this for ``Mask``) and padded with ``ignore_index``,
so padding never counts as a class. Evaluation does not resize the mask at all: the model sees the image rescaled by
``input_scale`` and its logits are resized back to the mask, so metrics are measured at the labels' resolution.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY_MEAN = (0.5,)
GRAY_STD = (0.25,)


def default_normalization(in_channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet statistics for RGB input; a centred, unit-ish range for grayscale."""
    return (IMAGENET_MEAN, IMAGENET_STD) if in_channels == 3 else (GRAY_MEAN * in_channels, GRAY_STD * in_channels)


class RandomScale(v2.Transform):
    """Resize image and mask by one factor drawn uniformly from ``scale_range`` (relative to each sample's own
    size, so datasets of mixed resolutions keep their proportions). Image: bilinear with antialiasing; mask: nearest.
    """

    def __init__(self, scale_range: Sequence[float]) -> None:
        super().__init__()
        lo, hi = float(scale_range[0]), float(scale_range[1])
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        self.scale_range = (lo, hi)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = v2.query_size(flat_inputs)
        s = float(torch.empty(()).uniform_(*self.scale_range))
        return {"size": [max(1, round(h * s)), max(1, round(w * s))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(TF.resize, inpt, size=params["size"], antialias=True)


def train_transforms(
    crop_size: Sequence[int],
    scale_range: Sequence[float] = (0.5, 2.0),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    ignore_index: int = 255,
    hflip: bool = True,
    color_jitter: float = 0.2,
) -> v2.Compose:
    """Training augmentation: random scale, random crop (padded with 0 / ``ignore_index``), horizontal flip,
    color jitter, then float conversion and normalisation of the image. Input: ``(Image uint8 (C,H,W),
    Mask int64 (H,W))``; output: ``(Image float32 (C,h,w), Mask int64 (h,w))`` with ``(h, w) = crop_size``.
    """
    fill = {tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}
    crop = v2.RandomCrop(tuple(crop_size), pad_if_needed=True, fill=fill)
    return augment_and_normalize([RandomScale(scale_range), crop], mean, std, hflip, color_jitter)


def augment_and_normalize(ops: list[v2.Transform], mean: Sequence[float], std: Sequence[float], hflip: bool,
                          color_jitter: float) -> v2.Compose:
    """``ops`` (the geometric part: scale and crop), then a random horizontal flip, color jitter (brightness,
    contrast, saturation by ``color_jitter``; 0: none) and the image to float32, normalised by ``mean`` / ``std``:
    the tail every training pipeline of ``(image, mask)`` pairs shares."""
    ops = list(ops)
    if hflip:
        ops.append(v2.RandomHorizontalFlip())
    if color_jitter:
        # Hue is left alone: it is undefined for grayscale input and rarely helps segmentation.
        ops.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(ops)


def eval_transforms(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> v2.Compose:
    """Evaluation: float conversion and normalisation only; the mask is untouched (see the module docstring)."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


def pad_collate(batch, ignore_index: int = 255):
    """Stack ``(image, mask)`` pairs of different sizes into ``(N, C, H, W)`` float and ``(N, H, W)`` int64,
    padding at the bottom and right to the largest H and W: images with 0 (the normalised mean), masks with
    ``ignore_index`` so padded pixels are never scored. Masks may all be None (a split without labels).
    """
    images = [b[0] for b in batch]
    masks = [b[1] for b in batch]
    h = max(int(im.shape[-2]) for im in images)
    w = max(int(im.shape[-1]) for im in images)
    out = images[0].new_zeros((len(images), images[0].shape[0], h, w)).as_subclass(torch.Tensor)
    for i, im in enumerate(images):
        out[i, :, : im.shape[-2], : im.shape[-1]] = im
    if all(m is None for m in masks):
        return out, None
    target = torch.full((len(masks), h, w), ignore_index, dtype=torch.int64)
    for i, m in enumerate(masks):
        target[i, : m.shape[-2], : m.shape[-1]] = m
    return out, target


class SeededTransformDataset(Dataset):
    """Applies a random joint transform with a seed given per sample: ``dataset[(index, seed)]``.

    Each sample's augmentation is then a pure function of (run seed, epoch, position), whatever the number of
    DataLoader workers and wherever a run was resumed — the basis of exact ``--resume``.
    """

    def __init__(self, base: Dataset, transform) -> None:
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        image, mask = self.base[index]
        if seed is None:
            return self.transform(image, mask)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image, mask)


class EpochSampler(Sampler):
    """Yields ``(index, sample_seed)``: a permutation drawn from (seed, epoch), each position with its own seed.
    Call :meth:`set_epoch` before iterating (as with ``DistributedSampler``).

    With ``num_replicas > 1`` (multi-process training) rank ``r`` takes positions ``r, r + n, r + 2n, ...`` of the
    same permutation, cut to a multiple of ``n`` so every rank runs the same number of steps. Batch ``b`` of every
    rank together then holds exactly the samples, with the same augmentation seeds, of batch ``b`` of a single
    process whose batch is ``n`` times larger.
    """

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True, num_replicas: int = 1,
                 rank: int = 0) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in 0..{num_replicas - 1}, got {rank}")
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate epoch ``epoch`` from this rank's position ``start`` on (a run resumed mid-epoch skips the
        samples it has trained on; the permutation and the seeds of the rest are unchanged)."""
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.epoch = epoch
        self.start = start

    def __len__(self) -> int:
        return max(0, self.num_samples // self.num_replicas - self.start)

    def __iter__(self):
        ss = np.random.SeedSequence([self.seed, self.epoch])
        order_seed, sample_seeds = ss.spawn(2)
        if self.shuffle:
            g = torch.Generator().manual_seed(int(order_seed.generate_state(1)[0]))
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        seeds = sample_seeds.generate_state(self.num_samples, dtype=np.uint32).tolist()
        used = self.num_samples // self.num_replicas * self.num_replicas
        return iter(list(zip(order, seeds))[self.rank:used:self.num_replicas][self.start:])
