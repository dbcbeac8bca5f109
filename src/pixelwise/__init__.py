"""pixelwise: semantic segmentation as the field's canon teaches it — models, training, evaluation, prediction.

Public API::

    from pixelwise import build_model, list_models, SegmentationMetrics, load_checkpoint, TrainConfig, train
"""

from pixelwise.engine.checkpoint import load_checkpoint
from pixelwise.engine.config import TrainConfig
from pixelwise.engine.inference import evaluate, infer_logits, model_from_checkpoint
from pixelwise.engine.predict import predict_files
from pixelwise.engine.train import Trainer, train
from pixelwise.errors import CheckpointError, ConfigError, DatasetError, PixelwiseError
from pixelwise.metrics import SegmentationMetrics
from pixelwise.models import build_model, list_models

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "PixelwiseError",
    "SegmentationMetrics",
    "TrainConfig",
    "Trainer",
    "build_model",
    "evaluate",
    "infer_logits",
    "list_models",
    "load_checkpoint",
    "model_from_checkpoint",
    "predict_files",
    "train",
]
