"""Train (unless the run exists) the click-model recipe, then score it, GrabCut, the random walker and (with
``--sam-checkpoint``) SAM by the click protocol on the same held-out objects, for docs/prompt.md.

    python benchmarks/prompt_results.py [--max-objects 100] [--sam-checkpoint sam_vit_b_01ec64.pth] [--no-train]

The objects are ISBI 2012's cells (4-connected regions of the "cell" class, at least 100 pixels) of train[25:],
``--max-objects`` of them spread evenly over the split (every len/N-th, as ``pixelwise eval --max-objects``
picks them), the same for every method. The protocol is
:func:`pixelwise.prompt.clicks.run_clicks` (RITM's simulated user, at most ``--max-clicks`` = 20 clicks):

- the click model: ``pixelwise train --config configs/click_isbi.yaml`` (:func:`results_table.finished_run`), then
  ``pixelwise eval --max-objects N --max-clicks 20 --json``; its seconds per click are timed apart, in this process,
  on the first ``--time-objects`` of those objects, through ``Predictor.from_checkpoint`` (a ClickPredictor given its
  previous logits at each click, as eval runs it);
- GrabCut and the random walker (:mod:`pixelwise.prompt.baselines`), on the grayscale image;
- SAM, only with ``--sam-checkpoint`` (Meta's ``sam_vit_*.pth``, its variant from ``--sam-variant``), on the
  grayscale image stacked to RGB: one ``set_image`` per image, then at each click one ``predict`` with all clicks
  so far. As in the SAM paper's interactive evaluation (Kirillov et al., ICCV 2023, sec. 7.1 and appendix D): at
  the first click three masks (``multimask_output``) and the one of the highest predicted IoU kept (the model's
  own choice, no oracle: a user has no ground truth); at every later click one mask, with the low-resolution
  logits of the mask kept at the previous click as ``mask_input``.

For the baselines and SAM an object's run stops once it has reached IoU 0.90 and had 5 clicks (RITM's evaluation
stops at its target IoU too): no later click changes NoC@85, NoC@90, NoF or mIoU@1 / mIoU@5, the columns reported,
and a GrabCut or random-walker call on a 512x512 image takes seconds. Seconds per click: the mean time of the
method's calls (SAM's ``predict`` alone; its ``set_image``, once per image, reported apart).

The baselines' scores are kept in ``runs/prompt_baselines/`` (per method, object count and click budget) and
reused by later runs, since they take most of the time; ``--rerun-baselines`` recomputes them.

Also reports where the click model's training time went (its log.jsonl: mean ``step_s`` and the share of it
``data_s``, waiting for the loader). Writes benchmarks/results/prompt_results.md and the docs section between the
``prompt_results`` markers (``--no-publish``: print only).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _publish import publish  # noqa: E402
from _timing import machine  # noqa: E402
from results_table import PIXELWISE, ROOT, finished_run, run  # noqa: E402

from pixelwise.prompt.clicks import iou, noc_summary, run_clicks  # noqa: E402

ISBI = "../shared/data/isbi2012_membrane"
SPLIT = "train[25:]"
CELLS = ["instances=connected_components", "connectivity=4", "min_area=10", "classes=[cell]"]
RUN = "runs/click_isbi"
CONFIG = "configs/click_isbi.yaml"
#: An object's run may stop once it reaches this IoU after at least STOP_MIN_CLICKS clicks (see the docstring).
STOP_IOU, STOP_MIN_CLICKS = 0.90, 5


class _Reached(Exception):
    """Raised inside a segment call to end an object's run early (its IoUs are recorded by the caller)."""


def _objects(max_objects: int):
    """The held-out objects (ObjectDataset, untransformed) and the indices of those scored: ``max_objects`` spread
    evenly over the split, as ``pixelwise eval --max-objects`` picks them."""
    from pixelwise.data.objects import build_object_dataset
    from pixelwise.engine.config import apply_overrides
    from pixelwise.prompt.click_training import spread_indices

    ds = build_object_dataset(str(ROOT / ISBI), SPLIT, **apply_overrides({}, CELLS))
    return ds, spread_indices(len(ds), max_objects)


def _summary(per_object: list[list[float]], seconds: float, calls: int, max_clicks: int) -> dict:
    return {**noc_summary(per_object, (0.85, 0.90), max_clicks), "s_per_click": seconds / max(calls, 1),
            "clicks": calls, "seconds": seconds, "ious": per_object}


