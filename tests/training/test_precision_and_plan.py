"""The trainer's precision (``auto`` resolved once on the device) and its time-fitted schedule plan."""

import json

import pytest
import torch

from qkv import hardware
from qkv.training import TrainConfig, Trainer, label_smoothed_nll, schedule_fn
from qkv.training.plan import steps_that_fit
from tests.training.training_fixtures import PAD, ShuffledBatches, TinyLM, lm_loss


def _cfg(tmp_path=None, **kw):
    base = dict(steps=10, lr=3e-2, warmup=2, log_every=1, progress=False, device="cpu",
                out_dir=str(tmp_path) if tmp_path else None, fused=False)
    return TrainConfig(**{**base, **kw})


def _dtype_seen(cfg):
    seen = []

    def loss(model, batch):
        logits = model(batch[0])
        seen.append(logits.dtype)
        total, n = label_smoothed_nll(logits, batch[1], ignore_index=PAD)
        return total / n.clamp(min=1), n

    trainer = Trainer(TinyLM(), loss, ShuffledBatches(), cfg)
    trainer.fit()
    return trainer, set(seen)


def test_auto_is_the_default_and_resolves_as_the_hardware_says(tmp_path):
    assert TrainConfig().precision == "auto"
    trainer, seen = _dtype_seen(_cfg(tmp_path, steps=2))
    expected = hardware.resolve_precision("auto", "cpu")
    assert trainer.precision == expected
    assert seen == {torch.bfloat16 if expected == "bf16" else torch.float32}
    run = [r for r in trainer.writer.records if r["split"] == "run"]
    assert run == [{"split": "run", "step": 0, "precision": expected, "requested": "auto", "device": "cpu"}]
    saved = json.loads((tmp_path / "latest" / "checkpoint.json").read_text())["trainer"]
    assert saved["precision"] == expected and saved["config"]["precision"] == "auto"


def test_auto_is_fp32_on_an_avx2_cpu(monkeypatch):
    monkeypatch.setenv("QKV_CPU_ISA", "avx2")
    trainer, seen = _dtype_seen(_cfg(steps=2))
    assert trainer.precision == "fp32" and seen == {torch.float32}


def test_bad_precision_and_fp16_off_cuda_are_clear_errors():
    with pytest.raises(ValueError, match="precision 'half' is not one of auto, fp32, bf16, fp16"):
        TrainConfig(precision="half")
    with pytest.raises(ValueError, match="'fp16' needs a CUDA device"):
        Trainer(TinyLM(), lm_loss, ShuffledBatches(), _cfg(precision="fp16"))


def test_steps_that_fit():
    assert steps_that_fit(100.0, 0.5, done=20, most=1000) == 20 + 180  # 90% of 100 s at 0.5 s per step
    assert steps_that_fit(100.0, 0.01, done=20, most=1000) == 1000  # capped at the configured steps
    assert steps_that_fit(-3.0, 0.5, done=20, most=1000) == 21  # out of time: one more step
    with pytest.raises(ValueError, match="seconds_per_step"):
        steps_that_fit(1.0, 0.0, done=0, most=1)


def test_fit_schedule_needs_a_time_limit():
    with pytest.raises(ValueError, match="fit_schedule needs a time_limit"):
        TrainConfig(fit_schedule=True)


def test_time_fitted_schedule_completes_within_the_limit(tmp_path):
    cfg = _cfg(tmp_path, steps=1_000_000, warmup=10, plan_after=10, time_limit=3.0, fit_schedule=True,
               log_every=50, precision="fp32", min_lr_ratio=0.05)
    trainer = Trainer(TinyLM(), lm_loss, ShuffledBatches(), cfg)
    result = trainer.fit()
    planned = trainer.planned_steps
    assert planned is not None and 10 < planned < cfg.steps
    plan = [r for r in trainer.writer.records if r["split"] == "plan"]
    assert len(plan) == 1 and plan[0]["step"] == 10 and plan[0]["planned_steps"] == planned
    # The schedule reached its end (the learning rate's floor) where the run ended, unless a descheduled
    # process ran past its time limit (then it stopped at the limit, with a checkpoint).
    if result.step == planned:
        assert trainer.scheduler.get_last_lr()[0] == pytest.approx(cfg.lr * cfg.min_lr_ratio)
    else:
        assert trainer._timed_out and result.step < planned


def test_resume_continues_the_plan_bit_exactly(tmp_path):
    """A run planned at step 4, stopped at 6 and resumed ends where one run planned the same way ends."""
    kw = dict(steps=50, warmup=4, plan_after=4, time_limit=600.0, fit_schedule=True, precision="fp32")
    torch.manual_seed(0)
    first = Trainer(TinyLM(), lm_loss, ShuffledBatches(), _cfg(tmp_path / "half", **kw))
    first.fit(until=6)
    planned = first.planned_steps
    assert planned == 50  # 600 s hold all 50 steps
    torch.manual_seed(123)
    second = Trainer(TinyLM(), lm_loss, ShuffledBatches(), _cfg(tmp_path / "half", **kw))
    second.resume(tmp_path / "half" / "latest")
    assert second.planned_steps == planned
    second.fit()

    torch.manual_seed(0)
    straight = Trainer(TinyLM(), lm_loss, ShuffledBatches(), _cfg(tmp_path / "full", **{**kw, "fit_schedule": False}))
    straight.plan(planned)
    straight.fit()
    assert second.step == straight.step == planned
    for a, b in zip(second.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_short_plan_keeps_a_complete_cosine(tmp_path):
    trainer = Trainer(TinyLM(), lm_loss, ShuffledBatches(), _cfg(steps=1000, warmup=100, min_lr_ratio=0.05))
    trainer.plan(40)  # a slow machine: 40 steps fit; the warm-up shrinks to a fifth of them
    lrs = []
    for _ in range(40):
        lrs.append(trainer.optimizer.param_groups[0]["lr"])  # the rate of the next update
        trainer.train_step()
    expected = schedule_fn("cosine", warmup=8, total=40, min_ratio=0.05)
    assert lrs == pytest.approx([3e-2 * expected(s) for s in range(40)])
    assert trainer.scheduler.get_last_lr()[0] == pytest.approx(3e-2 * 0.05)
    with pytest.raises(ValueError, match=r"planned steps \(0\)"):
        trainer.plan(0)
