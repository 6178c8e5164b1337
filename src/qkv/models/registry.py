"""Named model configurations: ``build("transformer-base", src_vocab_size=37000)``.

Each entry is a function ``(**overrides) -> config``; :func:`build` turns the config into a model
(the model class follows from the config type, so there is no class lookup by string).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from qkv.models.config import DecoderConfig, EncoderConfig, RNNSeq2SeqConfig, Seq2SeqConfig
from qkv.models.decoder import DecoderModel
from qkv.models.encoder import EncoderModel
from qkv.models.rnn_seq2seq import RNNSeq2Seq
from qkv.models.seq2seq import EncoderDecoderModel

__all__ = ["register", "config", "build", "build_from_config", "names", "REGISTRY"]

Config = DecoderConfig | EncoderConfig | Seq2SeqConfig | RNNSeq2SeqConfig
REGISTRY: dict[str, Callable[..., Config]] = {}


def register(name: str) -> Callable[[Callable[..., Config]], Callable[..., Config]]:
    """Decorator: make a config function available by name."""

    def deco(fn: Callable[..., Config]) -> Callable[..., Config]:
        if name in REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        REGISTRY[name] = fn
        return fn

    return deco


def names() -> list[str]:
    return sorted(REGISTRY)


def config(name: str, **overrides: Any) -> Config:
    """The named configuration, with fields replaced by ``overrides``."""
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {names()}")
    return REGISTRY[name](**overrides)


def build_from_config(cfg: Config) -> nn.Module:
    """The model class that matches the config's type."""
    for cfg_type, model in (
        (Seq2SeqConfig, EncoderDecoderModel),
        (DecoderConfig, DecoderModel),
        (EncoderConfig, EncoderModel),
        (RNNSeq2SeqConfig, RNNSeq2Seq),
    ):
        if isinstance(cfg, cfg_type):
            return model(cfg)
    raise ValueError(f"no model for config of type {type(cfg).__name__}")


def build(name: str, **overrides: Any) -> nn.Module:
    """Build the named model, e.g. ``build("gpt-char-small", vocab_size=65)``."""
    return build_from_config(config(name, **overrides))


def _with(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    return {**defaults, **overrides}


@register("transformer-base")
def transformer_base(**kw: Any) -> Seq2SeqConfig:
    """The paper's base model: 6+6 layers, d_model 512, 8 heads, d_ff 2048, dropout 0.1, post-LN,
    sinusoidal positions, scaled and tied embeddings (shared vocabulary of 37000 BPE tokens)."""
    base = dict(src_vocab_size=37000, d_model=512, num_heads=8, d_ff=2048, dropout=0.1,
                num_encoder_layers=6, num_decoder_layers=6, share_embeddings=True, tie_output=True)
    return Seq2SeqConfig(**_with(base, kw))


@register("transformer-big")
def transformer_big(**kw: Any) -> Seq2SeqConfig:
    """The paper's big model: d_model 1024, 16 heads, d_ff 4096, dropout 0.3."""
    base = dict(src_vocab_size=37000, d_model=1024, num_heads=16, d_ff=4096, dropout=0.3, share_embeddings=True)
    return Seq2SeqConfig(**_with(base, kw))


@register("transformer-small")
def transformer_small(**kw: Any) -> Seq2SeqConfig:
    """A small translation model for Multi30k-sized data: 3+3 layers, d 256, 4 heads, d_ff 1024."""
    base = dict(src_vocab_size=8000, d_model=256, num_heads=4, d_ff=1024, dropout=0.1,
                num_encoder_layers=3, num_decoder_layers=3, max_len=256)
    return Seq2SeqConfig(**_with(base, kw))


@register("transformer-tiny")
def transformer_tiny(**kw: Any) -> Seq2SeqConfig:
    """For synthetic tasks (dates, copy/reverse) and tests: 2+2 layers, d 64, 4 heads."""
    base = dict(src_vocab_size=64, d_model=64, num_heads=4, d_ff=256, dropout=0.0,
                num_encoder_layers=2, num_decoder_layers=2, max_len=128)
    return Seq2SeqConfig(**_with(base, kw))


@register("gpt-char-small")
def gpt_char_small(**kw: Any) -> DecoderConfig:
    """Character-level GPT (Shakespeare): 4 layers, d 128, 4 heads, block 64, pre-LN, learned positions."""
    base = dict(vocab_size=65, num_layers=4, d_model=128, num_heads=4, max_len=64, dropout=0.1,
                positional="learned", norm_first=True, activation="gelu", scale_embeddings=False, pad_id=None)
    return DecoderConfig(**_with(base, kw))


@register("gpt2-small")
def gpt2_small(**kw: Any) -> DecoderConfig:
    """GPT-2 124M's shape: 12 layers, d 768, 12 heads, context 1024, gelu_tanh, tied embeddings."""
    base = dict(vocab_size=50257, num_layers=12, d_model=768, num_heads=12, max_len=1024, dropout=0.1,
                positional="learned", norm_first=True, activation="gelu_tanh", scale_embeddings=False, pad_id=None)
    return DecoderConfig(**_with(base, kw))


@register("encoder-small")
def encoder_small(**kw: Any) -> EncoderConfig:
    """A small BERT-like classifier (SST-2): 4 layers, d 256, 4 heads, GELU, learned positions, CLS pooling."""
    base = dict(vocab_size=8000, num_layers=4, d_model=256, num_heads=4, max_len=256, dropout=0.1,
                positional="learned", activation="gelu", scale_embeddings=False, embedding_norm=True,
                pooling="cls", num_classes=2, norm_eps=1e-12)
    return EncoderConfig(**_with(base, kw))


@register("rnn-attention-small")
def rnn_attention_small(**kw: Any) -> RNNSeq2SeqConfig:
    """Bahdanau-style RNNsearch at small scale: bidirectional GRU 256, additive attention."""
    base = dict(src_vocab_size=8000, embed_dim=256, hidden_size=256, attention=True, cell="gru")
    return RNNSeq2SeqConfig(**_with(base, kw))


@register("rnn-small")
def rnn_small(**kw: Any) -> RNNSeq2SeqConfig:
    """The no-attention baseline of ``rnn-attention-small`` (fixed context vector)."""
    return rnn_attention_small(**_with(dict(attention=False), kw))
