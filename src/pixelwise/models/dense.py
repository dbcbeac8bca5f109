"""Dense regression models: a semantic encoder-decoder that regresses per-pixel depth, surface normals, or both.

The networks that label pixels regress them just as well: Eigen and Fergus, "Predicting Depth, Surface Normals and
Semantic Labels with a Common Multi-Scale Convolutional Architecture" (ICCV 2015), predict depth, normals and labels
with one architecture, changing only the output layer and the loss. :class:`DenseRegressionModel` does that with any
semantic model of the registry: the base is built with ``num_classes`` = 1 (depth), 3 (normals) or 4 (depth and
normals, which then share the whole network up to the last convolution) and its raw output is mapped to the
quantities:

* depth: channel 0 becomes metres, strictly positive, through ``depth_activation``:

  - ``"log"`` (the default): ``depth = min_depth + exp(x)``; the network regresses log-depth (Eigen, Puhrsch and
    Fergus, NeurIPS 2014; Eigen and Fergus, ICCV 2015). Chosen as the default because depth errors are relative:
    the benchmark metrics (AbsRel, delta < 1.25^k, SILog) and the scale-invariant log loss of
    :mod:`pixelwise.depth.losses` all measure ratios, and with ``exp`` a step ``dx`` of the output changes the
    depth by the same ratio ``e^dx`` near and far, so one learning rate suits a 0.5 m and a 10 m pixel alike (the
    silog loss is a plain quadratic in ``x``). Scenes span an order of magnitude or more of depth (0.5-10 m
    indoors, 1-80 m on KITTI) and log-depth gives every octave the same share of the output range. ``x`` is
    clamped at 30 (1e13 m) so that neither the depth nor its square (the L2 loss) overflows float32.
  - ``"softplus"``: ``depth = min_depth + softplus(x)``; linear in ``x`` for large depth (no ``exp``, nothing can
    overflow), the natural choice for losses on metres (L1, L2, berHu) whose gradient with ``exp`` grows with the
    depth.

  ``min_depth`` (1 mm) keeps the depth strictly positive even where ``exp`` or ``softplus`` underflows to 0 (a raw
  output of -1e4), so a log in a loss or a metric never meets 0.
* normals: channels 1-3 (0-2 for a normals-only model) become unit vectors, ``F.normalize(v, dim=1, eps=1e-6)``,
  in the camera coordinates of :mod:`pixelwise.depth` (x right, y down, z forward). A raw vector shorter than
  ``eps`` has no direction; it comes back as ``v / eps`` (the zero vector stays zero), which never happens with a
  trained or a freshly initialised network in practice.

Initial depth. The activation's argument is ``x = base(image)[:, :1] + offset`` with the constant
``offset = activation^-1(init_depth - min_depth)`` (3 m, a typical indoor depth, by default; use ~15 for KITTI), so
a network whose raw output is 0 predicts ``init_depth`` everywhere. To make the untrained network's raw output close
to 0, the depth channel of its output convolutions is re-initialised at construction: bias 0, weights scaled by
0.1 (they are not zeroed, so the gradient reaches every layer from the first step; Adam's updates do not depend on
the gradient's scale, so the smaller start hardly slows it). Without this a random output layer starts the depth
off by a random factor of e^(+-1) on a base such as ``encoder_unet`` (He-initialised head), and the first steps go
into undoing it. The offset is a constant, not a parameter (the output convolution's bias is the learnable shift),
so a depth model has exactly the parameters of its base with one output; it is not in the ``state_dict`` but
follows from ``init_depth``, which a checkpoint's ``model_kwargs`` record. "Output convolutions" are found in the
base: the ``nn.Conv2d`` layers with the model's number of output channels that are not followed (in registration
order) by a normalisation or an activation layer: U-Net's and the encoder U-Net's ``head``, DeepLabv3+'s last
decoder convolution, and FCN's three score layers (``score_fr``; ``score_pool4`` and ``score_pool3`` are zero
already).

Registered, for each base of :data:`DENSE_BASES`, as ``depth_<base>`` (task ``"depth"``), ``normals_<base>``
(task ``"normals"``) and ``depth_normals_<base>`` (task ``"depth+normals"``); each takes its base's options, the
depth models also ``depth_activation``, ``min_depth`` and ``init_depth``::

    model = build_model("depth_unet", 1, base_channels=32, init_depth=3.0)
    out = model(images)             # {"depth": (N, 1, H, W) metres}
    out = model(images, raw=True)   # also {"depth_raw": (N, 1, H, W)}, the activation's argument

``num_classes`` is fixed by the task (1, 3 or 4; it is the default) and any other value is refused.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixelwise.models.registry import _fixed_options, _get_entry, register_model

__all__ = ["DenseRegressionModel", "DENSE_BASES", "DENSE_OUTPUTS", "DEPTH_ACTIVATIONS"]

#: The semantic models registered as dense regression models (``depth_<base>``, ``normals_<base>``,
#: ``depth_normals_<base>``).
DENSE_BASES = ("unet", "encoder_unet", "deeplabv3plus", "fcn8s")

#: What a dense model predicts (its ``outputs``, also its registry task) -> the heads, in channel order.
DENSE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "depth": ("depth",),
    "normals": ("normals",),
    "depth+normals": ("depth", "normals"),
}

#: Channels of each head.
HEAD_CHANNELS = {"depth": 1, "normals": 3}

#: The depth parametrisations: the network's output x -> depth in metres (plus ``min_depth``).
DEPTH_ACTIVATIONS = ("log", "softplus")

_EIGEN_FERGUS = ("Eigen, Fergus. Predicting Depth, Surface Normals and Semantic Labels with a Common Multi-Scale "
                 "Convolutional Architecture. ICCV 2015")

# exp(30) = 1.1e13 m, and its square 1.1e26 is still finite in float32.
_LOG_CLAMP = 30.0
# The depth rows of the output convolutions start at this fraction of their initial weights (and bias 0).
_HEAD_GAIN = 0.1
_NORMAL_EPS = 1e-6

# Layers that make a convolution an inner one when they follow it.
_INNER_FOLLOWERS = (
    nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
    nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
)


def output_convolutions(model: nn.Module, channels: int) -> list[nn.Conv2d]:
    """The ``nn.Conv2d`` layers of ``model`` with ``channels`` outputs that no normalisation or activation layer
    follows in registration order (the next leaf module, if any, is something else): the layers whose output is
    the model's output, up to linear operations (upsampling, sums of skip scores, cropping)."""
    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    found = []
    for i, module in enumerate(leaves):
        if isinstance(module, nn.Conv2d) and module.out_channels == channels:
            following = leaves[i + 1] if i + 1 < len(leaves) else None
            if not isinstance(following, _INNER_FOLLOWERS):
                found.append(module)
    return found


