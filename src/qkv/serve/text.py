"""Text out of token ids as they arrive: deltas that concatenate to the full decode.

A byte-level BPE token can end in the middle of a UTF-8 character; decoding such a prefix gives a
trailing U+FFFD. :class:`IncrementalText` decodes the ids so far and emits only the new, stable part:
it holds back trailing replacement characters (an incomplete tail) until the next token completes
them, so the streamed pieces always join to exactly the text of the whole sequence.
"""

from __future__ import annotations

from typing import Any

__all__ = ["IncrementalText", "token_label"]

_REPLACEMENT = "\ufffd"


class IncrementalText:
    """Turns a growing list of token ids into text deltas.

    Args:
        tokenizer: anything with ``decode(ids) -> str`` (specials dropped).
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.sent = ""  # text emitted so far

    def push(self, token: int) -> str:
        """Add one token; return the text that became stable (may be ``""``)."""
        self.ids.append(int(token))
        text = self.tokenizer.decode(self.ids).rstrip(_REPLACEMENT)
        return self._advance(text)

    def finish(self) -> str:
        """The rest of the text once no token will follow (an incomplete tail is emitted as it decodes)."""
        return self._advance(self.tokenizer.decode(self.ids))

    def _advance(self, text: str) -> str:
        if not text.startswith(self.sent):  # a later token rewrote earlier text: wait until it settles
            return ""
        delta, self.sent = text[len(self.sent) :], text
        return delta


def token_label(tokenizer: Any, token: int) -> str:
    """A short, human-readable label of one token for attention pictures (byte-level marks undone)."""
    token = int(token)
    if token == getattr(tokenizer, "eos_id", None):
        return "</s>"
    if token == getattr(tokenizer, "bos_id", None):
        return "<s>"
    text = tokenizer.id_to_token(token) if hasattr(tokenizer, "id_to_token") else tokenizer.decode([token])
    return text.replace("\u0120", " ").replace("\u010a", "\n")
