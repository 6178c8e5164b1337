"""The one door through which faster implementations reach :mod:`qkv.functional`.

``qkv.functional`` computes everything in torch ops and knows nothing about the hardware it runs on. A package
with faster kernels for some inputs on some devices (``qkv.kernels``) registers an :class:`Accelerator` here
when imported (the ``qkv`` package lists such packages in ``qkv.ACCELERATORS``; they are imported on the first
call, so functional names none of them);
for every call the dispatchers (:func:`qkv.functional.scaled_dot_product_attention`,
:func:`qkv.functional.chunked_attention`) ask the registered accelerators in order whether one has something
faster, and :func:`qkv.functional.explain` reports the same answer without running it.

Accelerators are asked only while torch's SDPA backends are unrestricted: inside
``torch.nn.attention.sdpa_kernel(...)`` the caller chose torch's implementation and gets it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import NamedTuple, Protocol

import torch

from qkv.functional._tracing import constant_under_compile

__all__ = ["Accelerator", "Call", "Offer", "Route", "ask", "backends_restricted", "register", "registered",
           "unregister"]


class Call(NamedTuple):
    """One attention call as the dispatcher sees it (after validation).

    ``op`` is ``"attention"`` (:func:`~qkv.functional.scaled_dot_product_attention` without weights) or
    ``"chunked"`` (:func:`~qkv.functional.chunked_attention`, which adds ``window``, ``lengths``, ``layout``
    and block sizes). Shapes: q ``(B, H, L, E)``, k ``(B, H_kv, S, E)``, v ``(B, H_kv, S, Ev)``.
    """

    op: str
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    mask: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    causal: bool = False
    dropout_p: float = 0.0
    scale: float | None = None
    window: int | None = None
    lengths: torch.Tensor | None = None
    layout: torch.Tensor | None = None
    block_q: int | None = None
    block_k: int | None = None


class Offer(NamedTuple):
    """An accelerator's answer to a :class:`Call`: ``run()`` computes the output, or ``run`` is None when it
    declines; ``reason`` says why either way."""

    path: str
    reason: str
    run: Callable[[], torch.Tensor] | None = None


class Accelerator(Protocol):
    """What ``qkv.kernels`` (or any other provider) implements to be asked."""

    name: str

    def offer(self, call: Call) -> Offer | None:
        """An :class:`Offer` for ``call`` (declining ones carry the reason), or None for nothing to say."""
        ...


class Route(NamedTuple):
    """Which path computes a call and why (what :func:`qkv.functional.explain` returns; printable).

    Attributes:
        path: the implementation that runs, e.g. ``"torch sdpa"`` or ``"qkv.kernels.short"``.
        reason: why that one.
        declined: ``"path: reason"`` for each accelerator asked before that declined.
        run: computes the output (the dispatcher calls it; explain does not).
    """

    path: str
    reason: str
    declined: tuple[str, ...] = ()
    run: Callable[[], torch.Tensor] | None = None

    def __str__(self) -> str:
        lines = [f"{self.path}: {self.reason}"]
        lines += [f"  declined {d}" for d in self.declined]
        return "\n".join(lines)


_registry: list[Accelerator] = []


def register(accelerator: Accelerator) -> None:
    """Ask ``accelerator`` from now on (after those registered before it); registering a name again replaces it."""
    unregister(accelerator.name)
    _registry.append(accelerator)


def unregister(name: str) -> bool:
    """Stop asking the accelerator called ``name``; True if one was registered."""
    found = [a for a in _registry if a.name == name]
    for a in found:
        _registry.remove(a)
    return bool(found)


def registered() -> tuple[str, ...]:
    """Names of the accelerators asked, in order."""
    return tuple(a.name for a in _registry)


@constant_under_compile
def backends_restricted() -> bool:
    """True inside ``sdpa_kernel(...)`` that turns off any of torch's flash, memory-efficient or math backends.

    Read once while torch.compile traces and baked into the graph (as the backend context is for the compile),
    so that this query is no graph break per attention call.
    """
    b = torch.backends.cuda
    return not (b.flash_sdp_enabled() and b.mem_efficient_sdp_enabled() and b.math_sdp_enabled())


@constant_under_compile
def _providers_imported() -> bool:
    """Import the packages the ``qkv`` package names in ``ACCELERATORS`` (once; they register themselves)."""
    if not _imported:
        _imported.append(True)
        import qkv

        for name in getattr(qkv, "ACCELERATORS", ()):
            importlib.import_module(name)
    return True


_imported: list[bool] = []


def ask(call: Call, fallback: Callable[[tuple[str, ...]], Route]) -> Route:
    """The route for ``call``: the first accelerator that offers to run it, else ``fallback(declined)``.

    This is the single decision both the dispatchers and :func:`qkv.functional.explain` use.
    """
    _providers_imported()
    if backends_restricted():
        return fallback(("accelerators: not asked inside sdpa_kernel(...), which chose torch's backends",))
    declined = ()
    for accelerator in _registry:
        offer = accelerator.offer(call)
        if offer is None:
            continue
        if offer.run is not None:
            return Route(offer.path, offer.reason, declined, offer.run)
        declined = (*declined, f"{offer.path}: {offer.reason}")
    return fallback(declined)
