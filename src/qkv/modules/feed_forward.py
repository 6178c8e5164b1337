"""Position-wise feed-forward networks: ``FFN(x) = W_2 act(W_1 x + b_1) + b_2`` and gated variants.

Notation: B batch, L length, D d_model, F hidden size d_ff (4 D by default, as in the paper).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FeedForward", "GatedFeedForward", "ACTIVATIONS", "build_feed_forward"]


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


# Names used by configs. "gelu" is the exact (erf) GELU of BERT; "gelu_tanh" is GPT-2's "gelu_new".
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": _gelu_tanh,
    "silu": F.silu,
}


def _activation(activation: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[activation]


class FeedForward(nn.Module):
    """``w2(dropout(act(w1(x))))``, applied to every position independently.

    Args:
        d_model: D.
        d_ff: hidden size F (default 4 D).
        activation: a name in :data:`ACTIVATIONS` ("relu" as in the paper, "gelu", "gelu_tanh", "silu").
        dropout: dropout on the hidden activations.
        bias: whether the two linear maps have biases.
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int | None = None,
        *,
        activation: str = "relu",
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        d_ff = 4 * d_model if d_ff is None else d_ff
        if d_model < 1 or d_ff < 1:
            raise ValueError(f"d_model ({d_model}) and d_ff ({d_ff}) must be >= 1")
        self.d_model, self.d_ff, self.activation = d_model, d_ff, activation
        self.act = _activation(activation)
        self.w1 = nn.Linear(d_model, d_ff, bias=bias)
        self.w2 = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``(B, L, D)`` -> ``(B, L, D)``."""
        return self.w2(self.dropout(self.act(self.w1(x))))


class GatedFeedForward(nn.Module):
    """Gated linear unit FFN: ``w2(dropout(act(w1 x) * w3 x))``; SwiGLU with "silu", GEGLU with "gelu".

    Args:
        d_model: D.
        d_ff: hidden size F (default ``2/3 * 4 D`` rounded up to a multiple of 8, which keeps the
            parameter count of a 4 D ungated FFN, as in the SwiGLU paper and Llama).
        activation: the gate's activation name.
        dropout: dropout on the gated hidden activations.
        bias: whether the linear maps have biases (Llama: no).
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int | None = None,
        *,
        activation: str = "silu",
        dropout: float = 0.0,
        bias: bool = False,
    ) -> None:
        super().__init__()
        d_ff = 8 * math.ceil(8 * d_model / 3 / 8) if d_ff is None else d_ff
        if d_model < 1 or d_ff < 1:
            raise ValueError(f"d_model ({d_model}) and d_ff ({d_ff}) must be >= 1")
        self.d_model, self.d_ff, self.activation = d_model, d_ff, activation
        self.act = _activation(activation)
        self.w1 = nn.Linear(d_model, d_ff, bias=bias)  # gate
        self.w3 = nn.Linear(d_model, d_ff, bias=bias)  # value
        self.w2 = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``(B, L, D)`` -> ``(B, L, D)``."""
        return self.w2(self.dropout(self.act(self.w1(x)) * self.w3(x)))


def build_feed_forward(
    d_model: int, d_ff: int | None, activation: str, *, dropout: float = 0.0, bias: bool = True
) -> nn.Module:
    """The FFN a config names: "relu" / "gelu" / "gelu_tanh" / "silu", or "swiglu" / "geglu" (gated)."""
    gated = {"swiglu": "silu", "geglu": "gelu"}
    if activation in gated:
        return GatedFeedForward(d_model, d_ff, activation=gated[activation], dropout=dropout, bias=bias)
    return FeedForward(d_model, d_ff, activation=activation, dropout=dropout, bias=bias)
