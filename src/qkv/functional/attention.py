"""Scaled dot-product attention: ``softmax(Q K^T / sqrt(E) + bias) V`` with boolean masks.

Notation: B batch, H query heads, H_kv key/value heads (H a multiple of H_kv), L query length,
S key length, E head dim (Ev for values).

Two paths compute the same thing and are tested against each other and against float64:

* the fused path: ``torch.nn.functional.scaled_dot_product_attention`` (flash/efficient kernels);
* the math path: :func:`attention_math`, plain matmul + :func:`masked_softmax` + matmul, the reference
  and the path that also yields the attention weights.

Masks are ``torch.bool``, True = may attend, broadcastable to ``(B, H, L, S)``. ``causal`` is lower-right
aligned (key ``j`` visible to query ``i`` iff ``j <= i + S - L``). A query row with no visible key
returns zeros on every path (never NaN), and its gradient is zero.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from qkv.functional._tracing import constant_under_compile, tracing
from qkv.functional.accelerators import Call, Route, ask, backends_restricted
from qkv.functional.chunked import chunked_attention
from qkv.functional.masks import causal_mask, check_broadcast

__all__ = ["scaled_dot_product_attention", "attention_math", "masked_softmax", "attention_weights", "explain"]


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None, dim: int = -1) -> torch.Tensor:
    """Softmax over ``dim`` restricted to positions where ``mask`` is True.

    Rows with no True entry give all zeros (not NaN), with zero gradient. Computed in at least
    float32 and returned in the dtype of ``scores``: torch's softmax kernels accumulate half-precision
    input in float32 and round once, so bf16/fp16 scores go in as they are (the same weights as a float32
    copy cast back, bit for bit, without the two casts each way; tests/functional checks the equality).
    """
    if mask is None:
        return torch.softmax(scores, dim=dim)
    # A finite fill keeps exp() finite for fully masked rows (uniform there), which are zeroed below.
    work = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(work, dim=dim) * mask.any(dim=dim, keepdim=True)


def _validate(q, k, v, mask, bias, dropout_p) -> tuple[int, int, int, int, int]:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            need = "(B, H, L, E)" if name == "q" else "(B, H_kv, S, E)"
            raise ValueError(f"{name} must be 4-D {need}, got shape {tuple(t.shape)}")
    B, H, L, E = q.shape
    if k.shape[0] != B or v.shape[0] != B:
        raise ValueError(
            f"batch sizes differ: q has B={B}, k has {k.shape[0]}, v has {v.shape[0]} "
            f"(q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)})"
        )
    if k.shape[:3] != v.shape[:3]:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must agree on (B, H_kv, S)")
    if k.shape[3] != E:
        raise ValueError(f"k head dim must equal q's: q {tuple(q.shape)} needs k (..., {E}), got {tuple(k.shape)}")
    H_kv, S = k.shape[1], k.shape[2]
    if H_kv == 0 or H % H_kv:
        raise ValueError(f"query heads H={H} must be a multiple of key/value heads H_kv={H_kv}")
    target = (B, H, L, S)
    if mask is not None:
        if mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be torch.bool (True = may attend), got {mask.dtype} of shape {tuple(mask.shape)};"
                " pass additive float terms as bias="
            )
        check_broadcast("mask", mask, target)
    if bias is not None:
        if not bias.is_floating_point():
            raise ValueError(f"bias must be a floating tensor, got {bias.dtype}; pass boolean masks as mask=")
        check_broadcast("bias", bias, target)
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    return B, H, H_kv, L, S


def _group(q: torch.Tensor, H_kv: int) -> torch.Tensor:
    """(B, H, L, E) -> (B, H_kv, G, L, E) so that grouped heads share k/v without copies."""
    B, H, L, E = q.shape
    return q.view(B, H_kv, H // H_kv, L, E)  # (B, H_kv, G, L, E)


def _scores(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """(B, H, L, E) x (B, H_kv, S, E) -> (B, H, L, S)."""
    B, H, L, _ = q.shape
    H_kv, S = k.shape[1], k.shape[2]
    q = q * scale  # scale the (L, E) queries, not the (L, S) scores: one pass over far fewer numbers
    s = torch.matmul(_group(q, H_kv), k.unsqueeze(2).transpose(-1, -2))  # (B, H_kv, G, L, S)
    return s.reshape(B, H, L, S)


def _weighted_values(w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, H, L, S) x (B, H_kv, S, Ev) -> (B, H, L, Ev)."""
    B, H, L, S = w.shape
    H_kv = v.shape[1]
    out = torch.matmul(w.reshape(B, H_kv, H // H_kv, L, S), v.unsqueeze(2))  # (B, H_kv, G, L, Ev)
    return out.reshape(B, H, L, v.shape[-1])


def _full_mask(mask: torch.Tensor | None, causal: bool, L: int, S: int, device) -> torch.Tensor | None:
    if not causal:
        return mask
    c = causal_mask(L, S, device=device)
    return c if mask is None else mask & c


def attention_weights(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """The attention distribution ``softmax(Q K^T * scale + bias)`` over visible keys: ``(B, H, L, S)``."""
    L, S = q.shape[2], k.shape[2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = _scores(q, k, scale)
    if bias is not None:
        scores = scores + bias
    return masked_softmax(scores, _full_mask(mask, causal, L, S, q.device))


def attention_math(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference path: explicit weights, then ``weights @ V``. Returns ``(out (B,H,L,Ev), weights (B,H,L,S))``.

    The returned weights are the attention distribution before dropout.
    """
    w = attention_weights(q, k, mask=mask, bias=bias, causal=causal, scale=scale)
    p = w
    if dropout_p > 0.0:
        keep = torch.rand(w.shape, device=w.device, generator=generator) >= dropout_p
        p = w * keep / (1.0 - dropout_p)
    return _weighted_values(p.to(v.dtype), v), w


# From this min(L, S) on, no path without weights builds an L x S float tensor: torch's kernels turn a bool mask into
# an additive float one of that size, and torch's CPU SDPA applies dropout in its math path, to the L x S weights
# (its CPU flash kernel takes no dropout); such calls go to chunked attention, which draws dropout per block.
DENSE_LIMIT = 1024


def _route(call: Call, H_kv: int) -> Route:
    """The path for ``call`` (op ``"attention"``): an accelerator's offer, else torch's kernels (:func:`explain`)."""
    return ask(call, lambda declined: _torch_route(call, H_kv, declined))


def _torch_route(c: Call, H_kv: int, declined: tuple[str, ...]) -> Route:
    """torch's fused kernel, or under ``sdpa_kernel(MATH)`` on CPU for causal self-attention the math path with a
    cached additive causal mask (torch's math kernel rebuilds the mask and checks for empty rows every call)."""
    q, k, v = c.q, c.k, c.v
    L, S = q.shape[2], k.shape[2]
    dense = _dense_in_torch(c)
    if dense and min(L, S) >= DENSE_LIMIT and not backends_restricted():
        return Route("qkv.functional.chunked_attention", f"L, S >= {DENSE_LIMIT} and {dense}; online softmax over "
                     "key blocks builds none", declined,
                     lambda: chunked_attention(q, k, v, mask=c.mask, bias=c.bias, causal=c.causal,
                                               dropout_p=c.dropout_p, scale=c.scale))
    if c.causal and L == S and c.mask is None and c.bias is None:
        if q.device.type == "cpu" and _math_backend_only():
            return Route("qkv.functional.attention_math", "sdpa_kernel(MATH) on CPU, causal with L == S: the math "
                         "path with a cached causal bias", declined,
                         lambda: attention_math(q, k, v, bias=_cached_causal_bias(L, q.dtype, q.device),
                                                dropout_p=c.dropout_p, scale=c.scale)[0])
        return Route("torch sdpa", "torch's kernel with is_causal (L == S, no mask or bias)", declined,
                     lambda: _sdpa(q, k, v, None, True, c.dropout_p, c.scale, H_kv))
    what = "no mask or bias" if c.mask is None and c.bias is None and not c.causal else "the combined mask/bias"
    return Route("torch sdpa", f"torch's kernel with {what}", declined,
                 lambda: _masked_sdpa(q, k, v, c.mask, c.bias, c.causal, c.dropout_p, c.scale, H_kv))


def _dense_in_torch(c: Call) -> str:
    """Why torch's kernels would build an ``(L, S)`` float tensor for this call ("" if they would not)."""
    def full(t):
        return t is not None and t.dim() >= 2 and t.shape[-2] > 1 and t.shape[-1] > 1

    L, S = c.q.shape[2], c.k.shape[2]
    combined = c.mask is not None or c.bias is not None
    if (c.causal and (L != S or combined)) or full(c.mask) or (c.mask is not None and full(c.bias)):
        return "an L x S mask, which torch's kernels would make an L x S float tensor"
    if c.dropout_p and c.q.device.type == "cpu":
        return "dropout on CPU, which torch's SDPA applies in its math path, to L x S weights"
    return ""


def _masked_sdpa(q, k, v, mask, bias, causal, dropout_p, scale, H_kv) -> torch.Tensor:
    """torch's kernel given one combined mask/bias, with fully masked rows forced to zero whatever its backend does."""
    L, S = q.shape[2], k.shape[2]
    mask = _full_mask(mask, causal, L, S, q.device)
    row_ok = None
    if mask is not None:
        row_ok = mask.any(-1, keepdim=True)  # (B|1, H|1, L|1, 1)
        mask = mask | ~row_ok  # give empty rows something finite to attend to; zeroed below
    attn = mask
    if bias is not None:
        attn = bias.to(q.dtype)
        if mask is not None:
            attn = attn.masked_fill(~mask, float("-inf"))
    out = _sdpa(q, k, v, attn, False, dropout_p, scale, H_kv)
    return out if row_ok is None else out * row_ok


@constant_under_compile
def _math_backend_only() -> bool:
    """True inside ``sdpa_kernel([SDPBackend.MATH])``: torch would run its math (matmul) implementation.

    torch.compile cannot put these flag queries (they return Python bools) into a graph and would break it
    at every attention call; the result is read once while tracing instead and baked into the graph, as the
    backend context is for the compile.
    """
    b = torch.backends.cuda
    return b.math_sdp_enabled() and not (b.flash_sdp_enabled() or b.mem_efficient_sdp_enabled()
                                         or b.cudnn_sdp_enabled())


def _cached_causal_bias(L: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """:func:`_causal_bias`; under torch.compile built in the graph (Dynamo warns at an lru_cache, then ignores it)."""
    return (_causal_bias.__wrapped__ if tracing() else _causal_bias)(L, dtype, device)


@functools.lru_cache(maxsize=4)
def _causal_bias(L: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(1, 1, L, L)`` additive causal mask, built once per shape: 0 on and below the diagonal, -inf above."""
    return torch.zeros(1, 1, L, L, dtype=dtype, device=device).masked_fill_(
        ~causal_mask(L, L, device=device), float("-inf"))


def _sdpa(q, k, v, attn, is_causal, dropout_p, scale, H_kv) -> torch.Tensor:
    B, H = q.shape[:2]
    if H_kv != H:  # each kv head serves H / H_kv query heads (expand + reshape: exportable, unlike repeat_interleave)
        k = k[:, :, None].expand(B, H_kv, H // H_kv, *k.shape[2:]).reshape(B, H, *k.shape[2:])  # (B, H, S, E)
        v = v[:, :, None].expand(B, H_kv, H // H_kv, *v.shape[2:]).reshape(B, H, *v.shape[2:])  # (B, H, S, Ev)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=attn, dropout_p=dropout_p, is_causal=is_causal, scale=scale
    )


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
    return_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention ``softmax(Q K^T * scale + bias) V``.

    Args:
        q: queries ``(B, H, L, E)``.
        k: keys ``(B, H_kv, S, E)``; ``H`` must be a multiple of ``H_kv`` (grouped heads).
        v: values ``(B, H_kv, S, Ev)``.
        mask: bool, broadcastable to ``(B, H, L, S)``, True = may attend.
        bias: additive float scores (ALiBi, relative positions), broadcastable to ``(B, H, L, S)``.
        causal: lower-right aligned causal masking, combined with ``mask``.
        dropout_p: dropout on the attention weights (pass 0.0 in eval).
        scale: score scale, default ``1 / sqrt(E)``.
        return_weights: also return the attention weights ``(B, H, L, S)`` (before dropout).

    Returns:
        ``out (B, H, L, Ev)``, or ``(out, weights)`` when ``return_weights``.

    Without weights the output comes from torch's fused kernel, unless a registered accelerator
    (:mod:`qkv.functional.accelerators`; ``qkv.kernels`` where its routing table lists the inputs)
    offers a faster exact path for these inputs; :func:`explain` says which path runs and why. Inside
    ``torch.nn.attention.sdpa_kernel(...)`` no accelerator is asked: torch's chosen backends run. With weights
    and autograd recording, the output still comes from that path (its backward is the fast one) and the
    weights from one extra ``Q K^T`` + softmax; under ``no_grad`` (or with dropout) the math path, which
    yields both at once, is used.
    """
    _, _, H_kv, L, _ = _validate(q, k, v, mask, bias, dropout_p)
    causal = causal and L > 1  # one query sits after every key (lower-right): nothing to hide, no mask to build
    if not return_weights:
        return _route(Call("attention", q, k, v, mask, bias, causal, dropout_p, scale), H_kv).run()
    recording = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    if dropout_p > 0.0 or not recording:
        return attention_math(q, k, v, mask=mask, bias=bias, causal=causal, dropout_p=dropout_p, scale=scale)
    out = _route(Call("attention", q, k, v, mask, bias, causal, 0.0, scale), H_kv).run()
    return out, attention_weights(q, k, mask=mask, bias=bias, causal=causal, scale=scale)


def explain(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> Route:
    """Which path :func:`scaled_dot_product_attention` (without weights) takes for these arguments, and why.

    The same decision the dispatcher makes (one function), without computing anything. Print the result:
    the path, the reason, and each accelerator that was asked and declined, with its reason.

    Args:
        q, k, v, mask, bias, causal, dropout_p, scale: as for :func:`scaled_dot_product_attention`.

    Returns:
        a :class:`~qkv.functional.accelerators.Route` (``path``, ``reason``, ``declined``).
    """
    _, _, H_kv, L, _ = _validate(q, k, v, mask, bias, dropout_p)
    route = _route(Call("attention", q, k, v, mask, bias, causal and L > 1, dropout_p, scale), H_kv)
    return route._replace(run=None)
