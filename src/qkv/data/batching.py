"""Batches, collate functions, batch samplers and the DataLoader factory.

Notation: B batch, S source length, L target (or block) length.

Masks follow qkv's convention: ``(B, S)`` bool, True = real token (pad = False), built with
:func:`qkv.functional.masks.padding_mask` and squeezed from its ``(B, 1, 1, S)`` layout.

Batch samplers are deterministic: epoch ``e`` of a sampler built with ``seed`` always yields the
same batches (``numpy.random.default_rng([seed, e])``), independent of worker count. Call
``set_epoch(e)`` before each epoch (``skip=k`` resumes after the first ``k`` batches).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from qkv.functional.masks import padding_mask

__all__ = [
    "Ragged",
    "Seq2SeqBatch",
    "LMBatch",
    "ClassificationBatch",
    "pad_sequences",
    "TokenBudgetBatchSampler",
    "FixedSizeBatchSampler",
    "EpochDataLoader",
    "make_loader",
]


class Ragged:
    """Many int sequences stored flat (one numpy array + offsets): compact, cheap to send to workers."""

    def __init__(self, seqs: Sequence[Sequence[int]], *, dtype: Any = np.int32) -> None:
        self.offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        np.cumsum([len(s) for s in seqs], out=self.offsets[1:])
        self.flat = np.fromiter((t for s in seqs for t in s), dtype=dtype, count=int(self.offsets[-1]))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.flat[self.offsets[i] : self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        """``(N,)`` int64 sequence lengths."""
        return np.diff(self.offsets)


class _Batch:
    """Device moves and pinning for the tensor fields of a batch dataclass."""

    def to(self, device: torch.device | str, *, non_blocking: bool = False):
        """A copy with every tensor on ``device``."""
        moved = {f.name: getattr(self, f.name).to(device, non_blocking=non_blocking) for f in dataclasses.fields(self)}
        return dataclasses.replace(self, **moved)

    def pin_memory(self):
        """Called by ``DataLoader(pin_memory=True)``."""
        pinned = {f.name: getattr(self, f.name).pin_memory() for f in dataclasses.fields(self)}
        return dataclasses.replace(self, **pinned)

    def __len__(self) -> int:
        return len(self.indices)  # type: ignore[attr-defined]


@dataclass
class Seq2SeqBatch(_Batch):
    """A translation batch. Pads are ``pad_id`` in ``src``/``tgt_in``/``tgt_out``.

    Attributes:
        src: ``(B, S)`` long, source ids followed by ``<eos>``.
        src_mask: ``(B, S)`` bool, True = real token.
        tgt_in: ``(B, L)`` long, ``<bos>`` + target ids (decoder input).
        tgt_out: ``(B, L)`` long, target ids + ``<eos>`` (labels; use ``ignore_index=pad_id``).
        tgt_mask: ``(B, L)`` bool, True = real token (same for ``tgt_in`` and ``tgt_out``).
        src_lengths: ``(B,)`` long, real tokens per source row.
        tgt_lengths: ``(B,)`` long, real tokens per target row.
        indices: ``(B,)`` long, example indices in the dataset (to restore order after bucketing).
    """

    src: torch.Tensor
    src_mask: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor
    tgt_mask: torch.Tensor
    src_lengths: torch.Tensor
    tgt_lengths: torch.Tensor
    indices: torch.Tensor

    @property
    def num_tokens(self) -> int:
        """Real target tokens (the loss normaliser)."""
        return int(self.tgt_lengths.sum())


@dataclass
class LMBatch(_Batch):
    """A language-model batch: ``target[:, t] = input[:, t + 1]`` in the packed token stream.

    Attributes:
        input: ``(B, L)`` long.
        target: ``(B, L)`` long.
        indices: ``(B,)`` long block indices.
    """

    input: torch.Tensor
    target: torch.Tensor
    indices: torch.Tensor

    @property
    def num_tokens(self) -> int:
        """Predicted tokens in the batch."""
        return self.target.numel()


@dataclass
class ClassificationBatch(_Batch):
    """A labelled-text batch.

    Attributes:
        ids: ``(B, S)`` long, ``<bos>`` + text ids, padded with ``pad_id``.
        mask: ``(B, S)`` bool, True = real token.
        labels: ``(B,)`` long class ids.
        lengths: ``(B,)`` long.
        indices: ``(B,)`` long example indices.
    """

    ids: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor
    lengths: torch.Tensor
    indices: torch.Tensor


def pad_sequences(
    seqs: Sequence[Sequence[int] | np.ndarray],
    *,
    pad_id: int,
    prefix: int | None = None,
    suffix: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad sequences into one tensor, optionally adding a token before/after each.

    Args:
        seqs: B integer sequences.
        pad_id: fill value.
        prefix: token put before every sequence (e.g. ``bos_id``), or None.
        suffix: token put after every sequence (e.g. ``eos_id``), or None.

    Returns:
        ``ids (B, S)`` long, ``mask (B, S)`` bool (True = real), ``lengths (B,)`` long.
    """
    extra = (prefix is not None) + (suffix is not None)
    lengths = torch.tensor([len(s) + extra for s in seqs], dtype=torch.long)
    S = int(lengths.max()) if len(seqs) else 0
    ids = torch.full((len(seqs), S), pad_id, dtype=torch.long)
    start = int(prefix is not None)
    for b, s in enumerate(seqs):
        n = len(s)
        if prefix is not None:
            ids[b, 0] = prefix
        ids[b, start : start + n] = torch.as_tensor(np.asarray(s, dtype=np.int64))
        if suffix is not None:
            ids[b, start + n] = suffix
    mask = padding_mask(lengths, max_len=S)[:, 0, 0, :]  # (B, 1, 1, S) -> (B, S)
    return ids, mask, lengths


