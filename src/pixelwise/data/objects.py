"""Objects for click models: every object of any dataset pixelwise reads, one sample per object.

Sample contract: ``dataset[i] -> (image, mask)``

* ``image``: ``tv_tensors.Image`` uint8 (C, H, W), C = ``dataset.in_channels``;
* ``mask``: ``tv_tensors.Mask`` int64 (H, W): 1 on the object, 0 elsewhere, ``ignore_index`` (255) where nothing
  is known (the padding of a crop larger than the image), as a semantic mask of one class.

The objects are the non-crowd instances of an instance dataset (a COCO-layout folder, ``synthetic_instances``) or
the connected components of each non-background class of a semantic one (a folder, VOC, ``synthetic``;
:class:`~pixelwise.data.instances.ConnectedComponentInstances`, with its options ``connectivity``, ``classes``,
``background`` given as data options, or ``instances=connected_components`` said explicitly). Objects of fewer than
``min_object_area`` pixels (default 100) are left out: a speck is no object a user would click on, and its NoC is
noise. Building the dataset reads every image's instances once to count the objects.

:func:`object_train_transforms` is the semantic pipeline's augmentation (flip, scale jitter, crop, color jitter,
normalisation) with one change: the crop window is placed around a random pixel of the object, and drawn again
(up to 10 times) while fewer than ``min(min_object_area, the object's area)`` of its pixels remain, so an object
cropped away is re-drawn instead of trained on as an empty mask.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from pixelwise.data.transforms import IMAGENET_MEAN, IMAGENET_STD, RandomScale, augment_and_normalize, eval_transforms
from pixelwise.errors import DatasetError

__all__ = ["ObjectDataset", "build_object_dataset", "object_eval_transforms", "object_train_transforms",
           "OBJECT_CLASSES", "MIN_OBJECT_AREA"]

#: The one class of a click model's output.
OBJECT_CLASSES = ("object",)
#: Objects of fewer pixels are left out by default.
MIN_OBJECT_AREA = 100
#: The options of :func:`build_object_dataset` that the object view takes (the rest go to the reader).
OBJECT_OPTIONS = ("min_object_area",)


class ObjectDataset(torch.utils.data.Dataset):
    """One item per object of an instance dataset (see the module docstring).

    Args:
        instances: an instance dataset of :mod:`pixelwise.data.instances` (items ``(image, target)``, with
            ``raw_item``), without transforms.
        min_object_area: objects of fewer pixels (of the untransformed image) are left out.
        transforms: a joint transform of ``(image, mask)``, e.g. :func:`object_train_transforms`.
        ignore_index: the mask value of unknown pixels.

    Attributes:
        objects: ``(image index, instance index)`` of each item. classes: ``["object"]``. palette, in_channels,
            names (per image), ignore_index.

    Raises:
        DatasetError: no object of at least ``min_object_area`` pixels in the split.
    """

    def __init__(self, instances, min_object_area: int = MIN_OBJECT_AREA, transforms=None,
                 ignore_index: int = 255) -> None:
        if isinstance(min_object_area, bool) or not isinstance(min_object_area, int) or min_object_area < 1:
            raise DatasetError(f"min_object_area must be a positive int (pixels), got {min_object_area!r}")
        self.instances = instances
        self.min_object_area = min_object_area
        self.transforms = transforms
        self.ignore_index = ignore_index
        self.classes = list(OBJECT_CLASSES)
        self.palette = [(255, 200, 0)]
        self.in_channels = getattr(instances, "in_channels", 3)
        self.names = list(getattr(instances, "names", [f"{i:05d}" for i in range(len(instances))]))
        self.objects: list[tuple[int, int]] = []
        for i in range(len(instances)):
            _, target = instances.raw_item(i)
            crowd = target.get("iscrowd", torch.zeros(len(target["masks"]), dtype=torch.int64))
            for j in range(len(target["masks"])):
                if int(crowd[j]) == 0 and float(target["area"][j]) >= min_object_area:
                    self.objects.append((i, j))
        if not self.objects:
            raise DatasetError(f"{instances!r} has no object of at least {min_object_area} pixels: lower "
                               "data_kwargs.min_object_area, or check the masks")

    @property
    def num_classes(self) -> int:
        return 1

    def __len__(self) -> int:
        return len(self.objects)

    def __repr__(self) -> str:
        return f"ObjectDataset({self.instances!r}, min_object_area={self.min_object_area}): {len(self)} objects"

    def raw_item(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        """Object ``index`` untransformed: ``(image uint8 (C, H, W), mask int64 (H, W) of 0 and 1)``."""
        i, j = self.objects[index]
        image, target = self.instances.raw_item(i)
        mask = target["masks"][j].to(torch.int64)
        return tv_tensors.Image(image), tv_tensors.Mask(mask)

    def __getitem__(self, index: int):
        image, mask = self.raw_item(index)
        if self.transforms is not None:
            return self.transforms(image, mask)
        return image, mask


def build_object_dataset(spec, split: str, transforms=None, seed: int = 0, ignore_index: int = 255,
                         min_object_area: int = MIN_OBJECT_AREA, **options: Any) -> ObjectDataset:
    """The objects of split ``split`` of any dataset :func:`pixelwise.data.build_dataset` opens.

    An instance dataset (COCO layout, ``synthetic_instances``, or ``instances="connected_components"`` given) is
    taken as it is; a semantic one gets ``instances="connected_components"`` (its ``connectivity``, ``classes``,
    ``background``, ``min_area`` options apply). ``options`` go to the reader.

    Raises:
        DatasetError: as :func:`~pixelwise.data.build_dataset`, and no object of ``min_object_area`` pixels.
    """
    from pixelwise.data import build_dataset

    options = dict(options)
    if options.get("instances") is None and str(spec) != "synthetic_instances":
        from pixelwise.data import parse_data_spec

        if str(spec) == "synthetic" or parse_data_spec(spec)[0] != "coco":
            options["instances"] = "connected_components"
    instances = build_dataset(spec, split, require_masks=True, seed=seed, ignore_index=ignore_index, **options)
    if not hasattr(instances, "raw_item"):
        raise DatasetError(f"{spec} ({split}) holds no instances to take objects from")
    return ObjectDataset(instances, min_object_area, transforms, ignore_index)


class ObjectCrop(v2.Transform):
    """A ``size`` (H, W) crop of ``(image, mask)`` that keeps part of the object (mask == 1): the window holds a
    random object pixel and is drawn again, up to ``tries`` times, while fewer than ``min(min_pixels, object area)``
    object pixels fall inside it. Padding where the image is smaller: image 0, mask ``ignore_index``."""

    def __init__(self, size: Sequence[int], min_pixels: int, ignore_index: int = 255, tries: int = 10) -> None:
        super().__init__()
        self.size = (int(size[0]), int(size[1]))
        self.min_pixels, self.ignore_index, self.tries = int(min_pixels), ignore_index, tries

    def forward(self, *inputs: Any) -> Any:
        image, mask = inputs if len(inputs) > 1 else inputs[0]
        ch, cw = self.size
        h, w = mask.shape[-2:]
        pad_h, pad_w = max(0, ch - h), max(0, cw - w)
        if pad_h or pad_w:  # bottom and right, as the semantic pipeline's pad_collate pads
            image = TF.pad(image, [0, 0, pad_w, pad_h], fill=0)
            mask = TF.pad(mask, [0, 0, pad_w, pad_h], fill=self.ignore_index)
            h, w = h + pad_h, w + pad_w
        on = (mask == 1).nonzero()
        need = min(self.min_pixels, len(on))
        top = left = 0
        for _ in range(self.tries):
            if len(on):
                y, x = (int(v) for v in on[int(torch.randint(len(on), ()))])
                top = int(torch.randint(max(0, y - ch + 1), min(y, h - ch) + 1, ()))
                left = int(torch.randint(max(0, x - cw + 1), min(x, w - cw) + 1, ()))
            else:
                top, left = int(torch.randint(h - ch + 1, ())), int(torch.randint(w - cw + 1, ()))
            if int((mask[..., top:top + ch, left:left + cw] == 1).sum()) >= need:
                break
        return (tv_tensors.wrap(image[..., top:top + ch, left:left + cw], like=image),
                tv_tensors.wrap(mask[..., top:top + ch, left:left + cw], like=mask))


def object_train_transforms(
    crop_size: Sequence[int],
    scale_range: Sequence[float] = (0.75, 1.4),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    ignore_index: int = 255,
    hflip: bool = True,
    color_jitter: float = 0.2,
    min_pixels: int = MIN_OBJECT_AREA,
) -> v2.Compose:
    """Training augmentation of ``(image uint8 (C, H, W), mask int64 (H, W))``: random scale (image bilinear, mask
    nearest), :class:`ObjectCrop` to ``crop_size``, horizontal flip, color jitter, then the image to float32 and
    normalised. Output: ``(float32 (C, h, w), int64 (h, w))``, ``(h, w) = crop_size``."""
    ops = [RandomScale(scale_range), ObjectCrop(crop_size, min_pixels, ignore_index)]
    return augment_and_normalize(ops, mean, std, hflip, color_jitter)


#: Evaluation: the image to float32, normalised; the mask untouched (the whole image is evaluated).
object_eval_transforms = eval_transforms
