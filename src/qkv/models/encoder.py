"""Encoder-only model (BERT-like): contextual embeddings, mean/CLS pooling, optional classifier.

Notation: B batch, L length, D d_model, H heads, C classes.
"""

from __future__ import annotations

import torch
from torch import nn

from qkv.functional.masks import padding_mask
from qkv.models import parts
from qkv.models.config import EncoderConfig
from qkv.modules.blocks import EncoderStack

__all__ = ["EncoderModel"]


class EncoderModel(nn.Module):
    """Bidirectional Transformer encoder.

    Args:
        config: an :class:`EncoderConfig`. With ``num_classes > 0`` it has a classification head on
            the pooled representation (``pooling``: mean over real tokens, or the first token).
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.embed = parts.input_embedding(cfg, cfg.vocab_size, num_segments=cfg.num_segments,
                                           norm=cfg.embedding_norm)
        self.rotary = parts.rotary(cfg)
        self.alibi = parts.alibi(cfg, causal=False)
        blocks = [parts.encoder_block(cfg, self.rotary) for _ in range(cfg.num_layers)]
        self.encoder = EncoderStack(blocks, parts.final_norm(cfg))
        self.head = None
        if cfg.num_classes:
            self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.d_model, cfg.num_classes))

    def _padding(self, ids: torch.Tensor, key_padding: torch.Tensor | None) -> torch.Tensor | None:
        if key_padding is None and self.config.pad_id is not None:
            return padding_mask(ids, pad_id=self.config.pad_id)  # (B, 1, 1, L)
        return parts.key_padding_mask("key_padding", key_padding, *ids.shape)

    def forward(
        self,
        ids: torch.Tensor,
        *,
        key_padding: torch.Tensor | None = None,
        segments: torch.Tensor | None = None,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Contextual embeddings of every token.

        Args:
            ids: token ids ``(B, L)``.
            key_padding: ``(B, L)`` bool, True = real token; default ``ids != pad_id``.
            segments: ``(B, L)`` segment ids (models with ``num_segments``); default zeros.
            return_weights: also return the attention weights ``(B, H, L, L)`` of every layer.

        Returns:
            hidden ``(B, L, D)``, or ``(hidden, [weights per layer])``.
        """
        parts.check_tokens("ids", ids)
        L = ids.shape[1]
        parts.check_length(self.config, "ids", L)
        mask = self._padding(ids, key_padding)
        bias = None if self.alibi is None else self.alibi(L, L)  # (1, H, L, L)
        x = self.embed(ids, segments=segments)  # (B, L, D)
        return self.encoder(x, mask=mask, bias=bias, return_weights=return_weights)

    def pool(self, hidden: torch.Tensor, key_padding: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, L, D) -> (B, D)``: mean over real tokens (``key_padding`` True), or the first token."""
        if self.config.pooling == "cls":
            return hidden[:, 0]
        if key_padding is None:
            return hidden.mean(dim=1)
        w = key_padding.to(hidden.dtype).unsqueeze(-1)  # (B, L, 1)
        return (hidden * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)

    def classify(
        self,
        ids: torch.Tensor,
        key_padding: torch.Tensor | None = None,
        *,
        segments: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Class logits ``(B, C)`` for ``ids (B, L)`` (needs ``num_classes > 0``)."""
        if self.head is None:
            raise ValueError("this EncoderModel has no classification head: build it with num_classes > 0")
        if key_padding is None and self.config.pad_id is not None:
            key_padding = ids != self.config.pad_id  # (B, L)
        hidden = self.forward(ids, key_padding=key_padding, segments=segments)
        return self.head(self.pool(hidden, key_padding))
