"""Answer input lines as they arrive (as fairseq-interactive does): one output line per input line.

A line is answered as soon as it is complete; lines that are already waiting are answered together, in one
batch, so ``cat big.txt | qkv translate RUN`` still runs in batches while a person typing (or a program
writing one line and waiting for the answer) gets each answer at once.
"""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO

from qkv.cli.errors import UsageError

__all__ = ["line_groups", "answer_lines", "aligned_answers"]


def _decode(raw: bytes, number: int, name: str) -> tuple[int, str]:
    """``(number, line)``; bytes that are not UTF-8 are an error naming the line (as ``qkv.data.files`` words it)."""
    try:
        return number, raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise UsageError(f"{name}: line {number} is not valid UTF-8 ({e.reason} at byte {e.start} of the line: "
                         f"{raw[max(0, e.start - 10): e.start + 10]!r})") from None


def _fd_groups(fd: int, max_group: int, name: str) -> Iterator[list[tuple[int, str]]]:
    """Complete lines read from ``fd``: wait for the first, then take the ones already there (up to
    ``max_group``) without waiting. A last line without a newline counts at the end of input."""
    pending, ready, number, eof = b"", [], 0, False
    while not eof or ready:
        waiting = select.select([fd], [], [], 0)[0] if ready else [fd]
        if waiting and not eof and len(ready) < max_group:
            chunk = os.read(fd, 1 << 16)  # blocks only when nothing is ready to answer
            eof = not chunk
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if eof and pending:
                lines, pending = [*lines, pending], b""
            for raw in lines:
                number += 1
                ready.append(_decode(raw, number, name))
            continue
        yield ready[:max_group]
        ready = ready[max_group:]


def line_groups(stream: TextIO, max_group: int = 64, name: str = "stdin") -> Iterator[list[tuple[int, str]]]:
    """Groups of ``(line number, line)`` (1-based, newlines stripped, blank lines kept) in order, each yielded
    as soon as it can be; bytes that are not UTF-8 are an error naming the line.

    ``stream`` with a file descriptor (stdin, a pipe, a file) is read without Python's buffering, so a line
    is seen the moment it is written; other streams (``io.StringIO``) are read line by line.
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd is not None:
        yield from _fd_groups(fd, max_group, name)
        return
    group: list[tuple[int, str]] = []
    raw_lines = getattr(stream, "buffer", None) or (line.encode("utf-8") for line in stream)
    for number, raw in enumerate(raw_lines, start=1):
        group.append(_decode(raw, number, name))
        if len(group) == max_group:
            yield group
            group = []
    if group:
        yield group


Answer = Callable[[Sequence[str], Sequence[int]], list[str]]


def answer_lines(answer: Answer, out: TextIO, *, stream: TextIO | None = None, banner: str | None = None,
                 name: str = "stdin") -> int:
    """Write ``answer(texts, line_numbers)`` for each group of input lines as it arrives, one output line per
    input line.

    Blank input lines are not passed to ``answer``; each gets a blank output line in its place. ``banner`` is
    printed on stderr when the input is a terminal. Returns the number of lines read.
    """
    stream = sys.stdin if stream is None else stream
    if banner and stream.isatty():
        print(banner, file=sys.stderr, flush=True)
    count = 0
    for group in line_groups(stream, name=name):
        out.writelines(a + "\n" for a in aligned_answers(group, answer))
        out.flush()
        count += len(group)
    return count


def aligned_answers(numbered: Sequence[tuple[int, str]], answer: Answer) -> list[str]:
    """``answer`` of the non-blank (stripped) lines and their numbers, with ``""`` in each blank line's place."""
    texts = [line.strip() for _, line in numbered]
    asked = [(n, t) for (n, _), t in zip(numbered, texts, strict=True) if t]
    answers = iter(answer([t for _, t in asked], [n for n, _ in asked]) if asked else [])
    return [next(answers) if t else "" for t in texts]
