"""BART and Marian encoder-decoders <-> :class:`PretrainedSeq2Seq` (a qkv ``EncoderDecoderModel``).

Both are post-LN with separate query/key/value maps (stacked into qkv's fused ``in_proj``), one token
table shared by encoder, decoder and output projection, and a ``final_logits_bias`` added to the logits.
They differ in their inputs:

* BART: learned positions whose table has 2 extra leading rows (position ``p`` reads row ``p + 2``),
  a LayerNorm on the summed embeddings (``layernorm_embedding``), exact GELU, unscaled embeddings.
* Marian: fixed sinusoids laid out as all sines then all cosines (not interleaved), token embeddings
  scaled by ``sqrt(D)``, SiLU ("swish"), no embedding LayerNorm. The sinusoids are rebuilt, not read.

Inference is exact; for training note that qkv applies ``dropout`` inside the FFN where Hugging Face
applies ``activation_dropout`` (0 by default). Separate encoder/decoder vocabularies (Marian's
``share_encoder_decoder_embeddings=False``) and different encoder/decoder widths are refused.

Notation: B batch, L target length, D d_model, V target vocabulary, P positional table length.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from qkv.interop.checkpoint import Link, link
from qkv.interop.family import Family, activation_from_hf, activation_to_hf, get, require
from qkv.models.config import Seq2SeqConfig
from qkv.models.seq2seq import EncoderDecoderModel
from qkv.modules.embeddings import LearnedPositionalEmbedding, SinusoidalPositionalEncoding

__all__ = ["BART", "MARIAN", "PretrainedSeq2Seq", "OffsetLearnedPositional", "SplitSinusoidalPositional"]


class OffsetLearnedPositional(LearnedPositionalEmbedding):
    """Learned positions read ``offset`` rows further down a ``(P + offset, D)`` table (BART: 2)."""

    def __init__(self, max_len: int, d_model: int, *, offset: int = 2) -> None:
        super().__init__(max_len, d_model)
        self.offset = offset
        self.embed = nn.Embedding(max_len + offset, d_model)

    def table_rows(self) -> torch.Tensor:
        return self.embed.weight[self.offset :]  # (P, D): position p is row p + offset


class SplitSinusoidalPositional(SinusoidalPositionalEncoding):
    """The paper's sinusoids with sines in features ``[0, D/2)`` and cosines in ``[D/2, D)`` (Marian)."""

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__(d_model, max_len)
        perm = torch.cat([torch.arange(0, d_model, 2), torch.arange(1, d_model, 2)])  # sines, then cosines
        self.table = self.table[:, perm].contiguous()  # (P, D)


class PretrainedSeq2Seq(EncoderDecoderModel):
    """An :class:`EncoderDecoderModel` with BART/Marian inputs and output bias.

    Args:
        config: the :class:`Seq2SeqConfig` (its ``positional`` builds the tables that ``position``
            then replaces).
        model_type: "bart" or "marian" (how :func:`~qkv.interop.save_pretrained` writes it back).
        position: builds one absolute positional module (called for encoder and decoder), or None.
        embedding_norm: a LayerNorm on the summed input embeddings of encoder and decoder (BART).
        bos_id: the token decoding starts from (Hugging Face's ``decoder_start_token_id``).
        eos_id: the token that ends a translation.
    """

    def __init__(
        self,
        config: Seq2SeqConfig,
        *,
        model_type: str,
        position: Callable[[], nn.Module] | None,
        embedding_norm: bool,
        bos_id: int,
        eos_id: int,
    ) -> None:
        super().__init__(config)
        self.model_type, self.bos_id, self.eos_id = model_type, bos_id, eos_id
        for embed in (self.src_embed, self.tgt_embed):
            if position is not None:
                embed.position = position()
            if embedding_norm:
                embed.norm = nn.LayerNorm(config.d_model, eps=config.norm_eps)
        self.register_buffer("final_logits_bias", torch.zeros(1, config.tgt_vocab_size))  # (1, V)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Decoder states ``(B, L, D)`` -> ``(B, L, V)``: tied projection plus ``final_logits_bias``."""
        return super().logits(hidden) + self.final_logits_bias


