"""Attention-weight dropout in chunked_attention, against float64 dense math with the same keep-mask.

The masks are drawn per (query block, key block) from one seed per call, so they cannot coincide with
attention_math's single ``torch.rand`` over ``(B, H, L, S)``. The exactness test therefore rebuilds the call's
dense mask from the documented pieces the module states it uses (``dropout_seed``: the call's one draw from its
generator; ``dropout_keep``: one block's mask) and computes ``(keep / (1 - p) * softmax) @ V`` in float64 with
the plain math weights (:func:`attention_weights`). That the masks themselves are Bernoulli(1 - p), differ from
block to block and from call to call is checked from chunked_attention's outputs alone (uniform weights and
one-hot values make the output the mask itself), and gradcheck checks that the backward sees the forward's masks.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

import qkv.kernels
from qkv.functional import attention_weights, chunked_attention, scaled_dot_product_attention
from qkv.functional.chunked import dropout_keep, dropout_seed


@pytest.fixture(autouse=True)
def _reference():
    """The torch-op reference (qkv.kernels declines dropout anyway)."""
    with qkv.kernels.disabled():
        yield


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def dense_keep(seed, p, B, H, L, S, bq, bk) -> torch.Tensor:
    """The ``(B, H, L, S)`` keep-mask of a call with ``seed`` and blocks ``(bq, bk)``, assembled from its blocks."""
    keep = torch.empty(B, H, L, S, dtype=torch.bool)
    for qs in range(0, L, bq):
        for ks in range(0, S, bk):
            qe, ke = min(qs + bq, L), min(ks + bk, S)
            keep[:, :, qs:qe, ks:ke] = dropout_keep(seed, p, (B, H, qe - qs, ke - ks), qs, ks)
    return keep


def make(B=2, H=4, H_kv=2, L=13, S=17, E=5, dtype=torch.float64):
    return [torch.randn(B, n, m, E, dtype=dtype, requires_grad=True) for n, m in ((H, L), (H_kv, S), (H_kv, S))]


@pytest.mark.parametrize("blocks", [(13, 17), (4, 6), (5, 3)])
@pytest.mark.parametrize("case", ["plain", "causal", "mask"])
def test_equals_dense_math_with_the_same_keep_mask(case, blocks):
    q, k, v = make()
    B, H, L, _ = q.shape
    S, p = k.shape[2], 0.3
    kw = {"plain": {}, "causal": dict(causal=True), "mask": dict(mask=torch.rand(B, 1, L, S) > 0.3)}[case]
    out = chunked_attention(q, k, v, dropout_p=p, generator=gen(3), block_q=blocks[0], block_k=blocks[1], **kw)
    keep = dense_keep(dropout_seed(gen(3)), p, B, H, L, S, *blocks)
    w = attention_weights(q, k, **kw)  # (B, H, L, S) float64, before dropout
    H_kv = k.shape[1]
    ref = (w * keep / (1 - p)).view(B, H_kv, H // H_kv, L, S) @ v[:, :, None]  # (B, H_kv, G, L, E)
    ref = ref.reshape(B, H, L, -1)  # (B, H, L, E)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-10)
    assert not torch.allclose(out, chunked_attention(q, k, v, block_q=blocks[0], block_k=blocks[1], **kw))
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g), strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("blocks", [(2, 3), (3, 2), (5, 7)])
def test_gradcheck_with_dropout(blocks):
    q, k, v = make(B=1, H=2, H_kv=1, L=5, S=7, E=3)
    mask = torch.rand(1, 1, 5, 7) > 0.2

    def f(q, k, v, **kw):  # a fresh generator per call: every evaluation draws the same masks
        return chunked_attention(q, k, v, dropout_p=0.4, generator=gen(1), block_q=blocks[0], block_k=blocks[1], **kw)

    assert torch.autograd.gradcheck(lambda q, k, v: f(q, k, v, causal=True), (q, k, v))
    assert torch.autograd.gradcheck(lambda q, k, v: f(q, k, v, mask=mask), (q, k, v))
    bias = torch.randn(1, 2, 5, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, k, v, b: f(q, k, v, bias=b, mask=mask, causal=True), (q, k, v, bias))


def observed_keep(p, generator=None, B=2, H=2, L=64, S=48, blocks=(16, 32)) -> torch.Tensor:
    """The keep-mask a call used, read off its output: uniform weights (q = 0) and one-hot values (v = I)
    make ``out[..., i, j] = keep_ij / ((1 - p) S)``."""
    q = torch.zeros(B, H, L, 8)
    k = torch.randn(B, H, S, 8)
    v = torch.eye(S).expand(B, H, S, S)
    out = chunked_attention(q, k, v, dropout_p=p, generator=generator, block_q=blocks[0], block_k=blocks[1])
    keep = out * (1 - p) * S
    assert torch.all((keep - keep.round()).abs() < 1e-4)  # exactly 0 or 1
    return keep.round().bool()


def test_masks_are_bernoulli_per_block_per_call_and_reproducible():
    p = 0.5
    keep = observed_keep(p, gen(5))
    dropped = 1 - keep.float().mean().item()
    assert abs(dropped - p) < 0.02, dropped  # 12288 entries: sd ~0.0045
    assert not torch.equal(keep[:, :, :16, :32], keep[:, :, 16:32, :32])  # blocks differ from each other
    assert not torch.equal(keep[:, :, :16, :16], keep[:, :, :16, 32:48])
    assert torch.equal(keep, observed_keep(p, gen(5)))  # same generator state, same masks
    assert not torch.equal(keep, observed_keep(p, gen(6)))
    assert not torch.equal(observed_keep(p), observed_keep(p))  # the global RNG advances between calls
    assert abs(1 - observed_keep(0.1, gen(5)).float().mean().item() - 0.1) < 0.02


def test_mean_over_seeds_approaches_the_undropped_output():
    q, k, v = (t.detach().float() for t in make(B=1, H=2, H_kv=2, L=16, S=64, E=8))
    full = chunked_attention(q, k, v, block_q=8, block_k=16)
    runs = torch.stack([chunked_attention(q, k, v, dropout_p=0.5, generator=gen(s), block_q=8, block_k=16)
                        for s in range(400)])
    one = (runs[0] - full).abs().max().item()
    mean = (runs.mean(0) - full).abs().max().item()
    # one draw is off by ~sqrt(sum_j P_ij^2 v_j^2) per entry; the mean of 400 by 1/20 of that
    assert one > 0.2 and mean < 0.06, (one, mean)


def test_without_dropout_nothing_changes():
    q, k, v = make(dtype=torch.float32)
    state = torch.get_rng_state()
    g = gen(9)
    out = chunked_attention(q, k, v, causal=True, block_q=4, block_k=8, dropout_p=0.0, generator=g)
    assert torch.equal(torch.get_rng_state(), state) and torch.equal(g.get_state(), gen(9).get_state())  # no draw
    base = chunked_attention(q, k, v, causal=True, block_q=4, block_k=8)
    assert torch.equal(out, base)
    g1 = torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    g2 = torch.autograd.grad(base, (q, k, v), torch.ones_like(base))
    assert all(torch.equal(a, b) for a, b in zip(g1, g2, strict=True))


def test_dispatcher_routes_long_dropout_here_and_draws_from_the_global_rng():
    q, k, v = (torch.randn(1, 2, 1024, 8) for _ in range(3))
    torch.manual_seed(11)
    out = scaled_dot_product_attention(q, k, v, causal=True, dropout_p=0.2)
    torch.manual_seed(11)
    torch.testing.assert_close(out, chunked_attention(q, k, v, causal=True, dropout_p=0.2), atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"dropout_p must be in \[0, 1\), got 1.0"):
        chunked_attention(q, k, v, dropout_p=1.0)


def test_compiled_dropout_draws_a_fresh_seed_each_call_without_recompiling():
    q, k, v = (torch.randn(1, 1, 1024, 8, requires_grad=True) for _ in range(3))
    torch._dynamo.reset()
    compiled = torch.compile(lambda q, k, v: scaled_dot_product_attention(q, k, v, causal=True, dropout_p=0.2),
                             backend="eager")
    with torch._dynamo.config.patch(error_on_recompile=True):
        outs = [compiled(q, k, v) for _ in range(3)]
        torch.manual_seed(4)
        out = compiled(q, k, v)
    assert not torch.equal(outs[1], outs[2])  # not one seed baked into the graph
    torch.manual_seed(4)
    torch.testing.assert_close(out, scaled_dot_product_attention(q, k, v, causal=True, dropout_p=0.2), atol=0, rtol=0)
    out.sum().backward()
    assert torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
