"""qkv.kernels.native: every instruction-set variant of the C block kernels the CPU executes against
float64 torch math (the portable one on every machine), which variant a CPU class gets, and the fallback to the
torch path where they cannot be built (no compiler, QKV_NATIVE=0)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from qkv.hardware import cpu_isa
from qkv.kernels import native as _native


def variant_kernels(variant: str) -> _native.Kernels:
    """The build of ``variant``; skips only a variant this CPU cannot execute (never the portable one) and fails
    on a build that should work but does not."""
    if not _native.can_execute(variant):
        pytest.skip(f"this CPU (class {cpu_isa()}) cannot execute the {variant} build")
    k = _native.kernels(variant)
    assert k is not None, f"the {variant} build failed: {_native.unavailable_reason(variant)}"
    assert k.variant == variant
    return k


@pytest.fixture(params=_native.VARIANTS)
def kern(request):
    return variant_kernels(request.param)


def _interval_mask(R, K, p0, G, causal, window, length, ks):
    """The (R, K) visibility that ``Kernels.interval`` describes, from positions (as chunked._block_mask)."""
    p = p0 + torch.arange(R)[:, None] // G
    j = ks + torch.arange(K)[None, :]
    ok = j < length
    if causal:
        ok = ok & (j <= p)
    if window:
        ok = ok & (j > p - window)
        if not causal:
            ok = ok & (j < p + window)
    return ok


def _bool_mask(N, R, K):
    """A random bool mask for a tile of N heads (as batch 3 x 1 kv head here), R rows (query i, group g:
    r = 2 i + g), K keys, arranged (b, h_kv, i, g, k) and broadcast over the group; and its (N, R, K) form."""
    m = torch.rand(N, 1, R // 2, 1, 2 * K)[..., 3 : 3 + K] > 0.4  # keys contiguous inside a larger row
    return (m, 1, 2), m.expand(N, 1, R // 2, 2, K).reshape(N, R, K)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("structured", [None, (40, 2, True, None, 70, 32), (5, 1, False, 9, 60, 0)])
@pytest.mark.parametrize("masked", [False, True])
def test_forward_tile_is_one_online_softmax_step(kern, dtype, structured, masked):
    N, R, K, Ev = 3, 22, 37, 5  # K not a multiple of 16: masked tails
    s = (torch.randn(N, R, K) * 4).to(dtype)
    s[0, 3] = float("-inf")  # a row with nothing visible in this block
    s[1, 4, :10] = float("-inf")
    m0 = torch.randn(N, R, 1) * 3
    m0[0, 3] = float("-inf")  # ... and nothing before it either
    l0 = torch.rand(N, R, 1) + 0.5
    l0[0, 3] = 0
    acc0 = torch.randn(N, R, Ev)
    m, l, acc = m0.clone(), l0.clone(), acc0.clone()
    p = torch.full((N, R, K), 7.0, dtype=dtype)
    iv = None if structured is None else kern.interval(*structured)
    arg, visible = _bool_mask(N, R, K) if masked else (None, None)
    kern.forward_tile(s, p, m, l, acc, False, iv, arg)

    x = s.double()
    if structured is not None:
        x = x.masked_fill(~_interval_mask(R, K, *structured), float("-inf"))
    if masked:
        x = x.masked_fill(~visible, float("-inf"))
    m_ref = torch.maximum(m0.double(), x.amax(-1, keepdim=True))
    safe = m_ref.masked_fill(m_ref == float("-inf"), 0)
    p_ref = torch.exp2(x - safe)
    alpha = torch.exp2(m0.double() - safe)
    torch.testing.assert_close(m.double(), m_ref)
    tol = dict(atol=1e-6, rtol=1e-6) if dtype == torch.float32 else dict(atol=4e-3, rtol=4e-3)
    torch.testing.assert_close(p.double(), p_ref, **tol)
    assert (p[0, 3] == 0).all() and (p[1, 4, :10] == 0).all()  # exactly zero, never NaN
    torch.testing.assert_close(l.double(), l0.double() * alpha + p_ref.sum(-1, keepdim=True), atol=1e-5, rtol=1e-5)
    kept = torch.where(m_ref == float("-inf"), 1.0, alpha)  # nothing visible yet: state and acc untouched
    torch.testing.assert_close(acc.double(), acc0.double() * kept, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("masked", [False, True])
def test_backward_tile_gives_weights_and_score_gradients(kern, dtype, masked):
    N, R, K = 2, 20, 45
    s = (torch.randn(N, R, K) * 3).to(dtype)
    dp = torch.randn(N, R, K).to(dtype)
    lse = s.float().amax(-1, keepdim=True) + 2.5  # any row offset: p = 2**(s - lse) <= 2**-2.5
    delta = torch.randn(N, R, 1)
    ds, p = torch.empty(N, R, K, dtype=dtype), torch.empty(N, R, K, dtype=dtype)
    structured = (30, 3, True, 4, 40, 12)
    arg, allowed = _bool_mask(N, R, K) if masked else (None, True)
    kern.backward_tile(s, dp, lse, delta, ds, p, kern.interval(*structured), arg)
    visible = _interval_mask(R, K, *structured) & allowed
    p_ref = torch.exp2(s.double() - lse.double()) * visible
    ds_ref = p_ref * (dp.double() - delta.double())
    tol = dict(atol=1e-6, rtol=1e-6) if dtype == torch.float32 else dict(atol=4e-3, rtol=8e-3)
    torch.testing.assert_close(p.double(), p_ref, **tol)
    torch.testing.assert_close(ds.double(), ds_ref, **tol)
    assert (p[~visible.expand(N, R, K)] == 0).all() and (ds[~visible.expand(N, R, K)] == 0).all()


@pytest.mark.parametrize("src_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dst_dtype", [torch.float32, torch.bfloat16])
def test_transpose_converts_scales_and_respects_strides(kern, src_dtype, dst_dtype):
    src = torch.randn(3, 40, 70)[:, 2:39, 5:58].to(src_dtype)  # (3, 37, 53) with row stride 70
    big = torch.zeros(3, 60, 41, dtype=dst_dtype)
    dst = big[:, 1:54, 2:39]  # (3, 53, 37) with row stride 41
    kern.transpose(src, dst, 0.5)
    assert torch.equal(dst, (src.float().transpose(1, 2) * 0.5).to(dst_dtype))
    assert big[:, 0].abs().max() == 0 and big[:, 54:].abs().max() == 0 and big[:, :, :2].abs().max() == 0
    with pytest.raises(ValueError, match=r"transpose: src \(3, 37, 53\) / dst \(3, 37, 53\)"):
        kern.transpose(src, torch.empty(3, 37, 53, dtype=dst_dtype))


@pytest.mark.parametrize("src_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dst_dtype", [torch.float32, torch.bfloat16])
def test_scale_rows_converts_scales_and_respects_strides(kern, src_dtype, dst_dtype):
    src = torch.randn(3, 40, 70)[:, 2:39, 5:58].to(src_dtype)  # (3, 37, 53): rows of 53 with row stride 70
    big = torch.zeros(3, 45, 61, dtype=dst_dtype)
    dst = big[:, 4:41, 3:56]  # (3, 37, 53) with row stride 61
    kern.scale_rows(src, dst, 0.37)
    assert torch.equal(dst, (src.float() * torch.tensor(0.37, dtype=torch.float32)).to(dst_dtype))
    untouched = torch.ones_like(big, dtype=torch.bool)
    untouched[:, 4:41, 3:56] = False
    assert big[untouched].abs().max() == 0
    with pytest.raises(ValueError, match=r"scale_rows: src \(3, 37, 53\) / dst \(3, 53, 37\)"):
        kern.scale_rows(src, torch.empty(3, 53, 37, dtype=dst_dtype))


@pytest.mark.parametrize("a_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("b_dtype", [torch.float32, torch.bfloat16])
def test_rowdot_is_the_row_sums_of_products_in_float32(kern, a_dtype, b_dtype):
    a = torch.randn(4, 30, 90)[:, 1:29, 3:70].to(a_dtype)  # (4, 28, 67): strided rows, a masked tail
    b = torch.randn(4, 28, 67).to(b_dtype)
    out = torch.full((4, 28, 1), float("nan"))
    kern.rowdot(a, b, out)
    exact = (a.double() * b.double()).sum(-1, keepdim=True)
    torch.testing.assert_close(out.double(), exact, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"rowdot: out \(4, 28\) torch.bfloat16 \(need 112 contiguous float32\)"):
        kern.rowdot(a, b, torch.empty(4, 28, dtype=torch.bfloat16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_accumulate_copies_then_adds_into_strided_rows(kern, dtype):
    acc_big = torch.randn(2, 9, 12)
    acc = acc_big[:, 1:8, 3:8]  # (2, 7, 5) inside a larger buffer
    part = torch.randn(2, 7, 5).to(dtype)
    before = acc_big.clone()
    kern.accumulate(acc, part, True)
    assert torch.equal(acc, part.float())
    kern.accumulate(acc, part, False)
    assert torch.equal(acc, 2 * part.float())
    untouched = torch.ones_like(acc_big, dtype=torch.bool)
    untouched[:, 1:8, 3:8] = False
    assert torch.equal(acc_big[untouched], before[untouched])


def test_without_a_compiler_chunked_attention_falls_back_to_torch(tmp_path):
    """No C compiler (or QKV_NATIVE=0): a warning naming the reason, and the same results via torch ops."""
    code = (
        "import warnings, torch\n"
        "from qkv.functional import chunked_attention\nfrom qkv.kernels import native as _native\n"
        "torch.manual_seed(0)\n"
        "q, k, v = (torch.randn(1, 2, 40, 8) for _ in range(3))\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    out = chunked_attention(q, k, v, causal=True, block_q=16, block_k=16)\n"
        "ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)\n"
        "print(_native.kernels() is None, (out - ref).abs().max().item() < 1e-5, _native.unavailable_reason())\n"
        "print([str(x.message) for x in w])\n"
    )
    for env in ({"CC": str(tmp_path / "no-such-cc")}, {"QKV_NATIVE": "0"}):
        full = dict(os.environ, QKV_CACHE_DIR=str(tmp_path / "cache"), **env)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=120)
        assert done.returncode == 0, done.stderr
        first, warned = done.stdout.splitlines()
        assert first.startswith("True True"), first
        if "CC" in env:
            assert "no-such-cc" in first and warned.count("native attention kernels") == 1, warned
        else:
            assert "QKV_NATIVE=0" in first and warned == "[]"


@pytest.mark.parametrize(("isa", "variant"), [("amx", "avx512_bf16"), ("avx512_bf16", "avx512_bf16"),
                                              ("avx512", "avx512"), ("avx2", "avx2"), ("neon", "portable"),
                                              ("other", "portable")])
def test_each_cpu_class_gets_the_fastest_variant_it_executes(isa, variant):
    assert _native.variant_for(isa) == variant


@pytest.mark.parametrize("variant", _native.VARIANTS)
def test_qkv_cpu_isa_selects_the_build_and_never_one_the_cpu_cannot_run(monkeypatch, variant):
    """QKV_CPU_ISA lowers the class, and with it the default build; a variant above the class is not built."""
    isa = {"portable": "other"}.get(variant, variant)
    runnable = _native.can_execute(variant)
    monkeypatch.setenv("QKV_CPU_ISA", isa)
    monkeypatch.delenv("QKV_NATIVE", raising=False)
    if runnable:
        assert _native.kernels().variant == variant
        assert _native.unavailable_reason() is None
    if variant != "portable":
        monkeypatch.setenv("QKV_CPU_ISA", "other")
        assert not _native.can_execute(variant)
        assert _native.kernels(variant) is None
        assert f"cannot execute the {variant} build" in _native.unavailable_reason(variant)
        assert _native.kernels().variant == "portable"
    with pytest.raises(ValueError, match="kernel variant 'sse9' is not one of avx512_bf16, avx512, avx2, portable"):
        _native.kernels("sse9")
