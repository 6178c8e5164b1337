"""Optimiser, learning-rate schedules and the label-smoothed loss.

Notation: N tokens (flattened B * L), V vocabulary size.

Schedules are plain functions of the optimiser step (``step`` = number of updates already made) that
return a multiplier of the base learning rate; :func:`build_scheduler` wraps one in a
:class:`torch.optim.lr_scheduler.LambdaLR`, whose state is a small JSON-able dict.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

SCHEDULES = ("constant", "cosine", "inverse_sqrt")

# Module types whose weights are not decayed (besides every tensor with fewer than 2 dimensions).
_NO_DECAY_MODULES: tuple[type[nn.Module], ...] = (
    nn.Embedding,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split a model's trainable parameters into a decayed and a non-decayed group.

    Biases, normalisation weights (any parameter with fewer than 2 dimensions, or owned by a norm
    module) and embedding tables are not decayed; every other matrix is. A parameter shared between an
    embedding and an output projection (tied weights) counts once, as an embedding.

    Args:
        model: the network.
        weight_decay: decoupled weight decay of the decayed group.

    Returns:
        ``[{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]``
        with the parameters in ``model.named_parameters()`` order (deterministic for checkpoints).
    """
    no_decay_ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, _NO_DECAY_MODULES) or "norm" in type(module).__name__.lower():
            no_decay_ids.update(id(p) for p in module.parameters(recurse=False))
    decay, no_decay = [], []
    for _, p in model.named_parameters():  # de-duplicates shared (tied) parameters
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or id(p) in no_decay_ids else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-9,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` (defaults: the paper's beta2 = 0.98 and eps = 1e-9).

    Args:
        model: the network.
        lr: base learning rate (the schedule multiplies it).
        weight_decay: decay of weight matrices.
        betas: Adam betas.
        eps: Adam epsilon.
        fused: use the fused (single-kernel) AdamW; ``None`` picks it when every parameter is on CPU
            or CUDA and floating point.

    Returns:
        The optimiser.
    """
    if lr <= 0:
        raise ValueError(f"lr must be positive, got {lr}")
    groups = param_groups(model, weight_decay)
    if fused is None:
        params = [p for g in groups for p in g["params"]]
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)


def constant_schedule(step: int, *, warmup: int = 0) -> float:
    """Linear warm-up over ``warmup`` steps, then a constant multiplier of 1."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    return 1.0


def cosine_schedule(step: int, *, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then cosine decay to ``min_ratio`` at ``total``.

    Args:
        step: number of updates already made (the multiplier applies to update ``step + 1``).
        warmup: warm-up steps.
        total: step at which the decay reaches ``min_ratio`` (constant afterwards).
        min_ratio: final multiplier.

    Returns:
        The learning-rate multiplier.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if step >= total:
        return min_ratio
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + 0.5 * (1.0 - min_ratio) * (1.0 + math.cos(math.pi * progress))


def inverse_sqrt_schedule(step: int, *, d_model: int, warmup: int) -> float:
    """The Transformer paper's rate: ``d_model^-0.5 * min(n^-0.5, n * warmup^-1.5)`` with ``n = step + 1``.

    Multiply by a base learning rate of 1.0 to get the paper's absolute rate (or by a "factor", as in
    the Annotated Transformer).

    Args:
        step: number of updates already made.
        d_model: model width.
        warmup: warm-up steps (4000 in the paper).

    Returns:
        The learning-rate multiplier.
    """
    if d_model <= 0 or warmup <= 0:
        raise ValueError(f"inverse_sqrt needs d_model > 0 and warmup > 0, got {d_model} and {warmup}")
    n = step + 1
    return d_model**-0.5 * min(n**-0.5, n * warmup**-1.5)


def schedule_fn(
    name: str, *, warmup: int, total: int, d_model: int | None = None, min_ratio: float = 0.1
) -> Callable[[int], float]:
    """Look up a schedule by name (one of :data:`SCHEDULES`) with its arguments bound."""
    if name == "constant":
        return functools.partial(constant_schedule, warmup=warmup)
    if name == "cosine":
        return functools.partial(cosine_schedule, warmup=warmup, total=total, min_ratio=min_ratio)
    if name == "inverse_sqrt":
        if d_model is None:
            raise ValueError("the inverse_sqrt schedule needs d_model")
        return functools.partial(inverse_sqrt_schedule, d_model=d_model, warmup=warmup)
    raise ValueError(f"unknown schedule {name!r}; expected one of {SCHEDULES}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, fn: Callable[[int], float]
) -> torch.optim.lr_scheduler.LambdaLR:
    """Wrap a schedule function in a ``LambdaLR`` (``scheduler.step()`` once per optimiser step)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def label_smoothed_nll(
    logits: torch.Tensor, target: torch.Tensor, *, smoothing: float = 0.1, ignore_index: int = -100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed label-smoothed cross entropy and the number of counted (non-pad) tokens.

    The smoothed target puts ``1 - smoothing`` on the true class and spreads ``smoothing`` uniformly
    over all V classes (torch's ``label_smoothing`` convention).

    Args:
        logits: (..., V) unnormalised scores.
        target: (...) class ids; positions equal to ``ignore_index`` are skipped.
        smoothing: label smoothing in [0, 1).
        ignore_index: padding id.

    Returns:
        ``(loss_sum, n_tokens)``: two scalar tensors (float32 loss sum and int64 count); no host sync.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    if logits.shape[:-1] != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match")
    logp = F.log_softmax(logits.float().reshape(-1, logits.size(-1)), dim=-1)  # (N, V)
    target = target.reshape(-1)  # (N,)
    keep = target != ignore_index  # (N,)
    safe = torch.where(keep, target, torch.zeros_like(target))
    nll = -logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)  # (N,)
    loss = (1.0 - smoothing) * nll - smoothing * logp.mean(dim=-1) if smoothing > 0 else nll
    return (loss * keep).sum(), keep.sum()


def label_smoothed_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, *, smoothing: float = 0.1, ignore_index: int = -100
) -> torch.Tensor:
    """Mean of :func:`label_smoothed_nll` over non-pad tokens (0 when every token is padding).

    Args:
        logits: (..., V) unnormalised scores.
        target: (...) class ids.
        smoothing: label smoothing (0.1 in the paper).
        ignore_index: padding id.

    Returns:
        Scalar loss, equal to ``F.cross_entropy(..., label_smoothing=smoothing, ignore_index=...)``.
    """
    total, n = label_smoothed_nll(logits, target, smoothing=smoothing, ignore_index=ignore_index)
    return total / n.clamp(min=1)


def trainable_parameters(params: Iterable[nn.Parameter]) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in params if p.requires_grad)
