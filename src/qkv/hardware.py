"""What the device qkv runs on does fast: instruction-set class, native bfloat16, threads.

This module sits at the bottom of qkv (it imports torch only) and answers two questions for the layers above:

* :func:`capabilities` — a small frozen description of a device: for a CPU its instruction-set class
  (``amx`` > ``avx512_bf16`` > ``avx512`` > ``avx2`` on x86, ``neon`` on ARM, else ``other``), whether bfloat16
  matrix products run natively (AVX512-BF16 or AMX on x86; CUDA devices that support bf16), core and thread
  counts; for CUDA/MPS the device's name and compute capability.
* :func:`resolve_precision` — the precision a run actually uses: ``"auto"`` is bfloat16 only where bf16 matmuls
  are native and float32 elsewhere (an emulated bf16 matmul is tens of times slower than float32).

Detection uses torch's own CPU queries first (``torch.cpu._is_avx512_bf16_supported()`` and friends, which read
cpuid), ``/proc/cpuinfo`` where they do not exist. ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is not used:
it is true on AVX-512 CPUs that only emulate bf16.

What qkv believes can be capped, never raised:

* ``QKV_CPU_ISA=avx2|avx512|avx512_bf16|amx|neon|other`` — behave as on a CPU of that class (tests, and people
  who want to see what the slower class gets). A class above what the CPU has is ignored.
* ``ONEDNN_MAX_CPU_ISA`` below ``AVX512_CORE_BF16`` keeps oneDNN (which runs torch's CPU bf16 matmuls) from the
  bf16 instructions, so bf16 is not native under it either.
"""

from __future__ import annotations

import functools
import os
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["ISA_CLASSES", "PRECISIONS", "Capabilities", "capabilities", "cpu_isa", "resolve_precision",
           "resolve_device"]

# x86 classes in increasing order of what they can do; "neon" (ARM) and "other" stand apart.
ISA_CLASSES = ("other", "neon", "avx2", "avx512", "avx512_bf16", "amx")
_X86_ORDER = ("other", "avx2", "avx512", "avx512_bf16", "amx")
_NATIVE_BF16 = frozenset({"avx512_bf16", "amx"})
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")
# oneDNN's ISA names (ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA) that still include the AVX512-BF16 instructions.
_ONEDNN_BF16 = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
                "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2", "ALL")


@dataclass(frozen=True)
class Capabilities:
    """What one device does fast.

    Attributes:
        device: ``"cpu"``, ``"cuda"`` or ``"mps"``.
        isa: the host CPU's instruction-set class, one of :data:`ISA_CLASSES` (after any ``QKV_CPU_ISA`` cap).
        native_bf16: bfloat16 matrix products run natively on ``device``.
        threads: torch's intra-op thread count.
        cores: logical CPUs of the host (``os.cpu_count()``).
        name: the accelerator's name (``None`` on CPU).
        compute_capability: CUDA ``(major, minor)`` (``None`` elsewhere).
        isa_cap: the ``QKV_CPU_ISA`` value in force (``None`` when unset).
    """

    device: str
    isa: str
    native_bf16: bool
    threads: int
    cores: int
    name: str | None = None
    compute_capability: tuple[int, int] | None = None
    isa_cap: str | None = None

    def __str__(self) -> str:
        where = self.device if self.name is None else f"{self.device} ({self.name})"
        cap = f", capped by QKV_CPU_ISA={self.isa_cap}" if self.isa_cap else ""
        return (f"{where}: CPU class {self.isa}{cap}, bf16 matmuls {'native' if self.native_bf16 else 'emulated'}, "
                f"{self.threads} threads on {self.cores} cores")


def _cpuinfo_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=1)
def _detected_isa() -> str:
    """The CPU's own class, before any cap."""
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64") or machine.startswith("arm"):
        return "neon"
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if probe is not None:  # torch's cpuid queries (torch >= 2.3)
        if getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)():
            return "amx"
        if probe():
            return "avx512_bf16"
        if torch.cpu._is_avx512_supported():
            return "avx512"
        return "avx2" if torch.cpu._is_avx2_supported() else "other"
    flags = _cpuinfo_flags()
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    if {"avx512f", "avx512bw", "avx512vl"} <= flags:
        return "avx512"
    return "avx2" if {"avx2", "fma"} <= flags else "other"


