"""Labelled text for classification: CSV, TSV, JSONL, or ``label<space>text`` lines (SST-2).

Notation: B batch, S sequence length.

Labels are read as strings and mapped to class ids through ``label_names``: given explicitly (pass
the training set's ``label_names`` to its validation and test sets), or inferred: when every label
is a non-negative integer the label *is* the class id, otherwise classes are the sorted label strings.
An example's ids are ``<bos>`` + the text's ids (``<bos>`` can serve as the pooling token).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from qkv.data.batching import ClassificationBatch, Ragged, pad_sequences
from qkv.data.files import iter_lines
from qkv.data.tokenizers import Tokenizer

__all__ = ["LabelledExample", "LabelledDataset", "read_labelled", "infer_label_names", "text_batch", "encode_texts",
           "FORMATS"]

FORMATS = ("csv", "tsv", "jsonl", "space")


class LabelledExample(NamedTuple):
    """One tokenised text (no specials) and its class id."""

    index: int
    ids: np.ndarray
    label: int


def _detect_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    last = suffixes[-1] if suffixes else ""
    return {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}.get(last, "space")


def _read_space(path: str | os.PathLike) -> list[tuple[str, str]]:
    rows = []
    for n, line in iter_lines(path):
        label, sep, text = line.partition(" ")
        if not line.strip():
            raise ValueError(f"{path}: line {n} is empty: expected '<label> <text>'")
        if not sep or not label:
            raise ValueError(f"{path}: line {n} has no label: expected '<label> <text>', got {line[:80]!r}")
        rows.append((text, label))
    return rows


def _read_delimited(path: str | os.PathLike, delimiter: str, text_field: str, label_field: str):
    lines = [line for _, line in iter_lines(path)]
    reader = csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        raise ValueError(f"{path} is empty: expected a header row with columns {text_field!r} and {label_field!r}")
    names = [h.strip() for h in header]
    missing = [c for c in (text_field, label_field) if c not in names]
    if missing:
        raise ValueError(f"{path}: header {names} lacks column(s) {missing} (set text_field=/label_field=)")
    ti, li = names.index(text_field), names.index(label_field)
    rows = []
    for n, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) <= max(ti, li) or not row[li].strip():
            raise ValueError(f"{path}: row {n} has no {label_field!r} value: {row}")
        rows.append((row[ti], row[li].strip()))
    return rows


def _read_jsonl(path: str | os.PathLike, text_field: str, label_field: str) -> list[tuple[str, str]]:
    rows = []
    for n, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {n} is not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict) or text_field not in obj:
            raise ValueError(f"{path}: line {n} has no {text_field!r} field: {line[:80]!r}")
        label = obj.get(label_field)
        if label is None or str(label).strip() == "":
            raise ValueError(f"{path}: line {n} has no {label_field!r} value: {line[:80]!r}")
        rows.append((str(obj[text_field]), str(label).strip()))
    return rows


def read_labelled(
    path: str | os.PathLike,
    *,
    format: str | None = None,
    text_field: str = "text",
    label_field: str = "label",
) -> list[tuple[str, str]]:
    """``(text, label)`` string pairs from a labelled file.

    Args:
        path: the file (plain or ``.gz``).
        format: one of :data:`FORMATS`; None picks by suffix (``.csv``, ``.tsv``, ``.jsonl``/``.json``,
            anything else ``label<space>text`` lines).
        text_field, label_field: column names (CSV/TSV header) or JSON keys.

    Raises:
        ValueError: empty file, invalid UTF-8, a row without a label (file and line named).
    """
    fmt = format or _detect_format(Path(path))
    if fmt == "space":
        rows = _read_space(path)
    elif fmt in ("csv", "tsv"):
        rows = _read_delimited(path, "," if fmt == "csv" else "\t", text_field, label_field)
    elif fmt == "jsonl":
        rows = _read_jsonl(path, text_field, label_field)
    else:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if not rows:
        raise ValueError(f"{path} is empty: expected labelled examples")
    return rows


def infer_label_names(labels: Sequence[str]) -> list[str]:
    """Class names, index = class id: ``["0", ..., "max"]`` for integer labels, else sorted strings."""
    unique = set(labels)
    if unique and all(s.isdigit() for s in unique):
        return [str(i) for i in range(max(int(s) for s in unique) + 1)]
    return sorted(unique)


class LabelledDataset:
    """Tokenised texts with class ids.

    Attributes:
        texts: :class:`~qkv.data.batching.Ragged` ids (no specials).
        labels: ``(N,)`` int64 class ids.
        label_names: class id -> label string.
        lengths: ``(N,)`` int64 ids per example including ``<bos>``.
        truncated: indices of the examples cut to ``max_len``.
    """

    def __init__(
        self,
        ids: Sequence[Sequence[int]],
        labels: Sequence[int],
        label_names: Sequence[str],
        *,
        pad_id: int = 0,
        bos_id: int = 1,
        max_len: int | None = None,
    ) -> None:
        if len(ids) != len(labels):
            raise ValueError(f"got {len(ids)} texts but {len(labels)} labels")
        self.truncated: list[int] = []  # examples cut to max_len
        if max_len is not None:
            self.truncated = [i for i, s in enumerate(ids) if len(s) > max_len - 1]
            ids = [s[: max(max_len - 1, 0)] for s in ids]  # room for <bos>
        self.texts = Ragged(ids)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.label_names = list(label_names)
        bad = self.labels[(self.labels < 0) | (self.labels >= len(self.label_names))]
        if bad.size:
            raise ValueError(f"labels {sorted(set(bad.tolist()))[:5]} outside [0, {len(self.label_names)})")
        self.pad_id, self.bos_id = pad_id, bos_id
        self.lengths = self.texts.lengths + 1

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.label_names)

    @classmethod
    def from_pairs(
        cls,
        pairs: Sequence[tuple[str, str | int]],
        tokenizer: Tokenizer,
        *,
        label_names: Sequence[str] | None = None,
        max_len: int | None = None,
        source: str = "<pairs>",
    ) -> LabelledDataset:
        """Tokenise ``(text, label)`` pairs. Unknown labels (not in ``label_names``) raise ValueError."""
        if not pairs:
            raise ValueError(f"{source}: no labelled examples")
        labels = [str(label) for _, label in pairs]
        names = list(label_names) if label_names is not None else infer_label_names(labels)
        index = {name: i for i, name in enumerate(names)}
        unknown = sorted(set(labels) - index.keys())
        if unknown:
            raise ValueError(f"{source}: labels {unknown[:10]} are not among the classes {names[:10]}")
        ids = tokenizer.encode_batch([t for t, _ in pairs])
        return cls(
            ids, [index[s] for s in labels], names, pad_id=tokenizer.pad_id, bos_id=tokenizer.bos_id,
            max_len=max_len,
        )

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        tokenizer: Tokenizer,
        *,
        format: str | None = None,
        text_field: str = "text",
        label_field: str = "label",
        label_names: Sequence[str] | None = None,
        max_len: int | None = None,
    ) -> LabelledDataset:
        """Read and tokenise a labelled file; see :func:`read_labelled` for formats and errors."""
        rows = read_labelled(path, format=format, text_field=text_field, label_field=label_field)
        return cls.from_pairs(rows, tokenizer, label_names=label_names, max_len=max_len, source=str(path))

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> LabelledExample:
        return LabelledExample(int(i), self.texts[i], int(self.labels[i]))

    def collate(self, examples: list[LabelledExample]) -> ClassificationBatch:
        """Pad examples into a :class:`~qkv.data.batching.ClassificationBatch`."""
        ids, mask, lengths = pad_sequences([e.ids for e in examples], pad_id=self.pad_id, prefix=self.bos_id)
        return ClassificationBatch(
            ids=ids,
            mask=mask,
            labels=torch.tensor([e.label for e in examples], dtype=torch.long),
            lengths=lengths,
            indices=torch.tensor([e.index for e in examples], dtype=torch.long),
        )


def encode_texts(
    texts: Sequence[str], tokenizer: Tokenizer, *, max_len: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """:func:`text_batch` plus each text's length before truncation (``<bos>`` included).

    Returns:
        ``ids (B, S)``, ``mask (B, S)`` and the B untruncated lengths.
    """
    if not texts:
        raise ValueError("no texts given")
    seqs = tokenizer.encode_batch(list(texts))
    prefix = 0 if tokenizer.bos_id is None else 1
    lengths = [len(s) + prefix for s in seqs]
    if max_len is not None:
        seqs = [s[: max(max_len - prefix, 0)] for s in seqs]
    ids, mask, _ = pad_sequences(seqs, pad_id=tokenizer.pad_id, prefix=tokenizer.bos_id)
    return ids, mask, lengths


def text_batch(
    texts: Sequence[str], tokenizer: Tokenizer, *, max_len: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode texts for inference as :meth:`LabelledDataset.collate` does (``<bos>`` + ids, truncated).

    Returns:
        ``ids (B, S)`` long and ``mask (B, S)`` bool, True = real.
    """
    ids, mask, _ = encode_texts(texts, tokenizer, max_len=max_len)
    return ids, mask
