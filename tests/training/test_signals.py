"""SIGINT/SIGTERM during training: a checkpoint is written and the process exits cleanly."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from qkv.training import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import sys
    from qkv.training import TrainConfig, Trainer
    from tests.training.training_fixtures import ShuffledBatches, TinyLM, lm_loss

    def loss(model, batch):
        if trainer.step == 3:
            print("training", flush=True)  # the parent sends the signal now
        return lm_loss(model, batch)

    cfg = TrainConfig(steps=1_000_000, lr=1e-3, warmup=0, progress=False, device="cpu", out_dir=sys.argv[1])
    trainer = Trainer(TinyLM(), loss, ShuffledBatches(), cfg)
    result = trainer.fit()
    print(f"interrupted={result.interrupted} step={result.step} path={result.last_path.name}", flush=True)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_checkpoint_and_exits_cleanly(tmp_path, sig):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "training", proc.stderr.read()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    fields = dict(kv.split("=") for kv in out.splitlines()[-1].split())  # after the trainer's log lines
    assert fields["interrupted"] == "True"
    step = int(fields["step"])
    assert 3 <= step < 1_000_000
    loaded = load_checkpoint(tmp_path)  # through `latest`
    assert loaded.path.name == fields["path"] == f"step_{step:08d}"
    assert loaded.trainer_state["step"] == step
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers
