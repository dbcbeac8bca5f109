"""Accuracy at equal budget: ours against segmentation_models_pytorch's U-Net and torchvision's DeepLabV3, each
trained by the same pixelwise training loop on CamVid with the same data, augmentation, steps and schedule.

    python benchmarks/equal_budget.py                 # train what is missing (runs resume), evaluate, write the table
    python benchmarks/equal_budget.py --pairs unet    # one pair
    python benchmarks/equal_budget.py --no-train      # tabulate the runs that exist
    python benchmarks/equal_budget.py --pairs unet --seeds 0 1   # a second seed for each side of a pair
    python benchmarks/equal_budget.py --pairs deeplabv3 --only deeplabv3_resnet50_ours   # one side (one process each)

The peers are registered as pixelwise models inside this process only (``peer_smp_unet``,
``peer_torchvision_deeplabv3``), so both sides of a pair see the identical pipeline: the budget of
benchmarks/models_table.py (CamVid train at 160x120, scale jitter 0.75-1.5, flips, color jitter, batch 8, 300
AdamW steps at lr 1e-3 under poly decay, seed 0, cross-entropy with void ignored), from a random initialisation on
both sides (no ImageNet weights for ResNets exist on this machine). Scored on CamVid test (233 images, the 480x360
labels). Ours is configured as the peer's architecture, as in benchmarks/train_throughput.py; parameter counts are
printed so a difference in the network would show. A seed sets the initialisation, the sample order and the
augmentation, the same for both sides; with one seed per side, differences of a point or two are not a ranking.
The pair ``unet_init`` is an ablation, not a peer comparison: our U-Net's decoder and head initialised three ways,
U-Net's He-normal (our default), PyTorch's default (``decoder_init="pytorch"``, what ours used before) and SMP's
(He-uniform convolutions, Xavier head, zero biases).

Runs live in runs/equal_budget/<row>/ (seed 0) and runs/equal_budget/<row>_seed<N>/. Writes
benchmarks/results/equal_budget.md and the docs/benchmarks.md section between the equal_budget markers.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _publish import publish  # noqa: E402
from _timing import machine  # noqa: E402
from models_table import BUDGET, DATA  # noqa: E402
from models_table import _finished as finished  # noqa: E402
from train_throughput import ROWS as TWINS  # noqa: E402
from train_throughput import _Out  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

from pixelwise.data import build_dataset, pad_collate  # noqa: E402
from pixelwise.engine.config import TrainConfig  # noqa: E402
from pixelwise.engine.predictor import Predictor  # noqa: E402
from pixelwise.engine.train import train  # noqa: E402
from pixelwise.models import count_parameters, register_model  # noqa: E402


@register_model("peer_smp_unet", paper="segmentation_models_pytorch Unet (benchmark peer, not part of pixelwise)")
def peer_smp_unet(num_classes: int, in_channels: int = 3, encoder: str = "resnet34"):
    import segmentation_models_pytorch as smp

    return smp.Unet(encoder_name=encoder, encoder_weights=None, in_channels=in_channels, classes=num_classes)


@register_model("peer_torchvision_deeplabv3",
                paper="torchvision deeplabv3_resnet50 (benchmark peer, not part of pixelwise)")
def peer_torchvision_deeplabv3(num_classes: int, in_channels: int = 3):
    from torchvision.models.segmentation import deeplabv3_resnet50

    if in_channels != 3:
        raise ValueError("torchvision's deeplabv3_resnet50 takes 3-channel images")
    return _Out(deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False))


@register_model("ours_unet_smp_init",
                paper="pixelwise encoder_unet with SMP's decoder and head initialisation (benchmark ablation)")
def ours_unet_smp_init(num_classes: int, in_channels: int = 3, **options):
    from pixelwise.models import build_model

    # Built with PyTorch's default initialisation first, as when this row was first trained, so its seeds draw the
    # same numbers; then SMP's initialize_decoder / initialize_head (segmentation_models_pytorch.base.initialization),
    # restated.
    model = build_model("encoder_unet", num_classes, in_channels, **{**options, "decoder_init": "pytorch"})
    # SMP's initialize_decoder / initialize_head (segmentation_models_pytorch.base.initialization), restated.
    for module in model.blocks.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_uniform_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(module.weight)
            torch.nn.init.zeros_(module.bias)
    torch.nn.init.xavier_uniform_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)
    return model


# pair -> (label, [(row name, side, model, options)])
PAIRS = {
    "unet": ("U-Net, ResNet-34", [
        ("unet_resnet34_ours", "pixelwise", *TWINS["U-Net, ResNet-34"][0]),
        ("unet_resnet34_smp", "SMP Unet", "peer_smp_unet", {}),
    ]),
    "deeplabv3": ("DeepLabV3, ResNet-50 (output stride 8)", [
        ("deeplabv3_resnet50_ours", "pixelwise", *TWINS["DeepLabV3, ResNet-50"][0]),
        ("deeplabv3_resnet50_torchvision", "torchvision deeplabv3_resnet50", "peer_torchvision_deeplabv3", {}),
    ]),
    "unet_init": ("U-Net, ResNet-34: decoder initialisation", [
        ("unet_resnet34_ours", "pixelwise, U-Net's He init (default)", *TWINS["U-Net, ResNet-34"][0]),
        ("unet_resnet34_ours_pytorch_init", "pixelwise, PyTorch's default init (`decoder_init=pytorch`)",
         "encoder_unet", {**TWINS["U-Net, ResNet-34"][0][1], "decoder_init": "pytorch"}),
        ("unet_resnet34_ours_smp_init", "pixelwise, SMP's decoder/head init", "ours_unet_smp_init",
         TWINS["U-Net, ResNet-34"][0][1]),
    ]),
}


def run_dir(name: str, seed: int = 0) -> Path:
    return ROOT / "runs" / "equal_budget" / (name if seed == 0 else f"{name}_seed{seed}")


def seeds_of(name: str, requested: list[int]) -> list[int]:
    """The requested seeds and those of the runs that exist for row ``name``."""
    found = {0} if run_dir(name).is_dir() else set()
    for path in (ROOT / "runs" / "equal_budget").glob(f"{name}_seed*"):
        tail = path.name.removeprefix(f"{name}_seed")
        if tail.isdigit():
            found.add(int(tail))
    return sorted(found | set(requested))


def train_and_test(name: str, model: str, options: dict, allow_train: bool, seed: int = 0) -> dict | None:
    out = run_dir(name, seed)
    if not finished(out):
        if not allow_train:
            return None
        cfg = TrainConfig.from_dict({**BUDGET, "data": str(ROOT / DATA), "model": model, "model_kwargs": options,
                                     "seed": seed})
        print(f"training {out.name} ({model} {options})", flush=True)
        train(cfg, out, resume=(out / "last.pt").is_file(), progress=False)
    result = out / "eval_test.json"
    if not result.is_file():
        predictor = Predictor.from_checkpoint(out / "last.pt", "cpu")
        net = predictor.model
        ds = build_dataset(str(ROOT / DATA), "test", transforms=predictor.transform, require_masks=True)
        loader = torch.utils.data.DataLoader(
            ds, batch_size=8, collate_fn=partial(pad_collate, ignore_index=predictor.card.ignore_index))
        with torch.inference_mode():
            metrics = predictor.evaluate(loader)
        result.write_text(json.dumps({"mIoU": float(metrics["mIoU"]),
                                      "pixel_accuracy": float(metrics["pixel_accuracy"]),
                                      "params": count_parameters(net)}))
    metrics = json.loads(result.read_text())
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    metrics["minutes"] = max(r.get("elapsed_s", 0.0) for r in log) / 60
    metrics["val_mIoU"] = [r["mIoU"] for r in log if r["type"] == "val"][-1]
    return metrics


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", nargs="+", choices=list(PAIRS), default=list(PAIRS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0],
                    help="seeds to train for the pairs chosen (default 0); every seed with a run is tabulated")
    ap.add_argument("--only", nargs="+", metavar="ROW", default=None,
                    help="train only these rows of the chosen pairs (e.g. deeplabv3_resnet50_torchvision), so the "
                         "two sides of a pair can train in two processes; the rest are tabulated if they exist")
    ap.add_argument("--no-train", action="store_true", help="tabulate existing runs only")
    args = ap.parse_args()
    names = {row[0] for _, rows in PAIRS.values() for row in rows}
    unknown = sorted(set(args.only or []) - names)
    if unknown:
        ap.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(sorted(names))}")
    lines = ["| architecture | trained | seed | params M | test mIoU | test pixel accuracy | val mIoU | train min |",
             "|---|---|---|---|---|---|---|---|"]
    for key in PAIRS:
        label, rows = PAIRS[key]
        chosen = key in args.pairs and not args.no_train
        for name, side, model, options in rows:
            scores = []
            train_row = chosen and (args.only is None or name in args.only)
            for seed in seeds_of(name, args.seeds if train_row else [0]):
                r = train_and_test(name, model, options, allow_train=train_row, seed=seed)
                if r is None:
                    lines.append(f"| {label} | {side} | {seed} | | not run yet | | | |")
                    continue
                scores.append(r)
                lines.append(f"| {label} | {side} | {seed} | {r['params'] / 1e6:.2f} | **{100 * r['mIoU']:.1f} %** | "
                             f"{100 * r['pixel_accuracy']:.1f} % | {100 * r['val_mIoU']:.1f} % | "
                             f"{r['minutes']:.1f} |")
                print(lines[-1], flush=True)
            if len(scores) > 1:
                def mean(key: str) -> float:
                    return 100 * sum(r[key] for r in scores) / len(scores)
                spread = 100 * (max(r["mIoU"] for r in scores) - min(r["mIoU"] for r in scores))
                lines.append(f"| {label} | {side} | mean of {len(scores)} | | **{mean('mIoU'):.1f} %** "
                             f"(range {spread:.1f}) | {mean('pixel_accuracy'):.1f} % | {mean('val_mIoU'):.1f} % | |")
    text = (
        "\n".join(lines) + "\n\n"
        f"Budget, the same for both sides of a pair and for benchmarks/models_table.py: {BUDGET['steps']} AdamW "
        f"steps of batch {BUDGET['batch_size']} on CamVid train at 160x120 (lr {BUDGET['lr']}, poly), seed "
        "as in the seed column, random initialisation; mIoU on CamVid test (233 images, 480x360 labels). Every "
        "model trained by pixelwise's loop. Minutes: the loop's wall time on a machine shared with other "
        f"jobs. {machine()}.\n\nCommand: `python benchmarks/equal_budget.py`; data: CamVid (../shared/data/camvid).\n"
    )
    publish("equal_budget", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
