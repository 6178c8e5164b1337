"""qkv.kernels.short: whole-head attention in C for short sequences, each instruction-set variant the CPU
executes (the portable one everywhere) against float64 math (outputs and gradients), its layouts and errors,
and the dispatcher and torch.compile routes to it."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from qkv.hardware import cpu_isa
from qkv.kernels import native as _native
from qkv.kernels import short as short_module
from qkv.kernels.short import MAX_LEN, short_attention
from tests.kernels.tables import shipped_routing


@pytest.fixture(autouse=True)
def _needs_kernels():
    if _native.kernels() is None:
        pytest.skip(f"no native kernels: {_native.unavailable_reason()}")


@pytest.fixture(params=_native.VARIANTS)
def variant(request, monkeypatch):
    """Runs the test on one build: QKV_CPU_ISA set to the lowest CPU class that runs it (skipped only where
    this CPU cannot execute it; the portable build runs everywhere)."""
    if not _native.can_execute(request.param):
        pytest.skip(f"this CPU (class {cpu_isa()}) cannot execute the {request.param} build")
    monkeypatch.setenv("QKV_CPU_ISA", {"portable": "other"}.get(request.param, request.param))
    monkeypatch.delenv("QKV_NATIVE", raising=False)
    assert _native.kernels().variant == request.param, _native.unavailable_reason()
    return request.param


def _reference(q, k, v, causal, scale):
    """float64 softmax(Q K^T * scale) V with lower-right causal masking; rows with no visible key give 0."""
    q, k, v = (t.double() for t in (q, k, v))
    G = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(G, 1), v.repeat_interleave(G, 1)
    s = q @ k.transpose(-1, -2) * scale
    L, S = q.shape[2], k.shape[2]
    if causal:
        visible = torch.arange(S)[None, :] <= torch.arange(L)[:, None] + S - L
        s = s.masked_fill(~visible, float("-inf"))
    w = torch.softmax(s, -1)
    return torch.where(torch.isnan(w), 0.0, w) @ v


SHAPES = [  # B, H, H_kv, L, S, E, Ev, causal
    (2, 4, 4, 64, 64, 32, 32, True),  # the char GPT's attention
    (1, 2, 1, 17, 40, 20, 33, True),  # grouped kv heads, L < S, head dims not multiples of 16
    (2, 3, 3, 50, 30, 16, 16, True),  # L > S: the first 20 queries see no key
    (1, 1, 1, 5, 5, 64, 64, False),
    (3, 4, 2, 100, 77, 48, 24, False),
    (1, 2, 2, MAX_LEN, MAX_LEN, 64, 64, True),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:7])) + ("-causal" if s[7] else ""))
def test_matches_float64_math_with_gradients(variant, dtype, shape):
    B, H, H_kv, L, S, E, Ev, causal = shape
    torch.manual_seed(0)
    q = torch.randn(B, H, L, E).to(dtype).requires_grad_()
    k = torch.randn(B, H_kv, S, E).to(dtype).requires_grad_()
    v = torch.randn(B, H_kv, S, Ev).to(dtype).requires_grad_()
    out = short_attention(q, k, v, causal=causal)
    assert out.dtype == dtype and out.shape == (B, H, L, Ev) and out.transpose(1, 2).is_contiguous()
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = _reference(q64, k64, v64, causal, 1 / math.sqrt(E))
    grad = torch.randn_like(ref)
    out.backward(grad.to(dtype))
    ref.backward(grad)
    tol = 1e-5 if dtype == torch.float32 else 2e-2  # bf16: rounding of inputs, outputs (and avx512_bf16: P, dS)
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)
    for mine, theirs in ((q, q64), (k, k64), (v, v64)):
        assert mine.grad.dtype == dtype and mine.grad.shape == theirs.shape
        err = (mine.grad.double() - theirs.grad).abs().max() / theirs.grad.abs().max()
        assert err < (2e-6 if dtype == torch.float32 else 1.5e-2), err
    if causal and L > S:  # queries with no visible key: zeros and zero gradients, never NaN
        assert torch.equal(out[:, :, : L - S], torch.zeros_like(out[:, :, : L - S]))
        assert torch.equal(q.grad[:, :, : L - S], torch.zeros_like(q.grad[:, :, : L - S]))
        assert not torch.isnan(out).any()


def test_reads_strided_views_of_a_fused_projection(variant):
    """q, k, v as head views of one (B, L, 3 * H * E) projection (what the modules pass): same as contiguous."""
    torch.manual_seed(1)
    B, L, H, E = 3, 24, 4, 8
    proj = torch.randn(B, L, 3 * H * E, requires_grad=True)
    q, k, v = (t.view(B, L, H, E).transpose(1, 2) for t in proj.split(H * E, dim=-1))
    out = short_attention(q, k, v, causal=True, scale=0.3)
    out.sum().backward()
    qc, kc, vc = (t.detach().contiguous().requires_grad_() for t in (q, k, v))
    ref = F.scaled_dot_product_attention(qc, kc, vc, is_causal=True, scale=0.3)
    ref.sum().backward()
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    expected = torch.cat([t.grad.transpose(1, 2).reshape(B, L, H * E) for t in (qc, kc, vc)], dim=-1)
    torch.testing.assert_close(proj.grad, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("offset", [0, 1], ids=["even-offset", "odd-offset"])
def test_bfloat16_strided_views_match_float64_math(variant, offset):
    """bf16 q, k, v as head views of one (B, L, 3 * H * E) projection, as the trainer passes them under autocast.
    At an odd element offset their rows are no longer pairs of bf16 words (the avx512_bf16 build's dot products
    read them in place otherwise): the kernels copy them instead. Both match float64 math, gradients included."""
    torch.manual_seed(4)
    B, L, H, E = 2, 40, 4, 16
    base = torch.randn(B, L, 3 * H * E + 1).to(torch.bfloat16)
    proj = base[..., offset : offset + 3 * H * E].detach().requires_grad_()
    assert proj.storage_offset() == offset
    q, k, v = (t.view(B, L, H, E).transpose(1, 2) for t in proj.split(H * E, dim=-1))
    out = short_attention(q, k, v, causal=True)
    grad = torch.randn(B, H, L, E, dtype=torch.float64)
    out.backward(grad.to(torch.bfloat16))
    p64 = proj.detach().double().requires_grad_()
    q64, k64, v64 = (t.view(B, L, H, E).transpose(1, 2) for t in p64.split(H * E, dim=-1))
    ref = _reference(q64, k64, v64, True, 1 / math.sqrt(E))
    ref.backward(grad)
    torch.testing.assert_close(out.double(), ref, atol=2e-2, rtol=2e-2)
    err = (proj.grad.double() - p64.grad).abs().max() / p64.grad.abs().max()
    assert err < 1.5e-2, err


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_negative_scale_matches_float64_math(variant, dtype):
    """scale < 0 flips which score is a row's maximum: the kernels scale before taking it (the avx512_bf16 build's
    dot products, which scale the scores after the product, are not used then). At scale -20 the scores reach a
    few hundred, where the maximum of the wrong sign would overflow the exponentials (outputs checked); gradients
    at -0.4, where they are well conditioned."""
    torch.manual_seed(5)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for scale in (-20.0, -0.4):
        q, k, v = (torch.randn(1, 2, 24, 16).to(dtype).requires_grad_() for _ in range(3))
        out = short_attention(q, k, v, causal=True, scale=scale)
        q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
        ref = _reference(q64, k64, v64, True, scale)
        torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)
    grad = torch.randn_like(ref)
    out.backward(grad.to(dtype))
    ref.backward(grad)
    for mine, theirs in ((q, q64), (k, k64), (v, v64)):
        err = (mine.grad.double() - theirs.grad).abs().max() / theirs.grad.abs().max()
        assert err < (2e-6 if dtype == torch.float32 else 1.5e-2), err


@pytest.mark.filterwarnings("ignore:Input #:UserWarning")
def test_gradcheck_in_float32():
    """The autograd wiring by finite differences (the kernels compute in float32, so float32 inputs)."""
    torch.manual_seed(2)
    q, k, v = (torch.randn(1, 2, 6, 5, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda q, k, v: short_attention(q, k, v, causal=True), (q, k, v),
                                    eps=1e-2, atol=5e-3, rtol=5e-3, fast_mode=True)


def test_results_do_not_depend_on_the_thread_count(variant):
    torch.manual_seed(3)
    q, k, v = (torch.randn(4, 4, 33, 16, dtype=torch.bfloat16) for _ in range(3))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = short_attention(q, k, v, causal=True)
        torch.set_num_threads(2)
        two = short_attention(q, k, v, causal=True)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_bad_input_names_the_shapes():
    q = torch.randn(2, 4, 10, 8)
    with pytest.raises(ValueError, match=r"q \(2, 4, 10, 8\) torch.float32 cpu, k \(2, 3, 10, 8\)"):
        short_attention(q, torch.randn(2, 3, 10, 8), torch.randn(2, 3, 10, 8))  # 4 heads over 3 kv heads
    with pytest.raises(ValueError, match=rf"L, S <= {MAX_LEN}"):
        short_attention(torch.randn(1, 1, MAX_LEN + 1, 8), torch.randn(1, 1, 4, 8), torch.randn(1, 1, 4, 8))
    with pytest.raises(ValueError, match="float64"):
        short_attention(q.double(), q.double(), q.double())
    with pytest.raises(ValueError, match=r"need q \(B, H, L, E\)"):
        short_attention(q, torch.randn(2, 4, 10, 8), torch.randn(2, 4, 9, 8))


@pytest.mark.skipif(short_module._forward_op is None, reason="needs torch.library.custom_op (torch >= 2.4)")
def test_torch_compile_traces_the_op_without_graph_breaks(monkeypatch, tmp_path):
    from qkv.functional import explain, scaled_dot_product_attention

    def f(q, k, v):
        return scaled_dot_product_attention(q, k, v, causal=True)

    shipped_routing(monkeypatch, tmp_path)
    torch.manual_seed(4)
    q, k, v = (torch.randn(2, 2, 64, 16, requires_grad=True) for _ in range(3))
    assert explain(q, k, v, causal=True).path == "qkv.kernels.short"
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    out = compiled(q, k, v)
    assert out.transpose(1, 2).is_contiguous()  # the kernel's (B, L, H, E) layout: the op ran in the graph
    out.sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    ref = f(q, k, v)
    ref.sum().backward()
    assert torch.equal(out, ref)
    for a, t in zip(grads, (q, k, v), strict=True):
        assert torch.equal(a, t.grad)
