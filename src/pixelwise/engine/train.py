"""The training loop: SGD + momentum under a poly learning rate (or AdamW), validation every epoch, JSON-lines
logs, atomic ``last.pt`` / ``best.pt`` checkpoints and exact ``--resume``.

The poly schedule, ``lr = base_lr * (1 - step / total_steps) ** power``, is DeepLab's (Chen et al., TPAMI 2018)
and the default of the segmentation references since. Determinism: the model's initialisation follows ``seed``;
the order of samples and each sample's augmentation are pure functions of (seed, epoch, position)
(:class:`~pixelwise.data.EpochSampler`), so a run stopped after epoch k and resumed logs the same losses, step for
step, as a run that never stopped (on the same device and thread count).
"""

from __future__ import annotations

import json
import math
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import BatchSampler, DataLoader
from tqdm import tqdm

from pixelwise.data import (
    EpochSampler,
    SeededTransformDataset,
    build_dataset,
    class_statistics,
    default_normalization,
    eval_transforms,
    pad_collate,
    train_transforms,
)
from pixelwise.engine.checkpoint import (
    check_classes,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from pixelwise.engine.config import TrainConfig
from pixelwise.engine.inference import evaluate, resolve_device
from pixelwise.errors import CheckpointError, ConfigError
from pixelwise.losses import build_loss, median_frequency_weights
from pixelwise.models import build_model

LOG_NAME = "log.jsonl"


def poly_lr_lambda(total_steps: int, power: float = 0.9) -> Callable[[int], float]:
    """Multiplier of the base LR at ``step`` (0-based) for the poly schedule over ``total_steps``."""
    return lambda step: max(0.0, 1.0 - step / total_steps) ** power


def _loader(dataset, batch_size, shuffle_sampler, cfg: TrainConfig, drop_last: bool) -> DataLoader:
    kwargs: dict[str, Any] = dict(
        num_workers=cfg.num_workers,
        collate_fn=partial(pad_collate, ignore_index=cfg.ignore_index),
        pin_memory=torch.cuda.is_available(),
        persistent_workers=cfg.num_workers > 0,
    )
    if shuffle_sampler is not None:
        return DataLoader(dataset, batch_sampler=BatchSampler(shuffle_sampler, batch_size, drop_last), **kwargs)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, **kwargs)


