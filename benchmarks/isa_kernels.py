"""qkv's C kernels in the build for this CPU class (``qkv.hardware.cpu_isa``) against torch, float32.

Questions: (1) from which sequence length is the short-sequence kernel faster than torch's fused SDPA,
forward + backward and forward (the cases of benchmarks/short_attention.py: B 12 H 4 E 32 and B 4 H 8 E 64,
causal, inputs as the modules pass them)? (2) at L 1024-2048 (B 1 H 8 E 64, causal, forward + backward), are
the chunked path's C block kernels faster than its torch ops, and is chunked attention faster than torch's
fused SDPA? Timed as median process CPU time of interleaved calls with one thread (steadier on a shared
machine); the kernel build is named in the output. Simulate an AVX2-only CPU on a larger one with
``QKV_CPU_ISA=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2``.
Run: ``python benchmarks/isa_kernels.py [--lengths 16,32,...] [--long 1024,2048] [--write-routing]``; writes
benchmarks/results/isa_kernels_<class>.json, and with ``--write-routing`` the float32 entries of this CPU
class in qkv's routing table (src/qkv/kernels/routing.json; other dtypes' entries are kept): the short kernel
from the shortest L from which it won every case, the chunked C blocks where they beat the torch ops (and
the fused SDPA) at every long L measured; "won" and "beat": by ``common.FASTER``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import faster_from, interleaved_samples, write_json  # noqa: E402
from short_attention import Case, _paths, winning_from  # noqa: E402

import qkv.kernels  # noqa: E402
from qkv.functional import chunked_attention  # noqa: E402
from qkv.functional.accelerators import Call  # noqa: E402
from qkv.hardware import capabilities, cpu_isa  # noqa: E402
from qkv.kernels import blocks, native, routing  # noqa: E402


def _cpu_ms(fns: dict, repeats: int) -> dict[str, float]:
    return {n: statistics.median(s["cpu"]) * 1e3 for n, s in interleaved_samples(fns, repeats, warmup=1).items()}


def long_case(L: int, repeats: int) -> dict:
    """Chunked attention with its C block kernels, with torch ops only, and torch's fused SDPA, at one L."""
    q, k, v = (torch.randn(1, 8, L, 64, requires_grad=True) for _ in range(3))
    grad = torch.randn(1, 8, L, 64)

    def c_blocks():
        blocks.run(Call("chunked", q, k, v, causal=True)).backward(grad)

    def torch_ops():
        with qkv.kernels.disabled():
            chunked_attention(q, k, v, causal=True).backward(grad)

    def sdpa():
        F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(grad)

    ms = _cpu_ms({"c_blocks": c_blocks, "torch_ops": torch_ops, "torch_sdpa": sdpa}, repeats)
    row = {"L": L, "B": 1, "H": 8, "E": 64, "dtype": "float32", "causal": True, "train": True,
           **{f"ms_{n}": t for n, t in ms.items()},
           "c_blocks_vs_torch_ops": ms["torch_ops"] / ms["c_blocks"],
           "c_blocks_vs_torch_sdpa": ms["torch_sdpa"] / ms["c_blocks"]}
    print(f"chunked L {L} fwd+bwd: C blocks {ms['c_blocks']:.1f} ms, torch ops {ms['torch_ops']:.1f} ms "
          f"(x{row['c_blocks_vs_torch_ops']:.2f}), torch SDPA {ms['torch_sdpa']:.1f} ms "
          f"(x{row['c_blocks_vs_torch_sdpa']:.2f})", flush=True)
    return row


def _record(op: str, kernel: str, float32_from: int | None, command: str) -> None:
    """Set (or drop) the float32 minimum of one routing entry of this CPU class, keeping its other dtypes."""
    entry = routing.table()["classes"].get(cpu_isa(), {}).get(op, {}).get(kernel, {})
    min_len = {d: n for d, n in entry.get("min_len", {}).items() if d != "float32"}
    if float32_from is not None:
        min_len["float32"] = float32_from
    print(f"routing: {op}/{kernel} on {cpu_isa()}: {min_len or 'not routed'} -> "
          f"{routing.record(op, kernel, min_len, command)}")


def write_routing(short_rows: list[dict], long_rows: list[dict]) -> None:
    """This class's float32 routing entries from the measurements (see the module docstring)."""
    command = "python benchmarks/isa_kernels.py --write-routing"
    _record("attention", "short", winning_from(short_rows, "float32"), command)
    shortest = min((r["L"] for r in long_rows), default=None)
    for op, peer in (("chunked", "torch_ops"), ("attention", "torch_sdpa")):  # beaten at every long L measured
        routed = faster_from((r["L"], r[f"c_blocks_vs_{peer}"]) for r in long_rows)
        _record(op, "blocks", routed if routed == shortest else None, command)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--lengths", default="16,32,64,128,192,256")
    p.add_argument("--long", default="1024,2048", help="chunked attention lengths ('' to skip)")
    p.add_argument("--repeats", type=int, default=31, help="interleaved timings per path (median taken)")
    p.add_argument("--write-routing", action="store_true", help="record this class's float32 entries")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    kern = native.kernels()
    if kern is None:
        print(f"native kernels unavailable ({native.unavailable_reason()}): nothing to compare")
        return []
    rows = []
    for B, H, E in [(12, 4, 32), (4, 8, 64)]:
        for L in map(int, args.lengths.split(",")):
            for train in (True, False):
                case = Case(B, H, L, E, "float32", True, train)
                inner = max(1, 10 * 64 // L)
                fns = {n: (lambda f=f, k=inner: [f() for _ in range(k)]) for n, f in _paths(case).items()
                       if n != "qkv_math"}
                ms = {n: t / inner for n, t in _cpu_ms(fns, args.repeats).items()}
                row = {**asdict(case), "ms_short": ms["short"], "ms_torch_sdpa": ms["torch_sdpa"],
                       "speedup_vs_torch_sdpa": ms["torch_sdpa"] / ms["short"]}
                rows.append(row)
                print(f"{kern.variant} B{B} H{H} E{E} L{L:4d} {'fwd+bwd' if train else 'fwd    '}: short "
                      f"{row['ms_short']:7.3f} ms, torch SDPA {row['ms_torch_sdpa']:7.3f} ms: "
                      f"x{row['speedup_vs_torch_sdpa']:.2f}", flush=True)
    longs = [long_case(int(L), args.repeats) for L in args.long.split(",") if L]
    caps = capabilities("cpu")
    path = write_json(f"isa_kernels_{caps.isa}", {"build": kern.variant, "capabilities": str(caps),
                                                  "timing": "median process CPU time per call, 1 thread",
                                                  "short": rows, "chunked": longs})
    print(f"wrote {path}")
    if args.write_routing:
        write_routing(rows, longs)
    return rows


if __name__ == "__main__":
    main()
