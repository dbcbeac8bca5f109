"""A name -> factory registry for segmentation models, in the style of timm.

Each model module registers plain factory functions::

    @register_model("unet", paper="Ronneberger et al. ... MICCAI 2015")
    def unet(num_classes: int, in_channels: int = 3, base_channels: int = 64) -> nn.Module:
        return UNet(num_classes, in_channels, base_channels=base_channels)

and the rest of the toolkit (config files, the command line) builds models by name::

    model = build_model("unet", num_classes=21, base_channels=32)

Every mistake a user can make in a config (unknown model, misspelt option, bad value) is raised as
:class:`pixelwise.errors.ConfigError` with a message that says what is accepted.
"""

from __future__ import annotations

import fnmatch
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


@dataclass(frozen=True)
class _Entry:
    factory: ModelFactory
    paper: str
    description: str


_REGISTRY: dict[str, _Entry] = {}


def register_model(name: str, *, paper: str, description: str = "") -> Callable[[ModelFactory], ModelFactory]:
    """Decorator that registers a factory ``f(num_classes, in_channels=3, **options) -> nn.Module`` under ``name``.

    Args:
        name: the name users write in configs, e.g. ``"unet"``.
        paper: citation of the paper that introduced the model.
        description: one line on what the model is.

    Returns:
        The decorator; it returns the factory unchanged, so the factory can still be called directly.

    Raises:
        ValueError: if ``name`` is already registered, or the factory does not take ``num_classes`` and
            ``in_channels`` as its first two parameters. These are programming errors, not config errors.
    """

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"a model named {name!r} is already registered ({_REGISTRY[name].factory.__module__})")
        params = list(inspect.signature(factory).parameters)
        if tuple(params[:2]) != _COMMON_ARGS:
            raise ValueError(
                f"factory {factory.__qualname__} for {name!r} must take (num_classes, in_channels, ...), got {params}"
            )
        _REGISTRY[name] = _Entry(factory=factory, paper=paper, description=description)
        return factory

    return decorator


def _get_entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(list_models()) or "(none registered)"
        raise ConfigError(f"unknown model {name!r}; known models: {known}") from None


def _accepted_options(factory: ModelFactory) -> list[str] | None:
    """The keyword options a factory accepts beyond the common ones, or None if it takes ``**kwargs``."""
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return sorted(
        p.name
        for p in params
        if p.name not in _COMMON_ARGS
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    )


def build_model(name: str, num_classes: int, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name``.

    Args:
        name: a name from :func:`list_models`.
        num_classes: number of output classes (channels of the logits), at least 1.
        in_channels: channels of the input images, at least 1 (3 for RGB, 1 for grey).
        **kwargs: model options, e.g. ``base_channels=32`` for U-Net; see the factory's signature.

    Returns:
        The freshly initialised model (in train mode, on the CPU, float32).

    Raises:
        ConfigError: unknown ``name`` (the message lists the known ones), an option the factory does not accept
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


def list_models(filter: str = "") -> list[str]:
    """Sorted names of the registered models, optionally only those matching an fnmatch pattern like ``"unet*"``."""
    names = sorted(_REGISTRY)
    if filter:
        names = [n for n in names if fnmatch.fnmatchcase(n, filter)]
    return names


def get_model_info(name: str) -> dict[str, str]:
    """``{"name", "paper", "description"}`` of a registered model.

    Raises:
        ConfigError: if ``name`` is not registered.
    """
    entry = _get_entry(name)
    return {"name": name, "paper": entry.paper, "description": entry.description}


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
        ``{"params": int, "flops": int}``; ``params`` counts trainable parameters only (FCN's fixed bilinear
        upsampling is not a parameter in any useful sense).

    Raises:
        ConfigError: as :func:`build_model`.
    """
    with torch.device("meta"):
        model = build_model(name, num_classes, in_channels, **kwargs)
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.empty(1, in_channels, *size, device="meta"))
    return {"params": count_parameters(model, trainable_only=True), "flops": int(counter.get_total_flops())}
