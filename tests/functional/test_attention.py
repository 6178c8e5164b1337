"""qkv.functional.scaled_dot_product_attention against torch's fused kernel and float64 math."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.attention import SDPBackend, sdpa_kernel

from qkv.functional import attention_math, causal_mask, padding_mask, scaled_dot_product_attention
from tests.numerics import assert_close_to_golden


def naive(q, k, v, mask=None, bias=None, causal=False, scale=None):
    """Independent float64 reference: repeat kv heads, explicit -inf masking, empty rows -> 0."""
    q, k, v = q.double(), k.double(), v.double()
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    L, S = q.shape[2], k.shape[2]
    s = torch.einsum("bhle,bhse->bhls", q, k) * (scale or 1 / math.sqrt(q.shape[-1]))
    if bias is not None:
        s = s + bias.double()
    allowed = torch.ones(L, S, dtype=torch.bool)
    if causal:
        allowed = torch.tensor([[j <= i + S - L for j in range(S)] for i in range(L)])
    if mask is not None:
        allowed = allowed & mask
    s = s.masked_fill(~allowed, float("-inf"))
    w = torch.softmax(s, -1).nan_to_num(0.0)
    return torch.einsum("bhls,bhse->bhle", w, v), w


def torch_ref(q, k, v, mask=None, bias=None, causal=False):
    """torch's own SDPA at the same precision, given the equivalent explicit mask."""
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    L, S = q.shape[2], k.shape[2]
    allowed = causal_mask(L, S) if causal else torch.ones(1, 1, L, S, dtype=torch.bool)
    if mask is not None:
        allowed = allowed & mask
    attn = allowed if bias is None else bias.masked_fill(~allowed, float("-inf"))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn)
    return out.nan_to_num(0.0) * allowed.any(-1, keepdim=True)


def make(B=2, H=4, H_kv=4, L=5, S=7, E=8, Ev=None, dtype=torch.float32, requires_grad=False):
    q = torch.randn(B, H, L, E, dtype=dtype, requires_grad=requires_grad)
    k = torch.randn(B, H_kv, S, E, dtype=dtype, requires_grad=requires_grad)
    v = torch.randn(B, H_kv, S, Ev or E, dtype=dtype, requires_grad=requires_grad)
    return q, k, v


PATHS = ["fused", "weights_grad", "weights_nograd", "math"]


def run_path(path, q, k, v, **kw):
    if path == "fused":
        return scaled_dot_product_attention(q, k, v, **kw)
    if path == "math":
        return attention_math(q, k, v, **kw)[0]
    if path == "weights_grad":
        q = q.detach().requires_grad_()
        return scaled_dot_product_attention(q, k, v, return_weights=True, **kw)[0]
    with torch.no_grad():
        return scaled_dot_product_attention(q, k, v, return_weights=True, **kw)[0]


CASES = {
    "plain": dict(),
    "causal_square": dict(L=6, S=6, causal=True),
    "causal_L_lt_S": dict(L=3, S=8, causal=True),
    "causal_L_gt_S": dict(L=8, S=3, causal=True),  # first rows see nothing: zeros
    "padding": dict(mask="pad"),
    "random_mask": dict(mask="rand"),
    "grouped_heads": dict(H=6, H_kv=2),
    "grouped_causal_mask": dict(H=4, H_kv=1, L=4, S=9, causal=True, mask="pad"),
    "bias": dict(bias=True),
    "bias_mask_causal": dict(bias=True, mask="rand", causal=True, L=7, S=7),
    "value_dim": dict(Ev=3),
}


def build(case, dtype=torch.float32):
    c = dict(CASES[case])
    shape = {k: c.pop(k) for k in list(c) if k in ("H", "H_kv", "L", "S", "Ev")}
    q, k, v = make(dtype=dtype, **shape)
    B, H, L, S = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    kw = {"causal": c.get("causal", False)}
    if c.get("mask") == "pad":
        kw["mask"] = padding_mask(torch.tensor([S, max(1, S - 3)]), max_len=S)
    elif c.get("mask") == "rand":
        kw["mask"] = torch.rand(B, 1, L, S) > 0.4
    if c.get("bias"):
        kw["bias"] = torch.randn(1, H, L, S, dtype=dtype)
    return q, k, v, kw


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_torch_and_float64(case, path):
    q, k, v, kw = build(case)
    golden, _ = naive(q, k, v, **kw)
    reference = torch_ref(q, k, v, **kw)
    out = run_path(path, q, k, v, **kw)
    assert out.shape == golden.shape and out.dtype == q.dtype
    assert not out.isnan().any()
    assert_close_to_golden(out, reference, golden, name=f"{case}/{path}")


