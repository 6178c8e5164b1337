"""Routing tables for tests: point ``QKV_ROUTING`` at a table written for this CPU class (what qkv believes,
after any ``QKV_CPU_ISA`` cap), so that routing is tested the same way on every machine."""

from __future__ import annotations

import json
from pathlib import Path

from qkv import hardware
from qkv.kernels import routing

SHIPPED = Path(routing.__file__).with_name("routing.json")


def routing_table(monkeypatch, tmp_path: Path, ops: dict) -> Path:
    """Use a table that gives this CPU class ``ops``: ``{op: {kernel: {dtype: min_len}}}``."""
    entry = {op: {kernel: {"min_len": lens, "measured_on": "test", "command": "test"} for kernel, lens in kernels.items()}
             for op, kernels in ops.items()}
    path = tmp_path / "routing.json"
    path.write_text(json.dumps({"format": 1, "classes": {hardware.cpu_isa(): entry}}))
    monkeypatch.setenv("QKV_ROUTING", str(path))
    return path


def shipped_routing(monkeypatch, tmp_path: Path, measured_class: str = "avx512_bf16") -> dict:
    """Use the shipped table's measurements of ``measured_class`` as if they were this CPU class's; returns them."""
    entry = json.loads(SHIPPED.read_text())["classes"][measured_class]
    path = tmp_path / "routing.json"
    path.write_text(json.dumps({"format": 1, "classes": {hardware.cpu_isa(): entry}}))
    monkeypatch.setenv("QKV_ROUTING", str(path))
    return entry
