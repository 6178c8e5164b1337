"""A micro-batch split across CPU threads: data parallelism over the cores of one process.

On a CPU with a few cores, a small model's step is many small operations; torch's intra-op threads share
each of them and wait for each other at every one. :class:`BatchSplit` instead cuts each micro-batch into
``n`` parts along its batch dimension and runs forward and backward of the parts at once, each on its own
thread with one intra-op thread, as DDP ranks would, without processes or collectives.

Invariants:
- The update is the one of the whole micro-batch: each part's loss is weighted by its token count, as with
  gradient accumulation (``loss_fn`` returns the mean loss and the count).
- Deterministic: each part's gradients come back from ``torch.autograd.grad`` (no concurrent accumulation
  into ``.grad``) and are summed in part order, so runs and resumed runs are bit-identical.
- Only for steps that draw no random numbers: threads drawing from torch's one global generator at once
  would interleave their draws in a different order every run. :meth:`BatchSplit.draws_random` probes a
  step once and leaves no trace (the generator's state and the gradients are restored).
- Thread-local state (autocast, the attention backend) is entered by each thread through ``context``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from qkv.functional._tracing import compile_cache_tag
from qkv.training.runtime import map_tensors

__all__ = ["BatchSplit", "batch_rows", "split_batch"]

Part = tuple[tuple[torch.Tensor | None, ...], torch.Tensor, torch.Tensor]  # (grads, loss * n, n)


def batch_rows(batch: Any) -> int:
    """The batch size: the leading dimension shared by every tensor of ``batch`` (tensors, tuples, lists,
    dicts, dataclasses and namedtuples of them)."""
    sizes: set[int] = set()
    map_tensors(batch, lambda t: sizes.add(t.shape[0]) if t.dim() > 0 else None)
    if len(sizes) != 1:
        raise ValueError(f"batch_split needs batches whose tensors share one leading (batch) dimension, got "
                         f"leading sizes {sorted(sizes)}")
    return sizes.pop()


def split_batch(batch: Any, n: int) -> list[Any]:
    """``batch`` cut into ``min(n, rows)`` parts along dimension 0 (sizes differ by at most one), each of the
    same type as ``batch``; scalars and non-tensors are repeated in every part."""
    parts = min(n, batch_rows(batch))
    return [map_tensors(batch, lambda t, i=i: t.tensor_split(parts)[i] if t.dim() > 0 else t) for i in range(parts)]


class BatchSplit:
    """Runs the parts of a micro-batch on ``n`` threads and sums their gradients.

    Args:
        n: threads (and parts per micro-batch), ``>= 2``.
        step: ``step(part) -> (mean loss, n_tokens)`` (the trainer's loss module, compiled or not).
        params: the parameters whose gradients are computed.
        context: a fresh context manager for each part's forward (autocast, attention backend).
    """

    def __init__(self, n: int, step: Callable[[Any], tuple[torch.Tensor, Any]], params: Sequence[nn.Parameter],
                 context: Callable[[], AbstractContextManager[None]]) -> None:
        if n < 2:
            raise ValueError(f"BatchSplit needs n >= 2 threads, got {n}")
        self.n, self.step, self.context = n, step, context
        self.params = [p for p in params if p.requires_grad]
        self.pool = ThreadPoolExecutor(n, thread_name_prefix="qkv-batch-split")
        self._threads: int | None = None

    def __enter__(self) -> BatchSplit:
        """One intra-op thread per part while the split is in use (torch's setting is process-wide)."""
        self._threads = torch.get_num_threads()
        torch.set_num_threads(1)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._threads is not None:
            torch.set_num_threads(self._threads)
            self._threads = None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """torch's own thread count again for a while (evaluation runs unsplit in the calling thread)."""
        saved, self._threads = self._threads, None
        if saved is not None:
            torch.set_num_threads(saved)
        try:
            yield
        finally:
            if saved is not None:
                self.__enter__()

    def close(self) -> None:
        """Restore torch's thread count (if in use) and stop the threads."""
        self.__exit__(None, None, None)
        self.pool.shutdown(wait=True)

    def _part(self, batch: Any) -> Part:
        with compile_cache_tag():
            with self.context():
                loss, n = self.step(batch)
            n = torch.as_tensor(n, device=loss.device, dtype=torch.float32)
            weighted = loss.float() * n
            grads = torch.autograd.grad(weighted, self.params, allow_unused=True)
        return grads, weighted.detach(), n

    def draws_random(self, batch: Any) -> bool:
        """Whether forward and backward of (a part of) ``batch`` draw from torch's global CPU generator.
        Leaves the generator as it was; the probe's gradients are dropped."""
        state = torch.random.get_rng_state()
        self.pool.submit(self._part, split_batch(batch, self.n)[0]).result()
        drew = not torch.equal(state, torch.random.get_rng_state())
        torch.random.set_rng_state(state)
        return drew

    def accumulate(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the gradients of ``sum(loss_i * n_i)`` over the parts of ``batch`` into ``.grad``.

        Returns:
            ``(loss * n, n)`` summed over the parts (0-dim float32 tensors).
        """
        parts = [f.result() for f in [self.pool.submit(self._part, b) for b in split_batch(batch, self.n)]]
        have = [i for i, g in enumerate(parts[0][0]) if g is not None]  # the same parameters in every part
        total = [parts[0][0][i] for i in have]
        for part in parts[1:]:
            torch._foreach_add_(total, [part[0][i] for i in have])  # in part order: deterministic
        for i, g in zip(have, total, strict=True):
            p = self.params[i]
            p.grad = g if p.grad is None else p.grad.add_(g)
        return sum(part[1] for part in parts), sum(part[2] for part in parts)