def _inverse_activation(activation: str, value: float) -> float:
    """x with activation(x) = value (> 0)."""
    if activation == "log":
        return math.log(value)
    # softplus^-1(y) = log(e^y - 1) = y + log(1 - e^-y), stable for large y
    return value + math.log(-math.expm1(-value))


class DenseRegressionModel(nn.Module):
    """A semantic segmentation model turned into a dense regression model of depth and / or surface normals (Eigen
    and Fergus, ICCV 2015). See the module's documentation for the parametrisations and the initialisation.

    Args:
        base: the registered semantic model to build, e.g. ``"unet"``, ``"encoder_unet"``.
        outputs: ``"depth"``, ``"normals"`` or ``"depth+normals"`` (one shared network, 4 output channels).
        in_channels: C, channels of the images.
        depth_activation: ``"log"`` (default; depth = min_depth + exp(x)) or ``"softplus"`` (depth = min_depth +
            softplus(x)).
        min_depth: metres (> 0) added to every depth, its lower bound.
        init_depth: metres (> ``min_depth``): the depth an untrained model predicts (about; exactly where the raw
            output is 0).
        **base_options: the base model's options (``base_channels``, ``backbone``, ``backbone_weights``, ...).

    The depth options are checked but unused when ``outputs`` is ``"normals"``.

    Attributes:
        outputs: the heads, in channel order, e.g. ``("depth", "normals")``. num_outputs: channels of the base's
        output (1, 3 or 4). depth_offset: the constant added to the depth channel before the activation.
        base: the wrapped model.

    Shapes:
        ``forward(image (N, C, H, W) float, raw=False) -> dict``: ``"depth"`` (N, 1, H, W) metres, > min_depth;
        ``"normals"`` (N, 3, H, W) unit vectors; with ``raw=True`` also ``"depth_raw"`` (N, 1, H, W), the
        activation's argument x (log-depth with ``"log"``: a log-space loss can use it without taking the log of
        an exponential) and ``"normals_raw"`` (N, 3, H, W), the vectors before normalisation. The depth and its raw
        value are float32 for a float16 / bfloat16 input (the activation runs in float32, where exp and the
        losses' logs are safe), otherwise the input's dtype; the normals keep the base's output dtype. Any H, W
        the base accepts.

    Raises:
        ValueError: unknown ``outputs`` or ``depth_activation`` (the message lists the options), ``min_depth`` or
            ``init_depth`` out of range, an unknown or non-semantic base, or the base's own errors.
    """

    def __init__(self, base: str, outputs: str = "depth", in_channels: int = 3, depth_activation: str = "log",
                 min_depth: float = 1e-3, init_depth: float = 3.0, **base_options: Any) -> None:
        super().__init__()
        if outputs not in DENSE_OUTPUTS:
            raise ValueError(f"outputs must be one of {', '.join(map(repr, DENSE_OUTPUTS))}, got {outputs!r}")
        if depth_activation not in DEPTH_ACTIVATIONS:
            raise ValueError(f"depth_activation must be one of {', '.join(map(repr, DEPTH_ACTIVATIONS))}, got "
                             f"{depth_activation!r}")
        min_depth, init_depth = float(min_depth), float(init_depth)
        if not (math.isfinite(min_depth) and min_depth > 0):
            raise ValueError(f"min_depth must be a finite number of metres > 0, got {min_depth!r}")
        if not (math.isfinite(init_depth) and init_depth > min_depth):
            raise ValueError(f"init_depth must be a finite number of metres > min_depth ({min_depth}), got "
                             f"{init_depth!r}")
        entry = _get_entry(base)
        if entry.task != "semantic":
            raise ValueError(f"{base!r} is a {entry.task} model; a dense regression model wraps a semantic one")
        self.base_name = base
        self.task = outputs
        self.outputs = DENSE_OUTPUTS[outputs]
        self.num_outputs = sum(HEAD_CHANNELS[h] for h in self.outputs)
        self.image_channels = in_channels
        self.depth_activation = depth_activation
        self.min_depth = min_depth
        self.init_depth = init_depth
        self.depth_offset = _inverse_activation(depth_activation, init_depth - min_depth)
        self.base = entry.factory(self.num_outputs, in_channels, **base_options)
        if "depth" in self.outputs:
            with torch.no_grad():
                for conv in output_convolutions(self.base, self.num_outputs):
                    conv.weight[0].mul_(_HEAD_GAIN)
                    if conv.bias is not None:
                        conv.bias[0].zero_()

    def _depth(self, x: Tensor) -> Tensor:
        if self.depth_activation == "log":
            return torch.exp(x.clamp(max=_LOG_CLAMP)) + self.min_depth
        return F.softplus(x) + self.min_depth

    def forward(self, image: Tensor, raw: bool = False) -> dict[str, Tensor]:
        out = self.base(image)
        if out.dim() != 4 or out.shape[1] != self.num_outputs:
            raise RuntimeError(f"{self.base_name} returned {tuple(out.shape)}, expected (N, {self.num_outputs}, H, W)")
        result: dict[str, Tensor] = {}
        channel = 0
        for head in self.outputs:
            values = out[:, channel:channel + HEAD_CHANNELS[head]]
            channel += HEAD_CHANNELS[head]
            if head == "depth":
                if values.dtype in (torch.float16, torch.bfloat16):
                    values = values.float()
                x = values + self.depth_offset
                result["depth"] = self._depth(x)
                if raw:
                    result["depth_raw"] = x
            else:
                result["normals"] = F.normalize(values, dim=1, eps=_NORMAL_EPS)
                if raw:
                    result["normals_raw"] = values
        return result

    def extra_repr(self) -> str:
        depth = (f", depth_activation={self.depth_activation!r}, min_depth={self.min_depth}, "
                 f"init_depth={self.init_depth}") if "depth" in self.outputs else ""
        return f"base={self.base_name!r}, outputs={self.task!r}{depth}"


