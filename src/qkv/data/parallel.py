"""Parallel (translation) corpora: two aligned files, a TSV file, or in-memory pairs.

Notation: B batch, S source length, L target length.

Text is tokenised once when the dataset is built. An example is ``(index, src_ids, tgt_ids)`` with no
special tokens; :meth:`ParallelDataset.collate` adds them: the source gets ``<eos>``, the decoder input
is ``<bos>`` + target and the labels are target + ``<eos>``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from qkv.data.batching import Ragged, Seq2SeqBatch, pad_sequences
from qkv.data.files import iter_lines, read_aligned
from qkv.data.tokenizers import Tokenizer

__all__ = ["Seq2SeqExample", "ParallelDataset", "read_tsv_pairs", "source_batch"]


class Seq2SeqExample(NamedTuple):
    """One tokenised pair, without special tokens."""

    index: int
    src: np.ndarray
    tgt: np.ndarray


def read_tsv_pairs(path: str | os.PathLike, *, src_column: int = 0, tgt_column: int = 1) -> list[tuple[str, str]]:
    """``(source, target)`` pairs from a tab-separated file (plain or ``.gz``), one pair per line.

    Raises:
        ValueError: the file is empty or not UTF-8, or a line lacks the needed columns (named by line).
    """
    need = max(src_column, tgt_column) + 1
    pairs = []
    for n, line in iter_lines(path):
        cols = line.split("\t")
        if len(cols) < need:
            raise ValueError(
                f"{path}: line {n} has {len(cols)} tab-separated column(s), expected at least {need}: {line[:80]!r}"
            )
        pairs.append((cols[src_column], cols[tgt_column]))
    if not pairs:
        raise ValueError(f"{path} is empty: expected tab-separated source/target pairs")
    return pairs


class ParallelDataset:
    """Tokenised sentence pairs for sequence-to-sequence training.

    Attributes:
        src, tgt: :class:`~qkv.data.batching.Ragged` token ids.
        lengths: ``(N,)`` int64, ``max(len(src) + 1, len(tgt) + 1)``: the padded cost used for batching.
        num_skipped: pairs left out by ``max_len``.
    """

    def __init__(
        self,
        src_ids: Sequence[Sequence[int]],
        tgt_ids: Sequence[Sequence[int]],
        *,
        pad_id: int = 0,
        bos_id: int = 1,
        eos_id: int = 2,
        max_len: int | None = None,
    ) -> None:
        """Build from token ids.

        Args:
            src_ids, tgt_ids: N aligned id sequences, without special tokens.
            pad_id, bos_id, eos_id: the tokenizers' special ids.
            max_len: leave out pairs whose source or target has more than ``max_len`` tokens.
        """
        if len(src_ids) != len(tgt_ids):
            raise ValueError(f"got {len(src_ids)} source sequences but {len(tgt_ids)} target sequences")
        if max_len is not None:
            keep = [i for i in range(len(src_ids)) if len(src_ids[i]) <= max_len and len(tgt_ids[i]) <= max_len]
            self.num_skipped = len(src_ids) - len(keep)
            src_ids, tgt_ids = [src_ids[i] for i in keep], [tgt_ids[i] for i in keep]
        else:
            self.num_skipped = 0
        self.src, self.tgt = Ragged(src_ids), Ragged(tgt_ids)
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.lengths = np.maximum(self.src.lengths, self.tgt.lengths) + 1

    @classmethod
    def from_pairs(
        cls,
        pairs: Sequence[tuple[str, str]],
        src_tokenizer: Tokenizer,
        tgt_tokenizer: Tokenizer | None = None,
        *,
        max_len: int | None = None,
    ) -> ParallelDataset:
        """Tokenise ``(source, target)`` strings. ``tgt_tokenizer`` defaults to ``src_tokenizer`` (joint)."""
        if not pairs:
            raise ValueError("no pairs given: a parallel dataset needs at least one (source, target) pair")
        tgt_tokenizer = tgt_tokenizer or src_tokenizer
        src = src_tokenizer.encode_batch([s for s, _ in pairs])
        tgt = tgt_tokenizer.encode_batch([t for _, t in pairs])
        _check_specials(src_tokenizer, tgt_tokenizer)
        return cls(
            src, tgt, pad_id=tgt_tokenizer.pad_id, bos_id=tgt_tokenizer.bos_id, eos_id=tgt_tokenizer.eos_id,
            max_len=max_len,
        )

    @classmethod
    def from_files(
        cls,
        src_path: str | os.PathLike,
        tgt_path: str | os.PathLike,
        src_tokenizer: Tokenizer,
        tgt_tokenizer: Tokenizer | None = None,
        *,
        max_len: int | None = None,
    ) -> ParallelDataset:
        """Two line-aligned files (``train.de``, ``train.en``; plain or ``.gz``).

        Raises:
            ValueError: empty file, invalid UTF-8 (file and line named), or different line counts.
        """
        src, tgt = read_aligned(src_path, tgt_path)
        return cls.from_pairs(list(zip(src, tgt, strict=True)), src_tokenizer, tgt_tokenizer, max_len=max_len)

    @classmethod
    def from_tsv(
        cls,
        path: str | os.PathLike,
        src_tokenizer: Tokenizer,
        tgt_tokenizer: Tokenizer | None = None,
        *,
        max_len: int | None = None,
    ) -> ParallelDataset:
        """A TSV file with the source in column 0 and the target in column 1."""
        return cls.from_pairs(read_tsv_pairs(path), src_tokenizer, tgt_tokenizer, max_len=max_len)

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i: int) -> Seq2SeqExample:
        return Seq2SeqExample(int(i), self.src[i], self.tgt[i])

    def collate(self, examples: list[Seq2SeqExample]) -> Seq2SeqBatch:
        """Pad a list of examples into a :class:`~qkv.data.batching.Seq2SeqBatch`."""
        src, src_mask, src_len = pad_sequences([e.src for e in examples], pad_id=self.pad_id, suffix=self.eos_id)
        tgt = [e.tgt for e in examples]
        tgt_in, tgt_mask, tgt_len = pad_sequences(tgt, pad_id=self.pad_id, prefix=self.bos_id)
        tgt_out, _, _ = pad_sequences(tgt, pad_id=self.pad_id, suffix=self.eos_id)
        return Seq2SeqBatch(
            src=src,
            src_mask=src_mask,
            tgt_in=tgt_in,
            tgt_out=tgt_out,
            tgt_mask=tgt_mask,
            src_lengths=src_len,
            tgt_lengths=tgt_len,
            indices=torch.tensor([e.index for e in examples], dtype=torch.long),
        )


def _check_specials(a: Tokenizer, b: Tokenizer) -> None:
    ids_a = (a.pad_id, a.bos_id, a.eos_id)
    ids_b = (b.pad_id, b.bos_id, b.eos_id)
    if ids_a != ids_b:
        raise ValueError(f"source and target special ids (pad, bos, eos) differ: {ids_a} vs {ids_b}")


def source_batch(texts: Sequence[str], tokenizer: Tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode source sentences for inference exactly as :meth:`ParallelDataset.collate` does for training.

    Returns:
        ``src (B, S)`` long (ids + ``<eos>``, right-padded) and ``src_mask (B, S)`` bool, True = real.
    """
    if not texts:
        raise ValueError("no source texts given")
    src, mask, _ = pad_sequences(tokenizer.encode_batch(list(texts)), pad_id=tokenizer.pad_id, suffix=tokenizer.eos_id)
    return src, mask
