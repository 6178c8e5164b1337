"""Batch samplers (token budget, fixed size), padding, masks, DataLoader with workers."""

import numpy as np
import pytest
import torch

from qkv.data.batching import FixedSizeBatchSampler, Ragged, TokenBudgetBatchSampler, make_loader, pad_sequences
from qkv.data.parallel import ParallelDataset
from qkv.functional.masks import padding_mask


def random_lengths(n=500, seed=0):
    return np.random.default_rng(seed).integers(1, 60, size=n)


def test_ragged():
    r = Ragged([[1, 2, 3], [], [4]])
    assert len(r) == 3 and r.lengths.tolist() == [3, 0, 1]
    assert r[0].tolist() == [1, 2, 3] and r[1].tolist() == [] and r[2].tolist() == [4]


def test_pad_sequences_and_mask():
    ids, mask, lengths = pad_sequences([[5, 6, 7], [8]], pad_id=0, prefix=1, suffix=2)
    assert ids.tolist() == [[1, 5, 6, 7, 2], [1, 8, 2, 0, 0]]
    assert lengths.tolist() == [5, 3] and ids.dtype == torch.long and mask.dtype == torch.bool
    assert mask.tolist() == [[True] * 5, [True, True, True, False, False]]
    assert torch.equal(mask, padding_mask(ids, pad_id=0)[:, 0, 0])


@pytest.mark.parametrize("shuffle", [True, False])
def test_token_budget_covers_every_example_once(shuffle):
    lengths = random_lengths()
    sampler = TokenBudgetBatchSampler(lengths, max_tokens=300, shuffle=shuffle, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(lengths)))
        for b in batches:
            assert len(b) * lengths[b].max() <= 300
    # bucketing: a batch's examples have similar lengths (sorted order cut into runs)
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    assert spread <= 3, spread


def test_token_budget_is_deterministic_and_varies_by_epoch():
    lengths = random_lengths()
    a = TokenBudgetBatchSampler(lengths, 300, seed=7)
    b = TokenBudgetBatchSampler(lengths, 300, seed=7)
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b)
    epoch1 = list(a)
    a.set_epoch(2)
    assert list(a) != epoch1
    c = TokenBudgetBatchSampler(lengths, 300, seed=8)
    c.set_epoch(1)
    assert list(c) != epoch1


def test_skip_resumes_mid_epoch():
    sampler = TokenBudgetBatchSampler(random_lengths(), 300, seed=1)
    sampler.set_epoch(4)
    full = list(sampler)
    sampler.set_epoch(4, skip=5)
    assert list(sampler) == full[5:] and len(sampler) == len(full) - 5


def test_max_batch_size_and_too_long_example():
    lengths = [3] * 50
    sampler = TokenBudgetBatchSampler(lengths, max_tokens=1000, max_batch_size=8)
    assert max(len(b) for b in sampler) == 8
    with pytest.raises(ValueError, match="example 2 has 40 tokens, more than max_tokens=30"):
        TokenBudgetBatchSampler([3, 5, 40, 7], max_tokens=30)


def test_replicas_partition_batches():
    lengths = random_lengths(n=101)
    ranks = [TokenBudgetBatchSampler(lengths, 200, seed=0, num_replicas=3, rank=r) for r in range(3)]
    per_rank = [list(s) for s in ranks]
    assert len({len(b) for b in per_rank}) == 1  # same count on every rank
    seen = [i for batches in per_rank for b in batches for i in b]
    assert set(seen) == set(range(101))  # everything covered; at most a few batches repeat
    with pytest.raises(ValueError, match="rank=3"):
        TokenBudgetBatchSampler(lengths, 200, num_replicas=3, rank=3)


def test_fixed_size_sampler():
    s = FixedSizeBatchSampler(10, 4, seed=0)
    batches = list(s)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(i for b in batches for i in b) == list(range(10))
    s = FixedSizeBatchSampler(10, 4, shuffle=False, drop_last=True)
    assert list(s) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def toy_parallel(n=200, seed=0):
    rng = np.random.default_rng(seed)
    src = [rng.integers(4, 20, size=rng.integers(0, 12)).tolist() for _ in range(n)]
    tgt = [rng.integers(4, 20, size=rng.integers(0, 15)).tolist() for _ in range(n)]
    return ParallelDataset(src, tgt), src, tgt


def test_loader_with_workers_matches_single_process():
    data, _, _ = toy_parallel()
    runs = []
    for workers in (0, 2):
        loader = make_loader(data, max_tokens=64, seed=5, num_workers=workers)
        loader.set_epoch(2)
        runs.append([(b.indices.tolist(), b.src.tolist(), b.tgt_out.tolist()) for b in loader])
    assert runs[0] == runs[1]
    assert sorted(i for idx, _, _ in runs[0] for i in idx) == list(range(len(data)))
    loader.set_epoch(3)
    assert [b.indices.tolist() for b in loader] != [idx for idx, _, _ in runs[0]]


def test_make_loader_arguments():
    data, _, _ = toy_parallel(10)
    with pytest.raises(ValueError, match=r"exactly one of max_tokens \(None\) and batch_size \(None\)"):
        make_loader(data)
    loader = make_loader(data, batch_size=4, shuffle=False)
    assert [len(b) for b in loader] == [4, 4, 2]


def test_batch_to_device_keeps_fields():
    data, _, _ = toy_parallel(5)
    batch = data.collate([data[i] for i in range(5)])
    moved = batch.to("cpu")
    assert type(moved) is type(batch) and torch.equal(moved.src, batch.src)
