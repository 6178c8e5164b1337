"""Long-context attention on CPU: time and peak memory vs L for exact, sparse and kernel attention.

Questions answered (issue 7), all with B=1, H=8, E=64:

1. sweep: fp32 forward time and peak extra memory vs L for dense math, torch's fused SDPA,
   memory-efficient exact (chunked), sliding window (w=256), BigBird (block 64), linear (elu+1) and
   Performer (256 features); the L where each approximate method overtakes the fused kernel.
2. bf16: chunked (bf16 matmuls, fp32 statistics) vs torch's fused bf16 SDPA, forward and
   forward+backward, L >= 1024 (target >= 2x).
3. masks: structured masks handled per block (causal, sliding window, padding by lengths) vs torch
   SDPA given the equivalent bool mask (target >= 1.5x).
4. scaling: t(32k) / t(8k) for the linear-time methods (target <= 4.6). A fresh tensor over 32 MB
   (glibc hands those out as new mmap pages) pays a page fault per 4 KiB on first touch, while at 8k
   every buffer is reused from the heap (figures: README, "Long sequences on a CPU"). qkv advises its
   large outputs and per-call buffers onto huge pages (``qkv.functional._memory``), as PyTorch's
   ``THP_MEM_ALLOC_ENABLE=1`` does for every large tensor (the JSON records whether that was set too).

The machine is shared (2 cores, other jobs running), so each comparison interleaves its
contenders, repeats, keeps the best time of each, and reports ratios from the same run. L is capped
so that the whole run stays under ~10 minutes: quadratic methods up to 8k (dense math to 4k),
linear-time methods up to 32k. Peak memory is the resident-set high-water mark above the inputs
(Linux ``/proc/self/clear_refs``), forward only, under ``no_grad``.

Run: ``python benchmarks/long_context.py [--quick] [--threads N]``; writes
``benchmarks/results/long_context.json`` and ``long_context.png``. ``--only dispatch --write-routing`` records,
for this CPU class, the shortest L from which the C blocks beat torch's fused kernel in every dispatch case of
a dtype (bf16 unmasked; float32 with a bias, key padding and a causal chunk) in qkv's routing table
(``qkv.kernels.routing.record``).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from qkv.functional import (
    attention_math,
    bigbird_attention,
    causal_mask,
    chunked_attention,
    draw_orthogonal_features,
    linear_attention,
    padding_mask,
    sliding_window_attention,
    sliding_window_mask,
)
from qkv.kernels import routing

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import faster_from  # noqa: E402

RESULTS = Path(__file__).parent / "results"
PROJ = draw_orthogonal_features(256, 64, generator=torch.Generator().manual_seed(0))


@dataclass(frozen=True)
class Case:
    method: str
    L: int
    B: int = 1
    H: int = 8
    E: int = 64
    dtype: str = "float32"


METHODS: dict[str, Callable] = {
    "dense_math": lambda q, k, v: attention_math(q, k, v)[0],
    "fused": lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
    "chunked": lambda q, k, v: chunked_attention(q, k, v),
    "sliding_window": lambda q, k, v: sliding_window_attention(q, k, v, window=256, causal=False),
    "bigbird": lambda q, k, v: bigbird_attention(q, k, v, block=64, window=1, num_global=1, num_random=1),
    "linear": lambda q, k, v: linear_attention(q, k, v),
    "performer": lambda q, k, v: linear_attention(q, k, v, projection=PROJ),
}
MAX_L = {"dense_math": 4096, "fused": 8192, "chunked": 8192}  # others: up to 32k


def _inputs(c: Case, requires_grad: bool = False):
    dt = getattr(torch, c.dtype)
    return [torch.randn(c.B, c.H, c.L, c.E, dtype=dt, requires_grad=requires_grad) for _ in range(3)]


def best_times(fns: dict[str, Callable], repeats: int) -> dict[str, float]:
    """Interleave the contenders, ``repeats`` rounds after one warm-up; best seconds of each."""
    for f in fns.values():
        f()
    best = {n: math.inf for n in fns}
    for _ in range(repeats):
        for n, f in fns.items():
            t0 = time.perf_counter()
            f()
            best[n] = min(best[n], time.perf_counter() - t0)
    return best


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    return 0


def peak_memory(fn: Callable) -> int | None:
    """Bytes of resident memory above the current level at the peak of ``fn()`` (Linux only)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        return None
    base = _status("VmRSS")
    fn()
    return max(0, _status("VmHWM") - base)


def sweep(lengths: list[int], repeats: int) -> list[dict]:
    rows = []
    for L in lengths:
        for method, fn in METHODS.items():
            if L > MAX_L.get(method, 32768):
                continue
            c = Case(method, L)
            q, k, v = _inputs(c)
            call = partial(fn, q, k, v)
            with torch.no_grad():
                t = best_times({method: call}, repeats if L <= 4096 else 1)[method]
                mem = peak_memory(call)
            rows.append({**asdict(c), "seconds": t, "peak_bytes": mem, "qkvo_bytes": 4 * q.numel() * q.element_size()})
            print(f"  {method:15s} L={L:6d} {t * 1e3:9.1f} ms  peak {0 if mem is None else mem / 2**20:8.1f} MiB",
                  flush=True)
    return rows


