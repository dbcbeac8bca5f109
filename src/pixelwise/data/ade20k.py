"""ADE20K, the MIT SceneParsing benchmark release (ADEChallengeData2016): 150 classes.

Zhou, Zhao, Puig, Fidler, Barriuso, Torralba, "Scene Parsing through ADE20K Dataset", CVPR 2017.

On disk (``ADEChallengeData2016.zip`` unzipped; ``root`` is ``ADEChallengeData2016`` or the folder holding it)::

    root/images/{training,validation}/ADE_train_00000001.jpg       20,210 / 2,000 images
    root/annotations/{training,validation}/ADE_train_00000001.png  uint8: 0 = "other" (unlabelled), 1..150 classes
    root/objectInfo150.txt                                          optional: the class names, read when present

The zero label, explicitly: the benchmark scores 150 classes and ignores the pixels stored as 0. With
``reduce_zero_label=True`` (the default, and what MMSegmentation's ``reduce_zero_label`` and the benchmark do) the
loader maps stored 0 -> void (255) and k -> k - 1, so class id 0 is "wall" and the 150 ids are 0..149. With
``reduce_zero_label=False`` stored values are class ids as they are: 151 classes, id 0 named "other", trained and
scored like any class. Splits: ``train``/``training`` and ``val``/``validation``.
"""

from __future__ import annotations

from pathlib import Path

from pixelwise.data.base import SegmentationDataset, lut
from pixelwise.data.folder import files_by_id, parse_split
from pixelwise.data.palette import default_palette
from pixelwise.errors import DatasetError

#: The 150 SceneParsing classes in stored order (stored value k + 1), first name of each objectInfo150.txt entry.
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane",
    "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool",
    "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture",
    "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)
_SPLITS = {"train": "training", "training": "training", "val": "validation", "validation": "validation"}


def find_ade20k(root: Path) -> Path | None:
    for candidate in (root, root / "ADEChallengeData2016"):
        if (candidate / "images" / "training").is_dir() or (candidate / "annotations").is_dir():
            return candidate
    return None


def read_object_info(path: Path) -> list[str]:
    """Class names from ``objectInfo150.txt`` (tab-separated ``Idx Ratio Train Val Name``; the first of the
    ``;``-separated synonyms is kept)."""
    names = []
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        fields = line.split("\t")
        if len(fields) >= 5:
            names.append(fields[4].split(";")[0].strip())
    if len(names) != 150:
        raise DatasetError(f"{path} lists {len(names)} classes, expected 150 tab-separated rows after the header")
    return names


class ADE20K(SegmentationDataset):
    """A split of ADE20K SceneParsing (see the module docstring for the layout and the zero label).

    Args:
        root: ``ADEChallengeData2016`` or the folder holding it.
        split: ``train``/``training`` or ``val``/``validation``, optionally sliced.
        reduce_zero_label: stored 0 ("other") -> void and k -> k - 1 (150 classes), or keep stored values (151).
        transforms, ignore_index, require_masks, strict: as :class:`~pixelwise.data.folder.SegmentationFolder`;
            ``ignore_index`` must stay 255.

    Raises:
        DatasetError: missing folders, an unknown split, an image without its annotation, a stored value above
            150, and every error of :class:`~pixelwise.data.base.SegmentationDataset`.
    """

    format = "ade20k"
    lut_hint = "ADE20K does not define: SceneParsing annotations store 0 (other) and the classes 1..150"

    def __init__(self, root: str | Path, split: str = "train", transforms=None, ignore_index: int = 255,
                 require_masks: bool = False, reduce_zero_label: bool = True, strict: bool = True) -> None:
        self._start(root, split, transforms, ignore_index, void_is_255="pixelwise's ADE20K")
        base = find_ade20k(self.root)
        if base is None:
            raise DatasetError(
                f"{self.root} holds no ADE20K SceneParsing data (images/training/, annotations/): download it with "
                "`pixelwise datasets download ade20k --root DIR`"
            )
        info = base / "objectInfo150.txt"
        names = read_object_info(info) if info.is_file() else list(ADE20K_CLASSES)
        self.reduce_zero_label = reduce_zero_label
        if reduce_zero_label:
            self.classes = names
            self.mask_lut = lut({0: 255, **{k: k - 1 for k in range(1, 151)}})
        else:
            self.classes = ["other", *names]
            self.mask_lut = lut({k: k for k in range(151)})
        self.palette = default_palette(len(self.classes))
        name, part = parse_split(split)
        if name not in _SPLITS:
            raise DatasetError(f"unknown ADE20K split {name!r}: use train (training) or val (validation)")
        folder = _SPLITS[name]
        image_dir, mask_dir = base / "images" / folder, base / "annotations" / folder
        if not image_dir.is_dir():
            raise DatasetError(f"{image_dir} is missing: re-extract ADEChallengeData2016.zip")
        images = files_by_id(image_dir, (".jpg", ".jpeg", ".png"))
        masks = files_by_id(mask_dir, (".png",)) if mask_dir.is_dir() else None
        if require_masks and masks is None:
            raise DatasetError(f"{mask_dir} is missing: re-extract ADEChallengeData2016.zip")
        self._set_samples(sorted(images)[part], images, masks, strict, mask_dir, in_channels=3)
