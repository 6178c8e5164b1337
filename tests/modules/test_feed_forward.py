"""FeedForward and its gated variants against their formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qkv.modules.feed_forward import FeedForward, GatedFeedForward, build_feed_forward


@pytest.mark.parametrize(
    "activation, fn",
    [("relu", torch.relu), ("gelu", lambda x: 0.5 * x * (1 + torch.erf(x / 2**0.5))),
     ("gelu_tanh", lambda x: 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x**3)))),
     ("silu", lambda x: x * torch.sigmoid(x))],
)
def test_feed_forward_formula(activation, fn):
    ff = FeedForward(6, 10, activation=activation).double()
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    want = fn(x @ ff.w1.weight.T + ff.w1.bias) @ ff.w2.weight.T + ff.w2.bias
    torch.testing.assert_close(ff(x), want)


def test_default_hidden_size_is_four_d():
    assert FeedForward(16).d_ff == 64
    assert GatedFeedForward(48).d_ff == 128  # 2/3 * 4 * 48 rounded up to a multiple of 8


def test_swiglu_formula():
    ff = build_feed_forward(6, 10, "swiglu")
    assert isinstance(ff, GatedFeedForward)
    x = torch.randn(2, 3, 6)
    torch.testing.assert_close(ff(x), ff.w2(F.silu(ff.w1(x)) * ff.w3(x)))


def test_unknown_activation_raises():
    with pytest.raises(ValueError, match="unknown activation 'tanhh'"):
        FeedForward(4, activation="tanhh")


def test_feed_forward_is_position_wise():
    ff = FeedForward(4, 8).eval()
    x = torch.randn(1, 5, 4)
    torch.testing.assert_close(ff(x)[:, 2], ff(x[:, 2:3])[:, 0])


@pytest.mark.parametrize("module", [FeedForward(3, 5, activation="gelu"), GatedFeedForward(3, 5)])
def test_gradcheck(module):
    x = torch.randn(2, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module.double(), (x,))
