"""Attention modules against torch.nn.MultiheadAttention and float64 formulas."""

import math

import pytest
import torch
from torch import nn

from qkv.functional import causal_mask, padding_mask
from qkv.modules import CausalSelfAttention, KVCache, MultiHeadAttention, SelfAttention, mask_from_torch


def torch_pair(D=16, H=4, bias=True):
    ref = nn.MultiheadAttention(D, H, batch_first=True, bias=bias).eval()
    with torch.no_grad():  # non-zero biases so they are checked too
        if bias:
            ref.in_proj_bias.normal_()
            ref.out_proj.bias.normal_()
    return ref, MultiHeadAttention.from_torch(ref).eval()


def grads(module, inputs):
    return [p.grad.clone() for p in module.parameters()] + [x.grad.clone() for x in inputs]


@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("masks", ["none", "key_padding", "attn_mask", "both", "float_attn"])
def test_from_torch_matches_outputs_weights_and_gradients(cross, masks):
    B, L, S, D, H = 3, 5, 7 if cross else 5, 16, 4
    ref, ours = torch_pair(D, H)
    x = torch.randn(B, L, D, requires_grad=True)
    ctx = torch.randn(B, S, D, requires_grad=True) if cross else x
    kpm = am = None
    if masks in ("key_padding", "both"):
        kpm = ~padding_mask(torch.tensor([S, S - 2, 1]), max_len=S)[:, 0, 0]  # torch: True = ignore
    if masks in ("attn_mask", "both"):
        am = torch.rand(L, S) > 0.7
        am[:, 0] = False
    if masks == "float_attn":
        am = torch.randn(L, S)
    for avg in (True, False):
        ref.zero_grad(), ours.zero_grad()
        for t in (x, ctx):
            t.grad = None
        y_ref, w_ref = ref(x, ctx, ctx, key_padding_mask=kpm, attn_mask=am, need_weights=True, average_attn_weights=avg)
        mask, bias = mask_from_torch(am, kpm)
        y, w = ours(x, None if not cross else ctx, mask=mask, bias=bias, return_weights=True)
        w = w.mean(1) if avg else w
        torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(w, w_ref, atol=1e-6, rtol=1e-5)
        (y_ref.square().sum() + w_ref.sum()).backward()
        g_ref = grads(ref, (x, ctx) if cross else (x,))
        for t in (x, ctx):
            t.grad = None
        (y.square().sum() + w.sum()).backward()
        for a, b in zip(grads(ours, (x, ctx) if cross else (x,)), g_ref, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # also without weights: the fused path
    y_ref, _ = ref(x, ctx, ctx, key_padding_mask=kpm, attn_mask=am, need_weights=False)
    mask, bias = mask_from_torch(am, kpm)
    torch.testing.assert_close(ours(x, ctx if cross else None, mask=mask, bias=bias), y_ref, atol=1e-5, rtol=1e-5)


def test_from_torch_3d_attn_mask_and_no_bias():
    B, L, D, H = 2, 4, 8, 2
    ref, ours = torch_pair(D, H, bias=False)
    x = torch.randn(B, L, D)
    am = torch.rand(B * H, L, L) > 0.6
    am[..., 0] = False
    kpm = torch.zeros(B, L, dtype=torch.bool)
    y_ref, _ = ref(x, x, x, attn_mask=am, key_padding_mask=kpm)
    mask, _ = mask_from_torch(am, kpm)
    torch.testing.assert_close(ours(x, mask=mask), y_ref, atol=1e-5, rtol=1e-5)


def test_from_torch_rejects_unsupported():
    with pytest.raises(ValueError, match="kdim == vdim == embed_dim"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(8, 2, kdim=4, vdim=4))


def test_grouped_kv_heads_equal_full_heads_with_shared_projections():
    D, H, H_kv = 16, 4, 2
    gqa = MultiHeadAttention(D, H, num_kv_heads=H_kv).eval()
    full = MultiHeadAttention(D, H).eval()
    E = D // H
    with torch.no_grad():
        wq, wk, wv = gqa.in_proj.weight.split([D, H_kv * E, H_kv * E])
        bq, bk, bv = gqa.in_proj.bias.split([D, H_kv * E, H_kv * E])
        rep = lambda t: t.view(H_kv, E, *t.shape[1:]).repeat_interleave(H // H_kv, 0).reshape(H * E, *t.shape[1:])  # noqa: E731
        full.in_proj.weight.copy_(torch.cat([wq, rep(wk), rep(wv)]))
        full.in_proj.bias.copy_(torch.cat([bq, rep(bk), rep(bv)]))
        full.out_proj.load_state_dict(gqa.out_proj.state_dict())
    x = torch.randn(2, 6, D)
    mask = padding_mask(torch.tensor([6, 3]))
    torch.testing.assert_close(gqa(x, mask=mask, causal=True), full(x, mask=mask, causal=True), atol=1e-6, rtol=1e-5)


def test_self_attention_single_head_formula_float64():
    torch.set_default_dtype(torch.float64)
    try:
        m = SelfAttention(6, d_head=4)
        x = torch.randn(2, 5, 6)
        y, w = m(x, return_weights=True)
        q, k, v = m.w_q(x), m.w_k(x), m.w_v(x)
        w_ref = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(4), -1)
        torch.testing.assert_close(w, w_ref)
        torch.testing.assert_close(y, w_ref @ v)
        yc = m(x, causal=True)
        torch.testing.assert_close(yc[:, 0], v[:, 0])  # first token can only see itself
        assert torch.autograd.gradcheck(lambda t: m(t, causal=True), (x[:1, :3].clone().requires_grad_(),))
    finally:
        torch.set_default_dtype(torch.float32)


def test_module_permutation_equivariance_and_causality():
    m = MultiHeadAttention(16, 4).eval()
    x = torch.randn(2, 7, 16)
    perm = torch.randperm(7)
    torch.testing.assert_close(m(x[:, perm]), m(x)[:, perm], atol=1e-6, rtol=1e-5)
    c = CausalSelfAttention(16, 4).eval()
    y = c(x)
    x2 = x.clone()
    x2[:, 4:] = torch.randn(2, 3, 16)
    torch.testing.assert_close(c(x2)[:, :4], y[:, :4])


def test_incremental_decoding_with_cache_equals_full_causal():
    m = MultiHeadAttention(16, 4, num_kv_heads=2).eval()
    x = torch.randn(2, 9, 16)
    full = m(x, causal=True)
    cache = KVCache(2, 2, 16, 4)
    steps = [m(x[:, :4], causal=True, cache=cache)]  # a prompt block, then one token at a time
    steps += [m(x[:, t : t + 1], causal=True, cache=cache) for t in range(4, 9)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-6, rtol=1e-5)


def test_cross_attention_static_cache_is_filled_once():
    m = MultiHeadAttention(8, 2).eval()
    x, ctx = torch.randn(1, 3, 8), torch.randn(1, 5, 8)
    cache = KVCache(1, 2, 5, 4, static=True)
    first = m(x[:, :1], ctx, cache=cache)
    assert cache.length == 5
    later = m(x[:, 1:], None, cache=cache)  # context no longer needed
    torch.testing.assert_close(torch.cat([first, later], 1), m(x, ctx), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "build, call, match",
    [
        (lambda: MultiHeadAttention(10, 3), None, r"d_model \(10\) must be divisible by num_heads \(3\)"),
        (lambda: MultiHeadAttention(12, 4, num_kv_heads=3), None, r"num_heads \(4\) must be a multiple of num_kv_heads \(3\)"),
        (lambda: MultiHeadAttention(8, 2), lambda m: m(torch.randn(2, 8)), r"x must have shape \(B, L, 8\), got \(2, 8\)"),
        (lambda: MultiHeadAttention(8, 2), lambda m: m(torch.randn(2, 3, 6)), r"x must have shape \(B, L, 8\), got \(2, 3, 6\)"),
        (lambda: MultiHeadAttention(8, 2), lambda m: m(torch.randn(2, 3, 8), torch.randn(3, 4, 8)), r"context batch 3 != x batch 2"),
        (lambda: MultiHeadAttention(8, 2), lambda m: m(torch.randn(2, 3, 8), mask=torch.ones(3, 3)), r"mask must be torch.bool"),
        (lambda: MultiHeadAttention(8, 2), lambda m: m(torch.randn(2, 3, 8), mask=causal_mask(4)), r"mask of shape \(1, 1, 4, 4\) does not broadcast"),
    ],
)
def test_module_bad_input(build, call, match):
    with pytest.raises(ValueError, match=match):
        m = build()
        call(m)
