"""Decoder-only causal language model (GPT): embeddings, masked self-attention blocks, tied output.

Notation: B batch, L new tokens, S keys (cached + new), D d_model, H heads, V vocabulary.
"""

from __future__ import annotations

import torch
from torch import nn

from qkv.models import parts
from qkv.models.config import DecoderConfig
from qkv.modules.blocks import DecoderStack
from qkv.modules.kv_cache import KVCache
from qkv.modules.projection import TiedOutput

__all__ = ["DecoderModel"]


class DecoderModel(nn.Module):
    """GPT-style language model: ``logits = W_E^T f(E[ids] + P[positions])`` with causal blocks.

    Args:
        config: a :class:`DecoderConfig`.

    Positions: absolute tables (learned/sinusoidal) read ``positions``; rotary and ALiBi are relative,
    so a left-padded row (with its padding masked out) gives the same outputs as the unpadded row.
    """

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.embed = parts.input_embedding(cfg, cfg.vocab_size)
        self.rotary = parts.rotary(cfg)
        self.alibi = parts.alibi(cfg, causal=True)
        blocks = [parts.decoder_block(cfg, self.rotary, cross=False) for _ in range(cfg.num_layers)]
        self.decoder = DecoderStack(blocks, parts.final_norm(cfg))
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.tied_output = TiedOutput() if cfg.tie_embeddings else None  # no parameters: the table is embed's

    def forward(
        self,
        ids: torch.Tensor,
        *,
        key_padding: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        cache: list[KVCache] | None = None,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Next-token logits for every position.

        Args:
            ids: token ids ``(B, L)``.
            key_padding: ``(B, S)`` bool, True = real token, over all keys (cached + new).
            positions: ``(B, L)`` long absolute positions (left-padded batches); default
                ``cache length + 0 .. L-1``.
            cache: one :class:`KVCache` per layer (from :meth:`new_cache`), appended to.
            return_weights: also return the self-attention weights ``(B, H, L, S)`` of every layer.

        Returns:
            logits ``(B, L, V)``, or ``(logits, [weights per layer])``.
        """
        parts.check_tokens("ids", ids)
        B, L = ids.shape
        offset = cache[0].length if cache else 0
        S = offset + L
        if positions is None:
            parts.check_length(self.config, "ids", L, offset)
        elif positions.shape != (B, L):
            raise ValueError(f"positions must have shape (B, L) = {(B, L)}, got {tuple(positions.shape)}")
        mask = parts.key_padding_mask("key_padding", key_padding, B, S)  # (B, 1, 1, S)
        bias = None if self.alibi is None else self.alibi(L, S)  # (1, H, L, S)
        x = self.embed(ids, positions, offset=offset)  # (B, L, D)
        res = self.decoder(x, self_mask=mask, bias=bias, caches=cache, return_weights=return_weights)
        x, weights = res if return_weights else (res, None)
        logits = self.logits(x)
        return (logits, weights["self"]) if return_weights else logits

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Project hidden states ``(B, L, D)`` to the vocabulary ``(B, L, V)``."""
        if self.lm_head is None:
            return self.tied_output(hidden, self.embed.token.weight)
        return self.lm_head(hidden)

    def new_cache(self, batch_size: int, max_len: int) -> list[KVCache]:
        """Empty key/value caches, one per layer, with this model's dtype and device."""
        cfg, p = self.config, self.embed.token.weight
        return [
            KVCache(batch_size, cfg.num_kv_heads, max_len, cfg.head_dim, dtype=p.dtype, device=p.device)
            for _ in range(cfg.num_layers)
        ]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
