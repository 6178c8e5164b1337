"""Token, positional, segment, rotary and ALiBi modules."""

from __future__ import annotations

import math

import pytest
import torch

from qkv.functional.positional import sinusoidal_table
from qkv.interop.bart import OffsetLearnedPositional
from qkv.modules.attention import MultiHeadAttention
from qkv.modules.embeddings import (
    ALiBi,
    InputEmbedding,
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SegmentEmbedding,
    SinusoidalPositionalEncoding,
    TokenEmbedding,
)


def test_token_embedding_scales_by_sqrt_d():
    emb = TokenEmbedding(10, 16)
    ids = torch.tensor([[1, 2, 9]])
    torch.testing.assert_close(emb(ids), emb.weight[ids] * math.sqrt(16))
    plain = TokenEmbedding(10, 16, scale=False)
    torch.testing.assert_close(plain(ids), plain.weight[ids])


@pytest.mark.parametrize("bad", [[[0, 10]], [[-1, 3]]])
def test_token_ids_out_of_vocab_raise(bad):
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 10\)"):
        TokenEmbedding(10, 4)(torch.tensor(bad))


def test_float_ids_raise():
    with pytest.raises(ValueError, match="integer"):
        TokenEmbedding(10, 4)(torch.zeros(1, 2))


def test_sinusoidal_module_reads_the_table():
    pe = SinusoidalPositionalEncoding(8, 20)
    pos = torch.tensor([[0, 5, 19], [3, 3, 3]])
    torch.testing.assert_close(pe(pos), sinusoidal_table(20, 8)[pos])
    assert pe(torch.arange(4)).shape == (1, 4, 8)
    assert "table" not in pe.state_dict()  # fixed, not a checkpointed parameter


@pytest.mark.parametrize("module", [SinusoidalPositionalEncoding(8, 6), LearnedPositionalEmbedding(6, 8)])
def test_positions_past_the_table_raise(module):
    with pytest.raises(ValueError, match="max_len"):
        module(torch.arange(7))


def test_input_embedding_sums_parts_then_norm():
    tok, pos, seg = TokenEmbedding(11, 8, scale=False), LearnedPositionalEmbedding(10, 8), SegmentEmbedding(2, 8)
    norm = torch.nn.LayerNorm(8)
    emb = InputEmbedding(tok, pos, segment=seg, norm=norm).eval()
    ids, segs = torch.randint(0, 11, (2, 5)), torch.randint(0, 2, (2, 5))
    want = norm(tok.weight[ids] + pos.embed.weight[:5] + seg.embed.weight[segs])
    torch.testing.assert_close(emb(ids, segments=segs), want)
    # default segments are zeros, default positions 0..L-1
    torch.testing.assert_close(emb(ids), norm(tok.weight[ids] + pos.embed.weight[:5] + seg.embed.weight[0]))
    with pytest.raises(ValueError, match="segments must lie"):
        emb(ids, segments=torch.full((2, 5), 2))
    with pytest.raises(ValueError, match="positions must be"):
        emb(ids, positions=torch.arange(4))


def test_rotary_in_attention_is_relative():
    """Shifting every position by the same offset leaves rotary attention unchanged."""
    rope = RotaryEmbedding(4, 64)
    mha = MultiHeadAttention(8, 2, qk_transform=rope).eval()
    x = torch.randn(2, 6, 8)
    q, k = torch.randn(2, 2, 6, 4), torch.randn(2, 2, 6, 4)
    q0, k0 = rope(q, k, 0)
    q9, k9 = rope(q, k, 9)
    torch.testing.assert_close(q0 @ k0.transpose(-1, -2), q9 @ k9.transpose(-1, -2), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(q0, q9)
    out = mha(x, causal=True)
    assert out.shape == (2, 6, 8)


def test_alibi_module_shapes():
    bias = ALiBi(4)(3, 7)
    assert bias.shape == (1, 4, 3, 7)
    assert bias[0, :, -1, -1].abs().max() == 0


def test_input_embedding_offset_reads_contiguous_positions():
    pos = LearnedPositionalEmbedding(10, 8)
    emb = InputEmbedding(TokenEmbedding(11, 8, scale=False), pos).eval()
    ids = torch.randint(0, 11, (2, 3))
    torch.testing.assert_close(emb(ids, offset=4), emb(ids, positions=torch.arange(4, 7)))
    with pytest.raises(ValueError, match="3 tokens at offset 8 is too long"):
        emb(ids, offset=8)


@pytest.mark.parametrize("make", [lambda: LearnedPositionalEmbedding(10, 8), lambda: OffsetLearnedPositional(10, 8)])
def test_contiguous_positions_match_explicit_ones_in_values_and_table_gradient(make):
    """The offset path reads a slice of the table; explicit positions look rows up: same rows, same gradient."""
    pos = make()
    emb = InputEmbedding(TokenEmbedding(11, 8, scale=False), pos).eval()
    ids, w = torch.randint(0, 11, (2, 3)), torch.randn(2, 3, 8)
    grads = []
    for kwargs in ({"offset": 4}, {"positions": torch.arange(4, 7)}):
        pos.zero_grad()
        out = emb(ids, **kwargs)
        (out * w).sum().backward()
        grads.append((out.detach(), pos.embed.weight.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])
    rows = slice(4 + getattr(pos, "offset", 0), 7 + getattr(pos, "offset", 0))
    torch.testing.assert_close(grads[0][1][rows], w.sum(0))  # each position's row gets its gradient summed over B
    assert grads[0][1].abs().sum() == grads[0][1][rows].abs().sum()  # and no other row
