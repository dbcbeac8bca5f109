"""Inference throughput at 512x512, ours against segmentation_models_pytorch (SMP) and torchvision, interleaved in one
process, with the achieved GFLOP/s set against the machine's measured matrix-multiplication rate.

    python benchmarks/inference_throughput.py [--device cpu|cuda] [--batch-sizes 1 8] [--precisions fp32 bf16]
                                              [--rows NAME ...] [--repeats 3] [--min-round-seconds 1]
                                              [--size 512]

One inference call = a forward pass under ``torch.inference_mode`` (and ``torch.autocast`` for bf16) of a batch of
random 3x512x512 images through the architectures of benchmarks/train_throughput.py, models built from scratch in
eval mode. Every row times ours and the peer in turn (``repeats`` rounds, the order alternating, after one warm-up
call each) and reports images/s and the ratio ours / peer (above 1: ours is faster) as the median of the rounds'
ratios, with the lowest and highest round beside it, so the spread of a busy machine shows. A round makes the same
number of back-to-back calls on each side, as many as the faster side needs to fill ``--min-round-seconds`` (one
call for the slow rows; several for a 0.1 s call at batch 1, which timed alone varies by a fifth from run to run).

The roofline: before the rows, a square matrix product (2048 on the CPU, 8192 on CUDA) is timed at each precision
with the same thread count (after a 256-wide probe); its GFLOP/s is the practical peak of this machine for dense
work, and each row's achieved GFLOP/s (forward FLOPs counted by torch.utils.flop_counter, 2 per multiply-add, times
images/s) is shown as a share of it. On CUDA the share of the device's nominal dense bf16 peak is shown too, where
the device is one whose datasheet figure is listed below. A precision whose measured matmul rate is under a tenth of
fp32's has no hardware support on this machine (bf16 on a CPU without AVX512-BF16 or AMX runs through a scalar
fallback): its rows are skipped and the table says so, with the measured rate.

The table names the heap allocator (both sides share it); under a preloaded jemalloc, tcmalloc or mimalloc the
results file and docs/benchmarks.md section get its name as a suffix, as a CPU run on more than one thread gets its
thread count. Writes benchmarks/results/inference_throughput[_cuda][_2threads][_jemalloc].md and the
docs/benchmarks.md section between the matching markers. A run of a subset of ``--rows`` only prints its table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _publish import publish_unless_subset, rows_flag  # noqa: E402
from _timing import allocator, interleaved_rounds, machine, ratio_spread, sync, threads_suffix  # noqa: E402
from train_throughput import ROWS, build, gflops  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Dense (no sparsity) tensor-core peak in TFLOP/s from NVIDIA's datasheets, by a substring of the device name.
NOMINAL_BF16_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0,
                       "A100": 312.0, "L4": 121.0}


def matmul_gflops(device: torch.device, dtype: torch.dtype, n: int, seconds: float = 1.0) -> float:
    """Measured rate of an n x n x n matrix product (2 n^3 FLOPs): the median of calls within ``seconds``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < seconds and len(times) < 50):
        t0 = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t0)
        if times[-1] > 5 * seconds:  # a scalar fallback: one call is enough to know
            break
    times.sort()
    return 2 * n**3 / times[len(times) // 2] / 1e9


def nominal_bf16(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in NOMINAL_BF16_TFLOPS.items() if k in name), None)


