"""The step protocol: how the decoding engines drive a model one token at a time.

Notation: B active rows (sources x beams while decoding), P prompt length, V vocabulary, S source length.

A :class:`Stepper` wraps one model and one batch for one decoding session. The engines in
:mod:`qkv.generation.decode` only ever call ``start()`` (logits for the first new token), ``step(tokens)``
(feed the chosen tokens, get the next logits) and ``select(index)`` (keep, drop, repeat or reorder rows:
beam search and finished rows). Adapters here fit the three generating families to it:

* :class:`DecoderStepper` for ``DecoderModel`` (prompt prefill, left padding via ``key_padding`` +
  ``positions``);
* :class:`EncoderDecoderStepper` for ``EncoderDecoderModel`` (the source is encoded once; its
  cross-attention keys/values fill static caches on the first step and are only read afterwards);
* :class:`RNNStepper` for ``RNNSeq2Seq`` (``decode_step`` on a recurrent state).

Per-layer decoding state is whatever the model's ``new_cache`` returns: a :class:`~qkv.modules.KVCache`,
or any object with ``select(index)`` -- e.g. the ``(E x E)`` running sums of causal linear attention,
which decode as an RNN with O(1) state per step. :func:`select_state` applies an index to any nesting of
such objects, tensors (batch-first), lists, tuples, dicts and dataclasses.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = [
    "Stepper",
    "LayerState",
    "select_state",
    "context_length",
    "DecoderStepper",
    "EncoderDecoderStepper",
    "RNNStepper",
]


@runtime_checkable
class LayerState(Protocol):
    """Per-layer decoding state (a KV cache, a linear-attention running sum, ...)."""

    def select(self, index: torch.Tensor) -> None:
        """Keep rows ``index (B_new,)`` in place: new row ``b`` is old row ``index[b]``."""


class Stepper(Protocol):
    """One decoding session over a batch: what greedy, sampling and beam search need from a model."""

    @property
    def batch_size(self) -> int:
        """Active rows B."""

    def start(self) -> torch.Tensor:
        """Consume the input (prompt, or source + BOS); return next-token logits ``(B, V)``."""

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed ``tokens (B,)``; return the logits ``(B, V)`` for the token after them."""

    def select(self, index: torch.Tensor) -> None:
        """Make the active rows ``index (B_new,)`` (reorder, drop finished rows, or expand to beams)."""


def select_state(state: Any, index: torch.Tensor) -> Any:
    """Apply a row selection to a decoding state of any nesting; returns the selected state.

    Tensors are batch-first and are indexed (a new tensor); objects with a ``select(index)`` method
    (:class:`~qkv.modules.KVCache`, layer states) are selected in place, or replaced by what ``select``
    returns when it returns something (an immutable state such as ``RNNState``); lists, tuples, dicts and
    dataclasses are walked; anything else (ints, None) is returned unchanged.
    """
    if isinstance(state, torch.Tensor):
        return state.index_select(0, index.to(state.device))
    if isinstance(state, (list, tuple)):
        items = [select_state(s, index) for s in state]
        if isinstance(state, tuple) and hasattr(state, "_fields"):  # namedtuple
            return type(state)(*items)
        return type(state)(items)
    if isinstance(state, dict):
        return {k: select_state(v, index) for k, v in state.items()}
    if isinstance(state, (nn.ModuleList, nn.ModuleDict)):
        for s in state.children():
            select_state(s, index)
        return state
    if hasattr(state, "select") and callable(state.select):
        selected = state.select(index)  # in place (KVCache) or a new state (RNNState)
        return state if selected is None else selected
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        changes = {f.name: select_state(getattr(state, f.name), index) for f in dataclasses.fields(state)}
        return dataclasses.replace(state, **changes)
    return state


_CONTEXT_NAMES = ("max_len", "max_seq_len", "block_size", "max_position_embeddings", "n_positions", "context_length")


