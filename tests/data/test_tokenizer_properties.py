"""Round trips on arbitrary Unicode text (hypothesis): char tokenizers on text they were trained on,
byte-level BPE on any text at all, and token budgets on arbitrary lengths."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from qkv.data.batching import TokenBudgetBatchSampler
from qkv.data.tokenizers import BPETokenizer, CharTokenizer

BPE = BPETokenizer.train(["Zwei junge Männer", "Two young men", "le 3 mars 2019", "日本語 🙂"], vocab_size=280)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(max_size=30), min_size=1, max_size=3))
def test_char_round_trip_on_training_text(texts):
    tok = CharTokenizer.train(texts)
    for text in texts:
        assert tok.decode(tok.encode(text)) == text
    assert tok.vocab_size == 4 + len(set("".join(texts)))


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=80))
def test_bpe_round_trip_on_any_text(text):
    ids = BPE.encode(text)
    assert all(0 <= i < BPE.vocab_size for i in ids)
    assert BPE.decode(ids) == text


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(1, 50), min_size=1, max_size=200),
    st.integers(50, 400),
    st.integers(0, 3),
)
def test_token_budget_on_arbitrary_lengths(lengths, max_tokens, epoch):
    sampler = TokenBudgetBatchSampler(lengths, max_tokens, seed=1)
    sampler.set_epoch(epoch)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    arr = np.asarray(lengths)
    assert all(len(b) * arr[b].max() <= max_tokens for b in batches)
