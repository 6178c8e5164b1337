"""EncoderModel: padding invariance, pooling, classification head, weights, bad input."""

from __future__ import annotations

import pytest
import torch

from qkv.models.config import EncoderConfig
from qkv.models.encoder import EncoderModel

V = 19


def _model(**kw) -> EncoderModel:
    cfg = dict(vocab_size=V, d_model=16, num_heads=4, num_layers=2, max_len=16, dropout=0.1, num_classes=3)
    return EncoderModel(EncoderConfig(**{**cfg, **kw})).eval()


@pytest.mark.parametrize("positional", ["sinusoidal", "learned", "rotary", "alibi"])
@pytest.mark.parametrize("norm_first", [False, True])
def test_padding_leaves_real_tokens_unchanged(positional, norm_first):
    model = _model(positional=positional, norm_first=norm_first)
    ids = torch.randint(1, V, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    assert (model(padded)[:, :6] - model(ids)).abs().max() <= 1e-5
    torch.testing.assert_close(model.classify(padded), model.classify(ids), atol=1e-5, rtol=1e-5)


def test_pooling():
    model = _model()
    h = torch.randn(2, 4, 16)
    real = torch.tensor([[True, True, False, False], [True, True, True, True]])
    torch.testing.assert_close(model.pool(h, real), torch.stack([h[0, :2].mean(0), h[1].mean(0)]))
    cls = _model(pooling="cls")
    torch.testing.assert_close(cls.pool(h, real), h[:, 0])


def test_weights_returned_per_layer():
    model = _model()
    ids = torch.randint(1, V, (2, 5))
    ids[1, 3:] = 0
    hidden, weights = model(ids, return_weights=True)
    torch.testing.assert_close(hidden, model(ids))
    assert len(weights) == 2 and weights[0].shape == (2, 4, 5, 5)
    assert torch.all(weights[0][1, :, :, 3:] == 0)  # padding gets no attention


def test_bad_input_raises_clear_errors():
    model = _model()
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 19\)"):
        model(torch.tensor([[3, 19]]))
    with pytest.raises(ValueError, match="too long: 17 tokens"):
        model(torch.ones(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="no classification head"):
        _model(num_classes=0).classify(torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="key_padding must be bool"):
        model(torch.ones(1, 3, dtype=torch.long), key_padding=torch.ones(1, 3))
