"""trm_core: the TRM/HRM model, deep supervision, losses, optimisers, EMA and the Trainer.

Pure PyTorch: imports nothing from ray, mlflow, hydra, boto3 or `datasets`, and reads no files
but /proc/cpuinfo and the cached bf16 probe of `dtype=auto` on CPUs (trm_core.cpu).
"""

from trm_core.config import MODEL_PRESETS, TRAIN_PRESETS, ModelConfig, TrainConfig
from trm_core.evaluation import EvalHook, GroupedExactAccuracy
from trm_core.losses import IGNORE_LABEL
from trm_core.model import RecursiveReasoningModel, count_parameters
from trm_core.trainer import Trainer, TrainerCallback

__all__ = [
    "IGNORE_LABEL",
    "MODEL_PRESETS",
    "TRAIN_PRESETS",
    "EvalHook",
    "GroupedExactAccuracy",
    "ModelConfig",
    "RecursiveReasoningModel",
    "TrainConfig",
    "Trainer",
    "TrainerCallback",
    "count_parameters",
]
