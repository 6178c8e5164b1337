"""Request bodies of the HTTP API (pydantic), strict: unknown fields and wrong types are errors.

The completion fields follow OpenAI's ``/v1/completions``; ``return_attention`` and ``num_beams`` are qkv
extensions, off by default. Limits that depend on the served model (context length, ``max_tokens``) are
checked by the engine, which names the field in its error too.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AttentionRequest", "CompletionRequest", "TextsRequest", "MAX_PROMPT_CHARS", "MAX_INPUTS"]

MAX_PROMPT_CHARS = 20_000  # bounds tokenization work per request; the context length is checked after
MAX_INPUTS = 256  # texts per classify/embeddings request


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class AttentionRequest(_Strict):
    """Which attention to return with each new token: the decoder's cross-attention (translators), its
    self-attention (language models).

    Attributes:
        layer: decoder layer, negative counts from the end (-1: the last).
        head: a head index, ``"mean"`` over heads, or ``"all"`` heads.
    """

    layer: int = -1
    head: int | Literal["mean", "all"] = "mean"


class CompletionRequest(_Strict):
    """``POST /v1/completions``: continue a prompt (language model) or translate it (translator)."""

    model: str | None = None
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=100.0)  # 0: greedy
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1)
    seed: int | None = Field(None, ge=0, lt=2**63)
    stream: bool = False
    logprobs: int | None = Field(None, ge=0, le=5)
    return_attention: bool | AttentionRequest = False
    num_beams: int = Field(1, ge=1, le=16)

    def attention(self) -> AttentionRequest | None:
        """The attention asked for, or None (``true`` means the last layer, mean of heads)."""
        if self.return_attention is False:
            return None
        return AttentionRequest() if self.return_attention is True else self.return_attention


class TextsRequest(_Strict):
    """``POST /v1/classify`` and ``POST /v1/embeddings``: one text or a list of texts."""

    model: str | None = None
    input: str | list[str] = Field(min_length=1)

    def texts(self) -> list[str]:
        """The inputs as a list (each non-empty, at most :data:`MAX_INPUTS` of them, checked here)."""
        texts = [self.input] if isinstance(self.input, str) else list(self.input)
        if len(texts) > MAX_INPUTS:
            raise ValueError(f"input has {len(texts)} texts; at most {MAX_INPUTS} per request")
        for i, text in enumerate(texts):
            if not text.strip() or len(text) > MAX_PROMPT_CHARS:
                raise ValueError(f"input[{i}] must be a non-empty text of at most {MAX_PROMPT_CHARS} characters")
        return texts
