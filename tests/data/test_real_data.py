"""The pipeline on the real data sets in ../shared/data (skipped when absent): Multi30k, Tiny
Shakespeare, SST-2. Checks the counts documented in shared/data/README.md."""

import numpy as np
import torch

from qkv.data import (
    BPETokenizer,
    CharTokenizer,
    LabelledDataset,
    PackedTextDataset,
    ParallelDataset,
    load_tokenizer,
    make_loader,
    read_aligned,
)


def test_multi30k_val_bpe_pipeline(shared_data, tmp_path):
    m30k = shared_data / "multi30k"
    de, en = read_aligned(m30k / "val.de.gz", m30k / "val.en.gz")
    assert len(de) == len(en) == 1014
    tok = BPETokenizer.train(de + en, vocab_size=2000)
    tok.save(tmp_path)
    tok = load_tokenizer(tmp_path)
    assert all(tok.decode(tok.encode(line)) == line for line in de + en)
    data = ParallelDataset.from_files(m30k / "val.de.gz", m30k / "val.en.gz", tok)
    loader = make_loader(data, max_tokens=1500, seed=0)
    seen = []
    for batch in loader:
        assert batch.src.numel() <= 1500 and batch.tgt_in.numel() <= 1500
        assert torch.equal(batch.src_mask.sum(1), batch.src_lengths)
        seen += batch.indices.tolist()
    assert sorted(seen) == list(range(1014))
    i = seen[0]
    assert tok.decode(data[i].src) == de[i] and tok.decode(data[i].tgt) == en[i]


def test_tiny_shakespeare_char_blocks(shared_data, tmp_path):
    path = shared_data / "tinyshakespeare" / "input.txt"
    text = path.read_text(encoding="utf-8")
    tok = CharTokenizer.train([text])
    assert tok.vocab_size == 4 + 65
    data = PackedTextDataset.from_files(path, tok, block_size=64, cache_dir=tmp_path)
    assert len(data.ids) == 1_115_394 and data.ids.dtype == np.uint16
    train, val = data.split(0.1)
    assert len(train.ids) == 1_003_854 and len(val.ids) == 111_540  # nanoGPT's 90/10 character split
    assert tok.decode(val.ids[:20].tolist()) == text[1_003_854 : 1_003_854 + 20]
    batch = train.collate([train[0], train[1]])
    assert tok.decode(batch.input[1].tolist()) == text[64:128]


def test_sst2_label_counts(shared_data):
    sst = shared_data / "sst2"
    tok = CharTokenizer.train(path.read_text(encoding="utf-8") for path in sst.iterdir())
    train = LabelledDataset.from_file(sst / "stsa.binary.train", tok)
    dev = LabelledDataset.from_file(sst / "stsa.binary.dev", tok, label_names=train.label_names)
    assert train.label_names == ["0", "1"]
    assert np.bincount(train.labels).tolist() == [3310, 3610]
    assert np.bincount(dev.labels).tolist() == [428, 444]
    first = (sst / "stsa.binary.dev").read_text(encoding="utf-8").split("\n", 1)[0]
    assert tok.decode(dev[0].ids) == first.split(" ", 1)[1]
