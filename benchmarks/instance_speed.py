"""Mask R-CNN's cost on this CPU: pixelwise's against torchvision's, interleaved in one process, and where the time
goes.

    python benchmarks/instance_speed.py [--size 512] [--repeats 5] [--threads 2]

Rows (random weights, two 3x``size``x``size`` images of 8 random boxes with masks, SGD; torchvision's Mask R-CNN
defaults but ``min_size``/``max_size`` = ``size``):

- ``ResNet-50 FPN``: pixelwise's ``maskrcnn`` (backbone resnet50) against torchvision's ``maskrcnn_resnet50_fpn``
  with the same settings and the same weights (so the same detections): the same layers, so this checks that the
  FPN over pixelwise's backbone costs nothing;
- ``MobileNetV2 FPN`` and ``ResNet-18 FPN``: pixelwise's smaller bodies (torchvision has no Mask R-CNN on them),
  against the same torchvision ResNet-50 for scale.

For each: seconds per training step (forward with targets, backward, SGD step) and seconds per image at test time
(eval mode, batch 1, no score threshold, so that each model keeps its 100 best detections: the mask head and the
pasting of masks run once per detection, and test time follows that count); the peak memory of each, measured
apart: in fresh processes that build only that model (``--memory-repeats``, median), the growth of the resident
set's peak (VmHWM) over three training steps or three inferences above the process with the model and data built
(so gradients, optimizer state and activations, not the weights); then torch.profiler's top operators of one pixelwise ResNet-50 training step.

Writes benchmarks/results/instance_speed[_2threads][_jemalloc].md and the docs section between the markers
``instance_speed``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from torchvision.models.detection import maskrcnn_resnet50_fpn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _publish import publish  # noqa: E402
from _timing import (  # noqa: E402
    allocator, interleaved_rounds, machine, peak_growth, ratio_spread, subprocess_peak_mib, threads_suffix,
)

from pixelwise.models import build_model  # noqa: E402
from pixelwise.models.maskrcnn import from_torchvision_state_dict  # noqa: E402

NUM_CLASSES = 3  # object classes; the heads have one more, the background


def _data(size: int, seed: int = 0) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(2):
        images.append(torch.rand(3, size, size, generator=g))
        xy = torch.randint(0, size - 64, (8, 2), generator=g).float()
        wh = torch.randint(16, 64, (8, 2), generator=g).float()
        boxes = torch.cat([xy, xy + wh], 1)
        masks = torch.zeros(8, size, size, dtype=torch.uint8)
        for k, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
            masks[k, y1:y2, x1:x2] = 1
        targets.append({"boxes": boxes, "labels": torch.randint(1, NUM_CLASSES + 1, (8,), generator=g),
                        "masks": masks})
    return images, targets


class TrainStep:
    def __init__(self, model: torch.nn.Module, images, targets) -> None:
        self.model, self.images, self.targets = model.train(), images, targets
        self.optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def __call__(self) -> None:
        losses = self.model(self.images, self.targets)
        self.optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        self.optimizer.step()


class Infer:
    def __init__(self, model: torch.nn.Module, image: torch.Tensor) -> None:
        self.model, self.image = model, image

    @torch.no_grad()
    def __call__(self) -> int:
        self.model.eval()
        return len(self.model([self.image])[0]["scores"])


PEER = "torchvision ResNet-50 FPN"
ROWS = (PEER, "ResNet-50 FPN", "ResNet-18 FPN", "MobileNetV2 FPN")


def _build(name: str, size: int) -> torch.nn.Module:
    """One row's model, random weights. torchvision's settings (image size, anchors 32-512) but for the size. No
    score threshold: every model keeps its 100 best detections, so the heads do the same work per image."""
    if name == PEER:
        return maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=NUM_CLASSES + 1,
                                     min_size=size, max_size=size, box_score_thresh=0.0)
    backbone = {"ResNet-50 FPN": "resnet50", "ResNet-18 FPN": "resnet18", "MobileNetV2 FPN": "mobilenet_v2"}[name]
    return build_model("maskrcnn", NUM_CLASSES, backbone=backbone, min_size=size, max_size=size,
                       anchor_sizes=(32, 64, 128, 256, 512), detections_per_image=100, rois_per_image=512,
                       score_threshold=0.0)


def _models(size: int) -> dict[str, torch.nn.Module]:
    """Every row's model; pixelwise's ResNet-50 FPN gets torchvision's weights (so the same detections)."""
    torch.manual_seed(0)
    models = {name: _build(name, size) for name in ROWS}
    models["ResNet-50 FPN"].load_state_dict(from_torchvision_state_dict(models[PEER].state_dict()))
    return models


