"""A thin batch wrapper around a Hugging Face ``tokenizers.Tokenizer`` read from ``tokenizer.json``.

Special tokens (BERT's ``[CLS] ... [SEP]``, BART's ``<s> ... </s>``) come from the file's own
post-processor. Batches are right-padded here, so the file's own padding setting is switched off.

Notation: B batch, L longest row (after truncation).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch

__all__ = ["PretrainedTokenizer", "TokenBatch"]


class TokenBatch(NamedTuple):
    """A padded batch.

    Attributes:
        ids: ``(B, L)`` long token ids, ``pad_id`` after each row's end.
        mask: ``(B, L)`` bool, True = real token (Hugging Face's ``attention_mask``).
        segments: ``(B, L)`` long token type ids (BERT's sentence A/B).
    """

    ids: torch.Tensor
    mask: torch.Tensor
    segments: torch.Tensor


class PretrainedTokenizer:
    """Encode text for a pretrained model.

    Args:
        tokenizer: a ``tokenizers.Tokenizer`` (its padding is switched off and its truncation set here).
        pad_id: the id padding fills rows with.
        max_length: truncate longer encodings (special tokens included), or None.
    """

    #: No prefix token is added by qkv's data layer: the file's post-processor adds its own ([CLS] ...).
    bos_id = None

    def __init__(self, tokenizer, *, pad_id: int, max_length: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.pad_id, self.max_length = pad_id, max_length
        tokenizer.no_padding()
        if max_length is None:
            tokenizer.no_truncation()
        else:
            tokenizer.enable_truncation(max_length)

    @classmethod
    def from_file(cls, path: str | Path, *, pad_id: int | None = None, max_length: int | None = None):
        """Read ``tokenizer.json``; ``pad_id`` defaults to the file's padding id, then to 0."""
        from tokenizers import Tokenizer

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises its own exception type for a malformed file
            raise ValueError(f"{path} is not a valid tokenizer.json: {e}") from e
        if pad_id is None:
            pad_id = (tok.padding or {}).get("pad_id", 0)
        return cls(tok, pad_id=pad_id, max_length=max_length)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """One text -> its ids (with the file's special tokens unless ``add_special_tokens=False``)."""
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of each text, with the file's special tokens (what :class:`qkv.data.LabelledDataset` reads)."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def decode(self, ids: Sequence[int] | torch.Tensor, *, skip_special_tokens: bool = True) -> str:
        """Ids -> text (special tokens dropped by default)."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def __call__(self, texts: Sequence[str]) -> TokenBatch:
        """Encode and right-pad ``texts``: ids, mask and segments, each ``(B, L)``."""
        if isinstance(texts, str):
            raise ValueError("texts must be a list of strings, got one str; wrap it in a list")
        encs = self.tokenizer.encode_batch(list(texts))
        B, L = len(encs), max((len(e.ids) for e in encs), default=0)
        ids = torch.full((B, L), self.pad_id, dtype=torch.long)
        segments = torch.zeros(B, L, dtype=torch.long)
        mask = torch.zeros(B, L, dtype=torch.bool)
        for b, e in enumerate(encs):
            n = len(e.ids)
            ids[b, :n] = torch.tensor(e.ids, dtype=torch.long)
            segments[b, :n] = torch.tensor(e.type_ids, dtype=torch.long)
            mask[b, :n] = True
        return TokenBatch(ids, mask, segments)

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/tokenizer.json``."""
        path = Path(folder) / "tokenizer.json"
        self.tokenizer.save(str(path))
        return path
