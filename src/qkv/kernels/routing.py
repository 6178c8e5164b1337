"""Which qkv kernel serves which call on this machine: one table of rules, thresholds read per CPU class.

:data:`RULES` lists, in the order they are tried, each kernel with the operation it serves
(:class:`qkv.functional.accelerators.Call` ``op``), a ``fits`` test (can the kernel compute this call at
all) and a ``run``. Whether it *should* is data: ``routing.json`` (package data; ``$QKV_ROUTING`` names
another file) holds, per CPU class of :func:`qkv.hardware.cpu_isa`, per operation, kernel and dtype, the
shortest ``min(L, S)`` from which the benchmarks found the kernel ahead of the path ``qkv.functional`` takes
otherwise, with the machine and the benchmark command that measured it. A call goes to the first rule
that has a measurement for its class and dtype, is long enough, and fits; a class without measurements
routes nothing to qkv's kernels.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

from qkv import hardware
from qkv.functional import explain
from qkv.functional._tracing import constant_under_compile
from qkv.functional.accelerators import Call, Offer
from qkv.kernels import blocks, native, padded, short

__all__ = ["RULES", "KernelAccelerator", "Rule", "record", "report", "table", "table_path"]


class Rule(NamedTuple):
    """One kernel for one operation: ``fits(call)`` is None when it can compute ``call``, else why not."""

    op: str
    kernel: str
    path: str
    fits: Callable[[Call], str | None]
    run: Callable[[Call], torch.Tensor]


RULES: tuple[Rule, ...] = (
    Rule("attention", "short", "qkv.kernels.short", short.fits, short.run),
    Rule("attention", "blocks", "qkv.kernels.blocks", blocks.fits, blocks.run),
    Rule("chunked", "padded", "qkv.kernels.padded", padded.fits, padded.run),
    Rule("chunked", "blocks", "qkv.kernels.blocks", blocks.fits, blocks.run),
)

_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float64: "float64"}


_SHIPPED = str(Path(__file__).with_name("routing.json"))


def table_path() -> Path:
    """The routing table in use: ``$QKV_ROUTING``, else ``routing.json`` beside this module."""
    return Path(_table_file())


def _table_file() -> str:
    return os.environ.get("QKV_ROUTING") or _SHIPPED


@functools.lru_cache(maxsize=4)
def _load(path: str) -> dict:
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("classes"), dict):
        raise ValueError(f"routing table {path}: needs an object with 'classes' (CPU class -> measurements)")
    return data


def table() -> dict:
    """The parsed routing table (see the module docstring)."""
    return _load(_table_file())


def record(op: str, kernel: str, min_len: dict[str, int], command: str, path: Path | None = None) -> Path:
    """Write one measurement into the routing table for this CPU class (what the benchmarks call).

    Args:
        op: ``"attention"`` or ``"chunked"``.
        kernel: a :data:`RULES` kernel name for ``op``.
        min_len: dtype name -> the shortest ``min(L, S)`` from which the kernel wins; an empty
            dict removes the entry (never faster on this class).
        command: how it was measured.
        path: the table to update (default :func:`table_path`); written to a temporary file, then renamed.

    Returns:
        the table's path.
    """
    if not any(r.op == op and r.kernel == kernel for r in RULES):
        raise ValueError(f"no rule for op {op!r} and kernel {kernel!r}; rules: "
                         + ", ".join(f"{r.op}/{r.kernel}" for r in RULES))
    path = Path(path or table_path())
    data = json.loads(path.read_text()) if path.exists() else {"format": 1, "classes": {}}
    ops = data.setdefault("classes", {}).setdefault(hardware.cpu_isa(), {}).setdefault(op, {})
    if min_len:
        cpu = platform.processor() or platform.machine()
        ops[kernel] = {"min_len": dict(min_len), "command": command,
                       "measured_on": f"{hardware.capabilities('cpu')} ({cpu}); torch {torch.__version__}"}
    else:
        ops.pop(kernel, None)
    fd, tmp = tempfile.mkstemp(suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    _load.cache_clear()
    return path


@constant_under_compile
def _cpu_class() -> str:
    return hardware.cpu_isa()


@constant_under_compile
def _min_len(isa: str, op: str, kernel: str, dtype: str) -> int:
    """The routing table's minimum of ``min(L, S)`` for this CPU class, op, kernel and dtype; -1 where unmeasured."""
    entry = table()["classes"].get(isa, {}).get(op, {}).get(kernel, {})
    return int(entry.get("min_len", {}).get(dtype, -1))


