"""Small pieces of the training loop: the loss-as-module wrapper, device moves, seeding, lookups."""

from __future__ import annotations

import dataclasses
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


def map_tensors(batch: Any, fn: Callable[[torch.Tensor], Any], leaf: Callable[[Any], Any] | None = None) -> Any:
    """``batch`` with ``fn`` applied to every tensor inside tuples, lists, dicts, namedtuples and dataclasses
    (same types back); other objects go through ``leaf`` (default: returned as they are)."""
    def walk(b: Any) -> Any:
        if isinstance(b, torch.Tensor):
            return fn(b)
        if isinstance(b, dict):
            return {k: walk(v) for k, v in b.items()}
        if isinstance(b, tuple) and hasattr(b, "_fields"):  # namedtuple
            return type(b)(*(walk(v) for v in b))
        if isinstance(b, (list, tuple)):
            return type(b)(walk(v) for v in b)
        if dataclasses.is_dataclass(b) and not isinstance(b, type):
            return dataclasses.replace(b, **{f.name: walk(getattr(b, f.name)) for f in dataclasses.fields(b) if f.init})
        return b if leaf is None else leaf(b)

    return walk(batch)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move the tensors of ``batch`` (see :func:`map_tensors`), and other objects with ``.to()``, to ``device``."""
    return map_tensors(batch, lambda t: t.to(device, non_blocking=True),
                       leaf=lambda o: o.to(device) if callable(getattr(o, "to", None)) else o)


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
