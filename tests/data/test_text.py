"""Language-model data: packing into blocks, shifted targets, caching as .npy, splits."""

import numpy as np
import pytest

from qkv.data.batching import make_loader
from qkv.data.text import PackedTextDataset, encode_files, encode_text
from qkv.data.tokenizers import BPETokenizer, CharTokenizer

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 3


def test_blocks_shift_by_one():
    tok = CharTokenizer.train([TEXT])
    data = PackedTextDataset.from_text(TEXT, tok, block_size=16)
    ids = encode_text(TEXT, tok)
    assert ids.tolist() == tok.encode(TEXT)
    assert len(data) == (len(TEXT) - 1) // 16
    batch = data.collate([data[0], data[3]])
    assert batch.input.shape == batch.target.shape == (2, 16)
    assert tok.decode(batch.input[0].tolist()) == TEXT[:16]
    assert tok.decode(batch.target[0].tolist()) == TEXT[1:17]
    assert tok.decode(batch.input[1].tolist()) == TEXT[48:64]
    # every token after the first is a target exactly once
    targets = np.concatenate([data[i].ids[1:] for i in range(len(data))])
    assert targets.tolist() == ids[1 : 1 + 16 * len(data)].tolist()


def test_stride_overlap():
    tok = CharTokenizer.train([TEXT])
    data = PackedTextDataset.from_text(TEXT, tok, block_size=8, stride=4)
    assert len(data) == (len(TEXT) - 9) // 4 + 1
    assert data[1].ids.tolist() == tok.encode(TEXT[4:13])
    with pytest.raises(IndexError, match="out of range"):
        data[len(data)]


def test_bpe_encoding_by_line_round_trips(unicode_lines):
    text = "\n".join(unicode_lines) + "\n"
    tok = BPETokenizer.train(unicode_lines, vocab_size=280, min_frequency=1)
    ids = encode_text(text, tok)
    assert ids.dtype == np.uint16 and tok.decode(ids.tolist()) == text


def test_cache_is_written_and_reused(tmp_path):
    src = tmp_path / "input.txt"
    src.write_text(TEXT, encoding="utf-8")
    tok = CharTokenizer.train([TEXT])
    cache = tmp_path / "cache"
    first = encode_files([src], tok, cache_dir=cache)
    files = list(cache.glob("input.txt.*.npy"))
    assert len(files) == 1 and isinstance(first, np.memmap)
    mtime = files[0].stat().st_mtime_ns
    again = PackedTextDataset.from_files(src, tok, 16, cache_dir=cache)
    assert files[0].stat().st_mtime_ns == mtime  # reused, not rewritten
    assert again.ids.tolist() == tok.encode(TEXT)
    # a different tokenizer or different text gives a different cache file
    encode_files([src], CharTokenizer.train([TEXT + "#"]), cache_dir=cache)
    src.write_text(TEXT + "more", encoding="utf-8")
    encode_files([src], tok, cache_dir=cache)
    assert len(list(cache.glob("*.npy"))) == 3
    assert not list(cache.glob(".*tmp"))


def test_multiple_files_separated_by_eos(tmp_path):
    (tmp_path / "a.txt").write_text("abc", encoding="utf-8")
    (tmp_path / "b.txt").write_text("cab", encoding="utf-8")
    tok = CharTokenizer.train(["abc"])
    ids = encode_files([tmp_path / "a.txt", tmp_path / "b.txt"], tok)
    assert ids.tolist() == tok.encode("abc") + [tok.eos_id] + tok.encode("cab")


def test_split_and_loader():
    tok = CharTokenizer.train([TEXT])
    data = PackedTextDataset.from_text(TEXT, tok, block_size=8)
    train, val = data.split(0.1)
    cut = int(len(data.ids) * 0.9)
    assert len(train.ids) == cut and len(val.ids) == len(data.ids) - cut
    loader = make_loader(train, batch_size=4, seed=0)
    n = sum(len(b) for b in loader)
    assert n == len(train)
    with pytest.raises(ValueError, match="val_fraction must be in"):
        data.split(1.0)


def test_too_short_text():
    tok = CharTokenizer.train(["abc"])
    with pytest.raises(ValueError, match="the text has 3 tokens, fewer than block_size \\+ 1 = 9"):
        PackedTextDataset.from_text("abc", tok, block_size=8)