def peak_memory_child(name: str, mode: str, args) -> None:
    """In a fresh process that builds only this model: the growth of VmHWM over 3 training steps or 3 inferences
    (bytes), above the process with the model and data built. (Building the other models too would leave freed
    heap behind, which later allocations reuse unevenly.)"""
    torch.set_num_threads(args.threads)
    images, targets = _data(args.size)
    torch.manual_seed(0)
    model = _build(name, args.size)
    run = TrainStep(model, images, targets) if mode == "train" else Infer(model, images[0])
    print(json.dumps({"peak": peak_growth(run, 3)}))


def peak_memory(name: str, mode: str, args) -> str:
    """MiB, "median (lowest-highest)" of :func:`peak_memory_child` in ``--memory-repeats`` fresh subprocesses: the
    growth of the resident set depends on how the heap was left by building the model, and varies by about 100 MiB
    from one process to the next at inference."""
    cmd = [sys.executable, __file__, "--peak-memory-child", name, mode, "--size", str(args.size),
           "--threads", str(args.threads)]
    peaks = [subprocess_peak_mib(cmd) for _ in range(args.memory_repeats)]
    return f"{statistics.median(peaks):.0f} ({min(peaks):.0f}-{max(peaks):.0f})"


def _profile(model: torch.nn.Module, images, targets, top: int = 12) -> list[str]:
    step = TrainStep(model, images, targets)
    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    rows = ["| operator | calls | self CPU s | share |", "|---|---:|---:|---:|"]
    for e in events[:top]:
        rows.append(f"| `{e.key}` | {e.count} | {e.self_cpu_time_total / 1e6:.3f} | "
                    f"{100 * e.self_cpu_time_total / total:.1f} % |")
    rows.append(f"| all operators | | {total / 1e6:.3f} | 100 % |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--memory-repeats", type=int, default=3, help="fresh processes per peak-memory figure")
    ap.add_argument("--peak-memory-child", nargs=2, metavar=("ROW", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peak_memory_child:
        peak_memory_child(*args.peak_memory_child, args)
        return
    torch.set_num_threads(args.threads)
    images, targets = _data(args.size)
    models = _models(args.size)
    train = interleaved_rounds({n: TrainStep(m, images, targets) for n, m in models.items()}, args.repeats)
    infer = interleaved_rounds({n: Infer(m, images[0]) for n, m in models.items()}, args.repeats)
    peer = PEER
    lines = [f"| Mask R-CNN ({args.size}x{args.size}) | params M | train s / step (2 images) | speed vs "
             f"{peer} | train peak memory MiB | inference s / image | detections | speed vs {peer} | "
             "inference peak memory MiB |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters()) / 1e6
        ratio_t, lo_t, hi_t = ratio_spread(train[name], train[peer])
        ratio_i, lo_i, hi_i = ratio_spread(infer[name], infer[peer])
        lines.append(f"| {name} | {params:.1f} | {statistics.median(train[name]):.2f} | {ratio_t:.2f} "
                     f"({lo_t:.2f}-{hi_t:.2f}) | {peak_memory(name, 'train', args)} | "
                     f"{statistics.median(infer[name]):.2f} | {Infer(model, images[0])()} | {ratio_i:.2f} "
                     f"({lo_i:.2f}-{hi_i:.2f}) | {peak_memory(name, 'infer', args)} |")
        print(lines[-1], flush=True)
    heap, suffix, env = allocator()
    flags = "".join(f" --{k} {v}" for k, v in (("size", args.size), ("repeats", args.repeats),
                                               ("threads", args.threads), ("memory-repeats", args.memory_repeats)))
    text = "\n".join(lines) + (
        f"\n\nCommand: `{env}python benchmarks/instance_speed.py{flags}`; random weights and images, two images of "
        f"8 boxes with masks per training step, SGD; speed ratio = torchvision's seconds / ours, median of "
        f"{args.repeats} interleaved rounds (lowest-highest); peak memory = growth of the resident set's peak over "
        f"3 steps or 3 inferences in a fresh process that builds only that model, above the built model and data, "
        f"median of {args.memory_repeats} processes (lowest-highest); {machine()}, {heap}.\n\n"
        f"Where one training step of pixelwise's ResNet-50 FPN goes (torch.profiler, self CPU time):\n\n"
        + "\n".join(_profile(models["ResNet-50 FPN"], images, targets)) + "\n"
    )
    print(text)
    publish(f"instance_speed{threads_suffix()}{suffix}", text, marker="instance_speed")


if __name__ == "__main__":
    main()
