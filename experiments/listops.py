"""Reduced-scale Long Range Arena ListOps: the same encoder classifier with each attention kernel.

Every variant trains from ``configs/listops.yaml`` with the same data, model size, steps and time
limit; only ``model_options.attention`` (+ its options) changes. Test accuracy per variant goes to
``experiments/results/listops.json`` and a Markdown table printed for the README, beside the
published LRA ListOps numbers (Tay et al. 2021: vanilla Transformer 36.4%, Sparse Transformer 17.1%,
Longformer 35.6%, BigBird 36.1%, Linear Transformer 16.1%, Performer 18.0%; chance ~10%).

Every variant gets the same 700 training steps (token-budget batches of 12,000, ~20 expressions of
200-1000 tokens), 5-20 minutes each on one CPU core. Run: ``python experiments/listops.py [--variants ...]``
(two processes with disjoint ``--variants`` can share the work; the table collects every variant's file);
a smoke run that leaves the committed results alone:
``python experiments/listops.py --steps 20 --n-train 200 --out /tmp/listops --results /tmp/listops``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from qkv.data.tokenizers import atomic_write_text
from qkv.evaluation.classification import accuracy
from qkv.recipes import classify
from qkv.recipes.config import load_recipe
from qkv.recipes.run import train

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = {"softmax": 36.37, "sliding_window": 35.63, "bigbird": 36.05, "strided": 17.07, "linear": 16.13,
             "performer": 18.01}  # LRA ListOps accuracy (%), Tay et al. 2021 (Longformer for local windows)
VARIANTS = {
    "softmax": {},
    "chunked": {},
    "sliding_window": {"window": 64},
    "bigbird": {"block": 32, "window": 1, "num_global": 1, "num_random": 1},
    "strided": {"block": 32, "stride": 4, "local": 2},
    "linear": {},
    "performer": {"num_features": 64},
}


def run_variant(name: str, options: dict, args: argparse.Namespace) -> dict:
    overrides = [
        f"model_options.attention={name}",
        f"model_options.attention_options={json.dumps(options)}",
        f"train.steps={args.steps}",
        f"train.time_limit={args.time_limit}",
        "train.precision=fp32",  # the README's table: every kernel in fp32, whatever the CPU class
        f"data.n_train={args.n_train}",
        f"data.max_length={args.max_length}",
        f"out_dir={args.out}/{name}",
    ]
    recipe = load_recipe(ROOT / "configs" / "listops.yaml", overrides)
    t0 = time.perf_counter()
    result, parts = train(recipe)
    data = parts["data"]
    model = parts["model"].eval()
    preds, labels = classify.predict_batches(model, classify.loader(recipe, data.test, shuffle=False))
    return {"attention": name, "options": options, "test_accuracy": 100 * accuracy(preds, labels),
            "seconds": time.perf_counter() - t0, "steps": args.steps, "published": PUBLISHED.get(name)}


def table(rows: list[dict]) -> str:
    lines = ["| attention | options | test accuracy (%) | published LRA (%) | train time (s) |",
             "|---|---|---|---|---|"]
    for r in rows:
        pub = "" if r["published"] is None else f"{r['published']:.1f}"
        lines.append(f"| {r['attention']} | `{json.dumps(r['options'])}` | {r['test_accuracy']:.1f} | {pub} | "
                     f"{r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--steps", type=int, default=700)
    p.add_argument("--time-limit", type=float, default=1800.0, help="seconds per variant (a safety cap)")
    p.add_argument("--n-train", type=int, default=20000)
    p.add_argument("--max-length", type=int, default=1000, help="longest expression (tokens)")
    p.add_argument("--out", default="runs/listops")
    p.add_argument("--results", default=str(ROOT / "experiments" / "results"), help="where the JSON goes")
    args = p.parse_args(argv)
    results = Path(args.results)
    per_variant = results / "listops"  # one file per variant: several processes may share the variants
    per_variant.mkdir(parents=True, exist_ok=True)
    for name in args.variants:
        row = {**run_variant(name, VARIANTS[name], args), "args": vars(args)}
        atomic_write_text(per_variant / f"{name}.json", json.dumps(row, indent=1))
        print(f"{name}: {row['test_accuracy']:.1f}%", flush=True)
    files = [per_variant / f"{n}.json" for n in VARIANTS]
    rows = [json.loads(f.read_text()) for f in files if f.exists()]
    atomic_write_text(results / "listops.json", json.dumps({"rows": rows}, indent=1))
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
