"""Small pieces of the training loop: the loss-as-module wrapper, device moves, seeding, lookups."""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.attention import SDPBackend

from qkv import hardware
from qkv.training.distributed import default_device

LossFn = Callable[[nn.Module, Any], tuple[torch.Tensor, "torch.Tensor | int"]]

SDPA_BACKENDS = {
    "math": SDPBackend.MATH,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
}


class LossModule(nn.Module):
    """``model`` + ``loss_fn`` as one module, so DDP and ``torch.compile`` see the whole step."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor | int]:
        return self.loss_fn(self.model, batch)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move tensors inside tuples, lists, dicts and objects with ``.to()`` to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and not hasattr(batch, "_fields"):
        return type(batch)(to_device(v, device) for v in batch)
    if isinstance(batch, tuple):  # namedtuple
        return type(batch)(*(to_device(v, device) for v in batch))
    if hasattr(batch, "to") and callable(batch.to):
        return batch.to(device)
    return batch


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and Python ``random``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def accepts_skip(data: Any) -> bool:
    """Whether ``data.set_epoch`` takes ``skip=`` (qkv loaders: start an epoch after its first batches)."""
    fn = getattr(data, "set_epoch", None)
    if fn is None:
        return False
    try:
        return "skip" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> the GPU if there is one, else CPU; any other name as ``torch.device``.

    Raises:
        ValueError: an unknown device, or one this machine does not have (``train.device=cuda`` without CUDA).
    """
    if name == "auto":
        return default_device()
    try:
        return hardware.resolve_device(name)
    except ValueError as e:
        raise ValueError(f"train.device: {e}") from e
