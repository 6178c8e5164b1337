"""Mask builders: True = may attend; causal lower-right aligned; checked against explicit loops."""

import pytest
import torch

from qkv.functional import causal_mask, combine, padding_mask, sliding_window_mask


@pytest.mark.parametrize("L, S", [(4, 4), (2, 6), (6, 2), (1, 5), (3, 0)])
def test_causal_mask_is_lower_right_aligned(L, S):
    m = causal_mask(L, S)
    assert m.shape == (1, 1, L, S) and m.dtype == torch.bool
    expected = torch.tensor([[j <= i + S - L for j in range(S)] for i in range(L)], dtype=torch.bool).view(L, S)
    assert torch.equal(m[0, 0], expected)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("L, S, window", [(6, 6, 1), (6, 6, 3), (3, 8, 2), (8, 8, 20)])
def test_sliding_window(L, S, window, causal):
    m = sliding_window_mask(L, S, window=window, causal=causal)[0, 0]
    for i in range(L):
        p = i + S - L
        for j in range(S):
            ok = p - window < j <= p if causal else abs(j - p) < window
            assert bool(m[i, j]) == ok, (i, j)


def test_sliding_window_rejects_bad_window():
    with pytest.raises(ValueError, match="window must be an int >= 1, got 0"):
        sliding_window_mask(4, window=0)


def test_padding_mask_from_lengths_and_ids():
    m = padding_mask(torch.tensor([3, 1, 0]), max_len=4)
    assert m.shape == (3, 1, 1, 4)
    assert m[:, 0, 0].tolist() == [[True, True, True, False], [True, False, False, False], [False] * 4]
    ids = torch.tensor([[5, 6, 0, 0], [7, 0, 0, 0]])
    m2 = padding_mask(ids, pad_id=0)
    assert m2[:, 0, 0].tolist() == [[True, True, False, False], [True, False, False, False]]
    assert padding_mask(torch.tensor([2, 5])).shape == (2, 1, 1, 5)


def test_padding_mask_errors():
    with pytest.raises(ValueError, match=r"lengths must be an integer tensor of shape \(B,\)"):
        padding_mask(torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"ids must have shape \(B, S\)"):
        padding_mask(torch.ones(2, dtype=torch.long), pad_id=0)
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, max_len=2\]"):
        padding_mask(torch.tensor([3]), max_len=2)


def test_combine():
    a = causal_mask(3)
    b = padding_mask(torch.tensor([2, 3]), max_len=3)
    c = combine(a, None, b)
    assert c.shape == (2, 1, 3, 3)
    assert torch.equal(c, a & b)
    assert combine(None, None) is None
    with pytest.raises(ValueError, match="masks must be torch.bool"):
        combine(a, torch.ones(3, 3))
