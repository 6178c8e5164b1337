"""Alignment scores of the RNN era: additive (Bahdanau) and dot/general (Luong).

Notation: B batch, L query steps, S source length, A attention hidden size, D feature size.
Scores are turned into weights with :func:`qkv.functional.attention.masked_softmax`.
"""

from __future__ import annotations

import torch

__all__ = ["additive_scores", "dot_scores"]


def additive_scores(q_proj: torch.Tensor, k_proj: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Bahdanau scores ``e_ij = v^T tanh(W s_i + U h_j)`` from projected queries and keys.

    Args:
        q_proj: ``W s``, shape ``(B, L, A)``.
        k_proj: ``U h``, shape ``(B, S, A)`` (computed once per source sequence).
        v: the scoring vector, shape ``(A,)``.

    Returns:
        scores ``(B, L, S)``.
    """
    if q_proj.dim() != 3 or k_proj.dim() != 3:
        raise ValueError(
            f"q_proj must be (B, L, A) and k_proj (B, S, A), got {tuple(q_proj.shape)}, {tuple(k_proj.shape)}"
        )
    if q_proj.shape[0] != k_proj.shape[0] or q_proj.shape[-1] != k_proj.shape[-1] or v.shape != q_proj.shape[-1:]:
        raise ValueError(
            f"shapes do not match: q_proj {tuple(q_proj.shape)}, k_proj {tuple(k_proj.shape)}, v {tuple(v.shape)};"
            " need (B, L, A), (B, S, A), (A,)"
        )
    hidden = torch.tanh(q_proj.unsqueeze(2) + k_proj.unsqueeze(1))  # (B, L, S, A)
    return torch.matmul(hidden, v)  # (B, L, S)


def dot_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Luong dot scores ``e_ij = s_i . h_j``: ``(B, L, D) x (B, S, D) -> (B, L, S)``."""
    if q.dim() != 3 or k.dim() != 3 or q.shape[0] != k.shape[0] or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q must be (B, L, D) and k (B, S, D) with equal B and D, got {tuple(q.shape)}, {tuple(k.shape)}"
        )
    return torch.matmul(q, k.transpose(1, 2))
