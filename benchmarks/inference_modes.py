"""What sliding-window inference and test-time augmentation change, on a real checkpoint and a real split.

Evaluates one checkpoint on one split in several inference modes (whole image, flip, multi-scale + flip, sliding
windows) and prints the mIoU, pixel accuracy and seconds of each, as a Markdown table written into
docs/benchmarks.md.
Default: the models table's DeepLabv3+ (MobileNetV2, ImageNet encoder) on CamVid val, which must have been trained
first (``python benchmarks/models_table.py --only deeplabv3plus_mnv2_imagenet``).

    python benchmarks/inference_modes.py [--checkpoint FILE] [--data DIR] [--split val] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _publish import publish  # noqa: E402
from _timing import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pixelwise.data import build_dataset, pad_collate  # noqa: E402
from pixelwise.engine.inference import TTA_SCALES, InferenceOptions, evaluate  # noqa: E402
from pixelwise.engine.predictor import Predictor  # noqa: E402


def modes(crop: tuple[int, int]) -> list[InferenceOptions]:
    return [
        InferenceOptions(),
        InferenceOptions(flip=True),
        InferenceOptions(scales=(1.0, 1.25, 1.5), flip=True),
        InferenceOptions(scales=TTA_SCALES, flip=True),
        InferenceOptions("slide", crop=crop),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=str(ROOT / "runs/models_table/deeplabv3plus_mnv2_imagenet/best.pt"))
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "camvid"))
    p.add_argument("--split", default="val")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    predictor = Predictor.from_checkpoint(args.checkpoint, "cpu")
    model, card = predictor.model, predictor.card
    ds = build_dataset(args.data, args.split, transforms=predictor.transform, require_masks=True)
    loader = DataLoader(ds, batch_size=4, collate_fn=partial(pad_collate, ignore_index=card.ignore_index))
    crop = card.crop_size
    rows = []
    for options in modes(crop):
        start = time.perf_counter()
        m = evaluate(model, loader, card.num_classes, card.ignore_index, card.input_scale, test_time=options)
        seconds = time.perf_counter() - start
        rows.append((options.describe(), 100 * m["mIoU"], 100 * m["pixel_accuracy"], seconds))
        print(f"{rows[-1][0]}: mIoU {rows[-1][1]:.2f}, pixel accuracy {rows[-1][2]:.2f}, {seconds:.1f} s", flush=True)
    base = rows[0][1]
    name = Path(args.checkpoint).parent.name
    lines = [
        f"| inference ({name}, input_scale {card.input_scale:.3g}) | mIoU % | Δ mIoU | pixel acc. % | seconds |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {d} | {miou:.2f} | {miou - base:+.2f} | {acc:.2f} | {s:.0f} |" for d, miou, acc, s in rows]
    text = "\n".join(lines) + (
        f"\n\nCommand: `python benchmarks/inference_modes.py --threads {args.threads}`; data: {Path(args.data).name} "
        f"{args.split} ({len(ds)} images), scored at the labels' resolution; seconds on {machine()}, "
        f"{args.threads} thread(s). Crop sizes are in the pixels the model sees (after input_scale).\n"
    )
    publish("inference_modes", text)
    print(text)


if __name__ == "__main__":
    main()
