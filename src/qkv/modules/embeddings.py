"""Input embeddings: tokens, absolute positions (sinusoidal, learned), segments, rotary and ALiBi.

Notation: B batch, L sequence length, S key length, D d_model, V vocabulary, P positional table
length, H heads, E head dim.

Absolute position modules map positions ``(L,)`` or ``(B, L)`` to ``(1|B, L, D)`` and are summed
with token (and segment) embeddings by :class:`InputEmbedding`. Rotary embeddings act on queries and
keys inside attention (pass a :class:`RotaryEmbedding` as ``qk_transform``); ALiBi adds a score bias.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from qkv.functional.positional import alibi_bias, alibi_slopes, apply_rotary, rotary_tables, sinusoidal_table

__all__ = [
    "TokenEmbedding",
    "SinusoidalPositionalEncoding",
    "LearnedPositionalEmbedding",
    "SegmentEmbedding",
    "InputEmbedding",
    "RotaryEmbedding",
    "ALiBi",
    "check_ids",
]


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def check_ids(name: str, ids: torch.Tensor, num: int, what: str = "vocabulary") -> None:
    """Raise ValueError unless ``ids`` is an integer tensor with values in ``[0, num)``.

    Skipped while ``torch.compile`` traces (the min/max reads would break the graph).
    """
    if ids.is_floating_point() or ids.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer (long) tensor, got {ids.dtype} of shape {tuple(ids.shape)}")
    if _compiling() or ids.numel() == 0:
        return
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= num:
        raise ValueError(f"{name} must lie in [0, {num}) (the {what} size), got values in [{lo}, {hi}]")


class TokenEmbedding(nn.Module):
    """Token lookup, scaled by ``sqrt(D)`` as in the paper (``scale=False`` for GPT/BERT).

    Args:
        vocab_size: V.
        d_model: D.
        scale: multiply by ``sqrt(D)``.
        padding_idx: a row kept at zero and without gradient (optional).
    """

    def __init__(self, vocab_size: int, d_model: int, *, scale: bool = True, padding_idx: int | None = None) -> None:
        super().__init__()
        if vocab_size < 1 or d_model < 1:
            raise ValueError(f"vocab_size ({vocab_size}) and d_model ({d_model}) must be >= 1")
        self.vocab_size, self.d_model = vocab_size, d_model
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)
        self.scale = math.sqrt(d_model) if scale else 1.0
        # Scaled lookups start near unit size and a tied output projection gives O(1) logits (fairseq's
        # init); unscaled tables follow GPT-2/BERT (std 0.02).
        with torch.no_grad():
            self.embed.weight.normal_(0.0, d_model**-0.5 if scale else 0.02)
            if padding_idx is not None:
                self.embed.weight[padding_idx].zero_()

    @property
    def weight(self) -> nn.Parameter:
        """The ``(V, D)`` table, for tying an output projection to it."""
        return self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids ``(B, L)`` long -> ``(B, L, D)``."""
        check_ids("ids", ids, self.vocab_size)
        out = self.embed(ids)
        return out * self.scale if self.scale != 1.0 else out


class _AbsolutePositional(nn.Module):
    """Base of absolute position tables: subclasses define ``table_rows() -> (P, D)``, the whole table."""

    max_len: int

    def table_rows(self) -> torch.Tensor:
        """The whole ``(P, D)`` table (a parameter or a buffer)."""
        raise NotImplementedError

    def check(self, positions: torch.Tensor) -> None:
        check_ids("positions", positions, self.max_len, what="positional table (max_len)")

    def span(self, offset: int, L: int) -> torch.Tensor:
        """Embeddings of the contiguous positions ``offset .. offset + L - 1``: ``(1, L, D)``.

        Checked from the sizes alone (no read of tensor values, so no device sync). A slice of the table (a
        view), not a lookup: the same values, and its gradient is a dense copy rather than a scatter.
        """
        if offset < 0 or offset + L > self.max_len:
            raise ValueError(
                f"positions {offset}..{offset + L - 1} do not fit the positional table of max_len {self.max_len}"
                f" (sequence of {L} tokens at offset {offset} is too long)"
            )
        return self.table_rows()[offset : offset + L].unsqueeze(0)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """positions ``(L,)`` or ``(B, L)`` long -> ``(1|B, L, D)``."""
        self.check(positions)
        out = F.embedding(positions, self.table_rows())
        return out.unsqueeze(0) if out.dim() == 2 else out  # (1|B, L, D)


class SinusoidalPositionalEncoding(_AbsolutePositional):
    """The paper's fixed sinusoids (a non-persistent buffer, not a parameter).

    Args:
        d_model: D (even).
        max_len: table length P; longer sequences raise ValueError.
        base: wavelength base.
    """

    def __init__(self, d_model: int, max_len: int, *, base: float = 10000.0) -> None:
        super().__init__()
        self.max_len, self.d_model = max_len, d_model
        self.register_buffer("table", sinusoidal_table(max_len, d_model, base=base), persistent=False)

    def table_rows(self) -> torch.Tensor:
        return self.table


