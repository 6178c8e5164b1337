"""Text out of token ids as they arrive: deltas that join to exactly ``tokenizer.decode(all ids)``.

Two things make this more than decoding each token alone. A byte-level BPE token can end inside a multi-byte
UTF-8 character: decoding up to it gives a trailing U+FFFD until a later token completes the character, so
such a tail is held back. And a token's text can depend on its neighbours (a word tokenizer joins words with
single spaces; SentencePiece-style pieces drop a leading space at the start of a text), so a token is decoded
together with the piece emitted before it. :class:`IncrementalText` does both the way vLLM's incremental
detokeniser does: each push decodes a short window (the ids since the start of the previous emitted piece),
never the whole sequence, so the work per token does not grow with the length of the text.
"""

from __future__ import annotations

from typing import Any

__all__ = ["IncrementalText"]

_REPLACEMENT = "\ufffd"


class IncrementalText:
    """Turns token ids pushed one at a time into text deltas.

    ``ids[prefix:read]`` are the ids of the last emitted piece and ``ids[read:]`` those not emitted yet; each
    :meth:`push` decodes ``ids[prefix:read]`` and ``ids[prefix:]`` and emits what the second adds to the
    first, unless that ends in U+FFFD (an incomplete character: held back until a later token completes it).

    Args:
        tokenizer: anything with ``decode(ids) -> str`` (special tokens dropped).

    Example::

        text = IncrementalText(tokenizer)
        pieces = [text.push(t) for t in ids] + [text.finish()]
        assert "".join(pieces) == tokenizer.decode(ids)
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = self.read = 0

    def push(self, token: int) -> str:
        """Add one token; return the text that became stable (``""`` while a character is incomplete)."""
        self.ids.append(int(token))
        return self._advance(final=False)

    def finish(self) -> str:
        """The rest of the text once no token will follow (an incomplete tail as it decodes, U+FFFD included)."""
        return self._advance(final=True)

    def _advance(self, *, final: bool) -> str:
        context = self.tokenizer.decode(self.ids[self.prefix : self.read])
        text = self.tokenizer.decode(self.ids[self.prefix :])
        if len(text) <= len(context) or not text.startswith(context):  # nothing new, or not settled yet
            return ""
        if text.endswith(_REPLACEMENT) and not final:
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return text[len(context) :]
