"""Linear maps that decode fast on a CPU: cached copies of the weight in the layout that streams fastest.

Decoding multiplies a few rows per step by every weight matrix of the model, so a step is bound by how
fast the weights stream from memory and how well the small-``M`` GEMM kernel runs. Measured on this
project's CPU (an AMD EPYC; one thread, 12-24 matrices in turn so that caches are cold; ``F.linear``
vs the copies below; GPT-2-small's matrices):

* one or two rows: ``F.linear`` hands MKL the transposed view of the ``(out, in)`` weight, which it
  reads slower than a contiguous ``(in, out)`` matrix: 768->2304 457 -> 315 us, 768->3072 614 -> 469 us,
  3072->768 471 -> 411 us, the 50257 x 768 output matrix 9.5 -> 5.6 ms. MKL runs such a product on one
  thread whatever ``torch.get_num_threads()`` says (40 768->3072 products in turn: 18.8 ms with one
  thread or two), so with ``T > 1`` threads the copy is cut into ``T`` column slices ``(T, in, out / T)``
  and one batched product lets each thread stream its slice: 18.2 -> 11.2 ms with two threads.
* three rows and more: oneDNN's inner product on a weight reordered once (``to_mkldnn``) runs about
  twice as fast as MKL's fp32 GEMM here: 768->3072 at 8 rows 1015 -> 679 us, at 128 rows 7.1 -> 3.3 ms;
  the output matrix at 8 rows 20.8 -> 11.6 ms.
* small matrices (128 x 512): the fixed costs outweigh the gain, so they keep ``F.linear``.

So without autograd, on CPU, in float32, for a weight of at least ``min_elements`` and at most
``max_rows`` rows, :class:`DecodeWeights` multiplies by such a copy, rebuilt whenever the weight (or bias)
changes: its storage, version counter, dtype, device or shape. The price is the copy's memory (as much
again as the weights it serves; one layout at a time). Training, large batches, GPUs, other dtypes and
tracing/export take ``F.linear`` on the weight itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qkv.functional._tracing import tracing

__all__ = ["DecodeWeights", "Linear"]

_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch._C._nn, "mkldnn_linear")
_PLAIN = (torch.Tensor, nn.Parameter)  # not DTensor (FSDP) or other subclasses: those take F.linear


def _key(t: torch.Tensor | None) -> tuple | None:
    return None if t is None else (t.data_ptr(), t._version, t.dtype, t.device, tuple(t.shape))


class DecodeWeights:
    """``F.linear(x, weight, bias)`` through cached copies of the weight for few-row float32 CPU inference.

    Up to ``transpose_rows`` rows multiply a contiguous ``weight^T`` ``(in, out)``, cut into one column
    slice per torch thread ``(T, in, ceil(out / T))`` (zero-padded) when there are several; more rows (up to
    ``max_rows``) run oneDNN on a reordered copy. At most one copy is held: once the transposed copy
    exists (decoding one row per sequence), longer inputs use it too rather than building a second one.
    A plain object (not a module, parameter or buffer): nothing of it is saved, moved by ``.to()`` or
    copied by ``copy.deepcopy`` (a copy starts empty). Set ``DecodeWeights.enabled = False`` to trade
    the speed for the memory of the copy.
    """

    enabled = True
    transpose_rows = 2
    onednn_min_elements = 2**18  # smaller weights (a tied output over a tiny vocabulary) stay transposed

    def __init__(self, max_rows: int = 256, min_elements: int = 2**18) -> None:
        self.max_rows, self.min_elements = max_rows, min_elements
        self._matrix: torch.Tensor | None = None  # (T, in, ceil(out / T)): weight^T in T column slices
        self._matrix_key: tuple | None = None
        self._packed: tuple[torch.Tensor, torch.Tensor | None] | None = None  # oneDNN weight, bias
        self._packed_key: tuple | None = None

    def __deepcopy__(self, memo: dict) -> DecodeWeights:
        return type(self)(self.max_rows, self.min_elements)

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        D = x.shape[-1]
        if (not self.enabled or torch.is_grad_enabled() or weight.numel() < self.min_elements
                or x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32
                or x.numel() > self.max_rows * D or type(weight) not in _PLAIN or tracing()):
            return F.linear(x, weight, bias)
        rows = x.numel() // max(D, 1)
        x2 = x.reshape(-1, D)
        small = weight.numel() < self.onednn_min_elements
        parts = 1 if small else min(torch.get_num_threads(), weight.numel() >> 16)  # >= 64k weights a slice
        wkey = _key(weight)
        fresh = wkey == self._matrix_key  # with any number of slices: it serves more rows as it is
        if rows <= self.transpose_rows or fresh or not _ONEDNN or small:
            # one copy at a time: a transposed copy, once made, also serves more rows (at MKL's speed), so
            # a prompt after decoding builds nothing; decoding after a prompt drops the oneDNN copy
            if not fresh or (rows <= self.transpose_rows and self._matrix.shape[0] != parts):
                self._packed = self._packed_key = self._matrix = None  # free before making the new copy
                self._matrix, self._matrix_key = _sliced_transpose(weight.detach(), parts), wkey
            y = _sliced_matmul(x2, self._matrix, bias, weight.shape[0])
        else:
            key = (wkey, _key(bias))
            if key != self._packed_key:
                self._packed = self._matrix = self._matrix_key = None
                self._packed = (weight.detach().to_mkldnn(), None if bias is None else bias.detach().to_mkldnn())
                self._packed_key = key
            w, b = self._packed
            y = torch._C._nn.mkldnn_linear(x2.contiguous().to_mkldnn(), w, b).to_dense()
        return y.view(*x.shape[:-1], weight.shape[0])  # (..., out)


def _sliced_transpose(weight: torch.Tensor, parts: int) -> torch.Tensor:
    """``(out, in)`` -> ``weight^T`` as ``parts`` contiguous column slices ``(parts, in, ceil(out / parts))``."""
    out, d_in = weight.shape
    n = -(-out // parts)
    if parts == 1:
        return weight.t().contiguous().unsqueeze(0)
    m = weight.new_zeros(d_in, parts * n)  # zero columns pad the last slice
    m[:, :out] = weight.t()
    return m.view(d_in, parts, n).transpose(0, 1).contiguous()


def _sliced_matmul(x2: torch.Tensor, m: torch.Tensor, bias: torch.Tensor | None, out: int) -> torch.Tensor:
    """``x2 (rows, in) @ weight^T + bias`` from the sliced copy ``m``: one slice per thread via ``bmm``."""
    parts, d_in, n = m.shape
    if parts == 1:
        return x2 @ m[0] if bias is None else torch.addmm(bias, x2, m[0])
    y = torch.bmm(x2.expand(parts, *x2.shape), m)  # (parts, rows, n): the batch runs across threads
    y = y.transpose(0, 1).reshape(x2.shape[0], parts * n)[:, :out]  # (rows, out)
    return y + bias if bias is not None else y.contiguous()


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same state dict) that decodes through :class:`DecodeWeights`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._decode = DecodeWeights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self._decode(x, self.weight, self.bias)
