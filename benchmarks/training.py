"""Tokens/s of qkv's Trainer vs a plain eager fp32 nanoGPT-style loop, same model, same batches.

Question: how much faster does qkv's trainer at its defaults (precision ``auto``: bf16 autocast where this
CPU multiplies bf16 natively, fp32 elsewhere; attention through qkv's dispatcher; fused AdamW; no per-step
host syncs; the step compiled by torch.compile), plus one opt-in (``fused_grad_scale=True``: the fused AdamW
step applies the gradient scale and clip itself, where the default clips with ``clip_grad_norm_``), train the
char-level GPT of nanoGPT's CPU recipe (4 layers, d 128, 4 heads, block 64, batch 12, vocab 65) than the loop
nanoGPT's train.py runs, and is its validation loss no worse after the same number of steps? The two loops
run interleaved, chunk by chunk, in one process, so load from other processes hits both alike; the JSON
reports medians of per-chunk tokens/s and their ratio (the first chunk, with the compilation, is reported
apart), the precision ``auto`` resolved to and the CPU class (``qkv.hardware``). On a shared machine pass
``--threads 1``: with more OpenMP threads than free cores, both loops slow down ten-fold. Figures: README
("Speed"), per CPU class.
Run: ``python benchmarks/training.py [--quick] [--steps N] [--threads T] [--precision P]``;
writes benchmarks/results/training_<CPU class>_t<threads>.json. ``--ddp 2`` instead runs qkv's trainer as two one-thread DDP
processes (torchrun, gloo; each takes half of every global batch of 12) against the plain loop with
torch's threads: two cores either way (plain loop timed before and after; benchmarks/results/training_ddp.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402

import qkv.kernels  # noqa: E402
from qkv.hardware import capabilities  # noqa: E402
from qkv.models import DecoderModel  # noqa: E402
from qkv.models.registry import config as model_config  # noqa: E402
from qkv.training import TrainConfig, Trainer  # noqa: E402
from qkv.training.losses import lm_loss  # noqa: E402

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"


@dataclass(frozen=True)
class Case:
    n_layer: int = 4
    d_model: int = 128
    n_head: int = 4
    block: int = 64
    batch: int = 12
    steps: int = 400
    chunk: int = 25
    lr: float = 1e-3
    warmup: int = 40
    weight_decay: float = 0.1
    eval_batches: int = 40
    seed: int = 1337
    precision: str = "auto"  # the Trainer's default: resolved by qkv.hardware.resolve_precision
    compile: bool = True  # one graph per step (attention included where a qkv kernel serves it)
    attention: str | None = None  # an SDPA backend to restrict to (then no qkv kernel is asked); plain: torch's
    batch_split: int | str = 1  # the trainer's default; N: parts of each batch computed at once on N threads


def load_text() -> tuple[str, str]:
    """Tiny Shakespeare if present, else generated text over the same 65-character alphabet size."""
    if SHAKESPEARE.is_file():
        return SHAKESPEARE.read_text(encoding="utf-8"), "tinyshakespeare"
    g = torch.Generator().manual_seed(0)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'-\n&$3"
    words = ["".join(alphabet[i] for i in torch.randint(0, 52, (int(n),), generator=g))
             for n in torch.randint(1, 8, (5000,), generator=g)]
    idx = torch.randint(0, len(words), (200_000,), generator=g)
    return alphabet + " ".join(words[i] for i in idx), "generated"


def encode(text: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """nanoGPT's prepare.py for shakespeare_char: sorted characters, 90/10 split."""
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    cut = int(0.9 * len(ids))
    return ids[:cut], ids[cut:], len(chars)


