"""Encoder-decoder Transformer ("Attention Is All You Need"): ``encode(src)`` then ``decode(tgt, memory)``.

Notation: B batch, S source length, L target length, D d_model, H heads, V target vocabulary.
"""

from __future__ import annotations

import torch
from torch import nn

from qkv.functional.masks import padding_mask
from qkv.models import parts
from qkv.models.config import Seq2SeqConfig
from qkv.modules.blocks import DecoderStack, EncoderStack, LayerCache
from qkv.modules.kv_cache import KVCache
from qkv.modules.projection import TiedOutput

__all__ = ["EncoderDecoderModel"]


class EncoderDecoderModel(nn.Module):
    """Source embeddings -> encoder stack -> memory; target embeddings -> decoder stack -> logits.

    Args:
        config: a :class:`Seq2SeqConfig` (``share_embeddings``: one table for source and target;
            ``tie_output``: the output projection is the target table).
    """

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.src_embed = parts.input_embedding(cfg, cfg.src_vocab_size)
        shared = self.src_embed.token if cfg.share_embeddings else None
        self.tgt_embed = parts.input_embedding(cfg, cfg.tgt_vocab_size, token=shared)
        self.rotary = parts.rotary(cfg)
        self.enc_alibi = parts.alibi(cfg, causal=False)
        self.dec_alibi = parts.alibi(cfg, causal=True)
        enc = [parts.encoder_block(cfg, self.rotary) for _ in range(cfg.num_encoder_layers)]
        dec = [parts.decoder_block(cfg, self.rotary, cross=True) for _ in range(cfg.num_decoder_layers)]
        self.encoder = EncoderStack(enc, parts.final_norm(cfg))
        self.decoder = DecoderStack(dec, parts.final_norm(cfg))
        self.generator = None if cfg.tie_output else nn.Linear(cfg.d_model, cfg.tgt_vocab_size, bias=False)
        self.tied_output = TiedOutput() if cfg.tie_output else None  # no parameters: the table is tgt_embed's

    def _src_mask(self, src: torch.Tensor, src_mask: torch.Tensor | None) -> torch.Tensor | None:
        if src_mask is None and self.config.pad_id is not None:
            return padding_mask(src, pad_id=self.config.pad_id)  # (B, 1, 1, S)
        return parts.key_padding_mask("src_mask", src_mask, *src.shape)

    def encode(
        self, src: torch.Tensor, src_mask: torch.Tensor | None = None, *, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Encode the source.

        Args:
            src: ``(B, S)`` token ids.
            src_mask: ``(B, S)`` bool, True = real token; default ``src != pad_id``.
            return_weights: also return encoder self-attention weights ``(B, H, S, S)`` per layer.

        Returns:
            memory ``(B, S, D)``, or ``(memory, weights)``.
        """
        parts.check_tokens("src", src)
        parts.check_length(self.config, "src", src.shape[1])
        mask = self._src_mask(src, src_mask)
        S = src.shape[1]
        bias = None if self.enc_alibi is None else self.enc_alibi(S, S)
        return self.encoder(self.src_embed(src), mask=mask, bias=bias, return_weights=return_weights)

    def decode(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        *,
        cache: list[LayerCache] | None = None,
        return_weights: bool = False,
    ):
        """Next-token logits for the target prefix.

        Args:
            tgt: ``(B, L)`` target ids (shifted right: starts with BOS).
            memory: ``(B, S, D)`` from :meth:`encode`.
            src_mask: ``(B, S)`` bool, True = real source token (None: every source token is real).
            cache: from :meth:`new_cache`; ``tgt`` then holds only the new tokens.
            return_weights: also return ``{"self": [(B, H, L, L')], "cross": [(B, H, L, S)]}`` per layer.

        Returns:
            logits ``(B, L, V)``, or ``(logits, weights)``.
        """
        parts.check_tokens("tgt", tgt)
        B, L = tgt.shape
        if memory.dim() != 3 or memory.shape[0] != B or memory.shape[-1] != self.config.d_model:
            raise ValueError(
                f"memory must be (B, S, D) = ({B}, S, {self.config.d_model}) to match tgt {tuple(tgt.shape)}, "
                f"got {tuple(memory.shape)}"
            )
        offset = cache[0].self_attn.length if cache else 0
        parts.check_length(self.config, "tgt", L, offset)
        mem_mask = parts.key_padding_mask("src_mask", src_mask, B, memory.shape[1])  # (B, 1, 1, S)
        bias = None if self.dec_alibi is None else self.dec_alibi(L, offset + L)
        x = self.tgt_embed(tgt, offset=offset)  # (B, L, D)
        res = self.decoder(x, memory, memory_mask=mem_mask, bias=bias, caches=cache, return_weights=return_weights)
        x, weights = res if return_weights else (res, None)
        logits = self.logits(x)
        return (logits, weights) if return_weights else logits

    def forward(
        self,
        src: torch.Tensor,
        tgt: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        *,
        return_weights: bool = False,
    ):
        """Teacher-forced logits ``(B, L, V)`` (or ``(logits, {"encoder", "self", "cross"} weights)``)."""
        parts.check_tokens("src", src)
        parts.check_tokens("tgt", tgt)
        if src.shape[0] != tgt.shape[0]:
            raise ValueError(f"src and tgt batch sizes differ: src {tuple(src.shape)}, tgt {tuple(tgt.shape)}")
        if src_mask is None and self.config.pad_id is not None:
            src_mask = src != self.config.pad_id  # (B, S)
        if not return_weights:
            return self.decode(tgt, self.encode(src, src_mask), src_mask)
        memory, enc_w = self.encode(src, src_mask, return_weights=True)
        logits, dec_w = self.decode(tgt, memory, src_mask, return_weights=True)
        return logits, {"encoder": enc_w, **dec_w}

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Project decoder states ``(B, L, D)`` to target logits ``(B, L, V)``."""
        if self.generator is None:
            return self.tied_output(hidden, self.tgt_embed.token.weight)
        return self.generator(hidden)

    def new_cache(self, batch_size: int, max_len: int, src_len: int | None = None) -> list[LayerCache]:
        """Per decoder layer: a self-attention cache of ``max_len`` and a static cross-attention cache.

        The cross-attention cache is filled from ``memory`` at the first :meth:`decode` call;
        its capacity is ``src_len`` (default ``config.max_len``).
        """
        cfg, p = self.config, self.tgt_embed.token.weight
        kw = dict(dtype=p.dtype, device=p.device)
        src_len = cfg.max_len if src_len is None else src_len
        return [
            LayerCache(
                KVCache(batch_size, cfg.num_kv_heads, max_len, cfg.head_dim, **kw),
                KVCache(batch_size, cfg.num_kv_heads, src_len, cfg.head_dim, static=True, **kw),
            )
            for _ in range(cfg.num_decoder_layers)
        ]
