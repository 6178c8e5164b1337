"""Additive (Bahdanau) and Luong attention against explicit float64 loops."""

import pytest
import torch

from qkv.modules import AdditiveAttention, LuongAttention


@pytest.fixture
def f64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def test_additive_matches_the_formula(f64):
    att = AdditiveAttention(query_dim=3, key_dim=4, hidden_dim=5)
    s = torch.randn(2, 3)  # decoder states
    h = torch.randn(2, 6, 4)  # encoder annotations
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    c, a = att(s, h, mask=mask)
    W, U, b, v = att.w_query.weight, att.w_key.weight, att.w_key.bias, att.v
    for bi in range(2):
        n = int(mask[bi].sum())
        e = torch.stack([v @ torch.tanh(W @ s[bi] + U @ h[bi, j] + b) for j in range(n)])
        alpha = torch.softmax(e, 0)
        torch.testing.assert_close(a[bi, :n], alpha)
        torch.testing.assert_close(c[bi], (alpha[:, None] * h[bi, :n]).sum(0))
    assert torch.equal(a[1, 4:], torch.zeros(2))
    torch.testing.assert_close(a.sum(-1), torch.ones(2))


def test_additive_multi_step_and_cached_keys(f64):
    att = AdditiveAttention(3, 4, 5)
    s, h = torch.randn(2, 7, 3), torch.randn(2, 6, 4)
    c, a = att(s, h)
    assert c.shape == (2, 7, 4) and a.shape == (2, 7, 6)
    c2, a2 = att(s, h, keys_proj=att.project_keys(h))
    torch.testing.assert_close(c2, c)
    for t in range(7):  # one step at a time equals all steps at once
        ct, at = att(s[:, t], h)
        torch.testing.assert_close(ct, c[:, t])
        torch.testing.assert_close(at, a[:, t])
    assert torch.autograd.gradcheck(lambda q, k: att(q, k)[0], (s[:1, :2].clone().requires_grad_(), h[:1, :3].clone().requires_grad_()))


def test_fully_masked_source_gives_zero_context():
    att = AdditiveAttention(3, 4, 5)
    c, a = att(torch.randn(1, 3), torch.randn(1, 6, 4), mask=torch.zeros(1, 6, dtype=torch.bool))
    assert torch.equal(c, torch.zeros(1, 4)) and torch.equal(a, torch.zeros(1, 6))


@pytest.mark.parametrize("method", ["dot", "general"])
def test_luong_matches_the_formula(method, f64):
    att = LuongAttention(4, method=method)
    s, h = torch.randn(2, 3, 4), torch.randn(2, 5, 4)
    c, a = att(s, h)
    keys = h if method == "dot" else h @ att.w.weight.T
    e = torch.einsum("bld,bsd->bls", s, keys)
    torch.testing.assert_close(a, torch.softmax(e, -1))
    torch.testing.assert_close(c, torch.softmax(e, -1) @ h)


def test_alignment_bad_input():
    att = AdditiveAttention(3, 4, 5)
    with pytest.raises(ValueError, match=r"query must be \(B, 3\) or \(B, L, 3\), got \(2, 4\)"):
        att(torch.randn(2, 4), torch.randn(2, 6, 4))
    with pytest.raises(ValueError, match=r"keys must be \(B=2, S, 4\), got \(3, 6, 4\)"):
        att(torch.randn(2, 3), torch.randn(3, 6, 4))
    with pytest.raises(ValueError, match=r"mask must be bool \(B, S\) = \(2, 6\)"):
        att(torch.randn(2, 3), torch.randn(2, 6, 4), mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="method must be 'dot' or 'general'"):
        LuongAttention(4, method="concat")
    with pytest.raises(ValueError, match="dot scores need query_dim == key_dim"):
        LuongAttention(4, 3, method="dot")