@constant_under_compile
def _built() -> bool:
    return native.kernels() is not None


class KernelAccelerator:
    """The :class:`qkv.functional.accelerators.Accelerator` of this package: the first rule that applies."""

    name = "qkv.kernels"

    def offer(self, call: Call) -> Offer | None:
        if call.q.device.type != "cpu":
            return Offer(self.name, "CPU kernels only")
        if not _built():
            return Offer(self.name, f"the C kernels are not built ({native.unavailable_reason()})")
        isa, dtype = _cpu_class(), _DTYPES.get(call.q.dtype, "other")
        shortest = min(call.q.shape[2], call.k.shape[2])
        declined = []
        for rule in RULES:
            if rule.op != call.op:
                continue
            need = _min_len(isa, call.op, rule.kernel, dtype)
            if need < 0:
                declined.append(f"{rule.path} has no routing entry for {dtype} on CPU class {isa}")
                continue
            if shortest < need:
                declined.append(f"{rule.path}: min(L, S) below {need}, its routing entry's minimum ({dtype}, CPU "
                                f"class {isa})")
                continue
            why = rule.fits(call)
            if why is not None:
                declined.append(f"{rule.path}: {why}")
                continue
            return Offer(rule.path, f"routed from min(L, S) = {need} for {dtype} on CPU class {isa}",
                         functools.partial(rule.run, call))
        return Offer(self.name, "; ".join(declined) or f"no kernel for {call.op}")


# Shapes people run, for qkv doctor: (label, dtype, B, H, L, S, E, causal, key padding).
_TYPICAL = (
    ("char GPT training block", torch.float32, 12, 4, 64, 64, 32, True, False),
    ("char GPT training block", torch.bfloat16, 12, 4, 64, 64, 32, True, False),
    ("decoding step after 64 tokens", torch.float32, 1, 8, 1, 64, 64, True, False),
    ("padded encoder batch", torch.float32, 8, 8, 128, 128, 64, False, True),
    ("long context", torch.bfloat16, 1, 8, 1024, 1024, 64, True, False),
    ("long context with padding", torch.float32, 1, 8, 2048, 2048, 64, False, True),
)


def report() -> list[str]:
    """The routing table in force for this CPU class, and the path :func:`qkv.functional.explain` gives for
    typical shapes (one line each)."""
    isa = hardware.cpu_isa()
    entries = table()["classes"].get(isa, {})
    kernels = sorted({f"{op}/{kernel}" for op, by_kernel in entries.items() if isinstance(by_kernel, dict)
                      for kernel in by_kernel})
    lines = [f"routing table {table_path()}: CPU class {isa}: "
             + (f"measured {', '.join(kernels)}" if kernels else "no measurements, nothing is routed to qkv's kernels")]
    for label, dtype, B, H, L, S, E, causal, pad in _TYPICAL:
        q, k, v = torch.empty(B, H, L, E, dtype=dtype), torch.empty(B, H, S, E, dtype=dtype), torch.empty(B, H, S, E,
                                                                                                      dtype=dtype)
        mask = torch.ones(B, 1, 1, S, dtype=torch.bool) if pad else None
        route = explain(q, k, v, mask=mask, causal=causal)
        name = str(dtype).removeprefix("torch.")
        lines.append(f"{label} ({name}, B {B} H {H} L {L} S {S} E {E}{', causal' if causal else ''}"
                     f"{', padding mask' if pad else ''}): {route.path}")
    return lines
