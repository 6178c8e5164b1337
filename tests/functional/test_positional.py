"""Sinusoidal table, rotary embeddings and ALiBi against their formulas in float64."""

from __future__ import annotations

import math

import pytest
import torch

from qkv.functional.positional import alibi_bias, alibi_slopes, apply_rotary, rotary_tables, sinusoidal_table


def test_sinusoidal_table_matches_formula_float64():
    P, D = 50, 12
    table = sinusoidal_table(P, D, dtype=torch.float64)
    for pos in range(P):
        for i in range(D // 2):
            angle = pos / 10000 ** (2 * i / D)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-12)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-12)


def test_sinusoidal_float32_is_the_rounded_float64_table():
    t32, t64 = sinusoidal_table(100, 16), sinusoidal_table(100, 16, dtype=torch.float64)
    assert t32.dtype == torch.float32
    assert torch.equal(t32, t64.float())


@pytest.mark.parametrize("bad", [(0, 8), (10, 7), (10, 0)])
def test_sinusoidal_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="even d_model"):
        sinusoidal_table(*bad)


def _rotary_complex(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Reference: pair (x_i, x_{i+E/2}) as a complex number and multiply by exp(i * pos * theta_i)."""
    E = x.shape[-1]
    theta = base ** (-torch.arange(0, E, 2, dtype=torch.float64) / E)  # (E/2,)
    z = torch.complex(x[..., : E // 2], x[..., E // 2 :])
    z = z * torch.polar(torch.ones_like(theta), positions[:, None].double() * theta)  # (L, E/2)
    return torch.cat([z.real, z.imag], dim=-1)


def test_rotary_matches_complex_rotation():
    cos, sin = rotary_tables(32, 8, dtype=torch.float64)
    x = torch.randn(2, 3, 5, 8, dtype=torch.float64)
    got = apply_rotary(x, cos, sin, 7)
    torch.testing.assert_close(got, _rotary_complex(x, torch.arange(7, 12)))
    pos = torch.tensor([[0, 3, 4, 9, 31], [1, 1, 2, 2, 30]])
    got_b = apply_rotary(x, cos, sin, pos)
    for b in range(2):
        torch.testing.assert_close(got_b[b], _rotary_complex(x[b], pos[b]))


def test_rotary_scores_depend_only_on_relative_position():
    cos, sin = rotary_tables(64, 16, dtype=torch.float64)
    q, k = torch.randn(1, 1, 1, 16, dtype=torch.float64), torch.randn(1, 1, 1, 16, dtype=torch.float64)

    def score(m, n):
        return (apply_rotary(q, cos, sin, m) * apply_rotary(k, cos, sin, n)).sum().item()

    assert score(10, 3) == pytest.approx(score(40, 33), abs=1e-10)
    assert score(10, 3) != pytest.approx(score(10, 4), abs=1e-6)


def test_rotary_out_of_table_raises():
    cos, sin = rotary_tables(8, 4)
    with pytest.raises(ValueError, match="rotary table of length 8"):
        apply_rotary(torch.randn(1, 1, 3, 4), cos, sin, 6)


def test_alibi_slopes_follow_the_paper():
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    # 6 heads: the 4-head sequence, then every other slope of the 8-head sequence.
    want = [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3]
    torch.testing.assert_close(alibi_slopes(6), torch.tensor(want))


def test_alibi_bias_is_lower_right_aligned():
    slopes = alibi_slopes(4)
    bias = alibi_bias(slopes, 2, 5)  # 2 queries at key positions 3 and 4
    assert bias.shape == (1, 4, 2, 5)
    for h in range(4):
        for i in range(2):
            for j in range(5):
                assert bias[0, h, i, j].item() == pytest.approx(slopes[h].item() * (j - (i + 3)))
    sym = alibi_bias(slopes, 5, causal=False)
    torch.testing.assert_close(sym, sym.transpose(-1, -2))
    assert torch.all(sym <= 0)
