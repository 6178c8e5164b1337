"""Memory-efficient exact attention: an online softmax over key blocks (as FlashAttention does).

Notation: B batch, H query heads, H_kv key/value heads (G = H / H_kv queries share one kv head),
L query length, S key length, E head dim (Ev for values); bq, bk query/key block sizes.

The ``L x S`` score matrix is never built. Queries are taken ``bq`` rows at a time and keys ``bk`` at a
time; each query block keeps a running row maximum ``m``, a running sum ``l`` and an output accumulator,
all rescaled by ``exp(m_old - m_new)`` when a new key block raises the maximum. Extra memory is one
``(B, H, bq, bk)`` block plus ``O(L)`` row statistics. The backward pass recomputes each block's weights
from the saved row log-sum-exp instead of storing them.

Structured masks are never materialised either: ``causal``, a sliding ``window``, key padding by
``lengths`` and a block ``layout`` decide which key blocks a query block visits (:func:`block_plan`);
only blocks that straddle a boundary build a small ``(bq, bk)`` visibility mask from positions. An
arbitrary bool ``mask`` and float ``bias`` (broadcastable to ``(B, H, L, S)``) are sliced per block.

Dropout on the weights (``dropout_p``) has the semantics of :func:`qkv.functional.attention_math`:
``out_i = sum_j (keep_ij / (1 - p)) P_ij v_j`` with ``P`` the softmax weights; the normaliser ``l`` sums the
undropped weights. No ``L x S`` mask is stored either: each call draws one seed (:func:`dropout_seed`, from
the caller's generator or the global RNG), and block ``(qs, ks)``'s keep-mask comes from a generator seeded
from ``(seed, qs, ks)`` alone (:func:`dropout_keep`), so the backward regenerates exactly the forward's masks.
The masks therefore depend on the block sizes, not only on the seed. The backward is FlashAttention-2's with
dropout: ``dV`` uses the dropped weights, ``dP = (dO V^T) * keep / (1 - p)``, ``D = rowsum(dO * O)`` still
holds (``O`` is the dropped output), and ``dS = P * (dP - D)``.

This is the readable reference, in torch ops, computed in float32 (float64 stays float64). Faster
implementations of the same function (``qkv.kernels``) are used where an accelerator offers one
(:mod:`qkv.functional.accelerators`); they are tested against this one and against float64 math.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from qkv.functional._tracing import tracing
from qkv.functional.accelerators import Call, Route, ask
from qkv.functional.masks import check_broadcast

__all__ = ["chunked_attention", "chunked_route", "block_plan", "default_blocks", "dropout_seed", "dropout_keep"]

_BLOCK_ELEMS = 1 << 21  # target scores per block, all batch elements and heads together
_U64 = (1 << 64) - 1


def dropout_seed(generator: torch.Generator | None = None) -> int:
    """The one draw a call with dropout takes from ``generator`` (default: the global CPU RNG): its seed."""
    device = "cpu" if generator is None else generator.device
    return int(torch.randint(1 << 62, (1,), generator=generator, device=device))


def dropout_keep(seed: int, p: float, shape: tuple[int, ...], qs: int, ks: int,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Bool keep-mask of the block whose first query row is ``qs`` and first key ``ks`` (each entry True with
    probability ``1 - p``), for the call whose seed is ``seed``. ``shape`` is ``(B, H, qe - qs, ke - ks)``.

    A pure function of its arguments: forward and backward call it with the same ones and get the same mask.
    """
    x = (seed ^ (qs * 0x9E3779B97F4A7C15) ^ (ks * 0xC2B2AE3D27D4EB4F)) & _U64  # splitmix64 of (seed, qs, ks)
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _U64
    g = torch.Generator(device=device).manual_seed(x ^ (x >> 31))
    return torch.rand(shape, generator=g, device=device) >= p


