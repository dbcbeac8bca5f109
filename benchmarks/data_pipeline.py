"""The data pipeline on CamVid: decoding and the training transform per core, then whether the loader keeps up
with U-Net training (the step-time breakdown that training logs).

    python benchmarks/data_pipeline.py [--data ../shared/data/camvid] [--images 64] [--steps 20]

1. Per core (one thread, in this process; ours against ours, interleaved): decoding CamVid's JPEG images and PNG
   masks with Pillow against torchvision.io (pixelwise's reader takes torchvision.io for JPEGs and 8-bit
   grayscale/RGB PNGs, Pillow for the rest; tests/test_data.py checks both give the same pixels), and one whole
   training sample (decode, mask check, the train transform of configs/unet_camvid.yaml: random scale, crop
   180x240, flip, color jitter, normalisation) with either decoder.
2. U-Net training as configs/unet_camvid.yaml sets it up (batch 8, crop 180x240, all of this machine's cores), for
   ``--steps`` steps with 0 and with 1 DataLoader worker: each step's seconds and the part spent waiting for the
   loader, read back from the run's log.jsonl (``step_s``, ``data_s``); the first step (worker start-up) is left
   out. The loader keeps up when the waiting share is near 0.

Writes benchmarks/results/data_pipeline.md and the docs/benchmarks.md section between the data_pipeline
markers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _publish import publish  # noqa: E402
from _timing import interleaved, machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pixelwise.data import SegmentationFolder  # noqa: E402
from pixelwise.data import io as data_io  # noqa: E402
from pixelwise.data.transforms import IMAGENET_MEAN, IMAGENET_STD, train_transforms  # noqa: E402
from pixelwise.engine.config import TrainConfig, load_yaml  # noqa: E402
from pixelwise.engine.train import train  # noqa: E402

RECIPE = ROOT / "configs" / "unet_camvid.yaml"


class _Decoder:
    """Switches pixelwise's reader between torchvision.io (its default) and Pillow alone."""

    def __init__(self, use_torchvision: bool) -> None:
        self.use_torchvision = use_torchvision
        self.saved = data_io._TV_DECODE_JPEG

    def __enter__(self):
        data_io._TV_DECODE_JPEG = self.saved if self.use_torchvision else None

    def __exit__(self, *exc):
        data_io._TV_DECODE_JPEG = self.saved


def per_core(data: Path, n: int, repeats: int) -> list[str]:
    torch.set_num_threads(1)
    ds = SegmentationFolder(data, "train")
    samples = ds.samples[:n]
    cfg = TrainConfig.from_dict(load_yaml(RECIPE))
    lo, hi = cfg.scale_range
    tf = train_transforms(cfg.crop_size, (lo * cfg.input_scale, hi * cfg.input_scale), IMAGENET_MEAN, IMAGENET_STD)

    def images():
        for s in samples:
            data_io.read_image(s.image)

    def whole():
        for i in range(len(samples)):
            tf(*ds[i])

    rows = []
    # PNG masks are not a row: both sides read them with Pillow (torchvision's decode_png crashes on corrupt files).
    for label, fn in (("decode JPEG image (480x360)", images),
                      ("training sample: decode + mask check + train transform", whole)):
        def with_decoder(use_tv, fn=fn):
            def call():
                with _Decoder(use_tv):
                    fn()
            return call

        torch.manual_seed(0)
        t = interleaved({"pillow": with_decoder(False), "torchvision": with_decoder(True)}, repeats=repeats)
        rows.append(f"| {label} | {n / t['pillow']:.0f} | {n / t['torchvision']:.0f} | "
                    f"**{t['pillow'] / t['torchvision']:.2f}** |")
        print(rows[-1], flush=True)
    return rows


def breakdown(data: Path, steps: int, threads: int) -> list[str]:
    torch.set_num_threads(threads)
    recipe = load_yaml(RECIPE)
    rows = []
    for workers in (0, 1):
        cfg = TrainConfig.from_dict({**recipe, "data": str(data), "epochs": None, "steps": steps,
                                     "val_split": "val[:8]", "num_workers": workers})
        with tempfile.TemporaryDirectory() as out:
            train(cfg, Path(out) / "run", progress=False)
            log = [json.loads(line) for line in (Path(out) / "run" / "log.jsonl").read_text().splitlines()]
        recs = [r for r in log if r["type"] == "train"][1:]
        step = statistics.median(r["step_s"] for r in recs)
        wait = statistics.median(r["data_s"] for r in recs)
        share = sum(r["data_s"] for r in recs) / sum(r["step_s"] for r in recs)
        rows.append(f"| {workers} | {step:.3f} | {wait:.4f} | {100 * share:.1f} % | "
                    f"{cfg.batch_size / step:.1f} |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "camvid"))
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    data = Path(args.data)
    threads = torch.get_num_threads()
    decode = per_core(data, args.images, args.repeats)
    steps = breakdown(data, args.steps, threads)
    torch.set_num_threads(threads)
    text = (
        f"Per core (1 thread), CamVid train, the first {args.images} images; items/s, median of {args.repeats} "
        f"interleaved passes. {machine()}.\n\n"
        "| work | Pillow items/s | torchvision.io items/s | speed-up |\n|---|---|---|---|\n" + "\n".join(decode)
        + f"\n\nU-Net training as `configs/unet_camvid.yaml` (batch 8, 180x240 crops, {threads} threads), "
        f"steps 2-{args.steps}; medians of each step's `step_s` and `data_s` from log.jsonl.\n\n"
        "| DataLoader workers | step s | waiting for data s | waiting share (sum) | images/s trained |\n"
        "|---|---|---|---|---|\n" + "\n".join(steps)
        + "\n\nCommand: `python benchmarks/data_pipeline.py`; data: CamVid (../shared/data/camvid).\n"
    )
    publish("data_pipeline", text)
    print(text)


if __name__ == "__main__":
    main()
