"""Attention modules: parameters and head split/merge around :mod:`qkv.functional.attention`.

Notation: B batch, L query length, S key length, D d_model, H heads, H_kv key/value heads, E head dim.
Module inputs/outputs are batch-first ``(B, L, D)``; inside, heads are ``(B, H, L, E)``.
Masks are bool, True = may attend, broadcastable to ``(B, H, L, S)``
(lift a ``(B, S)`` padding mask with :func:`qkv.functional.masks.padding_mask`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from qkv.functional.attention import scaled_dot_product_attention
from qkv.modules.attend import SoftmaxAttend
from qkv.modules.kv_cache import KVCache

__all__ = ["SelfAttention", "MultiHeadAttention", "CausalSelfAttention", "mask_from_torch"]

# A positional transform applied to (q, k) after projection, e.g. rotary embeddings:
# (q (B, H, L, E), k (B, H_kv, L_k, E), q_offset) -> (q, k).
QKTransform = Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


def _check_hidden(name: str, x: torch.Tensor, d: int) -> None:
    if x.dim() != 3 or x.shape[-1] != d:
        raise ValueError(f"{name} must have shape (B, L, {d}), got {tuple(x.shape)}")


class SelfAttention(nn.Module):
    """Single-head self-attention of the textbook: ``softmax(x W^Q (x W^K)^T / sqrt(d_head)) x W^V``.

    Args:
        d_model: input size D.
        d_head: size of queries, keys and values (default D).
    """

    def __init__(self, d_model: int, d_head: int | None = None, *, bias: bool = False) -> None:
        super().__init__()
        d_head = d_model if d_head is None else d_head
        if d_model < 1 or d_head < 1:
            raise ValueError(f"d_model ({d_model}) and d_head ({d_head}) must be >= 1")
        self.d_model, self.d_head = d_model, d_head
        self.w_q = nn.Linear(d_model, d_head, bias=bias)
        self.w_k = nn.Linear(d_model, d_head, bias=bias)
        self.w_v = nn.Linear(d_model, d_head, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x ``(B, L, D)`` -> ``(B, L, d_head)`` [and weights ``(B, L, L)``]."""
        _check_hidden("x", x, self.d_model)
        q, k, v = (w(x).unsqueeze(1) for w in (self.w_q, self.w_k, self.w_v))  # (B, 1, L, d_head)
        if mask is not None and mask.dim() == 3:
            mask = mask.unsqueeze(1)  # (B, L, S) -> (B, 1, L, S)
        res = scaled_dot_product_attention(q, k, v, mask=mask, causal=causal, return_weights=return_weights)
        if return_weights:
            out, w = res
            return out.squeeze(1), w.squeeze(1)
        return res.squeeze(1)


