"""Builders shared by the Transformer models: turn a config into attention, FFN, embeddings, masks.

Notation: B batch, L query length, S key length, D d_model, H heads, V vocabulary.
"""

from __future__ import annotations

import torch
from torch import nn

from qkv.models.config import TransformerConfig
from qkv.modules.attend import build_attend
from qkv.modules.attention import MultiHeadAttention
from qkv.modules.blocks import DecoderBlock, EncoderBlock
from qkv.modules.embeddings import (
    ALiBi,
    InputEmbedding,
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SegmentEmbedding,
    SinusoidalPositionalEncoding,
    TokenEmbedding,
)
from qkv.modules.feed_forward import build_feed_forward

__all__ = [
    "attention",
    "encoder_block",
    "decoder_block",
    "input_embedding",
    "rotary",
    "alibi",
    "final_norm",
    "key_padding_mask",
    "check_length",
    "check_tokens",
]


def attention(cfg: TransformerConfig, qk_transform: nn.Module | None = None) -> MultiHeadAttention:
    """A multi-head attention layer with the config's kernel (``cfg.attention``)."""
    return MultiHeadAttention(
        cfg.d_model, cfg.num_heads, num_kv_heads=cfg.num_kv_heads, dropout=cfg.attention_dropout,
        bias=cfg.bias, qk_transform=qk_transform, attend=build_attend(cfg.attention, **cfg.attention_options),
    )


def _ff(cfg: TransformerConfig) -> nn.Module:
    return build_feed_forward(cfg.d_model, cfg.d_ff, cfg.activation, dropout=cfg.dropout, bias=cfg.bias)


def encoder_block(cfg: TransformerConfig, rope: nn.Module | None = None) -> EncoderBlock:
    return EncoderBlock(attention(cfg, rope), _ff(cfg), norm_first=cfg.norm_first, dropout=cfg.dropout,
                        norm_eps=cfg.norm_eps)


def decoder_block(cfg: TransformerConfig, rope: nn.Module | None = None, *, cross: bool) -> DecoderBlock:
    return DecoderBlock(
        attention(cfg, rope), _ff(cfg), cross_attn=attention(cfg) if cross else None,
        norm_first=cfg.norm_first, dropout=cfg.dropout, norm_eps=cfg.norm_eps,
    )


def final_norm(cfg: TransformerConfig) -> nn.Module | None:
    return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps) if cfg.final_norm else None


def input_embedding(
    cfg: TransformerConfig,
    vocab_size: int,
    *,
    token: TokenEmbedding | None = None,
    num_segments: int = 0,
    norm: bool = False,
) -> InputEmbedding:
    """Token (+ absolute position) (+ segment) embeddings, optional LayerNorm, dropout."""
    if token is None:
        token = TokenEmbedding(vocab_size, cfg.d_model, scale=cfg.scale_embeddings)
    position = None
    if cfg.positional == "sinusoidal":
        position = SinusoidalPositionalEncoding(cfg.d_model, cfg.max_len)
    elif cfg.positional == "learned":
        position = LearnedPositionalEmbedding(cfg.max_len, cfg.d_model)
    return InputEmbedding(
        token, position,
        segment=SegmentEmbedding(num_segments, cfg.d_model) if num_segments else None,
        norm=nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps) if norm else None,
        dropout=cfg.dropout,
    )


def rotary(cfg: TransformerConfig) -> RotaryEmbedding | None:
    return RotaryEmbedding(cfg.head_dim, cfg.max_len, base=cfg.rotary_base) if cfg.positional == "rotary" else None


def alibi(cfg: TransformerConfig, *, causal: bool) -> ALiBi | None:
    return ALiBi(cfg.num_heads, causal=causal) if cfg.positional == "alibi" else None


def key_padding_mask(name: str, key_padding: torch.Tensor | None, B: int, S: int) -> torch.Tensor | None:
    """Validate a ``(B, S)`` bool padding mask (True = real) and lift it to ``(B, 1, 1, S)``."""
    if key_padding is None:
        return None
    if key_padding.dtype != torch.bool or key_padding.shape != (B, S):
        raise ValueError(
            f"{name} must be bool of shape (B, S) = ({B}, {S}) with True = real token, "
            f"got {key_padding.dtype} of shape {tuple(key_padding.shape)}"
        )
    return key_padding[:, None, None, :]  # (B, 1, 1, S)


def check_length(cfg: TransformerConfig, name: str, L: int, offset: int = 0) -> None:
    """A sequence of ``L`` tokens starting at ``offset`` must fit the positional table (``max_len``)."""
    if cfg.positional != "none" and offset + L > cfg.max_len:
        raise ValueError(
            f"{name} is too long: {L} tokens at offset {offset} exceed max_len {cfg.max_len} "
            f"(the {cfg.positional} positional table)"
        )


def check_tokens(name: str, ids: torch.Tensor) -> None:
    """Token ids must be a 2-D ``(B, L)`` tensor (the vocabulary range is checked by the embedding)."""
    if ids.dim() != 2:
        raise ValueError(f"{name} must have shape (B, L), got {tuple(ids.shape)}")
