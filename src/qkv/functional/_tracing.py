"""Whether torch is tracing or compiling the current call (torch.compile, torch.export, TorchScript/ONNX).

Fast paths that leave torch's op set (ctypes calls into C, cached weight copies) step aside then, so traced
and compiled graphs see the plain ops.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)

__all__ = ["compile_cache_tag", "constant_under_compile", "tracing"]


def tracing() -> bool:
    """True inside torch.compile / torch.export tracing or TorchScript/ONNX tracing."""
    compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)  # torch < 2.3: absent
    return bool(compiling() or torch.jit.is_tracing())


def constant_under_compile(fn: F) -> F:
    """Mark ``fn`` as ``@torch.compiler.assume_constant_result`` does (torch.compile calls it once while tracing
    and bakes the result into the graph), without importing torch._dynamo, which costs seconds at import."""
    fn._dynamo_marked_constant = True  # type: ignore[attr-defined]
    return fn


@contextlib.contextmanager
def compile_cache_tag() -> Iterator[None]:
    """``torch.compile``'s cache key extended with ``ATEN_CPU_CAPABILITY``, for the compilations in the block.

    Inductor picks the vector instruction set of its C++ from that variable and bakes its width into the code,
    but leaves it out of its on-disk cache key: a run with ``ATEN_CPU_CAPABILITY=avx2`` sharing the cache with
    a run without it would load kernels generated for AVX-512 (out-of-bounds indices or wrong results), and
    the reverse. The variable is the input inductor reads (not a CPU flag): the tag only keeps such entries
    apart. AOTAutograd's cache, which would hand back inductor's entries by their old keys, ignores the tag
    and is off in the block. Wrap both the first call of a compiled function and its first backward (compiled
    lazily), in the thread that makes them: compilations in a worker thread need a block of their own.
    """
    capability = os.environ.get("ATEN_CPU_CAPABILITY")
    if not capability:
        yield
        return
    tag = f"{torch.compiler.config.cache_key_tag}|ATEN_CPU_CAPABILITY={capability}"
    import torch._functorch.config as functorch_config

    with torch.compiler.config.patch(cache_key_tag=tag), functorch_config.patch(enable_autograd_cache=False):
        yield
