"""Which qkv kernel serves which call on this machine: one table of rules, thresholds measured per CPU class.

:data:`RULES` lists, in the order they are tried, each kernel with the operation it serves
(:class:`qkv.functional.accelerators.Call` ``op``), a ``fits`` test (can the kernel compute this call at
all) and a ``run``. Whether it *should* is data: ``routing.json`` (package data; ``$QKV_ROUTING`` names
another file) holds, per CPU class of :func:`qkv.hardware.cpu_isa`, per operation, kernel and dtype, the
shortest ``min(L, S)`` from which the kernel was measured faster than the path ``qkv.functional`` takes
otherwise, with the machine and the benchmark command that measured it. A call goes to the first rule
that has a measurement for its class and dtype, is long enough, and fits; a class without measurements
routes nothing to qkv's kernels.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

from qkv import hardware
from qkv.functional.accelerators import Call, Offer
from qkv.kernels import blocks, native, padded, short

__all__ = ["RULES", "KernelAccelerator", "Rule", "table", "table_path"]


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


def table_path() -> Path:
    """The routing table in use: ``$QKV_ROUTING``, else ``routing.json`` beside this module."""
    return Path(os.environ.get("QKV_ROUTING") or Path(__file__).with_name("routing.json"))


@functools.lru_cache(maxsize=4)
def _load(path: str) -> dict:
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("classes"), dict):
        raise ValueError(f"routing table {path}: needs an object with 'classes' (CPU class -> measurements)")
    return data


def table() -> dict:
    """The parsed routing table (see the module docstring)."""
    return _load(str(table_path()))


@torch.compiler.assume_constant_result
def _cpu_class() -> str:
    return hardware.cpu_isa()


@torch.compiler.assume_constant_result
def _min_len(op: str, kernel: str, dtype: str) -> int:
    """The measured minimum of ``min(L, S)`` for this class, op, kernel and dtype; -1 where unmeasured."""
    entry = table()["classes"].get(_cpu_class(), {}).get(op, {}).get(kernel, {})
    return int(entry.get("min_len", {}).get(dtype, -1))


@torch.compiler.assume_constant_result
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
            need = _min_len(call.op, rule.kernel, dtype)
            if need < 0:
                declined.append(f"{rule.path} not measured faster for {dtype} on CPU class {isa}")
                continue
            if shortest < need:
                declined.append(f"{rule.path} measured faster from min(L, S) = {need} ({dtype}, CPU class {isa})")
                continue
            why = rule.fits(call)
            if why is not None:
                declined.append(f"{rule.path}: {why}")
                continue
            return Offer(rule.path, f"measured faster from min(L, S) = {need} for {dtype} on CPU class {isa}",
                         functools.partial(rule.run, call))
        return Offer(self.name, "; ".join(declined) or f"no kernel for {call.op}")
