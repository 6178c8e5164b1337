"""Perplexity from a summed negative log-likelihood and a token count.

Notation: B batch, L sequence length, V vocabulary size.

Perplexity is ``exp(total NLL / number of tokens)`` with the NLL in nats. Sum the NLL over the whole
corpus first and divide once: averaging per-batch perplexities (or per-batch mean losses of batches
with different token counts) gives a different, wrong number.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def perplexity(nll_sum: float | torch.Tensor, num_tokens: int | torch.Tensor) -> float:
    """``exp(nll_sum / num_tokens)``; ``inf`` when the mean NLL is past float range.

    Args:
        nll_sum: summed negative log-likelihood in nats over all scored tokens (>= 0).
        num_tokens: number of scored tokens (> 0).

    Returns:
        The perplexity as a Python float.

    Raises:
        ValueError: when ``num_tokens <= 0`` or ``nll_sum`` is negative or not finite.
    """
    total, count = float(nll_sum), float(num_tokens)
    if count <= 0 or count != int(count):
        raise ValueError(f"num_tokens must be a positive whole number, got {num_tokens}")
    if not math.isfinite(total) or total < 0:
        raise ValueError(f"nll_sum must be finite and >= 0, got {total}")
    mean = total / count
    return math.exp(mean) if mean < 709.0 else math.inf


def nll_sum(logits: torch.Tensor, targets: torch.Tensor, *, ignore_index: int | None = None) -> tuple[float, int]:
    """Summed token NLL and the number of scored tokens, ready for :func:`perplexity`.

    Args:
        logits: ``(B, L, V)`` or ``(N, V)`` unnormalised scores.
        targets: ``(B, L)`` or ``(N,)`` token ids.
        ignore_index: target id that is not scored (padding), or ``None`` to score every position.

    Returns:
        ``(sum of -log p(target) in nats, number of scored tokens)``; accumulate both over batches.

    Raises:
        ValueError: when the shapes do not line up.
    """
    if logits.dim() < 2 or logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} must be targets {tuple(targets.shape)} plus a vocabulary dimension"
        )
    flat_logits = logits.reshape(-1, logits.shape[-1]).float()  # (N, V)
    flat_targets = targets.reshape(-1)  # (N,)
    index = -100 if ignore_index is None else ignore_index
    total = F.cross_entropy(flat_logits, flat_targets, ignore_index=index, reduction="sum")
    count = int((flat_targets != index).sum()) if ignore_index is not None else flat_targets.numel()
    return float(total), count
