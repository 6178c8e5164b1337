"""qkv.functional.linear: linear attention equals its explicit quadratic form; FAVOR+ approaches softmax."""

from __future__ import annotations

import pytest
import torch

from qkv.functional import (
    attention_math,
    draw_orthogonal_features,
    elu_feature_map,
    favor_features,
    kernel_attention,
    linear_attention,
    linear_attention_step,
)
from qkv.functional.linear import kernel_attention_quadratic


def features(B=2, H=4, H_kv=2, L=37, S=45, E=8, dtype=torch.float64):
    q = torch.randn(B, H, L, E, dtype=dtype, requires_grad=True)
    k = torch.randn(B, H_kv, S, E, dtype=dtype, requires_grad=True)
    v = torch.randn(B, H_kv, S, E, dtype=dtype, requires_grad=True)
    return q, k, v


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [dict(), dict(L=45, S=45), dict(L=50, S=20), dict(H=3, H_kv=1)])
@pytest.mark.parametrize("chunk", [1, 8, 128])
def test_equals_explicit_quadratic_form(causal, shape, chunk):
    q, k, v = features(**shape)
    kp = torch.ones(2, k.shape[2], dtype=torch.bool)
    kp[0, 11:] = False
    out = kernel_attention(elu_feature_map(q), elu_feature_map(k), v, causal=causal, key_padding=kp, chunk=chunk)
    ref = kernel_attention_quadratic(elu_feature_map(q), elu_feature_map(k), v, causal=causal, key_padding=kp)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-10)
    g = torch.randn_like(out)
    ref_grads = torch.autograd.grad(ref, (q, k, v), g)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), g), ref_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    # the map applied inside, block by block (blocks of 7 rows: several, the last one short)
    streamed = kernel_attention(q, k, v, causal=causal, key_padding=kp, chunk=chunk, feature_map=elu_feature_map,
                                block=7)
    torch.testing.assert_close(streamed, ref, atol=1e-10, rtol=1e-10)
    for a, b in zip(torch.autograd.grad(streamed, (q, k, v), g), ref_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    with torch.no_grad():  # and without autograd
        torch.testing.assert_close(kernel_attention(q, k, v, causal=causal, key_padding=kp, feature_map=elu_feature_map,
                                                    block=7), ref, atol=1e-10, rtol=1e-10)


def test_quadratic_form_is_normalised_kernel_attention():
    """Independent check of the reference itself: weights = phi(q) phi(k)^T normalised per row."""
    q, k, v = features(H=2, H_kv=2, L=4, S=4)
    pq, pk = elu_feature_map(q), elu_feature_map(k)
    a = torch.einsum("bhlf,bhsf->bhls", pq, pk).tril()
    expect = torch.einsum("bhls,bhse->bhle", a / a.sum(-1, keepdim=True), v)
    torch.testing.assert_close(kernel_attention_quadratic(pq, pk, v, causal=True), expect, atol=1e-5, rtol=1e-5)


def test_rnn_step_equals_causal_linear_attention():
    q, k, v = features(L=23, S=23)
    pq, pk = elu_feature_map(q), elu_feature_map(k)
    full = kernel_attention(pq, pk, v, causal=True, chunk=5)
    state, outs = None, []
    for t in range(23):
        out, state = linear_attention_step(pq[:, :, t : t + 1], pk[:, :, t : t + 1], v[:, :, t : t + 1], state)
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs, dim=2), full, atol=1e-12, rtol=1e-12)
    kv, z = state
    assert kv.shape == (2, 2, 8, 8) and z.shape == (2, 2, 8)  # O(1) in the number of steps


def test_performer_error_falls_as_features_grow():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 4, 64, 16, dtype=torch.float64) * s for s in (0.5, 0.5, 1.0))
    ref, _ = attention_math(q, k, v)
    errors = []
    for m in (16, 128, 1024):
        err = 0.0
        for seed in range(4):
            proj = draw_orthogonal_features(m, 16, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
            err += (linear_attention(q, k, v, projection=proj) - ref).abs().mean().item() / 4
        errors.append(err)
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.35 * errors[0]  # roughly 1/sqrt(F): 8x the features -> ~1/2.8 the error


def test_orthogonal_features_and_positivity():
    w = draw_orthogonal_features(20, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert w.shape == (20, 8)
    block = w[:8] / w[:8].norm(dim=1, keepdim=True)
    torch.testing.assert_close(block @ block.T, torch.eye(8, dtype=torch.float64), atol=1e-10, rtol=0)
    x = torch.randn(2, 3, 5, 8) * 4
    assert (favor_features(x, w.float(), is_query=True) > 0).all()
    assert (elu_feature_map(x) > 0).all()


def test_fully_masked_rows_give_zeros_not_nan():
    q, k, v = features(L=6, S=6)
    kp = torch.zeros(2, 6, dtype=torch.bool)
    kp[1] = True
    for causal in (False, True):
        out = kernel_attention(elu_feature_map(q), elu_feature_map(k), v, causal=causal, key_padding=kp)
        assert torch.isfinite(out).all() and out[0].abs().max() == 0
    q2, k2, v2 = features(L=8, S=3)  # causal with L > S: the first 5 queries see no key
    out = kernel_attention(elu_feature_map(q2), elu_feature_map(k2), v2, causal=True)
    assert torch.isfinite(out).all() and out[:, :, :5].abs().max() == 0


def test_bad_input_names_argument_and_value():
    q, k, v = features()
    with pytest.raises(ValueError, match=r"num_features must be an int >= 1, got 0"):
        draw_orthogonal_features(0, 8)
    with pytest.raises(ValueError, match=r"chunk must be an int >= 1, got 0"):
        kernel_attention(q, k, v, chunk=0)
    with pytest.raises(ValueError, match=r"block must be an int >= 1, got 0"):
        kernel_attention(q, k, v, block=0)
    with pytest.raises(ValueError, match=r"projection must be \(F, E=8\), got \(4, 5\)"):
        favor_features(q, torch.randn(4, 5), is_query=True)
    with pytest.raises(ValueError, match=r"key_padding must be bool \(B, S\) = \(2, 45\)"):
        kernel_attention(q, k, v, key_padding=torch.ones(2, 44, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"a step takes one position"):
        linear_attention_step(q, k, v)
