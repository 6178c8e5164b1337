"""Reading user text files: plain or gzip, strict UTF-8, errors that name the file and the line.

Every reader here raises ``ValueError`` for input that training cannot use (an empty file, bytes
that are not UTF-8, aligned files of different lengths) before any tensor is built, and
``FileNotFoundError`` for a missing file.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

__all__ = ["open_binary", "iter_lines", "read_lines", "read_text", "read_aligned", "fingerprint"]


def open_binary(path: str | os.PathLike) -> BinaryIO:
    """Open ``path`` for reading bytes, decompressing when it ends in ``.gz``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` (1-based, without the line ending ``\\n`` or ``\\r\\n``).

    Raises:
        ValueError: a line is not valid UTF-8 (names the file, the line and the byte offset in it).
    """
    with open_binary(path) as f:
        try:
            for n, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ValueError(
                        f"{path}: line {n} is not valid UTF-8 ({e.reason} at byte {e.start} of the line: "
                        f"{raw[max(0, e.start - 10): e.start + 10]!r})"
                    ) from None
                if n == 1 and line.startswith("\ufeff"):
                    line = line[1:]  # byte-order mark
                yield n, line.rstrip("\n").rstrip("\r")
        except (OSError, EOFError) as e:
            if isinstance(e, FileNotFoundError):
                raise
            raise ValueError(f"{path}: cannot read the file ({e})") from e


def read_lines(path: str | os.PathLike, *, allow_empty: bool = False) -> list[str]:
    """All lines of a text file (plain or ``.gz``).

    Raises:
        ValueError: the file has no lines (unless ``allow_empty``) or is not UTF-8.
    """
    lines = [line for _, line in iter_lines(path)]
    if not lines and not allow_empty:
        raise ValueError(f"{path} is empty: expected at least one line of text")
    return lines


def read_text(path: str | os.PathLike) -> str:
    """The whole file as one string, line endings kept (language-model corpora).

    Raises:
        ValueError: the file is empty or not UTF-8 (the message names the line).
    """
    with open_binary(path) as f:
        data = f.read()
    if not data.strip():
        raise ValueError(f"{path} is empty: expected text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1)
        raise ValueError(f"{path}: line {line} is not valid UTF-8 ({e.reason} at byte {col} of the line)") from None
    return text[1:] if text.startswith("\ufeff") else text


def read_aligned(source: str | os.PathLike, target: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Two line-aligned files (``train.de``, ``train.en``, plain or ``.gz``) as two equal-length lists.

    Raises:
        ValueError: either file is empty or not UTF-8, or their line counts differ (both named).
    """
    src, tgt = read_lines(source), read_lines(target)
    if len(src) != len(tgt):
        raise ValueError(
            f"aligned files differ in length: {source} has {len(src)} lines but {target} has {len(tgt)} lines"
        )
    return src, tgt


def fingerprint(paths: Sequence[str | os.PathLike], *extra: str) -> str:
    """SHA-256 (first 16 hex digits) of the files' bytes and the ``extra`` strings: a cache key."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\x00file\x00")
    for s in extra:
        h.update(s.encode("utf-8") + b"\x00")
    return h.hexdigest()[:16]
