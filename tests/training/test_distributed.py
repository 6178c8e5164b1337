"""Data parallelism: 2 CPU processes under torchrun (gloo), DDP and FSDP, == 1 process with the same global batch."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from qkv.training import Sharded, TrainConfig, Trainer, load_weights
from tests.training.training_fixtures import ShuffledBatches, TinyLM, lm_loss

ROOT = Path(__file__).resolve().parents[2]
STEPS = 5  # 6 batches per epoch, 2 per update: crosses an epoch boundary

SCRIPT = textwrap.dedent(
    f"""
    import json, sys
    import torch
    from qkv.training import Sharded, TrainConfig, Trainer, cleanup, init_distributed
    from tests.training.training_fixtures import ShuffledBatches, TinyLM, lm_loss

    info = init_distributed()
    assert info.world_size == 2, info
    out = {{}}
    for strategy in ("ddp", "fsdp"):
        torch.manual_seed(0)
        cfg = TrainConfig(steps={STEPS}, lr=3e-2, warmup=1, log_every=1, progress=False, device="cpu", precision="fp32",
                          out_dir=sys.argv[1] + "/" + strategy, fused=False, strategy=strategy)
        train = Sharded(ShuffledBatches(), info.rank, info.world_size)
        evals = Sharded(ShuffledBatches(seed=1), info.rank, info.world_size)
        trainer = Trainer(TinyLM(dropout=0.0), lm_loss, train, cfg, eval_data=evals, dist=info)
        result = trainer.fit()
        train_losses = [r["loss"] for r in trainer.writer.records if r["split"] == "train"]
        out[strategy] = {{"eval": result.evals[-1]["loss"], "train": train_losses}}
    if info.is_main:
        print(json.dumps(out), flush=True)
    cleanup()
    """
)


def test_sharded_drops_incomplete_round_and_forwards_epoch():
    data = ShuffledBatches(n_batches=5)
    shards = [list(Sharded(data, r, 2)) for r in range(2)]
    full = list(data)
    assert len(shards[0]) == len(shards[1]) == 2
    assert all(torch.equal(shards[r][i][0], full[2 * i + r][0]) for r in range(2) for i in range(2))
    Sharded(data, 1, 2).set_epoch(3)
    assert data.epoch == 3
    with pytest.raises(ValueError, match=r"rank \(2\).*world_size 2"):
        Sharded(data, 2, 2)


def test_two_processes_ddp_and_fsdp_match_one_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "--no-python", sys.executable, "-c", SCRIPT, str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])

    torch.manual_seed(0)
    cfg = TrainConfig(steps=STEPS, lr=3e-2, warmup=1, log_every=1, progress=False, device="cpu", precision="fp32",
                      grad_accum=2, fused=False)
    single = Trainer(TinyLM(dropout=0.0), lm_loss, ShuffledBatches(), cfg, eval_data=ShuffledBatches(seed=1))
    result = single.fit()
    train_losses = [r["loss"] for r in single.writer.records if r["split"] == "train"]

    for strategy in ("ddp", "fsdp"):
        parallel = TinyLM(dropout=0.0)
        load_weights(parallel, tmp_path / "ddp" / strategy)
        worst = max((a - b).abs().max().item()
                    for a, b in zip(single.model.parameters(), parallel.parameters(), strict=True))
        assert worst <= 1e-5, (strategy, worst)
        assert ddp[strategy]["eval"] == pytest.approx(result.evals[-1]["loss"], abs=1e-5), strategy
        assert ddp[strategy]["train"] == pytest.approx(train_losses, abs=1e-5), strategy


RESUME_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from qkv.training import Sharded, TrainConfig, Trainer, cleanup, init_distributed
    from tests.training.training_fixtures import ShuffledBatches, TinyLM, lm_loss

    info = init_distributed()
    out = {}

    def trainer(strategy, name):
        torch.manual_seed(0)
        cfg = TrainConfig(steps=4, lr=3e-2, warmup=1, log_every=1, progress=False, device="cpu", precision="fp32", fused=False,
                          strategy=strategy, out_dir=sys.argv[1] + "/" + strategy + "-" + name)
        return Trainer(TinyLM(dropout=0.0), lm_loss, Sharded(ShuffledBatches(), info.rank, info.world_size), cfg,
                       dist=info)

    def losses(t):
        return [r["loss"] for r in t.writer.records if r["split"] == "train"]

    for strategy in ("ddp", "fsdp"):
        straight = trainer(strategy, "straight")
        straight.fit()
        first = trainer(strategy, "resumed")
        first.fit(until=2)
        second = trainer(strategy, "resumed")
        second.resume(sys.argv[1] + "/" + strategy + "-resumed/latest")
        second.fit()
        out[strategy] = {"straight": losses(straight), "resumed": losses(first) + losses(second)}
    if info.is_main:
        print(json.dumps(out), flush=True)
    cleanup()
    """
)


def test_two_process_training_resumes_exactly_with_ddp_and_fsdp(tmp_path):
    # FSDP checkpoints hold the gathered weights and the gathered optimiser state (keyed by parameter name);
    # resuming shards both back: 2 steps + resume + 2 steps == 4 steps straight.
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "--no-python", sys.executable, "-c", RESUME_SCRIPT, str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    for strategy in ("ddp", "fsdp"):
        straight, resumed = out[strategy]["straight"], out[strategy]["resumed"]
        assert len(straight) == len(resumed) == 4, (strategy, straight, resumed)
        assert resumed == straight, strategy  # bit for bit on CPU
        a, b = TinyLM(dropout=0.0), TinyLM(dropout=0.0)
        load_weights(a, tmp_path / f"{strategy}-straight")
        load_weights(b, tmp_path / f"{strategy}-resumed")
        assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True)), strategy
