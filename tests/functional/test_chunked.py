"""qkv.functional.chunked: memory-efficient exact attention against torch's fused kernel and float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import qkv.kernels
from qkv.functional import causal_mask, chunked_attention, chunked_route, padding_mask, sliding_window_mask
from qkv.functional.chunked import block_plan
from qkv.kernels import native
from tests.kernels.tables import routing_table


@pytest.fixture(autouse=True, params=["reference", "blocks"])
def block_path(request, monkeypatch, tmp_path):
    """Every test runs twice: the torch-op reference (qkv.kernels disabled), and with qkv's C blocks offered for
    every call they fit (a routing table that has them measured faster on this CPU class for any length)."""
    if request.param == "reference":
        with qkv.kernels.disabled():
            yield request.param
        return
    if native.kernels() is None:
        pytest.skip(f"native kernels unavailable: {native.unavailable_reason()}")
    routing_table(monkeypatch, tmp_path, {"chunked": {"blocks": {"float32": 1, "bfloat16": 1}}})
    yield request.param


def fused(q, k, v, mask=None, bias=None):
    """torch's fused SDPA on repeated kv heads, given an explicit mask; empty rows -> 0."""
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    attn = mask
    if bias is not None:
        attn = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn)
    return out if mask is None else out.nan_to_num(0.0) * mask.any(-1, keepdim=True)


def make(B=2, H=4, H_kv=2, L=37, S=53, E=8, dtype=torch.float32, grad=True):
    q = torch.randn(B, H, L, E, dtype=dtype, requires_grad=grad)
    k = torch.randn(B, H_kv, S, E, dtype=dtype, requires_grad=grad)
    v = torch.randn(B, H_kv, S, E, dtype=dtype, requires_grad=grad)
    return q, k, v


def dense_mask(L, S, *, causal=False, window=None, lengths=None, mask=None):
    m = torch.ones(1, 1, L, S, dtype=torch.bool)
    if causal:
        m = m & causal_mask(L, S)
    if window is not None:
        m = m & sliding_window_mask(L, S, window=window, causal=causal)
    if lengths is not None:
        m = m & padding_mask(lengths, max_len=S)
    return m if mask is None else m & mask


CASES = {
    "plain": dict(),
    "causal_L_lt_S": dict(causal=True),
    "causal_square": dict(causal=True, L=40, S=40),
    "window": dict(window=6),
    "window_causal": dict(window=6, causal=True),
    "lengths": dict(lengths=[20, 53]),
    "lengths_causal_window": dict(lengths=[53, 9], causal=True, window=11),
    "random_mask": dict(mask="rand"),
    "bias": dict(bias=True),
    "bias_mask_causal": dict(bias=True, mask="rand", causal=True),
    "mha": dict(H=3, H_kv=3),
    "mqa": dict(H=4, H_kv=1, causal=True),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("blocks", [(8, 16), (64, 64), (5, 7)])
def test_equals_fused_kernel_and_gradients(name, blocks):
    case = dict(CASES[name])
    shape = {key: case.pop(key) for key in ("H", "H_kv", "L", "S") if key in case}
    q, k, v = make(**shape)
    L, S = q.shape[2], k.shape[2]
    mask = torch.rand(2, 1, L, S) > 0.3 if case.pop("mask", None) else None
    bias = torch.randn(1, q.shape[1], L, S, requires_grad=True) if case.pop("bias", False) else None
    lengths = torch.tensor(case.pop("lengths")) if "lengths" in case else None
    out = chunked_attention(q, k, v, mask=mask, bias=bias, lengths=lengths, block_q=blocks[0], block_k=blocks[1],
                            **case)
    ref = fused(q, k, v, dense_mask(L, S, lengths=lengths, mask=mask, **case), bias)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(out)
    inputs = (q, k, v) if bias is None else (q, k, v, bias)
    for a, b in zip(torch.autograd.grad(out, inputs, g), torch.autograd.grad(ref, inputs, g), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_gradcheck_float64():
    q, k, v = make(B=1, H=2, H_kv=1, L=5, S=7, E=3, dtype=torch.float64)
    bias = torch.randn(1, 2, 5, 7, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(1, 1, 5, 7) > 0.2

    def f(q, k, v, bias):
        return chunked_attention(q, k, v, bias=bias, mask=mask, causal=True, block_q=2, block_k=3)

    assert torch.autograd.gradcheck(f, (q, k, v, bias))
    lengths = torch.tensor([4])
    assert torch.autograd.gradcheck(
        lambda q, k, v: chunked_attention(q, k, v, lengths=lengths, window=3, block_q=2, block_k=2), (q, k, v)
    )


def test_key_padding_by_lengths(block_path):
    q, k, v = make(B=3, H=4, H_kv=2, L=7, S=9)
    lengths = torch.tensor([9, 4, 0])
    out = chunked_attention(q, k, v, lengths=lengths)
    ref = fused(q, k, v, dense_mask(7, 9, lengths=lengths))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert out[2].abs().max() == 0  # no real key: zeros, not NaN
    out.square().sum().backward()
    assert k.grad[1, :, 4:].abs().max() == 0 and k.grad[2].abs().max() == 0  # padding gets no gradient
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in make(B=2, H=2, H_kv=1, L=3, S=5))
    assert torch.autograd.gradcheck(lambda a, b, c: chunked_attention(a, b, c, lengths=torch.tensor([5, 2])),
                                     (q64, k64, v64))
    path = chunked_route(q, k, v, lengths=lengths).path
    assert path == ("qkv.functional.chunked" if block_path == "reference" else "qkv.kernels.blocks")


def test_fully_masked_rows_are_zero_with_zero_gradient():
    q, k, v = make(L=6, S=6)
    mask = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    mask[0, :, 2] = False  # query 2 of batch 0 sees nothing
    lengths = torch.tensor([6, 0])  # batch 1 has no keys at all
    out = chunked_attention(q, k, v, mask=mask, lengths=lengths, block_q=4, block_k=4)
    assert torch.isfinite(out).all()
    assert out[0, :, 2].abs().max() == 0 and out[1].abs().max() == 0
    out.sum().backward()
    assert torch.isfinite(q.grad).all() and q.grad[1].abs().max() == 0 and q.grad[0, :, 2].abs().max() == 0
    # causal with L > S: the first L - S queries see no key
    q2, k2, v2 = make(L=9, S=4)
    out2 = chunked_attention(q2, k2, v2, causal=True, block_q=4, block_k=2)
    assert out2[:, :, :5].abs().max() == 0 and torch.isfinite(out2).all()


@pytest.mark.parametrize("causal", [False, True])
def test_bfloat16_path_matches_float32_within_bf16_error(causal):
    q, k, v = make(H=4, H_kv=2, L=96, S=96, E=16, dtype=torch.float32, grad=False)
    ref = fused(q, k, v, causal_mask(96, 96) if causal else None)
    qb, kb, vb = (t.bfloat16().requires_grad_() for t in (q, k, v))
    out = chunked_attention(qb, kb, vb, causal=causal, block_q=32, block_k=32)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)
    # same precision reference: torch's fused bf16 kernel
    ref_b = fused(qb, kb, vb, causal_mask(96, 96) if causal else None)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (qb, kb, vb), g), torch.autograd.grad(ref_b, (qb, kb, vb), g),
                    strict=True):
        torch.testing.assert_close(a.float(), b.float(), atol=6e-2, rtol=6e-2)


