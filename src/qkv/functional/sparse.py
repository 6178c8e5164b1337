"""Sparse attention patterns, computed block-sparse: the ``L x S`` mask is never built.

Notation: B batch, H query heads, H_kv key/value heads, L query length, S key length, E head dim,
b block size, nq = L / b query blocks, nk = S / b key blocks.

A pattern is a block *layout*, a bool ``(nq, nk)`` table saying which key blocks each query block
attends to (as in the Sparse Transformer, Longformer and BigBird block-sparse kernels). Only those
blocks are computed, with the online softmax of :mod:`qkv.functional.chunked` (exact within the
pattern, ``O(L)`` memory, differentiable). ``causal`` adds token-level lower-right causal masking
on top of the layout. Patterns:

* local (sliding window): :func:`sliding_window_attention` at token granularity, or
  :func:`local_layout` at block granularity;
* dilated / strided (Sparse Transformer): :func:`dilated_layout`, :func:`strided_layout`;
* window + global + random blocks (BigBird / Longformer): :func:`bigbird_layout`.

Backends: ``"blocks"`` is the block loop above; ``"flex"`` runs ``torch.nn.attention.flex_attention``
(compiled) with a block mask made from the same layout. On CPU builds flex needs ``torch.compile``
(a compilation per new shape; eager flex materialises the scores), so ``"auto"`` picks flex only on CUDA
and the block loop elsewhere (README, "Long sequences on a CPU").
"""

from __future__ import annotations

import torch

from qkv.functional._tracing import compile_cache_tag
from qkv.functional.chunked import chunked_attention

__all__ = [
    "local_layout",
    "dilated_layout",
    "strided_layout",
    "bigbird_layout",
    "layout_to_mask",
    "block_sparse_attention",
    "sliding_window_attention",
    "bigbird_attention",
    "strided_attention",
]


