"""Boolean attention masks. True = may attend, as in ``torch.nn.functional.scaled_dot_product_attention``.

Notation: B batch, H heads, L query length, S key length.

Every mask here is a ``torch.bool`` tensor broadcastable to ``(B, H, L, S)``. Causal masks are
lower-right aligned: key ``j`` is visible to query ``i`` iff ``j <= i + (S - L)``, so a query block
appended after ``S - L`` cached keys sees all of them.
"""

from __future__ import annotations

import torch

__all__ = ["causal_mask", "padding_mask", "sliding_window_mask", "combine", "check_broadcast"]


def _positions(L: int, S: int | None, device: torch.device | str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Query positions aligned to the end of the keys, as a column, and key positions, as a row."""
    S = L if S is None else S
    if L < 0 or S < 0:
        raise ValueError(f"lengths must be non-negative, got L={L}, S={S}")
    q_pos = torch.arange(L, device=device).unsqueeze(-1) + (S - L)  # (L, 1)
    k_pos = torch.arange(S, device=device).unsqueeze(0)  # (1, S)
    return q_pos, k_pos


def causal_mask(L: int, S: int | None = None, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Lower-right aligned causal mask.

    Args:
        L: query length.
        S: key length (default ``L``).
        device: where to build the mask.

    Returns:
        ``(1, 1, L, S)`` bool, True where key ``j <= i + (S - L)``.
    """
    q_pos, k_pos = _positions(L, S, device)
    return (k_pos <= q_pos)[None, None]


def sliding_window_mask(
    L: int,
    S: int | None = None,
    *,
    window: int,
    causal: bool = True,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Local attention: each query sees keys within ``window`` positions of itself.

    With query ``i`` at key position ``p = i + (S - L)``, key ``j`` is visible iff
    ``p - window < j <= p`` (causal) or ``|j - p| < window`` (non-causal). ``window=1`` means self only.

    Returns:
        ``(1, 1, L, S)`` bool.
    """
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an int >= 1, got {window!r}")
    q_pos, k_pos = _positions(L, S, device)
    visible = k_pos > q_pos - window
    visible = visible & ((k_pos <= q_pos) if causal else (k_pos < q_pos + window))
    return visible[None, None]


def padding_mask(
    lengths_or_ids: torch.Tensor,
    *,
    pad_id: int | None = None,
    max_len: int | None = None,
) -> torch.Tensor:
    """Key padding mask lifted to the canonical 4-D layout.

    Args:
        lengths_or_ids: either lengths ``(B,)`` (integer; then ``max_len`` or ``max(lengths)`` gives S),
            or token ids ``(B, S)`` together with ``pad_id``.
        pad_id: the padding token id, when ids are given.
        max_len: key length S when lengths are given (default: the longest length).

    Returns:
        ``(B, 1, 1, S)`` bool, True for real tokens.
    """
    x = lengths_or_ids
    if pad_id is not None:
        if x.dim() != 2:
            raise ValueError(f"ids must have shape (B, S) when pad_id is given, got {tuple(x.shape)}")
        return (x != pad_id)[:, None, None, :]
    if x.dim() != 1 or x.is_floating_point() or x.dtype == torch.bool:
        raise ValueError(
            f"lengths must be an integer tensor of shape (B,), got {x.dtype} {tuple(x.shape)}"
            " (pass pad_id= to build the mask from token ids)"
        )
    S = int(x.max()) if max_len is None else max_len
    if x.numel() and (int(x.min()) < 0 or int(x.max()) > S):
        raise ValueError(f"lengths must lie in [0, max_len={S}], got min {int(x.min())}, max {int(x.max())}")
    return (torch.arange(S, device=x.device)[None, :] < x[:, None])[:, None, None, :]


def check_broadcast(name: str, t: torch.Tensor, target: tuple[int, ...]) -> None:
    """Raise ValueError unless ``t`` broadcasts to ``target`` without growing its rank past it."""
    if t.dim() > len(target) or any(
        a != 1 and a != b for a, b in zip(reversed(t.shape), reversed(target), strict=False)
    ):
        dims = "(B, H, L, S)" if len(target) == 4 else str(len(target)) + "-D"
        raise ValueError(f"{name} of shape {tuple(t.shape)} does not broadcast to {dims} = {tuple(target)}")


def combine(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """Logical AND of boolean masks (None entries are ignored). Returns None when all are None."""
    out = None
    for m in masks:
        if m is None:
            continue
        if m.dtype != torch.bool:
            raise ValueError(f"masks must be torch.bool (True = may attend), got {m.dtype}")
        out = m if out is None else out & m
    return out
