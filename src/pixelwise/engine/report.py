"""``pixelwise eval --report DIR``: a self-contained HTML evaluation report.

One pass over the split scores every image twice, at a single scale and with test-time augmentation, and keeps a
confusion matrix per image. The page (``DIR/index.html``, every figure an inline PNG, nothing fetched) shows

* the metrics table, single scale and TTA side by side, then per class (IoU, accuracy, share of the pixels);
* per-class IoU as a bar chart (both columns);
* the row-normalised confusion matrix as a heatmap (row i: where the pixels of class i went, in %);
* the training curves read from the run's ``log.jsonl`` (train loss, learning rate, validation mIoU), when the
  checkpoint lies in its run folder;
* image / ground truth / prediction / error map for the best and the worst images, ranked by their own mIoU.

``DIR/metrics.json`` holds the numbers of the page: both metric dicts and the per-image scores.
Figures use matplotlib (``pip install 'pixelwise[report]'``).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from pixelwise.engine.inference import InferenceOptions
from pixelwise.engine.predictor import Predictor
from pixelwise.errors import ConfigError
from pixelwise.metrics import SegmentationMetrics, json_safe
from pixelwise.viz.colorize import colorize

__all__ = ["ReportData", "evaluate_for_report", "write_report"]

#: What the report names the two columns.
SINGLE, TTA = "single scale", "TTA"
_SUMMARY = (("mIoU", "mIoU"), ("pixel accuracy", "pixel_accuracy"), ("mean accuracy", "mean_accuracy"),
            ("fwIoU", "fwIoU"), ("mean Dice", "dice"))


@dataclass
class ReportData:
    """What :func:`evaluate_for_report` measured; :func:`write_report` draws it.

    Attributes:
        metrics: ``{SINGLE: dict, TTA: dict}``, each :meth:`SegmentationMetrics.compute` of the whole split.
        options: ``{SINGLE: InferenceOptions, TTA: InferenceOptions}``.
        seconds: wall time of each mode's inference over the split, in seconds.
        image_scores: per image, in dataset order: ``{"index", "name", "mIoU", "pixel_accuracy", "mIoU_tta"}``
            (fractions; an image with no labelled pixel has NaN scores).
        class_names: K names.
    """

    metrics: dict[str, dict[str, Any]]
    options: dict[str, InferenceOptions]
    seconds: dict[str, float]
    image_scores: list[dict[str, Any]]
    class_names: list[str]
    extra: dict[str, Any] = field(default_factory=dict)


def tta_options(test_time: InferenceOptions) -> tuple[InferenceOptions, InferenceOptions]:
    """The report's two columns from the user's options: ``single`` keeps the mode (whole or slide) without
    augmentation; ``tta`` is the user's augmentation when they asked for one, else flip + the ``--tta`` scales."""
    from pixelwise.engine.inference import TTA_SCALES

    single = InferenceOptions(test_time.mode, test_time.crop, test_time.stride)
    tta = test_time if test_time.augmented else InferenceOptions(
        test_time.mode, test_time.crop, test_time.stride, scales=TTA_SCALES, flip=True)
    return single, tta


@torch.no_grad()
def evaluate_for_report(
    predictor: Predictor,
    dataset,
    batch_size: int = 4,
    num_workers: int = 0,
    progress: bool = False,
) -> ReportData:
    """Score ``dataset`` (a :class:`pixelwise.data.SegmentationDataset` with the predictor's eval transforms and
    masks) in both columns of the report (see :func:`tta_options` of the predictor's options), keeping each
    image's own scores.

    Returns:
        :class:`ReportData`. The whole-split metrics equal :func:`pixelwise.engine.inference.evaluate`'s with the
        same options (tested).
    """
    from functools import partial

    from pixelwise.data import pad_collate

    single, tta = tta_options(predictor.options)
    k, ignore = predictor.card.num_classes, predictor.card.ignore_index
    totals = {SINGLE: SegmentationMetrics(k, ignore_index=ignore), TTA: SegmentationMetrics(k, ignore_index=ignore)}
    seconds = {SINGLE: 0.0, TTA: 0.0}
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                        collate_fn=partial(pad_collate, ignore_index=ignore))
    scores: list[dict[str, Any]] = []
    for images, masks in tqdm(loader, desc="report", leave=False, disable=not progress):
        images, masks = images.to(predictor.device), masks.to(predictor.device)
        start = time.perf_counter()
        pred = predictor.scores(images, masks.shape[-2:], options=single).argmax(1)
        seconds[SINGLE] += time.perf_counter() - start
        start = time.perf_counter()
        pred_tta = predictor.scores(images, masks.shape[-2:], probs=True, options=tta).argmax(1)
        seconds[TTA] += time.perf_counter() - start
        totals[SINGLE].update(pred, masks)
        totals[TTA].update(pred_tta, masks)
        for j in range(len(masks)):
            index = len(scores)
            one = _image_metrics(pred[j], masks[j], k, ignore)
            scores.append({
                "index": index,
                "name": dataset.samples[index].image.name if hasattr(dataset, "samples") else str(index),
                "mIoU": one["mIoU"],
                "pixel_accuracy": one["pixel_accuracy"],
                "mIoU_tta": _image_metrics(pred_tta[j], masks[j], k, ignore)["mIoU"],
            })
    return ReportData(
        metrics={name: m.compute() for name, m in totals.items()},
        options={SINGLE: single, TTA: tta},
        seconds=seconds,
        image_scores=scores,
        class_names=list(dataset.classes),
    )


