"""Memory-efficient exact attention: an online softmax over key blocks (as FlashAttention does).

Notation: B batch, H query heads, H_kv key/value heads (G = H / H_kv queries share one kv head),
L query length, S key length, E head dim (Ev for values); bq, bk query/key block sizes.

The ``L x S`` score matrix is never built: queries are taken ``bq`` rows at a time and keys ``bk``
at a time, with a running row maximum and running sum (float32) so that each block's
contribution can be rescaled when the maximum grows. Extra memory is ``O(bq * bk)`` per block plus
``O(L)`` row statistics. The backward pass recomputes the block scores from the saved row
log-sum-exp instead of storing the weights.

Structured masks are never materialised either: ``causal``, a sliding ``window`` and key padding
by ``lengths`` are turned into a per-block plan. Key blocks no query of a block can see are skipped;
blocks every query sees fully run without a mask; only the boundary blocks build a small
``(bq, bk)`` mask from positions. An arbitrary bool ``mask`` and float ``bias`` (broadcastable to
``(B, H, L, S)``) are sliced per block.

In bfloat16/float16 the matmuls run in the input dtype (several times faster than float32 matmuls
on CPUs with AVX512-BF16) while the running max, sum and output accumulator stay float32.

On CPU, in float32 and bfloat16, each block's elementwise work runs in one C pass (``qkv.kernels.native``,
``_blocks.c``) instead of a chain of torch ops: the block's matmuls are torch's, everything between
them (row max, exp2, sums, rescaling, casts, ``p`` and ``ds`` in the backward, transposed copies) is
C. The torch-op path is the reference the C path is tested against, and the fallback without a C
compiler (``use_native = False`` selects it).
"""

from __future__ import annotations

import math
import threading

import torch

from qkv.functional.masks import check_broadcast
from qkv.kernels import native as _native
from qkv.kernels.memory import empty_large

__all__ = ["chunked_attention"]

_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453
_BLOCK_ELEMS = 1 << 21  # target scores per block (all heads together)
_POOL_MAX_ELEMS = 1 << 22  # larger scratch buffers are allocated per call, not kept
_pool = threading.local()
use_native = True  # False: every block through torch ops (the reference path the C kernels are tested against)


