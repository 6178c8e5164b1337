"""Evaluation: strings and tensors in, numbers out. Imports no qkv models; sacrebleu and matplotlib lazily.

- :mod:`.bleu`: corpus BLEU / chrF with signatures, tokenised lowercased BLEU, exact match.
- :mod:`.perplexity`: perplexity from summed NLL and token count.
- :mod:`.classification`: accuracy, binary and macro F1.
- :mod:`.by_length`: BLEU per source-length bucket, as rows, a text table and a plot.
"""

from qkv.evaluation.bleu import Score, corpus_bleu, corpus_chrf, exact_match, tokenized_bleu
from qkv.evaluation.by_length import (
    LengthBucket,
    bleu_by_length,
    format_length_table,
    length_figure,
    plot_bleu_by_length,
    source_length,
)
from qkv.evaluation.classification import accuracy, f1_score, per_class_f1
from qkv.evaluation.perplexity import nll_sum, perplexity

__all__ = [
    "LengthBucket",
    "Score",
    "accuracy",
    "bleu_by_length",
    "corpus_bleu",
    "corpus_chrf",
    "exact_match",
    "f1_score",
    "format_length_table",
    "length_figure",
    "nll_sum",
    "per_class_f1",
    "perplexity",
    "plot_bleu_by_length",
    "source_length",
    "tokenized_bleu",
]
