"""PASCAL VOC 2012 segmentation, and its "train_aug" split with the Semantic Boundaries Dataset (SBD).

VOC 2012: Everingham, Van Gool, Williams, Winn, Zisserman, "The PASCAL Visual Object Classes Challenge", IJCV 2010.
SBD: Hariharan, Arbelaez, Bourdev, Maji, Malik, "Semantic Contours from Inverse Detectors", ICCV 2011.

On disk (as the official tar unpacks; ``root`` may be the folder holding ``VOCdevkit``, ``VOCdevkit`` itself, or
``VOC2012``)::

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClass/<id>.png      palette PNG: index = class id 0..20, 255 = void (object borders)
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt     1464 / 1449 / 2913 ids
    benchmark_RELEASE/dataset/cls/<id>.mat             SBD: GTcls.Segmentation, class ids 0..20 (no void)
    benchmark_RELEASE/dataset/{train,val}.txt          8498 / 2857 ids

Split ``train_aug`` is the 10,582-image training set of DeepLab and most papers since: VOC train, SBD train and SBD
val, less every VOC val image (so the val scores stay honest). Its masks are VOC's where VOC has one (finer, with
void borders), else ``SegmentationClassAug/<id>.png`` where that converted folder exists, else SBD's .mat (read
with scipy). If ``ImageSets/Segmentation/train_aug.txt`` exists (it ships with SegmentationClassAug) it gives the
ids. Split ``test`` reads the test images without masks (VOC keeps them private).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pixelwise.data.base import SegmentationDataset
from pixelwise.data.folder import files_by_id, parse_split
from pixelwise.data.io import DataProblem
from pixelwise.data.palette import default_palette
from pixelwise.errors import DatasetError

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def find_voc2012(root: Path) -> Path | None:
    """The ``VOC2012`` folder under ``root`` (``root`` itself, ``root/VOC2012`` or ``root/VOCdevkit/VOC2012``)."""
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    return None


def find_sbd(voc_dir: Path, sbd_root: str | Path | None) -> Path | None:
    """SBD's ``dataset`` folder (holding ``cls/`` and ``train.txt``): under ``sbd_root`` if given, else beside
    ``VOCdevkit`` or inside it."""
    if sbd_root is not None:
        bases = [Path(sbd_root)]
    else:
        bases = [voc_dir, voc_dir.parent, voc_dir.parent.parent]
    for base in bases:
        for candidate in (base, base / "dataset", base / "benchmark_RELEASE" / "dataset"):
            if (candidate / "cls").is_dir() and (candidate / "train.txt").is_file():
                return candidate
    return None


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"{path} is missing: the VOC devkit's split lists are needed (re-extract the tar)")
    return [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class VOCSegmentation(SegmentationDataset):
    """A split of PASCAL VOC 2012 segmentation (see the module docstring): 21 classes, void = 255.

    Args:
        root: the folder holding ``VOCdevkit`` (or ``VOCdevkit`` or ``VOC2012`` itself).
        split: ``train``, ``val``, ``trainval``, ``train_aug`` or ``test``, optionally sliced (``"val[:100]"``).
        transforms, ignore_index, require_masks, strict: as :class:`~pixelwise.data.folder.SegmentationFolder`.
            ``ignore_index`` must stay 255, VOC's void.
        sbd_root: SBD's folder for ``train_aug`` (``benchmark_RELEASE``), if not beside ``VOCdevkit``.

    Raises:
        DatasetError: no VOC2012 folder, an unknown split, ``train_aug`` without SBD, a listed id without its
            image or mask, and every error of :class:`~pixelwise.data.base.SegmentationDataset`.
    """

    format = "voc"

    def __init__(self, root: str | Path, split: str = "train", transforms=None, ignore_index: int = 255,
                 require_masks: bool = False, sbd_root: str | Path | None = None, strict: bool = True) -> None:
        self._start(root, split, transforms, ignore_index, void_is_255="PASCAL VOC")
        self.classes = list(VOC_CLASSES)
        self.palette = default_palette(len(VOC_CLASSES))
        voc = find_voc2012(self.root)
        if voc is None:
            raise DatasetError(
                f"{self.root} holds no PASCAL VOC 2012 (looked for JPEGImages/ in it, in VOC2012/ and in "
                "VOCdevkit/VOC2012/): download it with `pixelwise datasets download voc2012 --root DIR`"
            )
        self.voc_dir = voc
        name, part = parse_split(split)
        lists = voc / "ImageSets" / "Segmentation"
        images = {p.stem: p for p in (voc / "JPEGImages").glob("*.jpg")}
        masks: dict[str, Path] | None = files_by_id(voc / "SegmentationClass", (".png",)) if (
            voc / "SegmentationClass").is_dir() else {}
        if name in ("train", "val", "trainval"):
            ids = _read_ids(lists / f"{name}.txt")
        elif name == "test":
            ids, masks = _read_ids(lists / "test.txt"), None
        elif name == "train_aug":
            ids, masks = self._train_aug(lists, images, masks, sbd_root)
        else:
            raise DatasetError(f"unknown VOC split {name!r}: use train, val, trainval, train_aug or test")
        missing = [i for i in ids if i not in images]
        if missing:
            raise DatasetError(
                f"{len(missing)} id(s) of split {name!r} have no image in {voc / 'JPEGImages'}, e.g. {missing[0]!r}: "
                "the download is incomplete (re-extract the tar)"
            )
        if require_masks and masks is None:
            raise DatasetError(f"VOC split {name!r} has no public masks: it can be predicted on, not evaluated")
        self._set_samples(ids[part], images, masks, strict, voc / "SegmentationClass", in_channels=3)

    def _train_aug(self, lists: Path, images: dict, voc_masks: dict, sbd_root) -> tuple[list[str], dict]:
        aug_dir = self.voc_dir / "SegmentationClassAug"
        aug_masks = files_by_id(aug_dir, (".png",)) if aug_dir.is_dir() else {}
        sbd = find_sbd(self.voc_dir, sbd_root)
        listed = lists / "train_aug.txt"
        if listed.is_file():
            ids = _read_ids(listed)
        elif sbd is not None:
            val = set(_read_ids(lists / "val.txt"))
            pool = set(_read_ids(lists / "train.txt")) | set(_read_ids(sbd / "train.txt")) | set(
                _read_ids(sbd / "val.txt"))
            ids = sorted(pool - val)
        else:
            raise DatasetError(
                f"split 'train_aug' needs the Semantic Boundaries Dataset (SBD) beside {self.voc_dir.parent} or "
                "inside it (benchmark_RELEASE/dataset/cls/*.mat), or SegmentationClassAug with "
                "ImageSets/Segmentation/train_aug.txt: fetch it with `pixelwise datasets download sbd --root DIR` "
                "and pass sbd_root=DIR/benchmark_RELEASE (training: `--set data_kwargs.sbd_root=DIR/benchmark_RELEASE`)"
            )
        sbd_masks = {p.stem: p for p in (sbd / "cls").glob("*.mat")} if sbd is not None else {}
        if sbd is not None:  # SBD's images are VOC 2011's, all in VOC 2012's JPEGImages; SBD's own copy otherwise
            for i in ids:
                if i not in images and (sbd / "img" / f"{i}.jpg").is_file():
                    images[i] = sbd / "img" / f"{i}.jpg"
        masks = {**sbd_masks, **aug_masks, **voc_masks}
        return ids, masks

    def raw_mask(self, path: Path) -> np.ndarray:
        if path.suffix != ".mat":
            return super().raw_mask(path)
        return read_sbd_mask(path)


def read_sbd_mask(path: Path) -> np.ndarray:
    """SBD's class mask ``GTcls.Segmentation`` from its MATLAB file, uint8 (H, W) class ids 0..20.

    Raises:
        DatasetError: scipy is not installed, or the file is not an SBD class mask (names the file).
    """
    try:
        from scipy.io import loadmat
    except ImportError as e:
        raise DatasetError(f"reading SBD's .mat masks ({path}) needs scipy: `pip install scipy`") from e
    try:
        gt = loadmat(str(path), squeeze_me=True, struct_as_record=False)["GTcls"]
        arr = np.asarray(gt.Segmentation)
    except Exception as e:  # scipy raises ValueError, KeyError, TypeError, ... for files that are not SBD's
        raise DataProblem(f"cannot read SBD mask {path} ({type(e).__name__}: {e}): expected a MATLAB file with "
                          "GTcls.Segmentation; replace the file", "unreadable") from e
    if arr.ndim != 2 or arr.min() < 0 or arr.max() > 255:
        raise DataProblem(f"SBD mask {path} holds an array of shape {arr.shape}, values {arr.min()}..{arr.max()}: "
                          "expected (H, W) class ids 0..20", "bad_values")
    return arr.astype(np.uint8)