def batches(data: torch.Tensor, case: Case, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """nanoGPT's get_batch as an endless stream, from its own generator (the same for both loops)."""
    g = torch.Generator().manual_seed(seed)
    while True:
        ix = torch.randint(len(data) - case.block, (case.batch,), generator=g)
        x = torch.stack([data[i : i + case.block] for i in ix])  # (B, L)
        y = torch.stack([data[i + 1 : i + 1 + case.block] for i in ix])  # (B, L)
        yield x, y


class _LMBatches:
    """The same stream as LMBatch-like objects for qkv's ``lm_loss``."""

    def __init__(self, stream: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.stream = stream

    def __iter__(self):
        for x, y in self.stream:
            yield _Batch(x, y)


@dataclass
class _Batch:
    input: torch.Tensor
    target: torch.Tensor


def plain_loop(model: torch.nn.Module, case: Case, data: torch.Tensor) -> Callable[[int], None]:
    """nanoGPT's train.py on CPU: eager fp32, AdamW (decay on every matrix), cosine lr, clip 1.0, attention in
    torch's SDPA as nanoGPT's model calls it (qkv's kernels are not asked while it runs)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": case.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=case.lr, betas=(0.9, 0.99))
    stream = batches(data, case, case.seed)
    state = {"it": 0}

    def get_lr(it: int) -> float:
        min_lr = case.lr / 10
        if it < case.warmup:
            return case.lr * (it + 1) / case.warmup
        ratio = min(1.0, (it - case.warmup) / (case.steps - case.warmup))
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (case.lr - min_lr)

    def run(k: int) -> None:
        with qkv.kernels.disabled():
            steps(k)

    def steps(k: int) -> None:
        for _ in range(k):
            for group in opt.param_groups:
                group["lr"] = get_lr(state["it"])
            x, y = next(stream)
            logits = model(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss.item()  # nanoGPT reads the loss every log_interval (1 in its CPU recipe)
            state["it"] += 1

    return run


class _RankBatches(_LMBatches):
    """Rank ``rank``'s equal share of each global batch: ``world`` ranks together see the same rows."""

    def __init__(self, stream: Iterator[tuple[torch.Tensor, torch.Tensor]], rank: int, world: int) -> None:
        super().__init__(stream)
        self.rank, self.world = rank, world

    def __iter__(self):
        for x, y in self.stream:
            n = x.shape[0] // self.world
            yield _Batch(x[self.rank * n : (self.rank + 1) * n], y[self.rank * n : (self.rank + 1) * n])


def trainer_config(case: Case) -> TrainConfig:
    return TrainConfig(
        steps=case.steps, lr=case.lr, warmup=case.warmup, schedule="cosine", min_lr_ratio=0.1,
        weight_decay=case.weight_decay, betas=(0.9, 0.99), eps=1e-8, grad_clip=1.0, fused_grad_scale=True,
        precision=case.precision, compile=case.compile, attention_backend=case.attention, batch_split=case.batch_split,
        log_every=case.chunk, progress=False,
        device="cpu", seed=case.seed,
    )


def qkv_loop(model: torch.nn.Module, case: Case, data: torch.Tensor) -> tuple[Trainer, Callable[[int], None]]:
    trainer = Trainer(model, lm_loss, _LMBatches(batches(data, case, case.seed)), trainer_config(case))

    def run(k: int) -> None:
        trainer.fit(until=trainer.step + k)

    return trainer, run


@torch.no_grad()
def val_loss(model: torch.nn.Module, data: torch.Tensor, case: Case) -> float:
    """Mean fp32 cross entropy over fixed validation batches (the same for both models)."""
    model.eval()
    stream = batches(data, case, seed=0)
    losses = [F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
              for x, y in (next(stream) for _ in range(case.eval_batches))]
    model.train()
    return statistics.mean(losses)


def build_model(case: Case, vocab: int) -> DecoderModel:
    """The same initial weights on every call (and in every process)."""
    cfg = model_config("gpt-char-small", vocab_size=vocab, num_layers=case.n_layer, d_model=case.d_model,
                       num_heads=case.n_head, max_len=case.block, dropout=0.0)
    torch.manual_seed(case.seed)
    model = DecoderModel(cfg)
    # nanoGPT initialises every embedding table N(0, 0.02); qkv's learned position table starts at N(0, 1),
    # 50x the token embeddings, which drowns the token signal and stalls training near the unigram loss.
    torch.nn.init.normal_(model.embed.position.embed.weight, std=0.02)
    return model


def chunk_tokens_per_s(run: Callable[[int], None], case: Case) -> float:
    """Run one chunk of ``case.chunk`` training steps; its tokens per second."""
    t0 = time.perf_counter()
    run(case.chunk)
    return case.chunk * case.batch * case.block / (time.perf_counter() - t0)


def run_case(case: Case) -> dict:
    text, source = load_text()
    train, val, vocab = encode(text)
    plain_model = build_model(case, vocab)
    qkv_model = build_model(case, vocab)
    assert all(torch.equal(a, b) for a, b in zip(plain_model.parameters(), qkv_model.parameters(), strict=True))
    plain = plain_loop(plain_model, case, train)
    trainer, ours = qkv_loop(qkv_model, case, train)
    warm = {}
    for name, fn in (("plain", plain), ("qkv", ours)):  # first chunk: warm-up (and compilation)
        t0 = time.perf_counter()
        fn(case.chunk)
        warm[name] = time.perf_counter() - t0
    samples: dict[str, list[float]] = {"plain": [], "qkv": []}
    for _ in range(case.steps // case.chunk - 1):
        for name, fn in (("plain", plain), ("qkv", ours)):
            samples[name].append(chunk_tokens_per_s(fn, case))
    tps = {name: statistics.median(s) for name, s in samples.items()}
    ratios = [q / p for q, p in zip(samples["qkv"], samples["plain"], strict=True)]
    losses = {"plain": val_loss(plain_model, val, case), "qkv": val_loss(qkv_model, val, case)}
    return {
        **asdict(case), "precision_resolved": trainer.precision, "batch_split_resolved": trainer.batch_split,
        "cpu": str(capabilities("cpu")),
        "data": source, "vocab": vocab, "threads": torch.get_num_threads(),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "steps_done": trainer.step,
        "tokens_per_s_plain": tps["plain"], "tokens_per_s_qkv": tps["qkv"],
        "ratio_qkv_over_plain": tps["qkv"] / tps["plain"],
        "ratio_per_chunk_median": statistics.median(ratios),
        "ratio_per_chunk_min": min(ratios), "ratio_per_chunk_max": max(ratios),
        "warmup_chunk_s_plain": warm["plain"], "warmup_chunk_s_qkv": warm["qkv"],
        "val_loss_plain": losses["plain"], "val_loss_qkv": losses["qkv"],
        "train_loss_qkv_last": trainer.writer.records[-1]["loss"] if trainer.writer.records else None,
    }


def ddp_worker(case: Case) -> None:
    """One rank of ``--ddp``: qkv's trainer with DDP (gloo, one thread), its share of every global batch."""
    from qkv.training import cleanup, init_distributed

    torch.set_num_threads(1)
    info = init_distributed()
    text, _ = load_text()
    train, val, vocab = encode(text)
    model = build_model(case, vocab)
    trainer = Trainer(model, lm_loss, _RankBatches(batches(train, case, case.seed), info.rank, info.world_size),
                      trainer_config(case), dist=info)
    trainer.fit(until=case.chunk)  # warm-up chunk
    samples = [chunk_tokens_per_s(lambda k: trainer.fit(until=trainer.step + k), case)
               for _ in range(case.steps // case.chunk - 1)]
    if info.is_main:
        print("DDP " + json.dumps({"tokens_per_s": samples, "steps_done": trainer.step,
                                   "val_loss": val_loss(trainer.model, val, case)}), flush=True)
    cleanup()


def run_ddp_case(case: Case, nproc: int) -> dict:
    """The plain loop in this process (torch's threads) vs qkv's trainer as ``nproc`` one-thread DDP ranks
    under torchrun: the same cores, the same global batches and steps. Plain, DDP, plain again."""
    text, source = load_text()
    train, val, vocab = encode(text)
    plain_model = build_model(case, vocab)
    plain = plain_loop(plain_model, case, train)
    plain(case.chunk)  # warm-up
    plain_samples: list[float] = []

    n_chunks = case.steps // case.chunk - 1
    plain_samples += [chunk_tokens_per_s(plain, case) for _ in range(n_chunks // 2)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           str(Path(__file__).resolve()), "--ddp-worker", "--steps", str(case.steps)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"DDP run failed:\n{proc.stderr[-3000:]}")
    ddp = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("DDP ")][-1][4:])
    plain_samples += [chunk_tokens_per_s(plain, case) for _ in range(n_chunks - n_chunks // 2)]
    tps_plain, tps_ddp = statistics.median(plain_samples), statistics.median(ddp["tokens_per_s"])
    return {**asdict(case), "data": source, "threads_plain": torch.get_num_threads(), "ddp_processes": nproc,
            "threads_per_process": 1, "steps_done": ddp["steps_done"],
            "tokens_per_s_plain": tps_plain, "tokens_per_s_qkv_ddp": tps_ddp, "ratio_qkv_ddp_over_plain": tps_ddp / tps_plain,
            "val_loss_plain": val_loss(plain_model, val, case), "val_loss_qkv_ddp": ddp["val_loss"]}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="few steps: a smoke run")
    p.add_argument("--steps", type=int, default=None, help="training steps of each loop")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (both loops)")
    p.add_argument("--precision", default="auto", help="the trainer's precision: auto (default), fp32, bf16")
    p.add_argument("--batch-split", default="1",
                   help="the trainer's batch_split: 1 (its default), auto (one part per torch thread) or a number")
    p.add_argument("--variants", action="store_true",
                   help="also time torch's attention backends, explicit fp32 and bf16, and eager (no torch.compile)")
    p.add_argument("--ddp", type=int, default=0, metavar="N",
                   help="instead: qkv's trainer as N one-thread DDP processes (torchrun, gloo) vs the plain loop "
                        "with torch's threads in this process")
    p.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = Case(steps=60, chunk=10, eval_batches=5) if args.quick else Case()
    split = args.batch_split if args.batch_split == "auto" else int(args.batch_split)
    base = Case(**{**asdict(base), "precision": args.precision, "batch_split": split,
                   **({"steps": args.steps} if args.steps else {})})
    if args.ddp_worker:
        ddp_worker(base)
        return []
    if args.ddp:
        row = run_ddp_case(base, args.ddp)
        print(f"plain ({row['threads_plain']} threads) {row['tokens_per_s_plain']:8.0f} tok/s  qkv DDP "
              f"({args.ddp} x 1 thread) {row['tokens_per_s_qkv_ddp']:8.0f} tok/s  ratio "
              f"{row['ratio_qkv_ddp_over_plain']:.2f}  val loss plain {row['val_loss_plain']:.4f} "
              f"qkv {row['val_loss_qkv_ddp']:.4f}", flush=True)
        print(f"wrote {write_json('training_ddp', {'cases': [row]})}")
        return [row]
    cases = [base]
    if args.variants and not args.quick:
        cases += [Case(**{**asdict(base), "attention": "math"}),  # torch's math backend, no qkv kernel
                  Case(**{**asdict(base), "precision": "fp32", "attention": "flash"}),  # the trainer's own cost
                  Case(**{**asdict(base), "precision": "bf16"}),  # bf16 where it is not native too
                  Case(**{**asdict(base), "compile": False})]  # eager
    rows = []
    for case in cases:
        row = run_case(case)
        rows.append(row)
        print(f"{case.precision}->{row['precision_resolved']} compile={case.compile!s:5} attention={case.attention} split={row['batch_split_resolved']} steps={case.steps}: plain "
              f"{row['tokens_per_s_plain']:8.0f} tok/s  qkv {row['tokens_per_s_qkv']:8.0f} tok/s  "
              f"qkv/plain {row['ratio_qkv_over_plain']:.2f} (per chunk {row['ratio_per_chunk_min']:.2f}.."
              f"{row['ratio_per_chunk_max']:.2f})  val loss plain {row['val_loss_plain']:.4f} "
              f"qkv {row['val_loss_qkv']:.4f}", flush=True)
    path = write_json(f"training_{capabilities('cpu').isa}_t{torch.get_num_threads()}", {"cases": rows})
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
