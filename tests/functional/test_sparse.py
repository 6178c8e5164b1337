"""qkv.functional.sparse: every pattern equals dense attention given the equivalent boolean mask."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from qkv.functional import (
    attention_math,
    bigbird_attention,
    bigbird_layout,
    block_sparse_attention,
    causal_mask,
    dilated_layout,
    local_layout,
    padding_mask,
    sliding_window_attention,
    sliding_window_mask,
    strided_attention,
    strided_layout,
)
from qkv.functional.sparse import flex_available, layout_to_mask


def make(B=2, H=4, H_kv=2, L=64, S=96, E=8):
    q = torch.randn(B, H, L, E, requires_grad=True)
    k = torch.randn(B, H_kv, S, E, requires_grad=True)
    v = torch.randn(B, H_kv, S, E, requires_grad=True)
    return q, k, v


def check_against_dense(out, q, k, v, mask, causal):
    ref, _ = attention_math(q, k, v, mask=mask, causal=causal)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


LAYOUTS = {
    "local": lambda nq, nk, c: local_layout(nq, nk, window=2, causal=c),
    "dilated": lambda nq, nk, c: dilated_layout(nq, nk, window=2, dilation=2, causal=c),
    "strided": lambda nq, nk, c: strided_layout(nq, nk, stride=3, local=2, causal=c),
    "bigbird": lambda nq, nk, c: bigbird_layout(nq, nk, window=1, num_global=1, num_random=2, causal=c),
}


@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("heads", [(4, 4), (4, 2), (3, 1)])
def test_layout_equals_dense_with_equivalent_mask(name, causal, heads):
    b = 16
    q, k, v = make(H=heads[0], H_kv=heads[1])
    L, S = q.shape[2], k.shape[2]
    layout = LAYOUTS[name](L // b, S // b, causal)
    assert layout.any(1).all() and not layout.all()  # a real, non-trivial pattern
    out = block_sparse_attention(q, k, v, layout, block=b, causal=causal)
    check_against_dense(out, q, k, v, layout_to_mask(layout, b, L, S), causal)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [1, 5, 40, 500])
def test_sliding_window_equals_dense(causal, window):
    q, k, v = make(L=70, S=70)
    lengths = torch.tensor([70, 33])
    out = sliding_window_attention(q, k, v, window=window, causal=causal, lengths=lengths)
    mask = sliding_window_mask(70, 70, window=window, causal=causal) & padding_mask(lengths, max_len=70)
    check_against_dense(out, q, k, v, mask, causal=False)


def test_wrappers_equal_their_layouts():
    q, k, v = make(L=64, S=64)
    out = bigbird_attention(q, k, v, block=8, window=1, num_global=1, num_random=1, seed=3)
    lay = bigbird_layout(8, 8, window=1, num_global=1, num_random=1, seed=3)
    check_against_dense(out, q, k, v, layout_to_mask(lay, 8, 64, 64), causal=False)
    out = strided_attention(q, k, v, block=8, stride=3)
    lay = strided_layout(8, 8, stride=3, causal=True)
    check_against_dense(out, q, k, v, layout_to_mask(lay, 8, 64, 64), causal=True)


def test_layout_properties():
    assert torch.equal(local_layout(4, 4, window=1), torch.eye(4, dtype=torch.bool))
    causal = strided_layout(8, 8, stride=3, local=2, causal=True)
    assert not causal.triu(1).any()  # nothing after the query block
    assert causal[7].nonzero().flatten().tolist() == [1, 4, 6, 7]  # stride 3 back from 7, plus 2 local
    assert dilated_layout(6, 6, window=3, dilation=2, causal=True)[5].nonzero().flatten().tolist() == [1, 3, 5]
    a, b = bigbird_layout(16, 16, num_random=2, seed=0), bigbird_layout(16, 16, num_random=2, seed=0)
    assert torch.equal(a, b) and not torch.equal(a, bigbird_layout(16, 16, num_random=2, seed=1))
    assert a[:, 0].all() and a[0].all()  # global block: seen by all, sees all
    no_random = bigbird_layout(16, 16, num_random=0)
    # exactly two random blocks per query block (the global row already sees every block)
    assert (a & ~no_random).sum(1).tolist() == [0] + [2] * 15


def test_empty_rows_give_zeros():
    q, k, v = make(L=32, S=32)
    lengths = torch.tensor([0, 32])  # batch 0 has no keys
    out = block_sparse_attention(q, k, v, local_layout(4, 4, window=1), block=8, lengths=lengths)
    assert torch.isfinite(out).all() and out[0].abs().max() == 0
    out = sliding_window_attention(q, k, v, window=4, lengths=lengths)
    assert torch.isfinite(out).all() and out[0].abs().max() == 0


def test_bad_input_names_argument_and_value():
    q, k, v = make(L=64, S=96)
    with pytest.raises(ValueError, match=r"window must be an int >= 1, got 0"):
        sliding_window_attention(q, k, v, window=0)
    with pytest.raises(ValueError, match=r"block \(24\) must divide the query length L=64"):
        bigbird_attention(q, k, v, block=24)
    with pytest.raises(ValueError, match=r"block \(7\) must divide"):
        block_sparse_attention(q, k, v, torch.ones(9, 13, dtype=torch.bool), block=7)
    with pytest.raises(ValueError, match=r"stride must be an int >= 1, got 0"):
        strided_layout(4, 4, stride=0)
    with pytest.raises(ValueError, match=r"dilation must be an int >= 1, got -1"):
        dilated_layout(4, 4, window=2, dilation=-1)
    with pytest.raises(ValueError, match=r"layout must be bool \(L/block, S/block\) = \(4, 6\)"):
        block_sparse_attention(q, k, v, torch.ones(4, 4, dtype=torch.bool), block=16)
    with pytest.raises(ValueError, match=r"backend must be 'auto', 'blocks' or 'flex', got 'cuda'"):
        sliding_window_attention(q, k, v, window=4, backend="cuda")


@pytest.mark.slow
@pytest.mark.skipif(not flex_available(), reason="flex_attention not in this torch build")
def test_flex_backend_equals_block_loop():
    """Compiled flex_attention (slow to compile on CPU) computes the same pattern."""
    q, k, v = (t.detach() for t in make(L=256, S=256, H=4, H_kv=4))
    lay = bigbird_layout(2, 2, window=0, num_global=0, num_random=1)
    ref = block_sparse_attention(q, k, v, lay, block=128, causal=True, backend="blocks")
    out = block_sparse_attention(q, k, v, lay, block=128, causal=True, backend="flex")
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    ref = attention_math(q, k, v, mask=sliding_window_mask(256, 256, window=20) & causal_mask(256))[0]
    torch.testing.assert_close(sliding_window_attention(q, k, v, window=20, backend="flex"), ref,
                               atol=1e-5, rtol=1e-5)


FLEX_VS_BLOCKS = """
import torch
from qkv.functional import bigbird_layout, block_sparse_attention
q, k, v = torch.randn(3, 1, 2, 256, 8).unbind(0)
lay = bigbird_layout(2, 2, window=0, num_global=0, num_random=1)
out, ref = (block_sparse_attention(q, k, v, lay, block=128, causal=True, backend=b) for b in ("flex", "blocks"))
print(torch.backends.cpu.get_cpu_capability(), (out - ref).abs().max().item())
"""


@pytest.mark.slow
@pytest.mark.skipif(not flex_available(), reason="flex_attention not in this torch build")
def test_flex_kernels_compiled_for_one_instruction_set_are_not_reused_by_another(tmp_path):
    """An AVX-512 run and an AVX2 run sharing inductor's cache each get kernels for their own vector width."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path)}
    seen = []
    for capability in ("avx512", "avx2"):  # the first run fills the cache the second one reads
        run = subprocess.run([sys.executable, "-c", FLEX_VS_BLOCKS], env={**env, "ATEN_CPU_CAPABILITY": capability},
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-2000:]
        isa, err = run.stdout.split()
        seen.append(isa)
        assert float(err) < 1e-5, f"flex under {isa} differs from the block loop by {err}"
    if seen[0] != "AVX512":
        pytest.skip(f"this CPU has no AVX-512 to share the cache with AVX2 (got {seen})")


def test_compile_cache_tag_adds_the_instruction_set_inductor_was_asked_for(monkeypatch):
    from qkv.functional._tracing import compile_cache_tag

    before = torch.compiler.config.cache_key_tag
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    with compile_cache_tag():
        assert torch.compiler.config.cache_key_tag == before
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    with compile_cache_tag():
        assert torch.compiler.config.cache_key_tag == f"{before}|ATEN_CPU_CAPABILITY=avx2"
    assert torch.compiler.config.cache_key_tag == before
