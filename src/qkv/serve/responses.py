"""OpenAI-shaped JSON out of engine events: the whole completion, or one SSE chunk per event.

Engine events (see :mod:`qkv.serve.wave`): per token ``{"text", "token", "label", "logprob"?,
"top_logprobs"?, "attention"?}``, a trailing ``{"text"}`` with held-back text, then ``{"finish_reason",
"usage"}``; or ``{"error": BadRequest}``.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

__all__ = ["Completion", "error_body", "sse"]


def error_body(message: str, param: str | None, kind: str = "invalid_request_error") -> dict[str, Any]:
    """The OpenAI error object: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


def sse(obj: Any) -> bytes:
    """One server-sent event: ``data: <json>`` and a blank line (``obj`` may be the string ``[DONE]``)."""
    text = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


class Completion:
    """Collects one request's events into a completion object (and formats the streamed chunks).

    Args:
        model: the served model's id.
        attention: ``{"layer", "head", "kind", "keys"}`` when attention was asked for, else None.
        logprobs: whether log-probabilities were asked for.
    """

    def __init__(self, model: str, attention: dict[str, Any] | None, logprobs: bool) -> None:
        self.id, self.created, self.model = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time()), model
        self.attention, self.logprobs = attention, logprobs
        self.text: list[str] = []
        self.labels: list[str] = []
        self.token_logprobs: list[float] = []
        self.top_logprobs: list[dict[str, float]] = []
        self.weights: list[Any] = []
        self.finish_reason: str | None = None
        self.usage: dict[str, int] | None = None

    def add(self, event: dict[str, Any]) -> None:
        self.text.append(event.get("text", ""))
        if "token" in event:
            self.labels.append(event["label"])
            if "logprob" in event:
                self.token_logprobs.append(event["logprob"])
                self.top_logprobs.append(event["top_logprobs"])
            if "attention" in event:
                self.weights.append(event["attention"])
        if "finish_reason" in event:
            self.finish_reason, self.usage = event["finish_reason"], event.get("usage")

    def _logprobs(self, labels, token_lp, top_lp) -> dict[str, Any] | None:
        if not self.logprobs:
            return None
        return {"tokens": labels, "token_logprobs": token_lp, "top_logprobs": top_lp}

    def body(self) -> dict[str, Any]:
        """The non-streamed response."""
        choice: dict[str, Any] = {
            "index": 0, "text": "".join(self.text), "finish_reason": self.finish_reason,
            "logprobs": self._logprobs(self.labels, self.token_logprobs, self.top_logprobs),
        }
        if self.attention is not None:
            choice["attention"] = {**self.attention, "tokens": self.labels, "weights": self.weights}
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [choice], "usage": self.usage}

    def chunk(self, event: dict[str, Any], first: bool) -> dict[str, Any]:
        """The streamed chunk of one event (the first chunk also names the attention's keys)."""
        choice: dict[str, Any] = {"index": 0, "text": event.get("text", ""),
                                  "finish_reason": event.get("finish_reason"), "logprobs": None}
        if "token" in event and "logprob" in event:
            choice["logprobs"] = self._logprobs([event["label"]], [event["logprob"]], [event["top_logprobs"]])
        if self.attention is not None and (first or "attention" in event):
            att: dict[str, Any] = dict(self.attention) if first else {}
            if "attention" in event:
                att.update(token=event["label"], weights=event["attention"])
            choice["attention"] = att
        out = {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
               "choices": [choice]}
        if "usage" in event:
            out["usage"] = event["usage"]
        return out
