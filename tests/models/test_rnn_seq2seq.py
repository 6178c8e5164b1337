"""RNNSeq2Seq: step-wise decoding == teacher forcing, attention weights, padding invariance, baseline."""

from __future__ import annotations

import pytest
import torch

from qkv.models.config import RNNSeq2SeqConfig
from qkv.models.rnn_seq2seq import RNNSeq2Seq

V = 12


def _model(**kw) -> RNNSeq2Seq:
    cfg = dict(src_vocab_size=V, embed_dim=8, hidden_size=12, attention_dim=10, dropout=0.2)
    return RNNSeq2Seq(RNNSeq2SeqConfig(**{**cfg, **kw})).eval()


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("attention", [True, False])
def test_decode_steps_equal_teacher_forcing(cell, attention):
    model = _model(cell=cell, attention=attention, num_layers=2)
    src, tgt = torch.randint(1, V, (3, 6)), torch.randint(1, V, (3, 4))
    src[1, 4:] = 0
    full = model(src, tgt)
    state = model.encode(src)
    steps = []
    for t in range(4):
        logits, state, w = model.decode_step(tgt[:, t], state)
        steps.append(logits)
        assert (w is None) == (not attention)
    torch.testing.assert_close(torch.stack(steps, dim=1), full)


def test_attention_weights_are_a_distribution_over_real_tokens():
    model = _model()
    src, tgt = torch.randint(1, V, (2, 6)), torch.randint(1, V, (2, 3))
    src[0, 3:] = 0
    _, w = model(src, tgt, return_weights=True)
    assert w.shape == (2, 3, 6)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3))
    assert torch.all(w[0, :, 3:] == 0)


@pytest.mark.parametrize("attention", [True, False])
def test_source_padding_leaves_outputs_unchanged(attention):
    model = _model(attention=attention, cell="lstm")
    src, tgt = torch.randint(1, V, (1, 5)), torch.randint(1, V, (1, 4))
    padded = torch.cat([src, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    batch = torch.cat([padded, torch.randint(1, V, (1, 8))])  # a longer neighbour in the batch
    out = model(batch, torch.cat([tgt, tgt]))
    assert (out[:1] - model(src, tgt)).abs().max() <= 1e-5


def test_baseline_sees_only_the_final_state():
    """Without attention, the decoder depends on the source only through the fixed context and s_0."""
    model = _model(attention=False)
    assert model.attention is None
    state = model.encode(torch.randint(1, V, (2, 5)))
    assert state.keys_proj is None and state.context.shape == (2, 24)


def test_state_select_for_beams():
    model = _model()
    state = model.encode(torch.randint(1, V, (2, 5)))
    picked = state.select(torch.tensor([1, 1, 0]))
    assert picked.hidden.shape == (1, 3, 12) and picked.memory.shape == (3, 5, 24)
    torch.testing.assert_close(picked.memory[0], state.memory[1])


def test_bad_input_raises_clear_errors():
    model = _model()
    with pytest.raises(ValueError, match=r"src must lie in \[0, 12\)"):
        model.encode(torch.tensor([[1, 12]]))
    with pytest.raises(ValueError, match="at least one real token"):
        model.encode(torch.tensor([[0, 0], [1, 2]]))
    with pytest.raises(ValueError, match="tgt_in must be"):
        model(torch.ones(2, 3, dtype=torch.long), torch.ones(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="cell must be"):
        _model(cell="rnn")
    with pytest.raises(ValueError, match="needs a model built with attention"):
        _model(attention=False)(torch.ones(1, 3, dtype=torch.long), torch.ones(1, 2, dtype=torch.long),
                                return_weights=True)
