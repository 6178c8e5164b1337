"""Data: tokenizers, datasets, batching and generated tasks. Imports no models (see STYLE.md).

Typical use::

    from qkv.data import ParallelDataset, make_loader, read_aligned, train_tokenizer_pair
    src, tgt = read_aligned("train.de.gz", "train.en.gz")
    toks = train_tokenizer_pair(src, tgt, kind="bpe", vocab_size=8000, joint=True)
    data = ParallelDataset.from_pairs(list(zip(src, tgt)), toks.source, toks.target)
    loader = make_loader(data, max_tokens=4096, seed=0, num_workers=2)
    for epoch in range(10):
        loader.set_epoch(epoch)
        for batch in loader:  # Seq2SeqBatch: src, src_mask, tgt_in, tgt_out, ...
            ...
"""

from qkv.data import synthetic
from qkv.data.batching import (
    ClassificationBatch,
    EpochDataLoader,
    FixedSizeBatchSampler,
    LMBatch,
    Ragged,
    Seq2SeqBatch,
    TokenBudgetBatchSampler,
    make_loader,
    pad_sequences,
)
from qkv.data.files import fingerprint, read_aligned, read_lines, read_text
from qkv.data.labelled import LabelledDataset, infer_label_names, read_labelled, text_batch
from qkv.data.parallel import ParallelDataset, read_tsv_pairs, source_batch
from qkv.data.text import PackedTextDataset, encode_files, encode_text
from qkv.data.tokenizer_pair import (
    TOKENIZER_KINDS,
    TokenizerPair,
    load_tokenizer_pair,
    train_tokenizer,
    train_tokenizer_pair,
)
from qkv.data.tokenizers import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    TOKENIZER_FILE,
    UNK_ID,
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    WordTokenizer,
    load_tokenizer,
)

__all__ = [
    "synthetic",
    "SPECIAL_TOKENS",
    "PAD_ID",
    "BOS_ID",
    "EOS_ID",
    "UNK_ID",
    "TOKENIZER_FILE",
    "Tokenizer",
    "CharTokenizer",
    "WordTokenizer",
    "BPETokenizer",
    "TokenizerPair",
    "load_tokenizer",
    "load_tokenizer_pair",
    "TOKENIZER_KINDS",
    "train_tokenizer",
    "train_tokenizer_pair",
    "read_lines",
    "read_text",
    "read_aligned",
    "fingerprint",
    "Ragged",
    "Seq2SeqBatch",
    "LMBatch",
    "ClassificationBatch",
    "pad_sequences",
    "TokenBudgetBatchSampler",
    "FixedSizeBatchSampler",
    "EpochDataLoader",
    "make_loader",
    "ParallelDataset",
    "read_tsv_pairs",
    "source_batch",
    "PackedTextDataset",
    "encode_text",
    "encode_files",
    "LabelledDataset",
    "read_labelled",
    "infer_label_names",
    "text_batch",
]
