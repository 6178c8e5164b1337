"""How fast could any trainer be, against the plain loop, if it computed the same fp32 matrix products?

Question: the step of ``benchmarks/training.py``'s model (char GPT 4x128, batch 12 x 64) is mostly the
matrix products of its linear layers. In fp32 their count is fixed by the model; the best a trainer can do is
run them at this CPU's rate and make everything else free. This script times exactly those products alone
(forward ``x W^T``, backward ``dY W`` and ``dY^T x`` for every linear layer, attention and elementwise work
left out) and the plain nanoGPT-style loop's whole step in the same run; their ratio bounds the trainer's
speed-up at this precision. Also reported: the products' GFLOP/s and those of one 1024^3 product (near the
core's peak), so one can see whether the plain loop already runs its products at the machine's rate.
Run: ``python benchmarks/training_bound.py [--threads T]`` (under the AVX2 variables for that class);
writes benchmarks/results/training_bound_<CPU class>_t<T>.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402
from training import Case, build_model, encode, load_text, plain_loop  # noqa: E402

from qkv.hardware import capabilities  # noqa: E402


def linear_products(model: torch.nn.Module, rows: int) -> list[tuple[int, int, int]]:
    """``(M, K, N)`` of every product one training step makes in the model's ``nn.Linear`` layers."""
    shapes = []
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            n, k = m.weight.shape  # (out, in)
            shapes += [(rows, k, n), (rows, n, k), (n, rows, k)]  # x W^T, dY W, dY^T x
    return shapes


def seconds(fn, repeats: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds of products and plain steps")
    p.add_argument("--quick", action="store_true", help="two rounds: a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds = 2
    if args.threads:
        torch.set_num_threads(args.threads)
    case = Case()
    text, _ = load_text()
    train, _, vocab = encode(text)
    model = build_model(case, vocab)
    shapes = linear_products(model, case.batch * case.block)
    operands = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in shapes]
    flops = sum(2 * m * k * n for m, k, n in shapes)
    big = (torch.randn(1024, 1024), torch.randn(1024, 1024))
    step = plain_loop(model, case, train)
    step(5)  # warm-up
    products, steps, peak = [], [], []
    for _ in range(args.rounds):  # alternate, so load from elsewhere hits all alike
        products.append(seconds(lambda: [a @ b for a, b in operands], 10))
        steps.append(seconds(lambda: step(1), 10))
        peak.append(2 * 1024**3 / seconds(lambda: big[0] @ big[1], 5) / 1e9)
    t_products, t_step = statistics.median(products), statistics.median(steps)
    row = {
        "cpu": str(capabilities("cpu")), "threads": torch.get_num_threads(), "products": len(shapes),
        "gflop_per_step": flops / 1e9, "products_s": t_products, "plain_step_s": t_step,
        "products_gflops": flops / t_products / 1e9, "peak_1024_gflops": statistics.median(peak),
        "products_share_of_plain_step": t_products / t_step, "bound_plain_over_products": t_step / t_products,
    }
    print(f"{capabilities('cpu').isa}, {row['threads']} thread(s): {row['gflop_per_step']:.2f} GFLOP of fp32 linear "
          f"products per step, {t_products * 1e3:.1f} ms at {row['products_gflops']:.0f} GFLOP/s (1024^3 product: "
          f"{row['peak_1024_gflops']:.0f} GFLOP/s); plain loop step {t_step * 1e3:.1f} ms; bound on a trainer at fp32: "
          f"{row['bound_plain_over_products']:.2f}x", flush=True)
    name = f"training_bound_{capabilities('cpu').isa}_t{row['threads']}"
    print(f"wrote {write_json(name, row)}")
    return row


if __name__ == "__main__":
    main()
