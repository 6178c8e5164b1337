"""Loss functions ``loss_fn(model, batch) -> (mean loss, n_tokens)`` for qkv's models and batches.

Notation: B batch, S source length, L target length, V vocabulary, C classes.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from qkv.models.decoder import DecoderModel
from qkv.models.encoder import EncoderModel
from qkv.models.rnn_seq2seq import RNNSeq2Seq
from qkv.models.seq2seq import EncoderDecoderModel
from qkv.training.optim import label_smoothed_nll

IGNORE = -100


def _mean(total: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return total / n.clamp(min=1), n


def lm_loss(
    model: nn.Module, batch: Any, *, smoothing: float = 0.0, pad_id: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token loss of a decoder on an ``LMBatch`` (``input``, ``target`` both ``(B, L)``).

    Args:
        model: a :class:`~qkv.models.DecoderModel` (or any ``ids -> logits (B, L, V)`` module).
        batch: has ``input`` and ``target``.
        smoothing: label smoothing.
        pad_id: target id not counted (``None``: every token counts).

    Returns:
        ``(mean loss, n_tokens)``.
    """
    logits = model(batch.input)  # (B, L, V)
    ignore = IGNORE if pad_id is None else pad_id
    return _mean(*label_smoothed_nll(logits, batch.target, smoothing=smoothing, ignore_index=ignore))


def seq2seq_loss(
    model: nn.Module, batch: Any, *, smoothing: float = 0.1, pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced translation loss on a ``Seq2SeqBatch`` (the paper's label smoothing 0.1).

    Args:
        model: an :class:`~qkv.models.EncoderDecoderModel` or :class:`~qkv.models.rnn_seq2seq.RNNSeq2Seq`.
        batch: has ``src``, ``src_mask`` ``(B, S)``, ``tgt_in`` and ``tgt_out`` ``(B, L)``.
        smoothing: label smoothing.
        pad_id: padding id of ``tgt_out`` (not counted).

    Returns:
        ``(mean loss over real target tokens, n_tokens)``.
    """
    logits = model(batch.src, batch.tgt_in, batch.src_mask)  # (B, L, V), either family
    return _mean(*label_smoothed_nll(logits, batch.tgt_out, smoothing=smoothing, ignore_index=pad_id))


def classification_loss(
    model: nn.Module, batch: Any, *, smoothing: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross entropy of an encoder's class logits on a ``ClassificationBatch``; the count is B.

    Args:
        model: an :class:`~qkv.models.EncoderModel` built with ``num_classes > 0``.
        batch: has ``ids``, ``mask`` ``(B, S)`` and ``labels`` ``(B,)``.
        smoothing: label smoothing.

    Returns:
        ``(mean loss over examples, number of examples)``.
    """
    logits = model.classify(batch.ids, batch.mask)  # (B, C)
    return _mean(*label_smoothed_nll(logits, batch.labels, smoothing=smoothing))


def loss_for(model: nn.Module, *, smoothing: float = 0.0, pad_id: int | None = None) -> Any:
    """The loss function that fits a qkv model's family, with its options bound.

    Args:
        model: a qkv model.
        smoothing: label smoothing (use 0 for evaluation losses, so perplexity is the real one).
        pad_id: padding id for token-level losses (default: the model config's ``pad_id``).

    Returns:
        ``loss_fn(model, batch) -> (mean loss, n_tokens)``.
    """
    cfg_pad = getattr(getattr(model, "config", None), "pad_id", None)
    pad = cfg_pad if pad_id is None else pad_id
    if isinstance(model, DecoderModel):
        return functools.partial(lm_loss, smoothing=smoothing, pad_id=pad)
    if isinstance(model, (EncoderDecoderModel, RNNSeq2Seq)):
        return functools.partial(seq2seq_loss, smoothing=smoothing, pad_id=0 if pad is None else pad)
    if isinstance(model, EncoderModel):
        return functools.partial(classification_loss, smoothing=smoothing)
    raise TypeError(f"no default loss for {type(model).__name__}; pass loss_fn(model, batch) yourself")
