"""Tokenizers: special ids, round trips (unicode included), unknowns, save/load, the class picker."""

import json

import pytest

from qkv.data.tokenizers import (
    SPECIAL_TOKENS,
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    WordTokenizer,
    load_tokenizer,
)


@pytest.fixture
def bpe(unicode_lines):
    return BPETokenizer.train(unicode_lines * 3, vocab_size=300, min_frequency=1)


def test_special_ids_in_order(unicode_lines, bpe):
    for tok in (CharTokenizer.train(unicode_lines), WordTokenizer.train(unicode_lines), bpe):
        assert isinstance(tok, Tokenizer)
        assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
        assert [tok.id_to_token(i) for i in range(4)] == list(SPECIAL_TOKENS)


def test_char_round_trip_and_unknowns(unicode_lines):
    tok = CharTokenizer.train(unicode_lines)
    assert tok.vocab_size == 4 + len(set("".join(unicode_lines)))
    for line in unicode_lines:
        ids = tok.encode(line)
        assert len(ids) == len(line) and tok.unk_id not in ids
        assert tok.decode(ids) == line
    ids = tok.encode("Z€Z")  # € never seen in training
    assert ids[1] == tok.unk_id and ids[0] == ids[2] != tok.unk_id
    assert tok.decode(ids) == "ZZ"
    assert tok.decode(ids, skip_special=False) == "Z<unk>Z"
    assert tok.decode([tok.bos_id, *tok.encode("Zwei"), tok.eos_id, tok.pad_id]) == "Zwei"


def test_bpe_round_trips_any_text(unicode_lines, bpe):
    assert bpe.vocab_size == 300
    unseen = "Ωμέγα ∑ ☃ \x00 <pad> <eos> and \r\n line ends"
    for text in [*unicode_lines, unseen, "", " leading and trailing "]:
        assert bpe.decode(bpe.encode(text)) == text
    # specials written in user text are plain text, not special ids
    assert not set(bpe.encode("<pad><bos>")) & {0, 1, 2, 3}
    assert bpe.decode([bpe.bos_id, *bpe.encode("hi"), bpe.eos_id]) == "hi"
    # BPE actually merges: frequent words take fewer ids than bytes
    assert len(bpe.encode(unicode_lines[0])) < len(unicode_lines[0].encode("utf-8"))


def test_word_tokenizer(unicode_lines):
    tok = WordTokenizer(["[MAX", "1", "]"])
    assert tok.encode("[MAX 1 1 ] 7") == [4, 5, 5, 6, 3]
    assert tok.decode(tok.encode("[MAX 1 ]")) == "[MAX 1 ]"
    freq = WordTokenizer.train(["a b a", "a c"], min_count=2)
    assert freq.symbols == ["a"]


def test_decode_rejects_out_of_range(unicode_lines, bpe):
    tok = CharTokenizer.train(unicode_lines)
    with pytest.raises(ValueError, match=rf"token id {tok.vocab_size} is outside the vocabulary \[0, {tok.vocab_size}\)"):
        tok.decode([tok.vocab_size])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        bpe.decode([-1])


def test_bad_vocabularies():
    with pytest.raises(ValueError, match="duplicate symbols"):
        CharTokenizer(["a", "b", "a"])
    with pytest.raises(ValueError, match="clash with the special tokens"):
        WordTokenizer(["<pad>", "x"])
    with pytest.raises(ValueError, match=r"vocab_size \(100\) must be >= 260"):
        BPETokenizer.train(["abc"], vocab_size=100)


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_save_load_round_trip(tmp_path, unicode_lines, bpe, kind):
    tok = {"char": CharTokenizer.train(unicode_lines), "word": WordTokenizer.train(unicode_lines), "bpe": bpe}[kind]
    path = tok.save(tmp_path)
    assert path == tmp_path / "tokenizer.json"
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]  # no temp file left behind
    json.loads(path.read_text(encoding="utf-8"))  # plain JSON, no pickle
    for loaded in (load_tokenizer(tmp_path), load_tokenizer(path), type(tok).load(tmp_path)):
        assert type(loaded) is type(tok) and loaded == tok
        for line in unicode_lines:
            assert loaded.encode(line) == tok.encode(line)
            assert loaded.decode(loaded.encode(line)) == tok.decode(tok.encode(line))


def test_save_overwrites_atomically(tmp_path, unicode_lines):
    CharTokenizer.train(["ab"]).save(tmp_path)
    CharTokenizer.train(unicode_lines).save(tmp_path)
    assert load_tokenizer(tmp_path) == CharTokenizer.train(unicode_lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.json"]


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer file at"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON, so not a tokenizer file"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"type": "qkv.klingon"}', encoding="utf-8")
    with pytest.raises(ValueError, match="unknown tokenizer \\(type 'qkv.klingon'"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text(
        '{"type": "qkv.char", "special_tokens": ["<s>"], "symbols": ["a"]}', encoding="utf-8"
    )
    with pytest.raises(ValueError, match="special tokens"):
        load_tokenizer(tmp_path)
