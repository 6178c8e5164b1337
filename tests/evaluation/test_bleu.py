"""Corpus BLEU/chrF against sacrebleu called directly; exact match by hand."""

import pytest
import sacrebleu

from qkv.evaluation import corpus_bleu, corpus_chrf, exact_match, tokenized_bleu

HYPS = ["The cat sat on the mat.", "A dog, barking loudly!", "Hello world", "it is raining today"]
REFS = ["The cat is on the mat.", "A dog barks loudly!", "hello, World", "it rains today"]
REFS2 = ["There is a cat on the mat.", "The dog was barking loudly!", "Hello world!", "today it is raining"]


def test_bleu_matches_sacrebleu_with_signature():
    ours = corpus_bleu(HYPS, REFS)
    theirs = sacrebleu.corpus_bleu(HYPS, [REFS])
    assert ours.score == pytest.approx(theirs.score, abs=1e-9)
    assert 0 < ours.score < 100
    assert ours.signature.startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert ours.signature.endswith(sacrebleu.__version__)
    assert ours.signature in str(ours) and "BLEU" in str(ours)


def test_bleu_with_several_references_per_sentence():
    ours = corpus_bleu(HYPS, [[a, b] for a, b in zip(REFS, REFS2, strict=True)])
    theirs = sacrebleu.corpus_bleu(HYPS, [REFS, REFS2])
    assert ours.score == pytest.approx(theirs.score, abs=1e-9)
    assert ours.score > corpus_bleu(HYPS, REFS).score  # a second reference can only add matches
    assert ours.signature.startswith("nrefs:2|")


def test_tokenized_lowercased_bleu_is_case_blind_and_tokenizes():
    raw = tokenized_bleu(HYPS, REFS)
    assert raw.score == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS], tokenize="13a", lowercase=True).score)
    assert "case:lc" in raw.signature and "tok:13a" in raw.signature
    assert raw.score == pytest.approx(tokenized_bleu([h.upper() for h in HYPS], REFS).score)
    # Pre-tokenised text: only split on spaces; "world" vs "world!" differ unless we tokenise first.
    pre = tokenized_bleu(["hello world"], ["Hello world !"], pretokenized=True)
    assert "tok:none" in pre.signature
    assert pre.score == pytest.approx(sacrebleu.corpus_bleu(["hello world"], [["hello world !"]], tokenize="none").score)
    hyp, ref = ["so hello there, my world!"], ["So hello there , my world !"]
    glued = tokenized_bleu(hyp, ref, pretokenized=True).score
    split = tokenized_bleu(hyp, ref, pretokenized=False).score
    assert split == pytest.approx(100.0) and glued < split


def test_chrf_and_chrf_plus_plus_match_sacrebleu():
    assert corpus_chrf(HYPS, REFS).score == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)
    plus = corpus_chrf(HYPS, REFS, word_order=2)
    assert plus.name == "chrF2++"
    assert plus.score == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS], word_order=2).score)
    assert "nw:2" in plus.signature


def test_perfect_and_disjoint_output():
    assert corpus_bleu(REFS, REFS).score == pytest.approx(100.0)
    assert corpus_bleu(["zz yy xx ww"] * 4, REFS).score == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("hyps", "refs", "message"),
    [
        ([], [], "empty"),
        (["a"], ["a", "b"], "references has 2 entries but hypotheses has 1"),
        ("a b", ["a b"], "one string"),
        (["a", 3], ["a", "b"], "hypotheses[1] must be a str"),
        (["a", "b"], [["x", "y"], ["z"]], "counts [1, 2]"),
    ],
)
def test_bad_corpus_raises_with_values(hyps, refs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        corpus_bleu(hyps, refs)


def test_exact_match_by_hand():
    preds = ["2020-01-02", " 1999-12-31 ", "2000-01-01", "2000-1-1"]
    golds = ["2020-01-02", "1999-12-31", "2000-01-02", "2000-01-01"]
    assert exact_match(preds, golds) == 0.5
    assert exact_match(preds, golds, normalize_whitespace=False) == 0.25
    assert exact_match(["a  b"], ["a b"]) == 1.0
    with pytest.raises(ValueError, match="predictions has 1 entries but references has 2"):
        exact_match(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        exact_match([], [])
