"""Exact attention over short sequences on CPU: each head's whole ``softmax(Q K^T * scale) V`` in one C pass.

Notation: B batch, H query heads, H_kv key/value heads (H a multiple of H_kv), L query length, S key
length, E head dim (Ev for values).

A CPU trains small models on short blocks (a char-level GPT on 64 characters), where attention is ~25 torch
ops per layer whose fixed costs outweigh their arithmetic: casts, copies of transposed operands, the mask,
softmax and its backward, six small batched matmuls; torch's CPU flash kernel is slower still at these sizes.
``_short.c`` computes one head per task, in float32 from float32 or bfloat16 inputs read in place (any
batch/head/row strides), with register-tiled products that skip what the causal mask hides, and keeps only
the row log-sum-exp for the backward pass, which recomputes the weights. The output and the gradients come
back in the ``(B, L, H, E)`` memory order the surrounding projections use, so merging heads needs no copy.

:func:`short_attention` is exact up to rounding: float32 arithmetic, bfloat16 only at the inputs and outputs,
except that the ``avx512_bf16`` build multiplies bfloat16 inputs with the CPU's bfloat16 dot products (exact
products, float32 sums), so the softmax weights and their gradients are rounded to bfloat16 before the
products that take them, as torch's flash attention does for bfloat16. It is tested against float64 math,
gradients included. :mod:`qkv.kernels.routing` offers it to the attention dispatcher
for the calls :func:`fits` accepts, where the routing table lists them.
"""

from __future__ import annotations

import math

import torch

from qkv.functional._tracing import tracing
from qkv.functional.accelerators import Call
from qkv.kernels import native as _native

__all__ = ["short_attention", "supports", "compilable", "fits", "run", "MAX_LEN"]

# Longest L and S served: one head's float32 scores (and, in the backward, about ten L x E / L x S tiles)
# stay in a core's L2. Beyond this qkv.functional.chunked takes over for bfloat16.
MAX_LEN = 256
_MAX_HEAD_DIM = 256


