"""Training throughput, ours against segmentation_models_pytorch (SMP) and torchvision, interleaved in one process.

    python benchmarks/train_throughput.py [--device cpu|cuda] [--rows NAME ...] [--repeats 5] [--precision bf16]
                                          [--channels-last] [--no-memory] [--min-round-seconds 0]

One training step = forward + cross-entropy (ignore_index 255) + backward + SGD (momentum 0.9) step, on a batch of
8 random 3x256x256 images with 11-class masks, the models built from scratch (no download). Every row times ours
and the peer in turn (``repeats`` rounds, the order alternating), reports images/s and the ratio ours / peer (above
1: ours is faster) as the median of the rounds' ratios, with the lowest and highest round beside it, so the spread
of a busy machine shows. A round is one step per side, or with ``--min-round-seconds`` the same number of
back-to-back steps on each side, as many as the faster side needs to fill that time. Peak memory: on CUDA
``torch.cuda.max_memory_allocated`` of a step; on the CPU the growth of the process's peak resident set (VmHWM) over
a few steps, each side measured in a fresh subprocess. Also printed: each model's parameters and forward GFLOPs at
256x256 (torch.utils.flop_counter), so a row that compares different amounts of work says so. Peers are optional:
``pip install segmentation-models-pytorch`` (torchvision is a dependency already); rows whose peer is missing are
skipped.

Both sides share the process's heap allocator, which the table names; run under ``LD_PRELOAD`` of jemalloc,
tcmalloc or mimalloc, the results file and docs/benchmarks.md section get its name as a suffix, as a CPU run on more
than one thread gets its thread count. Writes benchmarks/results/train_throughput[_cuda][_bf16|_fp16][_nhwc][_2threads]
[_jemalloc].md and the docs/benchmarks.md section between the matching markers. A run of a subset of ``--rows``
only prints its table: the results file and docs/benchmarks.md keep the full one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _publish import publish_unless_subset, rows_flag  # noqa: E402
from _timing import (  # noqa: E402
    allocator, interleaved_rounds, machine, peak_growth, ratio_spread, subprocess_peak_mib, threads_suffix,
)

from pixelwise.models import build_model, count_parameters  # noqa: E402

NUM_CLASSES = 11


def smp_model(name: str, encoder: str) -> nn.Module:
    import segmentation_models_pytorch as smp

    return getattr(smp, name)(encoder_name=encoder, encoder_weights=None, classes=NUM_CLASSES)


def tv_model(name: str) -> nn.Module:
    from torchvision.models import segmentation as tvs

    kwargs = dict(weights=None, weights_backbone=None, num_classes=NUM_CLASSES)
    if name != "lraspp_mobilenet_v3_large":
        kwargs["aux_loss"] = False
    return _Out(getattr(tvs, name)(**kwargs))


class _Out(nn.Module):
    """torchvision's segmentation models return ``{"out": logits}``; this returns the logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


# row name -> (ours: model name and options, peer label, peer factory)
ROWS = {
    "U-Net, ResNet-34": (("encoder_unet", {"backbone": "resnet34"}), "SMP Unet",
                         lambda: smp_model("Unet", "resnet34")),
    "DeepLabV3+, ResNet-50": (("deeplabv3plus", {"backbone": "resnet50", "separable": True}), "SMP DeepLabV3Plus",
                              lambda: smp_model("DeepLabV3Plus", "resnet50")),
    # SMP's decoder has one separable refinement convolution where the paper has two: the same depth on our side.
    "DeepLabV3+, ResNet-50, one refinement conv": (
        ("deeplabv3plus", {"backbone": "resnet50", "separable": True, "refine_convs": 1}), "SMP DeepLabV3Plus",
        lambda: smp_model("DeepLabV3Plus", "resnet50")),
    "DeepLabV3+, MobileNetV2": (("deeplabv3plus", {"backbone": "mobilenet_v2", "separable": True}),
                                "SMP DeepLabV3Plus",
                                lambda: smp_model("DeepLabV3Plus", "mobilenet_v2")),
    "DeepLabV3+, MobileNetV2, one refinement conv": (
        ("deeplabv3plus", {"backbone": "mobilenet_v2", "separable": True, "refine_convs": 1}), "SMP DeepLabV3Plus",
        lambda: smp_model("DeepLabV3Plus", "mobilenet_v2")),
    "FCN (dilated), ResNet-50": (("fcn_resnet_dilated", {"backbone": "resnet50"}), "torchvision fcn_resnet50",
                                 lambda: tv_model("fcn_resnet50")),
    "DeepLabV3, ResNet-50": (("deeplabv3", {"backbone": "resnet50", "output_stride": 8,
                                            "atrous_rates": [12, 24, 36], "dilate_strided_conv": False}),
                             "torchvision deeplabv3_resnet50", lambda: tv_model("deeplabv3_resnet50")),
    "LR-ASPP, MobileNetV3-Large": (("lraspp", {}), "torchvision lraspp_mobilenet_v3_large",
                                   lambda: tv_model("lraspp_mobilenet_v3_large")),
}


def build(row: str, side: str) -> nn.Module:
    (name, options), _, peer = ROWS[row]
    if side == "ours":
        return build_model(name, NUM_CLASSES, 3, **options)
    return peer()


