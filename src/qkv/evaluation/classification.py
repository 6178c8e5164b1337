"""Accuracy and F1 for classifiers: labels in (ints, strings or tensors), numbers out.

F1 follows the usual definitions (and scikit-learn's defaults): for one class,
``precision = tp / (tp + fp)``, ``recall = tp / (tp + fn)``, ``F1 = 2 p r / (p + r)``, and a ratio
whose denominator is zero counts as 0. Binary F1 is the F1 of the positive class; macro-F1 is the
unweighted mean of the per-class F1 over every class that occurs in the targets or the predictions.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Literal

import torch

Labels = Sequence[Hashable] | torch.Tensor


def accuracy(predictions: Labels, targets: Labels) -> float:
    """Fraction of predictions equal to their target (0.0 to 1.0).

    Args:
        predictions: ``N`` predicted labels (a sequence or a 1-D tensor).
        targets: ``N`` true labels.

    Returns:
        ``correct / N``.
    """
    preds, golds = _pair(predictions, targets)
    return sum(p == g for p, g in zip(preds, golds, strict=True)) / len(golds)


def per_class_f1(predictions: Labels, targets: Labels) -> dict[Hashable, float]:
    """F1 of every class that occurs in ``targets`` or ``predictions``.

    Args:
        predictions: ``N`` predicted labels.
        targets: ``N`` true labels.

    Returns:
        ``{label: F1}``, labels sorted when they are mutually comparable.
    """
    preds, golds = _pair(predictions, targets)
    labels = set(preds) | set(golds)
    try:
        labels = sorted(labels)
    except TypeError:  # mixed label types: keep first-seen order
        labels = list(dict.fromkeys([*golds, *preds]))
    return {label: _f1(preds, golds, label) for label in labels}


def f1_score(
    predictions: Labels,
    targets: Labels,
    *,
    average: Literal["macro", "binary"] = "macro",
    positive_label: Hashable = 1,
) -> float:
    """Binary or macro-averaged F1 (0.0 to 1.0).

    Args:
        predictions: ``N`` predicted labels.
        targets: ``N`` true labels.
        average: ``"binary"`` scores ``positive_label`` only; ``"macro"`` averages over all classes.
        positive_label: the positive class for ``average="binary"``.

    Returns:
        The F1 score.

    Raises:
        ValueError: on an unknown ``average``, or a binary F1 whose labels are not a subset of
            ``{positive_label, one other}``.
    """
    preds, golds = _pair(predictions, targets)
    if average == "macro":
        scores = per_class_f1(preds, golds)
        return sum(scores.values()) / len(scores)
    if average == "binary":
        labels = set(preds) | set(golds)
        if len(labels - {positive_label}) > 1:
            raise ValueError(
                f"binary F1 needs two classes, got labels {sorted(map(str, labels))} "
                f"(positive_label={positive_label!r}); use average='macro'"
            )
        return _f1(preds, golds, positive_label)
    raise ValueError(f"average must be 'macro' or 'binary', got {average!r}")


def _f1(preds: list[Hashable], golds: list[Hashable], label: Hashable) -> float:
    tp = sum(p == label and g == label for p, g in zip(preds, golds, strict=True))
    fp = sum(p == label and g != label for p, g in zip(preds, golds, strict=True))
    fn = sum(p != label and g == label for p, g in zip(preds, golds, strict=True))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0  # == 2pr/(p+r), 0 when p or r is 0


def _pair(predictions: Labels, targets: Labels) -> tuple[list[Hashable], list[Hashable]]:
    preds, golds = _to_list(predictions, "predictions"), _to_list(targets, "targets")
    if len(preds) != len(golds):
        raise ValueError(f"predictions has {len(preds)} labels but targets has {len(golds)}")
    if not golds:
        raise ValueError("targets is empty: the score needs at least one example")
    return preds, golds


def _to_list(values: Labels, name: str) -> list[Hashable]:
    if isinstance(values, torch.Tensor):
        if values.dim() != 1:
            raise ValueError(f"{name} must be a 1-D tensor of labels, got shape {tuple(values.shape)}")
        return values.tolist()
    if isinstance(values, str):
        raise ValueError(f"{name} must be a sequence of labels, got one string {values[:40]!r}")
    return list(values)
