"""Fitting a run to its time limit: time a few updates, then plan the run's length once.

The plan is a number of updates; the learning-rate schedule is built over it, and it is saved in checkpoints,
so everything after it is deterministic. Only the plan itself depends on the clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["StepTimer", "steps_that_fit"]


def steps_that_fit(time_left: float, seconds_per_step: float, *, done: int, most: int,
                   reserve: float = 0.1) -> int:
    """How many updates a run can plan for: those done plus those that fit in ``time_left``.

    Args:
        time_left: seconds of the time limit still left.
        seconds_per_step: measured seconds per update.
        done: updates already made.
        most: upper bound (the configured ``steps``).
        reserve: fraction of ``time_left`` kept for evaluations and checkpoints.

    Returns:
        The planned total number of updates, in ``[done + 1, most]`` (``most`` when ``done >= most``).
    """
    if seconds_per_step <= 0 or not 0.0 <= reserve < 1.0:
        raise ValueError(f"seconds_per_step ({seconds_per_step}) must be > 0 and reserve ({reserve}) in [0, 1)")
    fit = math.floor(max(time_left, 0.0) * (1.0 - reserve) / seconds_per_step)
    return min(most, max(done + 1, done + fit))


class StepTimer:
    """Seconds per update over updates ``after // 2`` to ``after`` of one ``fit`` call.

    The first half is left out: it holds compilation, allocator and cache warm-up.

    Args:
        after: updates of a ``fit`` call before the timing is known (>= 2).
        sync: called before each clock reading (``torch.cuda.synchronize`` on a GPU), so queued work counts.
    """

    def __init__(self, after: int, sync: Callable[[], None] = lambda: None) -> None:
        self.after, self.sync = after, sync
        self._start = self._mark = (0, 0.0)

    def begin(self, step: int) -> None:
        """A ``fit`` call starts at ``step``."""
        self._start = (step, time.perf_counter())

    def seconds_per_step(self, step: int) -> float | None:
        """Called after each update: the measured seconds per update once ``after`` updates are done, else None."""
        done = step - self._start[0]
        if done not in (self.after // 2, self.after):
            return None
        self.sync()
        now = time.perf_counter()
        if done < self.after:
            self._mark = (step, now)
            return None
        return (now - self._mark[1]) / (step - self._mark[0])
