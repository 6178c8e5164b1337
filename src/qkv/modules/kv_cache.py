"""Key/value cache for incremental decoding.

Notation: B batch (rows, or rows x beams), H_kv key/value heads, S_max capacity, E head dim,
F feature size of kernel (linear) attention.

The buffers are allocated once at their capacity ``(B_max, H_kv, S_max, E)``. Decoding fills the time
axis left to right (:meth:`KVCache.update`) and uses the first ``batch_size`` rows: :meth:`KVCache.select`
reorders rows for beam search and shrinks (or regrows, up to ``B_max``) the active batch when rows
finish, copying only the filled slots of the rows that actually change.
"""

from __future__ import annotations

import torch
from torch import nn

from qkv.functional.linear import kernel_attention, linear_attention_step

__all__ = ["KVCache", "LinearAttentionState"]


class KVCache(nn.Module):
    """Preallocated ``(B, H_kv, S_max, E)`` key and value buffers filled left to right.

    ``update(k, v)`` appends ``L`` new positions and returns views of everything cached so far, so a
    decoding step costs O(S) attention and no re-projection of old tokens. For cross-attention the
    keys/values of the source are written once (``static=True``) and reused at every step.

    Args:
        batch_size: capacity in rows ``B_max`` (also the initial active batch).
        num_kv_heads: key/value heads ``H_kv``.
        max_len: capacity in positions ``S_max``.
        head_dim: ``E``.
        dtype: buffer dtype.
        device: buffer device.
        static: a cross-attention cache, filled once from the source and then only read.
    """

    def __init__(
        self,
        batch_size: int,
        num_kv_heads: int,
        max_len: int,
        head_dim: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        static: bool = False,
    ) -> None:
        super().__init__()
        if min(batch_size, num_kv_heads, max_len, head_dim) < 1:
            raise ValueError(
                f"KVCache sizes must be >= 1, got batch_size={batch_size}, num_kv_heads={num_kv_heads},"
                f" max_len={max_len}, head_dim={head_dim}"
            )
        shape = (batch_size, num_kv_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.length = 0
        self.static = static
        self._rows = batch_size
        self._shape = shape  # (B_max, H_kv, S_max, E), read on every update

    @property
    def max_len(self) -> int:
        """Capacity ``S_max`` in positions."""
        return self.k.shape[2]

    @property
    def capacity(self) -> int:
        """Capacity ``B_max`` in rows."""
        return self.k.shape[0]

    @property
    def batch_size(self) -> int:
        """Active rows ``B`` (``<= capacity``): the rows ``update`` expects and ``get`` returns."""
        return self._rows

    def reset(self) -> None:
        """Forget the cached positions and make every row active again."""
        self.length = 0
        self._rows = self.capacity

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``k, v`` of shape ``(B, H_kv, L, E)``; return cached ``(B, H_kv, length, E)`` views.

        ``B`` must equal :attr:`batch_size`. A static cache accepts one fill only.
        """
        B, H_kv, L, E = k.shape
        _, cap_h, cap_s, cap_e = self._shape
        if B != self._rows or H_kv != cap_h or E != cap_e or v.shape != k.shape:
            raise ValueError(
                f"k {tuple(k.shape)} / v {tuple(v.shape)} do not fit the cache {self._shape}"
                f" with {self._rows} active rows (need (B, H_kv, L, E) with B={self._rows},"
                f" H_kv={cap_h}, E={cap_e})"
            )
        if self.static and self.length > 0:
            raise ValueError(f"static KVCache is already filled ({self.length} positions); call reset() first")
        start, end = self.length, self.length + L
        if end > cap_s:
            raise ValueError(f"KVCache overflow: {start} cached + {L} new > max_len {cap_s}")
        bk, bv = self._buffers["k"], self._buffers["v"]  # (B_max, H_kv, S_max, E); skips Module.__getattr__
        if B != self._shape[0]:
            bk, bv = bk[:B], bv[:B]  # (B, H_kv, S_max, E)
        bk.narrow(2, start, L).copy_(k)
        bv.narrow(2, start, L).copy_(v)
        self.length = end
        return bk.narrow(2, 0, end), bv.narrow(2, 0, end)

    def get(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The cached ``(B, H_kv, length, E)`` keys and values of the active rows."""
        return self.k[: self._rows, :, : self.length], self.v[: self._rows, :, : self.length]

    def select(self, index: torch.Tensor) -> None:
        """Make the active rows ``index``: new row ``b`` becomes old row ``index[b]``.

        Covers beam reordering (same size, repeats allowed), dropping finished rows (fewer rows) and
        expanding a prompt to its beams (more rows, up to :attr:`capacity`). Only filled slots of rows
        whose source differs from themselves are copied, so a beam that keeps its own history costs
        nothing.

        Args:
            index: ``(B_new,)`` long, entries in ``[0, batch_size)``.
        """
        if index.dim() != 1:
            raise ValueError(f"index must be 1-D (B_new,), got shape {tuple(index.shape)}")
        n_new = index.shape[0]
        if n_new > self.capacity:
            raise ValueError(f"index selects {n_new} rows but the cache holds at most {self.capacity}")
        if n_new and (int(index.min()) < 0 or int(index.max()) >= self._rows):
            raise ValueError(f"index entries must lie in [0, {self._rows}), got {index.tolist()}")
        n = self.length
        if n:
            index = index.to(self.k.device)
            rows = torch.arange(n_new, device=index.device)
            moved = (index != rows).nonzero().squeeze(1)  # (M,) rows whose history changes
            if moved.numel():
                src = index[moved]
                self.k[moved, :, :n] = self.k[src, :, :n]  # advanced indexing reads a copy first
                self.v[moved, :, :n] = self.v[src, :, :n]
        self._rows = n_new

    def reorder(self, index: torch.Tensor) -> None:
        """Select batch rows (beam search): row ``b`` becomes old row ``index[b]``; only filled slots move."""
        if index.shape[0] != self._rows:
            raise ValueError(f"reorder keeps the batch size {self._rows}; got {index.shape[0]} rows (use select)")
        self.select(index)


class LinearAttentionState:
    """Decoding state of causal linear attention: running sums, O(1) in the number of tokens.

    ``kv = sum_j phi(k_j) v_j^T`` ``(B, H_kv, F, Ev)`` and ``z = sum_j phi(k_j)`` ``(B, H_kv, F)`` replace the
    ``(B, H_kv, S, E)`` key/value history of a :class:`KVCache`: a step costs O(F Ev) whatever the position.
    Like a KVCache it has ``length`` and ``select(index)``, which is all the decoding engines need
    (:mod:`qkv.generation.steps`). An attention module decoding with it calls :meth:`prefill` on the prompt
    and :meth:`step` on each new token.
    """

    def __init__(self) -> None:
        self.kv: torch.Tensor | None = None
        self.z: torch.Tensor | None = None
        self.length = 0

    def prefill(self, phi_q, phi_k, v, *, key_padding: torch.Tensor | None = None, chunk: int = 128):
        """Causal linear attention over a prompt, keeping its sums.

        Args:
            phi_q: ``(B, H, L, F)`` query features.
            phi_k: ``(B, H_kv, L, F)`` key features.
            v: ``(B, H_kv, L, Ev)`` values.
            key_padding: ``(B, L)`` bool, True = real token (padding stays out of the sums).
            chunk: chunk length of the causal prefix sums.

        Returns:
            ``(B, H, L, Ev)``.
        """
        if self.length:
            raise ValueError(f"prefill needs an empty state, this one holds {self.length} positions")
        out = kernel_attention(phi_q, phi_k, v, causal=True, key_padding=key_padding, chunk=chunk)
        if key_padding is not None:
            phi_k = phi_k * key_padding[:, None, :, None].to(phi_k.dtype)
        self.kv = torch.matmul(phi_k.transpose(-1, -2), v)  # (B, H_kv, F, Ev)
        self.z = phi_k.sum(2)  # (B, H_kv, F)
        self.length = phi_k.shape[2]
        return out

    def step(self, phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """One new position: ``phi_q (B, H, 1, F)``, ``phi_k (B, H_kv, 1, F)``, ``v (B, H_kv, 1, Ev)``.

        Returns:
            ``(B, H, 1, Ev)``.
        """
        state = None if self.kv is None else (self.kv, self.z)
        out, (self.kv, self.z) = linear_attention_step(phi_q, phi_k, v, state)
        self.length += 1
        return out

    def select(self, index: torch.Tensor) -> None:
        """Keep rows ``index (B_new,)`` (reorder for beams, drop finished rows, expand)."""
        if self.kv is not None:
            index = index.to(self.kv.device)
            self.kv, self.z = self.kv[index], self.z[index]