def _fwd_bwd(fn: Callable, inputs: tuple, grad: torch.Tensor):
    return torch.autograd.grad(fn(*inputs), inputs, grad)


def bf16_speedup(lengths: list[int], repeats: int) -> list[dict]:
    rows = []
    for L in lengths:
        q, k, v = _inputs(Case("bf16", L, dtype="bfloat16"), requires_grad=True)
        g = torch.randn_like(q)
        qd, kd, vd = (t.detach() for t in (q, k, v))
        fns = {
            "fused_fwd": partial(F.scaled_dot_product_attention, qd, kd, vd),
            "chunked_fwd": partial(chunked_attention, qd, kd, vd),
            "fused_fwd_bwd": partial(_fwd_bwd, F.scaled_dot_product_attention, (q, k, v), g),
            "chunked_fwd_bwd": partial(_fwd_bwd, chunked_attention, (q, k, v), g),
        }
        t = best_times(fns, repeats)
        err = (chunked_attention(qd, kd, vd).float() - F.scaled_dot_product_attention(qd, kd, vd).float()).abs().max()
        row = {"L": L, **t, "fwd_speedup": t["fused_fwd"] / t["chunked_fwd"],
               "fwd_bwd_speedup": t["fused_fwd_bwd"] / t["chunked_fwd_bwd"], "max_abs_diff": err.item()}
        rows.append(row)
        print(f"  bf16 L={L}: fwd x{row['fwd_speedup']:.2f}, fwd+bwd x{row['fwd_bwd_speedup']:.2f}", flush=True)
    return rows


