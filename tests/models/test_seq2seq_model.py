"""EncoderDecoderModel vs torch.nn.Transformer, cached decoding, padding invariance, bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qkv.functional.positional import sinusoidal_table
from qkv.models.config import Seq2SeqConfig
from qkv.models.seq2seq import EncoderDecoderModel

D, H, F_, SV, TV = 16, 4, 24, 13, 11


def _model(**kw) -> EncoderDecoderModel:
    cfg = dict(src_vocab_size=SV, tgt_vocab_size=TV, d_model=D, num_heads=H, d_ff=F_, num_encoder_layers=2,
               num_decoder_layers=2, max_len=20, dropout=0.1, pad_id=0)
    return EncoderDecoderModel(Seq2SeqConfig(**{**cfg, **kw})).eval()


def _copy_mha(ours, ref) -> None:
    ours.in_proj.weight.data.copy_(ref.in_proj_weight)
    ours.in_proj.bias.data.copy_(ref.in_proj_bias)
    ours.out_proj.load_state_dict(ref.out_proj.state_dict())


def _copy_from_torch(model: EncoderDecoderModel, ref: nn.Transformer) -> None:
    with torch.no_grad():
        for p in ref.parameters():  # LayerNorms start at (1, 0): randomize so a wrong copy shows
            p.add_(0.1 * torch.randn_like(p))
    for ours, theirs in zip(model.encoder.layers, ref.encoder.layers, strict=True):
        _copy_mha(ours.self_attn, theirs.self_attn)
        ours.attn_sub.norm.load_state_dict(theirs.norm1.state_dict())
        ours.ff_sub.norm.load_state_dict(theirs.norm2.state_dict())
        ours.ff.w1.load_state_dict(theirs.linear1.state_dict())
        ours.ff.w2.load_state_dict(theirs.linear2.state_dict())
    for ours, theirs in zip(model.decoder.layers, ref.decoder.layers, strict=True):
        _copy_mha(ours.self_attn, theirs.self_attn)
        _copy_mha(ours.cross_attn, theirs.multihead_attn)
        for sub, norm in ((ours.self_sub, theirs.norm1), (ours.cross_sub, theirs.norm2), (ours.ff_sub, theirs.norm3)):
            sub.norm.load_state_dict(norm.state_dict())
        ours.ff.w1.load_state_dict(theirs.linear1.state_dict())
        ours.ff.w2.load_state_dict(theirs.linear2.state_dict())
    model.encoder.norm.load_state_dict(ref.encoder.norm.state_dict())
    model.decoder.norm.load_state_dict(ref.decoder.norm.state_dict())


@pytest.mark.filterwarnings("ignore:enable_nested_tensor")
@pytest.mark.parametrize("norm_first", [False, True])
def test_matches_torch_transformer(norm_first):
    model = _model(norm_first=norm_first, final_norm=True)  # nn.Transformer always ends in a LayerNorm
    ref = nn.Transformer(D, H, 2, 2, F_, dropout=0.1, batch_first=True, norm_first=norm_first).eval()
    _copy_from_torch(model, ref)
    src = torch.randint(1, SV, (3, 8))
    src[1, 5:] = 0
    src[2, 2:] = 0
    tgt = torch.randint(1, TV, (3, 6))
    pe = sinusoidal_table(20, D, dtype=torch.float64).float()
    src_e = model.src_embed.token.weight[src] * math.sqrt(D) + pe[:8]
    tgt_e = model.tgt_embed.token.weight[tgt] * math.sqrt(D) + pe[:6]
    pad = src == 0
    hidden = ref(src_e, tgt_e, tgt_mask=nn.Transformer.generate_square_subsequent_mask(6),
                 src_key_padding_mask=pad, memory_key_padding_mask=pad)
    want = F.linear(hidden, model.tgt_embed.token.weight)  # tied output projection
    assert (model(src, tgt) - want).abs().max() <= 1e-5


def test_cached_decode_equals_teacher_forcing():
    model = _model(num_kv_heads=2, positional="rotary")
    src, tgt = torch.randint(1, SV, (2, 7)), torch.randint(1, TV, (2, 5))
    src[0, 4:] = 0
    full = model(src, tgt)
    memory = model.encode(src)
    cache = model.new_cache(2, 5, src_len=7)
    steps = [model.decode(tgt[:, t : t + 1], memory, src != 0, cache=cache) for t in range(5)]
    assert (torch.cat(steps, dim=1) - full).abs().max() <= 1e-5
    assert cache[0].cross_attn.length == 7  # filled once, not appended to


def test_source_padding_leaves_outputs_unchanged():
    model = _model()
    src, tgt = torch.randint(1, SV, (1, 5)), torch.randint(1, TV, (1, 4))
    padded = torch.cat([src, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    assert (model(padded, tgt) - model(src, tgt)).abs().max() <= 1e-5


def test_weights_and_shared_embeddings():
    model = _model(tgt_vocab_size=SV, share_embeddings=True)
    assert model.src_embed.token is model.tgt_embed.token
    src, tgt = torch.randint(1, SV, (2, 7)), torch.randint(1, SV, (2, 5))
    logits, w = model(src, tgt, return_weights=True)
    torch.testing.assert_close(logits, model(src, tgt))
    assert [t.shape for t in w["encoder"]] == [(2, H, 7, 7)] * 2
    assert [t.shape for t in w["self"]] == [(2, H, 5, 5)] * 2
    assert [t.shape for t in w["cross"]] == [(2, H, 5, 7)] * 2


def test_bad_input_raises_clear_errors():
    model = _model()
    src, tgt = torch.randint(1, SV, (2, 7)), torch.randint(1, TV, (3, 5))
    with pytest.raises(ValueError, match="src and tgt batch sizes differ"):
        model(src, tgt)
    with pytest.raises(ValueError, match=r"memory must be \(B, S, D\) = \(3, S, 16\)"):
        model.decode(tgt, model.encode(src))
    with pytest.raises(ValueError, match=r"tgt_vocab_size|ids must lie in \[0, 11\)"):
        model(src, torch.full((2, 3), TV))
    with pytest.raises(ValueError, match="src is too long: 21 tokens"):
        model.encode(torch.ones(1, 21, dtype=torch.long))
    with pytest.raises(ValueError, match=r"d_model \(18\) must be divisible by num_heads \(4\)"):
        _model(d_model=18)
    with pytest.raises(ValueError, match="share_embeddings needs one vocabulary"):
        _model(share_embeddings=True)
