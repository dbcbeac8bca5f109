"""Segmentation models, built by name through a timm-style registry.

>>> from pixelwise.models import build_model, list_models
>>> list_models("unet*")
['unet']
>>> model = build_model("unet", num_classes=2, base_channels=16)

Importing this package imports every model module, which registers its factories.
"""

from __future__ import annotations

from pixelwise.models.registry import (
    build_model,
    count_parameters,
    get_model_info,
    list_models,
    model_complexity,
    register_model,
)
# Importing each model module registers its factories.
from pixelwise.models import deconvnet as deconvnet  # noqa: F401
from pixelwise.models import deeplab as deeplab  # noqa: F401
from pixelwise.models import dilated as dilated  # noqa: F401
from pixelwise.models import encoder_unet as encoder_unet  # noqa: F401
from pixelwise.models import fcn as fcn  # noqa: F401
from pixelwise.models import fcn_head as fcn_head  # noqa: F401
from pixelwise.models import lraspp as lraspp  # noqa: F401
from pixelwise.models import maskrcnn as maskrcnn  # noqa: F401
from pixelwise.models import patch_classifier as patch_classifier  # noqa: F401
from pixelwise.models import segnet as segnet  # noqa: F401
from pixelwise.models import unet as unet  # noqa: F401
from pixelwise.models import click as click  # noqa: F401  (after the semantic models it wraps)
from pixelwise.models import dense as dense  # noqa: F401  (after the semantic models it wraps)
from pixelwise.models.unet import UNet

__all__ = [
    "build_model",
    "count_parameters",
    "get_model_info",
    "list_models",
    "model_complexity",
    "register_model",
    "UNet",
]
