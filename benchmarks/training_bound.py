"""How fast could any trainer be, against the plain loop, if it computed the same fp32 matrix products?

Question: the step of ``benchmarks/training.py``'s model (char GPT 4x128, batch 12 x 64) is mostly the
matrix products of its linear layers. In fp32 their count is fixed by the model; the best a trainer can do is
run them at this CPU's rate and make everything else free. Measured here, interleaved in one process so load
from elsewhere hits all alike:

* the plain nanoGPT-style loop's step and qkv's trainer step (its defaults, as ``training.py`` runs it: fp32 on
  an AVX2-only CPU, bf16 where bf16 products are native, so its products are then not the fp32 ones), wall clock;
* the products alone (forward ``x W^T``, backward ``dY W`` and ``dY^T x`` for every linear layer; attention and
  elementwise work left out) as contiguous ``a @ b`` calls, and one 1024^3 product (near the core's peak);
* the time each loop spends inside those products as it runs them (``aten::mm`` / ``aten::addmm`` self time
  under ``torch.profiler``, per step, median over the rounds; the operands' layouts are the loop's own, so the
  rate can differ from the contiguous calls');
* two pieces of work every trainer of this model does besides the products, each alone at its fastest here:
  the step's causal attention, forward and backward, in the layout the model passes it (the faster of qkv's
  ``scaled_dot_product_attention``, which routes to its kernels, and torch's SDPA), and one AdamW update of the
  model's parameters (torch's fused ``_fused_adamw_``, gradients given);
* qkv's trainer step on the same model at negligible sizes (width 16, one sequence of 8 tokens): the per-step
  cost of its Python, dispatch and bookkeeping, whatever the sizes.

``plain step / products`` bounds any fp32 trainer's speed-up over the plain loop; ``plain step / 1.5 - qkv's
products`` is what a trainer 1.5x the plain loop would have left for attention, GELU, LayerNorm, the loss, the
optimizer and per-op overhead. ``plain step / (products + attention + update)`` bounds a trainer whose
LayerNorm, GELU, embeddings, loss, clipping and per-op overhead cost nothing; with the products at the 1024^3
product's rate instead of their own, it bounds one whose products are as fast as this CPU's best product too;
with them as fast as inside qkv's step, what is left at 1.5x compares with the step's cost at negligible sizes.
Run: ``python benchmarks/training_bound.py [--threads T]`` (under the AVX2 variables for that class);
writes benchmarks/results/training_bound_<CPU class>_t<T>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_json  # noqa: E402
from training import Case, build_model, encode, load_text, plain_loop, qkv_loop  # noqa: E402

from qkv.functional import scaled_dot_product_attention  # noqa: E402
from qkv.hardware import capabilities  # noqa: E402

PRODUCT_OPS = ("aten::mm", "aten::addmm")


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


def attention_step(case: Case, sdpa, **causal):
    """Forward and backward of every layer's causal attention, q, k, v as views of one fused projection (inputs
    and output gradients made once, outside the timed call)."""
    E = case.d_model // case.n_head
    fused = [torch.randn(case.batch, case.block, 3, case.n_head, E, requires_grad=True) for _ in range(case.n_layer)]
    grad = torch.randn(case.batch, case.n_head, case.block, E)

    def run() -> None:
        for x in fused:
            x.grad = None
            q, k, v = (t.transpose(1, 2) for t in x.unbind(2))
            sdpa(q, k, v, **causal).backward(grad)
    return run


def adamw_update(model: torch.nn.Module, case: Case):
    """One fused AdamW update of a copy of the model's parameters (gradients set once)."""
    params = [p.detach().clone().requires_grad_() for p in model.parameters()]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = torch.optim.AdamW(params, lr=case.lr, betas=(0.9, 0.99), weight_decay=case.weight_decay, fused=True)
    return opt.step