def _config(hf: Mapping[str, Any], kind: str) -> Seq2SeqConfig:
    heads, ffn = get(hf, "encoder_attention_heads", 16), get(hf, "encoder_ffn_dim", 4096)
    checks = {  # qkv's Seq2SeqConfig has one head count and one FFN size for both stacks
        "decoder_attention_heads (= encoder's)": (get(hf, "decoder_attention_heads", heads), heads),
        "decoder_ffn_dim (= encoder's)": (get(hf, "decoder_ffn_dim", ffn), ffn),
    }
    checks["tie_word_embeddings"] = (get(hf, "tie_word_embeddings", True), True)
    checks["normalize_before"] = (get(hf, "normalize_before", False), False)
    vocab = hf["vocab_size"]
    if kind == "marian":
        checks["share_encoder_decoder_embeddings"] = (get(hf, "share_encoder_decoder_embeddings", True), True)
        checks["decoder_vocab_size (= vocab_size)"] = (get(hf, "decoder_vocab_size", vocab), vocab)
    require(f"this {kind} config.json", checks)
    return Seq2SeqConfig(
        src_vocab_size=vocab, tgt_vocab_size=vocab, d_model=get(hf, "d_model", 1024),
        num_heads=heads, d_ff=ffn,
        num_encoder_layers=get(hf, "encoder_layers", 12), num_decoder_layers=get(hf, "decoder_layers", 12),
        dropout=get(hf, "dropout", 0.1), attention_dropout=get(hf, "attention_dropout", 0.0),
        max_len=get(hf, "max_position_embeddings", 1024),
        positional="learned" if kind == "bart" else "sinusoidal", norm_first=False, final_norm=False,
        norm_eps=1e-5,
        activation=activation_from_hf(get(hf, "activation_function", "gelu"), field="activation_function"),
        scale_embeddings=bool(get(hf, "scale_embedding", kind == "marian")), share_embeddings=True, tie_output=True,
        pad_id=get(hf, "pad_token_id", 1),
    )


def _build(hf: Mapping[str, Any], kind: str) -> PretrainedSeq2Seq:
    cfg = _config(hf, kind)
    if kind == "bart":
        def position() -> nn.Module:
            return OffsetLearnedPositional(cfg.max_len, cfg.d_model, offset=2)
    else:
        def position() -> nn.Module:
            return SplitSinusoidalPositional(cfg.d_model, cfg.max_len)
    eos = get(hf, "eos_token_id", 2)
    eos = eos[0] if isinstance(eos, list) else eos
    return PretrainedSeq2Seq(cfg, model_type=kind, position=position, embedding_norm=kind == "bart",
                             bos_id=get(hf, "decoder_start_token_id", cfg.pad_id), eos_id=eos)


def _attn(ours: str, theirs: str) -> list[Link]:
    out = []
    for p in ("weight", "bias"):
        out.append(link(f"{ours}.in_proj.{p}", *(f"{theirs}.{n}_proj.{p}" for n in ("q", "k", "v"))))
        out.append(link(f"{ours}.out_proj.{p}", f"{theirs}.out_proj.{p}"))
    return out


def _norm(ours: str, theirs: str) -> list[Link]:
    return [link(f"{ours}.{p}", f"{theirs}.{p}") for p in ("weight", "bias")]