def _split_for_replicas(batches: list[list[int]], num_replicas: int, rank: int) -> list[list[int]]:
    """Every rank gets the same number of batches: pad by cycling from the start, then stride."""
    if num_replicas == 1 or not batches:
        return batches
    need = -len(batches) % num_replicas
    padded = batches + [batches[i % len(batches)] for i in range(need)]
    return padded[rank::num_replicas]


class _EpochBatchSampler(Sampler[list[int]]):
    """Shared epoch/skip/replica bookkeeping; subclasses implement ``_make(rng)``."""

    def __init__(self, *, shuffle: bool, seed: int, num_replicas: int, rank: int) -> None:
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas=}, {rank=}")
        self.shuffle, self.seed, self.num_replicas, self.rank = shuffle, seed, num_replicas, rank
        self.epoch, self.skip = 0, 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int, *, skip: int = 0) -> None:
        """Select the epoch's batch order; ``skip`` drops its first batches (resume mid-epoch)."""
        if skip < 0:
            raise ValueError(f"skip must be >= 0, got {skip}")
        self.epoch, self.skip = epoch, skip

    def _make(self, rng: np.random.Generator | None) -> list[list[int]]:
        raise NotImplementedError

    def batches(self) -> list[list[int]]:
        """This rank's batches for the current epoch, before ``skip``."""
        if self._cache is None or self._cache[0] != self.epoch:
            rng = np.random.default_rng([self.seed, self.epoch]) if self.shuffle else None
            self._cache = (self.epoch, _split_for_replicas(self._make(rng), self.num_replicas, self.rank))
        return self._cache[1]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()[self.skip :]

    def __len__(self) -> int:
        return max(0, len(self.batches()) - self.skip)


