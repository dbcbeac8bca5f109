"""Prediction on image files: class-id PNGs, color masks and overlays, from nothing but a checkpoint."""

from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from pixelwise.data.io import IMAGE_EXTENSIONS
from pixelwise.engine.inference import InferenceOptions
from pixelwise.engine.predictor import Predictor
from pixelwise.errors import ConfigError
from pixelwise.viz import DEFAULT_ALPHA, save_class_png


def collect_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand files, folders (their image files, sorted, not recursive) and glob patterns (``"shots/*.jpg"``,
    ``"data/**/*.png"``, quoted so that the shell leaves them alone) into a list of image paths.

    Raises:
        ConfigError: an input does not exist, a folder or pattern holds no images, or two inputs share a file stem
            (their outputs would overwrite each other).
    """
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if not p.exists() and glob.has_magic(str(item)):
            found = sorted(Path(q) for q in glob.glob(str(item), recursive=True)
                           if Path(q).is_file() and Path(q).suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise ConfigError(f"pattern {item} matches no image file ({', '.join(IMAGE_EXTENSIONS)})")
            files += found
        elif p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise ConfigError(f"folder {p} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"input {p} does not exist")
    seen: dict[str, Path] = {}
    for f in files:
        if f.stem in seen:
            raise ConfigError(f"{seen[f.stem]} and {f} share the name {f.stem!r}: their outputs would collide")
        seen[f.stem] = f
    return files


@torch.no_grad()
def predict_files(
    checkpoint: str | Path | Predictor,
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    device: str = "auto",
    alpha: float = DEFAULT_ALPHA,
    progress: bool = True,
    test_time: InferenceOptions | None = None,
    batch_size: int = 1,
    save_probs: bool = False,
) -> list[Path]:
    """Segment image files with a trained checkpoint (or a :class:`Predictor`, whose device and options are then
    used as they are).

    For each input ``<stem>.<ext>`` writes into ``out_dir``: ``<stem>.png`` (palette-mode PNG whose pixel values
    are the class ids), ``<stem>_color.png`` (RGB color mask), ``<stem>_overlay.png`` (mask blended over the
    image) and, with ``save_probs``, ``<stem>_probs.npy`` (float16 (K, H, W) softmax probabilities). Images are
    read in the checkpoint's channel mode (grayscale or RGB) and normalised as in training; ``test_time`` selects
    whole-image or sliding-window inference and test-time augmentation; consecutive images of the same size are
    run ``batch_size`` at a time.

    For an instance model (card task ``"instance"``) it writes instead ``<stem>_instances.png`` (uint16 PNG: 0
    background, j for the j-th instance by descending score), ``<stem>.json`` (the instances: class, score, box,
    area, RLE mask), ``<stem>_overlay.png`` (one color per instance, its box and "class score") and, for the whole
    run, ``predictions.json`` in COCO results format (image ids 1..N in input order).

    Returns the class-id (or instance-id) PNG paths. Raises ConfigError / DatasetError / CheckpointError naming the
    bad input.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    files = collect_inputs(inputs)
    if isinstance(checkpoint, Predictor) or getattr(checkpoint, "task", None) == "prompt":
        predictor = checkpoint
    else:
        predictor = Predictor.from_checkpoint(checkpoint, device)
    if predictor.task == "prompt":
        raise ConfigError(f"{getattr(predictor, 'source', None) or checkpoint} holds a click model "
                          f"({predictor.card.model}): it segments the object a user clicks on, so it needs clicks, "
                          "not only images; use Predictor.from_checkpoint(...).set_image(image) and .predict("
                          "point_coords, point_labels)")
    if not isinstance(checkpoint, Predictor):
        predictor.options = test_time or predictor.options
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if predictor.task == "instance":
        return _predict_instances(predictor, files, out, alpha, progress)
    written = []
    bar = tqdm(total=len(files), desc="predict", unit="image", disable=not progress)
    batch: list[tuple[Path, torch.Tensor]] = []

    def flush() -> None:
        result = predictor([image for _, image in batch], probs=save_probs)
        for k, (f, image) in enumerate(batch):
            save_class_png(result.mask(k), out / f"{f.stem}.png", predictor.palette)
            Image.fromarray(result.color(k)).save(out / f"{f.stem}_color.png")
            Image.fromarray(result.overlay(image, k, alpha=alpha)).save(out / f"{f.stem}_overlay.png")
            if save_probs:
                np.save(out / f"{f.stem}_probs.npy", result.probs[k].cpu().numpy().astype(np.float16))
            written.append(out / f"{f.stem}.png")
        bar.update(len(batch))
        batch.clear()

    for f in files:
        image = predictor.read(f)
        if batch and (len(batch) == batch_size or batch[0][1].shape != image.shape):
            flush()
        batch.append((f, image))
    if batch:
        flush()
    bar.close()
    return written


def _predict_instances(predictor: Predictor, files: list[Path], out: Path, alpha: float, progress: bool) -> list[Path]:
    """The instance branch of :func:`predict_files`, one image at a time (images of any sizes)."""
    written, coco = [], []
    for image_id, f in enumerate(tqdm(files, desc="predict", unit="image", disable=not progress), start=1):
        image = predictor.read(f)
        result = predictor(image)
        path = out / f"{f.stem}_instances.png"
        Image.fromarray(result.instance_ids(0)).save(path)
        (out / f"{f.stem}.json").write_text(json.dumps({"image": str(f), "width": int(image.shape[-1]),
                                                        "height": int(image.shape[-2]),
                                                        "instances": result.objects(0)}, indent=1))
        Image.fromarray(result.overlay(image, 0, alpha=alpha)).save(out / f"{f.stem}_overlay.png")
        coco += result.coco_results(0, image_id)
        written.append(path)
    (out / "predictions.json").write_text(json.dumps(coco))
    return written
