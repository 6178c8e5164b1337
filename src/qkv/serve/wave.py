"""Per-step batching: the active completion requests decoded together, one token each per step.

Notation: N active rows, V vocabulary, H heads, S keys.

A :class:`Wave` holds the rows that start together. Each step runs the model once on all of them
through one :class:`~qkv.generation.steps.Stepper` (each row keeps its own KV-cache row), then every row
picks its token with its own settings and random generator, so a row's tokens do not depend on which
other requests share the batch. A row that finishes (EOS, its ``max_tokens``, its deadline) or whose
client went away leaves the batch at once (``stepper.select``): it costs nothing from the next step on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from qkv.generation import IncrementalText, LogitsSettings
from qkv.serve.backends import GenerativeBackend, Prepared
from qkv.serve.channel import Channel, deliver
from qkv.serve.schemas import AttentionRequest

__all__ = ["EngineStats", "Row", "Wave", "head_view"]


@dataclass
class EngineStats:
    """Counters: waves started, batched model calls (steps), rows stepped, the largest batch, calls run
    alone, requests refused (queue full) or dropped unstarted, and finished rows by reason."""

    waves: int = 0
    steps: int = 0
    rows_stepped: int = 0
    max_rows: int = 0
    calls: int = 0
    rejected: int = 0
    expired: int = 0
    finished: dict[str, int] = field(default_factory=dict)


def head_view(weights: torch.Tensor, head: int | str) -> list:
    """One row's attention ``(H, S)`` as JSON lists: one head ``(S,)``, the mean ``(S,)`` or all ``(H, S)``."""
    if head == "mean":
        w = weights.float().mean(0)
    elif head == "all":
        w = weights.float()
    else:
        w = weights[head].float()
    return w.double().mul(1e4).round().div(1e4).tolist()  # float64: 4 decimals print as 4 decimals


@dataclass(eq=False)
class Row:
    """One completion request inside the engine.

    ``channel`` receives event dicts (``{"text", "token", "label", "logprob", "top_logprobs", "attention"}``
    per token, then ``{"finish_reason", "usage"}``); its ``closed`` flag (the client left) is polled between
    steps.
    """

    prepared: Prepared
    settings: LogitsSettings
    greedy: bool
    seed: int
    channel: Channel
    deadline: float
    logprobs: int | None = None
    attention: AttentionRequest | None = None
    text: IncrementalText | None = None
    keys: slice = field(default_factory=lambda: slice(None))
    generated: int = 0
    generator: torch.Generator | None = None

    def emit(self, event: dict[str, Any]) -> None:
        self.channel.put(event)

    def cancelled(self) -> bool:
        return self.channel.closed.is_set()

    def choose(self, logits: torch.Tensor) -> int:
        """The next token from ``logits (1, V)``: argmax, or a draw from the shaped distribution."""
        if self.greedy:
            return int(logits.argmax(-1))
        probs = self.settings.shape(logits).softmax(dim=-1)  # (1, V)
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def token_event(self, token: int, logits: torch.Tensor, weights: list[torch.Tensor] | None,
                    label: Callable[[int], str]) -> dict[str, Any]:
        """The event of one new token: its text delta, label, log-probabilities and attention as asked."""
        event: dict[str, Any] = {"text": self.text.push(token), "token": token, "label": label(token)}
        if self.logprobs is not None:
            logp = logits.log_softmax(-1)[0]  # (V,)
            event["logprob"] = round(float(logp[token]), 6)
            top = logp.topk(min(self.logprobs, logp.shape[0]))
            event["top_logprobs"] = {label(int(i)): round(float(v), 6)
                                     for v, i in zip(top.values, top.indices, strict=True)}
        if self.attention is not None and weights is not None:
            event["attention"] = head_view(weights[self.attention.layer][:, self.keys], self.attention.head)
        return event


class Wave:
    """Decode ``rows`` together until every one has finished.

    Args:
        backend: the language model or translator.
        rows: the requests (validated, at most the engine's ``max_batch``).
        stats: the engine's counters, updated after each batched model call and finished row.
    """

    def __init__(self, backend: GenerativeBackend, rows: list[Row], stats: EngineStats) -> None:
        self.backend, self.rows, self.stats = backend, rows, stats
        keep = any(r.attention is not None for r in rows)
        self.stepper, keys = backend.stepper([r.prepared for r in rows], keep_weights=keep)
        for r, k in zip(rows, keys, strict=True):
            r.keys, r.text = k, IncrementalText(backend.tokenizer)
            r.generator = torch.Generator(device=backend.device).manual_seed(r.seed)

    @torch.inference_mode()
    def run(self) -> None:
        active = list(self.rows)
        logits = self.stepper.start()  # (N, V)
        while active:
            self._count(len(active))
            weights = self.backend.weights(self.stepper)
            tokens, keep = [], []
            now = time.monotonic()
            for i, row in enumerate(active):
                row_logits = self.row_logits(logits, i)
                token = row.choose(row_logits)
                row_weights = None if weights is None else [w[i] for w in weights]
                row.emit(row.token_event(token, row_logits, row_weights, self.backend.label))
                row.generated += 1
                reason = self._finished(row, token, now)
                if reason:
                    self.finish(row, reason)
                else:
                    tokens.append(token)
                    keep.append(i)
            deliver(r.channel for r in active)
            if not keep:
                return
            if len(keep) < len(active):
                self.stepper.select(torch.tensor(keep, device=logits.device))
                active = [active[i] for i in keep]
            logits = self.stepper.step(torch.tensor(tokens, device=logits.device))

    def _count(self, n: int) -> None:
        self.stats.steps += 1
        self.stats.rows_stepped += n
        self.stats.max_rows = max(self.stats.max_rows, n)

    @staticmethod
    def row_logits(logits: torch.Tensor, i: int) -> torch.Tensor:
        return logits[i : i + 1].float()  # (1, V)

    def _finished(self, row: Row, token: int, now: float) -> str | None:
        if token == self.backend.eos_id:
            return "stop"
        if row.generated >= row.prepared.limit:
            return "length"
        if row.cancelled():
            return "cancelled"
        if now > row.deadline:
            return "timeout"
        return None

    def finish(self, row: Row, reason: str) -> None:
        """Send the held-back text and the finish event."""
        self.stats.finished[reason] = self.stats.finished.get(reason, 0) + 1
        if row.text is not None:
            rest = row.text.finish()
            if rest:
                row.emit({"text": rest})
        usage = {"prompt_tokens": len(row.prepared.ids), "completion_tokens": row.generated,
                 "total_tokens": len(row.prepared.ids) + row.generated}
        row.emit({"finish_reason": reason, "usage": usage})