_DEPTH_OPTIONS = (
    inspect.Parameter("depth_activation", inspect.Parameter.KEYWORD_ONLY, default="log", annotation="str"),
    inspect.Parameter("min_depth", inspect.Parameter.KEYWORD_ONLY, default=1e-3, annotation="float"),
    inspect.Parameter("init_depth", inspect.Parameter.KEYWORD_ONLY, default=3.0, annotation="float"),
)

_PREFIXES = {"depth": "depth", "normals": "normals", "depth+normals": "depth_normals"}


def _signature(base_factory: Any, outputs: str) -> inspect.Signature:
    """The base's signature with ``num_classes`` defaulting to the task's channels, without the arguments a
    :func:`functools.partial` fixes (FCN's ``variant``), plus the depth options for a model that predicts depth."""
    fixed = _fixed_options(base_factory)
    channels = sum(HEAD_CHANNELS[h] for h in DENSE_OUTPUTS[outputs])
    params = []
    for p in inspect.signature(base_factory).parameters.values():
        if p.name in fixed:
            continue
        params.append(p.replace(default=channels) if p.name == "num_classes" else p)
    if "depth" in DENSE_OUTPUTS[outputs]:
        names = {p.name for p in params}
        clash = [p.name for p in _DEPTH_OPTIONS if p.name in names]
        if clash:
            raise ValueError(f"base options {clash} clash with the dense model's own")
        var_kw = [p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
        params = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD] + list(_DEPTH_OPTIONS) + var_kw
    return inspect.Signature(params)


