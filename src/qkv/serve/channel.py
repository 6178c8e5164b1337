"""Events from the engine thread to the asyncio handlers, handed over once per decoding step.

The engine :meth:`Channel.put` s events into a thread-safe deque and then :func:`deliver` s all channels that
got events in one step: one ``call_soon_threadsafe`` per event loop, however many requests share the step
(waking the loop once per event would cost a system call and a loop iteration each).
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Iterable
from typing import Any

__all__ = ["Channel", "deliver"]


class Channel:
    """One request's events: put and delivered by the engine thread, read by the handler with :meth:`get`.

    Args:
        loop: the handler's event loop.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop, self.queue = loop, asyncio.Queue()
        self.closed = threading.Event()  # the client went away: the engine stops working for it
        self._out: collections.deque[dict[str, Any]] = collections.deque()  # put, not yet handed to the loop

    def put(self, event: dict[str, Any]) -> None:
        """Engine side: queue an event (handed over at the next :func:`deliver`)."""
        if not self.closed.is_set():
            self._out.append(event)

    def _drain(self) -> None:  # loop side
        while self._out:
            self.queue.put_nowait(self._out.popleft())

    async def get(self, timeout: float) -> dict[str, Any]:
        """Handler side: the next event, waiting at most ``timeout`` seconds (``asyncio.TimeoutError``)."""
        if not self.queue.empty():
            return self.queue.get_nowait()
        return await asyncio.wait_for(self.queue.get(), timeout)


def _drain_all(channels: list[Channel]) -> None:
    for channel in channels:
        channel._drain()


def deliver(channels: Iterable[Channel]) -> None:
    """Engine side: hand the queued events of ``channels`` to their loops, one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Channel]] = {}
    for channel in channels:
        if channel._out:
            by_loop.setdefault(channel.loop, []).append(channel)
    for loop, group in by_loop.items():
        try:
            loop.call_soon_threadsafe(_drain_all, group)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            for channel in group:
                channel.closed.set()