class Step:
    """One training step of ``model`` on a fixed batch."""

    def __init__(self, model: nn.Module, device, batch: int, size: int, precision: str, channels_last: bool):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(batch, 3, size, size, generator=g).to(device)
        self.masks = torch.randint(0, NUM_CLASSES, (batch, size, size), generator=g).to(device)
        self.model = model.to(device).train()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            self.images = self.images.contiguous(memory_format=torch.channels_last)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9)
        self.device = torch.device(device)
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]

    def __call__(self) -> None:
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            logits = self.model(self.images)
        loss = F.cross_entropy(logits.float(), self.masks, ignore_index=255)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def gflops(model: nn.Module, size: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    model = model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def peak_memory_child(row: str, side: str, args) -> None:
    """In a fresh process: VmHWM growth over 3 training steps (bytes) after the model and batch are built."""
    torch.set_num_threads(args.threads)
    step = Step(build(row, side), "cpu", args.batch, args.size, args.precision, args.channels_last)
    print(json.dumps({"peak": peak_growth(step, 3)}))


def peak_memory(row: str, side: str, args) -> float:
    """MiB. CUDA: in-process max_memory_allocated over one step; CPU: a subprocess (see peak_memory_child)."""
    if torch.device(args.device).type == "cuda":
        step = Step(build(row, side), args.device, args.batch, args.size, args.precision, args.channels_last)
        step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    cmd = [sys.executable, __file__, "--peak-memory-child", row, side, "--batch", str(args.batch),
           "--size", str(args.size), "--precision", args.precision, "--threads", str(args.threads)]
    if args.channels_last:
        cmd.append("--channels-last")
    return subprocess_peak_mib(cmd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rows", nargs="+", default=None, choices=list(ROWS), metavar="NAME",
                    help=f"a subset of: {'; '.join(ROWS)} (printed only, not published)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory column")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--min-round-seconds", type=float, default=0.0,
                    help="each round repeats the step until the faster side has run this long (default 0: one step; "
                         "a GPU step of a few milliseconds needs about 1)")
    ap.add_argument("--peak-memory-child", nargs=2, metavar=("ROW", "SIDE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peak_memory_child:
        peak_memory_child(*args.peak_memory_child, args)
        return
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for row in args.rows or ROWS:
        (name, options), peer_label, _ = ROWS[row]
        try:
            ours, peer = build(row, "ours"), build(row, "peer")
        except ImportError as err:
            print(f"skipped {row}: {err}", flush=True)
            continue
        flops = (gflops(ours, args.size), gflops(peer, args.size))
        params = (count_parameters(ours) / 1e6, count_parameters(peer) / 1e6)
        steps = {s: Step(m, device, args.batch, args.size, args.precision, args.channels_last)
                 for s, m in (("ours", ours), ("peer", peer))}
        rounds = interleaved_rounds(steps, repeats=args.repeats, warmup=1, device=device,
                                    min_round_seconds=args.min_round_seconds)
        ips = {s: args.batch / statistics.median(v) for s, v in rounds.items()}
        ratio, low, high = ratio_spread(rounds["ours"], rounds["peer"])
        if args.no_memory:
            mem = ""
        else:
            mem = " {:.0f} / {:.0f} |".format(*(peak_memory(row, s, args) for s in ("ours", "peer")))
        opts = ", ".join(f"{k}={v}" for k, v in options.items())
        rows.append(
            f"| {row} | `{name}({opts})` | {peer_label} | {ips['ours']:.2f} | {ips['peer']:.2f} | "
            f"**{ratio:.2f}** ({low:.2f}-{high:.2f}) |{mem} {params[0]:.1f} / {params[1]:.1f} | "
            f"{flops[0]:.1f} / {flops[1]:.1f} |"
        )
        print(rows[-1], flush=True)
        del steps, ours, peer
    heap, suffix, env = allocator()
    mem_head = " peak memory MiB (ours / peer) |" if not args.no_memory else ""
    mem_rule = "---|" if not args.no_memory else ""
    flags = (f" --device {device.type}" + (f" --precision {args.precision}" if args.precision != "fp32" else "")
             + (" --channels-last" if args.channels_last else "")
             + (f" --batch {args.batch}" if args.batch != 8 else "")
             + (f" --size {args.size}" if args.size != 256 else "")
             + f" --threads {torch.get_num_threads()} --repeats {args.repeats}"
             + (f" --min-round-seconds {args.min_round_seconds:g}" if args.min_round_seconds > 0 else "")
             + rows_flag(args.rows))
    rounds_text = "steps" if args.min_round_seconds <= 0 else (
        f"rounds, a round being as many steps as fill {args.min_round_seconds:g} s on the faster side (the same "
        "number on both)")
    text = (
        f"Training step (forward + cross-entropy + backward + SGD step), batch {args.batch} of 3x{args.size}x"
        f"{args.size}, {NUM_CLASSES} classes, {args.precision}{', channels_last' if args.channels_last else ''}; "
        f"images/s, median of {args.repeats} interleaved {rounds_text}; ours / peer: the median of the rounds' "
        f"speed ratios, in brackets the lowest and highest round. {machine(device)}; heap allocator: {heap}.\n\n"
        f"| architecture | ours | peer | ours img/s | peer img/s | ours / peer (range) |{mem_head} "
        f"params M (ours / peer) | GFLOPs fwd at {args.size}x{args.size} (ours / peer) |\n"
        f"|---|---|---|---|---|---|{mem_rule}---|---|\n" + "\n".join(rows) + "\n\n"
        f"Command: `{env}python benchmarks/train_throughput.py{flags}`; data: random tensors (the speed of a step does "
        "not depend on the pixel values).\n"
    )
    name = "train_throughput" + ("_cuda" if device.type == "cuda" else "") + (
        f"_{args.precision}" if args.precision != "fp32" else "") + ("_nhwc" if args.channels_last else "") + (
        threads_suffix(device) + suffix)
    print(text)
    publish_unless_subset(name, text, args.rows)


if __name__ == "__main__":
    main()