def _positive(name: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _offsets(nq: int, nk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Query block positions aligned to the end of the keys ``(nq, 1)`` and key blocks ``(1, nk)``."""
    _positive("nq", nq)
    _positive("nk", nk)
    return torch.arange(nq)[:, None] + (nk - nq), torch.arange(nk)[None, :]


def local_layout(nq: int, nk: int, *, window: int, causal: bool = False) -> torch.Tensor:
    """Block sliding window: query block ``i`` sees key blocks within ``window - 1`` blocks of it.

    Returns:
        bool ``(nq, nk)``; with ``causal`` only blocks at or before the query block.
    """
    _positive("window", window)
    i, j = _offsets(nq, nk)
    d = i - j
    return ((d >= 0) & (d < window)) if causal else (d.abs() < window)


def dilated_layout(nq: int, nk: int, *, window: int, dilation: int, causal: bool = False) -> torch.Tensor:
    """Dilated window (Longformer): key blocks ``i - dilation * t`` for ``0 <= t < window`` (and ``+``).

    Returns:
        bool ``(nq, nk)``.
    """
    _positive("window", window)
    _positive("dilation", dilation)
    i, j = _offsets(nq, nk)
    d = i - j
    near = (d >= 0) & (d < window * dilation) if causal else d.abs() < window * dilation
    return near & (d % dilation == 0)


def strided_layout(nq: int, nk: int, *, stride: int, local: int = 1, causal: bool = True) -> torch.Tensor:
    """Sparse Transformer strided pattern: the ``local`` previous blocks and every ``stride``-th block.

    Key block ``j`` is visible to query block ``i`` iff ``0 <= i - j < local`` or ``(i - j) % stride == 0``
    (``|i - j|`` when not causal).

    Returns:
        bool ``(nq, nk)``.
    """
    _positive("stride", stride)
    _positive("local", local)
    i, j = _offsets(nq, nk)
    d = i - j if causal else (i - j).abs()
    return (d >= 0) & ((d < local) | (d % stride == 0))


def bigbird_layout(
    nq: int,
    nk: int,
    *,
    window: int = 1,
    num_global: int = 1,
    num_random: int = 1,
    causal: bool = False,
    seed: int = 0,
) -> torch.Tensor:
    """BigBird: a window of blocks, global blocks, and random blocks per query block.

    Args:
        nq: query blocks.
        nk: key blocks.
        window: key blocks on each side of the query block (``|i - j| <= window``; only before it
            when causal).
        num_global: the first ``num_global`` blocks are global: every query sees them and their
            queries see every key (every earlier key when causal).
        num_random: random key blocks per query block, drawn once from ``seed`` (fixed per layout).
        causal: keep only key blocks at or before the query block.
        seed: random-block seed.

    Returns:
        bool ``(nq, nk)``.
    """
    _positive("window", window, 0)
    _positive("num_global", num_global, 0)
    _positive("num_random", num_random, 0)
    i, j = _offsets(nq, nk)
    d = i - j
    layout = (d.abs() <= window) | (j < num_global) | (torch.arange(nq)[:, None] < num_global)
    if causal:
        layout = layout & (d >= 0)
    if num_random:
        gen = torch.Generator().manual_seed(seed)
        scores = torch.rand(nq, nk, generator=gen).masked_fill(layout | (causal & (d < 0)), 2.0)
        picks = scores.topk(min(num_random, nk), dim=1, largest=False).indices  # (nq, r)
        rand = torch.zeros(nq, nk, dtype=torch.bool).scatter_(1, picks, True)
        layout = layout | (rand & (scores < 2.0))
    return layout


def layout_to_mask(layout: torch.Tensor, block: int, L: int, S: int) -> torch.Tensor:
    """The dense ``(1, 1, L, S)`` bool mask a layout stands for (for tests and references; ``O(L S)``)."""
    _positive("block", block)
    m = layout.repeat_interleave(block, 0).repeat_interleave(block, 1)  # (nq*b, nk*b)
    return m[:L, :S][None, None]


def _check_blocks(q: torch.Tensor, k: torch.Tensor, block: int, layout: torch.Tensor) -> tuple[int, int]:
    _positive("block", block)
    L, S = q.shape[-2], k.shape[-2]
    if L % block or S % block:
        raise ValueError(f"block ({block}) must divide the query length L={L} and the key length S={S}")
    need = (L // block, S // block)
    if tuple(layout.shape) != need or layout.dtype != torch.bool:
        raise ValueError(f"layout must be bool (L/block, S/block) = {need}, got {layout.dtype} {tuple(layout.shape)}")
    return need


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: torch.Tensor,
    *,
    block: int,
    causal: bool = False,
    lengths: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Attention restricted to the key blocks a layout allows, computed block by block.

    Args:
        q: queries ``(B, H, L, E)``.
        k: keys ``(B, H_kv, S, E)``.
        v: values ``(B, H_kv, S, Ev)``.
        layout: bool ``(L / block, S / block)``, True = the query block attends to the key block.
        block: block size; must divide L and S.
        causal: also apply token-level lower-right causal masking.
        lengths: ``(B,)`` key lengths (keys past them are padding).
        scale: score scale, default ``1 / sqrt(E)``.
        backend: ``"auto"``, ``"blocks"`` or ``"flex"`` (see the module docstring).

    Returns:
        ``(B, H, L, Ev)``; rows with no visible key are zeros.
    """
    _check_blocks(q, k, block, layout)
    if _use_flex(backend, q):
        return _flex(q, k, v, layout=layout, block=block, causal=causal, window=None, lengths=lengths,
                     scale=scale)
    return chunked_attention(q, k, v, causal=causal, lengths=lengths, scale=scale, block_q=block,
                             block_k=block, layout=layout)


def sliding_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    window: int,
    causal: bool = True,
    lengths: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Local attention at token granularity: query at position ``p`` sees ``p - window < j <= p``
    (causal) or ``|j - p| < window``, exactly as :func:`qkv.functional.masks.sliding_window_mask`.

    Only the key blocks overlapping each query block's window are computed: time and memory grow
    linearly in L for a fixed window.

    Args:
        q: ``(B, H, L, E)``; k: ``(B, H_kv, S, E)``; v: ``(B, H_kv, S, Ev)``.
        window: window size >= 1 (1 = self only).
        causal: one-sided (default) or two-sided window.
        lengths: ``(B,)`` key lengths.
        scale: score scale, default ``1 / sqrt(E)``.
        backend: ``"auto"``, ``"blocks"`` or ``"flex"``.

    Returns:
        ``(B, H, L, Ev)``.
    """
    _positive("window", window)
    if _use_flex(backend, q):
        return _flex(q, k, v, layout=None, block=128, causal=causal, window=window, lengths=lengths, scale=scale)
    bq = max(64, min(256, window))  # blocks about the window size: few wasted (masked) scores
    return chunked_attention(q, k, v, causal=causal, window=window, lengths=lengths, scale=scale,
                             block_q=bq, block_k=bq)


def bigbird_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    block: int = 64,
    window: int = 1,
    num_global: int = 1,
    num_random: int = 1,
    causal: bool = False,
    seed: int = 0,
    lengths: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """BigBird attention: :func:`bigbird_layout` through :func:`block_sparse_attention`."""
    _positive("block", block)
    L, S = q.shape[-2], k.shape[-2]
    if L % block or S % block:
        raise ValueError(f"block ({block}) must divide the query length L={L} and the key length S={S}")
    layout = bigbird_layout(L // block, S // block, window=window, num_global=num_global,
                            num_random=num_random, causal=causal, seed=seed)
    return block_sparse_attention(q, k, v, layout, block=block, causal=causal, lengths=lengths, backend=backend)


def strided_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    block: int = 64,
    stride: int = 4,
    local: int = 1,
    causal: bool = True,
    lengths: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Sparse Transformer strided attention: :func:`strided_layout` through :func:`block_sparse_attention`."""
    _positive("block", block)
    L, S = q.shape[-2], k.shape[-2]
    if L % block or S % block:
        raise ValueError(f"block ({block}) must divide the query length L={L} and the key length S={S}")
    layout = strided_layout(L // block, S // block, stride=stride, local=local, causal=causal)
    return block_sparse_attention(q, k, v, layout, block=block, causal=causal, lengths=lengths, backend=backend)


# ----------------------------------------------------------------------------- flex backend

_COMPILED: dict[str, object] = {}


def flex_available() -> bool:
    """Whether ``torch.nn.attention.flex_attention`` can be imported in this build."""
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def _use_flex(backend: str, q: torch.Tensor) -> bool:
    if backend not in ("auto", "blocks", "flex"):
        raise ValueError(f"backend must be 'auto', 'blocks' or 'flex', got {backend!r}")
    if backend == "flex" and not flex_available():
        raise ValueError("backend='flex' needs torch.nn.attention.flex_attention (torch >= 2.5)")
    return backend == "flex" or (backend == "auto" and q.is_cuda and flex_available())


def _flex(q, k, v, *, layout, block, causal, window, lengths, scale):
    """The same pattern through compiled flex_attention with a block mask (sparse blocks skipped)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    B, H, L, _ = q.shape
    S = k.shape[2]
    off = S - L
    lay = None if layout is None else layout.to(q.device)
    lens = None if lengths is None else lengths.to(q.device)

    def mask_mod(b, h, i, j):
        ok = j >= 0
        if lay is not None:
            ok = ok & lay[i // block, j // block]
        if causal:
            ok = ok & (j <= i + off)
        if window is not None:
            ok = ok & (j > i + off - window)
            if not causal:
                ok = ok & (j < i + off + window)
        if lens is not None:
            ok = ok & (j < lens[b])
        return ok

    bm = create_block_mask(mask_mod, B if lens is not None else None, None, L, S, device=q.device)
    if "flex" not in _COMPILED:
        _COMPILED["flex"] = torch.compile(flex_attention, dynamic=False)
    with compile_cache_tag():
        return _COMPILED["flex"](q, k, v, block_mask=bm, scale=scale, enable_gqa=k.shape[1] != H)