class MultiHeadAttention(nn.Module):
    """Multi-head attention: per-head ``W_i^Q, W_i^K, W_i^V``, scaled dot-product, concat, ``W^O``.

    Self-attention when ``context`` is None (one fused QKV projection), cross-attention otherwise
    (queries from ``x``, keys/values from ``context``, same parameters split in two). Grouped-query
    attention when ``num_kv_heads < num_heads``.

    Args:
        d_model: model size D.
        num_heads: query heads H; D must be divisible by H (E = D / H).
        num_kv_heads: key/value heads H_kv (default H); H must be a multiple of it.
        dropout: dropout on attention weights, active in training mode.
        bias: whether projections have biases.
        qk_transform: optional positional transform of (q, k), e.g. rotary embeddings.
        attend: the attention kernel on heads (default exact softmax); see :mod:`qkv.modules.attend`.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        *,
        num_kv_heads: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
        qk_transform: QKTransform | None = None,
        attend: nn.Module | None = None,
    ) -> None:
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_heads < 1 or d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        if num_kv_heads < 1 or num_heads % num_kv_heads:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.d_model, self.num_heads, self.num_kv_heads = d_model, num_heads, num_kv_heads
        self.head_dim = d_model // num_heads
        self.dropout = dropout
        self.qk_transform = qk_transform
        self.attend = SoftmaxAttend() if attend is None else attend
        kv_dim = num_kv_heads * self.head_dim
        self.in_proj = nn.Linear(d_model, d_model + 2 * kv_dim, bias=bias)  # [W^Q; W^K; W^V]
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)  # W^O

    def _split(self, t: torch.Tensor, heads: int) -> torch.Tensor:
        B, L, _ = t.shape
        return t.view(B, L, heads, self.head_dim).transpose(1, 2)  # (B, heads, L, E)

    def _project(self, x: torch.Tensor, context: torch.Tensor | None):
        D, kv_dim = self.d_model, self.num_kv_heads * self.head_dim
        if context is None:
            q, k, v = self.in_proj(x).split([D, kv_dim, kv_dim], dim=-1)  # (B, L, D), (B, L, kv_dim) x2
            return q, k, v
        w, b = self.in_proj.weight, self.in_proj.bias
        q = F.linear(x, w[:D], None if b is None else b[:D])  # (B, L, D)
        k, v = F.linear(context, w[D:], None if b is None else b[D:]).split([kv_dim, kv_dim], dim=-1)
        return q, k, v

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend from ``x (B, L, D)`` to itself or to ``context (B, S, D)``.

        Args:
            x: queries (and keys/values for self-attention), ``(B, L, D)``.
            context: keys/values for cross-attention, ``(B, S, D)``.
            mask: bool broadcastable to ``(B, H, L, S)``, True = may attend.
            bias: additive float scores broadcastable to ``(B, H, L, S)`` (ALiBi, relative positions).
            causal: lower-right aligned causal mask (correct with a cache, where S > L).
            cache: a :class:`KVCache`. Self-attention appends this step's keys/values to it;
                cross-attention fills it once from ``context`` and reuses it afterwards.
            return_weights: also return the weights ``(B, H, L, S)``.

        Returns:
            ``(B, L, D)``, or ``(out, weights)``.
        """
        _check_hidden("x", x, self.d_model)
        static = cache is not None and cache.static and cache.length > 0
        if context is not None and not static:
            _check_hidden("context", context, self.d_model)
            if context.shape[0] != x.shape[0]:
                raise ValueError(f"context batch {context.shape[0]} != x batch {x.shape[0]}")
        offset = 0 if cache is None or cache.static else cache.length
        if static:
            q = self._split(F.linear(x, *self._q_params()), self.num_heads)  # (B, H, L, E)
            k, v = cache.get()  # (B, H_kv, S, E)
        else:
            q, k, v = self._project(x, context)
            q = self._split(q, self.num_heads)  # (B, H, L, E)
            k, v = self._split(k, self.num_kv_heads), self._split(v, self.num_kv_heads)  # (B, H_kv, S, E)
            if self.qk_transform is not None and context is None:
                q, k = self.qk_transform(q, k, offset)
            if cache is not None:
                k, v = cache.update(k, v)
        res = self.attend(
            q, k, v, mask=mask, bias=bias, causal=causal,
            dropout_p=self.dropout if self.training else 0.0, return_weights=return_weights,
        )
        out, weights = res if return_weights else (res, None)
        B, _, L, _ = out.shape
        out = self.out_proj(out.transpose(1, 2).reshape(B, L, self.d_model))  # (B, L, D)
        return (out, weights) if return_weights else out

    def _q_params(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        b = self.in_proj.bias
        return self.in_proj.weight[: self.d_model], None if b is None else b[: self.d_model]

    @classmethod
    def from_torch(cls, m: nn.MultiheadAttention) -> MultiHeadAttention:
        """Build from a ``torch.nn.MultiheadAttention`` with identical weights (and outputs).

        Pair it with :func:`mask_from_torch` for torch-polarity masks.
        """
        if not m._qkv_same_embed_dim or m.bias_k is not None or m.add_zero_attn:
            raise ValueError("from_torch supports nn.MultiheadAttention with kdim == vdim == embed_dim, "
                             "no add_bias_kv and no add_zero_attn")
        has_bias = m.in_proj_bias is not None
        new = cls(m.embed_dim, m.num_heads, dropout=m.dropout, bias=has_bias)
        new = new.to(device=m.in_proj_weight.device, dtype=m.in_proj_weight.dtype)
        with torch.no_grad():
            new.in_proj.weight.copy_(m.in_proj_weight)
            new.out_proj.weight.copy_(m.out_proj.weight)
            if has_bias:
                new.in_proj.bias.copy_(m.in_proj_bias)
                new.out_proj.bias.copy_(m.out_proj.bias)
        return new


class CausalSelfAttention(MultiHeadAttention):
    """Masked (decoder) self-attention: :class:`MultiHeadAttention` with ``causal=True`` fixed."""

    def forward(self, x: torch.Tensor, *, mask=None, bias=None, cache=None, return_weights=False):  # noqa: D102
        return super().forward(x, mask=mask, bias=bias, causal=True, cache=cache, return_weights=return_weights)


def mask_from_torch(
    attn_mask: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Convert ``nn.MultiheadAttention`` masks (True = *blocked*, or additive floats) to qkv's convention.

    The one place in qkv that inverts mask polarity.

    Args:
        attn_mask: ``(L, S)`` or ``(B * H, L, S)`` bool (True = blocked) or float (added to scores).
            A 3-D mask is returned as ``(B, H, L, S)``, which needs ``key_padding_mask`` or the caller
            to know B; here it is reshaped with H inferred from ``key_padding_mask``'s batch when given.
        key_padding_mask: ``(B, S)`` bool, True = padding (ignored).

    Returns:
        ``(mask, bias)``: bool mask True = may attend, broadcastable to ``(B, H, L, S)``, and a float bias.
    """
    mask = bias = None
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool:
            raise ValueError(f"key_padding_mask must be bool, got {key_padding_mask.dtype}")
        mask = (~key_padding_mask)[:, None, None, :]  # (B, 1, 1, S)
    if attn_mask is not None:
        if attn_mask.dim() == 3:
            if key_padding_mask is None:
                raise ValueError("a 3-D (B*H, L, S) attn_mask needs key_padding_mask to tell B apart from H")
            B = key_padding_mask.shape[0]
            attn_mask = attn_mask.view(B, -1, *attn_mask.shape[-2:])  # (B, H, L, S)
        if attn_mask.dtype == torch.bool:
            allowed = ~attn_mask
            mask = allowed if mask is None else mask & allowed
        else:
            bias = attn_mask
    return mask, bias