def _register(base: str, outputs: str) -> None:
    info = _get_entry(base)
    channels = sum(HEAD_CHANNELS[h] for h in DENSE_OUTPUTS[outputs])
    name = f"{_PREFIXES[outputs]}_{base}"

    def factory(num_classes: int = channels, in_channels: int = 3, **options: Any) -> DenseRegressionModel:
        if num_classes != channels:
            raise ValueError(f"a {outputs} model has {channels} output channel(s): num_classes must be {channels}, "
                             f"got {num_classes}")
        return DenseRegressionModel(base, outputs, in_channels, **options)

    # The base's signature (and the depth options), so build_model checks them and `pixelwise models` shows them.
    factory.__signature__ = _signature(info.factory, outputs)  # type: ignore[attr-defined]
    factory.__doc__ = (f"{base} regressing {outputs} (Eigen & Fergus 2015); options: those of {base}"
                       + (", depth_activation, min_depth, init_depth" if "depth" in outputs else "")
                       + ".\n\nSee :class:`DenseRegressionModel`.")
    factory.__qualname__ = factory.__name__ = name
    register_model(name, paper=f"{info.paper}; {_EIGEN_FERGUS}",
                   description=f"{base} with a {outputs} head: image -> "
                               + " and ".join({"depth": "depth (m)", "normals": "unit normals"}[h]
                                              for h in DENSE_OUTPUTS[outputs]),
                   task=outputs)(factory)


for _base in DENSE_BASES:
    for _outputs in DENSE_OUTPUTS:
        _register(_base, _outputs)
