"""qkv's C kernels: the elementwise work of a memory-efficient attention block (``_blocks.c``) and whole-head
attention over short sequences (``_short.c``, used by :mod:`qkv.kernels.short`), built for each CPU class.

torch runs each elementwise step of a block (exp, subtract, multiply, the bfloat16 <-> float32 casts
around bf16 matmuls, transposed copies) as its own pass over memory; ``_blocks.c`` does them in one pass per
block row. Both sources are written once against the vector layer ``_simd.h`` and compiled once per
instruction-set variant (:data:`VARIANTS`), as llama.cpp does:

* ``avx512_bf16``: AVX-512 F/BW/VL with the AVX512-BF16 instructions: conversions, and in ``_short.c`` the
  bfloat16 dot products for bfloat16 inputs (softmax weights and their gradients rounded to bfloat16 for the
  products that take them, float32 sums);
* ``avx512``: AVX-512 F/BW/VL, bfloat16 rounded in integer instructions;
* ``avx2``: AVX2 + FMA (8 lanes); bfloat16 is storage only, widened to float32, here and in the other variants;
* ``portable``: plain C the compiler vectorises for its own target (SSE2 on x86-64, NEON on ARM): what every
  other CPU runs, and the variant every test run checks.

:func:`kernels` loads the variant of this CPU's class (:func:`qkv.hardware.cpu_isa`, so ``QKV_CPU_ISA=avx2``
selects the AVX2 build on a larger CPU); ``kernels(variant)`` loads a named one if the CPU can execute it. Each
is compiled on first use with the system C compiler (``$CC``, else ``cc``; no Python or torch headers) into a
per-user cache (``$QKV_CACHE_DIR``, else ``~/.cache/qkv``), keyed by the sources, the variant and the compiler,
and loaded with ctypes (which releases the GIL during calls). Without a compiler, or with ``QKV_NATIVE=0``,
:func:`kernels` returns None (a failed build warns once): chunked attention keeps its torch-op path and short
sequences stay on torch's kernels.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import torch

from qkv.hardware import capabilities, cpu_isa

__all__ = ["VARIANTS", "Kernels", "build", "can_execute", "cpu_has_bf16_matmul", "kernels", "supports",
           "unavailable_reason", "variant_for"]

_DIR = Path(__file__).parent
_SOURCES = tuple(_DIR / n for n in ("_blocks.c", "_short.c"))
_HEADERS = tuple(_DIR / n for n in ("_simd.h", "_simd_avx512.h", "_simd_avx2.h", "_simd_portable.h"))
_DTYPES = {torch.float32: 0, torch.bfloat16: 1}
_lock = threading.Lock()
_state: dict = {}

VARIANTS = ("avx512_bf16", "avx512", "avx2", "portable")
# Compiler flags of each variant: explicit instruction sets (never -march=native, which would let the compiler
# use instructions of the build machine that the variant's CPU class lacks).
_FLAGS = {
    "avx512_bf16": ("-DQKV_SIMD_AVX512", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mfma", "-mavx512bf16"),
    "avx512": ("-DQKV_SIMD_AVX512", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mfma"),
    "avx2": ("-DQKV_SIMD_AVX2", "-mavx2", "-mfma"),
    "portable": ("-DQKV_SIMD_PORTABLE",),
}
# The CPU classes (qkv.hardware.ISA_CLASSES) that execute each variant; the portable one runs everywhere.
_RUNS_ON = {
    "avx512_bf16": frozenset({"avx512_bf16", "amx"}),
    "avx512": frozenset({"avx512", "avx512_bf16", "amx"}),
    "avx2": frozenset({"avx2", "avx512", "avx512_bf16", "amx"}),
}


def variant_for(isa: str) -> str:
    """The fastest variant a CPU of class ``isa`` (one of :data:`qkv.hardware.ISA_CLASSES`) executes."""
    return next(v for v in VARIANTS if v == "portable" or isa in _RUNS_ON[v])


def can_execute(variant: str) -> bool:
    """Whether this CPU, as qkv treats it (:func:`qkv.hardware.cpu_isa`), executes ``variant``'s instructions.

    Raises:
        ValueError: ``variant`` is not one of :data:`VARIANTS`.
    """
    if variant not in VARIANTS:
        raise ValueError(f"kernel variant {variant!r} is not one of {', '.join(VARIANTS)}")
    return variant == "portable" or cpu_isa() in _RUNS_ON[variant]


def _cache_dir() -> Path:
    root = os.environ.get("QKV_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "qkv")
    return Path(root) / "native"


def _torch_libgomp() -> bool:
    """Whether torch runs its CPU threads on GNU OpenMP (libgomp.so.1, loaded in this process).

    A library built with ``-fopenmp`` then binds to that same libgomp (the loader matches the soname), so
    its parallel loops run on torch's threads. Anywhere else (another OpenMP runtime, no /proc) the kernels
    are built single-threaded rather than bring a second thread pool that would compete for the cores."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return False
    return "OpenMP" in torch.__config__.parallel_info() and "/libgomp.so.1" in maps