def context_length(model: nn.Module) -> int | None:
    """The longest sequence ``model`` accepts (its positional table), or None when it has no limit."""
    if getattr(getattr(model, "config", None), "positional", None) == "none":
        return None  # no positional table: only the cache size bounds the length
    for holder in (model, getattr(model, "config", None)):
        for name in _CONTEXT_NAMES:
            value = getattr(holder, name, None) if holder is not None else None
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None


def _new_states(model: nn.Module, rows: int, max_len: int, active: int) -> Any:
    """``model.new_cache(rows, max_len)`` with only the first ``active`` rows in use."""
    states = model.new_cache(rows, max_len)
    if active != rows:
        states = select_state(states, torch.arange(active))
    return states


class DecoderStepper:
    """Drive a ``DecoderModel``: prefill the prompt, then one token per step.

    Args:
        model: ``forward(ids (B, L), *, key_padding, positions, cache) -> logits (B, L, V)`` and
            ``new_cache(batch_size, max_len)``.
        input_ids: prompt ``(B, P)``, left-padded when prompts differ in length.
        key_padding: ``(B, P)`` bool, True = real token (None: all real).
        max_new_tokens: how many tokens will be fed after the prompt at most (cache capacity).
        rows: how many rows the session may hold at once (``B x num_beams`` for beam search).
        use_cache: False recomputes the whole prefix at every step (the reference path).
        keep_weights: keep :attr:`weights`, the self-attention of the last fed position: one ``(B, H, S)``
            per layer (the model runs with ``return_weights=True``).
    """

    def __init__(
        self,
        model: nn.Module,
        input_ids: torch.Tensor,
        *,
        key_padding: torch.Tensor | None = None,
        max_new_tokens: int,
        rows: int | None = None,
        use_cache: bool = True,
        keep_weights: bool = False,
    ) -> None:
        B, P = input_ids.shape
        self.model, self.use_cache, self.keep_weights = model, use_cache, keep_weights
        self.weights: list[torch.Tensor] | None = None
        self.ids = input_ids  # (B, P + t) in the uncached path, the prompt otherwise
        self.padded = key_padding is not None and not bool(key_padding.all())
        capacity = P + max(max_new_tokens, 1)
        self.key_padding = torch.ones(B, capacity, dtype=torch.bool, device=input_ids.device)
        if key_padding is not None:
            self.key_padding[:, :P] = key_padding
        self.positions = (self.key_padding[:, :P].long().cumsum(1) - 1).clamp(min=0)  # (B, P)
        self.length = P  # positions fed so far
        rows = B if rows is None else rows
        self.cache = _new_states(model, rows, capacity, B) if use_cache else None
        self._rows = B

    @property
    def batch_size(self) -> int:
        return self._rows

    def _run(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        kp = self.key_padding[:, : self.length] if self.padded else None
        pos = positions if self.padded else None
        if not self.keep_weights:
            return self.model(ids, key_padding=kp, positions=pos, cache=self.cache)[:, -1]  # (B, V)
        logits, weights = self.model(ids, key_padding=kp, positions=pos, cache=self.cache, return_weights=True)
        self.weights = [w[:, :, -1] for w in weights]  # per layer (B, H, S)
        return logits[:, -1]

    def start(self) -> torch.Tensor:
        return self._run(self.ids, self.positions)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.length += 1
        if self.use_cache and not self.padded:  # the model counts positions from its cache
            return self._run(tokens[:, None], None)
        nxt = self.positions[:, -1:] + 1  # (B, 1)
        if self.use_cache:
            self.positions = nxt
            return self._run(tokens[:, None], nxt)
        self.ids = torch.cat([self.ids, tokens[:, None]], dim=1)  # (B, P + t)
        self.positions = torch.cat([self.positions, nxt], dim=1)
        return self._run(self.ids, self.positions)

    def select(self, index: torch.Tensor) -> None:
        index = index.to(self.key_padding.device)
        self.key_padding = self.key_padding[index]
        self.positions = self.positions[index]
        if self.use_cache:
            self.cache = select_state(self.cache, index)
        else:
            self.ids = self.ids[index]
        self._rows = index.shape[0]


class EncoderDecoderStepper:
    """Drive an ``EncoderDecoderModel``: encode once, then decode from BOS one token per step.

    Args:
        model: ``encode(src, src_mask) -> memory (B, S, D)``,
            ``decode(tgt (B, L), memory, src_mask, *, cache) -> logits (B, L, V)``, ``new_cache``.
        src: source ids ``(B, S)``.
        src_mask: ``(B, S)`` bool, True = real token (None: all real).
        bos_id: the token the decoder starts from.
        max_len: how many tokens will be fed at most (BOS included): cache capacity.
        rows: the most rows held at once (``B x num_beams`` for beam search).
        use_cache: False re-decodes the whole target prefix at every step (the reference path).
        keep_weights: keep :attr:`weights`, the cross-attention of the last fed position: one ``(B, H, S)``
            per layer (the model runs with ``return_weights=True``).
    """

    def __init__(
        self,
        model: nn.Module,
        src: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        *,
        bos_id: int,
        max_len: int,
        rows: int | None = None,
        use_cache: bool = True,
        keep_weights: bool = False,
    ) -> None:
        B = src.shape[0]
        self.model, self.use_cache, self.keep_weights = model, use_cache, keep_weights
        self.weights: list[torch.Tensor] | None = None
        self.src_mask = src_mask
        self.memory = model.encode(src, src_mask)  # (B, S, D)
        self.bos = torch.full((B,), bos_id, dtype=torch.long, device=src.device)
        self.tgt = src.new_zeros(B, 0)  # (B, t) fed so far, uncached path
        rows = B if rows is None else rows
        self.cache = _new_states(model, rows, max(max_len, 1), B) if use_cache else None
        self._rows = B

    @property
    def batch_size(self) -> int:
        return self._rows

    def start(self) -> torch.Tensor:
        return self.step(self.bos)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.use_cache:
            tgt = tokens[:, None]  # (B, 1)
        else:
            self.tgt = tgt = torch.cat([self.tgt, tokens[:, None]], dim=1)  # (B, t)
        if not self.keep_weights:
            return self.model.decode(tgt, self.memory, self.src_mask, cache=self.cache)[:, -1]  # (B, V)
        logits, weights = self.model.decode(tgt, self.memory, self.src_mask, cache=self.cache, return_weights=True)
        self.weights = [w[:, :, -1] for w in weights["cross"]]  # per layer (B, H, S)
        return logits[:, -1]

    def select(self, index: torch.Tensor) -> None:
        index = index.to(self.memory.device)
        self.memory = self.memory[index]
        self.src_mask = None if self.src_mask is None else self.src_mask[index]
        self.tgt = self.tgt[index]
        if self.use_cache:
            self.cache = select_state(self.cache, index)
        self._rows = index.shape[0]


class RNNStepper:
    """Drive an ``RNNSeq2Seq``: ``encode(src, src_mask) -> state``, then
    ``decode_step(prev (B,), state) -> (logits (B, V), state, weights)`` from BOS.

    The recurrent state is selected with :func:`select_state` (tensors batch-first, or objects with
    ``select``); it is O(1) in the number of decoded tokens, like linear attention's.

    Args:
        model: the RNN encoder-decoder.
        src: ``(B, S)``.
        src_mask: ``(B, S)`` bool, True = real token.
        bos_id: the first decoder input.
    """

    def __init__(self, model: nn.Module, src: torch.Tensor, src_mask: torch.Tensor | None = None, *, bos_id: int):
        self.model = model
        self.state = model.encode(src, src_mask)
        self.bos = torch.full((src.shape[0],), bos_id, dtype=torch.long, device=src.device)
        self._rows = src.shape[0]
        self.weights: torch.Tensor | None = None  # attention weights (B, S) of the last step, if any

    @property
    def batch_size(self) -> int:
        return self._rows

    def start(self) -> torch.Tensor:
        return self.step(self.bos)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        logits, self.state, self.weights = self.model.decode_step(tokens, self.state)
        return logits

    def select(self, index: torch.Tensor) -> None:
        self.state = select_state(self.state, index)
        self._rows = index.shape[0]
