"""EncoderBlock / DecoderBlock / stacks against torch.nn.TransformerEncoderLayer / DecoderLayer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qkv.functional.masks import padding_mask
from qkv.modules.attention import MultiHeadAttention
from qkv.modules.blocks import DecoderBlock, DecoderStack, EncoderBlock, LayerCache
from qkv.modules.feed_forward import FeedForward
from qkv.modules.kv_cache import KVCache

D, H, F_, B, L, S = 16, 4, 24, 3, 5, 7


def _copy_mha(ours: MultiHeadAttention, ref: nn.MultiheadAttention) -> None:
    with torch.no_grad():
        ours.in_proj.weight.copy_(ref.in_proj_weight)
        ours.in_proj.bias.copy_(ref.in_proj_bias)
        ours.out_proj.weight.copy_(ref.out_proj.weight)
        ours.out_proj.bias.copy_(ref.out_proj.bias)


def _copy_ff_and_norms(ours, ref, subs) -> None:
    ours.ff.w1.load_state_dict(ref.linear1.state_dict())
    ours.ff.w2.load_state_dict(ref.linear2.state_dict())
    for sub, norm in zip(subs, (ref.norm1, ref.norm2, getattr(ref, "norm3", None)), strict=False):
        sub.norm.load_state_dict(norm.state_dict())


def _perturb_norms(ref: nn.Module) -> None:
    """LayerNorm starts at (1, 0); random affine parameters make the copy test able to fail."""
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.normal_(1.0, 0.2)
                m.bias.normal_(0.0, 0.2)


def _encoder_pair(norm_first: bool, activation: str = "relu"):
    ref = nn.TransformerEncoderLayer(D, H, F_, dropout=0.1, activation=activation, batch_first=True,
                                     norm_first=norm_first).eval()
    _perturb_norms(ref)
    ours = EncoderBlock(MultiHeadAttention(D, H, dropout=0.1), FeedForward(D, F_, activation=activation, dropout=0.1),
                        norm_first=norm_first, dropout=0.1).eval()
    _copy_mha(ours.self_attn, ref.self_attn)
    _copy_ff_and_norms(ours, ref, (ours.attn_sub, ours.ff_sub))
    return ours, ref


def _decoder_pair(norm_first: bool):
    ref = nn.TransformerDecoderLayer(D, H, F_, dropout=0.1, batch_first=True, norm_first=norm_first).eval()
    _perturb_norms(ref)
    ours = DecoderBlock(MultiHeadAttention(D, H), FeedForward(D, F_), cross_attn=MultiHeadAttention(D, H),
                        norm_first=norm_first, dropout=0.1).eval()
    _copy_mha(ours.self_attn, ref.self_attn)
    _copy_mha(ours.cross_attn, ref.multihead_attn)
    _copy_ff_and_norms(ours, ref, (ours.self_sub, ours.cross_sub, ours.ff_sub))
    return ours, ref


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_block_matches_torch(norm_first, activation):
    ours, ref = _encoder_pair(norm_first, activation)
    x = torch.randn(B, L, D)
    lengths = torch.tensor([L, 3, 1])
    real = padding_mask(lengths, max_len=L)  # (B, 1, 1, L)
    want = ref(x, src_key_padding_mask=~real[:, 0, 0])
    got = ours(x, mask=real)
    keep = real[:, 0, 0]  # torch's fast path may zero padded rows; compare real tokens
    assert (got - want)[keep].abs().max() <= 1e-5


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_block_matches_torch(norm_first):
    ours, ref = _decoder_pair(norm_first)
    x, memory = torch.randn(B, L, D), torch.randn(B, S, D)
    src_real = padding_mask(torch.tensor([S, 4, 2]), max_len=S)  # (B, 1, 1, S)
    causal = nn.Transformer.generate_square_subsequent_mask(L)
    want = ref(x, memory, tgt_mask=causal, memory_key_padding_mask=~src_real[:, 0, 0])
    got = ours(x, memory, memory_mask=src_real)
    assert (got - want).abs().max() <= 1e-5


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_block_cached_steps_equal_full_pass(norm_first):
    block, _ = _decoder_pair(norm_first)
    x, memory = torch.randn(B, L, D), torch.randn(B, S, D)
    full = block(x, memory)
    cache = KVCache(B, H, L, D // H)
    cross = KVCache(B, H, S, D // H, static=True)
    steps = [block(x[:, t : t + 1], memory, cache=cache, cross_cache=cross) for t in range(L)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_weights_are_returned_not_stored():
    block, _ = _decoder_pair(False)
    x, memory = torch.randn(B, L, D), torch.randn(B, S, D)
    out, w = block(x, memory, return_weights=True)
    torch.testing.assert_close(out, block(x, memory))
    assert w["self"].shape == (B, H, L, L) and w["cross"].shape == (B, H, L, S)
    assert torch.all(w["self"].triu(1) == 0)  # causal
    torch.testing.assert_close(w["cross"].sum(-1), torch.ones(B, H, L))
    assert not any(isinstance(v, torch.Tensor) and v.shape == w["self"].shape for v in vars(block).values())


def test_decoder_block_without_memory_raises():
    block, _ = _decoder_pair(False)
    with pytest.raises(ValueError, match="cross-attention"):
        block(torch.randn(B, L, D))


def test_stack_caches_must_match_layers():
    stack = DecoderStack([DecoderBlock(MultiHeadAttention(D, H), FeedForward(D)) for _ in range(2)])
    with pytest.raises(ValueError, match="one per layer"):
        stack(torch.randn(B, 1, D), caches=[LayerCache(KVCache(B, H, 4, D // H))])


def test_encoder_block_gradcheck():
    block = EncoderBlock(MultiHeadAttention(4, 2), FeedForward(4, 6), norm_first=True).double()
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    mask = padding_mask(torch.tensor([3, 2]), max_len=3)
    assert torch.autograd.gradcheck(lambda t: block(t, mask=mask), (x,))
