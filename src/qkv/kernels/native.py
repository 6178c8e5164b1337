"""qkv's C kernels: the elementwise work of a memory-efficient attention block (``_blocks.c``) and whole-head
attention over short sequences (``_short.c``, used by :mod:`qkv.kernels.short`), sharing ``_simd.h``.

torch runs each elementwise step of a block (exp, subtract, multiply, the bfloat16 <-> float32 casts
around bf16 matmuls, transposed copies) as its own pass over memory; on a CPU these passes cost about
as much as the block's matmuls. ``_blocks.c`` does them in one pass per block row, in AVX-512 (F, BW, VL,
BF16) intrinsics, no Python or torch headers: compiled on first use with the system C compiler (``$CC``,
else ``cc``) into a per-user cache (``$QKV_CACHE_DIR``, else ``~/.cache/qkv``), keyed by the sources,
compiler and CPU, and loaded with ctypes (which releases the GIL during calls). On other CPUs, without a
compiler, or with ``QKV_NATIVE=0``, :func:`kernels` returns None: chunked attention keeps its torch-op
path (both paths are tested against each other and against torch's fused kernel) and short sequences stay
on torch's kernels.
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

__all__ = ["Kernels", "build", "cpu_has_bf16_matmul", "cpu_supported", "kernels", "supports", "unavailable_reason"]

_SOURCES = tuple(Path(__file__).with_name(n) for n in ("_blocks.c", "_short.c"))
_HEADER = Path(__file__).with_name("_simd.h")
_DTYPES = {torch.float32: 0, torch.bfloat16: 1}
_lock = threading.Lock()
_state: dict = {}


def _cpu_signature() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


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


def _compile(sources: tuple[Path, ...], header: Path) -> Path:
    """Build (or find) the shared library for these sources, compiler and CPU; atomic rename into the cache."""
    cc = os.environ.get("CC", "cc")
    code = b"\0".join(p.read_bytes() for p in (*sources, header))
    options = [["-march=native"]]
    if _torch_libgomp():  # an OpenMP build first, sharing torch's thread pool
        options = [["-march=native", "-fopenmp"], *options]
    key = hashlib.sha256(b"\0".join([code, cc.encode(), _cpu_signature().encode(), sys.platform.encode(),
                                     repr(options).encode()]))
    target = _cache_dir() / f"qkv_blocks_{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for flags in options:
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        cmd = [cc, "-O3", *flags, "-fno-math-errno", "-fPIC", "-shared", *map(str, sources), "-o", tmp]
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


_NEEDED = ("avx512f", "avx512bw", "avx512vl", "avx512_bf16")


def _cpu_flags() -> frozenset[str]:
    if "flags" not in _state:
        _state["flags"] = frozenset(_cpu_signature().split())
    return _state["flags"]


def cpu_supported() -> bool:
    """Whether this CPU has the instructions the kernels are written in (AVX-512 F/BW/VL/BF16, x86 Linux)."""
    return _cpu_flags().issuperset(_NEEDED)


def build() -> Kernels:
    """Compile (or reuse from the cache) and load the kernels; raises RuntimeError/OSError on failure."""
    return Kernels(ctypes.CDLL(str(_compile(_SOURCES, _HEADER))))


def _threads() -> int:
    """torch's intra-op thread count, passed to every call (OpenMP builds split rows over that many)."""
    return max(1, torch.get_num_threads())


class Kernels:
    """ctypes bindings of ``_blocks.c``. Tensors are passed by data pointer; callers guarantee dtypes,
    devices (CPU) and the layouts named in each method."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        L, I, P = ctypes.c_long, ctypes.c_int, ctypes.c_void_p
        self._forward = lib.qkv_forward_tile
        self._forward.argtypes = [L, L, L, P, I, L, P, I, L, P, P, L, P, L, L, L, I, P, P, P, I]
        self._backward = lib.qkv_backward_tile
        self._backward.argtypes = [L, L, L, P, P, I, L, P, P, L, P, P, I, P, P, P, I]
        self._accumulate = lib.qkv_accumulate
        self._accumulate.argtypes = [L, L, L, P, L, L, P, I, I, I]
        self._transpose = lib.qkv_transpose
        self._transpose.argtypes = [L, L, L, P, I, L, L, P, I, L, L, ctypes.c_float, I]
        self._short_forward = lib.qkv_short_forward
        self._short_forward.argtypes = [L] * 7 + [P] * 9 + [I, ctypes.c_float, I, I]
        self._short_backward = lib.qkv_short_backward
        self._short_backward.argtypes = [L] * 7 + [P] * 17 + [I, ctypes.c_float, I, I]
        for f in (self._forward, self._backward, self._accumulate, self._transpose, self._short_forward,
                  self._short_backward):
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


def _load() -> Kernels | None:
    if os.environ.get("QKV_NATIVE", "1") == "0":
        _state["reason"] = "disabled by QKV_NATIVE=0"
        return None
    if not cpu_supported():  # not an error: the torch-op path is the faster one there
        _state["reason"] = f"this CPU lacks {', '.join(f for f in _NEEDED if f not in _cpu_flags())}"
        return None
    try:
        return build()
    except (OSError, RuntimeError, AttributeError) as e:
        _state["reason"] = str(e)
        warnings.warn(f"qkv: native attention kernels unavailable, using the torch path ({e})", stacklevel=3)
        return None


def kernels() -> Kernels | None:
    """The compiled kernels, built on first call; None where they cannot be (see :func:`unavailable_reason`)."""
    if "kernels" not in _state:
        with _lock:
            if "kernels" not in _state:
                _state["kernels"] = _load()
    return _state["kernels"]


def unavailable_reason() -> str | None:
    """Why :func:`kernels` returned None (None when it did not, or has not been called)."""
    return _state.get("reason")


def cpu_has_bf16_matmul() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX-BF16): where torch's bf16 matmuls run
    several times faster than float32 ones, which the chunked path's bf16 speed rests on."""
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def supports(t: torch.Tensor) -> bool:
    """Whether the native path can serve chunked attention on ``t`` (CPU float32/bfloat16)."""
    return t.device.type == "cpu" and t.dtype in _DTYPES
