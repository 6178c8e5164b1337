"""Forward+backward of qkv MultiHeadAttention vs torch.nn.MultiheadAttention, with and without weights.

Question: is qkv's readable module as fast as torch's, and does returning weights cost less than
torch's ``need_weights=True`` (which falls back to the unfused math path)?
Run: ``python benchmarks/attention.py [--quick]``; writes benchmarks/results/attention.json.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import time_interleaved, write_json  # noqa: E402

from qkv.modules import MultiHeadAttention  # noqa: E402


@dataclass(frozen=True)
class Case:
    B: int
    L: int
    D: int = 512
    H: int = 8
    weights: bool = False
    train: bool = True  # forward + backward; False = inference under no_grad


def _step(fn, x, train: bool):
    """One timed call: the loss is on the output; the weights are held (for a picture) until backward ends."""

    def run():
        if train:
            x.grad = None
            out, weights = fn(x)
            out.sum().backward()
            del weights
        else:
            with torch.no_grad():
                fn(x)

    return run


def bench_case(case: Case, repeats: int) -> dict:
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(case.D, case.H, batch_first=True)
    ours = MultiHeadAttention.from_torch(ref)
    x = torch.randn(case.B, case.L, case.D, requires_grad=True)

    def torch_fn(t):
        return ref(t, t, t, need_weights=case.weights, average_attn_weights=False)  # weights per head, like qkv

    def qkv_fn(t):
        return ours(t, return_weights=True) if case.weights else (ours(t), None)

    with torch.no_grad():  # correctness before timing
        (a, wa), (b, wb) = qkv_fn(x), torch_fn(x)
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
        if case.weights:
            torch.testing.assert_close(wa, wb, atol=1e-5, rtol=1e-4)
    times = time_interleaved({"torch": _step(torch_fn, x, case.train), "qkv": _step(qkv_fn, x, case.train)},
                             repeats=repeats)
    return {**asdict(case), "torch_s": times["torch"], "qkv_s": times["qkv"], "ratio_qkv_over_torch": times["qkv"] / times["torch"]}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    lengths = [64, 128] if args.quick else [128, 512, 2048]
    B = 2 if args.quick else 8
    cases = [Case(B, L, weights=w, train=t) for L in lengths for w in (False, True) for t in (True, False)]
    rows = []
    for case in cases:
        row = bench_case(case, 2 if args.quick else args.repeats)
        rows.append(row)
        mode = "fwd+bwd" if case.train else "no_grad"
        print(f"L={case.L:5d} weights={case.weights!s:5} {mode:8} torch {row['torch_s'] * 1e3:8.1f} ms  "
              f"qkv {row['qkv_s'] * 1e3:8.1f} ms  qkv/torch {row['ratio_qkv_over_torch']:.2f}", flush=True)
    path = write_json("attention", {"cases": rows})
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
