"""Large CPU outputs backed by transparent huge pages where the kernel offers them (Linux ``madvise`` mode).

A fresh CPU tensor over glibc's mmap threshold (at most 32 MiB) comes from new pages on every call, and
each 4 KiB page costs a fault on first touch (a cost that grows with the tensor, comparable to linear
attention's own work at long L; see the README). ``madvise(MADV_HUGEPAGE)`` on the tensor's 2 MiB-aligned
interior before it is written lets the kernel back it with 2 MiB pages instead (512 times fewer faults), as
PyTorch does for every large allocation under ``THP_MEM_ALLOC_ENABLE=1``; here only for the outputs that need
it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch

__all__ = ["advise_huge_pages", "empty_large"]

_MADV_HUGEPAGE = 14
_HUGE_PAGE = 2 << 20
_THRESHOLD = 32 << 20  # glibc's largest mmap threshold: smaller blocks are reused from the heap
_libc: list = []


def _madvise():
    if not _libc:
        fn = None
        if sys.platform.startswith("linux"):
            try:
                fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).madvise
                fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
            except (OSError, AttributeError):
                fn = None
        _libc.append(fn)
    return _libc[0]


def advise_huge_pages(t: torch.Tensor) -> bool:
    """Ask for huge pages under ``t``'s memory (CPU, >= 32 MiB, Linux); True if the kernel accepted."""
    nbytes = t.numel() * t.element_size()
    madvise = _madvise() if t.device.type == "cpu" and nbytes >= _THRESHOLD else None
    if madvise is None:
        return False
    start = (t.data_ptr() + _HUGE_PAGE - 1) & ~(_HUGE_PAGE - 1)
    end = (t.data_ptr() + nbytes) & ~(_HUGE_PAGE - 1)
    return end > start and madvise(start, end - start, _MADV_HUGEPAGE) == 0


def empty_large(*shape: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``torch.empty(shape)``, advised onto huge pages when large (see the module docstring)."""
    t = torch.empty(shape, dtype=dtype, device=device)
    advise_huge_pages(t)
    return t
