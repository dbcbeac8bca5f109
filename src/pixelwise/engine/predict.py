"""Prediction on image files: class-id PNGs, colour masks and overlays, from nothing but a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch
from PIL import Image
from tqdm import tqdm

from pixelwise.data.io import IMAGE_EXTENSIONS, read_image
from pixelwise.data.transforms import eval_transforms
from pixelwise.engine.inference import infer_logits, model_from_checkpoint, resolve_device
from pixelwise.errors import ConfigError
from pixelwise.viz import colorize, overlay, save_class_png


def collect_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (their image files, sorted, not recursive) into a list of image paths.

    Raises:
        ConfigError: an input does not exist, a folder holds no images, or two inputs share a file stem (their
            outputs would overwrite each other).
    """
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
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
) -> list[Path]:
    """Segment image files with a trained checkpoint.

    For each input ``<stem>.<ext>`` writes into ``out_dir``: ``<stem>.png`` (palette-mode PNG whose pixel values
    are the class ids), ``<stem>_color.png`` (RGB colour mask) and ``<stem>_overlay.png`` (mask blended over the
    image). Images are read in the checkpoint's channel mode (grayscale or RGB) and normalised as in training.

    Returns the class-id PNG paths. Raises ConfigError / DatasetError / CheckpointError naming the bad input.
    """
    dev = resolve_device(device)
    files = collect_inputs(inputs)
    model, state = model_from_checkpoint(checkpoint, dev)
    tf = eval_transforms(state["mean"], state["std"])
    palette = [tuple(c) for c in state["palette"]]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for f in tqdm(files, desc="predict", disable=not progress):
        image = read_image(f, state["in_channels"])
        x = tf(image).unsqueeze(0).to(dev)
        pred = infer_logits(model, x, state["input_scale"]).argmax(1)[0].to(torch.uint8).cpu().numpy()
        save_class_png(pred, out / f"{f.stem}.png", palette)
        Image.fromarray(colorize(pred, palette)).save(out / f"{f.stem}_color.png")
        Image.fromarray(overlay(image, pred, palette, alpha=alpha)).save(out / f"{f.stem}_overlay.png")
        written.append(out / f"{f.stem}.png")
    return written