def _scratch(name: str, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A 1-D scratch tensor of ``n`` elements, kept per thread between calls on CPU.

    Fresh CPU tensors of a few MB come from new pages, and their first touch costs a page fault per
    4 KiB (~1.5 us each here): about 16 ms of a 38 ms bf16 forward+backward at L 1,024 when other work
    runs between calls. Buffers are only ever used inside one forward or backward, never returned.
    CUDA's caching allocator already reuses memory, so other devices allocate per call.
    """
    if torch.device(device).type != "cpu":
        return torch.empty(n, dtype=dtype, device=device)
    if n > _POOL_MAX_ELEMS:  # long sequences: per call, on huge pages when large enough (see _memory)
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


def _plan(L: int, S: int, info: dict, length: int):
    """Yield ``(qs, qe, [(ks, ke, needs_mask), ...])``: the key blocks each query block must visit.

    Query ``i`` sits at key position ``p = i + S - L`` (lower-right alignment). Keys at or past
    ``length`` are padding. Blocks outside every query's visible range, or False in the block
    ``layout``, are left out.
    """
    bq, bk, causal, window, layout = info["bq"], info["bk"], info["causal"], info["window"], info["layout"]
    off = S - L
    for qs in range(0, L, bq):
        qe = min(qs + bq, L)
        p_lo, p_hi = qs + off, qe - 1 + off  # positions of the first/last query of the block
        lo, hi = 0, length
        if causal:
            hi = min(hi, p_hi + 1)
        if window is not None:
            lo = max(lo, p_lo - window + 1)
            if not causal:
                hi = min(hi, p_hi + window)
        blocks = []
        for ks in range((max(lo, 0) // bk) * bk, max(hi, 0), bk):
            if layout is not None and not layout[qs // bq][ks // bk]:
                continue
            ke = min(ks + bk, S)
            full = ke <= length
            if causal:
                full = full and ke - 1 <= p_lo
            if window is not None:
                full = full and ks > p_hi - window
                if not causal:
                    full = full and ke - 1 < p_lo + window
            blocks.append((ks, ke, not full))
        yield qs, qe, blocks


def _block_mask(qs, qe, ks, ke, off, causal, window, length, device) -> torch.Tensor:
    """The (bq, 1, bk) visibility of one block from positions: broadcasts over (B, H_kv, bq, G, bk)."""
    p = torch.arange(qs + off, qe + off, device=device)[:, None]  # (bq, 1)
    j = torch.arange(ks, ke, device=device)[None, :]  # (1, bk)
    ok = j < length
    if causal:
        ok = ok & (j <= p)
    if window is not None:
        ok = ok & (j > p - window)
        if not causal:
            ok = ok & (j < p + window)
    return ok.unsqueeze(1)  # (bq, 1, bk)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Statistics and accumulators: float32 for half types, else the input dtype (float64 stays)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class _Work:
    """Per-call block buffers, reused for every block (fresh large tensors per block cost page faults).

    ``s``/``d``/``lo`` hold ``(N, rows, bk)`` scores; ``r``/``rlo`` the ``(N, max(rows, bk), E)`` block
    products (``p @ v``, ``ds @ k``, ...) before they are added into float32 accumulators.
    """

    def __init__(self, N: int, rows: int, bk: int, E: int, low: torch.dtype, acc: torch.dtype, device) -> None:
        self.low, self.acc = low, acc
        n, nr = N * rows * bk, N * max(rows, bk) * E
        self.s, self.d, self.r = (_scratch(name, size, acc, device) for name, size in (("s", n), ("d", n), ("r", nr)))
        self.lo = self.s if low == acc else _scratch("lo", n, low, device)
        self.rlo = self.r if low == acc else _scratch("rlo", nr, low, device)
        self._n, self._device = n, device

    def extra(self, name: str) -> torch.Tensor:
        """Another ``(N, rows, bk)``-sized buffer in the input dtype (the C kernels' outputs)."""
        return _scratch(name, self._n, self.low, self._device)

    @staticmethod
    def take(buf: torch.Tensor, *shape: int) -> torch.Tensor:
        return buf[: math.prod(shape)].view(shape)

    def matmul(self, a: torch.Tensor, b: torch.Tensor, dst: torch.Tensor, lo: torch.Tensor | None = None
               ) -> torch.Tensor:
        """``a @ b`` (batched) into the accumulation-dtype buffer ``dst``, through the low dtype (``lo``)."""
        shape = (a.shape[0], a.shape[1], b.shape[2])
        if self.low == self.acc:
            return torch.bmm(a, b, out=self.take(dst, *shape))
        low = torch.bmm(a, b, out=self.take(self.lo if lo is None else lo, *shape))
        return self.take(dst, *shape).copy_(low)

    def product(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a @ b`` for a block's ``(N, n, E)`` contribution, in the accumulation dtype (buffer ``r``)."""
        return self.matmul(a, b, self.r, self.rlo)

    def product_low(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a @ b`` in the input dtype (buffer ``rlo``), for the C kernels to accumulate."""
        return torch.bmm(a, b, out=self.take(self.rlo, a.shape[0], a.shape[1], b.shape[2]))

    def to_low(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.low == self.acc else self.take(self.lo, *x.shape).copy_(x)


def _accumulate(target: torch.Tensor, part: torch.Tensor, first: bool) -> None:
    """``target = part`` for the first contribution, else ``target += part`` (no zero fill beforehand)."""
    if first:
        target.copy_(part)
    else:
        target.add_(part)


def _scores(w: _Work, q_b, kT_b, qs, qe, ks, ke, info, length, needs_mask, native: bool = False) -> torch.Tensor:
    """Block scores in log2 units with masked entries -inf: (N, bq*G, bk) in the accumulation dtype.

    q_b is the block's queries (N, bq*G, E) with row ``i*G + g``; kT_b its keys (N, E, bk). With ``native``
    the structured and bool masks are left to the C kernel (``needs_mask`` is ignored) and, without a bias,
    the scores stay in the input dtype (no cast).
    """
    G = info["G"]
    if native and info["bias"] is None:
        return torch.bmm(q_b, kT_b, out=w.take(w.lo, q_b.shape[0], (qe - qs) * G, ke - ks))
    s = w.matmul(q_b, kT_b, w.s)  # (N, bq*G, bk)
    needs_mask = needs_mask and not native
    bool_mask = None if native else info["mask"]
    if info["bias"] is None and bool_mask is None and not needs_mask:
        return s
    s5 = s.view(info["B"], -1, qe - qs, G, ke - ks)  # (B, H_kv, bq, G, bk)
    if info["bias"] is not None:
        s5.add_(_cut(info["bias"], qs, qe, ks, ke), alpha=_LOG2E)
    if needs_mask:
        m = _block_mask(qs, qe, ks, ke, info["off"], info["causal"], info["window"], length, s.device)
        s5.masked_fill_(~m, float("-inf"))
    if bool_mask is not None:
        s5.masked_fill_(~_cut(bool_mask, qs, qe, ks, ke), float("-inf"))
    return s


def _mask_block(info, N, qs, qe, ks, ke):
    """The C kernels' bool mask argument for a block: ``(arranged block, H_kv, G)`` or None."""
    if info["mask"] is None:
        return None
    return _cut(info["mask"], qs, qe, ks, ke), N // info["B"], info["G"]


def _interval(kern, qs, ks, info, length, needs_mask):
    """The C kernel's description of a block's structured mask (None: every key of the block visible)."""
    if not needs_mask:
        return None
    return kern.interval(qs + info["off"], info["G"], info["causal"], info["window"], length, ks)


class _Blocks:
    """The row blocks of ``t (N, n, E)`` as contiguous ``(N, size, E)`` tensors (``transpose``: ``(N, E, size)``),
    copied once into one scratch buffer. torch.bmm copies every operand that is not contiguous (a slice
    of a larger tensor) on each call; these copies are made once per forward/backward instead."""

    def __init__(self, name: str, t: torch.Tensor, size: int, transpose: bool = False, kern=None) -> None:
        N, n, E = t.shape
        buf = _scratch(name, t.numel(), t.dtype, t.device)
        self.size, self.parts = size, []
        for s in range(0, n, size):
            e = min(s + size, n)
            part = buf[N * s * E : N * e * E].view((N, E, e - s) if transpose else (N, e - s, E))
            if transpose and kern is not None and t.stride(2) == 1:
                kern.transpose(t[:, s:e], part)
            else:
                part.copy_(t[:, s:e].transpose(1, 2) if transpose else t[:, s:e])
            self.parts.append(part)

    def __getitem__(self, start: int) -> torch.Tensor:
        return self.parts[start // self.size]


def _forward(q3, k3, v3, info, length, out, lse, kern) -> None:
    """Online softmax over key blocks. q3 (N, L*G, E) pre-scaled by scale*log2(e).

    Fills ``out (N, L*G, Ev)`` and ``lse (N, L*G, 1)`` (log2 units; left at +inf for fully masked rows).
    ``kern``: the C kernels (``qkv.kernels.native``) for each block's elementwise work, or None for torch ops.
    """
    N, LG, _ = q3.shape
    G, bq, bk = info["G"], info["bq"], info["bk"]
    S, Ev = k3.shape[1], v3.shape[-1]
    acc_t = _acc_dtype(q3.dtype)
    w = _Work(N, min(bq, LG // G) * G, min(bk, S), max(q3.shape[-1], Ev), q3.dtype, acc_t, q3.device)
    qb, kTb, vb = _Blocks("qb", q3, bq * G), _Blocks("kTb", k3, bk, True, kern), _Blocks("vb", v3, bk)
    for qs, qe, blocks in _plan(LG // G, S, info, length):
        rows = slice(qs * G, qe * G)
        acc = out[:, rows]  # (N, bq*G, Ev), filled in place
        if not blocks:
            acc.zero_()
            continue
        m = q3.new_full((N, (qe - qs) * G, 1), float("-inf"), dtype=acc_t)
        l = torch.zeros_like(m)
        for i, (ks, ke, needs_mask) in enumerate(blocks):
            s = _scores(w, qb[qs * G], kTb[ks], qs, qe, ks, ke, info, length, needs_mask, native=kern is not None)
            if kern is not None:  # one C pass: max, exp2, sums, rescale; weights in the input dtype
                p = w.take(w.lo, *s.shape)
                kern.forward_tile(s, p, m, l, acc, i == 0, _interval(kern, qs, ks, info, length, needs_mask),
                                  _mask_block(info, N, qs, qe, ks, ke))
                kern.accumulate(acc, w.product_low(p, vb[ks]), i == 0)
                continue
            m_new = torch.maximum(m, s.amax(-1, keepdim=True))
            m_safe = m_new.masked_fill(m_new == float("-inf"), 0.0)
            p = s.sub_(m_safe).exp2_()  # (N, bq*G, bk) unnormalised weights
            alpha = (m - m_safe).exp2_()
            l.mul_(alpha).add_(p.sum(-1, keepdim=True))
            if i:
                acc.mul_(alpha)
            _accumulate(acc, w.product(w.to_low(p), vb[ks]), first=i == 0)  # (N, bq*G, Ev)
            m = m_new
        acc.div_(l.clamp_min(1e-30))  # rows with l == 0 have acc == 0
        lse[:, rows] = torch.where(l > 0, m + l.log2(), float("inf"))


def _backward(q3, k3, v3, out, lse, dout, info, length, grads, need_bias_grad, kern):
    """Recompute block weights from lse; fills ``grads = (dq3, dk, dv)`` (dq3 still to be multiplied by
    scale) and returns dbias.

    With the C kernels (``kern``), dK and dV accumulate transposed, ``dK^T += Q^T dS`` and ``dV^T += dO^T P``,
    so that only ``(L, E)`` tensors are transposed (once), never the ``(bq, bk)`` blocks."""
    N, LG, E = q3.shape
    G, bq, bk = info["G"], info["bq"], info["bk"]
    S = k3.shape[1]
    acc_t = _acc_dtype(q3.dtype)
    Ev = v3.shape[-1]
    w = _Work(N, min(bq, LG // G) * G, min(bk, S), max(E, Ev), q3.dtype, acc_t, q3.device)
    dq, dk, dv = grads  # dq in the accumulation dtype, dk/dv in the inputs'; first contributions copied in
    dbias = torch.zeros_like(info["bias"], dtype=acc_t) if need_bias_grad else None
    kern = None if need_bias_grad else kern  # the bias gradient needs float32 ds: torch path
    do32 = _scratch("do32", dout.numel(), acc_t, dout.device).view(dout.shape).copy_(dout)
    delta = do32.mul_(out).sum(-1, keepdim=True)  # (N, L*G, 1)
    dout = dout.to(q3.dtype)
    rq = bq * G
    qb, dob = _Blocks("qb", q3, rq), _Blocks("dob", dout, rq)  # (N, bq*G, E), (N, bq*G, Ev)
    kb, kTb, vTb = _Blocks("kb", k3, bk), _Blocks("kTb", k3, bk, True, kern), _Blocks("vTb", v3, bk, True, kern)
    if kern is not None:
        qTb, doTb = _Blocks("qTb", q3, rq, True, kern), _Blocks("doTb", dout, rq, True, kern)  # (N, E|Ev, bq*G)
        dk_acc = _scratch("dkT", dk.numel(), acc_t, dk.device).view(N, E, S)
        dv_acc = _scratch("dvT", dv.numel(), acc_t, dv.device).view(N, Ev, S)
    else:  # float32 accumulators, (N, S, E); the (N, E, S) views index key blocks as [..., ks:ke] as above
        dk32, dv32 = (t if t.dtype == acc_t else _scratch(name, t.numel(), acc_t, t.device).view(t.shape)
                      for name, t in (("dk", dk), ("dv", dv)))
        dk_acc, dv_acc = dk32.transpose(1, 2), dv32.transpose(1, 2)
    seen = set()  # key blocks (by start) with a contribution in dk/dv so far
    for qs, qe, blocks in _plan(LG // G, S, info, length):
        rows = slice(qs * G, qe * G)
        do_b, q_b = dob[qs * G], qb[qs * G]  # (N, bq*G, Ev), (N, bq*G, E)
        if not blocks:
            dq[:, rows].zero_()
        for i, (ks, ke, needs_mask) in enumerate(blocks):
            first_k = ks not in seen
            seen.add(ks)
            s = _scores(w, q_b, kTb[ks], qs, qe, ks, ke, info, length, needs_mask, native=kern is not None)
            if kern is not None:  # one C pass: p and ds, in the input dtype
                n, r, c = s.shape
                if s.dtype == w.low:  # no bias: s and dp in the input dtype; p over s, ds over dp (stay in cache)
                    dp = torch.bmm(do_b, vTb[ks], out=w.take(w.extra("lo2"), n, r, c))  # (N, bq*G, bk)
                    p, ds = s, dp
                else:  # float32 scores with the bias added
                    dp = w.matmul(do_b, vTb[ks], w.d)
                    p, ds = w.take(w.extra("p"), n, r, c), w.take(w.extra("ds"), n, r, c)
                kern.backward_tile(s, dp, lse[:, rows], delta[:, rows], ds, p,
                                   _interval(kern, qs, ks, info, length, needs_mask),
                                   _mask_block(info, N, qs, qe, ks, ke))
                kern.accumulate(dv_acc[:, :, ks:ke], w.product_low(doTb[qs * G], p), first_k)  # (N, Ev, bk)
                kern.accumulate(dq[:, rows], w.product_low(ds, kb[ks]), i == 0)  # (N, bq*G, E)
                kern.accumulate(dk_acc[:, :, ks:ke], w.product_low(qTb[qs * G], ds), first_k)  # (N, E, bk)
                continue
            p = s.sub_(lse[:, rows]).exp2_()
            p_low = w.to_low(p)  # (N, bq*G, bk) attention weights
            _accumulate(dv32[:, ks:ke], w.product(p_low.transpose(1, 2), do_b), first_k)  # (N, bk, Ev)
            dp = w.matmul(do_b, vTb[ks], w.d)  # (N, bq*G, bk)
            ds = dp.sub_(delta[:, rows]).mul_(p)  # dL/dscores
            if dbias is not None:
                _accumulate_bias(dbias, ds.view(info["B"], -1, qe - qs, G, ke - ks), qs, qe, ks, ke)
            ds_low = w.to_low(ds)
            _accumulate(dq[:, rows], w.product(ds_low, kb[ks]), i == 0)  # (N, bq*G, E)
            _accumulate(dk32[:, ks:ke], w.product(ds_low.transpose(1, 2), q_b), first_k)  # (N, bk, E)
    for ks in range(0, S, bk):
        if ks not in seen:  # keys no query sees: zero gradient
            dk_acc[:, :, ks : ks + bk].zero_()
            dv_acc[:, :, ks : ks + bk].zero_()
    if kern is not None:  # transposed back and cast in one pass
        kern.transpose(dk_acc, dk, _LN2)  # q3 carries scale * log2(e); dk needs scale only
        kern.transpose(dv_acc, dv)
    else:
        dk32.mul_(_LN2)
        if dk32 is not dk:
            dk.copy_(dk32)
            dv.copy_(dv32)
    return dbias


def _accumulate_bias(dbias, ds, qs, qe, ks, ke) -> None:
    """Add a block's score gradient (B, H_kv, bq, G, bk) into the arranged bias gradient."""
    target = _cut(dbias, qs, qe, ks, ke)
    dims = [d for d in range(5) if target.shape[d] == 1 and ds.shape[d] != 1]
    target += ds.sum(dims, keepdim=True) if dims else ds


def _grouped(t: torch.Tensor, H_kv: int) -> torch.Tensor:
    """(B, H, L, E) -> (B, H_kv, G, L, E) -> (B, H_kv, L, G, E): a view; rows ``i*G + g`` once flattened."""
    B, H, L, E = t.shape
    return t.reshape(B, H_kv, H // H_kv, L, E).transpose(2, 3)


def _arranged(t: torch.Tensor, H_kv: int) -> torch.Tensor:
    """(B, H, L, E) -> (N, L*G, E), the layout of the blocks (a view when G == 1)."""
    B, H, L, E = t.shape
    return _grouped(t, H_kv).reshape(B * H_kv, L * (H // H_kv), E)


def _scaled_queries(q: torch.Tensor, scale: float, H_kv: int) -> torch.Tensor:
    """``q * scale * log2(e)`` as :func:`_arranged`, in per-thread scratch (the backward rebuilds it instead
    of keeping a copy)."""
    B, H, L, E = q.shape
    grouped = _grouped(q, H_kv)  # (B, H_kv, L, G, E)
    q3 = _scratch("q3", q.numel(), q.dtype, q.device).view(grouped.shape)
    torch.mul(grouped, scale * _LOG2E, out=q3)
    return q3.view(B * H_kv, L * (H // H_kv), E)


class _ChunkedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias, mask, lengths, causal, window, scale, bq, bk, layout):
        B, H, L, E = q.shape
        H_kv, S, Ev = k.shape[1], k.shape[2], v.shape[-1]
        G = H // H_kv
        q3 = _scaled_queries(q, scale, H_kv)  # scaled once, in log2 units
        k3, v3 = k.reshape(B * H_kv, S, E), v.reshape(B * H_kv, S, Ev)  # (N, S, E), (N, S, Ev)
        info = {"bias": _arrange(bias, H_kv, G), "mask": _arrange(mask, H_kv, G), "causal": causal,
                "window": window, "off": S - L, "bq": bq, "bk": bk, "B": B, "G": G, "layout": layout}
        out3, lse = _run_forward(q3, k3, v3, info, lengths)
        # (N, L*G, Ev) -> (B, H_kv, L, G, Ev) -> (B, H_kv, G, L, Ev) -> (B, H, L, Ev)
        out = out3.view(B, H_kv, L, G, Ev).transpose(2, 3).reshape(B, H, L, Ev).to(q.dtype)
        # The output is kept for the backward (dO . O), not the float32 accumulator: in half precision that
        # lives in scratch, which spares a fresh allocation (page faults) per call.
        ctx.save_for_backward(q, k3, v3, out, lse, bias, mask, lengths)
        ctx.info, ctx.scale, ctx.shapes = info, scale, (q.shape, k.shape, v.shape)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k3, v3, out, lse, bias, mask, lengths = ctx.saved_tensors
        (B, H, L, E), k_shape, v_shape = ctx.shapes
        H_kv = k_shape[1]
        G = H // H_kv
        q3 = _scaled_queries(q, ctx.scale, H_kv)
        need_db = bias is not None and ctx.needs_input_grad[3]
        dq3, dk, dv, db = _run_backward(q3, k3, v3, _arranged(out, H_kv), lse, _arranged(dout, H_kv), ctx.info,
                                        lengths, need_db)
        dq = q3.new_empty(B, H, L, E)
        torch.mul(dq3.view(B, H_kv, L, G, E), ctx.scale, out=_grouped(dq, H_kv))  # scaled and cast in one pass
        if db is not None:
            db = _unarrange(db, bias).to(bias.dtype)
        return (dq, dk.view(k_shape), dv.view(v_shape), db, None, None, None, None, None, None, None, None)


def _unarrange(db: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Arranged (b, h_kv|1, l, g|1, s) gradient back to the bias's own shape."""
    b, _, l, _, s = db.shape
    full = db.transpose(2, 3).reshape(b, -1, l, s)  # (b, H|1, l, s)
    return full.reshape(bias.shape)


def _batch_info(info: dict, b: int) -> dict:
    """The block context for batch element ``b`` (mask/bias sliced where they have a batch dim)."""
    sub = dict(info, B=1)
    for key in ("mask", "bias"):
        t = info[key]
        sub[key] = t if t is None or t.shape[0] == 1 else t[b : b + 1]
    return sub


def _sequences(info: dict, lengths, N: int):
    """``(rows of N, block context, key length)``: everything at once, or one batch element at a time when
    key lengths are given (exact block skipping)."""
    if lengths is None:
        return [(slice(None), info, None)]
    n = N // info["B"]  # H_kv rows of N per batch element
    return [(slice(b * n, (b + 1) * n), _batch_info(info, b), int(lengths[b])) for b in range(info["B"])]


def native_kernels(q: torch.Tensor, mask: torch.Tensor | None = None):
    """The C kernels :func:`chunked_attention` runs its blocks with for these inputs, or None (torch ops):
    ``use_native``, CPU float32/bfloat16, a bool mask (if any) with contiguous keys, and the kernels built."""
    if not (use_native and _native.supports(q) and _native.Kernels.mask_supported(mask)):
        return None
    return _native.kernels()


def _run_forward(q3, k3, v3, info, lengths):
    """``out (N, L*G, Ev)`` and ``lse (N, L*G, 1)`` in the accumulation dtype. In bf16/fp16 ``out`` lives in
    per-thread scratch: the caller converts (copies) it before the next call."""
    acc_t = _acc_dtype(q3.dtype)
    shape = (*q3.shape[:2], v3.shape[-1])
    out = (empty_large(*shape, dtype=acc_t, device=q3.device) if acc_t == q3.dtype  # float32/64: returned as is
           else _scratch("out", math.prod(shape), acc_t, q3.device).view(shape))
    lse = q3.new_full((*q3.shape[:2], 1), float("inf"), dtype=acc_t)
    kern = native_kernels(q3, info["mask"])
    for sl, sub, length in _sequences(info, lengths, q3.shape[0]):
        _forward(q3[sl], k3[sl], v3[sl], sub, k3.shape[1] if length is None else length, out[sl], lse[sl], kern)
    return out, lse


def _run_backward(q3, k3, v3, out, lse, dout, info, lengths, need_db):
    """``(dq3, dk, dv, dbias)``: dq3 in the accumulation dtype (in bf16/fp16 it lives in per-thread scratch,
    which the caller converts before the next call), dk and dv in the inputs' dtypes."""
    acc_t = _acc_dtype(q3.dtype)
    dq = (torch.empty(q3.shape, dtype=acc_t, device=q3.device) if acc_t == q3.dtype  # float32/64: returned as is
          else _scratch("dq", q3.numel(), acc_t, q3.device).view(q3.shape))
    grads = (dq, torch.empty_like(k3), torch.empty_like(v3))
    kern = native_kernels(q3, info["mask"])
    dbs = [_backward(q3[sl], k3[sl], v3[sl], out[sl], lse[sl], dout[sl], sub,
                     k3.shape[1] if length is None else length, tuple(g[sl] for g in grads), need_db, kern)
           for sl, sub, length in _sequences(info, lengths, q3.shape[0])]
    db = None
    if need_db:
        db = dbs[0] if lengths is None else (
            torch.stack(dbs).sum(0) if info["bias"].shape[0] == 1 else torch.cat(dbs))
    return (*grads, db)


def _check(q, k, v, mask, bias, lengths, window, block_q, block_k) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D (B, H, L, E) / (B, H_kv, S, E), got shape {tuple(t.shape)}")
    B, H, L, E = q.shape
    if k.shape[0] != B or k.shape[:3] != v.shape[:3] or k.shape[3] != E:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} do not match q {tuple(q.shape)}")
    if k.shape[1] == 0 or H % k.shape[1]:
        raise ValueError(f"query heads H={H} must be a multiple of key/value heads H_kv={k.shape[1]}")
    target = (B, H, L, k.shape[2])
    if mask is not None:
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be torch.bool (True = may attend), got {mask.dtype}")
        check_broadcast("mask", mask, target)
    if bias is not None:
        if not bias.is_floating_point():
            raise ValueError(f"bias must be a floating tensor, got {bias.dtype}")
        check_broadcast("bias", bias, target)
    if lengths is not None and (lengths.shape != (B,) or lengths.is_floating_point()):
        raise ValueError(f"lengths must be an integer tensor of shape (B,) = ({B},), got "
                         f"{lengths.dtype} {tuple(lengths.shape)}")
    if window is not None and (not isinstance(window, int) or window < 1):
        raise ValueError(f"window must be an int >= 1, got {window!r}")
    for name, val in (("block_q", block_q), ("block_k", block_k)):
        if val is not None and (not isinstance(val, int) or val < 1):
            raise ValueError(f"{name} must be an int >= 1, got {val!r}")


def default_blocks(batch: int, heads: int, L: int, S: int, *, window: int | None = None,
                   causal: bool = False) -> tuple[int, int]:
    """Block sizes ``(bq, bk)``: about ``2**21`` scores per block across batch and heads, smaller blocks
    for structured masks.

    Measured with ``benchmarks/long_context.py`` (fp32, B 1, H 8, L 2048, one thread; median of
    interleaved ratios against SDPA with the equivalent bool mask): a sliding window of 256 runs x2.0 with
    (256, 512) blocks and x3.9 with (128, 128) (less work outside the band); causal x1.31 with (256, 512)
    and x1.48 with (256, 256) (less waste on the diagonal). Unmasked bf16 forward+backward with the C
    kernels (B 1, H 8, best of 7): L 1024 (512, 512) 34.5 ms vs (256, 512) 33.6 on one thread, 16.0 vs
    17.5 on two; L 2048 112 vs 117 and 59.7 vs 64.2; smaller blocks are slower (smaller matmuls), and
    float32 with a bias is indifferent (115 ms either way).
    """
    if window is not None:
        bq = bk = 128
    else:
        bk = 256 if causal else 512
        bq = max(16, min(1024, _BLOCK_ELEMS // max(1, batch * heads * bk)))
        if causal:
            bq = min(bq, 256)
    return min(bq, L) or 1, min(bk, S) or 1


def _per_sequence_fused(q, k, v, lengths, scale) -> torch.Tensor:
    """Key padding by ``lengths`` in float32/64 on CPU: torch's fused kernel, unmasked, on each sequence's real keys.

    No mask is built and no padded key is computed; torch's unmasked fp32 kernel is about twice as fast
    per FLOP as its bool-mask path (and than the block loop above), so this wins whenever it applies.
    A sequence with no real key gives zeros.
    """
    H, H_kv = q.shape[1], k.shape[1]
    outs = []
    for b, n in enumerate(lengths.tolist()):
        if n <= 0:
            outs.append(q.new_zeros(1, H, q.shape[2], v.shape[-1]))
            continue
        outs.append(torch.nn.functional.scaled_dot_product_attention(
            q[b : b + 1], k[b : b + 1, :, :n], v[b : b + 1, :, :n], scale=scale, enable_gqa=H != H_kv))
    return torch.cat(outs)  # (B, H, L, Ev)


def chunked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    causal: bool = False,
    window: int | None = None,
    lengths: torch.Tensor | None = None,
    scale: float | None = None,
    block_q: int | None = None,
    block_k: int | None = None,
    layout: torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact softmax attention in ``O(L)`` extra memory, differentiable (backward by recomputation).

    Args:
        q: queries ``(B, H, L, E)``.
        k: keys ``(B, H_kv, S, E)``; H a multiple of H_kv.
        v: values ``(B, H_kv, S, Ev)``.
        mask: bool broadcastable to ``(B, H, L, S)``, True = may attend (sliced per block).
        bias: float broadcastable to ``(B, H, L, S)``, added to the scores (gets a gradient).
        causal: lower-right aligned causal masking, computed per block (never ``L x S``).
        window: sliding window: query at position ``p`` sees keys ``p - window < j <= p`` when
            causal, ``|j - p| < window`` otherwise (as :func:`qkv.functional.masks.sliding_window_mask`).
        lengths: ``(B,)`` integer key lengths: keys ``j >= lengths[b]`` are padding.
        scale: score scale, default ``1 / sqrt(E)``.
        block_q: query rows per block (default from :func:`default_blocks`).
        block_k: keys per block.
        layout: optional block-sparse layout, bool ``(ceil(L / block_q), ceil(S / block_k))``: only
            blocks marked True are computed (the other entries count as masked). Requires both block
            sizes. :mod:`qkv.functional.sparse` builds layouts for local, strided and BigBird patterns.

    Returns:
        ``(B, H, L, Ev)`` in q's dtype; query rows with no visible key are zeros.
    """
    _check(q, k, v, mask, bias, lengths, window, block_q, block_k)
    B, H, L, E = q.shape
    S = k.shape[2]
    scale = 1.0 / math.sqrt(E) if scale is None else float(scale)
    bq, bk = default_blocks(1 if lengths is not None else B, H, L, S, window=window, causal=bool(causal))
    bq, bk = block_q or bq, block_k or bk
    if layout is not None:
        need = (-(-L // bq), -(-S // bk))
        if block_q is None or block_k is None or tuple(layout.shape) != need or layout.dtype != torch.bool:
            raise ValueError(f"layout must be bool of shape (ceil(L/block_q), ceil(S/block_k)) = {need} with "
                             f"block_q and block_k given, got {layout.dtype} {tuple(layout.shape)}, "
                             f"block_q={block_q}, block_k={block_k}")
        layout = layout.tolist()  # nested lists: fast lookups in the block plan
    if L == 0 or S == 0:
        return q.new_zeros(B, H, L, v.shape[-1])
    if (lengths is not None and q.device.type == "cpu" and q.dtype in (torch.float32, torch.float64)
            and mask is None and bias is None and not causal and window is None and layout is None):
        return _per_sequence_fused(q, k, v, lengths, scale)
    return _ChunkedAttention.apply(q, k, v, bias, mask, lengths, bool(causal), window, scale, bq, bk, layout)
