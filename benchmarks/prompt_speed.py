"""Clicks per second on this CPU: SAM ViT-B against a click model that pixelwise trains, and their peak memory.

    python benchmarks/prompt_speed.py [--checkpoint runs/click_isbi/best.pt] [--repeats 5] [--threads 1]

Rows:

- ``SAM ViT-B`` (random weights, ``build_sam("vit_b")``; speed does not depend on the weights) on a random
  ``--sam-size`` image (768x1024 by default: its long side is SAM's 1024, so the encoder sees what it sees on any
  photo): the image encoder runs once per image (``SamPredictor.set_image``), then each click is one ``predict``
  of the prompt encoder and the mask decoder, timed with 1 to 5 points, as the click protocol calls it (3 masks
  at the first click, then 1 mask with the previous low-resolution logits as ``mask_input``);
- the click model (``--checkpoint``, a ``pixelwise train`` run of task prompt, e.g. configs/click_isbi.yaml; without
  one an untrained ``click_encoder_unet`` on MobileNetV2, grayscale as that recipe's) on a random
  ``--click-size`` square image (512, ISBI's): ``ClickPredictor.predict`` with 1 to 5 points and its previous
  logits. A click model has no separate image encoder: the image goes through the whole network with the clicks at
  every click, so its time per click is the whole forward (plus the click disks and the thresholding).

Times are medians of ``--repeats`` interleaved rounds (:func:`_timing.interleaved_rounds`: every function in turn,
the order alternating) after one warm-up call each. Peak memory: in a fresh process per row and phase, the growth
of the resident set's peak (VmHWM) over 3 calls above the process with the model and image built
(:func:`_timing.peak_growth`): activations, not weights.

Writes benchmarks/results/prompt_speed[_2threads][_jemalloc].md and the docs section between the markers
``prompt_speed`` (``--no-publish``: print only).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _publish import publish  # noqa: E402
from _timing import (  # noqa: E402
    allocator, interleaved_rounds, machine, peak_growth, subprocess_peak_mib, threads_suffix,
)

from pixelwise.prompt import SamPredictor, build_sam  # noqa: E402

POINTS = (1, 2, 3, 4, 5)
MOBILENET = {"backbone": "mobilenet_v2"}
#: A SAM small enough to check this script in seconds (--sam-tiny); never for the published table.
TINY_SAM = {"encoder_depth": 2, "encoder_global_attn_indexes": (1,), "encoder_embed_dim": 96, "encoder_num_heads": 2,
            "image_size": 256}


def _points(height: int, width: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k xy points inside the image, the first positive, then negative and positive in turn."""
    rng = np.random.default_rng(seed)
    coords = np.stack([rng.integers(0, width, k), rng.integers(0, height, k)], axis=1).astype(np.float64)
    labels = np.array([1 if i % 2 == 0 else 0 for i in range(k)])
    return coords, labels


class Sam:
    """SAM ViT-B (random weights) behind SamPredictor, on a random image."""

    def __init__(self, args) -> None:
        self.model = build_sam("vit_b", **(TINY_SAM if args.sam_tiny else {}))
        self.predictor = SamPredictor(self.model)
        height, width = args.sam_size
        self.image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        self.size = (height, width)
        self.predictor.set_image(self.image)
        # the previous click's low-res logits, as the click protocol feeds them back
        coords, labels = _points(height, width, 1)
        _, _, low_res = self.predictor.predict(coords, labels, multimask_output=True)
        self.previous = low_res[:1]

    def set_image(self) -> None:
        self.predictor.set_image(self.image)

    def click(self, k: int):
        coords, labels = _points(*self.size, k)
        if k == 1:
            return lambda: self.predictor.predict(coords, labels, multimask_output=True)
        return lambda: self.predictor.predict(coords, labels, mask_input=self.previous, multimask_output=False)


class ClickModel:
    """The click model behind ClickPredictor, on a random square image."""

    def __init__(self, args) -> None:
        from pixelwise.data.objects import OBJECT_CLASSES
        from pixelwise.engine.checkpoint import ModelCard
        from pixelwise.engine.predictor import Predictor
        from pixelwise.models import build_model
        from pixelwise.prompt.click_predictor import ClickPredictor

        if args.checkpoint:
            self.predictor = Predictor.from_checkpoint(args.checkpoint, "cpu")
            self.label = f"click model `{args.checkpoint}` ({self.predictor.card.model})"
        else:
            torch.manual_seed(0)
            model = build_model("click_encoder_unet", 1, 1, **MOBILENET)
            card = ModelCard(model="click_encoder_unet", num_classes=1, classes=list(OBJECT_CLASSES),
                             palette=[[255, 200, 0]], mean=[0.5], std=[0.25], task="prompt", model_kwargs=MOBILENET,
                             in_channels=1)
            self.predictor = ClickPredictor(model, card, "cpu")
            self.label = "click_encoder_unet, MobileNetV2, untrained"
        self.model = self.predictor.model
        channels = self.predictor.card.in_channels
        side = args.click_size
        shape = (side, side) if channels == 1 else (side, side, channels)
        self.image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        self.size = (side, side)
        self.predictor.set_image(self.image)
        coords, labels = _points(side, side, 1)
        _, _, self.previous = self.predictor.predict(coords, labels)

    def click(self, k: int):
        coords, labels = _points(*self.size, k)
        return lambda: self.predictor.predict(coords, labels, mask_input=self.previous)


