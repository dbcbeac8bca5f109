"""pixelwise: semantic segmentation as the field's canon teaches it — models, training, evaluation, prediction.

Public API::

    from pixelwise import build_model, list_models, SegmentationMetrics, TrainConfig, train
    from pixelwise import Predictor, ModelCard, load_checkpoint
"""

from pixelwise.engine.checkpoint import Checkpoint, ModelCard, load_checkpoint
from pixelwise.engine.config import TrainConfig
from pixelwise.engine.inference import InferenceOptions, evaluate, infer_logits
from pixelwise.engine.predict import predict_files
from pixelwise.engine.predictor import Predictor, SemanticResult
from pixelwise.engine.train import Trainer, train
from pixelwise.errors import CheckpointError, ConfigError, DatasetError, PixelwiseError
from pixelwise.metrics import SegmentationMetrics
from pixelwise.models import build_model, list_models

__version__ = "0.1.0"

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "InferenceOptions",
    "ModelCard",
    "PixelwiseError",
    "Predictor",
    "SegmentationMetrics",
    "SemanticResult",
    "TrainConfig",
    "Trainer",
    "build_model",
    "evaluate",
    "infer_logits",
    "list_models",
    "load_checkpoint",
    "predict_files",
    "train",
]
