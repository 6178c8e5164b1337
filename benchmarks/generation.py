"""Greedy generation: qkv ``generate`` vs Hugging Face ``GPT2LMHeadModel.generate`` with the same weights.

Questions: (1) with a KV cache, is qkv's decoding loop at least 1.5x as fast (tokens/s) as Hugging Face's
on this CPU, for a small GPT (4 layers, d 128, 4 heads, vocab 65) and the GPT-2-small shape (12 layers,
d 768, 12 heads, vocab 50257; random init, no download), prompt 16, 200 new tokens, batch 1 and 8?
(2) does the cost of a token stay flat with position (ms/token at ~1000 <= 1.5x ms/token at ~50)?

Both models are built from one random ``GPT2Config`` (qkv's through ``qkv.interop.from_transformers``), greedy outputs
are compared before timing, and qkv/HF runs alternate (``interleaved_samples``) so load from elsewhere
hits both alike; speed-ups are reported on process CPU time (steady under shared load with one thread)
and wall time (the one to read with several threads: CPU time then sums the threads), as the ratio of
medians and as the median of the ratios of adjacent qkv/HF runs ("per pair": a load change hits a pair
alike). Run: ``python benchmarks/generation.py [--quick] [--threads N]`` (default: torch's thread count,
one per core); writes benchmarks/results/generation_tN.json.

With one thread GPT-2-small at batch 1 is bound by one core's memory stream: MKL runs a one-row product
on one thread, and every float32 weight passes once per token. With T threads qkv's
decoding products (qkv.generation.prepare_for_decoding, entered by each generate call) cut each matrix
into T row slices (views, no copy) streamed in parallel.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_samples, write_json  # noqa: E402

from qkv.generation import DecoderStepper, generate, prepare_for_decoding  # noqa: E402
from qkv.interop import from_transformers  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    layers: int
    d_model: int
    heads: int
    vocab: int
    batch: int
    prompt: int = 16
    new_tokens: int = 200


SMALL = dict(layers=4, d_model=128, heads=4, vocab=65)
GPT2_SMALL = dict(layers=12, d_model=768, heads=12, vocab=50257)


def build(case: Case, n_positions: int = 1100):
    """The same random GPT-2 in transformers and in qkv (eval mode)."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=case.vocab, n_positions=n_positions, n_embd=case.d_model, n_layer=case.layers,
        n_head=case.heads, bos_token_id=None, eos_token_id=None, pad_token_id=0,
    )
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    return hf, from_transformers(hf).eval()


def run_case(case: Case, repeats: int) -> dict:
    hf, ours = build(case)
    ids = torch.randint(1, case.vocab, (case.batch, case.prompt))
    mask = torch.ones_like(ids)

    def run_hf(n: int = case.new_tokens):
        return hf.generate(ids, attention_mask=mask, max_new_tokens=n, do_sample=False, use_cache=True)[:, case.prompt :]

    def run_qkv(n: int = case.new_tokens):
        return generate(ours, ids, max_new_tokens=n)

    with torch.no_grad():
        check = min(case.new_tokens, 32)  # same greedy tokens first (a short run: the timed runs are long)
        agree = (run_qkv(check) == run_hf(check)).float().mean().item()
        samples = interleaved_samples({"qkv": run_qkv, "hf": run_hf}, repeats)
    tokens = case.batch * case.new_tokens
    row = {**asdict(case), "greedy_agreement": agree, "samples_s": samples}
    for clock in ("cpu", "wall"):
        med = {k: statistics.median(v[clock]) for k, v in samples.items()}
        pairs = [h / q for h, q in zip(samples["hf"][clock], samples["qkv"][clock], strict=True)]
        row[clock] = {"qkv_tokens_per_s": tokens / med["qkv"], "hf_tokens_per_s": tokens / med["hf"],
                      "speedup": med["hf"] / med["qkv"], "speedup_pairs_median": statistics.median(pairs),
                      "speedup_pairs_min": min(pairs), "speedup_pairs_max": max(pairs)}
    c, w = row["cpu"], row["wall"]
    print(f"{case.name:>10} B={case.batch}: CPU time: qkv {c['qkv_tokens_per_s']:7.1f} tok/s, HF "
          f"{c['hf_tokens_per_s']:7.1f} tok/s, speed-up {c['speedup']:.2f}x | wall: qkv "
          f"{w['qkv_tokens_per_s']:7.1f} tok/s, HF {w['hf_tokens_per_s']:7.1f} tok/s, speed-up {w['speedup']:.2f}x, "
          f"per pair {w['speedup_pairs_median']:.2f}x ({w['speedup_pairs_min']:.2f}..{w['speedup_pairs_max']:.2f}) "
          f"(medians of {repeats}; greedy agreement {agree:.3f})", flush=True)
    return row


def position_latency(repeats: int, steps: int = 60) -> dict:
    """ms/token (batch 1, small model) at position ~50 and ~1000: two sessions stepped alternately.

    Stepping the two sessions in turn, token by token, lets any change in machine load hit both alike.
    Times are CPU time of this thread (steady on a shared CPU) and wall time.
    """
    _, ours = build(Case("small", batch=1, **SMALL))
    times = {(p, clock): [] for p in (50, 1000) for clock in ("cpu", "wall")}
    with torch.inference_mode(), prepare_for_decoding(ours):  # as qkv.generation.generate runs
        for _ in range(repeats):
            sessions = {}
            for p in (50, 1000):
                stepper = DecoderStepper(ours, torch.randint(1, 65, (1, p)), max_new_tokens=steps + 1)
                sessions[p] = [stepper, stepper.start().argmax(-1)]
            for _ in range(steps):
                for p, sess in sessions.items():
                    w0, c0 = time.perf_counter(), time.thread_time()
                    sess[1] = sess[0].step(sess[1]).argmax(-1)
                    times[(p, "cpu")].append(time.thread_time() - c0)
                    times[(p, "wall")].append(time.perf_counter() - w0)
    out = {"target": 1.5, "steps": repeats * steps}
    for clock in ("cpu", "wall"):
        n, f = (1e3 * statistics.median(times[(p, clock)]) for p in (50, 1000))
        out[clock] = {"ms_per_token_pos50": n, "ms_per_token_pos1000": f, "ratio": f / n}
        print(f"ms/token small B=1 ({clock}, median of {repeats * steps} steps): position ~50 {n:.3f}, "
              f"~1000 {f:.3f}, ratio {f / n:.2f} (target <= 1.5)", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small model only, one repeat (smoke run)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for both libraries (default: torch's, one per core)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    t0 = time.perf_counter()
    cases = [(Case("small", batch=b, **SMALL), 1 if args.quick else 7) for b in (1, 8)]
    if not args.quick:
        cases += [(Case("gpt2-small", batch=b, **GPT2_SMALL), 4) for b in (1, 8)]
    rows = [run_case(c, repeats) for c, repeats in cases]
    latency = position_latency(repeats=1 if args.quick else 4)
    path = write_json(f"generation_t{args.threads}", {"threads": args.threads, "target_speedup": 1.5, "cases": rows,
                                     "latency_vs_position": latency, "seconds": time.perf_counter() - t0})
    print(f"wrote {path} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
