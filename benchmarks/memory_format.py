"""Which models train faster in channels_last (NHWC): every registered model, NCHW against NHWC, interleaved.

    python benchmarks/memory_format.py [--size 160] [--batch 4] [--repeats 3] [--threads 1] [--models NAME ...]

For each semantic model of ``pixelwise models``, built with its default options for 11 classes, two copies with the same
weights take training steps in turn (forward + cross-entropy + backward + SGD step, as benchmarks/train_throughput.py
times them): one with the model and batch in the default NCHW layout, one in ``torch.channels_last``, which is what
``channels_last=true`` in a training config does. The table gives both images/s and the speed ratio NHWC / NCHW
(above 1: channels_last is faster) as the median of the rounds' ratios, with the lowest and highest round. The
answer depends on the model and the machine, so the config option stays off by default and this measures it.

Writes benchmarks/results/memory_format[_2threads][_jemalloc].md and the docs/benchmarks.md section between the
matching markers; a run of a subset of ``--models`` only prints its table.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _publish import publish_unless_subset  # noqa: E402
from _timing import allocator, interleaved_rounds, machine, ratio_spread, threads_suffix  # noqa: E402
from train_throughput import NUM_CLASSES, Step, gflops  # noqa: E402

from pixelwise.models import build_model, list_models  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", nargs="+", choices=list_models(task="semantic"), metavar="NAME", default=None,
                    help="a subset of the registered models (printed only, not published)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models or list_models(task="semantic"):
        model = build_model(name, NUM_CLASSES, 3)
        flops = gflops(model, args.size)
        steps = {
            "nchw": Step(model, "cpu", args.batch, args.size, "fp32", channels_last=False),
            "nhwc": Step(copy.deepcopy(model), "cpu", args.batch, args.size, "fp32", channels_last=True),
        }
        rounds = interleaved_rounds(steps, repeats=args.repeats, warmup=1)
        ips = {k: args.batch / statistics.median(v) for k, v in rounds.items()}
        ratio, low, high = ratio_spread(rounds["nhwc"], rounds["nchw"])
        rows.append(f"| `{name}` | {flops:.1f} | {ips['nchw']:.2f} | {ips['nhwc']:.2f} | **{ratio:.2f}** "
                    f"({low:.2f}-{high:.2f}) |")
        print(rows[-1], flush=True)
        del steps, model
    heap, suffix, env = allocator()
    flags = ((f" --size {args.size}" if args.size != 160 else "")
             + (f" --batch {args.batch}" if args.batch != 4 else "")
             + (f" --repeats {args.repeats}" if args.repeats != 3 else "") + f" --threads {torch.get_num_threads()}"
             + (" --models " + " ".join(args.models) if args.models else ""))
    text = (
        f"Training step (forward + cross-entropy + backward + SGD step) of each registered model with its default "
        f"options, {NUM_CLASSES} classes, batch {args.batch} of 3x{args.size}x{args.size}, fp32, in NCHW and in "
        f"channels_last (NHWC); images/s, median of {args.repeats} interleaved steps; NHWC / NCHW: the median of the "
        f"rounds' speed ratios, in brackets the lowest and highest round. {machine()}; heap allocator: {heap}.\n\n"
        f"| model | GFLOPs fwd at {args.size}x{args.size} | NCHW img/s | NHWC img/s | NHWC / NCHW (range) |\n"
        "|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        f"Command: `{env}python benchmarks/memory_format.py{flags}`; data: random tensors (the speed of a step does "
        "not depend on the pixel values).\n"
    )
    print(text)
    publish_unless_subset("memory_format" + threads_suffix() + suffix, text, args.models)


if __name__ == "__main__":
    main()
