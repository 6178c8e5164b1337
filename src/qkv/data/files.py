"""Reading user text files: plain or gzip, strict UTF-8, errors that name the file and the line.

Every reader here raises ``ValueError`` for input that training cannot use (an empty file, bytes
that are not UTF-8, aligned files of different lengths) before any tensor is built, and
``FileNotFoundError`` for a missing file.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, BinaryIO

__all__ = ["open_binary", "iter_lines", "read_lines", "read_text", "read_aligned", "decode_lines", "fingerprint",
           "atomic_open", "file_mode", "dir_mode", "read_json_object"]

#: What a damaged ``.gz`` file raises while it is read (``BadGzipFile`` is an ``OSError``).
_READ_ERRORS = (OSError, EOFError, zlib.error)


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
        except _READ_ERRORS as e:
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
        try:
            data = f.read()
        except _READ_ERRORS as e:
            raise ValueError(f"{path}: cannot read the file ({e})") from e
    if not data.strip():
        raise ValueError(f"{path} is empty: expected text")
    return _decode(data, str(path))


def _decode(data: bytes, name: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1)
        raise ValueError(f"{name}: line {line} is not valid UTF-8 ({e.reason} at byte {col} of the line)") from None
    return text[1:] if text.startswith("\ufeff") else text


def decode_lines(data: bytes, name: str = "stdin") -> list[tuple[int, str]]:
    """``(line_number, line)`` of raw bytes (e.g. stdin's) decoded as strict UTF-8, line endings dropped.

    Raises:
        ValueError: bytes that are not UTF-8 (names ``name``, the line and the byte offset in it).
    """
    return list(enumerate(_decode(data, name).splitlines(), start=1))


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


def read_json_object(path: str | os.PathLike, what: str = "JSON file") -> dict:
    """A JSON file that holds an object.

    Raises:
        ValueError: invalid JSON (or UTF-8), or another top-level value; the message names the file and ``what``
            it should be.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON, so not a {what} ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a {what}: the top-level JSON value is a {type(data).__name__}, not an object")
    return data


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


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask (``0o666 & ~umask``)."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode ``mkdir`` gives a new directory under the current umask (``0o777 & ~umask``)."""
    return 0o777 & ~_umask()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", *, encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` (``os.replace``), on an error it
    is removed and ``path`` is left as it was. The file gets the mode a plain ``open()`` would (umask applies).

    Args:
        path: the file to write; its folder must exist.
        mode: ``"w"`` (text) or ``"wb"`` (bytes).
        encoding: text encoding (ignored for bytes).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
