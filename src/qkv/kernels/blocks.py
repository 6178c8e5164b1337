"""Chunked attention with each block's elementwise work in C (``_blocks.c``): the accelerated twin of
:func:`qkv.functional.chunked_attention`, which it matches (tests/kernels/test_blocks.py).

Notation: B batch, H query heads, H_kv key/value heads (G = H / H_kv), L query length, S key length,
E head dim (Ev for values); N = B * H_kv rows of heads; bq, bk query/key block sizes.

The algorithm and the block plan are the reference's (:func:`qkv.functional.chunked.block_plan`); what differs
is where the work runs. Each block's matmuls are torch's (in the input dtype: bf16 matmuls on CPUs that have
them), and everything between them (row max, exp2, sums, rescaling, casts, ``p`` and ``ds`` in the backward,
causal/window/padding and bool masks, transposed copies) is one C pass per block row. Scores are in log2
units (query blocks scaled by ``scale * log2(e)`` as they are copied). Query heads sharing a kv head are
stacked as rows ``i * G + g`` so each block is one batched matmul per kv head.

Buffers: a fresh CPU tensor of a few MB comes from new pages whose first touch costs a page fault per 4 KiB,
so block buffers are per-thread scratch kept between calls (never returned to the caller), and long
sequences' per-call buffers are advised onto huge pages (:mod:`qkv.functional._memory`).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import torch

from qkv.functional._memory import empty_large
from qkv.functional._tracing import tracing
from qkv.functional.accelerators import Call
from qkv.functional.chunked import block_plan, default_blocks
from qkv.kernels import native

__all__ = ["fits", "run"]

_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453
_POOL_MAX_ELEMS = 1 << 22  # larger scratch buffers are allocated per call, not kept
_pool = threading.local()


def fits(call: Call) -> str | None:
    """None when these blocks can compute ``call``, else why not."""
    q, mask, bias = call.q, call.mask, call.bias
    if native.kernels() is None:
        return f"not built ({native.unavailable_reason()})"
    if not native.supports(q) or q.dtype != call.k.dtype or q.dtype != call.v.dtype:
        return "CPU float32/bfloat16 inputs of one dtype only"
    if call.dropout_p:
        return "no dropout"
    if tracing():
        return "traced and compiled graphs keep torch's ops (the block loop calls C through ctypes)"
    if not native.Kernels.mask_supported(mask):
        return "bool masks only with contiguous, unbroadcast keys"
    if bias is not None and bias.requires_grad and torch.is_grad_enabled():
        return "a bias that needs a gradient is left to the reference"
    return None


def _scratch(name: str, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A 1-D scratch tensor of ``n`` elements, kept per thread between calls (used within one call only)."""
    if n > _POOL_MAX_ELEMS:
        return empty_large(n, dtype=dtype, device=device)
    buffers = _pool.__dict__.setdefault("buffers", {})
    buf = buffers.get((name, dtype))
    if buf is None or buf.numel() < n:
        buf = buffers[(name, dtype)] = torch.empty(n, dtype=dtype, device=device)
    return buf[:n]


def _arrange(t: torch.Tensor | None, H_kv: int, G: int) -> torch.Tensor | None:
    """Mask/bias broadcastable to (B, H, L, S) -> a view broadcastable to (B, H_kv, L, G, S)."""
    if t is None:
        return None
    while t.dim() < 4:
        t = t.unsqueeze(0)
    b, h, l, s = t.shape
    if h == 1:
        return t.unsqueeze(3)  # (b, 1, l, 1, s)
    return t.view(b, H_kv, G, l, s).transpose(2, 3)  # (b, H_kv, l, G, s)


def _cut(t: torch.Tensor | None, qs: int, qe: int, ks: int, ke: int) -> torch.Tensor | None:
    """Slice an arranged (b, h, l, g, s) tensor to a block, leaving broadcast (size-1) dims alone."""
    if t is None:
        return None
    if t.shape[2] != 1:
        t = t[:, :, qs:qe]
    if t.shape[4] != 1:
        t = t[..., ks:ke]
    return t


