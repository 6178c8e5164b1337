"""The serving engine: one thread owns the model; requests wait in a bounded queue.

The HTTP handlers (asyncio) never touch the model. They :meth:`Engine.submit` work and read events back
through a :class:`~qkv.serve.channel.Channel`. The engine thread takes, in arrival order, either one call
(classify, embed, beam search: run alone) or up to ``max_batch`` completion rows, which it decodes together
as a :class:`~qkv.serve.wave.Wave`; requests that arrive meanwhile wait for the next wave. A full queue is
refused at once (the handler answers 503); a row whose client left, or whose deadline passed, leaves
the batch at the next step; queued work past its deadline is dropped unstarted.
"""

from __future__ import annotations

import collections
import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from qkv.serve.backends import BadRequest
from qkv.serve.channel import Channel, deliver
from qkv.serve.wave import EngineStats, Row, Wave

__all__ = ["Call", "Engine", "EngineStats", "QueueFull"]


class QueueFull(RuntimeError):
    """The engine's queue holds ``queue_size`` requests already."""


@dataclass(eq=False)
class Call:
    """A function run alone on the engine thread; its result (or error) goes to ``channel``: as
    ``{"result": value}``, or, with ``events=True``, as ``{"events": [event, ...]}`` (a beam search's tokens)."""

    fn: Callable[[], Any]
    channel: Channel
    deadline: float
    events: bool = False

    def run(self) -> None:
        try:
            self.channel.put({"events" if self.events else "result": self.fn()})
        except BadRequest as e:
            self.channel.put({"error": e})
        except Exception as e:  # noqa: BLE001 - reported to the client as a 500, the engine keeps serving
            self.channel.put({"error": BadRequest(None, f"{type(e).__name__}: {e}", 500)})
        deliver([self.channel])




class Engine:
    """Runs queued work on one background thread.

    Args:
        backend: what the model does (generative or encoder backend).
        max_batch: most completion rows decoded together.
        queue_size: most requests waiting (not yet started); more are refused with :class:`QueueFull`.
        batch_wait: the longest a new wave waits for the clients of the last one to send their next request
            (seconds; a dynamic-batching queue delay, as Triton's ``max_queue_delay``). Without it, clients that
            were just answered miss the next wave by a moment, and waves split into small ones.
    """

    def __init__(self, backend: Any, *, max_batch: int = 16, queue_size: int = 64, batch_wait: float = 0.01) -> None:
        if max_batch < 1 or queue_size < 1 or batch_wait < 0:
            raise ValueError(f"max_batch ({max_batch}) and queue_size ({queue_size}) must be >= 1, batch_wait "
                             f"({batch_wait}) >= 0")
        self.backend, self.max_batch, self.queue_size, self.batch_wait = backend, max_batch, queue_size, batch_wait
        self._last_wave = 0  # rows in the last wave: how many clients may be about to come back
        self.stats = EngineStats()
        self._pending: collections.deque[Row | Call] = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = False

    def start(self) -> None:
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._loop, name="qkv-serve-engine", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def submit(self, item: Row | Call) -> None:
        """Queue a completion row or a call; raises :class:`QueueFull` when the queue is full."""
        with self._cond:
            if len(self._pending) >= self.queue_size:
                self.stats.rejected += 1
                raise QueueFull(f"the server queue is full ({self.queue_size} waiting); retry later")
            self._pending.append(item)
            self._cond.notify()

    def snapshot(self) -> dict[str, Any]:
        with self._cond:
            counts = {f.name: copy.copy(getattr(self.stats, f.name)) for f in fields(self.stats)}  # dict copy: atomic
            return {**counts, "waiting": len(self._pending), "max_batch": self.max_batch,
                    "queue_size": self.queue_size}

    def _take(self) -> list[Row | Call] | None:
        """The next unit of work: one call, or the completion rows at the head of the queue."""
        with self._cond:
            while not self._stop:
                self._drop_expired()
                if self._pending:
                    break
                self._cond.wait(timeout=0.5)
            if self._stop:
                return None
            if isinstance(self._pending[0], Call):
                return [self._pending.popleft()]
            end = time.monotonic() + self.batch_wait
            while not self._stop and self._rows_waiting() < min(self._last_wave, self.max_batch):
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)  # submit() wakes us at each arrival
            rows: list[Row | Call] = []
            while self._pending and isinstance(self._pending[0], Row) and len(rows) < self.max_batch:
                rows.append(self._pending.popleft())
            self._last_wave = len(rows)
            return rows

    def _rows_waiting(self) -> int:
        """Completion rows at the head of the queue (up to the first call)."""
        n = 0
        for item in self._pending:
            if not isinstance(item, Row):
                break
            n += 1
        return n

    def _drop_expired(self) -> None:
        now, kept = time.monotonic(), collections.deque()
        for item in self._pending:
            if item.channel.closed.is_set() or now > item.deadline:
                self.stats.expired += 1
                item.channel.put({"finish_reason": "timeout"})
                deliver([item.channel])
            else:
                kept.append(item)
        self._pending = kept

    def _loop(self) -> None:
        while True:
            work = self._take()
            if work is None:
                return
            if isinstance(work[0], Call):
                self.stats.calls += 1
                work[0].run()
                continue
            self.stats.waves += 1
            rows = [w for w in work if isinstance(w, Row)]
            try:
                Wave(self.backend, rows, self.stats).run()
            except Exception as e:  # noqa: BLE001 - every row of the failed wave gets the error
                for r in rows:
                    r.channel.put({"error": BadRequest(None, f"{type(e).__name__}: {e}", 500)})
                deliver(r.channel for r in rows)

