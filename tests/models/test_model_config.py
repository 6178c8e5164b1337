"""Config dataclasses (derived fields, validation, JSON round trip) and the model registry."""

from __future__ import annotations

import json

import pytest
import torch

from qkv.models import registry
from qkv.models.config import DecoderConfig, EncoderConfig, RNNSeq2SeqConfig, Seq2SeqConfig
from qkv.models.decoder import DecoderModel
from qkv.models.seq2seq import EncoderDecoderModel

CONFIGS = [
    DecoderConfig(vocab_size=65, d_model=32, num_heads=4, num_layers=2, positional="rotary",
                  attention_options={"example": 1}),
    EncoderConfig(vocab_size=30, d_model=16, num_heads=2, num_segments=2, num_classes=2, pooling="cls"),
    Seq2SeqConfig(src_vocab_size=40, tgt_vocab_size=50, num_kv_heads=2, norm_first=True),
    RNNSeq2SeqConfig(src_vocab_size=20, cell="lstm", attention=False),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: type(c).__name__)
def test_json_round_trip(cfg):
    again = type(cfg).from_json(json.dumps(json.loads(cfg.to_json())))
    assert again == cfg
    assert "head_dim" not in cfg.to_dict()


def test_derived_fields():
    cfg = Seq2SeqConfig(src_vocab_size=100, d_model=64, num_heads=8)
    assert (cfg.d_ff, cfg.head_dim, cfg.num_kv_heads, cfg.tgt_vocab_size) == (256, 8, 8, 100)
    assert cfg.attention_dropout == cfg.dropout and cfg.final_norm is False
    assert DecoderConfig(vocab_size=5, norm_first=True).final_norm is True
    assert RNNSeq2SeqConfig(src_vocab_size=9, hidden_size=7).attention_dim == 7


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(d_model=30, num_heads=4), r"d_model \(30\) must be divisible by num_heads \(4\)"),
        (dict(num_kv_heads=3), r"num_heads \(8\) must be a multiple of num_kv_heads \(3\)"),
        (dict(positional="relative"), "positional must be one of"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\), got 1.0"),
        (dict(activation="tanh"), "activation must be one of"),
        (dict(pad_id=10), r"pad_id \(10\) must lie in \[0, vocab_size=10\)"),
        (dict(num_layers=0), "num_layers must be a positive int, got 0"),
    ],
)
def test_validation_errors_print_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DecoderConfig(**{"vocab_size": 10, **kwargs})


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match=r"unknown DecoderConfig fields \['n_layer'\]"):
        DecoderConfig.from_dict({"vocab_size": 10, "n_layer": 3})


def test_registry_base_transformer_is_the_paper_model():
    cfg = registry.config("transformer-base")
    assert isinstance(cfg, Seq2SeqConfig)
    assert (cfg.num_encoder_layers, cfg.num_decoder_layers, cfg.d_model, cfg.num_heads, cfg.d_ff, cfg.dropout) == (
        6, 6, 512, 8, 2048, 0.1)
    assert cfg.positional == "sinusoidal" and not cfg.norm_first and cfg.scale_embeddings


def test_registry_builds_models_with_overrides():
    gpt = registry.build("gpt-char-small")
    assert isinstance(gpt, DecoderModel)
    c = gpt.config
    assert (c.num_layers, c.d_model, c.num_heads, c.max_len, c.vocab_size) == (4, 128, 4, 64, 65)
    small = registry.build("transformer-tiny", src_vocab_size=20, tgt_vocab_size=30)
    assert isinstance(small, EncoderDecoderModel)
    logits = small(torch.randint(1, 20, (2, 5)), torch.randint(1, 30, (2, 4)))
    assert logits.shape == (2, 4, 30)
    for name in registry.names():
        assert type(registry.config(name)).__name__.endswith("Config")
    with pytest.raises(ValueError, match="unknown model 'gpt-5'"):
        registry.build("gpt-5")
