"""Incremental detokenization: streamed pieces join to the full decode for every tokenizer qkv has, split UTF-8
characters are held back, and each token decodes a short window (not the whole text)."""

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from qkv.data.tokenizers import BPETokenizer, CharTokenizer, WordTokenizer
from qkv.generation import IncrementalText
from qkv.interop.tokenizer import PretrainedTokenizer

TEXT = "naïve café, 日本語 ✓ 🙂 déjà vu"


def pieces(tokenizer, ids):
    inc = IncrementalText(tokenizer)
    out = [inc.push(i) for i in ids]
    return out + [inc.finish()]


def wordpiece() -> PretrainedTokenizer:
    """A BERT-style tokenizer: ``##`` continuations glue to the previous piece, other pieces get a space."""
    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]", "play", "##ing", "##ed", "fast", "slow", ",", "."])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    return PretrainedTokenizer(tok, pad_id=1)


def test_text_stream_joins_to_the_decoded_text_for_every_tokenizer():
    cases = [(tok, TEXT) for tok in (CharTokenizer.train([TEXT]), WordTokenizer.train([TEXT]),
                                     BPETokenizer.train([TEXT], vocab_size=270, min_frequency=1))]
    cases.append((wordpiece(), "playing fast, played slow. play"))
    for tok, text in cases:
        ids = tok.encode(text)
        if hasattr(tok, "eos_id"):  # a special token in the middle decodes to nothing
            ids = ids[:3] + [tok.eos_id] + ids[3:]
        out = pieces(tok, ids)
        assert "".join(out) == tok.decode(ids), type(tok).__name__


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
    cut = tok.encode("a日")[:2]  # the text ends inside a character: finish() emits it as it decodes
    assert pieces(tok, cut) == ["a", "", "\ufffd"]


def test_char_tokenizer_streams_one_character_per_token():
    tok = CharTokenizer.train([TEXT])
    ids = tok.encode(TEXT)
    out = pieces(tok, ids)
    assert out[:-1] == list(TEXT) and out[-1] == ""


def test_each_token_decodes_a_short_window():
    class Counting:
        def __init__(self, tok):
            self.tok, self.longest = tok, 0

        def decode(self, ids):
            self.longest = max(self.longest, len(ids))
            return self.tok.decode(ids)

    tok = BPETokenizer.train(["hello world"], vocab_size=260, min_frequency=100)
    ids = tok.encode(TEXT * 20)
    counting = Counting(tok)
    assert "".join(pieces(counting, ids)) == TEXT * 20
    assert len(ids) > 500 and counting.longest <= 8  # an emoji is 4 byte tokens, held back, after its predecessor
