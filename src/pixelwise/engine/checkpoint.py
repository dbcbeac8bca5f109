"""Checkpoints: a :class:`ModelCard` (everything needed to run the model) plus the weights and, for ``--resume``,
the training state; one file, written atomically, read with ``weights_only=True``.

This module is the only one that reads a checkpoint's keys. A file holds a plain dict::

    {"version": 2, "card": ModelCard.to_dict(), "model_state": {...}, "config": {...},
     "optimizer_state", "scheduler_state", "scaler_state", "rng_state", "world_size",
     "epoch", "step", "metrics", "best_score", "elapsed_s", "epoch_loss"}

Only tensors, numbers, strings, lists and dicts are stored, so ``torch.load(weights_only=True)`` reads every one:
a checkpoint cannot execute code when it is opened. Files of format 1 (the card's fields at the top level, written
by pixelwise before the ModelCard) are read too: :func:`load_checkpoint` builds their card from those keys.
"""

from __future__ import annotations

import dataclasses
import os
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from pixelwise.errors import CheckpointError

#: The file layout written today; 1 is the flat layout before the ModelCard, still read.
CHECKPOINT_VERSION = 2
#: The tasks a card may name. Each has its own model outputs and :class:`pixelwise.Predictor` result type.
TASKS = ("semantic", "instance", "prompt")
#: The validation score that picks ``best.pt``, per task: mIoU and mask AP (fractions, higher is better), and the
#: click protocol's NoC@85 (mean clicks to reach IoU 0.85, lower is better; :data:`LOWER_IS_BETTER`).
SCORES = {"semantic": "mIoU", "instance": "segm_AP", "prompt": "NoC@85"}
#: The scores of :data:`SCORES` that are better when lower.
LOWER_IS_BETTER = frozenset({"NoC@85"})


def score_improves(name: str, score: float, best: float) -> bool:
    """Whether validation score ``name`` at ``score`` beats ``best``, the best so far (-1 before the first
    validation: every score beats it, as no score of :data:`SCORES` is negative). A NaN never improves."""
    if name in LOWER_IS_BETTER:
        return score == score and (best < 0 or score < best)
    return score > best


