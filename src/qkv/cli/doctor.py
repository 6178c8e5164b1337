"""``qkv doctor``: one screen about this machine, to paste into a bug report.

It says which versions run, on which device, what the CPU's instruction-set class is (and any
``QKV_CPU_ISA`` cap), whether bfloat16 matrix products are native, the threads, what ``precision: auto``
resolves to, and which of qkv's C kernels are built. ``--bench`` adds a few-second probe: float32 against
bfloat16 matrix products (512 x 512) on this machine, in GFLOP/s.
"""

from __future__ import annotations

import os
import platform
import sys
import time

import torch

from qkv import __version__, hardware

__all__ = ["kernel_lines", "matmul_probe", "report"]


def kernel_lines() -> list[str]:
    """qkv's accelerated kernels here: built or not (and why not), the routing table for this CPU class, and
    the path attention takes for typical shapes (:func:`qkv.functional.explain`)."""
    from qkv.kernels import report

    return report()


def matmul_probe(seconds: float = 5.0, n: int = 512, device: str = "cpu") -> dict[str, float]:
    """GFLOP/s of ``n x n`` float32 and bfloat16 matrix products, timed in alternating slices.

    Args:
        seconds: total time to spend, shared by the two dtypes.
        n: matrix size.
        device: where to multiply.

    Returns:
        ``{"fp32": GFLOP/s, "bf16": GFLOP/s, "bf16_over_fp32": ratio}``.
    """
    g = torch.Generator().manual_seed(0)
    operands = {name: tuple(torch.randn(n, n, generator=g).to(device, dtype) for _ in range(2))
                for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    done = dict.fromkeys(operands, 0)
    spent = dict.fromkeys(operands, 0.0)
    for a, b in operands.values():  # warm-up: first calls pick and set up kernels
        a @ b
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for name, (a, b) in operands.items():
            t0, k = time.perf_counter(), 0
            while k == 0 or time.perf_counter() - t0 < 0.05:  # one slice of ~50 ms
                a @ b
                k += 1
                if k % 8 == 0:
                    sync()
            sync()
            spent[name] += time.perf_counter() - t0
            done[name] += k
    rates = {name: 2 * n**3 * done[name] / spent[name] / 1e9 for name in operands}
    return {**rates, "bf16_over_fp32": rates["bf16"] / rates["fp32"]}


def report(*, bench: bool = False, device: str = "auto") -> list[str]:
    """The lines ``qkv doctor`` prints.

    Raises:
        ValueError: a bad ``QKV_CPU_ISA`` or device.
    """
    caps = hardware.capabilities(device)
    auto = hardware.resolve_precision("auto", device)
    cap = f" (capped by QKV_CPU_ISA={caps.isa_cap})" if caps.isa_cap else ""
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    lines = [
        f"qkv {__version__}, torch {torch.__version__}, Python {platform.python_version()}, {platform.platform()}",
        f"device: {caps.device}" + (f" ({caps.name})" if caps.name else "")
        + (f", compute capability {caps.compute_capability[0]}.{caps.compute_capability[1]}"
           if caps.compute_capability else ""),
        f"CPU: {platform.processor() or platform.machine()}, instruction-set class {caps.isa}{cap}"
        + (f", ONEDNN_MAX_CPU_ISA={onednn}" if onednn else ""),
        f"bf16 matmuls on {caps.device}: {'native' if caps.native_bf16 else 'not native (emulated, slow)'}",
        f"threads: torch uses {caps.threads} intra-op thread{'s' if caps.threads != 1 else ''} on {caps.cores} "
        "logical CPUs"
        + (f" (OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']})" if "OMP_NUM_THREADS" in os.environ else ""),
        f"precision auto -> {auto}" + ("" if auto == "bf16" else " (bf16 matmuls are not native here)"),
        "kernels:",
        *(f"  {line}" for line in kernel_lines()),
    ]
    if bench:
        r = matmul_probe(device=caps.device)
        n = torch.get_num_threads()
        where = caps.device if caps.device != "cpu" else f"{n} thread{'s' if n != 1 else ''}"
        lines.append(f"matmul 512x512 on {where}: fp32 {r['fp32']:.1f} GFLOP/s, "
                     f"bf16 {r['bf16']:.1f} GFLOP/s, bf16/fp32 {r['bf16_over_fp32']:.2f}x")
    return lines


def main(bench: bool = False, device: str = "auto") -> int:
    """Print the report; 0."""
    for line in report(bench=bench, device=device):
        print(line)
    sys.stdout.flush()
    return 0
