"""A name -> factory registry for segmentation models, in the style of timm.

Each model module registers its model class itself, so a model's options are declared once, in its ``__init__``::

    @register_model("unet", paper="Ronneberger et al. ... MICCAI 2015", description="...")
    class UNet(nn.Module):
        def __init__(self, num_classes: int, in_channels: int = 3, base_channels: int = 64) -> None: ...

A variant that only fixes an argument registers a :func:`functools.partial`, whose fixed arguments are then no
options::

    register_model("fcn8s", paper=...)(functools.partial(FCN, variant=8))

Any other callable ``f(num_classes, in_channels=3, **options) -> nn.Module`` can be registered too. The rest of the
toolkit (config files, the command line) builds models by name::

    model = build_model("unet", num_classes=21, base_channels=32)

The options :func:`build_model` accepts are read from the registered callable's signature (a class's ``__init__``).

Every mistake a user can make in a config (unknown model, misspelt option, bad value) is raised as
:class:`pixelwise.errors.ConfigError` with a message that says what is accepted.
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pixelwise.errors import ConfigError, PixelwiseError

__all__ = [
    "register_model",
    "build_model",
    "list_models",
    "get_model_info",
    "count_parameters",
    "model_complexity",
]

ModelFactory = Callable[..., nn.Module]

# The arguments every factory takes positionally; the rest of its signature are the model's options.
_COMMON_ARGS = ("num_classes", "in_channels")


#: What a registered model predicts. "semantic": ``model(images) -> logits (N, K, H, W)``; "instance": torchvision's
#: detection contract (a list of (C, H, W) images in [0, 1] -> a list of dicts of boxes, labels, scores, masks);
#: "prompt": a click model, ``model(images, clicks (N, 2, H, W), prev_mask (N, 1, H, W)) -> logits (N, 1, H, W)``
#: (:mod:`pixelwise.models.click`); "depth", "normals", "depth+normals": dense regression,
#: ``model(images) -> {"depth": (N, 1, H, W) metres, "normals": (N, 3, H, W) unit}`` (:mod:`pixelwise.models.dense`).
TASKS = ("semantic", "instance", "prompt", "depth", "normals", "depth+normals")

#: Output channels fixed by a task, whatever ``num_classes`` a table of models asks for.
_TASK_OUTPUTS = {"prompt": 1, "depth": 1, "normals": 3, "depth+normals": 4}


@dataclass(frozen=True)
class _Entry:
    factory: ModelFactory
    paper: str
    description: str
    task: str


_REGISTRY: dict[str, _Entry] = {}


def register_model(name: str, *, paper: str, description: str = "", task: str = "semantic"
                   ) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator that registers a model under ``name``: an ``nn.Module`` class, a :func:`functools.partial` of one,
    or a factory function, called as ``f(num_classes, in_channels=3, **options) -> nn.Module``.

    Args:
        name: the name users write in configs, e.g. ``"unet"``.
        paper: citation of the paper that introduced the model.
        description: one line on what the model is; if empty, the first line of the class's or factory's docstring.
        task: what the model predicts, one of :data:`TASKS`.

    Returns:
        The decorator; it returns the class or factory unchanged, so it can still be used directly.

    Raises:
        ValueError: if ``name`` is already registered, ``task`` is unknown, or the callable does not take
            ``num_classes`` and ``in_channels`` as its first two parameters. These are programming errors, not config
            errors.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"a model named {name!r} is already registered ({_module_of(_REGISTRY[name].factory)})")
        params = list(inspect.signature(factory).parameters)
        if tuple(params[:2]) != _COMMON_ARGS:
            raise ValueError(
                f"factory {_qualname_of(factory)} for {name!r} must take (num_classes, in_channels, ...), got {params}"
            )
        summary = description or (inspect.getdoc(_unwrap(factory)) or "").split("\n", 1)[0]
        _REGISTRY[name] = _Entry(factory=factory, paper=paper, description=summary, task=task)
        return factory

    return decorator


def _unwrap(factory: ModelFactory) -> ModelFactory:
    """The class or function under any :func:`functools.partial` layers."""
    while isinstance(factory, functools.partial):
        factory = factory.func
    return factory


def _module_of(factory: ModelFactory) -> str:
    return getattr(_unwrap(factory), "__module__", "?")


def _qualname_of(factory: ModelFactory) -> str:
    return getattr(_unwrap(factory), "__qualname__", repr(factory))


def _fixed_options(factory: ModelFactory) -> set[str]:
    """Arguments a :func:`functools.partial` fixes by keyword: part of the registered name, not options."""
    fixed: set[str] = set()
    while isinstance(factory, functools.partial):
        fixed |= set(factory.keywords)
        factory = factory.func
    return fixed


def _get_entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(list_models()) or "(none registered)"
        raise ConfigError(f"unknown model {name!r}; known models: {known}") from None


def _accepted_options(factory: ModelFactory) -> list[str] | None:
    """The keyword options a model accepts beyond the common ones, read from its signature (a class's
    ``__init__``), less what a :func:`functools.partial` fixes; None if it takes ``**kwargs``."""
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    excluded = set(_COMMON_ARGS) | _fixed_options(factory)
    return sorted(
        p.name
        for p in params
        if p.name not in excluded
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    )


def build_model(name: str, num_classes: int, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name``.

    Args:
        name: a name from :func:`list_models`.
        num_classes: number of output classes (channels of the logits), at least 1.
        in_channels: channels of the input images, at least 1 (3 for RGB, 1 for grey).
        **kwargs: model options, e.g. ``base_channels=32`` for U-Net: the keyword arguments of the model class.

    Returns:
        The freshly initialised model (in train mode, on the CPU, float32).

    Raises:
        ConfigError: unknown ``name`` (the message lists the known ones), an option the model does not accept
            (the message names it and lists the accepted ones), ``num_classes`` or ``in_channels`` below 1, or an
            option value the model rejects.
    """
    entry = _get_entry(name)
    for arg, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        # bool is an int subclass; `num_classes=True` is always a config mistake.
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{arg} must be an integer >= 1, got {value!r}")

    accepted = _accepted_options(entry.factory)
    if accepted is not None:
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ConfigError(
                f"model {name!r} got unknown option(s) {', '.join(map(repr, unknown))}; "
                f"accepted options: {', '.join(accepted) or '(none)'}"
            )

    try:
        return entry.factory(num_classes, in_channels, **kwargs)
    except PixelwiseError:
        raise
    except ValueError as err:
        # Models validate their own arguments with ValueError; from a config these are the user's to fix.
        raise ConfigError(f"cannot build model {name!r}: {err}") from err


