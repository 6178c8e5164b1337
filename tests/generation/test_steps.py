"""select_state on every kind of decoding state, and context_length."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qkv.generation import context_length, select_state
from qkv.modules import KVCache, LayerCache
from tests.generation import tiny


@dataclass
class _Frozen:
    h: torch.Tensor  # (N, B, H): batch on dim 1, so it needs its own select

    def select(self, index):
        return _Frozen(self.h[:, index])


def test_select_state_walks_nested_states():
    cache = KVCache(4, 1, 3, 2)
    cache.update(torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 1, 2).contiguous(), torch.zeros(4, 1, 1, 2))
    state = {
        "layers": [LayerCache(cache, None)],
        "rnn": _Frozen(torch.arange(8.0).view(2, 4, 1)),
        "memory": torch.arange(4.0)[:, None],
        "step": 3,
    }
    index = torch.tensor([3, 3, 1])
    out = select_state(state, index)
    assert out["layers"][0].self_attn is cache and cache.batch_size == 3
    assert cache.get()[0][:, 0, 0, 0].tolist() == [3.0, 3.0, 1.0]
    assert out["rnn"].h[:, :, 0].tolist() == [[3.0, 3.0, 1.0], [7.0, 7.0, 5.0]]
    assert out["memory"][:, 0].tolist() == [3.0, 3.0, 1.0] and out["step"] == 3
    assert isinstance(out["layers"][0], LayerCache)


def test_context_length_reads_the_config():
    assert context_length(tiny.decoder(max_len=24)) == 24
    assert context_length(tiny.decoder(positional="none", max_len=24)) is None
    assert context_length(tiny.LinearLM()) is None


def test_kept_weights_match_teacher_forced_attention():
    """``keep_weights``: each step's last-query attention equals the row of the full teacher-forced maps."""
    from qkv.generation import DecoderStepper, EncoderDecoderStepper
    from tests.generation.tiny import decoder, seq2seq

    lm = decoder()
    ids = torch.randint(4, 13, (2, 5))
    stepper = DecoderStepper(lm, ids, max_new_tokens=3, keep_weights=True)
    stepper.start()
    nxt = torch.tensor([5, 6])
    stepper.step(nxt)
    _, full = lm(torch.cat([ids, nxt[:, None]], 1), return_weights=True)
    for kept, ref in zip(stepper.weights, full, strict=True):
        torch.testing.assert_close(kept, ref[:, :, -1])  # (B, H, S)

    mt = seq2seq()
    src, mask = torch.randint(4, 13, (2, 6)), torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    stepper = EncoderDecoderStepper(mt, src, mask, bos_id=1, max_len=4, keep_weights=True)
    stepper.start()
    stepper.step(nxt)
    _, full = mt(src, torch.tensor([[1, 5], [1, 6]]), mask, return_weights=True)
    for kept, ref in zip(stepper.weights, full["cross"], strict=True):
        torch.testing.assert_close(kept, ref[:, :, -1])
    assert float(stepper.weights[0][1, :, 4:].abs().max()) == 0.0  # padded source keys get no weight
