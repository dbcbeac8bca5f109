"""Cityscapes, fine annotations: the 19 evaluation classes (trainIds) read from the labelIds PNGs.

Cordts, Omran, Ramos, Rehfeld, Enzweiler, Benenson, Franke, Roth, Schiele, "The Cityscapes Dataset for Semantic
Urban Scene Understanding", CVPR 2016. The label table is that of the authors' ``cityscapesScripts/helpers/labels.py``.

On disk (``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip`` unzipped into one folder ``root``; the
download needs a login at https://www.cityscapes-dataset.com)::

    root/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    root/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png     34 label ids 0..33

The loader maps labelIds to trainIds on the fly (no ``createTrainIdLabelImgs`` step): the 19 classes below get ids
0..18, the other 15 labels (unlabeled, ego vehicle, parking, rail track, guard rail, caravan, trailer, ...) and the
license plate become void (255). Splits: train (2975), val (500), test (1525, no public labels: images only).
"""

from __future__ import annotations

from pathlib import Path

from pixelwise.data.base import SegmentationDataset, lut
from pixelwise.data.folder import parse_split
from pixelwise.errors import DatasetError

#: The 19 evaluated classes in trainId order, with their labelId and color (cityscapesScripts' labels.py).
CITYSCAPES_LABELS = (
    ("road", 7, (128, 64, 128)),
    ("sidewalk", 8, (244, 35, 232)),
    ("building", 11, (70, 70, 70)),
    ("wall", 12, (102, 102, 156)),
    ("fence", 13, (190, 153, 153)),
    ("pole", 17, (153, 153, 153)),
    ("traffic light", 19, (250, 170, 30)),
    ("traffic sign", 20, (220, 220, 0)),
    ("vegetation", 21, (107, 142, 35)),
    ("terrain", 22, (152, 251, 152)),
    ("sky", 23, (70, 130, 180)),
    ("person", 24, (220, 20, 60)),
    ("rider", 25, (255, 0, 0)),
    ("car", 26, (0, 0, 142)),
    ("truck", 27, (0, 0, 70)),
    ("bus", 28, (0, 60, 100)),
    ("train", 31, (0, 80, 100)),
    ("motorcycle", 32, (0, 0, 230)),
    ("bicycle", 33, (119, 11, 32)),
)
#: labelId -> trainId for all 34 labels, plus 255 (the license plate's id -1 as an 8-bit PNG stores it) -> void.
LABEL_TO_TRAIN = {**{i: 255 for i in range(34)}, 255: 255,
                  **{label_id: k for k, (_, label_id, _) in enumerate(CITYSCAPES_LABELS)}}


class Cityscapes(SegmentationDataset):
    """A split of Cityscapes with fine annotations as 19 trainId classes, void = 255 (see the module docstring).

    Args:
        root: the folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``train``, ``val`` or ``test`` (images only), optionally sliced.
        transforms, ignore_index, require_masks, strict: as :class:`~pixelwise.data.folder.SegmentationFolder`;
            ``ignore_index`` must stay 255.

    Raises:
        DatasetError: missing folders, an unknown split, an image without its labelIds PNG, a labelIds value
            outside 0..33, and every error of :class:`~pixelwise.data.base.SegmentationDataset`.
    """

    format = "cityscapes"
    lut_hint = ("Cityscapes' labelIds (0..33, cityscapesScripts' labels.py) do not hold: read the "
                "*_gtFine_labelIds.png files, not the color or instance PNGs")

    def __init__(self, root: str | Path, split: str = "train", transforms=None, ignore_index: int = 255,
                 require_masks: bool = False, strict: bool = True) -> None:
        self._start(root, split, transforms, ignore_index, void_is_255="pixelwise's Cityscapes")
        self.classes = [name for name, _, _ in CITYSCAPES_LABELS]
        self.palette = [color for _, _, color in CITYSCAPES_LABELS]
        self.mask_lut = lut(LABEL_TO_TRAIN)
        name, part = parse_split(split)
        if name not in ("train", "val", "test"):
            raise DatasetError(f"unknown Cityscapes split {name!r}: use train, val or test")
        image_dir = self.root / "leftImg8bit" / name
        if not image_dir.is_dir():
            raise DatasetError(
                f"{image_dir} is missing: unzip leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip (from "
                "https://www.cityscapes-dataset.com, after registering) into one folder and pass that folder"
            )
        suffix = "_leftImg8bit.png"
        images = {p.name[: -len(suffix)]: p for p in sorted(image_dir.glob(f"*/*{suffix}"))}
        masks = None
        if name != "test":  # the test labels are private; gtFine/test holds placeholders
            mask_dir = self.root / "gtFine" / name
            if not mask_dir.is_dir():
                if require_masks:
                    raise DatasetError(f"{mask_dir} is missing: unzip gtFine_trainvaltest.zip into {self.root}")
            else:
                tail = "_gtFine_labelIds.png"
                masks = {p.name[: -len(tail)]: p for p in mask_dir.glob(f"*/*{tail}")}
        if require_masks and masks is None:
            raise DatasetError("Cityscapes' test labels are not public: the test split can be predicted on, not "
                               "evaluated")
        ids = sorted(images)[part]
        self._set_samples(ids, images, masks, strict, in_channels=3)
