"""Training tokenizers from texts and files; joint and separate source/target vocabularies."""

import gzip

import pytest

from qkv.data.tokenizer_pair import TokenizerPair, load_tokenizer_pair, train_tokenizer, train_tokenizer_pair
from qkv.data.tokenizers import BPETokenizer, CharTokenizer, WordTokenizer


def test_train_tokenizer_kinds_and_files(tmp_path, unicode_lines):
    path = tmp_path / "corpus.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(unicode_lines) + "\n")
    char = train_tokenizer("char", files=[path])
    assert isinstance(char, CharTokenizer) and char.decode(char.encode(unicode_lines[2])) == unicode_lines[2]
    assert "\n" in char.symbols  # files are read with their line ends
    assert isinstance(train_tokenizer("word", unicode_lines), WordTokenizer)
    bpe = train_tokenizer("bpe", unicode_lines, files=[path], vocab_size=290, min_frequency=1)
    assert isinstance(bpe, BPETokenizer) and bpe.vocab_size == 290
    with pytest.raises(ValueError, match="tokenizer kind must be one of .* got 'sentencepiece'"):
        train_tokenizer("sentencepiece", unicode_lines)
    with pytest.raises(ValueError, match="no training text for the char tokenizer"):
        train_tokenizer("char", [])
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\xc3\x28 broken\n")
    with pytest.raises(ValueError, match="bad.txt: line 2 is not valid UTF-8"):
        train_tokenizer("bpe", files=[bad])


def test_joint_pair_round_trip(tmp_path, unicode_lines):
    pair = train_tokenizer_pair(unicode_lines[:2], unicode_lines[2:], kind="char", joint=True)
    assert pair.source is pair.target and pair.joint
    assert [p.name for p in pair.save(tmp_path)] == ["tokenizer.json"]
    back = load_tokenizer_pair(tmp_path)
    assert back.joint and back.source == pair.source
    for line in unicode_lines:
        assert back.target.decode(back.source.encode(line)) == line


def test_separate_pair_round_trip(tmp_path, unicode_lines):
    de, en = unicode_lines[:1], unicode_lines[1:2]
    pair = train_tokenizer_pair(de, en, kind="char", joint=False)
    assert not pair.joint and pair.source != pair.target
    assert sorted(p.name for p in pair.save(tmp_path)) == ["source_tokenizer.json", "target_tokenizer.json"]
    back = load_tokenizer_pair(tmp_path)
    assert (back.source, back.target) == (pair.source, pair.target)
    assert back.source.decode(back.source.encode(de[0])) == de[0]
    assert back.target.unk_id in back.target.encode("ß")  # only the German side saw ß


def test_pair_of_equal_tokenizers_is_joint_and_missing_folder(tmp_path):
    assert TokenizerPair(CharTokenizer(["a"]), CharTokenizer(["a"])).joint
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        load_tokenizer_pair(tmp_path)
