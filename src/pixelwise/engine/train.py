"""The training loop: SGD + momentum under a poly learning rate (or AdamW), validation every epoch, JSON-lines
logs, atomic ``last.pt`` / ``best.pt`` checkpoints and exact ``--resume``.

The poly schedule, ``lr = base_lr * (1 - step / total_steps) ** power``, is DeepLab's (Chen et al., TPAMI 2018)
and the default of the segmentation references since. Determinism: the model's initialisation follows ``seed``;
the order of samples and each sample's augmentation are pure functions of (seed, epoch, position)
(:class:`~pixelwise.data.EpochSampler`), so a run stopped after epoch k and resumed logs the same losses, step for
step, as a run that never stopped (on the same device and thread count). SIGINT (Ctrl-C) or SIGTERM (a scheduler's
pre-emption) finishes the current step, writes ``last.pt`` at that step and raises :class:`TrainingInterrupted`;
``--resume`` then continues mid-epoch, with the same losses as a run that was never interrupted.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
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
    SCORES,
    score_improves,
    Checkpoint,
    ModelCard,
    check_classes,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from pixelwise.engine import distributed
from pixelwise.engine.config import TrainConfig, instance_warmup_steps
from pixelwise.engine.inference import evaluate, resolve_device
from pixelwise.errors import CheckpointError, ConfigError, PixelwiseError
from pixelwise.losses import build_loss, median_frequency_weights
from pixelwise.models import build_model, get_model_info

LOG_NAME = "log.jsonl"


def poly_lr_lambda(
    total_steps: int, power: float = 0.9, warmup_steps: int = 0, warmup_factor: float = 0.001
) -> Callable[[int], float]:
    """Multiplier of the base LR at ``step`` (0-based, counted in optimizer steps).

    Steps ``0 .. warmup_steps - 1`` ramp linearly from ``warmup_factor`` towards 1; from ``warmup_steps`` on, the
    poly decay ``(1 - (step - warmup_steps) / (total_steps - warmup_steps)) ** power`` spans the remaining steps,
    as torchvision's segmentation references chain ``LinearLR`` and ``PolynomialLR``.
    """
    decay_steps = total_steps - warmup_steps

    def factor(step: int) -> float:
        if step < warmup_steps:
            return warmup_factor + (1.0 - warmup_factor) * step / warmup_steps
        return max(0.0, 1.0 - (step - warmup_steps) / decay_steps) ** power

    return factor


def _collate(task: str, ignore_index: int) -> Callable:
    """Semantic batches are padded tensors; instance batches lists of images and target dicts of any sizes."""
    if task == "instance":
        from pixelwise.data.instances import instance_collate

        return instance_collate
    return partial(pad_collate, ignore_index=ignore_index)


def _check_instance_options(cfg: TrainConfig) -> None:
    """Options of semantic training that an instance model has no use for: refused, never silently dropped."""
    default = TrainConfig()
    unused = [name for name in ("input_scale", "loss", "loss_kwargs", "class_weights", "mean", "std",
                                "channels_last", "color_jitter") if getattr(cfg, name) != getattr(default, name)]
    if unused:
        raise ConfigError(
            f"{cfg.model} is an instance model: {', '.join(unused)} apply to semantic models only (Mask R-CNN "
            "resizes images itself: model_kwargs.min_size / max_size; normalises them: model_kwargs.image_mean / "
            "image_std; and has its own losses)"
        )


def _check_prompt_options(cfg: TrainConfig) -> None:
    """Options of semantic training that a click model has no use for: refused, never silently dropped."""
    default = TrainConfig()
    unused = [name for name in ("input_scale", "loss", "loss_kwargs", "class_weights")
              if getattr(cfg, name) != getattr(default, name)]
    if unused:
        raise ConfigError(
            f"{cfg.model} is a click model: {', '.join(unused)} apply to semantic models only (its loss is "
            "prompt_kwargs.loss: normalized_focal or bce; it sees images at their own scale)"
        )


def _check_data_task(dataset, task: str, cfg: TrainConfig) -> None:
    """The data must hold what the model learns: instances for an instance model, class masks for a semantic
    one."""
    has_instances = hasattr(dataset, "coco_ground_truth")  # the instance datasets' contract (data/instances.py)
    if task == "instance" and not has_instances:
        raise ConfigError(
            f"{cfg.model} learns instances but {cfg.data} holds class masks: use a COCO-layout folder "
            "(images/<split>/, instances_<split>.json) or derive instances from the masks with "
            "--set data_kwargs.instances=connected_components"
        )
    if task == "semantic" and has_instances:
        raise ConfigError(f"{cfg.model} is a semantic model but {cfg.data} holds instances: train an instance model "
                          "(--model maskrcnn) on it")


def _loader(dataset, batch_size, sampler, cfg: TrainConfig, device: torch.device, collate: Callable,
            shuffle: bool) -> DataLoader:
    """Workers keep running between epochs (``persistent_workers``) and, for CUDA, hand over page-locked batches
    (``pin_memory``) so the host-to-device copy overlaps compute."""
    kwargs: dict[str, Any] = dict(
        num_workers=cfg.num_workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.num_workers > 0,
        worker_init_fn=_worker_ignores_stop_signals if cfg.num_workers > 0 else None,
    )
    if shuffle:
        return DataLoader(dataset, batch_sampler=BatchSampler(sampler, batch_size, drop_last=True), **kwargs)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, **kwargs)


_AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(PixelwiseError):
    """SIGINT or SIGTERM stopped training; ``last.pt`` holds the run up to ``step`` and ``--resume`` continues it.

    Attributes: ``signum`` (the signal's number), ``step`` (optimizer steps completed), ``checkpoint`` (its path).
    """

    def __init__(self, signum: int, step: int, checkpoint: Path) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(
            f"{signal.Signals(signum).name} received: stopped after step {step}, {checkpoint} written; continue with "
            f"--resume"
        )


def _worker_ignores_stop_signals(_: int) -> None:
    """DataLoader workers leave SIGINT / SIGTERM to the main process, which stops after the current step (a Ctrl-C
    reaches every process of the terminal's group; a worker that died of it would fail the step)."""
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class Trainer:
    """Builds everything a run needs from a :class:`TrainConfig` and an output folder, then :meth:`fit`.

    Files in ``out_dir``: ``config.yaml`` (the resolved config), ``log.jsonl`` (one ``{"type": "train"}`` line per
    ``log_every`` steps with loss, lr, ``data_s`` (seconds spent waiting for the loader) and ``step_s`` (the step's
    seconds, waiting included); one ``{"type": "val"}`` line per validation with every metric),
    ``last.pt`` (after every epoch) and ``best.pt`` (best validation score, :data:`SCORES`: mIoU, mask AP, or the
    lowest NoC@85 for a click model).

    Under ``torchrun`` (see :mod:`pixelwise.engine.distributed`) every process trains on its shard of each global
    batch through ``DistributedDataParallel``; validation is sharded too and its confusion matrices summed over
    ranks; rank 0 alone writes logs and checkpoints. The logged loss is the mean over ranks and accumulation steps.

    Raises:
        ConfigError, DatasetError, CheckpointError: bad options, data or checkpoint, with the fix in the message.
    """

    def __init__(self, cfg: TrainConfig, out_dir: str | Path, resume: bool = False, progress: bool = True) -> None:
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.world, self.device = distributed.setup(resolve_device(cfg.device))
        self.progress = progress and self.world.is_main
        if cfg.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError(f"precision fp16 needs a CUDA device (this run is on {self.device}): use bf16 on the CPU")
        if cfg.sync_bn and self.world.distributed and self.device.type != "cuda":
            raise ConfigError("sync_bn: PyTorch's SyncBatchNorm runs on CUDA only; drop sync_bn for CPU (gloo) runs")
        self.amp_dtype = _AMP_DTYPES[cfg.precision]
        torch.manual_seed(cfg.seed)

        # The task comes from the model: "semantic" (logits per pixel) or "instance" (Mask R-CNN's detections).
        self.task = get_model_info(cfg.model)["task"]
        self.score_name = SCORES[self.task]
        if self.task == "instance":
            _check_instance_options(cfg)
        if self.task == "prompt":
            from pixelwise.data.objects import build_object_dataset

            _check_prompt_options(cfg)
            # Every object of any dataset: instances, or the connected components of a semantic one's classes.
            raw_train = build_object_dataset(cfg.data, cfg.train_split, seed=cfg.seed, ignore_index=cfg.ignore_index,
                                             **cfg.data_kwargs)
        else:
            raw_train = build_dataset(
                cfg.data, cfg.train_split, require_masks=True, seed=cfg.seed, ignore_index=cfg.ignore_index,
                **cfg.data_kwargs,
            )
            _check_data_task(raw_train, self.task, cfg)
        self.classes = list(raw_train.classes)
        ids = getattr(raw_train, "category_ids", None)
        self.category_ids = [int(v) for v in ids] if self.task == "instance" and ids is not None else None
        self.palette = [list(c) for c in raw_train.palette]
        self.num_classes = len(self.classes)
        self.in_channels = raw_train.in_channels
        mean, std = default_normalization(self.in_channels)
        self.mean = list(cfg.mean or mean)
        self.std = list(cfg.std or std)
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ConfigError(f"mean/std need {self.in_channels} values for this {self.in_channels}-channel data")

        crop = (cfg.crop_size[0], cfg.crop_size[1])
        lo, hi = cfg.scale_range
        if self.task == "instance":
            from pixelwise.data.instances import instance_eval_transforms, instance_train_transforms

            self.class_weights = None
            tf = instance_train_transforms(crop, (lo, hi), cfg.hflip)
            val_tf = instance_eval_transforms()
        elif self.task == "prompt":
            from pixelwise.data.objects import object_eval_transforms, object_train_transforms

            self.class_weights = None
            tf = object_train_transforms(crop, (lo, hi), self.mean, self.std, cfg.ignore_index, cfg.hflip,
                                         cfg.color_jitter, min_pixels=raw_train.min_object_area)
            val_tf = object_eval_transforms(self.mean, self.std)
        else:
            # The cheap up-front scan: every mask's size and values, before any time is spent training.
            stats = class_statistics(raw_train)
            self.class_weights = self._class_weights(stats)
            tf = train_transforms(
                crop, (lo * cfg.input_scale, hi * cfg.input_scale), self.mean, self.std, cfg.ignore_index,
                cfg.hflip, cfg.color_jitter,
            )
            val_tf = eval_transforms(self.mean, self.std)
        self.train_set = SeededTransformDataset(raw_train, tf)
        self.global_batch = cfg.batch_size * cfg.grad_accum_steps * self.world.size
        if len(self.train_set) < self.global_batch:
            raise ConfigError(
                f"one optimizer step needs {self.global_batch} images (batch size {cfg.batch_size} x "
                f"{cfg.grad_accum_steps} accumulation steps x {self.world.size} processes) but {cfg.data} "
                f"({cfg.train_split}) has {len(self.train_set)}: use --batch-size "
                f"{max(1, len(self.train_set) // (cfg.grad_accum_steps * self.world.size))} or less"
            )
        self.sampler = EpochSampler(
            len(self.train_set), seed=cfg.seed, num_replicas=self.world.size, rank=self.world.rank
        )
        self.collate = _collate(self.task, cfg.ignore_index)
        self.train_loader = _loader(self.train_set, cfg.batch_size, self.sampler, cfg, self.device, self.collate,
                                    shuffle=True)
        if self.task == "prompt":
            self.val_set = build_object_dataset(cfg.data, cfg.val_split, transforms=val_tf, seed=cfg.seed,
                                                ignore_index=cfg.ignore_index, **cfg.data_kwargs)
            self.val_loader = None  # the click protocol runs object by object (validate)
        else:
            self.val_set = build_dataset(
                cfg.data, cfg.val_split, transforms=val_tf, require_masks=True, seed=cfg.seed,
                ignore_index=cfg.ignore_index, **cfg.data_kwargs,
            )
            check_classes(self.classes, self.val_set.classes, f"{cfg.data} ({cfg.val_split})", "train split")
            self.val_loader = _loader(
                self.val_set, cfg.eval_batch_size, distributed.ShardSampler(len(self.val_set), self.world), cfg,
                self.device, self.collate, shuffle=False,
            )

        # An epoch is as many whole optimizer steps as the shuffled images fill; the few left over sit out that
        # epoch (a different few each time, since the permutation changes).
        self.steps_per_epoch = len(self.train_loader) // cfg.grad_accum_steps
        self.total_steps = cfg.steps if cfg.steps is not None else cfg.epochs * self.steps_per_epoch
        self.num_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        if cfg.warmup_steps is None:  # the instance task's default, which depends on the run's length
            cfg.warmup_steps = instance_warmup_steps(self.total_steps)
        if cfg.warmup_steps >= self.total_steps:
            raise ConfigError(f"warmup_steps ({cfg.warmup_steps}) must be smaller than the run's "
                              f"{self.total_steps} steps")

        self.model = build_model(cfg.model, self.num_classes, self.in_channels, **cfg.model_kwargs).to(self.device)
        if self.task == "instance":  # the detector normalises inside itself; the card records its values
            self.mean = [float(v) for v in self.model.transform.image_mean]
            self.std = [float(v) for v in self.model.transform.image_std]
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if cfg.sync_bn and self.world.distributed:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        # What the training step calls; self.model stays the plain module (checkpoints, validation).
        self.train_model: nn.Module = self.model
        self.ddp: DistributedDataParallel | None = None
        if self.world.distributed:
            self.ddp = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
            self.train_model = self.ddp
        if cfg.compile:
            self.train_model = torch.compile(self.train_model)
        if self.task != "semantic":
            # Mask R-CNN returns its own losses (RPN, box, class, mask); a click model's is prompt_kwargs.loss.
            self.criterion = None
        else:
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
            self.optimizer, poly_lr_lambda(self.total_steps, cfg.poly_power, cfg.warmup_steps, cfg.warmup_factor)
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16")
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps completed
        self.best_score = -1.0  # of self.score_name
        self.elapsed_before = 0.0  # seconds of training done before this process (by the runs it resumes)
        self._start = time.time()
        self.last_metrics: dict[str, Any] | None = None
        self._epoch_loss: tuple[float, int] = (0.0, 0)  # of a checkpoint written mid-epoch
        self._stop_signal: int | None = None
        if resume:
            self._resume()
        elif self.world.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / LOG_NAME).write_text("")
        if self.world.is_main:
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
    def card(self) -> ModelCard:
        """The :class:`ModelCard` of this run's model: what ``predict``, ``serve`` and ``export`` need."""
        return ModelCard(
            model=self.cfg.model, num_classes=self.num_classes, classes=self.classes, palette=self.palette,
            mean=self.mean, std=self.std, task=self.task, model_kwargs=dict(self.cfg.model_kwargs),
            in_channels=self.in_channels, input_scale=self.cfg.input_scale, ignore_index=self.cfg.ignore_index,
            crop_size=self.cfg.crop_size, category_ids=self.category_ids,
        )

    def state(self, metrics: dict[str, Any] | None, epoch_loss: tuple[float, int] = (0.0, 0)) -> Checkpoint:
        """Everything ``--resume`` needs; ``epoch_loss`` is (sum, steps) of the train losses of the epoch under way
        (a checkpoint written mid-epoch), so the resumed epoch's mean train loss counts every step."""
        return Checkpoint(
            card=self.card(),
            model_state=self.model.state_dict(),
            config=self.cfg.to_dict(),
            epoch=self.epoch,
            step=self.step,
            metrics=metrics,
            best_score=self.best_score,
            elapsed_s=self.elapsed(),
            epoch_loss=tuple(epoch_loss),
            world_size=self.world.size,
            optimizer_state=self.optimizer.state_dict(),
            scheduler_state=self.scheduler.state_dict(),
            scaler_state=self.scaler.state_dict(),
            rng_state=get_rng_state(),
        )

    def _resume(self) -> None:
        path = self.out_dir / "last.pt"
        if not path.is_file():
            raise CheckpointError(f"--resume: {path} does not exist (start without --resume, or pick the run folder)")
        ckpt = load_checkpoint(path, map_location=self.device)
        card = ckpt.card
        check_classes(card.classes, self.classes, f"{self.cfg.data} ({self.cfg.train_split})", path)
        if card.model != self.cfg.model or card.model_kwargs != dict(self.cfg.model_kwargs):
            raise CheckpointError(
                f"--resume: {path} holds model {card.model} {card.model_kwargs}, the config asks for "
                f"{self.cfg.model} {dict(self.cfg.model_kwargs)}"
            )
        if ckpt.optimizer_state is None or ckpt.rng_state is None:
            raise CheckpointError(f"--resume: {path} holds weights only, not a training run's state")
        if ckpt.world_size != self.world.size:
            raise CheckpointError(
                f"--resume: {path} was trained by {ckpt.world_size} process(es) and this run has {self.world.size}; "
                f"resume with the same count (torchrun --nproc_per_node {ckpt.world_size}) so the global batch and "
                f"the order of samples stay the same"
            )
        self.model.load_state_dict(ckpt.model_state)
        self.optimizer.load_state_dict(ckpt.optimizer_state)
        self.scheduler.load_state_dict(ckpt.scheduler_state)
        if ckpt.scaler_state:
            self.scaler.load_state_dict(ckpt.scaler_state)
        set_rng_state(ckpt.rng_state)
        self.epoch, self.step, self.best_score = ckpt.epoch, ckpt.step, ckpt.best_score
        self.last_metrics = ckpt.metrics
        self.elapsed_before = float(ckpt.elapsed_s)
        self._epoch_loss = tuple(ckpt.epoch_loss)
        if self.world.is_main:
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
        if not self.world.is_main:
            return
        with open(self.out_dir / LOG_NAME, "a") as f:
            f.write(json.dumps(record) + "\n")

    def elapsed(self) -> float:
        """Seconds of training (validation included) up to now, summed over every run this one resumes."""
        return self.elapsed_before + time.time() - self._start

    # -- the loop ----------------------------------------------------------------------------------------------
    def _forward_backward(self, micro_batches: list) -> float:
        """Accumulate the gradient of one optimizer step from this rank's ``micro_batches``; return its loss.

        The step's loss is the mean over every labelled pixel of the global batch: each micro-batch's loss (a mean
        over its own labelled pixels) is weighted by its share of the labelled pixels of all micro-batches on all
        ranks. A global batch split over processes and accumulation steps then gives the same gradient, up to
        float rounding, as one process holding it whole (exactly so for per-pixel losses such as cross-entropy
        without class weights). Returns the step's loss (the same on every rank).
        """
        cfg = self.cfg
        if self.task == "instance":
            return self._forward_backward_instances(micro_batches)
        if self.task == "prompt":
            return self._forward_backward_prompt(micro_batches)
        counts = [int((masks != cfg.ignore_index).sum()) for _, masks in micro_batches]
        total = distributed.all_reduce_sum(torch.tensor(float(sum(counts)), dtype=torch.float64), self.world)
        total = max(float(total), 1.0)
        loss_acc = torch.zeros((), dtype=torch.float64, device=self.device)
        for k, (images, masks) in enumerate(micro_batches):
            images, masks = self._to_device(images, masks)
            share = counts[k] / total
            # Gradients are all-reduced across processes only on the last micro-batch; DDP averages them over the
            # ranks, hence the factor world_size.
            last = k == len(micro_batches) - 1
            with self.ddp.no_sync() if self.ddp is not None and not last else nullcontext():
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    logits = self.train_model(images)
                loss = self.criterion(logits.float(), masks)
                self.scaler.scale(loss * (share * self.world.size)).backward()
            loss_acc += loss.detach().double() * share
        return float(distributed.all_reduce_sum(loss_acc, self.world))

    def _forward_backward_instances(self, micro_batches: list) -> float:
        """Mask R-CNN's step: the sum of its five losses (RPN objectness and box, classifier, box regression,
        mask), each micro-batch weighted by its share of the images. Returns the step's loss (mean over ranks)."""
        total = sum(len(images) for images, _ in micro_batches)
        loss_acc = torch.zeros((), dtype=torch.float64, device=self.device)
        for k, (images, targets) in enumerate(micro_batches):
            images = [image.to(self.device, non_blocking=True) for image in images]
            targets = [{key: value.to(self.device, non_blocking=True) if torch.is_tensor(value) else value
                        for key, value in target.items()} for target in targets]
            share = len(images) / total
            last = k == len(micro_batches) - 1
            with self.ddp.no_sync() if self.ddp is not None and not last else nullcontext():
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    losses = self.train_model(images, targets)
                loss = sum(value.float() for value in losses.values())
                self.scaler.scale(loss * share).backward()
            loss_acc += loss.detach().double() * share
        return float(distributed.all_reduce_sum(loss_acc, self.world)) / self.world.size

    def _to_device(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch on the run's device, the images in NHWC when ``channels_last``."""
        images = images.to(self.device, non_blocking=True)
        if self.cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, masks.to(self.device, non_blocking=True)

    def _forward_backward_prompt(self, micro_batches: list) -> float:
        """A click model's step (RITM, :mod:`pixelwise.prompt.click_training`): per micro-batch, the initial clicks
        and 0..M iterations of the simulated user on the model's own errors without gradient
        (:func:`~pixelwise.prompt.click_training.prepare_clicks`), then the training forward on the final clicks
        and previous mask, and prompt_kwargs.loss, each micro-batch weighted by its share of the objects. The
        clicks are drawn from the torch RNG (saved in checkpoints), so a resumed run draws the same ones. Returns
        the step's loss (mean over ranks)."""
        from pixelwise.prompt.click_training import click_loss, prepare_clicks

        cfg, options = self.cfg, self.cfg.prompt_kwargs
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
        total = sum(len(images) for images, _ in micro_batches)
        loss_acc = torch.zeros((), dtype=torch.float64, device=self.device)
        for k, (images, masks) in enumerate(micro_batches):
            images, masks = self._to_device(images, masks)
            clicks, prev = prepare_clicks(self.model, images, masks, cfg.ignore_index, rng,
                                          options["initial_clicks"], options["iterations"], self.amp_dtype)
            share = len(images) / total
            last = k == len(micro_batches) - 1
            with self.ddp.no_sync() if self.ddp is not None and not last else nullcontext():
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    logits = self.train_model(images, clicks, prev)
                loss = click_loss(options["loss"], logits, masks, cfg.ignore_index)
                self.scaler.scale(loss * share).backward()
            loss_acc += loss.detach().double() * share
        return float(distributed.all_reduce_sum(loss_acc, self.world)) / self.world.size

    def _validate_prompt(self) -> dict[str, Any]:
        """The click protocol over the val split's objects (prompt_kwargs.val_max_objects of them spread evenly over
        the split, or all), each process running its shard and the IoU lists gathered in dataset order."""
        from pixelwise.prompt.click_training import evaluate_clicks, spread_indices, summarize_clicks

        options = self.cfg.prompt_kwargs
        chosen = spread_indices(len(self.val_set), options["val_max_objects"])
        count = len(chosen)
        shard = chosen[self.world.rank::self.world.size]
        ious = evaluate_clicks(self.model, self.val_set, self.device, options["val_max_clicks"], indices=shard,
                               amp_dtype=self.amp_dtype)
        if self.world.distributed:
            gathered: list = [None] * self.world.size
            torch.distributed.all_gather_object(gathered, ious)
            ious = [gathered[i % self.world.size][i // self.world.size] for i in range(count)]
        return summarize_clicks(ious, options["val_max_clicks"])

    def validate(self) -> dict[str, Any]:
        """The validation split's metrics: :meth:`SegmentationMetrics.compute` (semantic),
        :meth:`pixelwise.instance_metrics.InstanceMetrics.compute` (instance, COCO AP) or the click protocol's
        :func:`~pixelwise.prompt.click_training.summarize_clicks` (prompt: NoC@85, NoC@90, ...)."""
        if self.task == "prompt":
            return self._validate_prompt()
        if self.task == "instance":
            from pixelwise.engine.instance import evaluate_instances

            return evaluate_instances(self.model, self.val_loader, self.val_set, self.device,
                                      amp_dtype=self.amp_dtype)
        return evaluate(
            self.model, self.val_loader, self.num_classes, self.cfg.ignore_index, self.cfg.input_scale, self.device,
            amp_dtype=self.amp_dtype, channels_last=self.cfg.channels_last,
        )

    def fit(self, stop_after_epoch: int | None = None) -> dict[str, Any] | None:
        """Train until ``total_steps``; validate every ``val_every`` epochs and at the end. ``stop_after_epoch``
        stops early (as an interrupted run would) after that many epochs; ``resume=True`` continues it.

        Returns the last validation metrics (the dict of :meth:`SegmentationMetrics.compute`).

        Raises:
            TrainingInterrupted: SIGINT or SIGTERM arrived; ``last.pt`` was written after the step under way.
            FloatingPointError: the loss became NaN or infinite; ``last.pt`` (if any) is the last good state.
        """
        handlers = {}
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for sig in _STOP_SIGNALS:
                handlers[sig] = signal.signal(sig, self._on_stop_signal)
        try:
            return self._fit(stop_after_epoch)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            self._shutdown_workers()

    def _shutdown_workers(self) -> None:
        """Stop the loaders' persistent workers now. They ignore SIGTERM (see ``_worker_ignores_stop_signals``),
        so a worker left for the garbage collector, e.g. while a traceback holds the loader after an error, would
        outlive the run and hang the interpreter's exit in multiprocessing's join."""
        for loader in (self.train_loader, self.val_loader):
            iterator = getattr(loader, "_iterator", None)
            if iterator is not None and hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()
                loader._iterator = None

    def _on_stop_signal(self, signum: int, frame) -> None:
        if self._stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the checkpoint
        self._stop_signal = signum

    def _stop_requested(self) -> bool:
        """Whether a stop signal arrived, agreed by every process (they must stop at the same step)."""
        if not self.world.distributed:
            return self._stop_signal is not None
        return bool(distributed.all_reduce_sum(torch.tensor(float(self._stop_signal or 0)), self.world) > 0)

    def _interrupt(self, epoch_loss: tuple[float, int]) -> None:
        path = self.out_dir / "last.pt"
        if self.world.is_main:
            save_checkpoint(self.state(self.last_metrics, epoch_loss), path)
        raise TrainingInterrupted(self._stop_signal or signal.SIGTERM, self.step, path)

    def _fit(self, stop_after_epoch: int | None) -> dict[str, Any] | None:
        cfg = self.cfg
        self._start = time.time()
        while self.step < self.total_steps:
            # A run resumed from a checkpoint written mid-epoch (a stop signal) skips what it already trained on.
            done = max(0, self.step - self.epoch * self.steps_per_epoch)
            self.sampler.set_epoch(self.epoch, start=done * cfg.grad_accum_steps * cfg.batch_size)
            self.model.train()
            n_steps = min(self.steps_per_epoch - done, self.total_steps - self.step)
            bar = tqdm(
                total=n_steps, desc=f"epoch {self.epoch + 1}/{self.num_epochs}", disable=not self.progress,
                dynamic_ncols=True,
            )
            loss_sum, seen = self._epoch_loss if done else (0.0, 0)
            self._epoch_loss = (0.0, 0)
            batches = iter(self.train_loader)
            for _ in range(n_steps):
                t0 = time.perf_counter()
                micro_batches = [next(batches) for _ in range(cfg.grad_accum_steps)]
                data_s = time.perf_counter() - t0  # waiting for the loader: > 0 when it cannot keep up
                value = self._forward_backward(micro_batches)
                if not math.isfinite(value):
                    last = self.out_dir / "last.pt"
                    kept = (f"{last} holds the last good state; continue from it with --resume" if last.is_file()
                            else "no checkpoint was written yet (the first comes at the end of epoch 1)")
                    raise FloatingPointError(
                        f"loss is {value} at step {self.step + 1}: lower the learning rate (now "
                        f"{self.scheduler.get_last_lr()[0]:.3g}) or clip gradients (clip_grad_norm); {kept}"
                    )
                record: dict[str, Any] = {}
                if cfg.clip_grad_norm is not None:
                    self.scaler.unscale_(self.optimizer)
                    norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad_norm)
                    record["grad_norm"] = round(float(norm), 6)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                lr = self.scheduler.get_last_lr()[0]
                self.scheduler.step()
                self.step += 1
                loss_sum += value
                seen += 1
                if self.step % cfg.log_every == 0:
                    # float(loss) above has waited for the device, so step_s is the step's real time.
                    record.update(data_s=round(data_s, 5), step_s=round(time.perf_counter() - t0, 5))
                    self._log({"type": "train", "epoch": self.epoch + 1, "step": self.step, "loss": value, "lr": lr,
                               **record})
                bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}")
                bar.update(1)
                if self._stop_requested() and self.step < self.total_steps:
                    bar.close()
                    self._interrupt((loss_sum, seen))
            bar.close()
            self.epoch += 1
            metrics = None
            if self.epoch % cfg.val_every == 0 or self.step >= self.total_steps:
                metrics = self.validate()
                self.last_metrics = metrics
                per_class = {"IoU": metrics["IoU"]} if self.task == "semantic" else {}
                self._log(
                    {"type": "val", "epoch": self.epoch, "step": self.step, "train_loss": loss_sum / max(seen, 1),
                     "elapsed_s": round(self.elapsed(), 2), **_scalars(metrics), **per_class}
                )
                if self.progress and self.task == "prompt":
                    tqdm.write(
                        f"epoch {self.epoch}: train loss {loss_sum / max(seen, 1):.4f}  val NoC@85 "
                        f"{metrics['NoC@85']:.2f}  NoC@90 {metrics['NoC@90']:.2f}  mIoU@1 {100 * metrics['mIoU@1']:.2f}"
                    )
                elif self.progress:
                    second = "pixel_accuracy" if self.task == "semantic" else "bbox_AP"
                    tqdm.write(
                        f"epoch {self.epoch}: train loss {loss_sum / max(seen, 1):.4f}  val {self.score_name} "
                        f"{100 * metrics[self.score_name]:.2f}  {second} {100 * metrics[second]:.2f}"
                    )
                if score_improves(self.score_name, metrics[self.score_name], self.best_score):
                    self.best_score = metrics[self.score_name]
                    if self.world.is_main:
                        save_checkpoint(self.state(metrics), self.out_dir / "best.pt")
            if self.world.is_main:
                save_checkpoint(self.state(metrics), self.out_dir / "last.pt")
            if stop_after_epoch is not None and self.epoch >= stop_after_epoch:
                break
            if self._stop_requested() and self.step < self.total_steps:  # arrived during validation
                raise TrainingInterrupted(self._stop_signal or signal.SIGTERM, self.step, self.out_dir / "last.pt")
        return self.last_metrics


def _scalars(metrics: dict[str, Any] | None) -> dict[str, Any]:
    if not metrics:
        return {}
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def train(cfg: TrainConfig, out_dir: str | Path, resume: bool = False, progress: bool = True,
          stop_after_epoch: int | None = None) -> dict[str, Any] | None:
    """Train a model as ``cfg`` says, writing into ``out_dir``; see :class:`Trainer`. Returns val metrics."""
    trainer = Trainer(cfg, out_dir, resume=resume, progress=progress)
    try:
        return trainer.fit(stop_after_epoch=stop_after_epoch)
    finally:
        distributed.teardown(trainer.world)
