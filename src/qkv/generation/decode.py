"""Decoding engines on the step protocol: greedy, sampling and batched beam search.

Notation: B sources (rows of the input), K beams, N active rows, T new tokens, V vocabulary.

Every engine talks to a model only through a :class:`~qkv.generation.steps.Stepper`. Finished rows
leave the active batch at once (``stepper.select``), so they stop costing compute; their outputs are
padded. :func:`iter_tokens` yields the tokens of each step as they are chosen (streaming);
:func:`decode_tokens` collects them into a padded ``(B, T)`` tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from qkv.generation.sampling import LogitsSettings, force_token, suppress_tokens
from qkv.generation.steps import Stepper

__all__ = ["StepTokens", "iter_tokens", "decode_tokens", "beam_search", "gnmt_length_penalty"]


@dataclass(frozen=True)
class StepTokens:
    """The tokens chosen at one step.

    Attributes:
        step: index of the new token, from 0.
        rows: ``(N,)`` the input rows still being decoded.
        tokens: ``(N,)`` their new tokens (EOS included).
    """

    step: int
    rows: torch.Tensor
    tokens: torch.Tensor


def _seen_matrix(prefix: torch.Tensor | None, prefix_mask: torch.Tensor | None, B: int, V: int, device) -> torch.Tensor:
    """``(B, V)`` bool: which tokens occur (in the real positions of) the prefix."""
    seen = torch.zeros(B, V, dtype=torch.bool, device=device)
    if prefix is not None and prefix.numel():
        real = torch.ones_like(prefix, dtype=torch.bool) if prefix_mask is None else prefix_mask
        seen.scatter_(1, prefix.masked_fill(~real, 0), real)
        if not bool(real.all()):  # token 0 was used as a dummy index above; recompute its column
            seen[:, 0] = ((prefix == 0) & real).any(1)
    return seen


def _constrain(logits: torch.Tensor, t: int, T: int, eos_id: int | None, min_new_tokens: int, force_eos: bool):
    """Min-length (no EOS before ``min_new_tokens``) and forced EOS at the last step."""
    if eos_id is None:
        return logits
    if t < min_new_tokens:
        logits = suppress_tokens(logits, eos_id)
    elif force_eos and t == T - 1:
        logits = force_token(logits, eos_id)
    return logits


def iter_tokens(
    stepper: Stepper,
    *,
    max_new_tokens: int,
    sample: bool = False,
    settings: LogitsSettings | None = None,
    eos_id: int | None = None,
    min_new_tokens: int = 0,
    force_eos: bool = False,
    generator: torch.Generator | None = None,
    prefix: torch.Tensor | None = None,
    prefix_mask: torch.Tensor | None = None,
) -> Iterator[StepTokens]:
    """Greedy or sampled decoding, one :class:`StepTokens` per step.

    Args:
        stepper: the model session (``start`` not yet called).
        max_new_tokens: ``T``, the most tokens to produce per row.
        sample: draw from the shaped distribution; else take the argmax (temperature/top-k/top-p unused).
        settings: temperature, top-k, top-p, repetition penalty.
        eos_id: a row that emits it is finished and dropped from the batch.
        min_new_tokens: EOS is forbidden before this many tokens.
        force_eos: force EOS as the last token of rows that reach ``max_new_tokens``.
        generator: the random source for sampling (seeded => reproducible).
        prefix: ``(B, P)`` tokens already in each row's context (the prompt), for the repetition penalty.
        prefix_mask: ``(B, P)`` bool, True = real token in ``prefix``.

    Yields:
        :class:`StepTokens` with the rows still active and their new tokens.
    """
    settings = LogitsSettings() if settings is None else settings
    if max_new_tokens <= 0:
        return
    logits = stepper.start()  # (B, V)
    B, V = logits.shape
    rows = torch.arange(B, device=logits.device)
    seen = None
    if settings.repetition_penalty != 1.0:
        seen = _seen_matrix(prefix, prefix_mask, B, V, logits.device)
    for t in range(max_new_tokens):
        logits = settings.penalise(logits.float(), seen)
        logits = _constrain(logits, t, max_new_tokens, eos_id, min_new_tokens, force_eos)
        if sample:
            probs = settings.shape(logits).softmax(dim=-1)  # (N, V)
            tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (N,)
        else:
            if bool(torch.isnan(logits).any()):  # argmax would pick token 0 from a row of NaN
                raise ValueError(f"the model's logits hold NaN at step {t} (its weights or inputs are not finite): "
                                 "greedy decoding has no token to choose")
            tokens = logits.argmax(dim=-1)  # (N,)
        yield StepTokens(t, rows, tokens)
        if t == max_new_tokens - 1:
            return
        if seen is not None:
            seen[torch.arange(tokens.shape[0], device=seen.device), tokens] = True
        if eos_id is not None:
            done = tokens == eos_id
            if bool(done.any()):
                keep = (~done).nonzero().squeeze(1)  # (N',)
                if keep.numel() == 0:
                    return
                stepper.select(keep)
                rows, tokens = rows[keep], tokens[keep]
                seen = None if seen is None else seen[keep]
        logits = stepper.step(tokens)


def decode_tokens(
    steps: Iterator[StepTokens],
    batch_size: int,
    max_new_tokens: int,
    *,
    pad_id: int = 0,
    on_token: Callable[[StepTokens], None] | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Collect streamed steps into ``(B, T')`` tokens, padded with ``pad_id`` after a row finishes.

    ``T'`` is the number of steps actually taken (``<= max_new_tokens``). ``on_token`` sees every step.
    """
    out = torch.full((batch_size, max(max_new_tokens, 0)), pad_id, dtype=torch.long, device=device)
    taken = 0
    for st in steps:
        if st.rows.shape[0] == batch_size:  # no row has finished: a plain column write
            out[:, st.step] = st.tokens.to(out.device)
        else:
            out[st.rows.to(out.device), st.step] = st.tokens.to(out.device)
        taken = st.step + 1
        if on_token is not None:
            on_token(st)
    return out[:, :taken]


