"""Logits processors on hand-built distributions."""

from __future__ import annotations

import math

import pytest
import torch

from qkv.generation import (
    LogitsSettings,
    apply_temperature,
    force_token,
    repetition_penalty,
    suppress_tokens,
    top_k_filter,
    top_p_filter,
)


def _logits(*probs: float) -> torch.Tensor:
    return torch.tensor([[math.log(p) for p in probs]])


def _kept(logits: torch.Tensor) -> list[int]:
    return torch.isfinite(logits[0]).nonzero().squeeze(1).tolist()


@pytest.mark.parametrize(
    ("probs", "p", "kept"),
    [
        ((0.1, 0.5, 0.3, 0.1), 0.45, [1]),  # the top token alone has 0.5 >= 0.45
        ((0.1, 0.5, 0.3, 0.1), 0.55, [1, 2]),  # 0.5 < 0.55 <= 0.8
        ((0.1, 0.5, 0.3, 0.1), 0.79, [1, 2]),
        ((0.05, 0.15, 0.6, 0.2), 0.81, [1, 2, 3]),  # 0.8 < 0.81 <= 0.95
        ((0.05, 0.15, 0.6, 0.2), 0.96, [0, 1, 2, 3]),
        ((0.7, 0.2, 0.1), 1.0, [0, 1, 2]),
        ((0.7, 0.2, 0.1), 0.01, [0]),
    ],
)
def test_top_p_keeps_smallest_set_with_mass_at_least_p(probs, p, kept):
    assert _kept(top_p_filter(_logits(*probs), p)) == kept


def test_top_p_mass_property_random():
    """On random rows: kept mass >= p, and dropping the least likely kept token falls below p."""
    logits = torch.randn(50, 20) * 2
    probs = logits.softmax(-1)
    for p in (0.1, 0.5, 0.9, 0.99):
        keep = torch.isfinite(top_p_filter(logits, p))
        mass = (probs * keep).sum(-1)
        smallest = probs.masked_fill(~keep, 2.0).min(-1).values
        assert bool((mass >= p - 1e-6).all())
        assert bool((mass - smallest < p + 1e-6).all())
        # the kept set is a top set: every kept prob >= every dropped prob
        dropped_max = probs.masked_fill(keep, -1.0).max(-1).values
        assert bool((smallest >= dropped_max).all())


def test_top_k():
    logits = _logits(0.1, 0.5, 0.3, 0.1)
    assert _kept(top_k_filter(logits, 1)) == [1]
    assert _kept(top_k_filter(logits, 2)) == [1, 2]
    assert torch.equal(top_k_filter(logits, 10), logits)


def test_temperature_scales_and_keeps_argmax():
    logits = torch.randn(3, 7)
    assert torch.allclose(apply_temperature(logits, 0.5), logits * 2)
    sharp = apply_temperature(logits, 0.1).softmax(-1).max(-1).values
    assert bool((sharp > logits.softmax(-1).max(-1).values).all())


def test_repetition_penalty_ctrl_rule():
    logits = torch.tensor([[2.0, -1.0, 3.0, 0.5]])
    seen = torch.tensor([[True, True, False, False]])
    out = repetition_penalty(logits, seen, 2.0)
    assert out.tolist() == [[1.0, -2.0, 3.0, 0.5]]
    assert torch.equal(logits, torch.tensor([[2.0, -1.0, 3.0, 0.5]]))  # input untouched


def test_suppress_and_force():
    logits = torch.zeros(2, 5)
    assert torch.isinf(suppress_tokens(logits, 3)[:, 3]).all()
    forced = force_token(logits, 4, rows=torch.tensor([True, False]))
    assert forced[0].argmax() == 4 and torch.isinf(forced[0, :4]).all()
    assert torch.equal(forced[1], logits[1])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": -0.2}, "top_p"),
        ({"top_k": 0}, "top_k"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
    ],
)
def test_settings_validate(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LogitsSettings(**kwargs)


def test_filters_validate_directly():
    x = torch.zeros(1, 4)
    with pytest.raises(ValueError, match="top_p"):
        top_p_filter(x, 1.01)
    with pytest.raises(ValueError, match="top_k"):
        top_k_filter(x, 0)
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(x, 0)
