"""The lecture's step from sliding windows to convolution, measured: the patch classifier run patch by patch against
the same network convolutionalized and run once over the image.

    python benchmarks/sliding_vs_dense.py                 # prints the table; writes benchmarks/results, docs
    python benchmarks/sliding_vs_dense.py --threads 1 --repeats 3

One CamVid val image (ImageNet-normalised) at a third of its resolution (160x120, the models table's training size)
and at full resolution (480x360); the patch classifier (p = 17, 11 classes) from seed 0, in eval mode, float32,
batch 1, no gradient. Both forms hold the same parameters; the table gives their forward FLOPs (2 per multiply-add,
torch.utils.flop_counter), the median seconds of --repeats interleaved calls, and how far the logits differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from _publish import publish
from _timing import interleaved, machine
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pixelwise.data import read_image  # noqa: E402
from pixelwise.models.patch_classifier import PatchClassifier  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "camvid"
SIZES = [(120, 160), (360, 480)]


def flops(fn, x: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn(x)
    return int(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", type=Path, default=DATA / "images" / "val" / "0016E5_07959.jpg")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = PatchClassifier(11, patch_size=17).eval()
    image = read_image(args.image).float()[None] / 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    lines = [
        "| image | sliding GFLOPs | dense GFLOPs | sliding s | dense s | speed-up | max \\|Δ logit\\| | same argmax |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for height, width in SIZES:
        x = (F.interpolate(image, size=(height, width), mode="bilinear", antialias=True) - mean) / std
        with torch.no_grad():
            sliding, dense = model.forward_sliding(x), model.forward_dense(x)
            forms = {"sliding": lambda: model.forward_sliding(x), "dense": lambda: model.forward_dense(x)}
            seconds = interleaved(forms, repeats=args.repeats)
        same = (sliding.argmax(1) == dense.argmax(1)).float().mean().item()
        lines.append(
            f"| {width}x{height} | {flops(model.forward_sliding, x) / 1e9:.1f} "
            f"| {flops(model.forward_dense, x) / 1e9:.2f} "
            f"| {seconds['sliding']:.2f} | {seconds['dense']:.3f} | {seconds['sliding'] / seconds['dense']:.1f}x "
            f"| {(sliding - dense).abs().max().item():.1e} | {100 * same:.2f} % |"
        )
        print(lines[-1], flush=True)
    text = (
        "\n".join(lines)
        + f"\n\nCommand: `python benchmarks/sliding_vs_dense.py --threads {args.threads or torch.get_num_threads()} "
        f"--repeats {args.repeats}`; image {args.image.name} (CamVid val); {machine()}.\n"
    )
    print(text)
    publish("sliding_vs_dense", text)


if __name__ == "__main__":
    main()
