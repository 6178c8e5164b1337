"""Decoding through products laid out for few rows (weight slices, oneDNN copies): an explicit step of the
generation code.

Notation: R rows per product (B x beams while decoding), D_in and D_out a weight's sizes, T torch threads.

A decoding step multiplies a few rows by every weight matrix of the model, so its time is set by how fast
the weights stream from memory. For float32 weights on a CPU two ways serve that better than
``F.linear`` on the ``(D_out, D_in)`` parameter (``benchmarks/generation.py``; figures in the README):

* up to ``sliced_rows`` rows: no copy. The weight's rows are cut into ``T`` contiguous slices (views
  ``(T, D_out // T, D_in)`` of the live weight), so that one batched product streams one slice per thread
  where a one-row product would run on a single thread;
* more rows, up to ``max_rows``: oneDNN's inner product on a copy of the weight reordered once
  (``to_mkldnn``).

Small weights (under ``min_elements``), autograd, tracing, other devices and dtypes keep ``F.linear``.

:func:`prepare_for_decoding` gives a model these products for the length of a ``with`` block;
:func:`~qkv.generation.generate`, :func:`~qkv.generation.translate` and the streams enter one block per
call. Invariants, which keep a copy from ever standing in for weights other than the live ones:

* Model code holds no copy: its layers are plain ``nn.Linear`` and :class:`~qkv.modules.TiedOutput`, so
  training, evaluation, export and checkpoints never meet one.
* A block sets the ``forward`` of those layers as an instance attribute and deletes it on exit, together
  with the copies. Copies made for one decoding call are gone before its caller can change the weights by
  any means (an optimiser step, ``load_state_dict``, ``.data`` assignment, a new ``Parameter``, in-place
  ops), whatever that change does to the tensor's version counter (fused AdamW leaves it as it was).
* Inside a block that a caller holds across calls, a copy serves only the same weight object with the
  same storage, version counter, dtype, device and shape; and any product with autograd on (training
  inside the block) drops every copy, because the optimiser step that follows may change none of those.
* A weight gets its oneDNN copy at its second product inside a block: a product done once per call (an
  encoder over the source, a prompt) gains less than the copy costs.
* Blocks nest: an inner block over layers that an outer one already replaced leaves them to it.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from qkv.functional._tracing import tracing
from qkv.modules.projection import TiedOutput

__all__ = ["DecodingWeights", "prepare_for_decoding"]

_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch._C._nn, "mkldnn_linear")
_PLAIN = (torch.Tensor, nn.Parameter)  # not DTensor (FSDP) or other subclasses: those take F.linear


def _key(t: torch.Tensor | None) -> tuple | None:
    if t is None:
        return None
    version = None if t.is_inference() else t._version  # inference tensors keep no version counter
    return (t, t.data_ptr(), version, t.dtype, t.device, tuple(t.shape))


def _same(a: tuple | None, b: tuple | None) -> bool:
    """Keys equal, the tensor compared by identity (``==`` on tensors would compare values)."""
    if a is None or b is None:
        return a is b
    return a[0] is b[0] and a[1:] == b[1:]


class DecodingWeights:
    """Copies of a model's weights for few-row float32 CPU products, living as long as a ``with`` block.

    Use :func:`prepare_for_decoding` to make one. Entering replaces the ``forward`` of every ``nn.Linear``
    and :class:`~qkv.modules.TiedOutput` in the model (exact types; subclasses keep theirs) by one that
    multiplies faster; leaving restores them and frees the copies. Up to ``sliced_rows`` rows multiply
    through row slices of the weight itself (no copy); more rows through oneDNN's reordered copy of it.
    ``DecodingWeights.enabled = False`` switches both off everywhere (the copies cost the memory of a
    second set of weights).

    Args:
        model: the network whose layers to serve.
        max_rows: the most rows (all leading dimensions together) a product may have to use a copy.
        min_elements: smaller weights keep ``F.linear``.
    """

    enabled = True
    sliced_rows = 2
    onednn_min_elements = 2**18  # smaller weights (a tied output over a small vocabulary) are never copied

    def __init__(self, model: nn.Module, *, max_rows: int = 256, min_elements: int = 2**18) -> None:
        self.model, self.max_rows, self.min_elements = model, max_rows, min_elements
        self._entries: dict[int, dict[str, Any]] = {}  # id(weight) -> {"key", "packed"}
        self._replaced: list[tuple[nn.Module, Any]] = []

    @property
    def num_copies(self) -> int:
        """How many weights have a (oneDNN) copy now."""
        return sum(e["packed"] is not None for e in self._entries.values())

    def __enter__(self) -> DecodingWeights:
        for module in self.model.modules():
            if "forward" in module.__dict__:  # replaced by an enclosing block (or by someone else): leave it
                continue
            if type(module) is nn.Linear:
                fn = functools.partial(_linear_forward, self, module)
            elif type(module) is TiedOutput:
                fn = self.linear
            else:
                continue
            module.forward = fn
            self._replaced.append((module, fn))
        return self

    def __exit__(self, *exc: object) -> None:
        for module, fn in self._replaced:
            if module.__dict__.get("forward") is fn:
                del module.forward
        self._replaced.clear()
        self._entries.clear()

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``F.linear(x, weight, bias)``: ``x (..., D_in)``, ``weight (D_out, D_in)`` -> ``(..., D_out)``."""
        if torch.is_grad_enabled():
            self._entries.clear()  # training inside the block: the weights may change without a trace
            return F.linear(x, weight, bias)
        D = x.shape[-1]
        if (not self.enabled or weight.numel() < self.min_elements or x.device.type != "cpu"
                or x.dtype != torch.float32 or weight.dtype != torch.float32
                or x.numel() > self.max_rows * D or type(weight) not in _PLAIN or tracing()):
            return F.linear(x, weight, bias)
        x2, shape = x.reshape(-1, D), (*x.shape[:-1], weight.shape[0])
        if x2.shape[0] <= self.sliced_rows or not _ONEDNN or weight.numel() < self.onednn_min_elements:
            parts = min(torch.get_num_threads(), weight.numel() >> 16)  # >= 64k weights a slice
            return _row_sliced(x2, weight, bias, parts).view(shape)
        wkey = _key(weight)
        entry = self._entries.get(id(weight))
        if entry is None or entry["key"][0] is not weight:  # first product: no copy yet
            self._entries[id(weight)] = {"key": wkey, "packed": None}
            return F.linear(x, weight, bias)
        if not _same(entry["key"], wkey):  # changed inside the block: start again from this weight
            entry.update(key=wkey, packed=None)
        return self._packed(entry, x2, weight, bias).view(shape)

    def _packed(self, entry: dict, x2: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``x2 (R, D_in)`` times ``entry``'s oneDNN copy of ``weight`` (made or remade here) -> ``(R, D_out)``."""
        bkey = _key(bias)
        if entry["packed"] is None or not _same(entry["packed"][2], bkey):
            entry["packed"] = None
            packed_bias = None if bias is None else bias.detach().to_mkldnn()
            entry["packed"] = (weight.detach().to_mkldnn(), packed_bias, bkey)
        w, b, _ = entry["packed"]
        return torch._C._nn.mkldnn_linear(x2.contiguous().to_mkldnn(), w, b).to_dense()


def _linear_forward(copies: DecodingWeights, module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return copies.linear(x, module.weight, module.bias)


def prepare_for_decoding(model: nn.Module, **kwargs: int) -> DecodingWeights:
    """A ``with`` block in which ``model`` decodes through weight copies (see the module docstring).

    ``with prepare_for_decoding(model): ...`` around several ``generate``/``translate`` calls keeps the
    copies from one call to the next (each call otherwise makes its own); the weights must then change
    only through the model's forward with autograd on (training), which drops the copies.

    Args:
        model: the network.
        **kwargs: ``max_rows``, ``min_elements`` of :class:`DecodingWeights`.
    """
    return DecodingWeights(model, **kwargs)


def _row_sliced(x2: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, parts: int) -> torch.Tensor:
    """``x2 (R, D_in) @ weight^T + bias`` with ``weight``'s rows cut into ``parts`` contiguous slices: one
    batched product (``bmm``) whose batch runs across threads, each streaming its slice. No copy: the slices
    are views of the live weight; the last ``D_out % parts`` rows take one small product of their own."""
    out, d_in = weight.shape
    n = out // parts if parts > 1 and weight.is_contiguous() else 0
    if n == 0:
        return F.linear(x2, weight, bias)
    slices = weight[: n * parts].view(parts, n, d_in)  # (parts, n, D_in)
    y = torch.bmm(slices, x2.t().expand(parts, d_in, x2.shape[0]))  # (parts, n, R)
    y = y.permute(2, 0, 1).reshape(x2.shape[0], parts * n)  # (R, parts * n)
    if n * parts < out:
        y = torch.cat([y, x2 @ weight[n * parts :].t()], dim=1)
    return y + bias if bias is not None else y