@dataclass
class ModelCard:
    """Everything needed to run a trained model, stored in every checkpoint (the key ``"card"``).

    Attributes:
        model: registered architecture name (``pixelwise models`` lists them).
        num_classes: K, the number of output channels of the logits.
        classes: K class names, in id order.
        palette: K RGB colors, ``[r, g, b]`` in 0..255, in id order.
        mean, std: per-channel normalisation of images scaled to [0, 1] (C values each); an instance model
            normalises inside itself, and the card records its values.
        task: what the model predicts: ``"semantic"`` (one class per pixel), ``"instance"`` (one mask per object;
            ``classes`` then excludes the background, and labels run 1..num_classes) or ``"prompt"`` (a click
            model: the mask of the object a user clicks on; one class, ``"object"``).
        model_kwargs: the architecture's options (``build_model(model, num_classes, in_channels, **model_kwargs)``).
        in_channels: C, image channels the model takes: 3 (RGB) or 1 (grayscale).
        input_scale: images are resized by this factor before the model sees them; predictions come back at the
            input's size.
        ignore_index: the label value that marks void pixels in the training masks.
        crop_size: the training crop (H, W) in pixels the model saw, after ``input_scale``; sliding-window
            inference uses it as its window when none is given. None when unknown.
        category_ids: instance task: the dataset's category id of each label 1..K (COCO's are not contiguous),
            which COCO-format predictions use; None: 1..K.
        format_version: :data:`CHECKPOINT_VERSION` of the file the card was read from or is written to.
    """

    model: str
    num_classes: int
    classes: list[str]
    palette: list[list[int]]
    mean: list[float]
    std: list[float]
    task: str = "semantic"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    in_channels: int = 3
    input_scale: float = 1.0
    ignore_index: int = 255
    crop_size: tuple[int, int] | None = None
    category_ids: list[int] | None = None
    format_version: int = CHECKPOINT_VERSION

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise CheckpointError(f"model card: unknown task {self.task!r} (this pixelwise knows {', '.join(TASKS)})")
        if len(self.classes) != self.num_classes or len(self.palette) != self.num_classes:
            raise CheckpointError(f"model card: {self.num_classes} classes but {len(self.classes)} names and "
                                  f"{len(self.palette)} palette colors")
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise CheckpointError(f"model card: mean and std need {self.in_channels} values each, got "
                                  f"{list(self.mean)} and {list(self.std)}")
        self.classes = [str(c) for c in self.classes]
        self.palette = [[int(v) for v in c] for c in self.palette]
        self.mean, self.std = [float(v) for v in self.mean], [float(v) for v in self.std]
        self.input_scale = float(self.input_scale)
        self.model_kwargs = dict(self.model_kwargs)
        if self.crop_size is not None:
            self.crop_size = (int(self.crop_size[0]), int(self.crop_size[1]))
        if self.category_ids is not None:
            self.category_ids = [int(v) for v in self.category_ids]
            if len(self.category_ids) != self.num_classes:
                raise CheckpointError(f"model card: {self.num_classes} classes but {len(self.category_ids)} "
                                      "category ids")

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (``weights_only``-safe)."""
        out = dataclasses.asdict(self)
        out["crop_size"] = list(self.crop_size) if self.crop_size is not None else None
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str | Path = "checkpoint") -> "ModelCard":
        """Raises CheckpointError naming ``source`` when a field is missing, unknown or inconsistent."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise CheckpointError(f"{source}: unknown model card fields {unknown} (written by a newer pixelwise? "
                                  "upgrade)")
        try:
            return cls(**values)
        except TypeError as e:
            raise CheckpointError(f"{source}: incomplete model card ({e})") from None

    @property
    def palette_tuples(self) -> list[tuple[int, int, int]]:
        """The palette as ``(r, g, b)`` tuples, the form :mod:`pixelwise.viz` takes."""
        return [tuple(c) for c in self.palette]

    def build_model(self) -> torch.nn.Module:
        """The card's architecture with freshly initialised weights (load ``model_state`` into it)."""
        from pixelwise.models import build_model

        return build_model(self.model, num_classes=self.num_classes, in_channels=self.in_channels,
                           **self.model_kwargs)

    def check_dataset(self, classes: Sequence[str], in_channels: int | None, source: str,
                      path: str | Path = "checkpoint") -> None:
        """Raise CheckpointError when a dataset's classes (count first, then names) or image channels differ from
        the card's: the class ids would be misread."""
        check_classes(self.classes, classes, source, path)
        if in_channels is not None and in_channels != self.in_channels:
            raise CheckpointError(f"checkpoint {path} expects {self.in_channels}-channel images, {source} has "
                                  f"{in_channels}-channel images")