class LearnedPositionalEmbedding(_AbsolutePositional):
    """A trained ``(P, D)`` table of absolute positions (GPT-2, BERT)."""

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        self.max_len, self.d_model = max_len, d_model
        self.embed = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.embed.weight, 0.0, 0.02)  # GPT-2/BERT init; N(0, 1) drowns the token embeddings

    def table_rows(self) -> torch.Tensor:
        return self.embed.weight


class SegmentEmbedding(nn.Module):
    """Segment (token type) embeddings, as BERT's sentence A/B."""

    def __init__(self, num_segments: int, d_model: int) -> None:
        super().__init__()
        self.num_segments = num_segments
        self.embed = nn.Embedding(num_segments, d_model)

    def forward(self, segments: torch.Tensor) -> torch.Tensor:
        """segments ``(B, L)`` long -> ``(B, L, D)``."""
        check_ids("segments", segments, self.num_segments, what="number of segments")
        return self.embed(segments)


class InputEmbedding(nn.Module):
    """Sum of token, absolute position and segment embeddings, then optional norm and dropout.

    Args:
        token: the token table.
        position: an absolute positional module, or None (rotary, ALiBi or no positions).
        segment: segment embeddings (BERT), or None.
        norm: applied to the sum (BERT's embedding LayerNorm), or None.
        dropout: dropout on the result.
    """

    def __init__(
        self,
        token: TokenEmbedding,
        position: nn.Module | None = None,
        *,
        segment: SegmentEmbedding | None = None,
        norm: nn.Module | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.token, self.position, self.segment, self.norm = token, position, segment, norm
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        segments: torch.Tensor | None = None,
        *,
        offset: int = 0,
    ) -> torch.Tensor:
        """Embed ``ids (B, L)``.

        Args:
            ids: token ids ``(B, L)``.
            positions: ``(L,)`` or ``(B, L)``; default ``offset .. offset + L - 1``. Ignored without a
                position module.
            segments: ``(B, L)`` segment ids (default all zero when there is a segment table).
            offset: first position when ``positions`` is None (the cache length when decoding).

        Returns:
            ``(B, L, D)``.
        """
        if ids.dim() != 2:
            raise ValueError(f"ids must have shape (B, L), got {tuple(ids.shape)}")
        x = self.token(ids)
        if self.position is not None:
            if positions is None:
                x = x + self.position.span(offset, ids.shape[1])
            elif positions.shape[-1] != ids.shape[1] or (positions.dim() == 2 and positions.shape[0] != ids.shape[0]):
                raise ValueError(f"positions must be (L,) or (B, L) = {tuple(ids.shape)}, got {tuple(positions.shape)}")
            else:
                x = x + self.position(positions)
        if self.segment is not None:
            if segments is None:
                segments = torch.zeros_like(ids)
            elif segments.shape != ids.shape:
                raise ValueError(f"segments must match ids {tuple(ids.shape)}, got {tuple(segments.shape)}")
            x = x + self.segment(segments)
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(x)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding as a ``qk_transform(q, k, offset)`` for :class:`MultiHeadAttention`.

    One instance can be shared by every layer (its tables are non-persistent buffers).

    Args:
        head_dim: E (even).
        max_len: table length P.
        base: frequency base (10000 in RoFormer).
    """

    def __init__(self, head_dim: int, max_len: int, *, base: float = 10000.0) -> None:
        super().__init__()
        self.head_dim, self.max_len = head_dim, max_len
        cos, sin = rotary_tables(max_len, head_dim, base=base)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, offset: int | torch.Tensor = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate q ``(B, H, L, E)`` and k ``(B, H_kv, L, E)`` at positions ``offset + (0 .. L-1)``.

        ``offset`` may also be a ``(L,)`` or ``(B, L)`` tensor of positions.
        """
        return apply_rotary(q, self.cos, self.sin, offset), apply_rotary(k, self.cos, self.sin, offset)


class ALiBi(nn.Module):
    """ALiBi: per-head linear distance penalties added to attention scores.

    Args:
        num_heads: H.
        causal: causal penalty ``slope * (j - i)`` or symmetric ``-slope * |j - i|``.
    """

    def __init__(self, num_heads: int, *, causal: bool = True) -> None:
        super().__init__()
        self.causal = causal
        self.register_buffer("slopes", alibi_slopes(num_heads), persistent=False)

    def forward(self, L: int, S: int | None = None) -> torch.Tensor:
        """Bias ``(1, H, L, S)`` for L queries aligned to the end of S keys."""
        return alibi_bias(self.slopes, L, S, causal=self.causal)