def _compiler_version(cc: str) -> str:
    """The compiler's own ``--version`` banner (part of the cache key: a new compiler builds afresh)."""
    if ("cc", cc) not in _state:
        try:
            done = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise RuntimeError(f"C compiler {cc!r} unusable: {e}") from e
        _state[("cc", cc)] = done.stdout
    return _state[("cc", cc)]


def _compile(variant: str) -> Path:
    """Build (or find) the shared library of one variant for this compiler; atomic rename into the cache."""
    cc = os.environ.get("CC", "cc")
    code = b"\0".join(p.read_bytes() for p in (*_SOURCES, *_HEADERS))
    options = [list(_FLAGS[variant])]
    if _torch_libgomp():  # an OpenMP build first, sharing torch's thread pool
        options = [[*options[0], "-fopenmp"], *options]
    key = hashlib.sha256(b"\0".join(x.encode() if isinstance(x, str) else x for x in (
        code, variant, cc, _compiler_version(cc), sys.platform, platform.machine(), repr(options))))
    target = _cache_dir() / f"qkv_kernels_{variant}_{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for flags in options:
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        cmd = [cc, "-O3", *flags, "-fno-math-errno", "-fPIC", "-shared", *map(str, _SOURCES), "-o", tmp]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            os.unlink(tmp)
            raise RuntimeError(f"{' '.join(cmd)}: {e}") from e
        if done.returncode == 0:
            os.replace(tmp, target)
            return target
        os.unlink(tmp)
        errors.append(f"{' '.join(cmd)}: {done.stderr.strip()[-500:]}")
    raise RuntimeError("; ".join(errors))


def build(variant: str) -> Kernels:
    """Compile (or reuse from the cache) and load one variant; raises RuntimeError/OSError on failure.

    It does not check that this CPU executes the variant (see :func:`can_execute`): loading is safe, calling
    is not."""
    lib = ctypes.CDLL(str(_compile(variant)))
    lib.qkv_variant.restype = ctypes.c_char_p
    built = lib.qkv_variant().decode()
    if built != variant:
        raise RuntimeError(f"the {variant} build of qkv's kernels reports itself as {built}")
    return Kernels(lib, variant)


def _threads() -> int:
    """torch's intra-op thread count, passed to every call (OpenMP builds split rows over that many)."""
    return max(1, torch.get_num_threads())


