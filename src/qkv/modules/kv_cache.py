"""Key/value cache for incremental decoding.

Notation: B batch (rows, or rows x beams), H_kv key/value heads, S_max capacity, E head dim.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["KVCache"]


class KVCache(nn.Module):
    """Preallocated ``(B, H_kv, S_max, E)`` key and value buffers filled left to right.

    ``update(k, v)`` appends ``L`` new positions and returns views of everything cached so far, so a
    decoding step costs O(S) attention and no re-projection of old tokens. For cross-attention the
    keys/values of the source are written once (``static=True``) and reused at every step.
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

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def reset(self) -> None:
        self.length = 0

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``k, v`` of shape ``(B, H_kv, L, E)``; return cached ``(B, H_kv, length, E)`` views."""
        B, H_kv, L, E = k.shape
        if (B, H_kv, E) != (self.k.shape[0], self.k.shape[1], self.k.shape[3]) or v.shape != k.shape:
            raise ValueError(
                f"k {tuple(k.shape)} / v {tuple(v.shape)} do not fit the cache {tuple(self.k.shape)}"
                " (need (B, H_kv, L, E) with the cache's B, H_kv and E)"
            )
        end = self.length + L
        if end > self.max_len:
            raise ValueError(f"KVCache overflow: {self.length} cached + {L} new > max_len {self.max_len}")
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def get(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The cached ``(B, H_kv, length, E)`` keys and values."""
        return self.k[:, :, : self.length], self.v[:, :, : self.length]

    def reorder(self, index: torch.Tensor) -> None:
        """Select batch rows (beam search): row ``b`` becomes old row ``index[b]``; only filled slots move."""
        n = self.length
        self.k[:, :, :n] = self.k[index, :, :n]
        self.v[:, :, :n] = self.v[index, :, :n]