def block_plan(L: int, S: int, bq: int, bk: int, *, causal: bool = False, window: int | None = None,
               length: int | None = None, layout: list[list[bool]] | None = None
               ) -> Iterator[tuple[int, int, list[tuple[int, int, bool]]]]:
    """Yield ``(qs, qe, [(ks, ke, needs_mask), ...])``: the key blocks query rows ``qs:qe`` must visit.

    Query ``i`` sits at key position ``p = i + S - L`` (lower-right alignment). Keys at or past ``length``
    are padding. Key blocks no query of the block can see, or False in ``layout[qs // bq][ks // bk]``, are
    left out; ``needs_mask`` is False for blocks every query of the block sees whole.
    """
    off, length = S - L, S if length is None else length
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
                full = full and ks > p_hi - window and (causal or ke - 1 < p_lo + window)
            blocks.append((ks, ke, not full))
        yield qs, qe, blocks


def default_blocks(batch: int, heads: int, L: int, S: int, *, window: int | None = None,
                   causal: bool = False) -> tuple[int, int]:
    """Block sizes ``(bq, bk)``: about ``2**21`` scores per block across batch and heads; smaller blocks for
    structured masks, where less of each boundary block is wasted (see benchmarks/long_context.py)."""
    if window is not None:
        bq = bk = 128
    else:
        bk = 256 if causal else 512
        bq = max(16, min(1024, _BLOCK_ELEMS // max(1, batch * heads * bk)))
        if causal:
            bq = min(bq, 256)
    return min(bq, L) or 1, min(bk, S) or 1


def _cut(t: torch.Tensor | None, qs: int, qe: int, ks: int, ke: int) -> torch.Tensor | None:
    """The ``(.., bq|1, bk|1)`` block of a tensor broadcastable to ``(B, H, L, S)`` (broadcast dims kept)."""
    if t is None:
        return None
    rows = slice(qs, qe) if t.shape[-2] != 1 else slice(None)
    cols = slice(ks, ke) if t.shape[-1] != 1 else slice(None)
    return t[..., rows, cols]


class _Problem:
    """One call's inputs as the block loops use them: k/v expanded to H heads, float32 (or float64)."""

    def __init__(self, q, k, v, mask, bias, causal, window, lengths, scale, bq, bk, layout, dropout) -> None:
        G = q.shape[1] // k.shape[1]
        self.acc = torch.float64 if q.dtype == torch.float64 else torch.float32
        self.q = q.to(self.acc) * scale  # (B, H, L, E), scaled once
        self.k = k.to(self.acc).repeat_interleave(G, dim=1)  # (B, H, S, E)
        self.v = v.to(self.acc).repeat_interleave(G, dim=1)  # (B, H, S, Ev)
        self.mask, self.bias, self.causal, self.window, self.lengths = mask, bias, causal, window, lengths
        self.scale, self.bq, self.bk, self.layout, self.G = scale, bq, bk, layout, G
        self.dropout_p, self.seed = dropout  # (p, the call's seed)

    def plan(self):
        L, S = self.q.shape[2], self.k.shape[2]
        length = None if self.lengths is None else int(self.lengths.max())
        return block_plan(L, S, self.bq, self.bk, causal=self.causal, window=self.window, length=length,
                          layout=self.layout)

    def visible(self, qs, qe, ks, ke, needs_mask) -> torch.Tensor | None:
        """Bool ``(B|1, H|1, bq, bk)``: which keys of the block each query may see (None: all of them)."""
        ok = _cut(self.mask, qs, qe, ks, ke)
        if not needs_mask and self.lengths is None:
            return ok
        L, S = self.q.shape[2], self.k.shape[2]
        p = torch.arange(qs, qe, device=self.q.device)[:, None] + (S - L)  # (bq, 1) query positions
        j = torch.arange(ks, ke, device=self.q.device)[None, :]  # (1, bk) key positions
        pos = torch.ones(qe - qs, ke - ks, dtype=torch.bool, device=self.q.device)
        if self.causal:
            pos &= j <= p
        if self.window is not None:
            pos &= j > p - self.window
            if not self.causal:
                pos &= j < p + self.window
        if self.lengths is not None:
            pos = pos & (j < self.lengths.view(-1, 1, 1, 1).to(j.device))  # (B, 1, bq, bk)
        return pos if ok is None else pos & ok

    def scores(self, qs, qe, ks, ke, needs_mask) -> torch.Tensor:
        """``(B, H, bq, bk)`` scaled scores plus bias, -inf where a key is hidden."""
        s = self.q[:, :, qs:qe] @ self.k[:, :, ks:ke].transpose(-1, -2)
        if self.bias is not None:
            s = s + _cut(self.bias, qs, qe, ks, ke)
        ok = self.visible(qs, qe, ks, ke, needs_mask)
        return s if ok is None else s.masked_fill(~ok, float("-inf"))

    def dropped(self, p: torch.Tensor, qs, ks) -> torch.Tensor:
        """``p * keep / (1 - dropout_p)`` for the ``(B, H, bq, bk)`` block at ``(qs, ks)``; ``p`` without dropout."""
        if not self.dropout_p:
            return p
        keep = dropout_keep(self.seed, self.dropout_p, p.shape, qs, ks, p.device)
        return p * keep * (1.0 / (1.0 - self.dropout_p))


def _forward(P: _Problem) -> tuple[torch.Tensor, torch.Tensor]:
    """Online softmax. Returns ``out (B, H, L, Ev)`` and the row log-sum-exp ``(B, H, L, 1)`` (+inf for rows
    that see no key), both in the accumulation dtype."""
    B, H, L, _ = P.q.shape
    out = P.q.new_zeros(B, H, L, P.v.shape[-1])
    lse = P.q.new_full((B, H, L, 1), float("inf"))
    for qs, qe, blocks in P.plan():
        m = P.q.new_full((B, H, qe - qs, 1), float("-inf"))  # running row maximum
        l = P.q.new_zeros(B, H, qe - qs, 1)  # running sum of exp(s - m)
        acc = P.q.new_zeros(B, H, qe - qs, P.v.shape[-1])  # running sum of exp(s - m) @ v
        for ks, ke, needs_mask in blocks:
            s = P.scores(qs, qe, ks, ke, needs_mask)
            m_new = torch.maximum(m, s.amax(-1, keepdim=True))
            m_safe = m_new.masked_fill(m_new == float("-inf"), 0.0)  # rows with nothing visible yet
            p = torch.exp(s - m_safe)
            alpha = torch.exp(m - m_safe)  # rescales what was summed under the old maximum
            l = l * alpha + p.sum(-1, keepdim=True)
            acc = acc * alpha + P.dropped(p, qs, ks) @ P.v[:, :, ks:ke]  # l above sums the undropped p
            m = m_new
        out[:, :, qs:qe] = torch.where(l > 0, acc / l.clamp_min(1e-30), 0.0)
        lse[:, :, qs:qe] = torch.where(l > 0, m + l.log(), float("inf"))
    return out, lse


def _backward(P: _Problem, out, lse, dout, need_bias_grad: bool):
    """Gradients ``(dq, dk, dv, dbias)`` with k/v gradients summed over each kv head's G query heads."""
    dout = dout.to(P.acc)
    delta = (dout * out).sum(-1, keepdim=True)  # (B, H, L, 1): rowsum(dO * O)
    dq, dk, dv = torch.zeros_like(P.q), torch.zeros_like(P.k), torch.zeros_like(P.v)
    dbias = torch.zeros(P.bias.shape, dtype=P.acc, device=P.q.device) if need_bias_grad else None
    for qs, qe, blocks in P.plan():
        for ks, ke, needs_mask in blocks:
            p = torch.exp(P.scores(qs, qe, ks, ke, needs_mask) - lse[:, :, qs:qe])  # (B, H, bq, bk) weights
            dv[:, :, ks:ke] += P.dropped(p, qs, ks).transpose(-1, -2) @ dout[:, :, qs:qe]
            dp = P.dropped(dout[:, :, qs:qe] @ P.v[:, :, ks:ke].transpose(-1, -2), qs, ks)  # same keep-mask
            ds = p * (dp - delta[:, :, qs:qe])  # gradient of the scores
            if dbias is not None:
                target = _cut(dbias, qs, qe, ks, ke)
                target += ds.sum_to_size(target.shape)
            dq[:, :, qs:qe] += ds @ P.k[:, :, ks:ke]
            dk[:, :, ks:ke] += ds.transpose(-1, -2) @ P.q[:, :, qs:qe]
    B, H, S = P.k.shape[:3]

    def per_kv_head(t: torch.Tensor) -> torch.Tensor:  # (B, H, S, E) -> (B, H_kv, S, E)
        return t.view(B, H // P.G, P.G, S, t.shape[-1]).sum(2)

    return dq * P.scale, per_kv_head(dk), per_kv_head(dv), dbias


class _OnlineSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias, mask, lengths, causal, window, scale, bq, bk, layout, dropout):
        P = _Problem(q, k, v, mask, bias, causal, window, lengths, scale, bq, bk, layout, dropout)
        out, lse = _forward(P)
        ctx.save_for_backward(q, k, v, bias, mask, lengths, out, lse)
        ctx.args = (causal, window, scale, bq, bk, layout, dropout)
        return out.to(q.dtype)

    @staticmethod
    def backward(ctx, dout):
        q, k, v, bias, mask, lengths, out, lse = ctx.saved_tensors
        P = _Problem(q, k, v, mask, bias, *ctx.args[:2], lengths, *ctx.args[2:])
        dq, dk, dv, db = _backward(P, out, lse, dout, bias is not None and ctx.needs_input_grad[3])
        grads = (dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None if db is None else db.to(bias.dtype))
        return (*grads, None, None, None, None, None, None, None, None, None)


def _check(q, k, v, mask, bias, lengths, window, block_q, block_k, dropout_p) -> None:
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
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    for name, val in (("block_q", block_q), ("block_k", block_k)):
        if val is not None and (not isinstance(val, int) or val < 1):
            raise ValueError(f"{name} must be an int >= 1, got {val!r}")


def chunked_route(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: torch.Tensor | None = None,
                  bias: torch.Tensor | None = None, causal: bool = False, window: int | None = None,
                  lengths: torch.Tensor | None = None, scale: float | None = None, block_q: int | None = None,
                  block_k: int | None = None, layout: torch.Tensor | None = None, dropout_p: float = 0.0,
                  generator: torch.Generator | None = None) -> Route:
    """Which implementation :func:`chunked_attention` runs for these arguments, and why (printable).

    Nothing is computed and no random number is drawn until the route's ``run()``.
    """
    _check(q, k, v, mask, bias, lengths, window, block_q, block_k, dropout_p)
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
    if L == 0 or S == 0:
        return Route("empty", "no queries or no keys: zeros", (), lambda: q.new_zeros(B, H, L, v.shape[-1]))
    call = Call("chunked", q, k, v, mask, bias, bool(causal), dropout_p, scale, window, lengths, layout, bq, bk)
    rows = None if layout is None else layout.tolist()  # nested lists: fast lookups in the block plan

    def run() -> torch.Tensor:
        dropout = (dropout_p, dropout_seed(generator) if dropout_p else 0)
        return _OnlineSoftmax.apply(q, k, v, bias, mask, lengths, bool(causal), window, scale, bq, bk, rows, dropout)

    if dropout_p and tracing():  # a fresh seed each call: torch.compile runs it outside the graph, not per seed
        run = torch.compiler.disable(run)

    def reference(declined: tuple[str, ...]) -> Route:
        return Route("qkv.functional.chunked", "online softmax over key blocks in torch ops (the reference)",
                     declined, run)

    return ask(call, reference)


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
    dropout_p: float = 0.0,
    generator: torch.Generator | None = None,
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
        dropout_p: dropout on the attention weights, kept ones scaled by ``1 / (1 - dropout_p)`` (as
            :func:`qkv.functional.attention_math`); the masks are drawn per block (module docstring).
        generator: where the call's one seed is drawn from (:func:`dropout_seed`); default the global RNG.

    Returns:
        ``(B, H, L, Ev)`` in q's dtype; query rows with no visible key are zeros.
    """
    return chunked_route(q, k, v, mask=mask, bias=bias, causal=causal, window=window, lengths=lengths, scale=scale,
                         block_q=block_q, block_k=block_k, layout=layout, dropout_p=dropout_p,
                         generator=generator).run()
