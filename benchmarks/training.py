"""Tokens/s of qkv's Trainer vs a plain eager fp32 nanoGPT-style loop, same model, same batches.

Question: how much faster does qkv's trainer (bf16 autocast, attention on plain matmuls instead of the
CPU flash kernel, fused AdamW, no per-step host syncs; torch.compile as a variant) train the char-level
GPT of nanoGPT's CPU recipe (4 layers, d 128, 4 heads, block 64, batch 12, vocab 65) than the loop
nanoGPT's train.py runs, and is its validation loss no worse after the same number of steps? The two
loops run interleaved, chunk by chunk, in one process, so load from other processes hits both alike;
the JSON reports medians of per-chunk tokens/s and their ratio. On a shared machine pass
``--threads 1``: with more OpenMP threads than free cores, both loops slow down ten-fold.
Run: ``python benchmarks/training.py [--quick] [--steps N] [--threads T]``;
writes benchmarks/results/training.json.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402

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
    precision: str = "bf16"
    compile: bool = False  # measured slower here: inductor re-fuses attention into the CPU flash kernel
    attention: str | None = "math"  # qkv's SDPA backend; the plain loop always lets torch choose


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
    """nanoGPT's train.py on CPU: eager fp32, AdamW (decay on every matrix), cosine lr, clip 1.0."""
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


def qkv_loop(model: torch.nn.Module, case: Case, data: torch.Tensor) -> tuple[Trainer, Callable[[int], None]]:
    cfg = TrainConfig(
        steps=case.steps, lr=case.lr, warmup=case.warmup, schedule="cosine", min_lr_ratio=0.1,
        weight_decay=case.weight_decay, betas=(0.9, 0.99), eps=1e-8, grad_clip=1.0,
        precision=case.precision, compile=case.compile, attention_backend=case.attention,
        log_every=case.chunk, progress=False,
        device="cpu", seed=case.seed,
    )
    trainer = Trainer(model, lm_loss, _LMBatches(batches(data, case, case.seed)), cfg)

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


def run_case(case: Case) -> dict:
    text, source = load_text()
    train, val, vocab = encode(text)
    cfg = model_config("gpt-char-small", vocab_size=vocab, num_layers=case.n_layer, d_model=case.d_model,
                       num_heads=case.n_head, max_len=case.block, dropout=0.0)
    torch.manual_seed(case.seed)
    plain_model = DecoderModel(cfg)
    # nanoGPT initialises every embedding table N(0, 0.02); qkv's learned position table starts at N(0, 1),
    # 50x the token embeddings, which drowns the token signal and stalls training near the unigram loss.
    torch.nn.init.normal_(plain_model.embed.position.embed.weight, std=0.02)
    qkv_model = DecoderModel(cfg)
    qkv_model.load_state_dict(plain_model.state_dict())  # identical start
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
            t0 = time.perf_counter()
            fn(case.chunk)
            samples[name].append(case.chunk * case.batch * case.block / (time.perf_counter() - t0))
    tps = {name: statistics.median(s) for name, s in samples.items()}
    ratios = [q / p for q, p in zip(samples["qkv"], samples["plain"], strict=True)]
    losses = {"plain": val_loss(plain_model, val, case), "qkv": val_loss(qkv_model, val, case)}
    return {
        **asdict(case), "data": source, "vocab": vocab, "threads": torch.get_num_threads(),
        "steps_done": trainer.step,
        "tokens_per_s_plain": tps["plain"], "tokens_per_s_qkv": tps["qkv"],
        "ratio_qkv_over_plain": tps["qkv"] / tps["plain"],
        "ratio_per_chunk_median": statistics.median(ratios),
        "ratio_per_chunk_min": min(ratios), "ratio_per_chunk_max": max(ratios),
        "warmup_chunk_s_plain": warm["plain"], "warmup_chunk_s_qkv": warm["qkv"],
        "val_loss_plain": losses["plain"], "val_loss_qkv": losses["qkv"],
        "train_loss_qkv_last": trainer.writer.records[-1]["loss"] if trainer.writer.records else None,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="few steps: a smoke run")
    p.add_argument("--steps", type=int, default=None, help="training steps of each loop")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (both loops)")
    p.add_argument("--variants", action="store_true",
                   help="also time bf16 with flash attention, fp32, and bf16 + torch.compile")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = Case(steps=60, chunk=10, eval_batches=5) if args.quick else Case()
    if args.steps:
        base = Case(**{**asdict(base), "steps": args.steps})
    cases = [base]
    if args.variants and not args.quick:
        cases += [Case(**{**asdict(base), "attention": None}),  # bf16 with torch's (flash) attention
                  Case(**{**asdict(base), "precision": "fp32", "attention": None}),  # the trainer's own cost
                  Case(**{**asdict(base), "compile": True})]
    rows = []
    for case in cases:
        row = run_case(case)
        rows.append(row)
        print(f"{case.precision} compile={case.compile!s:5} attention={case.attention} steps={case.steps}: plain "
              f"{row['tokens_per_s_plain']:8.0f} tok/s  qkv {row['tokens_per_s_qkv']:8.0f} tok/s  "
              f"qkv/plain {row['ratio_qkv_over_plain']:.2f} (per chunk {row['ratio_per_chunk_min']:.2f}.."
              f"{row['ratio_per_chunk_max']:.2f})  val loss plain {row['val_loss_plain']:.4f} "
              f"qkv {row['val_loss_qkv']:.4f}", flush=True)
    path = write_json("training", {"cases": rows})
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
