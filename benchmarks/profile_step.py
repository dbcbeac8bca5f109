"""Where a training step's time goes, ours against the peer: torch.profiler over the steps of one row of
benchmarks/train_throughput.py, operator by operator, side by side.

    python benchmarks/profile_step.py --row "DeepLabV3+, ResNet-50, one refinement conv" [--steps 2] [--top 15]

Each side is built as train_throughput builds it, takes one warm-up step, then ``--steps`` profiled steps (ours
first, then the peer). The table lists the operators with the most self-CPU time on either side (seconds per
step, calls per step) and each side's total self-CPU time per step, so the operators that differ in count or time
show which layers the two networks do not share. Self-CPU time counts each operator without its children, so the
column sums to the total. Writes benchmarks/results/profile_step_<row>[_2threads][_jemalloc].md (docs/benchmarks.md
quotes its totals; it has no markers).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import allocator, machine, threads_suffix  # noqa: E402
from train_throughput import ROWS, Step, build  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def profile_side(row: str, side: str, steps: int, batch: int, size: int) -> dict[str, tuple[float, int]]:
    """Operator name -> (self-CPU seconds per step, calls per step) over ``steps`` profiled steps."""
    step = Step(build(row, side), "cpu", batch, size, "fp32", channels_last=False)
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    table: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for event in prof.key_averages():
        table[event.key][0] += event.self_cpu_time_total / 1e6 / steps
        table[event.key][1] += event.count / steps
    return {k: (v[0], round(v[1])) for k, v in table.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--row", required=True, choices=list(ROWS), metavar="ROW", help=f"one of: {'; '.join(ROWS)}")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--top", type=int, default=15, help="operators to list (by the larger side's self-CPU time)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sides = {s: profile_side(args.row, s, args.steps, args.batch, args.size) for s in ("ours", "peer")}
    names = sorted(set(sides["ours"]) | set(sides["peer"]),
                   key=lambda k: -max(sides["ours"].get(k, (0, 0))[0], sides["peer"].get(k, (0, 0))[0]))
    total = {s: sum(t for t, _ in ops.values()) for s, ops in sides.items()}
    lines = []
    for name in names[: args.top]:
        (ot, oc), (pt, pc) = sides["ours"].get(name, (0.0, 0)), sides["peer"].get(name, (0.0, 0))
        lines.append(f"| `{name}` | {ot:.3f} | {pt:.3f} | {oc} | {pc} |")
    _, peer_label, _ = ROWS[args.row]
    heap, suffix, env = allocator()
    flags = (f" --steps {args.steps}" if args.steps != 2 else "") + (f" --top {args.top}" if args.top != 15 else "") \
        + (f" --batch {args.batch}" if args.batch != 8 else "") + (f" --size {args.size}" if args.size != 256 else "") \
        + (f" --threads {args.threads}" if args.threads != 1 else "")
    text = (
        f"torch.profiler over {args.steps} training steps (forward + cross-entropy + backward + SGD step) of "
        f"{args.row}: ours against {peer_label}; batch {args.batch} of 3x{args.size}x{args.size}, fp32, random "
        f"tensors. Self-CPU seconds and calls per step, the {args.top} operators with the most time on either "
        f"side. {machine()}; heap allocator: {heap}.\n\n"
        "| operator | ours s/step | peer s/step | ours calls/step | peer calls/step |\n|---|---|---|---|---|\n"
        + "\n".join(lines)
        + f"\n| total (every operator) | **{total['ours']:.3f}** | **{total['peer']:.3f}** | | |\n\n"
        f"Command: `{env}python benchmarks/profile_step.py --row \"{args.row}\"{flags}`.\n"
    )
    slug = re.sub(r"[^a-z0-9]+", "_", args.row.lower()).strip("_")
    out = ROOT / "benchmarks" / "results" / f"profile_step_{slug}{threads_suffix()}{suffix}.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
