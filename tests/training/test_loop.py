"""The Trainer: learning, accumulation, bit-exact resumption, evaluation, best/early stop, logs."""

import json
import math

import pytest
import torch

from qkv.training import TrainConfig, Trainer, label_smoothed_nll, load_weights
from tests.training.training_fixtures import PAD, ShuffledBatches, TinyLM, lm_loss


def _cfg(tmp_path=None, **kw):
    base = dict(steps=10, lr=3e-2, warmup=2, log_every=1, progress=False, device="cpu",
                out_dir=str(tmp_path) if tmp_path else None, fused=False, precision="fp32")
    return TrainConfig(**{**base, **kw})


def _train_losses(trainer):
    return [r["loss"] for r in trainer.writer.records if r["split"] == "train"]


def test_training_lowers_the_loss():
    trainer = Trainer(TinyLM(), lm_loss, ShuffledBatches(), _cfg(steps=60, eval_every=60),
                      eval_data=ShuffledBatches(seed=1))
    before = trainer.evaluate()["loss"]
    result = trainer.fit()
    assert result.evals[-1]["loss"] < 0.6 * before, (before, result.evals)


def test_grad_accumulation_equals_one_big_batch():
    small = list(ShuffledBatches(n_batches=8, batch=3))
    big = [(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])) for a, b in zip(small[::2], small[1::2], strict=True)]
    models = []
    for data, accum in ((small, 2), (big, 1)):
        torch.manual_seed(0)
        model = TinyLM(dropout=0.0)
        Trainer(model, lm_loss, data, _cfg(steps=4, grad_accum=accum)).fit()
        models.append(model)
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("grad_accum", "until"), [(1, 4), (2, 5)])  # stop at / between evaluations
def test_resume_is_bit_exact(tmp_path, grad_accum, until):
    """2N steps in one go == N steps, checkpoint, fresh objects, resume, N steps (dropout on)."""
    kw = dict(steps=10, grad_accum=grad_accum, eval_every=4)  # 6 batches per epoch: crosses epochs
    torch.manual_seed(0)
    full = Trainer(TinyLM(), lm_loss, ShuffledBatches(), _cfg(tmp_path / "full", **kw),
                   eval_data=ShuffledBatches(seed=1))
    full.fit()

    torch.manual_seed(0)
    first = Trainer(TinyLM(), lm_loss, ShuffledBatches(), _cfg(tmp_path / "half", **kw),
                    eval_data=ShuffledBatches(seed=1))
    stopped = first.fit(until=until)
    assert stopped.step == until and not stopped.interrupted

    torch.manual_seed(123)  # a fresh process: other RNG state, other initial weights
    second = Trainer(TinyLM(), lm_loss, ShuffledBatches(), _cfg(tmp_path / "half", **kw),
                     eval_data=ShuffledBatches(seed=1))
    second.resume(tmp_path / "half")
    second.fit()
    assert _train_losses(first) + _train_losses(second) == _train_losses(full)
    for (name, a), b in zip(full.model.state_dict().items(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    for i, s in full.optimizer.state_dict()["state"].items():
        assert torch.equal(s["exp_avg_sq"], second.optimizer.state_dict()["state"][i]["exp_avg_sq"])


def test_evaluate_is_token_weighted_mean():
    model = TinyLM()
    data = ShuffledBatches(seed=3)
    trainer = Trainer(model, lm_loss, data, _cfg())
    metrics = trainer.evaluate() if trainer.eval_data else None
    assert metrics is None  # nothing to evaluate on
    trainer.eval_data = data
    metrics = trainer.evaluate()
    model.eval()
    with torch.no_grad():
        total, n = 0.0, 0
        for x, y in data:
            s, k = label_smoothed_nll(model(x), y, smoothing=0.1, ignore_index=PAD)
            total, n = total + s.item(), n + k.item()
    assert metrics["tokens"] == n == int((data.y != PAD).sum())
    assert metrics["loss"] == pytest.approx(total / n, rel=1e-6)
    assert metrics["ppl"] == pytest.approx(math.exp(total / n), rel=1e-6)


def test_best_checkpoint_and_early_stopping(tmp_path):
    scores = iter([0.1, 0.5, 0.3, 0.2, 0.4, 0.9])
    trainer = Trainer(TinyLM(), lm_loss, ShuffledBatches(), _cfg(
        tmp_path, steps=30, eval_every=2, monitor="acc", mode="max", patience=2, keep_last=2),
        metric_fn=lambda model: {"acc": next(scores)})
    result = trainer.fit()
    assert result.stopped_early and result.step == 8  # best at step 4, then two evaluations worse
    assert result.best == 0.5 and result.best_path.name == "step_00000004"
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_00000004", "step_00000006", "step_00000008"]
    assert (tmp_path / "latest").resolve().name == "step_00000008"
    fresh = TinyLM()
    load_weights(fresh, result.best_path)


def test_time_limit_ends_like_the_last_step(tmp_path):
    # Out of time after the first step: a final evaluation picks the best checkpoint; averaging needs two.
    scores = iter([0.7])
    result = Trainer(TinyLM(), lm_loss, ShuffledBatches(), _cfg(
        tmp_path, steps=30, eval_every=10, monitor="acc", mode="max", time_limit=1e-9, average_last=3),
        metric_fn=lambda model: {"acc": next(scores)}).fit()
    assert result.step == 1 and not result.interrupted and result.best == 0.7
    assert result.best_path.name == "step_00000001" and result.averaged_path is None
    # Resumed with time to spare for two more steps' worth of checkpoints, then out of time again.
    trainer = Trainer(TinyLM(), lm_loss, ShuffledBatches(), _cfg(
        tmp_path, steps=30, eval_every=1, monitor="acc", mode="max", time_limit=1e-9, average_last=3),
        metric_fn=lambda model: {"acc": 0.1})
    trainer.resume(tmp_path / "latest")
    result = trainer.fit()
    assert result.step == 2 and result.averaged_path == tmp_path / "averaged"
    averaged = json.loads((tmp_path / "averaged" / "checkpoint.json").read_text())["trainer"]["averaged_from"]
    assert len(averaged) == 2  # the two there are, not the three asked for


def test_a_signal_only_saves(tmp_path):
    trainer = Trainer(TinyLM(), lm_loss, ShuffledBatches(), _cfg(tmp_path, steps=30, eval_every=10),
                      metric_fn=lambda model: pytest.fail("evaluated after a signal"))
    trainer._stop_signal = 15  # as the SIGTERM handler sets it
    result = trainer.fit()
    assert result.step == 1 and result.interrupted and result.best is None
    assert (tmp_path / "latest").resolve().name == "step_00000001"


def test_monitor_missing_names_the_metrics():
    trainer = Trainer(TinyLM(), lm_loss, ShuffledBatches(), _cfg(steps=2, eval_every=1, monitor="bleu"),
                      eval_data=ShuffledBatches())
    with pytest.raises(KeyError, match="bleu.*'loss', 'ppl', 'tokens'"):
        trainer.fit()


def test_metrics_files_and_averaging(tmp_path):
    result = Trainer(TinyLM(), lm_loss, ShuffledBatches(), _cfg(
        tmp_path, steps=6, log_every=2, eval_every=2, average_last=3),
        eval_data=ShuffledBatches(seed=1)).fit()
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["split"] == "train"] == [2, 4, 6]
    assert [r["step"] for r in lines if r["split"] == "eval"] == [2, 4, 6]
    header = (tmp_path / "metrics_train.csv").read_text().splitlines()[0].split(",")
    assert {"step", "loss", "lr", "tokens_per_s", "grad_norm"} <= set(header)
    assert len((tmp_path / "metrics_eval.csv").read_text().splitlines()) == 4
    assert all(r["tokens_per_s"] > 0 for r in lines if r["split"] == "train")
    assert result.averaged_path == tmp_path / "averaged"
    assert len(json.loads((tmp_path / "averaged" / "checkpoint.json").read_text())["trainer"]["averaged_from"]) == 3


def test_bf16_autocast_is_used_and_learns():
    dtypes = []

    def loss(model, batch):
        logits = model(batch[0])
        dtypes.append(logits.dtype)
        total, n = label_smoothed_nll(logits, batch[1], ignore_index=PAD)
        return total / n.clamp(min=1), n

    trainer = Trainer(TinyLM(), loss, ShuffledBatches(), _cfg(steps=25, precision="bf16"),
                      eval_data=ShuffledBatches(seed=1))
    before = trainer.evaluate()["loss"]
    after = trainer.fit().evals[-1]["loss"]
    assert set(dtypes) == {torch.bfloat16}
    assert trainer.model.embed.weight.dtype == torch.float32  # master weights stay fp32
    assert after < 0.8 * before


def test_config_validation_prints_values():
    with pytest.raises(ValueError, match="'fp8' is not one of auto, fp32, bf16, fp16"):
        TrainConfig(precision="fp8")
    with pytest.raises(ValueError, match="d_model"):
        TrainConfig(schedule="inverse_sqrt")
    with pytest.raises(ValueError, match=r"\['lrr'\]"):
        TrainConfig.from_dict({"lrr": 1.0})
    cfg = TrainConfig(steps=3, betas=[0.9, 0.99])
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_empty_training_data_is_an_error():
    with pytest.raises(ValueError, match="no batches"):
        Trainer(TinyLM(), lm_loss, [], _cfg(steps=1)).fit()


def test_attention_backend_is_applied_during_steps_and_restored():
    seen = []

    def loss(model, batch):
        seen.append((torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.math_sdp_enabled()))
        return lm_loss(model, batch)

    before = torch.backends.cuda.flash_sdp_enabled()
    Trainer(TinyLM(), loss, ShuffledBatches(), _cfg(steps=2, attention_backend="math"),
            eval_data=ShuffledBatches(n_batches=1)).fit()
    assert seen and set(seen) == {(False, True)}  # training and evaluation steps
    assert torch.backends.cuda.flash_sdp_enabled() == before
    with pytest.raises(ValueError, match="'fast'"):
        TrainConfig(attention_backend="fast")


@pytest.mark.slow
def test_compiled_step_matches_eager():
    losses = []
    for compile_ in (False, True):
        torch.manual_seed(0)
        trainer = Trainer(TinyLM(dropout=0.0), lm_loss, ShuffledBatches(), _cfg(steps=4, compile=compile_))
        trainer.fit()
        losses.append(_train_losses(trainer))
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_fused_optimizer_takes_the_gradient_scale_and_clip(grad_accum):
    """With fused AdamW the 1/tokens scale and the clip factor go into the optimizer's grad_scale instead of
    two passes over the gradients: same parameters and logged norms as the explicit path (foreach AdamW)."""
    models, norms = [], []
    for fused in (True, False):
        torch.manual_seed(0)
        model = TinyLM(dropout=0.0)
        trainer = Trainer(model, lm_loss, ShuffledBatches(n_batches=12, batch=3),
                          _cfg(steps=5, grad_accum=grad_accum, grad_clip=0.05, fused=fused, fused_grad_scale=fused))
        trainer.fit()
        assert (getattr(trainer.optimizer, "grad_scale", None) is not None) == fused
        models.append(model)
        norms.append([r["grad_norm"] for r in trainer.writer.records if r["split"] == "train"])
    assert all(n > 0.05 for n in norms[0])  # the clip was active on every step
    torch.testing.assert_close(torch.tensor(norms[0]), torch.tensor(norms[1]), rtol=1e-4, atol=0)
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-5)
