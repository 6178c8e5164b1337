"""Training: optimiser and schedules, the loop, checkpoints, averaging, data parallelism."""

from qkv.training.average import average_checkpoints, average_last, list_checkpoints, write_averaged
from qkv.training.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    load_weights,
    read_config,
    save_checkpoint,
)
from qkv.training.config import TrainConfig
from qkv.training.distributed import DistInfo, Sharded, cleanup, init_distributed, wrap_model
from qkv.training.loop import Trainer, TrainResult, seed_everything
from qkv.training.losses import classification_loss, lm_loss, loss_for, seq2seq_loss
from qkv.training.optim import (
    build_optimizer,
    build_scheduler,
    cosine_schedule,
    inverse_sqrt_schedule,
    label_smoothed_cross_entropy,
    label_smoothed_nll,
    param_groups,
    schedule_fn,
)

__all__ = [
    "TrainConfig",
    "Trainer",
    "TrainResult",
    "seed_everything",
    "loss_for",
    "lm_loss",
    "seq2seq_loss",
    "classification_loss",
    "build_optimizer",
    "build_scheduler",
    "param_groups",
    "schedule_fn",
    "cosine_schedule",
    "inverse_sqrt_schedule",
    "label_smoothed_cross_entropy",
    "label_smoothed_nll",
    "save_checkpoint",
    "load_checkpoint",
    "load_weights",
    "read_config",
    "Checkpoint",
    "CheckpointError",
    "average_checkpoints",
    "average_last",
    "write_averaged",
    "list_checkpoints",
    "DistInfo",
    "Sharded",
    "init_distributed",
    "wrap_model",
    "cleanup",
]