def mask_speedup(L: int, repeats: int) -> list[dict]:
    """Structured masks per block vs torch SDPA with the equivalent bool mask (fp32, forward)."""
    rows = []
    q, k, v = _inputs(Case("mask", L))
    lengths = torch.tensor([L, (3 * L) // 4, L // 2, L // 4])
    qb, kb, vb = (torch.randn(4, 8, L, 64) for _ in range(3))
    cases = {
        "causal": ((q, k, v), dict(causal=True), causal_mask(L)),
        "sliding_window_256": ((q, k, v), dict(window=256, causal=True), sliding_window_mask(L, window=256)),
        "padding_lengths_B4": ((qb, kb, vb), dict(lengths=lengths), padding_mask(lengths, max_len=L)),
    }
    with torch.no_grad():
        for name, ((a, b, c), kw, mask) in cases.items():
            fns = {"sdpa_bool_mask": partial(F.scaled_dot_product_attention, a, b, c, attn_mask=mask),
                   "chunked_structured": partial(chunked_attention, a, b, c, **kw)}
            if name == "causal":
                fns["sdpa_is_causal"] = partial(F.scaled_dot_product_attention, a, b, c, is_causal=True)
            t = best_times(fns, repeats)
            row = {"mask": name, "L": L, **t, "speedup_vs_bool_mask": t["sdpa_bool_mask"] / t["chunked_structured"]}
            rows.append(row)
            print(f"  mask {name} L={L}: x{row['speedup_vs_bool_mask']:.2f} vs SDPA bool mask", flush=True)
    return rows


def dispatch_cases(lengths: list[int], repeats: int) -> list[dict]:
    """The cases qkv's dispatcher decides on: torch's fused kernel vs the chunked path (forward)."""
    rows = []
    for L in lengths:
        q, k, v = _inputs(Case("dispatch", L))
        qb, kb, vb = (t.bfloat16() for t in (q, k, v))
        q4, k4, v4 = (torch.randn(4, 8, L, 64) for _ in range(3))
        lengths4 = torch.tensor([L, (3 * L) // 4, L // 2, L // 4])
        pad = padding_mask(lengths4, max_len=L)  # (4, 1, 1, L)
        alibi = -torch.arange(L).flip(0).float()[None, None, None, :] * torch.linspace(0.1, 1, 8)[None, :, None, None]
        half = causal_mask(L // 2, L)  # a query chunk after L/2 cached keys: SDPA needs the explicit mask
        cases = {
            "bf16": (partial(F.scaled_dot_product_attention, qb, kb, vb), partial(chunked_attention, qb, kb, vb)),
            "bias_alibi": (partial(F.scaled_dot_product_attention, q, k, v, attn_mask=alibi.expand(1, 8, L, L)),
                           partial(chunked_attention, q, k, v, bias=alibi)),
            "key_padding_B4": (partial(F.scaled_dot_product_attention, q4, k4, v4, attn_mask=pad),
                               partial(chunked_attention, q4, k4, v4, lengths=lengths4)),
            "causal_L_half_S": (partial(F.scaled_dot_product_attention, q[:, :, : L // 2], k, v, attn_mask=half),
                                partial(chunked_attention, q[:, :, : L // 2], k, v, causal=True)),
        }
        with torch.no_grad():
            for name, (fused, chunked) in cases.items():
                t = best_times({"fused": fused, "chunked": chunked}, repeats)
                rows.append({"case": name, "L": L, **t, "speedup": t["fused"] / t["chunked"]})
                print(f"  dispatch {name:16s} L={L:5d}: chunked x{t['fused'] / t['chunked']:.2f} vs fused", flush=True)
    return rows


def winning_from(rows: list[dict], cases: set[str]) -> int | None:
    """The shortest L from which the chunked path beat the fused kernel (by ``common.FASTER``) in every one of
    ``cases``, at that L and every longer one measured; None if it never did."""
    return faster_from((r["L"], r["speedup"]) for r in rows if r["case"] in cases)


def scaling(repeats: int, short: int = 8192, long: int = 32768) -> list[dict]:
    """t(32k) / t(8k) for the linear-time methods, both lengths timed interleaved (fp32 forward)."""
    rows = []
    inputs = {L: _inputs(Case("scaling", L)) for L in (short, long)}
    with torch.no_grad():
        for m in ("sliding_window", "bigbird", "linear", "performer"):
            t = best_times({L: partial(METHODS[m], *inputs[L]) for L in (short, long)}, repeats)
            rows.append({"method": m, "t_short": t[short], "t_long": t[long], "ratio": t[long] / t[short],
                         "short": short, "long": long,
                         "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE", "0")})
            print(f"  scaling {m:15s} t({long})/t({short}) = {t[long] / t[short]:.2f} (linear: 4)", flush=True)
    return rows


def crossovers(rows: list[dict]) -> dict[str, int | None]:
    """Smallest L from which each approximate method is faster than the fused exact kernel."""
    fused = {r["L"]: r["seconds"] for r in rows if r["method"] == "fused"}
    out = {}
    for m in ("sliding_window", "bigbird", "linear", "performer", "chunked"):
        t = {r["L"]: r["seconds"] for r in rows if r["method"] == m and r["L"] in fused}
        wins = [L for L in sorted(t) if all(t[x] < fused[x] for x in sorted(t) if x >= L)]
        out[m] = wins[0] if wins else None
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib  # lazily: optional for the library

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    for m in METHODS:
        pts = [(r["L"], r["seconds"], r["peak_bytes"]) for r in rows if r["method"] == m]
        if pts:
            ax_t.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)
            ax_m.plot([p[0] for p in pts], [(p[2] or 0) / 2**20 for p in pts], marker="o", label=m)
    for ax, label in ((ax_t, "forward time (s)"), (ax_m, "peak extra memory (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=8)
    fig.suptitle(f"B=1, H=8, E=64, fp32, forward; {torch.get_num_threads()} torch thread(s) on a shared 2-core CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns (and writes) the results dict."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small L only (smoke run)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", choices=["dispatch", "speedups", "scaling"], default=None, help="run one section only")
    p.add_argument("--write-routing", action="store_true", help="with --only dispatch: record where the C blocks win")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lengths = [256, 1024] if args.quick else [256, 512, 1024, 2048, 4096, 8192, 16384, 32768]
    print(f"threads={torch.get_num_threads()} torch={torch.__version__}", flush=True)
    res = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    if args.only is not None:
        if args.only == "dispatch":
            res["dispatch"] = dispatch_cases([256, 512, 1024, 2048], args.repeats)
            if args.write_routing:
                found = {dtype: L for dtype, cases in (("bfloat16", {"bf16"}),
                                                      ("float32", {"bias_alibi", "key_padding_B4", "causal_L_half_S"}))
                         if (L := winning_from(res["dispatch"], cases)) is not None}
                where = routing.record("attention", "blocks", found,
                                       "python benchmarks/long_context.py --only dispatch --write-routing")
                print(f"routing: chunked blocks from min(L, S) = {found} -> {where}", flush=True)
        elif args.only == "scaling":
            res["scaling"] = scaling(args.repeats)
        else:
            res["bf16"] = bf16_speedup([1024, 2048, 4096], args.repeats)
            res["masks"] = mask_speedup(2048, args.repeats)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"long_context_{args.only}_t{res['threads']}.json").write_text(json.dumps(res, indent=1))
        return res
    res["bf16"] = bf16_speedup([1024] if args.quick else [1024, 2048, 4096], args.repeats)
    res["masks"] = mask_speedup(1024 if args.quick else 2048, args.repeats)
    res["sweep"] = sweep(lengths, args.repeats)
    res["crossover_L"] = crossovers(res["sweep"])
    if not args.quick:
        res["scaling"] = scaling(args.repeats)
    print("  crossover L (approximate faster than fused from here on):", res["crossover_L"], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "long_context.json").write_text(json.dumps(res, indent=1))
    plot(res["sweep"], RESULTS / "long_context.png")
    return res


if __name__ == "__main__":
    main()
