"""Evaluation never moves training's random streams: ``eval_every`` leaves the trained weights bit for bit as
they were, and a run stopped by its time limit (which evaluates before it stops) resumes bit-exactly."""

import torch
from torch.utils.data import DataLoader

from qkv.training import TrainConfig, Trainer
from tests.training.training_fixtures import ShuffledBatches, TinyLM, lm_loss


def _trainer(out_dir, *, eval_every=0, time_limit=None, steps=12) -> Trainer:
    torch.manual_seed(0)
    batches = ShuffledBatches(seed=1)
    # a torch DataLoader draws a seed from the global generator each time it is iterated
    eval_data = DataLoader(list(ShuffledBatches(n_batches=2, seed=2)), batch_size=None)
    cfg = TrainConfig(steps=steps, lr=1e-2, warmup=0, progress=False, device="cpu", eval_every=eval_every,
                      time_limit=time_limit, out_dir=str(out_dir), log_every=1)
    return Trainer(TinyLM(dropout=0.3), lm_loss, batches, cfg, eval_data=eval_data)


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_eval_every_does_not_change_the_trained_weights(tmp_path):
    plain = _trainer(tmp_path / "a")
    plain.fit()
    evaluating = _trainer(tmp_path / "b", eval_every=3)
    result = evaluating.fit()
    assert len(result.evals) == 4
    a, b = _weights(plain), _weights(evaluating)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_time_limit_stop_resumes_bit_exactly(tmp_path):
    whole = _trainer(tmp_path / "whole")
    whole.fit()
    stopped = _trainer(tmp_path / "cut", time_limit=1e-9)  # out of time after the first step
    first = stopped.fit()
    assert first.step == 1 and first.evals  # it evaluated before stopping
    resumed = _trainer(tmp_path / "cut")
    resumed.resume(tmp_path / "cut" / "latest")
    resumed.fit()
    a, b = _weights(whole), _weights(resumed)
    assert resumed.step == 12 and all(torch.equal(a[k], b[k]) for k in a)
