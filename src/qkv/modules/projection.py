"""Linear maps that decode fast on a CPU: a cached ``(in, out)`` copy of the weight for few-row calls.

Decoding multiplies one row (or a few) per sequence by every weight matrix of the model, so a decoding
step is bound by how fast the weights stream from memory. ``F.linear`` hands MKL the transposed view of
the ``(out, in)`` weight, which it reads slower than a contiguous ``(in, out)`` matrix. Measured on this
project's CPU (one thread, 24 matrices in turn so that caches are cold; ``F.linear`` vs the copy):

* GPT-2-small's block matrices, one row: 768x768 146 -> 120 us, 768->2304 457 -> 315 us, 768->3072
  614 -> 469 us, 3072->768 471 -> 411 us; two rows 1.2-1.5x as well; four or eight rows: no gain.
* its 50257 x 768 output matrix: one row 13 -> 6.5 ms, eight rows 33 -> 22 ms.
* small matrices (128 x 512): the Python-side check costs more than the copy saves.

So without autograd, on CPU, for a weight of at least ``min_elements`` and at most ``max_rows`` rows,
:class:`TransposedWeight` multiplies by a contiguous ``(in, out)`` copy of the weight, rebuilt whenever
the weight changes (its storage, version counter, dtype, device or shape), at the cost of the copy's
memory (as much again as the weights it serves). Training, long prompts, GPUs and tracing/export take
``F.linear`` on the weight itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Linear", "TransposedWeight"]


def _exporting() -> bool:
    """Tracing (TorchScript, ONNX) or compiling (torch.compile, torch.export): use the weight itself."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


class TransposedWeight:
    """``F.linear(x, weight, bias)``, through a cached contiguous ``weight^T`` for few-row CPU inference.

    A plain object (not a module, not a parameter or buffer): nothing of it is saved, moved by ``.to()``
    or copied by ``copy.deepcopy`` (a copy starts with an empty cache). Set ``TransposedWeight.enabled =
    False`` to trade the speed for the memory of the copies (every instance then takes ``F.linear``).
    """

    enabled = True

    def __init__(self, max_rows: int = 64, min_elements: int = 0) -> None:
        self.max_rows, self.min_elements = max_rows, min_elements
        self._key: tuple | None = None
        self._matrix: torch.Tensor | None = None

    def __deepcopy__(self, memo: dict) -> TransposedWeight:
        return type(self)(self.max_rows, self.min_elements)

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if (not self.enabled or torch.is_grad_enabled() or weight.numel() < self.min_elements
                or x.device.type != "cpu" or x.numel() > self.max_rows * x.shape[-1] or _exporting()):
            return F.linear(x, weight, bias)
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device, tuple(weight.shape))
        if key != self._key:
            self._matrix, self._key = weight.detach().t().contiguous(), key  # (in, out)
        if bias is None:
            return x @ self._matrix  # (..., out)
        return torch.addmm(bias, x.reshape(-1, x.shape[-1]), self._matrix).view(*x.shape[:-1], -1)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same state dict) that decodes through :class:`TransposedWeight`.

    Args:
        in_features, out_features, bias, device, dtype: as for ``nn.Linear``.
        cache_rows: most rows that use the cached copy (2 for block matrices; an output layer over a
            large vocabulary gains up to 64).
        cache_min_elements: smaller weights always take ``F.linear``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None, *,
                 cache_rows: int = 2, cache_min_elements: int = 2**18) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self._transposed = TransposedWeight(cache_rows, cache_min_elements)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self._transposed(x, self.weight, self.bias)
