"""Training curves from metric records: a list of dicts, or the ``metrics.jsonl`` a training run writes.

A record is a flat dict such as ``{"split": "train", "step": 100, "loss": 2.31, "lr": 3e-4}`` (the
layout of ``qkv.training``'s ``MetricsWriter``) or ``{"step": 100, "train_loss": 2.31, "val_loss": 2.5}``.
Each numeric key becomes a line, named ``"<split> <key>"`` when the record has a ``split``. Lines go
on one panel per metric; every key with ``loss`` in its name shares the ``loss`` panel, so train and
validation loss are drawn together.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qkv.viz._common import new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SKIPPED = frozenset({"step", "epoch", "split", "tokens", "tokens_per_s", "time", "elapsed", "wall_s"})


def read_metrics_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Reads one JSON object per line; blank lines and a half-written last line (a live run) are skipped.

    Args:
        path: a ``metrics.jsonl`` file.

    Returns:
        The records in file order.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: on a malformed line other than the last, naming the file and line number.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not a JSON object ({err.msg}): {line[:80]!r}") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


def panel_of(key: str) -> str:
    """The panel a metric key is drawn on: ``"loss"`` for any key containing ``loss``, else the key."""
    return "loss" if "loss" in key else key


def curve_series(
    records: Iterable[Mapping[str, Any]], *, x: str = "step", metrics: Sequence[str] | None = None
) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """Groups records into ``{panel: {line name: (xs, ys)}}``.

    Args:
        records: metric dicts; records without ``x`` are skipped.
        x: the key on the x axis.
        metrics: panels or keys to keep (``["loss", "lr"]``); default: every numeric key except
            counters and timings (``tokens``, ``tokens_per_s``, ``time``, ...).

    Returns:
        Panels in first-seen order with ``loss`` first; lines in first-seen order.
    """
    panels: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for record in records:
        step = record.get(x)
        if not _is_number(step):
            continue
        split = record.get("split")
        for key, value in record.items():
            if key == x or not _is_number(value) or not math.isfinite(value):
                continue
            panel = panel_of(key)
            keep = key not in SKIPPED if metrics is None else (key in metrics or panel in metrics)
            if not keep:
                continue
            name = f"{split} {key}" if isinstance(split, str) else key
            xs, ys = panels.setdefault(panel, {}).setdefault(name, ([], []))
            xs.append(float(step))
            ys.append(float(value))
    order = sorted(panels, key=lambda p: p != "loss")  # stable: loss first, others as seen
    return {p: panels[p] for p in order}


def training_curves(
    records: Iterable[Mapping[str, Any]] | str | os.PathLike[str],
    *,
    x: str = "step",
    metrics: Sequence[str] | None = None,
    title: str | None = None,
    panel_size: tuple[float, float] = (5.0, 3.2),
    log_loss: bool = False,
    loss_note: str | None = None,
) -> Figure:
    """Training-curve figure: one panel per metric, train and validation lines together.

    Args:
        records: metric dicts, or a path to a ``metrics.jsonl`` file.
        x: the key on the x axis (``"step"``).
        metrics: panels or keys to draw (default: all numeric ones but counters and timings).
        title: figure title.
        panel_size: inches per panel; panels are laid out two per row.
        log_loss: log scale on the loss panel's y axis.
        loss_note: what differs between the train and validation losses (label smoothing, dropout), shown as
            the title of the loss panel's legend.

    Returns:
        The figure; ``fig.axes[i]`` is panel ``i`` (titled with the panel name).

    Raises:
        ValueError: when no record has ``x`` and a numeric metric to draw.
    """
    if isinstance(records, (str, os.PathLike)):
        records = read_metrics_jsonl(records)
    records = list(records)
    panels = curve_series(records, x=x, metrics=metrics)
    if not panels:
        keys = sorted({k for r in records for k in r})
        raise ValueError(
            f"nothing to plot: no record has a numeric {x!r} and a metric among {list(metrics or [])} "
            f"(keys seen: {keys}, records: {len(records)})"
            if metrics
            else f"nothing to plot: no record has a numeric {x!r} and a metric (keys seen: {keys})"
        )
    ncols = 1 if len(panels) == 1 else 2
    nrows = math.ceil(len(panels) / ncols)
    fig = new_figure((panel_size[0] * ncols, panel_size[1] * nrows))
    for i, (panel, lines) in enumerate(panels.items()):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for name, (xs, ys) in lines.items():
            ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, markersize=3, label=name)
        ax.set_title(panel)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
        if panel == "loss" and log_loss:
            ax.set_yscale("log")
        note = loss_note if panel == "loss" else None
        ax.legend(fontsize=8, title=note, title_fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
