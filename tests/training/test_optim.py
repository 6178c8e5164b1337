"""Optimiser groups, schedules and the label-smoothed loss against independent references."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qkv.training import (
    build_optimizer,
    build_scheduler,
    cosine_schedule,
    inverse_sqrt_schedule,
    label_smoothed_cross_entropy,
    label_smoothed_nll,
    param_groups,
    schedule_fn,
)
from tests.training.training_fixtures import PAD, TinyLM


def test_param_groups_exclude_biases_norms_and_embeddings():
    model = TinyLM()
    decay, no_decay = param_groups(model, 0.1)
    decay_ids = {id(p) for p in decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert decay_ids == {id(model.mlp[0].weight), id(model.mlp[2].weight)}
    no_decay_ids = {id(p) for p in no_decay["params"]}
    assert id(model.embed.weight) in no_decay_ids  # tied with head.weight: counted once, as embedding
    assert {id(model.norm.weight), id(model.norm.bias), id(model.mlp[0].bias)} <= no_decay_ids
    n_params = len(list(model.parameters()))
    assert len(decay_ids) + len(no_decay_ids) == n_params


def test_decay_applies_only_to_the_decay_group():
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    opt = build_optimizer(model, lr=0.1, weight_decay=0.5, fused=False)
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # zero gradient: only decoupled decay moves weights
    opt.step()
    after = list(model.parameters())
    torch.testing.assert_close(after[0], before[0] * (1 - 0.1 * 0.5))  # Linear.weight decayed
    for b, a in zip(before[1:], after[1:], strict=True):
        torch.testing.assert_close(a, b)  # bias, norm weight and bias untouched


def test_inverse_sqrt_matches_paper_formula():
    d, warmup = 512, 4000
    for step in [0, 1, 99, 3998, 3999, 4000, 10_000, 100_000]:
        n = step + 1
        expected = d**-0.5 * min(n**-0.5, n * warmup**-1.5)
        assert inverse_sqrt_schedule(step, d_model=d, warmup=warmup) == pytest.approx(expected, rel=1e-12)
    rates = [inverse_sqrt_schedule(s, d_model=d, warmup=warmup) for s in range(0, 20_000, 50)]
    peak = max(range(len(rates)), key=rates.__getitem__) * 50
    assert abs(peak + 1 - warmup) <= 50  # peaks at step `warmup`, then decays as n^-0.5
    assert rates[-1] == pytest.approx(d**-0.5 * (19_951) ** -0.5, rel=1e-12)


def test_cosine_warmup_and_endpoints():
    f = schedule_fn("cosine", warmup=10, total=110, min_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.55)
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    assert all(cosine_schedule(s, warmup=10, total=110) >= cosine_schedule(s + 1, warmup=10, total=110)
               for s in range(10, 120))


def test_scheduler_sets_learning_rate_and_round_trips():
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, lr=2.0, fused=False)
    sched = build_scheduler(opt, schedule_fn("inverse_sqrt", warmup=4, total=0, d_model=16))
    for step in range(6):
        expected = 2.0 * inverse_sqrt_schedule(step, d_model=16, warmup=4)
        assert opt.param_groups[0]["lr"] == pytest.approx(expected)
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = build_optimizer(model, lr=2.0, fused=False)
    sched2 = build_scheduler(opt2, schedule_fn("inverse_sqrt", warmup=4, total=0, d_model=16))
    sched2.load_state_dict(state)
    sched.step(), sched2.step()
    assert sched.get_last_lr() == sched2.get_last_lr()


def test_unknown_schedule_names_choices():
    with pytest.raises(ValueError, match="inverse_sqrt"):
        schedule_fn("linear", warmup=1, total=2)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_label_smoothing_matches_torch(smoothing):
    logits = torch.randn(3, 7, 13) * 3
    target = torch.randint(1, 13, (3, 7))
    target[0, 4:] = PAD
    ours = label_smoothed_cross_entropy(logits, target, smoothing=smoothing, ignore_index=PAD)
    ref = F.cross_entropy(logits.reshape(-1, 13), target.reshape(-1), ignore_index=PAD,
                          label_smoothing=smoothing)
    torch.testing.assert_close(ours, ref)


def test_label_smoothing_matches_float64_hand_computation():
    V, eps = 5, 0.1
    logits = torch.randn(6, V, dtype=torch.float64)
    target = torch.tensor([1, 4, PAD, 2, PAD, 3])
    losses = []
    for row, t in zip(logits.tolist(), target.tolist(), strict=True):
        if t == PAD:
            continue
        logz = math.log(sum(math.exp(v) for v in row))
        q = [eps / V + (1 - eps) * (j == t) for j in range(V)]  # smoothed target distribution
        losses.append(-sum(qj * (row[j] - logz) for j, qj in enumerate(q)))
    expected = sum(losses) / len(losses)
    total, n = label_smoothed_nll(logits, target, smoothing=eps, ignore_index=PAD)
    assert n.item() == 4
    assert (total / n).item() == pytest.approx(expected, rel=1e-6)  # computed in float32


def test_all_padding_gives_zero_not_nan():
    loss = label_smoothed_cross_entropy(torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.long), ignore_index=0)
    assert loss.item() == 0.0


def test_loss_validates_shapes_and_smoothing():
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        label_smoothed_nll(torch.randn(2, 4, 5), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="1.5"):
        label_smoothed_nll(torch.randn(2, 5), torch.zeros(2, dtype=torch.long), smoothing=1.5)
