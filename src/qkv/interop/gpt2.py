"""GPT-2 decoders <-> qkv :class:`~qkv.models.DecoderModel`.

GPT-2 is pre-LN with a final LayerNorm, tanh-approximated GELU (``gelu_new``), learned absolute
positions and an output projection tied to the token table. Its projections are ``Conv1D`` layers
whose weights are stored ``(in, out)``: they are transposed to ``nn.Linear``'s ``(out, in)``. The
attention input projection ``c_attn`` is already fused ``[W^Q; W^K; W^V]``, like qkv's ``in_proj``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from qkv.interop.checkpoint import Link, link
from qkv.interop.family import Family, activation_from_hf, activation_to_hf, get, require
from qkv.models.config import DecoderConfig
from qkv.models.decoder import DecoderModel

__all__ = ["GPT2", "config_from_hf"]


def config_from_hf(hf: Mapping[str, Any]) -> DecoderConfig:
    """A :class:`DecoderConfig` with the shape and conventions of a GPT-2 ``config.json`` dict."""
    require("this gpt2 config.json", {
        "scale_attn_weights": (get(hf, "scale_attn_weights", True), True),
        "scale_attn_by_inverse_layer_idx": (get(hf, "scale_attn_by_inverse_layer_idx", False), False),
        "add_cross_attention": (get(hf, "add_cross_attention", False), False),
        "tie_word_embeddings": (get(hf, "tie_word_embeddings", True), True),
    })
    d = get(hf, "n_embd", 768)
    return DecoderConfig(
        vocab_size=get(hf, "vocab_size", 50257), num_layers=get(hf, "n_layer", 12), d_model=d,
        num_heads=get(hf, "n_head", 12), d_ff=get(hf, "n_inner", 4 * d), max_len=get(hf, "n_positions", 1024),
        dropout=get(hf, "resid_pdrop", 0.1), attention_dropout=get(hf, "attn_pdrop", 0.1), positional="learned",
        norm_first=True, final_norm=True, norm_eps=get(hf, "layer_norm_epsilon", 1e-5),
        activation=activation_from_hf(get(hf, "activation_function", "gelu_new"), field="activation_function"),
        scale_embeddings=False, tie_embeddings=True, pad_id=None,
    )


def _links(model: nn.Module) -> list[Link]:
    out = [
        link("embed.token.embed.weight", "wte.weight"),
        link("embed.position.embed.weight", "wpe.weight"),
        link("decoder.norm.weight", "ln_f.weight"),
        link("decoder.norm.bias", "ln_f.bias"),
    ]
    conv = {"self_attn.in_proj": "attn.c_attn", "self_attn.out_proj": "attn.c_proj",
            "ff.w1": "mlp.c_fc", "ff.w2": "mlp.c_proj"}
    norms = {"self_sub.norm": "ln_1", "ff_sub.norm": "ln_2"}
    for i in range(model.config.num_layers):
        ours, theirs = f"decoder.layers.{i}.", f"h.{i}."
        for a, b in conv.items():
            out.append(link(f"{ours}{a}.weight", f"{theirs}{b}.weight", transpose=True))  # Conv1D (in, out)
            out.append(link(f"{ours}{a}.bias", f"{theirs}{b}.bias"))
        for a, b in norms.items():
            out += [link(f"{ours}{a}.{p}", f"{theirs}{b}.{p}") for p in ("weight", "bias")]
    return out


def _hf_config(model: nn.Module) -> dict[str, Any]:
    cfg = model.config
    require("saving this DecoderModel as gpt2", {
        "positional": (cfg.positional, "learned"), "norm_first": (cfg.norm_first, True),
        "final_norm": (cfg.final_norm, True), "tie_embeddings": (cfg.tie_embeddings, True),
        "scale_embeddings": (cfg.scale_embeddings, False), "bias": (cfg.bias, True),
        "num_kv_heads": (cfg.num_kv_heads, cfg.num_heads), "attention": (cfg.attention, "softmax"),
    })
    return {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": cfg.vocab_size,
        "n_positions": cfg.max_len, "n_embd": cfg.d_model, "n_layer": cfg.num_layers, "n_head": cfg.num_heads,
        "n_inner": cfg.d_ff, "activation_function": activation_to_hf(cfg.activation),
        "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.attention_dropout,
        "layer_norm_epsilon": cfg.norm_eps, "tie_word_embeddings": True,
    }


GPT2 = Family(
    model_type="gpt2",
    build=lambda hf: DecoderModel(config_from_hf(hf)),
    links=_links,
    hf_config=_hf_config,
    matches=lambda m: isinstance(m, DecoderModel),
    prefixes=("transformer.",),
    ignored=(r"h\.\d+\.attn\.(bias|masked_bias)", r"lm_head\.weight"),
    save_prefix="transformer.",
)
