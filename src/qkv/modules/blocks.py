"""Transformer blocks and stacks: attention and feed-forward sublayers with residuals and LayerNorm.

Notation: B batch, L target/query length, S source/key length, D d_model, H heads.

Each sublayer is wrapped as in the paper (``norm_first=False``, post-LN):
``x = norm(x + dropout(sublayer(x)))``, or pre-LN (``norm_first=True``):
``x = x + dropout(sublayer(norm(x)))``. Blocks receive their attention and feed-forward modules
ready-made (compose, don't flag); masks are bool, True = may attend, broadcastable to ``(B, H, L, S)``.
Attention weights are returned when asked for, never stored on the module.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from qkv.modules.attention import MultiHeadAttention
from qkv.modules.kv_cache import KVCache

__all__ = ["EncoderBlock", "DecoderBlock", "EncoderStack", "DecoderStack", "LayerCache"]


class LayerCache(NamedTuple):
    """Per-layer caches of an encoder-decoder: self-attention (grows) and cross-attention (static)."""

    self_attn: KVCache
    cross_attn: KVCache | None = None


class _Residual(nn.Module):
    """One sublayer connection: its LayerNorm, its dropout and the pre/post-norm arrangement."""

    def __init__(self, d_model: int, *, norm_first: bool, dropout: float, norm_eps: float) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.norm = nn.LayerNorm(d_model, eps=norm_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, sublayer, return_weights: bool = False):
        """``sublayer(x') -> y`` or ``(y, weights)``; returns the new x (and the weights)."""
        res = sublayer(self.norm(x) if self.norm_first else x)
        y, w = res if return_weights else (res, None)
        out = x + self.dropout(y)
        out = out if self.norm_first else self.norm(out)
        return (out, w) if return_weights else out


class EncoderBlock(nn.Module):
    """Self-attention then feed-forward, each with a residual connection and LayerNorm.

    Args:
        self_attn: a :class:`MultiHeadAttention` (its ``d_model`` sets D).
        ff: the position-wise feed-forward module, ``(B, L, D) -> (B, L, D)``.
        norm_first: False = post-LN as in the paper, True = pre-LN.
        dropout: dropout on each sublayer output before the residual sum.
        norm_eps: LayerNorm epsilon (1e-5 in torch and GPT-2, 1e-12 in BERT).
    """

    def __init__(
        self,
        self_attn: MultiHeadAttention,
        ff: nn.Module,
        *,
        norm_first: bool = False,
        dropout: float = 0.0,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        d = self_attn.d_model
        self.self_attn, self.ff = self_attn, ff
        self.attn_sub = _Residual(d, norm_first=norm_first, dropout=dropout, norm_eps=norm_eps)
        self.ff_sub = _Residual(d, norm_first=norm_first, dropout=dropout, norm_eps=norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Encode ``x (B, L, D)``.

        Args:
            x: ``(B, L, D)``.
            mask: bool broadcastable to ``(B, H, L, L)``, e.g. a ``(B, 1, 1, L)`` padding mask.
            bias: additive scores broadcastable to ``(B, H, L, L)`` (ALiBi).
            return_weights: also return the self-attention weights ``(B, H, L, L)``.

        Returns:
            ``(B, L, D)``, or ``(out, weights)``.
        """

        def attend(h):
            return self.self_attn(h, mask=mask, bias=bias, return_weights=return_weights)

        res = self.attn_sub(x, attend, return_weights)
        x, w = res if return_weights else (res, None)
        x = self.ff_sub(x, self.ff)
        return (x, w) if return_weights else x


class DecoderBlock(nn.Module):
    """Masked self-attention, optional cross-attention over encoder memory, then feed-forward.

    Without ``cross_attn`` this is the GPT block (decoder-only); with it, the decoder layer of the
    paper. Self-attention is always causal (lower-right aligned, so it stays right with a cache).

    Args:
        self_attn: self-attention module (D from its ``d_model``).
        ff: feed-forward module.
        cross_attn: attention from the target to the encoder memory, or None.
        norm_first: False = post-LN, True = pre-LN.
        dropout: dropout on each sublayer output.
        norm_eps: LayerNorm epsilon.
    """

    def __init__(
        self,
        self_attn: MultiHeadAttention,
        ff: nn.Module,
        *,
        cross_attn: MultiHeadAttention | None = None,
        norm_first: bool = False,
        dropout: float = 0.0,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        d = self_attn.d_model
        kw = dict(norm_first=norm_first, dropout=dropout, norm_eps=norm_eps)
        self.self_attn, self.cross_attn, self.ff = self_attn, cross_attn, ff
        self.self_sub = _Residual(d, **kw)
        self.cross_sub = _Residual(d, **kw) if cross_attn is not None else None
        self.ff_sub = _Residual(d, **kw)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        *,
        self_mask: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        cache: KVCache | None = None,
        cross_cache: KVCache | None = None,
        return_weights: bool = False,
    ):
        """Decode ``x (B, L, D)``, attending causally to itself and (if built so) to ``memory (B, S, D)``.

        Args:
            x: ``(B, L, D)``.
            memory: encoder output ``(B, S, D)``; required with ``cross_attn`` unless ``cross_cache`` is filled.
            self_mask: bool broadcastable to ``(B, H, L, S_self)`` (target padding), combined with causal.
            memory_mask: bool broadcastable to ``(B, H, L, S)`` (source padding).
            bias: additive self-attention scores (ALiBi) ``(1|B, H, L, S_self)``.
            cache: self-attention :class:`KVCache` (appended to).
            cross_cache: static cross-attention cache (filled from ``memory`` once).
            return_weights: also return ``{"self": (B, H, L, S_self), "cross": (B, H, L, S) or None}``.

        Returns:
            ``(B, L, D)``, or ``(out, weights)``.
        """
        rw = return_weights

        def self_attend(h):
            return self.self_attn(h, mask=self_mask, bias=bias, causal=True, cache=cache, return_weights=rw)

        res = self.self_sub(x, self_attend, rw)
        x, w_self = res if rw else (res, None)
        w_cross = None
        if self.cross_attn is not None:
            if memory is None and (cross_cache is None or cross_cache.length == 0):
                raise ValueError("this DecoderBlock has cross-attention: pass memory (B, S, D) or a filled cross_cache")

            def cross_attend(h):
                return self.cross_attn(h, memory, mask=memory_mask, cache=cross_cache, return_weights=rw)

            res = self.cross_sub(x, cross_attend, rw)
            x, w_cross = res if rw else (res, None)
        x = self.ff_sub(x, self.ff)
        return (x, {"self": w_self, "cross": w_cross}) if rw else x


class EncoderStack(nn.Module):
    """N encoder blocks and an optional final LayerNorm (needed after pre-LN blocks)."""

    def __init__(self, layers: list[EncoderBlock], norm: nn.Module | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = norm

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """``(B, L, D) -> (B, L, D)``, or ``(out, [weights (B, H, L, L) per layer])``."""
        weights = []
        for layer in self.layers:
            res = layer(x, mask=mask, bias=bias, return_weights=return_weights)
            if return_weights:
                x, w = res
                weights.append(w)
            else:
                x = res
        if self.norm is not None:
            x = self.norm(x)
        return (x, weights) if return_weights else x


class DecoderStack(nn.Module):
    """N decoder blocks and an optional final LayerNorm."""

    def __init__(self, layers: list[DecoderBlock], norm: nn.Module | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = norm

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        *,
        self_mask: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        caches: list[LayerCache] | list[KVCache] | None = None,
        return_weights: bool = False,
    ):
        """``(B, L, D) -> (B, L, D)``, or ``(out, {"self": [...], "cross": [...]})`` with one entry per layer.

        ``caches`` holds one entry per layer: a :class:`KVCache` (decoder-only) or a :class:`LayerCache`.
        """
        if caches is not None and len(caches) != len(self.layers):
            raise ValueError(f"caches has {len(caches)} entries, need one per layer ({len(self.layers)})")
        weights = {"self": [], "cross": []}
        for i, layer in enumerate(self.layers):
            c = None if caches is None else caches[i]
            self_c, cross_c = (c.self_attn, c.cross_attn) if isinstance(c, LayerCache) else (c, None)
            res = layer(
                x, memory, self_mask=self_mask, memory_mask=memory_mask, bias=bias,
                cache=self_c, cross_cache=cross_c, return_weights=return_weights,
            )
            if return_weights:
                x, w = res
                weights["self"].append(w["self"])
                weights["cross"].append(w["cross"])
            else:
                x = res
        if self.norm is not None:
            x = self.norm(x)
        return (x, weights) if return_weights else x
