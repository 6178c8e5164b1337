"""What the decoding copies cost when each ``generate`` call makes its own, against a block held across calls.

Question: ``qkv.generation.generate`` enters ``prepare_for_decoding`` for one call, so every call makes its
weight copies again (they can never be stale). How much slower is a call than one inside a
``prepare_for_decoding`` block held across calls (copies made once, as a server would hold them), and than
a call without copies (``DecodingWeights.enabled = False``)? GPT-2-small shape (random init, no download),
greedy, prompt 16. Two qkv models with the same weights run interleaved: one decodes per call (and, switched
off, without copies), the other sits in one block for the whole run. Wall-clock medians.
Run: ``python benchmarks/decoding_copies.py [--threads T] [--cases 1x64 8x32]`` (batch x new tokens);
writes benchmarks/results/decoding_copies_tT.json.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_samples, write_json  # noqa: E402
from generation import GPT2_SMALL, Case, build  # noqa: E402

from qkv.generation import DecodingWeights, generate, prepare_for_decoding  # noqa: E402


@dataclass(frozen=True)
class Run:
    batch: int
    new_tokens: int


def run_case(run: Run, repeats: int) -> dict:
    _, per_call = build(Case("gpt2-small", batch=run.batch, new_tokens=run.new_tokens, **GPT2_SMALL))
    held = copy.deepcopy(per_call)
    ids = torch.randint(1, GPT2_SMALL["vocab"], (run.batch, 16))

    def without_copies() -> None:
        DecodingWeights.enabled = False
        try:
            generate(per_call, ids, max_new_tokens=run.new_tokens)
        finally:
            DecodingWeights.enabled = True

    with prepare_for_decoding(held):
        generate(held, ids, max_new_tokens=2)  # the held block's copies, made once
        samples = interleaved_samples({
            "per_call": lambda: generate(per_call, ids, max_new_tokens=run.new_tokens),
            "held": lambda: generate(held, ids, max_new_tokens=run.new_tokens),
            "no_copies": without_copies,
        }, repeats)
    med = {k: statistics.median(v["wall"]) for k, v in samples.items()}
    row = {**asdict(run), "median_s": med, "per_call_over_held": med["per_call"] / med["held"],
           "no_copies_over_per_call": med["no_copies"] / med["per_call"], "samples_s": samples}
    print(f"B={run.batch} new={run.new_tokens}: s/call per call {med['per_call']:.2f}, held {med['held']:.2f}, "
          f"no copies {med['no_copies']:.2f}; per call / held {row['per_call_over_held']:.3f}, "
          f"no copies / per call {row['no_copies_over_per_call']:.3f} (medians of {repeats})", flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--cases", nargs="+", default=["1x64", "1x200", "8x32"], help="BATCHxNEW_TOKENS")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = [Run(*map(int, c.split("x"))) for c in args.cases]
    rows = [run_case(r, args.repeats) for r in runs]
    threads = torch.get_num_threads()
    path = write_json(f"decoding_copies_t{threads}", {"threads": threads, "cases": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