def gnmt_length_penalty(length: int | torch.Tensor, alpha: float) -> float | torch.Tensor:
    """GNMT's ``lp(Y) = ((5 + |Y|) / 6) ** alpha``; a hypothesis scores ``log P(Y) / lp(Y)``."""
    return ((5.0 + length) / 6.0) ** alpha


def _assign_slots(parent: torch.Tensor) -> torch.Tensor:
    """Order the chosen children so each one stays in its parent's slot where it can.

    A beam's cache row then keeps its history in place; only children of a parent that has several
    children (and so took another beam's slot) copy a history.

    Args:
        parent: ``(N, K)`` the local parent beam of each chosen child.

    Returns:
        ``(N, K)`` permutation: slot ``s`` holds child ``perm[:, s]``.
    """
    K = parent.shape[1]
    ar = torch.arange(K, device=parent.device)
    same = parent[:, :, None] == parent[:, None, :]  # (N, K, K)
    first = ~(same & (ar[:, None] > ar[None, :])).any(-1)  # (N, K) first child of its parent
    taken = (parent[:, :, None] == ar).any(1)  # (N, K) slots claimed by a first child
    child_order = torch.argsort(first.to(torch.uint8), dim=1, stable=True)  # later children first
    slot_order = torch.argsort(taken.to(torch.uint8), dim=1, stable=True)  # free slots first
    slot = torch.zeros_like(parent).scatter_(1, child_order, slot_order)
    slot = torch.where(first, parent, slot)  # (N, K) a permutation of 0..K-1 per row
    return torch.argsort(slot, dim=1)


class _Hypotheses:
    """The ``K`` best finished hypotheses of one source, by length-penalised score."""

    def __init__(self, K: int) -> None:
        self.K, self.items = K, []  # [(score, tokens list)]

    def add(self, score: float, tokens: list[int]) -> None:
        self.items.append((score, tokens))
        self.items.sort(key=lambda x: -x[0])
        del self.items[self.K :]

    def worst(self) -> float:
        return self.items[-1][0] if len(self.items) >= self.K else float("-inf")