def _links(model: nn.Module) -> list[Link]:
    cfg = model.config
    out = [link("src_embed.token.embed.weight", "shared.weight"), link("tgt_embed.token.embed.weight", "shared.weight"),
           link("final_logits_bias", "final_logits_bias")]
    for ours, theirs in (("src_embed", "encoder"), ("tgt_embed", "decoder")):
        if model.model_type == "bart":
            out.append(link(f"{ours}.position.embed.weight", f"{theirs}.embed_positions.weight"))
            out += _norm(f"{ours}.norm", f"{theirs}.layernorm_embedding")
    ff = [link(f"ff.{a}.{p}", f"{b}.{p}") for a, b in (("w1", "fc1"), ("w2", "fc2")) for p in ("weight", "bias")]
    for i in range(cfg.num_encoder_layers):
        o, t = f"encoder.layers.{i}", f"encoder.layers.{i}"
        out += _attn(f"{o}.self_attn", f"{t}.self_attn") + _norm(f"{o}.attn_sub.norm", f"{t}.self_attn_layer_norm")
        out += [link(f"{o}.{lk.ours}", f"{t}.{lk.theirs[0]}") for lk in ff]
        out += _norm(f"{o}.ff_sub.norm", f"{t}.final_layer_norm")
    for i in range(cfg.num_decoder_layers):
        o, t = f"decoder.layers.{i}", f"decoder.layers.{i}"
        out += _attn(f"{o}.self_attn", f"{t}.self_attn") + _norm(f"{o}.self_sub.norm", f"{t}.self_attn_layer_norm")
        out += _attn(f"{o}.cross_attn", f"{t}.encoder_attn")
        out += _norm(f"{o}.cross_sub.norm", f"{t}.encoder_attn_layer_norm")
        out += [link(f"{o}.{lk.ours}", f"{t}.{lk.theirs[0]}") for lk in ff]
        out += _norm(f"{o}.ff_sub.norm", f"{t}.final_layer_norm")
    return out


def _hf_config(model: nn.Module) -> dict[str, Any]:
    cfg, kind = model.config, model.model_type
    require(f"saving this model as {kind}", {
        "norm_first": (cfg.norm_first, False), "final_norm": (cfg.final_norm, False), "bias": (cfg.bias, True),
        "share_embeddings": (cfg.share_embeddings, True), "tie_output": (cfg.tie_output, True),
        "num_kv_heads": (cfg.num_kv_heads, cfg.num_heads), "attention": (cfg.attention, "softmax"),
    })
    out = {
        "model_type": kind, "architectures": ["BartForConditionalGeneration" if kind == "bart" else "MarianMTModel"],
        "vocab_size": cfg.src_vocab_size, "d_model": cfg.d_model, "encoder_layers": cfg.num_encoder_layers,
        "decoder_layers": cfg.num_decoder_layers, "encoder_attention_heads": cfg.num_heads,
        "decoder_attention_heads": cfg.num_heads, "encoder_ffn_dim": cfg.d_ff, "decoder_ffn_dim": cfg.d_ff,
        "activation_function": activation_to_hf(cfg.activation), "dropout": cfg.dropout,
        "attention_dropout": cfg.attention_dropout, "activation_dropout": 0.0, "max_position_embeddings": cfg.max_len,
        "scale_embedding": cfg.scale_embeddings, "pad_token_id": cfg.pad_id, "eos_token_id": model.eos_id,
        "decoder_start_token_id": model.bos_id, "is_encoder_decoder": True, "tie_word_embeddings": True,
    }
    if kind == "marian":
        out |= {"decoder_vocab_size": cfg.tgt_vocab_size, "share_encoder_decoder_embeddings": True}
    return out


_IGNORED = (r"(encoder|decoder)\.embed_tokens\.weight", r"lm_head\.weight", r"(encoder|decoder)\.version")

BART = Family(
    model_type="bart", build=lambda hf: _build(hf, "bart"), links=_links, hf_config=_hf_config,
    matches=lambda m: getattr(m, "model_type", None) == "bart", prefixes=("model.",), ignored=_IGNORED,
    save_prefix="model.", top_level=("final_logits_bias",), optional=("final_logits_bias",),
)

MARIAN = Family(
    model_type="marian", build=lambda hf: _build(hf, "marian"), links=_links, hf_config=_hf_config,
    matches=lambda m: getattr(m, "model_type", None) == "marian", prefixes=("model.",),
    ignored=_IGNORED + (r"(encoder|decoder)\.embed_positions\.weight",),  # fixed sinusoids, rebuilt
    save_prefix="model.", top_level=("final_logits_bias",), optional=("final_logits_bias",),
)
