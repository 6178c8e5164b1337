"""Short-sequence attention: qkv's whole-head C kernel (qkv.kernels.short) vs torch's paths, CPU.

Question: from which sequence length is ``short_attention`` faster than what the dispatcher would
otherwise run (torch's fused SDPA; for reference also qkv's math path with a cached causal bias, what runs
under the math backend), for training (forward + backward) and inference (forward), float32 and bfloat16,
causal and not? Each case times the three paths interleaved, on inputs laid out as the modules pass them
(head views of one fused projection, output merged back), gradients included.
Run: ``python benchmarks/short_attention.py [--quick] [--threads T] [--write-routing]``; writes
benchmarks/results/short_attention_t<threads>.json, and with ``--write-routing`` the measured minimum length
per dtype (from which every case beat torch's SDPA) into qkv's routing table for this CPU class
(``qkv.kernels.routing.record``).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import faster_from, time_interleaved, write_json  # noqa: E402

from qkv.functional.attention import _causal_bias, attention_math  # noqa: E402
from qkv.kernels import native as _native  # noqa: E402
from qkv.kernels import routing  # noqa: E402
from qkv.kernels.short import short_attention  # noqa: E402


@dataclass(frozen=True)
class Case:
    B: int
    H: int
    L: int
    E: int
    dtype: str = "bfloat16"
    causal: bool = True
    train: bool = True


def _paths(case: Case):
    dtype = getattr(torch, case.dtype)
    B, H, L, E = case.B, case.H, case.L, case.E
    proj = torch.randn(B, L, 3 * H * E, dtype=dtype, requires_grad=case.train)
    grad = torch.randn(B, L, H * E, dtype=dtype)

    def heads():
        return [t.view(B, L, H, E).transpose(1, 2) for t in proj.split(H * E, dim=-1)]  # (B, H, L, E) views

    def torch_sdpa(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=case.causal)

    def math(q, k, v):
        with sdpa_kernel([SDPBackend.MATH]):
            bias = _causal_bias(L, q.dtype, q.device) if case.causal else None
            return attention_math(q, k, v, bias=bias)[0]

    def short(q, k, v):
        return short_attention(q, k, v, causal=case.causal)

    def timed(fn):
        def run():
            with torch.set_grad_enabled(case.train):
                out = fn(*heads()).transpose(1, 2).reshape(B, L, H * E)  # merge heads as the modules do
                if case.train:
                    proj.grad = None
                    out.backward(grad)
        return run

    return {"torch_sdpa": timed(torch_sdpa), "qkv_math": timed(math), "short": timed(short)}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="a few cases, few repeats")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--write-routing", action="store_true", help="record the measured minimum lengths in qkv's table")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if _native.kernels() is None:
        print(f"native kernels unavailable ({_native.unavailable_reason()}): nothing to compare")
        return []
    lengths = [64, 128] if args.quick else [16, 32, 64, 128, 192, 256]
    shapes = [(12, 4, 32)] if args.quick else [(12, 4, 32), (4, 8, 64)]
    cases = [Case(B, H, L, E, dtype, causal, train)
             for B, H, E in shapes for L in lengths for dtype in ("bfloat16", "float32")
             for causal in (True, False) for train in (True, False)]
    rows = []
    for case in cases:
        inner = max(1, 20 * 64 // case.L) if not args.quick else 2
        fns = {name: (lambda f=f, n=inner: [f() for _ in range(n)]) for name, f in _paths(case).items()}
        t = time_interleaved(fns, repeats=3 if args.quick else args.repeats)
        row = {**asdict(case), **{f"ms_{k}": v / inner * 1e3 for k, v in t.items()},
               "speedup_vs_torch_sdpa": t["torch_sdpa"] / t["short"], "speedup_vs_qkv_math": t["qkv_math"] / t["short"]}
        rows.append(row)
        print(f"{case.dtype:8s} B{case.B} H{case.H} E{case.E} L{case.L:4d} causal={case.causal!s:5} "
              f"{'fwd+bwd' if case.train else 'fwd    '}: short {row['ms_short']:7.3f} ms  x{row['speedup_vs_torch_sdpa']:.2f} "
              f"vs torch SDPA ({row['ms_torch_sdpa']:.3f})  x{row['speedup_vs_qkv_math']:.2f} vs qkv math "
              f"({row['ms_qkv_math']:.3f})", flush=True)
    path = write_json(f"short_attention_t{torch.get_num_threads()}", {"cases": rows})
    print(f"wrote {path}")
    if args.write_routing:
        found = {dtype: min_len for dtype in ("bfloat16", "float32")
                 if (min_len := winning_from(rows, dtype)) is not None}
        cmd = "python benchmarks/short_attention.py --write-routing" + (" --quick" if args.quick else "")
        print(f"routing: short attention from min(L, S) = {found} -> {routing.record('attention', 'short', found, cmd)}")
    return rows


def winning_from(rows: list[dict], dtype: str) -> int | None:
    """The shortest measured L from which the kernel beat torch's SDPA (by ``common.FASTER``) in every case of
    ``dtype`` at that L and every longer one; None if it never did."""
    return faster_from((r["L"], r["speedup_vs_torch_sdpa"]) for r in rows if r["dtype"] == dtype)


if __name__ == "__main__":
    main()