class Trainer:
    """Builds everything a run needs from a :class:`TrainConfig` and an output folder, then :meth:`fit`.

    Files in ``out_dir``: ``config.yaml`` (the resolved config), ``log.jsonl`` (one ``{"type": "train"}`` line per
    ``log_every`` steps with loss and lr; one ``{"type": "val"}`` line per validation with every metric),
    ``last.pt`` (after every epoch) and ``best.pt`` (best validation mIoU).

    Raises:
        ConfigError, DatasetError, CheckpointError: bad options, data or checkpoint, with the fix in the message.
    """

    def __init__(self, cfg: TrainConfig, out_dir: str | Path, resume: bool = False, progress: bool = True) -> None:
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)

        raw_train = build_dataset(
            cfg.data, cfg.train_split, require_masks=True, seed=cfg.seed, ignore_index=cfg.ignore_index
        )
        self.classes = list(raw_train.classes)
        self.palette = [list(c) for c in raw_train.palette]
        self.num_classes = len(self.classes)
        self.in_channels = raw_train.in_channels
        mean, std = default_normalization(self.in_channels)
        self.mean = list(cfg.mean or mean)
        self.std = list(cfg.std or std)
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ConfigError(f"mean/std need {self.in_channels} values for this {self.in_channels}-channel data")

        # The cheap up-front scan: every mask's size and values, before any time is spent training.
        stats = class_statistics(raw_train)
        self.class_weights = self._class_weights(stats)

        crop = (cfg.crop_size[0], cfg.crop_size[1])
        lo, hi = cfg.scale_range
        tf = train_transforms(
            crop, (lo * cfg.input_scale, hi * cfg.input_scale), self.mean, self.std, cfg.ignore_index,
            cfg.hflip, cfg.color_jitter,
        )
        self.train_set = SeededTransformDataset(raw_train, tf)
        if len(self.train_set) < cfg.batch_size:
            raise ConfigError(
                f"batch size {cfg.batch_size} is larger than the {len(self.train_set)} training images of "
                f"{cfg.data} ({cfg.train_split}): use --batch-size {len(self.train_set)} or less"
            )
        self.sampler = EpochSampler(len(self.train_set), seed=cfg.seed)
        self.train_loader = _loader(self.train_set, cfg.batch_size, self.sampler, cfg, drop_last=True)
        self.val_set = build_dataset(
            cfg.data, cfg.val_split, transforms=eval_transforms(self.mean, self.std), require_masks=True,
            seed=cfg.seed, ignore_index=cfg.ignore_index,
        )
        check_classes({"classes": self.val_set.classes}, self.classes, f"{cfg.data} ({cfg.val_split})", "train split")
        self.val_loader = _loader(self.val_set, cfg.eval_batch_size, None, cfg, drop_last=False)

        self.steps_per_epoch = len(self.train_loader)
        self.total_steps = cfg.steps if cfg.steps is not None else (cfg.epochs or 1) * self.steps_per_epoch
        self.num_epochs = math.ceil(self.total_steps / self.steps_per_epoch)

        self.model = build_model(cfg.model, self.num_classes, self.in_channels, **cfg.model_kwargs).to(self.device)
        try:
            self.criterion = build_loss(cfg.loss, cfg.ignore_index, self.class_weights, **cfg.loss_kwargs)
        except ValueError as err:
            raise ConfigError(f"loss {cfg.loss!r} with loss_kwargs {cfg.loss_kwargs}: {err}") from None
        self.criterion = self.criterion.to(self.device)
        if cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(
                self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
            )
        else:
            self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, poly_lr_lambda(self.total_steps, cfg.poly_power)
        )
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps completed
        self.best_miou = -1.0
        self.last_metrics: dict[str, Any] | None = None
        if resume:
            self._resume()
        else:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / LOG_NAME).write_text("")
        self._write_config()

    def _class_weights(self, stats) -> torch.Tensor | None:
        cw = self.cfg.class_weights
        if cw is None:
            return None
        if cw == "median-frequency":
            return median_frequency_weights(stats["class_pixels"], stats["image_pixels"])
        if len(cw) != self.num_classes:
            raise ConfigError(f"class_weights has {len(cw)} values but the dataset has {self.num_classes} classes")
        return torch.tensor(cw, dtype=torch.float32)

    def _write_config(self) -> None:
        import yaml

        (self.out_dir / "config.yaml").write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))

    # -- checkpoints -------------------------------------------------------------------------------------------
    def state(self, metrics: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "model": self.cfg.model,
            "model_kwargs": dict(self.cfg.model_kwargs),
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "classes": self.classes,
            "palette": self.palette,
            "ignore_index": self.cfg.ignore_index,
            "mean": self.mean,
            "std": self.std,
            "input_scale": self.cfg.input_scale,
            "config": self.cfg.to_dict(),
            "model_state": self.model.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "scheduler_state": self.scheduler.state_dict(),
            "rng_state": get_rng_state(),
            "epoch": self.epoch,
            "step": self.step,
            "metrics": metrics,
            "best_miou": self.best_miou,
        }

    def _resume(self) -> None:
        path = self.out_dir / "last.pt"
        if not path.is_file():
            raise CheckpointError(f"--resume: {path} does not exist (start without --resume, or pick the run folder)")
        state = load_checkpoint(path, map_location=self.device)
        check_classes(state, self.classes, f"{self.cfg.data} ({self.cfg.train_split})", path)
        if state["model"] != self.cfg.model or state["model_kwargs"] != dict(self.cfg.model_kwargs):
            raise CheckpointError(
                f"--resume: {path} holds model {state['model']} {state['model_kwargs']}, the config asks for "
                f"{self.cfg.model} {dict(self.cfg.model_kwargs)}"
            )
        self.model.load_state_dict(state["model_state"])
        self.optimizer.load_state_dict(state["optimizer_state"])
        self.scheduler.load_state_dict(state["scheduler_state"])
        set_rng_state(state["rng_state"])
        self.epoch, self.step, self.best_miou = state["epoch"], state["step"], state["best_miou"]
        self.last_metrics = state["metrics"]
        self._truncate_log()

    def _truncate_log(self) -> None:
        """Drop log lines written after the checkpoint (a run killed mid-epoch), so the resumed log has no
        duplicates and no steps the checkpoint does not contain."""
        log = self.out_dir / LOG_NAME
        if not log.is_file():
            return
        kept = []
        for line in log.read_text().splitlines():
            if line.strip() and json.loads(line).get("step", 0) <= self.step:
                kept.append(line)
        log.write_text("".join(line + "\n" for line in kept))

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.out_dir / LOG_NAME, "a") as f:
            f.write(json.dumps(record) + "\n")

    # -- the loop ----------------------------------------------------------------------------------------------
    def fit(self, stop_after_epoch: int | None = None) -> dict[str, Any] | None:
        """Train until ``total_steps``; validate every ``val_every`` epochs and at the end. ``stop_after_epoch``
        stops early (as an interrupted run would) after that many epochs; ``resume=True`` continues it.

        Returns the last validation metrics (the dict of :meth:`SegmentationMetrics.compute`)."""
        cfg = self.cfg
        start = time.time()
        while self.step < self.total_steps:
            self.sampler.set_epoch(self.epoch)
            self.model.train()
            n_steps = min(self.steps_per_epoch, self.total_steps - self.step)
            bar = tqdm(
                total=n_steps, desc=f"epoch {self.epoch + 1}/{self.num_epochs}", disable=not self.progress,
                dynamic_ncols=True,
            )
            loss_sum, seen = 0.0, 0
            for images, masks in self.train_loader:
                images = images.to(self.device, non_blocking=True)
                masks = masks.to(self.device, non_blocking=True)
                logits = self.model(images)
                loss = self.criterion(logits, masks)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"loss is {loss.item()} at step {self.step + 1}: lower the learning rate (now "
                        f"{self.scheduler.get_last_lr()[0]:.3g}); {self.out_dir / 'last.pt'} holds the last good state"
                    )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                lr = self.scheduler.get_last_lr()[0]
                self.scheduler.step()
                self.step += 1
                value = loss.item()
                loss_sum += value
                seen += 1
                if self.step % cfg.log_every == 0:
                    self._log({"type": "train", "epoch": self.epoch + 1, "step": self.step, "loss": value, "lr": lr})
                bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}")
                bar.update(1)
                if self.step >= self.total_steps or seen >= n_steps:
                    break
            bar.close()
            self.epoch += 1
            metrics = None
            if self.epoch % cfg.val_every == 0 or self.step >= self.total_steps:
                metrics = evaluate(
                    self.model, self.val_loader, self.num_classes, cfg.ignore_index, cfg.input_scale, self.device
                )
                self.last_metrics = metrics
                self._log(
                    {"type": "val", "epoch": self.epoch, "step": self.step, "train_loss": loss_sum / max(seen, 1),
                     "elapsed_s": round(time.time() - start, 2), **_scalars(metrics), "IoU": metrics["IoU"]}
                )
                if self.progress:
                    tqdm.write(
                        f"epoch {self.epoch}: train loss {loss_sum / max(seen, 1):.4f}  val mIoU "
                        f"{100 * metrics['mIoU']:.2f}  pixel acc {100 * metrics['pixel_accuracy']:.2f}"
                    )
                if metrics["mIoU"] > self.best_miou:
                    self.best_miou = metrics["mIoU"]
                    save_checkpoint(self.state(metrics), self.out_dir / "best.pt")
            save_checkpoint(self.state(metrics), self.out_dir / "last.pt")
            if stop_after_epoch is not None and self.epoch >= stop_after_epoch:
                break
        return self.last_metrics


def _scalars(metrics: dict[str, Any] | None) -> dict[str, Any]:
    if not metrics:
        return {}
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def train(cfg: TrainConfig, out_dir: str | Path, resume: bool = False, progress: bool = True,
          stop_after_epoch: int | None = None) -> dict[str, Any] | None:
    """Train a model as ``cfg`` says, writing into ``out_dir``; see :class:`Trainer`. Returns val metrics."""
    return Trainer(cfg, out_dir, resume=resume, progress=progress).fit(stop_after_epoch=stop_after_epoch)
