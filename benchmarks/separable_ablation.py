"""What the paper's BN + ReLU after each depthwise step costs in DeepLabv3+'s training step, against SMP.

    python benchmarks/separable_ablation.py [--rows NAME ...] [--repeats 7] [--threads N]

Three models per row take training steps in turn (forward + cross-entropy + backward + SGD step, batch 8 of
3x256x256, 11 classes, as benchmarks/train_throughput.py times them): ours as the paper builds its atrous separable
convolutions (depthwise -> BN -> ReLU -> pointwise -> BN -> ReLU, ``deeplabv3plus(separable=True)``), ours with
``depthwise_bn_relu=False`` (Xception's separable convolution: depthwise -> pointwise -> BN -> ReLU, as SMP builds
it), and segmentation_models_pytorch's DeepLabV3Plus. Ratios are each round's speed against SMP's in the same round
(above 1: faster than SMP), the median with the lowest and highest round. If the rows of train_throughput.py that
fall short of SMP do so because of those BatchNorms and ReLUs, the middle model reads 1.0. Needs
``pip install segmentation-models-pytorch``.

Writes benchmarks/results/separable_ablation[_2threads][_jemalloc].md and the docs/benchmarks.md section between
the matching markers; a run of a subset of ``--rows`` only prints its table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _publish import publish_unless_subset, rows_flag  # noqa: E402
from _timing import allocator, interleaved_rounds, machine, ratio_spread, threads_suffix  # noqa: E402
from train_throughput import NUM_CLASSES, Step, gflops, smp_model  # noqa: E402

from pixelwise.models import build_model  # noqa: E402

BATCH, SIZE = 8, 256

# row name -> (our options, SMP's encoder)
ROWS = {
    "DeepLabV3+, MobileNetV2, one refinement conv": (
        {"backbone": "mobilenet_v2", "separable": True, "refine_convs": 1}, "mobilenet_v2"),
    "DeepLabV3+, ResNet-50, one refinement conv": (
        {"backbone": "resnet50", "separable": True, "refine_convs": 1}, "resnet50"),
    "DeepLabV3+, MobileNetV2 (the paper's two refinement convs)": (
        {"backbone": "mobilenet_v2", "separable": True}, "mobilenet_v2"),
    "DeepLabV3+, ResNet-50 (the paper's two refinement convs)": ({"backbone": "resnet50", "separable": True},
                                                                  "resnet50"),
}
SIDES = ("paper", "xception", "smp")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", nargs="+", default=None, choices=list(ROWS), metavar="NAME",
                    help=f"a subset of: {'; '.join(ROWS)} (printed only, not published)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import segmentation_models_pytorch  # noqa: F401
    except ImportError:
        sys.exit("separable_ablation.py compares with SMP: pip install segmentation-models-pytorch")
    rows = []
    for row in args.rows or ROWS:
        options, encoder = ROWS[row]
        models = {
            "paper": build_model("deeplabv3plus", NUM_CLASSES, 3, **options),
            "xception": build_model("deeplabv3plus", NUM_CLASSES, 3, depthwise_bn_relu=False, **options),
            "smp": smp_model("DeepLabV3Plus", encoder),
        }
        flops = {s: gflops(m, SIZE) for s, m in models.items()}
        steps = {s: Step(m, "cpu", BATCH, SIZE, "fp32", channels_last=False) for s, m in models.items()}
        rounds = interleaved_rounds(steps, repeats=args.repeats, warmup=1)
        ips = {s: BATCH / statistics.median(v) for s, v in rounds.items()}
        paper = ratio_spread(rounds["paper"], rounds["smp"])
        xception = ratio_spread(rounds["xception"], rounds["smp"])
        opts = ", ".join(f"{k}={v}" for k, v in options.items())
        rows.append(
            f"| {row} | `deeplabv3plus({opts})` | {ips['paper']:.2f} | {ips['xception']:.2f} | {ips['smp']:.2f} | "
            "**{:.2f}** ({:.2f}-{:.2f}) | **{:.2f}** ({:.2f}-{:.2f}) | ".format(*paper, *xception)
            + " / ".join(f"{flops[s]:.1f}" for s in SIDES) + " |"
        )
        print(rows[-1], flush=True)
        del steps, models
    heap, suffix, env = allocator()
    flags = f" --threads {torch.get_num_threads()} --repeats {args.repeats}" + rows_flag(args.rows)
    text = (
        f"Training step (forward + cross-entropy + backward + SGD step), batch {BATCH} of 3x{SIZE}x{SIZE}, "
        f"{NUM_CLASSES} classes, fp32; images/s, median of {args.repeats} interleaved steps of the three models; "
        "each ratio: the median of the rounds' speed ratios to SMP's DeepLabV3Plus, in brackets the lowest and "
        f"highest round. {machine()}; heap allocator: {heap}.\n\n"
        "| architecture | ours | ours img/s | ours, `depthwise_bn_relu=False`, img/s | SMP img/s | ours / SMP (range) "
        "| ours, `depthwise_bn_relu=False` / SMP (range) | GFLOPs fwd at 256x256 (ours / without / SMP) |\n"
        "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        f"Command: `{env}python benchmarks/separable_ablation.py{flags}`; data: random tensors (the speed of a step "
        "does not depend on the pixel values).\n"
    )
    print(text)
    publish_unless_subset("separable_ablation" + threads_suffix() + suffix, text, args.rows)


if __name__ == "__main__":
    main()
