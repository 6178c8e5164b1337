"""Generation past a decoder's context: the sliding window, the one policy of ``generate``, ``stream_generate``
and ``qkv generate``.

Notation: B rows, C the model's context (its positional table, :func:`~qkv.generation.context_length`),
T new tokens, n the tokens of one chunk.

The policy, for each row on its own. The model sees a window of the row's history (prompt, then the new
tokens): the whole history while it holds at most ``C`` tokens. When feeding the next token would make the
window ``C + 1`` tokens long, it drops to the last ``max(1, C // 2)`` tokens of the history, which are read
again from scratch (positions from 0, a fresh cache), and grows again. A prompt longer than ``C`` starts
from its last ``max(1, C // 2)`` tokens by the same rule. So past the context each new token is predicted
from at least ``C // 2`` tokens, and one re-read (a prefill of ``C // 2`` tokens) buys ``C - C // 2 + 1`` new
tokens. The repetition penalty counts the tokens of the window. Models without a context (no positional
table) never slide.

A batch runs in chunks: a chunk ends when some row's window is full; then every unfinished row is read again
from its window (a row that had room keeps its whole history: the same logits as going on from its cache, up
to rounding), left-padded to the longest. A row that emits EOS is finished for good and stays padded. Beam
search does not slide (see :func:`~qkv.generation.generate`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from qkv.generation.decode import StepTokens
from qkv.generation.steps import DecoderStepper, Stepper, context_length

__all__ = ["window_start", "sliding_steps", "ChunkSteps"]

#: ``(stepper, n, window ids (N, W), window key_padding (N, W) | None, tokens done before) -> steps``: greedy or
#: sampled decoding of one chunk of ``n`` tokens (``iter_tokens`` with the chunk's constraints).
ChunkSteps = Callable[[Stepper, int, torch.Tensor, torch.Tensor | None, int], Iterator[StepTokens]]


def window_start(start: int, length: int, context: int | None) -> int:
    """Where a row's window begins once its history is ``length`` tokens long.

    Args:
        start: where the window began before (0 for a new prompt).
        length: the history's length now (prompt + new tokens).
        context: the model's context ``C`` (None: no limit).

    Returns:
        ``start`` while the window ``history[start:]`` holds at most ``C`` tokens, else
        ``length - max(1, C // 2)``.
    """
    if context is None or length - start <= context:
        return start
    return length - max(1, context // 2)


def _left_pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token lists -> ``ids (N, W)`` left-padded with ``pad_id``, ``key_padding (N, W)`` (None when all full)."""
    W = max(len(r) for r in rows)
    ids = torch.full((len(rows), W), pad_id, dtype=torch.long)
    kp = torch.zeros(len(rows), W, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, W - len(r) :] = torch.tensor(r, dtype=torch.long)
        kp[i, W - len(r) :] = True
    return ids.to(device), (None if bool(kp.all()) else kp.to(device))


def sliding_steps(
    model: nn.Module,
    input_ids: torch.Tensor,
    key_padding: torch.Tensor | None,
    *,
    max_new_tokens: int,
    chunk: ChunkSteps,
    eos_id: int | None,
    pad_id: int,
    use_cache: bool = True,
) -> Iterator[StepTokens]:
    """Decode ``max_new_tokens`` tokens per row with the sliding window, one :class:`StepTokens` per step.

    Args:
        model: a ``DecoderModel`` (see :class:`~qkv.generation.DecoderStepper`).
        input_ids: prompts ``(B, P)``, left-padded when their lengths differ.
        key_padding: ``(B, P)`` bool, True = real token (None: all real).
        max_new_tokens: ``T``, new tokens per row (fewer where a row emits EOS).
        chunk: runs one chunk (greedy or sampling with the caller's options).
        eos_id: a row that emits it is finished.
        pad_id: fills windows shorter than the longest one.
        use_cache: False recomputes each window at every step (the reference path).

    Yields:
        :class:`StepTokens` whose ``step`` counts from the first new token and whose ``rows`` index
        ``input_ids``.
    """
    C, T, device = context_length(model), max_new_tokens, input_ids.device
    history = input_ids.tolist() if key_padding is None else [
        r[m].tolist() for r, m in zip(input_ids, key_padding, strict=True)]  # per row: its real tokens
    starts = [window_start(0, len(h), C) for h in history]
    active, done = list(range(len(history))), 0
    while done < T and active:
        windows = [history[b][starts[b] :] for b in active]
        n = T - done if C is None else min(T - done, C + 1 - max(len(w) for w in windows))
        if done == 0 and not any(starts):  # the prompts as given
            ids, kp = input_ids, key_padding
        else:
            ids, kp = _left_pad(windows, pad_id, device)
        stepper = DecoderStepper(model, ids, key_padding=kp, max_new_tokens=n, use_cache=use_cache)
        index = torch.tensor(active, device=device)
        more = done + n < T
        chosen = torch.full((len(active), n), pad_id, dtype=torch.long, device=device) if more else None
        last = None
        for st in chunk(stepper, n, ids, kp, done):
            yield StepTokens(done + st.step, index[st.rows.to(device)], st.tokens)
            if chosen is not None:
                chosen[st.rows.to(device), st.step] = st.tokens.to(device)
            last = st
        if not more or last is None or last.step < n - 1:  # the end, or every row emitted EOS
            return
        alive = last.rows if eos_id is None else last.rows[last.tokens != eos_id]
        for i, new in zip(alive.tolist(), chosen[alive.to(device)].tolist(), strict=True):
            b = active[i]
            history[b] += new
            starts[b] = window_start(starts[b], len(history[b]), C)
        active, done = [active[i] for i in alive.tolist()], done + n
