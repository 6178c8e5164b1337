"""Hugging Face GPT-2 / BERT weights -> qkv ``DecoderModel`` / ``EncoderModel``.

Works on a Hugging Face config object (read by attribute) and a state dict, so ``transformers``
is not imported here. GPT-2 stores its projections as ``Conv1D`` with weights ``(in, out)``: they
are transposed to ``nn.Linear``'s ``(out, in)``. BERT's separate query/key/value maps are stacked
into qkv's fused ``in_proj``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from qkv.models.config import DecoderConfig, EncoderConfig
from qkv.models.decoder import DecoderModel
from qkv.models.encoder import EncoderModel

__all__ = ["decoder_config_from_gpt2", "decoder_from_gpt2", "encoder_config_from_bert", "encoder_from_bert"]

_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu",
                "silu": "silu", "swish": "silu"}


def _activation(name: str) -> str:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unsupported Hugging Face activation {name!r}; supported: {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def _strip(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Drop a model prefix ("transformer.", "bert.") when the keys carry it."""
    if any(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return dict(state)


def decoder_config_from_gpt2(hf: Any) -> DecoderConfig:
    """A :class:`DecoderConfig` with the shape and conventions of a ``GPT2Config``."""
    return DecoderConfig(
        vocab_size=hf.vocab_size, num_layers=hf.n_layer, d_model=hf.n_embd, num_heads=hf.n_head,
        d_ff=hf.n_inner or 4 * hf.n_embd, max_len=hf.n_positions, dropout=hf.resid_pdrop,
        attention_dropout=hf.attn_pdrop, positional="learned", norm_first=True, final_norm=True,
        norm_eps=hf.layer_norm_epsilon, activation=_activation(hf.activation_function), scale_embeddings=False,
        tie_embeddings=True, pad_id=None,
    )


def _gpt2_state(sd: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    out = {
        "embed.token.embed.weight": sd["wte.weight"],
        "embed.position.embed.weight": sd["wpe.weight"],
        "decoder.norm.weight": sd["ln_f.weight"],
        "decoder.norm.bias": sd["ln_f.bias"],
    }
    conv = {"self_attn.in_proj": "attn.c_attn", "self_attn.out_proj": "attn.c_proj",
            "ff.w1": "mlp.c_fc", "ff.w2": "mlp.c_proj"}
    norms = {"self_sub.norm": "ln_1", "ff_sub.norm": "ln_2"}
    for i in range(num_layers):
        ours, theirs = f"decoder.layers.{i}.", f"h.{i}."
        for a, b in conv.items():
            out[ours + a + ".weight"] = sd[theirs + b + ".weight"].t()  # Conv1D (in, out) -> Linear (out, in)
            out[ours + a + ".bias"] = sd[theirs + b + ".bias"]
        for a, b in norms.items():
            out[ours + a + ".weight"] = sd[theirs + b + ".weight"]
            out[ours + a + ".bias"] = sd[theirs + b + ".bias"]
    return out


def decoder_from_gpt2(hf_model: nn.Module) -> DecoderModel:
    """A :class:`DecoderModel` with the weights (and outputs) of a ``GPT2LMHeadModel`` / ``GPT2Model``."""
    cfg = decoder_config_from_gpt2(hf_model.config)
    model = DecoderModel(cfg)
    sd = _strip(hf_model.state_dict(), "transformer.")
    model.load_state_dict(_gpt2_state(sd, cfg.num_layers), strict=True)
    return model.to(next(hf_model.parameters()).dtype)


def encoder_config_from_bert(hf: Any) -> EncoderConfig:
    """An :class:`EncoderConfig` with the shape and conventions of a ``BertConfig``."""
    return EncoderConfig(
        vocab_size=hf.vocab_size, num_layers=hf.num_hidden_layers, d_model=hf.hidden_size,
        num_heads=hf.num_attention_heads, d_ff=hf.intermediate_size, max_len=hf.max_position_embeddings,
        dropout=hf.hidden_dropout_prob, attention_dropout=hf.attention_probs_dropout_prob, positional="learned",
        norm_first=False, final_norm=False, norm_eps=hf.layer_norm_eps, activation=_activation(hf.hidden_act),
        scale_embeddings=False, num_segments=hf.type_vocab_size, embedding_norm=True,
        pad_id=hf.pad_token_id, pooling="cls",
    )


def _bert_state(sd: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    out = {
        "embed.token.embed.weight": sd["embeddings.word_embeddings.weight"],
        "embed.position.embed.weight": sd["embeddings.position_embeddings.weight"],
        "embed.segment.embed.weight": sd["embeddings.token_type_embeddings.weight"],
        "embed.norm.weight": sd["embeddings.LayerNorm.weight"],
        "embed.norm.bias": sd["embeddings.LayerNorm.bias"],
    }
    direct = {"self_attn.out_proj": "attention.output.dense", "attn_sub.norm": "attention.output.LayerNorm",
              "ff.w1": "intermediate.dense", "ff.w2": "output.dense", "ff_sub.norm": "output.LayerNorm"}
    for i in range(num_layers):
        ours, theirs = f"encoder.layers.{i}.", f"encoder.layer.{i}."
        for p in ("weight", "bias"):
            qkv = [sd[f"{theirs}attention.self.{n}.{p}"] for n in ("query", "key", "value")]
            out[f"{ours}self_attn.in_proj.{p}"] = torch.cat(qkv, dim=0)  # [W^Q; W^K; W^V]
            for a, b in direct.items():
                out[f"{ours}{a}.{p}"] = sd[f"{theirs}{b}.{p}"]
    return out


def encoder_from_bert(hf_model: nn.Module) -> EncoderModel:
    """An :class:`EncoderModel` with the weights (and hidden states) of a ``BertModel``.

    BERT's pooler (dense + tanh on the first token) and task heads are not converted.
    """
    cfg = encoder_config_from_bert(hf_model.config)
    model = EncoderModel(cfg)
    sd = _strip(hf_model.state_dict(), "bert.")
    model.load_state_dict(_bert_state(sd, cfg.num_layers), strict=True)
    return model.to(next(hf_model.parameters()).dtype)