def peak_memory_child(row: str, phase: str, args) -> None:
    """In a fresh process: VmHWM growth (bytes) over 3 calls of one row's phase (``encode`` or ``click``, the
    click with the most points)."""
    torch.set_num_threads(args.threads)
    built = Sam(args) if row == "sam" else ClickModel(args)
    fn = built.set_image if phase == "encode" else built.click(POINTS[-1])
    with torch.no_grad():
        print(json.dumps({"peak": peak_growth(fn, 3)}))


def peak_memory(row: str, phase: str, args) -> float:
    """MiB: :func:`peak_memory_child` in a subprocess."""
    cmd = [sys.executable, __file__, "--peak-memory-child", row, phase, "--threads", str(args.threads),
           "--sam-size", *map(str, args.sam_size), "--click-size", str(args.click_size)]
    if args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    if args.sam_tiny:
        cmd += ["--sam-tiny"]
    return subprocess_peak_mib(cmd)


def _per_click(t: dict[str, float], row: str) -> str:
    return " / ".join(f"{t[f'{row} {k}']:.3f}" for k in POINTS)


def _params(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="a click model's checkpoint (pixelwise train, task prompt); default: an "
                    "untrained click_encoder_unet on MobileNetV2")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds (median reported)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--sam-size", type=int, nargs=2, default=[768, 1024], metavar=("H", "W"),
                    help="SAM's image (default 768 1024: long side 1024, SAM's input)")
    ap.add_argument("--click-size", type=int, default=512, help="the click model's square image side (ISBI: 512)")
    ap.add_argument("--no-publish", action="store_true", help="print the table only; write no file")
    ap.add_argument("--sam-tiny", action="store_true", help=argparse.SUPPRESS)  # a toy SAM to check the script
    ap.add_argument("--peak-memory-child", nargs=2, metavar=("ROW", "PHASE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peak_memory_child:
        peak_memory_child(*args.peak_memory_child, args)
        return
    torch.set_num_threads(args.threads)
    sam, click = Sam(args), ClickModel(args)
    fns = {"sam encode": sam.set_image}
    for k in POINTS:
        fns[f"sam {k}"] = sam.click(k)
        fns[f"click {k}"] = click.click(k)
    with torch.no_grad():
        rounds = interleaved_rounds(fns, args.repeats)
    t = {name: statistics.median(v) for name, v in rounds.items()}
    sam_peak = (peak_memory("sam", "encode", args), peak_memory("sam", "click", args))
    click_peak = peak_memory("click", "click", args)
    h, w = args.sam_size
    sam_name = "SAM ViT-B (random weights)" + (" **tiny debug config**" if args.sam_tiny else "")
    lines = [
        "| model | params M | image | image encoding s (once per image) | s per click, 1 / 2 / 3 / 4 / 5 points | "
        "clicks per s (5 points) | peak memory MiB: encoding / click |",
        "|---|---:|---|---:|---|---:|---:|",
        f"| {sam_name} | {_params(sam.model):.1f} | {h}x{w} RGB (encoder input {sam.model.image_size} square) | "
        f"{t['sam encode']:.2f} | {_per_click(t, 'sam')} | "
        f"{1 / t[f'sam {POINTS[-1]}']:.1f} | {sam_peak[0]:.0f} / {sam_peak[1]:.0f} |",
        f"| {click.label} | {_params(click.model):.1f} | {args.click_size}x{args.click_size}, "
        f"{click.predictor.card.in_channels} channel(s) | none: the whole network runs at every click | "
        f"{_per_click(t, 'click')} | {1 / t[f'click {POINTS[-1]}']:.1f} | "
        f"- / {click_peak:.0f} |",
    ]
    heap, suffix, env = allocator()
    flags = "".join(f" --{k} {v}" for k, v in (("repeats", args.repeats), ("threads", args.threads)))
    if args.checkpoint:
        flags += f" --checkpoint {args.checkpoint}"
    if list(args.sam_size) != [768, 1024] or args.click_size != 512:
        flags += f" --sam-size {h} {w} --click-size {args.click_size}"
    first = t["sam encode"] + t["sam 1"]
    text = "\n".join(lines) + (
        f"\n\nCommand: `{env}python benchmarks/prompt_speed.py{flags}`; random images, points at random pixels "
        f"(the first positive, then negative and positive in turn); SAM's first click returns 3 masks, later ones 1 "
        f"with the previous low-resolution logits, the click model's every click takes its previous logits; median "
        f"of {args.repeats} interleaved rounds after one warm-up call. SAM's first click on a new image costs its "
        f"encoding and one prompt, {first:.2f} s; the click model's every click costs its whole forward. Peak "
        f"memory = growth of the resident set's peak over 3 calls in a fresh process, above the built model and "
        f"image. {machine()}, {heap}.\n"
    )
    print(text)
    if args.no_publish:
        print("--no-publish: nothing written.")
    else:
        publish(f"prompt_speed{threads_suffix()}{suffix}", text, marker="prompt_speed")


if __name__ == "__main__":
    main()