class Infer:
    """One inference call of ``model`` on a fixed batch."""

    def __init__(self, model: torch.nn.Module, device: torch.device, batch: int, size: int, precision: str):
        self.model = model.to(device).eval()
        self.images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
        self.device, self.precision = device, precision

    def __call__(self) -> None:
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=DTYPES[self.precision],
                                                    enabled=self.precision != "fp32"):
            self.model(self.images)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rows", nargs="+", default=None, choices=list(ROWS), metavar="NAME",
                    help=f"a subset of: {'; '.join(ROWS)} (printed only, not published)")
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--precisions", nargs="+", choices=list(DTYPES), default=["fp32", "bf16"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min-round-seconds", type=float, default=1.0,
                    help="each round repeats the call until the faster side has run this long (0: one call)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n = 8192 if device.type == "cuda" else 2048
    # A quick 256-wide probe first: a precision without a hardware path (bf16 on most CPUs) would take minutes at n.
    probe = {p: matmul_gflops(device, DTYPES[p], 256, seconds=0.2) for p in dict.fromkeys(["fp32", *args.precisions])}
    roof = {p: matmul_gflops(device, DTYPES[p], n) if probe[p] >= probe["fp32"] / 10 else probe[p] for p in probe}
    for p, v in roof.items():
        print(f"matmul {n}x{n} {p}: {v:.1f} GFLOP/s", flush=True)
    usable = [p for p in args.precisions if probe[p] >= probe["fp32"] / 10]
    skipped = [p for p in args.precisions if p not in usable]
    peak = nominal_bf16(device)

    rows = []
    for row in args.rows or ROWS:
        (name, options), peer_label, _ = ROWS[row]
        try:
            models = {"ours": build(row, "ours"), "peer": build(row, "peer")}
        except ImportError as err:
            print(f"skipped {row}: {err}", flush=True)
            continue
        flops = gflops(models["ours"], args.size), gflops(models["peer"], args.size)
        for precision in usable:
            for batch in args.batch_sizes:
                calls = {s: Infer(m, device, batch, args.size, precision) for s, m in models.items()}
                rounds = interleaved_rounds(calls, repeats=args.repeats, warmup=1, device=device,
                                            min_round_seconds=args.min_round_seconds)
                ips = {s: batch / statistics.median(v) for s, v in rounds.items()}
                ratio, low, high = ratio_spread(rounds["ours"], rounds["peer"])
                achieved = flops[0] * ips["ours"]
                share = f"{100 * achieved / roof[precision]:.0f} %"
                if peak is not None and precision == "bf16":
                    share += f" ({100 * achieved / (1000 * peak):.1f} % of {peak:.0f} TFLOP/s nominal)"
                rows.append(
                    f"| {row} | {peer_label} | {batch} | {precision} | {ips['ours']:.2f} | {ips['peer']:.2f} | "
                    f"**{ratio:.2f}** ({low:.2f}-{high:.2f}) | {flops[0]:.1f} / {flops[1]:.1f} | {achieved:.1f} | "
                    f"{share} |"
                )
                print(rows[-1], flush=True)
                del calls
        del models

    roof_text = ", ".join(f"{p} {v:.1f} GFLOP/s" for p, v in roof.items() if p not in skipped)
    note = "".join(
        f" {p} rows are skipped: its measured matmul rate ({probe[p]:.2f} GFLOP/s at 256x256, against fp32's "
        f"{probe['fp32']:.1f}) is under a tenth of fp32's, so this machine has no hardware path for it."
        for p in skipped)
    flags = (f" --device {device.type}" if device.type != "cpu" else "") + (
        f" --batch-sizes {' '.join(map(str, args.batch_sizes))}" if args.batch_sizes != [1, 8] else "") + (
        f" --precisions {' '.join(args.precisions)}" if args.precisions != ["fp32", "bf16"] else "") + (
        f" --size {args.size}" if args.size != 512 else "") + (
        f" --threads {torch.get_num_threads()} --repeats {args.repeats} --min-round-seconds {args.min_round_seconds:g}"
    ) + rows_flag(args.rows)
    heap, suffix, env = allocator()
    text = (
        f"Inference (forward pass, eval mode, `torch.inference_mode`) on random 3x{args.size}x{args.size} images; "
        f"images/s, median of {args.repeats} interleaved rounds after one warm-up call, a round being as many calls "
        f"as fill {args.min_round_seconds:g} s on the faster side (the same number on both); ours / peer: the median "
        f"of the rounds' speed ratios, in brackets the lowest and highest round. {machine(device)}; heap allocator: "
        f"{heap}. "
        f"Roofline (measured {n}x{n} matmul): {roof_text}.{note}\n\n"
        f"| architecture | peer | batch | precision | ours img/s | peer img/s | ours / peer (range) | GFLOPs per image "
        f"(ours / peer) | ours GFLOP/s | ours, share of matmul rate |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        f"Command: `{env}python benchmarks/inference_throughput.py{flags}`; data: random tensors (the speed of a "
        "forward pass does not depend on the pixel values).\n"
    )
    print(text)
    name = "inference_throughput" + ("_cuda" if device.type == "cuda" else "") + threads_suffix(device) + suffix
    publish_unless_subset(name, text, args.rows)


if __name__ == "__main__":
    main()
