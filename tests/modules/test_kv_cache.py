"""KVCache: appending, static caches, and row selection (reorder / shrink / expand)."""

from __future__ import annotations

import pytest
import torch

from qkv.modules import KVCache, MultiHeadAttention


def _kv(B, H=2, L=3, E=4):
    return torch.randn(B, H, L, E), torch.randn(B, H, L, E)


def test_update_appends_and_get_returns_views():
    c = KVCache(3, 2, 8, 4)
    k1, v1 = _kv(3, L=3)
    k2, v2 = _kv(3, L=2)
    c.update(k1, v1)
    k, v = c.update(k2, v2)
    assert c.length == 5 and k.shape == (3, 2, 5, 4)
    assert torch.equal(k, torch.cat([k1, k2], 2)) and torch.equal(v, torch.cat([v1, v2], 2))
    assert k.data_ptr() == c.k.data_ptr()  # a view, no copy
    assert torch.equal(c.get()[0], k)


def test_overflow_and_shape_errors():
    c = KVCache(2, 2, 4, 4)
    with pytest.raises(ValueError, match="overflow"):
        c.update(*_kv(2, L=5))
    with pytest.raises(ValueError, match="do not fit"):
        c.update(*_kv(3, L=1))
    with pytest.raises(ValueError, match="batch_size=0"):
        KVCache(0, 2, 4, 4)


def test_static_cache_fills_once():
    c = KVCache(2, 2, 6, 4, static=True)
    c.update(*_kv(2, L=6))
    with pytest.raises(ValueError, match="static"):
        c.update(*_kv(2, L=1))
    c.reset()
    c.update(*_kv(2, L=2))
    assert c.length == 2


def test_select_reorders_shrinks_and_expands():
    c = KVCache(6, 2, 5, 4)
    c.select(torch.arange(2))  # start with 2 active rows of 6
    assert c.batch_size == 2
    k, v = _kv(2, L=3)
    c.update(k, v)
    c.select(torch.tensor([0, 0, 0, 1, 1, 1]))  # expand to 3 beams each
    assert torch.equal(c.get()[0], k[[0, 0, 0, 1, 1, 1]])
    c.select(torch.tensor([5, 0, 3]))  # reorder + shrink
    assert torch.equal(c.get()[0], k[[1, 0, 1]]) and torch.equal(c.get()[1], v[[1, 0, 1]])
    k2, v2 = _kv(3, L=1)
    got, _ = c.update(k2, v2)
    assert torch.equal(got, torch.cat([k[[1, 0, 1]], k2], 2))
    with pytest.raises(ValueError, match="at most 6"):
        c.select(torch.zeros(7, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        c.select(torch.tensor([3]))
    with pytest.raises(ValueError, match="keeps the batch size"):
        c.reorder(torch.tensor([0]))


def test_select_copies_only_rows_that_change():
    """A row that keeps its own history is not written (a spy on Tensor.__setitem__ sees every write)."""
    c = KVCache(4, 1, 3, 2)
    c.update(*_kv(4, H=1, L=2, E=2))
    before = c.k.clone()
    writes = []
    real_setitem = torch.Tensor.__setitem__

    def spy(self, idx, value):
        writes.append(idx)
        return real_setitem(self, idx, value)

    torch.Tensor.__setitem__ = spy
    try:
        c.select(torch.tensor([0, 1, 2, 3]))  # identity: nothing to copy
        assert writes == []
        c.select(torch.tensor([0, 0, 2, 3]))  # only row 1 changes
    finally:
        torch.Tensor.__setitem__ = real_setitem
    assert len(writes) == 2 and writes[0][0].tolist() == [1]  # k and v, row 1 only
    assert torch.equal(c.k[[0, 2, 3]], before[[0, 2, 3]]) and torch.equal(c.k[1, :, :2], before[0, :, :2])


def test_reorder_keeps_old_api():
    c = KVCache(3, 2, 4, 4)
    k, v = _kv(3, L=2)
    c.update(k, v)
    c.reorder(torch.tensor([2, 2, 0]))
    assert torch.equal(c.get()[0], k[[2, 2, 0]])


def test_attention_with_cache_after_select_matches_full_attention():
    """MultiHeadAttention decoding through a reordered cache equals attention over the reordered sequence."""
    mha = MultiHeadAttention(16, 4, num_kv_heads=2).eval()
    x = torch.randn(3, 6, 16)
    c = KVCache(3, 2, 6, 4)
    with torch.no_grad():
        mha(x[:, :5], causal=True, cache=c)
        index = torch.tensor([2, 0])
        c.select(index)
        got = mha(x[index, 5:], causal=True, cache=c)
        want = mha(x[index], causal=True)[:, 5:]
    assert (got - want).abs().max() <= 1e-6


def test_linear_attention_state_decodes_like_the_causal_kernel():
    """Prefill a padded prompt, then step token by token (with a row reorder): equals causal kernel attention."""
    from qkv.functional.linear import elu_feature_map, kernel_attention
    from qkv.modules.kv_cache import LinearAttentionState

    B, H, H_kv, L, E = 3, 4, 2, 9, 8
    q, k, v = torch.randn(B, H, L, E), torch.randn(B, H_kv, L, E), torch.randn(B, H_kv, L, E)
    pq, pk = elu_feature_map(q), elu_feature_map(k)
    kp = torch.ones(B, L, dtype=torch.bool)
    kp[1, :2] = False  # row 1 is left-padded
    want = kernel_attention(pq, pk, v, causal=True, key_padding=kp)  # (B, H, L, E)
    state = LinearAttentionState()
    P = 5
    got = [state.prefill(pq[:, :, :P], pk[:, :, :P], v[:, :, :P], key_padding=kp[:, :P])]
    index = torch.tensor([2, 0, 1])
    state.select(index)
    for t in range(P, L):
        got.append(state.step(pq[index, :, t : t + 1], pk[index, :, t : t + 1], v[index, :, t : t + 1]))
    assert state.length == L and state.kv.shape == (B, H_kv, E, E)
    assert (got[0] - want[:, :, :P]).abs().max() <= 1e-5
    assert (torch.cat(got[1:], 2) - want[index, :, P:]).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="empty state"):
        state.prefill(pq, pk, v)