def score(make_segment, ds, chosen: list[int], max_clicks: int, early_stop: bool = True, label: str = "",
          jobs: int = 1) -> dict:
    """The click protocol on the objects ``chosen`` of ``ds``: ``make_segment(image_index, image uint8 (H, W))`` returns
    ``segment(clicks) -> bool (H, W)``, built once per image. Returns noc_summary's scores plus ``s_per_click``
    (mean time of the segment calls), ``clicks``, ``seconds`` and the IoUs of each object (``ious``). With ``jobs``
    > 1 the objects are split into that many interleaved shares scored in parallel processes (one thread each)."""
    if jobs > 1:
        import multiprocessing

        shares = [chosen[i::jobs] for i in range(jobs)]
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            parts = pool.starmap(_score_share, [(make_segment, ds, share, max_clicks, early_stop, label)
                                                for share in shares])
        per_object: list[list[float]] = [[] for _ in chosen]
        for i, part in enumerate(parts):
            per_object[i::jobs] = part["ious"]
        return _summary(per_object, sum(p["seconds"] for p in parts), sum(p["clicks"] for p in parts), max_clicks)
    per_object, seconds, calls = [], 0.0, 0
    current = (None, None)
    n = len(chosen)
    for j, k in enumerate(chosen):
        index = ds.objects[k][0]
        image, mask = ds.raw_item(k)
        truth = np.asarray(mask)
        gt, ignore = truth == 1, (truth == ds.ignore_index) if (truth == ds.ignore_index).any() else None
        if current[0] != index:
            current = (index, make_segment(index, np.asarray(image)[0] if image.shape[0] == 1
                                           else np.asarray(image).transpose(1, 2, 0)))
        segment, ious = current[1], []

        def timed(clicks, segment=segment, gt=gt, ignore=ignore, ious=ious):
            nonlocal seconds, calls
            t0 = time.perf_counter()
            pred = segment(clicks)
            seconds += time.perf_counter() - t0
            calls += 1
            ious.append(iou(pred, gt, ignore))
            if early_stop and ious[-1] >= STOP_IOU and len(ious) >= STOP_MIN_CLICKS:
                raise _Reached
            return pred

        try:
            full = run_clicks(timed, gt, max_clicks=max_clicks, ignore=ignore)
            assert full == ious
        except _Reached:
            pass
        per_object.append(ious)
        if label:
            print(f"  {label}: object {j + 1}/{n}, {len(ious)} clicks, last IoU {ious[-1]:.3f}", flush=True)
    return _summary(per_object, seconds, calls, max_clicks)


def _score_share(make_segment, ds, share, max_clicks, early_stop, label) -> dict:
    torch.set_num_threads(1)
    return score(make_segment, ds, share, max_clicks, early_stop, label)


def grabcut(_index, image):
    from pixelwise.prompt import grabcut_segmenter

    return grabcut_segmenter(image)


def random_walker(_index, image):
    from pixelwise.prompt import random_walker_segmenter

    return random_walker_segmenter(image)


class SamClicks:
    """SAM driven by the clicks (see the module docstring); ``encode_s`` collects set_image's seconds."""

    def __init__(self, model) -> None:
        from pixelwise.prompt import SamPredictor

        self.predictor = SamPredictor(model)
        self.encode_s: list[float] = []

    def __call__(self, _index, image):
        rgb = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image
        t0 = time.perf_counter()
        self.predictor.set_image(np.ascontiguousarray(rgb))
        self.encode_s.append(time.perf_counter() - t0)
        previous = None  # the low-res logits of the mask kept at the last click

        def segment(clicks):
            nonlocal previous
            coords = np.array([[c.x, c.y] for c in clicks], np.float64)
            labels = np.array([1 if c.positive else 0 for c in clicks])
            if len(clicks) == 1:
                masks, scores, low_res = self.predictor.predict(coords, labels, multimask_output=True)
            else:
                masks, scores, low_res = self.predictor.predict(coords, labels, mask_input=previous,
                                                                multimask_output=False)
            best = int(np.argmax(scores))
            previous = low_res[best:best + 1]
            return masks[best]

        return segment


