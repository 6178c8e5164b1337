"""Training throughput of whole models: forward + backward tokens/s, eager fp32 vs bf16 autocast vs torch.compile.

Question: what does a training step of the char-level GPT (4 layers, d 128, 4 heads, block 64,
batch 12, vocab 65) and of the paper's base Transformer (6+6, d 512, batch 8 x 32 tokens) cost, and
how much do bf16 autocast and torch.compile buy on this machine?
Tokens are target tokens (B x L). Models are in train mode (dropout on), loss is cross-entropy,
gradients are cleared between steps and no optimizer step is taken.
Run: ``python benchmarks/models.py [--quick] [--no-compile] [--threads N]``; writes
benchmarks/results/models.json (the thread count is recorded with the machine).
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import time_interleaved, write_json  # noqa: E402

from qkv.models import registry  # noqa: E402

MODES = ("eager_fp32", "bf16_autocast", "compile_fp32")


@dataclass(frozen=True)
class Case:
    model: str  # registry name
    B: int
    L: int  # target tokens per row (the decoder's block)
    S: int = 0  # source tokens per row (encoder-decoder only)
    vocab: int = 65


CASES = (
    Case("gpt-char-small", B=12, L=64, vocab=65),
    Case("transformer-base", B=8, L=32, S=32, vocab=37000),
)
QUICK = (
    Case("gpt-char-small", B=4, L=32, vocab=65),
    Case("transformer-tiny", B=4, L=16, S=16, vocab=64),
)


def _model_and_batch(case: Case, device: torch.device):
    torch.manual_seed(0)
    if case.S:
        model = registry.build(case.model, src_vocab_size=case.vocab)
        src = torch.randint(1, case.vocab, (case.B, case.S), device=device)
        tgt = torch.randint(1, case.vocab, (case.B, case.L + 1), device=device)
        inputs = (src, tgt[:, :-1])
    else:
        model = registry.build(case.model, vocab_size=case.vocab)
        tgt = torch.randint(0, case.vocab, (case.B, case.L + 1), device=device)
        inputs = (tgt[:, :-1],)
    return model.to(device).train(), inputs, tgt[:, 1:]


def _step_fn(model, fn, inputs, targets, autocast: bool, device: torch.device):
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if autocast else nullcontext()

    def step() -> float:
        for p in model.parameters():
            p.grad = None
        with ctx:
            logits = fn(*inputs)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
        loss.backward()
        return loss.item()

    return step


def bench_case(case: Case, *, repeats: int, use_compile: bool, device: torch.device) -> list[dict]:
    model, inputs, targets = _model_and_batch(case, device)
    fns = {
        "eager_fp32": _step_fn(model, model, inputs, targets, False, device),
        "bf16_autocast": _step_fn(model, model, inputs, targets, True, device),
    }
    compile_s = None
    if use_compile:
        compiled = torch.compile(model)
        fns["compile_fp32"] = _step_fn(model, compiled, inputs, targets, False, device)
        t0 = time.perf_counter()
        fns["compile_fp32"]()  # compilation happens here, outside the timed runs
        compile_s = time.perf_counter() - t0
    # correctness before timing, in eval mode (compiled dropout draws different random masks)
    model.eval()
    losses = {name: fn() for name, fn in fns.items()}
    model.train()
    for name, loss in losses.items():
        tol = 5e-2 if "bf16" in name else 1e-3
        if abs(loss - losses["eager_fp32"]) > tol * max(1.0, abs(losses["eager_fp32"])):
            raise AssertionError(f"{case.model} {name}: loss {loss:.5f} vs eager fp32 {losses['eager_fp32']:.5f}")
    times = time_interleaved(fns, repeats=repeats, warmup=1)
    params = sum(p.numel() for p in model.parameters())
    rows = []
    for name, secs in times.items():
        rows.append({**asdict(case), "mode": name, "params": params, "step_s": secs,
                     "tokens_per_s": case.B * case.L / secs, "loss": losses[name],
                     "compile_s": compile_s if name == "compile_fp32" else None})
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="small models, for a smoke run")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile (needs a C++ compiler on CPU)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--name", default="models", help="results file: benchmarks/results/<name>.json")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default); 1 avoids spinning on a shared, oversubscribed CPU")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for case in QUICK if args.quick else CASES:
        for row in bench_case(case, repeats=2 if args.quick else args.repeats, use_compile=not args.no_compile,
                              device=device):
            rows.append(row)
            extra = f"  (compile {row['compile_s']:.0f} s)" if row["compile_s"] else ""
            print(f"{case.model:17} B={case.B:2d} L={case.L:3d} {row['mode']:14} {row['step_s'] * 1e3:9.1f} ms/step "
                  f"{row['tokens_per_s']:10.0f} tok/s{extra}", flush=True)
    path = write_json(args.name, {"device": str(device), "cases": rows})
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