def _isa_cap() -> str | None:
    cap = os.environ.get("QKV_CPU_ISA", "").strip().lower()
    if not cap:
        return None
    if cap not in ISA_CLASSES:
        raise ValueError(f"QKV_CPU_ISA={cap!r} is not a CPU class qkv knows; use one of {', '.join(ISA_CLASSES)}")
    return cap


def cpu_isa() -> str:
    """This CPU's instruction-set class as qkv treats it: the detected class, lowered by ``QKV_CPU_ISA``.

    Raises:
        ValueError: ``QKV_CPU_ISA`` names no class in :data:`ISA_CLASSES`.
    """
    found, cap = _detected_isa(), _isa_cap()
    if cap is None or cap == found:
        return found
    if found in _X86_ORDER and cap in _X86_ORDER:
        return cap if _X86_ORDER.index(cap) < _X86_ORDER.index(found) else found
    return "other" if cap == "other" else found  # a cap from another family: nothing to lower but to "other"


def _onednn_allows_bf16() -> bool:
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return limit is None or limit.strip().upper() in _ONEDNN_BF16


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA if available, else MPS if available, else CPU; otherwise the named device.

    Raises:
        ValueError: an unknown device name, or a CUDA/MPS device this machine does not have.
    """
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device {device!r} is not one of {', '.join(DEVICES)} (or cuda:N)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: this machine has no CUDA GPU (torch {torch.__version__}); "
                         "use cpu or auto")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r}: MPS is not available here; use cpu or auto")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {device!r} is not one of {', '.join(DEVICES)} (or cuda:N)")
    return dev


def capabilities(device: str | torch.device | None = None) -> Capabilities:
    """Describe ``device`` (default: the one ``"auto"`` picks).

    Raises:
        ValueError: an unknown or absent device, or a bad ``QKV_CPU_ISA``.
    """
    dev = resolve_device(device)
    isa, cap = cpu_isa(), _isa_cap()
    common = {"isa": isa, "threads": torch.get_num_threads(), "cores": os.cpu_count() or 1, "isa_cap": cap}
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return Capabilities("cuda", native_bf16=bool(torch.cuda.is_bf16_supported()),
                            name=torch.cuda.get_device_name(index),
                            compute_capability=tuple(torch.cuda.get_device_capability(index)), **common)
    if dev.type == "mps":
        return Capabilities("mps", native_bf16=False, name="Apple GPU", **common)
    return Capabilities("cpu", native_bf16=isa in _NATIVE_BF16 and _onednn_allows_bf16(), **common)


_warned: set[tuple[str, str]] = set()


def resolve_precision(requested: str, device: str | torch.device | None = None) -> str:
    """The precision a run uses on ``device``: ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    ``"auto"`` is ``"bf16"`` where bf16 matmuls are native (CUDA with bf16, CPUs with AVX512-BF16 or AMX) and
    ``"fp32"`` elsewhere. An explicit ``"bf16"`` where it is not native is honoured after one warning (per
    device) that says how much slower it runs and how to change it. ``"fp16"`` needs a CUDA device.

    Raises:
        ValueError: ``requested`` is not one of :data:`PRECISIONS`, or fp16 is asked for off CUDA.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r} is not one of {', '.join(PRECISIONS)}")
    caps = capabilities(device)
    if requested == "auto":
        return "bf16" if caps.native_bf16 else "fp32"
    if requested == "fp16" and caps.device != "cuda":
        raise ValueError(f"precision 'fp16' needs a CUDA device, got {caps.device}; use auto, fp32 or bf16")
    if requested == "bf16" and not caps.native_bf16 and (caps.device, caps.isa) not in _warned:
        _warned.add((caps.device, caps.isa))
        warnings.warn(
            f"qkv: precision bf16 on a {caps.device} without native bf16 matmuls (CPU class {caps.isa}): bf16 "
            "matrix products are emulated there, typically tens of times slower than fp32. Use precision auto "
            "(or fp32): --set train.precision=auto, or --precision auto for qkv demo.",
            RuntimeWarning, stacklevel=2)
    return requested
