"""Export a checkpoint for production: ONNX (onnxruntime, TensorRT, ...) or TorchScript, with dynamic batch,
height and width.

The exported graph is :class:`DeployModel`: it takes float32 images (N, C, H, W) with pixel values 0..255 (RGB, or
gray for 1-channel checkpoints), normalises them with the checkpoint's mean and std, resizes them by its
``input_scale``, runs the model, and returns float32 logits (N, K, H, W) at the input's size: ``argmax(1)`` gives
the class ids, ``softmax(1)`` the probabilities. Nothing else is needed to serve it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixelwise.engine.checkpoint import ModelCard
from pixelwise.engine.predictor import Predictor
from pixelwise.errors import ConfigError


class DeployModel(nn.Module):
    """A trained model with its preprocessing: float32 (N, C, H, W) pixel values 0..255 -> float32 logits
    (N, K, H, W). Bilinear resizing without antialiasing (which ONNX lacks) when ``input_scale`` != 1."""

    def __init__(self, model: nn.Module, mean, std, input_scale: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255)
        self.input_scale = float(input_scale)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = images.shape[-2:]
        x = (images - self.mean) / self.std
        if self.input_scale != 1.0:
            x = F.interpolate(x, scale_factor=self.input_scale, mode="bilinear", align_corners=False)
        logits = self.model(x)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def deploy_model(checkpoint: str | Path) -> tuple[DeployModel, ModelCard]:
    """The :class:`DeployModel` of a checkpoint (on the CPU, eval mode) and the checkpoint's :class:`ModelCard`."""
    predictor = Predictor.from_checkpoint(checkpoint, "cpu")
    card = predictor.card
    if card.task == "prompt":
        raise ConfigError(f"{checkpoint} holds a click model ({card.model}): export writes a semantic model's logits "
                          "graph from images alone, and a click model also takes clicks and its previous mask")
    if card.task != "semantic":
        raise ConfigError(
            f"{checkpoint} holds an instance model ({card.model}): export writes a semantic model's logits graph. "
            "Mask R-CNN's test-time path (proposal NMS, per-RoI mask pasting) exports to ONNX only at a fixed image "
            "size through torchvision's own route, which pixelwise does not wrap yet; use pixelwise predict"
        )
    return DeployModel(predictor.model, card.mean, card.std, card.input_scale).eval(), card


def export_model(checkpoint: str | Path, out: str | Path, fmt: str = "onnx",
                 example_size: tuple[int, int] = (256, 256), opset: int = 17) -> Path:
    """Write the checkpoint's :class:`DeployModel` to ``out`` as ONNX (``fmt="onnx"``, opset ``opset``, inputs
    ``images``, outputs ``logits``, dynamic batch/height/width) or TorchScript (``fmt="torchscript"``, traced).

    The graph is traced at ``example_size`` (H, W); other sizes work because shapes are traced symbolically (the
    models pad to their output stride in the graph itself). Check a file with :func:`onnx_parity`.

    Raises:
        ConfigError: an unknown format; CheckpointError: an unreadable checkpoint.
    """
    if fmt not in ("onnx", "torchscript"):
        raise ConfigError(f"export format must be 'onnx' or 'torchscript', got {fmt!r}")
    deploy, card = deploy_model(checkpoint)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(1, card.in_channels, *example_size) * 255
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape arithmetic is traced on purpose
        if fmt == "torchscript":
            torch.jit.trace(deploy, example).save(str(out))
        else:
            # The TorchScript-based exporter: it traces shape arithmetic symbolically, so the graph takes any
            # height and width, and it exports in a second where torch.export takes half a minute per model.
            torch.onnx.export(
                deploy, (example,), str(out), input_names=["images"], output_names=["logits"], opset_version=opset,
                dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"},
                              "logits": {0: "batch", 2: "height", 3: "width"}},
                dynamo=False,
            )
    return out


def onnx_parity(onnx_path: str | Path, deploy: nn.Module, images: torch.Tensor) -> dict:
    """Run ``images`` (float32 (N, C, H, W), 0..255) through onnxruntime and through ``deploy`` in PyTorch.

    Returns:
        ``{"max_abs_diff": float, "argmax_agreement": float in [0, 1]}`` over every logit and pixel.

    Raises:
        ConfigError: onnxruntime is not installed (``pip install onnxruntime``).
    """
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ConfigError("checking an ONNX file needs onnxruntime: pip install onnxruntime") from e
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return compare_logits(torch.from_numpy(session.run(["logits"], {"images": images.numpy()})[0]), deploy, images)


def compare_logits(ours: torch.Tensor, deploy: nn.Module, images: torch.Tensor) -> dict:
    """``{"max_abs_diff", "argmax_agreement"}`` of exported logits ``ours`` (N, K, H, W) against ``deploy(images)``."""
    with torch.no_grad():
        reference = deploy(images)
    return {
        "max_abs_diff": float((ours - reference).abs().max()),
        "argmax_agreement": float((ours.argmax(1) == reference.argmax(1)).float().mean()),
    }