def _image_metrics(pred: torch.Tensor, mask: torch.Tensor, k: int, ignore: int) -> dict[str, Any]:
    m = SegmentationMetrics(k, ignore_index=ignore)
    m.update(pred[None], mask[None])
    return m.compute()


def rank_images(scores: Sequence[dict[str, Any]], count: int) -> tuple[list[dict], list[dict]]:
    """The ``count`` best and ``count`` worst images by single-scale mIoU (ties: dataset order), images without
    labelled pixels left out; the two lists do not overlap (best first, worst first)."""
    scored = [s for s in scores if not math.isnan(s["mIoU"])]
    ordered = sorted(scored, key=lambda s: (-s["mIoU"], s["index"]))
    best = ordered[:count]
    worst = [s for s in reversed(ordered) if s not in best][:count]
    return best, worst


# ---- drawing -----------------------------------------------------------------------------------------------------


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ConfigError("the HTML report draws its figures with matplotlib: pip install 'pixelwise[report]'") from e
    return plt


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _pct(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def iou_bars(data: ReportData) -> str:
    """Per-class IoU, single scale and TTA side by side (horizontal bars); absent classes are labelled."""
    plt = _pyplot()
    names = data.class_names
    k = len(names)
    fig, ax = plt.subplots(figsize=(8, 0.32 * k + 1.2))
    y = np.arange(k)
    for offset, (label, color) in zip((-0.2, 0.2), ((SINGLE, "#4c72b0"), (TTA, "#dd8452"))):
        iou = np.array([np.nan if v is None else v for v in data.metrics[label]["IoU"]], dtype=float) * 100
        ax.barh(y + offset, np.nan_to_num(iou), height=0.4, label=label, color=color)
    for i, v in enumerate(data.metrics[SINGLE]["IoU"]):
        if v is None or math.isnan(v):
            ax.text(1, i, "absent from ground truth and prediction", va="center", fontsize=8, color="gray")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("IoU (%)")
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def confusion_heatmap(confusion: Sequence[Sequence[int]], names: Sequence[str]) -> str:
    """Row-normalised confusion matrix (rows: ground truth, columns: prediction, cells: % of the row's pixels)."""
    plt = _pyplot()
    cm = np.asarray(confusion, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0) * 100
    k = len(names)
    size = min(max(5.0, 0.5 * k + 2), 20.0)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=100)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="% of the ground-truth class's pixels")
    if k <= 40:
        ax.set_xticks(range(k), names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(k), names, fontsize=8)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if norm[i, j] >= 0.5:
                    ax.text(j, i, f"{norm[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 60 else "black")
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    return _png(fig)


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a run's ``log.jsonl``; a torn last line (a run killed mid-write) is skipped."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def training_curves(records: Sequence[dict[str, Any]]) -> str | None:
    """Train loss (per step, and a moving average), learning rate, and validation mIoU against the step; None when
    the log has no train records."""
    train = [r for r in records if r.get("type") == "train" and "loss" in r]
    if not train:
        return None
    plt = _pyplot()
    val = [r for r in records if r.get("type") == "val" and "mIoU" in r]
    steps = np.array([r["step"] for r in train])
    loss = np.array([r["loss"] for r in train], dtype=float)
    fig, axes = plt.subplots(1, 3 if val else 2, figsize=(15 if val else 10, 3.6))
    ax = axes[0]
    ax.plot(steps, loss, color="#4c72b0", alpha=0.35, lw=0.8, label="per step")
    window = max(1, len(loss) // 25)
    if window > 1:
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, color="#4c72b0", lw=1.8, label=f"mean of {window} steps")
    ax.set(xlabel="step", ylabel="train loss", title="training loss")
    ax.legend()
    ax.grid(alpha=0.3)
    ax = axes[1]
    ax.plot(steps, [r.get("lr", np.nan) for r in train], color="#55a868")
    ax.set(xlabel="step", ylabel="learning rate", title="learning rate")
    ax.grid(alpha=0.3)
    if val:
        ax = axes[2]
        ax.plot([r["step"] for r in val], [100 * r["mIoU"] for r in val], "o-", color="#c44e52")
        ax.set(xlabel="step", ylabel="val mIoU (%)", title="validation mIoU")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def _display_image(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalised (C, H, W) float image back to uint8 (H, W, 3)."""
    c = image.shape[0]
    m = torch.tensor(mean[:c]).view(c, 1, 1)
    s = torch.tensor(std[:c]).view(c, 1, 1)
    x = ((image.cpu().float() * s + m).clamp(0, 1) * 255).round().to(torch.uint8)
    x = x.expand(3, -1, -1) if c == 1 else x[:3]
    return x.permute(1, 2, 0).numpy()


def error_map(pred: np.ndarray, mask: np.ndarray, ignore_index: int) -> np.ndarray:
    """uint8 (H, W, 3): wrong pixels red, right pixels dark gray, void (``ignore_index``) pixels white."""
    out = np.full(mask.shape + (3,), 40, dtype=np.uint8)
    out[(pred != mask) & (mask != ignore_index)] = (230, 30, 30)
    out[mask == ignore_index] = (255, 255, 255)
    return out


@torch.no_grad()
def image_grid(predictor: Predictor, dataset, picks: Sequence[dict[str, Any]], options: InferenceOptions,
               title: str) -> str:
    """One row per picked image: image, ground truth, prediction, error map (single-scale prediction)."""
    plt = _pyplot()
    card = predictor.card
    palette, ignore = card.palette_tuples, card.ignore_index
    fig, axes = plt.subplots(len(picks), 4, figsize=(14, 2.9 * len(picks)), squeeze=False)
    for row, pick in zip(axes, picks):
        image, mask = dataset[pick["index"]]
        logits = predictor.scores(image[None].to(predictor.device), mask.shape[-2:], options=options)
        pred = logits.argmax(1)[0].cpu().numpy().astype(np.int64)
        gt = mask.cpu().numpy().astype(np.int64)
        shown_gt = np.where(gt == ignore, 0, gt)
        panels = [
            (_display_image(image, card.mean, card.std), f"{pick['name']}"),
            (np.where((gt == ignore)[..., None], 255, colorize(shown_gt, palette)).astype(np.uint8),
             "ground truth (void white)"),
            (colorize(pred, palette), f"prediction: mIoU {_pct(pick['mIoU'])} %"),
            (error_map(pred, gt, ignore), f"errors (red), pixel acc {_pct(pick['pixel_accuracy'])} %"),
        ]
        for ax, (picture, caption) in zip(row, panels):
            ax.imshow(picture, interpolation="nearest")
            ax.set_title(caption, fontsize=9)
            ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return _png(fig)


def legend_html(names: Sequence[str], palette: Sequence[Sequence[int]]) -> str:
    items = "".join(
        f'<span class="sw"><i style="background:rgb({c[0]},{c[1]},{c[2]})"></i>{html.escape(str(n))}</span>'
        for n, c in zip(names, palette))
    return f'<p class="legend">{items}</p>'


def _metrics_tables(data: ReportData) -> str:
    s, t = data.metrics[SINGLE], data.metrics[TTA]
    rows = "".join(
        f"<tr><th>{label}</th><td>{_pct(s[key])}</td><td>{_pct(t[key])}</td>"
        f"<td>{_delta(s[key], t[key])}</td></tr>" for label, key in _SUMMARY)
    summary = (f"<table><tr><th>metric (%)</th><th>{SINGLE}</th><th>{TTA}</th><th>TTA − single</th></tr>{rows}"
               f"<tr><th>inference seconds</th><td>{data.seconds[SINGLE]:.1f}</td><td>{data.seconds[TTA]:.1f}</td>"
               "<td></td></tr></table>")
    cm = np.asarray(s["confusion_matrix"], dtype=np.float64)
    share = cm.sum(axis=1) / max(cm.sum(), 1)
    per_class = "".join(
        f"<tr><th>{html.escape(str(n))}</th><td>{_pct(s['IoU'][i])}</td><td>{_pct(t['IoU'][i])}</td>"
        f"<td>{_pct(s['accuracy'][i])}</td><td>{_pct(float(share[i]))}</td></tr>"
        for i, n in enumerate(data.class_names))
    classes = ("<table><tr><th>class</th><th>IoU, single</th><th>IoU, TTA</th><th>accuracy, single</th>"
               f"<th>share of labelled pixels</th></tr>{per_class}</table>")
    return summary, classes


def _delta(a: float, b: float) -> str:
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return "–"
    return f"{100 * (b - a):+.2f}"


_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; } td, th { padding: 3px 10px; border-bottom: 1px solid #eee; }
td { text-align: right; font-variant-numeric: tabular-nums; } th { text-align: left; }
.meta { color: #555; } img { max-width: 100%; } .cols { display: flex; gap: 2em; flex-wrap: wrap; }
.legend .sw { display: inline-block; margin: 0 1em 0.3em 0; }
.legend i { display: inline-block; width: 1em; height: 1em; vertical-align: -0.15em; margin-right: 0.3em;
            border: 1px solid #999; }
"""


def write_report(
    out_dir: str | Path,
    data: ReportData,
    predictor: Predictor,
    dataset,
    checkpoint: str | Path,
    title: str,
    num_images: int = 4,
) -> Path:
    """Write ``out_dir/index.html`` (self-contained) and ``out_dir/metrics.json``; returns the HTML path.

    The training curves come from ``log.jsonl`` beside ``checkpoint`` (a run folder); without it the section says
    so. Raises ConfigError when matplotlib is missing."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary, classes = _metrics_tables(data)
    log_path = Path(checkpoint).parent / "log.jsonl"
    curves = training_curves(read_log(log_path)) if log_path.is_file() else None
    if curves is not None:
        curves_html = f'<img alt="training curves" src="{curves}"><p class="meta">from {html.escape(str(log_path))}</p>'
    else:
        curves_html = (f"<p>No training log: {html.escape(str(log_path))} is missing or holds no training steps "
                       "(the curves need the checkpoint in its run folder).</p>")
    best, worst = rank_images(data.image_scores, num_images)
    single = data.options[SINGLE]
    grids = ""
    for picks, label in ((best, "best"), (worst, "worst")):
        if picks:
            grid = image_grid(predictor, dataset, picks, single,
                              f"{len(picks)} {label} images by their own mIoU ({SINGLE})")
            grids += f'<h3>{label}</h3><img alt="{label} images" src="{grid}">'
    if not grids:
        grids = "<p>No image has labelled pixels.</p>"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    card = predictor.card
    meta = (f"checkpoint {html.escape(str(checkpoint))} · model {html.escape(card.model)} · "
            f"{len(data.image_scores)} images · {SINGLE}: {html.escape(data.options[SINGLE].describe())} · "
            f"{TTA}: {html.escape(data.options[TTA].describe())} · input scale {card.input_scale:g} · {when}")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="meta">{meta}</p>
<h2>Metrics</h2>
<div class="cols"><div>{summary}</div><div>{classes}</div></div>
<p class="meta">Means skip classes absent from both ground truth and prediction (shown as –); void pixels are not
counted. Per-image mIoU below uses the same rule on one image.</p>
<h2>Per-class IoU</h2>
<img alt="per-class IoU" src="{iou_bars(data)}">
<h2>Confusion matrix ({SINGLE}, row-normalised)</h2>
<img alt="confusion matrix" src="{confusion_heatmap(data.metrics[SINGLE]['confusion_matrix'], data.class_names)}">
<h2>Training curves</h2>
{curves_html}
<h2>Best and worst images</h2>
{legend_html(data.class_names, card.palette)}
{grids}
</body></html>
"""
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    record = {
        "checkpoint": str(checkpoint), "title": title, "classes": data.class_names,
        "options": {k: v.describe() for k, v in data.options.items()}, "seconds": data.seconds,
        "metrics": data.metrics, "images": data.image_scores, "best": [s["index"] for s in best],
        "worst": [s["index"] for s in worst],
    }
    (out / "metrics.json").write_text(json.dumps(json_safe(record), indent=1), encoding="utf-8")
    return path

