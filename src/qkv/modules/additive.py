"""Attention of the RNN encoder-decoder: additive (Bahdanau) and multiplicative (Luong).

Notation: B batch, L query steps (decoder states), S source length, Dq query size, Dk key size,
A attention hidden size. A query may be one decoder state ``(B, Dq)`` or several ``(B, L, Dq)``.
Both classes share one forward: scores -> masked softmax -> context ``c_i = sum_j alpha_ij h_j``.
"""

from __future__ import annotations

import torch
from torch import nn

from qkv.functional.additive import additive_scores, dot_scores
from qkv.functional.attention import masked_softmax

__all__ = ["AdditiveAttention", "LuongAttention"]


class _AlignmentAttention(nn.Module):
    """Base: subclasses define ``project_keys(keys (B, S, Dk)) -> (B, S, A)`` (done once per source)
    and ``score(query (B, L, Dq), keys_proj (B, S, A)) -> (B, L, S)``."""

    query_dim: int
    key_dim: int

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        return keys

    def score(self, query: torch.Tensor, keys_proj: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
        keys_proj: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Context vectors and alignment weights.

        Args:
            query: ``(B, Dq)`` or ``(B, L, Dq)`` decoder state(s).
            keys: ``(B, S, Dk)`` encoder annotations h_j.
            values: ``(B, S, Dv)``, default ``keys``.
            mask: ``(B, S)`` bool, True = real source token.
            keys_proj: :meth:`project_keys` of ``keys``, cached by a decoder across steps.

        Returns:
            ``context (B, [L,] Dv)`` and ``weights (B, [L,] S)``, summing to 1 over unmasked keys.
        """
        single = query.dim() == 2
        q = query.unsqueeze(1) if single else query  # (B, L, Dq)
        values = keys if values is None else values
        if q.dim() != 3 or q.shape[-1] != self.query_dim:
            raise ValueError(
                f"query must be (B, {self.query_dim}) or (B, L, {self.query_dim}), got {tuple(query.shape)}"
            )
        if keys.dim() != 3 or keys.shape[-1] != self.key_dim or keys.shape[0] != q.shape[0]:
            raise ValueError(f"keys must be (B={q.shape[0]}, S, {self.key_dim}), got {tuple(keys.shape)}")
        if values.shape[:2] != keys.shape[:2]:
            raise ValueError(f"values {tuple(values.shape)} must match keys {tuple(keys.shape)} on (B, S)")
        if mask is not None and (mask.dtype != torch.bool or mask.shape != keys.shape[:2]):
            raise ValueError(
                f"mask must be bool (B, S) = {tuple(keys.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}"
            )
        keys_proj = self.project_keys(keys) if keys_proj is None else keys_proj
        scores = self.score(q, keys_proj)  # (B, L, S)
        weights = masked_softmax(scores, None if mask is None else mask.unsqueeze(1))  # (B, L, S)
        context = torch.bmm(weights, values)  # (B, L, Dv)
        if single:
            return context.squeeze(1), weights.squeeze(1)
        return context, weights


class AdditiveAttention(_AlignmentAttention):
    """Bahdanau attention: ``e_ij = v^T tanh(W s_i + U h_j)``, ``alpha = softmax_j(e)``, ``c_i = sum_j alpha_ij h_j``.

    Pass ``keys_proj=project_keys(h)`` computed once per source to skip recomputing ``U h`` at every
    decoder step.
    """

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int) -> None:
        super().__init__()
        if min(query_dim, key_dim, hidden_dim) < 1:
            raise ValueError(
                f"sizes must be >= 1, got query_dim={query_dim}, key_dim={key_dim}, hidden_dim={hidden_dim}"
            )
        self.query_dim, self.key_dim, self.hidden_dim = query_dim, key_dim, hidden_dim
        self.w_query = nn.Linear(query_dim, hidden_dim, bias=False)  # W
        self.w_key = nn.Linear(key_dim, hidden_dim, bias=True)  # U (+ bias)
        self.v = nn.Parameter(torch.empty(hidden_dim))
        nn.init.uniform_(self.v, -hidden_dim**-0.5, hidden_dim**-0.5)

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """``U h`` for a whole source: ``(B, S, Dk) -> (B, S, A)``."""
        return self.w_key(keys)

    def score(self, query: torch.Tensor, keys_proj: torch.Tensor) -> torch.Tensor:
        return additive_scores(self.w_query(query), keys_proj, self.v)


class LuongAttention(_AlignmentAttention):
    """Luong attention: ``e_ij = s_i . h_j`` (``method="dot"``) or ``s_i . W h_j`` (``method="general"``)."""

    def __init__(self, query_dim: int, key_dim: int | None = None, *, method: str = "general") -> None:
        super().__init__()
        key_dim = query_dim if key_dim is None else key_dim
        if method not in ("dot", "general"):
            raise ValueError(f"method must be 'dot' or 'general', got {method!r}")
        if method == "dot" and key_dim != query_dim:
            raise ValueError(f"dot scores need query_dim == key_dim, got {query_dim} and {key_dim}")
        self.query_dim, self.key_dim, self.method = query_dim, key_dim, method
        self.w = nn.Linear(key_dim, query_dim, bias=False) if method == "general" else None

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        return keys if self.w is None else self.w(keys)  # (B, S, Dq)

    def score(self, query: torch.Tensor, keys_proj: torch.Tensor) -> torch.Tensor:
        return dot_scores(query, keys_proj)