@dataclass(frozen=True)
class _Context:
    """One call's block settings: arranged mask/bias (see :func:`_arrange`), structure, block sizes."""

    mask: torch.Tensor | None
    bias: torch.Tensor | None
    causal: bool
    window: int | None
    layout: list | None
    off: int  # S - L: the position of query 0 among the keys
    bq: int
    bk: int
    B: int
    G: int
    qscale: float  # queries are multiplied by this (scale * log2(e)) as their blocks are made

    def batch(self, b: int) -> _Context:
        """The context of batch element ``b`` (mask/bias sliced where they have a batch dim)."""
        def one(t):
            return t if t is None or t.shape[0] == 1 else t[b : b + 1]
        return _Context(one(self.mask), one(self.bias), self.causal, self.window, self.layout, self.off, self.bq,
                        self.bk, 1, self.G, self.qscale)


class _Work:
    """Per-call block buffers in scratch: ``s``/``d`` float32 scores, ``lo`` input-dtype scores, ``rlo`` the
    ``(N, max(rows, bk), E)`` block products before the C kernels add them into float32 accumulators."""

    def __init__(self, N: int, rows: int, bk: int, E: int, low: torch.dtype, device) -> None:
        self.low = low
        n, nr = N * rows * bk, N * max(rows, bk) * E
        self.s, self.d = _scratch("s", n, torch.float32, device), _scratch("d", n, torch.float32, device)
        self.lo = self.s if low == torch.float32 else _scratch("lo", n, low, device)
        self.rlo = _scratch("rlo", nr, low, device)
        self._n, self._device = n, device

    def extra(self, name: str) -> torch.Tensor:
        """Another ``(N, rows, bk)``-sized buffer in the input dtype (the C kernels' outputs)."""
        return _scratch(name, self._n, self.low, self._device)

    @staticmethod
    def take(buf: torch.Tensor, *shape: int) -> torch.Tensor:
        return buf[: math.prod(shape)].view(shape)

    def matmul32(self, a: torch.Tensor, b: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        """``a @ b`` (batched) in the input dtype, into the float32 buffer ``dst``."""
        shape = (a.shape[0], a.shape[1], b.shape[2])
        if self.low == torch.float32:
            return torch.bmm(a, b, out=self.take(dst, *shape))
        return self.take(dst, *shape).copy_(torch.bmm(a, b, out=self.take(self.lo, *shape)))

    def product(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a @ b`` in the input dtype (buffer ``rlo``), for the C kernels to accumulate."""
        return torch.bmm(a, b, out=self.take(self.rlo, a.shape[0], a.shape[1], b.shape[2]))


class _Blocks:
    """The row blocks of ``scale * t`` (``t (N, n, E)``) as contiguous ``(N, size, E)`` tensors, written once into
    one scratch buffer (torch.bmm copies a slice strided across heads on every call, and takes a transposed view of
    a contiguous block as it is); the scale rides along with that copy (the queries' ``scale * log2(e)``) instead of
    a pass of its own."""

    def __init__(self, name: str, t: torch.Tensor, size: int, kern, scale: float = 1.0) -> None:
        N, n, E = t.shape
        buf = _scratch(name, t.numel(), t.dtype, t.device)
        self.size, self.parts = size, []
        for s in range(0, n, size):
            e = min(s + size, n)
            part = buf[N * s * E : N * e * E].view(N, e - s, E)
            if t.stride(2) == 1:
                kern.scale_rows(t[:, s:e], part, scale)
            else:
                torch.mul(t[:, s:e], scale, out=part)
            self.parts.append(part)

    def __getitem__(self, start: int) -> torch.Tensor:
        return self.parts[start // self.size]


class _Tile:
    """What the C kernels need to know about one block: its scores, structured and bool masks."""

    def __init__(self, kern, w: _Work, cx: _Context, N: int, length: int, qs, qe, ks, ke, needs_mask) -> None:
        self.kern, self.w, self.cx, self.N = kern, w, cx, N
        self.rows, self.cols = (qs, qe), (ks, ke)
        self.interval = kern.interval(qs + cx.off, cx.G, cx.causal, cx.window, length, ks) if needs_mask else None
        self.mask = None if cx.mask is None else (_cut(cx.mask, qs, qe, ks, ke), N // cx.B, cx.G)

    def scores(self, q_b: torch.Tensor, kT_b: torch.Tensor) -> torch.Tensor:
        """``(N, bq*G, bk)`` block scores in log2 units: in the input dtype, or float32 with the bias added
        (masks are applied by the C kernels)."""
        w, cx = self.w, self.cx
        if cx.bias is None:
            return torch.bmm(q_b, kT_b, out=w.take(w.lo, q_b.shape[0], q_b.shape[1], kT_b.shape[2]))
        s = w.matmul32(q_b, kT_b, w.s)
        (qs, qe), (ks, ke) = self.rows, self.cols
        s.view(cx.B, -1, qe - qs, cx.G, ke - ks).add_(_cut(cx.bias, qs, qe, ks, ke), alpha=_LOG2E)
        return s


def _forward(q3, k3, v3, cx: _Context, length: int, out, lse, kern) -> None:
    """Fills ``out (N, L*G, Ev)`` (float32) and ``lse (N, L*G, 1)`` (log2 units; +inf for rows that see no key)."""
    N, LG, _ = q3.shape
    G, bq, bk, S = cx.G, cx.bq, cx.bk, k3.shape[1]
    w = _Work(N, min(bq, LG // G) * G, min(bk, S), max(q3.shape[-1], v3.shape[-1]), q3.dtype, q3.device)
    qb, kb, vb = _Blocks("qb", q3, bq * G, kern, cx.qscale), _Blocks("kb", k3, bk, kern), _Blocks("vb", v3, bk, kern)
    for qs, qe, blocks in block_plan(LG // G, S, bq, bk, causal=cx.causal, window=cx.window, length=length,
                                     layout=cx.layout):
        rows = slice(qs * G, qe * G)
        acc = out[:, rows]  # (N, bq*G, Ev), filled in place
        if not blocks:
            acc.zero_()
            continue
        m = q3.new_full((N, (qe - qs) * G, 1), float("-inf"), dtype=torch.float32)
        l = torch.zeros_like(m)
        for i, (ks, ke, needs_mask) in enumerate(blocks):
            tile = _Tile(kern, w, cx, N, length, qs, qe, ks, ke, needs_mask)
            s = tile.scores(qb[qs * G], kb[ks].transpose(1, 2))
            p = w.take(w.lo, *s.shape)  # one C pass: max, exp2, sums, rescale; weights in the input dtype
            kern.forward_tile(s, p, m, l, acc, i == 0, tile.interval, tile.mask)
            kern.accumulate(acc, w.product(p, vb[ks]), i == 0)
        acc.div_(l.clamp_min(1e-30))  # rows with l == 0 have acc == 0
        lse[:, rows] = torch.where(l > 0, m + l.log2(), float("inf"))


def _backward(q3, k3, v3, out, lse, dout, cx: _Context, length: int, grads, kern) -> None:
    """Recompute block weights from lse; fills ``grads = (dq3, dk, dv)`` (dq3 still to be multiplied by scale).
    dK and dV accumulate transposed, ``dK^T += Q^T dS`` and ``dV^T += dO^T P``, so that only ``(L, E)``
    tensors are transposed (once), never the ``(bq, bk)`` blocks."""
    N, LG, E = q3.shape
    G, bq, bk, S, Ev = cx.G, cx.bq, cx.bk, k3.shape[1], v3.shape[-1]
    w = _Work(N, min(bq, LG // G) * G, min(bk, S), max(E, Ev), q3.dtype, q3.device)
    dq, dk, dv = grads  # dq float32, dk/dv in the inputs' dtype; first contributions copied in
    delta = torch.empty((N, LG, 1), dtype=torch.float32, device=dout.device)
    kern.rowdot(dout, out, delta)  # rowsum(dO * O), float32
    dout = dout.to(q3.dtype)
    rq = bq * G
    kb, vb = _Blocks("kb", k3, bk, kern), _Blocks("vb", v3, bk, kern)  # (N, bk, E|Ev)
    qb, dob = _Blocks("qb", q3, rq, kern, cx.qscale), _Blocks("dob", dout, rq, kern)  # (N, bq*G, E|Ev)
    dk_acc = _scratch("dkT", dk.numel(), torch.float32, dk.device).view(N, E, S)
    dv_acc = _scratch("dvT", dv.numel(), torch.float32, dv.device).view(N, Ev, S)
    seen = set()  # key blocks (by start) with a contribution in dk/dv so far
    for qs, qe, blocks in block_plan(LG // G, S, bq, bk, causal=cx.causal, window=cx.window, length=length,
                                     layout=cx.layout):
        rows = slice(qs * G, qe * G)
        if not blocks:
            dq[:, rows].zero_()
        for i, (ks, ke, needs_mask) in enumerate(blocks):
            first_k = ks not in seen
            seen.add(ks)
            tile = _Tile(kern, w, cx, N, length, qs, qe, ks, ke, needs_mask)
            q_b, k_b, v_b, do_b = qb[qs * G], kb[ks], vb[ks], dob[qs * G]
            s = tile.scores(q_b, k_b.transpose(1, 2))
            n, r, c = s.shape
            if s.dtype == w.low:  # no bias: s and dp in the input dtype; p over s, ds over dp (stay in cache)
                dp = torch.bmm(do_b, v_b.transpose(1, 2), out=w.take(w.extra("lo2"), n, r, c))  # (N, bq*G, bk)
                p, ds = s, dp
            else:  # float32 scores with the bias added
                dp = w.matmul32(do_b, v_b.transpose(1, 2), w.d)
                p, ds = w.take(w.extra("p"), n, r, c), w.take(w.extra("ds"), n, r, c)
            kern.backward_tile(s, dp, lse[:, rows], delta[:, rows], ds, p, tile.interval, tile.mask)
            kern.accumulate(dv_acc[:, :, ks:ke], w.product(do_b.transpose(1, 2), p), first_k)  # (N, Ev, bk)
            kern.accumulate(dq[:, rows], w.product(ds, k_b), i == 0)  # (N, bq*G, E)
            kern.accumulate(dk_acc[:, :, ks:ke], w.product(q_b.transpose(1, 2), ds), first_k)  # (N, E, bk)
    for ks in range(0, S, bk):
        if ks not in seen:  # keys no query sees: zero gradient
            dk_acc[:, :, ks : ks + bk].zero_()
            dv_acc[:, :, ks : ks + bk].zero_()
    kern.transpose(dk_acc, dk, _LN2)  # transposed back and cast in one pass (query blocks carried log2(e))
    kern.transpose(dv_acc, dv)


def _grouped(t: torch.Tensor, H_kv: int) -> torch.Tensor:
    """(B, H, L, E) -> (B, H_kv, G, L, E) -> (B, H_kv, L, G, E): a view; rows ``i*G + g`` once flattened."""
    B, H, L, E = t.shape
    return t.reshape(B, H_kv, H // H_kv, L, E).transpose(2, 3)


def _arranged(t: torch.Tensor, H_kv: int, name: str) -> torch.Tensor:
    """(B, H, L, E) -> (N, L*G, E), the layout of the blocks: a view where the strides allow one (G == 1 and
    heads that merge with the batch), else a copy into the per-thread scratch ``name`` (no fresh pages)."""
    B, H, L, E = t.shape
    grouped = _grouped(t, H_kv)  # (B, H_kv, L, G, E)
    shape = (B * H_kv, L * (H // H_kv), E)
    try:
        return grouped.view(shape)
    except RuntimeError:  # not expressible with strides: copy
        return _scratch(name, t.numel(), t.dtype, t.device).view(grouped.shape).copy_(grouped).view(shape)


def _ungrouped(t3: torch.Tensor, out: torch.Tensor, H_kv: int, scale: float, kern) -> torch.Tensor:
    """``out (B, H, L, E) = scale * t3``, ``t3 (N, L*G, E)`` float32 in the blocks' layout (:func:`_arranged`),
    cast to ``out``'s dtype in one C pass per head of a group."""
    B, H, L, E = out.shape
    G = H // H_kv
    rows, heads = t3.view(B * H_kv, L, G, E), _grouped(out, H_kv)  # (N, L, G, E), (B, H_kv, L, G, E)
    for g in range(G):
        kern.scale_rows(rows[:, :, g], heads[:, :, :, g].flatten(0, 1), scale)  # (N, L, E) each
    return out


def _sequences(cx: _Context, lengths, N: int, S: int):
    """``(rows of N, context, key length)``: everything at once, or one batch element at a time when key
    lengths are given (exact block skipping)."""
    if lengths is None:
        return [(slice(None), cx, S)]
    n = N // cx.B  # H_kv rows of N per batch element
    return [(slice(b * n, (b + 1) * n), cx.batch(b), int(lengths[b])) for b in range(cx.B)]


class _BlockAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias, mask, lengths, cx: _Context, scale: float):
        kern = native.kernels()
        B, H, L, E = q.shape
        H_kv, S, Ev = k.shape[1], k.shape[2], v.shape[-1]
        q3 = _arranged(q, H_kv, "q3")  # (N, L*G, E); scaled as its blocks are made (cx.qscale)
        k3, v3 = k.reshape(B * H_kv, S, E), v.reshape(B * H_kv, S, Ev)  # (N, S, E), (N, S, Ev)
        shape = (*q3.shape[:2], Ev)
        out3 = (empty_large(*shape, dtype=torch.float32, device=q.device) if q.dtype == torch.float32
                else _scratch("out", math.prod(shape), torch.float32, q.device).view(shape))
        lse = q3.new_full((*q3.shape[:2], 1), float("inf"), dtype=torch.float32)
        for sl, sub, length in _sequences(cx, lengths, q3.shape[0], S):
            _forward(q3[sl], k3[sl], v3[sl], sub, length, out3[sl], lse[sl], kern)
        if q.dtype == torch.float32 and cx.G == 1:
            out = out3.view(B, H, L, Ev)  # the float32 result itself (not scratch for float32 inputs)
        else:
            out = _ungrouped(out3, q.new_empty(B, H, L, Ev), H_kv, 1.0, kern)
        ctx.save_for_backward(q, k3, v3, out, lse, bias, mask, lengths)  # out, not the float32 scratch
        ctx.cx, ctx.scale, ctx.shapes = cx, scale, (k.shape, v.shape)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k3, v3, out, lse, bias, mask, lengths = ctx.saved_tensors
        kern, cx = native.kernels(), ctx.cx
        B, H, L, E = q.shape
        k_shape, v_shape = ctx.shapes
        H_kv = k_shape[1]
        q3 = _arranged(q, H_kv, "q3")
        dq3 = (torch.empty(q3.shape, dtype=torch.float32, device=q.device) if q.dtype == torch.float32
               else _scratch("dq", q3.numel(), torch.float32, q.device).view(q3.shape))
        grads = (dq3, torch.empty_like(k3), torch.empty_like(v3))
        dout = dout if dout.stride(-1) == 1 else dout.contiguous()  # e.g. the expanded gradient of a sum
        out3, dout3 = _arranged(out, H_kv, "out3"), _arranged(dout, H_kv, "dout3")
        for sl, sub, length in _sequences(cx, lengths, q3.shape[0], k3.shape[1]):
            _backward(q3[sl], k3[sl], v3[sl], out3[sl], lse[sl], dout3[sl], sub, length,
                      tuple(g[sl] for g in grads), kern)
        dq = _ungrouped(dq3, q.new_empty(B, H, L, E), H_kv, ctx.scale, kern)  # scaled and cast in one pass
        return dq, grads[1].view(k_shape), grads[2].view(v_shape), None, None, None, None, None


def run(call: Call) -> torch.Tensor:
    """:func:`qkv.functional.chunked_attention` of ``call`` (which :func:`fits` accepted) through the C blocks."""
    q, k = call.q, call.k
    B, H, L, _ = q.shape
    H_kv, S = k.shape[1], k.shape[2]
    G = H // H_kv
    scale = 1.0 / math.sqrt(q.shape[-1]) if call.scale is None else float(call.scale)
    bq, bk = call.block_q, call.block_k
    if bq is None or bk is None:  # a call from the attention dispatcher: the reference's defaults
        bq, bk = default_blocks(1 if call.lengths is not None else B, H, L, S, window=call.window,
                                causal=call.causal)
    layout = None if call.layout is None else call.layout.tolist()
    cx = _Context(_arrange(call.mask, H_kv, G), _arrange(call.bias, H_kv, G), bool(call.causal), call.window,
                  layout, S - L, bq, bk, B, G, scale * _LOG2E)
    return _BlockAttention.apply(q, k, call.v, call.bias, call.mask, call.lengths, cx, scale)
