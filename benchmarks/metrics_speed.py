"""Confusion-matrix update speed: pixelwise.metrics.SegmentationMetrics against torchmetrics' MulticlassJaccardIndex
on the same tensors, interleaved in one process.

    python benchmarks/metrics_speed.py [--device cpu|cuda] [--repeats 20]

Each row feeds a batch of 8 label maps (int64 predictions, int64 targets with 5 % void pixels = 255) to
``update`` of both; both use their default argument validation. Before timing, the IoU of both is checked to be
equal. Writes benchmarks/results/metrics_speed[_cuda].md and the docs/benchmarks.md section between the
``<!-- metrics_speed:start/end -->`` markers (CPU) or ``metrics_speed_cuda`` (GPU).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _publish import publish  # noqa: E402
from _timing import interleaved, machine  # noqa: E402

from pixelwise.metrics import SegmentationMetrics  # noqa: E402

CASES = [  # (label, num_classes, H, W)
    ("CamVid, 11 classes, 360x480", 11, 360, 480),
    ("Cityscapes, 19 classes, 512x1024", 19, 512, 1024),
    ("ADE20K, 150 classes, 512x512", 150, 512, 512),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    try:
        from torchmetrics.classification import MulticlassJaccardIndex
    except ImportError:
        raise SystemExit("this benchmark compares against torchmetrics: pip install torchmetrics")
    import torchmetrics

    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    rows = []
    for label, k, h, w in CASES:
        target = torch.randint(0, k, (args.batch, h, w), generator=g)
        target[torch.rand(target.shape, generator=g) < 0.05] = 255
        # Predictions right on ~70 % of the pixels, like a trained model's.
        preds = torch.where(torch.rand(target.shape, generator=g) < 0.7, target.clamp(max=k - 1),
                            torch.randint(0, k, target.shape, generator=g))
        preds, target = preds.to(device), target.to(device)
        ours = SegmentationMetrics(k, ignore_index=255, device=device)
        peer = MulticlassJaccardIndex(num_classes=k, ignore_index=255, average="none").to(device)
        ours.update(preds, target)
        peer.update(preds, target)
        iou_ours = torch.tensor(ours.compute()["IoU"], dtype=torch.float64)
        iou_peer = peer.compute().double().cpu()
        if not torch.allclose(iou_ours, iou_peer, atol=1e-6):
            raise SystemExit(f"{label}: IoU differs between pixelwise and torchmetrics")
        t = interleaved({"ours": lambda: ours.update(preds, target), "peer": lambda: peer.update(preds, target)},
                        repeats=args.repeats, warmup=2, device=device)
        mpix = preds.numel() / 1e6
        rows.append(f"| {label} | {mpix / t['ours']:.0f} | {mpix / t['peer']:.0f} | {t['peer'] / t['ours']:.2f}x |")
        print(rows[-1], flush=True)
    text = (
        f"Confusion-matrix update of a batch of {args.batch} label maps, Mpixel/s (median of {args.repeats} "
        f"interleaved calls; IoU of both checked equal first). {machine(device)}; torchmetrics "
        f"{torchmetrics.__version__}.\n\n"
        "| case | pixelwise | torchmetrics MulticlassJaccardIndex | speed-up |\n|---|---|---|---|\n"
        + "\n".join(rows) + "\n\n"
        f"Command: `python benchmarks/metrics_speed.py --device {device.type}`; data: random label maps with 5 % "
        "void pixels (the speed of a bincount does not depend on the image content).\n"
    )
    name = "metrics_speed" if device.type == "cpu" else "metrics_speed_cuda"
    publish(name, text)
    print(text)


if __name__ == "__main__":
    main()
