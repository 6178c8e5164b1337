"""Labels of single tokens for the attention events and pictures of the server.

Text deltas of a streamed completion come from :class:`qkv.generation.text.IncrementalText`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["token_label"]


def token_label(tokenizer: Any, token: int) -> str:
    """A short, human-readable label of one token for attention pictures (byte-level marks undone)."""
    token = int(token)
    if token == getattr(tokenizer, "eos_id", None):
        return "</s>"
    if token == getattr(tokenizer, "bos_id", None):
        return "<s>"
    text = tokenizer.id_to_token(token) if hasattr(tokenizer, "id_to_token") else tokenizer.decode([token])
    return text.replace("\u0120", " ").replace("\u010a", "\n")