def supports(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether :func:`short_attention` can run these inputs: CPU, float32/bfloat16, one dtype, 4-D, L, S up to
    ``MAX_LEN``, head dims up to 256, H a multiple of H_kv, the C kernels built."""
    return (q.device.type == "cpu" and q.dtype in (torch.float32, torch.bfloat16)
            and q.dtype == k.dtype == v.dtype and k.device == q.device == v.device
            and q.dim() == k.dim() == v.dim() == 4
            and 0 < q.shape[2] <= MAX_LEN and 0 < k.shape[2] <= MAX_LEN
            and 0 < q.shape[3] <= _MAX_HEAD_DIM and 0 < v.shape[3] <= _MAX_HEAD_DIM
            and k.shape[1] > 0 and q.shape[1] % k.shape[1] == 0 and q.shape[0] > 0 and q.shape[1] > 0
            and _native.kernels() is not None)


def _unit_last(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _heads_last(B: int, H: int, L: int, E: int, like: torch.Tensor) -> torch.Tensor:
    """An uninitialised ``(B, H, L, E)`` tensor laid out as ``(B, L, H, E)`` (a transposed view)."""
    return torch.empty(B, L, H, E, dtype=like.dtype, device=like.device).transpose(1, 2)


def _outputs(q: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Uninitialised forward results: out (B, H, L, Ev) over (B, L, H, Ev) memory and lse (B, H, L) float32."""
    B, H, L, _ = q.shape
    return _heads_last(B, H, L, v.shape[3], q), q.new_empty(B, H, L, dtype=torch.float32)


def _gradient_buffers(q, k, v) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Uninitialised dq, dk, dv shaped as q, k, v, over (B, L, H, E) memory."""
    B, H, L, E = q.shape
    H_kv, S = k.shape[1], k.shape[2]
    return _heads_last(B, H, L, E, q), _heads_last(B, H_kv, S, E, k), _heads_last(B, H_kv, S, v.shape[3], v)


def _forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
             causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    q, k, v = _unit_last(q), _unit_last(k), _unit_last(v)
    out, lse = _outputs(q, v)
    _native.kernels().short_forward(q, k, v, out, lse, scale, causal)
    return out, lse


def _backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
              dout: torch.Tensor, scale: float, causal: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q, k, v, dout = _unit_last(q), _unit_last(k), _unit_last(v), _unit_last(dout.to(q.dtype))
    dq, dk, dv = _gradient_buffers(q, k, v)
    _native.kernels().short_backward(q, k, v, out, dout, lse, dq, dk, dv, scale, causal)
    return dq, dk, dv


def _save(ctx, q, k, v, out, lse, scale: float, causal: bool) -> None:
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.scale, ctx.causal = scale, causal


def _input_grads(ctx, dout, backward) -> tuple:
    """Gradients for ``(q, k, v, scale, causal)`` from what :func:`_save` kept, through ``backward``."""
    q, k, v, out, lse = ctx.saved_tensors
    return (*backward(q, k, v, out, lse, dout, ctx.scale, ctx.causal), None, None)


class _ShortAttention(torch.autograd.Function):
    """Eager calls (an autograd.Function has less per-call overhead than the custom op)."""

    @staticmethod
    def forward(ctx, q, k, v, scale: float, causal: bool):
        out, lse = _forward(q, k, v, scale, causal)
        _save(ctx, q, k, v, out, lse, scale, causal)
        return out

    @staticmethod
    def backward(ctx, dout):
        return _input_grads(ctx, dout, _backward)


_forward_op = None
if hasattr(torch.library, "custom_op"):  # torch >= 2.4: the same functions as ops torch.compile can trace
    _forward_op = torch.library.custom_op("qkv::short_attention", _forward, mutates_args=(), device_types="cpu")
    _forward_op.register_fake(lambda q, k, v, scale, causal: _outputs(q, v))
    _backward_op = torch.library.custom_op("qkv::short_attention_backward", _backward, mutates_args=(),
                                           device_types="cpu")
    _backward_op.register_fake(lambda q, k, v, out, lse, dout, scale, causal: _gradient_buffers(q, k, v))
    _forward_op.register_autograd(lambda ctx, dout, _dlse: _input_grads(ctx, dout, _backward_op),
                                  setup_context=lambda ctx, inputs, output: _save(ctx, *inputs[:3], *output,
                                                                                  *inputs[3:]))


def compilable() -> bool:
    """Whether the current trace can take :func:`short_attention` (as the op ``qkv::short_attention``):
    torch.compile can (torch >= 2.4); torch.export, ONNX and TorchScript tracing cannot run it outside
    Python, so they keep torch's ops."""
    exporting = getattr(torch.compiler, "is_exporting", None)
    return _forward_op is not None and exporting is not None and not exporting() and not torch.jit.is_tracing()


def short_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """``softmax(Q K^T * scale) V`` per head, computed whole in C (see the module docstring).

    Args:
        q: queries ``(B, H, L, E)``, CPU float32 or bfloat16, ``L <= MAX_LEN``.
        k: keys ``(B, H_kv, S, E)``, same dtype; ``H`` a multiple of ``H_kv``, ``S <= MAX_LEN``.
        v: values ``(B, H_kv, S, Ev)``, same dtype.
        causal: lower-right aligned causal mask (key ``j`` visible to query ``i`` iff ``j <= i + S - L``);
            a query with no visible key gets zeros and zero gradients.
        scale: score scale, default ``1 / sqrt(E)``.

    Returns:
        ``(B, H, L, Ev)`` in the inputs' dtype, stored as ``(B, L, H, Ev)`` (``transpose(1, 2)`` is contiguous).
    """
    if not supports(q, k, v):
        reason = _native.unavailable_reason() if _native.kernels() is None else None
        raise ValueError(
            f"short_attention needs CPU float32/bfloat16 q (B, H, L, E), k (B, H_kv, S, E), v (B, H_kv, S, Ev) "
            f"of one dtype with L, S <= {MAX_LEN}, head dims <= {_MAX_HEAD_DIM}, H a multiple of H_kv, and the C "
            f"kernels; got q {tuple(q.shape)} {q.dtype} {q.device}, k {tuple(k.shape)} {k.dtype}, "
            f"v {tuple(v.shape)} {v.dtype}" + (f" (kernels unavailable: {reason})" if reason else ""))
    if q.shape[0] != k.shape[0] or k.shape[:3] != v.shape[:3] or k.shape[3] != q.shape[3]:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: need q (B, H, L, E), "
                         "k (B, H_kv, S, E), v (B, H_kv, S, Ev)")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if tracing():
        if not compilable():
            raise RuntimeError("short_attention can be traced by torch.compile (torch >= 2.4), not by torch.export, "
                               "ONNX or TorchScript: call scaled_dot_product_attention there")
        return _forward_op(q, k, v, scale, bool(causal))[0]
    return _ShortAttention.apply(q, k, v, scale, bool(causal))


def fits(call: Call) -> str | None:
    """None when :func:`short_attention` can compute ``call`` (no mask, bias or dropout; see :func:`supports`;
    under tracing only where :func:`compilable`), else why not."""
    if call.mask is not None or call.bias is not None or call.dropout_p:
        return "no mask, bias or dropout"
    if not supports(call.q, call.k, call.v):
        return f"CPU float32/bfloat16, one dtype, L and S up to {MAX_LEN}, head dims up to {_MAX_HEAD_DIM}, built"
    if tracing() and not compilable():
        return "torch.export, ONNX and TorchScript keep torch's ops"
    return None


def run(call: Call) -> torch.Tensor:
    """:func:`short_attention` of ``call``."""
    return short_attention(call.q, call.k, call.v, causal=call.causal, scale=call.scale)
