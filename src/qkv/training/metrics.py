"""Metric sinks: JSON lines, one CSV per split and, when the package is installed, TensorBoard."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any


def perplexity(loss: float) -> float:
    """``exp(loss)`` for a mean per-token loss in nats (``inf`` past float range)."""
    return math.exp(loss) if loss < 700 else math.inf


class MetricsWriter:
    """Appends records to ``metrics.jsonl`` and ``metrics_<split>.csv`` in a run directory.

    TensorBoard scalars go to ``out_dir/tensorboard`` when ``torch.utils.tensorboard`` can be imported
    (it needs the ``tensorboard`` package); otherwise that sink is skipped silently.

    Args:
        out_dir: run directory, or ``None`` for a writer that keeps records in memory only.
        tensorboard: try to write TensorBoard event files too.
    """

    def __init__(self, out_dir: str | Path | None, *, tensorboard: bool = True) -> None:
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.records: list[dict[str, Any]] = []
        self._csv_fields: dict[str, list[str]] = {}
        self._tb = None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                self._tb = _tensorboard_writer(self.out_dir / "tensorboard")

    def write(self, split: str, step: int, values: dict[str, Any]) -> None:
        """Record ``values`` (numbers or strings) of ``split`` ("train", "eval") at ``step``."""
        record = {"split": split, "step": step, **values}
        self.records.append(record)
        if self.out_dir is None:
            return
        with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self._write_csv(split, record)
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(f"{split}/{key}", value, step)

    def _write_csv(self, split: str, record: dict[str, Any]) -> None:
        file = self.out_dir / f"metrics_{split}.csv"
        fields = self._csv_fields.get(split)
        if fields is None:
            if file.exists() and file.stat().st_size > 0:  # resumed run: keep the existing header
                with open(file, encoding="utf-8", newline="") as f:
                    fields = next(csv.reader(f), list(record))
            else:
                fields = list(record)
                with open(file, "w", encoding="utf-8", newline="") as f:
                    csv.writer(f).writerow(fields)
            self._csv_fields[split] = fields
        with open(file, "a", encoding="utf-8", newline="") as f:
            csv.DictWriter(f, fieldnames=fields, extrasaction="ignore").writerow(record)

    def close(self) -> None:
        """Flush and close the TensorBoard writer, if any."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _tensorboard_writer(folder: Path):  # noqa: ANN202 - the type lives in an optional package
    try:
        from torch.utils.tensorboard import SummaryWriter  # needs the optional `tensorboard` package
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(folder))
