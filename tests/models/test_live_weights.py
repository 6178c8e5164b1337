"""Evaluation and decoding see the live weights, however they changed (issue 17, item 1).

Each way of changing weights is followed by a no-grad evaluation and greedy decoding, compared with a
fresh model holding the same weights. The feed-forward matrices (256 x 1024) are large enough for the
decoding copies of qkv.generation to apply.
"""

import pytest
import torch
from torch import nn

from qkv.generation import generate
from qkv.models import DecoderConfig, DecoderModel
from qkv.training import TrainConfig, Trainer

VOCAB = 50


def _lm(seed: int = 0) -> DecoderModel:
    torch.manual_seed(seed)
    cfg = DecoderConfig(vocab_size=VOCAB, d_model=256, num_heads=4, num_layers=1, max_len=32, dropout=0.0)
    return DecoderModel(cfg).eval()


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    model.train()
    ids = torch.randint(0, VOCAB, (4, 12))
    logits = model(ids[:, :-1])
    torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1)).backward()
    optimizer.step()
    optimizer.zero_grad()
    model.eval()


def _optimizer_step(**kw):
    def change(model: nn.Module) -> None:
        _train_step(model, torch.optim.AdamW(model.parameters(), lr=1e-2, **kw))
    return change


def _load_state_dict(model: nn.Module) -> None:
    model.load_state_dict(_lm(seed=1).state_dict())


def _assign_data(model: nn.Module) -> None:
    for p in model.parameters():
        p.data = torch.randn_like(p) * 0.05


def _new_parameters(model: nn.Module) -> None:
    for module in list(model.modules()):
        for name, p in list(module.named_parameters(recurse=False)):
            setattr(module, name, nn.Parameter(torch.randn_like(p) * 0.05))


def _in_place_no_grad(model: nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(-1.5)


CHANGES = {
    "adamw_fused": _optimizer_step(fused=True),
    "adamw_foreach": _optimizer_step(foreach=True),
    "adamw_for_loop": _optimizer_step(foreach=False, fused=False),
    "load_state_dict": _load_state_dict,
    "data_assignment": _assign_data,
    "new_parameter": _new_parameters,
    "in_place_no_grad": _in_place_no_grad,
}


def _fresh_copy(model: DecoderModel) -> DecoderModel:
    fresh = DecoderModel(model.config).eval()
    fresh.load_state_dict(model.state_dict())
    return fresh


@pytest.mark.parametrize("change", list(CHANGES))
def test_evaluation_and_decoding_after_a_weight_change_equal_a_fresh_model(change):
    model = _lm()
    ids = torch.randint(1, VOCAB, (2, 6))
    for _ in range(2):  # decode and evaluate before the change (where a cache would be filled)
        generate(model, ids, max_new_tokens=4)
        with torch.no_grad():
            model(ids)
    CHANGES[change](model)
    fresh = _fresh_copy(model)
    with torch.no_grad():
        torch.testing.assert_close(model(ids), fresh(ids), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(ids[:1, :1]), fresh(ids[:1, :1]), atol=1e-5, rtol=1e-5)
    assert torch.equal(generate(model, ids, max_new_tokens=6), generate(fresh, ids, max_new_tokens=6))
    assert torch.equal(generate(model, ids[:1], max_new_tokens=6), generate(fresh, ids[:1], max_new_tokens=6))


class _Batches:
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.batches = [torch.randint(1, VOCAB, (4, 13), generator=g) for _ in range(n)]

    def __iter__(self):
        return iter([(b[:, :-1], b[:, 1:]) for b in self.batches])

    def __len__(self) -> int:
        return len(self.batches)


def _loss(model: nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = batch
    return torch.nn.functional.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1)), torch.tensor(y.numel())


def test_in_training_evaluation_equals_a_fresh_evaluation_of_the_same_weights():
    """The trainer's evaluation at every step (fused AdamW, the CPU default) == a fresh model's."""
    eval_data = _Batches(2, seed=1)

    def fresh_loss(model: nn.Module) -> dict[str, float]:
        fresh = _fresh_copy(model)
        with torch.no_grad():
            losses = [_loss(fresh, b)[0] for b in eval_data]
        return {"fresh_loss": float(torch.stack(losses).mean())}

    cfg = TrainConfig(steps=3, lr=1e-2, warmup=0, eval_every=1, log_every=1, progress=False, device="cpu",
                      precision="fp32", fused=True)
    result = Trainer(_lm(), _loss, _Batches(3, seed=0), cfg, eval_data=eval_data, metric_fn=fresh_loss).fit()
    assert len(result.evals) >= 3
    for ev in result.evals:
        assert ev["loss"] == pytest.approx(ev["fresh_loss"], rel=1e-5)
