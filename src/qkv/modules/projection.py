"""The output projection tied to a token table: ``logits = hidden @ table^T``.

Notation: B batch, L length, D d_model, V vocabulary.

Weight tying (Press & Wolf, 2017) reuses the input embedding ``(V, D)`` as the output matrix. The table
belongs to the embedding; :class:`TiedOutput` is the map itself, a module without parameters (nothing in
the state dict) so that code which works on a model's linear maps, such as
:func:`qkv.generation.prepare_for_decoding`, finds it beside the model's ``nn.Linear`` layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TiedOutput"]


class TiedOutput(nn.Module):
    """``F.linear(hidden, table)``: the output projection through a table owned elsewhere."""

    def forward(self, hidden: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """Project ``hidden (B, L, D)`` with ``table (V, D)`` to logits ``(B, L, V)``."""
        return F.linear(hidden, table)
