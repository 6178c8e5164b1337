"""Parallel corpora: special tokens in the right places, masks, filtering, files and TSV."""

import gzip

import pytest
import torch

from qkv.data.parallel import ParallelDataset, read_tsv_pairs, source_batch
from qkv.data.tokenizers import CharTokenizer


@pytest.fixture
def tok():
    return CharTokenizer.train(["abcdefghijklmnopqrstuvwxyz äöüß"])


def test_collate_layout(tok):
    data = ParallelDataset.from_pairs([("abc", "xy"), ("a", "wxyz")], tok)
    batch = data.collate([data[0], data[1]])
    a, b, c = tok.encode("abc")
    w, x, y, z = tok.encode("wxyz")
    pad, bos, eos = tok.pad_id, tok.bos_id, tok.eos_id
    assert batch.src.tolist() == [[a, b, c, eos], [a, eos, pad, pad]]
    assert batch.tgt_in.tolist() == [[bos, x, y, pad, pad], [bos, w, x, y, z]]
    assert batch.tgt_out.tolist() == [[x, y, eos, pad, pad], [w, x, y, z, eos]]
    assert batch.src_lengths.tolist() == [4, 2] and batch.tgt_lengths.tolist() == [3, 5]
    assert batch.src_mask.tolist() == [[True] * 4, [True, True, False, False]]
    assert torch.equal(batch.tgt_mask, batch.tgt_out != pad)
    assert batch.num_tokens == 8 and batch.indices.tolist() == [0, 1]
    assert data.lengths.tolist() == [4, 5]


def test_masks_match_lengths_on_random_batches(tok):
    pairs = [("ab" * (i % 7), "xyz" * (i % 5)) for i in range(40)]
    data = ParallelDataset.from_pairs(pairs, tok)
    batch = data.collate([data[i] for i in range(40)])
    assert torch.equal(batch.src_mask.sum(1), batch.src_lengths)
    assert torch.equal(batch.src_mask, batch.src != tok.pad_id)
    assert torch.equal(batch.tgt_mask.sum(1), batch.tgt_lengths)
    # decoding the labels gives the targets back
    for i, (_, tgt) in enumerate(pairs):
        assert tok.decode(batch.tgt_out[i].tolist()) == tgt


def test_max_len_filters(tok):
    data = ParallelDataset.from_pairs([("abc", "x"), ("abcdef", "x"), ("a", "xyzxyz")], tok, max_len=4)
    assert len(data) == 1 and data.num_skipped == 2


def test_separate_tokenizers(tok):
    de = CharTokenizer.train(["äöü"])
    data = ParallelDataset.from_pairs([("äö", "abc")], de, tok)
    ex = data[0]
    assert de.decode(ex.src) == "äö" and tok.decode(ex.tgt) == "abc"


def test_from_files_and_tsv(tmp_path, tok):
    with gzip.open(tmp_path / "train.de.gz", "wt", encoding="utf-8") as f:
        f.write("äb\nc\n")
    (tmp_path / "train.en").write_text("ab\ncd\n", encoding="utf-8")
    data = ParallelDataset.from_files(tmp_path / "train.de.gz", tmp_path / "train.en", tok)
    assert len(data) == 2 and tok.decode(data[1].tgt) == "cd"
    (tmp_path / "pairs.tsv").write_text("ab\tba\ncd\tdc\n", encoding="utf-8")
    data = ParallelDataset.from_tsv(tmp_path / "pairs.tsv", tok)
    assert [tok.decode(data[i].tgt) for i in range(2)] == ["ba", "dc"]


def test_bad_input(tmp_path, tok):
    (tmp_path / "bad.tsv").write_text("ab\tba\nno tab here\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.tsv: line 2 has 1 tab-separated column"):
        read_tsv_pairs(tmp_path / "bad.tsv")
    (tmp_path / "a.de").write_text("x\ny\n", encoding="utf-8")
    (tmp_path / "a.en").write_text("x\n", encoding="utf-8")
    with pytest.raises(ValueError, match="a.de has 2 lines but .*a.en has 1 lines"):
        ParallelDataset.from_files(tmp_path / "a.de", tmp_path / "a.en", tok)
    with pytest.raises(ValueError, match="no pairs given"):
        ParallelDataset.from_pairs([], tok)
    with pytest.raises(ValueError, match="got 2 source sequences but 1 target sequences"):
        ParallelDataset([[4], [5]], [[6]])


def test_source_batch_matches_training_layout(tok):
    texts = ["abc", "a", "zz"]
    data = ParallelDataset.from_pairs([(t, "x") for t in texts], tok)
    batch = data.collate([data[i] for i in range(3)])
    src, mask = source_batch(texts, tok)
    assert torch.equal(src, batch.src) and torch.equal(mask, batch.src_mask)
    with pytest.raises(ValueError, match="no source texts"):
        source_batch([], tok)
