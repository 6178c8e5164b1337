"""Shared benchmark helpers: interleaved timing and JSON output. Never imported by qkv."""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"

# A kernel is routed only where it was measured this much faster than what runs otherwise: timings on a shared
# machine move by a few percent between runs, and a tie is not worth a second path.
FASTER = 1.05


def faster_from(speedups: Iterable[tuple[int, float]]) -> int | None:
    """The shortest length from which every ``(length, speedup)`` measured at that length and at every longer
    one is at least :data:`FASTER`; None if the longest already is not."""
    by_length: dict[int, list[float]] = {}
    for length, speedup in speedups:
        by_length.setdefault(length, []).append(speedup)
    start = None
    for length in sorted(by_length, reverse=True):
        if min(by_length[length]) < FASTER:
            break
        start = length
    return start


def interleaved_samples(
    fns: dict[str, Callable[[], object]], repeats: int, *, warmup: int = 0
) -> dict[str, dict[str, list[float]]]:
    """Wall and process-CPU seconds per call of each function, ``repeats`` rounds run round-robin.

    Round-robin order makes load from other processes hit every function alike. On a shared CPU the wall
    clock also counts time spent descheduled; with one torch thread the process CPU time counts only the
    work done, so its ratio is the steadier one.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            samples[name]["cpu"].append(time.process_time() - c0)
            samples[name]["wall"].append(time.perf_counter() - w0)
    return samples


def time_interleaved(fns: dict[str, Callable[[], object]], *, repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Median wall seconds per call of each function, run round-robin after ``warmup`` calls each."""
    samples = interleaved_samples(fns, repeats, warmup=warmup)
    return {name: statistics.median(s["wall"]) for name, s in samples.items()}


def machine() -> dict[str, object]:
    from qkv.hardware import capabilities, resolve_precision

    caps = capabilities("cpu")
    return {
        "torch": torch.__version__,
        "cpu_isa": caps.isa,
        "cpu_isa_cap": caps.isa_cap,
        "native_bf16": caps.native_bf16,
        "precision_auto": resolve_precision("auto", "cpu"),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "cuda": torch.cuda.is_available(),
    }


def write_json(name: str, payload: dict) -> Path:
    """Write ``benchmarks/results/<name>.json`` atomically."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    with tempfile.NamedTemporaryFile("w", dir=RESULTS, delete=False, suffix=".tmp") as f:
        json.dump({"machine": machine(), **payload}, f, indent=2)
    os.replace(f.name, path)
    return path
