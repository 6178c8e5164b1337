"""What the trainer tells a person while it runs: evaluation lines, log lines without a bar, the bar's length.

Lines go to stdout through ``tqdm.write``, so that they print above a progress bar (on stderr) instead of
through it.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["say", "metrics_line", "train_line", "projected_end"]


def say(text: str) -> None:
    """Print one line to stdout without breaking a progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(text)


def _number(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


def metrics_line(step: int, metrics: dict[str, Any]) -> str:
    """``step 250: val loss 0.0123, ppl 1.0124, exact_match 0.9950, bleu 99.8000`` (token counts left out)."""
    parts = [f"{'val ' if k == 'loss' else ''}{k} {_number(v)}" for k, v in metrics.items() if k != "tokens"]
    return f"step {step}: " + ", ".join(parts)


def train_line(step: int, values: dict[str, Any]) -> str:
    """``step 10: loss 2.3456, lr 1.00e-04, 1234 tokens/s`` (what the bar shows, as a line)."""
    return (f"step {step}: loss {values['loss']:.4f}, lr {values['lr']:.2e}, "
            f"{values['tokens_per_s']:.0f} tokens/s")


def projected_end(step: int, total: int, *, started: tuple[int, float], now: float, deadline: float | None) -> int:
    """The step a run will end at: ``total``, or sooner where a time limit stops it first, projected from the
    rate of this run's updates so far (so that a progress bar's length and ETA respect the time limit).

    Args:
        step: updates done.
        total: updates planned.
        started: ``(step, time)`` when this run (or this resumed part) began.
        now: the time now (same clock as ``started`` and ``deadline``).
        deadline: when the time limit stops the run (``None``: no limit).
    """
    done = step - started[0]
    if deadline is None or done <= 0 or now <= started[1]:
        return total
    rate = done / (now - started[1])
    return max(step, min(total, step + int(rate * max(deadline - now, 0.0))))
