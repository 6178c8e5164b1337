"""``TrainConfig.batch_split``: a micro-batch's parts computed at once on CPU threads (qkv.training.split)."""

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from qkv.training import TrainConfig, Trainer
from qkv.training.split import split_batch
from tests.training.training_fixtures import ShuffledBatches, TinyLM, lm_loss


def _cfg(tmp_path=None, **kw):
    base = dict(steps=6, lr=3e-2, warmup=2, log_every=1, progress=False, device="cpu",
                out_dir=str(tmp_path) if tmp_path else None, fused=False, precision="fp32")
    return TrainConfig(**{**base, **kw})


def _train(split, *, compile=False, batch=6, grad_accum=1, dropout=0.0, steps=6, **kw):
    torch.manual_seed(0)
    model = TinyLM(dropout=dropout)
    trainer = Trainer(model, lm_loss, ShuffledBatches(batch=batch),
                      _cfg(steps=steps, batch_split=split, compile=compile, grad_accum=grad_accum, **kw))
    trainer.fit()
    return trainer


def _assert_params_close(a, b, atol):
    for (name, x), y in zip(a.model.named_parameters(), b.model.parameters(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=atol, msg=name)


@pytest.mark.parametrize("grad_accum", [1, 2])
@pytest.mark.parametrize("parts", [2, 3])
def test_a_split_step_is_the_unsplit_update(parts, grad_accum):
    """Parts weighted by their token counts (padding makes the counts differ) = the whole batch's update; a
    batch of 6 rows in 3 parts; against the unsplit trainer, which is the reference."""
    whole, split = _train(1, grad_accum=grad_accum), _train(parts, grad_accum=grad_accum)
    assert split.batch_split == parts
    _assert_params_close(whole, split, atol=1e-5)
    losses = [[r["loss"] for r in t.writer.records if r["split"] == "train"] for t in (whole, split)]
    torch.testing.assert_close(torch.tensor(losses[0]), torch.tensor(losses[1]), rtol=1e-5, atol=0)


def test_a_split_step_under_torch_compile_is_the_unsplit_update():
    _assert_params_close(_train(1, compile=True), _train(2, compile=True), atol=1e-5)


def test_split_runs_are_bit_identical_and_restore_the_thread_count():
    threads = torch.get_num_threads()
    a, b = _train(2), _train(2)
    for x, y in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(x, y)
    assert torch.get_num_threads() == threads


def test_resume_with_a_split_is_bit_exact(tmp_path):
    kw = dict(steps=8, eval_every=4, batch_split=2)
    torch.manual_seed(0)
    full = Trainer(TinyLM(dropout=0.0), lm_loss, ShuffledBatches(), _cfg(tmp_path / "full", **kw),
                   eval_data=ShuffledBatches(seed=1))
    full.fit()
    torch.manual_seed(0)
    first = Trainer(TinyLM(dropout=0.0), lm_loss, ShuffledBatches(), _cfg(tmp_path / "half", **kw),
                    eval_data=ShuffledBatches(seed=1))
    first.fit(until=5)
    torch.manual_seed(7)
    second = Trainer(TinyLM(dropout=0.0), lm_loss, ShuffledBatches(), _cfg(tmp_path / "half", **kw),
                     eval_data=ShuffledBatches(seed=1))
    second.resume(tmp_path / "half")
    second.fit()
    for x, y in zip(full.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(x, y)


def test_auto_trains_unsplit_when_the_step_draws_random_numbers():
    """Dropout: auto falls back to one thread without a trace (the same run as batch_split 1, bit for bit);
    an explicit split is refused."""
    auto, whole = _train("auto", dropout=0.1), _train(1, dropout=0.1)
    assert auto.batch_split == 1
    for x, y in zip(auto.model.parameters(), whole.model.parameters(), strict=True):
        assert torch.equal(x, y)
    with pytest.raises(ValueError, match=r"batch_split=2: the training step draws random numbers \(dropout\)"):
        _train(2, dropout=0.1)


def test_auto_splits_over_torch_threads_on_the_cpu(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    trainer = Trainer(TinyLM(dropout=0.0), lm_loss, ShuffledBatches(), _cfg(batch_split="auto"))
    assert trainer.batch_split == 3


@pytest.mark.parametrize("bad", [0, -2, "two", 1.5, True])
def test_bad_batch_split_values_name_the_key(bad):
    with pytest.raises(ValueError, match="batch_split must be 'auto' or an integer >= 1, got"):
        TrainConfig(batch_split=bad)


@dataclass
class _Pair:
    ids: torch.Tensor
    labels: torch.Tensor
    note: str = "kept"


def test_split_batch_cuts_every_tensor_along_the_batch_dimension():
    x, y = torch.arange(10).view(5, 2), torch.arange(5)
    parts = split_batch({"pair": _Pair(x, y), "t": (x, 3)}, 2)
    assert [p["pair"].ids.tolist() for p in parts] == [x[:3].tolist(), x[3:].tolist()]
    assert [p["pair"].labels.tolist() for p in parts] == [[0, 1, 2], [3, 4]]
    assert all(p["pair"].note == "kept" and p["t"][1] == 3 for p in parts)
    assert len(split_batch((x[:1], y[:1]), 4)) == 1  # never an empty part
    with pytest.raises(ValueError, match=r"share one leading \(batch\) dimension, got leading sizes \[3, 5\]"):
        split_batch((x, y[:3]), 2)


SPLIT_VS_EAGER = """
import torch
from tests.training.test_batch_split import _train
torch.set_num_threads(1)
ref, split = _train(1), _train(2, compile=True)
err = max((a - b).abs().max().item() for a, b in zip(ref.model.parameters(), split.model.parameters()))
print(torch.backends.cpu.get_cpu_capability(), err)
"""


@pytest.mark.slow
def test_split_compilations_are_not_reused_across_instruction_sets(tmp_path):
    """A native run then an AVX2 run sharing inductor's cache: the split's worker threads compile under the
    instruction-set tag too (without it the AVX2 run loaded the native kernels and trained to NaN)."""
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path)
    root = Path(__file__).resolve().parents[2]
    seen = []
    for extra in ({}, {"ATEN_CPU_CAPABILITY": "avx2"}):  # the first run fills the cache the second one reads
        run = subprocess.run([sys.executable, "-c", SPLIT_VS_EAGER], env={**env, **extra}, cwd=root,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-2000:]
        isa, err = run.stdout.split()[-2:]
        seen.append(isa)
        assert float(err) < 1e-5, f"compiled split training under {isa} differs from eager by {err}"
    if seen[0] == seen[1]:
        pytest.skip(f"this CPU has no wider instruction set than AVX2 to share the cache with (got {seen})")


class _Movable:
    def __init__(self) -> None:
        self.moved_to = None

    def to(self, device):
        self.moved_to = str(device)
        return self


def test_to_device_and_split_batch_walk_the_same_structures():
    """One walker (qkv.training.runtime.map_tensors) serves both: tensors in dicts, tuples, namedtuples and
    dataclasses are mapped; other objects with .to() are moved by to_device and repeated by split_batch."""
    from collections import namedtuple

    from qkv.training.runtime import to_device

    Pair = namedtuple("Pair", "a b")
    other = _Movable()
    batch = {"p": Pair(torch.zeros(4, 2), [torch.ones(4)]), "d": _Pair(torch.zeros(4, 1), torch.ones(4)), "o": other}
    moved = to_device(batch, torch.device("cpu"))
    assert type(moved["p"]) is Pair and type(moved["d"]) is _Pair and other.moved_to == "cpu"
    parts = split_batch(batch, 2)
    assert [p["p"].b[0].shape[0] for p in parts] == [2, 2] and all(p["o"] is other for p in parts)