def click_model_seconds(checkpoint: str, ds, chosen: list[int], max_clicks: int) -> dict:
    """The trained click model through Predictor.from_checkpoint on the objects ``chosen`` (every click: all clicks so far
    and its previous logits, as ``pixelwise eval`` runs it), timed; no early stop."""
    from pixelwise.engine.predictor import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, "cpu")

    def make(_index, image):
        predictor.set_image(image)
        previous = None

        def segment(clicks):
            nonlocal previous
            coords = np.array([[c.x, c.y] for c in clicks], np.float64)
            labels = np.array([1 if c.positive else 0 for c in clicks])
            masks, _, previous = predictor.predict(coords, labels, mask_input=previous)
            return masks[0]

        return segment

    with torch.inference_mode():
        return score(make, ds, chosen, max_clicks, early_stop=False)


def training_time(run_dir: Path) -> str:
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    train = [r for r in log if r["type"] == "train" and "step_s" in r]
    val = [r for r in log if r["type"] == "val"]
    steps = sum(r["step_s"] for r in train)
    data = sum(r["data_s"] for r in train)
    total = val[-1]["elapsed_s"] if val else steps
    return (f"Where the click model's training went ({run_dir.relative_to(ROOT) if run_dir.is_relative_to(ROOT) else run_dir}"
            f"/log.jsonl): {len(train)} steps of {statistics.mean(r['step_s'] for r in train):.2f} s on average "
            f"(median {statistics.median(r['step_s'] for r in train):.2f} s), {100 * data / max(steps, 1e-9):.1f} % "
            f"of it waiting for the data loader; {steps / 60:.1f} min of steps and {(total - steps) / 60:.1f} min of "
            f"validation and the rest, {total / 60:.1f} min in all.")


def _row(name: str, m: dict, n: int, note: str = "") -> str:
    miou = " | ".join(f"{100 * m[k]:.1f}" if k in m else "-" for k in ("mIoU@1", "mIoU@5"))  # -: fewer clicks
    return (f"| {name} | {m['NoC@85']:.2f} | {m['NoC@90']:.2f} | {m['NoF@85']} of {n} | {m['NoF@90']} of {n} | "
            f"{miou} | {m['s_per_click']:.3f}{note} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-objects", type=int, default=100, help="score N held-out objects spread evenly (default 100)")
    ap.add_argument("--max-clicks", type=int, default=20, help="the click budget per object (the field's: 20)")
    ap.add_argument("--time-objects", type=int, default=3,
                    help="objects on which the click model's seconds per click are timed in-process (default 3)")
    ap.add_argument("--sam-checkpoint", metavar="PATH", help="add a SAM row: Meta's released weights")
    ap.add_argument("--sam-variant", default="vit_b", help="vit_b, vit_l or vit_h, the checkpoint's (default vit_b)")
    ap.add_argument("--no-train", action="store_true", help="tabulate an existing run only")
    ap.add_argument("--jobs", type=int, default=1,
                    help="score the baselines' objects in this many parallel processes (default 1)")
    ap.add_argument("--rerun-baselines", action="store_true",
                    help="recompute GrabCut and the random walker even if runs/prompt_baselines holds their scores")
    ap.add_argument("--no-publish", action="store_true", help="print the table only; write no file")
    ap.add_argument("--run-dir", default=RUN, help=argparse.SUPPRESS)  # a tiny run for checking this script
    ap.add_argument("--sam-tiny", action="store_true", help=argparse.SUPPRESS)  # random toy SAM, for checks
    args = ap.parse_args()
    run_dir = Path(args.run_dir) if Path(args.run_dir).is_absolute() else ROOT / args.run_dir
    out = str(run_dir.relative_to(ROOT)) if run_dir.is_relative_to(ROOT) else str(run_dir)
    train_cmd = ["pixelwise", "train", "--config", CONFIG, "--out", out]
    if not finished_run("click_isbi", out, train_cmd, args.no_train):
        return 1
    ds, chosen = _objects(args.max_objects)
    n = len(chosen)
    print(f"scoring {n} of the {len(ds)} objects of {ISBI} ({SPLIT}), at most {args.max_clicks} clicks",
          flush=True)

    json_path = run_dir / f"eval_noc_{n}.json"
    eval_cmd = ["pixelwise", "eval", "--checkpoint", f"{out}/best.pt", "--data", ISBI, "--split", SPLIT,
                "--data-option", *CELLS, "--max-objects", str(n), "--max-clicks", str(args.max_clicks)]
    run([*PIXELWISE, *eval_cmd[1:], "--json", str(json_path), "--quiet"])
    model = json.loads(json_path.read_text())
    timed = chosen[:args.time_objects]
    timing = click_model_seconds(str(run_dir / "best.pt"), ds, timed, args.max_clicks)
    model["s_per_click"] = timing["s_per_click"]
    if len(timed) == n:  # the same objects: the in-process run must give eval's numbers
        same = all(abs(model[k] - timing[k]) < 1e-9 for k in timing if k.startswith(("NoC", "NoF", "mIoU")))
        print(f"in-process click model run {'matches' if same else 'DIFFERS FROM'} pixelwise eval's scores",
              flush=True)

    rows = [_row(f"click model (`{CONFIG}`)", model, n, f" (on {len(timed)} objects)")]
    for slug, name, make in (("grabcut", "GrabCut (OpenCV)", grabcut),
                             ("random_walker", "random walker (scikit-image)", random_walker)):
        # A baseline's scores depend only on the objects and the click budget: kept in runs/ and reused (they take
        # most of this script's time) unless --rerun-baselines.
        cache = ROOT / "runs" / "prompt_baselines" / f"{slug}_{n}objects_{args.max_clicks}clicks.json"
        if cache.exists() and not args.rerun_baselines:
            scores = json.loads(cache.read_text())
            print(f"{name}: the scores of {cache.relative_to(ROOT)} (--rerun-baselines to recompute)", flush=True)
        else:
            print(f"{name} ...", flush=True)
            scores = score(make, ds, chosen, args.max_clicks, label=name, jobs=args.jobs)
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(scores, indent=2))
        rows.append(_row(name, scores, n))
        print(rows[-1], flush=True)
    sam_note = ""
    if args.sam_checkpoint or args.sam_tiny:
        from pixelwise.prompt import build_sam

        if args.sam_tiny:
            sam_model = build_sam("vit_b", encoder_depth=2, encoder_global_attn_indexes=(1,), encoder_embed_dim=96,
                                  encoder_num_heads=2, image_size=256)
            name = "SAM **tiny random debug model**"
        else:
            sam_model = build_sam(args.sam_variant, checkpoint=args.sam_checkpoint)
            name = f"SAM {args.sam_variant} (`{Path(args.sam_checkpoint).name}`)"
        sam = SamClicks(sam_model)
        with torch.inference_mode():
            rows.append(_row(name, score(sam, ds, chosen, args.max_clicks, label="SAM"), n))
        sam_note = (f" SAM's image encoding (set_image, once per image, not in its seconds per click): "
                    f"{statistics.mean(sam.encode_s):.2f} s on average over {len(sam.encode_s)} image(s).")
    images = len({ds.objects[k][0] for k in chosen})
    table = "\n".join([
        "| method | NoC@85 | NoC@90 | NoF@85 | NoF@90 | mIoU@1 % | mIoU@5 % | s per click |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"ISBI 2012 cells (4-connected regions of the cell class of at least 100 pixels), held-out split {SPLIT}: "
        f"{n} of its {len(ds)} objects spread evenly over it ({images} of its 5 512x512 images), the same for every "
        f"method; "
        f"click protocol of at most {args.max_clicks} clicks (RITM's simulated user), NoC/NoF at IoU 0.85 / 0.90; "
        f"measured on {machine()}." + sam_note,
        "",
        training_time(run_dir),
        "",
        f"Generated by `python benchmarks/prompt_results.py --max-objects {args.max_objects}"
        + (f" --max-clicks {args.max_clicks}" if args.max_clicks != 20 else "")
        + (f" --jobs {args.jobs}" if args.jobs != 1 else "")
        + (f" --sam-checkpoint {args.sam_checkpoint}" if args.sam_checkpoint else "")
        + f"`: the click model by `{shlex.join(train_cmd)}` then `{shlex.join(eval_cmd)}`; its seconds per click "
        f"timed on the first {len(timed)} of those objects through `Predictor.from_checkpoint` (a whole "
        "forward per click); the baselines' and SAM's runs stop once an object reached IoU 0.90 after 5 or more "
        "clicks, which changes none of these columns; their seconds per click are those of the run that scored them "
        "(kept in runs/prompt_baselines/).",
    ]) + "\n"
    print(table)
    if args.no_publish:
        print("--no-publish: nothing written.")
    else:
        publish("prompt_results", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
