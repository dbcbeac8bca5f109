"""Training configuration: one dataclass, filled from a YAML recipe and ``--set key=value`` overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pixelwise.errors import ConfigError


#: A run's length when neither ``epochs`` nor ``steps`` is given.
DEFAULT_EPOCHS = 10

#: What a field left unset (None) becomes, by the model's task. Semantic: SGD at 0.01, batches of 8, scale jitter
#: 0.5-2 (the FCN / DeepLab recipes). Instance (Mask R-CNN, trained on 2 images per GPU in its paper): AdamW at 2e-4
#: as in docs/instance.md's recipes, mild scale jitter (0.75-1.25: a microscope's pixel is its scale) and a linear
#: warmup over the first tenth of the run, at most 50 steps (:func:`instance_warmup_steps`). Prompt (click models,
#: RITM: Sofiiuk et al., ICIP 2022, trained with Adam at 5e-4): AdamW at 5e-4, batches of 8 objects, RITM's scale
#: jitter 0.75-1.4, no warmup.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "semantic": {"optimizer": "sgd", "lr": 0.01, "batch_size": 8, "eval_batch_size": 4,
                 "scale_range": (0.5, 2.0), "warmup_steps": 0},
    "instance": {"optimizer": "adamw", "lr": 2e-4, "batch_size": 2, "eval_batch_size": 2,
                 "scale_range": (0.75, 1.25), "warmup_steps": None},
    "prompt": {"optimizer": "adamw", "lr": 5e-4, "batch_size": 8, "eval_batch_size": 1,
               "scale_range": (0.75, 1.4), "warmup_steps": 0},
}


def instance_warmup_steps(total_steps: int) -> int:
    """The instance task's default warmup: a tenth of the run, at most 50 steps."""
    return min(50, total_steps // 10)


@dataclass
class TrainConfig:
    """Everything a training run depends on. Lengths are in pixels, ``lr`` per step, times in seconds.

    ``data`` is ``"synthetic"`` or a dataset folder, its format (folder layout, VOC, Cityscapes, ADE20K) detected or
    named by a prefix (``"voc:/data/VOCdevkit"``); ``data_kwargs`` are options of that format's reader
    (``binary_threshold``, ``color_map``, ``sbd_root``, ``reduce_zero_label``: :func:`pixelwise.data.build_dataset`).

    ``input_scale`` rescales every image before the model sees it (0.5 trains and evaluates CamVid at half
    resolution); training crops are taken after it. Metrics are always computed at the masks' own resolution.
    Exactly one of ``epochs`` and ``steps`` sets the run's length, counted in optimizer steps (neither:
    :data:`DEFAULT_EPOCHS` epochs); the poly schedule spans it. ``warmup_steps`` > 0 first ramps the LR linearly
    from ``warmup_factor * lr`` to ``lr``; the poly decay then spans the remaining steps (the scheme of torchvision's
    segmentation references).

    ``optimizer``, ``lr``, ``batch_size``, ``eval_batch_size``, ``scale_range`` and ``warmup_steps`` left None take
    the default of the model's task (:data:`TASK_DEFAULTS`: Mask R-CNN trains with AdamW at 2e-4 on batches of 2,
    the semantic models with SGD at 0.01 on batches of 8). An instance run's default warmup depends on its length
    and is set by the trainer once the length is known (:func:`instance_warmup_steps`).

    Scale: each optimizer step sees ``batch_size * grad_accum_steps * world_size`` images (``world_size`` processes
    under ``torchrun``). ``clip_grad_norm`` clips the global L2 norm of the gradients. ``precision`` is ``fp32``,
    ``bf16`` (autocast on CPU or GPU) or ``fp16`` (autocast with a gradient scaler; CUDA only). ``channels_last``
    stores the model and each batch in NHWC; ``compile`` trains through ``torch.compile``; ``sync_bn`` turns every
    BatchNorm into SyncBatchNorm in multi-process CUDA runs.

    ``prompt_kwargs`` are the click-training options of a click model (task ``"prompt"``; keys and defaults in
    :data:`pixelwise.prompt.click_training.PROMPT_DEFAULTS`: ``initial_clicks``, ``iterations``, ``loss``,
    ``val_max_clicks``, ``val_max_objects``); the resolved values are recorded. Runs of other tasks have none and do
    not write the key.
    """

    data: str = "synthetic"
    data_kwargs: dict = field(default_factory=dict)
    model: str = "unet"
    model_kwargs: dict = field(default_factory=dict)
    train_split: str = "train"
    val_split: str = "val"
    epochs: int | None = None
    steps: int | None = None
    batch_size: int | None = None
    eval_batch_size: int | None = None
    crop_size: tuple[int, int] = (256, 256)
    input_scale: float = 1.0
    scale_range: tuple[float, float] | None = None
    hflip: bool = True
    color_jitter: float = 0.2
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    optimizer: str | None = None
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    warmup_steps: int | None = None
    warmup_factor: float = 0.001
    grad_accum_steps: int = 1
    clip_grad_norm: float | None = None
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False
    class_weights: str | list[float] | None = None
    loss: str = "cross_entropy"
    loss_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    prompt_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    ignore_index: int = 255
    seed: int = 0
    num_workers: int = 0
    val_every: int = 1
    log_every: int = 1
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.epochs is None and self.steps is None:
            self.epochs = DEFAULT_EPOCHS
        self.task = self._model_task()
        for name, value in TASK_DEFAULTS[self.task].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.warmup_steps is None and self.steps is not None:
            self.warmup_steps = instance_warmup_steps(self.steps)
        if self.task == "prompt" and isinstance(self.prompt_kwargs, dict):
            from pixelwise.prompt.click_training import PROMPT_DEFAULTS

            self.prompt_kwargs = {**PROMPT_DEFAULTS, **self.prompt_kwargs}
        self.validate()

    def _model_task(self) -> str:
        """The task of ``model`` ("semantic", "instance" or "prompt"), from the model registry.

        Raises:
            ConfigError: ``model`` is not a registered model (the message lists them), or one of a task that
                ``pixelwise train`` does not train (the dense-regression models, built from Python for now).
        """
        from pixelwise.models import get_model_info

        task = get_model_info(self.model)["task"]
        if task not in TASK_DEFAULTS:
            raise ConfigError(f"{self.model} is a {task} model, which pixelwise train cannot train yet (it trains "
                              f"{', '.join(TASK_DEFAULTS)} models); build it from Python with "
                              f"pixelwise.models.build_model({self.model!r}, ...) and the losses of pixelwise.depth")
        return task

    def validate(self) -> None:
        """Raises ConfigError naming the bad value and what is accepted."""
        if self.epochs is not None and self.steps is not None:
            raise ConfigError("set either epochs or steps, not both")
        for name in ("epochs", "steps"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError("batch sizes must be >= 1")
        if len(self.crop_size) != 2 or min(self.crop_size) < 1:
            raise ConfigError(f"crop_size must be two positive integers H W, got {self.crop_size!r}")
        self.crop_size = (int(self.crop_size[0]), int(self.crop_size[1]))
        self.scale_range = (float(self.scale_range[0]), float(self.scale_range[1]))
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ConfigError(f"scale_range must satisfy 0 < low <= high, got {self.scale_range}")
        if not self.input_scale > 0:
            raise ConfigError(f"input_scale must be > 0, got {self.input_scale}")
        if self.warmup_steps is not None and (not isinstance(self.warmup_steps, int) or self.warmup_steps < 0):
            raise ConfigError(f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        if self.steps is not None and self.warmup_steps is not None and self.warmup_steps >= self.steps:
            raise ConfigError(f"warmup_steps ({self.warmup_steps}) must be smaller than steps ({self.steps})")
        if not 0 < self.warmup_factor <= 1:
            raise ConfigError(f"warmup_factor must be in (0, 1], got {self.warmup_factor!r}")
        if not isinstance(self.grad_accum_steps, int) or self.grad_accum_steps < 1:
            raise ConfigError(f"grad_accum_steps must be a positive integer, got {self.grad_accum_steps!r}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ConfigError(f"clip_grad_norm must be > 0 or null (no clipping), got {self.clip_grad_norm!r}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"precision must be 'fp32', 'bf16' or 'fp16', got {self.precision!r}")
        if isinstance(self.class_weights, str) and self.class_weights != "median-frequency":
            raise ConfigError(
                f"class_weights must be 'median-frequency', a list of K floats or null, got {self.class_weights!r}"
            )
        from pixelwise.losses import LOSSES

        unknown = [n for n in str(self.loss).split("+") if n.strip() not in LOSSES]
        if unknown:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)} or a sum such as 'cross_entropy+dice', "
                              f"got {self.loss!r}")
        if not isinstance(self.loss_kwargs, dict):
            raise ConfigError(f"loss_kwargs must be a mapping, got {self.loss_kwargs!r}")
        if not isinstance(self.data_kwargs, dict):
            raise ConfigError(f"data_kwargs must be a mapping, e.g. {{binary_threshold: 128}}, "
                              f"got {self.data_kwargs!r}")
        if not isinstance(self.model_kwargs, dict):
            raise ConfigError(f"model_kwargs must be a mapping, got {self.model_kwargs!r}")
        self._validate_prompt_kwargs()

    def _validate_prompt_kwargs(self) -> None:
        if not isinstance(self.prompt_kwargs, dict):
            raise ConfigError(f"prompt_kwargs must be a mapping, got {self.prompt_kwargs!r}")
        if self.task != "prompt":
            if self.prompt_kwargs:
                raise ConfigError(f"prompt_kwargs apply to click models (task prompt); {self.model} is a {self.task} "
                                  "model")
            return
        from pixelwise.prompt.click_training import PROMPT_DEFAULTS

        p = self.prompt_kwargs
        unknown = sorted(set(p) - set(PROMPT_DEFAULTS))
        if unknown:
            raise ConfigError(f"unknown prompt_kwargs {', '.join(unknown)}; known: {', '.join(PROMPT_DEFAULTS)}")
        for key, low in (("initial_clicks", 1), ("iterations", 0), ("val_max_clicks", 1)):
            if isinstance(p[key], bool) or not isinstance(p[key], int) or p[key] < low:
                raise ConfigError(f"prompt_kwargs.{key} must be an integer >= {low}, got {p[key]!r}")
        objects = p["val_max_objects"]
        if objects is not None and (isinstance(objects, bool) or not isinstance(objects, int) or objects < 1):
            raise ConfigError(f"prompt_kwargs.val_max_objects must be a positive integer or null (all), got "
                              f"{objects!r}")
        if p["loss"] not in ("normalized_focal", "bce"):
            raise ConfigError(f"prompt_kwargs.loss must be 'normalized_focal' or 'bce', got {p['loss']!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (lists, not tuples), so the dict survives YAML, JSON and ``weights_only`` loading."""
        out = dataclasses.asdict(self)
        if not out["prompt_kwargs"]:  # only click models have them; other runs' records stay as they were
            del out["prompt_kwargs"]
        for k, v in out.items():
            if isinstance(v, tuple):
                out[k] = list(v)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(
                f"unknown key(s) {', '.join(unknown)} in {source}; known keys: {', '.join(sorted(names))}"
            )
        values = dict(values)
        for k in ("crop_size", "scale_range", "mean", "std"):
            if values.get(k) is not None:
                values[k] = tuple(values[k])
        return cls(**values)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of key: value lines")
    return values


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` strings; values are parsed as YAML (``lr=0.1``, ``crop_size=[128,128]``,
    ``model_kwargs.base_channels=32`` sets one key of a mapping)."""
    values = dict(values)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({e})") from e
        if "." in key:
            head, sub = key.split(".", 1)
            inner = dict(values.get(head) or {})
            inner[sub] = value
            values[head] = inner
        else:
            values[key.strip()] = value
    return values
