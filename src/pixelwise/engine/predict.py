"""Prediction on image files: class-id PNGs, colour masks and overlays, from nothing but a checkpoint."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from pixelwise.data.io import IMAGE_EXTENSIONS, read_image
from pixelwise.data.transforms import eval_transforms
from pixelwise.engine.inference import InferenceOptions, class_scores, model_from_checkpoint, resolve_device
from pixelwise.errors import ConfigError
from pixelwise.viz import colorize, overlay, save_class_png


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
    checkpoint: str | Path,
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    device: str = "auto",
    alpha: float = 0.5,
    progress: bool = True,
    test_time: InferenceOptions | None = None,
    batch_size: int = 1,
    save_probs: bool = False,
) -> list[Path]:
    """Segment image files with a trained checkpoint.

    For each input ``<stem>.<ext>`` writes into ``out_dir``: ``<stem>.png`` (palette-mode PNG whose pixel values
    are the class ids), ``<stem>_color.png`` (RGB colour mask), ``<stem>_overlay.png`` (mask blended over the
    image) and, with ``save_probs``, ``<stem>_probs.npy`` (float16 (K, H, W) softmax probabilities). Images are
    read in the checkpoint's channel mode (grayscale or RGB) and normalised as in training; ``test_time`` selects
    whole-image or sliding-window inference and test-time augmentation; consecutive images of the same size are
    run ``batch_size`` at a time.

    Returns the class-id PNG paths. Raises ConfigError / DatasetError / CheckpointError naming the bad input.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    files = collect_inputs(inputs)
    model, state = model_from_checkpoint(checkpoint, dev)
    tf = eval_transforms(state["mean"], state["std"])
    palette = [tuple(c) for c in state["palette"]]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    bar = tqdm(total=len(files), desc="predict", unit="image", disable=not progress)
    batch: list[tuple[Path, torch.Tensor]] = []

    def flush() -> None:
        x = torch.stack([tf(image) for _, image in batch]).to(dev)
        scores = class_scores(model, x, state["input_scale"], test_time=test_time, probs=save_probs)
        preds = scores.argmax(1).to(torch.uint8).cpu().numpy()
        for k, (f, image) in enumerate(batch):
            pred = preds[k]
            save_class_png(pred, out / f"{f.stem}.png", palette)
            Image.fromarray(colorize(pred, palette)).save(out / f"{f.stem}_color.png")
            Image.fromarray(overlay(image, pred, palette, alpha=alpha)).save(out / f"{f.stem}_overlay.png")
            if save_probs:
                np.save(out / f"{f.stem}_probs.npy", scores[k].cpu().numpy().astype(np.float16))
            written.append(out / f"{f.stem}.png")
        bar.update(len(batch))
        batch.clear()

    for f in files:
        image = read_image(f, state["in_channels"])
        if batch and (len(batch) == batch_size or batch[0][1].shape != image.shape):
            flush()
        batch.append((f, image))
    if batch:
        flush()
    bar.close()
    return written