def list_models(filter: str = "", task: str | None = None) -> list[str]:
    """Sorted names of the registered models, optionally only those matching an fnmatch pattern like ``"unet*"``
    and only those of one ``task`` (see :data:`TASKS`)."""
    names = sorted(n for n, e in _REGISTRY.items() if task is None or e.task == task)
    if filter:
        names = [n for n in names if fnmatch.fnmatchcase(n, filter)]
    return names


def get_model_info(name: str) -> dict[str, str]:
    """``{"name", "paper", "description", "task"}`` of a registered model.

    Raises:
        ConfigError: if ``name`` is not registered.
    """
    entry = _get_entry(name)
    return {"name": name, "paper": entry.paper, "description": entry.description, "task": entry.task}


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters in ``model`` (BatchNorm running statistics are buffers and not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_complexity(
    name: str, num_classes: int = 21, in_channels: int = 3, size: tuple[int, int] = (512, 512), **kwargs: Any
) -> dict[str, int]:
    """Parameters and forward FLOPs of model ``name`` for one ``in_channels x size`` image.

    The model is built on PyTorch's ``meta`` device (shapes only, no memory, no arithmetic) and its forward pass
    is counted by :class:`torch.utils.flop_counter.FlopCounterMode`, which counts convolutions, transposed
    convolutions and matrix products at 2 FLOPs per multiply-add; element-wise work (BN, ReLU, pooling,
    interpolation) is not counted. Eval mode, batch size 1.

    Returns:
        ``{"params": int, "flops": int | None}``; ``params`` counts trainable parameters only (FCN's fixed bilinear
        upsampling is not a parameter in any useful sense). ``flops`` is None for an instance model, whose cost
        depends on how many regions it keeps. A click model (task ``"prompt"``) is counted with its one output
        and its three prompt channels (click disks, previous mask) beside the image; a dense regression model
        (tasks ``"depth"``, ``"normals"``, ``"depth+normals"``) with its 1, 3 or 4 output channels and the image.

    Raises:
        ConfigError: as :func:`build_model`.
    """
    # A click model has one output, the object, and a dense model its task's channels, whatever a table's other
    # models have.
    num_classes = _TASK_OUTPUTS.get(_get_entry(name).task, num_classes)
    with torch.device("meta"):
        model = build_model(name, num_classes, in_channels, **kwargs)
    if _get_entry(name).task == "instance":
        return {"params": count_parameters(model, trainable_only=True), "flops": None}
    model.eval()
    counter = FlopCounterMode(display=False)
    inputs = [torch.empty(1, in_channels, *size, device="meta")]
    if _get_entry(name).task == "prompt":  # the click disks and the previous mask beside the image
        inputs += [torch.empty(1, 2, *size, device="meta"), torch.empty(1, 1, *size, device="meta")]
    with counter, torch.no_grad():
        model(*inputs)
    return {"params": count_parameters(model, trainable_only=True), "flops": int(counter.get_total_flops())}
