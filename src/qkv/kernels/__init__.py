"""qkv's accelerated kernels: C sources, their build, the autograd/custom-op wrappers that call them, and the
table that routes calls to them.

``qkv.functional`` holds the readable reference algorithms in torch ops and knows nothing about hardware. This
package makes some of them faster on some machines and reaches them through one door
(:mod:`qkv.functional.accelerators`): importing it registers :class:`~qkv.kernels.routing.KernelAccelerator`,
which offers a kernel for a call where :mod:`qkv.kernels.routing`'s table (written by the benchmarks) lists
it for this instruction-set class. ``QKV_KERNELS=0`` in the environment (read at import), or :func:`disable`,
keeps every call on ``qkv.functional``'s own paths; :func:`qkv.functional.explain` says which path a call takes.

Modules: :mod:`~qkv.kernels.native` (build and ctypes bindings of ``_blocks.c`` / ``_short.c``),
:mod:`~qkv.kernels.short` (whole-head attention for short sequences), :mod:`~qkv.kernels.blocks` (chunked
attention with C block work), :mod:`~qkv.kernels.padded` (key padding without a mask), :mod:`~qkv.kernels.routing`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from qkv.functional import accelerators
from qkv.kernels import native
from qkv.kernels.routing import KernelAccelerator
from qkv.kernels.routing import report as _routing_report

__all__ = ["build", "disable", "disabled", "enable", "enabled", "report"]

_ACCELERATOR = KernelAccelerator()


def enable() -> None:
    """Offer qkv's kernels to the dispatchers (the default unless ``QKV_KERNELS=0``)."""
    accelerators.register(_ACCELERATOR)


def disable() -> None:
    """Keep every call on ``qkv.functional``'s torch paths."""
    accelerators.unregister(_ACCELERATOR.name)


def enabled() -> bool:
    """Whether the dispatchers ask qkv's kernels."""
    return _ACCELERATOR.name in accelerators.registered()


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """``with qkv.kernels.disabled():`` the torch paths only, then back to what was in force."""
    was = enabled()
    disable()
    try:
        yield
    finally:
        if was:
            enable()


def build() -> str:
    """Build the C kernels now (or find them in the cache); one line saying what happened (never raises: a
    failed build is one warning and the torch paths)."""
    if native.kernels() is None:
        return f"C kernels not built: {native.unavailable_reason()}; every call stays on torch's paths"
    return "C kernels built and loaded (cached for this compiler and CPU)"


def report() -> list[str]:
    """What ``qkv doctor`` says about the kernels: built or not, the routing table for this CPU class, and the
    path :func:`qkv.functional.explain` gives for typical shapes."""
    state = "asked by the dispatchers" if enabled() else "not asked (QKV_KERNELS=0 or qkv.kernels.disable())"
    return [build() + f"; {state}", *_routing_report()]


if os.environ.get("QKV_KERNELS", "1").strip() != "0":
    enable()