def test_bfloat16_gradients_are_copies_and_key_lengths_match_the_fused_kernel():
    """Half-precision gradients accumulate in per-thread scratch; each call returns its own tensors."""
    torch.manual_seed(0)
    big = make(B=2, H=4, H_kv=2, L=70, S=90, E=16, dtype=torch.bfloat16)
    small = make(B=1, H=2, H_kv=1, L=20, S=30, E=16, dtype=torch.bfloat16)
    lengths = torch.tensor([90, 41])

    def grads(qkv, **kw):
        out = chunked_attention(*qkv, block_q=16, block_k=32, **kw)
        return out, torch.autograd.grad(out, qkv, torch.ones_like(out))

    _, first = grads(big)
    kept = [g.clone() for g in first]
    grads(small)  # other shapes reuse (and grow) the scratch
    out, got = grads(big, lengths=lengths)  # one backward per sequence
    for a, b in zip(first, kept, strict=True):
        assert torch.equal(a, b)
    mask = dense_mask(70, 90, lengths=lengths)
    ref = fused(*big, mask=mask)
    torch.testing.assert_close(out.float(), ref.float(), atol=3e-2, rtol=3e-2)
    for a, b in zip(got, torch.autograd.grad(ref, big, torch.ones_like(ref)), strict=True):
        torch.testing.assert_close(a.float(), b.float(), atol=6e-2, rtol=6e-2)


def test_structured_masks_skip_blocks():
    """A sliding window visits O(L) blocks; causal about half; full-visibility blocks need no mask."""
    visited = {L: sum(len(b) for _, _, b in block_plan(L, L, 64, 64, causal=True, window=128)) for L in (1024, 4096)}
    # each query block meets 3 key blocks (its own and the two the window reaches), the first two fewer
    assert visited == {1024: 3 * 16 - 3, 4096: 3 * 64 - 3}
    blocks = [b for _, _, bl in block_plan(512, 512, 64, 64, causal=True) for b in bl]
    assert len(blocks) == 8 * 9 // 2 and sum(needs for _, _, needs in blocks) == 8  # only the diagonal
    short = [b for _, _, bl in block_plan(512, 512, 64, 64, length=100) for b in bl]
    assert len(short) == 8 * 2  # keys past the length are skipped


def test_bad_input_names_argument_and_value():
    q, k, v = make(grad=False)
    with pytest.raises(ValueError, match=r"window must be an int >= 1, got 0"):
        chunked_attention(q, k, v, window=0)
    with pytest.raises(ValueError, match=r"block_q must be an int >= 1, got -2"):
        chunked_attention(q, k, v, block_q=-2)
    with pytest.raises(ValueError, match=r"lengths must be an integer tensor of shape \(B,\)"):
        chunked_attention(q, k, v, lengths=torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"mask of shape \(3, 1, 1, 53\)"):
        chunked_attention(q, k, v, mask=torch.ones(3, 1, 1, 53, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"H=4 must be a multiple of key/value heads H_kv=3"):
        chunked_attention(q, torch.randn(2, 3, 53, 8), torch.randn(2, 3, 53, 8))
    with pytest.raises(ValueError, match=r"layout must be bool of shape"):
        chunked_attention(q, k, v, block_q=8, block_k=8, layout=torch.ones(2, 2, dtype=torch.bool))
