"""Progress of long batch jobs on stderr (a bar only where stderr is a terminal), and their closing line."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

CHUNK = 256  # inputs per call between two updates of the bar

__all__ = ["bar", "in_chunks", "wrote"]


@contextlib.contextmanager
def bar(total: int, unit: str) -> Iterator[Callable[[int], object]]:
    """A tqdm bar on stderr, shown only when stderr is a terminal; yields its ``update(n)``."""
    from tqdm.auto import tqdm

    progress = tqdm(total=total, unit=unit, file=sys.stderr, disable=not sys.stderr.isatty(), dynamic_ncols=True,
                    leave=False)
    try:
        yield progress.update
    finally:
        progress.close()


def in_chunks(fn: Callable[[Sequence[str]], Sequence[T]], items: Sequence[str], unit: str) -> list[T]:
    """``fn(items)`` computed :data:`CHUNK` items at a time, with a progress bar over them."""
    out: list[T] = []
    with bar(len(items), unit) as update:
        for start in range(0, len(items), CHUNK):
            part = items[start : start + CHUNK]
            out += fn(part)
            update(len(part))
    return out


def wrote(command: str, what: str, path: str) -> None:
    """The closing line of a job that wrote a file, on stderr (stdout may be the data)."""
    print(f"qkv {command}: wrote {what} to {path}", file=sys.stderr)
