"""BERT-family encoders (BERT, MiniLM) <-> qkv :class:`~qkv.models.EncoderModel`.

BERT is post-LN with exact (erf) GELU, learned absolute positions, token-type (segment) embeddings
and a LayerNorm on the summed embeddings. Its separate query/key/value maps are stacked into qkv's
fused ``in_proj`` (and split back on save). The pooler (dense + tanh on ``[CLS]``) and pre-training
heads are not used by qkv and are skipped on load.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from qkv.interop.checkpoint import Link, link
from qkv.interop.family import Family, activation_from_hf, activation_to_hf, get, require
from qkv.models.config import EncoderConfig
from qkv.models.encoder import EncoderModel

__all__ = ["BERT", "config_from_hf"]


def config_from_hf(hf: Mapping[str, Any], *, pooling: str = "mean") -> EncoderConfig:
    """An :class:`EncoderConfig` with the shape and conventions of a BERT ``config.json`` dict.

    Args:
        hf: the parsed ``config.json``.
        pooling: "mean" (sentence-transformers) or "cls".
    """
    require("this bert config.json", {
        "position_embedding_type": (get(hf, "position_embedding_type", "absolute"), "absolute"),
        "is_decoder": (get(hf, "is_decoder", False), False),
        "add_cross_attention": (get(hf, "add_cross_attention", False), False),
    })
    dropout = get(hf, "hidden_dropout_prob", 0.1)
    return EncoderConfig(
        vocab_size=hf["vocab_size"], num_layers=get(hf, "num_hidden_layers", 12), d_model=get(hf, "hidden_size", 768),
        num_heads=get(hf, "num_attention_heads", 12), d_ff=get(hf, "intermediate_size", 3072),
        max_len=get(hf, "max_position_embeddings", 512), dropout=dropout,
        attention_dropout=get(hf, "attention_probs_dropout_prob", dropout), positional="learned",
        norm_first=False, final_norm=False, norm_eps=get(hf, "layer_norm_eps", 1e-12),
        activation=activation_from_hf(get(hf, "hidden_act", "gelu"), field="hidden_act"), scale_embeddings=False,
        num_segments=get(hf, "type_vocab_size", 2), embedding_norm=True, pad_id=get(hf, "pad_token_id", 0),
        pooling=pooling,
    )


def _links(model: nn.Module) -> list[Link]:
    cfg = model.config
    out = [
        link("embed.token.embed.weight", "embeddings.word_embeddings.weight"),
        link("embed.position.embed.weight", "embeddings.position_embeddings.weight"),
        link("embed.segment.embed.weight", "embeddings.token_type_embeddings.weight"),
        link("embed.norm.weight", "embeddings.LayerNorm.weight"),
        link("embed.norm.bias", "embeddings.LayerNorm.bias"),
    ]
    direct = {"self_attn.out_proj": "attention.output.dense", "attn_sub.norm": "attention.output.LayerNorm",
              "ff.w1": "intermediate.dense", "ff.w2": "output.dense", "ff_sub.norm": "output.LayerNorm"}
    for i in range(cfg.num_layers):
        ours, theirs = f"encoder.layers.{i}.", f"encoder.layer.{i}."
        for p in ("weight", "bias"):
            qkv = (f"{theirs}attention.self.{n}.{p}" for n in ("query", "key", "value"))
            out.append(link(f"{ours}self_attn.in_proj.{p}", *qkv))
            out += [link(f"{ours}{a}.{p}", f"{theirs}{b}.{p}") for a, b in direct.items()]
    return out


def _hf_config(model: nn.Module) -> dict[str, Any]:
    cfg = model.config
    require("saving this EncoderModel as bert", {
        "positional": (cfg.positional, "learned"), "norm_first": (cfg.norm_first, False),
        "final_norm": (cfg.final_norm, False), "embedding_norm": (cfg.embedding_norm, True),
        "scale_embeddings": (cfg.scale_embeddings, False), "bias": (cfg.bias, True),
        "num_kv_heads": (cfg.num_kv_heads, cfg.num_heads), "attention": (cfg.attention, "softmax"),
        "num_segments >= 1": (cfg.num_segments >= 1, True),
    })
    return {
        "model_type": "bert", "architectures": ["BertModel"], "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model, "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.d_ff, "hidden_act": activation_to_hf(cfg.activation),
        "hidden_dropout_prob": cfg.dropout, "attention_probs_dropout_prob": cfg.attention_dropout,
        "max_position_embeddings": cfg.max_len, "type_vocab_size": cfg.num_segments,
        "layer_norm_eps": cfg.norm_eps, "pad_token_id": cfg.pad_id if cfg.pad_id is not None else 0,
        "position_embedding_type": "absolute",
    }


BERT = Family(
    model_type="bert",
    build=lambda hf: EncoderModel(config_from_hf(hf)),
    links=_links,
    hf_config=_hf_config,
    matches=lambda m: isinstance(m, EncoderModel),
    prefixes=("bert.",),
    ignored=(r"pooler\..*", r"embeddings\.position_ids", r"cls\..*", r"classifier\..*"),
)
