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
from torch import nn

from qkv.functional.attention import scaled_dot_product_attention

__all__ = ["SoftmaxAttend", "build_attend", "register_attend", "ATTEND_REGISTRY"]


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


def register_attend(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make a kernel available to configs by name."""
    ATTEND_REGISTRY[name] = factory


def build_attend(name: str = "softmax", **options: Any) -> nn.Module:
    """Build the kernel a config names, e.g. ``build_attend("softmax")``."""
    if name not in ATTEND_REGISTRY:
        raise ValueError(f"unknown attention {name!r}; choose one of {sorted(ATTEND_REGISTRY)}")
    return ATTEND_REGISTRY[name](**options)
