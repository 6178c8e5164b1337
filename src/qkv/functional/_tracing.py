"""Whether torch is tracing or compiling the current call (torch.compile, torch.export, TorchScript/ONNX).

Fast paths that leave torch's op set (ctypes calls into C, cached weight copies) step aside then, so traced
and compiled graphs see the plain ops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)

__all__ = ["constant_under_compile", "tracing"]


def tracing() -> bool:
    """True inside torch.compile / torch.export tracing or TorchScript/ONNX tracing."""
    compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)  # torch < 2.3: absent
    return bool(compiling() or torch.jit.is_tracing())


def constant_under_compile(fn: F) -> F:
    """Mark ``fn`` as ``@torch.compiler.assume_constant_result`` does (torch.compile calls it once while tracing
    and bakes the result into the graph), without importing torch._dynamo, which costs seconds at import."""
    fn._dynamo_marked_constant = True  # type: ignore[attr-defined]
    return fn
