"""Sentence embeddings as sentence-transformers computes them: encode, mean-pool real tokens, L2-normalise.

Notation: N sentences, B batch, L longest row in a batch, D d_model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from qkv.interop.tokenizer import PretrainedTokenizer

__all__ = ["sentence_embeddings"]


def sentence_embeddings(
    model: nn.Module,
    tokenizer: PretrainedTokenizer,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    normalize: bool = True,
) -> torch.Tensor:
    """Embed each text as one vector.

    Texts are sorted by length so each batch pads little (as sentence-transformers does), encoded by
    the ``EncoderModel``, pooled by its ``pool`` (mean over real tokens, or ``[CLS]`` when the model's
    config says "cls"), L2-normalised, and returned in the input order.

    Args:
        model: an :class:`~qkv.models.EncoderModel` (e.g. from :func:`~qkv.interop.load_pretrained`).
        tokenizer: its :class:`PretrainedTokenizer`.
        texts: N strings.
        batch_size: rows per forward pass.
        normalize: unit L2 norm per row.

    Returns:
        ``(N, D)`` float32 on the CPU.
    """
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, got one str; wrap it in a list")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not hasattr(model, "pool"):
        raise ValueError(f"sentence embeddings need an encoder (a BERT-family checkpoint), got {type(model).__name__}")
    if tokenizer is None:
        raise ValueError("sentence_embeddings needs a tokenizer; the checkpoint folder has no tokenizer.json")
    device = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = torch.empty(len(texts), model.config.d_model)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = tokenizer([texts[i] for i in rows])
            mask = batch.mask.to(device)  # (B, L)
            hidden = model(batch.ids.to(device), key_padding=mask, segments=batch.segments.to(device))  # (B, L, D)
            pooled = model.pool(hidden, mask).float()  # (B, D)
            out[rows] = F.normalize(pooled, dim=-1).cpu() if normalize else pooled.cpu()
    return out
