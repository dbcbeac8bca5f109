"""The models table of docs/models.md: every model at one fixed short CPU budget on CamVid, from scratch and, where an
ImageNet encoder applies, pretrained (the MobileNetV2 weights in ../shared/weights, the only ones this machine has).

    python benchmarks/models_table.py              # train what is missing (resumes), evaluate, write the table
    python benchmarks/models_table.py --no-train   # tabulate the runs that exist
    python benchmarks/models_table.py --only deeplabv3plus_mnv2_imagenet   # one run

The budget, the same for every row: CamVid train (367 images) at a third of its resolution (160x120, whole images
as crops, scale jitter 0.75-1.5, flips), batch 8, 300 AdamW steps (lr 1e-3, poly), seed 0; then mIoU on CamVid val
(101 images, scored on the 480x360 labels). Runs live in runs/models_table/<row>/ and a stopped run resumes.
Parameters and GFLOPs (one 3x512x512 forward pass, 2 FLOPs per multiply-add) are those of the trained
configuration with 11 classes.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch
from _publish import publish

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pixelwise.models import get_model_info, model_complexity  # noqa: E402

DATA = "../shared/data/camvid"
WEIGHTS = "../shared/weights/mobilenet_v2_imagenet_features_tvformat.pth"
BUDGET = {
    "data": DATA,
    "steps": 300,
    "batch_size": 8,
    "eval_batch_size": 8,
    "input_scale": 1 / 3,
    "crop_size": [120, 160],
    "scale_range": [0.75, 1.5],
    "optimizer": "adamw",
    "lr": 0.001,
    "weight_decay": 0.0001,
    "val_every": 1000,  # validate once, at the end of the budget
    "seed": 0,
    "num_workers": 1,
}

# (row name, model, options). "_imagenet" rows load the MobileNetV2 ImageNet encoder; their "_scratch" twin is
# the same network from a random initialisation. Cheapest first, so a partial run fills the table from the top.
ROWS: list[tuple[str, str, dict]] = [
    ("fcn8s_mnv2_scratch", "fcn8s", {"backbone": "mobilenet_v2"}),
    ("fcn8s_mnv2_imagenet", "fcn8s", {"backbone": "mobilenet_v2", "backbone_weights": WEIGHTS}),
    ("encoder_unet_mnv2_scratch", "encoder_unet", {"backbone": "mobilenet_v2"}),
    ("encoder_unet_mnv2_imagenet", "encoder_unet", {"backbone": "mobilenet_v2", "backbone_weights": WEIGHTS}),
    ("deeplabv3plus_mnv2_scratch", "deeplabv3plus", {"backbone": "mobilenet_v2"}),
    ("deeplabv3plus_mnv2_imagenet", "deeplabv3plus", {"backbone": "mobilenet_v2", "backbone_weights": WEIGHTS}),
    ("deeplabv3_mnv2_scratch", "deeplabv3", {"backbone": "mobilenet_v2"}),
    ("deeplabv3_mnv2_imagenet", "deeplabv3", {"backbone": "mobilenet_v2", "backbone_weights": WEIGHTS}),
    ("unet_base16", "unet", {"base_channels": 16}),
    ("encoder_unet_resnet34", "encoder_unet", {}),
    ("deeplabv3_resnet50", "deeplabv3", {}),
    ("deeplabv3plus_resnet50", "deeplabv3plus", {}),
    ("fcn32s_vgg16", "fcn32s", {}),
    ("fcn16s_vgg16", "fcn16s", {}),
    ("fcn8s_vgg16", "fcn8s", {}),
    ("segnet_vgg16bn", "segnet", {}),
    ("deconvnet_vgg16bn", "deconvnet", {}),
    ("dilated_frontend_vgg16", "dilated_frontend", {}),
    ("patch_classifier", "patch_classifier", {"dense": True}),  # same logits as sliding, one pass (tested)
]


def run(cmd: list[str]) -> None:
    print("+", " ".join(shlex.quote(c) for c in cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def _finished(out: Path) -> bool:
    log = out / "log.jsonl"
    if not (out / "last.pt").is_file() or not log.is_file():
        return False
    return any(json.loads(line).get("type") == "val" for line in log.read_text().splitlines())


def train_and_eval(name: str, model: str, options: dict) -> dict | None:
    out = ROOT / "runs" / "models_table" / name
    if not _finished(out):
        config = {**BUDGET, "model": model, "model_kwargs": options}
        out.mkdir(parents=True, exist_ok=True)
        cfg_path = out / "budget.json"
        cfg_path.write_text(json.dumps(config, indent=1))
        sets = [f"{k}={json.dumps(v)}" for k, v in config.items()]
        resume = ["--resume"] if (out / "last.pt").is_file() else []
        run([sys.executable, "-m", "pixelwise", "train", "--out", str(out.relative_to(ROOT)), "--quiet", *resume,
             "--set", *sets])
    metrics_path = out / "eval_val.json"
    if not metrics_path.is_file():
        run([sys.executable, "-m", "pixelwise", "eval", "--checkpoint", str((out / "last.pt").relative_to(ROOT)),
             "--data", DATA, "--split", "val", "--batch-size", "8", "--json", str(metrics_path.relative_to(ROOT)),
             "--quiet"])
    metrics = json.loads(metrics_path.read_text())
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    train = [r for r in log if r["type"] == "train"]
    return {"miou": metrics["mIoU"], "pixel_accuracy": metrics["pixel_accuracy"],
            "minutes": max(r.get("elapsed_s", 0.0) for r in log) / 60, "steps": train[-1]["step"] if train else 0}


def table(results: dict[str, dict]) -> str:
    # One line per architecture: scratch and ImageNet side by side where both exist.
    lines = [
        "| model | encoder | paper | params | GFLOPs 512² | val mIoU, scratch | val mIoU, ImageNet encoder | "
        "train min (scratch / ImageNet) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    seen = set()
    for name, model, options in ROWS:
        base = name.removesuffix("_scratch").removesuffix("_imagenet")
        if base in seen:
            continue
        seen.add(base)
        opts = {k: v for k, v in options.items() if k != "backbone_weights"}
        cost = model_complexity(model, num_classes=11, **opts)
        encoder = opts.get("backbone", _default_backbone(model))
        scratch = results.get(base + "_scratch") or results.get(name if not name.endswith("_imagenet") else "")
        pretrained = results.get(base + "_imagenet")
        paper = get_model_info(model)["paper"].split(". ")
        cite = f"{paper[0].split(',')[0]} et al. {paper[-1]}" if len(paper) > 2 else paper[0]
        has_pretrained = any(n == base + "_imagenet" for n, _, _ in ROWS)

        def cell(r: dict | None, applies: bool = True) -> str:
            if not applies:
                return "–"
            return "not run yet" if r is None else f"{100 * r['miou']:.1f} %"

        minutes = " / ".join(f"{r['minutes']:.1f}" if r else "–" for r in ([scratch, pretrained] if has_pretrained
                                                                           else [scratch]))
        shown = model + "".join(f" {k}={v}" for k, v in opts.items() if k != "backbone")
        lines.append(
            f"| {shown} | {encoder} | {cite} | {cost['params'] / 1e6:.1f}M | {cost['flops'] / 1e9:.1f} | "
            f"{cell(scratch)} | {cell(pretrained, has_pretrained)} | {minutes} |"
        )
    return "\n".join(lines)


def _default_backbone(model: str) -> str:
    import inspect

    from pixelwise.models.registry import _get_entry

    fixed = {"dilated_frontend": "vgg16 (dilated)", "unet": "own", "patch_classifier": "own"}
    param = inspect.signature(_get_entry(model).factory).parameters.get("backbone")
    return str(param.default) if param is not None else fixed.get(model, "—")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-train", action="store_true", help="tabulate existing runs only")
    ap.add_argument("--only", nargs="+", help="row names to run")
    args = ap.parse_args()
    results: dict[str, dict] = {}
    for name, model, options in ROWS:
        out = ROOT / "runs" / "models_table" / name
        if args.only and name not in args.only:
            if _finished(out):
                results[name] = train_and_eval(name, model, options)
            continue
        if args.no_train and not _finished(out):
            continue
        results[name] = train_and_eval(name, model, options)

    text = (
        f"{table(results)}\n\n"
        f"Budget: {BUDGET['steps']} AdamW steps of batch {BUDGET['batch_size']} on CamVid train at 160x120 "
        f"(lr {BUDGET['lr']}, poly), seed {BUDGET['seed']}; mIoU on CamVid val (101 images, 480x360 labels). "
        "The ImageNet column exists only for the MobileNetV2 encoder, the one set of ImageNet weights on this machine. "
        "Minutes are the training loop's wall time, validation included. "
        f"Generated by `python benchmarks/models_table.py` on {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}; each run used the threads OMP_NUM_THREADS allowed it.\n"
    )
    print(text)
    publish("models", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