@pytest.mark.parametrize("case", ["plain", "causal_L_lt_S", "grouped_heads", "bias_mask_causal"])
def test_bf16_within_reference_error(case):
    q, k, v, kw = build(case, dtype=torch.bfloat16)
    golden, _ = naive(q, k, v, **kw)
    reference = torch_ref(q, k, v, **kw)
    for path in PATHS:
        out = run_path(path, q, k, v, **kw)
        assert out.dtype == torch.bfloat16
        assert_close_to_golden(out, reference, golden, factor=5.0, name=f"bf16 {case}/{path}")


def test_math_backend_agrees():
    q, k, v, kw = build("random_mask")
    with sdpa_kernel(SDPBackend.MATH):
        a = scaled_dot_product_attention(q, k, v, **kw)
    b = attention_math(q, k, v, **kw)[0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.fixture
def causal_matmul_calls(monkeypatch):
    """Counts uses of the cached causal bias (the math path under the math backend), so the tests below
    cannot pass without taking it."""
    import qkv.functional.attention as attention

    calls = []
    inner = attention._causal_bias
    monkeypatch.setattr(attention, "_causal_bias", lambda *a: calls.append(a) or inner(*a))
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("heads", [(4, 4), (4, 2)])
def test_math_backend_causal_path(causal_matmul_calls, dtype, heads):
    # Under sdpa_kernel(MATH) on CPU, causal self-attention runs qkv's math path with a cached causal bias.
    H, H_kv = heads
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, H, 33, 16, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, H_kv, 33, 16, generator=g, dtype=torch.float64) for _ in range(2))
    golden = F.scaled_dot_product_attention(q, *(t.repeat_interleave(H // H_kv, 1) for t in (k, v)), is_causal=True)
    args = [t.to(dtype) for t in (q, k, v)]
    with sdpa_kernel(SDPBackend.MATH):
        out = scaled_dot_product_attention(*args, causal=True)
        reference = F.scaled_dot_product_attention(args[0], *(t.repeat_interleave(H // H_kv, 1) for t in args[1:]),
                                                   is_causal=True)
    assert len(causal_matmul_calls) == 1 and out.dtype == dtype
    assert_close_to_golden(out, reference, golden, factor=4.0 if dtype == torch.float32 else 5.0)


def test_math_backend_causal_gradients(causal_matmul_calls):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 9, 5, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    with sdpa_kernel(SDPBackend.MATH):
        assert torch.autograd.gradcheck(lambda a, b, c: scaled_dot_product_attention(a, b, c, causal=True), (q, k, v))
        out = scaled_dot_product_attention(q, k, v, causal=True, scale=0.3)
    want = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3)
    torch.testing.assert_close(out, want, atol=1e-12, rtol=0)
    assert causal_matmul_calls  # the path under test ran
    causal_matmul_calls.clear()
    scaled_dot_product_attention(q, k, v, causal=True)  # default backends: torch's fused kernel
    assert not causal_matmul_calls


@pytest.mark.parametrize("case", ["plain", "causal_L_gt_S", "grouped_causal_mask", "bias_mask_causal", "value_dim"])
def test_weights_match_float64(case):
    q, k, v, kw = build(case)
    _, w_gold = naive(q, k, v, **kw)
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            qq = q.detach().requires_grad_(grad)
            _, w = scaled_dot_product_attention(qq, k, v, return_weights=True, **kw)
        assert w.shape == w_gold.shape
        torch.testing.assert_close(w.double(), w_gold, atol=1e-5, rtol=0)


@pytest.mark.parametrize("path", ["fused", "weights", "math"])
@pytest.mark.parametrize("case", ["plain", "causal_L_gt_S", "grouped_causal_mask", "bias_mask_causal"])
def test_gradcheck_float64(case, path):
    c = dict(CASES[case])
    shape = {k: min(c.pop(k), 5) for k in list(c) if k in ("H", "H_kv", "L", "S")}
    if "H" in shape and "H_kv" in shape and shape["H"] % shape["H_kv"]:
        shape["H"] = shape["H_kv"] * 2
    q, k, v = make(B=1, E=3, dtype=torch.float64, requires_grad=True, **{**dict(H=2, H_kv=2, L=3, S=4), **shape})
    L, S = q.shape[2], k.shape[2]
    kw = {"causal": c.get("causal", False)}
    if c.get("mask"):
        kw["mask"] = torch.rand(1, 1, L, S) > 0.3
    extra = ()
    if c.get("bias"):
        extra = (torch.randn(1, q.shape[1], L, S, dtype=torch.float64, requires_grad=True),)

    def f(q, k, v, *b):
        bias = {"bias": b[0]} if b else {}
        if path == "fused":
            return scaled_dot_product_attention(q, k, v, **kw, **bias)
        if path == "weights":
            return scaled_dot_product_attention(q, k, v, return_weights=True, **kw, **bias)
        return attention_math(q, k, v, **kw, **bias)

    assert torch.autograd.gradcheck(f, (q, k, v, *extra))


@pytest.mark.parametrize("path", PATHS)
def test_fully_masked_rows_are_zero_with_zero_grad(path):
    q, k, v = make(requires_grad=True)
    mask = torch.ones(1, 1, 5, 7, dtype=torch.bool)
    mask[..., 2, :] = False
    bias = torch.randn(1, 4, 5, 7)
    for kw in ({"mask": mask}, {"mask": mask, "bias": bias}):
        out = run_path(path, q, k, v, **kw) if path != "weights_nograd" else run_path(path, q, k, v, **kw)
        assert not out.isnan().any()
        assert torch.equal(out[:, :, 2], torch.zeros_like(out[:, :, 2]))
        if out.requires_grad:
            q.grad = None
            out.sum().backward()
            grad = q.grad if q.grad is not None else torch.zeros_like(q)
            assert torch.isfinite(grad).all()
            assert torch.equal(grad[:, :, 2], torch.zeros_like(grad[:, :, 2]))
    with torch.no_grad():
        _, w = scaled_dot_product_attention(q, k, v, mask=mask, return_weights=True)
    assert torch.equal(w[:, :, 2], torch.zeros_like(w[:, :, 2]))


def test_weights_are_a_distribution_over_allowed_keys():
    q, k, v = make(L=6, S=6)
    mask = torch.rand(2, 1, 6, 6) > 0.5
    mask[..., 0] = True  # every row sees at least one key
    _, w = scaled_dot_product_attention(q, k, v, mask=mask, causal=True, return_weights=True)
    allowed = mask & causal_mask(6, 6)
    assert (w >= 0).all()
    assert torch.equal(w[~allowed.expand_as(w)], torch.zeros_like(w[~allowed.expand_as(w)]))
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 6))


def test_permutation_equivariance_without_positions():
    q, k, v = make(L=6, S=6)
    perm = torch.randperm(6)
    out = scaled_dot_product_attention(q, k, v)
    out_p = scaled_dot_product_attention(q[:, :, perm], k[:, :, perm], v[:, :, perm])
    torch.testing.assert_close(out_p, out[:, :, perm], atol=1e-6, rtol=1e-5)
    # permuting only keys and values together leaves the output unchanged
    torch.testing.assert_close(scaled_dot_product_attention(q, k[:, :, perm], v[:, :, perm]), out, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("path", PATHS)
def test_causal_outputs_ignore_the_future(path):
    q, k, v = make(L=8, S=8)
    t = 4
    out = run_path(path, q, k, v, causal=True)
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    for x in (q2, k2, v2):
        x[:, :, t + 1 :] = torch.randn_like(x[:, :, t + 1 :]) * 10
    out2 = run_path(path, q2, k2, v2, causal=True)
    torch.testing.assert_close(out2[:, :, : t + 1], out[:, :, : t + 1])
    assert not torch.allclose(out2[:, :, t + 1 :], out[:, :, t + 1 :])


def test_dropout_is_unbiased_and_weights_stay_a_distribution():
    q, k, v = make(B=1, H=1, H_kv=1, L=2, S=3, E=4)
    expected = scaled_dot_product_attention(q, k, v)
    outs = []
    for _ in range(3000):
        o, w = scaled_dot_product_attention(q, k, v, dropout_p=0.5, return_weights=True)
        outs.append(o)
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 1, 2))
    mean = torch.stack(outs).mean(0)
    assert (mean - expected).abs().max() < 0.15
    assert not torch.allclose(outs[0], expected)
    fused = torch.stack([scaled_dot_product_attention(q, k, v, dropout_p=0.5) for _ in range(3000)]).mean(0)
    assert (fused - expected).abs().max() < 0.15


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 3),
    H_kv=st.integers(1, 3),
    G=st.integers(1, 3),
    L=st.integers(1, 9),
    S=st.integers(1, 9),
    E=st.integers(1, 9),
    causal=st.booleans(),
    density=st.floats(0.0, 1.0),
    with_weights=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_random_shapes(B, H_kv, G, L, S, E, causal, density, with_weights, seed):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H_kv * G, L, E, generator=gen)
    k = torch.randn(B, H_kv, S, E, generator=gen)
    v = torch.randn(B, H_kv, S, E, generator=gen)
    mask = torch.rand(B, 1, L, S, generator=gen) < density
    golden, w_gold = naive(q, k, v, mask=mask, causal=causal)
    reference = torch_ref(q, k, v, mask=mask, causal=causal)
    res = scaled_dot_product_attention(q, k, v, mask=mask, causal=causal, return_weights=with_weights)
    out = res[0] if with_weights else res
    assert not out.isnan().any()
    assert_close_to_golden(out, reference, golden)
    if with_weights:
        torch.testing.assert_close(res[1].double(), w_gold, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "kwargs, args, match",
    [
        ({}, ((2, 4, 5), (2, 4, 7, 8), (2, 4, 7, 8)), r"q must be 4-D \(B, H, L, E\), got shape \(2, 4, 5\)"),
        ({}, ((2, 4, 5, 8), (2, 3, 7, 8), (2, 3, 7, 8)), r"H=4 must be a multiple of .*H_kv=3"),
        ({}, ((2, 4, 5, 8), (3, 4, 7, 8), (3, 4, 7, 8)), r"batch sizes differ: q has B=2, k has 3"),
        ({}, ((2, 4, 5, 8), (2, 4, 7, 6), (2, 4, 7, 8)), r"k head dim must equal q's"),
        ({"mask": torch.ones(2, 1, 5, 6, dtype=torch.bool)}, None, r"mask of shape \(2, 1, 5, 6\) does not broadcast to"),
        ({"mask": torch.ones(3, 5, 7, dtype=torch.bool).unsqueeze(0).unsqueeze(0)}, None, r"mask of shape .* does not broadcast"),
        ({"mask": torch.zeros(1, 1, 5, 7)}, None, r"mask must be torch.bool .* got torch.float32 .* pass additive float terms as bias="),
        ({"bias": torch.ones(1, 1, 5, 7, dtype=torch.bool)}, None, r"bias must be a floating tensor"),
        ({"bias": torch.zeros(2, 4, 5, 3)}, None, r"bias of shape \(2, 4, 5, 3\) does not broadcast to \(B, H, L, S\) = \(2, 4, 5, 7\)"),
        ({"dropout_p": 1.0}, None, r"dropout_p must be in \[0, 1\), got 1.0"),
    ],
)
def test_bad_input_raises_clear_errors(kwargs, args, match):
    shapes = args or ((2, 4, 5, 8), (2, 4, 7, 8), (2, 4, 7, 8))
    q, k, v = (torch.randn(s) for s in shapes)
    with pytest.raises(ValueError, match=match):
        scaled_dot_product_attention(q, k, v, **kwargs)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_masked_softmax_in_half_precision_equals_float32_rounded_once(dtype):
    """Half-precision scores go into torch's softmax as they are: the weights equal a float32 softmax
    rounded once (bit for bit), fully masked rows are zeros, gradients match float64 within rounding."""
    from qkv.functional import masked_softmax

    scores = (torch.randn(2, 3, 9, 11) * 4).to(dtype).requires_grad_()
    mask = torch.rand(2, 1, 9, 11) > 0.3
    mask[0, :, 4] = False  # a fully masked row
    for m in (None, mask):
        got = masked_softmax(scores, m)
        ref = masked_softmax(scores.detach().float(), m).to(dtype)
        assert got.dtype == dtype and torch.equal(got, ref)
    assert masked_softmax(scores, mask)[0, :, 4].abs().max() == 0
    g = torch.randn(2, 3, 9, 11)
    (got,) = torch.autograd.grad(masked_softmax(scores, mask), scores, g.to(dtype))
    s64 = scores.detach().double().requires_grad_()
    (ref,) = torch.autograd.grad(masked_softmax(s64, mask), s64, g.double())
    torch.testing.assert_close(got.double(), ref, atol=2e-2, rtol=2e-2)
