"""Training tokenizers on the user's text, and source/target pairs saved beside a checkpoint.

A translation task has a source and a target tokenizer. With a *joint* vocabulary they are one
object, trained on both sides and saved once as ``tokenizer.json``; with separate vocabularies they
are saved as ``source_tokenizer.json`` and ``target_tokenizer.json``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from qkv.data.files import iter_lines
from qkv.data.tokenizers import TOKENIZER_FILE, BPETokenizer, CharTokenizer, Tokenizer, WordTokenizer, load_tokenizer

__all__ = ["TOKENIZER_KINDS", "train_tokenizer", "TokenizerPair", "train_tokenizer_pair", "load_tokenizer_pair"]

TOKENIZER_KINDS = ("char", "word", "bpe")
SOURCE_FILE, TARGET_FILE = "source_tokenizer.json", "target_tokenizer.json"


def _lines(files: Sequence[str | os.PathLike]) -> Iterator[str]:
    for path in files:
        for _, line in iter_lines(path):
            yield line + "\n"


def train_tokenizer(
    kind: str,
    texts: Iterable[str] | None = None,
    *,
    files: Sequence[str | os.PathLike] = (),
    vocab_size: int = 8000,
    min_frequency: int = 2,
) -> Tokenizer:
    """Train a tokenizer of ``kind`` on in-memory ``texts`` and/or text ``files`` (plain or ``.gz``).

    Args:
        kind: ``"char"``, ``"word"`` or ``"bpe"``.
        texts: training strings (lines or documents).
        files: training files, read line by line as strict UTF-8 (errors name the file and line).
        vocab_size: BPE only: total ids, specials included.
        min_frequency: BPE only: least count of a learned merge.

    Raises:
        ValueError: unknown ``kind``, or no training text at all.
    """
    if kind not in TOKENIZER_KINDS:
        raise ValueError(f"tokenizer kind must be one of {TOKENIZER_KINDS}, got {kind!r}")
    corpus = list(texts or []) + list(_lines(files))
    if not any(corpus):
        raise ValueError(f"no training text for the {kind} tokenizer (texts and files are empty)")
    if kind == "char":
        return CharTokenizer.train(corpus)
    if kind == "word":
        return WordTokenizer.train(corpus)
    return BPETokenizer.train(corpus, vocab_size=vocab_size, min_frequency=min_frequency)


@dataclass
class TokenizerPair:
    """Source and target tokenizers of a translation task; ``source is target`` for a joint vocabulary."""

    source: Tokenizer
    target: Tokenizer

    @property
    def joint(self) -> bool:
        """True when source and target share one vocabulary."""
        return self.source is self.target or self.source == self.target

    def save(self, folder: str | os.PathLike) -> list[Path]:
        """Write ``tokenizer.json`` (joint) or ``source_tokenizer.json`` + ``target_tokenizer.json``."""
        if self.joint:
            return [self.source.save(folder)]
        return [self.source.save(folder, name=SOURCE_FILE), self.target.save(folder, name=TARGET_FILE)]


def train_tokenizer_pair(
    source_texts: Sequence[str],
    target_texts: Sequence[str],
    *,
    kind: str = "bpe",
    joint: bool = True,
    vocab_size: int = 8000,
    min_frequency: int = 2,
) -> TokenizerPair:
    """Tokenizers for a parallel corpus: one on both sides (``joint``) or one per side.

    With separate vocabularies each side gets ``vocab_size`` ids.
    """
    if joint:
        tok = train_tokenizer(
            kind, list(source_texts) + list(target_texts), vocab_size=vocab_size, min_frequency=min_frequency
        )
        return TokenizerPair(tok, tok)
    return TokenizerPair(
        train_tokenizer(kind, source_texts, vocab_size=vocab_size, min_frequency=min_frequency),
        train_tokenizer(kind, target_texts, vocab_size=vocab_size, min_frequency=min_frequency),
    )


def load_tokenizer_pair(folder: str | os.PathLike) -> TokenizerPair:
    """Read what :meth:`TokenizerPair.save` wrote; a lone ``tokenizer.json`` gives a joint pair."""
    folder = Path(folder)
    if (folder / SOURCE_FILE).is_file() and (folder / TARGET_FILE).is_file():
        return TokenizerPair(load_tokenizer(folder, name=SOURCE_FILE), load_tokenizer(folder, name=TARGET_FILE))
    if (folder / TOKENIZER_FILE).is_file():
        tok = load_tokenizer(folder)
        return TokenizerPair(tok, tok)
    raise FileNotFoundError(f"no {TOKENIZER_FILE} (or {SOURCE_FILE} + {TARGET_FILE}) in {folder}")