class TokenBudgetBatchSampler(_EpochBatchSampler):
    """Length-bucketed batches holding at most ``max_tokens`` padded tokens each.

    Examples are sorted by length (ties broken at random per epoch when shuffling), cut greedily into
    batches with ``batch_size * longest <= max_tokens``, and the batch order is shuffled. One epoch
    covers every example exactly once (with ``num_replicas > 1``, a few batches repeat so that every
    rank gets the same count).

    Args:
        lengths: ``(N,)`` cost of each example in tokens (for pairs, the longer side).
        max_tokens: padded-token budget per batch.
        shuffle: random tie-breaks and batch order per epoch; False keeps a fixed sorted order.
        seed: base seed; epoch ``e`` uses ``default_rng([seed, e])``.
        max_batch_size: optional cap on examples per batch.
        num_replicas: data-parallel world size; rank: this process's rank.

    Raises:
        ValueError: an example longer than ``max_tokens`` (its index and length are named).
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        max_tokens: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        max_batch_size: int | None = None,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(shuffle=shuffle, seed=seed, num_replicas=num_replicas, rank=rank)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if self.lengths.ndim != 1:
            raise ValueError(f"lengths must be 1-D, got shape {self.lengths.shape}")
        if max_tokens < 1 or (max_batch_size is not None and max_batch_size < 1):
            raise ValueError(f"max_tokens and max_batch_size must be >= 1, got {max_tokens=}, {max_batch_size=}")
        if len(self.lengths) and int(self.lengths.max()) > max_tokens:
            i = int(self.lengths.argmax())
            raise ValueError(
                f"example {i} has {int(self.lengths[i])} tokens, more than max_tokens={max_tokens}; "
                "raise max_tokens or filter long examples (max_len=)"
            )
        self.max_tokens, self.max_batch_size = max_tokens, max_batch_size

    def _make(self, rng: np.random.Generator | None) -> list[list[int]]:
        n = len(self.lengths)
        if rng is None:
            order = np.argsort(self.lengths, kind="stable")
        else:
            order = np.lexsort((rng.permutation(n), self.lengths))  # by length, random tie-break
        cap = self.max_batch_size or n
        batches: list[list[int]] = []
        batch: list[int] = []
        longest = 0
        for i in order.tolist():
            l = max(int(self.lengths[i]), 1)
            if batch and ((len(batch) + 1) * max(longest, l) > self.max_tokens or len(batch) >= cap):
                batches.append(batch)
                batch, longest = [], 0
            batch.append(i)
            longest = max(longest, l)
        if batch:
            batches.append(batch)
        if rng is not None:
            batches = [batches[j] for j in rng.permutation(len(batches))]
        return batches


class FixedSizeBatchSampler(_EpochBatchSampler):
    """Batches of ``batch_size`` examples in a seeded random (or sequential) order.

    Args:
        num_examples: dataset size N.
        batch_size: examples per batch; the last batch may be smaller unless ``drop_last``.
        shuffle, seed, num_replicas, rank: as in :class:`TokenBudgetBatchSampler`.
        drop_last: drop a final incomplete batch.
    """

    def __init__(
        self,
        num_examples: int,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(shuffle=shuffle, seed=seed, num_replicas=num_replicas, rank=rank)
        if batch_size < 1 or num_examples < 0:
            raise ValueError(f"need batch_size >= 1 and num_examples >= 0, got {batch_size=}, {num_examples=}")
        self.num_examples, self.batch_size, self.drop_last = num_examples, batch_size, drop_last

    def _make(self, rng: np.random.Generator | None) -> list[list[int]]:
        n = self.num_examples
        order = (rng.permutation(n) if rng is not None else np.arange(n)).tolist()
        stop = n - n % self.batch_size if self.drop_last else n
        return [order[i : i + self.batch_size] for i in range(0, stop, self.batch_size)]


class BatchableDataset(Protocol):
    """What :func:`make_loader` needs from a dataset."""

    lengths: np.ndarray

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> Any: ...

    def collate(self, examples: list[Any]) -> Any: ...


class EpochDataLoader(DataLoader):
    """A ``DataLoader`` whose ``set_epoch(epoch, skip=0)`` reaches its qkv batch sampler.

    Trainers that call ``train_data.set_epoch(e)`` before each pass get a new, reproducible order.
    """

    def set_epoch(self, epoch: int, *, skip: int = 0) -> None:
        """Select epoch ``epoch``'s batch order, starting after its first ``skip`` batches."""
        self.batch_sampler.set_epoch(epoch, skip=skip)  # type: ignore[union-attr]


def make_loader(
    dataset: BatchableDataset,
    *,
    max_tokens: int | None = None,
    batch_size: int | None = None,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
    num_replicas: int = 1,
    rank: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> EpochDataLoader:
    """A ``DataLoader`` over a qkv dataset, batching by token budget or by count.

    Exactly one of ``max_tokens`` / ``batch_size`` must be given. Call ``loader.set_epoch(epoch)``
    before each epoch (without it every pass repeats epoch 0's order).

    Returns:
        :class:`EpochDataLoader` yielding the dataset's batch type (:class:`Seq2SeqBatch`,
        :class:`LMBatch`, :class:`ClassificationBatch`).
    """
    if (max_tokens is None) == (batch_size is None):
        raise ValueError(f"give exactly one of max_tokens ({max_tokens}) and batch_size ({batch_size})")
    sampler: _EpochBatchSampler
    if max_tokens is not None:
        sampler = TokenBudgetBatchSampler(
            dataset.lengths, max_tokens, shuffle=shuffle, seed=seed, num_replicas=num_replicas, rank=rank
        )
    else:
        assert batch_size is not None
        sampler = FixedSizeBatchSampler(
            len(dataset), batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last,
            num_replicas=num_replicas, rank=rank,
        )
    return EpochDataLoader(
        dataset,  # type: ignore[arg-type]
        batch_sampler=sampler,
        collate_fn=collate_fn or dataset.collate,
        generator=torch.Generator().manual_seed(seed),  # not the global one: iterating draws a worker seed
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
