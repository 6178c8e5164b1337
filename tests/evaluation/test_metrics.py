"""Perplexity against torch's cross-entropy; accuracy and F1 against hand counts."""

import math

import pytest
import torch
import torch.nn.functional as F

from qkv.evaluation import accuracy, f1_score, nll_sum, per_class_f1, perplexity


def test_perplexity_is_exp_of_mean_token_nll_from_cross_entropy():
    logits = torch.randn(2, 5, 7)
    targets = torch.randint(1, 7, (2, 5))
    targets[1, 3:] = 0  # padding
    total, count = nll_sum(logits, targets, ignore_index=0)
    assert count == 8
    mean_ce = F.cross_entropy(logits.reshape(-1, 7), targets.reshape(-1), ignore_index=0)  # mean over real tokens
    assert total == pytest.approx(float(mean_ce) * 8, rel=1e-6)
    assert perplexity(total, count) == pytest.approx(math.exp(float(mean_ce)), rel=1e-6)
    # Hand computation for the first token: -log softmax(logits)[target]
    first = -torch.log_softmax(logits[0, 0], dim=-1)[targets[0, 0]]
    assert nll_sum(logits[:1, :1], targets[:1, :1])[0] == pytest.approx(float(first), rel=1e-6)


def test_perplexity_accumulates_over_batches_not_averaged():
    logits, targets = torch.randn(4, 3, 5), torch.randint(0, 5, (4, 3))
    parts = [nll_sum(logits[i : i + 1], targets[i : i + 1]) for i in range(4)]
    whole = nll_sum(logits, targets)
    assert sum(p[0] for p in parts) == pytest.approx(whole[0], rel=1e-6)
    assert perplexity(sum(p[0] for p in parts), sum(p[1] for p in parts)) == pytest.approx(perplexity(*whole))


def test_perplexity_edge_values_and_errors():
    assert perplexity(0.0, 3) == 1.0
    assert perplexity(3 * math.log(5), 3) == pytest.approx(5.0)  # uniform over 5 -> ppl 5
    assert perplexity(torch.tensor(1e6), torch.tensor(1)) == math.inf
    for nll, n, msg in [(1.0, 0, "num_tokens"), (-1.0, 2, "nll_sum"), (math.nan, 2, "nll_sum"), (1.0, 1.5, "num_tokens")]:
        with pytest.raises(ValueError, match=msg):
            perplexity(nll, n)
    with pytest.raises(ValueError, match=r"logits \(2, 3\) must be targets \(3,\)"):
        nll_sum(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))


def test_accuracy_by_hand():
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    assert accuracy(torch.tensor([2, 2, 0]), torch.tensor([2, 1, 0])) == pytest.approx(2 / 3)
    assert accuracy(["pos", "neg"], ["pos", "pos"]) == 0.5
    with pytest.raises(ValueError, match="predictions has 3 labels but targets has 2"):
        accuracy([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="shape"):
        accuracy(torch.zeros(2, 2), torch.zeros(2, 2))


def test_binary_f1_by_hand():
    preds = [1, 1, 1, 0, 0, 1, 0, 0]
    golds = [1, 1, 0, 1, 0, 0, 0, 0]
    # tp=2, fp=2, fn=1: precision 1/2, recall 2/3, F1 = 2 * (1/2 * 2/3) / (1/2 + 2/3) = 4/7
    assert f1_score(preds, golds, average="binary") == pytest.approx(4 / 7)
    # Negative class: tp=3, fp=1, fn=2 -> P 3/4, R 3/5, F1 = 2/3
    assert f1_score(preds, golds, average="binary", positive_label=0) == pytest.approx(2 / 3)
    assert f1_score(preds, golds) == pytest.approx((4 / 7 + 2 / 3) / 2)
    assert f1_score([0, 0], [0, 0], average="binary") == 0.0  # no positives anywhere: 0 by convention
    with pytest.raises(ValueError, match="binary F1 needs two classes"):
        f1_score([0, 1, 2], [0, 1, 2], average="binary")
    with pytest.raises(ValueError, match="average must be"):
        f1_score([0], [0], average="micro")


def test_macro_f1_multiclass_by_hand():
    golds = ["a", "a", "b", "b", "c", "c"]
    preds = ["a", "b", "b", "b", "a", "d"]
    # a: tp1 fp1 fn1 -> 1/2; b: tp2 fp1 fn0 -> 4/5; c: tp0 -> 0; d (predicted only): 0
    assert per_class_f1(preds, golds) == pytest.approx({"a": 0.5, "b": 0.8, "c": 0.0, "d": 0.0})
    assert f1_score(preds, golds) == pytest.approx((0.5 + 0.8) / 4)
    assert f1_score(golds, golds) == 1.0