class Kernels:
    """ctypes bindings of ``_blocks.c``. Tensors are passed by data pointer; callers guarantee dtypes,
    devices (CPU) and the layouts named in each method."""

    def __init__(self, lib: ctypes.CDLL, variant: str) -> None:
        self.variant = variant
        L, I, P = ctypes.c_long, ctypes.c_int, ctypes.c_void_p
        self._forward = lib.qkv_forward_tile
        self._forward.argtypes = [L, L, L, P, I, L, P, I, L, P, P, L, P, L, L, L, I, P, P, P, I]
        self._backward = lib.qkv_backward_tile
        self._backward.argtypes = [L, L, L, P, P, I, L, P, P, L, P, P, I, P, P, P, I]
        self._accumulate = lib.qkv_accumulate
        self._accumulate.argtypes = [L, L, L, P, L, L, P, I, I, I]
        self._transpose = lib.qkv_transpose
        self._transpose.argtypes = [L, L, L, P, I, L, L, P, I, L, L, ctypes.c_float, I]
        self._scale_rows = lib.qkv_scale_rows
        self._scale_rows.argtypes = [L, L, L, P, I, L, L, P, I, L, L, ctypes.c_float, I]
        self._rowdot = lib.qkv_rowdot
        self._rowdot.argtypes = [L, L, L, P, I, L, L, P, I, L, L, P, I]
        self._short_forward = lib.qkv_short_forward
        self._short_forward.argtypes = [L] * 7 + [P] * 9 + [I, ctypes.c_float, I, I]
        self._short_backward = lib.qkv_short_backward
        self._short_backward.argtypes = [L] * 7 + [P] * 17 + [I, ctypes.c_float, I, I]
        for f in (self._forward, self._backward, self._accumulate, self._transpose, self._scale_rows, self._rowdot,
                  self._short_forward, self._short_backward):
            f.restype = ctypes.c_int

    @staticmethod
    def interval(p0: int, G: int, causal: bool, window: int | None, length: int, ks: int):
        """The per-row visible key interval of a block (see ``row_interval`` in ``_blocks.c``)."""
        return (ctypes.c_int64 * 6)(p0, G, int(causal), window or 0, length, ks)

    @staticmethod
    def block_mask(mask):
        """``(block, H_kv, G)``: a bool mask block ``(b, h_kv, q, g, k)`` (size-1 dims broadcast, keys
        contiguous) of a tile whose heads are ``b * H_kv + h`` and rows ``q * G + g``, as the kernels'
        ``(pointer, strides)``; ``(None, None)`` for no mask. See ``mask_row`` in ``_blocks.c``."""
        if mask is None:
            return None, None
        block, H_kv, G = mask
        st = [0 if block.shape[d] == 1 else block.stride(d) for d in range(4)]
        return block.data_ptr(), (ctypes.c_int64 * 6)(*st, H_kv, G)

    @staticmethod
    def mask_supported(mask) -> bool:
        """Whether a bool mask (as given, or arranged) can go to the kernels: keys contiguous, not broadcast."""
        return mask is None or (mask.dtype == torch.bool and mask.shape[-1] > 1 and mask.stride(-1) == 1)

    @staticmethod
    def _check(rc: int, name: str) -> None:
        if rc:
            raise MemoryError(f"qkv native {name}: could not allocate its scratch buffer")

    def forward_tile(self, s, p, m, l, acc, first: bool, iv=None, mask=None) -> None:
        """s, p: (N, R, K) with contiguous rows; m, l: (N, R, 1) float32 with unit row stride; acc (N, R, Ev)
        float32 with unit last stride. p may be s (in place). mask: see :meth:`block_mask`, or None."""
        N, R, K = s.shape
        self._check(self._forward(
            N, R, K, s.data_ptr(), _DTYPES[s.dtype], s.stride(0), p.data_ptr(), _DTYPES[p.dtype], p.stride(0),
            m.data_ptr(), l.data_ptr(), m.stride(0), acc.data_ptr(), acc.stride(0), acc.stride(1), acc.shape[2],
            int(first), iv, *self.block_mask(mask), _threads()), "forward_tile")

    def backward_tile(self, s, dp, lse, delta, ds, p=None, iv=None, mask=None) -> None:
        """s, dp: (N, R, K) same dtype and head stride, contiguous rows; lse, delta: (N, R, 1) float32, same
        head stride; ds and p (optional): contiguous (N, R, K), one dtype. p may be s and ds may be dp (in place)."""
        N, R, K = s.shape
        self._check(self._backward(
            N, R, K, s.data_ptr(), dp.data_ptr(), _DTYPES[s.dtype], s.stride(0), lse.data_ptr(), delta.data_ptr(),
            lse.stride(0), None if p is None else p.data_ptr(), ds.data_ptr(), _DTYPES[ds.dtype], iv,
            *self.block_mask(mask), _threads()),
            "backward_tile")

    def accumulate(self, acc, part, first: bool) -> None:
        """acc (N, R, E) float32 with unit last stride = part (contiguous) if first, else += part."""
        N, R, E = part.shape
        self._accumulate(N, R, E, acc.data_ptr(), acc.stride(0), acc.stride(1), part.data_ptr(),
                         _DTYPES[part.dtype], int(first), _threads())

    def transpose(self, src, dst, scale: float = 1.0) -> None:
        """dst (N, B, A) = scale * src (N, A, B) transposed, with dtype conversion; unit last strides."""
        N, A, B = src.shape
        if dst.shape != (N, B, A) or src.stride(2) != 1 or dst.stride(2) != 1:
            raise ValueError(f"transpose: src {tuple(src.shape)} / dst {tuple(dst.shape)} (need (N, A, B) / "
                             "(N, B, A), unit last strides)")
        self._transpose(N, A, B, src.data_ptr(), _DTYPES[src.dtype], src.stride(0), src.stride(1), dst.data_ptr(),
                        _DTYPES[dst.dtype], dst.stride(0), dst.stride(1), scale, _threads())

    def scale_rows(self, src, dst, scale: float = 1.0) -> None:
        """dst (N, R, E) = scale * src (N, R, E), with dtype conversion; any head/row strides, unit last strides."""
        if dst.shape != src.shape or src.dim() != 3 or src.stride(2) != 1 or dst.stride(2) != 1:
            raise ValueError(f"scale_rows: src {tuple(src.shape)} / dst {tuple(dst.shape)} (need the same (N, R, E), "
                             "unit last strides)")
        N, R, E = src.shape
        self._scale_rows(N, R, E, src.data_ptr(), _DTYPES[src.dtype], src.stride(0), src.stride(1), dst.data_ptr(),
                         _DTYPES[dst.dtype], dst.stride(0), dst.stride(1), scale, _threads())

    def rowdot(self, a, b, out) -> None:
        """out (N, R) float32 contiguous = sum over the last dim of a * b (both (N, R, E), unit last strides,
        float32 or bfloat16), accumulated in float32."""
        if a.shape != b.shape or a.dim() != 3 or a.stride(2) != 1 or b.stride(2) != 1:
            raise ValueError(f"rowdot: a {tuple(a.shape)} / b {tuple(b.shape)} (need the same (N, R, E), unit last "
                             "strides)")
        N, R, E = a.shape
        if out.dtype != torch.float32 or out.numel() != N * R or not out.is_contiguous():
            raise ValueError(f"rowdot: out {tuple(out.shape)} {out.dtype} (need {N * R} contiguous float32)")
        self._rowdot(N, R, E, a.data_ptr(), _DTYPES[a.dtype], a.stride(0), a.stride(1), b.data_ptr(),
                     _DTYPES[b.dtype], b.stride(0), b.stride(1), out.data_ptr(), _threads())

    @staticmethod
    def _rows(t):
        """A ``(B, H, rows, E)`` tensor with unit last stride as ``(pointer, {batch, head, row} strides)``."""
        return t.data_ptr(), (ctypes.c_int64 * 3)(t.stride(0), t.stride(1), t.stride(2))

    def short_forward(self, q, k, v, o, lse, scale: float, causal: bool) -> None:
        """Whole-head attention (``_short.c``): q (B, H, L, E), k (B, H_kv, S, E), v (B, H_kv, S, Ev) and the
        output o (B, H, L, Ev), one dtype, unit last strides; lse (B, H, L) float32 contiguous (written)."""
        B, H, L, E = q.shape
        H_kv, S, Ev = k.shape[1], k.shape[2], v.shape[3]
        self._check(self._short_forward(
            B, H, H_kv, L, S, E, Ev, *self._rows(q), *self._rows(k), *self._rows(v), *self._rows(o), lse.data_ptr(),
            _DTYPES[q.dtype], scale, int(causal), _threads()), "short_forward")

    def short_backward(self, q, k, v, o, do, lse, dq, dk, dv, scale: float, causal: bool) -> None:
        """Gradients of :meth:`short_forward` into dq, dk, dv (shaped as q, k, v): all one dtype, unit last strides."""
        B, H, L, E = q.shape
        H_kv, S, Ev = k.shape[1], k.shape[2], v.shape[3]
        self._check(self._short_backward(
            B, H, H_kv, L, S, E, Ev, *self._rows(q), *self._rows(k), *self._rows(v), *self._rows(o), *self._rows(do),
            lse.data_ptr(), *self._rows(dq), *self._rows(dk), *self._rows(dv), _DTYPES[q.dtype], scale, int(causal),
            _threads()), "short_backward")


