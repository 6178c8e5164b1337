"""DecoderModel vs transformers GPT2LMHeadModel, EncoderModel vs BertModel (random small configs, no download)."""

from __future__ import annotations

import pytest
import torch

from qkv.interop import from_transformers

transformers = pytest.importorskip("transformers")


def _randomize(model: torch.nn.Module) -> None:
    """Random LayerNorm affines and biases (HF inits them to 1/0), so a wrong copy cannot pass."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name.lower() or "layernorm" in name.lower() or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))


def _gpt2():
    cfg = transformers.GPT2Config(vocab_size=53, n_positions=24, n_embd=32, n_layer=2, n_head=4,
                                  bos_token_id=0, eos_token_id=0, initializer_range=0.2,
                                  attn_implementation="eager")
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    _randomize(hf)
    return hf


def _bert():
    cfg = transformers.BertConfig(vocab_size=57, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=48, max_position_embeddings=24, type_vocab_size=2,
                                  initializer_range=0.2, attn_implementation="eager")
    hf = transformers.BertModel(cfg, add_pooling_layer=False).eval()
    _randomize(hf)
    return hf


def test_decoder_matches_gpt2_logits():
    hf = _gpt2()
    ours = from_transformers(hf).eval()
    ids = torch.randint(0, 53, (3, 24))
    with torch.no_grad():
        want = hf(ids).logits
        got = ours(ids)
    assert (got - want).abs().max() <= 1e-4


def test_gpt2_parity_is_sensitive_to_the_activation():
    """The tolerance separates gelu_new (tanh) from exact GELU at these weight scales."""
    hf = _gpt2()
    ours = from_transformers(hf).eval()
    for layer in ours.decoder.layers:
        layer.ff.act = torch.nn.functional.gelu
    ids = torch.randint(0, 53, (3, 24))
    with torch.no_grad():
        assert (ours(ids) - hf(ids).logits).abs().max() > 1e-4


def test_decoder_matches_gpt2_with_cache_and_weights():
    hf = _gpt2()
    ours = from_transformers(hf).eval()
    ids = torch.randint(0, 53, (2, 10))
    with torch.no_grad():
        want = hf(ids, output_attentions=True)
        cache = ours.new_cache(2, 10)
        first, w = ours(ids[:, :6], cache=cache, return_weights=True)
        rest = torch.cat([ours(ids[:, t : t + 1], cache=cache) for t in range(6, 10)], dim=1)
    assert (torch.cat([first, rest], dim=1) - want.logits).abs().max() <= 1e-4
    assert (w[1] - want.attentions[1][:, :, :6, :6]).abs().max() <= 1e-5


def test_encoder_matches_bert_hidden_states():
    hf = _bert()
    ours = from_transformers(hf).eval()
    ids = torch.randint(1, 57, (3, 20))
    segments = torch.randint(0, 2, (3, 20))
    real = torch.ones(3, 20, dtype=torch.bool)
    real[1, 15:] = False
    real[2, 7:] = False
    with torch.no_grad():
        want = hf(ids, attention_mask=real.long(), token_type_ids=segments).last_hidden_state
        got = ours(ids, key_padding=real, segments=segments)
    assert (got - want)[real].abs().max() <= 1e-4
