"""Incremental detokenization: streamed pieces join to the full decode; split UTF-8 characters are held back."""

from qkv.data.tokenizers import BPETokenizer, CharTokenizer
from qkv.serve.text import IncrementalText

TEXT = "naïve café, 日本語 ✓ déjà vu"


def pieces(tokenizer, ids):
    inc = IncrementalText(tokenizer)
    out = [inc.push(i) for i in ids]
    return out + [inc.finish()]


def test_byte_level_bpe_holds_back_partial_characters():
    tok = BPETokenizer.train(["hello world"], vocab_size=260, min_frequency=100)  # bytes only: 日 is 3 tokens
    ids = tok.encode(TEXT)
    assert len(ids) > len(TEXT)  # multi-byte characters are split across tokens
    out = pieces(tok, ids)
    assert "".join(out) == tok.decode(ids) == TEXT
    assert not any("\ufffd" in p for p in out)
    assert "" in out  # some tokens ended inside a character and produced no text yet


def test_invalid_bytes_still_join_to_the_decode():
    tok = BPETokenizer.train(["hello world"], vocab_size=260, min_frequency=100)
    ids = tok.encode("日")[:2] + tok.encode("a")  # a character cut short, then more text
    out = pieces(tok, ids)
    assert "".join(out) == tok.decode(ids) and "\ufffd" in tok.decode(ids)


def test_char_tokenizer_streams_one_character_per_token():
    tok = CharTokenizer.train([TEXT])
    ids = tok.encode(TEXT)
    out = pieces(tok, ids)
    assert out[:-1] == list(TEXT) and out[-1] == ""
