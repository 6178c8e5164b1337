"""Position information: sinusoidal tables, rotary embeddings (RoPE) and ALiBi biases.

Notation: B batch, H heads, L query length, S key length, E head dim, D d_model, P table length.

* :func:`sinusoidal_table` is the paper's ``PE(pos, 2i) = sin(pos / base^(2i/D))``,
  ``PE(pos, 2i+1) = cos(pos / base^(2i/D))``, added to token embeddings.
* :func:`rotary_tables` / :func:`apply_rotary` rotate each pair of query/key features by an angle
  proportional to the position (RoFormer), so ``q_m . k_n`` depends only on ``m - n``. The pairs are
  ``(x[i], x[i + E/2])`` (the "rotate half" layout of GPT-NeoX and Llama).
* :func:`alibi_bias` is ALiBi's additive score penalty ``-slope_h * distance``, passed as ``bias=``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["sinusoidal_table", "rotary_tables", "apply_rotary", "rotate_half", "alibi_slopes", "alibi_bias"]


def sinusoidal_table(
    max_len: int,
    d_model: int,
    *,
    base: float = 10000.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The sinusoidal positional encoding of "Attention Is All You Need".

    Args:
        max_len: number of positions P.
        d_model: feature size D (even).
        base: the wavelength base (10000 in the paper).
        dtype: result dtype (the angles are computed in float64 and rounded once).
        device: where to build the table.

    Returns:
        ``(P, D)`` with sines in even and cosines in odd columns.
    """
    if max_len < 1 or d_model < 2 or d_model % 2:
        raise ValueError(f"need max_len >= 1 and an even d_model >= 2, got max_len={max_len}, d_model={d_model}")
    pos = torch.arange(max_len, dtype=torch.float64, device=device).unsqueeze(1)  # (P, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64, device=device)  # (D/2,)
    angles = pos / base ** (two_i / d_model)  # (P, D/2)
    table = torch.empty(max_len, d_model, dtype=torch.float64, device=device)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table.to(dtype)


def rotary_tables(
    max_len: int,
    head_dim: int,
    *,
    base: float = 10000.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines of the rotary angles ``theta_{p,i} = p / base^(2i/E)``.

    Returns:
        ``(cos, sin)``, each ``(P, E)``; column ``i`` and ``i + E/2`` hold the same angle.
    """
    if max_len < 1 or head_dim < 2 or head_dim % 2:
        raise ValueError(f"need max_len >= 1 and an even head_dim >= 2, got max_len={max_len}, head_dim={head_dim}")
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64, device=device) / head_dim)  # (E/2,)
    angles = torch.arange(max_len, dtype=torch.float64, device=device)[:, None] * inv_freq  # (P, E/2)
    angles = torch.cat([angles, angles], dim=-1)  # (P, E)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``(x1, x2) -> (-x2, x1)`` on the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    positions: torch.Tensor | int = 0,
) -> torch.Tensor:
    """Rotate the features of ``x`` by the angles of its positions.

    Args:
        x: ``(B, H, L, E)`` queries or keys.
        cos: ``(P, E)`` from :func:`rotary_tables`.
        sin: ``(P, E)``.
        positions: an int offset (positions ``offset .. offset + L - 1``), or ``(L,)`` / ``(B, L)`` long.

    Returns:
        ``(B, H, L, E)`` in the dtype of ``x``.
    """
    L, E = x.shape[-2], x.shape[-1]
    if cos.shape[-1] != E:
        raise ValueError(f"x has head dim {E} but the rotary tables have {cos.shape[-1]} (shape {tuple(cos.shape)})")
    if isinstance(positions, int):
        if positions < 0 or positions + L > cos.shape[0]:
            raise ValueError(
                f"positions {positions}..{positions + L - 1} do not fit the rotary table of length {cos.shape[0]}"
            )
        c, s = cos[positions : positions + L], sin[positions : positions + L]  # (L, E)
    else:
        c, s = cos[positions], sin[positions]  # (L, E) or (B, L, E)
        if c.dim() == 3:
            c, s = c.unsqueeze(1), s.unsqueeze(1)  # (B, 1, L, E)
    out = x * c + rotate_half(x) * s
    return out.to(x.dtype)


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """ALiBi head slopes: the geometric sequence ``2^(-8/n), 2^(-16/n), ...`` for ``n = num_heads``.

    When ``num_heads`` is not a power of two, the slopes of the nearest lower power of two are
    followed by every other slope of the next power of two, as in the paper's code.

    Returns:
        ``(H,)`` float32.
    """
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1, got {num_heads}")

    def powers(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    n = 2 ** math.floor(math.log2(num_heads))
    slopes = powers(n) + powers(2 * n)[0::2][: num_heads - n]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(
    slopes: torch.Tensor,
    L: int,
    S: int | None = None,
    *,
    causal: bool = True,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """ALiBi additive scores, aligned like the causal mask (query ``i`` sits at key position ``i + S - L``).

    Args:
        slopes: ``(H,)`` from :func:`alibi_slopes`.
        L: query length.
        S: key length (default L).
        causal: penalty ``slope * (j - p)`` (pair with a causal mask); else ``-slope * |j - p|``.
        device: where to build the bias (default: the device of ``slopes``).

    Returns:
        ``(1, H, L, S)`` float32, to pass as ``bias=``.
    """
    S = L if S is None else S
    device = slopes.device if device is None else device
    q_pos = torch.arange(L, device=device)[:, None] + (S - L)  # (L, 1)
    k_pos = torch.arange(S, device=device)[None, :]  # (1, S)
    dist = (k_pos - q_pos).float()  # (L, S)
    if not causal:
        dist = -dist.abs()
    return (slopes.to(device)[:, None, None] * dist)[None]  # (1, H, L, S)
