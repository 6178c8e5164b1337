"""Attention kernels as strategy objects (the x-transformers ``Attend`` idea).

A kernel maps heads to heads: ``(q (B, H, L, E), k (B, H_kv, S, E), v (B, H_kv, S, Ev), *, mask, bias,
causal, dropout_p, return_weights) -> out (B, H, L, Ev)`` or ``(out, weights)``. ``MultiHeadAttention``
takes one as ``attend=``; model configs name one with ``attention`` + ``attention_options`` and build it
with :func:`build_attend`. Variants (sparse, linear, ...) are small classes registered here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from qkv.functional.attention import attention_weights, scaled_dot_product_attention
from qkv.functional.chunked import chunked_attention
from qkv.functional.linear import draw_orthogonal_features, feature_maps, kernel_attention, linear_attention
from qkv.functional.masks import sliding_window_mask
from qkv.functional.sparse import bigbird_layout, layout_to_mask, strided_layout

__all__ = [
    "SoftmaxAttend",
    "ChunkedAttend",
    "SlidingWindowAttend",
    "BlockSparseAttend",
    "BigBirdAttend",
    "StridedAttend",
    "LinearAttend",
    "PerformerAttend",
    "build_attend",
    "register_attend",
    "ATTEND_REGISTRY",
]


class SoftmaxAttend(nn.Module):
    """Exact softmax attention through :func:`qkv.functional.scaled_dot_product_attention`."""

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        causal: bool = False,
        dropout_p: float = 0.0,
        return_weights: bool = False,
    ):
        return scaled_dot_product_attention(
            q, k, v, mask=mask, bias=bias, causal=causal, dropout_p=dropout_p, return_weights=return_weights
        )


ATTEND_REGISTRY: dict[str, Callable[..., nn.Module]] = {"softmax": SoftmaxAttend}

# Long-sequence kernels (functional.chunked / sparse / linear). They never form the attention weights. The
# chunked ones (exact, sliding window, block-sparse) drop attention weights block by block as they go; the
# linear/kernel ones have no weights to drop (dropout_p is accepted for the common signature there).
# return_weights=True computes the weights their pattern implies, explicitly (O(L S), for inspection).


def _with_weights(out, q, k, *, mask, bias, causal, return_weights):
    if not return_weights:
        return out
    return out, attention_weights(q, k, mask=mask, bias=bias, causal=causal)


class ChunkedAttend(nn.Module):
    """Exact softmax attention in O(L) memory (:func:`qkv.functional.chunked.chunked_attention`)."""

    def __init__(self, *, block_q: int | None = None, block_k: int | None = None) -> None:
        super().__init__()
        self.block_q, self.block_k = block_q, block_k

    def forward(self, q, k, v, *, mask=None, bias=None, causal=False, dropout_p=0.0, return_weights=False):
        out = chunked_attention(q, k, v, mask=mask, bias=bias, causal=causal, block_q=self.block_q,
                                block_k=self.block_k, dropout_p=dropout_p)
        return _with_weights(out, q, k, mask=mask, bias=bias, causal=causal, return_weights=return_weights)


class SlidingWindowAttend(nn.Module):
    """Local attention: each query sees ``window`` keys (one-sided when causal, else ``|i - j| < window``)."""

    def __init__(self, window: int = 256) -> None:
        super().__init__()
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an int >= 1, got {window!r}")
        self.window = window

    def forward(self, q, k, v, *, mask=None, bias=None, causal=False, dropout_p=0.0, return_weights=False):
        out = chunked_attention(q, k, v, mask=mask, bias=bias, causal=causal, window=self.window,
                                block_q=max(64, min(256, self.window)), block_k=max(64, min(256, self.window)),
                                dropout_p=dropout_p)
        if not return_weights:
            return out
        local = sliding_window_mask(q.shape[2], k.shape[2], window=self.window, causal=causal, device=q.device)
        return out, attention_weights(q, k, mask=local if mask is None else mask & local, bias=bias, causal=causal)


class BlockSparseAttend(nn.Module):
    """Block-sparse attention over a layout made per ``(L / block, S / block)`` by ``make_layout``.

    Inputs whose lengths the block does not divide are padded at the front with masked keys (and
    the padded query rows dropped), which keeps lower-right causal alignment, so models can use it
    with any sequence length (and with a KV cache).
    """

    def __init__(self, block: int, make_layout: Callable[[int, int, bool], torch.Tensor]) -> None:
        super().__init__()
        if not isinstance(block, int) or block < 1:
            raise ValueError(f"block must be an int >= 1, got {block!r}")
        self.block, self.make_layout = block, make_layout

    def forward(self, q, k, v, *, mask=None, bias=None, causal=False, dropout_p=0.0, return_weights=False):
        L, S, b = q.shape[2], k.shape[2], self.block
        pl, ps = -L % b, -S % b
        pmask, pbias, qp, kp, vp = mask, bias, q, k, v
        if pl or ps:
            qp, kp, vp = (F.pad(t, (0, 0, n, 0)) for t, n in ((q, pl), (k, ps), (v, ps)))  # (.., pl+L | ps+S, E)
            pmask, pbias = _pad_mask(mask, L, S, pl, ps, q.device), _pad_bias(bias, pl, ps)
        layout = self.make_layout((L + pl) // b, (S + ps) // b, causal)
        out = chunked_attention(qp, kp, vp, mask=pmask, bias=pbias, causal=causal,
                                block_q=b, block_k=b, layout=layout, dropout_p=dropout_p)[:, :, pl:]  # (B, H, L, Ev)
        if not return_weights:
            return out
        dense = layout_to_mask(layout, b, L + pl, S + ps)[..., pl:, ps:]  # (1, 1, L, S)
        m = dense if mask is None else mask & dense
        return out, attention_weights(q, k, mask=m, bias=bias, causal=causal)


def _pad_mask(mask, L, S, pl, ps, device):
    """Front-pad a bool mask broadcastable to (B, H, L, S): padded keys masked, padded queries free."""
    if mask is None:
        mask = torch.ones(1, 1, 1, S, dtype=torch.bool, device=device)
    while mask.dim() < 4:
        mask = mask.unsqueeze(0)
    if mask.shape[3] == 1:
        mask = mask.expand(*mask.shape[:3], S)
    mask = F.pad(mask, (ps, 0), value=False)  # (.., .., L|1, ps+S)
    return F.pad(mask, (0, 0, pl, 0), value=True) if mask.shape[2] > 1 else mask


def _pad_bias(bias, pl, ps):
    if bias is None:
        return None
    while bias.dim() < 4:
        bias = bias.unsqueeze(0)
    return F.pad(bias, (ps if bias.shape[3] > 1 else 0, 0, pl if bias.shape[2] > 1 else 0, 0))


class BigBirdAttend(BlockSparseAttend):
    """BigBird: window + global + random blocks (:func:`qkv.functional.sparse.bigbird_layout`)."""

    def __init__(self, block: int = 64, window: int = 1, num_global: int = 1, num_random: int = 1,
                 seed: int = 0) -> None:
        def make(nq: int, nk: int, causal: bool) -> torch.Tensor:
            return bigbird_layout(nq, nk, window=window, num_global=num_global, num_random=num_random,
                                  causal=causal, seed=seed)

        make(1, 1, False)  # validates the options now
        super().__init__(block, make)


class StridedAttend(BlockSparseAttend):
    """Sparse Transformer strided blocks (:func:`qkv.functional.sparse.strided_layout`)."""

    def __init__(self, block: int = 64, stride: int = 4, local: int = 1) -> None:
        def make(nq: int, nk: int, causal: bool) -> torch.Tensor:
            return strided_layout(nq, nk, stride=stride, local=local, causal=causal)

        make(1, 1, True)
        super().__init__(block, make)


def _key_padding(mask: torch.Tensor | None, B: int, S: int) -> torch.Tensor | None:
    """A key-padding mask (B|1, 1, 1, S) as (B, S); kernel attention cannot take other masks."""
    if mask is None:
        return None
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2] != 1:
        raise ValueError(f"linear attention takes only key-padding masks (B, 1, 1, S), got {tuple(mask.shape)}")
    return mask[:, 0, 0].expand(B, S)


class LinearAttend(nn.Module):
    """Linear attention with ``elu(x) + 1`` features (:func:`qkv.functional.linear.kernel_attention`)."""

    def __init__(self, chunk: int = 128) -> None:
        super().__init__()
        if not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")
        self.chunk = chunk

    def projection_for(self, q: torch.Tensor) -> torch.Tensor | None:
        """The FAVOR+ projection ``(F, E)`` for this call; None: ``elu + 1`` features."""
        return None

    def forward(self, q, k, v, *, mask=None, bias=None, causal=False, dropout_p=0.0, return_weights=False):
        if bias is not None:
            raise ValueError("linear attention cannot add a score bias; use a softmax kernel for ALiBi/relative bias")
        kp = _key_padding(mask, q.shape[0], k.shape[2])
        projection = self.projection_for(q)
        if not return_weights:
            return linear_attention(q, k, v, causal=causal, key_padding=kp, projection=projection, chunk=self.chunk)
        phi_q, phi_k = feature_maps(q, k, projection)
        out = kernel_attention(phi_q, phi_k, v, causal=causal, key_padding=kp, chunk=self.chunk)
        g = q.shape[1] // k.shape[1]
        a = torch.matmul(phi_q, phi_k.repeat_interleave(g, 1).transpose(-1, -2))  # (B, H, L, S)
        if causal:
            a = a.tril(k.shape[2] - q.shape[2])
        if kp is not None:
            a = a * kp[:, None, None, :]
        den = a.sum(-1, keepdim=True)
        return out, torch.where(den > 0, a / (den + 1e-6), torch.zeros_like(a))  # the kernel's own eps


class PerformerAttend(LinearAttend):
    """Performer: FAVOR+ positive orthogonal random features, redrawn every ``redraw_every`` training calls.

    Args:
        num_features: random features F (>= 1).
        head_dim: E; the projection ``(F, E)`` is drawn at the first call when not given.
        redraw_every: redraw the projection after this many training-mode calls (0: never).
        chunk: chunk length for causal prefix sums.
        seed: seed of the projection draws.
    """

    def __init__(self, num_features: int = 256, head_dim: int | None = None, *, redraw_every: int = 1000,
                 chunk: int = 128, seed: int = 0) -> None:
        super().__init__(chunk)
        if not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features must be an int >= 1, got {num_features!r}")
        if not isinstance(redraw_every, int) or redraw_every < 0:
            raise ValueError(f"redraw_every must be an int >= 0, got {redraw_every!r}")
        self.num_features, self.redraw_every, self.calls = num_features, redraw_every, 0
        self.generator = torch.Generator().manual_seed(seed)
        proj = None if head_dim is None else draw_orthogonal_features(num_features, head_dim, generator=self.generator)
        self.register_buffer("projection", proj)

    def redraw(self, head_dim: int | None = None, device=None) -> None:
        """Draw a fresh projection ``(F, E)``."""
        E = head_dim if head_dim is not None else self.projection.shape[1]
        dev = device if device is not None else (None if self.projection is None else self.projection.device)
        self.projection = draw_orthogonal_features(self.num_features, E, generator=self.generator, device=dev)

    def projection_for(self, q: torch.Tensor) -> torch.Tensor:
        if self.projection is None or self.projection.shape[1] != q.shape[-1]:
            self.redraw(q.shape[-1], q.device)
        elif self.training and self.redraw_every and self.calls and self.calls % self.redraw_every == 0:
            self.redraw()
        if self.training:
            self.calls += 1
        return self.projection


for _name, _factory in (("chunked", ChunkedAttend), ("sliding_window", SlidingWindowAttend),
                        ("bigbird", BigBirdAttend), ("strided", StridedAttend), ("linear", LinearAttend),
                        ("performer", PerformerAttend)):
    ATTEND_REGISTRY[_name] = _factory


def register_attend(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make a kernel available to configs by name."""
    ATTEND_REGISTRY[name] = factory


def build_attend(name: str = "softmax", **options: Any) -> nn.Module:
    """Build the kernel a config names, e.g. ``build_attend("softmax")``."""
    if name not in ATTEND_REGISTRY:
        raise ValueError(f"unknown attention {name!r}; choose one of {sorted(ATTEND_REGISTRY)}")
    return ATTEND_REGISTRY[name](**options)