def beam_search(
    stepper: Stepper,
    *,
    num_beams: int,
    max_new_tokens: int,
    eos_id: int | None,
    length_penalty: float = 0.6,
    early_stopping: bool = False,
    min_new_tokens: int = 0,
    settings: LogitsSettings | None = None,
    prefix: torch.Tensor | None = None,
    prefix_mask: torch.Tensor | None = None,
    pad_id: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched beam search with GNMT length penalty; finished sources leave the batch.

    Each step scores all ``K x V`` continuations of a source's live beams and looks at the best
    ``2K``: an EOS among the top ``K`` ranks closes a hypothesis (score ``log P / lp``), the best ``K``
    non-EOS continuations live on. A source is done when it has ``K`` hypotheses and either
    ``early_stopping`` is set or no live beam can still beat the worst of them (an exact bound:
    log-probabilities only fall, and ``lp`` is monotone in length). The stepper must hold ``B x K`` rows.

    Args:
        stepper: the model session, ``start`` not yet called, capacity ``B * num_beams`` rows.
        num_beams: ``K >= 1``.
        max_new_tokens: ``T``, the longest hypothesis (EOS included).
        eos_id: end-of-sequence token (None: every hypothesis has length ``T``).
        length_penalty: GNMT ``alpha`` (0: plain log-probability).
        early_stopping: stop a source as soon as it has ``K`` finished hypotheses.
        min_new_tokens: EOS is forbidden before this many tokens.
        settings: only the repetition penalty is used.
        prefix: ``(B, P)`` context tokens for the repetition penalty; ``prefix_mask`` marks real ones.
        pad_id: fills outputs after EOS.

    Returns:
        ``tokens (B, T')`` best hypothesis per source (padded), ``scores (B,)`` its penalised score.
    """
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    settings = LogitsSettings() if settings is None else settings
    K, T = num_beams, max_new_tokens
    if T <= 0:
        B = stepper.batch_size
        return torch.full((B, 0), pad_id, dtype=torch.long), torch.zeros(B)
    logits = stepper.start().float()  # (B, V)
    B, V = logits.shape
    dev = logits.device
    hyps = [_Hypotheses(K) for _ in range(B)]
    src = torch.arange(B, device=dev)  # (N,) the sources still searching
    expand = torch.arange(B, device=dev).repeat_interleave(K)  # (B K,)
    stepper.select(expand)
    logits = logits[expand]
    seen = None
    if settings.repetition_penalty != 1.0:
        seen = _seen_matrix(prefix, prefix_mask, B, V, dev)[expand]
    scores = torch.full((B, K), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # one live beam per source at first
    history = torch.zeros(B, K, 0, dtype=torch.long, device=dev)  # (N, K, t)
    n_cand = min(2 * K, K * V)
    for t in range(T):
        N = src.shape[0]
        logp = _constrain(settings.penalise(logits, seen), t, T, eos_id, min_new_tokens, False).log_softmax(-1)
        cand = (scores.view(N * K, 1) + logp).view(N, K * V)  # (N, K V)
        top_s, top_i = cand.topk(n_cand, dim=1)  # (N, 2K), best first
        parent, tok = top_i // V, top_i % V
        is_eos = tok == eos_id if eos_id is not None else torch.zeros_like(tok, dtype=torch.bool)
        _close_eos(hyps, src, top_s, parent, is_eos & (torch.arange(n_cand, device=dev) < K), history, eos_id,
                   gnmt_length_penalty(t + 1, length_penalty))
        live_s, live_j = top_s.masked_fill(is_eos, float("-inf")).topk(K, dim=1)  # (N, K)
        perm = _assign_slots(parent.gather(1, live_j))
        live_j = live_j.gather(1, perm)
        scores, parent, tok = live_s.gather(1, perm), parent.gather(1, live_j), tok.gather(1, live_j)
        history = torch.cat([history.gather(1, parent[:, :, None].expand_as(history)), tok[:, :, None]], dim=2)
        if t == T - 1:  # live beams are complete now; with early stopping, sources with K hypotheses are done
            keep = torch.tensor([len(hyps[b].items) < K or not early_stopping for b in src.tolist()], device=dev)
            src, scores, history = src[keep], scores[keep], history[keep]
            break
        keep = (~_done(scores, hyps, src, t, T, length_penalty, early_stopping)).nonzero().squeeze(1)  # (N',)
        src, scores, history, parent, tok = src[keep], scores[keep], history[keep], parent[keep], tok[keep]
        if keep.numel() == 0:
            break
        rows = ((keep * K)[:, None] + parent).reshape(-1)  # (N' K,) old active row of each new beam
        stepper.select(rows)
        if seen is not None:
            seen = seen[rows]
            seen[torch.arange(rows.shape[0], device=dev), tok.reshape(-1)] = True
        logits = stepper.step(tok.reshape(-1)).float()  # (N' K, V)
    _close_live(hyps, src, scores, history, T, length_penalty)  # beams that reached T tokens
    return _best(hyps, B, T, pad_id, dev)


def _close_eos(hyps, src, top_s, parent, closing, history, eos_id, lp) -> None:
    """Candidates ``closing (N, 2K)`` (EOS within the top K ranks) become hypotheses scored ``log P / lp``."""
    for n, j in (closing & (top_s > float("-inf"))).nonzero().tolist():
        b, p = int(src[n]), int(parent[n, j])
        hyps[b].add(float(top_s[n, j]) / lp, history[n, p].tolist() + [eos_id])


def _done(scores, hyps, src, t, T, alpha, early_stopping) -> torch.Tensor:
    """``(N,)`` bool: sources whose search is over after step ``t`` (beams of length ``t + 1``)."""
    out = []
    best_live = scores.max(dim=1).values.tolist()  # (N,) raw log P of the best live beam
    for n, b in enumerate(src.tolist()):
        h = hyps[b]
        if best_live[n] == float("-inf"):
            out.append(True)
        elif len(h.items) < h.K:
            out.append(False)
        elif early_stopping:
            out.append(True)
        else:  # the best a live beam can still reach, at any final length t + 2 .. T
            s = best_live[n]
            bound = max(s / gnmt_length_penalty(t + 2, alpha), s / gnmt_length_penalty(T, alpha))
            out.append(bound <= h.worst())
    return torch.tensor(out, dtype=torch.bool, device=scores.device)


def _close_live(hyps, src, scores, history, length, alpha) -> None:
    """Sources still searching after the last step: their live beams (``length`` tokens) become hypotheses."""
    lp = gnmt_length_penalty(length, alpha)
    for n, b in enumerate(src.tolist()):
        for k in range(scores.shape[1]):
            if scores[n, k] > float("-inf"):
                hyps[b].add(float(scores[n, k]) / lp, history[n, k].tolist())


def _best(hyps, B, T, pad_id, dev) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.full((B, T), pad_id, dtype=torch.long)
    best = torch.full((B,), float("-inf"))
    longest = 0
    for b, h in enumerate(hyps):
        if h.items:
            best[b], toks = h.items[0]
            out[b, : len(toks)] = torch.tensor(toks, dtype=torch.long)
            longest = max(longest, len(toks))
    return out[:, :longest].to(dev), best.to(dev)
