"""Whether torch is tracing or compiling the current call (torch.compile, torch.export, TorchScript/ONNX).

Fast paths that leave torch's op set (ctypes calls into C, cached weight copies) step aside then, so traced
and compiled graphs see the plain ops.
"""

from __future__ import annotations

import torch

__all__ = ["tracing"]


def tracing() -> bool:
    """True inside torch.compile / torch.export tracing or TorchScript/ONNX tracing."""
    compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)  # torch < 2.3: absent
    return bool(compiling() or torch.jit.is_tracing())
