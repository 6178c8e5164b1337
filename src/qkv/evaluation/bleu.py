"""Corpus BLEU and chrF through sacrebleu, and exact match: strings in, numbers out.

sacrebleu is imported inside the functions, so ``import qkv.evaluation`` stays cheap.

Two BLEU flavours are offered, because papers report both:

* :func:`corpus_bleu` is sacrebleu's standard, comparable score: detokenised text in, sacrebleu's own
  ``13a`` tokenisation, case kept. Report it with its signature.
* :func:`tokenized_bleu` is the older "tokenised, lowercased BLEU" of ``multi-bleu.perl`` (used by e.g.
  Bahdanau et al. and most RNN-era papers). Here "tokenised" means: BLEU's n-grams are counted over
  whitespace-separated tokens after lowercasing. With ``pretokenized=False`` (the default) the raw
  text is first split by sacrebleu's ``13a`` tokenizer (punctuation split off words, as Moses does);
  with ``pretokenized=True`` the text is taken to be tokenised already (tokens separated by single
  spaces, e.g. the output of a Moses tokenizer or of ``" ".join(tokens)``) and only split on spaces
  (sacrebleu ``tokenize="none"``). Such scores depend on the tokenizer and are not comparable across papers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

References = Sequence[str] | Sequence[Sequence[str]]


@dataclass(frozen=True)
class Score:
    """A corpus-level score and the sacrebleu signature that makes it reproducible.

    Attributes:
        name: metric name, e.g. ``"BLEU"`` or ``"chrF2"``.
        score: the score on sacrebleu's 0-100 scale.
        signature: sacrebleu's signature string, e.g. ``"nrefs:1|case:mixed|eff:no|tok:13a|..."``.
        details: sacrebleu's one-line summary (n-gram precisions, brevity penalty, lengths).
    """

    name: str
    score: float
    signature: str
    details: str = ""

    def __str__(self) -> str:
        return f"{self.name} = {self.score:.2f}  [{self.signature}]"


def reference_streams(hypotheses: Sequence[str], references: References) -> list[list[str]]:
    """Validates a corpus and returns sacrebleu's layout: one list of strings per reference "stream".

    Args:
        hypotheses: one system output per sentence, ``N`` strings.
        references: ``N`` strings (one reference each) or ``N`` sequences of strings (several
            references per sentence; every sentence must have the same number).

    Returns:
        ``R`` lists of ``N`` strings each: ``streams[r][i]`` is reference ``r`` of sentence ``i``.

    Raises:
        ValueError: on an empty corpus, mismatched lengths, a non-string entry or ragged references.
    """
    hypotheses = _as_strings(hypotheses, "hypotheses")
    if len(hypotheses) == 0:
        raise ValueError("hypotheses is empty: a corpus score needs at least one sentence")
    if len(references) != len(hypotheses):
        raise ValueError(f"references has {len(references)} entries but hypotheses has {len(hypotheses)}")
    if all(isinstance(r, str) for r in references):
        return [list(references)]
    per_sentence = [_as_strings(r, f"references[{i}]") for i, r in enumerate(references)]
    counts = sorted({len(r) for r in per_sentence})
    if len(counts) != 1 or counts[0] == 0:
        raise ValueError(f"every sentence needs the same, non-zero number of references; got counts {counts}")
    return [[refs[r] for refs in per_sentence] for r in range(counts[0])]


def corpus_bleu(
    hypotheses: Sequence[str],
    references: References,
    *,
    tokenize: str = "13a",
    lowercase: bool = False,
) -> Score:
    """Corpus BLEU with sacrebleu (default: the standard ``13a``, cased, detokenised setting).

    Args:
        hypotheses: ``N`` system outputs.
        references: ``N`` references, or ``N`` sequences of references (see :func:`reference_streams`).
        tokenize: sacrebleu tokenizer name (``"13a"``, ``"intl"``, ``"char"``, ``"none"``, ...).
        lowercase: lowercase both sides before scoring.

    Returns:
        :class:`Score` with ``name="BLEU"`` on the 0-100 scale and sacrebleu's signature.
    """
    from sacrebleu.metrics import BLEU

    streams = reference_streams(hypotheses, references)
    metric = BLEU(tokenize=tokenize, lowercase=lowercase)
    result = metric.corpus_score(list(hypotheses), streams)
    return Score("BLEU", float(result.score), str(metric.get_signature()), str(result))


def tokenized_bleu(hypotheses: Sequence[str], references: References, *, pretokenized: bool = False) -> Score:
    """"Tokenised, lowercased" BLEU in the style of ``multi-bleu.perl`` (see the module docstring).

    Args:
        hypotheses: ``N`` system outputs.
        references: ``N`` references, or ``N`` sequences of references.
        pretokenized: the text is already tokenised (tokens separated by spaces): only split on
            spaces (sacrebleu ``tokenize="none"``). Otherwise sacrebleu's ``13a`` tokenizer splits it.

    Returns:
        :class:`Score` named ``"BLEU (tokenised, lowercased)"``; its signature shows ``tok`` and ``case:lc``.
    """
    score = corpus_bleu(hypotheses, references, tokenize="none" if pretokenized else "13a", lowercase=True)
    return Score("BLEU (tokenised, lowercased)", score.score, score.signature, score.details)


def corpus_chrf(hypotheses: Sequence[str], references: References, *, word_order: int = 0) -> Score:
    """Corpus chrF (``word_order=0``) or chrF++ (``word_order=2``) with sacrebleu.

    Args:
        hypotheses: ``N`` system outputs.
        references: ``N`` references, or ``N`` sequences of references.
        word_order: word n-gram order added to the character n-grams (2 gives chrF++).

    Returns:
        :class:`Score` named ``"chrF2"`` or ``"chrF2++"`` on the 0-100 scale, with its signature.
    """
    from sacrebleu.metrics import CHRF

    streams = reference_streams(hypotheses, references)
    metric = CHRF(word_order=word_order)
    result = metric.corpus_score(list(hypotheses), streams)
    return Score(result.name, float(result.score), str(metric.get_signature()), str(result))


def exact_match(predictions: Sequence[str], references: Sequence[str], *, normalize_whitespace: bool = True) -> float:
    """Fraction of predictions equal to their reference (0.0 to 1.0).

    Args:
        predictions: ``N`` predicted strings.
        references: ``N`` reference strings.
        normalize_whitespace: strip both ends and collapse runs of whitespace before comparing.

    Returns:
        ``matches / N``.

    Raises:
        ValueError: on an empty input or mismatched lengths.
    """
    predictions = _as_strings(predictions, "predictions")
    references = _as_strings(references, "references")
    if len(predictions) != len(references):
        raise ValueError(f"predictions has {len(predictions)} entries but references has {len(references)}")
    if not predictions:
        raise ValueError("predictions is empty: exact match needs at least one pair")
    if normalize_whitespace:
        predictions = [" ".join(p.split()) for p in predictions]
        references = [" ".join(r.split()) for r in references]
    return sum(p == r for p, r in zip(predictions, references, strict=True)) / len(predictions)


def _as_strings(values: Sequence[str], name: str) -> list[str]:
    if isinstance(values, str):
        raise ValueError(f"{name} must be a sequence of strings, got one string {values[:40]!r}")
    values = list(values)
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise ValueError(f"{name}[{i}] must be a str, got {type(v).__name__} {v!r}")
    return values
