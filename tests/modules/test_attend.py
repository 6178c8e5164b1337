"""qkv.modules.attend: the long-sequence kernels behind MultiHeadAttention and model configs."""

from __future__ import annotations

import pytest
import torch

from qkv.functional import padding_mask, sliding_window_mask
from qkv.functional.sparse import bigbird_layout, layout_to_mask
from qkv.models import registry
from qkv.modules.attend import ATTEND_REGISTRY, BigBirdAttend, PerformerAttend, SoftmaxAttend, build_attend
from qkv.modules.attention import MultiHeadAttention

KERNELS = {
    "chunked": {},
    "sliding_window": {"window": 8},
    "bigbird": {"block": 16},
    "strided": {"block": 16, "stride": 2},
    "linear": {},
    "performer": {"num_features": 32},
}


def heads(B=2, H=4, H_kv=2, L=50, S=50, E=8):
    return torch.randn(B, H, L, E), torch.randn(B, H_kv, S, E), torch.randn(B, H_kv, S, E)


def test_registered_by_name():
    assert set(KERNELS) <= set(ATTEND_REGISTRY)
    with pytest.raises(ValueError, match="unknown attention 'nope'"):
        build_attend("nope")


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("causal", [False, True])
def test_output_is_its_returned_weights_times_values(name, causal):
    """Each kernel's output equals (the weights its pattern implies) @ V, through the whole MHA."""
    mha = MultiHeadAttention(32, 4, num_kv_heads=2, attend=build_attend(name, **KERNELS[name]))
    x = torch.randn(2, 50, 32)
    mask = padding_mask(torch.tensor([50, 30]), max_len=50)
    out, w = mha(x, mask=mask, causal=causal, return_weights=True)
    assert torch.isfinite(out).all() and w.shape == (2, 4, 50, 50)
    rows = w.sum(-1)  # 1, or 0 where a row sees no key (a local window over padding only)
    assert ((rows - 1).abs() < 5e-3).logical_or(rows == 0).all()  # 5e-3: the kernels' eps on tiny features
    assert (rows == 0).sum() == (0 if name != "sliding_window" else 4 * (50 - 30 - 7))  # queries 37..49
    assert w[1, :, :, 30:].abs().max() == 0  # padding is never attended
    if causal:
        assert w.triu(1).abs().max() == 0
    _, k, v = mha._project(x, None)
    v = mha._split(v, 2).repeat_interleave(2, 1)  # (B, H, S, E)
    expect = mha.out_proj((w @ v).transpose(1, 2).reshape(2, 50, 32))
    torch.testing.assert_close(out, expect, atol=1e-5, rtol=1e-4)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in mha.parameters())


def test_exact_kernels_equal_softmax():
    q, k, v = heads()
    mask = torch.rand(2, 1, 50, 50) > 0.2
    bias = torch.randn(1, 4, 50, 50)
    ref = SoftmaxAttend()(q, k, v, mask=mask, bias=bias, causal=True)
    torch.testing.assert_close(build_attend("chunked", block_q=16, block_k=16)(q, k, v, mask=mask, bias=bias,
                                                                              causal=True), ref, atol=1e-5, rtol=1e-5)
    wide = build_attend("sliding_window", window=64)  # window longer than the sequence = full attention
    torch.testing.assert_close(wide(q, k, v, mask=mask, bias=bias, causal=True), ref, atol=1e-5, rtol=1e-5)
    local = build_attend("sliding_window", window=5)(q, k, v, mask=mask)
    torch.testing.assert_close(local, SoftmaxAttend()(q, k, v, mask=mask & sliding_window_mask(50, 50, window=5,
                                                                                                 causal=False)),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("L, S", [(50, 50), (1, 37), (7, 37)])
def test_block_sparse_pads_any_length_keeping_causal_alignment(L, S):
    """Lengths the block does not divide are front-padded: equal to dense with the padded pattern's mask."""
    q, k, v = heads(L=L, S=S)
    attend = BigBirdAttend(block=16, window=1, num_global=1, num_random=1, seed=0)
    out = attend(q, k, v, causal=True)
    pl, ps = -L % 16, -S % 16
    lay = bigbird_layout((L + pl) // 16, (S + ps) // 16, window=1, num_global=1, num_random=1, causal=True)
    mask = layout_to_mask(lay, 16, L + pl, S + ps)[..., pl:, ps:]
    torch.testing.assert_close(out, SoftmaxAttend()(q, k, v, mask=mask, causal=True), atol=1e-5, rtol=1e-5)


def test_performer_redraws_in_training_only():
    attend = PerformerAttend(num_features=16, head_dim=8, redraw_every=2)
    q, k, v = heads()
    first = attend.projection.clone()
    attend.eval()
    for _ in range(3):
        attend(q, k, v)
    assert torch.equal(attend.projection, first)
    attend.train()
    attend(q, k, v)
    attend(q, k, v)
    assert torch.equal(attend.projection, first)
    attend(q, k, v)  # third training call: redraw
    assert not torch.equal(attend.projection, first) and attend.projection.shape == (16, 8)
    assert "projection" in attend.state_dict()


def test_kernel_attention_rejects_what_it_cannot_compute():
    q, k, v = heads()
    lin = build_attend("linear")
    with pytest.raises(ValueError, match="cannot add a score bias"):
        lin(q, k, v, bias=torch.zeros(1, 1, 50, 50))
    with pytest.raises(ValueError, match=r"only key-padding masks \(B, 1, 1, S\), got \(1, 1, 50, 50\)"):
        lin(q, k, v, mask=torch.ones(1, 1, 50, 50, dtype=torch.bool))
    with pytest.raises(ValueError, match="window must be an int >= 1, got 0"):
        build_attend("sliding_window", window=0)
    with pytest.raises(ValueError, match="num_features must be an int >= 1, got 0"):
        build_attend("performer", num_features=0)
    with pytest.raises(ValueError, match="block must be an int >= 1, got 0"):
        build_attend("bigbird", block=0)


@pytest.mark.parametrize("name", ["chunked", "sliding_window", "bigbird", "linear"])
def test_decoder_config_selects_kernel_and_cached_decoding_matches(name):
    """A model config names the kernel; incremental decoding with a KV cache equals the full forward."""
    model = registry.build("gpt-char-small", num_layers=2, d_model=32, dropout=0.0, attention=name,
                           attention_options=KERNELS[name]).eval()
    assert any(type(m) is type(build_attend(name, **KERNELS[name])) for m in model.modules())
    ids = torch.randint(0, 65, (2, 20))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(2, 20)
        steps = [model(ids[:, t : t + 1], cache=cache) for t in range(20)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["chunked", "sliding_window", "bigbird"])
def test_chunked_kernels_drop_attention_weights_in_training(name):
    """Attention dropout reaches the block kernels: in training the output changes with the seed, repeats with
    it, and averages over seeds to the output without dropout (the kept weights are scaled by 1 / (1 - p))."""
    mha = MultiHeadAttention(32, 4, num_kv_heads=2, dropout=0.5, attend=build_attend(name, **KERNELS[name]))
    x = torch.randn(1, 40, 32)
    with torch.no_grad():
        clean = mha.eval()(x, causal=True)
        mha.train()

        def seeded(seed):
            torch.manual_seed(seed)
            return mha(x, causal=True)

        outs = torch.stack([seeded(s) for s in range(100)])
    assert torch.equal(outs[0], seeded(0)) and not torch.allclose(outs[0], outs[1])
    one = (outs[0] - clean).abs().mean()
    mean = (outs.mean(0) - clean).abs().mean()
    assert mean < one / 5, (float(mean), float(one))