def products_in_loop(run, steps: int) -> tuple[float, int]:
    """Seconds per step the loop ``run`` spends in matrix products, and how many it calls per step."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run(steps)
    rows = [e for e in prof.key_averages() if e.key in PRODUCT_OPS]
    return sum(e.self_cpu_time_total for e in rows) / 1e6 / steps, sum(e.count for e in rows) // steps


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds of products and the two loops' steps")
    p.add_argument("--quick", action="store_true", help="two rounds: a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds = 2
    if args.threads:
        torch.set_num_threads(args.threads)
    case = Case(steps=10_000)  # the schedule's length only: the loops run what the rounds ask
    text, _ = load_text()
    train, _, vocab = encode(text)
    model = build_model(case, vocab)
    shapes = linear_products(model, case.batch * case.block)
    operands = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in shapes]
    flops = sum(2 * m * k * n for m, k, n in shapes)
    big = (torch.randn(1024, 1024), torch.randn(1024, 1024))
    plain = plain_loop(model, case, train)
    trainer, ours = qkv_loop(build_model(case, vocab), case, train)
    plain(5)
    ours(case.chunk)  # warm-up, with the compilation
    tiny = dataclasses.replace(case, d_model=16, batch=1, block=8)
    _, tiny_steps = qkv_loop(build_model(tiny, vocab), tiny, train)
    tiny_steps(case.chunk)
    update = adamw_update(model, case)
    ours_attention = attention_step(case, scaled_dot_product_attention, causal=True)
    torch_attention = attention_step(case, torch.nn.functional.scaled_dot_product_attention, is_causal=True)
    products, steps, qkv_steps, peak, att_qkv, att_torch, updates, fixed = [], [], [], [], [], [], [], []
    profiled_plain, profiled_qkv = [], []
    for _ in range(args.rounds):  # alternate, so load from elsewhere hits all alike
        products.append(seconds(lambda: [a @ b for a, b in operands], 10))
        att_qkv.append(seconds(ours_attention, 10))
        att_torch.append(seconds(torch_attention, 10))
        updates.append(seconds(update, 10))
        fixed.append(seconds(lambda: tiny_steps(1), 10))
        steps.append(seconds(lambda: plain(1), 10))
        qkv_steps.append(seconds(lambda: ours(1), 10))
        peak.append(2 * 1024**3 / seconds(lambda: big[0] @ big[1], 5) / 1e9)
        profiled_plain.append(products_in_loop(plain, 5))
        profiled_qkv.append(products_in_loop(ours, 5))
    in_plain, n_plain = statistics.median(t for t, _ in profiled_plain), profiled_plain[0][1]
    in_qkv, n_qkv = statistics.median(t for t, _ in profiled_qkv), profiled_qkv[0][1]
    t_products, t_step, t_qkv = statistics.median(products), statistics.median(steps), statistics.median(qkv_steps)
    t_ours, t_torch, t_update = statistics.median(att_qkv), statistics.median(att_torch), statistics.median(updates)
    t_attention = min(t_ours, t_torch)
    t_fixed = statistics.median(fixed)
    t_peak_products = flops / (statistics.median(peak) * 1e9)
    row = {
        "cpu": str(capabilities("cpu")), "threads": torch.get_num_threads(), "precision_qkv": trainer.precision,
        "products": len(shapes), "gflop_per_step": flops / 1e9,
        "products_s": t_products, "products_gflops": flops / t_products / 1e9,
        "peak_1024_gflops": statistics.median(peak),
        "plain_step_s": t_step, "qkv_step_s": t_qkv, "qkv_over_plain": t_step / t_qkv,
        "products_in_plain_step_s": in_plain, "product_calls_plain": n_plain,
        "products_in_qkv_step_s": in_qkv, "product_calls_qkv": n_qkv,
        "qkv_rest_s": t_qkv - in_qkv, "plain_rest_s": t_step - in_plain,
        "products_share_of_plain_step": t_products / t_step, "bound_plain_over_products": t_step / t_products,
        "bound_plain_over_qkv_products": t_step / in_qkv,
        "rest_budget_at_1_5x_s": t_step / 1.5 - in_qkv,
        "attention_qkv_s": t_ours, "attention_torch_s": t_torch, "adamw_update_s": t_update,
        "bound_plain_over_products_attention_update": t_step / (t_products + t_attention + t_update),
        "bound_plain_over_peak_products_attention_update": t_step / (t_peak_products + t_attention + t_update),
        "bound_plain_over_qkv_products_attention_update": t_step / (in_qkv + t_attention + t_update),
        "left_at_1_5x_after_qkv_products_attention_update_s": t_step / 1.5 - in_qkv - t_attention - t_update,
        "qkv_step_at_negligible_sizes_s": t_fixed,
    }
    isa = capabilities("cpu").isa
    ms = {k: v * 1e3 for k, v in row.items() if k.endswith("_s")}
    print(f"{isa}, {row['threads']} thread(s): {row['gflop_per_step']:.2f} GFLOP of fp32 linear products per step; "
          f"alone {ms['products_s']:.1f} ms ({row['products_gflops']:.0f} GFLOP/s; 1024^3: "
          f"{row['peak_1024_gflops']:.0f}); inside the plain step {ms['products_in_plain_step_s']:.1f} of "
          f"{ms['plain_step_s']:.1f} ms, inside qkv's {ms['products_in_qkv_step_s']:.1f} of {ms['qkv_step_s']:.1f} ms "
          f"(qkv {row['qkv_over_plain']:.2f}x the plain loop, {trainer.precision}). Bound on a trainer: "
          f"{row['bound_plain_over_products']:.2f}x (fp32 products alone), {row['bound_plain_over_qkv_products']:.2f}x "
          f"(qkv's {trainer.precision} products); at 1.5x, {ms['rest_budget_at_1_5x_s']:.1f} ms would be left for everything else "
          f"(qkv spends {ms['qkv_rest_s']:.1f}, the plain loop {ms['plain_rest_s']:.1f}). Alone: the step's attention "
          f"{ms['attention_qkv_s']:.1f} ms (qkv) / {ms['attention_torch_s']:.1f} ms (torch's SDPA), the AdamW update "
          f"{ms['adamw_update_s']:.1f} ms. Bound on a trainer whose other work costs nothing: "
          f"{row['bound_plain_over_products_attention_update']:.2f}x (products at their rate), "
          f"{row['bound_plain_over_peak_products_attention_update']:.2f}x (at the 1024^3 rate), "
          f"{row['bound_plain_over_qkv_products_attention_update']:.2f}x (as fast as inside qkv's step: at 1.5x, "
          f"{ms['left_at_1_5x_after_qkv_products_attention_update_s']:.1f} ms left for LayerNorm, GELU, embeddings, loss, "
          f"clipping and per-op overhead; qkv's step at negligible sizes takes {ms['qkv_step_at_negligible_sizes_s']:.1f} ms)",
          flush=True)
    name = f"training_bound_{isa}_t{row['threads']}"
    print(f"wrote {write_json(name, row)}")
    return row


if __name__ == "__main__":
    main()