def _load(variant: str) -> Kernels | None:
    """The build of ``variant``, made once per process; None (after one warning) if it fails."""
    if ("built", variant) not in _state:
        with _lock:
            if ("built", variant) not in _state:
                try:
                    _state["built", variant] = build(variant)
                except (OSError, RuntimeError, AttributeError) as e:
                    _state["built", variant], _state["failed", variant] = None, str(e)
                    warnings.warn(f"qkv: native attention kernels ({variant}) unavailable, using the torch path "
                                  f"({e})", stacklevel=4)
    return _state["built", variant]


def _choice(variant: str | None) -> tuple[str | None, str | None]:
    """(the variant to load, or None; why not) under the current QKV_NATIVE and QKV_CPU_ISA."""
    if variant is None:
        if os.environ.get("QKV_NATIVE", "1") == "0":
            return None, "disabled by QKV_NATIVE=0"
        variant = variant_for(cpu_isa())
    if not can_execute(variant):  # not an error: the torch path serves this CPU
        return None, f"this CPU (class {cpu_isa()}) cannot execute the {variant} build"
    return variant, None


def kernels(variant: str | None = None) -> Kernels | None:
    """The compiled kernels of ``variant`` (default: this CPU class's, see :func:`variant_for`), built on first
    call; None where they cannot be (see :func:`unavailable_reason`). ``QKV_NATIVE=0`` turns the default off;
    a named variant the CPU executes is still built (tests check every one).

    Raises:
        ValueError: ``variant`` is not one of :data:`VARIANTS`.
    """
    key = ("choice", variant, os.environ.get("QKV_NATIVE"), os.environ.get("QKV_CPU_ISA"))
    chosen = _state.get(key, False)
    if chosen is False:
        chosen = _state[key] = _choice(variant)[0]
    return None if chosen is None else _load(chosen)


def unavailable_reason(variant: str | None = None) -> str | None:
    """Why ``kernels(variant)`` returns None (None when it does not, or was not built yet)."""
    chosen, why = _choice(variant)
    return why if chosen is None else _state.get(("failed", chosen))


def cpu_has_bf16_matmul() -> bool:
    """Whether this CPU multiplies bfloat16 natively (:attr:`qkv.hardware.Capabilities.native_bf16`): where
    torch's bf16 matmuls run several times faster than float32 ones, which the chunked path's bf16 speed
    rests on."""
    return capabilities("cpu").native_bf16


def supports(t: torch.Tensor) -> bool:
    """Whether the native path can serve chunked attention on ``t`` (CPU float32/bfloat16)."""
    return t.device.type == "cpu" and t.dtype in _DTYPES
