"""Monolingual text for language modelling: tokenised once, packed into blocks, cached as ``.npy``.

Notation: B batch, L block length (``block_size``).

The corpus becomes one stream of token ids. Block ``i`` is ``ids[i * stride : i * stride + L + 1]``;
its first ``L`` ids are the input and its last ``L`` the target, so with ``stride == L`` (the default)
every token after the first is predicted exactly once per epoch. With a ``cache_dir`` the stream is
saved as ``<name>.<hash>.npy`` (the hash covers the input bytes and the tokenizer) and reopened
memory-mapped, so a second run skips tokenisation and workers share the pages.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from qkv.data.batching import LMBatch
from qkv.data.files import atomic_open, fingerprint, read_text
from qkv.data.tokenizers import Tokenizer

__all__ = ["BlockExample", "PackedTextDataset", "encode_text", "encode_files"]


class BlockExample(NamedTuple):
    """One block of ``block_size + 1`` ids."""

    index: int
    ids: np.ndarray


def _stream_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


def encode_text(text: str, tokenizer: Tokenizer) -> np.ndarray:
    """Token ids of ``text`` as a 1-D array (uint16 when the vocabulary fits, else int32).

    The text is encoded line by line (line endings kept), which is exact for character and word
    tokenizers and lets BPE encode lines in parallel (merges never cross a line end).
    """
    lines = text.splitlines(keepends=True)
    dtype = _stream_dtype(tokenizer.vocab_size)
    parts = [np.asarray(ids, dtype=dtype) for ids in tokenizer.encode_batch(lines)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


def encode_files(
    paths: Sequence[str | os.PathLike],
    tokenizer: Tokenizer,
    *,
    cache_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """Tokenise text files into one id stream, with ``<eos>`` between files.

    Args:
        paths: text files (plain or ``.gz``), read as strict UTF-8.
        tokenizer: any qkv tokenizer.
        cache_dir: where to keep ``<first-name>.<hash>.npy``; reused (memory-mapped) when present.

    Returns:
        ``(N,)`` uint16/int32 ids (a read-only memory map when cached).

    Raises:
        ValueError: an empty or non-UTF-8 file (named, with the line).
    """
    if not paths:
        raise ValueError("no text files given")
    cache = None
    if cache_dir is not None:
        key = fingerprint(paths, tokenizer.to_json(), "qkv.text.v1")
        cache = Path(cache_dir) / f"{Path(paths[0]).name}.{key}.npy"
        if cache.is_file():
            return np.load(cache, mmap_mode="r", allow_pickle=False)
    eos = np.asarray([tokenizer.eos_id], dtype=_stream_dtype(tokenizer.vocab_size))
    parts: list[np.ndarray] = []
    for i, p in enumerate(paths):
        if i:
            parts.append(eos)
        parts.append(encode_text(read_text(p), tokenizer))
    ids = np.concatenate(parts)
    if cache is None:
        return ids
    _save_npy_atomic(cache, ids)
    return np.load(cache, mmap_mode="r", allow_pickle=False)


class PackedTextDataset:
    """Fixed-length blocks over a token stream for next-token prediction.

    Attributes:
        ids: the ``(N,)`` token stream (numpy, possibly memory-mapped).
        block_size: L, input length of each example.
        stride: distance between block starts.
        lengths: ``(num_blocks,)`` all equal to ``block_size`` (for token-budget batching).
    """

    def __init__(self, ids: np.ndarray, block_size: int, *, stride: int | None = None) -> None:
        stride = block_size if stride is None else stride
        if block_size < 1 or stride < 1:
            raise ValueError(f"block_size and stride must be >= 1, got {block_size=}, {stride=}")
        if ids.ndim != 1:
            raise ValueError(f"ids must be a 1-D token stream, got shape {ids.shape}")
        if len(ids) < block_size + 1:
            raise ValueError(
                f"the text has {len(ids)} tokens, fewer than block_size + 1 = {block_size + 1}: "
                "use more text or a smaller block_size"
            )
        self.ids, self.block_size, self.stride = ids, block_size, stride
        self.lengths = np.full(len(self), block_size, dtype=np.int64)

    @classmethod
    def from_text(cls, text: str, tokenizer: Tokenizer, block_size: int, *, stride: int | None = None):
        """Tokenise an in-memory string."""
        return cls(encode_text(text, tokenizer), block_size, stride=stride)

    @classmethod
    def from_files(
        cls,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        tokenizer: Tokenizer,
        block_size: int,
        *,
        stride: int | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> PackedTextDataset:
        """Tokenise (or reload from ``cache_dir``) one or more text files. See :func:`encode_files`."""
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        return cls(encode_files(paths, tokenizer, cache_dir=cache_dir), block_size, stride=stride)

    def split(self, val_fraction: float = 0.1) -> tuple[PackedTextDataset, PackedTextDataset]:
        """Train on the first ``1 - val_fraction`` of the tokens, validate on the rest (nanoGPT's split).

        The cut is at a token boundary, so for a character tokenizer it is nanoGPT's 90/10 split of
        characters (no ``<eos>`` inside the file).
        """
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        cut = int(len(self.ids) * (1.0 - val_fraction))
        return (
            PackedTextDataset(self.ids[:cut], self.block_size, stride=self.stride),
            PackedTextDataset(self.ids[cut:], self.block_size, stride=self.stride),
        )

    def __len__(self) -> int:
        return (len(self.ids) - self.block_size - 1) // self.stride + 1

    def __getitem__(self, i: int) -> BlockExample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"block {i} out of range for {len(self)} blocks")
        i = i % len(self)
        start = i * self.stride
        return BlockExample(i, np.asarray(self.ids[start : start + self.block_size + 1]))

    def collate(self, examples: list[BlockExample]) -> LMBatch:
        """Stack blocks into an :class:`~qkv.data.batching.LMBatch`."""
        blocks = torch.from_numpy(np.stack([e.ids for e in examples]).astype(np.int64))  # (B, L + 1)
        return LMBatch(
            input=blocks[:, :-1].contiguous(),  # (B, L)
            target=blocks[:, 1:].contiguous(),  # (B, L)
            indices=torch.tensor([e.index for e in examples], dtype=torch.long),
        )
