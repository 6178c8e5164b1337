"""BLEU by source length: bucket sentence pairs by source length, score each bucket, tabulate, plot.

This is the analysis of Bahdanau et al. (2014, Fig. 2) and Luong et al. (2015): attention keeps BLEU
up on long sentences where a fixed-size encoding falls off. Buckets are closed intervals of source
length; ``edges=(10, 20, 30)`` gives ``0-10``, ``11-20``, ``21-30`` and ``31+``. Every pair lands in
exactly one bucket, so the buckets partition the corpus. Each bucket's score is corpus BLEU over the
pairs in it (not a mean of sentence BLEUs).

matplotlib and sacrebleu are imported inside the functions that need them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from qkv.evaluation.bleu import References, corpus_bleu, reference_streams

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LengthFn = Callable[[str], int]
DEFAULT_EDGES = (10, 20, 30, 40, 50)


@dataclass(frozen=True)
class LengthBucket:
    """One row of the by-length table.

    Attributes:
        low: smallest source length in the bucket (inclusive).
        high: largest source length (inclusive), or ``None`` for the open last bucket.
        count: number of sentence pairs in the bucket.
        bleu: corpus BLEU of those pairs, or ``None`` when the bucket is empty.
        indices: positions in the corpus of the pairs in this bucket.
    """

    low: int
    high: int | None
    count: int
    bleu: float | None
    indices: tuple[int, ...] = ()

    @property
    def label(self) -> str:
        """``"11-20"``, or ``"51+"`` for the open bucket."""
        if self.high is None:
            return f"{self.low}+"
        return f"{self.low}-{self.high}" if self.high != self.low else str(self.low)


def source_length(text: str, unit: Literal["words", "chars"] | LengthFn = "words") -> int:
    """Length of ``text`` in whitespace-separated words, characters, or by a callable (e.g. a tokenizer).

    Args:
        text: the source sentence.
        unit: ``"words"``, ``"chars"``, or ``fn(text) -> int`` such as ``lambda s: len(tok.encode(s))``.

    Returns:
        The length, ``>= 0``.
    """
    if callable(unit):
        return int(unit(text))
    if unit == "words":
        return len(text.split())
    if unit == "chars":
        return len(text)
    raise ValueError(f"unit must be 'words', 'chars' or a callable, got {unit!r}")


def bleu_by_length(
    sources: Sequence[str],
    hypotheses: Sequence[str],
    references: References,
    *,
    edges: Sequence[int] = DEFAULT_EDGES,
    unit: Literal["words", "chars"] | LengthFn = "words",
    tokenize: str = "13a",
    lowercase: bool = False,
) -> list[LengthBucket]:
    """Corpus BLEU per source-length bucket.

    Args:
        sources: ``N`` source sentences (only their lengths are used).
        hypotheses: ``N`` system outputs.
        references: ``N`` references, or ``N`` sequences of references.
        edges: strictly increasing inclusive upper bounds of the closed buckets, each ``>= 0``; the
            last bucket holds everything longer than ``edges[-1]``.
        unit: how to measure source length (see :func:`source_length`).
        tokenize: sacrebleu tokenizer for the per-bucket BLEU.
        lowercase: lowercase before scoring.

    Returns:
        ``len(edges) + 1`` rows, shortest bucket first; empty buckets have ``count=0`` and ``bleu=None``.

    Raises:
        ValueError: on bad edges or mismatched corpus lengths.
    """
    edges = [int(e) for e in edges]
    if not edges or edges[0] < 0 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
        raise ValueError(f"edges must be non-empty, >= 0 and strictly increasing, got {edges}")
    streams = reference_streams(hypotheses, references)
    if len(sources) != len(hypotheses):
        raise ValueError(f"sources has {len(sources)} entries but hypotheses has {len(hypotheses)}")
    bounds = list(zip([0, *(e + 1 for e in edges)], [*edges, None], strict=True))  # [(low, high | None)]
    members: list[list[int]] = [[] for _ in bounds]
    for i, src in enumerate(sources):
        n = source_length(src, unit)
        members[next((b for b, e in enumerate(edges) if n <= e), len(edges))].append(i)
    rows = []
    for (low, high), idx in zip(bounds, members, strict=True):
        bleu = None
        if idx:
            refs = [[stream[i] for stream in streams] for i in idx]
            bleu = corpus_bleu([hypotheses[i] for i in idx], refs, tokenize=tokenize, lowercase=lowercase).score
        rows.append(LengthBucket(low, high, len(idx), bleu, tuple(idx)))
    return rows


def _as_systems(rows: Sequence[LengthBucket] | Mapping[str, Sequence[LengthBucket]]) -> dict[str, list[LengthBucket]]:
    systems = {"BLEU": list(rows)} if not isinstance(rows, Mapping) else {k: list(v) for k, v in rows.items()}
    if not systems:
        raise ValueError("no systems given")
    labels = {name: [r.label for r in rs] for name, rs in systems.items()}
    first = next(iter(labels.values()))
    for name, ls in labels.items():
        if ls != first:
            raise ValueError(f"system {name!r} has buckets {ls}, expected the same as the first: {first}")
    return systems


def format_length_table(
    rows: Sequence[LengthBucket] | Mapping[str, Sequence[LengthBucket]], *, unit_name: str = "words"
) -> str:
    """A plain-text table: one line per bucket, a column of BLEU per system.

    Args:
        rows: one system's rows from :func:`bleu_by_length`, or ``{system name: rows}`` with equal buckets.
        unit_name: what source length counts, for the header (``"words"``, ``"tokens"``).

    Returns:
        The table as a string (no trailing newline); an empty bucket's BLEU shows as ``-``.
    """
    systems = _as_systems(rows)
    first = next(iter(systems.values()))
    header = [f"src {unit_name}", "n", *systems]
    body = [
        [row.label, str(row.count), *("-" if rs[i].bleu is None else f"{rs[i].bleu:.2f}" for rs in systems.values())]
        for i, row in enumerate(first)
    ]
    widths = [max(len(line[c]) for line in [header, *body]) for c in range(len(header))]
    lines = [header, ["-" * w for w in widths], *body]
    cells = [[cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(line, widths, strict=True))]
             for line in lines]
    return "\n".join("  ".join(line) for line in cells)


def length_figure(
    rows: Sequence[LengthBucket] | Mapping[str, Sequence[LengthBucket]],
    *,
    title: str = "BLEU by source length",
    unit_name: str = "words",
    figsize: tuple[float, float] = (6.4, 4.0),
) -> Figure:
    """A line plot of BLEU against source-length bucket, one line per system (Agg canvas, no pyplot).

    Args:
        rows: one system's rows, or ``{system name: rows}`` (e.g. "RNN", "RNN+attention", "Transformer").
        title: axes title.
        unit_name: x-axis unit.
        figsize: figure size in inches.

    Returns:
        The matplotlib ``Figure``; empty buckets are left out of the lines.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    systems = _as_systems(rows)
    first = next(iter(systems.values()))
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, rs in systems.items():
        xs = [i for i, r in enumerate(rs) if r.bleu is not None]
        ax.plot(xs, [rs[i].bleu for i in xs], marker="o", label=name)
    ax.set_xticks(range(len(first)), [f"{r.label}\n(n={r.count})" for r in first])
    ax.set_xlabel(f"source length ({unit_name})")
    ax.set_ylabel("BLEU")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(systems) > 1 or next(iter(systems)) != "BLEU":
        ax.legend()
    return fig


def plot_bleu_by_length(
    rows: Sequence[LengthBucket] | Mapping[str, Sequence[LengthBucket]],
    path: str | os.PathLike[str],
    *,
    title: str = "BLEU by source length",
    unit_name: str = "words",
    dpi: int = 100,
) -> Path:
    """Writes :func:`length_figure` to a PNG at ``path`` atomically (temp file, then ``os.replace``).

    Args:
        rows: one system's rows, or ``{system name: rows}``.
        path: output ``.png`` path; parent folders are created.
        title: axes title.
        unit_name: x-axis unit.
        dpi: resolution; the image is ``6.4*dpi`` x ``4.0*dpi`` pixels.

    Returns:
        The path written.
    """
    fig = length_figure(rows, title=title, unit_name=unit_name)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=dpi)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # a new file's usual mode, not the temp file's 0o600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