@dataclass
class Checkpoint:
    """A checkpoint file's contents: the :class:`ModelCard`, the weights and, in a training run's ``last.pt`` /
    ``best.pt``, the state ``--resume`` needs (None in a weights-only file).

    Attributes:
        card: how to build and run the model.
        model_state: the model's ``state_dict``.
        config: the resolved training config (:meth:`pixelwise.TrainConfig.to_dict`), or None.
        epoch, step: epochs and optimizer steps completed.
        metrics: the last validation's metrics, or None.
        best_score: best validation score so far (:data:`SCORES`: mIoU, mask AP for instances, NoC@85 (lower is
            better) for click models; -1 before the first validation).
        elapsed_s: seconds of training done so far, over every resumed process.
        epoch_loss: (sum, steps) of the train losses of an epoch under way when the file was written.
        world_size: processes of the run that wrote it.
        optimizer_state, scheduler_state, scaler_state, rng_state: for ``--resume``.
    """

    card: ModelCard
    model_state: dict[str, torch.Tensor]
    config: dict[str, Any] | None = None
    epoch: int = 0
    step: int = 0
    metrics: dict[str, Any] | None = None
    best_score: float = -1.0
    elapsed_s: float = 0.0
    epoch_loss: tuple[float, int] = (0.0, 0)
    world_size: int = 1
    optimizer_state: dict[str, Any] | None = None
    scheduler_state: dict[str, Any] | None = None
    scaler_state: dict[str, Any] | None = None
    rng_state: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The file's dict (see the module docstring)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["card"] = self.card.to_dict()
        out["epoch_loss"] = list(self.epoch_loss)
        return {"version": CHECKPOINT_VERSION, **out}

    def build_model(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        """The card's model with these weights, on ``device``, in eval mode."""
        model = self.card.build_model()
        model.load_state_dict(self.model_state)
        return model.to(device).eval()


def save_checkpoint(checkpoint: Checkpoint, path: str | Path) -> None:
    """Write ``checkpoint`` to ``path`` atomically: a temporary file in the same folder, flushed, then
    ``os.replace``. A crash midway leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(checkpoint.to_dict(), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


#: Format 1 stored the card's fields at the top level under these names.
_V1_CARD_KEYS = ("model", "model_kwargs", "num_classes", "in_channels", "classes", "palette", "ignore_index",
                 "mean", "std", "input_scale")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a pixelwise checkpoint (format 2, or format 1 from before the ModelCard) with ``weights_only=True``.

    Raises:
        CheckpointError: the file is missing, truncated, not a torch file, not a pixelwise checkpoint, written by
            a newer pixelwise, or its card is incomplete.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a non-torch file fails deep in the unpickler with any of a dozen exception types
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise CheckpointError(
            f"cannot read checkpoint {path}: {reason} (truncated or not a pixelwise checkpoint?)"
        ) from e
    if not isinstance(raw, dict) or "model_state" not in raw or not ("card" in raw or "model" in raw):
        raise CheckpointError(f"{path} is not a pixelwise checkpoint (no card/model_state keys)")
    version = raw.pop("version", 1)
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer pixelwise (format {version} > {CHECKPOINT_VERSION}): upgrade"
        )
    if "card" in raw:
        card_values = dict(raw.pop("card"))
    else:  # format 1
        missing = [k for k in _V1_CARD_KEYS if k not in raw]
        if missing:
            raise CheckpointError(f"{path} is not a complete pixelwise checkpoint (no {', '.join(missing)})")
        card_values = {k: raw.pop(k) for k in _V1_CARD_KEYS}
        card_values["crop_size"] = (raw.get("config") or {}).get("crop_size")
    card_values["format_version"] = version
    card = ModelCard.from_dict(card_values, path)
    if "best_miou" in raw:  # format 1's name, when mIoU was the only score
        raw["best_score"] = raw.pop("best_miou")
    names = {f.name for f in dataclasses.fields(Checkpoint)}
    extra = {k: v for k, v in raw.items() if k in names}
    if "epoch_loss" in extra:
        extra["epoch_loss"] = tuple(extra["epoch_loss"])
    return Checkpoint(card=card, **extra)


def check_classes(expected: Sequence[str], classes: Sequence[str], source: str,
                  path: str | Path = "checkpoint") -> None:
    """Raise CheckpointError when ``classes`` (of ``source``) differ from the ``expected`` ones of ``path``: count
    first, then names."""
    ck = list(expected)
    if len(ck) != len(classes):
        raise CheckpointError(
            f"checkpoint {path} was trained for {len(ck)} classes ({', '.join(ck[:12])}) but {source} has "
            f"{len(classes)} ({', '.join(classes[:12])}): use a checkpoint trained on this dataset"
        )
    if ck != list(classes):
        raise CheckpointError(
            f"checkpoint {path} and {source} name their classes differently ({ck} vs {list(classes)}): "
            "the class ids would be misread"
        )


def get_rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as tensors / plain lists (``weights_only``-safe)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(_plain, np_state[2:])],
        "python": _plain(random.getstate()),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    random.setstate(_tuple(state["python"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(x):
    if isinstance(x, (tuple, list)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def _tuple(x):
    return tuple(_tuple(v) for v in x) if isinstance(x, list) else x
