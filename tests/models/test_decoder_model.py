"""DecoderModel properties: causality, cache == full pass, left-padding invariance, weights, bad input."""

from __future__ import annotations

import pytest
import torch

from qkv.models.config import DecoderConfig
from qkv.models.decoder import DecoderModel

POSITIONAL = ["learned", "sinusoidal", "rotary", "alibi", "none"]
V = 17


def _model(positional="learned", **kw) -> DecoderModel:
    cfg = dict(vocab_size=V, d_model=16, num_heads=4, num_layers=2, max_len=24, positional=positional,
               norm_first=True, dropout=0.0, pad_id=0)
    return DecoderModel(DecoderConfig(**{**cfg, **kw})).eval()


@pytest.mark.parametrize("positional", POSITIONAL)
def test_logits_at_t_ignore_later_tokens(positional):
    model = _model(positional)
    ids = torch.randint(1, V, (2, 10))
    changed = ids.clone()
    changed[:, 6:] = torch.randint(1, V, (2, 4))
    a, b = model(ids), model(changed)
    assert (a[:, :6] - b[:, :6]).abs().max() <= 1e-5
    assert (a[:, 6:] - b[:, 6:]).abs().max() > 1e-3  # the change is visible where it should be


@pytest.mark.parametrize("positional", POSITIONAL)
def test_cached_decoding_equals_full_pass(positional):
    model = _model(positional, num_kv_heads=2)
    ids = torch.randint(1, V, (3, 9))
    full = model(ids)
    cache = model.new_cache(3, 9)
    parts = [model(ids[:, :4], cache=cache)] + [model(ids[:, t : t + 1], cache=cache) for t in range(4, 9)]
    assert (torch.cat(parts, dim=1) - full).abs().max() <= 1e-5


@pytest.mark.parametrize("positional", POSITIONAL)
def test_left_padding_leaves_real_tokens_unchanged(positional):
    model = _model(positional)
    ids = torch.randint(1, V, (1, 6))
    pad = 3
    padded = torch.cat([torch.zeros(1, pad, dtype=torch.long), ids], dim=1)  # (1, pad + 6)
    real = padded != 0
    positions = (real.long().cumsum(-1) - 1).clamp_min(0)  # real tokens at 0..5
    want = model(ids)
    got = model(padded, key_padding=real, positions=positions)
    assert (got[:, pad:] - want).abs().max() <= 1e-5
    # and incrementally, with a cache, one token at a time after the padded prompt
    cache = model.new_cache(1, 12)
    model(padded[:, :5], key_padding=real[:, :5], positions=positions[:, :5], cache=cache)
    steps = [model(padded[:, t : t + 1], key_padding=real[:, : t + 1], positions=positions[:, t : t + 1], cache=cache)
             for t in range(5, pad + 6)]
    assert (torch.cat(steps, dim=1) - want[:, 5 - pad :]).abs().max() <= 1e-5


def test_right_padding_in_a_batch_leaves_real_tokens_unchanged():
    model = _model("learned")
    a, b = torch.randint(1, V, (1, 7)), torch.randint(1, V, (1, 4))
    batch = torch.stack([a[0], torch.cat([b[0], torch.zeros(3, dtype=torch.long)])])
    out = model(batch, key_padding=batch != 0)
    assert (out[0] - model(a)[0]).abs().max() <= 1e-5
    assert (out[1, :4] - model(b)[0]).abs().max() <= 1e-5


def test_weights_returned_per_layer_and_logits_unchanged():
    model = _model("rotary")
    ids = torch.randint(1, V, (2, 5))
    logits, weights = model(ids, return_weights=True)
    torch.testing.assert_close(logits, model(ids))
    assert len(weights) == 2 and all(w.shape == (2, 4, 5, 5) for w in weights)
    torch.testing.assert_close(weights[0].sum(-1), torch.ones(2, 4, 5))
    assert torch.all(weights[1].triu(1) == 0)


def test_tied_embeddings_share_one_table():
    model = _model()
    assert model.lm_head is None
    model(torch.randint(1, V, (1, 4))).sum().backward()
    assert model.embed.token.weight.grad is not None
    untied = _model(tie_embeddings=False)
    assert untied.lm_head.weight.shape == (V, 16)


def test_bad_input_raises_clear_errors():
    model = _model()
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 17\)"):
        model(torch.tensor([[1, 17]]))
    with pytest.raises(ValueError, match="too long: 25 tokens at offset 0 exceed max_len 24"):
        model(torch.ones(1, 25, dtype=torch.long))
    cache = model.new_cache(1, 30)
    model(torch.ones(1, 20, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="offset 20 exceed max_len 24"):
        model(torch.ones(1, 5, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match=r"key_padding must be bool of shape \(B, S\) = \(1, 3\)"):
        model(torch.ones(1, 3, dtype=torch.long), key_padding=torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"ids must have shape \(B, L\)"):
        model(torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown attention 'nope'"):
        _model(attention="nope")


def test_gradcheck_tiny_decoder():
    model = _model("rotary", d_model=4, num_heads=2, num_layers=1, d_ff=6).double()
    x = torch.randn(1, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda h: model.logits(model.decoder(h)), (x,))
