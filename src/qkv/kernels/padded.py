"""Key padding by ``lengths`` without a mask: torch's unmasked fused kernel on each sequence's real keys.

For :func:`qkv.functional.chunked_attention` calls whose only structure is key padding (no mask, bias, causal,
window or layout): no mask is built and no padded key is computed. A sequence with no real key gives zeros.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from qkv.functional._tracing import tracing
from qkv.functional.accelerators import Call

__all__ = ["fits", "run"]


def fits(call: Call) -> str | None:
    """None when ``call`` is key padding by ``lengths`` alone, on CPU, outside traced graphs; else why not."""
    if call.lengths is None or call.mask is not None or call.bias is not None or call.causal:
        return "key padding by lengths only (no mask, bias or causal)"
    if call.window is not None or call.layout is not None:
        return "no window or block layout"
    if tracing():
        return "traced graphs keep the block loop (one call per sequence reads the lengths)"
    return None


def run(call: Call) -> torch.Tensor:
    """``(B, H, L, Ev)``: each batch element's queries against its first ``lengths[b]`` keys."""
    q, k, v = call.q, call.k, call.v
    H, H_kv = q.shape[1], k.shape[1]
    outs = []
    for b, n in enumerate(call.lengths.tolist()):
        if n <= 0:
            outs.append(q.new_zeros(1, H, q.shape[2], v.shape[-1]))
            continue
        outs.append(F.scaled_dot_product_attention(q[b : b + 1], k[b : b + 1, :, :n], v[b : b + 1, :, :n],
                                                   scale=call.scale, enable_gqa=H != H_kv))
    return torch.cat(outs)  # (B, H, L, Ev)
